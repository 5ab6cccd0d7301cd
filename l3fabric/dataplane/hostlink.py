"""One link of the node, read by name or index through a raw netlink socket.

Looking inside a workload reads its host veth several times (is it there,
its MAC, is its peer still waiting in the node for a runtime). Through
pyroute2 each read decoded every attribute of the link into Python objects,
a few milliseconds each, and a periodic pass reads 64 workloads; here one
get decodes only the name, MAC and veth peer.
"""

from __future__ import annotations

import errno
import os

from l3fabric.dataplane import codec
from l3fabric.dataplane.base import DataplaneError
from l3fabric.dataplane.nlsocket import NetlinkSocket
from l3fabric.dataplane.workload_codec import DecodedLink, decode_link, link_get_request

_RCVBUF = 1 << 20  # one link's reply at a time


class HostLinkReader:
    """Reads through its own socket, opened on first use in the namespace of
    the calling thread. Not thread-safe (the dataplane's lock serialises
    its callers)."""

    def __init__(self, netlink: NetlinkSocket | None = None) -> None:
        self._netlink = netlink or NetlinkSocket(rcvbuf=_RCVBUF)

    def get(self, *, name: str = "", index: int = 0) -> DecodedLink | None:
        """The link, or None if there is none by that name or index."""
        reply = self._netlink.ask(lambda seq: link_get_request(seq, name=name, index=index))
        if reply.msg_type == codec.NLMSG_ERROR:
            ack = codec.decode_ack(reply)
            if ack.errno == errno.ENODEV:
                return None
            raise DataplaneError(
                f"reading link {name or index}: {ack.message or os.strerror(ack.errno)}"
            )
        if reply.msg_type != codec.RTM_NEWLINK:
            raise DataplaneError(f"reading link {name or index}: reply of type {reply.msg_type}")
        return decode_link(reply.payload)

    def close(self) -> None:
        self._netlink.close()
