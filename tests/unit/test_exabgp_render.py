"""ExaBGP configuration rendering: goldens, validated by ExaBGP's own parser.

Regenerate the goldens after a deliberate template change with
L3FABRIC_UPDATE_GOLDENS=1 and review the diff.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from l3fabric.bgp.bridge import command_line
from l3fabric.bgp.exabgp_config import NeighborSpec, render_config
from l3fabric.bgp.exabgp_process import default_command

GOLDENS = Path(__file__).parent / "fixtures" / "exabgp"
# A fixed interpreter keeps the goldens independent of where the venv lives.
GOLDEN_PYTHON = "/usr/bin/python3"
BRIDGE = command_line(Path("/run/l3fabric/exabgp/bridge.sock"), GOLDEN_PYTHON)
RID = ipaddress.IPv4Address("198.18.0.1")

NODE_B = NeighborSpec(
    peer_address=ipaddress.ip_address("198.18.0.2"),
    peer_as=64512,
    local_address=ipaddress.ip_address("198.18.0.1"),
    name="node-b",
)
NODE_C = dataclasses.replace(NODE_B, peer_address=ipaddress.ip_address("198.18.0.3"), name="node-c")
EVERYTHING = [
    NeighborSpec(
        peer_address=ipaddress.ip_address("198.18.1.1"),
        peer_as=65001,
        local_address=ipaddress.ip_address("198.18.0.1"),
        name="tor-1",
        local_as=65100,
        router_id=ipaddress.IPv4Address("10.0.0.1"),
        families=("ipv4",),
        hold_time=9,
        passive=True,
        md5_password="s3cr #t;{}!,[]",
        multihop_ttl=2,
        graceful_restart=120,
    ),
    NeighborSpec(
        peer_address=ipaddress.ip_address("fd00:198:18::2"),
        peer_as=64512,
        local_address=ipaddress.ip_address("fd00:198:18::1"),
        name="node-b.v6",
        families=("ipv6",),
        hold_time=3,  # the least there is (limits.HOLD_TIME_MIN)
    ),
    NODE_B,
]

CASES: dict[str, dict[str, Any]] = {
    "empty": {"neighbors": []},
    "ibgp_mesh": {"neighbors": [NODE_C, NODE_B]},
    "every_option": {"neighbors": EVERYTHING, "port": 1179},
}


def render(neighbors: list[NeighborSpec], **kwargs: Any) -> str:
    return render_config(neighbors, router_id=RID, local_as=64512, bridge_command=BRIDGE, **kwargs)


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_matches_golden(case: str) -> None:
    text = render(**CASES[case])
    golden = GOLDENS / f"golden_{case}.conf"
    if os.environ.get("L3FABRIC_UPDATE_GOLDENS"):
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("case", sorted(CASES))
def test_exabgp_accepts_golden(case: str, tmp_path: Path) -> None:
    # ExaBGP checks that the `run` program exists and is executable.
    text = (GOLDENS / f"golden_{case}.conf").read_text().replace(GOLDEN_PYTHON, sys.executable)
    conf = tmp_path / "exabgp.conf"
    conf.write_text(text)
    proc = subprocess.run(
        [default_command(), "validate", "--neighbor", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "EXABGP_ENVFILE": "/dev/null"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = [n.peer_address for n in CASES[case]["neighbors"]]
    for peer in names:
        assert f"neighbor  {peer}" in proc.stdout + proc.stderr


# Run in a child: ExaBGP's parser keeps global state (its logger, its env).
_API_PROBE = """
import sys
from exabgp.configuration.configuration import Configuration
from exabgp.environment import getenv
from exabgp.logger import log
log.init(getenv())
config = Configuration([sys.argv[1]])
if not config.reload():
    sys.exit(f"invalid: {config.error}")
for name, neighbor in sorted(config.neighbors.items()):
    api = neighbor.api
    print(name.split()[1], ",".join(api["negotiated"]), ",".join(api["neighbor-changes"]))
