"""Starts a real runtad for the test session and hands out tenant tokens.

The daemon gets a fresh data dir; at the end every runtime, then every
checkpoint, of every tenant the tests created is deleted before the daemon is
stopped (a killed runtad leaves its runtimes running by design).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import httpx
import pytest

from runta import Runta, Runtime

REPO = Path(__file__).resolve().parents[3]
# Where cargo puts the binaries: CARGO_TARGET_DIR (relative to the repository), else ./target.
TARGET = REPO / os.environ.get("CARGO_TARGET_DIR", "target")
PREFERRED_PORT = int(os.environ.get("RUNTA_TEST_PORT", "18182"))
SUBNET_OCTET = os.environ.get("RUNTA_TEST_SUBNET_OCTET", "151")
IMAGES_DIR = os.environ.get("RUNTA_TEST_IMAGES_DIR", "/var/lib/runta/images")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _any_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pick_port() -> int:
    # Other people may run daemons on this machine: fall back to any free port.
    if _port_free(PREFERRED_PORT):
        return PREFERRED_PORT
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    def __init__(self) -> None:
        self.bin = os.environ.get("RUNTAD_BIN", str(TARGET / "debug" / "runtad"))
        if not os.access(self.bin, os.X_OK):
            pytest.exit(f"runtad not found at {self.bin}: run `bash scripts/build.sh`", 2)
        self.data_dir = tempfile.mkdtemp(prefix="runta-pysdk-")
        self.port = _pick_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.data_dir, "runtad.log")
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                self.bin,
                "--data-dir", self.data_dir,
                "--listen", f"127.0.0.1:{self.port}",
                "--images-dir", IMAGES_DIR,
                "--subnet-octet", SUBNET_OCTET,
                "--no-prebuild",
                "--stop-grace-secs", "2",
                # Free ports: a daemon refuses to start without its ingress
                # ports, and the defaults may be another daemon's.
                "--ingress-listen-https", f"127.0.0.1:{_any_free_port()}",
                "--ingress-listen-http", f"127.0.0.1:{_any_free_port()}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.tokens: List[str] = []
        self.admin_token = self._wait_ready()

    def _log_tail(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + 60
        token_file = Path(self.data_dir) / "admin-token"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"runtad exited ({self.proc.returncode}):\n{self._log_tail()}")
            try:
                r = httpx.get(f"{self.endpoint}/healthz", timeout=2)
                if r.status_code == 200 and token_file.exists():
                    admin = token_file.read_text().strip()
                    # Make sure this is *our* daemon: its admin token must work.
                    probe = httpx.post(
                        f"{self.endpoint}/v1/tokens",
                        json={"tenant": "pysdk-probe"},
                        headers={"Authorization": f"Bearer {admin}"},
                        timeout=5,
                    )
                    if probe.status_code == 201 or probe.status_code == 200:
                        return admin
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"runtad did not become ready:\n{self._log_tail()}")

    def new_token(self, tenant: str) -> str:
        r = httpx.post(
            f"{self.endpoint}/v1/tokens",
            json={"tenant": tenant},
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=10,
        )
        r.raise_for_status()
        token = str(r.json()["data"]["token"])
        self.tokens.append(token)
        return token

    def cleanup(self) -> None:
        for token in self.tokens:
            try:
                with Runta(token=token, endpoint=self.endpoint) as c:
                    for rt in c.runtimes.list():
                        try:
                            rt.delete(missing_ok=True)
                        except Exception as e:
                            print(f"cleanup: deleting {rt.name}: {e}")
            except Exception as e:
                print(f"cleanup: listing runtimes: {e}")
            # Then checkpoints; one built on another is refused until that one is
            # gone, so go round a few times.
            try:
                with Runta(token=token, endpoint=self.endpoint) as c:
                    for _ in range(5):
                        left = c.checkpoints.list()
                        if not left:
                            break
                        for cp in left:
                            with contextlib.suppress(Exception):
                                cp.delete(missing_ok=True)
            except Exception as e:
                print(f"cleanup: deleting checkpoints: {e}")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        if os.environ.get("RUNTA_TEST_KEEP_DATA"):
            print(f"runtad data kept in {self.data_dir}")
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    d = Daemon()
    try:
        yield d
    finally:
        d.cleanup()


@pytest.fixture(scope="session")
def endpoint(daemon: Daemon) -> str:
    return daemon.endpoint


@pytest.fixture(scope="session")
def token(daemon: Daemon) -> str:
    """Tenant A."""
    return daemon.new_token(f"pya-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def token_b(daemon: Daemon) -> str:
    """Tenant B (must never see tenant A's runtimes)."""
    return daemon.new_token(f"pyb-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def new_tenant(daemon: Daemon) -> Callable[[], str]:
    return lambda: daemon.new_token(f"pyt-{uuid.uuid4().hex[:8]}")


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def name() -> str:
    return unique("py")


@pytest.fixture
def client(token: str, endpoint: str) -> Iterator[Runta]:
    with Runta(token=token, endpoint=endpoint) as c:
        yield c


@pytest.fixture
def rt(client: Runta) -> Iterator[Runtime]:
    """A fresh running runtime, deleted afterwards."""
    r = client.runtimes.create(unique("rt"), vcpus=1, memory_mib=256)
    try:
        yield r
    finally:
        r.delete(missing_ok=True)


@pytest.fixture
def env_vars(token: str, endpoint: str) -> Dict[str, str]:
    return {"RUNTA_TOKEN": token, "RUNTA_ENDPOINT": endpoint}
