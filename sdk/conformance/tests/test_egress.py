"""Egress policies and audits (issue 17) through the official client: its own
policy objects on create and on the live update, read back in both spellings,
and (0.1.1, which has `client.audits`) the audit listing parsed by the client's
generated models."""

from __future__ import annotations

import httpx
import runta
from conftest import NEW, Rest
from runta._internal.openapi.models import Runtime as GenRuntime


def test_policy_round_trip_live_update_and_audits(
    client: runta.Runta, rest: Rest, name: str, endpoint: str, token: str
) -> None:
    if NEW:
        policy = runta.EgressPolicy(mode="allowlist", allowed_hosts=["example.com"])
    else:
        policy = runta.EgressPolicy(enabled=True, allowed_hosts=["example.com"])
    rt = client.runtimes.create(name, memory_mib=128, egress_policy=policy)
    try:
        raw = rest.runtime(name)
        GenRuntime.from_dict(raw)
        p = raw["egress_policy"]
        assert (p["mode"], p["enabled"], p["allowed_hosts"]) == ("allowlist", True, ["example.com"]), p
        # Denied: the metadata address (never reachable), audited.
        rt.exec("curl -s -m 3 http://169.254.169.254/ >/dev/null 2>&1; true")
        if not NEW:
            audits = client.audits.list(runtime=rt.id, category="egress", limit=50)
            assert audits, "no audit entries"
            assert all(a.runtime_id == rt.id for a in audits)
            kinds = [a.payload["egress"]["kind"] for a in audits]
            assert "tcp_connection" in kinds or "http_request" in kinds, kinds
            from runta._internal.openapi.models import ListAuditsResponse

            r = httpx.get(
                f"{endpoint}/v1/audits?category=egress&runtime={name}",
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 200, r.text
            ListAuditsResponse.from_dict(r.json())
            # runtime.egress: allow/remove/list/audit/disable/enable.
            rt.egress.allow(["pypi.org"])
            assert sorted(rt.egress.list()) == ["example.com", "pypi.org"]
            rt.egress.remove("example.com")
            assert rest.runtime(name)["egress_policy"]["allowed_hosts"] == ["pypi.org"]
            entries = rt.egress.audit(limit=10)
            assert entries and all(e.action in ("allow", "deny", "error") for e in entries)
            assert any(e.action == "deny" for e in entries)
            rt.egress.disable()
            assert rest.runtime(name)["egress_policy"]["enabled"] is False
            rt.egress.enable()
            assert rest.runtime(name)["egress_policy"]["mode"] == "allowlist"
        # Live change back to open, with the client's own call.
        if NEW:
            rt.egress.set_policy(runta.EgressPolicy(mode="denylist"))
        else:
            rt.update_egress_policy(runta.EgressPolicy())
        p = rest.runtime(name)["egress_policy"]
        assert (p["mode"], p["enabled"]) == ("denylist", False), p
    finally:
        rt.delete()
