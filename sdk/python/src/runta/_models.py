"""Typed views of the API's JSON objects."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

#: Statuses a runtime can be in (docs/api.md, "Runtimes").
STATUSES = (
    "creating",
    "running",
    "paused",
    "shutdown",
    "suspended",
    "deleting",
    "error",
    "crashed",
)

_FRACTION = re.compile(r"\.(\d+)")


def parse_time(value: Any) -> Optional[datetime]:
    """RFC 3339 → aware datetime (nanoseconds are cut to microseconds)."""
    if not isinstance(value, str) or not value:
        return None
    s = value.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    s = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], s, count=1)
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _str_map(value: Any) -> Dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _opt_int(value: Any) -> Optional[int]:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class ResourceRequests:
    vcpus: float
    memory_mib: int
    disk_gib: Optional[int] = None


@dataclass(frozen=True)
class ResourceUsage:
    memory_mib_used: float
    cpu_seconds: float


@dataclass(frozen=True)
class Resources:
    requests: ResourceRequests
    limit_memory_mib: int
    current: Optional[ResourceUsage] = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Resources:
        req = d.get("requests") or {}
        lim = d.get("limits") or {}
        cur = d.get("current")
        return cls(
            requests=ResourceRequests(
                vcpus=float(req.get("vcpus") or 0.0),
                memory_mib=int(req.get("memory_mib") or 0),
                disk_gib=_opt_int(req.get("disk_gib")),
            ),
            limit_memory_mib=int(lim.get("memory_mib") or 0),
            current=ResourceUsage(
                memory_mib_used=float(cur.get("memory_mib_used") or 0.0),
                cpu_seconds=float(cur.get("cpu_seconds") or 0.0),
            )
            # Usage is null while the runtime is not up (the object itself stays,
            # since the official client needs `current.memory_mib`).
            if isinstance(cur, dict) and cur.get("memory_mib_used") is not None
            else None,
        )


@dataclass(frozen=True)
class PublishedPort:
    port: int
    protocol: str
    url: str


@dataclass(frozen=True)
class RuntimeInfo:
    """A snapshot of a runtime record as the daemon last reported it."""

    id: str
    name: str
    tenant: str
    status: str
    desired_status: str
    image: str
    resources: Resources
    env: Dict[str, str]
    labels: Dict[str, str]
    publish: List[PublishedPort]
    idle_timeout_secs: Optional[int]
    ip: Optional[str]
    created_at: Optional[datetime]
    updated_at: Optional[datetime]
    started_at: Optional[datetime]
    revision: int
    error: Optional[str]
    #: What the daemon lets a caller do now (``start``, ``stop``, ``pause``,
    #: ``resume``, ``delete``, ``update``, ``exec``, ``checkpoint``), from its
    #: state machine; ``None`` from a daemon that does not send the field.
    allowed_actions: Optional[Tuple[str, ...]] = None
    raw: Dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def failed(self) -> bool:
        """In ``error`` or ``crashed``: the daemon sets ``error`` exactly then."""
        return self.error is not None

    def can(self, action: str) -> Optional[bool]:
        """Whether ``action`` is possible now; ``None`` when the daemon did not say."""
        return None if self.allowed_actions is None else action in self.allowed_actions

    @property
    def egress_policy(self) -> EgressPolicy:
        """The outbound policy as the daemon reported it (open when it sent none)."""
        p = self.raw.get("egress_policy")
        return EgressPolicy.from_dict(p if isinstance(p, Mapping) else None)

    @property
    def vcpus(self) -> float:
        return self.resources.requests.vcpus

    @property
    def memory_mib(self) -> int:
        return self.resources.requests.memory_mib

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RuntimeInfo:
        return cls(
            id=str(d["id"]),
            name=str(d["name"]),
            tenant=str(d.get("tenant", "")),
            status=str(d.get("status", "")),
            desired_status=str(d.get("desired_status", "")),
            image=str(d.get("image", "")),
            resources=Resources.from_dict(d.get("resources") or {}),
            env=_str_map(d.get("env")),
            labels=_str_map(d.get("labels")),
            publish=[
                PublishedPort(
                    port=int(p.get("port", 0)),
                    protocol=str(p.get("protocol", "")),
                    url=str(p.get("url", "")),
                )
                for p in (d.get("publish") or [])
                if isinstance(p, dict)
            ],
            idle_timeout_secs=_opt_int(d.get("idle_timeout_secs")),
            ip=d.get("ip") if isinstance(d.get("ip"), str) else None,
            created_at=parse_time(d.get("created_at")),
            updated_at=parse_time(d.get("updated_at")),
            started_at=parse_time(d.get("started_at")),
            revision=int(d.get("revision") or 0),
            error=d.get("error") if isinstance(d.get("error"), str) else None,
            allowed_actions=(
                tuple(str(a) for a in d["allowed_actions"])
                if isinstance(d.get("allowed_actions"), list)
                else None
            ),
            raw=dict(d),
        )


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint record: a runtime's files saved under a name. New runtimes can
    start from it (``runtimes.create(name, checkpoint_id=...)``)."""

    id: str
    name: str
    tenant: str
    #: The runtime it was taken from (which may since have been deleted).
    source_runtime_id: str
    source_runtime_name: str
    image: str
    #: Bytes of its own layer (forks share it; they do not copy it).
    size_bytes: int
    created_at: Optional[datetime]
    raw: Dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CheckpointInfo:
        return cls(
            id=str(d["id"]),
            name=str(d["name"]),
            tenant=str(d.get("tenant", "")),
            source_runtime_id=str(d.get("source_runtime_id", "")),
            source_runtime_name=str(d.get("source_runtime_name", "")),
            image=str(d.get("image", "")),
            size_bytes=int(d.get("size_bytes") or 0),
            created_at=parse_time(d.get("created_at")),
            raw=dict(d),
        )


