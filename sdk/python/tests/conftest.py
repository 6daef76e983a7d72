"""Starts a real runtad for the test session and hands out tenant tokens.

The daemon (scripts/test-daemon.sh start) gets a fresh data dir; at the end
every runtime, then every checkpoint, of every tenant the tests created is
deleted before the daemon is stopped (a killed runtad leaves its runtimes running by design).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import httpx
import pytest

from runta import Runta, Runtime

REPO = Path(__file__).resolve().parents[3]
# Starts and stops the daemon (and finds runtad under CARGO_TARGET_DIR, default ./target).
DAEMON_SCRIPT = REPO / "scripts" / "test-daemon.sh"
PREFERRED_PORT = int(os.environ.get("RUNTA_TEST_PORT", "18182"))
SUBNET_OCTET = os.environ.get("RUNTA_TEST_SUBNET_OCTET", "151")
IMAGES_DIR = os.environ.get("RUNTA_TEST_IMAGES_DIR", "/var/lib/runta/images")


def _start_daemon(*runtad_args: str) -> Dict[str, str]:
    """scripts/test-daemon.sh start: the one way every suite starts its runtad."""
    env = {
        **os.environ,
        "RUNTA_TEST_PORT": str(PREFERRED_PORT),
        "RUNTA_TEST_SUBNET_OCTET": SUBNET_OCTET,
        "RUNTA_TEST_IMAGES_DIR": IMAGES_DIR,
        "RUNTA_TEST_DATA_PREFIX": "runta-pysdk-",
    }
    r = subprocess.run(
        ["bash", str(DAEMON_SCRIPT), "start", "--stop-grace-secs", "2", *runtad_args],
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
        # The egress tests name their test hosts here (test_egress.py); the
        # daemon re-reads it every 2 s.
        self.egress_hosts = Path(tempfile.mkdtemp(prefix="runta-pysdk-egress-")) / "hosts"
        self.egress_hosts.write_text("")
        info = _start_daemon("--egress-hosts", str(self.egress_hosts))
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
        subprocess.run(["bash", str(DAEMON_SCRIPT), "stop", self.data_dir], check=False)
        shutil.rmtree(self.egress_hosts.parent, ignore_errors=True)


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
