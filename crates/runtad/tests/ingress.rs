//! The ingress against a real daemon: TLS with the daemon's CA, HTTP/1.1 and
//! HTTP/2, streaming, WebSocket, routing and refusals, the idle policy with
//! wake-on-request, and network isolation between runtimes.
//!
//! Clients are real: `curl --cacert` and a rustls + tungstenite WebSocket.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{free_port, name, Client, Daemon};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const SERVER_PY: &str = include_str!("fixtures/ingress_server.py");

struct Ingress {
    d: Daemon,
    https: u16,
    http: u16,
}

/// One daemon with both ingress listeners, shared by the tests of this file.
fn ingress() -> &'static Ingress {
    static I: OnceLock<Ingress> = OnceLock::new();
    I.get_or_init(|| {
        let (https, http) = (free_port(), free_port());
        let (hs, hp) = (format!("127.0.0.1:{https}"), format!("127.0.0.1:{http}"));
        let d = Daemon::start_new(&["--ingress-listen-https", &hs, "--ingress-listen-http", &hp]);
        Ingress { d, https, http }
    })
}

/// What curl saw.
struct Fetched {
    code: u16,
    version: String,
    body: Vec<u8>,
    /// Seconds to the first body byte and to the end.
    first_byte: f64,
    total: f64,
    headers: String,
}

impl Fetched {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Ingress {
    fn ca(&self) -> PathBuf {
        self.d.data_dir.join("ingress/ca.pem")
    }

    fn https_url(&self, label: &str, path: &str) -> String {
        format!("https://{label}.runta.localhost:{}{path}", self.https)
    }

    fn http_url(&self, label: &str, path: &str) -> String {
        format!("http://{label}.runta.localhost:{}{path}", self.http)
    }

