//! Red-team pass on the image store's disk quotas (`--image-tenant-max-bytes`,
//! `--image-store-max-bytes`, `--image-max-bytes`): each test is one attempt
//! by a tenant (non-admin token) to put more on the daemon's disk than its
//! quota allows, or to make another tenant's pulls fail, against a real
//! runtad and a real Debian `docker-registry` on loopback. What the store
//! holds is measured on disk (`<data dir>/images`), in blocks.
//!
//! Needs root, `docker-registry`, `skopeo` and a static busybox; a test that
//! cannot find them says so and skips.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::image_attacks::*;
use common::registry::{sha, start_registry, Registry};
use common::Daemon;
use reqwest::StatusCode;
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------- layers

fn add_link(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = header(tar::EntryType::Link, 0o644, 0);
    b.append_link(&mut h, path, target).unwrap();
}

/// A layer of one file of `n` zero bytes named `name` (the name makes it
/// a layer of its own).
fn zeros(name: &str, n: u64) -> Vec<u8> {
    let mut t = tar_builder();
    add_file(&mut t, name, 0o644, &vec![0u8; n as usize]);
    t.into_inner().unwrap()
}

/// Writes an OCI layout of one image (gzip layers from `tars`) tagged
/// `tag`; returns the manifest digest.
fn layout(dir: &Path, tag: &str, tars: &[Vec<u8>]) -> String {
    let specs: Vec<LayerSpec> = tars.iter().cloned().map(gz_layer).collect();
    write_layout(dir, tag, &specs, json!({"Env": ["PATH=/bin"]})).manifest
}

// ---------------------------------------------------------------- world

struct World {
    reg: Registry,
    work: PathBuf,
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
            "runta-redteam-quota-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&work).unwrap();
        World {
            reg: start_registry(None, None),
            work,
        }
    })
}

/// Pushes an image of layers `tars` as `repo:tag`; returns its reference.
fn publish(repo: &str, tag: &str, tars: &[Vec<u8>]) -> String {
    let w = world();
    let dir = w.work.join(format!("{}-{tag}", repo.replace('/', "_")));
    layout(&dir, tag, tars);
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--insecure-policy",
            "--dest-tls-verify=false",
            "--preserve-digests",
            &format!("oci:{}:{tag}", dir.display()),
            &format!("docker://{}/{repo}:{tag}", w.reg.addr),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{}/{repo}:{tag}", w.reg.addr)
}

fn daemon(insecure: &[&str], extra: &[&str]) -> Daemon {
    let w = world();
    let mut list = vec![w.reg.addr.as_str()];
    list.extend_from_slice(insecure);
    let insecure = list.join(",");
    let mut args = vec!["--no-prebuild", "--insecure-registry", &insecure];
    args.extend_from_slice(extra);
    Daemon::start_new(&args)
}

