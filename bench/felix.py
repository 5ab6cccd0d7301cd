"""A felix stand-in for the BIRD baseline: wires workloads in the node
namespace it runs in, with l3fabric's NetlinkDataplane (veth, addresses,
gateway, /32 proto 76 route), so both systems' workloads are wired by the
same code and only route distribution differs.

Run inside the node's namespace. Reads lines `NAME NETNS_PATH IPV4` on stdin
and answers each with `ok` or `error: WHY` on stdout once the wiring is done.
"""

from __future__ import annotations

import ipaddress
import sys

from l3fabric.dataplane import DataplaneError, NetlinkDataplane
from l3fabric.model import Workload, workload_routes


def serve(node: str) -> int:
    dataplane = NetlinkDataplane()
    dataplane.ensure_sysctls()
    print("ready", flush=True)
    for line in sys.stdin:
        fields = line.split()
        if len(fields) != 3:
            print(f"error: expected NAME NETNS_PATH IPV4, got {line.strip()!r}", flush=True)
            continue
        name, netns, address = fields
        try:
            workload = Workload(name, node, netns, (ipaddress.IPv4Address(address),))
            dataplane.attach(workload)
            # As the agent's route table does after an attach.
            failures = dataplane.program(workload_routes(workload), [])
            if failures:
                raise DataplaneError("; ".join(map(str, failures)))
        except (DataplaneError, OSError, ValueError) as exc:
            print(f"error: {name}: {exc}", flush=True)
            continue
        print("ok", flush=True)
    dataplane.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.felix NODE_NAME")
    sys.exit(serve(sys.argv[1]))
