"""Service discovery: DNS records for workloads and services in the SkyDNS
(CoreDNS etcd plugin) key layout, and a DNS server that answers from them.

The keys and values are built and parsed by l3fabric.datastore.skydns (pure,
below the agent, which writes them); view.py keeps an
in-memory index of them fed by a datastore watch; resolver.py answers a
query from the view (pure); server.py runs the UDP/TCP listeners.
"""
