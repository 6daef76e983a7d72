"""The official client, asynchronous surface, against runtad (0.1.10+ runs its
async exec over `GET /v1/runtimes/{id}/exec/stream`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import runta
from conftest import NEW, Rest


async def start(rt: Any) -> None:
    await (rt.boot() if NEW else rt.start())


async def stop(rt: Any) -> None:
    await (rt.shutdown() if NEW else rt.stop())


async def test_async_everything(aclient: runta.AsyncRunta, rest: Rest, name: str) -> None:
    assert await aclient.health() is True
    rt = await aclient.runtimes.create(name, vcpus=1, memory_mib=128)
    try:
        assert (await rt.status()) == runta.RuntimeStatus.RUNNING
        assert rest.runtime(rt.id)["display_name"] == name
        assert (await aclient.runtimes.get(name)).id == rt.id
        assert rt.id in [r.id for r in await aclient.runtimes.list()]

        r = await rt.exec("echo out; echo err >&2; exit 4")
        assert (r.exit_code, r.stdout_text, r.stderr_text) == (4, "out\n", "err\n")
        assert (await rt.exec(["printf", "%s", "x y"])).stdout_text == "x y"
        assert (await rt.exec("echo $V", env={"V": "w"})).stdout_text == "w\n"
        assert (await rt.exec("wc -c", stdin=b"12345")).stdout_text.strip() == "5"
        big = await rt.exec("head -c 5000 /dev/zero | tr '\\0' x", max_output_bytes=100)
        assert len(big.stdout) == 100 and big.stdout_truncated

        await rt.files.write("/tmp/a.txt", "async")
        assert await rt.files.read("/tmp/a.txt") == b"async"
        assert rest.exec(name, "cat /tmp/a.txt")["stdout"] == "async"

        info = await rt.resize_memory(256)
        assert info.resources.limits.memory_mib == 256
        assert rest.runtime(name)["resources"]["limits"]["memory_mib"] == 256

        await rt.pause()
        assert rest.runtime(name)["status"] == "paused"
        await rt.resume()
        assert rest.runtime(name)["status"] == "running"
        await stop(rt)
        assert rest.runtime(name)["status"] == "shutdown"
        await start(rt)
        assert rest.runtime(name)["status"] == "running"

        cp = await rt.checkpoints.create(name=f"{name}-acp")
        assert cp.id in [c.id for c in await aclient.checkpoints.list()]
        assert (await aclient.checkpoints.get(cp.id)).display_name == f"{name}-acp"
        restored = await rt.restore(cp.id, name=f"{name}-ar", memory_mib=128)
        assert rest.exec(f"{name}-ar", "cat /tmp/a.txt")["stdout"] == "async"
        await restored.delete()
        await aclient.checkpoints.delete(cp.id)
        assert rest.status_code(f"/v1/checkpoints/{cp.id}") == 404
    finally:
        await rt.delete()
    assert rest.status_code(f"/v1/runtimes/{rt.id}") == 404


@pytest.mark.skipif(not NEW, reason="0.1.1 runs async exec over the buffered route")
async def test_async_exec_timeout_over_stream(
    aclient: runta.AsyncRunta, rest: Rest, name: str
) -> None:
    rt = await aclient.runtimes.create(name, memory_mib=128)
    try:
        r = await rt.exec("sleep 30", timeout=1)
        assert r.exit_code == 124
        # The client sent TERM over the stream and hung up: the command is gone.
        for _ in range(50):
            left = rest.exec(name, "cat /proc/[0-9]*/comm | grep -x sleep || true")["stdout"]
            if not left.strip():
                break
            await asyncio.sleep(0.1)
        assert left.strip() == ""
    finally:
        await rt.delete()
