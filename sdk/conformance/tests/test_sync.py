"""The official client, synchronous surface, against runtad.

Every call is checked twice: on what the client returns, and on the state read
back through our own REST API with plain HTTP. The client's generated models are
also run over our raw JSON, so a renamed or missing field fails here even where
the client's public layer is lenient.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import runta
from conftest import NEW, SDK_VERSION, Rest
from runta._internal.openapi.models import Checkpoint as GenCheckpoint
from runta._internal.openapi.models import Runtime as GenRuntime


def start(rt: Any) -> None:
    rt.boot() if NEW else rt.start()


def stop(rt: Any) -> None:
    rt.shutdown() if NEW else rt.stop()


def strict(raw: dict[str, Any]) -> GenRuntime:
    """The client's own generated model over our JSON (raises on a missing field)."""
    return GenRuntime.from_dict(raw)


def test_health(client: runta.Runta, endpoint: str) -> None:
    assert client.health() is True
    assert httpx.head(f"{endpoint}/healthz").status_code == 200


def test_create_get_list_delete(client: runta.Runta, rest: Rest, name: str) -> None:
    rt = client.runtimes.create(name, vcpus=1, memory_mib=256)
    assert rt.name == name
    assert rt.status() == runta.RuntimeStatus.RUNNING
    raw = rest.runtime(rt.id)
    assert raw["name"] == raw["display_name"] == name
    assert raw["status"] == "running"
    assert raw["resources"]["requests"]["memory_mib"] == 256
    assert raw["resources"]["limits"]["memory_mib"] == 256
    assert raw["resources"]["current"]["memory_mib"] == 256
    assert raw["egress_policy"]["allowed_hosts"] == []
    assert raw["ssh_enabled"] is False
    assert raw["llm_tool_io_capture_enabled"] is False
    m = strict(raw)
    assert m.display_name == name and m.id == rt.id
    if NEW:
        assert not any(m.llm_token_saving_policy.to_dict().values())

    info = rt.refresh_info()
    assert info.id == rt.id and info.display_name == name
    assert info.resources.requests.memory_mib == 256
    assert info.resources.limits.memory_mib == 256
    assert client.runtimes.get(name).id == rt.id
    assert client.runtimes.get(rt.id).name == name
    assert rt.id in [r.id for r in client.runtimes.list()]
    assert rt.id in [r.id for r in client.runtimes.list(status="running")]
    assert rt.id not in [r.id for r in client.runtimes.list(status=["paused", "shutdown"])]

    rt.delete()
    assert rest.status_code(f"/v1/runtimes/{rt.id}") == 404
    assert name not in rest.names()
    if NEW:
        # 0.1.10+ treats an already-deleted runtime as done.
        rt.delete()
    else:
        with pytest.raises(runta.ApiError) as e:
            rt.delete()
        assert e.value.status_code == 404


def test_create_official_fields(client: runta.Runta, rest: Rest, name: str) -> None:
    rt = client.runtimes.create(
        name,
        resources={"requests": {"vcpus": 1, "memory_mib": 128}, "limits": {"memory_mib": 256}},
        ingress_specs=[runta.IngressSpec(protocol="https", runtime_port=8080)],
        idle_suspend_after_secs=600,
    )
    try:
        raw = rest.runtime(name)
        assert raw["resources"]["requests"]["memory_mib"] == 128
        assert raw["resources"]["limits"]["memory_mib"] == 256
        assert raw["ingress_specs"] == [{"protocol": "https", "runtime_port": 8080}]
        assert [(p["port"], p["protocol"]) for p in raw["publish"]] == [(8080, "https")]
        assert raw["idle_timeout_secs"] == 600
        assert raw["idle_policy"] == {"mode": "suspend_and_wakeup", "suspend_after_secs": 600}
        assert [(s.protocol, s.runtime_port) for s in rt.cached_info.ingress_specs] == [
            ("https", 8080)
        ]
        strict(raw)
    finally:
        rt.delete()


def test_egress_policy_is_honoured_or_refused(client: runta.Runta, rest: Rest, name: str) -> None:
    """A non-open policy (which the client sends as given) is either in force and
    read back, or a 422 naming it that creates nothing; never stored and ignored."""
    if NEW:
        policy = runta.EgressPolicy(mode="allowlist", allowed_hosts=["example.com"])
    else:
        policy = runta.EgressPolicy(enabled=True, allowed_hosts=["example.com"])
    try:
        rt = client.runtimes.create(name, memory_mib=128, egress_policy=policy)
    except runta.ApiError as e:
        assert e.status_code == 422
        assert e.code == "invalid_argument"
        assert "egress" in str(e)
        assert name not in rest.names()
        return
    try:
        raw = rest.runtime(name)
        assert raw["egress_policy"]["allowed_hosts"] == ["example.com"], raw
        if NEW:
            assert raw["egress_policy"]["mode"] == "allowlist", raw
        else:
            assert raw["egress_policy"]["enabled"] is True, raw
        strict(raw)
    finally:
        rt.delete()


