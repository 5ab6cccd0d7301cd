"""What runs in a node, by image kind: how to start it, when it is up, and
which BGP sessions it has.

| image name contains | runs                                                        |
|---------------------|-------------------------------------------------------------|
| l3fabric            | `l3fabric agent --config /etc/l3fabric/node.yaml`           |
| bird                | `bird -f -c /etc/bird/bird.conf -s /run/bird/bird.ctl`      |
| frr                 | zebra, the daemons set to yes in /etc/frr/daemons, staticd, |
|                     | then `vtysh -b` (what the FRR image's start script does)    |
| prometheus          | `prometheus --config.file=/etc/prometheus/prometheus.yml`   |
| etcd                | `etcd`, a member of the lab's cluster (lab/etcd.py)         |
| gobgp               | `gobgpd -f /etc/gobgp/gobgpd.conf`, where the host has it   |
| anything else       | nothing (a plain host)                                      |

Each node has its own /run, so the tools' default paths work inside
`lab exec` (birdc, vtysh, `l3fabric status`) without flags.

In a lab with etcd members, the members and then the agents start after the
exec steps: etcd listens on the underlay addresses those steps add, and an
agent whose datastore is etcd must reach it to register its node at start.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from l3fabric import control, yamlfile
from l3fabric.config import ConfigError, load_config
from l3fabric.lab import etcd, keeper
from l3fabric.lab.paths import LabPaths
from l3fabric.lab.runtime import (
    LabError,
    MountPlan,
    ProcessRecord,
    in_node,
    log_tail,
    process_start_time,
    run,
    spawn,
)
from l3fabric.lab.topology import ImageKind, Node, Topology

AGENT_CONFIG = "/etc/l3fabric/node.yaml"
AGENT_STATE = PurePosixPath("/var/lib/l3fabric")
L3FABRIC_CLI = (sys.executable, "-m", "l3fabric.cli")
BIRD_SOCKET = "/run/bird/bird.ctl"
BIRD_PID = "/run/bird/bird.pid"
FRR_DIR = Path("/usr/lib/frr")
# FRR starts these whatever the daemons file says (as frrinit.sh does).
FRR_ALWAYS = ("zebra", "staticd")
FRR_DEFAULT_OPTIONS = {"zebra": "-A 127.0.0.1 -s 90000000"}
GOBGP_CONFIG = "/etc/gobgp/gobgpd.conf"
GOBGP_API = "127.0.0.1:50051"  # gobgpd's default API address, inside the node
PROMETHEUS_CONFIG_DIR = PurePosixPath("/etc/prometheus")
PROMETHEUS_DATA = PurePosixPath("/var/lib/prometheus/metrics2")  # Debian's default
PROMETHEUS_PORT = 9090
PROMETHEUS_ARGV = (
    "prometheus",
    f"--config.file={PROMETHEUS_CONFIG_DIR}/prometheus.yml",
    f"--storage.tsdb.path={PROMETHEUS_DATA}",
    f"--web.listen-address=0.0.0.0:{PROMETHEUS_PORT}",
)
PROMETHEUS_READY = f"http://127.0.0.1:{PROMETHEUS_PORT}/-/ready"
# Run inside the node (its network namespace): exit 0 when the URL answers 200.
_HTTP_OK = (
    "import sys, urllib.request\n"
    "sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)"
)
# The same for etcd's /health, which answers 200 before the member has a leader.
_ETCD_HEALTHY = (
    "import json, sys, urllib.request\n"
    "answer = json.loads(urllib.request.urlopen(sys.argv[1], timeout=2).read())\n"
    "sys.exit(0 if answer.get('health') == 'true' else 1)"
)

DNS_PORT = 53
# Run inside a node: exit 0 when the DNS server at ADDR PORT answers at all
# (NXDOMAIN for this name is an answer).
_DNS_OK = (
    "import sys, dns.message, dns.query\n"
    "q = dns.message.make_query('l3fabric-lab-probe.invalid', 'A')\n"
    "dns.query.udp(q, sys.argv[1], port=int(sys.argv[2]), timeout=1)"
)

PRIVATE_DIRS: dict[ImageKind, tuple[PurePosixPath, ...]] = {
    ImageKind.L3FABRIC: (AGENT_STATE,),
    ImageKind.ETCD: (etcd.DATA_ROOT,),
}


@dataclass(frozen=True)
class NodeContext:
    node: Node
    paths: LabPaths
    holder: int
    plan: MountPlan
    cluster: tuple[etcd.Member, ...] = ()  # the lab's etcd members

    @property
    def etcd_member(self) -> etcd.Member:
        for member in self.cluster:
            if member.name == self.node.name:
                return member
        raise LabError(f"node {self.node.name}: runs etcd but has no underlay address")

    @property
    def run_dir(self) -> Path:
        return self.paths.node_run(self.node.name)

    def host_path(self, inside: PurePosixPath) -> Path | None:
        """The host path of a path inside the node, when a bind or the
        node's /run provides it."""
        run_root = PurePosixPath("/run")
        if run_root in inside.parents:
            return self.run_dir.joinpath(*inside.parts[2:])
        best = None
        for bind in self.plan.binds:
            if (bind.target == inside or bind.target in inside.parents) and (
                best is None or len(bind.target.parts) > len(best.target.parts)
            ):
                best = bind
        if best is None:
            return None
        return best.source.joinpath(*inside.parts[len(best.target.parts) :])


