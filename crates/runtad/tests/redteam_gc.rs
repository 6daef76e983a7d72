//! Red-team pass on the image store's garbage collection (issue 19: gc no
//! longer waits for pulls; pulls hold what they use, every pull, import and
//! DELETE ends with a collection, partial downloads are kept within a
//! budget). Each test is one attack against a real runtad, a real Debian
//! `docker-registry` on loopback and, where a registry must misbehave, a
//! small registry of the test's own serving OCI layouts.
//!
//! Needs root, `docker-registry`, `skopeo` and a static busybox; a test that
//! cannot find them says so and skips.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::image_attacks::*;
use common::registry::{busybox, put_blob, sha, start_registry, Registry};
use common::{Client, Daemon};
use reqwest::StatusCode;
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------- layers

fn zeros(name: &str, n: u64) -> Vec<u8> {
    let mut t = tar_builder();
    add_file(&mut t, name, 0o644, &vec![0u8; n as usize]);
    t.into_inner().unwrap()
}

/// `n` bytes that do not compress.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    let mut x: u64 = 0x9e3779b97f4a7c15 ^ seed.wrapping_mul(0x2545f4914f6cdd1d);
    for b in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    v
}

fn bb_layer() -> Vec<u8> {
    let bb = busybox().unwrap();
    let mut t = tar_builder();
    for d in ["bin", "etc", "tmp", "root", "work"] {
        add_dir(&mut t, d);
    }
    add_file(&mut t, "bin/busybox", 0o755, &bb);
    add_file(
        &mut t,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\n",
    );
    add_file(&mut t, "etc/group", 0o644, b"root:x:0:\n");
    for a in ["sh", "ls", "cat", "echo", "wc", "sleep", "true"] {
        add_symlink(&mut t, &format!("bin/{a}"), "busybox");
    }
    t.into_inner().unwrap()
}

fn file_layer(path: &str, body: &[u8]) -> Vec<u8> {
    let mut t = tar_builder();
    add_file(&mut t, path, 0o644, body);
    t.into_inner().unwrap()
}

/// Writes an OCI layout of one image (gzip layers from `tars`, or raw
/// `(blob, diff_id)` pairs in `raw`) tagged `tag`; returns the manifest
/// digest.
fn layout_raw(dir: &Path, tag: &str, tars: &[Vec<u8>], raw: &[(Vec<u8>, String)]) -> String {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for t in tars {
        let blob = gzip(t);
        diff_ids.push(sha(t));
        descs.push(
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": put_blob(dir, &blob), "size": blob.len()}),
        );
    }
    for (blob, diff_id) in raw {
        diff_ids.push(diff_id.clone());
        descs.push(
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": put_blob(dir, blob), "size": blob.len()}),
        );
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": "2026-01-02T03:04:05Z",
        "config": {"Env": ["PATH=/bin"], "Labels": {"tag": tag}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": put_blob(dir, &config), "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let md = put_blob(dir, &manifest);
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    md
}

// ---------------------------------------------------------------- world

struct World {
    reg: Registry,
    work: PathBuf,
    srv: LayoutServer,
}

fn missing_tools() -> Option<String> {
    common::registry::missing_tools_of(&["docker-registry", "skopeo"])
}

macro_rules! skip_unless_ready {
    () => {
        if let Some(why) = missing_tools() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let work = std::env::temp_dir().join(format!(
            "runta-redteam-gc-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&work).unwrap();
        World {
            reg: start_registry(None, None),
            work,
            srv: LayoutServer::start(),
        }
    })
}

/// Writes the image's layout (under a name of its own) and pushes it to the
/// real registry as `repo:tag`; returns (reference, layout dir).
fn publish(repo: &str, tag: &str, tars: &[Vec<u8>]) -> (String, PathBuf) {
    let w = world();
    let dir = w.work.join(format!(
        "{}-{tag}-{}",
        repo.replace('/', "_"),
        uuid::Uuid::new_v4().simple()
    ));
    layout_raw(&dir, tag, tars, &[]);
    w.reg.push_layout(&dir, tag, repo, tag, &[]);
    (format!("{}/{repo}:{tag}", w.reg.addr), dir)
}

fn daemon(extra: &[&str]) -> Daemon {
    let w = world();
    let insecure = format!("{},{}", w.reg.addr, w.srv.addr);
    let mut args = vec!["--no-prebuild", "--insecure-registry", &insecure];
    args.extend_from_slice(extra);
    Daemon::start_new(&args)
}

// ---------------------------------------------------------------- a registry of our own

#[derive(Clone, Copy)]
enum Blob {
    /// `chunk` bytes, then a pause of `pause_ms`, to the end.
    Slow { chunk: usize, pause_ms: u64 },
    /// The full length announced, `n` bytes sent, the connection closed.
    Cut(usize),
}

/// Serves the OCI layouts it is given (a manifest by its tag annotation, a
/// blob by digest from any of them, under any repository), some blobs
/// slowly or cut short.
struct LayoutServer {
    addr: String,
    dirs: Arc<Mutex<Vec<PathBuf>>>,
    behave: Arc<Mutex<HashMap<String, Blob>>>,
}

impl LayoutServer {
    fn start() -> LayoutServer {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let dirs: Arc<Mutex<Vec<PathBuf>>> = Default::default();
        let behave: Arc<Mutex<HashMap<String, Blob>>> = Default::default();
        let (d2, b2) = (dirs.clone(), behave.clone());
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let (d, b) = (d2.clone(), b2.clone());
                std::thread::spawn(move || serve_layout(s, &d, &b));
            }
        });
        LayoutServer { addr, dirs, behave }
    }

    fn add(&self, dir: &Path) {
        self.dirs.lock().unwrap().push(dir.to_path_buf());
    }

    fn set(&self, digest: &str, b: Blob) {
        self.behave
            .lock()
            .unwrap()
            .insert(digest.trim_start_matches("sha256:").to_string(), b);
    }
}

