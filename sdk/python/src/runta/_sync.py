"""The synchronous client. Every method drives a shared flow from ``_flows``."""

from __future__ import annotations

import concurrent.futures
import os
import threading
from types import TracebackType
from typing import Any, Dict, List, Mapping, Optional, Sequence, Type, Union

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
from ._transport import Call, Flow, RetryPolicy, SyncTransport, T, client_settings

__all__ = [
    "Audits",
    "Checkpoint",
    "Checkpoints",
    "Egress",
    "ExecTask",
    "Files",
    "Runta",
    "Runtime",
    "RuntimeAudits",
    "RuntimeCheckpoints",
    "Runtimes",
    "Session",
]


class Runta:
    """Client of a Runta daemon.

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
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        self.endpoint, headers = client_settings(token, endpoint)
        self._http = httpx.Client(
            base_url=self.endpoint, headers=headers, timeout=timeout, transport=transport
        )
        self._transport = SyncTransport(self._http, timeout, RetryPolicy(max_retries=max_retries))
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._pool_lock = threading.Lock()
        self.runtimes = Runtimes(self)
        self.checkpoints = Checkpoints(self)
        self.audits = Audits(self)

    def _run(self, flow: Flow[T]) -> T:
        return self._transport.run(flow)

    def _submit(self, flow: Flow[ExecResult]) -> concurrent.futures.Future[ExecResult]:
        with self._pool_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=32, thread_name_prefix="runta-exec"
                )
            return self._pool.submit(self._run, flow)

    def health(self) -> Dict[str, Any]:
        """``GET /healthz``: the daemon's status, version and backend."""

        def flow() -> Flow[Dict[str, Any]]:
            reply = yield Call("GET", "/healthz", idempotent=True)
            return dict(reply.json())

        return self._run(flow())

    def close(self) -> None:
        """Closes connections; waits for detached execs still running."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._http.close()

    def __enter__(self) -> Runta:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()


class Runtimes:
    """``runta.runtimes``: create, find and list runtimes."""

    def __init__(self, client: Runta) -> None:
        self._client = client

    def create(
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
    ) -> Runtime:
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
        info = self._client._run(
            F.create(body, wait=wait, timeout=timeout, idempotency_key=idempotency_key)
        )
        return Runtime(self._client, info)

    def get(self, id_or_name: str) -> Runtime:
        """The runtime with this UUID or name (:class:`NotFoundError` otherwise)."""
        return Runtime(self._client, self._client._run(F.get(id_or_name)))

    def list(
        self,
        *,
        status: Optional[Union[str, Sequence[str]]] = None,
        labels: Optional[Mapping[str, str]] = None,
    ) -> List[Runtime]:
        """Every runtime of the tenant (all pages), optionally filtered by status
        (``"running"`` or ``["running", "paused"]``) and labels (all must match)."""
        infos = self._client._run(F.list_all(status=status, labels=labels))
        return [Runtime(self._client, i) for i in infos]

    def list_page(
        self,
        *,
        limit: Optional[int] = None,
        after: Optional[str] = None,
        status: Optional[Union[str, Sequence[str]]] = None,
        labels: Optional[Mapping[str, str]] = None,
    ) -> Page[Runtime]:
        """One page of runtimes; pass ``page.next_cursor`` as ``after`` for the next."""
        items, cursor = self._client._run(
            F.list_page(status=status, labels=labels, limit=limit, after=after)
        )
        return Page([Runtime(self._client, i) for i in items], cursor)

    def delete(self, id_or_name: str, *, missing_ok: bool = False) -> None:
        self._client._run(F.delete(id_or_name, missing_ok=missing_ok))


class Checkpoints:
    """``runta.checkpoints``: the tenant's checkpoints (saved runtime files)."""

    def __init__(self, client: Runta) -> None:
        self._client = client

    def create(self, runtime: Union[str, RuntimeBase], name: str) -> Checkpoint:
        """Saves the files of ``runtime`` (an id, a name or a handle; running, paused
        or suspended) as checkpoint ``name``. The runtime is frozen while its files
        are copied, then thawed (a paused one stays paused)."""
        ref = runtime.id if isinstance(runtime, RuntimeBase) else runtime
        info = self._client._run(F.create_checkpoint(ref, name))
        return Checkpoint(self._client, info)

    def get(self, id_or_name: str) -> Checkpoint:
        """The checkpoint with this UUID or name (:class:`NotFoundError` otherwise)."""
        return Checkpoint(self._client, self._client._run(F.get_checkpoint(id_or_name)))

    def wait_until_ready(
        self,
        id_or_name: str,
        *,
        timeout: Optional[float] = None,
        poll_interval: Optional[float] = None,
    ) -> Checkpoint:
        """The official client's wait: checkpoints here are ready once created."""
        return self.get(id_or_name)

    def list(self) -> List[Checkpoint]:
        """Every checkpoint of the tenant."""
        infos = self._client._run(F.list_checkpoints())
        return [Checkpoint(self._client, i) for i in infos]

    def delete(self, id_or_name: Union[str, CheckpointBase], *, missing_ok: bool = False) -> None:
        """Deletes a checkpoint and frees its space. Refused with
        :class:`FailedPreconditionError` while runtimes started from it (or
        checkpoints of those) exist."""
        self._client._run(F.delete_checkpoint(F.checkpoint_ref(id_or_name), missing_ok=missing_ok))


