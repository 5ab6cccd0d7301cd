"""check-config, the ExaBGP renderer and the BIRD renderer agree on every
edge case: each accepts or each refuses, and no message repeats a password.

The same value goes through the three doors an operator's value can take:
the node config (l3fabric.config.load_config on a file, as check-config
reads it), a NeighborSpec rendered by render_config (what the agent builds
from that config), and `l3fabric bird render --from-yaml`'s config_from_data
rendered by bgp.bird.render. Accepted passwords are then parsed back by
ExaBGP's and BIRD's own parsers, which must return them unchanged.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from l3fabric import limits
from l3fabric.bgp.bird import render as render_bird
from l3fabric.bgp.exabgp_config import NeighborSpec, render_config
from l3fabric.cli.bird import config_from_data
from l3fabric.cli.bird import main as bird_main
from l3fabric.config import ConfigError, load_config
from l3fabric.lab.topology import TopologyError, load_topology

NODE_ASN = 64512
PEER_ASN = 65001
RID = ipaddress.IPv4Address("198.18.0.1")
PEER = ipaddress.ip_address("198.18.0.254")
BIRD = shutil.which("bird")


def _node_config(asn: Any = NODE_ASN, **bgp: Any) -> dict[str, Any]:
    return {
        "node": {"name": "node1", "asn": asn, "addresses": {"ipv4": str(RID)}},
        "pools": [{"cidr": "100.64.0.0/16"}],
        "bgp": {"mesh": True, **bgp},
    }


def _peer(**values: Any) -> dict[str, Any]:
    return {"address": str(PEER), "asn": PEER_ASN, "role": "external", **values}


def check_config(tmp_path: Path, data: dict[str, Any]) -> str | None:
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        load_config(path)
    except ConfigError as exc:
        return str(exc)
    return None


def exabgp(**spec: Any) -> str | None:
    values: dict[str, Any] = {
        "peer_address": PEER,
        "peer_as": PEER_ASN,
        "local_address": RID,
        "name": "up",
        **spec,
    }
    try:
        neighbor = NeighborSpec(**values)
        render_config(
            [neighbor], router_id=RID, local_as=NODE_ASN, bridge_command=["/usr/bin/true"]
        )
    except ValueError as exc:
        return str(exc)
    return None


def _bird_data(hold_time: int | None = None, **peer: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "role": "node",
        "router_id": str(RID),
        "asn": NODE_ASN,
        "peers": [{"name": "up", "address": str(PEER), "asn": PEER_ASN, **peer}],
    }
    if hold_time is not None:
        data["hold_time"] = hold_time
        if isinstance(hold_time, int):  # BIRD's keepalive must fit the hold time
            data["keepalive"] = max(1, hold_time // limits.KEEPALIVE_DIVISOR)
    return data


def bird(data: dict[str, Any]) -> str | None:
    try:
        render_bird(config_from_data(data))
    except ValueError as exc:
        return str(exc)
    return None


def _verdicts(outcomes: dict[str, str | None]) -> set[bool]:
    return {message is None for message in outcomes.values()}


def _accepted(value: object, good: set[int]) -> bool:
    # True == 1 and 9.0 == 9 in a set; neither is an integer setting.
    return type(value) is int and value in good


# --- AS numbers -----------------------------------------------------------------

AS_CASES = [0, 1, 23456, 65535, 64513, 2**32 - 2, 2**32 - 1, 2**32, True, "65001"]
AS_ACCEPTED = {1, 64513, 2**32 - 2}


@pytest.mark.parametrize("asn", AS_CASES, ids=repr)
def test_as_numbers_agree(asn: Any, tmp_path: Path) -> None:
    outcomes = {
        "config node.asn": check_config(tmp_path, _node_config(asn=asn)),
        "config peer asn": check_config(tmp_path, _node_config(peers=[_peer(asn=asn)])),
        "exabgp peer_as": exabgp(peer_as=asn),
        "exabgp local_as": exabgp(local_as=asn),
        "bird asn": bird(_bird_data() | {"asn": asn}),
        "bird peer asn": bird(_bird_data(asn=asn)),
    }
    assert _verdicts(outcomes) == {_accepted(asn, AS_ACCEPTED)}, outcomes


# --- hold times -----------------------------------------------------------------

HOLD_CASES = [0, 1, 2, 3, 9, 65535, 65536, -3, False, 9.0]
HOLD_ACCEPTED = {3, 9, 65535}


@pytest.mark.parametrize("hold", HOLD_CASES, ids=repr)
def test_hold_times_agree(hold: Any, tmp_path: Path) -> None:
    keepalive = max(1, hold // limits.KEEPALIVE_DIVISOR) if type(hold) is int else 1
    outcomes = {
        "config bgp.hold_time": check_config(tmp_path, _node_config(hold_time=hold)),
        "config peer hold_time": check_config(
            tmp_path, _node_config(peers=[_peer(hold_time=hold)])
        ),
        "exabgp": exabgp(hold_time=hold),
        "bird hold_time": bird(_bird_data(hold_time=hold)),
        "bird peer hold_time": bird(_bird_data(hold_time=hold, keepalive=keepalive)),
    }
    assert _verdicts(outcomes) == {_accepted(hold, HOLD_ACCEPTED)}, outcomes


# --- passwords ------------------------------------------------------------------

# Every case carries "Zq9", so that a message repeating any part of the
# password around it is caught.
ACCEPTED_PASSWORDS = [
    "Zq9 with spaces",
    "Zq9;{}#,[]!$%&()*+-./:<=>?@^_`|~",
    "Zq9" + "x" * 77,  # 80 characters: TCP_MD5SIG_MAXKEYLEN
    "Zq9",
]
REFUSED_PASSWORDS = [
    "",
    'Zq9"double',
    "Zq9'single",
    "Zq9\\backslash",
    "Zq9\nnewline",
    "Zq9\ttab",
    " Zq9leading",
    "Zq9trailing ",
    "Zq9\u00e9",
    "Zq9" + "x" * 78,  # 81 characters
    12345,  # a YAML number in place of a string is not echoed either
]


def _password_outcomes(password: Any, tmp_path: Path) -> dict[str, str | None]:
    return {
        "config": check_config(tmp_path, _node_config(peers=[_peer(password=password)])),
        "exabgp": exabgp(md5_password=password),
        "bird": bird(_bird_data(password=password)),
    }


@pytest.mark.parametrize("password", ACCEPTED_PASSWORDS)
def test_passwords_accepted_everywhere(password: str, tmp_path: Path) -> None:
    assert limits.password_error(password) is None
    outcomes = _password_outcomes(password, tmp_path)
    assert _verdicts(outcomes) == {True}, outcomes


@pytest.mark.parametrize("password", REFUSED_PASSWORDS, ids=repr)
def test_passwords_refused_everywhere_and_never_echoed(password: Any, tmp_path: Path) -> None:
    outcomes = _password_outcomes(password, tmp_path)
    assert _verdicts(outcomes) == {False}, outcomes
    for door, message in outcomes.items():
        assert message is not None and "password" in message, (door, message)
        assert "Zq9" not in message and "12345" not in message, (door, message)


def test_neighbor_spec_repr_hides_the_password() -> None:
    spec = NeighborSpec(PEER, PEER_ASN, RID, "up", md5_password="Zq9 secret")
    assert "Zq9" not in repr(spec)
    assert "Zq9" not in str(dataclasses.replace(spec, hold_time=5))


def test_exabgp_parses_accepted_passwords_back_unchanged(tmp_path: Path) -> None:
    neighbors = [
        NeighborSpec(
            ipaddress.ip_address(f"198.18.1.{i + 1}"), PEER_ASN, RID, f"p{i}", md5_password=p
        )
        for i, p in enumerate(ACCEPTED_PASSWORDS)
    ]
    conf = tmp_path / "exabgp.conf"
    conf.write_text(
        render_config(neighbors, router_id=RID, local_as=NODE_ASN, bridge_command=[sys.executable])
    )
    # ExaBGP's parser keeps module-level state; a child process keeps it out
    # of this test run.
    script = (
        "import sys\n"
        "from exabgp.environment import getenv\n"
        "from exabgp.logger import log\n"
        "log.init(getenv())\n"
        "from exabgp.configuration.configuration import Configuration\n"
        "config = Configuration([sys.argv[1]])\n"
        "assert config.reload(), config.error\n"
        "for neighbor in config.neighbors.values():\n"
        "    print(repr(neighbor['md5-password']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "EXABGP_ENVFILE": "/dev/null"},
    )
    assert proc.returncode == 0, proc.stderr
    parsed = sorted(line for line in proc.stdout.splitlines() if line.startswith(("'", '"')))
    assert parsed == sorted(repr(p) for p in ACCEPTED_PASSWORDS)


@pytest.mark.skipif(BIRD is None, reason="the bird binary (Debian bird2) is missing")
def test_bird_parses_accepted_passwords(tmp_path: Path) -> None:
    assert BIRD is not None
    data = _bird_data()
    data["peers"] = [
        {"name": f"p{i}", "address": f"198.18.1.{i + 1}", "asn": PEER_ASN, "password": p}
        for i, p in enumerate(ACCEPTED_PASSWORDS)
    ]
    text = render_bird(config_from_data(data))
    for password in ACCEPTED_PASSWORDS:
        assert f'password "{password}";' in text
    conf = tmp_path / "bird.conf"
    conf.write_text(text)
    proc = subprocess.run([BIRD, "-p", "-c", str(conf)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --- the YAML files ---------------------------------------------------------------

DUPLICATE = "node:\n  name: node1\n  name: node2\n"


def test_duplicate_keys_are_refused_by_every_yaml_reader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(DUPLICATE)
    where = f"{path}:3:3: invalid YAML: found duplicate key 'name'"
    with pytest.raises(ConfigError) as config_error:
        load_config(path)
    assert str(config_error.value) == where
    with pytest.raises(TopologyError) as topology_error:
        load_topology(path)
    assert str(topology_error.value) == where
    assert bird_main(["bird", "render", "--from-yaml", str(path)]) == 2
    assert where in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a: " + b"[" * 65 + b"]" * 65 + b"\n", "invalid YAML: nested deeper than 64 levels"),
        (b"\x7fELF\x02\x01\x01\xff\xfe", "not UTF-8 text"),
        (b"node: {}\x00\n", "not a text file"),
        (b"#" * (4 * 1024 * 1024 + 1), "larger than 4 MiB"),
    ],
)
def test_bad_files_are_refused_naming_the_file(
    content: bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as config_error:
        load_config(path)
    (error,) = config_error.value.errors
    assert error.startswith(str(path)) and message in error, error
    with pytest.raises(TopologyError) as topology_error:
        load_topology(path)
    assert str(topology_error.value) == error
    assert bird_main(["bird", "render", "--from-yaml", str(path)]) == 2
    assert error in capsys.readouterr().err
