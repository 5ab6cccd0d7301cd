"""Which network namespaces may become a workload's.

A workload add names a namespace by path, and anything that can reach the
control socket could name any: the host's own, the node's, another node's in
a lab, another workload's. Wiring one of those would put an interface and a
default route via 169.254.1.1 into it. The rule (docs/security.md):

- never the host's initial namespace (PID 1's) nor the node's own;
- never one that already holds l3fabric host interfaces (a node's);
- never one in which an interface other than the workload's own carries a
  global address (a host's, a node's, or one another network configured
  first): l3fabric is a sandbox's first network, as CNI orders it.

Another workload's namespace is caught by the records (the agent compares
namespace identities) and by the interface rule.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pyroute2 import IPRoute

from l3fabric.dataplane.base import DataplaneError
from l3fabric.dataplane.netns import netlink_socket_in, netns_identity
from l3fabric.model import is_owned_iface

HOST_NETNS = "/proc/1/ns/net"
OWN_NETNS = "/proc/self/ns/net"


def refusal(path: str, own_ifname: str) -> str | None:
    """Why `path` must not be wired as a workload's namespace, or None."""
    identity = netns_identity(path)
    if identity and identity == netns_identity(HOST_NETNS):
        return f"{path} is the host's initial network namespace, not a workload's"
    if identity and identity == netns_identity(OWN_NETNS):
        return f"{path} is the node's own network namespace, not a workload's"
    try:
        links, addressed = _interfaces(path)
    except (DataplaneError, OSError) as exc:
        return f"{path} cannot be inspected: {exc}"
    owned = sorted(name for name in links if is_owned_iface(name))
    if owned:
        return f"{path} holds l3fabric host interfaces ({', '.join(owned[:3])}): a node's namespace"
    foreign = sorted(name for name in addressed if name not in ("lo", own_ifname))
    if foreign:
        return (
            f"{path} already has addressed interfaces ({', '.join(foreign[:3])}): "
            "a host's, a node's or another network's namespace, not a new workload's"
        )
    return None


def _interfaces(path: str) -> tuple[set[str], set[str]]:
    """Every interface name in the namespace, and those with a global address."""
    sock = netlink_socket_in(path)
    ipr = IPRoute(fileno=sock.detach(), groups=0)
    try:
        names = {
            index: str(link.get("ifname")) for link in ipr.get_links() for index in [link["index"]]
        }
        addressed = set()
        for msg in ipr.get_addr():
            address = _address(msg)
            if address is not None and not (address.is_link_local or address.is_loopback):
                addressed.add(names.get(msg["index"], str(msg["index"])))
        return set(names.values()), addressed
    finally:
        ipr.close()


def _address(msg: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    raw = msg.get("IFA_ADDRESS") or msg.get("IFA_LOCAL")
    return ipaddress.ip_address(raw) if raw else None
