"""Docker's Container Network Model: l3fabric as a libnetwork remote network
and IPAM driver (docs/docker.md). A thin client of the agent's socket."""