@pytest.mark.skipif(SDK_VERSION < (0, 1, 10), reason="runtime_agent is a 0.1.10+ parameter")
def test_runtime_agent_refused(client: runta.Runta, rest: Rest, name: str) -> None:
    with pytest.raises(runta.ApiError) as e:
        client.runtimes.create(name, memory_mib=128, runtime_agent="codex")
    assert e.value.status_code == 422
    assert name not in rest.names()


def test_errors(client: runta.Runta, name: str) -> None:
    with pytest.raises(runta.ApiError) as e:
        client.runtimes.get(f"missing-{uuid.uuid4().hex[:6]}")
    assert e.value.status_code == 404
    assert e.value.code == "not_found"
    rt = client.runtimes.create(name, memory_mib=128)
    try:
        with pytest.raises(runta.ApiError) as e:
            client.runtimes.create(name, memory_mib=128)
        assert e.value.status_code == 409
        assert e.value.code == "already_exists"
    finally:
        rt.delete()


def test_lifecycle(client: runta.Runta, rest: Rest, name: str) -> None:
    rt = client.runtimes.create(name, memory_mib=128)
    try:
        rt.pause()
        assert rt.cached_info.status == runta.RuntimeStatus.PAUSED
        assert rest.runtime(name)["status"] == "paused"
        assert rt.status() == runta.RuntimeStatus.PAUSED
        rt.resume()
        assert rest.runtime(name)["status"] == "running"
        stop(rt)
        assert rt.cached_info.status == runta.RuntimeStatus.SHUTDOWN
        raw = rest.runtime(name)
        assert raw["status"] == "shutdown"
        strict(raw)
        assert rt.id in [r.id for r in client.runtimes.list(status="shutdown")]
        start(rt)
        assert rest.runtime(name)["status"] == "running"
        assert rt.wait_until_ready(timeout=30).status == runta.RuntimeStatus.RUNNING
        if NEW:
            assert rt.heartbeat() == runta.RuntimeStatus.RUNNING
    finally:
        rt.delete()


def test_exec(client: runta.Runta, rest: Rest, name: str) -> None:
    rt = client.runtimes.create(name, memory_mib=128)
    try:
        r = rt.exec("echo out; echo err >&2; exit 3")
        assert (r.exit_code, r.stdout_text, r.stderr_text) == (3, "out\n", "err\n")
        assert not r.stdout_truncated and not r.stderr_truncated
        assert rt.exec(["printf", "%s", "a b"]).stdout_text == "a b"
        assert rt.exec("echo $FOO", env={"FOO": "bar"}).stdout_text == "bar\n"
        assert rt.exec("cat", stdin="piped").stdout_text == "piped"
        assert rt.exec("pwd", cwd="/tmp").stdout_text == "/tmp\n"
        big = rt.exec("head -c 5000 /dev/zero | tr '\\0' x", max_output_bytes=100)
        assert len(big.stdout) == 100 and big.stdout_truncated
        assert rt.exec_detached("echo later").result(timeout=60).stdout_text == "later\n"
        # The same runtime seen by our API: the command ran in it.
        rt.exec("echo marker > /tmp/conformance")
        assert rest.exec(name, "cat /tmp/conformance")["stdout"] == "marker\n"
    finally:
        rt.delete()


def test_update_resources(client: runta.Runta, rest: Rest, name: str) -> None:
    rt = client.runtimes.create(name, memory_mib=128)
    try:
        info = rt.resize_memory(256)
        assert info.resources.requests.memory_mib == 256
        assert info.resources.limits.memory_mib == 256
        raw = rest.runtime(name)
        assert raw["resources"]["requests"]["memory_mib"] == 256
        assert raw["resources"]["current"]["memory_mib"] == 256
        info = rt.update_resources({"limits": {"memory_mib": 512}})
        assert info.resources.limits.memory_mib == 512
        assert rest.runtime(name)["resources"]["limits"]["memory_mib"] == 512
        # The new limit is the cgroup's, inside the runtime.
        out = rt.exec("cat /sys/fs/cgroup/memory.max 2>/dev/null || true").stdout_text.strip()
        if out.isdigit():
            assert int(out) == 512 * 1024 * 1024
        if not NEW:
            assert rt.update_egress_policy(runta.EgressPolicy()).id == rt.id
    finally:
        rt.delete()


def test_files(client: runta.Runta, rest: Rest, name: str, tmp_path: Path) -> None:
    rt = client.runtimes.create(name, memory_mib=128)
    try:
        rt.files.write("/tmp/hello.txt", "hello")
        assert rt.files.read("/tmp/hello.txt") == b"hello"
        assert rt.files.read("/tmp/hello.txt", max_bytes=2) == b"he"
        assert rest.exec(name, "cat /tmp/hello.txt")["stdout"] == "hello"
        rt.files.write("/tmp/run.sh", "#!/bin/sh\necho ran\n", executable=True)
        assert rt.exec(["/tmp/run.sh"]).stdout_text == "ran\n"
        if NEW:
            src = tmp_path / "tree"
            (src / "sub").mkdir(parents=True)
            (src / "sub" / "a.txt").write_text("A")
            (src / "b.bin").write_bytes(bytes(range(256)) * 100)
            rt.files.upload(str(src), "/tmp/tree")
            assert rest.exec(name, "cat /tmp/tree/sub/a.txt")["stdout"] == "A"
            one = tmp_path / "one.txt"
            one.write_text("single")
            rt.files.upload(str(one), "/tmp/up/")
            assert rest.exec(name, "cat /tmp/up/one.txt")["stdout"] == "single"
            out = tmp_path / "back"
            rt.files.download("/tmp/tree", str(out))
            assert (out / "sub" / "a.txt").read_text() == "A"
            assert (out / "b.bin").read_bytes() == bytes(range(256)) * 100
    finally:
        rt.delete()


