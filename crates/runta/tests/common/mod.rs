//! The CLI suites' harness: `runta_testkit` (shared with the daemon suite:
//! finding, spawning and waiting for runtad, blocking HTTP, cleanup)
//! re-exported, plus what only these tests need: one real `runtad` per test
//! binary on a fixed port (started on first use), a tenant token, and a way to
//! run the `runta` binary with a timeout.
//!
//! Cleanup: an `atexit` hook deletes every runtime of the tests' tenant and then
//! kills the daemon (killing runtad alone would leave runtimes running). As a
//! backstop the daemon gets PDEATHSIG from a thread that lives as long as the
//! test process.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;

pub use runta_testkit::*;

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
    target_profile_dir()
}

pub fn runta_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_runta"))
}

/// A minimal blocking HTTP/1.1 call to the shared daemon (usable from
/// `atexit`, no runtime needed).
pub fn http(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    runta_testkit::http(&format!("http://{LISTEN}"), method, path, token, body)
}

extern "C" fn cleanup_at_exit() {
    let Some(d) = DAEMON.get() else { return };
    // Every runtime, then every checkpoint (snapshot) of the tests' tenant.
    let all_gone = delete_all(&d.endpoint, &d.token);
    if let Some(c) = CHILD.lock().ok().and_then(|mut g| g.take()) {
        stop_daemon(c);
    }
    if all_gone {
        let _ = std::fs::remove_dir_all(&d.data_dir);
    }
}

/// The daemon's `--egress-hosts` file (hosts(5) format).
pub fn egress_hosts_file(data_dir: &Path) -> PathBuf {
    data_dir.join("egress-hosts")
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
    if let Some(m) = mounted_under(&data_dir) {
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
    // Tests that need names for their egress test hosts write them here
    // (the daemon re-reads it every 2 s; see egress.rs).
    std::fs::write(egress_hosts_file(&data_dir), "").unwrap();
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
        "--egress-hosts",
        egress_hosts_file(&data_dir).to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(ingress_args())
    .collect();
    let log = data_dir.join("runtad.log");
    *CHILD.lock().unwrap() = Some(spawn_runtad(&args, &log));
    // SAFETY: registering a plain extern "C" function.
    unsafe { libc::atexit(cleanup_at_exit) };
    let endpoint = format!("http://{LISTEN}");
    wait_healthy(&endpoint, &log, || {
        CHILD
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    });
    let admin = admin_token(&data_dir.join("data"));
    let token = mint_token(&endpoint, &admin, "cli-e2e");
    Daemon {
        endpoint,
        data_dir,
        admin_token: admin,
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