"""


@pytest.mark.parametrize("case", ["ibgp_mesh", "every_option"])
def test_exabgp_sends_negotiated_and_state_to_our_process(case: str, tmp_path: Path) -> None:
    # `status --peer` needs ExaBGP's "negotiated" message of every session:
    # ExaBGP's own parser must give it (and state changes) to our process, for
    # every neighbour, through the template it inherits.
    text = (GOLDENS / f"golden_{case}.conf").read_text().replace(GOLDEN_PYTHON, sys.executable)
    conf = tmp_path / "exabgp.conf"
    conf.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-c", _API_PROBE, str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "EXABGP_ENVFILE": "/dev/null"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    peers = sorted(str(n.peer_address) for n in CASES[case]["neighbors"])
    expected = [f"{peer} l3fabric l3fabric" for peer in peers]
    assert sorted(proc.stdout.splitlines()) == expected


def test_exabgp_would_refuse_a_broken_render(tmp_path: Path) -> None:
    # The validation above can fail: a hold time ExaBGP refuses is caught.
    conf = tmp_path / "exabgp.conf"
    conf.write_text(render([NODE_B]).replace("hold-time 90", "hold-time 1"))
    proc = subprocess.run(
        [default_command(), "validate", str(conf.resolve())],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "EXABGP_ENVFILE": "/dev/null"},
    )
    assert proc.returncode != 0
    assert "holdtime must be zero or at least 3 seconds" in proc.stderr


def test_render_is_independent_of_neighbor_order() -> None:
    assert render([NODE_B, NODE_C]) == render([NODE_C, NODE_B])


def test_neighbor_defaults_come_from_the_speaker() -> None:
    text = render([NODE_B])
    assert "router-id 198.18.0.1;" in text
    assert "local-as 64512;" in text
    assert "passive false;" in text  # ExaBGP's own default is passive
    assert "md5-password" not in text and "graceful-restart" not in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"peer_address": "198.18.0.2"}, "peer_address: it and local_address must be IP addresses"),
        ({"local_address": ipaddress.ip_address("fd00::1")}, "of one family"),
        ({"peer_as": 0}, "peer_as: 0 is not allowed: AS 0 is reserved"),
        ({"peer_as": 23456}, "peer_as: 23456 is not allowed: it is AS_TRANS"),
        ({"local_as": 2**32}, "local_as: 4294967296 is out of range 1..4294967294"),
        ({"peer_as": True}, "peer_as: expected an AS number"),
        ({"name": "bad name"}, "name: 'bad name' is not a valid name"),
        ({"router_id": ipaddress.ip_address("fd00::1")}, "router_id: must be an IPv4Address"),
        ({"families": ("ipv4", "ipv4")}, "families: must be"),
        ({"families": ()}, "families: must be"),
        ({"families": ("l2vpn",)}, "families: must be"),
        ({"families": ["ipv4"]}, "families: must be"),
        ({"hold_time": 2}, "hold_time: 2 is out of range 3..65535"),
        ({"hold_time": 0}, "hold_time: 0 is not allowed"),
        ({"hold_time": False}, "hold_time: expected a number of seconds"),
        ({"passive": "yes"}, "passive: must be a bool"),
        ({"md5_password": ""}, "md5_password: must not be empty"),
        ({"md5_password": "x" * 81}, "md5_password: is 81 characters"),
        ({"md5_password": 'a"b'}, "md5_password: must not contain a double quote"),
        ({"md5_password": "a'b"}, "md5_password: must not contain a double quote"),
        ({"md5_password": " ab"}, "md5_password: must not start or end with a space"),
        ({"md5_password": "a\\b"}, "md5_password: must not contain"),
        ({"md5_password": "a\nb"}, "md5_password: must be printable ASCII"),
        ({"multihop_ttl": 256}, "multihop_ttl: 256 is out of range 1..255"),
        ({"graceful_restart": 4096}, "graceful_restart: 4096 is out of range 1..4095"),
        ({"graceful_restart": 0}, "graceful_restart: 0 is out of range 1..4095"),
    ],
)
def test_neighbor_spec_rejects_bad_values(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(NODE_B, **change)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"neighbors": [NODE_B, NODE_B]}, "listed twice"),
        ({"neighbors": ["198.18.0.2"]}, "expected a NeighborSpec"),
        ({"router_id": ipaddress.ip_address("fd00::1")}, "router_id must be an IPv4Address"),
        ({"local_as": 0}, "local_as: 0 is not allowed"),
        ({"port": 0}, "port: 0 is out of range 1..65535"),
        ({"bridge_command": ["python3", "-m", "x"]}, "absolute path"),
        ({"bridge_command": ["/usr/bin/python3", "a;b"]}, "characters ExaBGP would split"),
        ({"bridge_command": ["/usr/bin/python3", "a b"]}, "characters ExaBGP would split"),
    ],
)
def test_render_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "neighbors": [NODE_B],
        "router_id": RID,
        "local_as": 64512,
        "bridge_command": BRIDGE,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        render_config(args.pop("neighbors"), **args)
