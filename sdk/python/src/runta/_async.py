"""The asyncio client: the same classes and method names as ``_sync``, driving the
same flows with ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
import os
from types import TracebackType
from typing import Any, Dict, Generator, List, Mapping, Optional, Sequence, Set, Type, Union

import httpx

from . import _egress as E
from . import _flows as F
from . import _official as O
from ._common import CheckpointBase, Page, RuntimeBase, SessionBase
from ._models import (
    Audit,
    CheckpointInfo,
    EgressPolicy,
    Event,
    ExecResult,
    FileEntry,
    PortLike,
    RuntimeInfo,
)
from ._transport import AsyncTransport, Call, Flow, RetryPolicy, T, client_settings

__all__ = [
    "AsyncAudits",
    "AsyncCheckpoint",
    "AsyncCheckpoints",
    "AsyncEgress",
    "AsyncExecTask",
    "AsyncFiles",
    "AsyncRunta",
    "AsyncRuntime",
    "AsyncRuntimeAudits",
    "AsyncRuntimeCheckpoints",
    "AsyncRuntimes",
    "AsyncSession",
]


class AsyncRunta:
    """Client of a AsyncRunta daemon.

    ``token`` defaults to ``$RUNTA_TOKEN``, ``endpoint`` to ``$RUNTA_ENDPOINT`` or
    ``http://127.0.0.1:8080``. ``timeout`` is the default per-request timeout in
    seconds; ``max_retries`` how often idempotent requests (GET, lifecycle actions,
    DELETE, file PUT) are repeated after a connection error or a 503.
    """

    def __init__(
        self,
        token: Optional[str] = None,
        endpoint: Optional[str] = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        self.endpoint, headers = client_settings(token, endpoint)
        self._http = httpx.AsyncClient(
            base_url=self.endpoint, headers=headers, timeout=timeout, transport=transport
        )
        self._transport = AsyncTransport(self._http, timeout, RetryPolicy(max_retries=max_retries))
        self._tasks: Set[asyncio.Task[ExecResult]] = set()
        self.runtimes = AsyncRuntimes(self)
        self.checkpoints = AsyncCheckpoints(self)
        self.audits = AsyncAudits(self)

    async def _run(self, flow: Flow[T]) -> T:
        return await self._transport.run(flow)

    def _submit(self, flow: Flow[ExecResult]) -> asyncio.Task[ExecResult]:
        task = asyncio.ensure_future(self._run(flow))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def health(self) -> Dict[str, Any]:
        """``GET /healthz``: the daemon's status, version and backend."""

        def flow() -> Flow[Dict[str, Any]]:
            reply = yield Call("GET", "/healthz", idempotent=True)
            return dict(reply.json())

        return await self._run(flow())

    async def close(self) -> None:
        """Closes connections; waits for detached execs still running."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRunta:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()


class AsyncRuntimes:
    """``runta.runtimes``: create, find and list runtimes."""

    def __init__(self, client: AsyncRunta) -> None:
        self._client = client

    async def create(
        self,
        name: Optional[str] = None,
        *,
        vcpus: Optional[float] = None,
        memory_mib: Optional[int] = None,
        image: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        labels: Optional[Mapping[str, str]] = None,
        publish: Optional[Sequence[PortLike]] = None,
        idle_timeout: Optional[int] = None,
        disk_gib: Optional[int] = None,
        memory_limit_mib: Optional[int] = None,
        checkpoint_id: Optional[Union[str, CheckpointBase, CheckpointInfo]] = None,
        wait: bool = True,
        timeout: Optional[float] = None,
        idempotency_key: Optional[str] = None,
        memory_max_mib: Optional[int] = None,
        resources: Any = None,
        ingress_specs: Optional[Sequence[Any]] = None,
        egress_policy: Any = None,
        allowed_hosts: Optional[E.HostsLike] = None,
        denied_hosts: Optional[E.HostsLike] = None,
        idle_suspend_after_secs: Optional[int] = None,
        runtime_agent: Optional[str] = None,
        poll_interval: Optional[float] = None,
    ) -> AsyncRuntime:
        """Creates a runtime. With ``wait`` (the default) returns once it is running,
        raising :class:`RuntimeFailedError` if it fails and :class:`WaitTimeoutError`
        after ``timeout`` seconds (default 300). With an ``idempotency_key`` the
        request is safe to repeat (and is retried on connection errors).
        ``checkpoint_id`` (an id, a name or a checkpoint) starts it from that
        checkpoint's files instead of a clean image.

        The official client's arguments are taken too: ``name`` may be left out
        (the daemon makes one), ``memory_max_mib`` (= ``memory_limit_mib``),
        ``resources`` (``{"requests": …, "limits": …}``), ``ingress_specs``,
        ``egress_policy``, ``idle_suspend_after_secs`` and
        ``poll_interval`` (unused: the daemon answers once it runs).

        ``egress_policy`` (an :class:`EgressPolicy`, either dict shape or an
        official-client model) or ``allowed_hosts`` / ``denied_hosts`` (an
        allowlist when hosts to allow are given) hold its outbound traffic to a
        list from the first packet; the default is open."""
        if memory_limit_mib is None:
            memory_limit_mib = memory_max_mib
        body = F.create_body(
            name or "",
            vcpus=vcpus,
            memory_mib=memory_mib,
            image=image,
            env=env,
            labels=labels,
            publish=publish,
            idle_timeout=idle_timeout,
            disk_gib=disk_gib,
            memory_limit_mib=memory_limit_mib,
            checkpoint=None if checkpoint_id is None else F.checkpoint_ref(checkpoint_id),
        )
        O.fold_create(
            body,
            name=name,
            resources=resources,
            ingress_specs=ingress_specs,
            egress_policy=E.create_policy(egress_policy, allowed_hosts, denied_hosts),
            idle_suspend_after_secs=idle_suspend_after_secs,
            runtime_agent=runtime_agent,
        )
        info = await self._client._run(
            F.create(body, wait=wait, timeout=timeout, idempotency_key=idempotency_key)
        )
        return AsyncRuntime(self._client, info)

    async def get(self, id_or_name: str) -> AsyncRuntime:
        """The runtime with this UUID or name (:class:`NotFoundError` otherwise)."""
        return AsyncRuntime(self._client, await self._client._run(F.get(id_or_name)))

    async def list(
        self,
        *,
        status: Optional[Union[str, Sequence[str]]] = None,
        labels: Optional[Mapping[str, str]] = None,
    ) -> List[AsyncRuntime]:
        """Every runtime of the tenant (all pages), optionally filtered by status
        (``"running"`` or ``["running", "paused"]``) and labels (all must match)."""
        infos = await self._client._run(F.list_all(status=status, labels=labels))
        return [AsyncRuntime(self._client, i) for i in infos]

    async def list_page(
        self,
        *,
        limit: Optional[int] = None,
        after: Optional[str] = None,
        status: Optional[Union[str, Sequence[str]]] = None,
        labels: Optional[Mapping[str, str]] = None,
    ) -> Page[AsyncRuntime]:
        """One page of runtimes; pass ``page.next_cursor`` as ``after`` for the next."""
        items, cursor = await self._client._run(
            F.list_page(status=status, labels=labels, limit=limit, after=after)
        )
        return Page([AsyncRuntime(self._client, i) for i in items], cursor)

    async def delete(self, id_or_name: str, *, missing_ok: bool = False) -> None:
        await self._client._run(F.delete(id_or_name, missing_ok=missing_ok))


class AsyncCheckpoints:
    """``runta.checkpoints``: the tenant's checkpoints (saved runtime files)."""

    def __init__(self, client: AsyncRunta) -> None:
        self._client = client

    async def create(self, runtime: Union[str, RuntimeBase], name: str) -> AsyncCheckpoint:
        """Saves the files of ``runtime`` (an id, a name or a handle; running, paused
        or suspended) as checkpoint ``name``. The runtime is frozen while its files
        are copied, then thawed (a paused one stays paused)."""
        ref = runtime.id if isinstance(runtime, RuntimeBase) else runtime
        info = await self._client._run(F.create_checkpoint(ref, name))
        return AsyncCheckpoint(self._client, info)

    async def get(self, id_or_name: str) -> AsyncCheckpoint:
        """The checkpoint with this UUID or name (:class:`NotFoundError` otherwise)."""
        return AsyncCheckpoint(self._client, await self._client._run(F.get_checkpoint(id_or_name)))

    async def wait_until_ready(
        self,
        id_or_name: str,
        *,
        timeout: Optional[float] = None,
        poll_interval: Optional[float] = None,
    ) -> AsyncCheckpoint:
        """The official client's wait: checkpoints here are ready once created."""
        return await self.get(id_or_name)

    async def list(self) -> List[AsyncCheckpoint]:
        """Every checkpoint of the tenant."""
        infos = await self._client._run(F.list_checkpoints())
        return [AsyncCheckpoint(self._client, i) for i in infos]

    async def delete(
        self, id_or_name: Union[str, CheckpointBase], *, missing_ok: bool = False
    ) -> None:
        """Deletes a checkpoint and frees its space. Refused with
        :class:`FailedPreconditionError` while runtimes started from it (or
        checkpoints of those) exist."""
        await self._client._run(
            F.delete_checkpoint(F.checkpoint_ref(id_or_name), missing_ok=missing_ok)
        )


