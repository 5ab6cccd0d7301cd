"""KernelChangeWatch against a real namespace: it says "changed" after each
kind of change the reconcile pass reads (links, addresses, routes), "not
changed" when nothing happened, and "changed" when the kernel dropped
notifications it could not queue."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from l3fabric.dataplane.kernel_watch import KernelChangeWatch, _subscribed_socket
from tests.integration.test_dataplane import UPLINK, InNetns
from tests.nettools import Namespaces, ns_run

pytestmark = pytest.mark.integration


@pytest.fixture
def node(netns: Namespaces) -> Iterator[tuple[str, InNetns]]:
    name = netns.add("watch")
    far = netns.add("far")
    netns.link(
        name, far, addrs_a=["198.18.1.1/24"], addrs_b=["198.18.1.2/24"], names=(UPLINK, "e1")
    )
    runner = InNetns(name)
    try:
        yield name, runner
    finally:
        runner.close()


def test_each_kind_of_change_is_seen_once(node: tuple[str, InNetns]) -> None:
    name, runner = node
    watch = KernelChangeWatch()
    try:
        assert runner.call(watch.changed) is True  # the first look knows nothing
        assert runner.call(watch.changed) is False
        changes = [
            ["ip", "route", "add", "100.64.9.0/24", "via", "198.18.1.2"],
            ["ip", "-6", "route", "add", "fd00:64:9::/64", "dev", UPLINK],
            ["ip", "addr", "add", "198.18.7.1/32", "dev", "lo"],
            ["ip", "link", "add", "l3ftest0", "type", "veth", "peer", "name", "l3ftest1"],
            ["ip", "link", "set", "l3ftest0", "up"],
            ["ip", "route", "del", "100.64.9.0/24"],
        ]
        for change in changes:
            ns_run(name, change)
            # The kernel queues a notification before the request returns.
            assert runner.call(watch.changed) is True, change
            assert runner.call(watch.changed) is False, change
    finally:
        runner.call(watch.close)


def test_notifications_the_kernel_could_not_queue_count_as_a_change(
    node: tuple[str, InNetns], tmp_path: Path
) -> None:
    name, runner = node

    def small_socket() -> socket.socket:
        sock = _subscribed_socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        return sock

    watch = KernelChangeWatch(opener=small_socket)
    try:
        runner.call(watch.changed)
        batch = tmp_path / "routes.batch"
        batch.write_text(
            "".join(
                f"route add 100.64.{i // 256}.{i % 256}/32 via 198.18.1.2\n" for i in range(3000)
            )
        )
        ns_run(name, ["ip", "-batch", str(batch)])
        assert runner.call(watch.changed) is True
        assert runner.call(watch.changed) is False
    finally:
        runner.call(watch.close)
