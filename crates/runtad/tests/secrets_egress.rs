//! Secret injection at egress end to end (issue 18): a real runtad with
//! `--egress-hosts` and `--egress-upstream-ca`, real runtimes, and upstream
//! HTTPS servers this test runs itself (hyper + rustls, HTTP/1.1 and HTTP/2,
//! certificates from the test's own CA) in a network namespace it creates,
//! recording every request they receive. Nothing leaves the machine.
//!
//! The clients in the runtime are what the base image has: curl (HTTP/1.1
//! and HTTP/2, nghttp2) and Python's standard library (urllib, http.client,
//! ssl), plus Node's fetch with the host's node binary copied in; all with
//! no CA flag: the runtime trusts its CA by itself. (The base image has no
//! git, pip, requests or httpx.)

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{id_of, name, Client, Daemon, TestNet};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use reqwest::StatusCode;
use serde_json::{json, Value};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

#[derive(Debug, Clone)]
struct Seen {
    proto: String,
    host: String,
    pq: String,
    headers: Vec<(String, String)>,
    at: Instant,
}

impl Seen {
    fn header(&self, n: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Record {
    requests: Mutex<Vec<Seen>>,
    /// (SNI, ALPN) of every TLS handshake the upstream completed.
    handshakes: Mutex<Vec<(String, String)>>,
    release: tokio::sync::Notify,
}

impl Record {
    fn find(&self, pq: &str) -> Vec<Seen> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.pq.starts_with(pq))
            .cloned()
            .collect()
    }
}

/// The test's network: a namespace with `bound.test` on .2 and `unbound.test`
/// on .3, an HTTPS upstream on both, and the hosts file the daemon reads.
struct Net {
    tn: TestNet,
    dir: std::path::PathBuf,
    record: Arc<Record>,
}