class AsyncRuntimeCheckpoints:
    """``runtime.checkpoints``: save this runtime's files; its checkpoints."""

    def __init__(self, client: AsyncRunta, runtime_id: str) -> None:
        self._client = client
        self._id = runtime_id

    async def create(
        self,
        name_or_kind: Optional[str] = None,
        name: Optional[str] = None,
        *,
        kind: str = O.CHECKPOINT_KIND,
        wait: bool = True,
        timeout: Optional[float] = None,
        poll_interval: Optional[float] = None,
    ) -> AsyncCheckpoint:
        """Saves this runtime's files (it must be running, paused or suspended) as
        checkpoint ``name``. The runtime is frozen while its files are copied, then
        thawed (a paused one stays paused). The official spelling works too:
        ``create("full", name)``, ``create(name=…)`` or ``create()`` (named
        ``<runtime>-<8 hex>``); ``wait`` and friends are accepted (it is ready
        when this returns)."""
        if name_or_kind is None and name is None:
            runtime_name = (await self._client._run(F.get(self._id))).name
        else:
            runtime_name = ""
        chosen = O.checkpoint_name(name_or_kind, name, kind, runtime_name)
        info = await self._client._run(F.create_checkpoint(self._id, chosen))
        return AsyncCheckpoint(self._client, info)

    async def list(self) -> List[AsyncCheckpoint]:
        """The checkpoints taken of this runtime."""
        infos = await self._client._run(F.list_checkpoints())
        return [AsyncCheckpoint(self._client, i) for i in infos if i.source_runtime_id == self._id]


