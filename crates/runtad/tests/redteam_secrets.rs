//! Red-team pass over secret injection at egress (issue 18), by someone who
//! did not write it: a hostile program inside a runtime that has bindings, a
//! hostile tenant on the API, and another tenant after its neighbour's
//! secret. A real runtad with `--egress-hosts` and `--egress-upstream-ca`,
//! real runtimes, and test hosts in a network namespace this test creates:
//! 198.18.N.2 = bound.test, echo.test, a.wild.test; 198.18.N.3 = other.test;
//! 198.18.N.4 = selfsigned.test (a certificate no trusted CA signed). Every
//! request the hosts receive is recorded (JSON lines) so the tests see what
//! went out. Tests that pass pin a defence; `#[ignore = "hole: …"]` tests
//! prove a hole that is still open (docs/security.md, "Secrets red-team
//! pass").

mod common;

use std::process::Command;

use common::secrets_lab::{header, header_rule, runtime, skip, value, Lab};
use common::{name, py};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// One process serving every listener of the test hosts. Paths: `/redir?to=U`
/// answers 302 to `U`; a path ending in `/slashme` answers 301 to itself with
/// a slash and the same query (as trailing-slash redirects do); a path that
/// resolves (percent-decoded, dot segments removed, as many servers route)
/// to one containing `/echo` answers with the request head in its body;
/// `/hecho` copies the request's `Authorization` into a response header.
/// Body echoes of `Authorization` in other spellings: `/splitecho` (chunked,
/// 3 bytes a chunk), `/b64echo?pad=N[&url=1]` (base64 after N bytes),
/// `/pctecho`, `/hexecho`, `/revecho` (reversed), `/gzecho` (gzip-encoded
/// whatever the request accepts).
const SERVER: &str = r#"
import http.server, socketserver, ssl, sys, threading, json, urllib.parse, posixpath, base64, gzip, time
log = sys.argv[1]
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def any(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        rec = {"addr": self.connection.getsockname()[0], "port": self.connection.getsockname()[1],
               "m": self.command, "p": self.path, "h": [[k.lower(), v] for k, v in self.headers.items()]}
        with lock:
            with open(log, "a") as f:
                f.write(json.dumps(rec) + "\n")
        q = urllib.parse.urlparse(self.path)
        if "/redir" in q.path:
            to = urllib.parse.parse_qs(q.query).get("to", ["/"])[0]
            self.send_response(302); self.send_header("location", to); self.send_header("content-length", "0"); self.end_headers(); return
        if q.path.endswith("/slashme"):
            self.send_response(301); self.send_header("location", q.path + "/?" + q.query); self.send_header("content-length", "0"); self.end_headers(); return
        norm = posixpath.normpath(urllib.parse.unquote(q.path.replace(";", "")))
        auth = self.headers.get("authorization", "-")
        qs = urllib.parse.parse_qs(q.query)
        if "/splitecho" in q.path:
            # The value in 3-byte chunks, each flushed on its own.
            self.send_response(200); self.send_header("transfer-encoding", "chunked"); self.end_headers()
            parts = [b"ECHO "] + [auth.encode()[i:i + 3] for i in range(0, len(auth), 3)] + [b"\n"]
            for part in parts:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part)); self.wfile.flush(); time.sleep(0.02)
            self.wfile.write(b"0\r\n\r\n"); return
        coded = None
        if "/b64echo" in q.path:
            enc = base64.urlsafe_b64encode if qs.get("url") else base64.b64encode
            out = b"B64 " + enc(("x" * int(qs.get("pad", ["0"])[0]) + "authorization: " + auth).encode()) + b"\n"
        elif "/pctecho" in q.path:
            out = ("PCT " + urllib.parse.quote("authorization: " + auth, safe="") + "\n").encode()
        elif "/hexecho" in q.path:
            out = ("HEX " + auth.encode().hex() + "\n").encode()
        elif "/revecho" in q.path:
            out = ("REV " + auth[::-1] + "\n").encode()
        elif "/gzecho" in q.path:
            out = gzip.compress(("GZ " + auth + "\n").encode()); coded = "gzip"
        elif "/echo" in norm:
            out = ("ECHO " + self.path + "\n" + "".join("%s: %s\n" % kv for kv in self.headers.items())).encode()
        else:
            out = ("ok %s %s\n" % (self.command, self.path)).encode()
        self.send_response(200)
        if coded:
            self.send_header("content-encoding", coded)
        if "/hecho" in q.path:
            self.send_header("x-echo-auth", self.headers.get("authorization", "-"))
        self.send_header("content-length", str(len(out))); self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = do_PUT = any
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
def serve(addr, port, cert, key):
    s = S((addr, port), H)
    if cert:
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(cert, key)
        s.socket = c.wrap_socket(s.socket, server_side=True)
    s.serve_forever()
