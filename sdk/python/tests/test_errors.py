"""Error mapping, tenant isolation, hostile input and retry policy."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Callable, List

import httpx
import pytest
from conftest import unique

from runta import (
    AlreadyExistsError,
    APIConnectionError,
    AuthenticationError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    Runta,
    RuntaError,
    Runtime,
    UnavailableError,
)


def test_wrong_and_missing_token(endpoint: str) -> None:
    for tok in ["rt_" + "a" * 40, "garbage", ""]:
        with Runta(token=tok, endpoint=endpoint) as c, pytest.raises(AuthenticationError) as ei:
            c.runtimes.list()
        e = ei.value
        assert e.code == "unauthenticated" and e.status == 401
        assert e.request_id and isinstance(e, RuntaError) and e.message


def test_other_tenant_sees_404(rt: Runtime, token_b: str, endpoint: str) -> None:
    with Runta(token=token_b, endpoint=endpoint) as b:
        assert rt.id not in {r.id for r in b.runtimes.list()}
        for ref in (rt.id, rt.name):
            with pytest.raises(NotFoundError):
                b.runtimes.get(ref)
            with pytest.raises(NotFoundError):
                b.runtimes.delete(ref)
        foreign = Runtime(b, rt.cached_info)  # a handle built from leaked info
        for call in (
            lambda: foreign.exec("id"),
            foreign.pause,
            foreign.stop,
            lambda: foreign.resize_memory(300),
            lambda: foreign.files.read("/etc/hostname"),
            lambda: foreign.files.write("/tmp/pwn", "x"),
            lambda: foreign.files.list("/"),
            foreign.events,
        ):
            with pytest.raises(NotFoundError):
                call()
        # Tenant B may use the same name for its own runtime.
        mine = b.runtimes.create(rt.name, memory_mib=128)
        assert mine.id != rt.id
        mine.delete()
    assert rt.refresh().status == "running"


def test_duplicate_name(client: Runta, rt: Runtime) -> None:
    with pytest.raises(ConflictError) as ei:
        client.runtimes.create(rt.name, memory_mib=128)
    assert isinstance(ei.value, AlreadyExistsError)
    assert ei.value.code == "already_exists" and ei.value.status == 409


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "Bad_Name"}, "name"),
        ({"name": "x" * 64}, "name"),
        ({"name": "ok", "vcpus": -1}, "resources.requests.vcpus"),
        ({"name": "ok", "vcpus": 1e9}, "resources.requests.vcpus"),
        ({"name": "ok", "memory_mib": 1}, "resources.requests.memory_mib"),
        ({"name": "ok", "memory_mib": 10**30}, "resources.requests.memory_mib"),
        ({"name": "ok", "memory_mib": -5}, "resources.requests.memory_mib"),
        ({"name": "ok", "image": "../../etc"}, "image"),
        ({"name": "ok", "image": "Not An Image!"}, "image"),
        ({"name": "ok", "env": {"1BAD": "x"}}, "env.1BAD"),
        ({"name": "ok", "env": {"BIG": "x" * 40_000}}, "env.BIG"),
        ({"name": "ok", "idle_timeout": -1}, "idle_timeout_secs"),
        ({"name": "ok", "idle_timeout": 10**12}, "idle_timeout_secs"),
        ({"name": "ok", "publish": [70000]}, "publish[0].port"),
        ({"name": "ok", "publish": ["80/gopher"]}, "publish[0].protocol"),
    ],
)
def test_invalid_create_names_the_field(client: Runta, kwargs: dict, field: str) -> None:
    if kwargs["name"] == "ok":
        kwargs["name"] = unique("bad")
    with pytest.raises(InvalidArgumentError) as ei:
        client.runtimes.create(**kwargs)
    assert ei.value.field == field, ei.value
    assert ei.value.code == "invalid_argument" and ei.value.status in (400, 422)
    assert client.runtimes.list(labels={"never": "made"}) == []


def test_capacity_exhausted(client: Runta) -> None:
    with pytest.raises(ResourceExhaustedError) as ei:
        client.runtimes.create(unique("huge"), memory_mib=4 * 1024 * 1024)
    assert ei.value.code == "resource_exhausted"


def test_invalid_exec_and_ids(client: Runta, rt: Runtime) -> None:
    with pytest.raises(InvalidArgumentError) as ei:
        rt.exec("true", timeout=10**9)
    assert ei.value.field == "timeout_secs"
    with pytest.raises(InvalidArgumentError) as ei:
        rt.exec("true", max_output_bytes=10**12)
    assert ei.value.field == "max_output_bytes"
    with pytest.raises(InvalidArgumentError) as ei:
        rt.exec("true", env={"BAD-KEY": "1"})
    assert ei.value.field and ei.value.field.startswith("env")
    with pytest.raises(InvalidArgumentError):
        rt.exec("cat", stdin="x" * (2 * 1024 * 1024))  # body over the 1 MiB JSON limit
    for bad in ("", "..", "../x", "a/b"):
        with pytest.raises(InvalidArgumentError):
            client.runtimes.get(bad)
    with pytest.raises(NotFoundError):
        client.runtimes.get("no-such-runtime")
    with pytest.raises(NotFoundError):
        client.runtimes.get(str(uuid.uuid4()))


def test_path_traversal_stays_inside(rt: Runtime, tmp_path: Path) -> None:
    marker = f"runta-pysdk-{uuid.uuid4().hex}"
    rt.files.write(f"/tmp/../../../../etc/{marker}", "inside")
    assert not Path(f"/etc/{marker}").exists()  # not on the host
    assert rt.exec(f"cat /etc/{marker}").stdout == "inside"
    # Reading up and out lands on the runtime's own files.
    assert rt.files.read("/../../../etc/hostname").decode().strip() == rt.name
    # Symlinks inside the runtime resolve inside it too.
    rt.exec("ln -s / /tmp/rootlink && ln -s /proc/1/root /tmp/p1")
    assert rt.files.read("/tmp/rootlink/etc/hostname").decode().strip() == rt.name
    assert rt.files.read("/tmp/p1/etc/hostname").decode().strip() == rt.name
    rt.files.write("/tmp/rootlink/tmp/via-link", "x")
    assert rt.exec("cat /tmp/via-link").stdout == "x"
    assert marker not in {p.name for p in Path("/etc").iterdir()}


# --- retry policy, checked against a fake daemon ------------------------------


def _fake(status_seq: List[int], calls: List[httpx.Request]) -> httpx.MockTransport:
    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        status = status_seq[min(len(calls) - 1, len(status_seq) - 1)]
        if status == 0:
            raise httpx.ConnectError("refused", request=req)
        if status >= 400:
            body = {"error": {"code": "unavailable", "message": "busy"}, "request_id": "rid-1"}
            return httpx.Response(status, json=body, headers={"x-request-id": "rid-1"})
        if req.url.path.endswith("/exec"):
            data = {"exit_code": 0, "stdout": "", "stderr": ""}
            return httpx.Response(200, json={"data": data})
        info = {"id": "00000000-0000-0000-0000-000000000001", "name": "x", "status": "running"}
        if req.method == "GET" and req.url.path == "/v1/runtimes":
            page = {"next_cursor": None, "has_more": False}
            return httpx.Response(200, json={"data": [info], "pagination": page})
        if req.method == "DELETE":
            return httpx.Response(200, json={"data": {}})
        return httpx.Response(200, json={"data": info})

    return httpx.MockTransport(handler)


def _client(seq: List[int], calls: List[httpx.Request]) -> Runta:
    c = Runta(token="rt_x", endpoint="http://fake", transport=_fake(seq, calls), max_retries=3)
    c._transport.retry.base_delay = 0.001
    return c


@pytest.mark.parametrize(
    ("do", "retried"),
    [
        (lambda c: c.runtimes.get("x"), True),
        (lambda c: c.runtimes.list(), True),
        (lambda c: c.runtimes.delete("x"), True),
        (lambda c: Runtime(c, _info()).pause(), True),
        (lambda c: Runtime(c, _info()).start(), True),
        (lambda c: c.runtimes.create("x"), False),
        (lambda c: c.runtimes.create("x", idempotency_key="k"), True),
        (lambda c: Runtime(c, _info()).exec("true"), False),
        (lambda c: Runtime(c, _info()).resize_memory(64), False),
    ],
)
def test_retry_policy(do: Callable[[Runta], object], retried: bool) -> None:
    for failure in (503, 0):  # a 503 and a connection error
        calls: List[httpx.Request] = []
        with _client([failure, failure, 200], calls) as c:
            if retried:
                do(c)
                assert len(calls) == 3
            else:
                exc = UnavailableError if failure == 503 else APIConnectionError
                with pytest.raises(exc):
                    do(c)
                assert len(calls) == 1
        if failure == 503 and retried:
            calls = []
            with _client([503], calls) as c, pytest.raises(UnavailableError) as ei:
                do(c)
            assert len(calls) == 4  # 1 + max_retries, then the error surfaces
            assert ei.value.request_id == "rid-1" and ei.value.status == 503


def test_create_sends_idempotency_key() -> None:
    calls: List[httpx.Request] = []
    with _client([200], calls) as c:
        c.runtimes.create("x", vcpus=2, memory_mib=2048, idempotency_key="abc")
    assert calls[0].headers["idempotency-key"] == "abc"
    assert calls[0].url.params["wait"] == "true"
    body = json.loads(calls[0].content)
    assert body == {"name": "x", "resources": {"requests": {"vcpus": 2, "memory_mib": 2048}}}


def test_connection_refused(tmp_path: Path) -> None:
    c = Runta(token="rt_x", endpoint="http://127.0.0.1:9", max_retries=1)
    with c, pytest.raises(APIConnectionError):
        c.runtimes.list()


def test_download_refuses_hostile_listing(tmp_path: Path) -> None:
    """A compromised runtime answering with '../' names cannot write outside the target."""

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/files/list"):
            entries = [{"name": "../../escape", "type": "file", "size": 1, "mode": 420}]
            return httpx.Response(200, json={"data": entries})
        return httpx.Response(200, content=b"pwned")

    dst = tmp_path / "a" / "b"
    with Runta(token="rt_x", endpoint="http://fake", transport=httpx.MockTransport(handler)) as c:
        rt = Runtime(c, _info())
        with pytest.raises(RuntaError, match="lists an entry whose name"):
            rt.files.download("/x", dst)
    assert not (tmp_path / "escape").exists()


def _info():  # type: ignore[no-untyped-def]
    from runta import RuntimeInfo

    return RuntimeInfo.from_dict(
        {"id": "00000000-0000-0000-0000-000000000001", "name": "x", "status": "running"}
    )