fn serve_layout(
    mut s: std::net::TcpStream,
    dirs: &Mutex<Vec<PathBuf>>,
    behave: &Mutex<HashMap<String, Blob>>,
) {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    }
    let req = String::from_utf8_lossy(&buf).into_owned();
    let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
    let dirs = dirs.lock().unwrap().clone();
    let find_blob = |hex: &str| {
        dirs.iter()
            .map(|d| d.join("blobs/sha256").join(hex))
            .find(|p| p.is_file())
    };
    let reply = |s: &mut std::net::TcpStream, code: &str, hdrs: &str, body: &[u8]| {
        let _ = write!(
            s,
            "HTTP/1.1 {code}\r\nContent-Length: {}\r\nConnection: close\r\n{hdrs}\r\n",
            body.len()
        );
        let _ = s.write_all(body);
    };
    if path == "/v2/" {
        return reply(
            &mut s,
            "200 OK",
            "Content-Type: application/json\r\n",
            b"{}",
        );
    }
    if let Some(r) = path.split("/manifests/").nth(1) {
        for d in &dirs {
            let index: Value =
                serde_json::from_slice(&std::fs::read(d.join("index.json")).unwrap()).unwrap();
            let m = &index["manifests"][0];
            let md = m["digest"].as_str().unwrap();
            if m["annotations"]["org.opencontainers.image.ref.name"] == r || md == r {
                let body = std::fs::read(d.join("blobs/sha256").join(&md[7..])).unwrap();
                let h = format!(
                    "Content-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: {md}\r\n"
                );
                return reply(&mut s, "200 OK", &h, &body);
            }
        }
        return reply(&mut s, "404 Not Found", "", b"");
    }
    if let Some(d) = path.split("/blobs/").nth(1) {
        let hex = d.trim_start_matches("sha256:").to_string();
        let Some(p) = find_blob(&hex) else {
            return reply(&mut s, "404 Not Found", "", b"");
        };
        let body = std::fs::read(p).unwrap();
        let how = behave.lock().unwrap().get(&hex).copied();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
            body.len()
        );
        match how {
            None => {
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&body);
            }
            Some(Blob::Slow { chunk, pause_ms }) => {
                let _ = s.write_all(head.as_bytes());
                for c in body.chunks(chunk) {
                    if s.write_all(c).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(pause_ms));
                }
            }
            Some(Blob::Cut(n)) => {
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&body[..n.min(body.len())]);
                let _ = s.flush();
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        return;
    }
    reply(&mut s, "404 Not Found", "", b"")
}

