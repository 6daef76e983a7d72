"""Every SDK operation, written once as a flow (see ``_transport``).

Flows build requests, parse replies and hold the multi-step logic (waiting for a
status, walking folders for upload/download, session bookkeeping). The sync and
async clients only choose how to drive them.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import stat
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union
from urllib.parse import quote

from ._errors import (
    APITimeoutError,
    InvalidArgumentError,
    NotFoundError,
    RuntaError,
    RuntimeFailedError,
    WaitTimeoutError,
)
from ._models import CheckpointInfo, Event, ExecResult, FileEntry, PortLike, RuntimeInfo
from ._models import port_specs as port_specs
from ._transport import Call, Flow, Reply, Sleep

Command = Union[str, Sequence[str]]

#: Extra read time granted beyond an exec's own timeout.
EXEC_GRACE_SECS = 30.0
DEFAULT_WAIT_SECS = 300.0
MAX_OUTPUT_CAP = 64 * 1024 * 1024
DEFAULT_OUTPUT_CAP = 1024 * 1024
#: Room reserved in a session command's output for the state trailer.
SESSION_TRAILER_ROOM = 64 * 1024


# ----------------------------------------------------------------- paths ----


def runtime_path(id_or_name: str, suffix: str = "") -> str:
    if not isinstance(id_or_name, str) or id_or_name in ("", ".", "..") or "/" in id_or_name:
        raise InvalidArgumentError(
            f"id: {id_or_name!r} is not a runtime id or name", code="invalid_argument", field="id"
        )
    return f"/v1/runtimes/{quote(id_or_name, safe='')}{suffix}"


def checkpoint_path(id_or_name: str) -> str:
    if not isinstance(id_or_name, str) or id_or_name in ("", ".", "..") or "/" in id_or_name:
        raise InvalidArgumentError(
            f"id: {id_or_name!r} is not a checkpoint id or name",
            code="invalid_argument",
            field="id",
        )
    return f"/v1/checkpoints/{quote(id_or_name, safe='')}"


def checkpoint_ref(checkpoint: Any) -> str:
    """A checkpoint's id from a str (id or name), a checkpoint handle or a
    :class:`CheckpointInfo`."""
    if isinstance(checkpoint, str):
        return checkpoint
    ref = getattr(checkpoint, "id", None)
    if isinstance(ref, str):
        return ref
    raise TypeError(
        f"checkpoint_id: expected a checkpoint id, name or Checkpoint, not {checkpoint!r}"
    )


def remote_path(path: str, what: str = "path") -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidArgumentError(
            f"{what}: {path!r} must be an absolute path inside the runtime",
            code="invalid_argument",
            field=what,
        )
    return path


def _info(reply: Reply) -> RuntimeInfo:
    return RuntimeInfo.from_dict(reply.data())


# -------------------------------------------------------------- runtimes ----


def create_body(
    name: str,
    *,
    vcpus: Optional[float],
    memory_mib: Optional[int],
    image: Optional[str],
    env: Optional[Mapping[str, str]],
    labels: Optional[Mapping[str, str]],
    publish: Optional[Sequence[PortLike]],
    idle_timeout: Optional[int],
    disk_gib: Optional[int],
    memory_limit_mib: Optional[int],
    checkpoint: Optional[str] = None,
) -> Dict[str, Any]:
    requests: Dict[str, Any] = {}
    if vcpus is not None:
        requests["vcpus"] = vcpus
    if memory_mib is not None:
        requests["memory_mib"] = memory_mib
    if disk_gib is not None:
        requests["disk_gib"] = disk_gib
    resources: Dict[str, Any] = {"requests": requests}
    if memory_limit_mib is not None:
        resources["limits"] = {"memory_mib": memory_limit_mib}
    body: Dict[str, Any] = {"name": name, "resources": resources}
    if image is not None:
        body["image"] = image
    if env:
        body["env"] = dict(env)
    if labels:
        body["labels"] = dict(labels)
    if publish:
        body["publish"] = port_specs(publish)
    if idle_timeout is not None:
        body["idle_timeout_secs"] = idle_timeout
    if checkpoint is not None:
        body["checkpoint"] = checkpoint
    return body


def create(
    body: Dict[str, Any],
    *,
    wait: bool,
    timeout: Optional[float],
    idempotency_key: Optional[str],
) -> Flow[RuntimeInfo]:
    timeout = DEFAULT_WAIT_SECS if timeout is None else timeout
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
    call = Call(
        "POST",
        "/v1/runtimes",
        params=[("wait", "true" if wait else "false")],
        json=body,
        headers=headers,
        # A create is only sent twice when a key makes the repeat harmless.
        idempotent=idempotency_key is not None,
        timeout=timeout if wait else None,
    )
    try:
        reply = yield call
    except APITimeoutError as e:
        if not wait:
            raise
        raise WaitTimeoutError(
            f"runtime {body.get('name')!r} was not running after {timeout:g} s "
            "(it may still be starting; check it with runtimes.get())",
            code="deadline_exceeded",
        ) from e
    info = _info(reply)
    if wait and info.status != "running":
        info = yield from wait_for(info.id, ("running",), timeout=timeout, name=info.name)
    return info


def wait_for(
    id_or_name: str,
    statuses: Iterable[str],
    *,
    timeout: Optional[float] = None,
    name: Optional[str] = None,
    poll: float = 0.05,
) -> Flow[RuntimeInfo]:
    """Polls a runtime until its status is one of ``statuses``; raises
    :class:`RuntimeFailedError` if it lands in ``error``/``crashed`` (or vanishes)
    first and :class:`WaitTimeoutError` when ``timeout`` passes."""
    wanted = set(statuses)
    timeout = DEFAULT_WAIT_SECS if timeout is None else timeout
    deadline = time.monotonic() + timeout
    label = name or id_or_name
    while True:
        try:
            info = yield from get(id_or_name)
        except NotFoundError as e:
            raise RuntimeFailedError(
                f"runtime {label!r} disappeared while waiting for {sorted(wanted)} "
                "(a failed create removes the record)",
                code=e.code,
                status=e.status,
                request_id=e.request_id,
            ) from e
        if info.status in wanted:
            return info
        if info.failed:
            raise RuntimeFailedError(
                f"runtime {info.name!r} is {info.status}"
                + (f": {info.error}" if info.error else ""),
                runtime_error=info.error,
            )
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeoutError(
                f"runtime {label!r} is still {info.status} after {timeout:g} s "
                f"(waiting for {', '.join(sorted(wanted))})",
                code="deadline_exceeded",
            )
        yield Sleep(min(poll, left))
        poll = min(poll * 2, 1.0)


def get(id_or_name: str) -> Flow[RuntimeInfo]:
    reply = yield Call("GET", runtime_path(id_or_name), idempotent=True)
    return _info(reply)


def list_page(
    *,
    status: Optional[Union[str, Sequence[str]]] = None,
    labels: Optional[Mapping[str, str]] = None,
    limit: Optional[int] = None,
    after: Optional[str] = None,
) -> Flow[Tuple[List[RuntimeInfo], Optional[str]]]:
    params: List[Tuple[str, str]] = []
    if status:
        params.append(("status", status if isinstance(status, str) else ",".join(status)))
    for k, v in (labels or {}).items():
        params.append(("label", f"{k}={v}"))
    if limit is not None:
        params.append(("limit", str(limit)))
    if after is not None:
        params.append(("after", after))
    reply = yield Call("GET", "/v1/runtimes", params=params, idempotent=True)
    doc = reply.json()
    items = [RuntimeInfo.from_dict(d) for d in doc.get("data", [])]
    pag = doc.get("pagination") or {}
    cursor = pag.get("next_cursor") if pag.get("has_more") else None
    return items, (str(cursor) if cursor is not None else None)


def list_all(
    *,
    status: Optional[Union[str, Sequence[str]]] = None,
    labels: Optional[Mapping[str, str]] = None,
    page_size: int = 100,
) -> Flow[List[RuntimeInfo]]:
    out: List[RuntimeInfo] = []
    after: Optional[str] = None
    while True:
        items, after = yield from list_page(
            status=status, labels=labels, limit=page_size, after=after
        )
        out.extend(items)
        if after is None:
            return out


def action(id_or_name: str, verb: str) -> Flow[RuntimeInfo]:
    reply = yield Call("POST", runtime_path(id_or_name, "/" + verb), idempotent=True)
    return _info(reply)


def update(id_or_name: str, body: Dict[str, Any]) -> Flow[RuntimeInfo]:
    reply = yield Call("PATCH", runtime_path(id_or_name), json=body)
    return _info(reply)


def resize_body(vcpus: Optional[float], memory_mib: Optional[int]) -> Dict[str, Any]:
    requests: Dict[str, Any] = {}
    if vcpus is not None:
        requests["vcpus"] = vcpus
    if memory_mib is not None:
        requests["memory_mib"] = memory_mib
    if not requests:
        raise InvalidArgumentError(
            "resize: give vcpus and/or memory_mib", code="invalid_argument", field="resources"
        )
    return {"resources": {"requests": requests}}


def delete(id_or_name: str, *, missing_ok: bool = False) -> Flow[None]:
    try:
        yield Call("DELETE", runtime_path(id_or_name), idempotent=True)
    except NotFoundError:
        if not missing_ok:
            raise


def events(
    id_or_name: str, *, after: Optional[int] = None, limit: Optional[int] = None
) -> Flow[List[Event]]:
    out: List[Event] = []
    cursor = after
    while True:
        params: List[Tuple[str, str]] = []
        if cursor is not None:
            params.append(("after", str(cursor)))
        if limit is not None:
            params.append(("limit", str(limit)))
        reply = yield Call(
            "GET", runtime_path(id_or_name, "/events"), params=params, idempotent=True
        )
        doc = reply.json()
        out.extend(Event.from_dict(d) for d in doc.get("data", []))
        pag = doc.get("pagination") or {}
        if limit is not None or not pag.get("has_more") or pag.get("next_cursor") is None:
            return out
        cursor = int(pag["next_cursor"])


# ----------------------------------------------------------- checkpoints ----

#: Saving a checkpoint copies the runtime's files: allow for big ones.
CHECKPOINT_TIMEOUT_SECS = 600.0


def create_checkpoint(runtime: str, name: str) -> Flow[CheckpointInfo]:
    # Not retried: a repeat after a lost reply would be "already exists".
    reply = yield Call(
        "POST",
        runtime_path(runtime, "/checkpoints"),
        json={"name": name},
        timeout=CHECKPOINT_TIMEOUT_SECS,
    )
    return CheckpointInfo.from_dict(reply.data())


def get_checkpoint(id_or_name: str) -> Flow[CheckpointInfo]:
    reply = yield Call("GET", checkpoint_path(id_or_name), idempotent=True)
    return CheckpointInfo.from_dict(reply.data())


def list_checkpoints() -> Flow[List[CheckpointInfo]]:
    out: List[CheckpointInfo] = []
    params: List[Tuple[str, str]] = [("limit", "100")]
    while True:
        reply = yield Call("GET", "/v1/checkpoints", params=params, idempotent=True)
        doc = reply.json()
        out.extend(CheckpointInfo.from_dict(d) for d in doc.get("data", []))
        pag = doc.get("pagination") or {}
        if not pag.get("has_more") or pag.get("next_cursor") is None:
            return out
        params = [("limit", "100"), ("after", str(pag["next_cursor"]))]


def delete_checkpoint(id_or_name: str, *, missing_ok: bool = False) -> Flow[None]:
    try:
        yield Call(
            "DELETE",
            checkpoint_path(id_or_name),
            idempotent=True,
            timeout=CHECKPOINT_TIMEOUT_SECS,
        )
    except NotFoundError:
        if not missing_ok:
            raise


# ------------------------------------------------------------------ exec ----


def exec_body(
    cmd: Command,
    *,
    cwd: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    stdin: Optional[Union[str, bytes]] = None,
    timeout: Optional[float] = None,
    max_output_bytes: Optional[int] = None,
) -> Dict[str, Any]:
    body: Dict[str, Any]
    if isinstance(cmd, str):
        body = {"command": cmd}
    elif isinstance(cmd, (bytes, bytearray)):
        raise TypeError("exec: pass the command as str (shell) or a list of str (argv)")
    else:
        argv = [str(a) for a in cmd]
        if not argv:
            raise InvalidArgumentError(
                "command: the argv list is empty", code="invalid_argument", field="command"
            )
        body = {"command": argv[0], "args": argv[1:]}
    if cwd is not None:
        body["cwd"] = cwd
    if env:
        body["env"] = {str(k): str(v) for k, v in env.items()}
    if stdin is not None:
        body["stdin"] = stdin.decode("utf-8") if isinstance(stdin, bytes) else stdin
    if timeout is not None:
        # The API takes whole seconds; never round a short timeout down to 0.
        body["timeout_secs"] = max(1, math.ceil(timeout)) if timeout > 0 else timeout
    if max_output_bytes is not None:
        body["max_output_bytes"] = max_output_bytes
    return body


def exec_call(id_or_name: str, body: Dict[str, Any]) -> Flow[ExecResult]:
    t = body.get("timeout_secs")
    read = (float(t) if isinstance(t, (int, float)) and t > 0 else 60.0) + EXEC_GRACE_SECS
    # Never retried: a command may have side effects.
    reply = yield Call("POST", runtime_path(id_or_name, "/exec"), json=body, timeout=read)
    return ExecResult.from_dict(reply.data())


# --------------------------------------------------------------- session ----


_IGNORED_VARS = frozenset({"PWD", "OLDPWD", "SHLVL", "_"})


@dataclass
class SessionState:
    """Client-side state of a session: working directory and env changes."""

    cwd: Optional[str] = None
    env: Dict[str, str] = field(default_factory=dict)
    unset: Set[str] = field(default_factory=set)
    marker: str = field(default_factory=lambda: f"__RUNTA_SESSION_{uuid.uuid4().hex}__")


def session_script(state: SessionState, command: str) -> str:
    m = state.marker
    lines = []
    if state.unset:
        lines.append("unset " + " ".join(sorted(state.unset)) + " 2>/dev/null")
    lines.append("__runta_env0=$(export -p)")
    lines.append(
        "__runta_trailer() { __runta_rc=$?; "
        f"printf '\\n%s\\n' '{m}'; pwd; printf '%s\\n' '{m}'; "
        f"printf '%s\\n' \"$__runta_env0\"; printf '%s\\n' '{m}'; export -p; "
        "exit $__runta_rc; }"
    )
    lines.append("trap __runta_trailer EXIT")
    lines.append(command)
    return "\n".join(lines) + "\n"


def parse_exports(text: str) -> Dict[str, str]:
    """Parses ``export -p`` output (dash, busybox, bash in POSIX mode)."""
    out: Dict[str, str] = {}
    try:
        tokens = shlex.split(text, posix=True)
    except ValueError:
        return out
    for tok in tokens:
        if tok in ("export", "declare", "-x", "readonly"):
            continue
        name, eq, value = tok.partition("=")
        if eq and name.replace("_", "a").isalnum():
            out[name] = value
    return out


def session_exec(
    id_or_name: str,
    state: SessionState,
    cmd: Command,
    *,
    env: Optional[Mapping[str, str]] = None,
    stdin: Optional[Union[str, bytes]] = None,
    timeout: Optional[float] = None,
    max_output_bytes: Optional[int] = None,
) -> Flow[ExecResult]:
    command = cmd if isinstance(cmd, str) else shlex.join([str(a) for a in cmd])
    cap = DEFAULT_OUTPUT_CAP if max_output_bytes is None else max_output_bytes
    merged = dict(state.env)
    merged.update(env or {})
    body = exec_body(
        ["/bin/sh", "-c", session_script(state, command)],
        cwd=state.cwd,
        env=merged,
        stdin=stdin,
        timeout=timeout,
        max_output_bytes=min(cap + SESSION_TRAILER_ROOM, MAX_OUTPUT_CAP)
        if isinstance(cap, int) and cap > 0
        else cap,
    )
    raw = yield from exec_call(id_or_name, body)
    stdout, truncated = raw.stdout, raw.stdout_truncated
    sep = f"\n{state.marker}\n"
    head, found, tail = stdout.partition(sep)
    if found:
        stdout = head
        parts = tail.split(sep[1:], 2)
        if len(parts) == 3:
            cwd, before, after = parts[0].strip("\n"), parts[1], parts[2]
            if cwd.startswith("/"):
                state.cwd = cwd
            env0, env1 = parse_exports(before), parse_exports(after)
            for k, v in env1.items():
                if k not in _IGNORED_VARS and env0.get(k) != v:
                    state.env[k] = v
                    state.unset.discard(k)
            for k in env0.keys() - env1.keys():
                if k not in _IGNORED_VARS:
                    state.env.pop(k, None)
                    state.unset.add(k)
    if isinstance(cap, int) and cap >= 0:
        data = stdout.encode("utf-8")
        if len(data) > cap:
            stdout = data[:cap].decode("utf-8", "ignore")
            truncated = True
    return ExecResult(
        exit_code=raw.exit_code,
        stdout=stdout,
        stderr=raw.stderr,
        stdout_truncated=truncated,
        stderr_truncated=raw.stderr_truncated,
        duration_ms=raw.duration_ms,
        timed_out=raw.timed_out,
    )


# ----------------------------------------------------------------- files ----


def _mode_param(mode: Optional[int]) -> List[Tuple[str, str]]:
    if mode is None:
        return []
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise InvalidArgumentError(
            f"mode: {mode!r} is not a permission value such as 0o644",
            code="invalid_argument",
            field="mode",
        )
    return [("mode", f"{mode:04o}")]


def write_file(
    id_or_name: str,
    path: str,
    data: Union[bytes, str, None] = None,
    *,
    mode: Optional[int] = None,
    upload_from: Optional[str] = None,
) -> Flow[None]:
    content = data.encode("utf-8") if isinstance(data, str) else data
    if content is None and upload_from is None:
        content = b""
    yield Call(
        "PUT",
        runtime_path(id_or_name, "/files"),
        params=[("path", remote_path(path)), *_mode_param(mode)],
        content=content,
        upload_from=upload_from,
        headers={"Content-Type": "application/octet-stream"},
        idempotent=True,  # a PUT replaces the whole file atomically
        timeout=None if upload_from is None else 3600.0,
    )


def read_file(id_or_name: str, path: str, max_bytes: Optional[int] = None) -> Flow[bytes]:
    params = [("path", remote_path(path))]
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise InvalidArgumentError(
                "max_bytes: must be a whole number of bytes, 0 or more", field="max_bytes"
            )
        # The daemon serves the prefix: a 2 TiB file costs 16 bytes, not 2 TiB.
        params.append(("max_bytes", str(max_bytes)))
    reply = yield Call(
        "GET",
        runtime_path(id_or_name, "/files"),
        params=params,
        headers={"Accept": "application/octet-stream, application/json"},
        idempotent=True,
    )
    body: bytes = reply.body
    return body


def list_dir(id_or_name: str, path: str) -> Flow[List[FileEntry]]:
    reply = yield Call(
        "GET",
        runtime_path(id_or_name, "/files/list"),
        params=[("path", remote_path(path))],
        idempotent=True,
    )
    return [FileEntry.from_dict(d) for d in reply.data()]


def _join(remote: str, name: str) -> str:
    return remote.rstrip("/") + "/" + name if remote != "/" else "/" + name


def upload(id_or_name: str, local: Union[str, os.PathLike[str]], remote: str) -> Flow[int]:
    """Copies a local file or folder (recursively) to ``remote``; returns the number of
    files written. Folder contents land *in* ``remote`` (``remote`` is the copy)."""
    src = os.fspath(local)
    remote_path(remote, "remote_path")
    st = os.stat(src)
    if not stat.S_ISDIR(st.st_mode):
        yield from write_file(id_or_name, remote, mode=st.st_mode & 0o777, upload_from=src)
        return 1
    count = 0
    empty_dirs: List[str] = []
    for root, dirs, files in os.walk(src):
        dirs.sort()
        rel = os.path.relpath(root, src)
        rdir = remote if rel == "." else _join(remote, rel.replace(os.sep, "/"))
        regular = []
        for f in sorted(files):
            p = os.path.join(root, f)
            fst = os.stat(p)  # follows symlinks: their targets are copied
            if stat.S_ISREG(fst.st_mode):
                regular.append((p, f, fst.st_mode & 0o777))
        for p, f, mode in regular:
            yield from write_file(id_or_name, _join(rdir, f), mode=mode, upload_from=p)
            count += 1
        if not regular and not dirs:
            empty_dirs.append(rdir)
    if empty_dirs:
        result = yield from exec_call(
            id_or_name, exec_body(["mkdir", "-p", "--", *empty_dirs], timeout=60)
        )
        if result.exit_code != 0:
            raise RuntaError(f"upload: creating folders failed: {result.stderr.strip()}")
    return count


#: What a download writes locally at most, in total, unless ``max_bytes`` says otherwise.
DEFAULT_MAX_DOWNLOAD_BYTES = 1 << 30


def unsafe_entry_name(name: object) -> Optional[str]:
    """Why a name from a runtime's listing cannot be one local path component
    (``None`` when it can). Listings come from inside the runtime: hostile."""
    if not isinstance(name, str) or name == "":
        return "is empty"
    if name in (".", ".."):
        return "is a parent or self reference"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if "\x00" in name:
        return "contains a NUL byte"
    if len(name.encode("utf-8", "surrogateescape")) > 255:
        return "is longer than 255 bytes"
    return None


def _refuse(message: str) -> RuntaError:
    return RuntaError(message, code="invalid_argument")


def _too_much(what: str, size: int, limit: int) -> RuntaError:
    return RuntaError(
        f"download: {what} is {size} bytes, more than max_bytes ({limit}); nothing was written",
        code="resource_exhausted",
    )


def _real_dir(path: str) -> None:
    """``path`` as a folder, made if missing; a link (or anything else) there is refused."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path)
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise _refuse(
            f"download: {path} exists and is not a folder (a link or a file); "
            "refusing to write through it"
        )


