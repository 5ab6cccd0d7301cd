"""Block-based IP address management on the datastore, in Calico's model.

allocator: Ipam, the front the agent uses; assignments: assign and release
by compare-and-swap on block records; claims: which block an address comes
from (affinity, claiming, borrowing); handles: the handle index; records:
reading and writing the records; reports: read-only views; check: the
consistency check and repair; blocks: the block and handle records and pool
arithmetic; errors: IpamError and its kinds. See docs/ipam.md.
"""