impl Net {
    async fn new(net: u8) -> Net {
        let tn = TestNet::new("set", net, &[2, 3]);
        let (ns, tag) = (tn.ns.clone(), tn.tag.clone());
        let dir = std::env::temp_dir().join(format!("runta-secrets-egress-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();

        // The upstreams' own CA, and one leaf for both names.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut cap = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        cap.distinguished_name
            .push(rcgen::DnType::CommonName, "secrets-egress test upstream CA");
        cap.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = cap.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(cap, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let lp = rcgen::CertificateParams::new(vec!["bound.test".into(), "unbound.test".into()])
            .unwrap();
        let leaf = lp.signed_by(&leaf_key, &issuer).unwrap();
        std::fs::write(dir.join("upstream-ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(
            dir.join("hosts"),
            format!("198.18.{net}.2 bound.test\n198.18.{net}.3 unbound.test\n"),
        )
        .unwrap();

        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone(), ca_cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let record = Arc::new(Record::default());
        for last in [2u8, 3] {
            let addr: SocketAddr = format!("198.18.{net}.{last}:443").parse().unwrap();
            let l = bind_in(&ns, addr);
            tokio::spawn(serve(l, acceptor.clone(), record.clone()));
            let plain: SocketAddr = format!("198.18.{net}.{last}:80").parse().unwrap();
            tokio::spawn(serve_plain(bind_in(&ns, plain), record.clone()));
        }
        Net { tn, dir, record }
    }

    fn ip(&self, last: u8) -> String {
        self.tn.ip(last)
    }

    fn daemon(&self) -> Daemon {
        Daemon::start_new(&[
            "--egress-hosts",
            self.dir.join("hosts").to_str().unwrap(),
            "--egress-upstream-ca",
            self.dir.join("upstream-ca.pem").to_str().unwrap(),
        ])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A listening socket inside network namespace `ns` (the namespace is per
/// thread: a thread joins it, binds, and ends; the socket stays there).
fn bind_in(ns: &str, addr: SocketAddr) -> tokio::net::TcpListener {
    let path = format!("/run/netns/{ns}");
    let l = std::thread::spawn(move || {
        let f = std::fs::File::open(path).unwrap();
        // SAFETY: setns on this thread only, with a namespace fd we own.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let l = std::net::TcpListener::bind(addr).unwrap();
        l.set_nonblocking(true).unwrap();
        l
    })
    .join()
    .unwrap();
    tokio::net::TcpListener::from_std(l).unwrap()
}

fn full(s: String) -> Body {
    Full::new(Bytes::from(s)).boxed()
}

async fn serve(l: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor, rec: Arc<Record>) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let rec = rec.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(s).await else {
                return;
            };
            let (_, c) = tls.get_ref();
            let sni = c.server_name().unwrap_or("").to_string();
            let alpn = String::from_utf8_lossy(c.alpn_protocol().unwrap_or(b"")).to_string();
            rec.handshakes.lock().unwrap().push((sni, alpn));
            let svc = hyper::service::service_fn(move |req| {
                let rec = rec.clone();
                async move { Ok::<_, Infallible>(handle(req, &rec).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                .await;
        });
    }
}

/// Plain HTTP/1.1 on port 80, the same handler.
async fn serve_plain(l: tokio::net::TcpListener, rec: Arc<Record>) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let rec = rec.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let rec = rec.clone();
                async move { Ok::<_, Infallible>(handle(req, &rec).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}

async fn handle(
    mut req: hyper::Request<hyper::body::Incoming>,
    rec: &Arc<Record>,
) -> hyper::Response<Body> {
    let proto = format!("{:?}", req.version());
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).to_string(),
            )
        })
        .collect();
    rec.requests.lock().unwrap().push(Seen {
        proto: proto.clone(),
        host,
        pq: pq.clone(),
        headers,
        at: Instant::now(),
    });
    if pq.starts_with("/v1/stream") {
        // One chunk now, the next only when the test says: a gateway that
        // buffered the body would deliver neither until the end.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let rec = rec.clone();
        tokio::spawn(async move {
            let _ = tx.send(Ok(Frame::data(Bytes::from("chunk-1\n")))).await;
            rec.release.notified().await;
            let _ = tx.send(Ok(Frame::data(Bytes::from("chunk-2\n")))).await;
        });
        let body = StreamBody::new(tokio_stream_from(rx));
        return hyper::Response::builder()
            .header("content-type", "text/event-stream")
            .body(BodyExt::boxed(body))
            .unwrap();
    }
    if pq.starts_with("/v1/ws") && req.headers().contains_key("upgrade") {
        let up = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(u) = up.await {
                let mut io = TokioIo::new(u);
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut b = [0u8; 256];
                while let Ok(n) = io.read(&mut b).await {
                    if n == 0 || io.write_all(&[b"echo:", &b[..n]].concat()).await.is_err() {
                        break;
                    }
                }
            }
        });
        return hyper::Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .body(full(String::new()))
            .unwrap();
    }
    if pq.starts_with("/v1/close") {
        // The upstream ends its connection after this answer.
        return hyper::Response::builder()
            .header("connection", "close")
            .body(full(format!("ok {proto} {pq}\n")))
            .unwrap();
    }
    hyper::Response::new(full(format!("ok {proto} {pq}\n")))
}

/// An mpsc receiver as a stream of frames (no extra stream crate needed).
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A runtime that resolves the test names like the gateway does.
async fn runtime(c: &Client, n: &Net, prefix: &str, body: Value) -> String {
    let rt = name(prefix);
    let mut body = body;
    body["name"] = json!(rt);
    c.create_with(body).await;
    c.out(
        &rt,
        &format!(
            "echo '{} bound.test' >> /etc/hosts; echo '{} unbound.test' >> /etc/hosts",
            n.ip(2),
            n.ip(3)
        ),
    )
    .await;
    rt
}

/// The stub of a secret, wherever the API shows it.
fn stub_of(v: &Value) -> Option<String> {
    fn walk(v: &Value) -> Option<String> {
        match v {
            Value::String(s) if s.starts_with("runta-stub-") => Some(s.clone()),
            Value::Object(m) => m.values().find_map(walk),
            Value::Array(a) => a.iter().find_map(walk),
            _ => None,
        }
    }
    walk(v)
}

/// Every regular file under `dir` that contains `needle` (not following
/// symlinks; sparse disk images read as they are).
fn files_with(dir: &std::path::Path, needle: &[u8], out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let p = e.path();
        if ft.is_dir() {
            // The merged view repeats the base image: its upper layer is
            // scanned on its own.
            if p.file_name().is_some_and(|n| n == "rootfs") {
                continue;
            }
            files_with(&p, needle, out);
        } else if ft.is_file() {
            // A quota disk image is scanned through its mounted upper layer.
            if e.metadata().is_ok_and(|m| m.len() > 512 << 20) {
                continue;
            }
            if let Ok(b) = std::fs::read(&p) {
                if b.windows(needle.len()).any(|w| w == needle) {
                    out.push(p.display().to_string());
                }
            }
        }
    }
}

/// Whether `needle` is in any readable memory of process `pid`, or its
/// environment or command line.
fn in_process(pid: i32, needle: &[u8]) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    for f in ["environ", "cmdline"] {
        let b = std::fs::read(format!("/proc/{pid}/{f}")).unwrap_or_default();
        if b.windows(needle.len()).any(|w| w == needle) {
            return Some(format!("/proc/{pid}/{f}"));
        }
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    for l in maps.lines() {
        let mut w = l.split_whitespace();
        let (Some(range), Some(perms)) = (w.next(), w.next()) else {
            continue;
        };
        if !perms.starts_with('r') || l.contains("[vvar]") || l.contains("[vsyscall]") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap_or(0),
            u64::from_str_radix(b, 16).unwrap_or(0),
        );
        if b <= a || b - a > 1 << 30 {
            continue;
        }
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        if buf.windows(needle.len()).any(|w| w == needle) {
            return Some(format!("/proc/{pid}/mem at {l}"));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn injected_over_http1_and_http2_streamed_and_never_in_the_runtime() {
    let n = Net::new(61).await;
    let d = n.daemon();
    let c = d.tenant("sec").await;
    let rt = runtime(&c, &n, "sec", json!({})).await;
    let rt_id = id_of(&c.get(&format!("/v1/runtimes/{rt}")).await.1["data"]);
    let value = format!("sv-{}", uuid::Uuid::new_v4().simple());
    let s = c.new_secret("api-key", &value).await;
    let other_value = format!("sv-{}", uuid::Uuid::new_v4().simple());
    let s2 = c.new_secret("unbound-key", &other_value).await;
    let header_rule = c.new_rule(&rt,
        json!({"host": "bound.test", "path": "/v1/*", "secret": "api-key",
               "injection": {"headerName": "Authorization", "valueFormat": "Bearer ${credential}"}}),
    )
    .await;
    let param_rule = c
        .new_rule(
            &rt,
            json!({"host": "bound.test", "path": "/q/*", "secret": "api-key",
               "injection": {"paramName": "key", "paramFormat": "${credential}"}}),
        )
        .await;

    // HTTP/1.1 with curl, no CA flag: the header arrives, the runtime's own
    // Authorization (a placeholder) replaced.
    let (code, out) = c
        .run(
            &rt,
            "curl -sS --http1.1 -H 'Authorization: Bearer placeholder' https://bound.test/v1/chat",
        )
        .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok HTTP/1.1 /v1/chat"), "{out}");
    let seen = n.record.find("/v1/chat");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {value}").as_str())
    );
    assert_eq!(
        seen[0]
            .headers
            .iter()
            .filter(|(k, _)| k == "authorization")
            .count(),
        1
    );
    // HTTP/2 with curl: negotiated both sides, the header arrives.
    let (code, out) = c
        .run(&rt, "curl -sS --http2 https://bound.test/v1/h2")
        .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok HTTP/2.0 /v1/h2"), "{out}");
    let seen = n.record.find("/v1/h2");
    assert_eq!(seen[0].proto, "HTTP/2.0");
    assert_eq!(seen[0].host, "bound.test");
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {value}").as_str())
    );
    // Python's standard library (urllib, SSL_CERT_FILE).
    let (code, out) = c.run(&rt,
        "python3 -c \"import urllib.request as u;print(u.urlopen('https://bound.test/v1/py').read().decode())\"",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        n.record.find("/v1/py")[0].header("authorization"),
        Some(format!("Bearer {value}").as_str())
    );
    // Node's own fetch (NODE_EXTRA_CA_CERTS), with the host's node binary
    // copied into the runtime's layer (the base image has no node; Debian's
    // libraries are the ones it links).
    let node_dst = d
        .data_dir
        .join("runtimes")
        .join(&rt_id)
        .join("rootfs/usr/local/bin/node");
    let copied = std::path::Path::new("/usr/bin/node").is_file()
        && std::fs::copy("/usr/bin/node", &node_dst).is_ok();
    let (code, v) = c.run(&rt, "/usr/local/bin/node --version").await;
    if copied && code == 0 {
        let (code, out) = c.run(&rt,
            "/usr/local/bin/node -e \"fetch('https://bound.test/v1/node').then(async r => console.log(r.status, await r.text())).catch(e => { console.log('error', e.cause ? e.cause.code : e.message); process.exit(1) })\"",
        )
        .await;
        assert_eq!(code, 0, "{out}");
        assert!(out.starts_with("200 ok HTTP/"), "{out}");
        assert_eq!(
            n.record.find("/v1/node")[0].header("authorization"),
            Some(format!("Bearer {value}").as_str())
        );
        c.out(&rt, "rm -f /usr/local/bin/node").await;
    } else {
        println!("skipped: Node fetch (the host's node cannot run in the base image: {v})");
    }
    // A query parameter, set once, the others kept. This upstream echoes
    // the target in its body, so the answer carries the value back: the
    // gateway cuts it there (docs/security.md, "Secrets injected at egress").
    let (code, out) = c
        .run(&rt, "curl -sS 'https://bound.test/q/geo?a=1&key=mine'")
        .await;
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains(&value), "{out}");
    let q = &n.record.find("/q/geo")[0];
    assert_eq!(q.pq, format!("/q/geo?a=1&key={value}"), "{q:?}");
    // The upstream closes its connection; the runtime's kept-alive one goes
    // on (the gateway connects again) and still gets the header.
    let again = "import http.client\nc = http.client.HTTPSConnection('bound.test', 443, timeout=10)\nfor p in ('/v1/close', '/v1/again'):\n    c.request('GET', p); r = c.getresponse(); r.read(); print(r.status)\n";
    let out = common::py(&c, &rt, again).await;
    assert_eq!(out["stdout"].as_str().unwrap_or(""), "200\n200\n", "{out}");
    assert_eq!(
        n.record.find("/v1/again")[0].header("authorization"),
        Some(format!("Bearer {value}").as_str())
    );
    // A path no binding names: intercepted, nothing added.
    let (code, _) = c.run(&rt, "curl -sS https://bound.test/other").await;
    assert_eq!(code, 0);
    assert_eq!(n.record.find("/other")[0].header("authorization"), None);