/// Bytes of disk blocks under `p`, each inode once (what the disk holds).
fn disk(p: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut todo = vec![p.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if seen.insert((m.dev(), m.ino())) {
            total += m.blocks() * 512;
        }
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                todo.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// What the image store holds on disk: blobs, partial downloads and layers.
fn store_disk(d: &Daemon) -> u64 {
    let s = d.data_dir.join("images");
    ["blobs", "layers/sha256"]
        .iter()
        .map(|x| disk(&s.join(x)))
        .sum()
}

fn layer_count(d: &Daemon) -> usize {
    std::fs::read_dir(d.data_dir.join("images/layers/sha256"))
        .map(|rd| rd.flatten().count())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- attacks

/// A pull refused at its second layer (a bomb past the quota) leaves its
/// first layer, unpacked, in the store and recorded nowhere; nothing counts
/// it. Round after round, with a new first layer each time, the tenant
/// fills the disk without ever holding an image.
#[tokio::test(flavor = "multi_thread")]
async fn refused_pulls_leave_nothing_behind_round_after_round() {
    skip_unless_ready!();
    let d = daemon(&[], &["--image-tenant-max-bytes", &(16 * MIB).to_string()]);
    let t = d.tenant("leftover").await;
    let before = store_disk(&d);
    for round in 0..4 {
        let r = publish(
            "test/leftover",
            &format!("r{round}"),
            &[
                zeros(&format!("fill-{round}"), 10 * MIB),
                zeros("bomb", 64 * MIB),
            ],
        );
        pull_fails(&t, &r, "--image-tenant-max-bytes").await;
        let (st, _) = t.get(&format!("/v1/images/{}", enc(&r))).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
    let held = store_disk(&d) - before;
    assert!(
        held < 16 * MIB,
        "the tenant holds no image, yet the store grew by {} MiB ({} layers) over four refused pulls",
        held / MIB,
        layer_count(&d)
    );
}

/// A tag moved by a pull leaves the image it pointed at unnamed and unused,
/// but still on disk (no garbage collection runs) and no longer counted:
/// images of 6 MiB under a 16 MiB quota, the same tag pulled five times.
#[tokio::test(flavor = "multi_thread")]
async fn a_moved_tag_frees_the_image_it_moved_off() {
    skip_unless_ready!();
    let d = daemon(&[], &["--image-tenant-max-bytes", &(16 * MIB).to_string()]);
    let t = d.tenant("mover").await;
    let before = store_disk(&d);
    for round in 0..5 {
        // The registry's tag moves; the tenant pulls it again.
        let r = publish(
            "test/mover",
            "latest",
            &[zeros(&format!("v{round}"), 6 * MIB)],
        );
        pull_ok(&t, &r).await;
    }
    let held = store_disk(&d) - before;
    assert!(
        held < 16 * MIB,
        "the tenant names one 6 MiB image, yet the store grew by {} MiB ({} layers)",
        held / MIB,
        layer_count(&d)
    );
}

/// Hard links: a 1 MiB file linked 200 times is one inode on disk and is
/// counted once at unpack, but the store's byte counter is corrected by
/// apparent sizes at garbage collection (each link counted), so deleting
/// that image drives the counter to zero while other images stay: the
/// `--image-store-max-bytes` cap then lets the store grow past itself.
#[tokio::test(flavor = "multi_thread")]
async fn hard_links_do_not_blind_the_store_cap() {
    skip_unless_ready!();
    let d = daemon(&[], &["--image-store-max-bytes", &(24 * MIB).to_string()]);
    let t = d.tenant("links").await;
    let p1 = publish("test/links", "p1", &[zeros("p1", 10 * MIB)]);
    pull_ok(&t, &p1).await;
    let links = {
        let mut b = tar_builder();
        add_file(&mut b, "one", 0o644, &vec![7u8; MIB as usize]);
        for i in 0..200 {
            add_link(&mut b, &format!("l{i}"), "one");
        }
        b.into_inner().unwrap()
    };
    let h = publish("test/links", "h", &[links]);
    pull_ok(&t, &h).await;
    let (st, v) = t.delete(&format!("/v1/images/{}", enc(&h))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let p2 = publish("test/links", "p2", &[zeros("p2", 10 * MIB)]);
    pull_ok(&t, &p2).await;
    // 20 MiB held; 10 more would pass 24.
    let p3 = publish("test/links", "p3", &[zeros("p3", 10 * MIB)]);
    let p = pull(&t, &p3).await;
    assert_eq!(
        p["status"],
        "failed",
        "the store holds {} MiB under a 24 MiB cap: {p}",
        store_disk(&d) / MIB
    );
    assert!(
        p["error"]
            .as_str()
            .unwrap_or("")
            .contains("--image-store-max-bytes"),
        "{p}"
    );
}

/// A hard link in an upper layer to a file of a lower one makes the unpack
/// copy the file up (overlayfs' form); that copy must count against what
/// the image may still unpack (`--image-max-bytes`), not pass it.
#[tokio::test(flavor = "multi_thread")]
async fn a_hard_link_to_a_lower_layer_is_copied_up_within_the_budget() {
    skip_unless_ready!();
    let d = daemon(&[], &["--image-max-bytes", &(20 * MIB).to_string()]);
    let t = d.tenant("copyup").await;
    let lower = {
        let mut b = tar_builder();
        for i in 0..3 {
            add_file(
                &mut b,
                &format!("f{i}"),
                0o644,
                &vec![i as u8; 5 * MIB as usize],
            );
        }
        b.into_inner().unwrap()
    };
    let upper = {
        let mut b = tar_builder();
        for i in 0..3 {
            add_link(&mut b, &format!("g{i}"), &format!("f{i}"));
        }
        b.into_inner().unwrap()
    };
    let r = publish("test/copyup", "v1", &[lower, upper]);
    let p = pull(&t, &r).await;
    assert_eq!(
        p["status"],
        "failed",
        "an image that unpacks to 30 MiB passed --image-max-bytes 20 MiB (store holds {} MiB): {p}",
        store_disk(&d) / MIB
    );
}

/// Entries without content (directories, empty files, hard links) cost
/// the disk a block or an inode each, but the quota counts only content
/// bytes: 20000 empty directories are 80 MiB of blocks on ext4 and 20000
/// inodes, charged nothing against a 4 MiB quota (the default limits allow
/// 4 million entries an image: a few such images exhaust the host's inodes).
#[tokio::test(flavor = "multi_thread")]
async fn entries_without_content_are_charged_to_the_quota() {
    skip_unless_ready!();
    let d = daemon(&[], &["--image-tenant-max-bytes", &(4 * MIB).to_string()]);
    let t = d.tenant("inodes").await;
    let dirs = {
        let mut b = tar_builder();
        for i in 0..20_000 {
            add_dir(&mut b, &format!("d{i}"));
        }
        b.into_inner().unwrap()
    };
    let before = store_disk(&d);
    let r = publish("test/inodes", "v1", &[dirs]);
    let p = pull(&t, &r).await;
    let held = store_disk(&d) - before;
    assert!(
        p["status"] == "failed" || held < 4 * MIB,
        "20000 empty directories ({} MiB on disk) pulled under a 4 MiB quota: {p}",
        held / MIB
    );
    if p["status"] == "failed" {
        assert!(
            p["error"]
                .as_str()
                .unwrap_or("")
                .contains("--image-tenant-max-bytes"),
            "{p}"
        );
    }
}

/// A minimal registry that serves one image from an OCI layout, the layer
/// blob 4 KiB a second: a pull of it runs for as long as the test wants.
fn trickling_registry(dir: PathBuf, layer: String) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let (dir, layer) = (dir.clone(), layer.clone());
            std::thread::spawn(move || serve(s, &dir, &layer));
        }
    });
    addr
}

fn serve(mut s: std::net::TcpStream, dir: &Path, layer: &str) {
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
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let md = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = |d: &str| std::fs::read(dir.join("blobs/sha256").join(&d[7..])).ok();
    let (body, ct) = if path == "/v2/" {
        (Some(b"{}".to_vec()), "application/json")
    } else if path.contains("/manifests/") {
        (blob(&md), "application/vnd.oci.image.manifest.v1+json")
    } else if let Some(d) = path.split("/blobs/").nth(1) {
        if d == layer {
            let body = blob(d).unwrap();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                body.len()
            );
            // 4 KiB a second: above `--image-pull-min-rate`, never done.
            for c in body.chunks(4096) {
                std::thread::sleep(Duration::from_secs(1));
                if s.write_all(c).is_err() {
                    return;
                }
            }
            return;
        }
        (blob(d), "application/octet-stream")
    } else {
        (None, "text/plain")
    };
    match body {
        Some(b) => {
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: {ct}\r\nDocker-Content-Digest: {}\r\nConnection: close\r\n\r\n",
                b.len(),
                if path.contains("/manifests/") { md.as_str() } else { "" }
            );
            let _ = s.write_all(&b);
        }
        None => {
            let _ = s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    }
}