@dataclass(frozen=True)
class Session:
    """A BGP session as one end reports it."""

    node: str
    peer_address: str
    state: str
    name: str = ""

    @property
    def established(self) -> bool:
        return self.state.lower() == "established"


# -- starting ----------------------------------------------------------------------


def start_order(topology: Topology) -> tuple[list[Node], list[list[Node]]]:
    """(the nodes whose daemons start before the exec steps, then the groups
    started after them, each awaited before the next). Without etcd every
    daemon starts first; with it, the etcd members and then the agents
    follow the exec steps that give them their addresses."""
    running = [n for n in topology.nodes if n.image_kind is not ImageKind.HOST]
    members = [n for n in running if n.image_kind is ImageKind.ETCD]
    if not members:
        return running, []
    agents = [n for n in running if n.image_kind is ImageKind.L3FABRIC]
    first = [n for n in running if n not in members and n not in agents]
    return first, [group for group in (members, agents) if group]


def prepare(ctx: NodeContext) -> None:
    """Host-side directories the daemons need in the node's /run."""
    kind = ctx.node.image_kind
    if kind is ImageKind.BIRD:
        (ctx.run_dir / "bird").mkdir(parents=True, exist_ok=True)
    elif kind is ImageKind.FRR:
        frr_run = ctx.run_dir / "frr"
        frr_run.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(KeyError):
            os.chown(frr_run, pwd.getpwnam("frr").pw_uid, grp.getgrnam("frr").gr_gid)


def start(ctx: NodeContext, recorded: Callable[[ProcessRecord], None]) -> list[ProcessRecord]:
    """Start the node's daemons; `recorded` hears of each one as soon as it
    runs, so that a failure halfway still leaves every PID in the lab state."""
    kind = ctx.node.image_kind
    env = dict(ctx.node.env)
    records: list[ProcessRecord] = []

    def spawn_daemon(what: str, argv: list[str]) -> None:
        record = _spawn(ctx, what, argv, env)
        records.append(record)
        recorded(record)

    if kind is ImageKind.L3FABRIC:
        spawn_daemon("agent", [*L3FABRIC_CLI, "agent", "--config", AGENT_CONFIG])
    elif kind is ImageKind.BIRD:
        conf = "/etc/bird/bird.conf"
        spawn_daemon("bird", ["bird", "-f", "-c", conf, "-s", BIRD_SOCKET, "-P", BIRD_PID])
    elif kind is ImageKind.FRR:
        daemons_file = ctx.host_path(PurePosixPath("/etc/frr/daemons")) or Path("/etc/frr/daemons")
        for daemon, options in frr_daemons(daemons_file if daemons_file.exists() else None):
            spawn_daemon(f"frr-{daemon}", [str(FRR_DIR / daemon), *options])
            if daemon == "zebra":
                # Every other daemon connects to zebra at start.
                _wait_path(ctx, ctx.run_dir / "frr" / "zserv.api", records, 20)
    elif kind is ImageKind.PROMETHEUS:
        spawn_daemon("prometheus", list(PROMETHEUS_ARGV))
    elif kind is ImageKind.ETCD:
        spawn_daemon("etcd", etcd.argv(ctx.etcd_member, ctx.cluster, ctx.paths.lab))
    elif kind is ImageKind.GOBGP:
        spawn_daemon("gobgpd", ["gobgpd", "-f", GOBGP_CONFIG, "--api-hosts", GOBGP_API])
    return records