def test_checkpoints_and_restore(client: runta.Runta, rest: Rest, name: str) -> None:
    rt = client.runtimes.create(name, memory_mib=128)
    restored = None
    try:
        rt.exec("echo saved > /root/state")
        cp = rt.checkpoints.create(name=f"{name}-cp")
        assert cp.display_name == f"{name}-cp"
        if NEW:
            assert cp.state == runta.CheckpointState.READY
        raw = rest.http.get(f"/v1/checkpoints/{cp.id}").json()["data"]
        assert raw["name"] == raw["display_name"] == f"{name}-cp"
        assert raw["state"] == "ready" and raw["kind"] == "full"
        GenCheckpoint.from_dict(raw)
        assert cp.id in [c.id for c in client.checkpoints.list()]
        assert cp.id in [c.id for c in rt.checkpoints.list()]
        assert client.checkpoints.get(cp.id).display_name == f"{name}-cp"
        assert client.checkpoints.get(f"{name}-cp").id == cp.id
        if NEW:
            assert client.checkpoints.wait_until_ready(cp.id).id == cp.id
        restored = rt.restore(cp.id, name=f"{name}-r", memory_mib=128)
        assert restored.name == f"{name}-r"
        assert rest.exec(f"{name}-r", "cat /root/state")["stdout"] == "saved\n"
        restored.delete()
        restored = None
        rt.checkpoints.delete(cp.id)
        assert rest.status_code(f"/v1/checkpoints/{cp.id}") == 404
    finally:
        if restored is not None:
            restored.delete()
        rt.delete()


def test_unimplemented_features_say_so(rest: Rest) -> None:
    """What the official API has and runtad does not yet (SSH keys, WatchFox)
    answers 501 in the error envelope, never a bare 404. Secrets (issue 18) and
    audits (issue 17) landed; their conformance is in their own tests."""
    for path in ("/v1/runtimes/any/ssh-keys", "/v1/runtimes/any/watchfox"):
        r = rest.http.get(path)
        assert r.status_code == 501, (path, r.text)
        assert r.json()["error"]["code"] == "unimplemented", (path, r.text)


@pytest.mark.skipif(not NEW, reason="idle_policy is 0.1.21's")
def test_suspend_only_wakes_only_on_boot(client: runta.Runta, rest: Rest, name: str) -> None:
    """The client's own CreateRuntimeRequest with a SuspendOnlyIdlePolicy, as it
    puts it on the wire: honoured (suspended, not woken by exec), read back as
    SuspendOnlyIdlePolicy, woken by boot()."""
    import time

    from runta._internal.openapi.models import (
        CreateRuntimeRequest,
        CreateRuntimeResources,
        SuspendOnlyIdlePolicy,
    )
    from runta._internal.openapi.models.suspend_only_idle_policy_mode import (
        SuspendOnlyIdlePolicyMode,
    )

    body = CreateRuntimeRequest(
        name=name,
        resources=CreateRuntimeResources.from_dict({"requests": {"vcpus": 1, "memory_mib": 128}}),
        idle_policy=SuspendOnlyIdlePolicy(
            mode=SuspendOnlyIdlePolicyMode.SUSPEND_ONLY, suspend_after_secs=2
        ),
    ).to_dict()
    r = rest.http.post("/v1/runtimes", json=body)
    assert r.status_code == 200, r.text
    try:
        raw = rest.runtime(name)
        assert raw["idle_policy"] == {"mode": "suspend_only", "suspend_after_secs": 2}
        assert raw["idle_wakeup"] is False and raw["idle_timeout_secs"] == 2
        assert isinstance(strict(raw).idle_policy, SuspendOnlyIdlePolicy)
        rt = client.runtimes.get(name)
        deadline = time.monotonic() + 15
        while rest.runtime(name)["status"] != "suspended":
            assert time.monotonic() < deadline, rest.runtime(name)
            time.sleep(0.2)
        with pytest.raises(runta.ApiError) as e:
            rt.exec("true")
        assert e.value.status_code == 409
        assert "suspend_only" in str(e.value)
        assert rest.runtime(name)["status"] == "suspended"
        start(rt)
        assert rest.runtime(name)["status"] == "running"
        assert rt.exec("echo up").stdout_text == "up\n"
    finally:
        rest.http.delete(f"/v1/runtimes/{name}")
