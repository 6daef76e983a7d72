//! Red-team pass over the egress gateway (issue 17), by someone who did not
//! write it: a hostile program inside a policy runtime and a hostile API
//! caller, against a real runtad and test hosts in a network namespace this
//! test creates (198.18.N.2 = allowed.test, 198.18.N.3 = other.test). Tests
//! that pass pin a defence; `#[ignore = "hole: …"]` tests prove a hole that
//! is still open (docs/security.md, "Egress red-team pass").

mod common;

use std::process::{Command, Stdio};

use common::{egress_gateway_port_of, name, py, Client, Daemon, TestNet};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The test hosts' server. `/echo?X` and `/chunked?X` answer the decoded
/// `X` as their body (sized, chunked): a body the attacker writes.
/// `/force101` answers `101` to any request, asked or not. `/ws` with
/// `Upgrade: websocket` is a real WebSocket that echoes text frames. Every
/// other path (also with `Upgrade`) is a plain `200 hello <addr> host=<Host>`;
/// `Expect: 100-continue` gets its `100` first (the standard library's).
const SERVER: &str = r#"
import base64, hashlib, http.server, socketserver, ssl, sys, threading, urllib.parse
cert, key = sys.argv[1], sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def hello(self):
        return ("hello %s host=%s\n" % (self.connection.getsockname()[0], self.headers.get("Host"))).encode()
    def do_HEAD(self):
        self.send_response(200); self.send_header("content-length", str(len(self.hello()))); self.end_headers()
    def do_GET(self):
        p = self.path
        if p.startswith("/echo?"):
            body = urllib.parse.unquote_to_bytes(p[6:])
            self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
            self.wfile.write(body); return
        if p.startswith("/chunked?"):
            body = urllib.parse.unquote_to_bytes(p[9:])
            self.send_response(200); self.send_header("transfer-encoding", "chunked"); self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)); return
        if p == "/force101":
            self.send_response(101); self.send_header("upgrade", "websocket"); self.send_header("connection", "upgrade"); self.end_headers()
            return
        if p == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            acc = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            self.send_response(101); self.send_header("Upgrade", "websocket"); self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", acc); self.end_headers(); self.wfile.flush()
            while True:
                h = self.rfile.read(2)
                if len(h) < 2 or h[0] & 15 == 8:
                    break
                n = h[1] & 127
                mask = self.rfile.read(4) if h[1] & 128 else b"\0\0\0\0"
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(n)))
                self.wfile.write(bytes([0x81, len(data)]) + data); self.wfile.flush()
            self.close_connection = True
            return
        body = self.hello()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
def serve(port, tls):
    s = S(("0.0.0.0", port), H)
    if tls:
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(cert, key)
        s.socket = c.wrap_socket(s.socket, server_side=True)
    s.serve_forever()
threading.Thread(target=serve, args=(443, True), daemon=True).start()
serve(80, False)
"#;

/// A network namespace holding the test hosts, torn down on drop.
type TestHosts = common::PyHosts;

fn test_hosts(net: u8) -> TestHosts {
    TestHosts::start(
        TestNet::new("rte", net, &[2, 3]),
        "rte",
        SERVER,
        &["allowed.test"],
        &format!("198.18.{net}.2 allowed.test a.wild.test wild.test\n198.18.{net}.3 other.test\n"),
    )
}

fn daemon(h: &TestHosts) -> Daemon {
    Daemon::start_new(&["--egress-hosts", h.hosts_file.to_str().unwrap()])
}

/// Python run in the runtime; its stdout + stderr.
async fn pyout(c: &Client, rt: &str, script: &str) -> String {
    let d = py(c, rt, script).await;
    d["stdout"].as_str().unwrap_or("").to_string() + d["stderr"].as_str().unwrap_or("")
}

/// Sends `req` as is to `ip:port` from inside the runtime and returns all it
/// got back until the peer closed (or `ERR …`).
async fn raw(c: &Client, rt: &str, ip: &str, port: u16, req: &[u8]) -> String {
    let hex: String = req.iter().map(|b| format!("{b:02x}")).collect();
    pyout(
        c,
        rt,
        &format!(
            r#"
import socket
out = b""
try:
    s = socket.create_connection(("{ip}", {port}), 5)
    s.settimeout(5)
    s.sendall(bytes.fromhex("{hex}"))
    while True:
        d = s.recv(65536)
        if not d:
            break
        out += d
except Exception as e:
    out += ("ERR %r" % e).encode()
print(out.decode("latin1"))
"#
        ),
    )
    .await
}

async fn audits(c: &Client, rt: &str, extra: &str) -> Vec<Value> {
    let (st, v) = c
        .get(&format!(
            "/v1/audits?category=egress&runtime={rt}&limit=1000{extra}"
        ))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["data"].as_array().unwrap().clone()
}

/// Every audit of the runtime the store keeps (all pages), newest first.
async fn all_audits(c: &Client, rt: &str, extra: &str) -> Vec<Value> {
    let (mut out, mut after) = (Vec::new(), String::new());
    loop {
        let (st, v) = c
            .get(&format!(
                "/v1/audits?category=egress&runtime={rt}&limit=1000{extra}{after}"
            ))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        out.extend(v["data"].as_array().unwrap().iter().cloned());
        match v["pagination"]["next_cursor"].as_str() {
            Some(n) if !n.is_empty() => after = format!("&after={n}"),
            _ => return out,
        }
    }
}

