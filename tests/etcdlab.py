"""Real etcd for the tests: Debian's `etcd` binary, on 127.0.0.1, random ports.

Every member gets its own temporary data directory and free client and peer
ports, so any number of test processes can run clusters at once. Members are
started and stopped by PID; start-up is awaited by polling /health with a
deadline. A port taken by someone else between choosing and binding makes
etcd exit at once, and the whole cluster is then started again on new ports.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
START_ATTEMPTS = 5
START_TIMEOUT = 30.0


def etcd_available() -> bool:
    return os.access(ETCD, os.X_OK)


@dataclass(frozen=True)
class TlsFiles:
    """A throw-away CA, a server cert for 127.0.0.1 and a client cert."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, directory: Path) -> TlsFiles:
        directory.mkdir(parents=True, exist_ok=True)
        d = directory  # a mkdtemp path: no spaces, so commands can be split
        ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
        _openssl(f"req -x509 {ec} -keyout {d}/ca.key -out {d}/ca.pem -subj /CN=l3f-test-ca")
        # etcd's JSON gateway dials etcd's gRPC side with the server cert, so under
        # --client-cert-auth that cert must be good for client auth too.
        for name, usage in (("server", "serverAuth,clientAuth"), ("client", "clientAuth")):
            (d / f"{name}.ext").write_text(
                f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n"
            )
            _openssl(f"req {ec} -keyout {d}/{name}.key -out {d}/{name}.csr -subj /CN={name}")
            _openssl(
                f"x509 -req -in {d}/{name}.csr -CA {d}/ca.pem -CAkey {d}/ca.key "
                f"-CAcreateserial -out {d}/{name}.pem -days 2 -extfile {d}/{name}.ext"
            )
        return cls(
            d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key"
        )

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def _openssl(command: str) -> None:
    subprocess.run(["openssl", *command.split()], check=True, capture_output=True, timeout=60)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EtcdMember:
    def __init__(
        self, name: str, data_dir: Path, log_path: Path, tls: TlsFiles | None = None
    ) -> None:
        self.name = name
        self.tls = tls
        self.data_dir = data_dir
        self.log_path = log_path
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._argv: list[str] = []

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def configure(self, initial_cluster: str, token: str) -> None:
        self._argv = [
            ETCD,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={initial_cluster}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token={token}",
            # Quick elections: tests kill members and wait for a new leader.
            "--heartbeat-interval=50",
            "--election-timeout=500",
            "--log-level=warn",
        ]
        if self.tls:
            self._argv += [
                f"--cert-file={self.tls.server_cert}",
                f"--key-file={self.tls.server_key}",
                f"--trusted-ca-file={self.tls.ca}",
                "--client-cert-auth",
            ]

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.proc = subprocess.Popen(
                self._argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            context = self.tls.client_context() if self.tls else None
            with urllib.request.urlopen(self.url + "/health", timeout=1, context=context) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        """Stop this member's process (by its PID) and reap it."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)  # in case it was paused
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def pause(self) -> None:
        """Freeze the process: the kernel still accepts connections, nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class EtcdCluster:
    """One to a few members on loopback; start() blocks until all are healthy."""

    def __init__(self, size: int = 1, tag: str = "etcd", *, tls: bool = False) -> None:
        if size < 1:
            raise ValueError(f"cluster size must be >= 1, not {size}")
        self.size = size
        self.tag = tag
        self.root = Path(tempfile.mkdtemp(prefix=f"l3f-{tag}-"))
        self.tls = TlsFiles.make(self.root / "tls") if tls else None
        self.members: list[EtcdMember] = []

    @property
    def urls(self) -> list[str]:
        return [m.url for m in self.members]

    def start(self) -> EtcdCluster:
        last = ""
        for attempt in range(START_ATTEMPTS):
            self._create_members(attempt)
            for member in self.members:
                member.start()
            try:
                self.wait_healthy()
                return self
            except AssertionError as exc:
                last = str(exc)
                self.stop()
        raise AssertionError(f"etcd did not start in {START_ATTEMPTS} attempts: {last}")

    def _create_members(self, attempt: int) -> None:
        self.members = []
        for n in range(self.size):
            name = f"m{n}"
            data_dir = self.root / f"try{attempt}" / name
            data_dir.parent.mkdir(parents=True, exist_ok=True)
            log_path = self.root / f"try{attempt}-{name}.log"
            self.members.append(EtcdMember(name, data_dir, log_path, self.tls))
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        token = f"{self.tag}-{os.getpid()}-{attempt}-{time.monotonic_ns()}"
        for member in self.members:
            member.configure(initial, token)

    def wait_healthy(self, members: list[EtcdMember] | None = None) -> None:
        waiting = list(members if members is not None else self.members)
        deadline = time.monotonic() + START_TIMEOUT
        while waiting:
            for member in list(waiting):
                if not member.running():
                    raise AssertionError(f"etcd {member.name} exited:\n{member.log_tail()}")
                if member.healthy():
                    waiting.remove(member)
            if time.monotonic() > deadline:
                names = ", ".join(m.name for m in waiting)
                raise AssertionError(f"etcd {names} not healthy after {START_TIMEOUT}s")
            time.sleep(0.05)

    def restart(self, member: EtcdMember) -> None:
        """Start a stopped member again on the same ports and data."""
        member.start()
        self.wait_healthy([member])

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def require_etcd() -> None:
    if not etcd_available():
        pytest.skip(f"needs the etcd binary ({ETCD}); scripts/install installs etcd-server")


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdCluster]:
    """One single-member etcd for the whole test session of this process."""
    require_etcd()
    cluster = EtcdCluster(1, "etcd")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


def gateway(url: str, path: str, payload: dict[str, object]) -> dict[str, object]:
    """One request to etcd's JSON gateway, for test set-up (not the code under test)."""
    request = urllib.request.Request(
        f"{url}/v3/{path}",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer: dict[str, object] = json.loads(resp.read())
        return answer


def wipe(url: str) -> None:
    """Every key and lease gone, so that each test starts from an empty store."""
    leases = gateway(url, "lease/leases", {}).get("leases") or []
    for lease in leases:  # type: ignore[attr-defined]
        gateway(url, "kv/lease/revoke", {"ID": lease["ID"]})
    gateway(url, "kv/deleterange", {"key": "AA==", "range_end": "AA=="})


def compact(url: str, revision: int) -> None:
    gateway(url, "kv/compaction", {"revision": revision, "physical": True})
