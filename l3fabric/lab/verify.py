"""`lab verify`: the Kubernetes network model checked with packets.

- every workload reaches every other workload, and every l3fabric node
  reaches every workload, over IPv4 and IPv6;
- the receiver sees the sender's own address (no NAT on the way): a UDP
  echo server in each workload answers with the source address it saw;
- no tunnel or encapsulation device exists in any namespace of the lab;
- no NAT rule exists in any node (nft / iptables where installed, else the
  kernel's list of iptables tables in the namespace);
- with the lab's DNS server, every workload resolves every other one's name
  through its own resolv.conf to exactly that workload's addresses, which it
  reached (reachability by name).
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from l3fabric.control import ControlError
from l3fabric.lab import daemons
from l3fabric.lab.deploy import Lab, l3fabric_nodes, lab_namespaces, node_addresses, node_context
from l3fabric.lab.runtime import LabError, run

PROBE_PORT = 47999
PROBE = (sys.executable, "-m", "l3fabric.lab.probe")
# Run with `ip netns exec` (which binds the namespace's resolv.conf): every
# name's addresses as the C library resolves them (A and AAAA), or the error.
_RESOLVE = (
    "import json, socket, sys\n"
    "out = {}\n"
    "for name in sys.argv[1:]:\n"
    "    try:\n"
    "        found = socket.getaddrinfo(name, None, type=socket.SOCK_DGRAM)\n"
    "        out[name] = sorted({a[4][0] for a in found})\n"
    "    except OSError as exc:\n"
    "        out[name] = str(exc)\n"
    "print(json.dumps(out))"
)
TUNNEL_KINDS = frozenset(
    {
        "vxlan",
        "geneve",
        "ipip",
        "sit",
        "gre",
        "gretap",
        "ip6gre",
        "ip6gretap",
        "ip6tnl",
        "erspan",
        "ip6erspan",
        "vti",
        "vti6",
        "wireguard",
        "bareudp",
    }
)


@dataclass(frozen=True)
class Party:
    """A sender or receiver: a workload or a node, in its namespace."""

    name: str
    role: str  # "workload" or "node"
    netns: str
    addresses: tuple[str, ...]
    dns_name: str = ""  # a workload's name in the lab's DNS zone, when it has one

    def address(self, version: int) -> list[str]:
        return [a for a in self.addresses if ipaddress.ip_address(a).version == version]


@dataclass(frozen=True)
class Probe:
    source: str
    target: str
    address: str
    seen: str | None
    expected: tuple[str, ...]
    error: str | None = None

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.address).version

    @property
    def ok(self) -> bool:
        return self.seen is not None and self.seen in self.expected

    def problem(self) -> str:
        if self.seen is None:
            return f"no answer{f' ({self.error})' if self.error else ''}"
        return f"receiver saw {self.seen}, expected {' or '.join(self.expected)} (NAT?)"


@dataclass(frozen=True)
class Check:
    what: str
    where: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Report:
    lab: str
    sources: tuple[Party, ...]
    targets: tuple[Party, ...]
    probes: tuple[Probe, ...]
    checks: tuple[Check, ...] = field(default=())
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            bool(self.probes) and all(p.ok for p in self.probes) and all(c.ok for c in self.checks)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "lab": self.lab,
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "probes": [
                {
                    "source": p.source,
                    "target": p.target,
                    "address": p.address,
                    "seen": p.seen,
                    "ok": p.ok,
                    "error": p.error,
                }
                for p in self.probes
            ],
            "checks": [c.__dict__ for c in self.checks],
        }


def _netns_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def parties(lab: Lab) -> tuple[list[Party], list[Party], list[Check]]:
    """(nodes, workloads, agent checks), asked from the agents themselves. An
    agent that does not answer is a failed check for its node, not the end of
    the run: the other nodes are still probed (a node's workloads cannot be
    listed without its agent, so they are left out)."""
    state = lab.state()
    zone = (state.extra("dns") or {}).get("zone")
    nodes, workloads, checks = [], [], []
    for node in l3fabric_nodes(lab):
        ctx = node_context(lab, state, node.name)
        addresses = tuple(a.split("/")[0] for a in node_addresses(lab, node.name))
        nodes.append(Party(node.name, "node", lab.paths.netns(node.name), addresses))
        try:
            listed = daemons.agent_call(ctx, "workload.list")
        except (ControlError, LabError) as exc:
            checks.append(Check("agent answers", node.name, False, str(exc)))
            continue
        count = len(listed)
        checks.append(
            Check("agent answers", node.name, True, f"{count} workload{'s' * (count != 1)}")
        )
        for w in listed:
            label, namespace = w.get("pod") or w["name"], w.get("namespace") or "default"
            workloads.append(
                Party(
                    w["name"],
                    "workload",
                    _netns_name(w["netns"]),
                    tuple(w["addresses"]),
                    f"{label}.{namespace}.{zone}" if zone else "",
                )
            )
    return nodes, workloads, checks


def start_server(netns: str, port: int, timeout: float = 15) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{netns}", "--", *PROBE, "serve", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], timeout)
    if not readable or proc.stdout.readline().strip() != b"ready":
        stop_server(proc)
        raise LabError(f"the probe server in {netns} did not start")
    return proc


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def send_probes(source: Party, targets: list[Party], port: int, timeout: float) -> list[Probe]:
    wanted = [
        (t, a)
        for t in targets
        if t.name != source.name
        for a in t.addresses
        if source.address(ipaddress.ip_address(a).version)
    ]
    if not wanted:
        return []
    argv = ["nsenter", f"--net=/run/netns/{source.netns}", "--", *PROBE, "send", str(port)]
    argv += [str(timeout), *sorted({a for _, a in wanted})]
    proc = run(argv, timeout=timeout + 30, check=False)
    error: str | None = None
    try:
        answer = json.loads(proc.stdout)
    except ValueError:
        answer = {"seen": {}, "errors": {}}
        error = f"probe failed: {proc.stderr.strip()[-200:]}"
    return [
        Probe(
            source.name,
            target.name,
            address,
            answer["seen"].get(address),
            tuple(source.address(ipaddress.ip_address(address).version)),
            error or answer["errors"].get(address),
        )
        for target, address in wanted
    ]


def resolve_in(netns: str, names: list[str], timeout: float) -> dict[str, list[str] | str]:
    argv = ["ip", "netns", "exec", netns, sys.executable, "-c", _RESOLVE, *names]
    proc = run(argv, timeout=timeout + 30, check=False)
    try:
        answer: dict[str, list[str] | str] = json.loads(proc.stdout)
    except ValueError:
        return {name: f"resolving failed: {proc.stderr.strip()[-200:]}" for name in names}
    return answer


def name_checks(workloads: list[Party], probes: list[Probe], timeout: float) -> list[Check]:
    """Every workload resolves every other's name to its addresses, and
    reached them (its probes to those addresses were answered)."""
    reached = {(p.source, p.address) for p in probes if p.ok}
    checks = []
    for source in workloads:
        targets = [t for t in workloads if t.name != source.name and t.dns_name]
        if not targets:
            continue
        answers = resolve_in(source.netns, [t.dns_name for t in targets], timeout)
        problems = []
        for target in targets:
            got = answers.get(target.dns_name, "no answer")
            if isinstance(got, str):
                problems.append(f"{target.dns_name}: {got}")
            elif set(got) != set(target.addresses):
                problems.append(f"{target.dns_name} is {', '.join(got) or 'nothing'}")
            elif not all((source.name, a) in reached for a in got):
                problems.append(f"{target.dns_name}: resolved but not reached")
        detail = "; ".join(problems) or f"{len(targets)} names resolved and reached"
        checks.append(Check("reachable by name", source.name, not problems, detail))
    return checks


def tunnel_checks(namespaces: list[str]) -> list[Check]:
    checks = []
    for ns in namespaces:
        proc = run(["ip", "-n", ns, "-d", "-j", "link", "show"], check=False)
        if proc.returncode != 0:
            checks.append(Check("no tunnel devices", ns, False, proc.stderr.strip()))
            continue
        found = [
            f"{link['ifname']} ({link['linkinfo']['info_kind']})"
            for link in json.loads(proc.stdout or "[]")
            if link.get("linkinfo", {}).get("info_kind") in TUNNEL_KINDS
        ]
        checks.append(Check("no tunnel devices", ns, not found, ", ".join(found) or "none found"))
    return checks


def nat_checks(namespaces: list[str]) -> list[Check]:
    checks = []
    tools = [t for t in ("nft", "iptables-save", "ip6tables-save") if shutil.which(t)]
    for ns in namespaces:
        enter = ["nsenter", f"--net=/run/netns/{ns}", "--"]
        problems, looked = [], []
        for tool in tools:
            argv = [tool, "list", "ruleset"] if tool == "nft" else [tool, "-t", "nat"]
            out = run([*enter, *argv], check=False).stdout
            looked.append(tool)
            lines = [line.strip() for line in out.splitlines()]
            if tool == "nft":
                bad = [
                    x
                    for x in lines
                    if "type nat" in x or x.startswith(("masquerade", "snat", "dnat"))
                ]
            else:
                bad = [x for x in lines if x.startswith("-A")]
            problems += [f"{tool}: {x}" for x in bad]
        # Without the tools, the kernel still lists the iptables tables that
        # exist in this namespace: a nat table means NAT rules can be there.
        for name in ("ip_tables_names", "ip6_tables_names"):
            out = run([*enter, "cat", f"/proc/net/{name}"], check=False).stdout
            looked.append(f"/proc/net/{name}")
            if "nat" in out.split():
                problems.append(f"{name}: a nat table exists")
        checks.append(
            Check(
                "no NAT",
                ns,
                not problems,
                "; ".join(problems) or f"none found ({', '.join(looked)})",
            )
        )
    return checks


def verify(
    lab: Lab,
    *,
    parallel: int = 8,
    timeout: float = 3.0,
    port: int = PROBE_PORT,
    progress: Callable[[str], None] = lambda _: None,
) -> Report:
    started = time.monotonic()
    nodes, workloads, agent_checks = parties(lab)
    if not workloads and all(c.ok for c in agent_checks):
        raise LabError(f"lab {lab.name} has no workloads to probe (deploy --workloads N)")
    progress(
        f"probing {len(workloads)} workloads from {len(workloads)} workloads and {len(nodes)} nodes"
    )
    servers: list[subprocess.Popen[bytes]] = []
    sources: list[Party] = [*workloads, *nodes]
    probes: list[Probe] = []
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
            servers = list(pool.map(lambda w: start_server(w.netns, port), workloads))
            results = pool.map(lambda s: send_probes(s, workloads, port, timeout), sources)
            probes = [p for batch in results for p in batch]
    finally:
        for server in servers:
            stop_server(server)
    namespaces = lab_namespaces(lab, lab.state())
    node_namespaces = [lab.paths.netns(n.name) for n in lab.topology.nodes]
    checks = agent_checks + tunnel_checks(namespaces) + nat_checks(node_namespaces)
    checks += name_checks(workloads, probes, timeout)
    return Report(
        lab.name,
        tuple(sources),
        tuple(workloads),
        tuple(probes),
        tuple(checks),
        time.monotonic() - started,
    )


def render_report(report: Report) -> str:
    cells: dict[tuple[str, str], list[Probe]] = {}
    for probe in report.probes:
        cells.setdefault((probe.source, probe.target), []).append(probe)
    names = [t.name for t in report.targets]
    width = max(len(n) for n in names + [s.name for s in report.sources])
    lines = [f"lab {report.lab}: {len(report.probes)} probes in {report.seconds:.1f}s"]
    for version in (4, 6):
        lines.append("")
        lines.append(
            f"IPv{version}  (rows send, columns receive; ✓ answered with the sender's own address)"
        )
        lines.append(" " * (width + 2) + " ".join(f"{i:>2}" for i in range(len(names))))
        for source in report.sources:
            row = []
            for target in names:
                probes = [p for p in cells.get((source.name, target), []) if p.version == version]
                row.append(" -" if not probes else (" ✓" if all(p.ok for p in probes) else " ✗"))
            lines.append(f"{source.name:<{width}}  " + " ".join(row))
    lines.append("")
    lines += [f"{i:>2} = {name}" for i, name in enumerate(names)]
    failures = [p for p in report.probes if not p.ok]
    if failures:
        lines.append("")
        lines.append(f"{len(failures)} failed probes:")
        lines += [f"  ✗ {p.source} -> {p.target} {p.address}: {p.problem()}" for p in failures]
    lines.append("")
    for check in report.checks:
        mark = "✓" if check.ok else "✗"
        lines.append(f"{mark} {check.what} in {check.where}: {check.detail}")
    lines.append("")
    lines.append("PASS" if report.ok else "FAIL")
    return "\n".join(lines)
