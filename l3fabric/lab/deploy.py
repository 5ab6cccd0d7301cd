"""deploy, destroy, exec and inspect a lab on network namespaces."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from l3fabric.cni import install as cni_install
from l3fabric.cni.conflist import parse_conflist, plugin_stdin
from l3fabric.lab import daemons, keeper, mgmt, nodefiles
from l3fabric.lab.paths import LabPaths
from l3fabric.lab.runtime import (
    LabError,
    LabState,
    ProcessRecord,
    add_veth,
    in_node,
    is_alive,
    netns_add,
    netns_del,
    netns_inode,
    netns_list,
    plan_mounts,
    processes_in_netns,
    run,
    setup_node_mounts,
    start_holder,
    stop_processes,
)
from l3fabric.lab.topology import ImageKind, Node, Topology

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
# `ip netns exec NS` binds /etc/netns/NS/resolv.conf over /etc/resolv.conf:
# the one place outside the lab directory the lab writes (and destroy cleans).
ETC_NETNS = Path("/etc/netns")
# How lab workloads are made: through the installed CNI plugin executable as
# a container runtime runs it, or with the agent's workload.add.
ATTACH_MODES = ("api", "cni")
DEFAULT_ATTACH = "api"


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Lab:
    topology: Topology  # with the Prometheus node when `prometheus`
    paths: LabPaths
    prometheus: bool = False  # a Prometheus node on the management network

    @property
    def name(self) -> str:
        return self.topology.name

    def context(self, state: LabState, node: Node) -> daemons.NodeContext:
        holder = state.holder(node.name)
        if holder is None:
            raise LabError(f"lab {self.name}: node {node.name} was not started")
        plan = plan_mounts(node, self.paths, daemons.PRIVATE_DIRS.get(node.image_kind, ()))
        cluster = self.topology.etcd_members()
        return daemons.NodeContext(node, self.paths, holder.pid, plan, cluster)

    def state(self) -> LabState:
        state = LabState.load(self.paths)
        if state is None:
            raise LabError(f"lab {self.name} is not deployed (no {self.paths.state_file})")
        return state


def open_lab(topology: Topology, paths: LabPaths, *, prometheus: bool = False) -> Lab:
    """The lab of a topology file, with the Prometheus node when asked for
    (deploy --prometheus) or when the deployed lab has one (its state says so)."""
    try:
        state = LabState.load(paths)
    except LabError:
        state = None  # unreadable: destroy still works by names
    if prometheus or (state is not None and state.extra("prometheus")):
        return Lab(mgmt.with_prometheus(topology), paths, True)
    return Lab(topology, paths)


# -- deploy ------------------------------------------------------------------------


def deploy(
    lab: Lab,
    *,
    workloads: int = 0,
    attach: str = DEFAULT_ATTACH,
    progress: Progress = _quiet,
) -> LabState:
    """Make the lab. On any failure everything made so far is removed and
    LabError says which node and step failed."""
    paths = lab.paths
    if workloads < 0:
        raise LabError(f"--workloads must be 0 or more, not {workloads}")
    if attach not in ATTACH_MODES:
        raise LabError(f"--attach must be one of {', '.join(ATTACH_MODES)}, not {attach!r}")
    if paths.state_file.exists() or any(
        paths.netns(n.name) in netns_list() for n in lab.topology.nodes
    ):
        raise LabError(f"lab {lab.name} is already deployed: run `l3fabric lab destroy` first")
    # Checked before anything is made. Every lab has a management network,
    # as in containerlab; the agents' metrics listen only on it.
    network = mgmt.plan_network(lab.topology)
    targets = mgmt.check_listeners(lab.topology, network)
    if lab.prometheus:
        targets = mgmt.scrape_targets(lab.topology, network)
    state = LabState(paths, str(lab.topology.path))
    state.save()
    try:
        _deploy(lab, state, workloads, attach, progress, network, targets)
    except BaseException as exc:
        progress("deploy failed; removing what was made")
        destroy(lab, progress=progress)
        if isinstance(exc, LabError):
            raise
        if isinstance(exc, (OSError, subprocess.SubprocessError)):
            raise LabError(str(exc)) from exc
        raise
    state.mark_deployed()
    return state


def _deploy(
    lab: Lab,
    state: LabState,
    workloads: int,
    attach: str,
    progress: Progress,
    network: mgmt.MgmtNetwork,
    targets: list[mgmt.ScrapeTarget],
) -> None:
    topo, paths = lab.topology, lab.paths
    topo.lab_dir.mkdir(parents=True, exist_ok=True)
    state.set_extra("mgmt", network.to_state(mgmt.mgmt_netns(paths)))
    if lab.prometheus:
        mgmt.write_prometheus_config(topo, targets)
        state.set_extra(
            "prometheus",
            {
                "url": network.prometheus_url,
                "targets": {t.node: t.address for t in targets},
                "dir": str(topo.node_dir(mgmt.PROMETHEUS_NODE)),
            },
        )
    contexts: dict[str, daemons.NodeContext] = {}
    for node in topo.nodes:
        ns = paths.netns(node.name)
        progress(f"node {node.name}: namespace {ns} ({node.image_kind.value}, {node.image})")
        state.add_namespace(ns)
        netns_add(ns)
        holder = start_holder(node.name, ns, paths.log(node.name, "holder"))
        state.set_holder(node.name, holder)
        ctx = lab.context(state, node)
        setup_node_mounts(holder.pid, ctx.plan, paths, node.name)
        state.set_mounts(
            node.name,
            [
                "/sys",
                *map(str, ctx.plan.overlays),
                *(str(b.target) for b in ctx.plan.binds),
                "/run",
            ],
        )
        daemons.prepare(ctx)
        contexts[node.name] = ctx
    for link in topo.links:
        progress(f"link {link.a} <-> {link.b}")
        add_veth(paths.netns(link.a.node), link.a.iface, paths.netns(link.b.node), link.b.iface)
    progress(
        f"management network {network.network}: {network.subnet} and {network.subnet6} "
        f"in {mgmt.mgmt_netns(paths)}, eth0 per node"
    )
    mgmt.create_network(paths, network, state)
    first, after_exec = daemons.start_order(topo)
    started = _start_daemons(first, contexts, state, progress)
    for node in topo.nodes:
        for command in node.exec:
            progress(f"node {node.name}: exec {command}")
            _exec_step(contexts[node.name], command)
    for group in after_exec:  # etcd members, then the agents that register in it
        _wait_daemons(_start_daemons(group, contexts, state, progress), contexts, progress)
    _wait_daemons(started, contexts, progress)
    dns = _start_dns(lab, state, contexts, progress)
    for node in topo.nodes:
        if node.image_kind is not ImageKind.L3FABRIC:
            continue
        for index in range(workloads):
            _add_workload(lab, state, contexts[node.name], index, attach, progress, dns)


def _start_dns(
    lab: Lab, state: LabState, contexts: dict[str, daemons.NodeContext], progress: Progress
) -> daemons.DnsSettings | None:
    """One DNS server for the fabric, on the first l3fabric node whose
    config has discovery on: every node shares the lab's datastore, so one
    server has every name, and its underlay address is routed from every
    workload."""
    for node in l3fabric_nodes(lab):
        ctx = contexts[node.name]
        settings = daemons.dns_settings(ctx)
        if settings is None:
            continue
        progress(f"node {node.name}: DNS server on {settings.listen} (zone {settings.zone})")
        record = daemons.start_dns(ctx, settings, state.add_process)
        daemons.wait_dns(ctx, settings, record)
        state.set_extra(
            "dns",
            {
                "node": node.name,
                "address": settings.address,
                "port": settings.port,
                "zone": settings.zone,
            },
        )
        return settings
    return None


def resolv_conf_path(netns: str) -> Path:
    return ETC_NETNS / netns / "resolv.conf"


def _resolv_conf_marker(lab: Lab) -> str:
    return f"# l3fabric lab {lab.name}: removed by lab destroy"


def write_resolv_conf(lab: Lab, netns: str, dns: daemons.DnsSettings, namespace: str) -> None:
    path = resolv_conf_path(netns)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"{_resolv_conf_marker(lab)}\n"
        f"nameserver {dns.address}\n"
        f"search {namespace}.{dns.zone}\n"
        "options timeout:1 attempts:2\n"
    )


def remove_resolv_conf(lab: Lab, netns: str) -> bool:
    """Only a file this lab wrote goes, and its directory if that is empty."""
    path = resolv_conf_path(netns)
    try:
        if not path.read_text().startswith(_resolv_conf_marker(lab)):
            return False
        path.unlink()
    except OSError:
        return False
    with contextlib.suppress(OSError):
        path.parent.rmdir()
    return True


def _start_daemons(
    nodes: list[Node],
    contexts: dict[str, daemons.NodeContext],
    state: LabState,
    progress: Progress,
) -> dict[str, list[ProcessRecord]]:
    started = {}
    for node in nodes:
        progress(f"node {node.name}: starting {node.image_kind.value}")
        started[node.name] = daemons.start(contexts[node.name], state.add_process)
    return started


def _wait_daemons(
    started: dict[str, list[ProcessRecord]],
    contexts: dict[str, daemons.NodeContext],
    progress: Progress,
) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = {
            pool.submit(daemons.wait_started, contexts[name], records): name
            for name, records in started.items()
        }
        for future in concurrent.futures.as_completed(futures):
            progress(f"node {futures[future]}: {future.result()}")


def _exec_step(ctx: daemons.NodeContext, command: str) -> None:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise LabError(f"node {ctx.node.name}: exec {command!r}: {exc}") from None
    env = {**os.environ, **dict(ctx.node.env)}
    proc = subprocess.run(
        in_node(ctx.holder, argv), capture_output=True, text=True, timeout=120, env=env
    )
    if proc.returncode != 0:
        raise LabError(
            f"node {ctx.node.name}: exec {command!r} failed ({proc.returncode}):\n"
            f"{(proc.stdout + proc.stderr).strip()}"
        )


def _add_workload(
    lab: Lab,
    state: LabState,
    ctx: daemons.NodeContext,
    index: int,
    attach: str,
    progress: Progress,
    dns: daemons.DnsSettings | None = None,
) -> None:
    node = ctx.node.name
    ns = lab.paths.workload_netns(node, index)
    name = f"{node}-w{index}"
    state.add_namespace(ns)
    netns_add(ns)
    if dns is not None:
        # CNI workloads are in the pod namespace the lab gives them.
        write_resolv_conf(lab, ns, dns, lab.name if attach == "cni" else "default")
    if attach == "cni":
        addresses = _cni_add(lab, ctx, name, f"/run/netns/{ns}")
    else:
        result = daemons.agent_call(
            ctx, "workload.add", {"name": name, "netns": f"/run/netns/{ns}", "ips": []}
        )
        addresses = [str(a) for a in result.get("addresses", [])]
    state.add_workload(node, name, ns, addresses)
    progress(f"node {node}: workload {name} in {ns}: {', '.join(addresses)} ({attach})")


# Where the lab installs a node's CNI plugin and conflist: in the node's own
# /run (the lab directory may itself be under the host's /run, which the
# node does not see).
NODE_CNI_DIR = PurePosixPath("/run/l3fabric-cni")


def _cni_add(lab: Lab, ctx: daemons.NodeContext, name: str, netns: str) -> list[str]:
    """ADD as a runtime does it on the node: `l3fabric cni install` once,
    then the plugin executable inside the node with the CNI_* environment
    and the conflist's plugin object on stdin."""
    host_root = ctx.run_dir / NODE_CNI_DIR.name
    bin_dir = NODE_CNI_DIR / "bin"
    conflist = host_root / "net.d" / cni_install.CONFLIST_NAME
    if not conflist.exists():
        # The socket as the node sees it: the plugin runs inside the node.
        socket = daemons.agent_state_dir(ctx) / "agent.sock"
        options = cni_install.InstallOptions(
            bin_dir=host_root / "bin", conf_dir=host_root / "net.d", socket=Path(socket)
        )
        cni_install.apply(cni_install.plan(options), options)
    stdin = plugin_stdin(parse_conflist(conflist.read_bytes()), 0)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": name,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(bin_dir),
        "CNI_ARGS": f"K8S_POD_NAMESPACE={lab.name};K8S_POD_NAME={name}",
    }
    argv = in_node(ctx.holder, [str(bin_dir / cni_install.PLUGIN_NAME)])
    proc = subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=120)
    try:
        result = json.loads(proc.stdout or b"{}")
    except ValueError:
        result = {}
    if proc.returncode != 0:
        detail = result.get("details") or result.get("msg") or proc.stderr.decode().strip()
        raise LabError(
            f"node {ctx.node.name}: CNI ADD of {name} failed (code {result.get('code')}): {detail}"
        )
    return [ip["address"].split("/")[0] for ip in result.get("ips", [])]


