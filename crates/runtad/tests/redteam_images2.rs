//! Second red-team pass on the image subsystem (docs/security.md, Image
//! red-team pass 2): each test performs one attack against a real runtad,
//! with real Debian `docker-registry` instances on loopback, hostile HTTP
//! servers of the test's own and a real buildah, and asserts the attack
//! fails cleanly (a clear 4xx or error, nothing written outside the store,
//! no other tenant affected, the daemon still healthy).
//!
//! Needs root, `docker-registry`, `skopeo`, `curl`, `python3` and a static
//! busybox (`busybox-static`); the build tests also `buildah`. A test that
//! cannot find them says so and skips.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::image_attacks::*;
use common::registry::{busybox, sha, start_registry, Registry};
use common::{Client, Daemon};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

// ---------------------------------------------------------------- layers and layouts

/// A busybox root (the shell and the applets the tests use).
fn bb_tar() -> Vec<u8> {
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
    for a in [
        "sh", "ls", "cat", "echo", "mkdir", "rm", "sleep", "true", "test", "[", "seq", "head",
        "tr", "wc", "ps", "grep", "ln", "mkfifo", "stat", "chmod", "cp", "truncate", "mknod",
        "setsid", "readlink", "env", "id", "dd", "cut",
    ] {
        add_symlink(&mut t, &format!("bin/{a}"), "busybox");
    }
    t.into_inner().unwrap()
}

/// One file in a layer of its own.
fn file_tar(path: &str, body: &[u8]) -> Vec<u8> {
    let mut t = tar_builder();
    add_file(&mut t, path, 0o644, body);
    t.into_inner().unwrap()
}

/// Writes an OCI layout at `dir` with one image tagged `tag`: `layers` as
/// (tar, blob) pairs, `run` as the config's `config`.
fn layout(dir: &Path, tag: &str, layers: &[(Vec<u8>, Vec<u8>)], run: Value) -> Written {
    let specs: Vec<LayerSpec> = layers
        .iter()
        .map(|(tar, blob)| LayerSpec {
            tar: tar.clone(),
            blob: blob.clone(),
            media_type: GZIP_LAYER,
        })
        .collect();
    write_layout(dir, tag, &specs, run)
}

fn layer_desc(digest: &str, size: usize) -> Value {
    json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size})
}

fn run_cfg() -> Value {
    json!({"Env": ["PATH=/bin"], "WorkingDir": "/work"})
}

fn missing_tools(extra: &[&str]) -> Option<String> {
    let mut tools = vec!["docker-registry", "skopeo", "curl", "python3"];
    tools.extend_from_slice(extra);
    common::registry::missing_tools_of(&tools)
}