for spec in json.loads(sys.argv[2]):
    threading.Thread(target=serve, args=spec, daemon=True).start()
threading.Event().wait()
"#;

/// This suite's lab (`common::secrets_lab`) on subnet `net`.
fn lab(net: u8) -> Lab {
    Lab::new("rts", net, SERVER)
}

/// The value must come back through none of these: dot segments that a
/// server resolves outside the bound path, a redirect whose `Location`
/// repeats the injected query parameter, a response header echoing the
/// request. Each was a hole; each is fixed (see docs/security.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_value_does_not_come_back_through_paths_redirects_or_response_headers() {
    if skip() {
        return;
    }
    let lab = lab(81);
    let d = lab.daemon();
    let c = d.tenant("rts").await;
    let rt = runtime(&c, &lab, "rts").await;
    let v = value();
    c.new_secret("key", &v).await;
    c.new_rule(
        &rt,
        header_rule("bound.test", "/v1/*", "key", "Authorization"),
    )
    .await;
    c.new_rule(
        &rt,
        json!({"host": "bound.test", "path": "/q/*", "secret": "key",
               "injection": {"paramName": "key", "paramFormat": "${credential}"}}),
    )
    .await;
    let (code, out) = c.run(&rt, "curl -sS https://bound.test/v1/ok").await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        header(&lab.seen("/v1/ok")[0], "authorization"),
        Some(format!("Bearer {v}").as_str())
    );

    // Path scope: `/v1/*` must not reach `/echo` through `..` in any
    // spelling a server resolves (literal, percent-encoded, `..;`). Before
    // the fix each of these carried the header to the echo, which
    // returned it.
    for (i, p) in [
        "/v1/../echo",
        "/v1/%2e%2e/echo",
        "/v1/.%2E/echo",
        "/v1/..;/echo",
        "/v1/..%2fecho",
        "/v1/./../echo",
    ]
    .iter()
    .enumerate()
    {
        let (code, out) = c
            .run(
                &rt,
                &format!("curl -sS --path-as-is 'https://bound.test{p}?t={i}'"),
            )
            .await;
        assert_eq!(code, 0, "{p}: {out}");
        assert!(!out.contains(&v), "{p}: the value came back: {out}");
        let seen = lab.seen(&format!("?t={i}"));
        assert_eq!(seen.len(), 1, "{p}: {seen:?}");
        assert_eq!(header(&seen[0], "authorization"), None, "{p}");
    }
    // The same through the query-parameter binding.
    let (_, out) = c
        .run(
            &rt,
            "curl -sS --path-as-is 'https://bound.test/q/../echo?t=q'",
        )
        .await;
    assert!(!out.contains(&v), "{out}");
    assert!(!lab.seen("?t=q")[0]["p"].as_str().unwrap().contains(&v));

    // A redirect that repeats the URL (trailing-slash style) would put the
    // injected parameter in `Location`; a header that echoes the request
    // would put the header there. Both are refused with a 502 (audited),
    // and the value is not in what the runtime got.
    for (p, what) in [("/q/slashme?a=1", "location"), ("/v1/hecho", "x-echo-auth")] {
        let (_, out) = c
            .run(
                &rt,
                &format!("curl -sS -i -w ' %{{http_code}}' 'https://bound.test{p}'"),
            )
            .await;
        assert!(out.ends_with(" 502"), "{p}: {out}");
        assert!(out.contains(what), "{p}: {out}");
        assert!(!out.contains(&v), "{p}: the value came back: {out}");
    }
    // With curl following redirects, too.
    let (_, out) = c
        .run(&rt, "curl -sS -L -i 'https://bound.test/q/slashme?b=2'")
        .await;
    assert!(!out.contains(&v), "{out}");

    // The upstream is told the name its certificate was verified for, in
    // one spelling, whatever case, trailing dot or port the runtime wrote.
    let raw = "import socket, ssl\nctx = ssl.create_default_context()\ns = ctx.wrap_socket(socket.create_connection(('bound.test', 443), 10), server_hostname='bound.test')\ns.sendall(b'GET /v1/canon HTTP/1.1\\r\\nHost: BOUND.Test.:443\\r\\nConnection: close\\r\\n\\r\\n')\nwhile s.recv(4096):\n    pass\n";
    let out = py(&c, &rt, raw).await;
    assert_eq!(out["exit_code"], 0, "{out}");
    assert_eq!(
        header(&lab.seen("/v1/canon")[0], "host"),
        Some("bound.test")
    );

    // Audited as refused, never with the value.
    let (st, a) = c
        .get(&format!(
            "/v1/audits?category=egress&runtime={rt}&limit=1000"
        ))
        .await;
    assert_eq!(st, StatusCode::OK, "{a}");
    let a = a.to_string();
    assert!(a.contains("secret_reflected"), "{a}");
    assert!(!a.contains(&v));
    let log = std::fs::read_to_string(d.data_dir.join("runtad.log")).unwrap_or_default();
    assert!(!log.contains(&v));
}

