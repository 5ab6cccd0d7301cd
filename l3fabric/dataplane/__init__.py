"""The node data plane: workload wiring and route programming over netlink."""

from l3fabric.dataplane.base import Dataplane, DataplaneError, NetnsNotFound, RouteFailure
from l3fabric.dataplane.netlink import NetlinkDataplane
from l3fabric.dataplane.netns import resolve_netns

__all__ = [
    "Dataplane",
    "DataplaneError",
    "NetlinkDataplane",
    "NetnsNotFound",
    "RouteFailure",
    "resolve_netns",
]
