//! End-to-end tests of the image store (docs/images.md): real registries on
//! loopback (Debian's `docker-registry`, plain and TLS + htpasswd), images
//! the test builds itself and pushes with `skopeo`, trees compared with
//! `umoci unpack`, hostile images, a daemon killed during a pull, runtimes
//! from an Alpine-like (busybox) and a distroless image, and the CLI.
//!
//! Needs root, `docker-registry`, `skopeo`, `umoci`, `zstd` and a static
//! busybox (`busybox-static`); a test that cannot find them says so and skips.

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::registry::{busybox, make_tls, put_blob, sha, start_registry, Registry, Tls};
use common::{assert_error, Client, Daemon};
use reqwest::StatusCode;
use serde_json::{json, Value};

// ---------------------------------------------------------------- building

#[derive(Clone, Copy)]
enum Comp {
    Gzip,
    Zstd,
}

/// A layer tar under construction.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Self {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Complete);
        Tar(b)
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h
    }

    fn dir(&mut self, path: &str, mode: u32, uid: u64, gid: u64) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, uid, gid, 0);
        self.0.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    fn file(&mut self, path: &str, mode: u32, uid: u64, gid: u64, data: &[u8]) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, uid, gid, data.len() as u64);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }

    fn file_xattr(&mut self, path: &str, data: &[u8], xattrs: &[(&str, &[u8])]) -> &mut Self {
        let keys: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.0
            .append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v)))
            .unwrap();
        self.file(path, 0o644, 0, 0, data)
    }

    fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0, 0, 0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    fn fifo(&mut self, path: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Fifo, 0o600, 0, 0, 0);
        self.0.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    fn chardev(&mut self, path: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Char, 0o600, 0, 0, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        self.0.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    /// A raw entry with any name (the tar crate refuses `..` in its helpers).
    fn raw(
        &mut self,
        kind: tar::EntryType,
        name: &[u8],
        link: Option<&[u8]>,
        data: &[u8],
    ) -> &mut Self {
        let mut h = Self::header(kind, 0o644, 0, 0, data.len() as u64);
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name);
            if let Some(l) = link {
                gnu.linkname[..l.len()].copy_from_slice(l);
            }
        }
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn compress(tar: &[u8], c: Comp) -> Vec<u8> {
    match c {
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Comp::Zstd => {
            let mut child = Command::new("zstd")
                .args(["-q", "-c", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("zstd");
            let mut stdin = child.stdin.take().unwrap();
            let data = tar.to_vec();
            let t = std::thread::spawn(move || stdin.write_all(&data).unwrap());
            let out = child.wait_with_output().unwrap();
            t.join().unwrap();
            assert!(out.status.success());
            out.stdout
        }
    }
}

/// Writes an OCI layout with one image tagged `tag`; returns the manifest digest.
fn layout(dir: &Path, tag: &str, layers: &[(Vec<u8>, Comp)], run: Value) -> String {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (tar, c) in layers {
        diff_ids.push(sha(tar));
        let blob = compress(tar, *c);
        let mt = match c {
            Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        };
        descs.push(json!({"mediaType": mt, "digest": put_blob(dir, &blob), "size": blob.len()}));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": "2026-01-02T03:04:05Z",
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put_blob(dir, &config), "size": config.len()},
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

/// An Alpine-like root: busybox with its applets, /etc basics.
fn busybox_layer(bb: &[u8]) -> Vec<u8> {
    let mut t = Tar::new();
    t.dir("bin", 0o755, 0, 0)
        .dir("etc", 0o755, 0, 0)
        .dir("tmp", 0o1777, 0, 0)
        .dir("root", 0o700, 0, 0)
        .dir("work", 0o755, 0, 0)
        .file("bin/busybox", 0o755, 0, 0, bb)
        .file(
            "etc/passwd",
            0o644,
            0,
            0,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )
        .file("etc/group", 0o644, 0, 0, b"root:x:0:\nnogroup:x:65534:\n")
        .file("etc/os-release", 0o644, 0, 0, b"ID=runta-test-busybox\n");
    for applet in [
        "sh", "ls", "cat", "echo", "id", "pwd", "env", "stat", "mkdir", "rm", "sleep", "true",
    ] {
        t.symlink(&format!("bin/{applet}"), "busybox");
    }
    t.finish()
}

// ---------------------------------------------------------------- registries

/// Why these tests cannot run here, if they cannot.
fn missing_tools() -> Option<String> {
    common::registry::missing_tools_of(&[
        "docker-registry",
        "skopeo",
        "umoci",
        "zstd",
        "curl",
        "python3",
    ])
}

macro_rules! skip_unless_ready {
    () => {
        if let Some(why) = missing_tools() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

impl Registry {
    /// Pushes the image tagged `tag` in `layout_dir` as `repo:tag`.
    fn push(&self, layout_dir: &Path, tag: &str, repo: &str) {
        self.push_args(layout_dir, tag, repo, &[]);
    }

    fn push_args(&self, layout_dir: &Path, tag: &str, repo: &str, extra: &[&str]) {
        self.push_layout(layout_dir, tag, repo, tag, extra);
    }

    /// The registry's stored copy of a blob (filesystem driver layout).
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = &digest[7..];
        self.root
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// Everything the tests share: two registries, the images pushed to them,
/// one daemon that trusts the TLS one and speaks plain HTTP to the other.
struct World {
    plain: Registry,
    secure: Registry,
    /// Answers with a 64 MiB manifest.
    fake: FakeRegistry,
    tls: Tls,
    daemon: Daemon,
    work: PathBuf,
    /// Manifest digests by tag, of the images in `work/<tag>`.
    digests: std::collections::HashMap<String, String>,
}

/// Tiny limits so that bombs trip quickly (the test images stay below them).
const MAX_BYTES: &str = "67108864";
const MAX_FILES: &str = "3000";

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let work =
            std::env::temp_dir().join(format!("runta-images-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&work).unwrap();
        let tls = make_tls(&work.join("tls"));
        let plain = start_registry(None, None);
        let secure = start_registry(Some(&tls), Some(("runta", "s3cret-pw")));
        let mut digests = std::collections::HashMap::new();
        for (tag, d) in build_images(&work) {
            digests.insert(tag, d);
        }
        for tag in ["rich", "alpine", "distroless"] {
            plain.push(&work.join(tag), tag, &format!("test/{tag}"));
        }
        secure.push(&work.join("alpine"), "alpine", "private/alpine");
        let fake = FakeRegistry::start();
        let ca = tls.ca_pem.display().to_string();
        let insecure = format!("{},{}", plain.addr, fake.addr);
        let daemon = Daemon::start_new(&[
            "--no-prebuild",
            "--insecure-registry",
            &insecure,
            // The TLS registry is on loopback: named, or refused as any
            // private address is (docs/security.md).
            "--private-registry",
            &secure.addr,
            "--registry-ca",
            &ca,
            "--image-max-bytes",
            MAX_BYTES,
            "--image-max-files",
            MAX_FILES,
        ]);
        World {
            plain,
            secure,
            fake,
            tls,
            daemon,
            work,
            digests,
        }
    })
}

/// The images the tests push: `rich` (every kind of entry, three layers,
/// gzip and zstd), `alpine` (busybox, WorkingDir, Env) and `distroless`
/// (one static binary, no shell).
fn build_images(work: &Path) -> Vec<(String, String)> {
    let bb = busybox().unwrap();
    let mut out = Vec::new();
    // rich: base (a copy of part of the host's Debian /etc and busybox),
    // then a layer of every kind of entry, then one that deletes.
    let base = {
        let mut t = Tar::new();
        t.dir("etc", 0o755, 0, 0)
            .dir("etc/keep", 0o755, 0, 0)
            .dir("etc/opaque", 0o750, 0, 0);
        for f in [
            "os-release",
            "passwd",
            "group",
            "hostname",
            "debian_version",
        ] {
            let p = Path::new("/etc").join(f);
            if let Ok(data) = std::fs::read(&p) {
                t.file(&format!("etc/{f}"), 0o644, 0, 0, &data);
            }
        }
        t.file("etc/keep/a", 0o644, 0, 0, b"a")
            .file("etc/keep/gone", 0o644, 0, 0, b"to be whited out")
            .file("etc/opaque/old1", 0o600, 0, 0, b"hidden by opaque")
            .dir("etc/opaque/olddir", 0o755, 0, 0)
            .file("etc/opaque/olddir/x", 0o644, 0, 0, b"x")
            .dir("usr", 0o755, 0, 0)
            .dir("usr/bin", 0o755, 0, 0)
            .file("usr/bin/busybox", 0o755, 0, 0, &bb)
            .file(
                "usr/bin/linked-below",
                0o640,
                7,
                8,
                b"linked from the next layer",
            )
            .dir("data", 0o755, 1000, 1000)
            .file("data/big", 0o644, 1000, 1000, &vec![7u8; 300_000]);
        t.finish()
    };
    let kinds = {
        let mut t = Tar::new();
        t.file(".wh.nothing-here", 0o644, 0, 0, b"")
            .file("etc/keep/.wh.gone", 0o644, 0, 0, b"")
            .file("etc/opaque/.wh..wh..opq", 0o644, 0, 0, b"")
            .file("etc/opaque/new", 0o644, 0, 0, b"after opaque")
            .file("usr/bin/setuid-tool", 0o4755, 0, 0, b"#!/bin/sh\necho hi\n")
            .file("usr/bin/setgid-tool", 0o2711, 0, 50, b"g")
            .dir("srv", 0o1777, 0, 0)
            .file("srv/owned", 0o640, 1234, 5678, b"owned")
            .file_xattr(
                "srv/xattr-file",
                b"has attributes",
                &[
                    ("user.runta", b"yes"),
                    (
                        "security.capability",
                        &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    ),
                ],
            )
            .file_xattr(
                "srv/sneaky",
                b"tries to steer overlayfs",
                &[("trusted.overlay.opaque", b"y")],
            )
            .symlink("srv/abs-link", "/etc/os-release")
            .symlink("srv/rel-link", "../etc/keep/a")
            .symlink("srv/dangling", "/nowhere/at/all")
            .file("srv/hard-a", 0o600, 0, 0, b"one inode")
            .hardlink("srv/hard-b", "srv/hard-a")
            .hardlink("srv/hard-below", "usr/bin/linked-below")
            .fifo("srv/fifo")
            .chardev("srv/null-device")
            .file(
                "var/lib/implicit/parents",
                0o644,
                0,
                0,
                b"parents not in the tar",
            );
        t.finish()
    };
    let deletes = {
        let mut t = Tar::new();
        t.file("data/.wh.big", 0o644, 0, 0, b"")
            .file("srv/.wh.hard-a", 0o644, 0, 0, b"")
            .file("etc/keep/a", 0o600, 0, 0, b"replaced");
        t.finish()
    };
    // umoci 0.4 reads no zstd: the same tars, all gzip, are what it unpacks
    // (same diff_ids, so the same tree).
    layout(
        &work.join("rich-gz"),
        "rich",
        &[
            (base.clone(), Comp::Gzip),
            (kinds.clone(), Comp::Gzip),
            (deletes.clone(), Comp::Gzip),
        ],
        json!({}),
    );
    out.push((
        "rich".into(),
        layout(
            &work.join("rich"),
            "rich",
            &[
                (base, Comp::Gzip),
                (kinds, Comp::Zstd),
                (deletes, Comp::Gzip),
            ],
            json!({"Env": ["PATH=/usr/bin:/bin"]}),
        ),
    ));
    out.push((
        "alpine".into(),
        layout(
            &work.join("alpine"),
            "alpine",
            &[(busybox_layer(&bb), Comp::Gzip)],
            json!({"Env": ["PATH=/bin", "IMAGE_GREETING=from-the-image"], "WorkingDir": "/work", "Cmd": ["/bin/sh"]}),
        ),
    ));
    let distroless = {
        let mut t = Tar::new();
        t.dir("app", 0o755, 0, 0)
            // A static binary that acts on its name (busybox), no shell.
            .file("app/echo", 0o755, 0, 0, &bb)
            .hardlink("app/pwd", "app/echo")
            .dir("etc", 0o755, 0, 0)
            .file(
                "etc/passwd",
                0o644,
                0,
                0,
                b"root:x:0:0:root:/root:/sbin/nologin\n",
            );
        t.finish()
    };
    out.push((
        "distroless".into(),
        layout(
            &work.join("distroless"),
            "distroless",
            &[(distroless, Comp::Zstd)],
            json!({"Env": ["PATH=/app"], "Entrypoint": ["/app/echo"]}),
        ),
    ));
    out
}

// ---------------------------------------------------------------- helpers

fn admin(w: &World) -> Client {
    Client::new(&w.daemon.endpoint, &w.daemon.admin_token)
}

/// Pulls `reference` and waits for the end; returns the final pull object.
async fn pull(c: &Client, reference: &str) -> Value {
    let (st, v) = c
        .post("/v1/images/pulls", json!({ "reference": reference }))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "pull {reference}: {v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (st, v) = c.get(&format!("/v1/images/pulls/{id}")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if v["data"]["status"] != "running" {
            return v["data"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "pull {reference} did not end: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pull_ok(c: &Client, reference: &str) -> Value {
    let p = pull(c, reference).await;
    assert_eq!(p["status"], "succeeded", "pull {reference}: {p}");
    p
}

async fn pull_fails(c: &Client, reference: &str, needle: &str) {
    let p = pull(c, reference).await;
    assert_eq!(p["status"], "failed", "pull {reference} should fail: {p}");
    let e = p["error"].as_str().unwrap_or_default();
    assert!(
        e.contains(needle),
        "pull {reference}: error {e:?} should say {needle:?}"
    );
}

fn store_dir(w: &World) -> PathBuf {
    w.daemon.data_dir.join("images")
}

/// Nothing is left half made in the store's work folders.
/// No unpack is left half done. The world's daemon is shared by the tests
/// running beside this one, whose pulls unpack in `layers/tmp` while they
/// run: a folder there is a leftover only if it outlives every pull (an
/// unpack takes a second or so here; 60 s is many of them).
fn no_partial_unpacks(w: &World) {
    let tmp = store_dir(w).join("layers/tmp");
    let seen = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect()
    };
    let first = seen(&tmp);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: Vec<_> = seen(&tmp)
            .into_iter()
            .filter(|p| first.contains(p))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "unpacks left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One entry of a tree, as both `umoci unpack` and the overlay show it.
#[derive(Debug, PartialEq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    content: String,
    xattrs: Vec<(String, Vec<u8>)>,
    /// Other paths of the same inode (hard links), sorted.
    links: Vec<String>,
}

fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: NUL-terminated path, buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return vec![];
    }
    let mut out = Vec::new();
    for name in buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
    {
        let name_s = String::from_utf8_lossy(name).into_owned();
        if name_s.starts_with("trusted.") {
            continue;
        }
        let cn = std::ffi::CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: as above.
        let m = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if m >= 0 {
            v.truncate(m as usize);
            out.push((name_s, v));
        }
    }
    out.sort();
    out
}

fn walk_tree(root: &Path) -> std::collections::BTreeMap<String, Node> {
    type Inodes = std::collections::HashMap<(u64, u64), Vec<String>>;
    fn go(
        root: &Path,
        dir: &Path,
        out: &mut std::collections::BTreeMap<String, Node>,
        inodes: &mut Inodes,
    ) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = m.file_type();
            use std::os::unix::fs::FileTypeExt;
            let (kind, content) = if ft.is_symlink() {
                (
                    "symlink",
                    std::fs::read_link(&p).unwrap().display().to_string(),
                )
            } else if ft.is_dir() {
                ("dir", String::new())
            } else if ft.is_fifo() {
                ("fifo", String::new())
            } else if ft.is_char_device() || ft.is_block_device() {
                // Devices are left out of layers (docs/images.md).
                continue;
            } else {
                ("file", sha(&std::fs::read(&p).unwrap()))
            };
            out.insert(
                rel,
                Node {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    content,
                    xattrs: if ft.is_symlink() { vec![] } else { xattrs(&p) },
                    links: vec![],
                },
            );
            if !ft.is_dir() && m.nlink() > 1 {
                inodes
                    .entry((m.dev(), m.ino()))
                    .or_default()
                    .push(p.strip_prefix(root).unwrap().display().to_string());
            }
            if ft.is_dir() {
                go(root, &p, out, inodes);
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    let mut inodes = Inodes::new();
    go(root, root, &mut out, &mut inodes);
    for paths in inodes.values() {
        for p in paths {
            let mut others: Vec<String> = paths.iter().filter(|o| *o != p).cloned().collect();
            others.sort();
            if let Some(n) = out.get_mut(p) {
                n.links = others;
            }
        }
    }
    out
}

/// Mounts the image's layers read-only (an overlay without an upper layer,
/// what a runtime sees below its own layer) and returns the tree.
fn overlay_tree(w: &World, diff_ids: &[String]) -> std::collections::BTreeMap<String, Node> {
    let mnt = w
        .work
        .join(format!("mnt-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&mnt).unwrap();
    let lowers: Vec<String> = diff_ids
        .iter()
        .rev()
        .map(|d| {
            store_dir(w)
                .join("layers/sha256")
                .join(&d[7..])
                .display()
                .to_string()
        })
        .collect();
    let st = Command::new("mount")
        .args([
            "-t",
            "overlay",
            "overlay",
            "-o",
            &format!("ro,lowerdir={}", lowers.join(":")),
        ])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount the image's layers");
    let tree = walk_tree(&mnt);
    let _ = Command::new("umount").arg(&mnt).status();
    tree
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread")]
async fn a_pulled_image_unpacks_to_the_tree_umoci_makes() {
    skip_unless_ready!();
    let w = world();
    let c = w.daemon.tenant("img").await;
    let reference = format!("{}/test/rich:rich", w.plain.addr);
    let p = pull_ok(&c, &reference).await;
    assert_eq!(p["layers_total"], 3, "{p}");
    assert_eq!(p["layers_done"], 3, "{p}");
    assert_eq!(p["bytes_done"], p["bytes_total"], "{p}");
    assert_eq!(p["digest"], w.digests["rich"], "{p}");

    // Listed beside base, with what the image is.
    let (st, v) = c.get("/v1/images").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let list = v["data"].as_array().unwrap();
    assert_eq!(list[0]["name"], "base", "base stays in the list: {v}");
    assert_eq!(list[0]["builtin"], true);
    let img = list
        .iter()
        .find(|i| i["name"] == reference)
        .unwrap_or_else(|| panic!("{reference} in {v}"));
    assert_eq!(img["digest"], w.digests["rich"]);
    assert_eq!(img["layers"], 3);
    assert!(img["size_bytes"].as_u64().unwrap() > 1000, "{img}");
    assert_eq!(img["created_at"], "2026-01-02T03:04:05Z");
    let (st, detail) = c.get(&format!("/v1/images/{reference}")).await;
    assert_eq!(st, StatusCode::OK, "{detail}");
    let diff_ids: Vec<String> = detail["data"]["layer_digests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["diff_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(diff_ids.len(), 3);

    // The same image unpacked by umoci.
    let bundle = w
        .work
        .join(format!("umoci-{}", uuid::Uuid::new_v4().simple()));
    let out = Command::new("umoci")
        .args([
            "unpack",
            "--image",
            &format!("{}:rich", w.work.join("rich-gz").display()),
        ])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = walk_tree(&bundle.join("rootfs"));
    let got = overlay_tree(w, &diff_ids);
    // umoci applies the trusted.* attribute the store refuses, and records
    // nothing else the overlay would not show: compare entry by entry.
    let names_want: Vec<&String> = want.keys().collect();
    let names_got: Vec<&String> = got.keys().collect();
    assert_eq!(names_got, names_want, "the same paths");
    for (path, node) in &want {
        assert_eq!(&got[path], node, "entry {path}");
    }
    // What the layers say, spelled out, so a wrong umoci cannot hide a bug.
    assert!(!got.contains_key("etc/keep/gone"), "whiteout applied");
    assert!(
        !got.contains_key("etc/opaque/old1") && !got.contains_key("etc/opaque/olddir"),
        "opaque dir applied"
    );
    assert!(got.contains_key("etc/opaque/new"));
    assert!(!got.contains_key("data/big") && got.contains_key("data"));
    assert_eq!(got["usr/bin/setuid-tool"].mode, 0o4755);
    assert_eq!(got["usr/bin/setgid-tool"].mode, 0o2711);
    assert_eq!((got["srv/owned"].uid, got["srv/owned"].gid), (1234, 5678));
    assert_eq!(got["srv/abs-link"].content, "/etc/os-release");
    assert!(got["srv/xattr-file"]
        .xattrs
        .iter()
        .any(|(k, v)| k == "user.runta" && v == b"yes"));
    assert!(got["srv/xattr-file"]
        .xattrs
        .iter()
        .any(|(k, _)| k == "security.capability"));
    assert!(
        got["srv/hard-b"].links.is_empty(),
        "its partner was whited out"
    );
    assert_eq!(
        got["srv/hard-below"].links,
        vec!["usr/bin/linked-below"],
        "linked to a copy of the file below"
    );
    assert_eq!(
        got["usr/bin/linked-below"].content,
        got["srv/hard-below"].content
    );
    assert_eq!(got["etc/keep/a"].mode, 0o600);
    assert!(got.contains_key("var/lib/implicit/parents"));
    // The opaque attribute from the tar was not applied to the file.
    let sneaky = store_dir(w)
        .join("layers/sha256")
        .join(&diff_ids[1][7..])
        .join("srv/sneaky");
    assert!(
        !xattrs_all(&sneaky)
            .iter()
            .any(|k| k.starts_with("trusted.")),
        "a trusted.* attribute from a layer must be dropped"
    );
    no_partial_unpacks(w);

    // A second pull reuses every layer and changes nothing.
    let again = pull_ok(&c, &reference).await;
    assert_eq!(again["digest"], w.digests["rich"]);
}

fn xattrs_all(p: &Path) -> Vec<String> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: NUL-terminated path, buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return vec![];
    }
    buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn runtimes_run_alpine_like_and_distroless_images() {
    skip_unless_ready!();
    let w = world();
    let c = w.daemon.tenant("img").await;
    let alpine = format!("{}/test/alpine:alpine", w.plain.addr);
    // Pulled on first use by the create itself, and said so in the events.
    let n = common::name("bb");
    let r = c
        .create_with(json!({"name": n, "image": alpine, "resources": {"requests": {"vcpus": 1, "memory_mib": 128}}}))
        .await;
    assert!(
        r["image"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{alpine}@sha256:")),
        "the runtime pins the image's digest: {r}"
    );
    let events = c.events(&n).await;
    assert!(events.iter().any(|e| e == "image_pulled"), "{events:?}");
    // Env and WorkingDir of the image; the agent was injected.
    let out = c
        .out(&n, "echo $IMAGE_GREETING; pwd; cat /etc/os-release; id -u")
        .await;
    assert_eq!(out, "from-the-image\n/work\nID=runta-test-busybox\n0\n");
    // The runtime's writes stay in its own layer.
    c.out(&n, "echo mine > /work/note").await;
    let n2 = common::name("bb2");
    c.create_with(json!({"name": n2, "image": alpine, "resources": {"requests": {"vcpus": 1, "memory_mib": 128}}}))
        .await;
    let d = c.sh(&n2, "cat /work/note").await;
    assert_ne!(
        d["exit_code"], 0,
        "a second runtime of the image does not see the first's files: {d}"
    );

    // In use: the delete is refused, naming the runtimes.
    let a = admin(w);
    let (st, v) = a.delete(&format!("/v1/images/{alpine}")).await;
    assert_error(st, &v, 409, "failed_precondition", &n);
    let (_, v) = c.get(&format!("/v1/images/{alpine}")).await;
    let users = v["data"]["in_use_by"].as_array().unwrap();
    assert!(
        users
            .iter()
            .any(|u| u.as_str().unwrap().ends_with(&format!("/{n}"))),
        "{v}"
    );

    // Distroless: no shell, a clear error for a shell command; args work.
    let dl = format!("{}/test/distroless:distroless", w.plain.addr);
    pull_ok(&c, &dl).await;
    let n3 = common::name("dl");
    c.create_with(json!({"name": n3, "image": dl, "resources": {"requests": {"vcpus": 1, "memory_mib": 128}}}))
        .await;
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{n3}/exec"),
            json!({"command": "echo hi"}),
        )
        .await;
    assert_error(st, &v, 422, "invalid_argument", "no /bin/sh");
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{n3}/exec"),
            json!({"command": "/app/echo", "args": ["no shell needed"]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["stdout"], "no shell needed\n", "{v}");
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{n3}/exec"),
            json!({"command": "pwd", "args": []}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["data"]["stdout"], "/\n",
        "the image's PATH, and / without a WorkingDir: {v}"
    );

    // Once the runtimes are gone the image can go, and its layers with it.
    for name in [&n, &n2, &n3] {
        let (st, v) = c.delete(&format!("/v1/runtimes/{name}")).await;
        assert!(st.is_success(), "{v}");
    }
    let (_, detail) = a.get(&format!("/v1/images/{alpine}")).await;
    let diff = detail["data"]["layer_digests"][0]["diff_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The tag is the tenant's own (it pulled it): its to remove.
    let digest = detail["data"]["digest"].as_str().unwrap().to_string();
    let (st, v) = c.delete(&format!("/v1/images/{alpine}")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, _) = c.get(&format!("/v1/images/{alpine}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = a.get(&format!("/v1/images/{alpine}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // The same image may still be known by another name (the TLS test pulls
    // it from the other registry): then its layer stays; else it is gone.
    let layer = store_dir(w).join("layers/sha256").join(&diff[7..]);
    let (st, v) = a.get(&format!("/v1/images/{digest}")).await;
    if st == StatusCode::OK {
        assert!(!v["data"]["names"].as_array().unwrap().is_empty(), "{v}");
        assert!(
            layer.exists(),
            "a layer an image still has must not be collected"
        );
    } else {
        assert!(!layer.exists(), "the unreferenced layer was collected");
    }
    let (st, v) = a.post("/v1/images/gc", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_registry_with_credentials_needs_a_login_that_is_never_shown() {
    skip_unless_ready!();
    let w = world();
    let a = admin(w);
    let reference = format!("{}/private/alpine:alpine", w.secure.addr);
    assert!(w.secure.tls);
    pull_fails(&a, &reference, "authentication").await;
    // Wrong password: refused by the registry, not stored.
    let (st, v) = a
        .post(
            "/v1/images/logins",
            json!({"registry": w.secure.addr, "username": "runta", "password": "wrong"}),
        )
        .await;
    assert_error(st, &v, 403, "permission_denied", "authentication");
    // A tenant's login is its own: the admin's pulls do not use it.
    let c = w.daemon.tenant("img").await;
    let (st, v) = c
        .post(
            "/v1/images/logins",
            json!({"registry": w.secure.addr, "username": "runta", "password": "s3cret-pw"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    pull_fails(&a, &reference, "authentication").await;
    let (st, v) = a
        .post(
            "/v1/images/logins",
            json!({"registry": w.secure.addr, "username": "runta", "password": "s3cret-pw"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(!v.to_string().contains("s3cret-pw"), "{v}");
    let (st, v) = a.get("/v1/images/logins").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(
        !v.to_string().contains("s3cret-pw"),
        "the password is never echoed: {v}"
    );
    assert_eq!(v["data"][0]["username"], "runta");
    let p = pull_ok(&a, &reference).await;
    assert_eq!(p["digest"], w.digests["alpine"]);
    // The registry's certificate is checked: without --registry-ca the same
    // registry is refused (a daemon of its own, trusting only the host).
    let d2 = Daemon::start_new(&["--no-prebuild", "--private-registry", &w.secure.addr]);
    let a2 = Client::new(&d2.endpoint, &d2.admin_token);
    pull_fails(&a2, &reference, "certificate").await;
    let _ = w.tls.cert.exists();
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_images_are_refused_and_nothing_lands_outside_the_store() {
    skip_unless_ready!();
    let w = world();
    let c = w.daemon.tenant("img").await;
    let marker = format!("runta-escaped-{}", uuid::Uuid::new_v4().simple());
    let hostile = w.work.join("hostile");
    let push = |tag: &str, layers: Vec<(Vec<u8>, Comp)>| {
        let dir = hostile.join(tag);
        layout(&dir, tag, &layers, json!({}));
        w.plain.push(&dir, tag, "evil/img");
        format!("{}/evil/img:{tag}", w.plain.addr)
    };
    // A symlink to / and a file written through it.
    let mut t = Tar::new();
    t.symlink("escape", "/")
        .file(&format!("escape/tmp/{marker}"), 0o644, 0, 0, b"pwned");
    let r = push("symlink", vec![(t.finish(), Comp::Gzip)]);
    pull_fails(&c, &r, "through a symlink").await;
    // A relative symlink out of the tree.
    let mut t = Tar::new();
    t.symlink("up", "../../../../../../tmp")
        .file(&format!("up/{marker}"), 0o644, 0, 0, b"pwned");
    let r = push("relsymlink", vec![(t.finish(), Comp::Gzip)]);
    pull_fails(&c, &r, "through a symlink").await;
    // `..` in a path and in a hard link target.
    let mut t = Tar::new();
    t.raw(
        tar::EntryType::Regular,
        format!("../../../../../../tmp/{marker}").as_bytes(),
        None,
        b"pwned",
    );
    let r = push("dotdot", vec![(t.finish(), Comp::Gzip)]);
    pull_fails(&c, &r, "'..'").await;
    let mut t = Tar::new();
    t.raw(
        tar::EntryType::Link,
        b"shadow",
        Some(b"../../../../../etc/shadow"),
        b"",
    );
    let r = push("hardlink", vec![(t.finish(), Comp::Gzip)]);
    pull_fails(&c, &r, "'..'").await;
    // A tar bomb: 100 MB of zeros in a small gzip, past --image-max-bytes.
    let mut t = Tar::new();
    t.file("zeros", 0o644, 0, 0, &vec![0u8; 100 << 20]);
    let r = push("bomb", vec![(t.finish(), Comp::Gzip)]);
    pull_fails(&c, &r, "bytes").await;
    // Too many files.
    let mut t = Tar::new();
    for i in 0..4000 {
        t.file(&format!("f{i}"), 0o644, 0, 0, b"");
    }
    let r = push("files", vec![(t.finish(), Comp::Zstd)]);
    pull_fails(&c, &r, "entries").await;
    // A blob that does not match its digest (changed in the registry's storage).
    let mut t = Tar::new();
    t.file("hello", 0o644, 0, 0, b"hello");
    let tarball = t.finish();
    let dir = hostile.join("mismatch");
    layout(
        &dir,
        "mismatch",
        &[(tarball.clone(), Comp::Gzip)],
        json!({}),
    );
    w.plain.push(&dir, "mismatch", "evil/img");
    let blob = sha(&compress(&tarball, Comp::Gzip));
    let f = w.plain.blob_file(&blob);
    let mut data = std::fs::read(&f).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&f, data).unwrap();
    pull_fails(
        &c,
        &format!("{}/evil/img:mismatch", w.plain.addr),
        "does not match its digest",
    )
    .await;
    // An index with no linux/amd64 entry.
    let dir = hostile.join("arm");
    let md = layout(
        &dir,
        "arm",
        &[(busybox_layer(&busybox().unwrap()), Comp::Gzip)],
        json!({}),
    );
    let manifest_len = std::fs::metadata(dir.join("blobs/sha256").join(&md[7..]))
        .unwrap()
        .len();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
                       "size": manifest_len, "platform": {"os": "linux", "architecture": "arm64"}}]}))
    .unwrap();
    let id = put_blob(&dir, &index);
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": id, "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": "arm"}}]}))
        .unwrap(),
    )
    .unwrap();
    w.plain.push_args(&dir, "arm", "evil/img", &["--all"]);
    pull_fails(
        &c,
        &format!("{}/evil/img:arm", w.plain.addr),
        "no linux/amd64",
    )
    .await;
    // A manifest larger than any sane limit (from a fake registry: real ones
    // refuse to store it).
    pull_fails(&c, &format!("{}/huge/img:latest", w.fake.addr), "bytes").await;

    // Nothing was written outside the store, nothing half made is left.
    for dir in ["/tmp", "/"] {
        assert!(
            !Path::new(dir).join(&marker).exists(),
            "{dir}/{marker} was written"
        );
    }
    assert!(std::fs::read_to_string("/etc/shadow").is_ok());
    no_partial_unpacks(w);
    let (_, v) = c.get("/v1/images").await;
    assert!(
        !v.to_string().contains("evil/img"),
        "no refused image is listed: {v}"
    );
}

/// Answers every manifest request with 64 MiB of JSON whitespace (plain HTTP).
struct FakeRegistry {
    addr: String,
}

impl FakeRegistry {
    fn start() -> FakeRegistry {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut buf = [0u8; 4096];
                    let _ = std::io::Read::read(&mut s, &mut buf);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\n\r\n",
                        64u64 << 20
                    );
                    let _ = s.write_all(head.as_bytes());
                    let chunk = vec![b' '; 1 << 20];
                    for _ in 0..64 {
                        if s.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        FakeRegistry { addr }
    }
}

/// A TCP proxy that forwards at a bounded rate and counts what came from
/// upstream (so a test can kill the daemon half way through a blob and see
/// how much the next pull fetched).
struct SlowProxy {
    addr: String,
    from_upstream: Arc<AtomicU64>,
}

impl SlowProxy {
    fn start(upstream: String, bytes_per_sec: u64) -> SlowProxy {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let count = Arc::new(AtomicU64::new(0));
        let c2 = count.clone();
        std::thread::spawn(move || {
            for client in l.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c_r, mut c_w) = (client.try_clone().unwrap(), client);
                let (mut s_r, mut s_w) = (server.try_clone().unwrap(), server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_r, &mut s_w);
                });
                let count = c2.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match std::io::Read::read(&mut s_r, &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        count.fetch_add(n as u64, Ordering::Relaxed);
                        if c_w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_micros(
                            n as u64 * 1_000_000 / bytes_per_sec,
                        ));
                    }
                });
            }
        });
        SlowProxy {
            addr,
            from_upstream: count,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_killed_half_way_leaves_nothing_complete_and_resumes() {
    skip_unless_ready!();
    let w = world();
    // A 24 MB incompressible layer behind a proxy at 8 MB/s.
    let mut rnd = vec![0u8; 24 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in rnd.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut t = Tar::new();
    t.file("random", 0o644, 0, 0, &rnd);
    let tarball = t.finish();
    let dir = w.work.join("big");
    let md = layout(&dir, "big", &[(tarball, Comp::Gzip)], json!({}));
    w.plain.push(&dir, "big", "test/big");
    let proxy = SlowProxy::start(w.plain.addr.clone(), 8 << 20);
    let d = Daemon::start_new(&["--no-prebuild", "--insecure-registry", &proxy.addr]);
    let a = Client::new(&d.endpoint, &d.admin_token);
    let reference = format!("{}/test/big:big", proxy.addr);
    let (st, v) = a
        .post("/v1/images/pulls", json!({ "reference": reference }))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = a.get(&format!("/v1/images/pulls/{id}")).await;
        let done = v["data"]["bytes_done"].as_u64().unwrap_or(0);
        let total = v["data"]["bytes_total"].as_u64().unwrap_or(0);
        assert_eq!(
            v["data"]["status"], "running",
            "the pull ended before the kill: {v}"
        );
        if total > 0 && done > total / 4 {
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.kill9();
    let before = proxy.from_upstream.load(Ordering::Relaxed);
    d.spawn();
    // Nothing looks complete: no image, no layer directory.
    let (_, v) = a.get("/v1/images").await;
    assert!(!v.to_string().contains("test/big"), "{v}");
    let layers: Vec<_> = std::fs::read_dir(d.data_dir.join("images/layers/sha256"))
        .unwrap()
        .flatten()
        .collect();
    assert!(layers.is_empty(), "no layer is in place: {layers:?}");
    let partial: u64 = std::fs::read_dir(d.data_dir.join("images/blobs/partial"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        partial > 0,
        "the partial download is kept for the next pull"
    );
    let p = pull_ok(&a, &reference).await;
    assert_eq!(p["digest"], md);
    let fetched = proxy.from_upstream.load(Ordering::Relaxed) - before;
    let blob_size = p["bytes_total"].as_u64().unwrap();
    assert!(
        fetched + partial / 2 < blob_size + 100_000,
        "the second pull resumed: fetched {fetched} of {blob_size} with {partial} kept"
    );
}

/// `runta image …` against the shared daemon (the CLI binary from this
/// target directory; built by `scripts/build.sh` or `cargo build -p runta`).
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_pulls_lists_inspects_and_removes() {
    skip_unless_ready!();
    let w = world();
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("runta");
    if !bin.exists() {
        eprintln!(
            "SKIPPED: {} is not built (cargo build -p runta)",
            bin.display()
        );
        return;
    }
    let run = |args: &[&str]| {
        let out = Command::new(&bin)
            .args(args)
            .env("RUNTA_ENDPOINT", &w.daemon.endpoint)
            .env("RUNTA_TOKEN", &w.daemon.admin_token)
            .env("RUNTA_CONFIG", "/nonexistent")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let reference = format!("{}/test/distroless:distroless", w.plain.addr);
    let (code, out, err) = run(&["image", "pull", &reference, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["digest"], w.digests["distroless"]);
    let (code, out, _) = run(&["image", "ls"]);
    assert_eq!(code, 0);
    assert!(out.lines().next().unwrap().starts_with("NAME"), "{out}");
    assert!(out.contains("base") && out.contains(&reference), "{out}");
    let (code, out, _) = run(&["image", "inspect", &reference]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["shell"], Value::Null, "distroless has no shell: {v}");
    let (code, _, err) = run(&["image", "pull", &format!("{}/test/nope:nope", w.plain.addr)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no manifest"), "{err}");
}

/// A Docker v2 schema 2 manifest (what `docker push` writes) pulls and runs
/// like an OCI one.
#[tokio::test(flavor = "multi_thread")]
async fn docker_v2_manifests_pull_and_run() {
    skip_unless_ready!();
    let w = world();
    // Its own layer (not shared with another test's image, whose layers
    // that test expects to see collected).
    let mut t = Tar::new();
    t.dir("bin", 0o755, 0, 0)
        .file("bin/busybox", 0o755, 0, 0, &busybox().unwrap())
        .symlink("bin/sh", "busybox")
        .symlink("bin/echo", "busybox")
        .file("etc/docker-v2", 0o644, 0, 0, b"converted by skopeo");
    let dir = w.work.join("dockerv2");
    layout(
        &dir,
        "alpine",
        &[(t.finish(), Comp::Gzip)],
        json!({"Env": ["PATH=/bin", "IMAGE_GREETING=from-the-image"]}),
    );
    w.plain
        .push_args(&dir, "alpine", "test/docker-v2", &["--format", "v2s2"]);
    let c = w.daemon.tenant("img").await;
    let reference = format!("{}/test/docker-v2:alpine", w.plain.addr);
    let p = pull_ok(&c, &reference).await;
    let (_, v) = c.get(&format!("/v1/images/{reference}")).await;
    let mt = v["data"]["layer_digests"][0]["media_type"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        mt, "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "{v}"
    );
    assert!(p["digest"].as_str().unwrap().starts_with("sha256:"), "{p}");
    let n = common::name("v2");
    c.create_with(json!({"name": n, "image": reference, "resources": {"requests": {"vcpus": 1, "memory_mib": 128}}}))
        .await;
    assert_eq!(c.out(&n, "echo $IMAGE_GREETING").await, "from-the-image\n");
    let (st, v) = c.delete(&format!("/v1/runtimes/{n}")).await;
    assert!(st.is_success(), "{v}");
}

// ---------------------------------------------------------------- User

const USER_PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n\
app:x:1000:1000:App:/home/app:/bin/sh\n\
toor:x:0:0:another root:/toor:/bin/sh\n";
const USER_GROUP: &[u8] = b"root:x:0:\napp:x:1000:\nwheel:x:10:root,app\n\
docker:x:998:app\nstaff:x:50:\n";

fn user_etc(t: &mut Tar) {
    t.file("etc/passwd", 0o644, 0, 0, USER_PASSWD)
        .file("etc/group", 0o644, 0, 0, USER_GROUP);
}

/// Pushes an image whose config sets `User: user`: busybox, a root-only
/// /root, app's home, and the /etc that `etc` adds. Returns its reference.
fn user_image(w: &World, tag: &str, user: &str, etc: impl FnOnce(&mut Tar)) -> String {
    let mut t = Tar::new();
    t.dir("bin", 0o755, 0, 0)
        .dir("etc", 0o755, 0, 0)
        .dir("tmp", 0o1777, 0, 0)
        .dir("root", 0o700, 0, 0)
        .dir("home", 0o755, 0, 0)
        .dir("home/app", 0o755, 1000, 1000)
        .file("bin/busybox", 0o755, 0, 0, &busybox().unwrap());
    for applet in [
        "sh", "id", "whoami", "touch", "stat", "cat", "grep", "echo", "tty", "ls",
    ] {
        t.symlink(&format!("bin/{applet}"), "busybox");
    }
    etc(&mut t);
    let dir = w.work.join(format!("user-{tag}"));
    layout(
        &dir,
        tag,
        &[(t.finish(), Comp::Gzip)],
        json!({"Env": ["PATH=/bin"], "User": user}),
    );
    w.plain.push_args(&dir, tag, "test/user", &[]);
    format!("{}/test/user:{tag}", w.plain.addr)
}

async fn user_runtime(c: &Client, reference: &str) -> String {
    let n = common::name("usr");
    c.create_with(json!({"name": n, "image": reference, "resources": {"requests": {"vcpus": 1, "memory_mib": 128}}}))
        .await;
    n
}

async fn exec_json(c: &Client, n: &str, body: Value) -> Value {
    let (st, v) = c.post(&format!("/v1/runtimes/{n}/exec"), body).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["data"].clone()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Runs one command over the exec WebSocket: (output, exit code).
async fn ws_run(
    w: &World,
    c: &Client,
    n: &str,
    start: Value,
    stdin: Option<&str>,
) -> (String, i64) {
    use base64::Engine;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let b64 = base64::engine::general_purpose::STANDARD;
    let url = format!(
        "{}/v1/runtimes/{n}/exec/ws",
        w.daemon.endpoint.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", c.token).parse().unwrap(),
    );
    let mut ws: Ws = tokio_tungstenite::connect_async(req).await.unwrap().0;
    let send = |v: Value| Message::Text(v.to_string().into());
    ws.send(send(start)).await.unwrap();
    if let Some(input) = stdin {
        ws.send(send(
            json!({"type": "stdin", "data_base64": b64.encode(input)}),
        ))
        .await
        .unwrap();
        ws.send(send(json!({"type": "close_stdin"}))).await.unwrap();
    }
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no exit frame in time");
        let Some(Ok(Message::Text(t))) = msg else {
            continue;
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        match v["type"].as_str().unwrap() {
            "stdout" | "stderr" => {
                out.extend(b64.decode(v["data_base64"].as_str().unwrap()).unwrap())
            }
            "exit" => {
                return (
                    String::from_utf8_lossy(&out).into(),
                    v["exit_code"].as_i64().unwrap(),
                )
            }
            "error" => panic!("error frame: {v}"),
            _ => {}
        }
    }
}

async fn put_file(c: &Client, n: &str, path: &str, body: &[u8]) -> StatusCode {
    c.http
        .put(format!("{}/v1/runtimes/{n}/files?path={path}", c.base))
        .bearer_auth(&c.token)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
}

/// Capability lines of `/proc/self/status` other than the bounding set are
/// all zero.
fn no_caps(status: &str) {
    let caps: Vec<&str> = status
        .lines()
        .filter(|l| l.starts_with("Cap") && !l.starts_with("CapBnd"))
        .collect();
    assert_eq!(caps.len(), 4, "{status}");
    for l in caps {
        assert!(
            l.ends_with("0000000000000000"),
            "a capability is left: {status}"
        );
    }
}

/// The image config's `User` applies to every command, buffered or over the
/// WebSocket (pipes and terminal): its uid, gid and supplementary groups
/// from the runtime's /etc/passwd and /etc/group, HOME/USER/LOGNAME, no
/// capabilities, files it makes are its own. The agent stays root: the file
/// API still reaches root's folder, and new files belong to the user.
#[tokio::test(flavor = "multi_thread")]
async fn an_image_user_runs_every_command_as_that_user() {
    skip_unless_ready!();
    let w = world();
    let c = w.daemon.tenant("imguser").await;
    let reference = user_image(w, "app", "app", user_etc);
    let n = user_runtime(&c, &reference).await;
    let (st, v) = c.get(&format!("/v1/images/{reference}")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["user"], "app", "{v}");

    assert_eq!(
        c.out(&n, "id -u; id -g; id -G; whoami").await,
        "1000\n1000\n1000 10 998\napp\n"
    );
    assert_eq!(
        c.out(&n, "echo $HOME $USER $LOGNAME; pwd").await,
        "/home/app app app\n/\n"
    );
    assert_eq!(
        c.out(&n, "touch /tmp/made && stat -c %u:%g /tmp/made")
            .await,
        "1000:1000\n"
    );
    no_caps(&c.out(&n, "grep Cap /proc/self/status").await);
    let (code, out) = c.run(&n, "touch /root/x").await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Permission denied"), "{out}");
    // The caller's HOME (or the image's) wins over passwd's.
    let d = exec_json(
        &c,
        &n,
        json!({"command": "echo $HOME:$USER", "env": {"HOME": "/elsewhere"}}),
    )
    .await;
    assert_eq!(d["stdout"], "/elsewhere:app\n", "{d}");
    // Its stdin is its own: reopening it works.
    let d = exec_json(
        &c,
        &n,
        json!({"command": "cat /proc/self/fd/0", "stdin": "piped"}),
    )
    .await;
    assert_eq!(
        (d["exit_code"].as_i64(), d["stdout"].as_str()),
        (Some(0), Some("piped")),
        "{d}"
    );

    // The WebSocket, with pipes and with a terminal it owns.
    let (out, code) = ws_run(
        w,
        &c,
        &n,
        json!({"type": "start", "command": "id -u; id -G; cat /proc/self/fd/0; grep Cap /proc/self/status"}),
        Some("from-ws\n"),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("1000\n1000 10 998\nfrom-ws\n"), "{out}");
    no_caps(&out);
    let (out, code) = ws_run(
        w,
        &c,
        &n,
        json!({"type": "start", "command": "id -u; echo $HOME; stat -c %u $(tty)", "tty": true}),
        None,
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.replace("\r\n", "\n"), "1000\n/home/app\n1000\n");

    // Files: the agent is root (root's folder is reachable), new files and
    // the folders made for them are the user's, a replaced file keeps its owner.
    assert_eq!(
        put_file(&c, &n, "/root/by-api", b"x").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        put_file(&c, &n, "/home/app/new/deep/f.txt", b"hello").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.out(&n, "stat -c %u:%g /home/app/new /home/app/new/deep /home/app/new/deep/f.txt; cat /home/app/new/deep/f.txt").await,
        "1000:1000\n1000:1000\n1000:1000\nhello"
    );
    assert_eq!(
        put_file(&c, &n, "/etc/group", USER_GROUP).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(c.out(&n, "stat -c %u:%g /etc/group").await, "0:0\n");
    c.delete(&format!("/v1/runtimes/{n}")).await;
}

/// Every `User` form Docker accepts: a numeric user with or without a
/// passwd entry (gid 0 and HOME=/ without), `name:group`, `uid:group`,
/// `name:gid`, `uid:gid`, and a name the image maps to uid 0 (its choice).
/// An explicit group brings no supplementary groups (as in runc); `root`
/// needs no passwd entry.
#[tokio::test(flavor = "multi_thread")]
async fn every_user_form_resolves_like_docker() {
    skip_unless_ready!();
    let w = world();
    let c = w.daemon.tenant("imgforms").await;
    let probe = "id -u; id -g; id -G; echo $HOME:$USER";
    for (tag, user, want) in [
        ("num", "1000", "1000\n1000\n1000 10 998\n/home/app:app\n"),
        ("numonly", "4242", "4242\n0\n0\n/:\n"),
        ("uidgid", "4242:77", "4242\n77\n77\n/:\n"),
        ("namegroup", "app:staff", "1000\n50\n50\n/home/app:app\n"),
        ("uidgroup", "1000:wheel", "1000\n10\n10\n/home/app:app\n"),
        ("namegid", "app:5", "1000\n5\n5\n/home/app:app\n"),
        ("toor", "toor", "0\n0\n0\n/toor:toor\n"),
        ("root", "0:0", "0\n0\n0\n/root:root\n"),
        // No /etc/passwd at all: root is still root.
        ("rootbare", "root", "0\n0\n0\n/root:root\n"),
    ] {
        let etc = |t: &mut Tar| {
            if tag != "rootbare" {
                user_etc(t)
            }
        };
        let reference = user_image(w, tag, user, etc);
        let n = user_runtime(&c, &reference).await;
        assert_eq!(c.out(&n, probe).await, want, "User {user:?}");
        if user == "4242" {
            no_caps(&c.out(&n, "grep Cap /proc/self/status").await);
        }
        c.delete(&format!("/v1/runtimes/{n}")).await;
    }
}

/// A user or group the runtime's files do not know: the create succeeds
/// (the user may come later, docs/images.md), every command exits 126 with
/// a message naming the user and the file, buffered and over the WebSocket.
#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_user_or_group_fails_each_command_clearly() {
    skip_unless_ready!();
    let w = world();
    let c = w.daemon.tenant("imgghost").await;
    for (tag, user, needle) in [
        (
            "ghost",
            "ghost",
            "no user \"ghost\" in the runtime's /etc/passwd",
        ),
        (
            "nogroup",
            "app:nogroup",
            "no group \"nogroup\" in the runtime's /etc/group",
        ),
        ("range", "4294967295", "out of range"),
    ] {
        let reference = user_image(w, tag, user, user_etc);
        let n = user_runtime(&c, &reference).await;
        let d = c.sh(&n, "id -u").await;
        assert_eq!(d["exit_code"], 126, "{d}");
        let err = d["stderr"].as_str().unwrap();
        assert!(err.contains(user) && err.contains(needle), "{err}");
        assert_eq!(d["stdout"], "", "nothing ran: {d}");
        let (out, code) = ws_run(
            w,
            &c,
            &n,
            json!({"type": "start", "command": "id -u"}),
            None,
        )
        .await;
        assert_eq!(code, 126, "{out}");
        assert!(out.contains(needle), "{out}");
        // The file API is the way to fix it: the agent is root.
        let users = b"root:x:0:0:root:/root:/bin/sh\nghost:x:2000:2000::/:/bin/sh\n";
        if tag == "ghost" {
            assert_eq!(
                put_file(&c, &n, "/etc/passwd", users).await,
                StatusCode::NO_CONTENT
            );
            assert_eq!(c.out(&n, "id -u; id -g").await, "2000\n2000\n");
        }
        c.delete(&format!("/v1/runtimes/{n}")).await;
    }
}

/// A hostile /etc/passwd (a FIFO, a file beyond the limit, links into
/// /proc or /dev, bytes that are not UTF-8) neither hangs nor crashes the
/// agent or the daemon: a named user is refused with the reason, a numeric
/// one runs without the entry, and the runtime keeps answering.
#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_passwd_never_hangs_the_agent() {
    skip_unless_ready!();
    let w = world();
    let c = w.daemon.tenant("imghostile").await;
    let group = |t: &mut Tar| {
        t.file("etc/group", 0o644, 0, 0, USER_GROUP);
    };
    let huge = vec![b'a'; 5 * 1024 * 1024];
    type Etc<'a> = Box<dyn FnOnce(&mut Tar) + 'a>;
    let cases: Vec<(&str, &str, Etc, &str)> = vec![
        (
            "fifo",
            "app",
            Box::new(|t: &mut Tar| {
                t.fifo("etc/passwd");
                group(t)
            }),
            "/etc/passwd is not a regular file",
        ),
        (
            "fifonum",
            "1000",
            Box::new(|t: &mut Tar| {
                t.fifo("etc/passwd");
                group(t)
            }),
            "",
        ),
        (
            "huge",
            "app",
            Box::new(|t: &mut Tar| {
                t.file("etc/passwd", 0o644, 0, 0, &huge);
                group(t)
            }),
            "larger than",
        ),
        (
            "environ",
            "app",
            Box::new(|t: &mut Tar| {
                t.symlink("etc/passwd", "/proc/1/environ");
                group(t)
            }),
            "leads out of the runtime's root filesystem",
        ),
        (
            "fd",
            "app",
            Box::new(|t: &mut Tar| {
                t.symlink("etc/passwd", "../proc/1/fd/3");
                group(t)
            }),
            "leads out of the runtime's root filesystem",
        ),
        (
            "zero",
            "app",
            Box::new(|t: &mut Tar| {
                t.symlink("etc/passwd", "/dev/zero");
                group(t)
            }),
            "leads out of the runtime's root filesystem",
        ),
        (
            "loop",
            "app",
            Box::new(|t: &mut Tar| {
                t.symlink("etc/passwd", "passwd");
                group(t)
            }),
            "symlink loop",
        ),
        (
            "bytes",
            "app",
            Box::new(|t: &mut Tar| {
                t.file(
                "etc/passwd",
                0o644,
                0,
                0,
                b"\xff\xfe\x00:x:1:1\n:::::::::\nroot:x:0:0::/root:/bin/sh\napp:x:1000:1000:\xc3(:/home/\xffapp:/bin/sh\n",
            )
            .file("etc/group", 0o644, 0, 0, b"\xff:x:10:app\nwheel:x:\xff:app\n");
            }),
            "",
        ),
    ];
    for (tag, user, etc, needle) in cases {
        let reference = user_image(w, tag, user, etc);
        let n = user_runtime(&c, &reference).await;
        let t0 = Instant::now();
        let d = c.sh(&n, "id -u; id -G; echo $HOME").await;
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{tag}: took {:?}",
            t0.elapsed()
        );
        if needle.is_empty() {
            assert_eq!(d["exit_code"], 0, "{tag}: {d}");
            let want = if tag == "bytes" {
                "1000\n1000 10\n/home/\u{fffd}app\n"
            } else {
                "1000\n0\n/\n"
            };
            assert_eq!(d["stdout"], want, "{tag}: {d}");
        } else {
            assert_eq!(d["exit_code"], 126, "{tag}: {d}");
            let err = d["stderr"].as_str().unwrap();
            assert!(
                err.contains(needle) && err.contains("\"app\""),
                "{tag}: {err}"
            );
        }
        // The agent still serves, and the daemon still calls it running.
        let (st, v) = c
            .get(&format!("/v1/runtimes/{n}/files?path=/etc/group"))
            .await;
        assert_eq!(st, StatusCode::OK, "{tag}: {v}");
        assert_eq!(c.status(&n).await, "running", "{tag}");
        c.delete(&format!("/v1/runtimes/{n}")).await;
    }
}
