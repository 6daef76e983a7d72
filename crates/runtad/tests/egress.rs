//! Egress control end to end (issue 17): a real runtad with `--egress-hosts`,
//! real runtimes, and test hosts in a network namespace this test creates
//! (HTTP, HTTPS with a self-made certificate and a UDP echo on 198.18.N.2 and
//! 198.18.N.3, routed to the host over a veth). Nothing outside it is touched.

mod common;

use std::process::Command;
use std::time::Instant;

use common::{egress_gateway_port_of, egress_sets_of, name, Client, Daemon, TestNet};
use reqwest::StatusCode;
use serde_json::{json, Value};

const SERVER: &str = r#"
import http.server, socketserver, ssl, socket, sys, threading
cert, key = sys.argv[1], sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("hello %s host=%s\n" % (self.connection.getsockname()[0], self.headers.get("Host"))).encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        n = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                n += len(self.rfile.read(size)); self.rfile.readline()
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""): pass
                    break
        else:
            n = len(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        body = ("posted %d host=%s\n" % (n, self.headers.get("Host"))).encode()
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
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 9999))
    while True:
        d, a = u.recvfrom(2048); u.sendto(b"echo " + d, a)
threading.Thread(target=serve, args=(443, True), daemon=True).start()
threading.Thread(target=udp, daemon=True).start()
serve(80, False)
"#;

/// A network namespace with two test-host addresses, torn down on drop.
type TestHosts = common::PyHosts;