class RuntimeCheckpoints:
    """``runtime.checkpoints``: save this runtime's files; its checkpoints."""

    def __init__(self, client: Runta, runtime_id: str) -> None:
        self._client = client
        self._id = runtime_id

    def create(
        self,
        name_or_kind: Optional[str] = None,
        name: Optional[str] = None,
        *,
        kind: str = O.CHECKPOINT_KIND,
        wait: bool = True,
        timeout: Optional[float] = None,
        poll_interval: Optional[float] = None,
    ) -> Checkpoint:
        """Saves this runtime's files (it must be running, paused or suspended) as
        checkpoint ``name``. The runtime is frozen while its files are copied, then
        thawed (a paused one stays paused). The official spelling works too:
        ``create("full", name)``, ``create(name=…)`` or ``create()`` (named
        ``<runtime>-<8 hex>``); ``wait`` and friends are accepted (it is ready
        when this returns)."""
        if name_or_kind is None and name is None:
            runtime_name = (self._client._run(F.get(self._id))).name
        else:
            runtime_name = ""
        chosen = O.checkpoint_name(name_or_kind, name, kind, runtime_name)
        info = self._client._run(F.create_checkpoint(self._id, chosen))
        return Checkpoint(self._client, info)

    def list(self) -> List[Checkpoint]:
        """The checkpoints taken of this runtime."""
        infos = self._client._run(F.list_checkpoints())
        return [Checkpoint(self._client, i) for i in infos if i.source_runtime_id == self._id]


class Checkpoint(CheckpointBase):
    """A checkpoint: a runtime's files saved under a name. Start runtimes from it
    with ``runta.runtimes.create(name, checkpoint_id=checkpoint)``."""

    def __init__(self, client: Runta, info: CheckpointInfo) -> None:
        super().__init__(info)
        self._client = client

    def refresh(self) -> CheckpointInfo:
        """Fetches the record again (:class:`NotFoundError` once deleted)."""
        self._info = self._client._run(F.get_checkpoint(self.id))
        return self._info

    def delete(self, *, missing_ok: bool = False) -> None:
        """Deletes the checkpoint and frees its space (refused while in use)."""
        self._client._run(F.delete_checkpoint(self.id, missing_ok=missing_ok))