# -- destroy -----------------------------------------------------------------------


def lab_namespaces(lab: Lab, state: LabState | None) -> list[str]:
    """The lab's namespaces: from its state, plus any that follow its naming
    (a deploy that died before writing its state)."""
    names = set(state.namespaces if state else [])
    patterns = [
        re.compile(rf"^{re.escape(lab.paths.netns(n.name))}(-w\d+)?$") for n in lab.topology.nodes
    ]
    # The management network and Prometheus of a --prometheus deploy.
    extras = {mgmt.mgmt_netns(lab.paths), lab.paths.netns(mgmt.PROMETHEUS_NODE)}
    names |= {ns for ns in netns_list() if any(p.match(ns) for p in patterns) or ns in extras}
    return sorted(names)


def destroy(lab: Lab, *, progress: Progress = _quiet) -> int:
    """Remove every process, namespace and file of the lab. Idempotent.
    Returns how many things were removed."""
    state = LabState.load(lab.paths)
    removed = 0
    records = list(state.processes) if state else []
    holders = [state.holder(n.name) for n in lab.topology.nodes] if state else []
    running = [r for r in records if r.alive]
    for record in running:
        progress(f"node {record.node}: stopping {record.what} (pid {record.pid})")
    stop_processes([(r.pid, r.start) for r in running])
    removed += len(running)
    namespaces = lab_namespaces(lab, state)
    # Anything else still running in the lab's namespaces was started through
    # the lab (exec, a verify probe); holders go last.
    inodes = {i for i in (netns_inode(ns) for ns in namespaces) if i is not None}
    holder_pids = {h.pid for h in holders if h is not None}
    leftovers = [p for p in processes_in_netns(inodes) if p[0] not in holder_pids]
    for pid, _ in leftovers:
        progress(f"stopping pid {pid} left in the lab's namespaces")
    stop_processes(leftovers)
    live_holders = [(h.pid, h.start) for h in holders if h is not None and h.alive]
    stop_processes(live_holders + processes_in_netns(inodes))
    removed += len(leftovers) + len(live_holders)
    for ns in namespaces:
        if remove_resolv_conf(lab, ns):
            progress(f"namespace {ns}: removing {resolv_conf_path(ns)}")
            removed += 1
    for ns in reversed(namespaces):
        if ns in netns_list():
            progress(f"namespace {ns}: deleting")
            netns_del(ns)
            removed += 1
    if lab.paths.dir.exists():
        progress(f"removing {lab.paths.dir}")
        shutil.rmtree(lab.paths.dir, ignore_errors=True)
        removed += 1
    return removed