    // Streaming: the first chunk is in the runtime while the upstream still
    // holds the second.
    c.out(
        &rt,
        "nohup sh -c 'curl -sSN https://bound.test/v1/stream > /tmp/stream.out 2>&1; echo done >> /tmp/stream.out' >/dev/null 2>&1 &",
    )
    .await;
    c.eventually(20, "the first chunk", || async {
        c.run(&rt, "cat /tmp/stream.out")
            .await
            .1
            .contains("chunk-1")
    })
    .await;
    let (_, now) = c.run(&rt, "cat /tmp/stream.out").await;
    assert!(!now.contains("chunk-2") && !now.contains("done"), "{now}");
    n.record.release.notify_one();
    c.eventually(20, "the second chunk and the end", || async {
        let o = c.run(&rt, "cat /tmp/stream.out").await.1;
        o.contains("chunk-2") && o.contains("done")
    })
    .await;

    // A WebSocket-style upgrade passes through (HTTP/1.1, then raw bytes).
    let ws = r#"
import socket, ssl
ctx = ssl.create_default_context()
s = ctx.wrap_socket(socket.create_connection(("bound.test", 443), 10), server_hostname="bound.test")
s.sendall(b"GET /v1/ws HTTP/1.1\r\nHost: bound.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1024)
print(head.split(b"\r\n")[0].decode())
s.sendall(b"hello")
print(s.recv(64).decode())
"#;
    let out = common::py(&c, &rt, ws).await;
    let o = out["stdout"].as_str().unwrap_or("");
    assert!(o.contains("101") && o.contains("echo:hello"), "{out}");
    assert_eq!(
        n.record.find("/v1/ws")[0].header("authorization"),
        Some(format!("Bearer {value}").as_str())
    );

    // An unbound host is not intercepted: the runtime's TLS reaches the
    // upstream, whose chain verifies with the upstream's CA alone (and the
    // bound host's, intercepted, does not).
    let pem = std::fs::read_to_string(n.dir.join("upstream-ca.pem")).unwrap();
    c.out(&rt, &format!("cat > /tmp/up-ca.pem <<'EOF'\n{pem}EOF"))
        .await;
    let (code, out) = c
        .run(
            &rt,
            "curl -sS --cacert /tmp/up-ca.pem https://unbound.test/v1/plain",
        )
        .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(n.record.find("/v1/plain")[0].header("authorization"), None);
    let (code, _) = c
        .run(
            &rt,
            "curl -sS --cacert /tmp/up-ca.pem https://bound.test/v1/chain",
        )
        .await;
    assert_ne!(code, 0, "the bound host's chain must be the runtime CA's");
    // The trust store holds the runtime's CA once, beside the image's own.
    let (code, out) = c.run(&rt,
        "grep -c 'BEGIN Runta egress CA' /etc/ssl/certs/ca-certificates.crt; grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt",
    )
    .await;
    let counts: Vec<u32> = out
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert!(
        code == 0 && counts.len() == 2 && counts[0] == 1 && counts[1] > 50,
        "{out}"
    );

    // A stub: over plain HTTP anywhere, or over TLS to a host its secret has
    // no binding for, the request is blocked.
    if let Some(stub2) = stub_of(&s2).or_else(|| stub_of(&s)) {
        let (_, out) = c
            .run(
                &rt,
                &format!(
                "curl -s -m 5 -w ' %{{http_code}}' -H 'X-Key: {stub2}' http://unbound.test/v1/stub"
            ),
            )
            .await;
        assert!(out.ends_with(" 403"), "{out}");
        let (_, out) = c
            .run(
                &rt,
                &format!(
                "curl -s -m 5 -w ' %{{http_code}}' -H 'X-Key: {stub2}' https://bound.test/v1/stub2"
            ),
            )
            .await;
        if stub_of(&s2).is_some() {
            assert!(out.ends_with(" 403"), "{out}");
            assert!(n.record.find("/v1/stub2").is_empty());
        }
        assert!(n.record.find("/v1/stub").is_empty());
        // On a kept-alive plain connection, a later request with the stub is
        // refused too (the first one went through).
        let ka = format!(
            "import http.client\nc = http.client.HTTPConnection('unbound.test', 80, timeout=10)\nc.request('GET', '/v1/ka1'); r = c.getresponse(); r.read(); print(r.status)\ntry:\n    c.request('GET', '/v1/ka2', headers={{'X-Key': '{stub2}'}}); r = c.getresponse(); print(r.status)\nexcept Exception as e:\n    print('refused', type(e).__name__)\n"
        );
        let out = common::py(&c, &rt, &ka).await;
        let o = out["stdout"].as_str().unwrap_or("");
        assert!(o.starts_with("200"), "{out}");
        assert!(o.contains("403") || o.contains("refused"), "{out}");
        assert_eq!(n.record.find("/v1/ka1").len(), 1);
        assert!(n.record.find("/v1/ka2").is_empty());
    } else {
        panic!("the secret API shows no stub: {s2}");
    }

    // Every injection is audited by binding, never with the value.
    let (st, a) = c
        .get(&format!(
            "/v1/audits?category=egress&runtime={rt}&limit=1000"
        ))
        .await;
    assert_eq!(st, StatusCode::OK, "{a}");
    let text = a.to_string();
    assert!(
        text.contains(&header_rule) && text.contains(&param_rule),
        "{a}"
    );
    assert!(text.contains("injected"), "{a}");
    assert!(text.contains("stub"), "{a}");
    assert!(!text.contains(&value) && !text.contains(&other_value));

    // A long-lived client with a keep-alive connection: its memory is
    // scanned below. Then a deleted binding stops within 100 ms.
    c.out(
        &rt,
        "cat > /tmp/loop.py <<'EOF'\nimport http.client, ssl, time\nc = http.client.HTTPSConnection('bound.test', 443, context=ssl.create_default_context())\ni = 0\nwhile True:\n    c.request('GET', '/v1/loop?i=%d' % i)\n    c.getresponse().read()\n    i += 1\n    time.sleep(0.005)\nEOF\nnohup python3 /tmp/loop.py >/tmp/loop.out 2>&1 &",
    )
    .await;
    c.eventually(20, "the loop's requests", || async {
        n.record.find("/v1/loop").len() > 20
    })
    .await;

    // The value is nowhere in the runtime: environment, processes (memory
    // included), files; nor in the daemon's data dir (store, logs, the
    // runtime's layer, checkpoints).
    let env = c.out(&rt, "env").await;
    assert!(
        env.contains("SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"),
        "{env}"
    );
    for k in [
        "REQUESTS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
    ] {
        assert!(
            env.contains(&format!("{k}=/etc/ssl/certs/ca-certificates.crt")),
            "{env}"
        );
    }
    assert!(!env.contains(&value));
    let pids = d.cgroup_procs(&rt_id);
    assert!(pids.len() >= 2, "{pids:?}");
    // The scan reads what it claims to: the loop's own requests are found.
    assert!(
        pids.iter()
            .any(|p| in_process(*p, b"/v1/loop?i=").is_some()),
        "the memory scan sees nothing"
    );
    for pid in pids {
        assert_eq!(
            in_process(pid, value.as_bytes()),
            None,
            "the value is in a runtime process"
        );
    }
    let (st, ck) = c
        .post(
            &format!("/v1/runtimes/{rt}/checkpoints"),
            json!({"name": name("ck")}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{ck}");
    let mut hits = Vec::new();
    files_with(&d.data_dir, value.as_bytes(), &mut hits);
    assert!(hits.is_empty(), "the value is in {hits:?}");
    // The file scan reaches the runtime's layer (its /etc/hosts names the host).
    let mut seen_files = Vec::new();
    files_with(
        &d.data_dir,
        format!("{} bound.test", n.ip(2)).as_bytes(),
        &mut seen_files,
    );
    assert!(!seen_files.is_empty(), "the file scan sees nothing");
    // The runtime CA's key is not in the runtime either (only its certificate).
    let (_, keys) = c
        .run(
            &rt,
            "grep -rlsF -- 'PRIVATE KEY-----' /etc/ssl /root /tmp 2>/dev/null | head -3",
        )
        .await;
    assert!(keys.trim().is_empty(), "{keys}");

    // Delete the header binding while the loop runs: every request the
    // upstream receives more than 100 ms after the delete returned has no
    // header (the binding stops within the bound, however long polling takes).
    let (st, v) = c
        .delete(&format!(
            "/v1/runtimes/{rt}/secret-injection-rules/{header_rule}"
        ))
        .await;
    assert!(st.is_success(), "{v}");
    let deleted = Instant::now();
    let before = n
        .record
        .find("/v1/loop")
        .iter()
        .filter(|s| s.at < deleted && s.header("authorization").is_some())
        .count();
    assert!(before > 0);
    c.eventually(20, "requests after the delete", || async {
        n.record
            .find("/v1/loop")
            .iter()
            .filter(|s| s.at > deleted + Duration::from_millis(100))
            .count()
            > 10
    })
    .await;
    let late: Vec<Seen> = n
        .record
        .find("/v1/loop")
        .into_iter()
        .filter(|s| s.at > deleted + Duration::from_millis(100))
        .collect();
    assert!(
        late.iter().all(|s| s.header("authorization").is_none()),
        "a deleted binding was still injected"
    );
    c.out(&rt, "pkill -f 'python3 /tmp/loo[p].py'; true").await;
    // Logs after all of it.
    let log = std::fs::read_to_string(d.data_dir.join("runtad.log")).unwrap_or_default();
    assert!(!log.contains(&value));
    let _ = (s, param_rule);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_runtime_cannot_misdirect_or_wedge_the_interception() {
    let n = Net::new(62).await;
    let d = n.daemon();
    let c = d.tenant("sech").await;
    let rt = runtime(&c, &n, "sech", json!({})).await;
    let value = format!("sv-{}", uuid::Uuid::new_v4().simple());
    c.new_secret("k", &value).await;
    c.new_rule(
        &rt,
        json!({"host": "bound.test", "path": "/*", "secret": "k",
               "injection": {"headerName": "X-Api-Key", "valueFormat": "${credential}"}}),
    )
    .await;
    let (code, out) = c.run(&rt, "curl -sS https://bound.test/ok").await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        n.record.find("/ok")[0].header("x-api-key"),
        Some(value.as_str())
    );

    // SNI bound.test, Host another name (HTTP/1.1), and HTTP/2 `:authority`
    // another name: refused, nothing reaches any upstream.
    let (_, out) = c.run(&rt,
        "curl -s --http1.1 -w ' %{http_code}' -H 'Host: unbound.test' https://bound.test/h1-mismatch",
    )
    .await;
    assert!(out.ends_with(" 421"), "{out}");
    let (_, out) = c.run(&rt,
        "curl -s --http2 -w ' %{http_code} %{http_version}' -H 'Host: unbound.test' https://bound.test/h2-mismatch",
    )
    .await;
    assert!(out.ends_with(" 421 2"), "{out}");
    assert!(n.record.find("/h1-mismatch").is_empty());
    assert!(n.record.find("/h2-mismatch").is_empty());

    // A CONNECT tunnel inside the intercepted connection: refused.
    let (_, out) = c.run(&rt,
        "curl -s --http1.1 -w ' %{http_code}' -X CONNECT --request-target bound.test:443 https://bound.test/",
    )
    .await;
    assert!(out.ends_with(" 405"), "{out}");
    // Huge headers: refused on both protocols, the daemon unmoved.
    for proto in ["--http1.1", "--http2"] {
        let (_, out) = c.run(&rt,
            &format!("curl -s {proto} -w ' %{{http_code}}' -H \"X-Big: $(head -c 200000 /dev/zero | tr '\\0' a)\" https://bound.test/huge"),
        )
        .await;
        assert!(!out.ends_with(" 200"), "{proto}: {out}");
    }
    assert!(n.record.find("/huge").is_empty());

    // A client that sends its ClientHello and never finishes the handshake:
    // the gateway gives up on it, and serves others meanwhile.
    c.out(
        &rt,
        "cat > /tmp/stall.py <<'EOF'\nimport socket, ssl, time\nctx = ssl.create_default_context()\ninc, out = ssl.MemoryBIO(), ssl.MemoryBIO()\no = ctx.wrap_bio(inc, out, server_hostname='bound.test')\ntry:\n    o.do_handshake()\nexcept ssl.SSLWantReadError:\n    pass\ns = socket.create_connection(('bound.test', 443), 5)\ns.sendall(out.read())\ns.settimeout(60)\nt = time.time()\ntry:\n    while s.recv(65536):\n        pass\n    print('closed')\nexcept ConnectionResetError:\n    print('closed')\nexcept socket.timeout:\n    print('still open')\nEOF\nnohup python3 /tmp/stall.py >/tmp/stall.out 2>&1 &",
    )
    .await;
    for i in 0..3 {
        let (code, out) = c
            .run(&rt, &format!("curl -sS https://bound.test/during-{i}"))
            .await;
        assert_eq!(code, 0, "{out}");
    }
    c.eventually(60, "the stalled handshake to be dropped", || async {
        c.run(&rt, "cat /tmp/stall.out").await.1.contains("closed")
    })
    .await;
    // Dropped for not finishing the handshake (the gateway's audit says so),
    // and the misdirected requests are audited.
    let (_, a) = c
        .get(&format!(
            "/v1/audits?category=egress&runtime={rt}&limit=1000"
        ))
        .await;
    let a = a.to_string();
    assert!(a.contains("did not finish its TLS handshake"), "{a}");
    assert!(
        a.contains("but the TLS connection is for bound.test"),
        "{a}"
    );
    // Still serving.
    let (code, out) = c.run(&rt, "curl -sS https://bound.test/after").await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        n.record.find("/after")[0].header("x-api-key"),
        Some(value.as_str())
    );

    // kill -9 of the daemon: after the restart the runtime's trust store
    // still matches (the CA was kept in the data dir) and injection goes on.
    let ca_files = std::fs::read_dir(d.data_dir.join("egress-ca"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(ca_files, 1);
    let block = "sed -n '/BEGIN Runta egress CA/,/END Runta egress CA/p' /etc/ssl/certs/ca-certificates.crt";
    let before = c.out(&rt, block).await;
    assert!(before.contains("BEGIN CERTIFICATE"), "{before}");
    d.kill9();
    d.spawn();
    let (code, out) = c
        .run(&rt, "curl -sS https://bound.test/after-restart")
        .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        n.record.find("/after-restart")[0].header("x-api-key"),
        Some(value.as_str())
    );
    let (_, out) = c
        .run(
            &rt,
            "grep -c 'BEGIN Runta egress CA' /etc/ssl/certs/ca-certificates.crt",
        )
        .await;
    assert_eq!(out.trim(), "1");
    assert_eq!(
        c.out(&rt, block).await,
        before,
        "the CA changed over the restart"
    );

    // Under an allowlist that does not name the bound host, the binding
    // opens nothing: the policy still decides.
    let rt2 = runtime(
        &c,
        &n,
        "sech-pol",
        json!({"egress_policy": {"enabled": true, "allowed_hosts": ["unbound.test"]}}),
    )
    .await;
    c.new_rule(
        &rt2,
        json!({"host": "bound.test", "path": "/*", "secret": "k",
               "injection": {"headerName": "X-Api-Key", "valueFormat": "${credential}"}}),
    )
    .await;
    let (code, _) = c.run(&rt2, "curl -sS -m 5 https://bound.test/denied").await;
    assert_ne!(code, 0);
    assert!(n.record.find("/denied").is_empty());
}

/// `runta_secret_decrypts_total` on the daemon's `/metrics`: values decrypted
/// for injection (this test's daemon serves only this test).
async fn decrypts(c: &Client) -> u64 {
    let text = c
        .raw(reqwest::Method::GET, "/metrics", None)
        .await
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("runta_secret_decrypts_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no runta_secret_decrypts_total in /metrics:\n{text}"))
}

async fn secret_ttl(c: &Client, name: &str, value: &str, ttl: i64) {
    let (st, v) = c
        .post(
            "/v1/secrets",
            json!({"name": name, "value": value, "cache_ttl_secs": ttl}),
        )
        .await;
    assert!(st.is_success(), "create secret: {v}");
    assert_eq!(v["data"]["cache_ttl_secs"], ttl, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_ttl_bounds_how_long_a_value_is_kept_in_clear() {
    let n = Net::new(63).await;
    let d = n.daemon();
    let c = d.tenant("sttl").await;
    let rt = runtime(&c, &n, "sttl", json!({})).await;
    let uniq = || format!("sv-{}", uuid::Uuid::new_v4().simple());
    let (zero, warm, short) = (uniq(), uniq(), uniq());
    secret_ttl(&c, "zero", &zero, 0).await;
    secret_ttl(&c, "warm", &warm, 30).await;
    secret_ttl(&c, "short", &short, 2).await;
    // One secret bound at a time: every response from a bound host is
    // scanned for every value bound to it (docs/security.md), so each phase
    // counts the openings of its own value only.
    let bind = |secret: &'static str, path: &'static str, header: &'static str| {
        let (c, rt) = (&c, &rt);
        async move {
            c.new_rule(
                rt,
                json!({"host": "bound.test", "path": path, "secret": secret,
                       "injection": {"headerName": header, "valueFormat": "${credential}"}}),
            )
            .await
        }
    };
    let unbind = |id: String| {
        let (c, rt) = (&c, &rt);
        async move {
            let (st, v) = c
                .delete(&format!("/v1/runtimes/{rt}/secret-injection-rules/{id}"))
                .await;
            assert!(st.is_success(), "{v}");
        }
    };
    let zero_rule = bind("zero", "/zero/*", "X-Zero").await;
    // Storing and binding open nothing: the sets hold ciphertext.
    assert_eq!(decrypts(&c).await, 0);
    let curl = |paths: &[&str]| {
        paths
            .iter()
            .map(|p| format!("curl -sS -o /dev/null -w '%{{http_code}} ' https://bound.test{p}"))
            .collect::<Vec<_>>()
            .join("; ")
    };

    // TTL 0: every injected request opens it, for the header and again for
    // the scan of its answer.
    let (code, out) = c.run(&rt, &curl(&["/zero/1", "/zero/2", "/zero/3"])).await;
    assert_eq!((code, out.as_str()), (0, "200 200 200 "), "{out}");
    for i in 1..=3 {
        assert_eq!(
            n.record.find(&format!("/zero/{i}"))[0].header("x-zero"),
            Some(zero.as_str())
        );
    }
    assert_eq!(decrypts(&c).await, 6);
    // A path of the bound host no binding names: intercepted, nothing
    // injected; its answer is scanned (one opening).
    let (code, _) = c.run(&rt, &curl(&["/elsewhere"])).await;
    assert_eq!(code, 0);
    assert_eq!(n.record.find("/elsewhere")[0].header("x-zero"), None);
    assert_eq!(decrypts(&c).await, 7);
    unbind(zero_rule).await;
    bind("warm", "/warm/*", "X-Warm").await;

    // TTL 30: requests within the window decrypt once.
    let warm_paths: Vec<String> = (1..=5).map(|i| format!("/warm/{i}")).collect();
    let refs: Vec<&str> = warm_paths.iter().map(String::as_str).collect();
    let (code, out) = c.run(&rt, &curl(&refs)).await;
    assert_eq!(code, 0, "{out}");
    for p in &warm_paths {
        assert_eq!(n.record.find(p)[0].header("x-warm"), Some(warm.as_str()));
    }
    assert_eq!(decrypts(&c).await, 8);
    let (code, _) = c.run(&rt, &curl(&["/warm/6", "/warm/7"])).await;
    assert_eq!(code, 0);
    assert_eq!(decrypts(&c).await, 8, "a cached value was decrypted again");
    // A replaced value reaches the very next request although the old one
    // was cached for 30 s more: the write is stronger than the TTL.
    let warm2 = uniq();
    let (st, v) = c
        .call(
            reqwest::Method::PUT,
            "/v1/secrets/warm",
            Some(json!({"value": warm2, "cache_ttl_secs": 30})),
        )
        .await;
    assert!(st.is_success(), "{v}");
    let (code, _) = c
        .run(&rt, &curl(&["/warm/after-put", "/warm/after-put2"]))
        .await;
    assert_eq!(code, 0);
    assert_eq!(
        n.record.find("/warm/after-put")[0].header("x-warm"),
        Some(warm2.as_str())
    );
    assert_eq!(decrypts(&c).await, 9);
    // A deleted one stops at once, cache or not.
    let (st, v) = c.delete("/v1/secrets/warm").await;
    assert!(st.is_success(), "{v}");
    // (With its binding gone the host has none left: the request is not
    // intercepted, so the runtime meets the upstream's own certificate,
    // which it does not trust: curl fails, and nothing is injected.)
    let (_, _) = c.run(&rt, &curl(&["/warm/after-delete"])).await;
    assert!(n
        .record
        .find("/warm/after-delete")
        .iter()
        .all(|r| r.header("x-warm").is_none()));
    assert_eq!(decrypts(&c).await, 9);

    // TTL 2: cached, then decrypted again once the TTL has passed.
    bind("short", "/short/*", "X-Short").await;
    let (code, _) = c.run(&rt, &curl(&["/short/1", "/short/2"])).await;
    assert_eq!(code, 0);
    assert_eq!(decrypts(&c).await, 10);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (code, _) = c.run(&rt, &curl(&["/short/3"])).await;
    assert_eq!(code, 0);
    assert_eq!(
        n.record.find("/short/3")[0].header("x-short"),
        Some(short.as_str())
    );
    assert_eq!(decrypts(&c).await, 11, "an expired value was served");

    // A hostile program that never stops asking does not stretch the TTL:
    // it counts from the decrypt, not from the last use.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = decrypts(&c).await;
    let t0 = Instant::now();
    let (code, out) = c.run(&rt,
        "for i in $(seq 1 30); do curl -sS -o /dev/null https://bound.test/short/loop$i || exit 1; sleep 0.2; done",
    )
    .await;
    let elapsed = t0.elapsed().as_secs_f64();
    assert_eq!(code, 0, "{out}");
    let during = decrypts(&c).await - before;
    let at_least = (elapsed / 2.0).floor() as u64;
    assert!(
        during >= at_least && during <= 30,
        "{during} decrypts in {elapsed:.1} s of requests with a 2 s TTL"
    );
    assert!(n
        .record
        .find("/short/loop")
        .iter()
        .all(|s| s.header("x-short") == Some(short.as_str())));

    // Another tenant's runtime asking the same host opens nothing of ours.
    let o = d.tenant("sttl-other").await;
    let ort = runtime(&o, &n, "sttlo", json!({})).await;
    let before = decrypts(&c).await;
    // (Not intercepted: it reaches the upstream directly, whose CA it lacks.)
    let (code, out) = o.run(&ort,
        "curl -sSk https://bound.test/zero/foreign && curl -sSk https://bound.test/short/foreign",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(decrypts(&c).await, before);
    for p in ["/zero/foreign", "/short/foreign"] {
        let s = &n.record.find(p)[0];
        assert_eq!((s.header("x-zero"), s.header("x-short")), (None, None));
    }

    // No value in the daemon's log (the decrypt lines name the secret only).
    let log = std::fs::read_to_string(d.data_dir.join("runtad.log")).unwrap_or_default();
    for v in [&zero, &warm, &warm2, &short] {
        assert!(!log.contains(v.as_str()), "the log has a value");
    }
}
