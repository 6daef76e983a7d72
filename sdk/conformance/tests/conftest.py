"""Starts a real runtad for the session (scripts/test-daemon.sh, as every suite) and
hands out tenant tokens, official clients, and a plain-HTTP view of our own
REST API to read state back with.

At the end every runtime, then every checkpoint, of every tenant created here is
deleted through our REST API before the daemon is stopped.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, List

import httpx
import pytest
import runta

REPO = Path(__file__).resolve().parents[3]
# Starts and stops the daemon (and finds runtad under CARGO_TARGET_DIR, default ./target).
DAEMON_SCRIPT = REPO / "scripts" / "test-daemon.sh"
PREFERRED_PORT = int(os.environ.get("RUNTA_TEST_PORT", "18290"))
SUBNET_OCTET = os.environ.get("RUNTA_TEST_SUBNET_OCTET", "152")
IMAGES_DIR = os.environ.get("RUNTA_TEST_IMAGES_DIR", "/var/lib/runta/images")

SDK_VERSION = tuple(int(p) for p in importlib.metadata.version("runta-sdk").split("."))
NEW = SDK_VERSION >= (0, 1, 10)
"""0.1.10+ spells start/stop boot/shutdown and runs async exec over /exec/stream."""


def _start_daemon() -> dict[str, str]:
    """scripts/test-daemon.sh start: the one way every suite starts its runtad."""
    env = {
        **os.environ,
        "RUNTA_TEST_PORT": str(PREFERRED_PORT),
        "RUNTA_TEST_SUBNET_OCTET": SUBNET_OCTET,
        "RUNTA_TEST_IMAGES_DIR": IMAGES_DIR,
        "RUNTA_TEST_DATA_PREFIX": "runta-conformance-",
    }
    r = subprocess.run(
        ["bash", str(DAEMON_SCRIPT), "start", "--stop-grace-secs", "2"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode == 3:
        pytest.exit(r.stderr.strip(), 2)
    if r.returncode != 0:
        raise RuntimeError(f"runtad did not start:\n{r.stderr}")
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


class Daemon:
    def __init__(self) -> None:
        info = _start_daemon()
        self.endpoint = info["RUNTA_TEST_ENDPOINT"]
        self.admin_token = info["RUNTA_TEST_ADMIN_TOKEN"]
        self.data_dir = info["RUNTA_TEST_DATA_DIR"]
        self.log_path = info["RUNTA_TEST_DAEMON_LOG"]
        self.tokens: List[str] = []

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
        subprocess.run(["bash", str(DAEMON_SCRIPT), "stop", self.data_dir], check=False)


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
