"""Workload records: the CNI fields, old records, identity."""

from __future__ import annotations

import ipaddress

import pytest

from l3fabric import limits
from l3fabric.model import Workload, cni_workload_name, valid_name


def test_an_old_record_reads_as_a_cli_workload() -> None:
    old = {"name": "w1", "node": "n1", "netns": "/run/netns/w1", "addresses": ["100.64.0.1"]}
    w = Workload.from_dict(old)
    assert (w.ifname, w.container_id, w.owner, w.namespace, w.pod, w.labels) == (
        "eth0",
        "",
        "cli",
        "default",
        "",
        (),
    )


def test_the_cni_fields_survive_a_round_trip() -> None:
    w = Workload(
        "cni-0011223344556677",
        "n1",
        "/run/netns/p",
        (ipaddress.ip_address("fd00:64::1"),),
        ifname="net1",
        container_id="abc",
        owner="cni",
        namespace="kube-system",
        pod="coredns-1",
        labels=(("z", "1"), ("a", "2")),
    )
    assert w.labels == (("a", "2"), ("z", "1"))
    back = Workload.from_dict(w.to_dict())
    assert back == w and back.to_dict() == w.to_dict()
    assert back.pod == "coredns-1" and back.owner == "cni" and back.labels == w.labels


def test_metadata_is_not_identity_but_the_interface_is() -> None:
    a = Workload("w", "n", "/run/netns/w", ifname="eth0")
    assert a == Workload("w", "n", "/run/netns/w", pod="p", owner="cni", labels=(("k", "v"),))
    assert a != Workload("w", "n", "/run/netns/w", ifname="eth1")


@pytest.mark.parametrize("ifname", ["", "a" * 16, ".", "..", "a/b", "a:b", "a b"])
def test_a_bad_ifname_is_refused(ifname: str) -> None:
    with pytest.raises(ValueError, match="ifname"):
        Workload("w", "n", "/run/netns/w", ifname=ifname)


def test_a_bad_owner_is_refused() -> None:
    with pytest.raises(ValueError, match="owner"):
        Workload("w", "n", "/run/netns/w", owner="docker")


def test_cni_names_are_deterministic_distinct_and_valid() -> None:
    name = cni_workload_name("0123abcd" * 8, "eth0")
    assert name == cni_workload_name("0123abcd" * 8, "eth0")
    assert name != cni_workload_name("0123abcd" * 8, "eth1")
    assert name.startswith("cni-") and len(name) == 20
    assert valid_name(name) and limits.name_error(name, limits.WORKLOAD_NAME_MAX_LEN) is None
