//! The shared end-to-end harness for the CLI tests: one real `runtad` per test
//! binary (started on first use), a tenant token, a way to run the `runta`
//! binary with a timeout, and cleanup.
//!
//! Cleanup: an `atexit` hook deletes every runtime of the tests' tenant and then
//! kills the daemon (killing runtad alone would leave runtimes running). As a
//! backstop the daemon gets PDEATHSIG from a thread that lives as long as the
//! test process.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const LISTEN: &str = "127.0.0.1:18181";

pub struct Daemon {
    pub endpoint: String,
    pub data_dir: PathBuf,
    pub admin_token: String,
    pub token: String,
}

static DAEMON: OnceLock<Daemon> = OnceLock::new();
static CHILD: Mutex<Option<Child>> = Mutex::new(None);

pub fn target_debug() -> PathBuf {
    // target/debug/deps/<test-binary>
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

pub fn runtad_bin() -> PathBuf {
    std::env::var_os("RUNTAD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_debug().join("runtad"))
}

pub fn runta_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_runta"))
}

/// A minimal blocking HTTP/1.1 call (usable from `atexit`, no runtime needed).
pub fn http(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(LISTEN)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {LISTEN}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

extern "C" fn cleanup_at_exit() {
    let Some(d) = DAEMON.get() else { return };
    let mut all_gone = true;
    if let Ok((200, body)) = http("GET", "/v1/runtimes?limit=100", Some(&d.token), None) {
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        for r in v["data"].as_array().cloned().unwrap_or_default() {
            let id = r["id"].as_str().unwrap_or_default();
            match http(
                "DELETE",
                &format!("/v1/runtimes/{id}"),
                Some(&d.token),
                None,
            ) {
                Ok((200 | 202 | 404, _)) => {}
                _ => all_gone = false,
            }
        }
    } else {
        all_gone = false;
    }
    // Then the checkpoints (snapshots), newest chains last: a checkpoint is
    // refused while one is built on it, so go round until none are left.
    for _ in 0..5 {
        let Ok((200, body)) = http("GET", "/v1/checkpoints", Some(&d.token), None) else {
            break;
        };
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let all = v["data"].as_array().cloned().unwrap_or_default();
        if all.is_empty() {
            break;
        }
        for c in all {
            let id = c["id"].as_str().unwrap_or_default();
            let _ = http(
                "DELETE",
                &format!("/v1/checkpoints/{id}"),
                Some(&d.token),
                None,
            );
        }
    }
    if let Ok(mut g) = CHILD.lock() {
        if let Some(mut c) = g.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    if all_gone {
        let _ = std::fs::remove_dir_all(&d.data_dir);
    }
}

pub fn daemon() -> &'static Daemon {
    DAEMON.get_or_init(start)
}

fn start() -> Daemon {
    let bin = runtad_bin();
    assert!(
        bin.is_file(),
        "{} not found: build the daemon first (bash scripts/build.sh) or set RUNTAD_BIN",
        bin.display()
    );
    if TcpStream::connect(LISTEN).is_ok() {
        panic!("something already listens on {LISTEN}: a stale runtad from an earlier run? stop it first");
    }
    // A fixed path, emptied first: the daemon names its bridge and firewall
    // chains after the data dir, and does not remove them when it exits, so a
    // new path per run would leave one more bridge on the host every time.
    let data_dir = std::env::temp_dir().join("runta-cli-e2e-18181");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if let Some(m) = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .find(|m| m.starts_with(data_dir.to_str().unwrap()))
    {
        panic!("{m} is still mounted from an earlier run: delete that run's runtimes first");
    }
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir).unwrap_or_else(|e| {
            panic!(
                "cannot empty {}: {e} (a runtime of an earlier run still mounted?)",
                data_dir.display()
            )
        });
    }
    std::fs::create_dir_all(&data_dir).unwrap();
    let log = std::fs::File::create(data_dir.join("runtad.log")).unwrap();
    let args: Vec<String> = [
        "--data-dir",
        data_dir.join("data").to_str().unwrap(),
        "--listen",
        LISTEN,
        "--images-dir",
        "/var/lib/runta/images",
        "--subnet-octet",
        "150",
        "--no-prebuild",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(ingress_args())
    .collect();
    // Spawn from a thread that never ends, so PDEATHSIG fires only when the
    // whole test process goes away.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut cmd = Command::new(bin);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .env("RUNTA_LOG", "info");
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let _ = tx.send(cmd.spawn());
        loop {
            std::thread::park();
        }
    });
    let child = rx.recv().unwrap().expect("spawn runtad");
    *CHILD.lock().unwrap() = Some(child);
    // SAFETY: registering a plain extern "C" function.
    unsafe { libc::atexit(cleanup_at_exit) };

    let t0 = Instant::now();
    loop {
        if let Ok((200, _)) = http("GET", "/healthz", None, None) {
            break;
        }
        if let Some(st) = CHILD
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            let log = std::fs::read_to_string(data_dir.join("runtad.log")).unwrap_or_default();
            panic!("runtad exited ({st}) before it was ready:\n{log}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "runtad not healthy within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let admin_token = std::fs::read_to_string(data_dir.join("data/admin-token"))
        .expect("admin-token written on first start")
        .trim()
        .to_string();
    let (status, body) = http(
        "POST",
        "/v1/tokens",
        Some(&admin_token),
        Some(r#"{"tenant":"cli-e2e"}"#),
    )
    .unwrap();
    assert_eq!(status, 201, "token create: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let token = v["data"]["token"].as_str().unwrap().to_string();
    Daemon {
        endpoint: format!("http://{LISTEN}"),
        data_dir,
        admin_token,
        token,
    }
}

#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "runta failed: {self:?}");
        self
    }
}

/// How to run `runta`: extra env, env to remove, stdin.
#[derive(Default)]
pub struct Opts<'a> {
    pub env: Vec<(&'a str, String)>,
    pub no_token: bool,
    pub no_endpoint: bool,
    pub stdin: Option<&'a [u8]>,
}

/// Runs `runta` against the shared daemon with its tenant token.
pub fn runta(args: &[&str]) -> Out {
    runta_opts(args, Opts::default())
}

pub fn runta_opts(args: &[&str], o: Opts) -> Out {
    let d = daemon();
    let mut cmd = Command::new(runta_bin());
    cmd.args(args)
        .env_remove("RUNTA_TOKEN")
        .env_remove("RUNTA_ENDPOINT")
        .env("RUNTA_CONFIG", "/nonexistent/runta-config.toml")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !o.no_token {
        cmd.env("RUNTA_TOKEN", &d.token);
    }
    if !o.no_endpoint {
        cmd.env("RUNTA_ENDPOINT", &d.endpoint);
    }
    for (k, v) in &o.env {
        cmd.env(k, v);
    }
    cmd.stdin(if o.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("spawn runta");
    if let Some(data) = o.stdin {
        let mut w = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(180)) {
        Ok(r) => r.expect("wait runta"),
        Err(_) => {
            // SAFETY: killing our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("runta {args:?} did not finish within 180 s");
        }
    };
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Deletes the runtimes when dropped, whatever happened in the test.
pub struct Cleanup(pub Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let d = daemon();
        for n in &self.0 {
            let _ = http("DELETE", &format!("/v1/runtimes/{n}"), Some(&d.token), None);
        }
    }
}

pub fn cleanup(names: &[&str]) -> Cleanup {
    Cleanup(names.iter().map(|s| s.to_string()).collect())
}

/// Deletes the snapshots (checkpoints) when dropped; declare it before the
/// `Cleanup` of the runtimes restored from them, so it drops after it.
pub struct SnapshotCleanup(pub Vec<String>);

impl Drop for SnapshotCleanup {
    fn drop(&mut self) {
        let d = daemon();
        // Later ones may be built on earlier ones: newest first.
        for n in self.0.iter().rev() {
            let _ = http(
                "DELETE",
                &format!("/v1/checkpoints/{n}"),
                Some(&d.token),
                None,
            );
        }
    }
}

pub fn cleanup_snapshots(names: &[&str]) -> SnapshotCleanup {
    SnapshotCleanup(names.iter().map(|s| s.to_string()).collect())
}

/// Creates a small runtime through the CLI.
pub fn small(name: &str) -> Cleanup {
    let c = cleanup(&[name]);
    runta(&["run", "--name", name, "--cpus", "0.5", "--memory", "256"]).ok();
    c
}

/// A fresh scratch folder.
pub fn scratch(tag: &str) -> PathBuf {
    let p = daemon().data_dir.join("scratch").join(tag);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Ingress listeners on free ports: a daemon refuses to start without its
/// ingress ports, and the defaults (8443, 8081) may be another daemon's.
fn ingress_args() -> Vec<String> {
    let https = format!("127.0.0.1:{}", closed_port());
    let http = format!("127.0.0.1:{}", closed_port());
    vec![
        "--ingress-listen-https".into(),
        https,
        "--ingress-listen-http".into(),
        http,
    ]
}

/// A TCP port nothing listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
