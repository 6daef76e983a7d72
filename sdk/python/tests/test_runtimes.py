"""Runtimes: create, list, get, lifecycle, resize, events, delete (sync client)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from typing import Callable, Dict

import pytest
from conftest import unique

import runta
from runta import (
    ConflictError,
    FailedPreconditionError,
    NotFoundError,
    Port,
    Runta,
    RuntaError,
    Runtime,
)


def test_seed_example_runs_unchanged(new_tenant: Callable[[], str], endpoint: str) -> None:
    """The example from the issue, verbatim, in a fresh tenant (so "worker" is free)."""
    seed = textwrap.dedent(
        """
        from runta import Runta
        with Runta() as runta:
            runtime = runta.runtimes.create("worker", vcpus=2, memory_mib=2048)
            for item in runta.runtimes.list(): print(item.id, item.name, item.cached_info.status)
            runtime = runta.runtimes.get("worker")
            result = runtime.exec(["sh", "-lc", "pwd && python3 --version"], timeout=30, env={"APP_ENV": "dev"})
            print(result.exit_code); print(result.stdout_text)
            runtime.pause(); runtime.resume(); runtime.stop(); runtime.start(); runtime.resize_memory(4096); runtime.delete()
        """  # noqa: E501
    )
    env = dict(os.environ, RUNTA_TOKEN=new_tenant(), RUNTA_ENDPOINT=endpoint)
    out = subprocess.run(
        [sys.executable, "-c", seed], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[1:] == ["worker", "running"]
    assert lines[1] == "0"
    assert lines[2] == "/root"
    assert lines[3].startswith("Python 3")
    with Runta(token=env["RUNTA_TOKEN"], endpoint=endpoint) as c:
        assert c.runtimes.list() == []  # deleted at the end


def test_env_configuration(env_vars: Dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in env_vars.items():
        monkeypatch.setenv(k, v)
    with Runta() as c:
        assert c.endpoint == env_vars["RUNTA_ENDPOINT"]
        assert c.health()["status"] == "ok"
        c.runtimes.list()  # authenticated with RUNTA_TOKEN
    # Explicit arguments win over the environment.
    monkeypatch.setenv("RUNTA_TOKEN", "rt_" + "x" * 40)
    with Runta(token=env_vars["RUNTA_TOKEN"]) as c:
        c.runtimes.list()
    monkeypatch.delenv("RUNTA_ENDPOINT")
    assert Runta(token="x").endpoint == "http://127.0.0.1:8080"


def test_package_is_typed() -> None:
    assert os.path.exists(os.path.join(os.path.dirname(runta.__file__), "py.typed"))


def test_create_with_every_option(client: Runta, name: str) -> None:
    rt = client.runtimes.create(
        name,
        vcpus=0.5,
        memory_mib=192,
        image="base",
        env={"GREETING": "hello world"},
        labels={"team": "sdk", "tier": "test"},
        publish=[8080, "9090/http", Port(7000, "https")],
        idle_timeout=600,
    )
    try:
        info = rt.cached_info
        assert isinstance(rt, Runtime)
        assert rt.name == name and info.status == "running" and rt.status == "running"
        assert len(rt.id) == 36
        assert info.vcpus == 0.5 and info.memory_mib == 192
        assert info.resources.limit_memory_mib == 192
        assert info.image == "base"
        assert info.env == {"GREETING": "hello world"}
        assert info.labels == {"team": "sdk", "tier": "test"}
        assert [(p.port, p.protocol) for p in info.publish] == [
            (8080, "https"),
            (9090, "http"),
            (7000, "https"),
        ]
        assert all(rt.id in p.url for p in info.publish)
        assert info.idle_timeout_secs == 600
        assert info.created_at is not None and info.started_at is not None
        assert info.revision >= 1
        assert rt.exec("echo $GREETING").stdout == "hello world\n"
        assert rt.exec("hostname").stdout.strip() == name
    finally:
        rt.delete()


def test_create_without_wait_then_wait_until(client: Runta, name: str) -> None:
    rt = client.runtimes.create(name, memory_mib=128, wait=False)
    try:
        assert rt.status in ("creating", "running")
        info = rt.wait_until("running", timeout=60)
        assert info.status == "running" and rt.cached_info is info
        assert rt.exec("true").exit_code == 0
    finally:
        rt.delete()


def test_create_idempotency_key(client: Runta, name: str) -> None:
    a = client.runtimes.create(name, memory_mib=128, idempotency_key=f"key-{name}")
    try:
        b = client.runtimes.create(name, memory_mib=128, idempotency_key=f"key-{name}")
        assert a.id == b.id
    finally:
        a.delete()


def test_list_get_filters_and_pages(client: Runta) -> None:
    label = unique("grp")
    made = [
        client.runtimes.create(unique("ls"), memory_mib=128, labels={"grp": label})
        for _ in range(3)
    ]
    try:
        made[2].pause()
        items = client.runtimes.list(labels={"grp": label})
        assert sorted(i.name for i in items) == sorted(m.name for m in made)
        assert all(isinstance(i, Runtime) for i in items)
        by_name = {i.name: i for i in items}
        assert by_name[made[2].name].cached_info.status == "paused"
        assert by_name[made[0].name].id == made[0].id
        running = client.runtimes.list(status="running", labels={"grp": label})
        assert {i.name for i in running} == {made[0].name, made[1].name}
        both = client.runtimes.list(status=["running", "paused"], labels={"grp": label})
        assert len(both) == 3
        # Pagination: one per page.
        page = client.runtimes.list_page(limit=1, labels={"grp": label})
        seen = [i.name for i in page.items]
        assert page.has_more and page.next_cursor
        while page.next_cursor:
            page = client.runtimes.list_page(limit=1, after=page.next_cursor, labels={"grp": label})
            seen += [i.name for i in page.items]
        assert sorted(seen) == sorted(m.name for m in made)
        # get by name and by id
        assert client.runtimes.get(made[1].name).id == made[1].id
        assert client.runtimes.get(made[1].id).name == made[1].name
    finally:
        for m in made:
            m.delete(missing_ok=True)


def test_lifecycle_refresh_resize_events(client: Runta, rt: Runtime) -> None:
    assert rt.pause().status == "paused"
    assert rt.status == "paused"
    assert rt.pause().status == "paused"  # idempotent no-op
    with pytest.raises(ConflictError) as ei:
        rt.exec("true")
    assert isinstance(ei.value, FailedPreconditionError)
    assert ei.value.code == "failed_precondition" and ei.value.status == 409
    assert "paused" in ei.value.message and ei.value.request_id
    assert rt.resume().status == "running"
    rt.exec("echo kept > /root/kept.txt")
    assert rt.stop().status == "shutdown"
    with pytest.raises(ConflictError, match="shutdown"):
        rt.pause()  # impossible transition names the status
    with pytest.raises(ConflictError):
        rt.files.read("/root/kept.txt")
    other = client.runtimes.get(rt.name)
    assert other.start().status == "running"
    assert rt.status == "shutdown"  # stale until refreshed
    assert rt.refresh().status == "running" and rt.cached_info.status == "running"
    assert rt.exec("cat /root/kept.txt").stdout == "kept\n"  # files survive stop/start
    info = rt.resize_memory(512)
    assert info.memory_mib == 512 and rt.cached_info.memory_mib == 512
    assert rt.exec("echo still-running").stdout == "still-running\n"  # live, no restart
    info = rt.resize(vcpus=2)
    assert info.vcpus == 2
    info = rt.update(labels={"a": "b"}, idle_timeout=0)
    assert info.labels == {"a": "b"} and info.idle_timeout_secs is None
    kinds = [e.type for e in rt.events()]
    for k in ("created", "started", "paused", "resumed", "stopped"):
        assert k in kinds, kinds
    # The wire docs name the resize event `resized`; the daemon records `updated`.
    assert {"resized", "updated"} & set(kinds), kinds
    assert len(rt.events(limit=2)) == 2
    rt.delete()
    with pytest.raises(NotFoundError):
        rt.refresh()
    with pytest.raises(NotFoundError):
        rt.delete()
    rt.delete(missing_ok=True)
    with pytest.raises(NotFoundError) as ei2:
        client.runtimes.get(rt.name)
    assert ei2.value.status == 404 and isinstance(ei2.value, RuntaError)


def test_runtimes_delete_by_name(client: Runta, name: str) -> None:
    client.runtimes.create(name, memory_mib=128)
    client.runtimes.delete(name)
    with pytest.raises(NotFoundError):
        client.runtimes.get(name)
    client.runtimes.delete(name, missing_ok=True)


def test_exec_detached_runs_in_parallel(rt: Runtime) -> None:
    t0 = time.monotonic()
    tasks = [rt.exec_detached(f"sleep 1; echo {i}") for i in range(3)]
    assert not tasks[0].done()
    results = [t.wait(timeout=30) for t in tasks]
    assert [r.stdout for r in results] == ["0\n", "1\n", "2\n"]
    assert time.monotonic() - t0 < 2.5  # ran concurrently
    assert tasks[0].done() and tasks[0].result().exit_code == 0
