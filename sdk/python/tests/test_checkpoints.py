"""Checkpoints and forks: save a runtime's files, start runtimes from them, errors."""

from __future__ import annotations

from typing import AsyncIterator, Iterator, List

import pytest
from conftest import unique

from runta import (
    AlreadyExistsError,
    AsyncCheckpoint,
    AsyncRunta,
    AsyncRuntime,
    Checkpoint,
    CheckpointInfo,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    Runta,
    Runtime,
)


@pytest.fixture
def made(client: Runta) -> Iterator[List[Runtime]]:
    """Runtimes to delete after the test (before its checkpoints)."""
    out: List[Runtime] = []
    yield out
    for r in reversed(out):
        r.delete(missing_ok=True)


def test_checkpoint_fork_twice_independent(client: Runta, made: List[Runtime]) -> None:
    src = client.runtimes.create(unique("src"), vcpus=0.5, memory_mib=256)
    made.append(src)
    src.files.write("/root/a.txt", "v1\n")
    name = unique("ck")
    cp = src.checkpoints.create(name)
    try:
        assert isinstance(cp, Checkpoint)
        assert cp.name == name and len(cp.id) == 36
        assert cp.source_runtime_id == src.id and cp.source_runtime_name == src.name
        assert cp.image == "base" and cp.size_bytes > 0 and cp.created_at is not None
        assert isinstance(cp.info, CheckpointInfo) and cp.info.raw["name"] == name
        assert src.refresh().status == "running", "thawed after the copy"
        src.files.write("/root/a.txt", "v2\n")

        # Two forks: by handle and by name; each has v1 and none sees the others.
        f1 = client.runtimes.create(unique("f1"), checkpoint_id=cp, vcpus=0.5, memory_mib=256)
        made.append(f1)
        f2 = client.runtimes.create(unique("f2"), checkpoint_id=name, memory_mib=256)
        made.append(f2)
        for f in (f1, f2):
            assert f.status == "running"
            assert f.files.read_text("/root/a.txt") == "v1\n"
        f1.files.write("/root/a.txt", "f1\n")
        assert f1.exec("echo mine > /root/only-f1").ok
        assert f1.files.read_text("/root/a.txt") == "f1\n"
        assert f2.files.read_text("/root/a.txt") == "v1\n"
        assert src.files.read_text("/root/a.txt") == "v2\n"
        for other in (f2, src):
            assert other.exec("test -e /root/only-f1").exit_code == 1

        # get / list, top-level and per runtime.
        assert client.checkpoints.get(name) == cp
        assert client.checkpoints.get(cp.id).name == name
        assert cp.refresh().name == name
        assert name in {c.name for c in client.checkpoints.list()}
        assert [c.id for c in src.checkpoints.list()] == [cp.id]
        assert f1.checkpoints.list() == []

        # In use: refused, naming the forks; the checkpoint stays.
        with pytest.raises(FailedPreconditionError) as ei:
            cp.delete()
        assert ei.value.status == 409 and ei.value.code == "failed_precondition"
        assert f1.name in ei.value.message and f2.name in ei.value.message
        assert client.checkpoints.get(name).id == cp.id
        # Checkpoints outlive their source runtime.
        src.delete()
        assert client.checkpoints.get(name).source_runtime_name == src.name
        f1.delete()
        f2.delete()
    finally:
        for r in made:
            r.delete(missing_ok=True)
        client.checkpoints.delete(name, missing_ok=True)
    with pytest.raises(NotFoundError):
        client.checkpoints.get(name)
    with pytest.raises(NotFoundError):
        cp.delete()
    cp.delete(missing_ok=True)


def test_checkpoint_of_paused_runtime(client: Runta, made: List[Runtime]) -> None:
    src = client.runtimes.create(unique("psrc"), vcpus=0.5, memory_mib=256)
    made.append(src)
    src.exec("echo paused-state > /root/p.txt")
    assert src.pause().status == "paused"
    cp = client.checkpoints.create(src, unique("pck"))
    try:
        assert src.refresh().status == "paused", "a paused runtime stays paused"
        fork = client.runtimes.create(unique("pf"), checkpoint_id=cp.id, memory_mib=256)
        made.append(fork)
        assert fork.files.read_text("/root/p.txt") == "paused-state\n"
        # A checkpoint of a fork stacks on the one below: deleting that one is refused.
        cp2 = fork.checkpoints.create(unique("pck2"))
        fork.delete()
        with pytest.raises(FailedPreconditionError) as ei:
            cp.delete()
        assert cp2.name in ei.value.message
        cp2.delete()
        src.resume()
        # A shut-down runtime cannot be checkpointed.
        src.stop()
        with pytest.raises(FailedPreconditionError) as ei2:
            src.checkpoints.create(unique("off"))
        assert "shutdown" in ei2.value.message
    finally:
        for r in made:
            r.delete(missing_ok=True)
        cp.delete(missing_ok=True)


