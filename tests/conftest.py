from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nettools import Namespaces, Processes


def _need_root() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for network namespaces")


@pytest.fixture
def netns() -> Iterator[Namespaces]:
    _need_root()
    namespaces = Namespaces()
    try:
        yield namespaces
    finally:
        namespaces.cleanup()


@pytest.fixture
def procs(netns: Namespaces) -> Iterator[Processes]:
    # Depends on netns so that processes are stopped before their namespaces go.
    processes = Processes()
    try:
        yield processes
    finally:
        processes.cleanup()


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary directory daemons that drop privileges (FRR runs as
    `frr`) can reach: pytest's own tmp_path is private to root."""
    path = Path(tempfile.mkdtemp(prefix="l3f-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
