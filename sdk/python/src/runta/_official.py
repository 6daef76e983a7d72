"""The official ``runta-sdk`` client's argument spellings, folded into ours, so code
written for either client runs on this one (docs/python-sdk.md, "Official names")."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, Mapping, Optional, Sequence

#: The only checkpoint kind (the official client's default).
CHECKPOINT_KIND = "full"


def as_json(value: Any) -> Any:
    """A mapping as a dict; an official-client model (anything with ``to_json`` or
    ``to_dict``) as its JSON; anything else unchanged."""
    for attr in ("to_json", "to_dict"):
        f = getattr(value, attr, None)
        if callable(f):
            return f()
    if isinstance(value, Mapping):
        return {k: as_json(v) for k, v in value.items()}
    return value


def fold_create(
    body: Dict[str, Any],
    *,
    name: Optional[str],
    resources: Any,
    ingress_specs: Optional[Sequence[Any]],
    egress_policy: Any,
    idle_suspend_after_secs: Optional[int],
    runtime_agent: Optional[str],
) -> Dict[str, Any]:
    """Adds the official create fields to a body made by ``create_body``. The
    daemon takes both spellings (and refuses what it cannot honour, naming it)."""
    if name is None:
        body.pop("name", None)  # the daemon names it rt-…
    if resources is not None:
        body["resources"] = as_json(resources)
    if ingress_specs is not None:
        body["ingress_specs"] = [as_json(s) for s in ingress_specs]
    if egress_policy is not None:
        body["egress_policy"] = as_json(egress_policy)
    if idle_suspend_after_secs is not None:
        body["idle_suspend_after_secs"] = idle_suspend_after_secs
    if runtime_agent is not None:
        body["runtime_agent"] = runtime_agent
    return body


def checkpoint_name(first: Optional[str], name: Optional[str], kind: str, runtime_name: str) -> str:
    """``create(name)`` (ours) or ``create(kind, name)`` / ``create(name=…)``
    (official): the checkpoint's name; the official client's default when none."""
    if name is None and first is not None and first != CHECKPOINT_KIND:
        name = first
    elif first is not None and first != CHECKPOINT_KIND:
        kind = first
    if kind != CHECKPOINT_KIND:
        raise ValueError(f"checkpoint kind {kind!r}: only 'full' checkpoints exist")
    if name is None:
        import uuid

        name = f"{runtime_name}-{uuid.uuid4().hex[:8]}"
    return name


class Status(str):
    """A runtime's status as last seen (a ``str``: ``rt.status == "running"``),
    also callable like the official client's ``rt.status()``, which fetches it."""

    _fetch: Callable[[], str]

    def __new__(cls, value: str, fetch: Callable[[], str]) -> Status:
        s = super().__new__(cls, value)
        s._fetch = fetch
        return s

    def __call__(self) -> str:
        return self._fetch()


class AsyncStatus(str):
    """As :class:`Status`; ``await rt.status()`` fetches it."""

    _fetch: Callable[[], Awaitable[str]]

    def __new__(cls, value: str, fetch: Callable[[], Awaitable[str]]) -> AsyncStatus:
        s = super().__new__(cls, value)
        s._fetch = fetch
        return s

    def __call__(self) -> Awaitable[str]:
        return self._fetch()