macro_rules! skip_unless {
    ($($t:expr),*) => {
        if let Some(why) = missing_tools(&[$($t),*]) {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

fn tmp(prefix: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// What the tests share: a plain anonymous registry with a busybox image
/// (`bb/box:1`), and the busybox layer itself.
struct World {
    plain: Registry,
    work: PathBuf,
    bb_tar: Vec<u8>,
    bb_blob: Vec<u8>,
    bb: Written,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let work = tmp("runta-rt-img2");
        let plain = start_registry(None, None);
        let bb_tar = bb_tar();
        let bb_blob = gzip(&bb_tar);
        let bb = layout(
            &work.join("bb"),
            "1",
            &[(bb_tar.clone(), bb_blob.clone())],
            run_cfg(),
        );
        plain.push_layout(&work.join("bb"), "1", "bb/box", "1", &[]);
        World {
            plain,
            work,
            bb_tar,
            bb_blob,
            bb,
        }
    })
}

fn bb_ref() -> String {
    format!("{}/bb/box:1", world().plain.addr)
}

// ---------------------------------------------------------------- hostile HTTP

/// A TCP listener on loopback that counts connections: a stand-in for the
/// daemon's own API, the metadata service or any host service a request
/// must never reach.
fn canary() -> (u16, Arc<AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            n2.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (port, n)
}

// ---------------------------------------------------------------- API helpers

fn small(image: &str, name: &str) -> Value {
    json!({"name": name, "image": image,
           "resources": {"requests": {"vcpus": 1, "memory_mib": 128}}})
}

/// Every file under `dir` whose contents hold `needle` (a bounded grep).
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let out = Command::new("grep")
        .args(["-rlsa", "--", needle])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The entries of a gzip'd layer blob: (path, type, link target, data).
fn blob_entries(p: &Path) -> Vec<(String, tar::EntryType, Option<String>, Vec<u8>)> {
    let f = std::fs::File::open(p).unwrap();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let t = e.header().entry_type();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((path, t, link, data));
    }
    out
}

// ---------------------------------------------------------------- 1. digests as keys

/// Tenant A pulls a private image (a password registry, A's own login):
/// a secret file in one layer, a secret in its config's `Env`. Tenant B,
/// who has no login but has learnt the digests (a pinned manifest in a
/// public repository, a log), serves from a registry of its own manifests
/// that name A's layer blob (which B's registry does not have), A's
/// config, or a blob of B's own labelled with the diff_id of A's layer.
/// None of them gives B anything of A's: every pull fails, B holds no
/// image, and B's registry is asked for every blob (whether the daemon
/// has it is not told either). B's own image of a layer A also has still
/// pulls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_digest_is_no_key_to_another_tenants_layers() {
    skip_unless!();
    let w = world();
    let secret = format!("A-LAYER-SECRET-{}", uuid::Uuid::new_v4().simple());
    let env_secret = format!("A-CONFIG-SECRET-{}", uuid::Uuid::new_v4().simple());
    let private = start_registry(None, Some(("alice", "alice-pw")));
    let s_tar = file_tar("secret.txt", secret.as_bytes());
    let s_blob = gzip(&s_tar);
    let a_img = layout(
        &w.work.join("private"),
        "1",
        &[
            (w.bb_tar.clone(), w.bb_blob.clone()),
            (s_tar.clone(), s_blob.clone()),
        ],
        json!({"Env": ["PATH=/bin", format!("TOKEN={env_secret}")]}),
    );
    private.push_layout(&w.work.join("private"), "1", "private/app", "1", &[]);

    // B's registry: manifests built from what B knows, blobs B has.
    let b_own = gzip(&file_tar("mine.txt", b"b's own"));
    let b_own_d = sha(&b_own);
    let bb_d = w.bb.blobs[0].clone();
    let mut docs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut manifests: Vec<(&str, Vec<u8>)> = Vec::new();
    // (a) A's layer blob by digest (B's registry does not have it).
    let c_a = config_bytes(&a_img.diff_ids, run_cfg());
    manifests.push((
        "steal-blob",
        manifest_bytes(
            &sha(&c_a),
            c_a.len(),
            &[
                layer_desc(&bb_d, w.bb_blob.len()),
                layer_desc(&a_img.blobs[1], s_blob.len()),
            ],
        ),
    ));
    docs.push((sha(&c_a), c_a));
    // (b) B's own blob, labelled with the diff_id of A's secret layer.
    let c_b = config_bytes(&a_img.diff_ids, run_cfg());
    let c_b = [c_b, b" ".to_vec()].concat();
    manifests.push((
        "relabel",
        manifest_bytes(
            &sha(&c_b),
            c_b.len(),
            &[
                layer_desc(&bb_d, w.bb_blob.len()),
                layer_desc(&b_own_d, b_own.len()),
            ],
        ),
    ));
    docs.push((sha(&c_b), c_b));
    // (c) A's config (its Env) by digest, over layers B has.
    let a_cfg_len = std::fs::metadata(w.work.join("private/blobs/sha256").join(&a_img.config[7..]))
        .unwrap()
        .len() as usize;
    manifests.push((
        "steal-config",
        manifest_bytes(
            &a_img.config,
            a_cfg_len,
            &[
                layer_desc(&bb_d, w.bb_blob.len()),
                layer_desc(&b_own_d, b_own.len()),
            ],
        ),
    ));
    // (d) control: B's own image of busybox (a layer A holds too) and B's file.
    let c_ok = config_bytes(
        &[
            w.bb.diff_ids[0].clone(),
            sha(&file_tar("mine.txt", b"b's own")),
        ],
        run_cfg(),
    );
    manifests.push((
        "own",
        manifest_bytes(
            &sha(&c_ok),
            c_ok.len(),
            &[
                layer_desc(&bb_d, w.bb_blob.len()),
                layer_desc(&b_own_d, b_own.len()),
            ],
        ),
    ));
    docs.push((sha(&c_ok), c_ok));
    docs.push((bb_d.clone(), w.bb_blob.clone()));
    docs.push((b_own_d.clone(), b_own.clone()));
    let manifests: Vec<(String, Vec<u8>)> = manifests
        .into_iter()
        .map(|(t, m)| (t.to_string(), m))
        .collect();
    let fake = Fake::start(move |_| {
        Arc::new(move |r: &Req| {
            let p = r.path.as_str();
            if p == "/v2/" {
                return resp(200, &[], b"{}");
            }
            if let Some(tag) = p.strip_prefix("/v2/evil/app/manifests/") {
                if let Some((_, m)) = manifests.iter().find(|(t, _)| t == tag) {
                    return resp(
                        200,
                        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
                        m,
                    );
                }
            }
            if let Some(d) = p.strip_prefix("/v2/evil/app/blobs/") {
                if let Some((_, b)) = docs.iter().find(|(dd, _)| dd == d) {
                    return resp(200, &[("Content-Type", "application/octet-stream")], b);
                }
            }
            resp(404, &[], b"{\"errors\":[{\"code\":\"BLOB_UNKNOWN\"}]}")
        })
    });
    let d = Daemon::start_new(&[
        "--insecure-registry",
        &format!("{},{},{}", w.plain.addr, private.addr, fake.addr),
    ]);
    let a = d.tenant("alice").await;
    let b = d.tenant("mallory").await;
    let (st, v) = a
        .post(
            "/v1/images/logins",
            json!({"registry": private.addr, "username": "alice", "password": "alice-pw"}),
        )
        .await;
    assert!(st.is_success(), "{v}");
    let a_ref = format!("{}/private/app:1", private.addr);
    pull_ok(&a, &a_ref).await;
    let n = common::name("a");
    a.create_with(small(&a_ref, &n)).await;
    assert_eq!(a.out(&n, "cat /secret.txt").await, secret);

    // B without a login: the registry refuses, by tag and by digest.
    pull_fails(&b, &a_ref, "authentication").await;
    pull_fails(
        &b,
        &format!("{}/private/app@{}", private.addr, a_img.manifest),
        "authentication",
    )
    .await;

    // B's own registry, with what B knows of A's image.
    let evil = |t: &str| format!("{}/evil/app:{t}", fake.addr);
    let e = pull_fails(&b, &evil("steal-blob"), "").await;
    assert!(e.contains("no blob") || e.contains("404"), "{e}");
    let e = pull_fails(&b, &evil("relabel"), "").await;
    assert!(e.contains("diff_id") || e.contains("does not match"), "{e}");
    let e = pull_fails(&b, &evil("steal-config"), "").await;
    assert!(e.contains("no blob") || e.contains("404"), "{e}");
    // The daemon asked B's registry for A's blob and config although it
    // has both: B learns nothing of what the store holds.
    let asked: Vec<String> = fake.requests().into_iter().map(|r| r.path).collect();
    for digest in [&a_img.blobs[1], &a_img.config] {
        assert!(
            asked.iter().any(|p| p.ends_with(digest.as_str())),
            "the daemon never asked B's registry for {digest}: {asked:?}"
        );
    }
    let (_, list) = b.get("/v1/images").await;
    let text = list.to_string();
    for digest in [&a_img.manifest, &a_img.config, &a_img.blobs[1]] {
        assert!(!text.contains(digest.as_str()), "{text}");
    }
    assert!(
        !text.contains("evil/app:steal") && !text.contains("evil/app:relabel"),
        "{text}"
    );
    for t in ["steal-blob", "relabel", "steal-config"] {
        let (st, v) = b
            .post("/v1/runtimes", small(&evil(t), &common::name("b")))
            .await;
        assert!(
            st.is_client_error() || st.is_server_error(),
            "{t}: {st} {v}"
        );
        assert!(!v.to_string().contains(&secret) && !v.to_string().contains(&env_secret));
    }

    // B's image of a layer A holds too (busybox) pulls and runs.
    pull_ok(&b, &evil("own")).await;
    let m = common::name("b");
    b.create_with(small(&evil("own"), &m)).await;
    assert_eq!(b.out(&m, "cat /mine.txt").await, "b's own");
    let (c, _) = b.run(&m, "cat /secret.txt").await;
    assert_ne!(c, 0, "B's image has no secret.txt");
    let out = b.out(&m, "env").await;
    assert!(!out.contains(&env_secret), "{out}");
    healthy(&d).await;
}