# -- exec and inspect ------------------------------------------------------------


def exec_in_node(lab: Lab, node_name: str, argv: list[str]) -> int:
    state = lab.state()
    try:
        node = lab.topology.node(node_name)
    except KeyError:
        names = ", ".join(n.name for n in lab.topology.nodes)
        raise LabError(f"lab {lab.name} has no node {node_name!r} (nodes: {names})") from None
    holder = state.holder(node.name)
    if holder is None or not holder.alive:
        raise LabError(f"node {node_name} of lab {lab.name} is not running")
    reason = nodefiles.not_an_agent(node, argv)
    if reason is not None:
        raise LabError(reason)
    env = {**os.environ, **dict(node.env)}
    # Inside a node, `l3fabric ...` is the same l3fabric that runs the lab
    # (its venv need not be on the caller's PATH), as in the node image.
    here = os.path.dirname(sys.executable)
    env["PATH"] = here + os.pathsep + env.get("PATH", os.defpath)
    return subprocess.run(in_node(holder.pid, argv), env=env).returncode


def node_addresses(lab: Lab, node: str) -> list[str]:
    """Global addresses on the node's interfaces (not lo, not link-local)."""
    proc = run(["ip", "-n", lab.paths.netns(node), "-j", "addr", "show"], check=False)
    if proc.returncode != 0:
        return []
    out = []
    for link in json.loads(proc.stdout or "[]"):
        for addr in link.get("addr_info", []):
            if addr.get("scope") == "global" and link.get("ifname") != "lo":
                out.append(f"{addr['local']}/{addr['prefixlen']}")
    return out