class Runtime(RuntimeBase):
    """A handle on one runtime. ``cached_info`` is the record as last seen."""

    def __init__(self, client: Runta, info: RuntimeInfo) -> None:
        super().__init__(info)
        self._client = client
        self.files = Files(client, info.id)
        self.checkpoints = RuntimeCheckpoints(client, info.id)
        self.egress = Egress(self)
        self.audits = RuntimeAudits(client, info.id)

    # -- record and lifecycle ------------------------------------------------

    def refresh(self) -> RuntimeInfo:
        """Fetches the record again and updates ``cached_info``."""
        return self._set(self._client._run(F.get(self.id)))

    def start(self) -> RuntimeInfo:
        """Boots a shut-down (or failed) runtime; a no-op if it runs."""
        return self._set(self._client._run(F.action(self.id, "start")))

    def stop(self) -> RuntimeInfo:
        """Shuts it down (SIGTERM, grace, SIGKILL), keeping its files."""
        return self._set(self._client._run(F.action(self.id, "stop")))

    def pause(self) -> RuntimeInfo:
        """Freezes every process."""
        return self._set(self._client._run(F.action(self.id, "pause")))

    def resume(
        self,
        *,
        wait: bool = True,
        timeout: Optional[float] = None,
        poll_interval: Optional[float] = None,
    ) -> RuntimeInfo:
        """Thaws a paused (or suspended) runtime; it runs when this returns (the
        official client's ``wait`` arguments are accepted)."""
        return self._set(self._client._run(F.action(self.id, "resume")))

    def delete(self, *, missing_ok: bool = False) -> None:
        """Kills its processes and removes its files and record."""
        self._client._run(F.delete(self.id, missing_ok=missing_ok))

    def resize(
        self, *, vcpus: Optional[float] = None, memory_mib: Optional[int] = None
    ) -> RuntimeInfo:
        """Changes CPU and/or memory, live where the backend can."""
        body = F.resize_body(vcpus, memory_mib)
        return self._set(self._client._run(F.update(self.id, body)))

    def resize_memory(self, memory_mib: int) -> RuntimeInfo:
        return self.resize(memory_mib=memory_mib)

    def update(
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
        return self._set(self._client._run(F.update(self.id, body)))

    def wait_until(self, *statuses: str, timeout: Optional[float] = None) -> RuntimeInfo:
        """Polls until the status is one of ``statuses`` (default ``running``)."""
        flow = F.wait_for(self.id, statuses or ("running",), timeout=timeout, name=self.name)
        return self._set(self._client._run(flow))

    def events(self, *, after: Optional[int] = None, limit: Optional[int] = None) -> List[Event]:
        """Lifecycle events, oldest first."""
        return self._client._run(F.events(self.id, after=after, limit=limit))

    # -- the official client's names -----------------------------------------

    @property
    def status(self) -> O.Status:
        """The status as last seen (``cached_info.status``, a ``str``); calling it,
        ``rt.status()``, fetches the current one as the official client does."""
        return O.Status(self._info.status, self._status_now)

    def _status_now(self) -> str:
        return (self.refresh()).status

    def heartbeat(self) -> str:
        """The official client's alias of ``status()``: fetches the status."""
        return (self.refresh()).status

    def refresh_info(self) -> RuntimeInfo:
        """The official name of :meth:`refresh`."""
        return self.refresh()

    def boot(
        self,
        *,
        wait: bool = True,
        timeout: Optional[float] = None,
        poll_interval: Optional[float] = None,
    ) -> RuntimeInfo:
        """The official name of :meth:`start` (it runs when this returns)."""
        info = self.start()
        if wait and info.status != "running":
            info = self.wait_until_ready(timeout=timeout)
        return info

    def shutdown(self) -> RuntimeInfo:
        """The official name of :meth:`stop`."""
        return self.stop()

    def wait_until_ready(
        self, *, timeout: Optional[float] = None, poll_interval: Optional[float] = None
    ) -> RuntimeInfo:
        """Polls until it runs; :class:`RuntimeFailedError` if it fails instead."""
        return self.wait_until("running", timeout=timeout)

    def update_egress_policy(self, policy: Any) -> RuntimeInfo:
        """The official 0.1.1 name of ``egress.set_policy(policy)``."""
        return self.egress.set_policy(policy)

    def update_resources(self, resources: Any) -> RuntimeInfo:
        """PATCHes ``resources`` (``{"requests": {"vcpus", "memory_mib"}, "limits":
        {"memory_mib"}}`` or an official-client model); applied live."""
        body = {"resources": O.as_json(resources)}
        return self._set(self._client._run(F.update(self.id, body)))

    def restore(
        self,
        checkpoint_id: Union[str, CheckpointBase],
        *,
        name: Optional[str] = None,
        **options: Any,
    ) -> Runtime:
        """A new runtime from ``checkpoint_id``, named ``name`` (default: this
        runtime's name, so delete this one first or pass a name)."""
        return self._client.runtimes.create(
            name or self.name, checkpoint_id=checkpoint_id, **options
        )

    # -- exec ----------------------------------------------------------------

    def exec(
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
        return self._client._run(F.exec_call(self.id, body))

    def exec_detached(
        self,
        cmd: F.Command,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Optional[Union[str, bytes]] = None,
        timeout: Optional[float] = None,
        max_output_bytes: Optional[int] = None,
    ) -> ExecTask:
        """Starts a command in the background; ``task.wait()`` returns its result."""
        body = F.exec_body(
            cmd, cwd=cwd, env=env, stdin=stdin, timeout=timeout, max_output_bytes=max_output_bytes
        )
        return ExecTask(self._client._submit(F.exec_call(self.id, body)))

    def session(
        self, *, cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None
    ) -> Session:
        """A client-side shell session that keeps ``cwd`` and env between commands."""
        return Session(self._client, self.id, F.SessionState(cwd=cwd, env=dict(env or {})))


class ExecTask:
    """A command running in the background (see ``Runtime.exec_detached``)."""

    def __init__(self, future: concurrent.futures.Future[ExecResult]) -> None:
        self._future = future

    def wait(self, timeout: Optional[float] = None) -> ExecResult:
        """Blocks until the command finishes (``TimeoutError`` after ``timeout``)."""
        return self._future.result(timeout)

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: Optional[float] = None) -> ExecResult:
        return self.wait(timeout)


class Session(SessionBase):
    """Commands that share a working directory and exported variables."""

    def __init__(self, client: Runta, runtime_id: str, state: F.SessionState) -> None:
        super().__init__(runtime_id, state)
        self._client = client

    def exec(
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
        return self._client._run(flow)


class Files:
    """``runtime.files``: read and write files inside the runtime."""

    def __init__(self, client: Runta, runtime_id: str) -> None:
        self._client = client
        self._id = runtime_id

    def write(
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
        self._client._run(F.write_file(self._id, path, data, mode=mode))

    def read(self, path: str, max_bytes: Optional[int] = None) -> bytes:
        """A file's bytes; with ``max_bytes``, at most its first ``max_bytes`` (the
        daemon serves the prefix). Files past the daemon's download limit are a 413."""
        return self._client._run(F.read_file(self._id, path, max_bytes))

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return self.read(path).decode(encoding)

    def list(self, path: str) -> List[FileEntry]:
        """The entries of a remote folder."""
        return self._client._run(F.list_dir(self._id, path))

    def upload(self, local_path: Union[str, os.PathLike[str]], remote_path: str) -> int:
        """Copies a local file or folder (recursively) to ``remote_path``; returns the
        number of files written."""
        return self._client._run(F.upload(self._id, local_path, remote_path))

    def download(
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
        return self._client._run(F.download(self._id, remote_path, local_path, max_bytes))


class Egress:
    """``runtime.egress``: the runtime's outbound policy, changed live (docs/api.md,
    "Egress"). Hosts may be names, ``*.example.com``, addresses or CIDR blocks; a
    URL is cut to its host. Each change returns the refreshed record and updates
    the runtime's ``cached_info``."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._client = runtime._client

    def _do(self, flow: Flow[RuntimeInfo]) -> RuntimeInfo:
        return self._runtime._set(self._client._run(flow))

    def get(self) -> EgressPolicy:
        """The policy in force now (fetched)."""
        return (self._do(F.get(self._runtime.id))).egress_policy

    def set_policy(
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
        return self._do(E.set_policy(self._runtime.id, body))

    #: Short and official (0.1.1) names of :meth:`set_policy`.
    set = set_policy
    update_policy = set_policy

    def allow(self, hosts: E.HostsLike) -> RuntimeInfo:
        """Adds hosts to the allowed list (taking them off the denied one). The
        mode is kept: in ``denylist`` mode allowed entries only open private
        addresses; :meth:`enable` makes the list the only way out."""
        return self._do(E.modify(self._runtime.id, E.allowing(E.hosts_list(hosts))))

    def deny(self, hosts: E.HostsLike) -> RuntimeInfo:
        """Adds hosts to the denied list (taking them off the allowed one)."""
        return self._do(E.modify(self._runtime.id, E.denying(E.hosts_list(hosts))))

    def remove(self, hosts: E.HostsLike) -> RuntimeInfo:
        """Takes hosts off both lists."""
        return self._do(E.modify(self._runtime.id, E.removing(E.hosts_list(hosts))))

    def enable(self) -> RuntimeInfo:
        """``allowlist`` mode: only the allowed hosts are reachable."""
        return self._do(E.modify(self._runtime.id, E.with_mode("allowlist")))

    def disable(self) -> RuntimeInfo:
        """``denylist`` mode: everything but the denied hosts is reachable."""
        return self._do(E.modify(self._runtime.id, E.with_mode("denylist")))

    def clear(self) -> RuntimeInfo:
        """Open: nothing filtered (``denylist``, both lists empty)."""
        return self._do(E.set_policy(self._runtime.id, EgressPolicy().to_json()))

    def list(self) -> List[str]:
        """The allowed hosts (the 0.1.1 client's ``egress.list()``)."""
        return list((self.get()).allowed_hosts)

    def audit(self, limit: int = 100, *, kind: Optional[str] = None) -> List[Audit]:
        """This runtime's newest egress decisions (the official ``egress.audit``)."""
        items, _ = self._client._run(
            E.list_audits(runtime=self._runtime.id, kind=kind, limit=limit)
        )
        return items


class Audits:
    """``runta.audits``: the egress gateway's decisions for the tenant's runtimes."""

    def __init__(self, client: Runta) -> None:
        self._client = client

    def list(
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
        items, _ = self._client._run(
            E.list_audits(runtime=ref, category=category, kind=kind, limit=limit)
        )
        return items

    def list_page(
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
        items, cursor = self._client._run(
            E.list_audits(runtime=ref, category=category, kind=kind, limit=limit, after=after)
        )
        return Page(items, cursor)


class RuntimeAudits:
    """``runtime.audits``: the official client's per-runtime audit list."""

    def __init__(self, client: Runta, runtime_id: str) -> None:
        self._client = client
        self._runtime_id = runtime_id

    def list(
        self, *, category: Optional[str] = None, kind: Optional[str] = None, limit: int = 100
    ) -> List[Audit]:
        return self._client.audits.list(
            runtime=self._runtime_id, category=category, kind=kind, limit=limit
        )