// ---------------------------------------------------------------- 2. commit of a hostile layer

/// One daemon for the tests that need no flags of their own.
fn shared() -> &'static Daemon {
    static D: OnceLock<Daemon> = OnceLock::new();
    D.get_or_init(|| Daemon::start_new(&["--insecure-registry", &world().plain.addr]))
}

/// What a hostile program leaves in its writable layer before the tenant
/// commits: links to host files by absolute path, by `../` from where the
/// layer sits on the host (the daemon's admin token), through
/// `/proc/1/root`; a hard link to the daemon's agent binary; a device node;
/// a FIFO; a setuid copy of the shell; a sparse file; and a loop that keeps
/// swapping a file for a link to the host file while the commits run.
const PLANT: &str = r#"set -e
mkdir -p /data && cd /data
ln -s "$CANARY" abs-link
ln -s "../../../../../../../../../../../../../../..$TOKEN" rel-token
ln -s /proc/1/root/etc/passwd proc-link
if ln /.runta/agent agent-hard 2>/dev/null; then echo HARDLINKED; else echo no-hardlink; fi
if mknod blk b 8 0 2>/dev/null; then echo MKNOD; else echo no-mknod; fi
mkfifo fifo
cp /bin/busybox suid && chmod 4755 suid
truncate -s 64M sparse
setsid sh -c 'while :; do rm -f race; echo data > race; rm -f race; ln -s "$CANARY" race; done' >/dev/null 2>&1 < /dev/null &
echo planted
"#;

