//! Egress control end to end (issue 17): a real runtad with `--egress-hosts`,
//! real runtimes, and test hosts in a network namespace this test creates
//! (HTTP, HTTPS with a self-made certificate and a UDP echo on 198.18.N.2 and
//! 198.18.N.3, routed to the host over a veth). Nothing outside it is touched.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::{name, Client, Daemon};
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
struct TestHosts {
    ns: String,
    veth: String,
    net: u8,
    server: Child,
    hosts_file: std::path::PathBuf,
}

impl TestHosts {
    fn new(net: u8) -> TestHosts {
        let tag = format!("{}{net}", std::process::id() % 10000);
        let ns = format!("egt-{tag}");
        let veth = format!("egh{tag}");
        let peer = format!("egp{tag}");
        let sh = |c: &str| {
            let st = Command::new("sh").arg("-c").arg(c).status().unwrap();
            assert!(st.success(), "{c}");
        };
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        let _ = Command::new("ip").args(["link", "del", &veth]).status();
        sh(&format!("ip netns add {ns}"));
        sh(&format!("ip link add {veth} type veth peer name {peer}"));
        sh(&format!("ip link set {peer} netns {ns}"));
        sh(&format!(
            "ip addr add 198.18.{net}.1/24 dev {veth} && ip link set {veth} up"
        ));
        sh(&format!(
            "ip -n {ns} addr add 198.18.{net}.2/24 dev {peer} && ip -n {ns} addr add 198.18.{net}.3/24 dev {peer} && ip -n {ns} link set {peer} up && ip -n {ns} link set lo up && ip -n {ns} route add default via 198.18.{net}.1"
        ));
        // The private address the tests try lives here too, so even a broken
        // gateway that lets it through reaches nothing but this namespace.
        sh(&format!(
            "ip -n {ns} addr add 172.31.{net}.7/32 dev {peer} && ip route add 172.31.{net}.7/32 dev {veth}"
        ));
        // Likewise the metadata address the escape tests try (tests running
        // at once share the route; the last one up owns it).
        sh(&format!(
            "ip -n {ns} addr add 169.254.169.254/32 dev {peer} && ip route replace 169.254.169.254/32 dev {veth}"
        ));
        let dir = std::env::temp_dir().join(format!("runta-egress-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        let ck = rcgen::generate_simple_self_signed(vec![
            "allowed.test".to_string(),
            "other.test".to_string(),
            "a.wild.test".to_string(),
        ])
        .unwrap();
        std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("server.py"), SERVER).unwrap();
        let server = Command::new("ip")
            .args(["netns", "exec", &ns, "/usr/bin/python3"])
            .arg(dir.join("server.py"))
            .arg(dir.join("cert.pem"))
            .arg(dir.join("key.pem"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let hosts_file = dir.join("hosts");
        std::fs::write(
            &hosts_file,
            format!(
                "# test hosts\n198.18.{net}.2 allowed.test a.wild.test wild.test\n198.18.{net}.3 other.test\n172.31.{net}.7 private.test\n"
            ),
        )
        .unwrap();
        // The servers are up when the host can reach them.
        for _ in 0..50 {
            let ok = Command::new("curl")
                .args(["-sf", "-m", "1", &format!("http://198.18.{net}.2/")])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        TestHosts {
            ns,
            veth,
            net,
            server,
            hosts_file,
        }
    }

    fn ip(&self, last: u8) -> String {
        format!("198.18.{}.{last}", self.net)
    }
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
    }
}

/// Runs `cmd` in the runtime; (exit code, stdout).
async fn run(c: &Client, rt: &str, cmd: &str) -> (i64, String) {
    let d = c.sh(rt, cmd).await;
    (
        d["exit_code"].as_i64().unwrap_or(-1),
        d["stdout"].as_str().unwrap_or("").to_string() + d["stderr"].as_str().unwrap_or(""),
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
    let h = TestHosts::new(41);
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
    let (code, out) = run(&c, &rt, "curl -s -m 5 http://allowed.test/").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("hello {}", h.ip(2))), "{out}");
    let (code, out) = run(&c, &rt, "curl -sk -m 5 https://allowed.test/").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("hello"), "{out}");
    let (code, out) = run(&c, &rt, "getent hosts allowed.test").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&h.ip(2)), "{out}");

    // Another name: a 403 that says which policy denied which host.
    let (_, out) = run(
        &c,
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
    let (code, _) = run(&c, &rt, "getent hosts other.test").await;
    assert_ne!(code, 0);
    // TLS to a denied name is refused at once, not left hanging.
    let t0 = Instant::now();
    let (code, out) = run(
        &c,
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
    let (_, out) = run(
        &c,
        &rt,
        &format!("curl -s -m 5 -w ' %{{http_code}}' http://{}/", h.ip(3)),
    )
    .await;
    assert!(out.ends_with(" 403"), "raw IP: {out}");
    // An allowed Host header aimed at a denied address reaches the allowed
    // host's own address (the gateway resolves the name itself), never .3.
    let (_, out) = run(
        &c,
        &rt,
        &format!("curl -s -m 5 -H 'Host: allowed.test' http://{}/", h.ip(3)),
    )
    .await;
    assert!(
        out.contains(&format!("hello {}", h.ip(2))) && !out.contains(&h.ip(3)),
        "{out}"
    );
    // A forged SNI for the allowed name towards the denied address: the same.
    let (_, out) = run(
        &c,
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
    let (_, out) = run(
        &c,
        &rt,
        &format!(
            "curl -s -m 5 -w ' %{{http_code}}' -H 'Host: other.test' http://{}/",
            h.ip(2)
        ),
    )
    .await;
    assert!(out.ends_with(" 403"), "{out}");
    // CONNECT through the allowed host.
    let (_, out) = run(
        &c,
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
    let (_, out) = run(&c, &rt, &q).await;
    assert!(out.contains("rcode 3 answers 0"), "{out}");
    // Other UDP is dropped.
    let u = format!(
        "python3 -c \"import socket;s=socket.socket(2,2);s.settimeout(2);s.sendto(b'hi',('{}',9999));print(s.recv(64))\"",
        h.ip(2)
    );
    let (code, out) = run(&c, &rt, &u).await;
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
    let (_, out) = run(&c, &rt, &txt("c2VjcmV0.other.test")).await;
    assert!(out.contains("rcode 3 answers 0"), "{out}");
    let (_, out) = run(&c, &rt, &txt("allowed.test")).await;
    assert!(out.contains("rcode 0 answers 0"), "{out}");
    // DNS over TCP to another resolver, and DoH to a test address: both are
    // TCP to an address the policy does not name.
    let (code, _) = run(
        &c,
        &rt,
        &format!("python3 -c \"import socket;s=socket.create_connection(('{}',53),3);s.sendall(b'\\x00\\x1d');print(s.recv(10))\"", h.ip(2)),
    )
    .await;
    assert_ne!(code, 0, "DNS over TCP got an answer");
    let (code, out) = run(
        &c,
        &rt,
        &format!("curl -sk -m 5 https://{}/dns-query", h.ip(3)),
    )
    .await;
    assert_ne!(code, 0, "DoH: {out}");
    // --noproxy changes nothing (there is no proxy to bypass); IPv6 has no
    // route at all.
    let (_, out) = run(
        &c,
        &rt,
        &format!("curl -s -m 5 --noproxy '*' -w ' %{{http_code}}' --resolve other.test:80:{} http://other.test/", h.ip(3)),
    )
    .await;
    assert!(out.ends_with(" 403"), "{out}");
    let (code, _) = run(&c, &rt, "curl -s -m 3 -6 http://[2001:db8::1]/").await;
    assert_ne!(code, 0);
    // QUIC is UDP 443: dropped the same way.
    let quic = format!(
        "python3 -c \"import socket;s=socket.socket(2,2);s.settimeout(1);s.sendto(b'quic',('{}',443));print(s.recv(64))\"",
        h.ip(2)
    );
    let (code, _) = run(&c, &rt, &quic).await;
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
        let (_, out) = run(&c, &rt, &format!("curl -s -m 5 -w ' %{{http_code}}' {url}")).await;
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
    let (code, out) = run(
        &c,
        &rt,
        &format!("curl -s -m 3 -w ' %{{http_code}}' http://{peer_ip}:8080/"),
    )
    .await;
    assert!(code != 0 && !out.contains("200"), "peer: {out}");
    // The open runtime next to it is untouched: raw IP works, through NAT.
    let (code, out) = run(&c, &other, &format!("curl -s -m 5 http://{}/", h.ip(3))).await;
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
    let (_, out) = run(&c, &rt, flood).await;
    let ok: usize = out
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!((100..=512).contains(&ok), "{out}");
    let (st, _) = c.get(&format!("/v1/runtimes/{rt}")).await;
    assert_eq!(st, StatusCode::OK);
    let (code, out) = run(&c, &rt, "curl -s -m 5 http://allowed.test/").await;
    assert_eq!(code, 0, "the cap is released when the flood ends: {out}");

    // Deleted: its rules go with it.
    let (st, _) = c.delete(&format!("/v1/runtimes/{rt}")).await;
    assert!(st.is_success());
    let rules = Command::new("iptables-save").output().unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(
        !rules.contains(&format!("-s {}/32", v["ip"].as_str().unwrap())),
        "{rules}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denylist_wildcard_ip_cidr_and_live_changes() {
    let h = TestHosts::new(42);
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
    let (code, out) = run(&c, &rt, "curl -s -m 5 http://allowed.test/").await;
    assert_eq!(code, 0, "{out}");
    let (_, out) = run(
        &c,
        &rt,
        &format!(
            "curl -s -m 5 -w ' %{{http_code}}' --resolve other.test:80:{} http://other.test/",
            h.ip(3)
        ),
    )
    .await;
    assert!(out.contains("denylist") && out.ends_with(" 403"), "{out}");
    let (code, _) = run(&c, &rt, "getent hosts other.test").await;
    assert_ne!(code, 0);
    // A denylist still keeps private ranges and the host closed.
    let (_, out) = run(
        &c,
        &rt,
        &format!(
            "curl -s -m 5 -w ' %{{http_code}}' http://172.31.{}.7/",
            h.net
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
s.recv(4096)
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
    let (code, out) = run(&c, &rt, "curl -s -m 5 http://a.wild.test/").await;
    assert_eq!(code, 0, "{out}");
    let (_, out) = run(
        &c,
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
    let (_, out) = run(
        &c,
        &rt,
        &format!(
            "curl -s -m 5 -w ' %{{http_code}}' --resolve allowed.test:80:{} http://allowed.test/",
            h.ip(2)
        ),
    )
    .await;
    assert!(out.ends_with(" 403"), "{out}");
    let (code, out) = run(&c, &rt, &format!("curl -s -m 5 http://{}/", h.ip(3))).await;
    assert_eq!(code, 0, "IP entry: {out}");
    let (_, out) = run(
        &c,
        &rt,
        &format!("curl -s -m 5 -w ' %{{http_code}}' http://{}/", h.ip(2)),
    )
    .await;
    assert!(out.ends_with(" 403"), "{out}");

    // CIDR, 0.1.1 shape.
    let (st, _) = c
        .patch(&format!("/v1/runtimes/{rt}"), json!({"egress_policy": {"enabled": true, "allowed_hosts": [format!("198.18.{}.0/24", h.net)]}}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (code, out) = run(&c, &rt, &format!("curl -s -m 5 http://{}/", h.ip(2))).await;
    assert_eq!(code, 0, "CIDR: {out}");
    let (_, out) = run(
        &c,
        &rt,
        "curl -s -m 5 -w ' %{http_code}' http://169.254.169.254/",
    )
    .await;
    assert!(out.ends_with(" 403"), "{out}");

    // A policy survives a kill -9 and a restart (rules rebuilt).
    d.kill9();
    d.spawn();
    let (_, out) = run(
        &c,
        &rt,
        &format!(
            "curl -s -m 5 -w ' %{{http_code}}' --resolve allowed.test:80:{} http://allowed.test/",
            h.ip(2)
        ),
    )
    .await;
    assert!(out.ends_with(" 403"), "after restart: {out}");
    let (code, out) = run(&c, &rt, &format!("curl -s -m 5 http://{}/", h.ip(3))).await;
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
    let (code, out) = run(&c, &rt, &format!("curl -s -m 5 http://{}/", h.ip(2))).await;
    assert_eq!(code, 0, "{out}");
    let rules = Command::new("iptables-save").output().unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(
        !rules.contains(&format!("-s {}/32", v["data"]["ip"].as_str().unwrap())),
        "{rules}"
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
    let h = TestHosts::new(43);
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
        let (_, out) = run(&c, rt, &script(other)).await;
        assert_eq!(
            out.trim(),
            "freebind EPERM transparent EPERM bind EADDRNOTAVAIL",
            "{rt} could take another runtime's address"
        );
    }
}
