//! What the image red-team suites share: layer tars made entry by entry,
//! a small hostile HTTP server of the test's own (a registry stand-in that
//! answers what its handler says), and the pull calls with their checks.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{Client, Daemon};

// ---------------------------------------------------------------- layer tars

pub fn tar_builder() -> tar::Builder<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Complete);
    b
}

pub fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h
}

pub fn add_file(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

pub fn add_dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, path, &[][..]).unwrap();
}

pub fn add_symlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, path, target).unwrap();
}

pub fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(tar).unwrap();
    e.finish().unwrap()
}

// ---------------------------------------------------------------- hostile HTTP

#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub enum Resp {
    Full(u16, Vec<(String, String)>, Vec<u8>),
    /// `body`: `fast` bytes at once, then one byte a second.
    Trickle {
        body: Arc<Vec<u8>>,
        fast: usize,
    },
    /// A chunked body that never ends.
    Endless(u16),
    /// No answer at all (the connection is held open).
    Hang,
}

pub fn resp(code: u16, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    Resp::Full(
        code,
        headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body.to_vec(),
    )
}

pub fn redirect(code: u16, to: &str) -> Resp {
    resp(code, &[("Location", to)], b"")
}

pub type Handler = Arc<dyn Fn(&Req) -> Resp + Send + Sync>;

/// A small HTTP/1.1 server on loopback: one request per connection, every
/// request and connection counted, answered as its handler says.
pub struct Fake {
    pub addr: String,
    pub reqs: Arc<Mutex<Vec<Req>>>,
    pub conns: Arc<AtomicUsize>,
}

impl Fake {
    /// `make` gets the server's own address and returns its handler.
    pub fn start(make: impl FnOnce(&str) -> Handler) -> Fake {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let handler = make(&addr);
        let reqs: Arc<Mutex<Vec<Req>>> = Default::default();
        let conns: Arc<AtomicUsize> = Default::default();
        let (r2, c2) = (reqs.clone(), conns.clone());
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                c2.fetch_add(1, Ordering::SeqCst);
                let (h, r) = (handler.clone(), r2.clone());
                std::thread::spawn(move || serve_one(s, h, r));
            }
        });
        Fake { addr, reqs, conns }
    }

    pub fn requests(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }
}

fn serve_one(mut s: std::net::TcpStream, h: Handler, reqs: Arc<Mutex<Vec<Req>>>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let mut buf = Vec::new();
    let mut b = [0u8; 65536];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
        if buf.len() > 64 << 10 {
            return;
        }
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("");
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let req = Req {
        method,
        path,
        headers,
    };
    // Read (and drop) the request body, so the client sees our answer.
    let len: usize = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - end;
    while have < len {
        match s.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => have += n,
        }
    }
    reqs.lock().unwrap().push(req.clone());
    match h(&req) {
        Resp::Full(code, headers, body) => {
            let mut head = format!(
                "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
        Resp::Trickle { body, fast } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            if s.write_all(&body[..fast]).is_err() {
                return;
            }
            for b in &body[fast..] {
                std::thread::sleep(Duration::from_secs(1));
                if s.write_all(&[*b]).is_err() {
                    return;
                }
            }
        }
        Resp::Endless(code) => {
            let head = format!(
                "HTTP/1.1 {code} X\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
            );
            if s.write_all(head.as_bytes()).is_err() {
                return;
            }
            let chunk = format!("{:x}\r\n{}\r\n", 65536, "E".repeat(65536));
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                if s.write_all(chunk.as_bytes()).is_err() {
                    return;
                }
            }
        }
        Resp::Hang => std::thread::sleep(Duration::from_secs(120)),
    }
}

// ---------------------------------------------------------------- API calls

pub fn admin(d: &Daemon) -> Client {
    Client::new(&d.endpoint, &d.admin_token)
}

pub async fn start_pull(c: &Client, reference: &str) -> (StatusCode, Value) {
    c.post("/v1/images/pulls", json!({ "reference": reference }))
        .await
}

/// Waits (at most `secs`) for pull `id` to end; its object.
pub async fn wait_pull(c: &Client, id: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (st, v) = c.get(&format!("/v1/images/pulls/{id}")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if v["data"]["status"] != "running" {
            return v["data"].clone();
        }
        assert!(Instant::now() < deadline, "pull {id} did not end: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn pull(c: &Client, reference: &str) -> Value {
    let (st, v) = start_pull(c, reference).await;
    assert_eq!(st, StatusCode::ACCEPTED, "pull {reference}: {v}");
    wait_pull(c, v["data"]["id"].as_str().unwrap(), 120).await
}

pub async fn pull_ok(c: &Client, reference: &str) -> Value {
    let p = pull(c, reference).await;
    assert_eq!(p["status"], "succeeded", "pull {reference}: {p}");
    p
}

pub async fn pull_fails(c: &Client, reference: &str, needle: &str) -> String {
    let p = pull(c, reference).await;
    assert_eq!(p["status"], "failed", "pull {reference} should fail: {p}");
    let e = p["error"].as_str().unwrap_or_default().to_string();
    assert!(
        e.contains(needle),
        "pull {reference}: error {e:?} should say {needle:?}"
    );
    e
}

pub async fn healthy(d: &Daemon) {
    let r = reqwest::get(format!("{}/healthz", d.endpoint)).await;
    assert!(
        r.is_ok_and(|r| r.status().is_success()),
        "runtad is gone: {}",
        d.log_tail()
    );
}

/// A reference as one path segment (every byte but `[A-Za-z0-9-_.:@]`
/// percent-encoded).
pub fn enc(r: &str) -> String {
    let mut out = String::new();
    for b in r.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------- OCI layouts

pub const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// One layer of a test image: the tar (its digest is the diff_id), the
/// blob as stored, and the blob's media type.
pub struct LayerSpec {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub media_type: &'static str,
}

pub fn gz_layer(tar: Vec<u8>) -> LayerSpec {
    LayerSpec {
        blob: gzip(&tar),
        tar,
        media_type: GZIP_LAYER,
    }
}

/// What [`write_layout`] wrote: digests of the manifest, config, blobs
/// and the layers' diff_ids.
#[derive(Clone, Debug)]
pub struct Written {
    pub manifest: String,
    pub config: String,
    pub blobs: Vec<String>,
    pub diff_ids: Vec<String>,
}

/// Writes an OCI layout at `dir` (anew) with one image tagged `tag`:
/// `layers` bottom first, `run` as the config's `config`.
pub fn write_layout(dir: &std::path::Path, tag: &str, layers: &[LayerSpec], run: Value) -> Written {
    use super::registry::{put_blob, sha};
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut descs = Vec::new();
    let (mut blobs, mut diff_ids) = (Vec::new(), Vec::new());
    for l in layers {
        diff_ids.push(sha(&l.tar));
        let d = put_blob(dir, &l.blob);
        descs.push(json!({"mediaType": l.media_type, "digest": d, "size": l.blob.len()}));
        blobs.push(d);
    }
    let config = config_bytes(&diff_ids, run);
    let cd = put_blob(dir, &config);
    let manifest = manifest_bytes(&cd, config.len(), &descs);
    let md = put_blob(dir, &manifest);
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    Written {
        manifest: md,
        config: cd,
        blobs,
        diff_ids,
    }
}

pub fn config_bytes(diff_ids: &[String], run: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": "2026-01-02T03:04:05Z",
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

pub fn manifest_bytes(config: &str, config_len: usize, layers: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_len},
        "layers": layers,
    }))
    .unwrap()
}