fn test_hosts(net: u8) -> TestHosts {
    let tn = TestNet::new("egt", net, &[2, 3]);
    let (ns, peer, veth) = (&tn.ns, &tn.peer, &tn.veth);
    // The private address the tests try lives here too, so even a broken
    // gateway that lets it through reaches nothing but this namespace.
    tn.sh(&format!(
        "ip -n {ns} addr add 172.31.{net}.7/32 dev {peer} && ip route add 172.31.{net}.7/32 dev {veth}"
    ));
    // Likewise the metadata address the escape tests try (tests running
    // at once share the route; the last one up owns it).
    tn.sh(&format!(
        "ip -n {ns} addr add 169.254.169.254/32 dev {peer} && ip route replace 169.254.169.254/32 dev {veth}"
    ));
    TestHosts::start(
        tn,
        "egress",
        SERVER,
        &["allowed.test", "other.test", "a.wild.test"],
        &format!(
            "# test hosts\n198.18.{net}.2 allowed.test a.wild.test wild.test\n198.18.{net}.3 other.test\n172.31.{net}.7 private.test\n"
        ),
    )
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

/// Whether an audit of `kind` with `action` mentions `needle` (host or address).
fn audited(list: &[Value], kind: &str, action: &str, needle: &str) -> bool {
    list.iter().any(|a| {
        let e = &a["payload"]["egress"];
        e["kind"] == kind && e[kind]["action"] == action && e[kind].to_string().contains(needle)
    })
}

fn daemon(h: &TestHosts) -> Daemon {
    Daemon::start_new(&["--egress-hosts", h.hosts_file.to_str().unwrap()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_by_name_denies_everything_else_and_audits_it() {
    let h = test_hosts(41);
    let d = daemon(&h);
    let c = d.tenant("eg").await;
    let rt = name("eg");
    let v = c
        .create_with(json!({"name": rt, "egress_policy": {"enabled": true, "allowed_hosts": ["Allowed.TEST"]}}))
        .await;
    assert_eq!(v["egress_policy"]["enabled"], true, "{v}");
    assert_eq!(v["egress_policy"]["mode"], "allowlist", "{v}");
    assert_eq!(v["egress_policy"]["allowed_hosts"], json!(["allowed.test"]));

    // Allowed by name, over HTTP and TLS (SNI), resolved by the gateway's DNS.
    let (code, out) = c.run(&rt, "curl -s -m 5 http://allowed.test/").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("hello {}", h.ip(2))), "{out}");
    let (code, out) = c.run(&rt, "curl -sk -m 5 https://allowed.test/").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("hello"), "{out}");
    let (code, out) = c.run(&rt, "getent hosts allowed.test").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&h.ip(2)), "{out}");

    // Another name: a 403 that says which policy denied which host.
    let (_, out) = c
        .run(
            &rt,
            &format!(
                "curl -s -m 5 -w ' %{{http_code}}' --resolve other.test:80:{} http://other.test/",
                h.ip(3)
            ),
        )
        .await;
    assert!(out.ends_with(" 403"), "{out}");
    assert!(
        out.contains("allowlist") && out.contains("other.test"),
        "{out}"
    );
    // Its DNS is not answered.
    let (code, _) = c.run(&rt, "getent hosts other.test").await;
    assert_ne!(code, 0);
    // TLS to a denied name is refused at once, not left hanging.
    let t0 = Instant::now();
    let (code, out) = c
        .run(
            &rt,
            &format!(
                "curl -sk -m 10 --resolve other.test:443:{} https://other.test/",
                h.ip(3)
            ),
        )
        .await;
    assert_ne!(code, 0, "{out}");
    assert!(
        t0.elapsed().as_secs() < 5,
        "TLS denial took {:?}",
        t0.elapsed()
    );

    // Bypass attempts.
    // Raw IP, no name.
    let (_, out) = c
        .run(
            &rt,
            &format!("curl -s -m 5 -w ' %{{http_code}}' http://{}/", h.ip(3)),
        )
        .await;
    assert!(out.ends_with(" 403"), "raw IP: {out}");
    // An allowed Host header aimed at a denied address reaches the allowed
    // host's own address (the gateway resolves the name itself), never .3.
    let (_, out) = c
        .run(
            &rt,
            &format!("curl -s -m 5 -H 'Host: allowed.test' http://{}/", h.ip(3)),
        )
        .await;
    assert!(
        out.contains(&format!("hello {}", h.ip(2))) && !out.contains(&h.ip(3)),
        "{out}"
    );
    // A forged SNI for the allowed name towards the denied address: the same.
    let (_, out) = c
        .run(
            &rt,
            &format!(
                "curl -sk -m 5 --resolve allowed.test:443:{} https://allowed.test/",
                h.ip(3)
            ),
        )
        .await;
    assert!(!out.contains(&h.ip(3)), "{out}");
    // Host/SNI mismatch: an allowed SNI with a denied Host is the TLS layer's
    // business; a denied name in the Host header over plain HTTP is refused.
    let (_, out) = c
        .run(
            &rt,
            &format!(
                "curl -s -m 5 -w ' %{{http_code}}' -H 'Host: other.test' http://{}/",
                h.ip(2)
            ),
        )
        .await;
    assert!(out.ends_with(" 403"), "{out}");
    // CONNECT through the allowed host.
    let (_, out) = c
        .run(
            &rt,
            &format!(
                "curl -s -m 5 -w ' %{{http_code}}' -p -x http://allowed.test:80 http://{}/",
                h.ip(3)
            ),
        )
        .await;
    assert!(!out.contains(&format!("hello {}", h.ip(3))), "{out}");
    // DNS to another resolver (the test host) is answered by the gateway:
    // the denied name still does not resolve.
    let q = format!(
        "python3 -c \"import socket;s=socket.socket(2,2);s.settimeout(3);q=b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x05other\\x04test\\x00\\x00\\x01\\x00\\x01';s.sendto(q,('{}',53));r=s.recv(512);print('rcode',r[3]&15,'answers',r[7])\"",
        h.ip(2)
    );
    let (_, out) = c.run(&rt, &q).await;
    assert!(out.contains("rcode 3 answers 0"), "{out}");
    // Other UDP is dropped.
    let u = format!(
        "python3 -c \"import socket;s=socket.socket(2,2);s.settimeout(2);s.sendto(b'hi',('{}',9999));print(s.recv(64))\"",
        h.ip(2)
    );
    let (code, out) = c.run(&rt, &u).await;
    assert!(code != 0 && !out.contains("echo"), "UDP got through: {out}");
    // DNS TXT exfiltration: a denied name is NXDOMAIN (never asked
    // upstream), and even an allowed name gets no TXT data back.
    let txt = |qname: &str| {
        let labels: String = qname
            .split('.')
            .map(|l| format!("\\x{:02x}{l}", l.len()))
            .collect();
        format!(
            "python3 -c \"import socket;s=socket.socket(2,2);s.settimeout(3);q=b'\\x00\\x07\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00{labels}\\x00\\x00\\x10\\x00\\x01';s.sendto(q,('{}',53));r=s.recv(512);print('rcode',r[3]&15,'answers',r[7])\"",
            h.ip(2)
        )
    };
    let (_, out) = c.run(&rt, &txt("c2VjcmV0.other.test")).await;
    assert!(out.contains("rcode 3 answers 0"), "{out}");
    let (_, out) = c.run(&rt, &txt("allowed.test")).await;
    assert!(out.contains("rcode 0 answers 0"), "{out}");
    // DNS over TCP to another resolver, and DoH to a test address: both are
    // TCP to an address the policy does not name.
    let (code, _) = c.run(&rt,
        &format!("python3 -c \"import socket;s=socket.create_connection(('{}',53),3);s.sendall(b'\\x00\\x1d');print(s.recv(10))\"", h.ip(2)),
    )
    .await;
    assert_ne!(code, 0, "DNS over TCP got an answer");
    let (code, out) = c
        .run(&rt, &format!("curl -sk -m 5 https://{}/dns-query", h.ip(3)))
        .await;
    assert_ne!(code, 0, "DoH: {out}");
    // --noproxy changes nothing (there is no proxy to bypass); IPv6 has no
    // route at all.
    let (_, out) = c.run(&rt,
        &format!("curl -s -m 5 --noproxy '*' -w ' %{{http_code}}' --resolve other.test:80:{} http://other.test/", h.ip(3)),
    )
    .await;
    assert!(out.ends_with(" 403"), "{out}");
    let (code, _) = c.run(&rt, "curl -s -m 3 -6 http://[2001:db8::1]/").await;
    assert_ne!(code, 0);
    // QUIC is UDP 443: dropped the same way.
    let quic = format!(
        "python3 -c \"import socket;s=socket.socket(2,2);s.settimeout(1);s.sendto(b'quic',('{}',443));print(s.recv(64))\"",
        h.ip(2)
    );
    let (code, _) = c.run(&rt, &quic).await;
    assert_ne!(code, 0);
    // Metadata, the host's own API port, a private address the hosts file
    // names but the policy does not.
    for url in [
        "http://169.254.169.254/latest/meta-data/".to_string(),
        format!(
            "http://10.{}.0.1:{}/healthz",
            d.subnet_octet,
            d.endpoint.rsplit(':').next().unwrap()
        ),
        format!("http://{}/", h.ip(1)),
    ] {
        let (_, out) = c
            .run(&rt, &format!("curl -s -m 5 -w ' %{{http_code}}' {url}"))
            .await;
        assert!(out.ends_with(" 403"), "{url}: {out}");
    }
    // Another runtime: on the same bridge, so isolated ports drop it at
    // layer 2 before any rule sees it (no audit entry; nothing gets through).
    let other = name("eg-peer");
    let pv = c.create_with(json!({"name": other})).await;
    let peer_ip = pv["ip"].as_str().unwrap().to_string();
    c.sh(
        &other,
        "nohup python3 -m http.server 8080 >/dev/null 2>&1 &",
    )
    .await;
    let (code, out) = c
        .run(
            &rt,
            &format!("curl -s -m 3 -w ' %{{http_code}}' http://{peer_ip}:8080/"),
        )
        .await;
    assert!(code != 0 && !out.contains("200"), "peer: {out}");
    // The open runtime next to it is untouched: raw IP works, through NAT.
    let (code, out) = c
        .run(&other, &format!("curl -s -m 5 http://{}/", h.ip(3)))
        .await;
    assert_eq!(code, 0, "{out}");

    // Every decision is in the audit, in the v1 shape.
    let list = audits(&c, &rt, "").await;
    assert!(
        audited(&list, "tcp_connection", "allow", "allowed.test"),
        "{list:?}"
    );
    assert!(
        audited(&list, "http_request", "deny", "other.test"),
        "{list:?}"
    );
    assert!(
        audited(&list, "tcp_connection", "deny", &format!("{}:53", h.ip(2))),
        "DNS over TCP not audited: {list:?}"
    );
    assert!(
        audited(&list, "tcp_connection", "deny", "169.254.169.254"),
        "{list:?}"
    );
    for a in &list {
        assert_eq!(a["category"], "egress");
        assert!(a["observed_unix_ms"].as_i64().unwrap() > 0);
        assert_eq!(a["runtime_id"], v["id"]);
    }
    // Dropped datagrams are audited, aggregated (read every 2 s).
    c.eventually(10, "a UDP drop audit", || async {
        let l = audits(&c, &rt, "").await;
        l.iter().any(|a| {
            let t = &a["payload"]["egress"]["tcp_connection"];
            t["transport"] == "udp" && t["action"] == "deny"
        })
    })
    .await;
    // Denials are in the runtime's events too (once a minute per host).
    let ev = c.get(&format!("/v1/runtimes/{rt}/events")).await.1;
    let egress_events: Vec<&Value> = ev["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "egress")
        .collect();
    assert!(
        egress_events
            .iter()
            .any(|e| e["message"].as_str().unwrap_or("").contains("other.test")),
        "{ev}"
    );
    let other_test = egress_events
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("denied other.test")
        })
        .count();
    assert!(other_test <= 2, "not rate limited: {ev}");
    let dns = audits(&c, &rt, "&kind=dns_query").await;
    assert!(audited(&dns, "dns_query", "deny", "other.test"), "{dns:?}");
    assert!(
        audited(&dns, "dns_query", "allow", "allowed.test"),
        "{dns:?}"
    );
    // Pages: limit and cursor.
    let (_, p1) = c
        .get(&format!("/v1/audits?category=egress&runtime={rt}&limit=2"))
        .await;
    assert_eq!(p1["data"].as_array().unwrap().len(), 2);
    let cur = p1["pagination"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, p2) = c
        .get(&format!(
            "/v1/audits?category=egress&runtime={rt}&limit=2&after={cur}"
        ))
        .await;
    assert_ne!(p1["data"][0]["id"], p2["data"][0]["id"]);
    // Another tenant sees nothing of it.
    let stranger = d.tenant("eg-x").await;
    let (st, _) = stranger
        .get(&format!("/v1/audits?category=egress&runtime={rt}"))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // A socket flood is capped per runtime; the daemon stays responsive.
    let flood = r#"python3 -c "