class AsyncCheckpoint(CheckpointBase):
    """A checkpoint: a runtime's files saved under a name. Start runtimes from it
    with ``runta.runtimes.create(name, checkpoint_id=checkpoint)``."""

    def __init__(self, client: AsyncRunta, info: CheckpointInfo) -> None:
        super().__init__(info)
        self._client = client

    async def refresh(self) -> CheckpointInfo:
        """Fetches the record again (:class:`NotFoundError` once deleted)."""
        self._info = await self._client._run(F.get_checkpoint(self.id))
        return self._info

    async def delete(self, *, missing_ok: bool = False) -> None:
        """Deletes the checkpoint and frees its space (refused while in use)."""
        await self._client._run(F.delete_checkpoint(self.id, missing_ok=missing_ok))


class AsyncRuntime(RuntimeBase):
    """A handle on one runtime. ``cached_info`` is the record as last seen."""

    def __init__(self, client: AsyncRunta, info: RuntimeInfo) -> None:
        super().__init__(info)
        self._client = client
        self.files = AsyncFiles(client, info.id)
        self.checkpoints = AsyncRuntimeCheckpoints(client, info.id)
        self.egress = AsyncEgress(self)
        self.audits = AsyncRuntimeAudits(client, info.id)

    # -- record and lifecycle ------------------------------------------------

    async def refresh(self) -> RuntimeInfo:
        """Fetches the record again and updates ``cached_info``."""
        return self._set(await self._client._run(F.get(self.id)))

    async def start(self) -> RuntimeInfo:
        """Boots a shut-down (or failed) runtime; a no-op if it runs."""
        return self._set(await self._client._run(F.action(self.id, "start")))

    async def stop(self) -> RuntimeInfo:
        """Shuts it down (SIGTERM, grace, SIGKILL), keeping its files."""
        return self._set(await self._client._run(F.action(self.id, "stop")))

    async def pause(self) -> RuntimeInfo:
        """Freezes every process."""
        return self._set(await self._client._run(F.action(self.id, "pause")))

    async def resume(
        self,
        *,
        wait: bool = True,
        timeout: Optional[float] = None,
        poll_interval: Optional[float] = None,
    ) -> RuntimeInfo:
        """Thaws a paused (or suspended) runtime; it runs when this returns (the
        official client's ``wait`` arguments are accepted)."""
        return self._set(await self._client._run(F.action(self.id, "resume")))

    async def delete(self, *, missing_ok: bool = False) -> None:
        """Kills its processes and removes its files and record."""
        await self._client._run(F.delete(self.id, missing_ok=missing_ok))

    async def resize(
        self, *, vcpus: Optional[float] = None, memory_mib: Optional[int] = None
    ) -> RuntimeInfo:
        """Changes CPU and/or memory, live where the backend can."""
        return self._set(
            await self._client._run(F.update(self.id, F.resize_body(vcpus, memory_mib)))
        )

    async def resize_memory(self, memory_mib: int) -> RuntimeInfo:
        return await self.resize(memory_mib=memory_mib)

    async def update(
        self,
        *,
        labels: Optional[Mapping[str, str]] = None,
        publish: Optional[Sequence[PortLike]] = None,
        idle_timeout: Optional[int] = None,
    ) -> RuntimeInfo:
        """Replaces labels / published ports / the idle timeout (``0`` turns it off)."""
        body: Dict[str, Any] = {}
        if labels is not None:
            body["labels"] = dict(labels)
        if publish is not None:
            body["publish"] = F.port_specs(publish)
        if idle_timeout is not None:
            body["idle_timeout_secs"] = idle_timeout
        return self._set(await self._client._run(F.update(self.id, body)))

    async def wait_until(self, *statuses: str, timeout: Optional[float] = None) -> RuntimeInfo:
        """Polls until the status is one of ``statuses`` (default ``running``)."""
        flow = F.wait_for(self.id, statuses or ("running",), timeout=timeout, name=self.name)
        return self._set(await self._client._run(flow))

    async def events(
        self, *, after: Optional[int] = None, limit: Optional[int] = None
    ) -> List[Event]:
        """Lifecycle events, oldest first."""
        return await self._client._run(F.events(self.id, after=after, limit=limit))

    # -- the official client's names -----------------------------------------

    @property
    def status(self) -> O.AsyncStatus:
        """The status as last seen (``cached_info.status``, a ``str``); calling it,
        ``await rt.status()``, fetches the current one as the official client does."""
        return O.AsyncStatus(self._info.status, self._status_now)

    async def _status_now(self) -> str:
        return (await self.refresh()).status

    async def heartbeat(self) -> str:
        """The official client's alias of ``status()``: fetches the status."""
        return (await self.refresh()).status

    async def refresh_info(self) -> RuntimeInfo:
        """The official name of :meth:`refresh`."""
        return await self.refresh()

    async def boot(
        self,
        *,
        wait: bool = True,
        timeout: Optional[float] = None,
        poll_interval: Optional[float] = None,
    ) -> RuntimeInfo:
        """The official name of :meth:`start` (it runs when this returns)."""
        info = await self.start()
        if wait and info.status != "running":
            info = await self.wait_until_ready(timeout=timeout)
        return info

    async def shutdown(self) -> RuntimeInfo:
        """The official name of :meth:`stop`."""
        return await self.stop()

    async def wait_until_ready(
        self, *, timeout: Optional[float] = None, poll_interval: Optional[float] = None
    ) -> RuntimeInfo:
        """Polls until it runs; :class:`RuntimeFailedError` if it fails instead."""
        return await self.wait_until("running", timeout=timeout)

    async def update_egress_policy(self, policy: Any) -> RuntimeInfo:
        """The official 0.1.1 name of ``egress.set_policy(policy)``."""
        return await self.egress.set_policy(policy)

    async def update_resources(self, resources: Any) -> RuntimeInfo:
        """PATCHes ``resources`` (``{"requests": {"vcpus", "memory_mib"}, "limits":
        {"memory_mib"}}`` or an official-client model); applied live."""
        body = {"resources": O.as_json(resources)}
        return self._set(await self._client._run(F.update(self.id, body)))

    async def restore(
        self,
        checkpoint_id: Union[str, CheckpointBase],
        *,
        name: Optional[str] = None,
        **options: Any,
    ) -> AsyncRuntime:
        """A new runtime from ``checkpoint_id``, named ``name`` (default: this
        runtime's name, so delete this one first or pass a name)."""
        return await self._client.runtimes.create(
            name or self.name, checkpoint_id=checkpoint_id, **options
        )

    # -- exec ----------------------------------------------------------------

    async def exec(
        self,
        cmd: F.Command,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Optional[Union[str, bytes]] = None,
        timeout: Optional[float] = None,
        max_output_bytes: Optional[int] = None,
    ) -> ExecResult:
        """Runs a command and returns its output. A ``str`` runs through ``/bin/sh -c``;
        a list is the argv. ``timeout`` (seconds, default 60) kills the command's
        process group and sets ``timed_out``."""
        body = F.exec_body(
            cmd, cwd=cwd, env=env, stdin=stdin, timeout=timeout, max_output_bytes=max_output_bytes
        )
        return await self._client._run(F.exec_call(self.id, body))

    def exec_detached(
        self,
        cmd: F.Command,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Optional[Union[str, bytes]] = None,
        timeout: Optional[float] = None,
        max_output_bytes: Optional[int] = None,
    ) -> AsyncExecTask:
        """Starts a command in the background; ``task.wait()`` returns its result."""
        body = F.exec_body(
            cmd, cwd=cwd, env=env, stdin=stdin, timeout=timeout, max_output_bytes=max_output_bytes
        )
        return AsyncExecTask(self._client._submit(F.exec_call(self.id, body)))

    def session(
        self, *, cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None
    ) -> AsyncSession:
        """A client-side shell session that keeps ``cwd`` and env between commands."""
        return AsyncSession(self._client, self.id, F.SessionState(cwd=cwd, env=dict(env or {})))