@dataclass(frozen=True)
class ExecResult:
    """The outcome of one buffered command."""

    exit_code: int
    stdout: str
    stderr: str
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_ms: int = 0
    timed_out: bool = False

    @property
    def stdout_text(self) -> str:
        """stdout as text (the daemon decodes it as UTF-8, lossy)."""
        return self.stdout

    @property
    def stderr_text(self) -> str:
        return self.stderr

    @property
    def ok(self) -> bool:
        """True when the command exited 0 and did not time out."""
        return self.exit_code == 0 and not self.timed_out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExecResult:
        return cls(
            exit_code=int(d.get("exit_code", -1)),
            stdout=str(d.get("stdout") or ""),
            stderr=str(d.get("stderr") or ""),
            stdout_truncated=bool(d.get("stdout_truncated", False)),
            stderr_truncated=bool(d.get("stderr_truncated", False)),
            duration_ms=int(d.get("duration_ms") or 0),
            timed_out=bool(d.get("timed_out", False)),
        )


@dataclass(frozen=True)
class FileEntry:
    """One entry of a remote folder listing."""

    name: str
    type: str  # "file", "dir", "symlink" or "other"
    size: int
    mode: int

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    @property
    def is_file(self) -> bool:
        return self.type == "file"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FileEntry:
        return cls(
            name=str(d.get("name", "")),
            type=str(d.get("type", "other")),
            size=int(d.get("size") or 0),
            mode=int(d.get("mode") or 0),
        )


@dataclass(frozen=True)
class Event:
    """A lifecycle event of a runtime (``created``, ``started``, ``paused``, …)."""

    id: int
    runtime_id: str
    type: str
    message: Optional[str]
    created_at: Optional[datetime]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Event:
        return cls(
            id=int(d.get("id") or 0),
            runtime_id=str(d.get("runtime_id", "")),
            type=str(d.get("type", "")),
            message=d.get("message") if isinstance(d.get("message"), str) else None,
            created_at=parse_time(d.get("created_at")),
        )


@dataclass(frozen=True)
class Port:
    """A port to publish: ``Port(8080)``, ``Port(8080, "http")``."""

    port: int
    protocol: str = "https"


#: What ``publish=`` accepts per entry: ``8080``, ``"8080/http"``, ``Port(8080)`` or
#: ``{"port": 8080, "protocol": "https"}``.
PortLike = Union[int, str, Port, Mapping[str, Any]]


