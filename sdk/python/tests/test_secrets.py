"""Secrets through the SDK (sync and async): values in, never out; rules in
both official spellings on one model; another tenant sees nothing."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from conftest import unique

from runta import (
    AlreadyExistsError,
    AsyncRunta,
    Injection,
    InvalidArgumentError,
    NotFoundError,
    Runta,
    Runtime,
    SecretStubConfig,
)


def _value() -> str:
    return f"sk-py-{uuid.uuid4().hex}"


def test_secrets_are_write_only(client: Runta) -> None:
    name = unique("s")
    value = _value()
    info = client.secrets.create(name, value, cache_ttl_secs=10)
    assert info.name == name and info.display_name == name and info.cache_ttl_secs == 10
    assert info.stub.startswith("runta-stub-")
    assert value not in repr(info)
    with pytest.raises(AlreadyExistsError):
        client.secrets.create(name, value)
    replaced = client.secrets.set(name, _value())
    assert replaced.id == info.id
    assert client.secrets.get(name).id == info.id
    assert client.secrets.get(info.id).name == name
    assert name in [s.name for s in client.secrets.list()]
    with pytest.raises(InvalidArgumentError) as e:
        client.secrets.create(unique("s"), "a\r\nX-Evil: 1")
    assert e.value.field == "value"
    client.secrets.delete(name)
    with pytest.raises(NotFoundError):
        client.secrets.get(name)


def test_rules_both_spellings(client: Runta, rt: Runtime) -> None:
    secret = unique("k")
    client.secrets.create(secret, _value())
    try:
        rule = rt.secrets.create_rule(
            "https://api.openai.com/v1",
            "/v1/*",
            injection=Injection(
                credential=secret, header="Authorization", value="Bearer ${credential}"
            ),
        )
        assert rule.host_pattern == "api.openai.com" and rule.path_pattern == "/v1/*"
        assert rule.credential_display_name == secret == rule.stub_value_display_name
        assert rule.runtime_display_name == rt.name
        assert json.loads(rule.injection_config_json) == {
            "headerName": "Authorization",
            "valueFormat": "Bearer ${credential}",
        }
        assert [r.id for r in rt.secrets.list_rules()] == [rule.id]
        assert rt.secrets.get_secret_stub(rule.id).id == rule.id
        stub = rt.secrets.set_secret_stub(
            "maps.example.com", None, config=SecretStubConfig(credential=secret, param="key")
        )
        assert stub.injection == {"paramName": "key", "paramFormat": "${credential}"}
        assert stub.path_pattern == "/*"
        assert {r.id for r in client.secrets.list_rules()} == {rule.id, stub.id}
        with pytest.raises(InvalidArgumentError) as e:
            rt.secrets.create_rule(
                "a.example.com",
                None,
                injection={"credential": secret, "header": "X", "value": "no placeholder"},
            )
        assert e.value.field == "injection"
        with pytest.raises(NotFoundError):
            rt.secrets.create_rule(
                "a.example.com", None, injection=Injection(credential="nope", header="X")
            )
        # Replace: all or nothing.
        with pytest.raises(InvalidArgumentError):
            rt.secrets.replace_secret_stubs(
                [rule.id],
                [
                    ("ok.example.com", None, {"credential": secret, "header": "X"}),
                    ("bad host", None, {"credential": secret, "header": "X"}),
                ],
            )
        assert len(rt.secrets.list_secret_stubs()) == 2
        after = rt.secrets.replace_secret_stubs(
            [rule.id], [("ok.example.com", None, {"credential": secret, "header": "X"})]
        )
        assert sorted(r.host_pattern for r in after) == ["maps.example.com", "ok.example.com"]
        # Tenant defaults.
        d = client.secrets.set_default_secret_stub(
            "api.github.com", None, config={"credential": secret, "header": "Authorization"}
        )
        assert d.scope == "tenant_default" and d.runtime_display_name is None
        assert [x.id for x in client.secrets.list_default_secret_stubs()] == [d.id]
        client.secrets.delete_default_secret_stub(d.id)
        rt.secrets.delete_rule(stub.id)
        with pytest.raises(NotFoundError):
            rt.secrets.get_rule(stub.id)
    finally:
        client.secrets.delete(secret)
    assert rt.secrets.list_rules() == []


def test_another_tenant_sees_nothing(client: Runta, token_b: str, endpoint: str) -> None:
    name = unique("own")
    info = client.secrets.create(name, _value())
    try:
        with Runta(token=token_b, endpoint=endpoint) as b:
            assert all(s.id != info.id for s in b.secrets.list())
            with pytest.raises(NotFoundError):
                b.secrets.get(info.id)
            with pytest.raises(NotFoundError):
                b.secrets.delete(info.id)
    finally:
        client.secrets.delete(name)


def test_async_secrets(token: str, endpoint: str) -> None:
    async def go() -> None:
        async with AsyncRunta(token=token, endpoint=endpoint) as c:
            name = unique("as")
            info = await c.secrets.create(name, _value())
            assert (await c.secrets.get(name)).id == info.id
            again = await c.secrets.set(name, _value(), cache_ttl_secs=5)
            assert again.id == info.id and again.cache_ttl_secs == 5
            rt = await c.runtimes.create(unique("art"), memory_mib=128)
            try:
                r = await rt.secrets.create_rule(
                    "h.example.com", "/x", injection={"credential": name, "header": "X-K"}
                )
                assert [x.id for x in await rt.secrets.list_rules()] == [r.id]
                assert [x.id for x in await c.secrets.list_secret_stubs()] == [r.id]
                await rt.secrets.delete_rule(r.id)
                assert await rt.secrets.list_rules() == []
            finally:
                await rt.delete()
                await c.secrets.delete(name)

    asyncio.run(go())
