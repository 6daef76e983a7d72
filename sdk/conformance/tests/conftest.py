"""Starts a real runtad for the session (the way sdk/python's suite does) and
hands out tenant tokens, official clients, and a plain-HTTP view of our own
REST API to read state back with.

At the end every runtime, then every checkpoint, of every tenant created here is
deleted through our REST API before the daemon is stopped.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, List

import httpx
import pytest
import runta

REPO = Path(__file__).resolve().parents[3]
# Where cargo puts the binaries: CARGO_TARGET_DIR (relative to the repository), else ./target.
TARGET = REPO / os.environ.get("CARGO_TARGET_DIR", "target")
PREFERRED_PORT = int(os.environ.get("RUNTA_TEST_PORT", "18290"))
SUBNET_OCTET = os.environ.get("RUNTA_TEST_SUBNET_OCTET", "152")
IMAGES_DIR = os.environ.get("RUNTA_TEST_IMAGES_DIR", "/var/lib/runta/images")

SDK_VERSION = tuple(int(p) for p in importlib.metadata.version("runta-sdk").split("."))
NEW = SDK_VERSION >= (0, 1, 10)
"""0.1.10+ spells start/stop boot/shutdown and runs async exec over /exec/stream."""


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
        self.data_dir = tempfile.mkdtemp(prefix="runta-conformance-")
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
                    probe = httpx.post(
                        f"{self.endpoint}/v1/tokens",
                        json={"tenant": "conformance-probe"},
                        headers={"Authorization": f"Bearer {admin}"},
                        timeout=5,
                    )
                    if probe.status_code in (200, 201):
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
            with httpx.Client(
                base_url=self.endpoint, headers={"Authorization": f"Bearer {token}"}, timeout=60
            ) as c:
                try:
                    for r in c.get("/v1/runtimes", params={"limit": 100}).json()["data"]:
                        c.delete(f"/v1/runtimes/{r['id']}")
                    for _ in range(5):
                        left = c.get("/v1/checkpoints", params={"limit": 100}).json()["data"]
                        if not left:
                            break
                        for cp in left:
                            c.delete(f"/v1/checkpoints/{cp['id']}")
                except Exception as e:  # noqa: BLE001
                    print(f"cleanup: {e}")
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
    return daemon.new_token(f"conf-{uuid.uuid4().hex[:8]}")


class Rest:
    """Our own REST API over plain HTTP: the ground truth the tests compare with."""

    def __init__(self, endpoint: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=endpoint, headers={"Authorization": f"Bearer {token}"}, timeout=120
        )

    def runtime(self, id_or_name: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/runtimes/{id_or_name}")
        assert r.status_code == 200, r.text
        return dict(r.json()["data"])

    def status_code(self, path: str) -> int:
        return self.http.get(path).status_code

    def exec(self, id_or_name: str, command: str) -> dict[str, Any]:
        r = self.http.post(f"/v1/runtimes/{id_or_name}/exec", json={"command": command})
        assert r.status_code == 200, r.text
        return dict(r.json()["data"])

    def names(self) -> list[str]:
        r = self.http.get("/v1/runtimes", params={"limit": 100})
        assert r.status_code == 200, r.text
        return [x["name"] for x in r.json()["data"]]


@pytest.fixture(scope="session")
def rest(endpoint: str, token: str) -> Iterator[Rest]:
    r = Rest(endpoint, token)
    yield r
    r.http.close()


@pytest.fixture
def client(token: str, endpoint: str) -> Iterator[runta.Runta]:
    with runta.Runta(token=token, endpoint=endpoint, timeout=120) as c:
        yield c


@pytest.fixture
async def aclient(token: str, endpoint: str) -> AsyncIterator[runta.AsyncRunta]:
    async with runta.AsyncRunta(token=token, endpoint=endpoint, timeout=120) as c:
        yield c


@pytest.fixture
def name() -> str:
    return f"cf-{uuid.uuid4().hex[:10]}"