def port_spec(p: PortLike) -> Dict[str, Any]:
    if isinstance(p, bool):
        raise TypeError("publish entries are ports, not booleans")
    if isinstance(p, int):
        return {"port": p, "protocol": "https"}
    if isinstance(p, Port):
        return {"port": p.port, "protocol": p.protocol}
    if isinstance(p, str):
        num, _, proto = p.partition("/")
        try:
            port = int(num)
        except ValueError:
            raise ValueError(f"publish: {p!r} is not PORT or PORT/PROTOCOL") from None
        return {"port": port, "protocol": proto or "https"}
    if isinstance(p, Mapping):
        return dict(p)
    raise TypeError(f"publish: unsupported entry {p!r}")


def port_specs(publish: Optional[Sequence[PortLike]]) -> List[Dict[str, Any]]:
    return [port_spec(p) for p in (publish or [])]


# ---------------------------------------------------------------- egress ----

#: The two policy modes (the official client's ``EgressMode`` values).
EGRESS_MODES = ("allowlist", "denylist")


@dataclass(frozen=True)
class EgressPolicy:
    """A runtime's outbound policy (docs/api.md, "Egress"). ``allowlist``: only
    ``allowed_hosts`` are reachable; ``denylist``: everything but ``denied_hosts``.
    Entries: host names, ``*.example.com`` (subdomains only), addresses, CIDR blocks.
    The default is open (``denylist`` with nothing denied)."""

    mode: str = "denylist"
    allowed_hosts: Tuple[str, ...] = ()
    denied_hosts: Tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        """The 0.1.1 client's spelling: an allowlist is in force."""
        return self.mode == "allowlist"

    @property
    def is_open(self) -> bool:
        """Nothing is filtered."""
        return self.mode == "denylist" and not self.denied_hosts

    def to_json(self) -> Dict[str, Any]:
        return {
            "mode": self.mode,
            "allowed_hosts": list(self.allowed_hosts),
            "denied_hosts": list(self.denied_hosts),
        }

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]]) -> EgressPolicy:
        """Either shape the daemon or a caller uses: ``{mode, …}`` or ``{enabled, …}``."""
        if not d:
            return cls()
        mode = d.get("mode")
        if mode is None:
            mode = "allowlist" if d.get("enabled") else "denylist"
        return cls(
            mode=str(mode),
            allowed_hosts=tuple(str(h) for h in d.get("allowed_hosts") or ()),
            denied_hosts=tuple(str(h) for h in d.get("denied_hosts") or ()),
        )


@dataclass(frozen=True)
class Audit:
    """One decision of the egress gateway (``GET /v1/audits``). ``kind`` is
    ``tcp_connection``, ``http_request``, ``icmp_drop`` or ``dns_query``; ``detail``
    is that kind's object (``host``, ``dst_addr``, ``action``, ``reason``, …)."""

    id: str
    category: str
    observed_unix_ms: int
    runtime_id: str
    kind: str
    detail: Dict[str, Any]
    payload: Dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def action(self) -> str:
        """``allow``, ``deny`` or ``error``."""
        return str(self.detail.get("action", ""))

    @property
    def host(self) -> str:
        """The name asked for (``name`` for DNS), or ``""``."""
        return str(self.detail.get("host", self.detail.get("name", "")))

    @property
    def dst_addr(self) -> str:
        return str(self.detail.get("dst_addr", ""))

    @property
    def reason(self) -> str:
        return str(self.detail.get("reason", ""))

    @property
    def observed_at(self) -> datetime:
        return datetime.fromtimestamp(self.observed_unix_ms / 1000, tz=timezone.utc)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Audit:
        payload = dict(d.get("payload") or {})
        egress = payload.get("egress") or {}
        kind = str(egress.get("kind", ""))
        detail = egress.get(kind)
        return cls(
            id=str(d["id"]),
            category=str(d.get("category", "")),
            observed_unix_ms=int(d.get("observed_unix_ms") or 0),
            runtime_id=str(d.get("runtime_id", "")),
            kind=kind,
            detail=dict(detail) if isinstance(detail, Mapping) else {},
            payload=payload,
        )