def _spawn(ctx: NodeContext, what: str, argv: list[str], env: dict[str, str]) -> ProcessRecord:
    log_path = ctx.paths.log(ctx.node.name, what)
    command = in_node(ctx.holder, argv)
    policy = ctx.node.restart
    if policy != "no":
        # Recorded in the daemon's place: stopping it stops the daemon (keeper.py).
        command = [
            sys.executable,
            "-m",
            "l3fabric.lab.keeper",
            "--policy",
            policy,
            "--status",
            str(keeper.status_path(log_path)),
            "--state",
            str(ctx.paths.state_file),
            "--holder",
            f"{ctx.holder}:{process_start_time(ctx.holder)}",
            "--",
            *command,
        ]
    proc = spawn(command, log_path, env)
    start_time = None
    deadline = time.monotonic() + 5
    while start_time is None and time.monotonic() < deadline:
        start_time = process_start_time(proc.pid)
        if start_time is None and proc.poll() is not None:
            break
    if start_time is None:
        raise LabError(f"node {ctx.node.name}: {what} exited at once:\n{log_tail(log_path)}")
    return ProcessRecord(ctx.node.name, what, proc.pid, start_time, str(log_path))


def frr_daemons(daemons_file: Path | None) -> list[tuple[str, list[str]]]:
    """(daemon, options) to start, zebra first, from an FRR daemons file."""
    enabled: list[str] = []
    options = dict(FRR_DEFAULT_OPTIONS)
    text = ""
    if daemons_file is not None:
        try:
            text = daemons_file.read_text()
        except OSError as exc:
            raise LabError(f"cannot read the FRR daemons file {daemons_file}: {exc}") from None
    for line in text.splitlines():
        match = re.match(r"^\s*([a-z0-9]+d|zebra)(_options)?\s*=\s*(.*?)\s*$", line)
        if not match:
            continue
        name, is_options, value = match.groups()
        value = value.strip("\"'")
        if is_options:
            options[name] = value
        elif value == "yes" and name not in enabled:
            enabled.append(name)
    order = ["zebra"] + [d for d in enabled if d not in FRR_ALWAYS] + ["staticd"]
    return [
        (d, shlex.split(options.get(d, "-A 127.0.0.1"))) for d in order if (FRR_DIR / d).exists()
    ]


