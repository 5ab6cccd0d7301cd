"""Running FRR (zebra + bgpd) in test namespaces, one instance each."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.nettools import Processes, run, wait_for

FRR_DIR = Path("/usr/lib/frr")


def frr_available() -> bool:
    return (FRR_DIR / "bgpd").exists() and shutil.which("vtysh") is not None


@dataclass(frozen=True)
class Frr:
    netns: str
    rundir: Path
    procs: tuple[subprocess.Popen[bytes], ...]

    def vtysh(self, command: str) -> str:
        return run(["vtysh", "--vty_socket", str(self.rundir), "-c", command])

    def bgp_summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.vtysh("show bgp summary json"))
        return data

    def established(self) -> set[str]:
        peers = set()
        for family in self.bgp_summary().values():
            for address, peer in family.get("peers", {}).items():
                if peer.get("state") == "Established":
                    peers.add(address)
        return peers


def start_frr(procs: Processes, netns: str, config: str, workdir: Path, tag: str) -> Frr:
    """zebra and bgpd with their own config, sockets and pid files under
    workdir (which the frr user must be able to reach: see the shared_tmp
    fixture); FRR drops to the frr user, so its directory is given to it."""
    rundir = workdir / f"frr-{tag}"
    rundir.mkdir()
    conf = rundir / "frr.conf"
    conf.write_text(config)
    shutil.chown(rundir, "frr", "frr")
    os.chmod(rundir, 0o770)
    common = ["-N", tag, "-f", str(conf), "-z", str(rundir / "zserv.api")]
    common += ["--vty_socket", str(rundir)]
    zebra = procs.start(
        [str(FRR_DIR / "zebra"), *common, "-i", str(rundir / "zebra.pid")],
        netns=netns,
        log_path=str(workdir / f"{tag}-zebra.log"),
    )
    wait_for(lambda: (rundir / "zserv.api").exists(), timeout=10, what=f"{tag} zebra")
    bgpd = procs.start(
        [str(FRR_DIR / "bgpd"), *common, "-i", str(rundir / "bgpd.pid")],
        netns=netns,
        log_path=str(workdir / f"{tag}-bgpd.log"),
    )
    frr = Frr(netns, rundir, (zebra, bgpd))
    wait_for(lambda: "IPv4" in frr.vtysh("show bgp summary"), timeout=10, what=f"{tag} bgpd")
    return frr
