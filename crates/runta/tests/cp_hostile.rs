//! `runta cp RT:/dir ./local` against a hostile runtime (issue 14, items 2 and
//! 3; docs/security.md). Two kinds of hostility:
//!
//! - real trees made inside a real runtime: links to `/etc` and `../../..`,
//!   setuid files, a FIFO, a 2 TiB sparse file, and a link planted by a first
//!   copy that a second copy must not follow;
//! - names no filesystem can hold (`..`, `a/b`, NUL, duplicates) and lying
//!   sizes, which only a hostile agent can send: a proxy in front of the real
//!   daemon rewrites its answers.
//!
//! This binary starts its own `runtad` (free port, derived subnet), so it runs
//! beside the other CLI tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Daemon {
    endpoint: String,
    token: String,
}

static DAEMON: OnceLock<Daemon> = OnceLock::new();
static CHILD: Mutex<Option<Child>> = Mutex::new(None);
static DATA_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn cleanup_at_exit() {
    if let Some(d) = DAEMON.get() {
        runta_testkit::delete_all(&d.endpoint, &d.token);
    }
    if let Some(c) = CHILD.lock().ok().and_then(|mut g| g.take()) {
        runta_testkit::stop_daemon(c);
    }
    // Its runtimes are gone (deleted above, or with the daemon's last stop):
    // nothing is mounted there any more.
    if let Some(d) = DATA_DIR.get() {
        if runta_testkit::mounted_under(d).is_none() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn daemon() -> &'static Daemon {
    DAEMON.get_or_init(|| {
        let port = runta_testkit::free_port();
        let data = std::env::temp_dir().join(format!("runta-cp-hostile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        let _ = DATA_DIR.set(data.clone());
        let mut args: Vec<String> = [
            "--data-dir",
            data.join("data").to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--images-dir",
            &runta_testkit::images_dir(),
            "--no-prebuild",
            "--stop-grace-secs",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(runta_testkit::ingress_off_args());
        let log = data.join("runtad.log");
        *CHILD.lock().unwrap() = Some(runta_testkit::spawn_runtad(&args, &log));
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(cleanup_at_exit) };
        let endpoint = format!("http://127.0.0.1:{port}");
        runta_testkit::wait_healthy(&endpoint, &log, || {
            CHILD
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
        });
        let admin = runta_testkit::admin_token(&data.join("data"));
        Daemon {
            token: runta_testkit::mint_token(&endpoint, &admin, "cp-hostile"),
            endpoint,
        }
    })
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {} stdout={:?} stderr={:?}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn runta_at(endpoint: &str, args: &[&str]) -> Out {
    let d = daemon();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runta"))
        .args(args)
        .env("RUNTA_TOKEN", &d.token)
        .env("RUNTA_ENDPOINT", endpoint)
        .env("RUNTA_CONFIG", "/nonexistent/runta-config.toml")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut o = String::new();
            let mut e = String::new();
            child.stdout.take().unwrap().read_to_string(&mut o).unwrap();
            child.stderr.take().unwrap().read_to_string(&mut e).unwrap();
            return Out {
                code: st.code().unwrap_or(-1),
                stdout: o,
                stderr: e,
            };
        }
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("runta {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn runta(args: &[&str]) -> Out {
    runta_at(&daemon().endpoint, args)
}

/// A running runtime, deleted when dropped.
struct Rt(String);

impl Rt {
    fn new(prefix: &str) -> Rt {
        let name = format!("{prefix}-{}", std::process::id() % 100_000);
        let o = runta(&["run", "--name", &name, "--memory", "256"]);
        assert_eq!(o.code, 0, "{o:?}");
        Rt(name)
    }

    fn sh(&self, script: &str) {
        let o = runta(&["exec", &self.0, "--", "sh", "-c", script]);
        assert_eq!(o.code, 0, "{script}: {o:?}");
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        let _ = runta(&["rm", "-f", &self.0]);
    }
}

fn scratch(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("runta-cp-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every path under `dir` (links not followed).
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn links_setuid_and_special_files_from_a_real_runtime_stay_harmless() {
    let rt = Rt::new("cph-tree");
    rt.sh(
        "mkdir -p /t/d/sub && ln -s /etc /t/d/etc && ln -s ../../../../.. /t/d/up \
         && printf '#!/bin/sh\\nid\\n' > /t/d/suid && chmod 6755 /t/d/suid \
         && echo x > /t/d/sticky && chmod 1777 /t/d/sticky \
         && mkfifo /t/d/fifo && echo hi > /t/d/sub/f",
    );
    let w = scratch("tree");
    let out = w.join("out");
    let o = runta(&["cp", &format!("{}:/t/d", rt.0), s(&out)]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stderr.contains("fifo"),
        "the FIFO is reported as skipped: {o:?}"
    );
    let suid = std::fs::metadata(out.join("suid")).unwrap();
    assert_eq!(
        suid.permissions().mode() & 0o7777,
        0o755,
        "setuid/setgid kept"
    );
    let sticky = std::fs::metadata(out.join("sticky")).unwrap();
    assert_eq!(sticky.permissions().mode() & 0o7000, 0, "sticky kept");
    assert_eq!(
        std::fs::read_link(out.join("etc")).unwrap(),
        Path::new("/etc")
    );
    assert!(std::fs::symlink_metadata(out.join("up"))
        .unwrap()
        .is_symlink());
    assert!(!out.join("fifo").exists());
    assert_eq!(std::fs::read_to_string(out.join("sub/f")).unwrap(), "hi\n");

    // A second copy whose folders now go through those links: the content of
    // /t/d/etc becomes a real folder inside the runtime.
    rt.sh("rm /t/d/etc /t/d/up && mkdir /t/d/etc /t/d/up && echo pwned > /t/d/etc/runta-pwned && echo pwned > /t/d/up/runta-pwned");
    let o = runta(&["cp", &format!("{}:/t/d/.", rt.0), s(&out)]);
    assert_ne!(o.code, 0, "wrote through a local link: {o:?}");
    assert!(o.stderr.contains("refusing"), "{o:?}");
    assert!(!Path::new("/etc/runta-pwned").exists(), "wrote into /etc");
    assert!(!Path::new("/runta-pwned").exists(), "wrote into /");
    let _ = std::fs::remove_file("/etc/runta-pwned");
    let _ = std::fs::remove_dir_all(&w);
}

#[test]
fn a_file_link_planted_by_a_first_copy_is_replaced_not_written_through() {
    let rt = Rt::new("cph-flink");
    let w = scratch("flink");
    let victim = w.join("victim");
    std::fs::write(&victim, "mine\n").unwrap();
    rt.sh(&format!("mkdir -p /t/d && ln -s {} /t/d/f", s(&victim)));
    let out = w.join("out");
    let o = runta(&["cp", &format!("{}:/t/d", rt.0), s(&out)]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(std::fs::symlink_metadata(out.join("f"))
        .unwrap()
        .is_symlink());
    rt.sh("rm /t/d/f && echo evil > /t/d/f && chmod 4755 /t/d/f");
    let o = runta(&["cp", &format!("{}:/t/d/.", rt.0), s(&out)]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "mine\n",
        "written through the link"
    );
    let m = std::fs::symlink_metadata(out.join("f")).unwrap();
    assert!(m.is_file());
    assert_eq!(m.permissions().mode() & 0o7777, 0o755);
    let _ = std::fs::remove_dir_all(&w);
}

#[test]
fn huge_and_too_large_downloads_are_refused_and_leave_the_user_s_files() {
    let rt = Rt::new("cph-big");
    rt.sh(
        "truncate -s 2T /huge && mkdir -p /many && for i in 1 2 3; do head -c 400000 /dev/urandom > /many/f$i; done \
         && head -c 3000000 /dev/urandom > /five",
    );
    let w = scratch("big");
    // 2 TiB sparse: the daemon refuses (413), nothing is created here.
    let t0 = Instant::now();
    let o = runta(&["cp", &format!("{}:/huge", rt.0), s(&w.join("huge"))]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("2199023255552"), "{o:?}");
    assert!(t0.elapsed() < Duration::from_secs(20));
    assert_eq!(tree(&w), Vec::<String>::new(), "something was written");

    // Even with a --max-bytes past the daemon's limit, the daemon's 413 holds.
    let o = runta(&[
        "cp",
        "--max-bytes",
        "4T",
        &format!("{}:/huge", rt.0),
        s(&w.join("huge")),
    ]);
    assert_ne!(o.code, 0, "{o:?}");
    assert_eq!(tree(&w), Vec::<String>::new());

    // Past --max-bytes: refused, and a file the user had stays as it was.
    std::fs::write(w.join("five"), "keep me").unwrap();
    let o = runta(&[
        "cp",
        "--max-bytes",
        "1M",
        &format!("{}:/five", rt.0),
        s(&w.join("five")),
    ]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("--max-bytes"), "{o:?}");
    assert_eq!(std::fs::read_to_string(w.join("five")).unwrap(), "keep me");
    assert_eq!(tree(&w), vec!["five".to_string()], "a partial file is left");

    // A folder whose total passes the bound: refused before anything is written.
    let o = runta(&[
        "cp",
        "--max-bytes",
        "1M",
        &format!("{}:/many", rt.0),
        s(&w.join("many")),
    ]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(!w.join("many").exists(), "{:?}", tree(&w));
    // Within the bound it copies.
    let o = runta(&[
        "cp",
        "--max-bytes",
        "2M",
        &format!("{}:/many", rt.0),
        s(&w.join("many")),
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(std::fs::metadata(w.join("many/f3")).unwrap().len(), 400_000);
    let _ = std::fs::remove_dir_all(&w);
}

#[test]
fn a_fifo_or_device_in_the_runtime_is_refused_quickly() {
    let rt = Rt::new("cph-fifo");
    rt.sh("mkfifo /fifo && ln -s /fifo /fifo-link");
    let w = scratch("fifo");
    for src in ["/fifo", "/fifo-link", "/dev/zero", "/dev/urandom"] {
        let t0 = Instant::now();
        let o = runta(&["cp", &format!("{}:{src}", rt.0), s(&w.join("x"))]);
        assert_ne!(o.code, 0, "{src}: {o:?}");
        assert!(o.stderr.contains("not a regular file"), "{src}: {o:?}");
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{src} took {:?}",
            t0.elapsed()
        );
        assert!(!w.join("x").exists());
    }
    let _ = std::fs::remove_dir_all(&w);
}

// ---- a hostile agent, simulated by a proxy that rewrites the daemon's answers

type Rewrite = dyn Fn(&str, &str) -> Option<(u16, Vec<(String, String)>, Vec<u8>)> + Send + Sync;

/// Forwards every request to the real daemon, one per connection, except the
/// ones `rewrite(method, path_and_query)` answers itself.
fn hostile_proxy(rewrite: Arc<Rewrite>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let upstream = daemon().endpoint.trim_start_matches("http://").to_string();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let (rw, up) = (rewrite.clone(), upstream.clone());
            std::thread::spawn(move || proxy_one(conn, &up, &*rw));
        }
    });
    format!("http://{addr}")
}

fn proxy_one(mut c: TcpStream, upstream: &str, rewrite: &Rewrite) {
    let mut buf = Vec::new();
    let mut b = [0u8; 65536];
    let head_end = loop {
        let n = match c.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&b[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut first = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match c.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    }
    if let Some((status, headers, body)) = rewrite(method, target) {
        let mut resp = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
        // `x-no-length`: a body delimited by the connection's end only.
        let mut has_len = false;
        for (k, v) in &headers {
            has_len |= k.eq_ignore_ascii_case("content-length") || k == "x-no-length";
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        if !has_len {
            resp.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        resp.push_str("\r\n");
        let _ = c.write_all(resp.as_bytes());
        let _ = c.write_all(&body);
        return;
    }
    // Upstream: the same request with Connection: close, the answer relayed
    // with Connection: close so the CLI opens a new connection each time.
    let mut up = TcpStream::connect(upstream).unwrap();
    let mut h = String::new();
    for l in head.trim_end().lines() {
        if !l.to_ascii_lowercase().starts_with("connection:") {
            h.push_str(l);
            h.push_str("\r\n");
        }
    }
    h.push_str("Connection: close\r\n\r\n");
    up.write_all(h.as_bytes()).unwrap();
    up.write_all(&buf[head_end..]).unwrap();
    let mut raw = Vec::new();
    let _ = up.read_to_end(&mut raw);
    if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&raw[..i]).into_owned();
        let mut out = String::new();
        for l in head.lines() {
            if !l.to_ascii_lowercase().starts_with("connection:") {
                out.push_str(l);
                out.push_str("\r\n");
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        let _ = c.write_all(out.as_bytes());
        let _ = c.write_all(&raw[i + 4..]);
    }
}

fn listing(entries: &[(&str, &str, u64, u32)]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let data: Vec<Value> = entries
        .iter()
        .map(|(n, k, size, mode)| serde_json::json!({"name": n, "type": k, "size": size, "mode": mode}))
        .collect();
    (
        200,
        vec![("Content-Type".into(), "application/json".into())],
        serde_json::to_vec(&serde_json::json!({ "data": data })).unwrap(),
    )
}

fn query_path(target: &str) -> String {
    let q = target.split_once("path=").map(|x| x.1).unwrap_or("");
    let q = q.split('&').next().unwrap_or("");
    // Percent-decoding, enough for the test's paths.
    let mut out = Vec::new();
    let b = q.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&q[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    // `NAME:/h/.` lists `/h/.`: the same folder.
    let p = String::from_utf8_lossy(&out).into_owned();
    p.strip_suffix("/.").map(str::to_string).unwrap_or(p)
}

#[test]
fn hostile_listings_cannot_name_a_path_outside_the_destination() {
    let rt = Rt::new("cph-names");
    rt.sh("mkdir -p /h");
    let w = scratch("names");
    let bad: &[&str] = &[
        "../escape",
        "..",
        ".",
        "",
        "/tmp/abs-escape",
        "a/../../escape",
        "x\u{0}y",
    ];
    for name in bad {
        let n = name.to_string();
        let proxy = hostile_proxy(Arc::new(move |m, t| {
            if m != "GET" {
                return None;
            }
            let p = query_path(t);
            if t.contains("/files/list") && p == "/h" {
                return Some(listing(&[("ok", "file", 3, 0o644), (&n, "file", 3, 0o644)]));
            }
            if t.contains("/files?") && p.starts_with("/h/") {
                return Some((200, vec![], b"bad".to_vec()));
            }
            None
        }));
        let out = w.join("out");
        let o = runta_at(&proxy, &["cp", &format!("{}:/h", rt.0), s(&out)]);
        assert_ne!(o.code, 0, "{name:?} accepted: {o:?}");
        assert!(o.stderr.contains("name"), "{name:?}: {o:?}");
        assert!(!w.join("escape").exists() && !Path::new("/tmp/abs-escape").exists());
        assert!(!out.exists(), "{name:?}: wrote {:?}", tree(&w));
    }
    // The same name twice (a file, then a folder of that name) is refused too.
    let proxy = hostile_proxy(Arc::new(|m, t| {
        (m == "GET" && t.contains("/files/list") && query_path(t) == "/h")
            .then(|| listing(&[("x", "symlink", 0, 0o777), ("x", "dir", 0, 0o755)]))
    }));
    let o = runta_at(&proxy, &["cp", &format!("{}:/h", rt.0), s(&w.join("dup"))]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("twice"), "{o:?}");
    let _ = std::fs::remove_dir_all(&w);
}

#[test]
fn a_lying_listing_or_stream_cannot_pass_the_byte_bound_or_the_mode_mask() {
    let rt = Rt::new("cph-lies");
    rt.sh("mkdir -p /h");
    let w = scratch("lies");
    // The listing says 3 bytes; the stream sends 3 MiB with no size header.
    let proxy = hostile_proxy(Arc::new(|m, t| {
        if m != "GET" {
            return None;
        }
        let p = query_path(t);
        if t.contains("/files/list") && p == "/h" {
            return Some(listing(&[("small", "file", 3, 0o6755)]));
        }
        if t.contains("/files?") && p == "/h/small" {
            return Some((
                200,
                vec![("x-no-length".into(), "1".into())],
                vec![b'A'; 3 << 20],
            ));
        }
        None
    }));
    std::fs::create_dir_all(w.join("out")).unwrap();
    std::fs::write(w.join("out/small"), "keep").unwrap();
    let o = runta_at(
        &proxy,
        &[
            "cp",
            "--max-bytes",
            "1M",
            &format!("{}:/h/.", rt.0),
            s(&w.join("out")),
        ],
    );
    assert_ne!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("--max-bytes"), "{o:?}");
    assert_eq!(
        std::fs::read_to_string(w.join("out/small")).unwrap(),
        "keep"
    );
    assert_eq!(
        tree(&w.join("out")),
        vec!["small".to_string()],
        "temp file left"
    );

    // An announced size that is not what arrives is an error, not a short file.
    let proxy = hostile_proxy(Arc::new(|m, t| {
        if m != "GET" {
            return None;
        }
        let p = query_path(t);
        if t.contains("/files/list") && p == "/h" {
            return Some(listing(&[("f", "file", 3, 0o6755)]));
        }
        if t.contains("/files?") && p == "/h/f" {
            return Some((
                200,
                vec![("x-runta-file-size".into(), "10".into())],
                b"abc".to_vec(),
            ));
        }
        None
    }));
    let o = runta_at(
        &proxy,
        &["cp", &format!("{}:/h", rt.0), s(&w.join("short"))],
    );
    assert_ne!(o.code, 0, "{o:?}");
    assert!(!w.join("short/f").exists());

    // An honest stream with a setuid mode in the listing: the bits are dropped.
    let proxy = hostile_proxy(Arc::new(|m, t| {
        if m != "GET" {
            return None;
        }
        let p = query_path(t);
        if t.contains("/files/list") && p == "/h" {
            return Some(listing(&[("f", "file", 3, 0o7777)]));
        }
        if t.contains("/files?") && p == "/h/f" {
            return Some((200, vec![], b"abc".to_vec()));
        }
        None
    }));
    let o = runta_at(
        &proxy,
        &["cp", &format!("{}:/h", rt.0), s(&w.join("modes"))],
    );
    assert_eq!(o.code, 0, "{o:?}");
    let m = std::fs::metadata(w.join("modes/f")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o777);
    let _ = std::fs::remove_dir_all(&w);
}