class AsyncExecTask:
    """A command running in the background (see ``AsyncRuntime.exec_detached``).
    ``await task`` or ``await task.wait()`` returns its result."""

    def __init__(self, task: asyncio.Task[ExecResult]) -> None:
        self._task = task

    async def wait(self, timeout: Optional[float] = None) -> ExecResult:
        """Waits for the command (``asyncio.TimeoutError`` after ``timeout``; the
        command keeps running)."""
        return await asyncio.wait_for(asyncio.shield(self._task), timeout)

    def done(self) -> bool:
        return self._task.done()

    async def result(self, timeout: Optional[float] = None) -> ExecResult:
        return await self.wait(timeout)

    def __await__(self) -> Generator[Any, None, ExecResult]:
        return self._task.__await__()


class AsyncSession(SessionBase):
    """Commands that share a working directory and exported variables."""

    def __init__(self, client: AsyncRunta, runtime_id: str, state: F.SessionState) -> None:
        super().__init__(runtime_id, state)
        self._client = client

    async def exec(
        self,
        cmd: F.Command,
        *,
        env: Optional[Mapping[str, str]] = None,
        stdin: Optional[Union[str, bytes]] = None,
        timeout: Optional[float] = None,
        max_output_bytes: Optional[int] = None,
    ) -> ExecResult:
        """Runs ``cmd`` in the session's cwd with its env; ``cd`` and ``export``/``unset``
        carry over to the next command. ``env`` here applies to this command only."""
        flow = F.session_exec(
            self._runtime_id,
            self._state,
            cmd,
            env=env,
            stdin=stdin,
            timeout=timeout,
            max_output_bytes=max_output_bytes,
        )
        return await self._client._run(flow)


