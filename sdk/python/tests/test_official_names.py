"""The official ``runta-sdk`` client's method names and arguments on our client,
so code written for either runs here. Against a real daemon; every step is read
back through plain REST as well."""

from __future__ import annotations

from typing import AsyncIterator, Iterator

import httpx
import pytest
from conftest import unique

from runta import AsyncRunta, Runta, Runtime


@pytest.fixture
def rest(token: str, endpoint: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=endpoint, headers={"Authorization": f"Bearer {token}"}) as h:
        yield h


def raw(rest: httpx.Client, id_or_name: str) -> dict:  # type: ignore[type-arg]
    r = rest.get(f"/v1/runtimes/{id_or_name}")
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


def test_official_create_and_lifecycle_names(client: Runta, rest: httpx.Client) -> None:
    n = unique("off")
    rt = client.runtimes.create(
        n,
        resources={"requests": {"vcpus": 1, "memory_mib": 128}, "limits": {"memory_mib": 256}},
        ingress_specs=[{"protocol": "https", "runtime_port": 8080}],
        egress_policy={"mode": "denylist", "allowed_hosts": [], "denied_hosts": []},
        idle_suspend_after_secs=600,
        poll_interval=0.1,
    )
    try:
        r = raw(rest, n)
        assert r["resources"]["requests"]["memory_mib"] == 128
        assert r["resources"]["limits"]["memory_mib"] == 256
        assert r["ingress_specs"] == [{"protocol": "https", "runtime_port": 8080}]
        assert r["idle_policy"] == {"mode": "suspend_and_wakeup", "suspend_after_secs": 600}

        # status is the cached string and, called, a fresh fetch.
        assert rt.status == "running"
        assert rt.status() == "running"
        assert rt.heartbeat() == "running"
        assert rt.refresh_info().name == n

        rt.shutdown()
        assert raw(rest, n)["status"] == "shutdown"
        assert rt.status() == "shutdown"
        info = rt.boot(timeout=60)
        assert info.status == "running" and raw(rest, n)["status"] == "running"
        assert rt.wait_until_ready(timeout=30).status == "running"
        rt.pause()
        rt.resume(wait=True, timeout=30)
        assert raw(rest, n)["status"] == "running"

        got = rt.update_resources({"requests": {"memory_mib": 192}, "limits": {"memory_mib": 320}})
        assert got.resources.limit_memory_mib == 320
        assert raw(rest, n)["resources"]["limits"]["memory_mib"] == 320

        rt.files.write("/tmp/run.sh", "#!/bin/sh\necho ran\n", True)
        assert rt.exec("/tmp/run.sh").stdout == "ran\n"
        assert rt.exec_detached("echo later").result(timeout=60).stdout == "later\n"

        # Checkpoints the official way: create(kind, name), create(name=…), create().
        c1 = rt.checkpoints.create("full", f"{n}-a")
        c2 = rt.checkpoints.create(name=f"{n}-b")
        c3 = rt.checkpoints.create()
        assert (c1.name, c2.name) == (f"{n}-a", f"{n}-b")
        assert c3.name.startswith(f"{n}-") and len(c3.name) == len(n) + 9
        assert (c1.display_name, c1.state, c1.kind) == (f"{n}-a", "ready", "full")
        with pytest.raises(ValueError):
            rt.checkpoints.create("incremental", "x")
        ready = client.checkpoints.wait_until_ready(c1.id, timeout=10)
        assert ready.id == c1.id
        names = {c["name"] for c in rest.get("/v1/checkpoints").json()["data"]}
        assert {c1.name, c2.name, c3.name} <= names

        # restore: a new runtime from the checkpoint, under a new name.
        rt.exec("echo saved > /root/mark")
        c4 = rt.checkpoints.create("full", f"{n}-c")
        back = rt.restore(c4.id, name=f"{n}-r")
        try:
            assert isinstance(back, Runtime) and back.name == f"{n}-r"
            assert back.exec("cat /root/mark").stdout == "saved\n"
            assert raw(rest, f"{n}-r")["status"] == "running"
        finally:
            back.delete()
        for c in (c1, c2, c3, c4):
            client.checkpoints.delete(c.id)
    finally:
        rt.delete(missing_ok=True)
    assert rest.get(f"/v1/runtimes/{n}").status_code == 404


def test_create_without_a_name_and_refusals(client: Runta, rest: httpx.Client) -> None:
    rt = client.runtimes.create(memory_mib=128, memory_max_mib=192)
    try:
        assert rt.name.startswith("rt-")
        assert raw(rest, rt.id)["resources"]["limits"]["memory_mib"] == 192
    finally:
        rt.delete()
    # What the daemon cannot honour is refused, naming the field (never ignored).
    from runta import InvalidArgumentError

    with pytest.raises(InvalidArgumentError) as e:
        client.runtimes.create(unique("off"), runtime_agent="codex")
    assert "runtime_agent" in str(e.value)
    # egress_policy goes to the daemon as given (the 0.1.1 shape here): honoured
    # and read back, or refused naming it, never dropped on the way.
    try:
        eg = client.runtimes.create(
            unique("off"), egress_policy={"enabled": True, "allowed_hosts": ["a.example"]}
        )
    except InvalidArgumentError as refused:
        assert "egress_policy" in str(refused)
    else:
        try:
            assert raw(rest, eg.id)["egress_policy"]["allowed_hosts"] == ["a.example"]
        finally:
            eg.delete()


@pytest.fixture
async def aclient(token: str, endpoint: str) -> AsyncIterator[AsyncRunta]:
    async with AsyncRunta(token=token, endpoint=endpoint) as c:
        yield c


async def test_async_official_names(aclient: AsyncRunta, rest: httpx.Client) -> None:
    n = unique("aoff")
    rt = await aclient.runtimes.create(
        n, resources={"requests": {"vcpus": 1, "memory_mib": 128}}, poll_interval=0.1
    )
    try:
        assert rt.status == "running"
        assert await rt.status() == "running"
        await rt.shutdown()
        assert await rt.heartbeat() == "shutdown"
        await rt.boot()
        assert (await rt.wait_until_ready(timeout=30)).status == "running"
        assert (await rt.refresh_info()).status == "running"
        got = await rt.update_resources({"limits": {"memory_mib": 256}})
        assert got.resources.limit_memory_mib == 256
        await rt.files.write("/tmp/x.sh", "#!/bin/sh\necho ax\n", True)
        assert (await rt.exec("/tmp/x.sh")).stdout == "ax\n"
        c = await rt.checkpoints.create(name=f"{n}-a")
        assert (await aclient.checkpoints.wait_until_ready(c.id)).state == "ready"
        back = await rt.restore(c.id, name=f"{n}-r")
        assert raw(rest, f"{n}-r")["status"] == "running"
        await back.delete()
        await aclient.checkpoints.delete(c.id)
    finally:
        await rt.delete(missing_ok=True)