def inspect(lab: Lab) -> list[dict[str, Any]]:
    # A lab never deployed (or destroyed) has no state: say so rather than
    # listing every node of its file as exited.
    state: LabState | None = lab.state()
    prometheus = (state.extra("prometheus") if state else None) or {}
    management = (state.extra("mgmt") if state else None) or {}
    rows = []
    for node in lab.topology.nodes:
        holder = state.holder(node.name) if state else None
        procs = [p for p in (state.processes if state else []) if p.node == node.name]
        daemon_rows = {p.what: daemon_status(p) for p in procs}
        dead = [what for what, d in daemon_rows.items() if d["state"] != "running"]
        if holder is None or not holder.alive:
            status = "exited"
        elif dead:
            status = ", ".join(f"{daemon_rows[w]['state']} ({w})" for w in dead)
        else:
            status = "running"
        rows.append(
            {
                "node": node.name,
                "netns": lab.paths.netns(node.name),
                "kind": node.kind,
                "image": node.image,
                "runs": node.image_kind.value,
                "state": status,
                "addresses": node_addresses(lab, node.name) if holder else [],
                "pid": holder.pid if holder else None,
                "daemons": {w: d["pid"] for w, d in daemon_rows.items()},
                "supervision": daemon_rows,
                "restarts": sum(d["restarts"] for d in daemon_rows.values()),
                "restart_policy": node.restart,
                "stale_binds": [
                    b.message(node.name)
                    for b in (
                        nodefiles.stale_binds(node, holder.pid, nodefiles.inode_inside)
                        if holder is not None and holder.alive
                        else []
                    )
                ],
                "mgmt_ipv4": management.get("addresses", {}).get(node.name),
                "mgmt_ipv6": management.get("ipv6_addresses", {}).get(node.name),
            }
        )
        if node.image_kind is ImageKind.PROMETHEUS and prometheus.get("url"):
            rows[-1]["url"] = prometheus["url"]
            rows[-1]["reach"] = prometheus_hint(lab, prometheus["url"])
    return rows