/// A DNS A query for `qname` to `server`:53 from the runtime: "rcode R answers N".
fn dns_script(server: &str, qname: &str) -> String {
    let labels: String = qname
        .split('.')
        .map(|l| format!("\\x{:02x}{l}", l.len()))
        .collect();
    format!(
        "import socket\ns=socket.socket(2,2);s.settimeout(3)\nq=b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00{labels}\\x00\\x00\\x01\\x00\\x01'\ns.sendto(q,('{server}',53));r=s.recv(512)\nprint('rcode',r[3]&15,'answers',r[7],r[-4:].hex())"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_header_name_and_socket_tricks_are_refused() {
    let h = test_hosts(61);
    let d = daemon(&h);
    let c = d.tenant("rte").await;
    let rt = name("rte");
    let v = c
        .create_with(json!({"name": rt, "egress_policy": {"mode": "allowlist", "allowed_hosts": ["allowed.test", "*.wild.test"]}}))
        .await;
    let rt_ip = v["ip"].as_str().unwrap().to_string();
    let (two, three) = (h.ip(2), h.ip(3));
    let hello = format!("hello {two}");

    // Name matching: the wildcard is subdomains only, suffix tricks are
    // other names, case, port and a trailing dot are the same name.
    for (host, ok) in [
        ("a.wild.test", true),
        ("A.Wild.TEST.", true),
        ("allowed.test.", true),
        ("ALLOWED.test:80", true),
        ("wild.test", false),
        ("xallowed.test", false),
        ("allowed.test.other.test", false),
        ("a.wild.test.other.test", false),
        ("allowed.test%00", false),
        ("*.wild.test", false),
    ] {
        let (_, out) = c
            .run(
                &rt,
                &format!("curl -s -m 5 -w ' %{{http_code}}' -H 'Host: {host}' http://{three}/"),
            )
            .await;
        if ok {
            assert!(
                out.contains(&hello) && out.ends_with(" 200"),
                "{host}: {out}"
            );
        } else {
            assert!(
                out.ends_with(" 403") && !out.contains("hello"),
                "{host}: {out}"
            );
        }
    }

    // Heads the gateway and a server could read differently: refused.
    for (what, req) in [
        ("absolute URI for another host", "GET http://other.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n"),
        ("two Host headers", "GET / HTTP/1.1\r\nHost: allowed.test\r\nHost: other.test\r\n\r\n"),
        ("obs-fold", "GET / HTTP/1.1\r\nHost: allowed.test\r\nX-A: b\r\n other.test\r\n\r\n"),
        ("space before the colon", "GET / HTTP/1.1\r\nHost : other.test\r\nHost: allowed.test\r\n\r\n"),
        ("CL and TE", "POST / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE not chunked", "POST / HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
        ("h2c prior knowledge", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ("h2c upgrade", "GET / HTTP/1.1\r\nHost: allowed.test\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"),
        ("NUL in a header", "GET / HTTP/1.1\r\nHost: allowed.test\r\nX-A: a\0b\r\n\r\n"),
        ("CONNECT", "CONNECT other.test:443 HTTP/1.1\r\nHost: allowed.test\r\n\r\n"),
    ] {
        let out = raw(&c, &rt, &two, 80, req.as_bytes()).await;
        assert!(
            out.starts_with("HTTP/1.1 403") && !out.contains("hello"),
            "{what}: {out}"
        );
    }
    // Not HTTP to the gateway's eyes (lower-case method): judged by address,
    // and the allowed host's address is not an entry.
    let out = raw(
        &c,
        &rt,
        &two,
        80,
        b"get / HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
    )
    .await;
    assert!(out.contains("ERR") && !out.contains("hello"), "{out}");

    // The gateway's own port, hit directly, is no way around it.
    let port = egress_gateway_port_of(&rt_ip)
        .unwrap_or_else(|| panic!("no redirect rule: {}", common::iptables_save()));
    let gw = format!("10.{}.0.1", d.subnet_octet);
    let out = raw(
        &c,
        &rt,
        &gw,
        port,
        b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    let out = raw(&c, &rt, &gw, port, b"hello gateway\r\n").await;
    assert!(out.contains("ERR") || out.trim().is_empty(), "{out}");

    // TLS without SNI, to the allowed host's own address: no name, and the
    // address is not an entry.
    let tls = |ip: String, sni: &'static str| {
        format!(
            r#"
import socket, ssl
c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE
try:
    s = c.wrap_socket(socket.create_connection(("{ip}", 443), 5), server_hostname={sni})
    s.sendall(b"GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
    out = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        out += d
    print(out.decode())
except Exception as e:
    print("ERR", repr(e))
"#
        )
    };
    let out = pyout(&c, &rt, &tls(two.clone(), "None")).await;
    assert!(out.starts_with("ERR") && !out.contains("hello"), "{out}");
    // The allowed SNI aimed at the denied address reaches the allowed one.
    let out = pyout(&c, &rt, &tls(three.clone(), "'allowed.test'")).await;
    assert!(out.contains(&hello) && !out.contains(&three), "{out}");

    // IPv6: no address, no route; a v4-mapped address on a v6 socket is v4
    // and meets the gateway like any other.
    let (_, out) = c.run(&rt, "cat /proc/net/if_inet6 2>&1; echo end").await;
    assert!(!out.contains("eth0"), "an IPv6 address on eth0: {out}");
    let out = pyout(
        &c,
        &rt,
        "import socket\nfor a in [('fe80::1%eth0',80,0,0),('ff02::1%eth0',80,0,0),('2001:db8::1',80,0,0)]:\n  try:\n    s=socket.socket(socket.AF_INET6);s.settimeout(2);s.connect(a);print('CONNECTED',a)\n  except Exception as e:\n    print('refused',a,e)",
    )
    .await;
    assert!(!out.contains("CONNECTED"), "{out}");
    let out = pyout(
        &c,
        &rt,
        &format!("import socket\ns=socket.socket(socket.AF_INET6);s.settimeout(5);s.connect(('::ffff:{three}',80,0,0));s.sendall(b'GET / HTTP/1.1\\r\\nHost: other.test\\r\\n\\r\\n');print(s.recv(200))"),
    )
    .await;
    assert!(out.contains("403"), "{out}");

    // Other IP protocols need a raw socket: none for a runtime's program.
    let out = pyout(
        &c,
        &rt,
        "import socket\nfor p in (132, 47, 255, 1):\n  try:\n    socket.socket(socket.AF_INET, socket.SOCK_RAW, p);print('RAW', p)\n  except Exception as e:\n    print('no', p, e)\ntry:\n  socket.socket(17, socket.SOCK_RAW, 0);print('PACKET')\nexcept Exception as e:\n  print('no packet', e)\ntry:\n  socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132);print('SCTP')\nexcept Exception as e:\n  print('no sctp', e)",
    )
    .await;
    assert!(
        !out.contains("RAW") && !out.contains("PACKET") && !out.contains("SCTP"),
        "{out}"
    );

    // DNS of a name that only shares a suffix, or the wildcard's apex.
    for q in ["allowed.test.other.test", "wild.test", "xallowed.test"] {
        let out = pyout(&c, &rt, &dns_script(&gw, q)).await;
        assert!(out.contains("rcode 3 answers 0"), "{q}: {out}");
    }

    // A hostile API caller: entries that are not hosts, and too many.
    for bad in [
        "*",
        "*.",
        "**.test",
        "http://allowed.test/",
        "allowed.test/x",
        "allowed.test:443",
        "198.18.0.0/33",
        "",
        "a b",
        "*.*.test",
        "allowed..test",
    ] {
        let (st, body) = c
            .patch(
                &format!("/v1/runtimes/{rt}"),
                json!({"egress_policy": {"mode": "allowlist", "allowed_hosts": [bad]}}),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
    }
    let many: Vec<String> = (0..257).map(|i| format!("h{i}.test")).collect();
    let (st, body) = c
        .patch(
            &format!("/v1/runtimes/{rt}"),
            json!({"egress_policy": {"mode": "allowlist", "allowed_hosts": many}}),
        )
        .await;
    assert!(
        st == StatusCode::BAD_REQUEST || st == StatusCode::UNPROCESSABLE_ENTITY,
        "{body}"
    );
    assert!(body.to_string().contains("allowed_hosts"), "{body}");
    let (_, now) = c.get(&format!("/v1/runtimes/{rt}")).await;
    assert_eq!(
        now["data"]["egress_policy"]["allowed_hosts"],
        json!(["allowed.test", "*.wild.test"]),
        "{now}"
    );

    // The refusals are audited, with the name the program gave.
    c.eventually(10, "denials audited", || async {
        let l = audits(&c, &rt, "").await;
        let s = serde_json::to_string(&l).unwrap();
        s.contains("xallowed.test") && s.contains("allowed.test.other.test")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denylist_names_that_resolve_to_forbidden_addresses_are_refused() {
    let h = test_hosts(62);
    let d = daemon(&h);
    let c = d.tenant("rtd").await;
    let rt = name("rtd");
    c.create_with(
        json!({"name": rt, "egress_policy": {"mode": "denylist", "denied_hosts": ["other.test"]}}),
    )
    .await;
    let two = h.ip(2);
    // Names the system resolver turns into loopback, unspecified or the
    // metadata address (numeric forms Rust's parser does not take).
    for host in [
        "localhost",
        "127.1",
        "2130706433",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "0",
        "2852039166",
        "ip6-localhost",
    ] {
        let (_, out) = c
            .run(
                &rt,
                &format!("curl -s -m 5 -w ' %{{http_code}}' -H 'Host: {host}' http://{two}/"),
            )
            .await;
        assert!(
            out.ends_with(" 403") && !out.contains("hello"),
            "{host}: {out}"
        );
        let gw = format!("10.{}.0.1", d.subnet_octet);
        if host.contains('.') && !host.ends_with('.') || host == "localhost" {
            let out = pyout(&c, &rt, &dns_script(&gw, host)).await;
            assert!(out.contains("answers 0"), "DNS {host}: {out}");
        }
    }
    // The denied name by SNI or Host, whatever address the program aims at.
    let (_, out) = c
        .run(
            &rt,
            &format!("curl -s -m 5 -w ' %{{http_code}}' -H 'Host: OTHER.test.' http://{two}/"),
        )
        .await;
    assert!(out.ends_with(" 403"), "{out}");
    let (code, out) = c
        .run(
            &rt,
            &format!("curl -sk -m 5 --resolve other.test:443:{two} https://other.test/"),
        )
        .await;
    assert!(code != 0 && !out.contains("hello"), "{out}");
}

/// Sends two requests on one connection: the first with `Upgrade: websocket`
/// (the server does not upgrade: a plain 200), the second naming a host the
/// policy denies. Then what an attacker tries next: the server's `100
/// Continue` before its 200; a fake `101` line inside an earlier pipelined
/// answer's body (sized, chunked: the attacker writes it, `/echo`); a `101`
/// to a request that asked for none, then a real upgrade. Each time the
/// denied request gets the gateway's 403, never reaches the server, and is
/// audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_the_server_refused_does_not_open_a_tunnel() {
    let h = test_hosts(63);
    let d = daemon(&h);
    let c = d.tenant("rtu").await;
    let rt = name("rtu");
    c.create_with(json!({"name": rt, "egress_policy": {"mode": "allowlist", "allowed_hosts": ["allowed.test"]}}))
        .await;
    let up =
        "GET / HTTP/1.1\r\nHost: allowed.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let denied = "GET / HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n";
    let fake = "HTTP%2F1.1%20101%20Switching%20Protocols%0D%0AUpgrade%3A%20websocket%0D%0AConnection%3A%20Upgrade%0D%0A%0D%0A";
    let ws = "GET /ws HTTP/1.1\r\nHost: allowed.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let cases = [
        ("a plain 200", format!("{up}{denied}")),
        (
            "100 Continue, then 200",
            format!("GET / HTTP/1.1\r\nHost: allowed.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n{denied}"),
        ),
        (
            "a fake 101 in a sized body before",
            format!("GET /echo?{fake} HTTP/1.1\r\nHost: allowed.test\r\n\r\n{up}{denied}"),
        ),
        (
            "a fake 101 in a chunked body before",
            format!("GET /chunked?{fake} HTTP/1.1\r\nHost: allowed.test\r\n\r\n{up}{denied}"),
        ),
        (
            "a 101 nobody asked for, then a real upgrade",
            format!("GET /force101 HTTP/1.1\r\nHost: allowed.test\r\n\r\n{ws}{denied}"),
        ),
    ];
    for (what, req) in &cases {
        let out = raw(&c, &rt, &h.ip(2), 80, req.as_bytes()).await;
        assert!(
            out.contains("host=allowed.test") || out.contains("101 Switching"),
            "{what}: {out}"
        );
        assert!(
            out.contains("HTTP/1.1 403 Forbidden") && out.contains("denied other.test"),
            "{what}: {out}"
        );
        assert!(
            !out.contains("host=other.test"),
            "{what}: a denied Host was forwarded: {out}"
        );
    }
    c.eventually(10, "every denied request audited", || async {
        let n = audits(&c, &rt, "&kind=http_request")
            .await
            .iter()
            .filter(|a| {
                let r = &a["payload"]["egress"]["http_request"];
                r["host"] == "other.test" && r["action"] == "deny" && r["status"] == 403
            })
            .count();
        n >= cases.len()
    })
    .await;
}

/// What the upgrade fix must not break: a real WebSocket through the
/// gateway, handshake and frames both ways, alone, with a frame sent before
/// the `101` arrived (held, then delivered), after a pipelined GET, after a
/// HEAD (whose answer has no body), after a `100 Continue`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_websocket_upgrade_still_tunnels() {
    let h = test_hosts(68);
    let d = daemon(&h);
    let c = d.tenant("rtw").await;
    let rt = name("rtw");
    c.create_with(json!({"name": rt, "egress_policy": {"mode": "allowlist", "allowed_hosts": ["allowed.test"]}}))
        .await;
    let out = pyout(
        &c,
        &rt,
        r#"
import base64, hashlib, os, socket
def frame(t):
    m = os.urandom(4)
    return bytes([0x81, 0x80 | len(t)]) + m + bytes(b ^ m[i % 4] for i, b in enumerate(t))
def until(s, buf, needle):
    while needle not in buf:
        d = s.recv(65536)
        if not d:
            raise Exception("closed after %r" % buf)
        buf += d
    return buf
def ws(case, prefix=b"", extra="", early=False):
    s = socket.create_connection(("allowed.test", 80), 5); s.settimeout(5)
    key = base64.b64encode(os.urandom(16)).decode()
    acc = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    s.sendall(prefix + ("GET /ws HTTP/1.1\r\nHost: allowed.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n" % (key, extra)).encode())
    if early:
        s.sendall(frame(b"one " + case.encode()))
    buf = until(s, b"", b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
    if not early:
        s.sendall(frame(b"one " + case.encode()))
    buf = until(s, buf, b"one " + case.encode())
    s.sendall(frame(b"two " + case.encode()))
    buf = until(s, buf, b"two " + case.encode())
    s.close()
    print("OK", case, buf.count(b"101 Switching"))
for case, kw in [("alone", {}), ("early", {"early": True}),
        ("get", {"prefix": b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n", "early": True}),
        ("head", {"prefix": b"HEAD / HTTP/1.1\r\nHost: allowed.test\r\n\r\n", "early": True}),
        ("continue", {"extra": "Expect: 100-continue\r\n"})]:
    try:
        ws(case, **kw)
    except Exception as e:
        print("FAIL", case, repr(e))
"#,
    )
    .await;
    for case in ["alone", "early", "get", "head", "continue"] {
        assert!(out.contains(&format!("OK {case} 1")), "{case}: {out}");
    }
    c.eventually(10, "the WebSocket connections audited", || async {
        audits(&c, &rt, "&kind=tcp_connection")
            .await
            .iter()
            .filter(|a| {
                let t = &a["payload"]["egress"]["tcp_connection"];
                t["host"] == "allowed.test" && t["action"] == "allow" && t["outcome"] == "closed"
            })
            .count()
            >= 5
    })
    .await;
}

/// A WebSocket to a host the runtime has a secret binding for (TLS
/// terminated by the gateway, the upgrade spliced after the upstream's
/// `101`) works, and is part of its connection: a policy change that denies
/// the host cuts it like any other connection (the splice used to be a task
/// of its own, outliving the connection's slot and out of the policy's
/// reach).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intercepted_websocket_is_part_of_its_connection() {
    let h = test_hosts(69);
    let dir = h.hosts_file.parent().unwrap().to_path_buf();
    let d = Daemon::start_new(&[
        "--egress-hosts",
        h.hosts_file.to_str().unwrap(),
        "--egress-upstream-ca",
        dir.join("cert.pem").to_str().unwrap(),
    ]);
    let c = d.tenant("rti").await;
    let rt = name("rti");
    c.create_with(json!({"name": rt, "egress_policy": {"mode": "allowlist", "allowed_hosts": ["allowed.test", "other.test"]}}))
        .await;
    let (st, v) = c
        .post(
            "/v1/secrets",
            json!({"name": "ws-key", "value": "sv-websocket"}),
        )
        .await;
    assert!(st.is_success(), "{v}");
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{rt}/secret-injection-rules"),
            json!({"host": "allowed.test", "path": "/*", "secret": "ws-key",
                   "injection": {"headerName": "X-Key", "valueFormat": "${credential}"}}),
        )
        .await;
    assert!(st.is_success(), "{v}");
    c.out(
        &rt,
        r#"cat > /tmp/ws.py <<'EOF'
import base64, hashlib, os, socket, ssl, time
def frame(t):
    m = os.urandom(4)
    return bytes([0x81, 0x80 | len(t)]) + m + bytes(b ^ m[i % 4] for i, b in enumerate(t))
def until(s, buf, needle):
    while needle not in buf:
        d = s.recv(65536)
        if not d:
            raise Exception("closed after %r" % buf)
        buf += d
    return buf
def done(r):
    open("/tmp/ws.tmp", "w").write(r); os.rename("/tmp/ws.tmp", "/tmp/ws.out")
try:
    for _ in range(100):
        try:
            s = ssl.create_default_context().wrap_socket(socket.create_connection(("allowed.test", 443), 5), server_hostname="allowed.test")
            break
        except ssl.SSLError:
            time.sleep(0.1)
    s.settimeout(5)
    key = base64.b64encode(os.urandom(16)).decode()
    acc = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    s.sendall(("GET /ws HTTP/1.1\r\nHost: allowed.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
    buf = until(s, b"", acc + b"\r\n\r\n")
    s.sendall(frame(b"one"))
    buf = until(s, buf, b"one")
    open("/tmp/ws.ready", "w").write("ok")
    while not os.path.exists("/tmp/ws.go"):
        time.sleep(0.05)
    s.sendall(frame(b"two"))
    until(s, buf, b"two")
    done("ECHOED two")
except Exception as e:
    done("ERR %r" % e)
EOF
nohup python3 /tmp/ws.py >/dev/null 2>&1 &
echo ok"#,
    )
    .await;
    c.eventually(20, "the WebSocket open", || async {
        let (_, o) = c
            .run(&rt, "cat /tmp/ws.ready /tmp/ws.out 2>/dev/null")
            .await;
        !o.is_empty()
    })
    .await;
    let (_, ready) = c.run(&rt, "cat /tmp/ws.ready 2>/dev/null").await;
    let (_, early) = c.run(&rt, "cat /tmp/ws.out 2>/dev/null").await;
    assert_eq!(
        ready, "ok",
        "the intercepted WebSocket did not open: {early}"
    );
    let (st, v) = c
        .patch(
            &format!("/v1/runtimes/{rt}"),
            json!({"egress_policy": {"mode": "allowlist", "allowed_hosts": ["other.test"]}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    c.out(&rt, "touch /tmp/ws.go").await;
    c.eventually(15, "the WebSocket's end", || async {
        let (_, o) = c.run(&rt, "cat /tmp/ws.out 2>/dev/null").await;
        !o.is_empty()
    })
    .await;
    let (_, out) = c.run(&rt, "cat /tmp/ws.out").await;
    assert!(
        out.starts_with("ERR"),
        "the intercepted WebSocket outlived the policy that denies its host: {out}"
    );
    // Audited: the intercepted request answered 101, the connection cut.
    c.eventually(10, "the upgrade and the cut audited", || async {
        let l = audits(&c, &rt, "").await;
        let upgraded = l.iter().any(|a| {
            let r = &a["payload"]["egress"]["http_request"];
            r["host"] == "allowed.test" && r["path"] == "/ws" && r["status"] == 101
        });
        let cut = l.iter().any(|a| {
            let t = &a["payload"]["egress"]["tcp_connection"];
            t["plugin"] == "secret_injection" && t["outcome"] == "cut"
        });
        upgraded && cut
    })
    .await;
}

/// A program covers its tracks: one denied attempt, then a burst of cheap
/// denied DNS queries (each one audit) past the per-runtime retention; then
/// what it tries next: a burst of allowed DNS queries, and a loop of allowed
/// connections (an HTTP request and a connection row each). The denied
/// attempt's rows stay; each burst only pushes out its own class's oldest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_burst_does_not_erase_the_runtimes_earlier_denials() {
    let h = test_hosts(64);
    let d = daemon(&h);
    let c = d.tenant("rtf").await;
    let rt = name("rtf");
    c.create_with(json!({"name": rt, "egress_policy": {"mode": "allowlist", "allowed_hosts": ["allowed.test"]}}))
        .await;
    let (_, out) = c
        .run(
            &rt,
            &format!(
                "curl -s -m 5 -w ' %{{http_code}}' -H 'Host: exfil.other.test' http://{}/",
                h.ip(3)
            ),
        )
        .await;
    assert!(out.ends_with(" 403"), "{out}");
    c.eventually(10, "the denial audited", || async {
        serde_json::to_string(&audits(&c, &rt, "").await)
            .unwrap()
            .contains("exfil.other.test")
    })
    .await;
    let gw = format!("10.{}.0.1", d.subnet_octet);
    let burst = |prefix: &str, domain: &str, n: usize| {
        let (p, dlen) = (prefix.to_string(), domain.len());
        format!(
            "import socket,time\ns=socket.socket(2,2);s.settimeout(1)\nok=0\nfor i in range({n}):\n  n=b'{p}%d' % i if {has} else b''\n  lab=(bytes([len(n)])+n if n else b'')\n  q=b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00'+lab+bytes([{dlen}])+b'{domain}'+b'\\x04test\\x00\\x00\\x01\\x00\\x01'\n  s.sendto(q,('{gw}',53))\n  try:\n    s.recv(512);ok+=1\n  except Exception:\n    pass\nprint('answered',ok)",
            has = if p.is_empty() { "False" } else { "True" },
        )
    };
    // 6000 denied names (n0.other.test …), then 3000 allowed queries.
    let out = pyout(&c, &rt, &burst("n", "other", 6000)).await;
    assert!(out.contains("answered"), "{out}");
    let out = pyout(&c, &rt, &burst("", "allowed", 3000)).await;
    assert!(out.contains("answered"), "{out}");
    // 2600 allowed connections, one request each.
    let out = pyout(
        &c,
        &rt,
        "import socket\nok=0\nfor i in range(2600):\n  s=socket.create_connection(('allowed.test',80),5)\n  s.sendall(b'GET /loop HTTP/1.1\\r\\nHost: allowed.test\\r\\nConnection: close\\r\\n\\r\\n')\n  d=b''\n  while True:\n    x=s.recv(4096)\n    if not x: break\n    d+=x\n  ok+=d.startswith(b'HTTP/1.1 200')\n  s.close()\nprint('allowed',ok)",
    )
    .await;
    assert!(out.contains("allowed 2600"), "{out}");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let list = all_audits(&c, &rt, "").await;
    let denial = |kind: &str| {
        list.iter().any(|a| {
            let e = &a["payload"]["egress"];
            e["kind"] == kind
                && e[kind]["host"] == "exfil.other.test"
                && e[kind]["action"] == "deny"
        })
    };
    assert!(
        denial("tcp_connection") && denial("http_request"),
        "the denied connection's audit is gone after the bursts ({} rows kept)",
        list.len()
    );
    // The loop kept its newest, bounded.
    let loops = list
        .iter()
        .filter(|a| a["payload"]["egress"]["http_request"]["path"] == "/loop")
        .count();
    assert!((1000..=2600).contains(&loops), "{loops}");
    let dns = all_audits(&c, &rt, "&kind=dns_query").await;
    let denied_dns = dns
        .iter()
        .filter(|a| a["payload"]["egress"]["dns_query"]["action"] == "deny")
        .count();
    let allowed_dns = dns.len() - denied_dns;
    assert!(
        (1000..6000).contains(&denied_dns) && allowed_dns >= 1000,
        "{denied_dns} denied, {allowed_dns} allowed DNS rows kept"
    );
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// One tenant's runtime floods the gateway's DNS as fast as it can send;
/// another tenant's runtime keeps being answered and audited, the daemon
/// stays bounded, and neither tenant sees the other's audits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_dns_flood_costs_another_tenant_nothing() {
    let h = test_hosts(65);
    let d = daemon(&h);
    let a = d.tenant("rtfa").await;
    let b = d.tenant("rtfb").await;
    let (ra, rb) = (name("rtfa"), name("rtfb"));
    let pol = json!({"mode": "allowlist", "allowed_hosts": ["allowed.test"]});
    a.create_with(json!({"name": ra, "egress_policy": pol}))
        .await;
    let vb = b
        .create_with(json!({"name": rb, "egress_policy": pol}))
        .await;
    let pid = d.pid();
    let before = rss_kib(pid);
    let gw = format!("10.{}.0.1", d.subnet_octet);
    // Fire and forget, long names, 100k datagrams, from 4 processes.
    a.out(
        &ra,
        &format!(
            "cat > /tmp/flood.py <<'EOF'\nimport socket, os\ns=socket.socket(2,2);s.setblocking(False)\nlab=b'x'*63\nfor i in range(25000):\n  n=(b'%d' % i)+lab[:50]\n  q=b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00'+bytes([len(n)])+n+bytes([63])+lab+bytes([63])+lab+b'\\x04test\\x00\\x00\\x10\\x00\\x01'\n  try:\n    s.sendto(q,('{gw}',53))\n  except Exception:\n    pass\nEOF\nfor i in 1 2 3 4; do nohup python3 /tmp/flood.py >/dev/null 2>&1 & done; echo started"
        ),
    )
    .await;
    // Meanwhile the other tenant works: 20 denied requests, DNS answers.
    for i in 0..20 {
        let (_, out) = b
            .run(
                &rb,
                &format!(
                    "curl -s -m 5 -w ' %{{http_code}}' -H 'Host: b{i}.other.test' http://{}/",
                    h.ip(3)
                ),
            )
            .await;
        assert!(out.ends_with(" 403"), "{i}: {out}");
    }
    let out = pyout(&b, &rb, &dns_script(&gw, "allowed.test")).await;
    assert!(out.contains("rcode 0 answers 1"), "{out}");
    let (_, out) = b.run(&rb, "curl -s -m 5 http://allowed.test/").await;
    assert!(out.contains("hello"), "{out}");
    a.out(
        &ra,
        "kill $(pgrep -f '^python3 /tmp/flood.py') 2>/dev/null; true",
    )
    .await;
    b.eventually(
        15,
        "all 20 of the other tenant's denials audited",
        || async {
            let s = serde_json::to_string(&audits(&b, &rb, "").await).unwrap();
            (0..20).all(|i| s.contains(&format!("b{i}.other.test")))
        },
    )
    .await;
    // The flood's thousands of distinct denied names cost the runtime's
    // event log a bounded number of `egress` lines, not one per name.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let (mut after_id, mut egress_events) = (0i64, 0usize);
    loop {
        let (st, ev) = a
            .get(&format!(
                "/v1/runtimes/{ra}/events?limit=100&after={after_id}"
            ))
            .await;
        assert_eq!(st, StatusCode::OK, "{ev}");
        let page = ev["data"].as_array().unwrap().clone();
        egress_events += page.iter().filter(|e| e["type"] == "egress").count();
        match page.last().and_then(|e| e["id"].as_i64()) {
            Some(id) if page.len() == 100 && egress_events < 5000 => after_id = id,
            _ => break,
        }
    }
    assert!(
        egress_events <= 200,
        "{egress_events} egress events from one DNS flood"
    );
    let after = rss_kib(pid);
    assert!(
        after < before + 256 * 1024,
        "daemon RSS grew from {before} KiB to {after} KiB"
    );
    // Tenant scoping of the listings.
    let (st, _) = a
        .get(&format!("/v1/audits?category=egress&runtime={rb}"))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = a
        .get(&format!(
            "/v1/runtimes/{}/audits",
            vb["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, all) = a
        .get("/v1/audits?category=egress&limit=1000&kind=dns_query")
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        all["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["runtime_id"] != vb["id"]),
        "tenant A sees tenant B's audits"
    );
    // Nor change, read or lift another tenant's policy.
    let (st, v) = b
        .patch(
            &format!("/v1/runtimes/{ra}"),
            json!({"egress_policy": {"mode": "denylist", "denied_hosts": []}}),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v) = b.get(&format!("/v1/runtimes/{ra}/egress")).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v) = b
        .call(
            reqwest::Method::PUT,
            &format!("/v1/runtimes/{ra}/egress"),
            Some(json!({"mode": "denylist", "denied_hosts": []})),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (_, av) = a.get(&format!("/v1/runtimes/{ra}/egress")).await;
    assert_eq!(av["data"]["mode"], "allowlist", "{av}");
    let (st, _) = d_api_ok(&b).await;
    assert_eq!(st, StatusCode::OK);
}

async fn d_api_ok(c: &Client) -> (StatusCode, Value) {
    c.get("/v1/runtimes").await
}

/// A connection held open across "policy lifted, then put back narrower":
/// the narrower policy must cut it (or refuse its next request) like any
/// other policy change does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opened_before_the_policy_was_lifted_is_cut_when_it_returns() {
    let h = test_hosts(66);
    let d = daemon(&h);
    let c = d.tenant("rtl").await;
    let rt = name("rtl");
    c.create_with(json!({"name": rt, "egress_policy": {"mode": "allowlist", "allowed_hosts": ["allowed.test", "other.test"]}}))
        .await;
    c.out(
        &rt,
        &format!(
            "cat > /tmp/hold.py <<'EOF'\nimport socket, os, time\ns=socket.create_connection(('{}',80),5)\ndef ask():\n  s.sendall(b'GET / HTTP/1.1\\r\\nHost: other.test\\r\\n\\r\\n')\n  s.settimeout(5)\n  d=b''\n  try:\n    while not (b'\\r\\n\\r\\n' in d and d.split(b'\\r\\n\\r\\n',1)[1].endswith(b'\\n')):\n      c=s.recv(4096)\n      if not c:\n        break\n      d+=c\n  except Exception as e:\n    return d.decode('latin1')+' ERR %r' % e\n  return d.decode('latin1')\nopen('/tmp/one','w').write(ask())\nwhile not os.path.exists('/tmp/go'):\n  time.sleep(0.05)\ntry:\n  r=ask()\nexcept Exception as e:\n  r='ERR %r' % e\nopen('/tmp/two.tmp','w').write(r or 'EOF'); os.rename('/tmp/two.tmp','/tmp/two')\nEOF\nnohup python3 /tmp/hold.py >/dev/null 2>&1 &\necho ok",
            h.ip(3)
        ),
    )
    .await;
    c.eventually(10, "the first answer", || async {
        let (_, o) = c.run(&rt, "cat /tmp/one 2>/dev/null").await;
        o.contains("host=other.test")
    })
    .await;
    for pol in [
        json!({"mode": "denylist", "denied_hosts": []}),
        json!({"mode": "allowlist", "allowed_hosts": ["allowed.test"]}),
    ] {
        let (st, v) = c
            .patch(&format!("/v1/runtimes/{rt}"), json!({"egress_policy": pol}))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    c.out(&rt, "touch /tmp/go").await;
    c.eventually(15, "the second answer", || async {
        let (_, o) = c.run(&rt, "cat /tmp/two 2>/dev/null").await;
        !o.is_empty()
    })
    .await;
    let (_, two) = c.run(&rt, "cat /tmp/two").await;
    assert!(
        !two.contains("hello"),
        "other.test still answered after the policy stopped allowing it: {two}"
    );
}

/// One tenant's policy runtimes each try to hold the most gateway connections
/// a runtime may (512, two daemon descriptors each) to an allowed address
/// whose server accepts and never answers: enough together to use every
/// descriptor of the daemon without the tenant and total caps. The daemon
/// must still serve another tenant, its API, creates and allowed traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_held_gateway_connections_do_not_starve_the_daemon() {
    let h = test_hosts(67);
    // A server that accepts and holds every connection, never answering.
    let holder = Command::new("ip")
        .args(["netns", "exec", &h.tn.ns, "/usr/bin/python3", "-c"])
        .arg(
            "import socket, resource\nhard=resource.getrlimit(resource.RLIMIT_NOFILE)[1];resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\nl=socket.socket();l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);l.bind(('0.0.0.0',9000));l.listen(4096)\nheld=[]\nwhile True:\n  held.append(l.accept()[0])",
        )
        .stdout(Stdio::null())
        .spawn();
    let Ok(mut holder) = holder else {
        println!("skipped: no python3 for the holding server");
        return;
    };
    let d = daemon(&h);
    let limit: u64 = std::fs::read_to_string(format!("/proc/{}/limits", d.pid()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // Enough runtimes that their caps together pass the daemon's descriptors.
    let n = (limit / 1024 + 2).min(40) as usize;
    let a = d.tenant("rtha").await;
    let b = d.tenant("rthb").await;
    let pol = json!({"mode": "allowlist", "allowed_hosts": [h.ip(2), "allowed.test"]});
    let mut names = Vec::new();
    for i in 0..n {
        let rt = name(&format!("rtha{i}"));
        let (st, v) = a
            .post(
                "/v1/runtimes",
                json!({"name": rt, "egress_policy": pol, "resources": {"requests": {"vcpus": 0.1, "memory_mib": 64}}}),
            )
            .await;
        if st != StatusCode::OK {
            println!("skipped: runtime {i} of {n} not created ({st}): {v}");
            let _ = holder.kill();
            return;
        }
        names.push(rt);
    }
    let hold = format!(
        "cat > /tmp/hold.py <<'EOF'\nimport socket, time\nheld=[]\nfor i in range(600):\n  try:\n    held.append(socket.create_connection(('{}',9000),3))\n  except Exception:\n    pass\ntime.sleep(120)\nEOF\nnohup python3 /tmp/hold.py >/dev/null 2>&1 &\necho ok",
        h.ip(2)
    );
    for rt in &names {
        a.out(rt, &hold).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    let fds = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .map(|r| r.count())
        .unwrap_or(0);
    println!("daemon descriptors in use: {fds} of {limit}");
    // The tenant holds what its cap allows (a quarter of the gateway's
    // quarter-of-the-descriptors connections, two descriptors each), not more.
    let per_tenant = ((limit / 4).clamp(64, 65_536) / 4).max(16) as usize;
    assert!(
        fds > per_tenant,
        "the attack did not hold its connections: {fds} descriptors"
    );
    assert!(
        fds < (limit / 2) as usize,
        "one tenant's held connections took {fds} of {limit} descriptors"
    );
    // The other tenant: its API, a new runtime, its own policy runtime's
    // allowed traffic.
    let (st, v) = b.get("/v1/runtimes").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let rb = name("rthb");
    let (st, v) = b
        .post(
            "/v1/runtimes",
            json!({"name": rb, "egress_policy": {"mode": "allowlist", "allowed_hosts": ["allowed.test"]}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "another tenant's create: {v}");
    let (_, out) = b.run(&rb, "curl -s -m 5 http://allowed.test/").await;
    assert!(
        out.contains("hello"),
        "another tenant's allowed request: {out}"
    );
    // The refusals are audited, aggregated: the runtimes refused thousands
    // of connections between them have a row or two each saying how many
    // and which cap (the first at once, the rest within 10 s), not one row
    // per attempt.
    let expected = (600 * n).saturating_sub(per_tenant) as u64 / 2;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (refused, refused_rows) = loop {
        let (mut refused, mut rows) = (0u64, 0usize);
        for rt in &names {
            for row in audits(&a, rt, "&kind=tcp_connection").await {
                let t = &row["payload"]["egress"]["tcp_connection"];
                if t["plugin"] != "admission" {
                    continue;
                }
                assert_eq!(
                    (&t["action"], &t["outcome"]),
                    (&json!("deny"), &json!("refused")),
                    "{t}"
                );
                let reason = t["reason"].as_str().unwrap();
                assert!(reason.contains("gateway connections, its most"), "{reason}");
                refused += reason
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
                rows += 1;
            }
        }
        if refused >= expected || std::time::Instant::now() > deadline {
            break (refused, rows);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    };
    println!("{refused} refusals in {refused_rows} audit rows");
    assert!(refused >= expected, "{refused} refusals audited");
    assert!(
        refused_rows <= 3 * names.len(),
        "{refused_rows} refusal rows for {refused} refusals"
    );
    let _ = holder.kill();
}