def download(
    id_or_name: str,
    remote: str,
    local: Union[str, os.PathLike[str]],
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
) -> Flow[int]:
    """Copies a remote file or folder (recursively) to ``local``; returns the number of
    files written. Symlinks and special files inside folders are skipped. Names are
    checked, links already under ``local`` are never written through, modes keep only
    permission bits, and at most ``max_bytes`` are written (checked before writing)."""
    dst = os.fspath(local)
    remote_path(remote, "remote_path")
    budget = [max_bytes]
    try:
        entries = yield from list_dir(id_or_name, remote)
    except InvalidArgumentError:
        # Not a folder: a single file.
        yield from _download_file(id_or_name, remote, dst, None, budget)
        return 1
    plan: List[Tuple[str, str, str, int, int]] = []  # kind, remote, local, size, mode
    yield from _plan_dir(id_or_name, remote, dst, entries, plan)
    total = sum(size for kind, _, _, size, _ in plan if kind == "file")
    if total > max_bytes:
        raise _too_much(remote, total, max_bytes)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    _real_dir(dst)
    count = 0
    for kind, rsrc, ldst, _, mode in plan:
        if kind == "dir":
            _real_dir(ldst)
        else:
            yield from _download_file(id_or_name, rsrc, ldst, mode, budget)
            count += 1
    return count