/// An image on our own registry whose one layer (`n` bytes of noise, not a
/// tar: it is never finished) is cut after `n - 64 KiB`: every pull of it
/// fails and leaves a partial download of that size. Returns its reference.
fn cut_image(tag: &str, n: usize) -> String {
    let w = world();
    let dir = w
        .work
        .join(format!("cut-{tag}-{}", uuid::Uuid::new_v4().simple()));
    let blob = noise(n, tag.len() as u64 ^ n as u64 ^ rand_seed());
    let diff_id = sha(&blob);
    layout_raw(&dir, tag, &[], &[(blob.clone(), diff_id)]);
    w.srv.add(&dir);
    w.srv.set(&sha(&blob), Blob::Cut(n - (64 << 10)));
    format!("{}/gc/cut:{tag}", w.srv.addr)
}

fn rand_seed() -> u64 {
    u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap())
}

// ---------------------------------------------------------------- disk

fn partials(d: &Daemon) -> Vec<(String, u64)> {
    std::fs::read_dir(d.data_dir.join("images/blobs/partial"))
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().map(|m| m.len()).unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn names_in(p: &Path) -> HashSet<String> {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Checks the store's disk is what its records explain: a layer directory
/// for each diff_id a recorded image lists and no other, each recorded
/// layer blob present, no more blobs than images' manifests, configs and
/// layers, nothing left in `layers/tmp`.
async fn store_explained(d: &Daemon) {
    if let Err(e) = explained(d).await {
        panic!("{e}");
    }
}

async fn explained(d: &Daemon) -> Result<(), String> {
    let a = admin(d);
    let (st, v) = a.get("/v1/images").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let mut layers = HashSet::new();
    let mut blobs = HashSet::new();
    let mut images = 0;
    for img in v["data"].as_array().unwrap() {
        let Some(dg) = img["digest"].as_str() else {
            continue; // the built-in base
        };
        images += 1;
        let (st, one) = a.get(&format!("/v1/images/{dg}")).await;
        assert_eq!(st, StatusCode::OK, "{one}");
        blobs.insert(dg[7..].to_string());
        for l in one["data"]["layer_digests"].as_array().unwrap() {
            layers.insert(l["diff_id"].as_str().unwrap()[7..].to_string());
            blobs.insert(l["digest"].as_str().unwrap()[7..].to_string());
        }
    }
    let s = d.data_dir.join("images");
    let on_disk = names_in(&s.join("layers/sha256"));
    if on_disk != layers {
        return Err(format!(
            "layer directories on disk {on_disk:?}, the records' layers {layers:?}"
        ));
    }
    let disk_blobs = names_in(&s.join("blobs/sha256"));
    for b in &blobs {
        if !disk_blobs.contains(b) {
            return Err(format!("recorded blob {b} is gone"));
        }
    }
    if disk_blobs.len() > blobs.len() + images {
        return Err(format!(
            "{} blobs on disk for {} images of {} manifests and layer blobs",
            disk_blobs.len(),
            images,
            blobs.len()
        ));
    }
    let tmp = names_in(&s.join("layers/tmp"));
    if !tmp.is_empty() {
        return Err(format!("left in layers/tmp: {tmp:?}"));
    }
    Ok(())
}

async fn create(c: &Client, name: &str, image: &str) {
    c.create_with(json!({"name": name, "image": image,
        "resources": {"requests": {"vcpus": 1, "memory_mib": 128}}}))
        .await;
}

async fn del_image(c: &Client, r: &str) {
    let (st, v) = c.delete(&format!("/v1/images/{}", enc(r))).await;
    assert_eq!(st, StatusCode::OK, "delete {r}: {v}");
}

// ---------------------------------------------------------------- attacks

/// A tenant pulling an image whose layers the store already has (another
/// tenant's) must download them all the same to prove it has them; that
/// download goes to `blobs/partial/<hex>.proof-<uuid>`, a name the in-use
/// map does not know. Any tenant's DELETE (a collection dropping every
/// partial nobody holds) moved it aside mid-download: the victim's pull
/// failed with "No such file or directory".
#[tokio::test(flavor = "multi_thread")]
async fn a_delete_never_breaks_another_tenants_proof_download() {
    skip_unless_ready!();
    let w = world();
    let big = {
        let mut t = tar_builder();
        add_file(&mut t, "noise", 0o644, &noise(768 << 10, 1));
        t.into_inner().unwrap()
    };
    let (shared, dir) = publish("gc/shared", "v1", std::slice::from_ref(&big));
    let (tiny, _) = publish("gc/tiny", "v1", &[zeros("tiny", 10)]);
    // The same image on our own registry, its layer 32 KiB every 100 ms.
    w.srv.add(&dir);
    w.srv.set(
        &sha(&gzip(&big)),
        Blob::Slow {
            chunk: 32 << 10,
            pause_ms: 100,
        },
    );
    let d = daemon(&[]);
    let owner = d.tenant("owner").await;
    let victim = d.tenant("victim").await;
    let attacker = d.tenant("attacker").await;
    pull_ok(&owner, &shared).await;
    pull_ok(&attacker, &tiny).await;
    let (st, v) = start_pull(&victim, &format!("{}/gc/shared:v1", w.srv.addr)).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !partials(&d).iter().any(|(n, _)| n.contains(".proof-")) {
        assert!(Instant::now() < deadline, "no proof download seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    del_image(&attacker, &tiny).await;
    let p = wait_pull(&victim, &id, 60).await;
    assert_eq!(
        p["status"], "succeeded",
        "another tenant's DELETE broke the victim's pull: {p}"
    );
    store_explained(&d).await;
}

/// Partial downloads never counted in the store's byte counter, yet a
/// collection that drops one took its size off the counter: a tenant whose
/// registry cuts a 12 MiB blob short, then any collection that drops the
/// partial (the operator's gc here), and the counter says the store is
/// 12 MiB emptier than it is. `--image-store-max-bytes` is then passed.
#[tokio::test(flavor = "multi_thread")]
async fn dropped_partials_never_blind_the_store_cap() {
    skip_unless_ready!();
    let d = daemon(&["--image-store-max-bytes", &(24 * MIB).to_string()]);
    let t = d.tenant("blind").await;
    let (p1, _) = publish("gc/cap", "p1", &[zeros("p1", 10 * MIB)]);
    let (p2, _) = publish("gc/cap", "p2", &[zeros("p2", 10 * MIB)]);
    let (p3, _) = publish("gc/cap", "p3", &[zeros("p3", 10 * MIB)]);
    pull_ok(&t, &p1).await;
    let cut = cut_image("blind", (12 * MIB) as usize);
    let p = pull(&t, &cut).await;
    assert_eq!(p["status"], "failed", "{p}");
    assert!(
        partials(&d).iter().map(|p| p.1).sum::<u64>() > 8 * MIB,
        "the cut blob left its partial download: {:?}",
        partials(&d)
    );
    let (st, v) = admin(&d).post("/v1/images/gc", json!({})).await;
    assert!(st.is_success(), "{v}");
    pull_ok(&t, &p2).await;
    // 20 MiB held; 10 more pass 24.
    let p = pull(&t, &p3).await;
    assert_eq!(
        p["status"], "failed",
        "the store holds three 10 MiB images under a 24 MiB cap: {p}"
    );
    assert!(
        p["error"]
            .as_str()
            .unwrap_or("")
            .contains("--image-store-max-bytes"),
        "{p}"
    );
}

/// Partial downloads are kept within 1 GiB whatever the store's cap: under
/// a 24 MiB `--image-store-max-bytes`, three cut 12 MiB blobs leave 36 MiB
/// of partials the cap never sees (each passes the cap's check alone).
#[tokio::test(flavor = "multi_thread")]
async fn kept_partials_stay_within_the_store_cap() {
    skip_unless_ready!();
    let d = daemon(&["--image-store-max-bytes", &(24 * MIB).to_string()]);
    let t = d.tenant("pile").await;
    for i in 0..3 {
        let cut = cut_image(&format!("pile{i}"), (12 * MIB) as usize);
        let p = pull(&t, &cut).await;
        assert_eq!(p["status"], "failed", "{p}");
    }
    let kept: u64 = partials(&d).iter().map(|p| p.1).sum();
    assert!(
        kept <= 24 * MIB,
        "{} MiB of partial downloads kept under a 24 MiB store cap: {:?}",
        kept / MIB,
        partials(&d)
    );
}

/// A tenant's DELETE of its own image ran a collection that drops every
/// partial download nobody holds: any tenant, at no cost (a 10-byte image
/// pulled and deleted), wipes every other tenant's resume state, as often
/// as it likes. Kept partials are shared room (1 GiB, newest first), so a
/// tenant can still push another's out, but only by downloading that much
/// itself: bounded, and accepted.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenants_delete_keeps_other_tenants_partials() {
    skip_unless_ready!();
    let d = daemon(&[]);
    let victim = d.tenant("resumer").await;
    let attacker = d.tenant("wiper").await;
    let (tiny, _) = publish("gc/wipe", "v1", &[zeros("wipe", 10)]);
    pull_ok(&attacker, &tiny).await;
    let cut = cut_image("resume", (4 * MIB) as usize);
    let p = pull(&victim, &cut).await;
    assert_eq!(p["status"], "failed", "{p}");
    let before = partials(&d);
    assert!(!before.is_empty(), "no partial download kept");
    del_image(&attacker, &tiny).await;
    assert_eq!(
        partials(&d),
        before,
        "another tenant's DELETE dropped the victim's partial download"
    );
    // The operator's gc still drops them all.
    let (st, v) = admin(&d).post("/v1/images/gc", json!({})).await;
    assert!(st.is_success(), "{v}");
    assert!(partials(&d).is_empty(), "{:?}", partials(&d));
}

/// Images sharing layers, pulled by two tenants; a runtime of one image
/// whose tag then moves; the other tenant deleting and pulling again in a
/// loop, the operator's gc and a commit of the runtime all at once. The
/// runtime keeps working, the commit and a runtime of it see every file,
/// and the store's disk is what the records explain after each step.
#[tokio::test(flavor = "multi_thread")]
async fn runtimes_and_commits_keep_their_layers_through_collections() {
    skip_unless_ready!();
    let bb = bb_layer();
    let (x, _) = publish(
        "gc/x",
        "v1",
        &[bb.clone(), file_layer("la.txt", b"layer-a\n")],
    );
    let (y, _) = publish(
        "gc/y",
        "v1",
        &[bb.clone(), file_layer("lb.txt", b"layer-b\n")],
    );
    let d = daemon(&[]);
    let a = d.tenant("user").await;
    let b = d.tenant("churn").await;
    pull_ok(&a, &x).await;
    pull_ok(&b, &y).await;
    let rt = common::name("gc");
    create(&a, &rt, &x).await;
    a.out(&rt, "echo kept > /work/note").await;
    // The tag moves: the runtime's image is unnamed now, but used.
    publish(
        "gc/x",
        "v1",
        &[bb.clone(), file_layer("la.txt", b"layer-a2\n")],
    );
    pull_ok(&a, &x).await;
    store_explained(&d).await;
    let churn = async {
        for _ in 0..4 {
            del_image(&b, &y).await;
            pull_ok(&b, &y).await;
            let (st, v) = admin(&d).post("/v1/images/gc", json!({})).await;
            assert!(st.is_success(), "{v}");
        }
    };
    let commit = async {
        let (st, v) = a
            .post(
                &format!("/v1/runtimes/{rt}/commit"),
                json!({"name": "snap:1"}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        v["data"]["name"].as_str().unwrap().to_string()
    };
    let execs = async {
        for _ in 0..10 {
            assert_eq!(
                a.out(&rt, "cat /la.txt /work/note").await,
                "layer-a\nkept\n"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let ((), snap, ()) = tokio::join!(churn, commit, execs);
    store_explained(&d).await;
    let rt2 = common::name("snap");
    create(&a, &rt2, &snap).await;
    assert_eq!(
        a.out(&rt2, "cat /la.txt /work/note").await,
        "layer-a\nkept\n"
    );
    let rt3 = common::name("moved");
    create(&a, &rt3, &x).await;
    assert_eq!(a.out(&rt3, "cat /la.txt").await, "layer-a2\n");
    for r in [&rt, &rt2, &rt3] {
        let (st, v) = a.delete(&format!("/v1/runtimes/{r}")).await;
        assert!(st.is_success(), "{v}");
    }
    let (st, v) = admin(&d).post("/v1/images/gc", json!({})).await;
    assert!(st.is_success(), "{v}");
    store_explained(&d).await;
    // The moved-off image went with its last runtime.
    let (st, v) = admin(&d).get("/v1/images").await;
    assert_eq!(st, StatusCode::OK);
    let named: usize = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["digest"].is_string())
        .count();
    assert_eq!(named, 3, "x (moved), y, snap:1: {v}");
}

/// kill -9 while a collection deletes a large layer it moved aside, then a
/// restart: nothing half is left where a pull or a runtime would take it
/// as complete, `layers/tmp` is emptied, and pulling the image again gives
/// a runtime every file.
#[tokio::test(flavor = "multi_thread")]
async fn kill9_mid_collection_leaves_no_half_layer() {
    skip_unless_ready!();
    const FILES: usize = 30_000;
    let many = {
        let mut t = tar_builder();
        add_dir(&mut t, "many");
        for i in 0..FILES {
            add_file(&mut t, &format!("many/f{i}"), 0o644, b"x");
        }
        t.into_inner().unwrap()
    };
    let many_id = sha(&many)[7..].to_string();
    let (k, _) = publish("gc/many", "v1", &[bb_layer(), many]);
    let d = daemon(&[]);
    let t = d.tenant("crash").await;
    pull_ok(&t, &k).await;
    let tmp = d.data_dir.join("images/layers/tmp");
    let layer = d.data_dir.join("images/layers/sha256").join(&many_id);
    assert!(layer.is_dir());
    let watcher = {
        let tmp = tmp.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let busy = names_in(&tmp)
                    .iter()
                    .filter(|n| n.starts_with("gc-"))
                    .any(|n| !names_in(&tmp.join(n)).is_empty());
                if busy {
                    return true;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            false
        })
    };
    let del = {
        let (t, k) = (t.clone(), k.clone());
        tokio::spawn(async move { t.delete(&format!("/v1/images/{}", enc(&k))).await })
    };
    let caught = tokio::task::spawn_blocking(move || watcher.join().unwrap())
        .await
        .unwrap();
    d.kill9();
    let _ = del.await;
    assert!(caught, "the collection was not seen at work");
    let half = d.data_dir.join("images/layers/tmp");
    let left: u64 = names_in(&half)
        .iter()
        .map(|n| names_in(&half.join(n)).len() as u64)
        .sum();
    eprintln!("killed with {left} entries in layers/tmp");
    d.spawn();
    assert!(!layer.exists(), "the layer is back in place half deleted");
    assert!(
        names_in(&tmp).is_empty(),
        "left in layers/tmp after restart: {:?}",
        names_in(&tmp)
    );
    // What the killed collection had not moved yet goes at the start's.
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = explained(&d).await {
        assert!(Instant::now() < deadline, "after the restart: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pull_ok(&t, &k).await;
    let rt = common::name("whole");
    create(&t, &rt, &k).await;
    assert_eq!(
        t.out(&rt, "ls /many | wc -l").await.trim(),
        FILES.to_string()
    );
    let (st, v) = t.delete(&format!("/v1/runtimes/{rt}")).await;
    assert!(st.is_success(), "{v}");
}