import socket
ok = 0
held = []
for i in range(600):
    try:
        s = socket.create_connection(('allowed.test', 80), 3)
        s.sendall(b'GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n')
        s.settimeout(3)
        if s.recv(64):
            ok += 1
        held.append(s)
    except Exception:
        pass
print('ok', ok)
""#;
    let (_, out) = c.run(&rt, flood).await;
    let ok: usize = out
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!((100..=512).contains(&ok), "{out}");
    let (st, _) = c.get(&format!("/v1/runtimes/{rt}")).await;
    assert_eq!(st, StatusCode::OK);
    let (code, out) = c.run(&rt, "curl -s -m 5 http://allowed.test/").await;
    assert_eq!(code, 0, "the cap is released when the flood ends: {out}");

    // Deleted: its rules go with it.
    let (st, _) = c.delete(&format!("/v1/runtimes/{rt}")).await;
    assert!(st.is_success());
    assert_eq!(
        egress_sets_of(v["ip"].as_str().unwrap()),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denylist_wildcard_ip_cidr_and_live_changes() {
    let h = test_hosts(42);
    let d = daemon(&h);
    let c = d.tenant("eg2").await;
    let rt = name("eg2");
    // URLs are refused naming the entry; contradicting shapes are 422.
    let (st, v) = c
        .post("/v1/runtimes", json!({"name": rt, "egress_policy": {"mode": "allowlist", "allowed_hosts": ["https://allowed.test/x"]}}))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v.to_string().contains("https://allowed.test/x"), "{v}");
    let (st, v) = c
        .post(
            "/v1/runtimes",
            json!({"name": rt, "egress_policy": {"enabled": true, "mode": "denylist"}}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    let v = c
        .create_with(json!({"name": rt, "egress_policy": {"mode": "denylist", "allowed_hosts": [], "denied_hosts": ["other.test"]}}))
        .await;
    assert_eq!(v["egress_policy"]["enabled"], false, "{v}");
    assert_eq!(v["egress_policy"]["denied_hosts"], json!(["other.test"]));
    let (code, out) = c.run(&rt, "curl -s -m 5 http://allowed.test/").await;
    assert_eq!(code, 0, "{out}");
    let (_, out) = c
        .run(
            &rt,
            &format!(
                "curl -s -m 5 -w ' %{{http_code}}' --resolve other.test:80:{} http://other.test/",
                h.ip(3)
            ),
        )
        .await;
    assert!(out.contains("denylist") && out.ends_with(" 403"), "{out}");
    let (code, _) = c.run(&rt, "getent hosts other.test").await;
    assert_ne!(code, 0);
    // A denylist still keeps private ranges and the host closed.
    let (_, out) = c
        .run(
            &rt,
            &format!(
                "curl -s -m 5 -w ' %{{http_code}}' http://172.31.{}.7/",
                h.tn.net
            ),
        )
        .await;
    assert!(out.ends_with(" 403"), "{out}");

    // An open keep-alive connection to allowed.test, held by a program.
    c.sh(
        &rt,
        r#"nohup python3 -c "
import socket
s = socket.create_connection(('allowed.test', 80))
s.sendall(b'GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n')
buf = b''
while b'\r\n\r\n' not in buf:
    buf += s.recv(4096)
# The head and the body may come in separate reads: take all of the answer.
s.settimeout(0.5)
try:
    while True:
        if not s.recv(4096):
            break
except socket.timeout:
    pass
open('/tmp/ka', 'w').write('open')
s.settimeout(30)
try:
    d = s.recv(10)
except Exception as e:
    d = repr(e)
open('/tmp/ka', 'w').write('closed %r' % (d,))
" >/tmp/ka.log 2>&1 &"#,
    )
    .await;
    let mut held = String::new();
    for _ in 0..100 {
        held = c.sh(&rt, "cat /tmp/ka 2>/dev/null").await["stdout"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if !held.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if held != "open" {
        let log = c.sh(&rt, "cat /tmp/ka.log").await;
        panic!("the held connection: {held:?} {log}");
    }

    // Live: wildcard + IP allowlist (0.1.21 shape) on the open connection path.
    let (st, v) = c
        .patch(&format!("/v1/runtimes/{rt}"), json!({"egress_policy": {"mode": "allowlist", "allowed_hosts": ["*.wild.test", h.ip(3)], "denied_hosts": []}}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["egress_policy"]["mode"], "allowlist");
    // The held connection to a name the new policy denies is cut at once.
    let t0 = Instant::now();
    c.eventually(5, "the held connection to be cut", || async {
        c.sh(&rt, "cat /tmp/ka").await["stdout"]
            .as_str()
            .is_some_and(|s| s.starts_with("closed"))
    })
    .await;
    assert!(t0.elapsed().as_secs() < 3, "cut after {:?}", t0.elapsed());
    let (code, out) = c.run(&rt, "curl -s -m 5 http://a.wild.test/").await;
    assert_eq!(code, 0, "{out}");
    let (_, out) = c
        .run(
            &rt,
            &format!(
                "curl -s -m 5 -w ' %{{http_code}}' --resolve wild.test:80:{} http://wild.test/",
                h.ip(2)
            ),
        )
        .await;
    assert!(
        out.ends_with(" 403"),
        "wildcard matched its own base: {out}"
    );
    let (_, out) = c
        .run(
            &rt,
            &format!(
            "curl -s -m 5 -w ' %{{http_code}}' --resolve allowed.test:80:{} http://allowed.test/",
            h.ip(2)
        ),
        )
        .await;
    assert!(out.ends_with(" 403"), "{out}");
    let (code, out) = c
        .run(&rt, &format!("curl -s -m 5 http://{}/", h.ip(3)))
        .await;
    assert_eq!(code, 0, "IP entry: {out}");
    let (_, out) = c
        .run(
            &rt,
            &format!("curl -s -m 5 -w ' %{{http_code}}' http://{}/", h.ip(2)),
        )
        .await;
    assert!(out.ends_with(" 403"), "{out}");

    // CIDR, 0.1.1 shape.
    let (st, _) = c
        .patch(&format!("/v1/runtimes/{rt}"), json!({"egress_policy": {"enabled": true, "allowed_hosts": [format!("198.18.{}.0/24", h.tn.net)]}}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (code, out) = c
        .run(&rt, &format!("curl -s -m 5 http://{}/", h.ip(2)))
        .await;
    assert_eq!(code, 0, "CIDR: {out}");
    let (_, out) = c
        .run(
            &rt,
            "curl -s -m 5 -w ' %{http_code}' http://169.254.169.254/",
        )
        .await;
    assert!(out.ends_with(" 403"), "{out}");

    // A policy survives a kill -9 and a restart (rules rebuilt).
    d.kill9();
    d.spawn();
    let (_, out) = c
        .run(
            &rt,
            &format!(
            "curl -s -m 5 -w ' %{{http_code}}' --resolve allowed.test:80:{} http://allowed.test/",
            h.ip(2)
        ),
        )
        .await;
    assert!(out.ends_with(" 403"), "after restart: {out}");
    let (code, out) = c
        .run(&rt, &format!("curl -s -m 5 http://{}/", h.ip(3)))
        .await;
    assert_eq!(code, 0, "after restart: {out}");

    // Back to open: the plain path, no rules left for it.
    let (st, v) = c
        .patch(
            &format!("/v1/runtimes/{rt}"),
            json!({"egress_policy": {"enabled": false, "allowed_hosts": []}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["egress_policy"]["mode"], "denylist");
    let (code, out) = c
        .run(&rt, &format!("curl -s -m 5 http://{}/", h.ip(2)))
        .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        egress_sets_of(v["data"]["ip"].as_str().unwrap()),
        Vec::<String>::new()
    );
}

/// A runtime cannot pass for another runtime: with `IP_FREEBIND` (no
/// capability needed) a program could bind a neighbour's address and send
/// from it, and the host's rules tell policy runtimes apart by source address,
/// so a datagram sent that way would leave on an open neighbour's path. The
/// seccomp profile refuses `IP_FREEBIND` (and `IPV6_FREEBIND`); without it, and
/// without `IP_TRANSPARENT` (no CAP_NET_ADMIN), a foreign address cannot be
/// bound at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_runtime_cannot_send_as_an_open_neighbour() {
    let h = test_hosts(43);
    let d = daemon(&h);
    let c = d.tenant("spoof").await;
    let (locked, open) = (name("locked"), name("open"));
    c.create_with(json!({"name": locked, "egress_policy": {"enabled": true, "allowed_hosts": ["allowed.test"]}}))
        .await;
    c.create(&open, 128).await;
    let open_ip = c.out(&open, "hostname -I").await.trim().to_string();
    let locked_ip = c.out(&locked, "hostname -I").await.trim().to_string();
    let script = |other: &str| {
        format!(
            "python3 -c \"
import errno, socket
res = []
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for name, opt in (('freebind', 15), ('transparent', 19)):
    try:
        u.setsockopt(socket.SOL_IP, opt, 1); res.append(name + ' set')
    except OSError as e:
        res.append(name + ' ' + errno.errorcode[e.errno])
try:
    u.bind(('{other}', 40000)); res.append('bound')
    u.sendto(b'spoofed', ('{}', 9999)); res.append('sent')
except OSError as e:
    res.append('bind ' + errno.errorcode[e.errno])
print(' '.join(res))
\"",
            h.ip(3)
        )
    };
    for (rt, other) in [(&locked, &open_ip), (&open, &locked_ip)] {
        let (_, out) = c.run(rt, &script(other)).await;
        assert_eq!(
            out.trim(),
            "freebind EPERM transparent EPERM bind EADDRNOTAVAIL",
            "{rt} could take another runtime's address"
        );
    }
}

fn audit_ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

/// Audits live in the store: a daemon killed with SIGKILL comes back with
/// every decision it had recorded (same ids, same content), goes on numbering
/// after them, and a deleted runtime's audits are gone, from the tenant-wide
/// listing too, and stay gone after another restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audits_survive_kill9_and_go_with_the_runtime() {
    let h = test_hosts(44);
    let d = daemon(&h);
    let c = d.tenant("egk").await;
    let rt = name("egk");
    let v = c
        .create_with(json!({"name": rt, "egress_policy": {"enabled": true, "allowed_hosts": ["allowed.test"]}}))
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    let (code, out) = c.run(&rt, "curl -s -m 5 http://allowed.test/").await;
    assert_eq!(code, 0, "{out}");
    let (_, out) = c
        .run(
            &rt,
            &format!(
                "curl -s -m 5 -w ' %{{http_code}}' --resolve other.test:80:{} http://other.test/",
                h.ip(3)
            ),
        )
        .await;
    assert!(out.ends_with(" 403"), "{out}");
    let before = audits(&c, &rt, "").await;
    assert!(
        audited(&before, "http_request", "allow", "allowed.test"),
        "{before:?}"
    );
    assert!(
        audited(&before, "http_request", "deny", "other.test"),
        "{before:?}"
    );
    let dns_before = audits(&c, &rt, "&kind=dns_query").await;
    assert!(!dns_before.is_empty());

    d.kill9();
    d.spawn();
    let after = audits(&c, &rt, "").await;
    for a in &before {
        assert!(after.contains(a), "{a} lost in the restart: {after:?}");
    }
    let dns_after = audits(&c, &rt, "&kind=dns_query").await;
    for a in &dns_before {
        assert!(dns_after.contains(a), "{a} lost in the restart");
    }
    // The policy came back with the daemon, and new decisions are numbered
    // after the old ones (ids are cursors).
    let newest = audit_ids(&after).into_iter().max().unwrap();
    let (_, out) = c
        .run(
            &rt,
            &format!(
            "curl -s -m 5 -w ' %{{http_code}}' --resolve other.test:80:{} http://other.test/again",
            h.ip(3)
        ),
        )
        .await;
    assert!(out.ends_with(" 403"), "{out}");
    let again = audits(&c, &rt, "").await;
    let fresh: Vec<&Value> = again
        .iter()
        .filter(|a| a["id"].as_str().unwrap() > newest.as_str())
        .collect();
    assert!(
        fresh
            .iter()
            .any(|a| a["payload"]["egress"]["http_request"]["path"] == "/again"),
        "{again:?}"
    );
    // The tenant-wide listing has them too.
    let (_, all) = c.get("/v1/audits?category=egress&limit=1000").await;
    assert!(all["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["runtime_id"] == id.as_str()));

    let (st, _) = c.delete(&format!("/v1/runtimes/{rt}")).await;
    assert!(st.is_success());
    let gone = |v: &Value| {
        !v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["runtime_id"] == id.as_str())
    };
    for extra in ["", "&kind=dns_query", "&kind=http_request"] {
        let (_, all) = c
            .get(&format!("/v1/audits?category=egress&limit=1000{extra}"))
            .await;
        assert!(gone(&all), "{extra}: {all}");
    }
    let (st, _) = c
        .get(&format!("/v1/audits?category=egress&runtime={id}"))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    d.kill9();
    d.spawn();
    let (_, all) = c
        .get("/v1/audits?category=egress&limit=1000&kind=dns_query")
        .await;
    assert!(gone(&all), "{all}");
}

/// The Python helper the keep-alive test runs in the runtime: one TCP
/// connection, several requests on it, every response read back as
/// `status body`.
const KEEPALIVE: &str = r#"
import socket, sys
def req(host, method="GET", extra=""):
    return ("%s / HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (method, host, extra)).encode()
def read(f):
    status = f.readline().decode()
    if not status:
        return "EOF"
    headers = {}
    while True:
        l = f.readline().decode()
        if l in ("\r\n", ""):
            break
        k, v = l.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    body = f.read(int(headers.get("content-length", "0"))).decode()
    return status.split(" ")[1] + " " + body.strip()
def conn(*chunks, reads=2):
    s = socket.create_connection(("allowed.test", 80), 5)
    s.settimeout(8)
    f = s.makefile("rb")
    out = []
    for c in chunks:
        s.sendall(c)
        if len(chunks) > 1:
            out.append(read(f))
    while len(out) < reads:
        out.append(read(f))
    s.close()
    return out
case = sys.argv[1]
if case == "sequential":
    r = conn(req("allowed.test"), req("other.test"))
elif case == "pipelined":
    r = conn(req("allowed.test") + req("other.test"))
elif case == "chunked":
    body = b"5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\n\r\n"
    r = conn(req("allowed.test", "POST", "Transfer-Encoding: chunked\r\n") + body + req("other.test"))
elif case == "length":
    hidden = req("other.test")
    r = conn(req("allowed.test", "POST", "Content-Length: %d\r\n" % len(hidden)) + hidden + req("allowed.test"))
elif case == "samename":
    r = conn(req("allowed.test"), req("a.wild.test"))
elif case == "smuggle":
    r = conn(req("allowed.test", "POST", "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n") + b"0\r\n\r\n", reads=1)
elif case == "barelf":
    r = conn(req("allowed.test"), b"GET / HTTP/1.1\r\nHost: allowed.test\nHost: other.test\r\n\r\n")
for x in r:
    print(x.replace("\n", " "))
"#;

/// Every request on a kept-alive connection is checked, not only the first:
/// the first request to the allowed host is answered, the second on the same
/// connection naming a denied host gets the gateway's 403 (never reaching the
/// server) and is audited, whether it was sent after the first answer or
/// pipelined with it, after a chunked or a sized body; a second allowed name
/// on a connection opened for another is refused too (the upstream is the
/// first name's address); heads another parser could read differently are
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_on_a_kept_alive_connection_is_checked() {
    let h = test_hosts(45);
    let d = daemon(&h);
    let c = d.tenant("egka").await;
    let rt = name("egka");
    c.create_with(json!({"name": rt, "egress_policy": {"mode": "allowlist", "allowed_hosts": ["allowed.test", "*.wild.test"]}}))
        .await;
    c.out(&rt, &format!("cat > /tmp/ka.py <<'EOF'\n{KEEPALIVE}\nEOF"))
        .await;
    let ka = |case: &'static str| {
        let c = &c;
        let rt = &rt;
        async move {
            let (code, out) = c.run(rt, &format!("python3 /tmp/ka.py {case}")).await;
            assert_eq!(code, 0, "{case}: {out}");
            out.lines().map(str::to_string).collect::<Vec<String>>()
        }
    };
    let hello = format!("200 hello {} host=allowed.test", h.ip(2));
    let denied = |l: &str| {
        l.starts_with("403 runta egress: the allowlist policy") && l.contains("other.test")
    };
    for case in ["sequential", "pipelined"] {
        let r = ka(case).await;
        assert_eq!(r.len(), 2, "{case}: {r:?}");
        assert_eq!(r[0], hello, "{case}: {r:?}");
        assert!(denied(&r[1]), "{case}: {r:?}");
    }
    let r = ka("chunked").await;
    assert_eq!(r[0], "200 posted 8 host=allowed.test", "{r:?}");
    assert!(denied(&r[1]), "{r:?}");
    // A request hidden in a sized body is body to the server as well.
    let r = ka("length").await;
    assert!(r[0].starts_with("200 posted "), "{r:?}");
    assert_eq!(r[1], hello, "{r:?}");
    let r = ka("samename").await;
    assert_eq!(r[0], hello, "{r:?}");
    assert!(
        r[1].starts_with("403 ")
            && r[1].contains("a.wild.test on a connection opened for allowed.test"),
        "{r:?}"
    );
    let r = ka("smuggle").await;
    assert!(
        r[0].starts_with("403 ") && r[0].contains("Transfer-Encoding and Content-Length"),
        "{r:?}"
    );
    let r = ka("barelf").await;
    assert_eq!(r[0], hello, "{r:?}");
    assert!(
        r[1].starts_with("403 ") && r[1].contains("malformed"),
        "{r:?}"
    );

    let list = audits(&c, &rt, "").await;
    let http: Vec<&Value> = list
        .iter()
        .map(|a| &a["payload"]["egress"])
        .filter(|e| e["kind"] == "http_request")
        .map(|e| &e["http_request"])
        .collect();
    let denied_other = http
        .iter()
        .filter(|r| r["host"] == "other.test" && r["action"] == "deny" && r["status"] == 403)
        .count();
    assert!(denied_other >= 3, "{http:?}");
    assert!(
        http.iter()
            .any(|r| r["host"] == "a.wild.test" && r["action"] == "deny"),
        "{http:?}"
    );
    let allowed = http
        .iter()
        .filter(|r| r["host"] == "allowed.test" && r["action"] == "allow")
        .count();
    assert!(allowed >= 7, "{http:?}");
    assert!(
        audited(
            &list,
            "tcp_connection",
            "deny",
            "a later request on the connection was refused"
        ),
        "{list:?}"
    );
}

/// The gateway resolves every name itself at every connection, so an allowed
/// name whose answer changes to an address no policy opens (metadata,
/// loopback, the runtime bridge, the host) is not connected to, however the
/// program found the old address; and a name that resolves to such an address
/// from the start is refused, over HTTP, TLS and DNS. (The operator's hosts
/// file is trusted for private ranges, never for these; a system-resolver
/// answer in a private range is refused too: unit test
/// `egress::gateway::tests::a_system_answer_in_a_private_range_is_rebinding`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_or_always_denied_answer_is_never_connected_to() {
    let h = test_hosts(46);
    let d = daemon(&h);
    let bridge = format!("10.{}.0.1", d.subnet_octet);
    let hosts = std::fs::read_to_string(&h.hosts_file).unwrap();
    let names = [
        ("meta.test", "169.254.169.254".to_string()),
        ("loop.test", "127.0.0.1".to_string()),
        ("bridge.test", bridge.clone()),
        ("self.test", h.ip(1)),
    ];
    let extra: String = names.iter().map(|(n, ip)| format!("{ip} {n}\n")).collect();
    std::fs::write(&h.hosts_file, format!("{hosts}{extra}")).unwrap();
    let c = d.tenant("egrb").await;
    let rt = name("egrb");
    let mut allowed = vec!["allowed.test".to_string()];
    allowed.extend(names.iter().map(|(n, _)| n.to_string()));
    c.create_with(
        json!({"name": rt, "egress_policy": {"mode": "allowlist", "allowed_hosts": allowed}}),
    )
    .await;
    // The daemon re-reads the hosts file every 2 s: wait until it knows the
    // new names.
    c.eventually(15, "the hosts file to be re-read", || async {
        let (_, out) = c
            .run(
                &rt,
                &format!(
                    "curl -s -m 5 --resolve meta.test:80:{} http://meta.test/",
                    h.ip(2)
                ),
            )
            .await;
        out.contains("resolves to")
    })
    .await;
    // Named in the policy, resolving into an always-denied range: refused,
    // whatever address the program aims at.
    for (n, ip) in &names {
        let (_, out) = c
            .run(
                &rt,
                &format!(
                    "curl -s -m 5 -w ' %{{http_code}}' --resolve {n}:80:{} http://{n}/",
                    h.ip(2)
                ),
            )
            .await;
        assert!(
            out.ends_with(" 403") && !out.contains("hello"),
            "{n}: {out}"
        );
        assert!(out.contains(&format!("resolves to {ip}")), "{n}: {out}");
        let (code, out) = c
            .run(
                &rt,
                &format!("curl -sk -m 5 --resolve {n}:443:{} https://{n}/", h.ip(2)),
            )
            .await;
        assert!(code != 0 && !out.contains("hello"), "{n} over TLS: {out}");
        let (code, out) = c.run(&rt, &format!("getent hosts {n}")).await;
        assert_ne!(code, 0, "{n} resolved in the runtime: {out}");
    }
    // Rebinding: allowed.test first answers the test host, then metadata;
    // a program holding the old address is still not let through.
    let (code, out) = c.run(&rt, "curl -s -m 5 http://allowed.test/").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("hello {}", h.ip(2))), "{out}");
    for target in ["169.254.169.254", "127.0.0.1", bridge.as_str()] {
        let hosts = std::fs::read_to_string(&h.hosts_file).unwrap();
        let rebound: String = hosts
            .lines()
            .map(|l| {
                if l.contains(" allowed.test") {
                    format!("{target} allowed.test\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&h.hosts_file, rebound).unwrap();
        let cmd = format!(
            "curl -s -m 5 -w ' %{{http_code}}' --resolve allowed.test:80:{} http://allowed.test/rebound",
            h.ip(2)
        );
        let last = std::sync::Mutex::new(String::new());
        c.eventually(15, "the gateway to see the new answer", || {
            let (c, rt, cmd, last) = (&c, &rt, &cmd, &last);
            async move {
                let (_, out) = c.run(rt, cmd).await;
                let done = out.contains(&format!("resolves to {target}"));
                *last.lock().unwrap() = out;
                done
            }
        })
        .await;
        let last = last.into_inner().unwrap();
        assert!(
            last.contains(&format!("allowed.test resolves to {target}")) && !last.contains("hello"),
            "{target}: {last}"
        );
        let (code, out) = c
            .run(
                &rt,
                &format!(
                    "curl -sk -m 5 --resolve allowed.test:443:{} https://allowed.test/",
                    h.ip(2)
                ),
            )
            .await;
        assert!(
            code != 0 && !out.contains("hello"),
            "{target} over TLS: {out}"
        );
    }
    let list = audits(&c, &rt, "").await;
    for (n, ip) in &names {
        assert!(
            audited(
                &list,
                "tcp_connection",
                "deny",
                &format!("{n} resolves to {ip}")
            ),
            "{n}: {list:?}"
        );
    }
    assert!(
        audited(
            &list,
            "http_request",
            "deny",
            "allowed.test resolves to 169.254.169.254"
        ),
        "{list:?}"
    );
    let dns = audits(&c, &rt, "&kind=dns_query").await;
    assert!(audited(&dns, "dns_query", "deny", "meta.test"), "{dns:?}");
}

/// A tiny static ICMP echo sender: a ping socket, else a raw one; prints
/// `reply`, `timeout`, or `nosocket <errno of ping socket> <errno of raw>`.
const ICMP_SENDER: &str = r#"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
static unsigned short sum(void *b, int n) {
    unsigned int s = 0; unsigned short *p = b;
    for (; n > 1; n -= 2) s += *p++;
    if (n) s += *(unsigned char *)p;
    s = (s >> 16) + (s & 0xffff); s += s >> 16;
    return (unsigned short)~s;
}
int main(int argc, char **argv) {
    struct sockaddr_in to; memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    if (argc < 2 || inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) return 2;
    int raw = 0, s = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP), e1 = errno;
    if (s < 0) { raw = 1; s = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP); }
    if (s < 0) { printf("nosocket %d %d\n", e1, errno); return 0; }
    for (int i = 0; i < 3; i++) {
        unsigned char pkt[64]; memset(pkt, 0, sizeof pkt);
        struct icmphdr *h = (struct icmphdr *)pkt;
        h->type = ICMP_ECHO; h->un.echo.id = htons(0x7274); h->un.echo.sequence = htons(i + 1);
        h->checksum = sum(pkt, sizeof pkt);
        sendto(s, pkt, sizeof pkt, 0, (struct sockaddr *)&to, sizeof to);
        struct pollfd pf = { s, POLLIN, 0 };
        while (poll(&pf, 1, 700) > 0) {
            unsigned char buf[1500]; ssize_t n = recv(s, buf, sizeof buf, 0);
            if (n <= 0) break;
            int off = raw ? (buf[0] & 15) * 4 : 0;
            if (n > off && buf[off] == ICMP_ECHOREPLY) { printf("reply\n"); return 0; }
        }
    }
    printf("timeout\n");
    return 0;
}
"#;

/// ICMP: no program in a runtime can send an echo (no NET_RAW, ping sockets
/// off: docs/security.md), policy or not — checked with a static sender
/// copied in through the files API. The host-side rule is checked on its
/// own by sending from the runtime's network namespace with the host's
/// privileges: without a policy the echo is answered (plain NAT), under a
/// policy it is dropped and audited as `icmp_drop`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icmp_is_dropped_and_audited_under_a_policy() {
    let dir = std::env::temp_dir().join(format!("runta-icmp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("icmp.c"), ICMP_SENDER).unwrap();
    let bin = dir.join("icmpsend");
    match Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(dir.join("icmp.c"))
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            println!(
                "skipped: gcc -static failed (no static libc?): {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return;
        }
        Err(e) => {
            println!("skipped: no gcc on this host ({e})");
            return;
        }
    }
    let h = test_hosts(47);
    let d = daemon(&h);
    let c = d.tenant("egicmp").await;
    let (locked, open) = (name("icmp-locked"), name("icmp-open"));
    let lv = c
        .create_with(json!({"name": locked, "egress_policy": {"enabled": true, "allowed_hosts": ["allowed.test"]}}))
        .await;
    let ov = c.create_with(json!({"name": open})).await;
    let bytes = std::fs::read(&bin).unwrap();
    for rt in [&locked, &open] {
        let resp = c
            .raw(
                reqwest::Method::PUT,
                &format!("/v1/runtimes/{rt}/files?path=/usr/local/bin/icmpsend&mode=0755"),
                Some(bytes.clone()),
            )
            .await;
        assert!(resp.status().is_success(), "{}", resp.status());
        let (_, out) = c
            .run(rt, &format!("/usr/local/bin/icmpsend {}", h.ip(2)))
            .await;
        assert!(out.starts_with("nosocket "), "{rt} sent ICMP: {out}");
    }
    // The same sender with the host's privileges in each runtime's network
    // namespace.
    let from_ns = |id: &str| {
        let pid = *d
            .cgroup_procs(id)
            .first()
            .expect("a process in the runtime");
        let o = Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-n"])
            .arg(&bin)
            .arg(h.ip(2))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(from_ns(ov["id"].as_str().unwrap()), "reply");
    assert_eq!(from_ns(lv["id"].as_str().unwrap()), "timeout");
    let seen = std::sync::Mutex::new(Value::Null);
    c.eventually(15, "an icmp_drop audit", || {
        let (c, locked, seen) = (&c, &locked, &seen);
        async move {
            let l = audits(c, locked, "&kind=icmp_drop").await;
            match l.first() {
                Some(a) => {
                    *seen.lock().unwrap() = a.clone();
                    true
                }
                None => false,
            }
        }
    })
    .await;
    let seen = seen.into_inner().unwrap();
    let drop = &seen["payload"]["egress"]["icmp_drop"];
    assert_eq!(drop["action"], "deny", "{seen}");
    assert!(drop["packets"].as_u64().unwrap() >= 1, "{seen}");
    assert_eq!(drop["src_ip"], lv["ip"], "{seen}");
    // The open runtime has no audits at all.
    let (_, v) = c
        .get(&format!(
            "/v1/audits?category=egress&runtime={open}&kind=icmp_drop"
        ))
        .await;
    assert_eq!(v["data"], json!([]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `/v1/runtimes/{id}/egress` reads and replaces the one stored policy (the
/// runtime object shows the same), in both shapes, with validation naming the
/// field; `/v1/runtimes/{id}/audits` lists what `/v1/audits?runtime=` does;
/// another tenant gets 404 from both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_runtime_egress_routes_work_on_the_same_policy() {
    let h = test_hosts(48);
    let d = daemon(&h);
    let c = d.tenant("egr").await;
    let rt = name("egr");
    c.create(&rt, 128).await;
    let (st, v) = c.get(&format!("/v1/runtimes/{rt}/egress")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["data"],
        json!({"enabled": false, "mode": "denylist", "allowed_hosts": [], "denied_hosts": []})
    );
    // 0.1.1 shape.
    let (st, v) = c
        .call(
            reqwest::Method::PUT,
            &format!("/v1/runtimes/{rt}/egress"),
            Some(json!({"enabled": true, "allowed_hosts": ["allowed.test"]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["mode"], "allowlist");
    let (_, r) = c.get(&format!("/v1/runtimes/{rt}")).await;
    assert_eq!(r["data"]["egress_policy"], v["data"]);
    let (_, out) = c
        .run(
            &rt,
            &format!(
                "curl -s -m 5 -w ' %{{http_code}}' --resolve other.test:80:{} http://other.test/",
                h.ip(3)
            ),
        )
        .await;
    assert!(out.ends_with(" 403"), "{out}");
    // 0.1.21 shape, back to a denylist.
    let (st, v) = c
        .call(
            reqwest::Method::PUT,
            &format!("/v1/runtimes/{rt}/egress"),
            Some(json!({"mode": "denylist", "denied_hosts": ["allowed.test"]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (code, out) = c
        .run(
            &rt,
            &format!(
                "curl -s -m 5 --resolve other.test:80:{} http://other.test/",
                h.ip(3)
            ),
        )
        .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("host=other.test"), "{out}");
    // Validation names the field.
    for (body, status, needle) in [
        (
            json!({"mode": "allowlist", "allowed_hosts": ["https://x.test/a"]}),
            400,
            "https://x.test/a",
        ),
        (json!({"enabled": true, "mode": "denylist"}), 422, "enabled"),
        (json!({"mode": "sometimes"}), 400, "mode"),
        (json!({"allowed": ["x.test"]}), 400, "allowed"),
    ] {
        let (st, v) = c
            .call(
                reqwest::Method::PUT,
                &format!("/v1/runtimes/{rt}/egress"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(st.as_u16(), status, "{body}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains(needle),
            "{body}: {v}"
        );
    }
    let (_, v) = c.get(&format!("/v1/runtimes/{rt}/egress")).await;
    assert_eq!(v["data"]["denied_hosts"], json!(["allowed.test"]));
    // The per-runtime audit route is the same listing.
    let (st, a) = c.get(&format!("/v1/runtimes/{rt}/audits?limit=1000")).await;
    assert_eq!(st, StatusCode::OK, "{a}");
    assert_eq!(a["data"].as_array().unwrap(), &audits(&c, &rt, "").await);
    assert!(audited(
        a["data"].as_array().unwrap(),
        "http_request",
        "deny",
        "other.test"
    ));
    let stranger = d.tenant("egr-x").await;
    for path in [
        format!("/v1/runtimes/{rt}/egress"),
        format!("/v1/runtimes/{rt}/audits"),
    ] {
        let (st, _) = stranger.get(&path).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{path}");
    }
    let (st, _) = stranger
        .call(
            reqwest::Method::PUT,
            &format!("/v1/runtimes/{rt}/egress"),
            Some(json!({"mode": "denylist"})),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

/// Each policy runtime is a member of exactly its daemon's three filtering
/// sets (the filtered set and the two drop counters the static rules match),
/// also when runtimes are created at the same time; it is in none after a
/// delete; after a kill -9 and a restart the survivors are members again,
/// once, and the rules lead to the new gateway (traffic still allowed), and a
/// delete then takes them out too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtimes_egress_rules_all_go_on_delete_also_after_kill9() {
    let h = test_hosts(49);
    let d = daemon(&h);
    let c = d.tenant("egr").await;
    let policy = json!({"mode": "allowlist", "allowed_hosts": ["allowed.test"]});
    let names: Vec<String> = (0..3).map(|_| name("egr")).collect();
    let made = futures_util::future::join_all(
        names
            .iter()
            .map(|n| c.create_with(json!({"name": n, "egress_policy": policy}))),
    )
    .await;
    let ips: Vec<String> = made
        .iter()
        .map(|v| v["ip"].as_str().unwrap().to_string())
        .collect();
    for ip in &ips {
        let mut r = egress_sets_of(ip);
        r.iter_mut()
            .for_each(|s| *s = s.rsplit('-').next().unwrap().to_string());
        assert_eq!(r, ["eg", "egi", "egu"], "{ip}");
        assert!(egress_gateway_port_of(ip).is_some(), "{ip}");
    }
    let (code, out) = c.run(&names[0], "curl -s -m 5 http://allowed.test/").await;
    assert_eq!(code, 0, "{out}");

    let (st, _) = c.delete(&format!("/v1/runtimes/{}", names[0])).await;
    assert!(st.is_success());
    assert_eq!(egress_sets_of(&ips[0]), Vec::<String>::new());
    assert_eq!(egress_sets_of(&ips[1]).len(), 3);

    d.kill9();
    d.spawn();
    for (n, ip) in names.iter().zip(&ips).skip(1) {
        let r = egress_sets_of(ip);
        assert_eq!(r.len(), 3, "put back after kill -9: {r:?}");
        let (code, out) = c.run(n, "curl -s -m 5 http://allowed.test/").await;
        assert_eq!(code, 0, "the rebuilt rules lead to the new gateway: {out}");
        let (_, out) = c
            .run(
                n,
                &format!(
                "curl -s -m 5 -w ' %{{http_code}}' --resolve other.test:80:{} http://other.test/",
                h.ip(3)
            ),
            )
            .await;
        assert!(out.ends_with(" 403"), "still under its policy: {out}");
    }
    for (n, ip) in names.iter().zip(&ips).skip(1) {
        let (st, _) = c.delete(&format!("/v1/runtimes/{n}")).await;
        assert!(st.is_success());
        assert_eq!(egress_sets_of(ip), Vec::<String>::new(), "{n}");
    }
}