/// A bound host that echoes the request in its body (an echo endpoint, a
/// debug page, an error page quoting the request) would hand the runtime the
/// value: the gateway scans the bodies of injected requests' responses
/// (asked for as identity) for the value in the spellings a response
/// carries it in, across chunk boundaries, and cuts the response there
/// (audited `secret_reflected`); an encoded body it cannot scan is refused.
/// docs/security.md, "Secrets red-team pass".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bound_host_that_echoes_the_body_does_not_return_the_value() {
    if skip() {
        return;
    }
    let lab = lab(82);
    let d = lab.daemon();
    let c = d.tenant("rtsb").await;
    let rt = runtime(&c, &lab, "rtsb").await;
    let v = value();
    c.new_secret("key", &v).await;
    c.new_rule(&rt, header_rule("echo.test", "/*", "key", "Authorization"))
        .await;
    // Nothing of the value reaches the runtime, not even its first bytes
    // (held back until the next byte shows whether the value follows).
    let gone = |out: &str| !out.contains(&v[..8]) && !out.contains(&v);
    let mut paths: Vec<String> = vec![
        "/v1/echo".into(),
        "/v1/splitecho".into(),
        "/v1/pctecho".into(),
        "/v1/hexecho".into(),
    ];
    for pad in 0..3 {
        paths.push(format!("/v1/b64echo?pad={pad}"));
        paths.push(format!("/v1/b64echo?pad={pad}&url=1"));
    }
    for (i, p) in paths.iter().enumerate() {
        let sep = if p.contains('?') { '&' } else { '?' };
        for proto in ["--http1.1", "--http2"] {
            let (code, out) = c
                .run(
                    &rt,
                    &format!("curl -sS {proto} -H 'Accept-Encoding: gzip, br' 'https://echo.test{p}{sep}t={i}'"),
                )
                .await;
            assert_ne!(code, 0, "{p} {proto}: the response was not cut: {out}");
            assert!(gone(&out), "{p} {proto}: the value came back: {out}");
        }
        // The request went out injected, asking for the body as it is.
        let seen = lab.seen(&format!("t={i}"));
        assert_eq!(seen.len(), 2, "{p}: {seen:?}");
        for s in &seen {
            assert_eq!(
                header(s, "authorization"),
                Some(format!("Bearer {v}").as_str())
            );
            assert_eq!(header(s, "accept-encoding"), Some("identity"), "{p}");
        }
    }
    // The bytes before the value still stream (the chunked echo's first
    // chunk arrives before the cut).
    let (_, out) = c
        .run(&rt, "curl -sSN https://echo.test/v1/splitecho?t=head")
        .await;
    assert!(out.starts_with("ECHO Bearer "), "{out}");
    assert!(gone(&out), "{out}");
    // An upstream that encodes its body although identity was asked: refused.
    let (_, out) = c
        .run(
            &rt,
            "curl -sS --compressed -w ' %{http_code}' https://echo.test/v1/gzecho",
        )
        .await;
    assert!(out.ends_with(" 502"), "{out}");
    assert!(out.contains("content or transfer coding"), "{out}");
    assert!(gone(&out), "{out}");
    // A response that does not reflect the value is untouched.
    let (code, out) = c.run(&rt, "curl -sS https://echo.test/v1/plain").await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), "ok GET /v1/plain");

    let (st, a) = c
        .get(&format!(
            "/v1/audits?category=egress&runtime={rt}&limit=1000"
        ))
        .await;
    assert_eq!(st, StatusCode::OK, "{a}");
    let a = a.to_string();
    assert!(a.contains("secret_reflected"), "{a}");
    assert!(a.contains("secret_unscannable"), "{a}");
    assert!(!a.contains(&v));
}