/// A runtime plants links, devices, FIFOs and a racing file swap in its
/// layer, then the tenant commits it (running, three times during the
/// race; paused; under another tenant's namespace). No commit follows a
/// link on the host: no blob or layer of the store holds the host file or
/// the daemon's admin token, the links stay links that resolve inside the
/// next runtime, the FIFO never blocks the commit, a device node cannot be
/// made at all, a paused runtime stays paused, and the image lands in the
/// committer's own namespace, invisible to the other tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_writable_layer_commits_as_data_and_reads_nothing_of_the_host() {
    skip_unless!();
    let d = shared();
    let c = d.tenant("planter").await;
    let other = d.tenant("victim").await;
    let canary_text = format!("HOST-CANARY-{}", uuid::Uuid::new_v4().simple());
    let canary = std::env::temp_dir().join(format!(
        "runta-rt2-canary-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&canary, &canary_text).unwrap();
    let token_path = d.data_dir.join("admin-token");
    let n = common::name("plant");
    c.create_with(json!({"name": n, "image": bb_ref(),
        "env": {"CANARY": canary.display().to_string(), "TOKEN": token_path.display().to_string()},
        "resources": {"requests": {"vcpus": 1, "memory_mib": 128, "disk_gib": 1}}}))
        .await;
    let out = c.out(&n, PLANT).await;
    assert!(
        out.contains("no-hardlink"),
        "a link to the agent binary: {out}"
    );
    assert!(out.contains("no-mknod"), "a device node: {out}");

    // Three commits while the swap loop runs.
    let mut names = Vec::new();
    for i in 0..3 {
        let (st, v) = c
            .post(
                &format!("/v1/runtimes/{n}/commit"),
                json!({"name": format!("plant:{i}")}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        assert_eq!(c.status(&n).await, "running", "thawed after the commit");
        names.push(v["data"]["name"].as_str().unwrap().to_string());
    }
    let me = names[0]
        .strip_prefix("localhost/")
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    let store = d.data_dir.join("images");
    for name in &names {
        let (st, v) = c.get(&format!("/v1/images/{}", enc(name))).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let top = v["data"]["layer_digests"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let entries = blob_entries(&store.join("blobs/sha256").join(&top[7..]));
        let find = |p: &str| entries.iter().find(|e| e.0 == p).cloned();
        let l = find("data/abs-link").expect("abs-link");
        assert_eq!(
            (l.1, l.2.as_deref()),
            (tar::EntryType::Symlink, Some(canary.to_str().unwrap()))
        );
        assert_eq!(
            find("data/rel-token").expect("rel-token").1,
            tar::EntryType::Symlink
        );
        assert_eq!(
            find("data/proc-link").expect("proc-link").1,
            tar::EntryType::Symlink
        );
        assert_eq!(find("data/fifo").expect("fifo").1, tar::EntryType::Fifo);
        assert!(find("data/blk").is_none() && find("data/agent-hard").is_none());
        let race = find("data/race");
        if let Some(r) = &race {
            match r.1 {
                tar::EntryType::Regular => assert!(r.3 == b"data\n" || r.3.is_empty(), "{r:?}"),
                tar::EntryType::Symlink => {}
                t => panic!("race is a {t:?}"),
            }
        }
        let sparse = find("data/sparse").expect("sparse");
        assert_eq!(sparse.3.len(), 64 << 20);
        for e in &entries {
            let body = String::from_utf8_lossy(&e.3);
            assert!(!body.contains(&canary_text), "{} holds the host file", e.0);
            assert!(
                !body.contains(&d.admin_token),
                "{} holds the admin token",
                e.0
            );
        }
    }
    let leaked = files_holding(&store, &canary_text);
    assert!(
        leaked.is_empty(),
        "the host file is in the store: {leaked:?}"
    );
    let leaked = files_holding(&store, &d.admin_token);
    assert!(
        leaked.is_empty(),
        "the admin token is in the store: {leaked:?}"
    );

    // A runtime of the image: the links resolve inside it.
    let m = common::name("copy");
    c.create_with(small(&names[2], &m)).await;
    let (code, out) = c
        .run(&m, "cat /data/abs-link /data/rel-token /data/race")
        .await;
    assert!(
        !out.contains(&canary_text) && !out.contains(&d.admin_token),
        "{code} {out}"
    );
    assert_eq!(
        c.out(&m, "test -p /data/fifo && stat -c %a /data/suid")
            .await,
        "4755\n"
    );
    let (code, _) = c.run(&m, "test -e /data/blk").await;
    assert_ne!(code, 0);

    // Paused: committed as it is, and still paused.
    let (st, v) = c.post(&format!("/v1/runtimes/{n}/pause"), json!({})).await;
    assert!(st.is_success(), "{v}");
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{n}/commit"),
            json!({"name": "paused:1"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(c.status(&n).await, "paused");
    let (st, v) = c.post(&format!("/v1/runtimes/{n}/resume"), json!({})).await;
    assert!(st.is_success(), "{v}");

    // Another tenant's namespace: the image stays the committer's.
    let victim_ns = "localhost/victim-00000000/app:1".to_string();
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{n}/commit"),
            json!({"name": victim_ns}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let got = v["data"]["name"].as_str().unwrap();
    assert!(got.starts_with(&format!("localhost/{me}/")), "{got}");
    for name in names
        .iter()
        .map(String::as_str)
        .chain([got, victim_ns.as_str()])
    {
        let (st, _) = other.get(&format!("/v1/images/{}", enc(name))).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{name}");
        let (st, v) = other
            .post("/v1/runtimes", small(name, &common::name("v")))
            .await;
        assert!(
            st == StatusCode::NOT_FOUND || st.is_client_error(),
            "{name}: {st} {v}"
        );
    }
    let _ = std::fs::remove_file(&canary);
    healthy(d).await;
}

// ---------------------------------------------------------------- 3. push to a hostile registry

/// The admin pushes to a registry that answers hostile things: an upload
/// `Location` at the metadata address or at the daemon's own API, a token
/// realm there, a redirect of the upload, an answer that never ends, no
/// answer at all; and to a registry only a tenant has a login for. Each
/// push fails naming why, within the stall window; nothing connects to
/// the stand-in for the daemon's API; a tenant's login is never used for
/// the admin's push, and a tenant cannot push at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_to_a_hostile_registry_go_nowhere_else() {
    skip_unless!();
    let w = world();
    let (api_port, api_hits) = canary();
    let authed = start_registry(None, Some(("tenant-user", "tenant-pw")));
    let fake = Fake::start(move |_| {
        Arc::new(move |r: &Req| {
            let repo = r
                .path
                .strip_prefix("/v2/")
                .and_then(|p| p.split('/').next())
                .unwrap_or("");
            let api = format!("http://127.0.0.1:{api_port}");
            let head = r.method == "HEAD";
            let post = r.method == "POST";
            match repo {
                "meta" if post => resp(
                    202,
                    &[("Location", "http://169.254.169.254/latest/meta-data/x")],
                    b"",
                ),
                "api" if post => resp(202, &[("Location", &format!("{api}/v1/tokens"))], b""),
                // The same host and port, another scheme.
                "scheme" if post => {
                    let own = r.header("host").unwrap_or("127.0.0.1").to_string();
                    resp(
                        202,
                        &[(
                            "Location",
                            &format!("https://{own}/v2/scheme/blobs/uploads/u1"),
                        )],
                        b"",
                    )
                }
                "realm-api" => resp(
                    401,
                    &[(
                        "WWW-Authenticate",
                        &format!("Bearer realm=\"{api}/token\",service=\"x\""),
                    )],
                    b"",
                ),
                "realm-meta" => resp(
                    401,
                    &[(
                        "WWW-Authenticate",
                        "Bearer realm=\"https://169.254.169.254/token\"",
                    )],
                    b"",
                ),
                "redirect" if post => {
                    resp(307, &[("Location", &format!("{api}/v1/runtimes"))], b"")
                }
                "endless" if r.method == "PUT" => Resp::Endless(500),
                "endless" if post || r.method == "PATCH" => {
                    resp(202, &[("Location", "/v2/endless/blobs/uploads/u1")], b"")
                }
                "hang" => Resp::Hang,
                _ if head => resp(404, &[], b""),
                _ => resp(404, &[], b""),
            }
        })
    });
    let d = Daemon::start_new(&[
        "--insecure-registry",
        &format!("{},{},{}", w.plain.addr, fake.addr, authed.addr),
        "--image-pull-stall-secs",
        "3",
    ]);
    let a = admin(&d);
    pull_ok(&a, &bb_ref()).await;
    let img = bb_ref();
    let push = |target: String| {
        let a = a.clone();
        let img = img.clone();
        async move {
            let t0 = Instant::now();
            let (st, v) = a
                .post(
                    &format!("/v1/images/{}/push", enc(&img)),
                    json!({ "reference": target }),
                )
                .await;
            (st, v, t0.elapsed())
        }
    };
    for (repo, needle) in [
        ("meta", "another host"),
        ("api", "another host"),
        ("scheme", "another scheme"),
        ("realm-api", "not HTTPS"),
        ("realm-meta", "refused to connect"),
        ("redirect", "307"),
        ("endless", "finish the upload"),
        ("hang", "no answer"),
    ] {
        let (st, v, took) = push(format!("{}/{repo}/app:1", fake.addr)).await;
        assert!(
            st.is_client_error() || st.is_server_error(),
            "{repo}: {st} {v}"
        );
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            msg.contains(needle),
            "{repo}: {msg:?} should say {needle:?}"
        );
        assert!(msg.len() < 4096, "{repo}: a message of {} bytes", msg.len());
        assert!(took < Duration::from_secs(30), "{repo}: took {took:?}");
    }
    assert_eq!(
        api_hits.load(Ordering::SeqCst),
        0,
        "a push reached the daemon's API stand-in"
    );
    assert!(
        !fake
            .requests()
            .iter()
            .any(|r| r.header("authorization").is_some()),
        "the admin has no login for the hostile registry; nothing was sent"
    );

    // A tenant's login opens no registry for the admin's push.
    let t = d.tenant("pusher").await;
    let (st, v) = t
        .post(
            "/v1/images/logins",
            json!({"registry": authed.addr, "username": "tenant-user", "password": "tenant-pw"}),
        )
        .await;
    assert!(st.is_success(), "{v}");
    let (st, v, _) = push(format!("{}/team/app:1", authed.addr)).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    // Nor may the tenant push (it would use the daemon's logins).
    pull_ok(&t, &bb_ref()).await;
    let (st, v) = t
        .post(
            &format!("/v1/images/{}/push", enc(&bb_ref())),
            json!({"reference": format!("{}/team/app:1", authed.addr)}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            "tenant-user:tenant-pw",
        ])
        .arg(format!("http://{}/v2/team/app/manifests/1", authed.addr))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "404",
        "nothing was pushed"
    );
    healthy(&d).await;
}

// ---------------------------------------------------------------- 4. hostile names

/// Image names with `..`, encoded slashes, NUL, control and bidi
/// characters, full-width look-alikes of `localhost`, a digest that is a
/// path, 20,000 characters, in every field that takes one: pull
/// references, inspect and delete paths, commit names, registry logins
/// and logouts, push targets. Each is a 4xx (or a pull that fails), never
/// a 5xx; nothing named by them appears on the host, and the daemon
/// stays healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_in_every_image_field_are_refused_cleanly() {
    skip_unless!();
    let d = shared();
    let c = d.tenant("names").await;
    let a = admin(d);
    let mark = format!("pwn{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let long = "a".repeat(20_000);
    let names: Vec<String> = vec![
        format!("../../../../tmp/{mark}"),
        format!("127.0.0.1:1/../../../../tmp/{mark}:1"),
        format!("localhost/../{mark}/x:1"),
        format!("{mark}/..%2F..%2Fx:1"),
        format!("{mark}:1\u{0}/etc/passwd"),
        format!("{mark}\n/x:1"),
        format!("\u{202e}{mark}/x:1"),
        format!("ｌｏｃａｌｈｏｓｔ/{mark}/x:1"),
        format!("{mark}@sha256:../../../../tmp/x"),
        format!("sha256:../../{mark}"),
        format!("{mark}:../../x"),
        format!("-{mark}"),
        format!("{}/{mark}:1", "x".repeat(300)),
        long.clone(),
    ];
    let bad = |what: &str, n: &str, st: StatusCode, v: &Value| {
        assert!(
            st.is_client_error(),
            "{what} {:?}: {st} {}",
            &n[..n.len().min(80)],
            v.to_string().chars().take(300).collect::<String>()
        );
    };
    let m = common::name("src");
    c.create_with(small(&bb_ref(), &m)).await;
    for n in &names {
        let (st, v) = c.post("/v1/images/pulls", json!({"reference": n})).await;
        if st == StatusCode::ACCEPTED {
            let id = v["data"]["id"].as_str().unwrap();
            loop {
                let (_, v) = c.get(&format!("/v1/images/pulls/{id}")).await;
                if v["data"]["status"] != "running" {
                    assert_eq!(v["data"]["status"], "failed", "{n:?}: {v}");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } else {
            bad("pull", n, st, &v);
        }
        for client in [&c, &a] {
            let (st, v) = client.get(&format!("/v1/images/{}", enc(n))).await;
            bad("inspect", n, st, &v);
            let (st, v) = client.delete(&format!("/v1/images/{}", enc(n))).await;
            bad("delete", n, st, &v);
        }
        let (st, v) = c
            .post(&format!("/v1/runtimes/{m}/commit"), json!({"name": n}))
            .await;
        if st == StatusCode::CREATED {
            // Taken as a name under the tenant's own prefix: harmless.
            let got = v["data"]["name"].as_str().unwrap();
            assert!(got.starts_with("localhost/names-"), "{n:?} became {got:?}");
        } else {
            bad("commit", n, st, &v);
        }
        let (st, v) = c
            .post(
                "/v1/images/logins",
                json!({"registry": n, "username": "u", "password": "p"}),
            )
            .await;
        bad("login", n, st, &v);
        let (st, v) = c.delete(&format!("/v1/images/logins/{}", enc(n))).await;
        bad("logout", n, st, &v);
        let (st, v) = a
            .post(
                &format!("/v1/images/{}/push", enc(&bb_ref())),
                json!({"reference": n}),
            )
            .await;
        assert!(
            st.is_client_error()
                || st == StatusCode::BAD_GATEWAY
                || st.is_server_error() && v["error"]["code"] != "internal",
            "push {:?}: {st} {v}",
            &n[..n.len().min(80)]
        );
        let (st, v) = c
            .post(
                &format!("/v1/images/{}/push", enc(n)),
                json!({"reference": "x/y:1"}),
            )
            .await;
        bad("tenant push", n, st, &v);
    }
    // Nothing by those names on the host.
    let out = Command::new("find")
        .args(["/tmp", "/var/lib/runta", "/run"])
        .arg(&d.data_dir)
        .args(["-maxdepth", "6", "-name", &format!("*{mark}*")])
        .output()
        .unwrap();
    let found = String::from_utf8_lossy(&out.stdout);
    let found: Vec<&str> = found
        .lines()
        .filter(|l| !l.contains("/images/commits/"))
        .collect();
    // A commit name lives only in the store's records, never as a path.
    assert!(found.is_empty(), "{found:?}");
    healthy(d).await;
}

// ---------------------------------------------------------------- 5. builds

/// Posts a build of `dockerfile` (a context of that file alone) as `name`;
/// the last event (`done` or `error`) and the log lines.
async fn build(c: &Client, name: &str, dockerfile: &str) -> (StatusCode, Value, Vec<String>) {
    let dir = tmp("rt2-ctx");
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    let out = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(&dir)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let resp = c
        .http
        .request(
            Method::POST,
            format!("{}/v1/images/builds?name={name}", c.base),
        )
        .bearer_auth(&c.token)
        .header("content-type", "application/x-tar")
        .timeout(Duration::from_secs(600))
        .body(out.stdout)
        .send()
        .await;
    let Ok(resp) = resp else {
        return (StatusCode::BAD_GATEWAY, Value::Null, vec![]);
    };
    let st = resp.status();
    // A daemon killed mid-build cuts the answer short.
    let text = resp.text().await.unwrap_or_default();
    if st != StatusCode::OK {
        return (
            st,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            vec![],
        );
    }
    let (mut log, mut last) = (Vec::new(), Value::Null);
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or(Value::Null);
        match v["type"].as_str() {
            Some("log") => log.push(v["line"].as_str().unwrap_or("").to_string()),
            _ => last = v,
        }
    }
    (st, last, log)
}

/// Host processes whose command line contains `needle`.
fn procs_with(needle: &str) -> Vec<i32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd)
            .replace('\0', " ")
            .contains(needle)
            && pid != std::process::id() as i32
        {
            v.push(pid);
        }
    }
    v
}

/// The network namespace, host link and chain of every build of daemon `d`
/// running now (named on its buildah command lines, `ns:/run/netns/rtbuild-…`).
fn build_nets(data_dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for pid in procs_with(&format!("{}/images/builder", data_dir.display())) {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        for w in cmd.split([' ', '/', ':', ',']) {
            if let Some(id) = w.strip_prefix("rtbuild-").filter(|h| h.len() == 12) {
                v.push(format!("netns rtbuild-{id}"));
                v.push(format!("link rbh{}", &id[..9]));
                v.push(format!("chain RTB-{}", &id[..9]));
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

/// What a build leaves on the host: network namespaces `rtbuild-*`, links
/// `rbh*`, iptables chains `RTB-*`, mounts under the data dir, and the
/// builds' cgroups (`/runta-<instance>-builds/*`).
/// Only the network pieces named in `nets` (this daemon's builds', from
/// [`build_nets`]) count: other daemons of the host build too.
fn build_remains(d: &Daemon, nets: &[String]) -> Vec<String> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/run/netns") {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("rtbuild-") {
                v.push(format!("netns {n}"));
            }
        }
    }
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    for l in String::from_utf8_lossy(&links.stdout).lines() {
        if let Some(n) = l.split(": ").nth(1).filter(|n| n.starts_with("rbh")) {
            v.push(format!("link {}", n.split('@').next().unwrap_or(n)));
        }
    }
    for l in common::iptables_save().lines() {
        if let Some(c) = l.strip_prefix(':').filter(|c| c.starts_with("RTB-")) {
            v.push(format!("chain {}", c.split(' ').next().unwrap_or(c)));
        }
    }
    v.retain(|r| nets.contains(r));
    let dd = d.data_dir.display().to_string();
    for l in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
    {
        if l.contains(&format!("{dd}/images")) {
            v.push(format!("mount {}", l.split(' ').nth(4).unwrap_or("")));
        }
    }
    let parent = format!("runta-{}-builds", d.instance());
    for c in ["pids", "memory", "cpu", "freezer", "unified", ""] {
        let root = Path::new("/sys/fs/cgroup").join(c).join(&parent);
        if let Ok(rd) = std::fs::read_dir(&root) {
            for e in rd.flatten().filter(|e| e.path().is_dir()) {
                v.push(format!("cgroup {}", e.path().display()));
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

/// Removes what a build left (processes by id, and the [`build_remains`]
/// entries of its network), for a test that found them.
fn purge(pids: &[i32], remains: &[String]) {
    for p in pids {
        // SAFETY: signalling processes of this test's own build.
        unsafe {
            libc::kill(*p, libc::SIGKILL);
        }
    }
    let sh = |c: &str| {
        let _ = Command::new("sh").args(["-c", c]).status();
    };
    for r in remains {
        let Some((kind, name)) = r.split_once(' ') else {
            continue;
        };
        match kind {
            "netns" => sh(&format!("ip netns del {name}")),
            "link" => sh(&format!("ip link del {name}")),
            "chain" => {
                let link = format!("rbh{}", name.trim_start_matches("RTB-"));
                for t in ["filter", "nat"] {
                    sh(&format!(
                        "iptables-save -t {t} | grep -E '^-A .*({name}|{link})( |$)' | sed 's/^-A/-D/' | while read -r l; do eval iptables -t {t} $l; done"
                    ));
                }
                sh(&format!("iptables -F {name}; iptables -X {name}"));
            }
            _ => {}
        }
    }
}

/// A daemon for builds with tight limits, and the busybox image to build on.
fn build_daemon(extra: &[&str]) -> Daemon {
    let mut args = vec!["--insecure-registry", world().plain.addr.as_str()];
    args.extend_from_slice(extra);
    Daemon::start_new(&args)
}

/// Three tenants build at once: a RUN step that forks a thousand
/// sleepers, one that holds 400 MB in a shell variable, one that never
/// ends. With `--build-pids-max 128 --build-memory-mib 192
/// --build-timeout-secs 40` the forks stop at the cap (the host never
/// sees more than the cap of them), the memory hog is killed, the endless
/// step fails saying it ran past its deadline, every process of each is
/// gone after, and nothing of the builds stays on the host.
/// (The per-build cgroup, deadline and flags are the lead's change in
/// progress: until it lands the daemon refuses the flags.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bombs_memory_hogs_and_endless_steps_are_contained() {
    skip_unless!("buildah");
    let d = build_daemon(&[
        "--build-pids-max",
        "128",
        "--build-memory-mib",
        "192",
        "--build-timeout-secs",
        "40",
    ]);
    let from = format!("FROM {}\n", bb_ref());
    let fork =
        format!("{from}RUN for i in $(seq 1 1000); do sleep 4321 & done; sleep 5; echo forked\n");
    let hog = format!("{from}RUN x=$(head -c 400000000 /dev/zero | tr '\\0' a); echo ${{#x}}\n");
    let endless = format!("{from}RUN sleep 5678\n");
    let (t1, t2, t3) = (
        d.tenant("fork").await,
        d.tenant("hog").await,
        d.tenant("endless").await,
    );
    let peak = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let nets: Arc<Mutex<Vec<String>>> = Default::default();
    let (p2, s2, n2) = (peak.clone(), stop.clone(), nets.clone());
    let dd = d.data_dir.clone();
    let sampler = std::thread::spawn(move || {
        while !s2.load(Ordering::SeqCst) {
            p2.fetch_max(procs_with("sleep 4321").len(), Ordering::SeqCst);
            let mut n = n2.lock().unwrap();
            n.extend(build_nets(&dd));
            n.sort();
            n.dedup();
            drop(n);
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let t0 = Instant::now();
    let (f, h, e) = tokio::join!(
        build(&t1, "fork:1", &fork),
        build(&t2, "hog:1", &hog),
        build(&t3, "endless:1", &endless)
    );
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    // What is left is removed before anything is asserted, so a failure
    // leaves the host clean.
    let stray: Vec<i32> = ["sleep 4321", "sleep 5678", "head -c 400000000"]
        .iter()
        .flat_map(|n| procs_with(n))
        .collect();
    let nets = nets.lock().unwrap().clone();
    let left = build_remains(&d, &nets);
    purge(&stray, &left);
    assert!(
        stray.is_empty(),
        "processes of the builds still ran: {stray:?}"
    );
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(f.0, StatusCode::OK, "{}", f.1);
    assert!(
        peak.load(Ordering::SeqCst) <= 128,
        "{} forked sleepers at once past --build-pids-max 128",
        peak.load(Ordering::SeqCst)
    );
    assert_eq!(h.0, StatusCode::OK, "{}", h.1);
    assert_eq!(
        h.1["type"], "error",
        "the hog's build should fail: {} {:?}",
        h.1, h.2
    );
    assert_eq!(e.0, StatusCode::OK, "{}", e.1);
    assert_eq!(e.1["type"], "error", "{} {:?}", e.1, e.2);
    let msg = e.1["message"].as_str().unwrap_or("");
    assert!(msg.contains("deadline"), "{msg:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(150),
        "took {:?}",
        t0.elapsed()
    );
    healthy(&d).await;
}

/// A daemon killed (SIGKILL) while a build's RUN step runs, then started
/// again: nothing of that build is left once it is up: no process of it
/// (buildah, runc, the step), no network namespace, link, chain, mount or
/// cgroup; and the tenant builds again.
/// (Reconcile at start is the lead's change in progress.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_build_leaves_nothing_once_it_restarts() {
    skip_unless!("buildah");
    let d = build_daemon(&[]);
    let c = d.tenant("killed").await;
    let df = format!("FROM {}\nRUN sleep 6789\n", bb_ref());
    let c2 = c.clone();
    let job = tokio::spawn(async move { build(&c2, "killed:1", &df).await });
    let deadline = Instant::now() + Duration::from_secs(120);
    while procs_with("sleep 6789").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the step never started: {}",
            d.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let nets = build_nets(&d.data_dir);
    let during = build_remains(&d, &nets);
    assert!(
        !during.is_empty(),
        "a running build has a namespace, chain, cgroup"
    );
    d.kill9();
    let _ = job.await;
    d.spawn();
    // Reconcile runs at start; allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = build_remains(&d, &nets);
        let procs = procs_with("sleep 6789");
        let builders = procs_with(&format!("{}/images/builder", d.data_dir.display()));
        if left.is_empty() && procs.is_empty() && builders.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            // Leave the host clean even when the daemon did not.
            purge(&[procs.clone(), builders.clone()].concat(), &left);
            panic!("after the restart: {left:?}, step {procs:?}, buildah {builders:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (st, last, log) = build(&c, "again:1", &format!("FROM {}\nRUN echo ok\n", bb_ref())).await;
    assert_eq!(st, StatusCode::OK, "{last}");
    assert_eq!(last["type"], "done", "{last} {log:?}");
    healthy(&d).await;
}
