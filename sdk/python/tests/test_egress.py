"""Egress through the SDK: policies set on create and changed live, enforced for
programs inside a real runtime, and their audits. The outside hosts are HTTP
servers in a network namespace this module creates (198.18.62.2 = allowed.test,
198.18.62.3 = other.test, named in the daemon's ``--egress-hosts`` file);
nothing leaves the machine."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Callable, Iterator

import pytest
from conftest import Daemon, unique

from runta import (
    AsyncRunta,
    Audit,
    EgressPolicy,
    InvalidArgumentError,
    NotFoundError,
    Runta,
    Runtime,
)

NET = 62
ALLOWED_IP = f"198.18.{NET}.2"
OTHER_IP = f"198.18.{NET}.3"

SERVER = """
import http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello %s\\n" % self.connection.getsockname()[0]).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
S(("0.0.0.0", 80), H).serve_forever()
"""


def _sh(cmd: str) -> None:
    subprocess.run(["sh", "-c", cmd], check=True)


@pytest.fixture(scope="module")
def test_hosts(daemon: Daemon) -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("skipped: making a network namespace for the test hosts needs root")
    tag = str(os.getpid() % 10000)
    ns, veth, peer = f"egpy-{tag}", f"egpyh{tag}", f"egpyp{tag}"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", veth], capture_output=True, check=False)
    _sh(f"ip netns add {ns}")
    _sh(f"ip link add {veth} type veth peer name {peer} && ip link set {peer} netns {ns}")
    _sh(f"ip addr add 198.18.{NET}.1/24 dev {veth} && ip link set {veth} up")
    _sh(
        f"ip -n {ns} addr add {ALLOWED_IP}/24 dev {peer} && ip -n {ns} addr add {OTHER_IP}/24 "
        f"dev {peer} && ip -n {ns} link set {peer} up && ip -n {ns} link set lo up && "
        f"ip -n {ns} route add default via 198.18.{NET}.1"
    )
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", SERVER], stdout=subprocess.DEVNULL
    )
    daemon.egress_hosts.write_text(f"{ALLOWED_IP} allowed.test\n{OTHER_IP} other.test\n")
    try:
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["curl", "-sf", "-m", "1", f"http://{ALLOWED_IP}/"], capture_output=True
            ).returncode
            != 0
        ):
            assert time.monotonic() < deadline, "test server not up"
            time.sleep(0.1)
        yield
    finally:
        server.kill()
        server.wait()
        subprocess.run(["ip", "netns", "del", ns], check=False)
        subprocess.run(["ip", "link", "del", veth], capture_output=True, check=False)


IPS = {"allowed.test": ALLOWED_IP, "other.test": OTHER_IP}


def curl(rt: Runtime, url: str, extra: str = "") -> str:
    """``curl`` inside the runtime. A test host's name is pinned to its address
    (``--resolve``), so a denial comes from the gateway reading the Host, not
    only from its DNS (which answers NXDOMAIN for a denied name)."""
    host = url.split("/")[2]
    if host in IPS:
        extra += f" --resolve {host}:80:{IPS[host]}"
    r = rt.exec(f"curl -s -m 5 {extra} -w ' status=%{{http_code}}' {url}")
    return r.stdout + r.stderr


def reached(out: str, ip: str) -> bool:
    return f"hello {ip}" in out


def denied(out: str) -> bool:
    return "status=403" in out and "hello" not in out


def until(probe: Callable[[], str], want: Callable[[str], bool], secs: float = 15) -> str:
    """The daemon re-reads its hosts file every 2 s: retry a while."""
    deadline = time.monotonic() + secs
    while True:
        out = probe()
        if want(out) or time.monotonic() > deadline:
            return out
        time.sleep(0.3)


def wait_audit(client: Runta, rt: Runtime, pred: Callable[[Audit], bool]) -> Audit:
    deadline = time.monotonic() + 10
    while True:
        for a in client.audits.list(runtime=rt, limit=1000):
            if pred(a):
                return a
        assert time.monotonic() < deadline, "no such audit"
        time.sleep(0.3)


@pytest.mark.usefixtures("test_hosts")
def test_allowlist_on_create_live_changes_and_audits(client: Runta) -> None:
    rt = client.runtimes.create(
        unique("eg"), vcpus=0.5, memory_mib=256, allowed_hosts=["https://Allowed.TEST/simple"]
    )
    try:
        # The URL was cut to its host; the record answers both spellings.
        p = rt.cached_info.egress_policy
        assert p == EgressPolicy("allowlist", ("allowed.test",), ())
        assert p.enabled and rt.cached_info.raw["egress_policy"]["enabled"] is True
        assert rt.egress.get() == p
        assert rt.egress.list() == ["allowed.test"]

        out = until(lambda: curl(rt, "http://allowed.test/"), lambda o: reached(o, ALLOWED_IP))
        assert reached(out, ALLOWED_IP), out
        out = curl(rt, "http://other.test/")
        assert denied(out), out
        assert "other.test" in out, out  # the 403 names the host
        # The gateway's DNS does not know a denied name.
        r = rt.exec("getent hosts other.test; curl -s -m 5 http://other.test/")
        assert r.exit_code != 0 and OTHER_IP not in r.stdout, r
        # A program that ignores proxies and aims at the other address with the
        # allowed name reaches the allowed name's own resolution, never it.
        out = curl(rt, f"http://{OTHER_IP}/", "--noproxy '*' -H 'Host: allowed.test'")
        assert not reached(out, OTHER_IP), out

        a = wait_audit(client, rt, lambda a: a.action == "deny" and a.host == "other.test")
        assert a.category == "egress" and a.runtime_id == rt.id
        assert a.kind in ("http_request", "tcp_connection")
        assert a.reason, a
        assert any(x.action == "allow" and x.host == "allowed.test" for x in rt.egress.audit())
        dns = client.audits.list(runtime=rt, kind="dns_query")
        assert any(x.action == "deny" and x.host == "other.test" for x in dns), dns
        assert all(x.kind == "dns_query" for x in dns)
        assert all(x.runtime_id == rt.id for x in rt.audits.list(limit=5))
        # Pages: newest first, the cursor goes to older ones.
        page = client.audits.list_page(runtime=rt.name, limit=1)
        assert len(page.items) == 1
        if page.next_cursor:
            older = client.audits.list_page(runtime=rt.name, limit=1, after=page.next_cursor)
            assert older.items[0].observed_unix_ms <= page.items[0].observed_unix_ms

        # Live: allow, then remove again.
        info = rt.egress.allow("other.test")
        assert info.egress_policy.allowed_hosts == ("allowed.test", "other.test")
        assert rt.cached_info.egress_policy == info.egress_policy
        out = until(lambda: curl(rt, "http://other.test/"), lambda o: reached(o, OTHER_IP))
        assert reached(out, OTHER_IP), out
        rt.egress.remove(["other.test"])
        out = until(lambda: curl(rt, "http://other.test/"), denied)
        assert denied(out), out

        # A denylist: everything but the denied host; enable/disable keep the lists.
        rt.egress.set_policy(mode="denylist", denied_hosts=["other.test"])
        out = until(lambda: curl(rt, "http://allowed.test/"), lambda o: reached(o, ALLOWED_IP))
        assert reached(out, ALLOWED_IP), out
        assert denied(curl(rt, "http://other.test/"))
        assert rt.egress.deny("allowed.test").egress_policy.denied_hosts == (
            "other.test",
            "allowed.test",
        )
        assert rt.egress.enable().egress_policy.mode == "allowlist"
        assert rt.egress.disable().egress_policy.mode == "denylist"
        # The official 0.1.1 shape and spelling.
        rt.update_egress_policy({"enabled": True, "allowed_hosts": ["other.test"]})
        assert rt.egress.get() == EgressPolicy("allowlist", ("other.test",), ())
        out = until(lambda: curl(rt, "http://allowed.test/"), denied)
        assert denied(out), out
        # Open again.
        assert rt.egress.clear().egress_policy.is_open
        out = until(lambda: curl(rt, "http://other.test/"), lambda o: reached(o, OTHER_IP))
        assert reached(out, OTHER_IP), out
    finally:
        rt.delete(missing_ok=True)


@pytest.mark.usefixtures("test_hosts")
async def test_async_client_same_names(token: str, endpoint: str) -> None:
    async with AsyncRunta(token=token, endpoint=endpoint) as c:
        rt = await c.runtimes.create(
            unique("aeg"),
            vcpus=0.5,
            memory_mib=256,
            egress_policy=EgressPolicy("denylist", (), ("other.test",)),
        )
        try:
            assert (await rt.egress.get()).denied_hosts == ("other.test",)
            r = await rt.exec(
                f"curl -s -m 5 --resolve other.test:80:{OTHER_IP} -w ' status=%{{http_code}}' "
                "http://other.test/"
            )
            assert denied(r.stdout), r
            deadline = time.monotonic() + 10
            while True:
                audits = await c.audits.list(runtime=rt.id)
                if any(a.action == "deny" and a.host == "other.test" for a in audits):
                    break
                assert time.monotonic() < deadline, audits
                await asyncio.sleep(0.3)
            assert await rt.egress.audit(limit=10)
            assert (await rt.audits.list(limit=10))[0].runtime_id == rt.id
            info = await rt.egress.set(mode="allowlist", allowed_hosts=["other.test"])
            assert info.egress_policy.enabled
            assert await rt.egress.list() == ["other.test"]
            assert (await rt.egress.allow(["a.test", "a.test"])).egress_policy.allowed_hosts == (
                "other.test",
                "a.test",
            )
            # set_policy replaced the whole policy: nothing denied any more.
            p = (await rt.egress.deny("a.test")).egress_policy
            assert p == EgressPolicy("allowlist", ("other.test",), ("a.test",))
            assert (await rt.egress.remove("a.test")).egress_policy.denied_hosts == ()
            assert (await rt.egress.disable()).egress_policy.mode == "denylist"
            assert (await rt.egress.enable()).egress_policy.mode == "allowlist"
            assert (await rt.egress.clear()).egress_policy.is_open
        finally:
            await rt.delete(missing_ok=True)


def test_bad_input_is_refused_naming_the_field(client: Runta, rt: Runtime) -> None:
    # Caught before anything is sent.
    with pytest.raises(InvalidArgumentError) as e:
        rt.egress.set_policy(mode="blocklist")
    assert e.value.field == "egress_policy.mode"
    with pytest.raises(InvalidArgumentError) as e:
        client.audits.list(kind="everything")
    assert e.value.field == "kind"
    with pytest.raises(InvalidArgumentError):
        client.runtimes.create(
            unique("eg"), egress_policy={"mode": "allowlist"}, allowed_hosts=["a.test"]
        )
    # What only the daemon can judge: a 400/422 naming the field or the entry.
    for bad in ["exa mple.com", "10.0.0.0/33", "a.test:443", "", "a" * 300 + ".test"]:
        with pytest.raises(InvalidArgumentError) as e:
            rt.egress.allow(bad)
        assert "egress_policy" in (e.value.field or "") or "egress_policy" in str(e.value), bad
    with pytest.raises(InvalidArgumentError) as e:
        rt.egress.set_policy(allowed_hosts=[f"h{i}.test" for i in range(257)])
    assert "egress_policy.allowed_hosts" in ((e.value.field or "") + str(e.value))
    with pytest.raises(InvalidArgumentError) as e:
        rt.egress.set_policy({"enabled": True, "mode": "denylist"})
    assert "egress_policy.enabled" in ((e.value.field or "") + str(e.value))
    with pytest.raises(InvalidArgumentError) as e:
        rt.egress.set_policy({"mode": "allowlist", "everything": True})
    assert "everything" in str(e.value)
    # The refused changes left the policy as it was (open).
    assert rt.egress.get().is_open
    assert client.audits.list(limit=0) == []


def test_other_tenants_audits_are_not_found(client: Runta, rt: Runtime, token_b: str) -> None:
    with Runta(token=token_b, endpoint=client.endpoint) as other:
        with pytest.raises(NotFoundError):
            other.audits.list(runtime=rt.id)
        with pytest.raises(NotFoundError):
            other.runtimes.get(rt.id).egress.allow("a.test")
        assert all(a.runtime_id != rt.id for a in other.audits.list())