def _wait_path(ctx: NodeContext, path: Path, records: list[ProcessRecord], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        _check_alive(ctx, records)
        if time.monotonic() > deadline:
            raise LabError(f"node {ctx.node.name}: {path.name} did not appear in {timeout:.0f}s")
        time.sleep(0.05)


def _check_alive(ctx: NodeContext, records: list[ProcessRecord]) -> None:
    for record in records:
        if not record.alive:
            raise LabError(
                f"node {ctx.node.name}: {record.what} exited; last lines of {record.log}:\n"
                f"{log_tail(record.log)}"
            )


@dataclass(frozen=True)
class DnsSettings:
    """Where the lab's DNS server listens and what it serves: the node's
    underlay address, and the discovery section of the node's config."""

    address: str
    zone: str
    prefix: str
    port: int = DNS_PORT

    @property
    def listen(self) -> str:
        return (
            f"[{self.address}]:{self.port}"
            if ":" in self.address
            else f"{self.address}:{self.port}"
        )


def dns_settings(ctx: NodeContext) -> DnsSettings | None:
    """The DNS server an l3fabric node would run, or None when its config
    turns discovery off or cannot be read (the agent then says why)."""
    source = ctx.host_path(PurePosixPath(AGENT_CONFIG)) or ctx.node.bound_source(AGENT_CONFIG)
    if source is None:
        return None
    try:
        config = load_config(source)
    except ConfigError:
        return None
    address = config.node.ipv4 or config.node.ipv6
    if not config.discovery.enabled or address is None:
        return None
    return DnsSettings(str(address), config.discovery.zone, config.discovery.prefix)


def start_dns(
    ctx: NodeContext, settings: DnsSettings, recorded: Callable[[ProcessRecord], None]
) -> ProcessRecord:
    """`l3fabric dns` inside the node, on its underlay address, reading the
    datastore the node's agent uses (its config's datastore section)."""
    argv = [
        *L3FABRIC_CLI,
        "dns",
        "--listen",
        settings.listen,
        "--config",
        AGENT_CONFIG,
        "--zone",
        settings.zone,
        "--prefix",
        settings.prefix,
    ]
    record = _spawn(ctx, "dns", argv, dict(ctx.node.env))
    recorded(record)
    return record


def wait_dns(
    ctx: NodeContext, settings: DnsSettings, record: ProcessRecord, timeout: float = 30
) -> None:
    probe = [sys.executable, "-c", _DNS_OK, settings.address, str(settings.port)]
    deadline = time.monotonic() + timeout
    while run(in_node(ctx.holder, probe), check=False).returncode != 0:
        _check_alive(ctx, [record])
        if time.monotonic() > deadline:
            raise LabError(
                f"node {ctx.node.name}: the DNS server does not answer on {settings.listen} "
                f"after {timeout:.0f}s:\n{log_tail(record.log)}"
            )
        time.sleep(0.2)


# -- readiness ---------------------------------------------------------------------


class _NotYet(Exception):
    """The daemon is alive but does not answer yet: ask again."""


def wait_started(ctx: NodeContext, records: list[ProcessRecord], timeout: float = 60) -> str:
    """Wait until the node's daemons answer; return a one-line description.
    Raises LabError with the failing daemon's log tail."""
    deadline = time.monotonic() + timeout
    while True:
        _check_alive(ctx, records)
        try:
            return _answer(ctx, records)
        except (_NotYet, control.ControlError, OSError, subprocess.SubprocessError) as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {r.log}\n{log_tail(r.log)}" for r in records)
            raise LabError(f"node {ctx.node.name}: not up after {timeout:.0f}s ({last})\n{tails}")
        time.sleep(0.2)


def _answer(ctx: NodeContext, records: list[ProcessRecord]) -> str:
    kind = ctx.node.image_kind
    if kind is ImageKind.L3FABRIC:
        status = agent_call(ctx, "status")
        return f"agent {status.get('state')} ({status.get('reason')})"
    if kind is ImageKind.BIRD:
        argv = ["birdc", "-s", str(ctx.run_dir / "bird" / "bird.ctl"), "show", "status"]
        out = run(argv, check=False).stdout
        if "up and running" not in out:
            raise _NotYet(out.strip() or "birdc has no answer")
        return "bird up"
    if kind is ImageKind.FRR:
        for record in records:
            daemon = record.what.removeprefix("frr-")
            if not (ctx.run_dir / "frr" / f"{daemon}.vty").exists():
                raise _NotYet(f"{daemon} has no vty socket yet")
        proc = run(in_node(ctx.holder, ["vtysh", "-b"]), check=False)
        if proc.returncode != 0:  # a config error: asking again will not help
            raise LabError(
                f"node {ctx.node.name}: vtysh -b (loading /etc/frr/frr.conf) failed:\n"
                f"{(proc.stdout + proc.stderr).strip()}"
            )
        return "frr " + " ".join(r.what.removeprefix("frr-") for r in records)
    if kind is ImageKind.PROMETHEUS:
        probe = [sys.executable, "-c", _HTTP_OK, PROMETHEUS_READY]
        if run(in_node(ctx.holder, probe), check=False).returncode != 0:
            raise _NotYet(f"{PROMETHEUS_READY} does not answer 200 yet")
        return "prometheus ready"
    if kind is ImageKind.ETCD:
        probe = [sys.executable, "-c", _ETCD_HEALTHY, etcd.HEALTH_URL]
        if run(in_node(ctx.holder, probe), check=False).returncode != 0:
            raise _NotYet(f"{etcd.HEALTH_URL} does not say healthy yet (no quorum?)")
        return f"etcd member at {ctx.etcd_member.client_url}"
    if kind is ImageKind.GOBGP:
        probe = ["gobgp", "--target", GOBGP_API.split(":")[0], "global"]
        proc = run(in_node(ctx.holder, probe), check=False)
        if proc.returncode != 0:
            raise _NotYet(f"gobgp global: {(proc.stderr or proc.stdout).strip()}")
        return "gobgpd up"
    return "host"


def agent_call(ctx: NodeContext, method: str, params: dict[str, Any] | None = None) -> Any:
    """Call the node's agent through its control socket: straight from the
    host when its state_dir is a bind or private directory (the default),
    otherwise with the l3fabric CLI run inside the node."""
    socket = ctx.host_path(agent_state_dir(ctx) / "agent.sock")
    if socket is not None:
        return control.call(method, params or {}, socket_path=socket, timeout=30)
    if method != "status" and method != "workload.list":
        raise LabError(
            f"node {ctx.node.name}: the agent's state_dir is not reachable from the host"
        )
    argv = [*L3FABRIC_CLI, *method.split("."), "-o", "json"]
    proc = run(in_node(ctx.holder, argv), check=False)
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        # The CLI's advice to a shell user means nothing in the lab's output.
        message = proc.stderr.strip().removesuffix(control.UNREACHABLE_HINT).strip()
        raise control.ControlError("unreachable", message)
    return json.loads(proc.stdout)


def agent_state_dir(ctx: NodeContext) -> PurePosixPath:
    source = ctx.host_path(PurePosixPath(AGENT_CONFIG))
    if source is None:
        return AGENT_STATE
    try:
        data = yamlfile.load_file(source)
        state_dir = data.get("state_dir") if isinstance(data, dict) else None
    except yamlfile.YamlFileError:
        return AGENT_STATE
    return PurePosixPath(state_dir) if isinstance(state_dir, str) else AGENT_STATE


# -- BGP sessions ------------------------------------------------------------------


def sessions(ctx: NodeContext) -> list[Session]:
    kind = ctx.node.image_kind
    name = ctx.node.name
    if kind is ImageKind.L3FABRIC:
        status = agent_call(ctx, "status")
        return [
            Session(name, str(p.get("peer", "")), str(p.get("state", "?")), str(p.get("name", "")))
            for p in status.get("peers") or []
        ]
    if kind is ImageKind.BIRD:
        out = run(
            ["birdc", "-s", str(ctx.run_dir / "bird" / "bird.ctl"), "show", "protocols", "all"]
        )
        return parse_bird_protocols(name, out.stdout)
    if kind is ImageKind.FRR:
        proc = run(in_node(ctx.holder, ["vtysh", "-c", "show bgp summary json"]))
        return parse_frr_summary(name, proc.stdout)
    return []


def parse_bird_protocols(node: str, text: str) -> list[Session]:
    """Sessions from `birdc show protocols all`: one per BGP protocol with a
    neighbor address (range templates have none and are skipped)."""
    found: list[Session] = []
    current: dict[str, str] = {}

    def flush() -> None:
        if current.get("proto") == "BGP" and current.get("address"):
            found.append(
                Session(node, current["address"], current.get("state", "?"), current["name"])
            )

    for line in text.splitlines():
        head = re.match(r"^(\S+)\s+(\S+)\s+\S+\s+(\S+)\s+\S+\s*(.*)$", line)
        if head and not line.startswith(" ") and head.group(1) != "Name":
            flush()
            current = {"name": head.group(1), "proto": head.group(2), "state": head.group(4)}
            continue
        stripped = line.strip()
        if stripped.startswith("BGP state:"):
            current["state"] = stripped.split(":", 1)[1].strip()
        elif stripped.startswith("Neighbor address:"):
            current["address"] = stripped.split(":", 1)[1].strip()
    flush()
    return found


def parse_frr_summary(node: str, text: str) -> list[Session]:
    data = json.loads(text or "{}")
    found: dict[str, Session] = {}
    for family in data.values():
        if not isinstance(family, dict):
            continue
        for address, peer in (family.get("peers") or {}).items():
            state = str(peer.get("state", "?"))
            if address not in found or state == "Established":
                found[address] = Session(node, address, state, str(peer.get("hostname", "")))
    return list(found.values())