def test_checkpoint_errors(client: Runta, rt: Runtime, token_b: str, endpoint: str) -> None:
    name = unique("eck")
    cp = rt.checkpoints.create(name)
    try:
        with pytest.raises(AlreadyExistsError) as ei:
            rt.checkpoints.create(name)
        assert ei.value.status == 409
        with pytest.raises(InvalidArgumentError) as ei2:
            rt.checkpoints.create("Bad Name")
        assert ei2.value.field == "name" and ei2.value.status == 422
        # Unknown names.
        missing = unique("nope")
        with pytest.raises(NotFoundError):
            client.checkpoints.get(missing)
        with pytest.raises(NotFoundError):
            client.checkpoints.delete(missing)
        client.checkpoints.delete(missing, missing_ok=True)
        with pytest.raises(NotFoundError):
            client.checkpoints.create(unique("no-rt"), unique("x"))
        with pytest.raises(InvalidArgumentError) as ei3:
            client.runtimes.create(unique("nf"), checkpoint_id=missing)
        assert ei3.value.field == "checkpoint"
        for bad in ("", "a/b", ".."):
            with pytest.raises(InvalidArgumentError):
                client.checkpoints.get(bad)
        with pytest.raises(TypeError):
            client.runtimes.create(unique("t"), checkpoint_id=42)  # type: ignore[arg-type]

        # Another tenant: nothing to see, use or delete.
        with Runta(token=token_b, endpoint=endpoint) as b:
            assert cp.id not in {c.id for c in b.checkpoints.list()}
            for ref in (cp.id, name):
                with pytest.raises(NotFoundError):
                    b.checkpoints.get(ref)
                with pytest.raises(NotFoundError):
                    b.checkpoints.delete(ref)
                with pytest.raises(InvalidArgumentError) as ei4:
                    b.runtimes.create(unique("steal"), checkpoint_id=ref)
                assert ei4.value.field == "checkpoint"
            with pytest.raises(NotFoundError):
                b.checkpoints.create(rt.id, unique("steal"))
            foreign = Checkpoint(b, cp.info)  # a handle built from leaked info
            with pytest.raises(NotFoundError):
                foreign.delete()
            assert b.runtimes.list() == []
        assert client.checkpoints.get(cp.id).name == name
    finally:
        cp.delete(missing_ok=True)


@pytest.fixture
async def aclient(token: str, endpoint: str) -> AsyncIterator[AsyncRunta]:
    async with AsyncRunta(token=token, endpoint=endpoint) as c:
        yield c


async def test_async_checkpoints(aclient: AsyncRunta, token_b: str, endpoint: str) -> None:
    made: List[AsyncRuntime] = []
    name = unique("ack")
    try:
        src = await aclient.runtimes.create(unique("asrc"), vcpus=0.5, memory_mib=256)
        made.append(src)
        await src.files.write("/root/a.txt", "v1\n")
        await src.pause()
        cp = await src.checkpoints.create(name)
        assert isinstance(cp, AsyncCheckpoint)
        assert (cp.name, cp.source_runtime_id, cp.source_runtime_name) == (
            name,
            src.id,
            src.name,
        )
        assert (await src.refresh()).status == "paused"
        await src.resume()
        await src.files.write("/root/a.txt", "v2\n")
        f1 = await aclient.runtimes.create(unique("af1"), checkpoint_id=cp, memory_mib=256)
        made.append(f1)
        f2 = await aclient.runtimes.create(unique("af2"), checkpoint_id=cp.id, memory_mib=256)
        made.append(f2)
        await f1.files.write("/root/a.txt", "f1\n")
        assert await f1.files.read_text("/root/a.txt") == "f1\n"
        assert await f2.files.read_text("/root/a.txt") == "v1\n"
        assert await src.files.read_text("/root/a.txt") == "v2\n"
        assert (await aclient.checkpoints.get(name)) == cp
        assert cp.id in {c.id for c in await aclient.checkpoints.list()}
        assert [c.id for c in await src.checkpoints.list()] == [cp.id]
        with pytest.raises(FailedPreconditionError):
            await cp.delete()
        with pytest.raises(NotFoundError):
            await aclient.checkpoints.get(unique("nope"))
        with pytest.raises(InvalidArgumentError):
            await aclient.runtimes.create(unique("nf"), checkpoint_id=unique("nope"))
        async with AsyncRunta(token=token_b, endpoint=endpoint) as b:
            with pytest.raises(NotFoundError):
                await b.checkpoints.get(cp.id)
            with pytest.raises(NotFoundError):
                await b.checkpoints.delete(name)
        for r in (f1, f2):
            await r.delete()
        await cp.delete()
        with pytest.raises(NotFoundError):
            await aclient.checkpoints.get(name)
    finally:
        for r in made:
            await r.delete(missing_ok=True)
        await aclient.checkpoints.delete(name, missing_ok=True)
