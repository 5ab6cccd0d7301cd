"""Which namespaces may become a workload's: real namespaces, real links."""

from __future__ import annotations

import pytest

from l3fabric.dataplane.netns_guard import refusal
from tests.nettools import Namespaces, ns_run

pytestmark = pytest.mark.integration


def test_a_fresh_sandbox_is_accepted(netns: Namespaces) -> None:
    assert refusal(f"/run/netns/{netns.add('w')}", "eth0") is None


def test_the_host_and_the_nodes_own_namespaces_are_refused() -> None:
    # PID 1's namespace: refused as the host's, or as one that cannot even
    # be inspected where PID 1 belongs to an outer container.
    assert refusal("/proc/1/ns/net", "eth0") is not None
    problem = refusal("/proc/self/ns/net", "eth0") or ""
    assert "host's initial" in problem or "node's own" in problem


def test_a_nodes_namespace_is_refused(netns: Namespaces) -> None:
    node, other = netns.add("node"), netns.add("peer")
    netns.link(node, other, ["198.18.0.1/24"], ["198.18.0.2/24"], names=("eth1", "eth1"))
    problem = refusal(f"/run/netns/{node}", "eth0") or ""
    assert "addressed interfaces (eth1)" in problem


def test_a_namespace_holding_l3fabric_host_interfaces_is_refused(netns: Namespaces) -> None:
    node, w = netns.add("node"), netns.add("w")
    netns.link(node, w, [], [], names=("l3f0123456789ab", "eth0"))
    assert "l3fabric host interfaces" in (refusal(f"/run/netns/{node}", "eth0") or "")


def test_the_workloads_own_interface_and_link_local_addresses_do_not_count(
    netns: Namespaces,
) -> None:
    """A retried add finds its own eth0 (with its addresses) already there."""
    w, node = netns.add("w"), netns.add("node")
    netns.link(w, node, ["100.64.0.5/32", "fd00:64::5/128"], [], names=("eth0", "l3fab"))
    ns_run(w, ["ip", "link", "set", "lo", "up"])
    assert refusal(f"/run/netns/{w}", "eth0") is None
    assert refusal(f"/run/netns/{w}", "net1") is not None
