"""Kernel settings the data plane depends on, written through /proc/sys/net.

/proc/sys/net shows the network namespace of the thread that opens the file,
so these writes affect the namespace the agent runs in (the node's). See
docs/dataplane.md for why each value is what it is.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from l3fabric.dataplane.base import DataplaneError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setting:
    key: str  # relative to /proc/sys, slash-separated
    value: str


# Node-wide. rp_filter: the kernel checks max(conf.all, conf.<iface>), so
# "loose" (2) on all covers interfaces that already exist, and on default
# covers the ones made later. Strict (1) would drop fabric traffic whose
# return path differs (ECMP, asymmetric BGP paths); loose still drops
# sources the node has no route to at all.
# ignore_routes_with_linkdown: a next hop whose link lost carrier (the far
# end of an uplink failed) is otherwise still chosen for its share of ECMP
# flows until BGP notices, a hold time later; with it the kernel skips the
# next hop at once, as it does for a link set down. IPv4 takes
# max(all, <iface>); IPv6 reads the interface's own value, which `all`
# overwrites on the existing interfaces and `default` gives the later ones.
NODE_SETTINGS: tuple[Setting, ...] = (
    Setting("net/ipv4/ip_forward", "1"),
    Setting("net/ipv6/conf/all/forwarding", "1"),
    Setting("net/ipv4/conf/all/rp_filter", "2"),
    Setting("net/ipv4/conf/default/rp_filter", "2"),
    Setting("net/ipv4/conf/all/ignore_routes_with_linkdown", "1"),
    Setting("net/ipv6/conf/all/ignore_routes_with_linkdown", "1"),
    Setting("net/ipv6/conf/default/ignore_routes_with_linkdown", "1"),
)


def host_iface_settings(ifname: str) -> tuple[Setting, ...]:
    """Per host veth, written before the link goes up.

    accept_dad=0 and addr_gen_mode=0 (EUI-64) make the link-local address
    (the workloads' IPv6 gateway) appear usable the moment the link has
    carrier, derived from the veth's MAC, instead of after a DAD delay.
    proxy_delay=0: proxy ARP answers at once instead of after up to 0.8 s.
    accept_ra=0: a workload must not be able to configure the node.
    """
    v4 = f"net/ipv4/conf/{ifname}"
    v6 = f"net/ipv6/conf/{ifname}"
    return (
        Setting(f"{v4}/forwarding", "1"),
        Setting(f"{v4}/proxy_arp", "1"),
        Setting(f"net/ipv4/neigh/{ifname}/proxy_delay", "0"),
        Setting(f"{v6}/accept_dad", "0"),
        Setting(f"{v6}/addr_gen_mode", "0"),
        Setting(f"{v6}/accept_ra", "0"),
        Setting(f"{v6}/forwarding", "1"),
        Setting(f"{v6}/proxy_ndp", "1"),
    )


class Sysctls:
    """Reads and writes under a sysctl root (a temporary directory in tests)."""

    def __init__(self, root: str = "/proc/sys") -> None:
        self.root = root

    def _path(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid sysctl key {key!r}")
        return os.path.join(self.root, key)

    def read(self, key: str) -> str:
        with open(self._path(key)) as handle:
            return handle.read().strip()

    def write(self, setting: Setting) -> None:
        path = self._path(setting.key)
        try:
            with open(path, "w") as handle:
                handle.write(setting.value)
        except OSError as exc:
            raise DataplaneError(
                f"cannot set {setting.key.replace('/', '.')}={setting.value}: {exc.strerror}"
            ) from exc
        log.debug("sysctl set", extra={"key": setting.key, "value": setting.value})

    def apply(self, settings: tuple[Setting, ...]) -> None:
        for setting in settings:
            self.write(setting)