/// What the scan does not catch: an upstream that re-encodes the value in a
/// way of its own (here reversed; equally a custom cipher, a compressed blob
/// inside JSON, the value split by other text) returns it to the runtime.
/// docs/security.md, "Secrets red-team pass".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "hole (residual): a bound host that returns the injected value re-encoded in a way the gateway does not know (reversed: curl https://echo.test/v1/revecho prints the value backwards) hands it to the runtime; the body scan knows raw, percent, hex, JSON and base64 spellings only. Bind only hosts that never reflect requests"]
async fn a_bound_host_that_reencodes_the_echo_does_not_return_the_value() {
    if skip() {
        return;
    }
    let lab = lab(86);
    let d = lab.daemon();
    let c = d.tenant("rtsr").await;
    let rt = runtime(&c, &lab, "rtsr").await;
    let v = value();
    c.new_secret("key", &v).await;
    c.new_rule(&rt, header_rule("echo.test", "/*", "key", "Authorization"))
        .await;
    let (_, out) = c.run(&rt, "curl -sS https://echo.test/v1/revecho").await;
    let rev: String = v.chars().rev().collect();
    assert!(!out.contains(&rev), "the value came back reversed: {out}");
}

/// Misdirection on one connection, an unverifiable upstream, redirects to
/// unbound hosts, wildcards, the per-runtime CA in checkpoints and forks, a
/// hostile trust-store file: all pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn misdirection_unverified_upstreams_and_the_ca_hold() {
    if skip() {
        return;
    }
    let lab = lab(83);
    let d = lab.daemon();
    let c = d.tenant("rtsm").await;
    let rt = runtime(&c, &lab, "rtsm").await;
    let v = value();
    c.new_secret("key", &v).await;
    c.new_rule(&rt, header_rule("bound.test", "/*", "key", "X-Key"))
        .await;
    c.new_rule(&rt, header_rule("*.wild.test", "/*", "key", "X-Key"))
        .await;
    c.new_rule(&rt, header_rule("selfsigned.test", "/*", "key", "X-Key"))
        .await;

    // One TLS connection to bound.test, then requests that name another
    // host: kept-alive, pipelined, absolute URI with userinfo, two Host
    // headers, a comma list, HTTP/1.0 without Host. Each is 421 and reaches
    // no host; the first request of each connection got the header.
    let script = r#"
import re, socket, ssl
ctx = ssl.create_default_context()
def go(reqs):
    s = ctx.wrap_socket(socket.create_connection(("bound.test", 443), 10), server_hostname="bound.test")
    for r in reqs:
        s.sendall(r)
    s.settimeout(3)
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b: break
            out += b
    except Exception:
        pass
    return out.decode("latin1")