/// One tenant's slow pull (a registry of its own trickling a layer) holds
/// the store's garbage-collection lock shared for as long as it runs;
/// another tenant's DELETE waits for it exclusively, and every pull started
/// after that waits behind the DELETE: the slow tenant stalls everyone's
/// pulls and deletes.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_pull_never_stalls_another_tenants_delete_or_pull() {
    skip_unless_ready!();
    let w = world();
    let dir = w.work.join("slow");
    let mut noise = vec![0u8; 2 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let tar = {
        let mut b = tar_builder();
        add_file(&mut b, "noise", 0o644, &noise);
        b.into_inner().unwrap()
    };
    layout(&dir, "v1", std::slice::from_ref(&tar));
    let layer = sha(&gzip(&tar));
    let slow = trickling_registry(dir, layer);
    let d = daemon(&[&slow], &[]);
    let attacker = d.tenant("slow").await;
    let victim = d.tenant("victim").await;
    let mine = publish("test/victim", "v1", &[zeros("victim-1", 1024)]);
    let next = publish("test/victim", "v2", &[zeros("victim-2", 1024)]);
    pull_ok(&victim, &mine).await;
    let (st, v) = start_pull(&attacker, &format!("{slow}/evil/app:v1")).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let path = format!("/v1/images/{}", enc(&mine));
    let del = tokio::time::timeout(Duration::from_secs(20), victim.delete(&path));
    let pul = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tokio::time::timeout(Duration::from_secs(20), pull(&victim, &next)).await
    };
    let (del, pul) = tokio::join!(del, pul);
    assert!(
        del.as_ref().is_ok_and(|(st, _)| st.is_success()),
        "the victim's DELETE waited on the attacker's pull ({:?}): {del:?}",
        started.elapsed()
    );
    let pul = pul.expect("the victim's pull waited on the attacker's pull");
    assert_eq!(pul["status"], "succeeded", "{pul}");
}
