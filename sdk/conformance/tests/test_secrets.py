"""Secrets and their injection bindings (issue 18) through the official
client: 0.1.1's `secrets.create` and `secret-injection-rules`, 0.1.21's
`secrets.set` and `secret-stubs` / default stubs. Every answer parses with
the client's own models, and no answer carries a value."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
import runta
from conftest import NEW, Rest


def _value() -> str:
    return f"sk-conf-{uuid.uuid4().hex}"


def test_secret_crud_write_only(
    client: runta.Runta, rest: Rest, endpoint: str, token: str
) -> None:
    name = f"s-{uuid.uuid4().hex[:8]}"
    value = _value()
    if NEW:
        info = client.secrets.set(name, value, cache_ttl_secs=30)
        again = client.secrets.set(name, _value(), cache_ttl_secs=30)
        assert again.id == info.id, "set replaced under a new id"
    else:
        info = client.secrets.create(name, value, cache_ttl_secs=30)
    assert info.display_name == name and info.cache_ttl_secs == 30
    assert getattr(info, "value_preview", None) is None
    assert client.secrets.get(name).id == info.id
    assert client.secrets.get(info.id).display_name == name
    assert [s.id for s in client.secrets.list() if s.display_name == name] == [info.id]
    raw = httpx.get(
        f"{endpoint}/v1/secrets", headers={"Authorization": f"Bearer {token}"}
    )
    assert raw.status_code == 200 and value not in raw.text
    client.secrets.delete(name)
    assert rest.status_code(f"/v1/secrets/{info.id}") == 404
    with pytest.raises(runta.ApiError) as e:
        client.secrets.get(name)
    assert e.value.status_code == 404


def test_rules_and_stubs_in_the_clients_spelling(
    client: runta.Runta, rest: Rest, name: str, endpoint: str, token: str
) -> None:
    secret = f"k-{uuid.uuid4().hex[:8]}"
    value = _value()
    if NEW:
        client.secrets.set(secret, value)
    else:
        client.secrets.create(secret, value)
    rt = client.runtimes.create(name, memory_mib=128)
    try:
        if NEW:
            cfg = runta.SecretStubConfig(
                credential=secret, header="Authorization", value="Bearer ${credential}"
            )
            stub = rt.secrets.set_secret_stub(
                "https://api.openai.com/v1", "/v1/*", config=cfg
            )
            assert (
                stub.host_pattern == "api.openai.com" and stub.path_pattern == "/v1/*"
            )
            assert (
                stub.stub_value_display_name == secret
                and stub.runtime_display_name == name
            )
            assert json.loads(stub.stub_config_json) == {
                "headerName": "Authorization",
                "valueFormat": "Bearer ${credential}",
            }
            # "Store or replace": the same host, path and target once.
            rt.secrets.set_secret_stub("api.openai.com", "/v1/*", config=cfg)
            stubs = rt.secrets.list_secret_stubs()
            assert len(stubs) == 1, stubs
            assert rt.secrets.get_secret_stub(stubs[0].id).id == stubs[0].id
            assert [s.id for s in client.secrets.list_secret_stubs()] == [stubs[0].id]
            # Tenant defaults.
            d = client.secrets.set_default_secret_stub(
                "api.github.com", None, config={"credential": secret, "param": "token"}
            )
            assert d.stub_value_display_name == secret and d.path_pattern == "/*"
            assert [x.id for x in client.secrets.list_default_secret_stubs()] == [d.id]
            client.secrets.delete_default_secret_stub(d.id)
            assert client.secrets.list_default_secret_stubs() == []
            rt.secrets.delete_secret_stub(stubs[0].id)
            assert rt.secrets.list_secret_stubs() == []
            # The top-level delete.
            s2 = rt.secrets.set_secret_stub("x.example.com", None, config=cfg)
            client.secrets.delete_secret_stub(s2.id)
            assert (
                rest.http.get(f"/v1/runtimes/{name}/secret-stubs").json()["data"] == []
            )
        else:
            inj = runta.Injection(
                credential=secret, header="Authorization", value="Bearer ${credential}"
            )
            rule = rt.secrets.create_rule(
                "https://api.openai.com", "/v1/*", injection=inj
            )
            assert rule.host_pattern == "api.openai.com"
            assert (
                rule.credential_display_name == secret
                and rule.runtime_display_name == name
            )
            assert (
                json.loads(rule.injection_config_json)["valueFormat"]
                == "Bearer ${credential}"
            )
            assert [r.id for r in rt.secrets.list_rules()] == [rule.id]
            assert rt.secrets.get_rule(rule.id).id == rule.id
            assert [r.id for r in client.secrets.list_rules()] == [rule.id]
            p = rt.secrets.create_rule(
                "maps.example.com",
                None,
                injection={"credential": secret, "param": "key"},
            )
            assert json.loads(p.injection_config_json) == {
                "paramName": "key",
                "paramFormat": "${credential}",
            }
            rt.secrets.delete_rule(rule.id)
            client.secrets.delete_rule(p.id)
            assert rt.secrets.list_rules() == []
        # Nothing the daemon said carries the value.
        for path in (
            "/v1/secrets",
            "/v1/secret-stubs",
            "/v1/secret-injection-rules",
            "/v1/default-secret-stubs",
        ):
            r = rest.http.get(path)
            assert r.status_code == 200 and value not in r.text, path
    finally:
        rt.delete()
        client.secrets.delete(secret)


def test_another_tenant_sees_nothing(
    client: runta.Runta, endpoint: str, daemon: object
) -> None:
    secret = f"own-{uuid.uuid4().hex[:8]}"
    info = (
        client.secrets.set(secret, _value())
        if NEW
        else client.secrets.create(secret, _value())
    )
    try:
        other = daemon.new_token(f"conf-{uuid.uuid4().hex[:8]}")  # type: ignore[attr-defined]
        with runta.Runta(token=other, endpoint=endpoint, timeout=60) as c2:
            assert all(s.id != info.id for s in c2.secrets.list())
            with pytest.raises(runta.ApiError) as e:
                c2.secrets.get(info.id)
            assert e.value.status_code == 404
            r = httpx.delete(
                f"{endpoint}/v1/secrets/{info.id}",
                headers={"Authorization": f"Bearer {other}"},
            )
            assert r.status_code == 404
        assert client.secrets.get(info.id).display_name == secret
    finally:
        client.secrets.delete(secret)
