"""Egress policies and audits: the flows behind ``runtime.egress`` and
``runta.audits`` for both clients (docs/python-sdk.md, "Egress").

Every change reads the runtime's ``egress_policy``, changes it and PATCHes the
whole of it back, as the official client does: the daemon has one policy per
runtime and a PATCH replaces it (docs/api.md, "Egress")."""

from __future__ import annotations

from typing import Any, Callable, Iterable, List, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

from ._errors import InvalidArgumentError
from ._flows import _info, runtime_path
from ._models import EGRESS_MODES, Audit, EgressPolicy, RuntimeInfo
from ._official import as_json
from ._transport import Call, Flow

AUDIT_KINDS = ("tcp_connection", "http_request", "icmp_drop", "dns_query")

HostsLike = Union[str, Iterable[str]]


def host_of(value: str) -> str:
    """The host of an entry, as the official clients send it: a URL's scheme,
    port and path are stripped (``https://pypi.org/simple`` → ``pypi.org``);
    anything else goes to the daemon as given, which refuses a bad entry with a
    400 naming it."""
    if not isinstance(value, str):
        raise InvalidArgumentError(
            f"egress host {value!r} is not a string", code="invalid_argument", field="egress_policy"
        )
    v = value.strip()
    if "://" in v:
        try:
            host = urlsplit(v).hostname
        except ValueError:
            host = None
        if host:
            return host.rstrip(".").lower()
    return v


def hosts_list(hosts: HostsLike) -> List[str]:
    """One host or several, scheme and path stripped, order kept, duplicates dropped."""
    items = [hosts] if isinstance(hosts, str) else list(hosts)
    out: List[str] = []
    for h in items:
        e = host_of(h)
        if e not in out:
            out.append(e)
    return out


def check_mode(mode: str) -> str:
    m = str(getattr(mode, "value", mode))
    if m not in EGRESS_MODES:
        raise InvalidArgumentError(
            f"egress mode {m!r}: use 'allowlist' or 'denylist'",
            code="invalid_argument",
            field="egress_policy.mode",
        )
    return m


def policy_json(
    policy: Any = None,
    *,
    mode: Optional[str] = None,
    allowed_hosts: Optional[HostsLike] = None,
    denied_hosts: Optional[HostsLike] = None,
) -> Any:
    """The ``egress_policy`` body: ``policy`` (an :class:`EgressPolicy`, a mapping
    in either shape or an official-client model) or the keyword parts; a mode
    left out is ``allowlist`` when ``allowed_hosts`` are given."""
    if policy is not None:
        body = as_json(policy)
        if not isinstance(body, Mapping):
            raise InvalidArgumentError(
                f"egress_policy {policy!r} is not a policy",
                code="invalid_argument",
                field="egress_policy",
            )
        out = dict(body)
        for key in ("allowed_hosts", "denied_hosts"):
            if out.get(key) is not None:
                out[key] = hosts_list(out[key])
        if out.get("mode") is not None:
            out["mode"] = check_mode(out["mode"])
        return out
    allowed = hosts_list(allowed_hosts) if allowed_hosts is not None else []
    denied = hosts_list(denied_hosts) if denied_hosts is not None else []
    if mode is None:
        mode = "allowlist" if allowed else "denylist"
    return {"mode": check_mode(mode), "allowed_hosts": allowed, "denied_hosts": denied}


def set_policy(runtime_id: str, body: Any) -> Flow[RuntimeInfo]:
    reply = yield Call("PATCH", runtime_path(runtime_id), json={"egress_policy": body})
    return _info(reply)


def get_policy(runtime_id: str) -> Flow[EgressPolicy]:
    reply = yield Call("GET", runtime_path(runtime_id), idempotent=True)
    return _info(reply).egress_policy


def modify(runtime_id: str, change: Callable[[EgressPolicy], EgressPolicy]) -> Flow[RuntimeInfo]:
    """Reads the policy, applies ``change``, sends the whole result back."""
    reply = yield Call("GET", runtime_path(runtime_id), idempotent=True)
    new = change(_info(reply).egress_policy)
    reply = yield Call("PATCH", runtime_path(runtime_id), json={"egress_policy": new.to_json()})
    return _info(reply)


def create_policy(
    policy: Any, allowed_hosts: Optional[HostsLike], denied_hosts: Optional[HostsLike]
) -> Any:
    """``egress_policy`` of a create: the policy given, or one made of the host
    lists, or ``None`` (open)."""
    if allowed_hosts is None and denied_hosts is None:
        return None if policy is None else policy_json(policy)
    if policy is not None:
        raise InvalidArgumentError(
            "egress_policy: give egress_policy or allowed_hosts/denied_hosts, not both",
            code="invalid_argument",
            field="egress_policy",
        )
    return policy_json(allowed_hosts=allowed_hosts, denied_hosts=denied_hosts)


def _plus(items: Tuple[str, ...], add: List[str]) -> Tuple[str, ...]:
    return items + tuple(h for h in add if h not in items)


def allowing(hosts: List[str]) -> Callable[[EgressPolicy], EgressPolicy]:
    """Adds to the allowed list and takes them off the denied one; mode kept."""
    return lambda p: EgressPolicy(
        p.mode, _plus(p.allowed_hosts, hosts), tuple(h for h in p.denied_hosts if h not in hosts)
    )


def denying(hosts: List[str]) -> Callable[[EgressPolicy], EgressPolicy]:
    """Adds to the denied list and takes them off the allowed one; mode kept."""
    return lambda p: EgressPolicy(
        p.mode, tuple(h for h in p.allowed_hosts if h not in hosts), _plus(p.denied_hosts, hosts)
    )


def removing(hosts: List[str]) -> Callable[[EgressPolicy], EgressPolicy]:
    return lambda p: EgressPolicy(
        p.mode,
        tuple(h for h in p.allowed_hosts if h not in hosts),
        tuple(h for h in p.denied_hosts if h not in hosts),
    )


def with_mode(mode: str) -> Callable[[EgressPolicy], EgressPolicy]:
    return lambda p: EgressPolicy(mode, p.allowed_hosts, p.denied_hosts)


def list_audits(
    *,
    runtime: Optional[str] = None,
    category: Optional[str] = None,
    kind: Optional[str] = None,
    limit: Optional[int] = None,
    after: Optional[str] = None,
) -> Flow[Tuple[List[Audit], Optional[str]]]:
    """One page of ``GET /v1/audits``, newest first, and the next page's cursor."""
    params: List[Tuple[str, str]] = [
        ("category", str(getattr(category, "value", category or "egress")))
    ]
    if runtime:
        params.append(("runtime", runtime))
    if kind is not None:
        if kind not in AUDIT_KINDS:
            raise InvalidArgumentError(
                f"audit kind {kind!r}: use one of {', '.join(AUDIT_KINDS)}",
                code="invalid_argument",
                field="kind",
            )
        params.append(("kind", kind))
    if limit is not None:
        params.append(("limit", str(limit)))
    if after is not None:
        params.append(("after", after))
    reply = yield Call("GET", "/v1/audits", params=params, idempotent=True)
    doc = reply.json()
    items = [Audit.from_dict(d) for d in doc.get("data", [])]
    pag = doc.get("pagination") or {}
    cursor = pag.get("next_cursor") if pag.get("has_more") else None
    return items, (str(cursor) if cursor is not None else None)
