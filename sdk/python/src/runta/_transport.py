"""HTTP plumbing shared by the sync and async clients.

Every operation of the SDK is written once, as a generator ("flow") that yields
:class:`Call` / :class:`Sleep` steps and receives their results. The sync client
drives flows with ``httpx.Client`` and ``time.sleep``; the async client with
``httpx.AsyncClient`` and ``asyncio.sleep``. Only the two small drivers below
know about I/O; the request building, response parsing, error mapping and retry
policy are shared.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from typing import (
    Any,
    AsyncIterator,
    Dict,
    Generator,
    Iterator,
    List,
    Optional,
    Tuple,
    TypeVar,
    Union,
)

import httpx

from ._errors import (
    APIConnectionError,
    APITimeoutError,
    RuntaError,
    error_from_response,
)

__all__ = ["Call", "Flow", "Reply", "Sleep"]

T = TypeVar("T")

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"
USER_AGENT = "runta-python/0.1.0"
CHUNK = 1024 * 1024


@dataclass
class Call:
    """One HTTP request of a flow."""

    method: str
    path: str
    params: List[Tuple[str, str]] = field(default_factory=list)
    json: Any = None
    content: Optional[bytes] = None
    #: Stream this local file as the request body.
    upload_from: Optional[str] = None
    #: Stream the response body into this local file (``Reply.body`` stays empty).
    download_to: Optional[str] = None
    #: With ``download_to``: refuse (and write nothing) past this many bytes.
    download_limit: Optional[int] = None
    #: With ``download_to``: permissions set on the new file before it is in place.
    download_mode: Optional[int] = None
    headers: Dict[str, str] = field(default_factory=dict)
    #: Safe to send again after a connection error or a 503.
    idempotent: bool = False
    #: Read timeout for this call (seconds); ``None`` = the client's default.
    timeout: Optional[float] = None


@dataclass
class Sleep:
    seconds: float


@dataclass
class Reply:
    status: int
    headers: Dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8")) if self.body else None

    def data(self) -> Any:
        doc = self.json()
        if not isinstance(doc, dict) or "data" not in doc:
            raise RuntaError(
                "unexpected response: no 'data' in the body",
                status=self.status,
                request_id=self.headers.get("x-request-id"),
            )
        return doc["data"]


Step = Union[Call, Sleep]
Flow = Generator[Step, Any, T]


@dataclass
class RetryPolicy:
    max_retries: int = 3
    base_delay: float = 0.25
    max_delay: float = 4.0

    def delay(self, attempt: int, retry_after: Optional[str] = None) -> float:
        if retry_after:
            try:
                return float(min(max(float(retry_after), 0.0), 30.0))
            except ValueError:
                pass
        d: float = min(self.max_delay, self.base_delay * float(2.0**attempt))
        return d * (0.5 + random.random() / 2)


def retryable_status(call: Call, status: int) -> bool:
    return call.idempotent and status == 503


def _url_params(call: Call) -> List[Tuple[str, Union[str, int, float, bool, None]]]:
    return list(call.params)


def _timeout(client_timeout: float, call: Call) -> httpx.Timeout:
    read = call.timeout if call.timeout is not None else client_timeout
    return httpx.Timeout(client_timeout, read=read, connect=min(client_timeout, 10.0))


def _connection_error(exc: httpx.HTTPError, call: Call) -> APIConnectionError:
    what = f"{call.method} {call.path}"
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"{what}: timed out ({type(exc).__name__})")
    return APIConnectionError(f"{what}: cannot reach the Runta daemon: {exc}")


def _file_chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return
            yield chunk


async def _afile_chunks(path: str) -> AsyncIterator[bytes]:
    for chunk in _file_chunks(path):
        yield chunk


def _headers(resp: httpx.Response) -> Dict[str, str]:
    return {k.lower(): v for k, v in resp.headers.items()}


def _too_much(call: Call, size: int) -> RuntaError:
    return RuntaError(
        f"download: {call.download_to} would be {size} bytes, more than max_bytes "
        f"({call.download_limit}); nothing was written",
        code="resource_exhausted",
    )


def _check_announced(call: Call, resp: httpx.Response) -> Optional[int]:
    """The size the daemon announced (the whole file's, then the body's), refused
    past the limit before anything is written."""
    for h in ("x-runta-file-size", "content-length"):
        v = resp.headers.get(h)
        if v is not None and v.isdigit():
            size = int(v)
            if call.download_limit is not None and size > call.download_limit:
                raise _too_much(call, size)
            return size
    return None


def _charge(call: Call, n: int, more: int) -> int:
    n += more
    if call.download_limit is not None and n > call.download_limit:
        raise _too_much(call, n)
    return n


def _finish_download(call: Call, fd: int, announced: Optional[int], n: int) -> None:
    if announced is not None and announced != n:
        raise RuntaError(f"download: {call.download_to}: announced {announced} bytes, received {n}")
    if call.download_mode is not None:
        # Only permission bits: set-id bits from a runtime would be a privilege here.
        os.fchmod(fd, call.download_mode & 0o777)


def _tmp_file(path: str) -> Tuple[int, str]:
    """A fresh temporary file next to ``path`` (never follows a planted symlink)."""
    return tempfile.mkstemp(prefix=".runta-part-", dir=os.path.dirname(path) or ".")


def _retry_wait(
    call: Call, retry: RetryPolicy, attempt: int, reply: Optional[Reply]
) -> Optional[float]:
    """Seconds to wait before sending ``call`` again, or ``None`` to stop.

    ``reply`` is ``None`` when the request failed in transport: only idempotent
    calls are retried then. Replies are retried on retryable statuses, honouring
    ``Retry-After``. Shared by the sync and async transports.
    """
    if attempt >= retry.max_retries:
        return None
    if reply is None:
        return retry.delay(attempt) if call.idempotent else None
    if retryable_status(call, reply.status):
        return retry.delay(attempt, reply.headers.get("retry-after"))
    return None


def _finish(call: Call, reply: Optional[Reply], failure: Optional[httpx.HTTPError]) -> Reply:
    """The outcome of the last attempt: the reply, or the typed error."""
    if reply is None:
        assert failure is not None
        raise _connection_error(failure, call) from failure
    if reply.status >= 400:
        raise error_from_response(reply.status, reply.headers, reply.body)
    return reply


class SyncTransport:
    def __init__(self, client: httpx.Client, timeout: float, retry: RetryPolicy) -> None:
        self.client = client
        self.timeout = timeout
        self.retry = retry

    def run(self, flow: Flow[T]) -> T:
        value: Any = None
        error: Optional[BaseException] = None
        while True:
            try:
                step = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value, error = None, None
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
                continue
            try:
                value = self.send(step)
            except RuntaError as e:
                error = e

    def send(self, call: Call) -> Reply:
        attempt = 0
        while True:
            try:
                reply: Optional[Reply] = self._send_once(call)
            except httpx.HTTPError as exc:
                reply, failure = None, exc
            wait = _retry_wait(call, self.retry, attempt, reply)
            if wait is None:
                return _finish(call, reply, failure if reply is None else None)
            time.sleep(wait)
            attempt += 1

    def _send_once(self, call: Call) -> Reply:
        content: Any = call.content
        if call.upload_from is not None:
            content = _file_chunks(call.upload_from)
        req = self.client.build_request(
            call.method,
            call.path,
            params=_url_params(call),
            json=call.json,
            content=content,
            headers=call.headers,
            timeout=_timeout(self.timeout, call),
        )
        resp = self.client.send(req, stream=True)
        try:
            if call.download_to is not None and resp.status_code < 300:
                announced = _check_announced(call, resp)
                fd, tmp = _tmp_file(call.download_to)
                try:
                    with os.fdopen(fd, "wb") as f:
                        n = 0
                        for chunk in resp.iter_bytes(CHUNK):
                            n = _charge(call, n, len(chunk))
                            f.write(chunk)
                        _finish_download(call, f.fileno(), announced, n)
                    os.replace(tmp, call.download_to)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                return Reply(resp.status_code, _headers(resp), b"")
            body = resp.read()
            return Reply(resp.status_code, _headers(resp), body)
        finally:
            resp.close()


class AsyncTransport:
    def __init__(self, client: httpx.AsyncClient, timeout: float, retry: RetryPolicy) -> None:
        self.client = client
        self.timeout = timeout
        self.retry = retry

    async def run(self, flow: Flow[T]) -> T:
        value: Any = None
        error: Optional[BaseException] = None
        while True:
            try:
                step = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value, error = None, None
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
                continue
            try:
                value = await self.send(step)
            except RuntaError as e:
                error = e

    async def send(self, call: Call) -> Reply:
        attempt = 0
        while True:
            try:
                reply: Optional[Reply] = await self._send_once(call)
            except httpx.HTTPError as exc:
                reply, failure = None, exc
            wait = _retry_wait(call, self.retry, attempt, reply)
            if wait is None:
                return _finish(call, reply, failure if reply is None else None)
            await asyncio.sleep(wait)
            attempt += 1

    async def _send_once(self, call: Call) -> Reply:
        content: Any = call.content
        if call.upload_from is not None:
            content = _afile_chunks(call.upload_from)
        req = self.client.build_request(
            call.method,
            call.path,
            params=_url_params(call),
            json=call.json,
            content=content,
            headers=call.headers,
            timeout=_timeout(self.timeout, call),
        )
        resp = await self.client.send(req, stream=True)
        try:
            if call.download_to is not None and resp.status_code < 300:
                announced = _check_announced(call, resp)
                fd, tmp = _tmp_file(call.download_to)
                try:
                    with os.fdopen(fd, "wb") as f:
                        n = 0
                        async for chunk in resp.aiter_bytes(CHUNK):
                            n = _charge(call, n, len(chunk))
                            f.write(chunk)
                        _finish_download(call, f.fileno(), announced, n)
                    os.replace(tmp, call.download_to)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                return Reply(resp.status_code, _headers(resp), b"")
            body = await resp.aread()
            return Reply(resp.status_code, _headers(resp), body)
        finally:
            await resp.aclose()


def client_settings(token: Optional[str], endpoint: Optional[str]) -> Tuple[str, Dict[str, str]]:
    """Resolves the endpoint and default headers from arguments and the environment."""
    token = token if token is not None else os.environ.get("RUNTA_TOKEN")
    endpoint = endpoint or os.environ.get("RUNTA_ENDPOINT") or DEFAULT_ENDPOINT
    endpoint = endpoint.rstrip("/")
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token.strip()}"
    return endpoint, headers