class AsyncFiles:
    """``runtime.files``: read and write files inside the runtime."""

    def __init__(self, client: AsyncRunta, runtime_id: str) -> None:
        self._client = client
        self._id = runtime_id

    async def write(
        self,
        path: str,
        data: Union[bytes, str],
        executable: bool = False,
        *,
        mode: Optional[int] = None,
    ) -> None:
        """Writes a whole file (atomically), creating parent folders. ``mode`` e.g.
        0o755; ``executable`` (the official client's flag) means 0o755."""
        if executable and mode is None:
            mode = 0o755
        await self._client._run(F.write_file(self._id, path, data, mode=mode))

    async def read(self, path: str, max_bytes: Optional[int] = None) -> bytes:
        """A file's bytes; with ``max_bytes``, at most its first ``max_bytes`` (the
        daemon serves the prefix). Files past the daemon's download limit are a 413."""
        return await self._client._run(F.read_file(self._id, path, max_bytes))

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return (await self.read(path)).decode(encoding)

    async def list(self, path: str) -> List[FileEntry]:
        """The entries of a remote folder."""
        return await self._client._run(F.list_dir(self._id, path))

    async def upload(self, local_path: Union[str, os.PathLike[str]], remote_path: str) -> int:
        """Copies a local file or folder (recursively) to ``remote_path``; returns the
        number of files written."""
        return await self._client._run(F.upload(self._id, local_path, remote_path))

    async def download(
        self,
        remote_path: str,
        local_path: Union[str, os.PathLike[str]],
        *,
        max_bytes: int = F.DEFAULT_MAX_DOWNLOAD_BYTES,
    ) -> int:
        """Copies a remote file or folder (recursively) to ``local_path``; returns the
        number of files written. The runtime is not trusted: entry names must be plain,
        links under ``local_path`` are never written through, set-id bits are dropped,
        and more than ``max_bytes`` (default 1 GiB) in total is refused before writing."""
        return await self._client._run(F.download(self._id, remote_path, local_path, max_bytes))


