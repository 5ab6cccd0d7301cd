"""Where a lab keeps its files on the host. Everything a lab makes on the
host's filesystem lives under one directory, so destroy can remove it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LAB_ROOT = Path("/run/l3fabric-lab")


@dataclass(frozen=True)
class LabPaths:
    root: Path
    lab: str

    @classmethod
    def default(cls, lab: str) -> LabPaths:
        return cls(LAB_ROOT, lab)

    @property
    def dir(self) -> Path:
        return self.root / self.lab

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def clab_dir(self) -> Path:
        """What containerlab's __clabDir__ stands for."""
        return self.dir / "clab"

    def node_dir(self, node: str) -> Path:
        """The node's private files: logs, its /run, overlay layers."""
        return self.dir / "nodes" / node

    def node_run(self, node: str) -> Path:
        """Mounted on the node's /run."""
        return self.node_dir(node) / "run"

    def log(self, node: str, what: str) -> Path:
        return self.node_dir(node) / f"{what}.log"

    def netns(self, node: str) -> str:
        return f"{self.lab}-{node}"

    def workload_netns(self, node: str, index: int) -> str:
        return f"{self.lab}-{node}-w{index}"