def _download_file(
    id_or_name: str, remote: str, dst: str, mode: Optional[int], budget: List[int]
) -> Flow[None]:
    if mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    yield Call(
        "GET",
        runtime_path(id_or_name, "/files"),
        params=[("path", remote), ("max_bytes", str(max(0, budget[0])))],
        download_to=dst,
        download_limit=max(0, budget[0]),
        download_mode=mode & 0o777,
        idempotent=True,
        timeout=3600.0,
    )
    budget[0] -= os.lstat(dst).st_size


def _plan_dir(
    id_or_name: str,
    remote: str,
    dst: str,
    entries: List[FileEntry],
    plan: List[Tuple[str, str, str, int, int]],
) -> Flow[None]:
    seen: Set[str] = set()
    for e in sorted(entries, key=lambda e: str(e.name)):
        why = unsafe_entry_name(e.name)
        if why is not None:
            raise _refuse(f"download: {remote} lists an entry whose name {why}: {e.name!r}")
        if e.name in seen:
            raise _refuse(f"download: {remote} lists {e.name!r} twice")
        seen.add(e.name)
        rsrc = _join(remote, e.name)
        ldst = os.path.join(dst, e.name)
        if e.type == "file":
            plan.append(("file", rsrc, ldst, max(0, int(e.size)), int(e.mode)))
        elif e.type == "dir":
            plan.append(("dir", rsrc, ldst, 0, 0))
            sub = yield from list_dir(id_or_name, rsrc)
            yield from _plan_dir(id_or_name, rsrc, ldst, sub, plan)