    /// `curl` with the daemon's CA; `*.localhost` is pinned to loopback.
    async fn fetch(&self, url: &str, extra: &[&str]) -> Fetched {
        let hostport = url.split("://").nth(1).unwrap().split('/').next().unwrap();
        let dir =
            std::env::temp_dir().join(format!("runta-ingress-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let (body, headers) = (dir.join("body"), dir.join("headers"));
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "-m", "60", "--cacert"])
            .arg(self.ca())
            .args(["--resolve", &format!("{hostport}:127.0.0.1"), "-o"])
            .arg(&body)
            .arg("-D")
            .arg(&headers)
            .args([
                "-w",
                "%{http_code} %{http_version} %{time_starttransfer} %{time_total}",
            ])
            .args(extra)
            .arg(url)
            .output()
            .await
            .unwrap();
        let w = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "curl {url}: {w} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let f: Vec<&str> = w.split_whitespace().collect();
        let r = Fetched {
            code: f[0].parse().unwrap(),
            version: f[1].to_string(),
            first_byte: f[2].parse().unwrap(),
            total: f[3].parse().unwrap(),
            body: std::fs::read(&body).unwrap_or_default(),
            headers: std::fs::read_to_string(&headers)
                .unwrap_or_default()
                .to_ascii_lowercase(),
        };
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    async fn metric(&self, name: &str) -> u64 {
        let admin = Client::new(&self.d.endpoint, &self.d.admin_token);
        let text = admin
            .raw(Method::GET, "/metrics", None)
            .await
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Creates a running runtime with `publish` and optional idle timeout.
async fn create(c: &Client, prefix: &str, publish: Value, idle: Option<u64>) -> (String, Value) {
    let n = name(prefix);
    let mut body = json!({"name": n, "resources": {"requests": {"vcpus": 1, "memory_mib": 256}}, "publish": publish});
    if let Some(t) = idle {
        body["idle_timeout_secs"] = json!(t);
    }
    let r = c.create_with(body).await;
    (n, r)
}

/// Starts the test server on `port` inside the runtime, detached, and waits
/// until it answers from inside.
async fn serve(c: &Client, runtime: &str, port: u16) {
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{runtime}/exec"),
            json!({"command": "cat > /root/server.py", "stdin": SERVER_PY}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    c.out(
        runtime,
        &format!(
            "cd /root && nohup python3 server.py {port} >/dev/null 2>&1 & \
             for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:{port}/ && exit 0; sleep 0.1; done; exit 1"
        ),
    )
    .await;
}

#[tokio::test]
async fn https_http1_http2_streaming_and_routing() {
    let ing = ingress();
    let c = ing.d.tenant("ing").await;
    let (n, r) = create(
        &c,
        "web",
        json!([{"port": 8080, "protocol": "https"}]),
        None,
    )
    .await;
    let id = r["id"].as_str().unwrap().to_string();
    // The URL the API shows is the one that works.
    let url = r["publish"][0]["url"].as_str().unwrap().to_string();
    assert_eq!(url, ing.https_url(&id, ""), "{r}");
    serve(&c, &n, 8080).await;
    let before = ing.metric("runta_ingress_requests_total").await;

    let h1 = ing.fetch(&format!("{url}/hi?x=1"), &["--http1.1"]).await;
    assert_eq!(
        (h1.code, h1.version.as_str()),
        (200, "1.1"),
        "{}",
        h1.text()
    );
    assert_eq!(
        h1.text(),
        format!(
            "hello /hi?x=1 host={id}.runta.localhost:{} proto=https\n",
            ing.https
        )
    );
    let h2 = ing.fetch(&format!("{url}/two"), &["--http2"]).await;
    assert_eq!((h2.code, h2.version.as_str()), (200, "2"), "{}", h2.text());
    assert!(h2.text().starts_with("hello /two host="), "{}", h2.text());
    let by_port = ing
        .fetch(&ing.https_url(&format!("8080-{id}"), "/p"), &[])
        .await;
    assert_eq!(by_port.code, 200);

    // Streaming: the first chunk arrives long before the last (no buffering).
    for proto in ["--http1.1", "--http2"] {
        let s = ing.fetch(&format!("{url}/stream"), &[proto]).await;
        assert_eq!(s.code, 200);
        assert_eq!(s.text().lines().count(), 5, "{}", s.text());
        assert!(
            s.total - s.first_byte > 0.9,
            "{proto}: first byte {} s, end {} s",
            s.first_byte,
            s.total
        );
    }
    // Request bodies pass through, with a length and chunked.
    let payload: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = std::env::temp_dir().join(format!(
        "runta-ingress-body-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&file, &payload).unwrap();
    let at_file = format!("@{}", file.display());
    for extra in [
        vec!["--http2", "--data-binary", at_file.as_str()],
        vec![
            "--http1.1",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            at_file.as_str(),
        ],
    ] {
        let e = ing.fetch(&format!("{url}/echo"), &extra).await;
        assert_eq!(e.code, 200, "{extra:?}");
        assert!(e.body == payload, "{extra:?}: {} bytes back", e.body.len());
    }
    let _ = std::fs::remove_file(&file);

    // Unknown hosts and unpublished ports are 404s from the ingress itself.
    for bad in [
        ing.https_url(&uuid::Uuid::new_v4().to_string(), "/"),
        ing.https_url(&format!("9000-{id}"), "/"),
        ing.https_url("nope", "/"),
        ing.http_url(&uuid::Uuid::new_v4().to_string(), "/"),
    ] {
        let f = ing.fetch(&bad, &[]).await;
        assert_eq!(f.code, 404, "{bad}: {}", f.text());
        assert!(
            f.headers.contains("x-runta-ingress: not_found"),
            "{bad}: {}",
            f.headers
        );
    }

    // Publish a second port over plain HTTP with PATCH; then take it away.
    let (st, v) = c
        .patch(
            &format!("/v1/runtimes/{n}"),
            json!({"publish": [{"port": 8080, "protocol": "https"}, {"port": 9000, "protocol": "http"}]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let url9000 = v["data"]["publish"][1]["url"].as_str().unwrap().to_string();
    assert_eq!(url9000, ing.http_url(&format!("9000-{id}"), ""));
    serve(&c, &n, 9000).await;
    let plain = ing.fetch(&format!("{url9000}/plain"), &[]).await;
    assert_eq!(plain.code, 200, "{}", plain.text());
    assert!(plain.text().contains("proto=http\n"), "{}", plain.text());
    // An https port asked for over plain HTTP is sent to HTTPS.
    let redirect = ing.fetch(&ing.http_url(&id, "/r?q=1"), &[]).await;
    assert_eq!(redirect.code, 308);
    assert!(
        redirect.headers.contains(&format!("location: {url}/r?q=1")),
        "{}",
        redirect.headers
    );
    let (st, _) = c
        .patch(
            &format!("/v1/runtimes/{n}"),
            json!({"publish": [{"port": 8080, "protocol": "https"}]}),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(ing.fetch(&format!("{url9000}/plain"), &[]).await.code, 404);

    let after = ing.metric("runta_ingress_requests_total").await;
    assert!(
        after >= before + 9,
        "ingress request counter {before} -> {after}"
    );
    c.delete(&format!("/v1/runtimes/{n}")).await;
    assert_eq!(ing.fetch(&url, &[]).await.code, 404);
}

/// A TLS connection to the ingress that trusts only the daemon's CA.
async fn tls_connect(
    ing: &Ingress,
    host: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ing.ca()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", ing.https))
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(host.to_string()).unwrap(), tcp)
        .await
        .expect("TLS handshake with the ingress, verified against its CA")
}

#[tokio::test]
async fn websocket_upgrade_round_trip() {
    let ing = ingress();
    let c = ing.d.tenant("ingws").await;
    let (n, r) = create(&c, "ws", json!([{"port": 8765, "protocol": "https"}]), None).await;
    let id = r["id"].as_str().unwrap();
    serve(&c, &n, 8765).await;
    let host = format!("{id}.runta.localhost");
    let tls = tls_connect(ing, &host).await;
    let (mut ws, resp) =
        tokio_tungstenite::client_async(format!("wss://{host}:{}/ws", ing.https), tls)
            .await
            .expect("WebSocket handshake through the ingress");
    assert_eq!(resp.status(), 101);
    ws.send(Message::Text("hello through the ingress".into()))
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m, Message::Text("hello through the ingress".into()));
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 256) as u8).collect();
    ws.send(Message::Binary(big.clone().into())).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m, Message::Binary(big.into()));
    ws.close(None).await.unwrap();
    c.delete(&format!("/v1/runtimes/{n}")).await;
}

async fn wait_status(c: &Client, n: &str, want: &str, secs: u64) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if c.status(n).await == want {
            return t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{n} did not become {want} within {secs} s (it is {})",
        c.status(n).await
    );
}

#[tokio::test]
async fn idle_timeout_suspends_and_a_request_wakes() {
    let ing = ingress();
    let c = ing.d.tenant("ingidle").await;
    let (n, r) = create(
        &c,
        "idle",
        json!([{"port": 8080, "protocol": "https"}]),
        Some(2),
    )
    .await;
    let url = r["publish"][0]["url"].as_str().unwrap().to_string();
    serve(&c, &n, 8080).await;
    assert_eq!(ing.fetch(&format!("{url}/warm"), &[]).await.code, 200);

    // No request and no exec for 2 s: suspended, promptly.
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        c.status(&n).await,
        "running",
        "suspended before its idle timeout"
    );
    wait_status(&c, &n, "suspended", 8).await;
    let idle_for = t0.elapsed();
    eprintln!(
        "suspended {:.2} s after the last request (timeout 2 s)",
        idle_for.as_secs_f64()
    );
    assert!(
        idle_for < Duration::from_millis(4500),
        "idle scan too slow: {idle_for:?}"
    );
    assert!(c.events(&n).await.contains(&"idle_suspended".to_string()));

    // The next request wakes it and is served: slower, never an error.
    let f = ing.fetch(&format!("{url}/after-wake"), &[]).await;
    assert_eq!(f.code, 200, "{}", f.text());
    assert!(f.text().starts_with("hello /after-wake "), "{}", f.text());
    eprintln!("first request after suspension took {:.3} s", f.total);
    assert_eq!(c.status(&n).await, "running");
    assert!(c.events(&n).await.contains(&"woken".to_string()));

    // A request in flight longer than the timeout keeps it awake.
    let slow = {
        let url = url.clone();
        tokio::spawn(async move { ingress().fetch(&format!("{url}/slow?secs=4"), &[]).await })
    };
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_millis(3500) {
        assert_eq!(
            c.status(&n).await,
            "running",
            "suspended with a request in flight"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let s = slow.await.unwrap();
    assert_eq!((s.code, s.text().as_str()), (200, "slow done\n"));
    wait_status(&c, &n, "suspended", 8).await;

    // So does a running exec (exec wakes it first).
    let exec = {
        let c = c.clone();
        let n = n.clone();
        tokio::spawn(async move { c.out(&n, "sleep 3.5; echo done").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t2 = Instant::now();
    while t2.elapsed() < Duration::from_millis(2800) {
        assert_eq!(
            c.status(&n).await,
            "running",
            "suspended with an exec running"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(exec.await.unwrap(), "done\n");
    c.delete(&format!("/v1/runtimes/{n}")).await;
}

#[tokio::test]
async fn stopped_and_paused_runtimes_answer_503() {
    let ing = ingress();
    let c = ing.d.tenant("ing503").await;
    let (n, r) = create(
        &c,
        "down",
        json!([{"port": 8080, "protocol": "https"}]),
        None,
    )
    .await;
    let url = r["publish"][0]["url"].as_str().unwrap().to_string();
    serve(&c, &n, 8080).await;
    assert_eq!(ing.fetch(&url, &[]).await.code, 200);

    let (st, v) = c.post(&format!("/v1/runtimes/{n}/stop"), json!({})).await;
    assert_eq!(st, 200, "{v}");
    let f = ing.fetch(&url, &[]).await;
    assert_eq!(f.code, 503, "{}", f.text());
    assert!(f.text().contains("is shut down"), "{}", f.text());
    assert!(
        f.headers.contains("x-runta-status: shutdown"),
        "{}",
        f.headers
    );

    let (st, _) = c.post(&format!("/v1/runtimes/{n}/start"), json!({})).await;
    assert_eq!(st, 200);
    // Booted again but nothing listens yet: the ingress says so (502).
    let f = ing.fetch(&url, &[]).await;
    assert_eq!(f.code, 502, "{}", f.text());
    assert!(f.headers.contains("x-runta-ingress: bad_gateway"));

    let (st, _) = c.post(&format!("/v1/runtimes/{n}/pause"), json!({})).await;
    assert_eq!(st, 200);
    let f = ing.fetch(&url, &[]).await;
    assert_eq!(f.code, 503);
    assert!(f.text().contains("is paused"), "{}", f.text());
    c.delete(&format!("/v1/runtimes/{n}")).await;
}

#[tokio::test]
async fn runtimes_cannot_reach_each_other_or_the_daemon() {
    let ing = ingress();
    let c = ing.d.tenant("ingiso").await;
    let (a, _) = create(&c, "a", json!([]), None).await;
    let (b, rb) = create(&c, "b", json!([{"port": 8080, "protocol": "https"}]), None).await;
    serve(&c, &b, 8080).await;
    // The host reaches b through the ingress ...
    let url = rb["publish"][0]["url"].as_str().unwrap();
    assert_eq!(ing.fetch(url, &[]).await.code, 200);
    // ... but a reaches neither b nor the daemon (API or ingress ports).
    let b_ip = rb["ip"].as_str().unwrap();
    let gw = format!("10.{}.0.1", ing.d.subnet_octet);
    let api_port = ing.d.endpoint.rsplit(':').next().unwrap();
    for target in [
        format!("http://{b_ip}:8080/"),
        format!("http://{gw}:{api_port}/healthz"),
        format!("https://{gw}:{}/", ing.https),
        format!("http://{gw}:{}/", ing.http),
    ] {
        let d = c
            .sh(&a, &format!("curl -sS -k -m 3 -o /dev/null {target}"))
            .await;
        assert_ne!(d["exit_code"], 0, "{a} reached {target}: {d}");
    }
    // a itself has a working network (its own loopback).
    assert_eq!(
        c.sh(
            &a,
            "python3 -c 'import socket; socket.socket().bind((\"127.0.0.1\", 0))'"
        )
        .await["exit_code"],
        0
    );
    for n in [a, b] {
        c.delete(&format!("/v1/runtimes/{n}")).await;
    }
}

/// Makes a CA and a `*.runta.localhost` certificate it signs (with openssl, as
/// an operator would), plus an unrelated key; returns their folder.
fn operator_certificates() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("runta-opcert-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:*.runta.localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: Vec<Vec<&str>> = vec![
        [
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=operator-test-ca",
            ],
        ]
        .concat(),
        [
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=*.runta.localhost",
            ],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
        [
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "other.key",
                "-out",
                "other.pem",
                "-days",
                "2",
                "-subj",
                "/CN=other",
            ],
        ]
        .concat(),
    ];
    for args in steps {
        let out = std::process::Command::new("openssl")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

/// `--tls-cert/--tls-key`: the ingress serves the operator's certificate (a
/// client that trusts only the operator's CA gets through) and makes no CA of
/// its own.
#[tokio::test]
async fn operator_certificate_is_served() {
    let certs = operator_certificates();
    let https = free_port();
    let hs = format!("127.0.0.1:{https}");
    let (cert, key) = (certs.join("leaf.pem"), certs.join("leaf.key"));
    let d = Daemon::start_new(&[
        "--ingress-listen-https",
        &hs,
        "--ingress-listen-http",
        "off",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(
        !d.data_dir.join("ingress/ca.pem").exists(),
        "runtad made its own CA although the operator gave a certificate"
    );
    let c = d.tenant("opcert").await;
    let (n, r) = create(&c, "op", json!([{"port": 8080, "protocol": "https"}]), None).await;
    serve(&c, &n, 8080).await;
    let id = r["id"].as_str().unwrap();
    let host = format!("{id}.runta.localhost:{https}");
    let curl_trusting = |ca: PathBuf| {
        let host = host.clone();
        async move {
            tokio::process::Command::new("curl")
                .args(["-sS", "-m", "30", "--cacert"])
                .arg(ca)
                .args(["--resolve", &format!("{host}:127.0.0.1")])
                .arg(format!("https://{host}/hello"))
                .output()
                .await
                .unwrap()
        }
    };
    let out = curl_trusting(certs.join("ca.pem")).await;
    assert!(
        out.status.success(),
        "curl trusting only the operator's CA: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty());
    // A client that trusts some other CA is refused by its own TLS check.
    let out = curl_trusting(certs.join("other.pem")).await;
    assert!(!out.status.success(), "a wrong CA must not verify");
    c.delete(&format!("/v1/runtimes/{n}")).await;
    let _ = std::fs::remove_dir_all(&certs);
}

/// A certificate with someone else's key, or a missing file, stops runtad at
/// start with the reason, before it touches the host (no bridge left behind).
#[tokio::test]
async fn bad_operator_certificate_stops_the_daemon_cleanly() {
    let certs = operator_certificates();
    let cert = certs.join("leaf.pem");
    for (key, expect) in [
        (certs.join("other.key"), "TLS certificate"),
        (certs.join("missing.key"), "missing.key"),
    ] {
        let data =
            std::env::temp_dir().join(format!("runta-badcert-{}", uuid::Uuid::new_v4().simple()));
        let octet = (210 + std::process::id() % 40) as u8;
        let out = std::process::Command::new(common::runtad_bin())
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--images-dir", &common::images_dir(), "--no-prebuild"])
            .args(["--subnet-octet", &octet.to_string()])
            .args([
                "--ingress-listen-https",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .args(["--ingress-listen-http", "off", "--tls-cert"])
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "runtad started with {key:?}");
        assert!(stderr.contains(expect), "{stderr}");
        let inst = runtad::config::instance_tag(&data.canonicalize().unwrap_or(data.clone()));
        assert!(
            !std::path::Path::new("/sys/class/net")
                .join(format!("rtb-{inst}"))
                .exists(),
            "a daemon that failed to start left its bridge"
        );
        let _ = std::fs::remove_dir_all(&data);
    }
    let _ = std::fs::remove_dir_all(&certs);
}

/// `idle_policy.mode = suspend_only`: suspended for idleness like any other,
/// but no ingress request, exec or file call wakes it (503 page / 409); only
/// start or resume does. Set and read back in both spellings.
#[tokio::test]
async fn suspend_only_wakes_on_start_or_resume_never_on_a_request() {
    let ing = ingress();
    let c = ing.d.tenant("ingsonly").await;
    let n = name("sonly");
    let r = c
        .create_with(json!({
            "name": n, "resources": {"requests": {"vcpus": 1, "memory_mib": 256}},
            "ingress_specs": [{"protocol": "https", "runtime_port": 8080}],
            "idle_policy": {"mode": "suspend_only", "suspend_after_secs": 2}
        }))
        .await;
    assert_eq!(
        r["idle_policy"],
        json!({"mode": "suspend_only", "suspend_after_secs": 2}),
        "{r}"
    );
    assert_eq!(
        (r["idle_timeout_secs"].as_u64(), r["idle_wakeup"].as_bool()),
        (Some(2), Some(false))
    );
    let url = r["publish"][0]["url"].as_str().unwrap().to_string();
    let plain = format!("{url}/x")
        .replacen("https://", "http://", 1)
        .replacen(&format!(":{}", ing.https), &format!(":{}", ing.http), 1);
    serve(&c, &n, 8080).await;
    assert_eq!(ing.fetch(&format!("{url}/warm"), &[]).await.code, 200);
    wait_status(&c, &n, "suspended", 8).await;

    // Requests (HTTPS, plain HTTP, a WebSocket upgrade), exec and file calls
    // leave it suspended.
    for _ in 0..3 {
        let f = ing.fetch(&format!("{url}/poke"), &[]).await;
        assert_eq!(f.code, 503, "{}", f.text());
        assert!(f.text().contains("suspend_only"), "{}", f.text());
        assert!(
            f.headers.contains("x-runta-status: suspended"),
            "{}",
            f.headers
        );
    }
    let f = ing
        .fetch(
            &url,
            &["-H", "Connection: Upgrade", "-H", "Upgrade: websocket"],
        )
        .await;
    assert_eq!(f.code, 503, "{}", f.text());
    let f = ing.fetch(&plain, &[]).await;
    assert!(f.code == 503 || f.code == 308, "{} {}", f.code, f.text());
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{n}/exec"),
            json!({"command": "true"}),
        )
        .await;
    common::assert_error(st, &v, 409, "failed_precondition", "suspend_only");
    let (st, _) = c
        .get(&format!("/v1/runtimes/{n}/files?path=/etc/hostname"))
        .await;
    assert_eq!(st, 409);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.status(&n).await, "suspended");
    assert!(!c.events(&n).await.contains(&"woken".to_string()));

    // resume wakes it and it serves at once; so does start after the next
    // suspension.
    let (st, v) = c.post(&format!("/v1/runtimes/{n}/resume"), json!({})).await;
    assert_eq!(
        (st.as_u16(), v["data"]["status"].as_str()),
        (200, Some("running")),
        "{v}"
    );
    let f = ing.fetch(&format!("{url}/after-resume"), &[]).await;
    assert_eq!(f.code, 200, "{}", f.text());
    wait_status(&c, &n, "suspended", 8).await;
    let (st, v) = c.post(&format!("/v1/runtimes/{n}/start"), json!({})).await;
    assert_eq!(
        (st.as_u16(), v["data"]["status"].as_str()),
        (200, Some("running")),
        "{v}"
    );
    assert_eq!(c.out(&n, "echo up").await, "up\n");

    // Both spellings of one setting must agree.
    let (st, v) = c
        .patch(
            &format!("/v1/runtimes/{n}"),
            json!({"idle_wakeup": true, "idle_policy": {"mode": "suspend_only", "suspend_after_secs": 2}}),
        )
        .await;
    common::assert_error(st, &v, 422, "invalid_argument", "idle_policy");
    // PATCH to suspend_and_wakeup: a request wakes it again.
    let (st, v) = c
        .patch(
            &format!("/v1/runtimes/{n}"),
            json!({"idle_policy": {"mode": "suspend_and_wakeup", "suspend_after_secs": 2}}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["idle_policy"]["mode"], "suspend_and_wakeup");
    assert_eq!(v["data"]["idle_wakeup"], true);
    wait_status(&c, &n, "suspended", 8).await;
    let f = ing.fetch(&format!("{url}/wakes"), &[]).await;
    assert_eq!(f.code, 200, "{}", f.text());
    assert_eq!(c.status(&n).await, "running");
    // And our own spelling turns suspend_only back on.
    let (st, v) = c
        .patch(&format!("/v1/runtimes/{n}"), json!({"idle_wakeup": false}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["data"]["idle_policy"],
        json!({"mode": "suspend_only", "suspend_after_secs": 2})
    );
    let (_, v) = c.get(&format!("/v1/runtimes/{n}")).await;
    assert_eq!(v["data"]["idle_wakeup"], false, "{v}");
    wait_status(&c, &n, "suspended", 8).await;
    assert_eq!(ing.fetch(&format!("{url}/again"), &[]).await.code, 503);
    c.delete(&format!("/v1/runtimes/{n}")).await;
}
