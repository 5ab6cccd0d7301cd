"""Running rendered BIRD configurations in test namespaces."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from l3fabric.bgp.bird import BirdConfig, render
from tests.nettools import Namespaces, Processes, ns_run, run, wait_for


@dataclass(frozen=True)
class Bird:
    netns: str
    socket: str
    log: Path
    proc: subprocess.Popen[bytes]

    def cli(self, *args: str, check: bool = True) -> str:
        # birdc exits 1 for an empty answer ("Network not found").
        return run(["birdc", "-s", self.socket, *args], check=check)

    def established(self) -> set[str]:
        names = set()
        for line in self.cli("show", "protocols").splitlines():
            fields = line.split()
            if len(fields) >= 6 and fields[1] == "BGP" and "Established" in fields[5:]:
                names.add(fields[0])
        return names


def start_bird(procs: Processes, netns: str, cfg: BirdConfig, tmp_path: Path, tag: str) -> Bird:
    return start_bird_config(procs, netns, lambda log: render(_with_log(cfg, log)), tmp_path, tag)


def start_bird_config(
    procs: Processes, netns: str, text: Callable[[Path], str], tmp_path: Path, tag: str
) -> Bird:
    """BIRD in `netns` with the configuration text(log file), its files
    named by `tag` in tmp_path; returns once it answers."""
    log = tmp_path / f"{tag}.log"
    conf = tmp_path / f"{tag}.conf"
    socket = str(tmp_path / f"{tag}.ctl")
    conf.write_text(text(log))
    proc = procs.start(
        ["bird", "-f", "-c", str(conf), "-s", socket, "-P", str(tmp_path / f"{tag}.pid")],
        netns=netns,
        log_path=str(tmp_path / f"{tag}.out"),
    )
    bird = Bird(netns, socket, log, proc)
    wait_for(lambda: "Daemon is up" in bird.cli("show", "status"), what=f"{tag} BIRD to start")
    return bird


def _with_log(cfg: BirdConfig, log: Path) -> BirdConfig:
    values = {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}
    values["log_file"] = PurePosixPath(str(log))
    return BirdConfig(**values)


def lan(netns: Namespaces, members: list[tuple[str, list[str]]]) -> str:
    """One bridge (in its own namespace) with each member's eth1 plugged in."""
    switch = netns.add("sw")
    ns_run(switch, ["ip", "link", "add", "br0", "type", "bridge"])
    ns_run(switch, ["ip", "link", "set", "br0", "up"])
    for i, (member, addrs) in enumerate(members):
        netns.link(member, switch, addrs, (), names=("eth1", f"p{i}"))
        ns_run(switch, ["ip", "link", "set", f"p{i}", "master", "br0"])
    return switch


def start_raw_bird(procs: Processes, netns: str, text: str, tmp_path: Path, tag: str) -> Bird:
    """BIRD with a hand-written configuration (a hostile peer's export
    filters are beyond what the renderer produces); `text` gets the log line."""
    return start_bird_config(procs, netns, lambda log: f'log "{log}" all;\n{text}', tmp_path, tag)


def reconfigure_raw_bird(bird: Bird, text: str) -> None:
    """Replace a start_raw_bird configuration and make BIRD load it."""
    conf = Path(bird.socket).with_suffix(".conf")
    conf.write_text(f'log "{bird.log}" all;\n{text}')
    out = bird.cli("configure")
    if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
        raise AssertionError(f"BIRD did not take the new configuration:\n{out}")