cases = [
  [b"GET /m?ka1 HTTP/1.1\r\nHost: bound.test\r\n\r\n", b"GET /m?ka2 HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n"],
  [b"GET /m?pl1 HTTP/1.1\r\nHost: bound.test\r\n\r\nGET /m?pl2 HTTP/1.1\r\nHost: echo.test\r\nConnection: close\r\n\r\n"],
  [b"GET https://bound.test@other.test/m?ui HTTP/1.1\r\nHost: bound.test\r\nConnection: close\r\n\r\n"],
  [b"GET /m?two HTTP/1.1\r\nHost: bound.test\r\nHost: other.test\r\nConnection: close\r\n\r\n"],
  [b"GET /m?comma HTTP/1.1\r\nHost: bound.test,other.test\r\nConnection: close\r\n\r\n"],
  [b"GET /m?nohost HTTP/1.0\r\n\r\n"],
]
for c in cases:
    o = go(c)
    print(" ".join(re.findall(r"HTTP/1\.[01] (\d{3})", o)))
"#;
    let out = py(&c, &rt, script).await;
    let lines: Vec<&str> = out["stdout"].as_str().unwrap_or("").lines().collect();
    assert_eq!(
        lines,
        ["200 421", "200 421", "421", "421", "421", "421"],
        "{out}"
    );
    for q in ["?ka2", "?pl2", "?ui", "?two", "?comma", "?nohost"] {
        assert!(lab.seen(q).is_empty(), "{q} reached a host");
    }
    assert_eq!(
        header(&lab.seen("?ka1")[0], "x-key"),
        Some(format!("Bearer {v}").as_str())
    );

    // An upstream whose certificate no trusted CA signed: the gateway does
    // not hand it the request (the connection is closed, audited).
    let (code, out) = c
        .run(&rt, "curl -sS -m 10 https://selfsigned.test/self")
        .await;
    assert_ne!(code, 0, "{out}");
    assert!(lab.seen("/self").is_empty());
    let (code, out) = c
        .run(&rt, "curl -sS -k -m 10 https://selfsigned.test/self-k")
        .await;
    assert_ne!(code, 0, "{out}");
    assert!(lab.seen("/self-k").is_empty());

    // A redirect from the bound host to an unbound one: the runtime follows
    // it itself, and the unbound host gets no value (plain HTTP or TLS).
    let pem = std::fs::read_to_string(lab.dir.join("ca.pem")).unwrap();
    c.out(&rt, &format!("cat > /tmp/up-ca.pem <<'EOF'\n{pem}EOF\ncat /etc/ssl/certs/ca-certificates.crt /tmp/up-ca.pem > /tmp/both.pem"))
        .await;
    for to in [
        "http://other.test/landed-plain",
        "https://other.test/landed-tls",
    ] {
        let (code, out) = c
            .run(
                &rt,
                &format!("curl -sS -L --cacert /tmp/both.pem 'https://bound.test/redir?to={to}'"),
            )
            .await;
        assert_eq!(code, 0, "{to}: {out}");
        let p = format!("/{}", to.rsplit('/').next().unwrap());
        let seen: Vec<Value> = lab.seen(&p).into_iter().filter(|s| s["p"] == p).collect();
        assert_eq!(seen.len(), 1, "{to}: {seen:?}");
        assert_eq!(header(&seen[0], "x-key"), None, "{to}");
    }

    // Wildcards: a.wild.test is intercepted; wild.test itself is not (the
    // runtime sees the upstream's own chain, which it does not trust).
    let (code, out) = c.run(&rt, "curl -sS https://a.wild.test/wa").await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        header(&lab.seen("/wa")[0], "x-key"),
        Some(format!("Bearer {v}").as_str())
    );
    let (code, _) = c.run(&rt, "curl -sS -m 5 https://wild.test/wapex").await;
    assert_ne!(code, 0);
    let (code, out) = c
        .run(
            &rt,
            "curl -sS --cacert /tmp/up-ca.pem https://wild.test/wapex2",
        )
        .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(header(&lab.seen("/wapex2")[0], "x-key"), None);

    // A checkpoint holds the CA certificate, never a key or the value; a
    // runtime made from it (no bindings) is not intercepted.
    let (st, ck) = c
        .post(
            &format!("/v1/runtimes/{rt}/checkpoints"),
            json!({"name": name("ck")}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{ck}");
    let ck_id = ck["data"]["id"].as_str().unwrap().to_string();
    let out = Command::new("grep")
        .args(["-rlaF", "-e", "PRIVATE KEY", "-e", &v])
        .arg(d.data_dir.join("checkpoints"))
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let fork = name("rtsm-fork");
    let (st, f) = c
        .post(
            "/v1/runtimes",
            json!({"name": fork, "checkpoint_id": ck_id,
                   "resources": {"requests": {"memory_mib": 256}}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{f}");
    c.out(
        &fork,
        &format!(
            "cat >> /etc/hosts <<'EOF'\n{}EOF",
            Lab::hosts_lines(lab.tn.net)
        ),
    )
    .await;
    let (code, _) = c.run(&fork, "curl -sS -m 5 https://bound.test/fork").await;
    assert_ne!(
        code, 0,
        "the fork must not be intercepted with the source's CA"
    );
    assert!(lab.seen("/fork").is_empty());
    let (code, out) = c
        .run(
            &fork,
            "curl -sS --cacert /tmp/up-ca.pem https://bound.test/fork2",
        )
        .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(header(&lab.seen("/fork2")[0], "x-key"), None);

    // The runtime makes its trust store a FIFO, then its bindings change:
    // the daemon refuses the file (no hang), and commands still run.
    c.out(
        &rt,
        "rm /etc/ssl/certs/ca-certificates.crt && mkfifo /etc/ssl/certs/ca-certificates.crt",
    )
    .await;
    c.new_rule(&rt, header_rule("echo.test", "/*", "key", "X-Key"))
        .await;
    let t0 = std::time::Instant::now();
    let (code, _) = c.run(&rt, "true").await;
    assert_eq!(code, 0);
    assert!(t0.elapsed() < std::time::Duration::from_secs(20));

    // The key files: the CA's and the secrets key, mode 0600.
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(d.data_dir.join("egress-ca"))
        .unwrap()
        .flatten()
    {
        assert_eq!(e.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }
    let key = std::fs::metadata(d.data_dir.join("secrets.key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    assert!(!lab.all_seen().contains("/self"));
}

/// Another tenant after a neighbour's secret, through every route; and a
/// tenant's own odd inputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tenant_can_neither_read_bind_replace_nor_delete() {
    if skip() {
        return;
    }
    let lab = lab(84);
    let d = lab.daemon();
    let a = d.tenant("rtsa").await;
    let b = d.tenant("rtsb").await;
    let rt = runtime(&a, &lab, "rtsa").await;
    let rtb = runtime(&b, &lab, "rtsb").await;
    let v = value();
    let s = a.new_secret("shared-name", &v).await;
    let sid = s["id"].as_str().unwrap().to_string();
    let bid = a
        .new_rule(&rt, header_rule("bound.test", "/*", "shared-name", "X-Key"))
        .await;
    let rt_id = a.get(&format!("/v1/runtimes/{rt}")).await.1["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut bodies = String::new();
    let mut expect_404 = |st: StatusCode, v: &Value, what: &str| {
        assert_eq!(st, StatusCode::NOT_FOUND, "{what}: {v}");
        bodies.push_str(&v.to_string());
    };
    let (st, r) = b.get(&format!("/v1/secrets/{sid}")).await;
    expect_404(st, &r, "get by id");
    let (st, r) = b
        .call(
            reqwest::Method::PUT,
            &format!("/v1/secrets/{sid}"),
            Some(json!({"value": "overwritten-by-b"})),
        )
        .await;
    expect_404(st, &r, "replace by id");
    let (st, r) = b.delete(&format!("/v1/secrets/{sid}")).await;
    expect_404(st, &r, "delete by id");
    // Bind A's secret (by id) to B's own runtime, or B's rule on A's runtime.
    let (st, r) = b
        .post(
            &format!("/v1/runtimes/{rtb}/secret-injection-rules"),
            header_rule("bound.test", "/*", &sid, "X-Key"),
        )
        .await;
    expect_404(st, &r, "bind by id");
    let (st, r) = b
        .post(
            &format!("/v1/runtimes/{rt_id}/secret-injection-rules"),
            header_rule("bound.test", "/*", "shared-name", "X-Stolen"),
        )
        .await;
    expect_404(st, &r, "rule on A's runtime");
    for path in [
        format!("/v1/secret-injection-rules/{bid}"),
        format!("/v1/secret-stubs/{bid}"),
        format!("/v1/default-secret-stubs/{bid}"),
        format!("/v1/runtimes/{rt_id}/secret-injection-rules/{bid}"),
    ] {
        let (st, r) = b.get(&path).await;
        expect_404(st, &r, &path);
        let (st, r) = b.delete(&path).await;
        expect_404(st, &r, &path);
    }
    // B's own secret of the same name, bound as a tenant default: reaches
    // B's runtime only.
    b.new_secret("shared-name", "b-value-0123456789").await;
    let (st, r) = b
        .post(
            "/v1/default-secret-stubs",
            header_rule("bound.test", "/*", "shared-name", "X-B"),
        )
        .await;
    assert!(st.is_success(), "{r}");
    let (st, list) = b.get("/v1/secrets").await;
    assert_eq!(st, StatusCode::OK);
    bodies.push_str(&list.to_string());
    assert!(!bodies.contains(&v));

    let (code, out) = a.run(&rt, "curl -sS https://bound.test/tenant-a").await;
    assert_eq!(code, 0, "{out}");
    let seen = &lab.seen("/tenant-a")[0];
    assert_eq!(header(seen, "x-key"), Some(format!("Bearer {v}").as_str()));
    assert_eq!(header(seen, "x-b"), None);
    assert_eq!(header(seen, "x-stolen"), None);
    let (code, out) = b.run(&rtb, "curl -sS https://bound.test/tenant-b").await;
    assert_eq!(code, 0, "{out}");
    let seen = &lab.seen("/tenant-b")[0];
    assert_eq!(header(seen, "x-b"), Some("Bearer b-value-0123456789"));
    assert_eq!(header(seen, "x-key"), None);

    // Odd values: 8 KiB arrives whole, one byte more is refused without
    // echoing it, and errors of other fields never quote the value.
    let big = "k".repeat(8192);
    a.new_secret("big", &big).await;
    a.new_rule(&rt, header_rule("bound.test", "/big", "big", "X-Big"))
        .await;
    let (code, out) = a.run(&rt, "curl -sS https://bound.test/big").await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        header(&lab.seen("/big")[0], "x-big").map(str::len),
        Some(8192 + 7)
    );
    let too_big = format!("{}X", "q".repeat(8192));
    let (st, r) = a
        .post("/v1/secrets", json!({"name": "too-big", "value": too_big}))
        .await;
    assert_eq!(st.as_u16(), 422, "{r}");
    assert!(!r.to_string().contains("qqqqqqqq"));
    for body in [
        json!({"name": "bad name", "value": v}),
        json!({"name": "shared-name", "value": v}),
        json!({"name": "x", "value": v, "extra": 1}),
        json!({"name": "x", "value": format!("{v}\n")}),
    ] {
        let (st, r) = a.post("/v1/secrets", body).await;
        assert!(st.is_client_error(), "{r}");
        assert!(!r.to_string().contains(&v), "{r}");
    }
}

/// The issue: "If the runtime sends the stub to a host that has no binding
/// for it, the request is blocked and audited." Every runtime of a tenant
/// that has a secret has its TCP on the gateway, bindings of its own or not,
/// so a stub over plain HTTP to any host is refused with a 403 and audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stub_from_a_runtime_without_bindings_is_blocked() {
    if skip() {
        return;
    }
    let lab = lab(85);
    let d = lab.daemon();
    let c = d.tenant("rtss").await;
    let rt = runtime(&c, &lab, "rtss").await;
    // Before the tenant has a secret, the runtime is not on the gateway.
    let (code, out) = c.run(&rt, "curl -sS -m 5 http://other.test/before").await;
    assert_eq!(code, 0, "{out}");
    let s = c.new_secret("key", &value()).await;
    let stub = s["stub"].as_str().unwrap().to_string();
    let (_, out) = c
        .run(
            &rt,
            &format!(
                "curl -s -m 5 -w ' %{{http_code}}' -H 'X-Key: {stub}' http://other.test/stubbed"
            ),
        )
        .await;
    assert!(lab.seen("/stubbed").is_empty(), "the stub went out: {out}");
    assert!(out.ends_with(" 403"), "{out}");
    // In the query, too, and on a kept-alive connection's second request.
    let (_, out) = c
        .run(
            &rt,
            &format!(
                "curl -s -m 5 -w '%{{http_code}} ' -o /dev/null http://other.test/first -o /dev/null http://other.test/second?k={stub}"
            ),
        )
        .await;
    assert_eq!(out.trim(), "200 403", "{out}");
    assert!(lab.seen("/second").is_empty());
    // Without a stub, plain HTTP goes on as before.
    let (code, out) = c.run(&rt, "curl -sS -m 5 http://other.test/clean").await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(lab.seen("/clean").len(), 1);
    let (st, a) = c
        .get(&format!(
            "/v1/audits?category=egress&runtime={rt}&limit=1000"
        ))
        .await;
    assert_eq!(st, StatusCode::OK, "{a}");
    let rows = a["data"].as_array().unwrap();
    let blocked = rows.iter().any(|r| {
        let h = &r["payload"]["egress"]["http_request"];
        h["host"] == "other.test"
            && h["path"] == "/stubbed"
            && h["action"] == "deny"
            && h["reason"]
                .as_str()
                .unwrap_or("")
                .contains("stub of secret \"key\"")
    });
    assert!(blocked, "{a}");
    assert!(
        !a.to_string().contains(&stub),
        "the audit quotes the stub: {a}"
    );
}

/// The documented residual of the above: HTTPS to a host with no binding is
/// never intercepted (the gateway sees its SNI, not its requests), so a stub
/// inside it reaches that host. The connection is on the gateway and
/// audited; the stub itself is worthless to the receiver (it is not the
/// value). docs/security.md, "Secrets red-team pass".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stub_over_https_to_an_unbound_host_is_not_seen_but_the_connection_is_audited() {
    if skip() {
        return;
    }
    let lab = lab(87);
    let d = lab.daemon();
    let c = d.tenant("rtsh").await;
    let rt = runtime(&c, &lab, "rtsh").await;
    let s = c.new_secret("key", &value()).await;
    let stub = s["stub"].as_str().unwrap().to_string();
    let pem = std::fs::read_to_string(lab.dir.join("ca.pem")).unwrap();
    c.out(&rt, &format!("cat > /tmp/up-ca.pem <<'EOF'\n{pem}EOF"))
        .await;
    let (code, out) = c
        .run(
            &rt,
            &format!("curl -sS -m 10 --cacert /tmp/up-ca.pem -H 'X-Key: {stub}' https://other.test/stubbed-tls"),
        )
        .await;
    assert_eq!(code, 0, "{out}");
    // The upstream's own certificate: not intercepted.
    assert_eq!(out.trim(), "ok GET /stubbed-tls");
    let seen = lab.seen("/stubbed-tls");
    assert_eq!(seen.len(), 1);
    assert_eq!(header(&seen[0], "x-key"), Some(stub.as_str()));
    let (st, a) = c
        .get(&format!(
            "/v1/audits?category=egress&runtime={rt}&limit=1000"
        ))
        .await;
    assert_eq!(st, StatusCode::OK, "{a}");
    let rows = a["data"].as_array().unwrap();
    let conn = rows.iter().any(|r| {
        let t = &r["payload"]["egress"]["tcp_connection"];
        t["host"] == "other.test" && t["transport"] == "tls" && t["action"] == "allow"
    });
    assert!(conn, "{a}");
}
