//! Red-team pass on the image store (docs/security.md, Image store red-team
//! pass): each test performs one attack against a real runtad, with real
//! Debian `docker-registry` instances on loopback and small hostile HTTP
//! servers of the test's own (a redirector, a token server, a trickler), and
//! asserts on what comes back.
//!
//! Needs root, `docker-registry`, `skopeo`, `zstd`, `curl`, `python3` and a
//! static busybox (`busybox-static`); a test that cannot find them says so
//! and skips.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use common::image_attacks::*;
use common::registry::{busybox, make_tls, sha, start_registry, Registry, Tls};
use common::{assert_error, Daemon};
use reqwest::StatusCode;
use serde_json::{json, Value};

// ---------------------------------------------------------------- images

fn zstd(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("zstd")
        .args(["-q", "-c", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("zstd");
    let mut stdin = child.stdin.take().unwrap();
    let d = data.to_vec();
    let t = std::thread::spawn(move || stdin.write_all(&d).unwrap());
    let out = child.wait_with_output().unwrap();
    t.join().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// Writes an OCI layout with one image tagged `tag`; returns the manifest
/// digest.
fn layout(dir: &Path, tag: &str, layers: &[LayerSpec], run: Value) -> String {
    write_layout(dir, tag, layers, run).manifest
}

/// An Alpine-like root (busybox and its applets) with `/etc/app-version`.
fn app_layer(version: &str) -> Vec<u8> {
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
    add_file(&mut t, "etc/app-version", 0o644, version.as_bytes());
    for a in [
        "sh", "ls", "cat", "echo", "mkdir", "mv", "rm", "sleep", "true", "test", "[",
    ] {
        add_symlink(&mut t, &format!("bin/{a}"), "busybox");
    }
    t.into_inner().unwrap()
}

fn app_run() -> Value {
    json!({"Env": ["PATH=/bin"], "WorkingDir": "/work"})
}

// ---------------------------------------------------------------- registries

fn missing_tools() -> Option<String> {
    common::registry::missing_tools_of(&["docker-registry", "skopeo", "zstd", "curl", "python3"])
}

macro_rules! skip_unless_ready {
    () => {
        if let Some(why) = missing_tools() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

/// What every test shares: a plain registry and a TLS one with a password,
/// the app image (two versions) pushed to both.
struct World {
    plain: Registry,
    secure: Registry,
    tls: Tls,
    work: PathBuf,
    /// Manifest digests of `app` v1 and v2.
    v1: String,
    v2: String,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let work = std::env::temp_dir().join(format!(
            "runta-redteam-img-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&work).unwrap();
        let tls = make_tls(&work.join("tls"));
        let plain = start_registry(None, None);
        let secure = start_registry(Some(&tls), Some(("runta", "pw-of-the-admin")));
        let v1 = layout(
            &work.join("v1"),
            "v1",
            &[gz_layer(app_layer("one"))],
            app_run(),
        );
        let v2 = layout(
            &work.join("v2"),
            "v2",
            &[gz_layer(app_layer("two"))],
            app_run(),
        );
        plain.push_layout(&work.join("v1"), "v1", "test/app", "v1", &[]);
        plain.push_layout(&work.join("v2"), "v2", "test/app", "v2", &[]);
        secure.push_layout(&work.join("v1"), "v1", "private/app", "v1", &[]);
        World {
            plain,
            secure,
            tls,
            work,
            v1,
            v2,
        }
    })
}

/// A daemon of the test's own, speaking plain HTTP to the plain registry
/// and `insecure` (the test's servers), HTTPS to the TLS one.
fn daemon(insecure: &[&str], extra: &[&str]) -> Daemon {
    let w = world();
    let mut list = vec![w.plain.addr.as_str()];
    list.extend_from_slice(insecure);
    let insecure = list.join(",");
    let ca = w.tls.ca_pem.display().to_string();
    let mut args = vec![
        "--no-prebuild",
        "--insecure-registry",
        &insecure,
        "--private-registry",
        &w.secure.addr,
        "--registry-ca",
        &ca,
    ];
    args.extend_from_slice(extra);
    Daemon::start_new(&args)
}

// ---------------------------------------------------------------- hostile HTTP

/// A manifest (bytes, content type) of the plain registry.
async fn manifest_of(repo: &str, reference: &str) -> (Vec<u8>, String) {
    let w = world();
    let r = reqwest::Client::new()
        .get(format!(
            "http://{}/v2/{repo}/manifests/{reference}",
            w.plain.addr
        ))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{r:?}");
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_string();
    (r.bytes().await.unwrap().to_vec(), ct)
}

// ---------------------------------------------------------------- helpers

fn small() -> Value {
    json!({"requests": {"vcpus": 1, "memory_mib": 128}})
}

// ---------------------------------------------------------------- 1. SSRF

/// A tenant names a registry, or a registry redirects (manifest, blob) or
/// announces a token realm, at runtad itself, the metadata address or any
/// other loopback/private host: runtad never connects there. A redirect
/// loop stops after five hops.
#[tokio::test(flavor = "multi_thread")]
async fn redirects_and_realms_never_reach_private_addresses() {
    skip_unless_ready!();
    let canary = Fake::start(|_| Arc::new(|_: &Req| resp(200, &[], b"{\"token\":\"x\"}")));
    let (manifest, ct) = manifest_of("test/app", "v1").await;
    let ca = canary.addr.clone();
    let f = Fake::start(move |me| {
        let me = me.to_string();
        Arc::new(move |r: &Req| {
            let p = r.path.as_str();
            if p == "/v2/" {
                resp(200, &[], b"{}")
            } else if p.starts_with("/v2/evil/app/manifests/") {
                redirect(302, &format!("http://{ca}/latest/meta-data/"))
            } else if p.starts_with("/v2/meta/app/manifests/") {
                redirect(302, "http://169.254.169.254/latest/meta-data/")
            } else if p.starts_with("/v2/loop/app/manifests/") {
                redirect(302, &format!("http://{me}{p}"))
            } else if p.starts_with("/v2/blob/app/manifests/") {
                resp(200, &[("Content-Type", ct.as_str())], &manifest)
            } else if p.starts_with("/v2/blob/app/blobs/") {
                redirect(307, &format!("http://{ca}/stolen"))
            } else if p.starts_with("/v2/realm/app/") {
                let c = format!("Bearer realm=\"http://{ca}/token\",service=\"x\"");
                resp(401, &[("WWW-Authenticate", c.as_str())], b"")
            } else if p.starts_with("/v2/realm-meta/app/") {
                let c = "Bearer realm=\"http://169.254.169.254/token\",service=\"x\"";
                resp(401, &[("WWW-Authenticate", c)], b"")
            } else {
                resp(404, &[], b"")
            }
        })
    });
    let d = daemon(&[&f.addr], &[]);
    let c = d.tenant("ssrf").await;
    // The tenant logs in to the hostile registry: its credentials are then
    // what a realm would try to collect.
    let (st, v) = c
        .post(
            "/v1/images/logins",
            json!({"registry": f.addr, "username": "victim", "password": "victim-pw"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let runtad = d.endpoint.trim_start_matches("http://").to_string();
    for target in [
        format!("{runtad}/v1/tokens:x"),
        "169.254.169.254/latest/meta-data:x".to_string(),
        format!("{}/any/thing:x", canary.addr),
        "10.0.0.1/internal/app:x".to_string(),
    ] {
        pull_fails(&c, &target, "refused to connect").await;
    }
    // A realm over plain HTTP that the operator did not name is refused
    // before any connection, as one at a private address is.
    for (repo, needle) in [
        ("evil", "refused to connect"),
        ("meta", "refused to connect"),
        ("blob", "refused to connect"),
        ("realm", "realm"),
        ("realm-meta", "realm"),
    ] {
        let e = pull_fails(&c, &format!("{}/{repo}/app:v1", f.addr), needle).await;
        assert!(
            !e.contains("victim-pw"),
            "the error never carries the credentials: {e}"
        );
    }
    let e = pull_fails(&c, &format!("{}/loop/app:v1", f.addr), "redirects").await;
    assert!(e.contains("more than 5"), "{e}");
    let loops = f
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v2/loop/"))
        .count();
    assert!(loops <= 6, "the loop was followed {loops} times");
    assert_eq!(
        canary.conns.load(Ordering::SeqCst),
        0,
        "runtad connected to a private address: {:?}",
        canary.requests()
    );
    healthy(&d).await;
}

/// A registry that needs a token (Basic credentials to its realm, then a
/// Bearer token) redirects its blobs to another host: that host gets
/// neither the token nor the credentials, and the pull still completes
/// (the blob is verified by digest). Another tenant, and the admin, with
/// no login of their own, are refused by the same registry.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_and_tokens_never_follow_a_redirect_to_another_host() {
    skip_unless_ready!();
    let w = world();
    let (manifest, ct) = manifest_of("test/app", "v1").await;
    let reg = w.plain.addr.clone();
    // The blob host: sends the client on to the real registry.
    let cdn = Fake::start(move |_| {
        Arc::new(move |r: &Req| redirect(307, &format!("http://{reg}{}", r.path)))
    });
    let cdn_addr = cdn.addr.clone();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:alice-pw")
    );
    let f = Fake::start(move |me| {
        let me = me.to_string();
        Arc::new(move |r: &Req| {
            let p = r.path.as_str();
            let challenge = format!("Bearer realm=\"http://{me}/token\",service=\"fake\"");
            let authed = r.header("authorization") == Some("Bearer tok-SECRET");
            if p.starts_with("/token") {
                if r.header("authorization") == Some(basic.as_str()) {
                    resp(200, &[], br#"{"token":"tok-SECRET"}"#)
                } else {
                    resp(401, &[], b"")
                }
            } else if !authed {
                resp(401, &[("WWW-Authenticate", challenge.as_str())], b"")
            } else if p == "/v2/" {
                resp(200, &[], b"{}")
            } else if p.starts_with("/v2/priv/app/manifests/") {
                resp(200, &[("Content-Type", ct.as_str())], &manifest)
            } else if let Some(rest) = p.strip_prefix("/v2/priv/app/blobs/") {
                redirect(307, &format!("http://{cdn_addr}/v2/test/app/blobs/{rest}"))
            } else {
                resp(404, &[], b"")
            }
        })
    });
    let d = daemon(&[&f.addr, &cdn.addr], &[]);
    let alice = d.tenant("alice").await;
    let (st, v) = alice
        .post(
            "/v1/images/logins",
            json!({"registry": f.addr, "username": "alice", "password": "alice-pw"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let reference = format!("{}/priv/app:v1", f.addr);
    let p = pull_ok(&alice, &reference).await;
    assert_eq!(p["digest"], w.v1, "{p}");
    let seen = cdn.requests();
    assert!(!seen.is_empty(), "the blobs went through the other host");
    for r in &seen {
        assert!(
            r.header("authorization").is_none(),
            "the other host got credentials: {r:?}"
        );
    }
    assert!(
        f.requests()
            .iter()
            .any(|r| r.path.starts_with("/token") && r.header("authorization").is_some()),
        "the realm (as announced) got the login"
    );
    // Logins are the tenant's: neither another tenant nor the admin pulls
    // with alice's.
    let bob = d.tenant("bob").await;
    pull_fails(&bob, &reference, "authentication").await;
    pull_fails(&admin(&d), &reference, "authentication").await;
    let (_, v) = bob.get("/v1/images/logins").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 0, "{v}");
    let (st, _) = bob.get(&format!("/v1/images/{}", enc(&reference))).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "alice's private pull is hers");
}

// ---------------------------------------------------------------- 2. tags

/// A tag one tenant relies on never moves because another pulls an older
/// digest (with or without the tag in the reference), nor because the
/// registry later serves another manifest for the tag to someone else.
#[tokio::test(flavor = "multi_thread")]
async fn a_digest_pull_or_a_moved_tag_never_rewrites_another_tenants_tag() {
    skip_unless_ready!();
    let w = world();
    // The registry's tag moves from v1 to v2.
    w.plain
        .push_layout(&w.work.join("v1"), "v1", "test/roll", "latest", &[]);
    w.plain
        .push_layout(&w.work.join("v2"), "v2", "test/roll", "latest", &[]);
    let d = daemon(&[], &[]);
    let victim = d.tenant("victim").await;
    let attacker = d.tenant("attacker").await;
    let tag = format!("{}/test/roll:latest", w.plain.addr);
    assert_eq!(pull_ok(&victim, &tag).await["digest"], w.v2);
    // Rollback attempts by digest.
    for r in [
        format!("{}/test/roll@{}", w.plain.addr, w.v1),
        format!("{tag}@{}", w.v1),
    ] {
        assert_eq!(pull_ok(&attacker, &r).await["digest"], w.v1);
    }
    let (_, v) = victim.get(&format!("/v1/images/{}", enc(&tag))).await;
    assert_eq!(v["data"]["digest"], w.v2, "the victim's tag moved: {v}");
    let (st, v) = attacker.get(&format!("/v1/images/{}", enc(&tag))).await;
    assert_eq!(
        st,
        StatusCode::NOT_FOUND,
        "a digest pull named the tag: {v}"
    );
    // The registry serves v1 for the tag again; the attacker pulls it.
    w.plain
        .push_layout(&w.work.join("v1"), "v1", "test/roll", "latest", &[]);
    assert_eq!(pull_ok(&attacker, &tag).await["digest"], w.v1);
    let (_, v) = attacker.get(&format!("/v1/images/{}", enc(&tag))).await;
    assert_eq!(v["data"]["digest"], w.v1, "{v}");
    let (_, v) = victim.get(&format!("/v1/images/{}", enc(&tag))).await;
    assert_eq!(v["data"]["digest"], w.v2, "the victim's tag moved: {v}");
    let n = common::name("roll");
    let r = victim
        .create_with(json!({"name": n, "image": tag, "resources": small()}))
        .await;
    assert!(
        r["image"].as_str().unwrap().ends_with(&w.v2),
        "the victim's runtime stands on its own tag: {r}"
    );
    assert_eq!(victim.out(&n, "cat /etc/app-version").await, "two");
    victim.delete(&format!("/v1/runtimes/{n}")).await;
}

// ---------------------------------------------------------------- 3. tenants

/// An image a tenant committed is invisible to another tenant by every
/// route and every spelling (name, name@digest, bare digest), not usable
/// for a create and not deletable: 404 each time. Its owner sees, uses and
/// removes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenants_images_are_invisible_to_another_tenant() {
    skip_unless_ready!();
    let w = world();
    let d = daemon(&[], &[]);
    let owner = d.tenant("owner").await;
    let other = d.tenant("other").await;
    let app = format!("{}/test/app:v1", w.plain.addr);
    let n = common::name("src");
    owner
        .create_with(json!({"name": n, "image": app, "resources": small()}))
        .await;
    owner.out(&n, "echo owner-secret > /work/secret").await;
    let (st, v) = owner
        .post(
            &format!("/v1/runtimes/{n}/commit"),
            json!({"name": "mine:1"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let name = v["data"]["name"].as_str().unwrap().to_string();
    let digest = v["data"]["digest"].as_str().unwrap().to_string();
    assert!(name.starts_with("localhost/owner-"), "{v}");

    let (_, list) = other.get("/v1/images").await;
    let text = list.to_string();
    assert!(
        !text.contains(&digest) && !text.contains("mine:1"),
        "listed to another tenant: {list}"
    );
    assert!(
        !text.contains("test/app:v1"),
        "another tenant's pulled tag is listed: {list}"
    );
    for r in [
        name.clone(),
        format!("{name}@{digest}"),
        digest.clone(),
        app.clone(),
    ] {
        let (st, v) = other.get(&format!("/v1/images/{}", enc(&r))).await;
        assert_error(st, &v, 404, "not_found", "");
        if r != app {
            let (st, v) = other.delete(&format!("/v1/images/{}", enc(&r))).await;
            assert_error(st, &v, 404, "not_found", "");
            let (st, v) = other
                .post(
                    "/v1/runtimes",
                    json!({"name": common::name("steal"), "image": r, "resources": small()}),
                )
                .await;
            assert_error(st, &v, 404, "not_found", "");
        }
    }
    // The owner's: seen, used, removed.
    let (st, v) = owner.get(&format!("/v1/images/{}", enc(&name))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let n2 = common::name("use");
    owner
        .create_with(json!({"name": n2, "image": name, "resources": small()}))
        .await;
    assert_eq!(owner.out(&n2, "cat /work/secret").await, "owner-secret\n");
    let (st, v) = owner.delete(&format!("/v1/images/{}", enc(&name))).await;
    assert_error(st, &v, 409, "failed_precondition", &n2);
    for r in [&n, &n2] {
        owner.delete(&format!("/v1/runtimes/{r}")).await;
    }
    let (st, v) = owner.delete(&format!("/v1/images/{}", enc(&name))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, _) = admin(&d).get(&format!("/v1/images/{digest}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "nothing holds it any more");
}

// ---------------------------------------------------------------- 4. deep trees

/// `P` = `d/d/…/d`, 100 levels.
fn hundred() -> String {
    vec!["d"; 100].join("/")
}

/// A program in the runtime makes 10,000 nested directories and the tenant
/// commits: a clear 422, the daemon stays up, the runtime is thawed. A tree
/// 300 deep commits, and a runtime of the image reads its deepest file.
/// Deleting the deep runtime leaves the daemon up too.
#[tokio::test(flavor = "multi_thread")]
async fn a_commit_of_a_very_deep_tree_is_refused_and_the_daemon_survives() {
    skip_unless_ready!();
    let w = world();
    let d = daemon(&[], &[]);
    let c = d.tenant("deep").await;
    let app = format!("{}/test/app:v1", w.plain.addr);
    let p = hundred();
    let n = common::name("deep");
    c.create_with(json!({"name": n, "image": app, "resources": small()}))
        .await;
    // Nested from the top (`mv` into a fresh 100-level chain), so that no
    // command ever names a path longer than PATH_MAX.
    let out = c
        .out(
            &n,
            &format!(
                "cd /work && mkdir t && i=0; while [ $i -lt 100 ]; do mkdir -p n/{p} && mv t n/{p}/t && mv n t || exit 1; i=$((i+1)); done; echo made"
            ),
        )
        .await;
    assert_eq!(out, "made\n");
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{n}/commit"),
            json!({"name": "deep:1"}),
        )
        .await;
    assert_error(st, &v, 422, "invalid_argument", "deeper than 512");
    healthy(&d).await;
    assert_eq!(c.out(&n, "echo alive").await, "alive\n", "thawed after");
    assert_eq!(c.status(&n).await, "running");

    let n2 = common::name("ok");
    c.create_with(json!({"name": n2, "image": app, "resources": small()}))
        .await;
    c.out(
        &n2,
        &format!("cd /work && mkdir -p {p}/{p}/{p} && echo bottom > {p}/{p}/{p}/file"),
    )
    .await;
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{n2}/commit"),
            json!({"name": "deep:2"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let img = v["data"]["name"].as_str().unwrap().to_string();
    let n3 = common::name("from");
    c.create_with(json!({"name": n3, "image": img, "resources": small()}))
        .await;
    assert_eq!(
        c.out(
            &n3,
            &format!("cd /work/{p} && cd {p} && cd {p} && cat file")
        )
        .await,
        "bottom\n"
    );
    for r in [&n, &n2, &n3] {
        let (st, v) = c.delete(&format!("/v1/runtimes/{r}")).await;
        assert!(st.is_success(), "{v}");
    }
    healthy(&d).await;
    let (st, v) = admin(&d).post("/v1/images/gc", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    healthy(&d).await;
}

// ---------------------------------------------------------------- 5. bombs

fn many_files(n: usize, prefix: &str) -> Vec<u8> {
    let mut t = tar_builder();
    add_dir(&mut t, prefix);
    for i in 0..n {
        add_file(&mut t, &format!("{prefix}/f{i}"), 0o644, b"");
    }
    t.into_inner().unwrap()
}

/// Layers with too many entries (one layer, or all layers together), a
/// hard-link flood, a huge PAX header, a huge long name, a huge attribute
/// or a zip bomb are refused with a clear error; nothing of them looks
/// complete in the store. A layer of two concatenated zstd frames unpacks
/// whole.
#[tokio::test(flavor = "multi_thread")]
async fn inode_and_header_bombs_are_refused_and_multi_frame_zstd_unpacks() {
    skip_unless_ready!();
    let w = world();
    let d = daemon(
        &[],
        &[
            "--image-max-files",
            "3000",
            "--image-max-total-files",
            "4000",
            "--image-max-header-bytes",
            "65536",
            "--image-max-xattr-bytes",
            "4096",
            "--image-max-bytes",
            "67108864",
        ],
    );
    let c = d.tenant("bomb").await;
    let links = {
        let mut t = tar_builder();
        add_file(&mut t, "target", 0o644, b"one inode");
        for i in 0..3500 {
            let mut h = header(tar::EntryType::Link, 0o644, 0);
            t.append_link(&mut h, format!("l{i}"), "target").unwrap();
        }
        t.into_inner().unwrap()
    };
    let pax = {
        let mut t = tar_builder();
        let big = vec![b'x'; 200_000];
        t.append_pax_extensions([("comment", &big[..])]).unwrap();
        add_file(&mut t, "after-pax", 0o644, b"x");
        t.into_inner().unwrap()
    };
    let long_name = {
        let mut t = tar_builder();
        let name = vec!["n"; 40_000].join("/");
        add_file(&mut t, &name, 0o644, b"x");
        t.into_inner().unwrap()
    };
    let xattr = {
        let mut t = tar_builder();
        let big = vec![b'v'; 8192];
        t.append_pax_extensions([("SCHILY.xattr.user.big", &big[..])])
            .unwrap();
        add_file(&mut t, "has-attr", 0o644, b"x");
        t.into_inner().unwrap()
    };
    let zip_bomb = {
        let mut t = tar_builder();
        let zeros = vec![0u8; 80 << 20];
        add_file(&mut t, "zeros", 0o644, &zeros);
        t.into_inner().unwrap()
    };
    let cases: Vec<(&str, Vec<Vec<u8>>, &str)> = vec![
        ("entries", vec![many_files(5000, "a")], "--image-max-files"),
        (
            "total",
            vec![many_files(2500, "a"), many_files(2500, "b")],
            "--image-max-total-files",
        ),
        ("links", vec![links], "--image-max-files"),
        ("pax", vec![pax], "--image-max-header-bytes"),
        ("longname", vec![long_name], "--image-max-header-bytes"),
        ("xattr", vec![xattr], "--image-max-xattr-bytes"),
        ("zipbomb", vec![zip_bomb], "bytes"),
    ];
    let store = d.data_dir.join("images");
    for (tag, layers, needle) in cases {
        let diff_ids: Vec<String> = layers.iter().map(|t| sha(t)).collect();
        let dir = w.work.join(format!("bomb-{tag}"));
        let specs: Vec<LayerSpec> = layers.into_iter().map(gz_layer).collect();
        layout(&dir, tag, &specs, json!({}));
        w.plain.push_layout(&dir, tag, "test/bomb", tag, &[]);
        let reference = format!("{}/test/bomb:{tag}", w.plain.addr);
        pull_fails(&c, &reference, needle).await;
        let (st, _) = c.get(&format!("/v1/images/{}", enc(&reference))).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{tag}: recorded");
        let last = diff_ids.last().unwrap();
        assert!(
            !store.join("layers/sha256").join(&last[7..]).exists(),
            "{tag}: the refused layer looks complete"
        );
        let tmp: Vec<_> = std::fs::read_dir(store.join("layers/tmp"))
            .unwrap()
            .flatten()
            .collect();
        assert!(tmp.is_empty(), "{tag}: unpacks left behind: {tmp:?}");
    }
    healthy(&d).await;

    // Two zstd frames, the tar cut in the middle of an entry.
    let tar = {
        let mut t = tar_builder();
        add_file(&mut t, "first-half", 0o644, &vec![b'1'; 300_000]);
        add_file(&mut t, "second-half", 0o644, b"the end");
        t.into_inner().unwrap()
    };
    let mut blob = zstd(&tar[..150_000]);
    blob.extend(zstd(&tar[150_000..]));
    let dir = w.work.join("multiframe");
    layout(
        &dir,
        "mf",
        &[LayerSpec {
            tar: tar.clone(),
            blob,
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd",
        }],
        json!({}),
    );
    w.plain.push_layout(&dir, "mf", "test/zstd", "mf", &[]);
    pull_ok(&c, &format!("{}/test/zstd:mf", w.plain.addr)).await;
    let layer = store.join("layers/sha256").join(&sha(&tar)[7..]);
    assert_eq!(
        std::fs::read(layer.join("second-half")).unwrap(),
        b"the end"
    );
    assert_eq!(
        std::fs::metadata(layer.join("first-half")).unwrap().len(),
        300_000
    );
}

// ---------------------------------------------------------------- 6. pulls

/// A registry that trickles a blob at 1 byte/s fails the pull at the stall
/// timeout (what came is kept; the next pull resumes it with a Range
/// request); pulls past the per-tenant cap get 429, past the daemon's 503,
/// and the slots come back when the stalled pulls end.
#[tokio::test(flavor = "multi_thread")]
async fn a_trickling_registry_stalls_out_and_pulls_are_capped() {
    skip_unless_ready!();
    let w = world();
    // An image with a 1 MiB layer of noise (gzip keeps it large).
    let mut noise = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut t = tar_builder();
    add_file(&mut t, "noise", 0o644, &noise);
    let spec = gz_layer(t.into_inner().unwrap());
    let layer_digest = sha(&spec.blob);
    let layer_blob = Arc::new(spec.blob.clone());
    let dir = w.work.join("noise");
    layout(&dir, "noise", &[spec], json!({}));
    w.plain.push_layout(&dir, "noise", "test/noise", "v1", &[]);
    let (manifest, ct) = manifest_of("test/noise", "v1").await;
    let mode = Arc::new(AtomicU8::new(0));
    let (m2, reg, ld) = (mode.clone(), w.plain.addr.clone(), layer_digest.clone());
    let slow = Fake::start(move |_| {
        Arc::new(move |r: &Req| {
            let p = r.path.as_str();
            if p == "/v2/" {
                resp(200, &[], b"{}")
            } else if p.starts_with("/v2/slow/app/manifests/") {
                resp(200, &[("Content-Type", ct.as_str())], &manifest)
            } else if let Some(d) = p.strip_prefix("/v2/slow/app/blobs/") {
                if d == ld && m2.load(Ordering::SeqCst) == 0 {
                    Resp::Trickle {
                        body: layer_blob.clone(),
                        fast: 64 << 10,
                    }
                } else {
                    redirect(307, &format!("http://{reg}/v2/test/noise/blobs/{d}"))
                }
            } else {
                resp(404, &[], b"")
            }
        })
    });
    let d = daemon(
        &[&slow.addr],
        &[
            "--image-pull-stall-secs",
            "3",
            "--image-pull-min-rate",
            "1024",
            "--image-max-pulls",
            "3",
            "--image-max-pulls-per-tenant",
            "2",
        ],
    );
    let a = d.tenant("slow-a").await;
    let b = d.tenant("slow-b").await;
    let r = |tag: &str| format!("{}/slow/app:{tag}", slow.addr);
    let t0 = Instant::now();
    pull_fails(&a, &r("s1"), "stalled").await;
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "the stall took {:?}",
        t0.elapsed()
    );
    let partial = d
        .data_dir
        .join("images/blobs/partial")
        .join(&layer_digest[7..]);
    let kept = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(kept >= 64 << 10, "what arrived is kept: {kept} bytes");

    // The caps.
    let mut ids = Vec::new();
    for tag in ["s2", "s3"] {
        let (st, v) = start_pull(&a, &r(tag)).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        ids.push((&a, v["data"]["id"].as_str().unwrap().to_string()));
    }
    let (st, v) = start_pull(&a, &r("s2")).await;
    assert_eq!(
        st,
        StatusCode::ACCEPTED,
        "joining its own pull is free: {v}"
    );
    assert_eq!(v["data"]["id"], ids[0].1.as_str());
    let (st, v) = start_pull(&a, &r("s4")).await;
    assert_error(st, &v, 429, "rate_limited", "--image-max-pulls-per-tenant");
    let (st, v) = start_pull(&b, &r("s5")).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    ids.push((&b, v["data"]["id"].as_str().unwrap().to_string()));
    let (st, v) = start_pull(&b, &r("s6")).await;
    assert_error(st, &v, 503, "unavailable", "--image-max-pulls");
    // Another tenant never reads a pull by id.
    let (st, _) = b.get(&format!("/v1/images/pulls/{}", ids[0].1)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    for (c, id) in &ids {
        let p = wait_pull(c, id, 90).await;
        assert_eq!(p["status"], "failed", "{p}");
    }
    healthy(&d).await;

    // The registry is fast again: the pull resumes the partial blob.
    mode.store(1, Ordering::SeqCst);
    let before = slow.requests().len();
    pull_ok(&a, &r("s7")).await;
    let ranged = slow.requests()[before..]
        .iter()
        .filter(|q| q.path.ends_with(&layer_digest[7..]))
        .filter_map(|q| q.header("range").map(str::to_string))
        .collect::<Vec<_>>();
    assert!(
        ranged.iter().any(|h| h
            .trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse::<u64>()
            .is_ok_and(|from| from >= 64 << 10)),
        "the pull resumed with a Range request: {ranged:?}"
    );
}

// ---------------------------------------------------------------- 7. logins

/// The admin's registry login opens the registry for the admin only: a
/// tenant can neither pull the admin's private image nor see or use the
/// admin's copy, until it logs in itself. Credentials of the daemon's auth
/// file are operator-wide (documented): every tenant pulls with them.
#[tokio::test(flavor = "multi_thread")]
async fn the_admins_registry_login_is_not_every_tenants() {
    skip_unless_ready!();
    let w = world();
    let d = daemon(&[], &[]);
    let a = admin(&d);
    let reference = format!("{}/private/app:v1", w.secure.addr);
    let (st, v) = a
        .post(
            "/v1/images/logins",
            json!({"registry": w.secure.addr, "username": "runta", "password": "pw-of-the-admin"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(pull_ok(&a, &reference).await["digest"], w.v1);
    let t = d.tenant("nologin").await;
    let (_, v) = t.get("/v1/images/logins").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 0, "{v}");
    pull_fails(&t, &reference, "authentication").await;
    let (st, _) = t.get(&format!("/v1/images/{}", enc(&reference))).await;
    assert_eq!(
        st,
        StatusCode::NOT_FOUND,
        "the admin's private copy is shown"
    );
    let (st, v) = t
        .post(
            "/v1/runtimes",
            json!({"name": common::name("priv"), "image": reference, "resources": small()}),
        )
        .await;
    assert_error(st, &v, 403, "permission_denied", "authentication");
    // Its own login, wrong then right.
    let (st, v) = t
        .post(
            "/v1/images/logins",
            json!({"registry": w.secure.addr, "username": "runta", "password": "guess"}),
        )
        .await;
    assert_error(st, &v, 403, "permission_denied", "authentication");
    let (st, v) = t
        .post(
            "/v1/images/logins",
            json!({"registry": w.secure.addr, "username": "runta", "password": "pw-of-the-admin"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(pull_ok(&t, &reference).await["digest"], w.v1);
    let (_, v) = a.get("/v1/images/logins").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1, "{v}");
    let (st, _) = t
        .delete(&format!("/v1/images/logins/{}", w.secure.addr))
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, v) = a.get("/v1/images/logins").await;
    assert_eq!(
        v["data"].as_array().unwrap().len(),
        1,
        "a tenant's logout is its own: {v}"
    );

    // Operator-wide credentials from the daemon's auth file.
    let auth = w.work.join("auth.json");
    let b64 = base64::engine::general_purpose::STANDARD.encode("runta:pw-of-the-admin");
    std::fs::write(
        &auth,
        serde_json::to_vec(&json!({"auths": {w.secure.addr.clone(): {"auth": b64}}})).unwrap(),
    )
    .unwrap();
    let auth_s = auth.display().to_string();
    let d2 = daemon(&[], &["--registry-auth-file", &auth_s]);
    let t2 = d2.tenant("fileauth").await;
    assert_eq!(pull_ok(&t2, &reference).await["digest"], w.v1);
}

// ---------------------------------------------------------------- 8. quotas

/// Compressed bytes of the layers of the image in layout `dir`.
fn layers_size(dir: &Path) -> u64 {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let md = index["manifests"][0]["digest"].as_str().unwrap();
    let m: Value =
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(&md[7..])).unwrap())
            .unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum()
}

/// A tenant filling the store: its images are counted against
/// `--image-tenant-max-bytes` (another tenant has its own), and the store as
/// a whole stops at `--image-store-max-bytes`, leaving nothing that looks
/// complete.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_and_each_tenant_have_a_disk_quota() {
    skip_unless_ready!();
    let w = world();
    // What one image costs: its layer's tar is a little more than what it
    // unpacks to, which is more than its compressed size.
    let one = app_layer("one").len() as u64;
    assert!(one > layers_size(&w.work.join("v1")));
    let cap = (one + one / 2).to_string();
    let d = daemon(&[], &["--image-tenant-max-bytes", &cap]);
    let t = d.tenant("quota").await;
    let v1 = format!("{}/test/app:v1", w.plain.addr);
    let v2 = format!("{}/test/app:v2", w.plain.addr);
    pull_ok(&t, &v1).await;
    pull_fails(&t, &v2, "--image-tenant-max-bytes").await;
    let (st, v) = t
        .post(
            "/v1/runtimes",
            json!({"name": common::name("q"), "image": v2, "resources": small()}),
        )
        .await;
    assert_error(
        st,
        &v,
        429,
        "resource_exhausted",
        "--image-tenant-max-bytes",
    );
    let other = d.tenant("quota2").await;
    pull_ok(&other, &v2).await;
    // Freeing its own name gives the tenant its room back.
    let (st, v) = t.delete(&format!("/v1/images/{}", enc(&v1))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    pull_ok(&t, &v2).await;

    let d2 = daemon(&[], &["--image-store-max-bytes", "100000"]);
    let t2 = d2.tenant("full").await;
    pull_fails(&t2, &v1, "--image-store-max-bytes").await;
    let (st, _) = t2.get(&format!("/v1/images/{}", enc(&v1))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let layers: Vec<_> = std::fs::read_dir(d2.data_dir.join("images/layers/sha256"))
        .unwrap()
        .flatten()
        .collect();
    assert!(layers.is_empty(), "{layers:?}");
    healthy(&d2).await;
}

/// A decompression bomb against the tenant quota: a layer of a few hundred
/// KiB that unpacks to 64 MiB. The quota counts what a tenant's images
/// unpack to, not only their compressed bytes: the pull is refused,
/// nothing of it stays in the store, and a layer another tenant (here the
/// admin) already unpacked is charged all the same.
#[tokio::test(flavor = "multi_thread")]
async fn a_decompression_bomb_is_counted_unpacked_against_the_tenant_quota() {
    skip_unless_ready!();
    let w = world();
    let mut t = tar_builder();
    add_dir(&mut t, "data");
    add_file(&mut t, "data/zeros", 0o644, &vec![0u8; 64 << 20]);
    let bomb = gz_layer(t.into_inner().unwrap());
    assert!(bomb.blob.len() < 1 << 20, "{}", bomb.blob.len());
    let dir = w.work.join("bomb");
    layout(&dir, "bomb", &[gz_layer(app_layer("b")), bomb], app_run());
    w.plain.push_layout(&dir, "bomb", "test/bomb", "v1", &[]);
    let bomb_ref = format!("{}/test/bomb:v1", w.plain.addr);
    // 16 MiB: ample for the compressed image, a quarter of what it unpacks to.
    let d = daemon(&[], &["--image-tenant-max-bytes", "16777216"]);
    let t = d.tenant("bomb").await;
    let why = pull_fails(&t, &bomb_ref, "--image-tenant-max-bytes").await;
    assert!(why.contains("unpack"), "{why}");
    let (st, _) = t.get(&format!("/v1/images/{}", enc(&bomb_ref))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let unpacked: u64 = std::fs::read_dir(d.data_dir.join("images/layers/sha256"))
        .map(|rd| rd.flatten().count() as u64)
        .unwrap_or(0);
    assert!(
        unpacked <= 1,
        "only the small layer may stay unpacked: {unpacked}"
    );
    // The operator pulls it (uncapped): the 64 MiB layer is now on disk. The
    // tenant's pull reuses it, and is charged for it all the same.
    pull_ok(&admin(&d), &bomb_ref).await;
    let why = pull_fails(&t, &bomb_ref, "--image-tenant-max-bytes").await;
    assert!(why.contains("unpack"), "{why}");
    // An image within the quota still pulls.
    pull_ok(&t, &format!("{}/test/app:v1", w.plain.addr)).await;
    // Two pulls at once, each within the quota alone (12 of 16 MiB), both
    // together past it: they never both spend the same room.
    let mut refs = Vec::new();
    for i in 0..2 {
        let mut tb = tar_builder();
        add_file(&mut tb, &format!("zeros-{i}"), 0o644, &vec![0u8; 12 << 20]);
        let dir = w.work.join(format!("half-{i}"));
        layout(&dir, "v1", &[gz_layer(tb.into_inner().unwrap())], app_run());
        w.plain
            .push_layout(&dir, "v1", &format!("test/half{i}"), "v1", &[]);
        refs.push(format!("{}/test/half{i}:v1", w.plain.addr));
    }
    let t2 = d.tenant("bomb2").await;
    let (a, b) = tokio::join!(pull(&t2, &refs[0]), pull(&t2, &refs[1]));
    let ok = [&a, &b]
        .iter()
        .filter(|v| v["status"] == "succeeded")
        .count();
    assert_eq!(ok, 1, "exactly one fits: {a}\n{b}");
    healthy(&d).await;
}
