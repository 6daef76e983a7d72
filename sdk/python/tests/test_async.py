"""The asyncio client: every call, with the same names as the sync client."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import AsyncIterator

import pytest
from conftest import unique

from runta import (
    AlreadyExistsError,
    AsyncExecTask,
    AsyncRunta,
    AsyncRuntime,
    AuthenticationError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
)


@pytest.fixture
async def aclient(token: str, endpoint: str) -> AsyncIterator[AsyncRunta]:
    async with AsyncRunta(token=token, endpoint=endpoint) as c:
        yield c


@pytest.fixture
async def art(aclient: AsyncRunta) -> AsyncIterator[AsyncRuntime]:
    r = await aclient.runtimes.create(unique("art"), vcpus=1, memory_mib=256)
    try:
        yield r
    finally:
        await r.delete(missing_ok=True)


async def test_async_seed_flow(aclient: AsyncRunta) -> None:
    name = unique("aw")
    rt = await aclient.runtimes.create(name, vcpus=2, memory_mib=512, labels={"k": name})
    assert isinstance(rt, AsyncRuntime) and rt.cached_info.status == "running"
    items = await aclient.runtimes.list(labels={"k": name})
    assert [(i.id, i.name, i.cached_info.status) for i in items] == [(rt.id, name, "running")]
    page = await aclient.runtimes.list_page(limit=1, labels={"k": name})
    assert [i.name for i in page.items] == [name] and not page.has_more
    rt = await aclient.runtimes.get(name)
    r = await rt.exec(["sh", "-lc", "pwd && echo $APP_ENV"], timeout=30, env={"APP_ENV": "dev"})
    assert (r.exit_code, r.stdout_text) == (0, "/root\ndev\n")
    assert (await rt.pause()).status == "paused"
    with pytest.raises(ConflictError):
        await rt.exec("true")
    assert (await rt.resume()).status == "running"
    assert (await rt.stop()).status == "shutdown"
    assert (await rt.start()).status == "running"
    assert (await rt.resize_memory(1024)).memory_mib == 1024
    assert (await rt.resize(vcpus=1)).vcpus == 1
    assert (await rt.update(labels={"k": name, "x": "y"})).labels["x"] == "y"
    assert (await rt.refresh()).status == "running"
    assert {"resized", "updated"} & {e.type for e in await rt.events()}
    await rt.delete()
    with pytest.raises(NotFoundError):
        await aclient.runtimes.get(name)
    await aclient.runtimes.delete(name, missing_ok=True)


async def test_async_create_no_wait(aclient: AsyncRunta) -> None:
    rt = await aclient.runtimes.create(unique("anw"), memory_mib=128, wait=False)
    try:
        assert (await rt.wait_until("running", timeout=60)).status == "running"
    finally:
        await rt.delete()


async def test_async_exec_options_and_detached(art: AsyncRuntime) -> None:
    r = await art.exec("cat; pwd; echo $X >&2; exit 4", cwd="/tmp", env={"X": "y"}, stdin="in\n")
    assert (r.exit_code, r.stdout, r.stderr) == (4, "in\n/tmp\n", "y\n")
    r = await art.exec("sleep 10", timeout=1)
    assert r.timed_out and r.exit_code == 124
    r = await art.exec("head -c 5000 /dev/zero | tr '\\0' z", max_output_bytes=10)
    assert r.stdout == "z" * 10 and r.stdout_truncated
    t0 = time.monotonic()
    tasks = [art.exec_detached(f"sleep 1; echo {i}") for i in range(3)]
    assert all(isinstance(t, AsyncExecTask) for t in tasks) and not tasks[0].done()
    first = await tasks[0]
    rest = await asyncio.gather(tasks[1].wait(timeout=30), tasks[2].result())
    assert [first.stdout, *(x.stdout for x in rest)] == ["0\n", "1\n", "2\n"]
    assert time.monotonic() - t0 < 2.5 and tasks[2].done()
    # Plain concurrency works too.
    outs = await asyncio.gather(*(art.exec(f"echo {i}") for i in range(10)))
    assert [o.stdout for o in outs] == [f"{i}\n" for i in range(10)]


async def test_async_session(art: AsyncRuntime) -> None:
    s = art.session()
    await s.exec("cd /tmp && export K=V")
    r = await s.exec("pwd; echo $K")
    assert r.stdout == "/tmp\nV\n" and s.cwd == "/tmp" and s.env == {"K": "V"}
    await s.exec("unset K; cd /")
    assert (await s.exec("echo x${K}x; pwd")).stdout == "xx\n/\n"


async def test_async_files(art: AsyncRuntime, tmp_path: Path) -> None:
    await art.files.write("/opt/x/run.sh", "#!/bin/sh\necho hi\n", mode=0o755)
    assert (await art.exec("/opt/x/run.sh")).stdout == "hi\n"
    assert await art.files.read("/opt/x/run.sh") == b"#!/bin/sh\necho hi\n"
    assert (await art.files.read_text("/opt/x/run.sh")).startswith("#!")
    assert [e.name for e in await art.files.list("/opt/x")] == ["run.sh"]
    src = tmp_path / "src"
    (src / "d" / "e").mkdir(parents=True)
    (src / "d" / "f.txt").write_text("F")
    (src / "g.bin").write_bytes(b"\x00\xff" * 1000)
    assert await art.files.upload(src, "/data") == 2
    assert await art.files.download("/data", tmp_path / "back") == 2
    assert (tmp_path / "back" / "d" / "f.txt").read_text() == "F"
    assert (tmp_path / "back" / "g.bin").read_bytes() == b"\x00\xff" * 1000
    assert (tmp_path / "back" / "d" / "e").is_dir()
    with pytest.raises(NotFoundError):
        await art.files.read("/no/such")


async def test_async_errors(
    aclient: AsyncRunta, art: AsyncRuntime, token_b: str, endpoint: str
) -> None:
    async with AsyncRunta(token="rt_" + "b" * 40, endpoint=endpoint) as bad:
        with pytest.raises(AuthenticationError):
            await bad.runtimes.list()
    async with AsyncRunta(token=token_b, endpoint=endpoint) as other:
        with pytest.raises(NotFoundError):
            await other.runtimes.get(art.name)
        with pytest.raises(NotFoundError):
            await AsyncRuntime(other, art.cached_info).exec("id")
    with pytest.raises(AlreadyExistsError):
        await aclient.runtimes.create(art.name, memory_mib=128)
    with pytest.raises(InvalidArgumentError) as ei:
        await aclient.runtimes.create(unique("x"), memory_mib=10**30)
    assert ei.value.field == "resources.requests.memory_mib"
    marker = unique("m")
    await art.files.write(f"/../../../tmp/{marker}", "in")
    assert not Path(f"/tmp/{marker}").exists()
    assert (await art.exec(f"cat /tmp/{marker}")).stdout == "in"
