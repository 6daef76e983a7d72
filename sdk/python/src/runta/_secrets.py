"""Secrets injected at egress: ``runta.secrets`` and ``runtime.secrets`` for
both clients (docs/python-sdk.md, "Secrets"; docs/api.md, "Secrets").

A value goes in (``create``, ``set``) and never comes back: every answer is
metadata. A rule (0.1.1 "secret injection rule", 0.1.21 "secret stub") binds a
secret to a host and path of a runtime, or (a tenant default) of every runtime;
the daemon's egress gateway then adds the header or query parameter to those
requests only. The runtime never holds the value."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, TypeVar, Union
from urllib.parse import quote, urlsplit

from ._errors import InvalidArgumentError
from ._flows import runtime_path
from ._official import as_json
from ._transport import Call, Flow, Reply

T = TypeVar("T")

CREDENTIAL = "${credential}"


def _ts(v: Any) -> Optional[datetime]:
    if not isinstance(v, str) or not v:
        return None
    return datetime.fromisoformat(v.replace("Z", "+00:00"))


@dataclass(frozen=True)
class SecretInfo:
    """A stored secret: never its value."""

    id: str
    name: str
    display_name: str
    cache_ttl_secs: int
    #: A placeholder (not secret) code in the runtime may hold where a key is
    #: expected; sent to a host with no rule for this secret, the request is blocked.
    stub: str
    created_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SecretInfo:
        return cls(
            id=str(d["id"]),
            name=str(d.get("name") or d.get("display_name")),
            display_name=str(d.get("display_name") or d.get("name")),
            cache_ttl_secs=int(d.get("cache_ttl_secs") or 0),
            stub=str(d.get("stub", "")),
            created_at=_ts(d.get("created_at")),
            updated_at=_ts(d.get("updated_at")),
        )


@dataclass(frozen=True)
class SecretRule:
    """A binding of a secret to a host (and path) of one runtime, or of every
    runtime of the tenant (``scope == "tenant_default"``). The official names
    are aliases: ``credential_display_name`` / ``stub_value_display_name`` (the
    secret's name), ``injection_config_json`` / ``stub_config_json``."""

    id: str
    scope: str
    secret_id: str
    secret_name: str
    host_pattern: str
    path_pattern: str
    injection: Dict[str, str]
    runtime_id: Optional[str] = None
    runtime_name: Optional[str] = None
    created_at: Optional[datetime] = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SecretRule:
        inj = d.get("injection")
        if not isinstance(inj, dict):
            import json

            inj = json.loads(d.get("injection_config_json") or d.get("stub_config_json") or "{}")
        return cls(
            id=str(d["id"]),
            scope=str(d.get("scope", "runtime")),
            secret_id=str(d.get("secret_id", "")),
            secret_name=str(d.get("credential_display_name") or d.get("stub_value_display_name")),
            host_pattern=str(d["host_pattern"]),
            path_pattern=str(d["path_pattern"]),
            injection={str(k): str(v) for k, v in inj.items()},
            runtime_id=d.get("runtime_id"),
            runtime_name=d.get("runtime_display_name"),
            created_at=_ts(d.get("created_at")),
        )

    @property
    def credential_display_name(self) -> str:
        return self.secret_name

    stub_value_display_name = credential_display_name

    @property
    def runtime_display_name(self) -> Optional[str]:
        return self.runtime_name

    @property
    def injection_config_json(self) -> str:
        import json

        return json.dumps(self.injection, separators=(",", ":"))

    stub_config_json = injection_config_json


@dataclass
class Injection:
    """Where a rule puts the secret: a ``header`` or a query ``param``, with
    ``value`` as the template (``${credential}`` is replaced by the secret;
    default ``${credential}`` alone). The official clients' ``Injection``
    (0.1.1) and ``SecretStubConfig`` (0.1.21)."""

    credential: str
    header: Optional[str] = None
    value: Optional[str] = None
    param: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    def to_config(self) -> Dict[str, str]:
        if self.header and self.param:
            raise InvalidArgumentError(
                "injection: give header or param, not both",
                code="invalid_argument",
                field="injection",
            )
        if self.header:
            return {"headerName": self.header, "valueFormat": self.value or CREDENTIAL}
        if self.param:
            return {"paramName": self.param, "paramFormat": self.value or CREDENTIAL}
        raise InvalidArgumentError(
            "injection: needs header or param", code="invalid_argument", field="injection"
        )


SecretStubConfig = Injection
InjectionLike = Union[Injection, Mapping[str, Any]]


def host_from_url(url: str) -> str:
    """``https://api.openai.com/v1`` → ``api.openai.com``; a bare host as given."""
    if not isinstance(url, str):
        raise InvalidArgumentError(
            f"host {url!r} is not a string", code="invalid_argument", field="host"
        )
    v = url.strip()
    if "://" in v:
        host = urlsplit(v).hostname
        if host:
            return host
    return v


def _injection(injection: Optional[InjectionLike]) -> Injection:
    if injection is None:
        raise InvalidArgumentError(
            "injection is required", code="invalid_argument", field="injection"
        )
    if isinstance(injection, Injection):
        return injection
    body = as_json(injection)
    if not isinstance(body, Mapping):
        raise InvalidArgumentError(
            f"injection {injection!r} is not an Injection",
            code="invalid_argument",
            field="injection",
        )
    known = {k: body[k] for k in ("credential", "header", "value", "param") if k in body}
    if "credential" not in known:
        raise InvalidArgumentError(
            "injection: needs credential (the secret's name)",
            code="invalid_argument",
            field="injection",
        )
    return Injection(**known)


def rule_body(url: str, path: Optional[str], injection: Optional[InjectionLike]) -> Dict[str, Any]:
    inj = _injection(injection)
    return {
        "host": host_from_url(url),
        "path": path,
        "secret": inj.credential,
        "injection": inj.to_config(),
    }


def _secret_path(id_or_name: str) -> str:
    if not isinstance(id_or_name, str) or id_or_name in ("", ".", "..") or "/" in id_or_name:
        raise InvalidArgumentError(
            f"secret: {id_or_name!r} is not a secret id or name",
            code="invalid_argument",
            field="secret",
        )
    return f"/v1/secrets/{quote(id_or_name, safe='')}"


def _id_path(prefix: str, id: str) -> str:
    if not isinstance(id, str) or not id or "/" in id or id in (".", ".."):
        raise InvalidArgumentError(
            f"id: {id!r} is not a rule id", code="invalid_argument", field="id"
        )
    return f"{prefix}/{quote(id, safe='')}"


def _secret(reply: Reply) -> SecretInfo:
    return SecretInfo.from_dict(reply.data())


def _rule(reply: Reply) -> SecretRule:
    return SecretRule.from_dict(reply.data())


def _rules(reply: Reply) -> List[SecretRule]:
    return [SecretRule.from_dict(d) for d in reply.data()]


def _ttl(body: Dict[str, Any], cache_ttl_secs: Optional[int]) -> Dict[str, Any]:
    if cache_ttl_secs is not None:
        body["cache_ttl_secs"] = int(cache_ttl_secs)
    return body


# ---------------------------------------------------------------- flows ----


def create_secret(name: str, value: str, cache_ttl_secs: Optional[int]) -> Flow[SecretInfo]:
    reply = yield Call(
        "POST", "/v1/secrets", json=_ttl({"name": name, "value": value}, cache_ttl_secs)
    )
    return _secret(reply)


def set_secret(id_or_name: str, value: str, cache_ttl_secs: Optional[int]) -> Flow[SecretInfo]:
    # PUT replaces the whole value: safe to repeat.
    reply = yield Call(
        "PUT",
        _secret_path(id_or_name),
        json=_ttl({"value": value}, cache_ttl_secs),
        idempotent=True,
    )
    return _secret(reply)


def get_secret(id_or_name: str) -> Flow[SecretInfo]:
    reply = yield Call("GET", _secret_path(id_or_name), idempotent=True)
    return _secret(reply)


def list_secrets() -> Flow[List[SecretInfo]]:
    reply = yield Call("GET", "/v1/secrets", idempotent=True)
    return [SecretInfo.from_dict(d) for d in reply.data()]


def delete_secret(id_or_name: str) -> Flow[None]:
    yield Call("DELETE", _secret_path(id_or_name), idempotent=True)
    return None


def call_rule(method: str, path: str, body: Any = None) -> Flow[SecretRule]:
    reply = yield Call(method, path, json=body, idempotent=method != "POST")
    return _rule(reply)


def call_rules(method: str, path: str, body: Any = None) -> Flow[List[SecretRule]]:
    reply = yield Call(method, path, json=body, idempotent=method != "POST")
    return _rules(reply)


def delete_path(path: str) -> Flow[None]:
    yield Call("DELETE", path, idempotent=True)
    return None


def _replace_body(delete_ids: Sequence[str], stubs: Sequence[Any]) -> Dict[str, Any]:
    out: List[Dict[str, Any]] = []
    for s in stubs:
        if isinstance(s, Mapping) and "host" in s:
            out.append(dict(s))
        else:
            url, path, config = s
            out.append(rule_body(url, path, config))
    return {"delete_ids": [str(i) for i in delete_ids], "stubs": out}


# ------------------------------------------------------------ handles ----

Runner = Callable[[Flow[Any]], Any]


class _SecretsBase:
    def __init__(self, client: Any) -> None:
        self._run: Runner = client._run


class Secrets(_SecretsBase):
    """``runta.secrets``: the tenant's secrets and default rules."""

    def create(self, name: str, value: str, *, cache_ttl_secs: Optional[int] = None) -> SecretInfo:
        """Stores a new secret (409 :class:`AlreadyExistsError` if the name is taken)."""
        result: SecretInfo = self._run(create_secret(name, value, cache_ttl_secs))
        return result

    def set(self, name: str, value: str, *, cache_ttl_secs: Optional[int] = None) -> SecretInfo:
        """Stores or replaces a secret (0.1.21). Rules use the new value at once."""
        result: SecretInfo = self._run(set_secret(name, value, cache_ttl_secs))
        return result

    def get(self, name: str) -> SecretInfo:
        result: SecretInfo = self._run(get_secret(name))
        return result

    def list(self) -> List[SecretInfo]:
        result: List[SecretInfo] = self._run(list_secrets())
        return result

    def delete(self, name: str) -> None:
        """Deletes the secret and every rule that injects it; no request is
        injected with it once this returns."""
        self._run(delete_secret(name))

    def list_rules(self) -> List[SecretRule]:
        """Every runtime's rules (0.1.1 ``list_rules``)."""
        result: List[SecretRule] = self._run(call_rules("GET", "/v1/secret-injection-rules"))
        return result

    list_secret_stubs = list_rules

    def delete_rule(self, id: str) -> None:
        self._run(delete_path(_id_path("/v1/secret-injection-rules", id)))

    delete_secret_stub = delete_rule

    def set_default_secret_stub(
        self, url: str, path: Optional[str] = None, config: Optional[InjectionLike] = None
    ) -> SecretRule:
        """A tenant default: applies to every runtime, now and later; replaces
        the default of the same host, path and target."""
        result: SecretRule = self._run(
            call_rule("PUT", "/v1/default-secret-stubs", rule_body(url, path, config))
        )
        return result

    def create_default_secret_stub(
        self, url: str, path: Optional[str] = None, config: Optional[InjectionLike] = None
    ) -> SecretRule:
        result: SecretRule = self._run(
            call_rule("POST", "/v1/default-secret-stubs", rule_body(url, path, config))
        )
        return result

    def list_default_secret_stubs(self) -> List[SecretRule]:
        result: List[SecretRule] = self._run(call_rules("GET", "/v1/default-secret-stubs"))
        return result

    def delete_default_secret_stub(self, id: str) -> None:
        self._run(delete_path(_id_path("/v1/default-secret-stubs", id)))


class RuntimeSecrets:
    """``runtime.secrets``: the runtime's own rules."""

    def __init__(self, client: Any, runtime_id: str) -> None:
        self._run: Runner = client._run
        self._id = runtime_id

    def _p(self, suffix: str) -> str:
        return runtime_path(self._id, suffix)

    def create_rule(
        self, url: str, path: Optional[str] = None, injection: Optional[InjectionLike] = None
    ) -> SecretRule:
        """Injects ``injection.credential`` into requests to ``url``'s host (and
        ``path``: ``/v1/*``, an exact path, or every path)."""
        result: SecretRule = self._run(
            call_rule("POST", self._p("/secret-injection-rules"), rule_body(url, path, injection))
        )
        return result

    def list_rules(self) -> List[SecretRule]:
        result: List[SecretRule] = self._run(call_rules("GET", self._p("/secret-injection-rules")))
        return result

    list_secret_stubs = list_rules

    def get_rule(self, id: str) -> SecretRule:
        result: SecretRule = self._run(
            call_rule("GET", _id_path(self._p("/secret-injection-rules"), id))
        )
        return result

    get_secret_stub = get_rule

    def delete_rule(self, id: str) -> None:
        self._run(delete_path(_id_path(self._p("/secret-injection-rules"), id)))

    delete_rules = delete_rule
    delete_secret_stub = delete_rule

    def set_secret_stub(
        self, url: str, path: Optional[str] = None, config: Optional[InjectionLike] = None
    ) -> SecretRule:
        """Stores or replaces (same host, path and target) a rule (0.1.21)."""
        result: SecretRule = self._run(
            call_rule("PUT", self._p("/secret-stubs"), rule_body(url, path, config))
        )
        return result

    def create_secret_stub(
        self, url: str, path: Optional[str] = None, config: Optional[InjectionLike] = None
    ) -> SecretRule:
        result: SecretRule = self._run(
            call_rule("POST", self._p("/secret-stubs"), rule_body(url, path, config))
        )
        return result

    def replace_secret_stubs(
        self, delete_ids: Sequence[str] = (), stubs: Sequence[Any] = ()
    ) -> List[SecretRule]:
        """In one transaction: removes ``delete_ids`` and adds ``stubs`` (each a
        ``(url, path, config)`` tuple or an API body); all or nothing."""
        result: List[SecretRule] = self._run(
            call_rules("PUT", self._p("/secret-stubs/replace"), _replace_body(delete_ids, stubs))
        )
        return result


class AsyncSecrets(_SecretsBase):
    """``runta.secrets`` of :class:`AsyncRunta`: the same methods, awaitable."""

    async def create(
        self, name: str, value: str, *, cache_ttl_secs: Optional[int] = None
    ) -> SecretInfo:
        result: SecretInfo = await self._run(create_secret(name, value, cache_ttl_secs))
        return result

    async def set(
        self, name: str, value: str, *, cache_ttl_secs: Optional[int] = None
    ) -> SecretInfo:
        result: SecretInfo = await self._run(set_secret(name, value, cache_ttl_secs))
        return result

    async def get(self, name: str) -> SecretInfo:
        result: SecretInfo = await self._run(get_secret(name))
        return result

    async def list(self) -> List[SecretInfo]:
        result: List[SecretInfo] = await self._run(list_secrets())
        return result

    async def delete(self, name: str) -> None:
        await self._run(delete_secret(name))

    async def list_rules(self) -> List[SecretRule]:
        result: List[SecretRule] = await self._run(call_rules("GET", "/v1/secret-injection-rules"))
        return result

    list_secret_stubs = list_rules

    async def delete_rule(self, id: str) -> None:
        await self._run(delete_path(_id_path("/v1/secret-injection-rules", id)))

    delete_secret_stub = delete_rule

    async def set_default_secret_stub(
        self, url: str, path: Optional[str] = None, config: Optional[InjectionLike] = None
    ) -> SecretRule:
        result: SecretRule = await self._run(
            call_rule("PUT", "/v1/default-secret-stubs", rule_body(url, path, config))
        )
        return result

    async def create_default_secret_stub(
        self, url: str, path: Optional[str] = None, config: Optional[InjectionLike] = None
    ) -> SecretRule:
        result: SecretRule = await self._run(
            call_rule("POST", "/v1/default-secret-stubs", rule_body(url, path, config))
        )
        return result

    async def list_default_secret_stubs(self) -> List[SecretRule]:
        result: List[SecretRule] = await self._run(call_rules("GET", "/v1/default-secret-stubs"))
        return result

    async def delete_default_secret_stub(self, id: str) -> None:
        await self._run(delete_path(_id_path("/v1/default-secret-stubs", id)))


class AsyncRuntimeSecrets:
    """``runtime.secrets`` of an :class:`AsyncRuntime`."""

    def __init__(self, client: Any, runtime_id: str) -> None:
        self._run: Callable[[Flow[Any]], Awaitable[Any]] = client._run
        self._id = runtime_id

    def _p(self, suffix: str) -> str:
        return runtime_path(self._id, suffix)

    async def create_rule(
        self, url: str, path: Optional[str] = None, injection: Optional[InjectionLike] = None
    ) -> SecretRule:
        result: SecretRule = await self._run(
            call_rule("POST", self._p("/secret-injection-rules"), rule_body(url, path, injection))
        )
        return result

    async def list_rules(self) -> List[SecretRule]:
        result: List[SecretRule] = await self._run(
            call_rules("GET", self._p("/secret-injection-rules"))
        )
        return result

    list_secret_stubs = list_rules

    async def get_rule(self, id: str) -> SecretRule:
        result: SecretRule = await self._run(
            call_rule("GET", _id_path(self._p("/secret-injection-rules"), id))
        )
        return result

    get_secret_stub = get_rule

    async def delete_rule(self, id: str) -> None:
        await self._run(delete_path(_id_path(self._p("/secret-injection-rules"), id)))

    delete_rules = delete_rule
    delete_secret_stub = delete_rule

    async def set_secret_stub(
        self, url: str, path: Optional[str] = None, config: Optional[InjectionLike] = None
    ) -> SecretRule:
        result: SecretRule = await self._run(
            call_rule("PUT", self._p("/secret-stubs"), rule_body(url, path, config))
        )
        return result

    async def create_secret_stub(
        self, url: str, path: Optional[str] = None, config: Optional[InjectionLike] = None
    ) -> SecretRule:
        result: SecretRule = await self._run(
            call_rule("POST", self._p("/secret-stubs"), rule_body(url, path, config))
        )
        return result

    async def replace_secret_stubs(
        self, delete_ids: Sequence[str] = (), stubs: Sequence[Any] = ()
    ) -> List[SecretRule]:
        result: List[SecretRule] = await self._run(
            call_rules("PUT", self._p("/secret-stubs/replace"), _replace_body(delete_ids, stubs))
        )
        return result