def daemon_status(record: ProcessRecord) -> dict[str, Any]:
    """A daemon's pid, state and restarts. A supervised daemon's record is its
    keeper's; the keeper's status file has the daemon itself."""
    # Written atomically; none yet from a keeper that has just started.
    kept = keeper.read_status(keeper.status_path(record.log))
    if kept is None or not record.alive:
        kept = kept or {}
        return {
            "pid": record.pid if record.alive else None,
            "state": "running" if record.alive else "exited",
            "restarts": int(kept.get("restarts", 0)),
            "last_exit": kept.get("last_exit"),
        }
    pid, start = kept.get("pid"), kept.get("start")
    running = (
        kept.get("state") == "running"
        and isinstance(pid, int)
        and isinstance(start, int)
        and is_alive(pid, start)
    )
    return {
        "pid": pid if running else None,
        "state": "running" if running else str(kept.get("state", "exited")),
        "restarts": int(kept.get("restarts", 0)),
        "last_exit": kept.get("last_exit"),
    }


def prometheus_hint(lab: Lab, url: str) -> str:
    """How to query the lab's Prometheus from the host: its address is
    reachable only inside the lab."""
    query = shlex.quote(f"{url}/api/v1/query?query=up")
    return (
        f"l3fabric lab exec {shlex.quote(str(lab.topology.path))} --name {lab.name} "
        f"{mgmt.PROMETHEUS_NODE} -- curl -s {query}"
    )


def node_context(lab: Lab, state: LabState, name: str) -> daemons.NodeContext:
    return lab.context(state, lab.topology.node(name))


def l3fabric_nodes(lab: Lab) -> list[Node]:
    return [n for n in lab.topology.nodes if n.image_kind is ImageKind.L3FABRIC]


def wait_agents_ready(lab: Lab, timeout: float = 120.0) -> dict[str, str]:
    """Poll every agent until `status` says ready; the last state of each."""
    state = lab.state()
    deadline = time.monotonic() + timeout
    last: dict[str, str] = {}
    while True:
        for node in l3fabric_nodes(lab):
            try:
                status = daemons.agent_call(node_context(lab, state, node.name), "status")
                last[node.name] = f"{status.get('state')}: {status.get('reason')}"
            except Exception as exc:  # the agent may be restarting
                last[node.name] = f"unreachable: {exc}"
        if all(v.startswith("ready") for v in last.values()) or time.monotonic() > deadline:
            return last
        time.sleep(0.5)
