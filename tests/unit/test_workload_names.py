"""Workload names are DNS labels (they become NAME.NAMESPACE.ZONE): a new
workload named otherwise is refused at the control API with a message that
says why, and every name the CNI and CNM plugins, the lab and the suite use
passes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from l3fabric import limits
from l3fabric.agent.cnm import endpoint_name
from l3fabric.agent.server import RequestError
from l3fabric.cli.main import main
from l3fabric.model import cni_workload_name
from tests.unit.clipatch import through
from tests.unit.test_agent import Harness, node_config


@pytest.mark.parametrize(
    "name",
    [
        "w", "w1", "wa", "x4", "web", "web-1", "web-10", "victim", "first", "by-hand",
        "node1-w0", "leaf1-w12", "a" * 63,
        cni_workload_name("0123abcd" * 8, "eth0"), endpoint_name("f" * 64),
    ],
)  # fmt: skip
def test_dns_labels_are_workload_names(name: str) -> None:
    assert limits.workload_name_error(name) is None


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("Bad_Name", "'bad-name'"),
        ("Web", "'web'"),
        ("web.1", "'web-1'"),
        ("web_", "'web'"),
        ("-web", "'web'"),
        ("a" * 64, "'" + "a" * 63 + "'"),
        ("bad name", "'bad-name'"),
        ("___", None),
        ("", None),
    ],
)
def test_other_names_are_refused_with_a_suggestion(name: str, suggestion: str | None) -> None:
    problem = limits.workload_name_error(name)
    assert problem is not None and "is not a DNS label" in problem
    assert "workload names become DNS names" in problem
    assert (suggestion is not None and f"(for example {suggestion})" in problem) or (
        suggestion is None and "for example" not in problem
    )


def test_a_non_string_name_is_refused() -> None:
    assert limits.workload_name_error(7) == "expected a name (string), got 7"


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    made = Harness(tmp_path, node_config(tmp_path))
    made.agent.start()
    try:
        yield made
    finally:
        made.agent.stop()


def test_workload_add_refuses_a_name_that_is_no_dns_label(
    harness: Harness,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(RequestError) as refused:
        harness.call["workload.add"]({"name": "Bad_Name", "netns": "/run/netns/none"})
    assert refused.value.code == "invalid"
    assert refused.value.message.startswith("workload name: 'Bad_Name' is not a DNS label")
    assert harness.agent.workloads.list() == [] and not harness.agent.ipam.show()["blocks"]
    through(monkeypatch, harness.call)
    assert main(["workload", "add", "Bad_Name", "--netns", "/run/netns/none"]) == 2
    err = capsys.readouterr().err
    assert "is not a DNS label" in err and "(for example 'bad-name')" in err