class AsyncEgress:
    """``runtime.egress`` (async): the runtime's outbound policy, changed live (docs/api.md,
    "Egress"). Hosts may be names, ``*.example.com``, addresses or CIDR blocks; a
    URL is cut to its host. Each change returns the refreshed record and updates
    the runtime's ``cached_info``."""

    def __init__(self, runtime: AsyncRuntime) -> None:
        self._runtime = runtime
        self._client = runtime._client

    async def _do(self, flow: Flow[RuntimeInfo]) -> RuntimeInfo:
        return self._runtime._set(await self._client._run(flow))

    async def get(self) -> EgressPolicy:
        """The policy in force now (fetched)."""
        return (await self._do(F.get(self._runtime.id))).egress_policy

    async def set_policy(
        self,
        policy: Any = None,
        *,
        mode: Optional[str] = None,
        allowed_hosts: Optional[E.HostsLike] = None,
        denied_hosts: Optional[E.HostsLike] = None,
    ) -> RuntimeInfo:
        """Replaces the whole policy: ``policy`` (an :class:`EgressPolicy`, either
        dict shape, or an official-client ``EgressPolicy``) or the keyword parts
        (``mode`` defaults to ``allowlist`` when ``allowed_hosts`` are given).
        New connections follow it at once; open ones it denies are cut."""
        body = E.policy_json(
            policy, mode=mode, allowed_hosts=allowed_hosts, denied_hosts=denied_hosts
        )
        return await self._do(E.set_policy(self._runtime.id, body))

    #: Short and official (0.1.1) names of :meth:`set_policy`.
    set = set_policy
    update_policy = set_policy

    async def allow(self, hosts: E.HostsLike) -> RuntimeInfo:
        """Adds hosts to the allowed list (taking them off the denied one). The
        mode is kept: in ``denylist`` mode allowed entries only open private
        addresses; :meth:`enable` makes the list the only way out."""
        return await self._do(E.modify(self._runtime.id, E.allowing(E.hosts_list(hosts))))

    async def deny(self, hosts: E.HostsLike) -> RuntimeInfo:
        """Adds hosts to the denied list (taking them off the allowed one)."""
        return await self._do(E.modify(self._runtime.id, E.denying(E.hosts_list(hosts))))

    async def remove(self, hosts: E.HostsLike) -> RuntimeInfo:
        """Takes hosts off both lists."""
        return await self._do(E.modify(self._runtime.id, E.removing(E.hosts_list(hosts))))

    async def enable(self) -> RuntimeInfo:
        """``allowlist`` mode: only the allowed hosts are reachable."""
        return await self._do(E.modify(self._runtime.id, E.with_mode("allowlist")))

    async def disable(self) -> RuntimeInfo:
        """``denylist`` mode: everything but the denied hosts is reachable."""
        return await self._do(E.modify(self._runtime.id, E.with_mode("denylist")))

    async def clear(self) -> RuntimeInfo:
        """Open: nothing filtered (``denylist``, both lists empty)."""
        return await self._do(E.set_policy(self._runtime.id, EgressPolicy().to_json()))

    async def list(self) -> List[str]:
        """The allowed hosts (the 0.1.1 client's ``egress.list()``)."""
        return list((await self.get()).allowed_hosts)

    async def audit(self, limit: int = 100, *, kind: Optional[str] = None) -> List[Audit]:
        """This runtime's newest egress decisions (the official ``egress.audit``)."""
        items, _ = await self._client._run(
            E.list_audits(runtime=self._runtime.id, kind=kind, limit=limit)
        )
        return items


class AsyncAudits:
    """``runta.audits`` (async): the egress gateway's decisions for the tenant's runtimes."""

    def __init__(self, client: AsyncRunta) -> None:
        self._client = client

    async def list(
        self,
        *,
        runtime: Union[str, RuntimeBase, None] = None,
        category: Optional[str] = None,
        kind: Optional[str] = None,
        limit: int = 100,
    ) -> List[Audit]:
        """The newest ``limit`` decisions (1-1000), newest first; of one runtime
        (id, name or handle) or all. DNS decisions only with ``kind="dns_query"``."""
        if limit <= 0:
            return []
        ref = runtime.id if isinstance(runtime, RuntimeBase) else runtime
        items, _ = await self._client._run(
            E.list_audits(runtime=ref, category=category, kind=kind, limit=limit)
        )
        return items

    async def list_page(
        self,
        *,
        runtime: Union[str, RuntimeBase, None] = None,
        category: Optional[str] = None,
        kind: Optional[str] = None,
        limit: Optional[int] = None,
        after: Optional[str] = None,
    ) -> Page[Audit]:
        """One page, newest first; pass ``page.next_cursor`` as ``after`` for older."""
        ref = runtime.id if isinstance(runtime, RuntimeBase) else runtime
        items, cursor = await self._client._run(
            E.list_audits(runtime=ref, category=category, kind=kind, limit=limit, after=after)
        )
        return Page(items, cursor)


class AsyncRuntimeAudits:
    """``runtime.audits``: the official client's per-runtime audit list."""

    def __init__(self, client: AsyncRunta, runtime_id: str) -> None:
        self._client = client
        self._runtime_id = runtime_id

    async def list(
        self, *, category: Optional[str] = None, kind: Optional[str] = None, limit: int = 100
    ) -> List[Audit]:
        return await self._client.audits.list(
            runtime=self._runtime_id, category=category, kind=kind, limit=limit
        )
