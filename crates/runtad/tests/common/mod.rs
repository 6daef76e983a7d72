//! The daemon suites' harness: `runta_testkit` (shared with the CLI suite:
//! finding, spawning and waiting for runtad, blocking HTTP, cleanup, the
//! outside test host) re-exported, plus what only these tests need: a daemon
//! handle that can be killed and restarted, and an async REST client.
//!
//! Cleanup: the daemon dies with the test process (PDEATHSIG from a thread that
//! lives as long as the process), and an `atexit` hook deletes every runtime,
//! then every checkpoint, the tests' tenants still own first, so a failed test
//! leaves nothing running.
#![allow(dead_code)]

pub mod image_attacks;
pub mod registry;
pub mod secrets_lab;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub use runta_testkit::*;

pub struct Daemon {
    pub endpoint: String,
    pub data_dir: PathBuf,
    pub admin_token: String,
    pub subnet_octet: u8,
    pub args: Vec<String>,
    child: Mutex<Option<Child>>,
}

static TOKENS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
static DAEMONS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

extern "C" fn cleanup_at_exit() {
    let tokens = TOKENS.lock().map(|t| t.clone()).unwrap_or_default();
    for (endpoint, token) in tokens {
        delete_all(&endpoint, &token);
    }
    for pid in DAEMONS.lock().map(|d| d.clone()).unwrap_or_default() {
        // SAFETY: signalling our own child daemons.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
}

impl Daemon {
    /// The daemon shared by every test of this binary.
    pub fn shared() -> &'static Daemon {
        static D: OnceLock<Daemon> = OnceLock::new();
        D.get_or_init(|| Daemon::start_new(&[]))
    }

    /// A private daemon (for tests that kill and restart it).
    pub fn start_new(extra: &[&str]) -> Daemon {
        static HOOK: OnceLock<()> = OnceLock::new();
        HOOK.get_or_init(|| unsafe {
            libc::atexit(cleanup_at_exit);
        });
        let data_dir =
            std::env::temp_dir().join(format!("runta-e2e-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data_dir).unwrap();
        let data_dir = data_dir.canonicalize().unwrap();
        // Distinct subnets so test daemons never share addresses.
        static NEXT_OCTET: Mutex<u8> = Mutex::new(0);
        let octet = {
            let mut n = NEXT_OCTET.lock().unwrap();
            if *n == 0 {
                *n = std::env::var("RUNTA_TEST_SUBNET_BASE")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(200 + (std::process::id() % 40) as u8);
            }
            // Skip subnets any interface (a stale bridge of an earlier run)
            // still holds: two bridges on one subnet make routing ambiguous.
            loop {
                *n = n.wrapping_add(1).max(200);
                if !runta_backend::network::subnet_taken(*n) {
                    break;
                }
            }
            *n
        };
        let port = free_port();
        let mut args: Vec<String> = vec![
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--images-dir".into(),
            images_dir(),
            "--subnet-octet".into(),
            octet.to_string(),
            "--stop-grace-secs".into(),
            "3".into(),
        ];
        // Test daemons keep off the default ingress ports unless a test asks.
        for flag in ["--ingress-listen-https", "--ingress-listen-http"] {
            if !extra.contains(&flag) {
                args.extend([flag.to_string(), "off".to_string()]);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let d = Daemon {
            endpoint: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.clone(),
            admin_token: String::new(),
            subnet_octet: octet,
            args,
            child: Mutex::new(None),
        };
        d.spawn();
        let token = std::fs::read_to_string(data_dir.join("admin-token")).unwrap();
        Daemon {
            admin_token: token.trim().to_string(),
            ..d
        }
    }

    /// Starts the process (again) on the same data dir and waits for /healthz.
    pub fn spawn(&self) {
        let log = self.data_dir.join("runtad.log");
        let child = spawn_runtad(&self.args, &log);
        DAEMONS.lock().unwrap().push(child.id());
        *self.child.lock().unwrap() = Some(child);
        wait_healthy(&self.endpoint, &log, || {
            self.child
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
        });
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.data_dir.join("runtad.log"))
    }

    /// Kills the daemon hard (SIGKILL), as a crash would.
    pub fn kill9(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the daemon as an operator would (SIGTERM) and waits for it to exit.
    pub fn terminate(&self) -> std::process::ExitStatus {
        let mut c = self.child.lock().unwrap().take().expect("daemon running");
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        c.wait().unwrap()
    }

    pub fn instance(&self) -> String {
        runtad::config::instance_tag(&self.data_dir)
    }

    /// A client for a fresh tenant.
    pub async fn tenant(&self, prefix: &str) -> Client {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let admin = Client::new(&self.endpoint, &self.admin_token);
        let (st, v) = admin.post("/v1/tokens", json!({ "tenant": name })).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        let token = v["data"]["token"].as_str().unwrap().to_string();
        TOKENS
            .lock()
            .unwrap()
            .push((self.endpoint.clone(), token.clone()));
        Client::new(&self.endpoint, &token)
    }

    /// The host pids of a runtime's processes (from its cgroup).
    pub fn cgroup_procs(&self, id: &str) -> Vec<i32> {
        let inst = self.instance();
        for p in [
            format!("/sys/fs/cgroup/pids/runta-{inst}/{id}/cgroup.procs"),
            format!("/sys/fs/cgroup/runta-{inst}/{id}/cgroup.procs"),
        ] {
            if let Ok(s) = std::fs::read_to_string(p) {
                return s.lines().filter_map(|l| l.trim().parse().ok()).collect();
            }
        }
        vec![]
    }

    /// Host-side remains of a runtime: folder, mount, netns/veth, cgroup.
    pub fn leftovers(&self, id: &str) -> Vec<String> {
        let mut v = Vec::new();
        let inst = self.instance();
        if self.data_dir.join("runtimes").join(id).exists() {
            v.push("runtime folder".into());
        }
        if Path::new(&format!("/run/runta/{inst}/{id}")).exists() {
            v.push("socket folder".into());
        }
        if std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(id)
        {
            v.push("mount".into());
        }
        let short: String = id.replace('-', "").chars().take(12).collect();
        if Path::new(&format!("/run/netns/rt-{inst}-{short}")).exists() {
            v.push("netns".into());
        }
        for c in ["memory", "pids", "cpu", "freezer"] {
            for root in [format!("/sys/fs/cgroup/{c}"), "/sys/fs/cgroup".to_string()] {
                if Path::new(&format!("{root}/runta-{inst}/{id}")).exists() {
                    v.push(format!("cgroup {c}"));
                }
            }
        }
        let crun_state = self.data_dir.join("oci-state").join(id);
        if crun_state.exists() {
            v.push("oci state".into());
        }
        v.sort();
        v.dedup();
        v
    }
}

#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, token: &str) -> Self {
        Client {
            base: base.to_string(),
            token: token.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()
                .unwrap(),
        }
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> reqwest::Response {
        let mut rb = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.header("content-type", "application/json").body(b);
        }
        rb.send().await.expect("request")
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let resp = self
            .raw(method, path, body.map(|b| serde_json::to_vec(&b).unwrap()))
            .await;
        let st = resp.status();
        let bytes = resp.bytes().await.unwrap();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (st, v)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates a running runtime (asserting success) and returns its record.
    pub async fn create(&self, name: &str, memory_mib: u64) -> Value {
        self.create_with(json!({
            "name": name,
            "resources": {"requests": {"vcpus": 1, "memory_mib": memory_mib}}
        }))
        .await
    }

    pub async fn create_with(&self, body: Value) -> Value {
        let (st, v) = self.post("/v1/runtimes", body).await;
        assert_eq!(st, StatusCode::OK, "create: {v}");
        assert_eq!(v["data"]["status"], "running", "{v}");
        v["data"].clone()
    }

    /// Runs a shell command, asserting the call itself succeeded.
    /// Runs `cmd` in runtime `rt`: (exit code, stdout + stderr).
    pub async fn run(&self, rt: &str, cmd: &str) -> (i64, String) {
        let d = self.sh(rt, cmd).await;
        (
            d["exit_code"].as_i64().unwrap_or(-1),
            d["stdout"].as_str().unwrap_or("").to_string() + d["stderr"].as_str().unwrap_or(""),
        )
    }

    /// Creates secret `name` with `value`; its `Secret` object.
    pub async fn new_secret(&self, name: &str, value: &str) -> Value {
        let (st, v) = self
            .post("/v1/secrets", json!({"name": name, "value": value}))
            .await;
        assert!(st.is_success(), "create secret: {v}");
        v["data"].clone()
    }

    /// Adds a secret-injection rule to runtime `rt`; the rule's id.
    pub async fn new_rule(&self, rt: &str, body: Value) -> String {
        let (st, v) = self
            .post(&format!("/v1/runtimes/{rt}/secret-injection-rules"), body)
            .await;
        assert!(st.is_success(), "create rule: {v}");
        v["data"]["id"].as_str().unwrap().to_string()
    }

    pub async fn sh(&self, name: &str, cmd: &str) -> Value {
        let (st, v) = self
            .post(
                &format!("/v1/runtimes/{name}/exec"),
                json!({ "command": cmd }),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "exec {cmd:?}: {v}");
        v["data"].clone()
    }

    /// Runs a shell command and returns its stdout, asserting exit code 0.
    pub async fn out(&self, name: &str, cmd: &str) -> String {
        let d = self.sh(name, cmd).await;
        assert_eq!(d["exit_code"], 0, "{cmd:?}: {d}");
        d["stdout"].as_str().unwrap().to_string()
    }

    pub async fn events(&self, name: &str) -> Vec<String> {
        let (_, v) = self.get(&format!("/v1/runtimes/{name}/events")).await;
        v["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["type"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn status(&self, name: &str) -> String {
        let (_, v) = self.get(&format!("/v1/runtimes/{name}")).await;
        v["data"]["status"].as_str().unwrap_or("").to_string()
    }

    /// Waits until `f` holds, polling every 100 ms, up to `secs`.
    pub async fn eventually<F, Fut>(&self, secs: u64, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if f().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}");
    }
}

/// A unique runtime name for a test.
pub fn name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    )
}

/// Asserts an error envelope: status, code, and that the message mentions `needle`.
pub fn assert_error(st: StatusCode, v: &Value, status: u16, code: &str, needle: &str) {
    assert_eq!(st.as_u16(), status, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains(needle),
        "message {msg:?} should mention {needle:?}"
    );
    assert!(
        v["request_id"].as_str().is_some_and(|s| s.len() == 36),
        "{v}"
    );
}

/// Runs `python3 -c script` (argv form) in runtime `n` and returns the exec result.
pub async fn py(c: &Client, n: &str, script: &str) -> Value {
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{n}/exec"),
            json!({"command": "python3", "args": ["-c", script], "timeout_secs": 120}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "exec python: {v}");
    v["data"].clone()
}

impl Daemon {
    /// The daemon's process id (found by its data dir on the command line).
    pub fn pid(&self) -> i32 {
        let needle = self.data_dir.display().to_string();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("runtad") && cmd.contains(&needle) {
                return pid;
            }
        }
        panic!("no runtad for {needle}");
    }
}

/// The egress sets (`RT-<tag>-eg`, `-egi`, `-egu`, `-tcp`: the kernel ipsets
/// the host's static egress rules match, `crate::egress::rules`) that have
/// `ip` as a member now, of every daemon whose rules are in the host's tables.
pub fn egress_sets_of(ip: &str) -> Vec<String> {
    let ip: std::net::Ipv4Addr = ip.parse().expect("an IPv4 address");
    let sets = runta_backend::ipset::IpSets::open().expect("ipset netlink");
    let mut names: Vec<String> = iptables_save()
        .split_whitespace()
        .skip_while(|w| *w != "--match-set")
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "--match-set")
        .map(|w| w[1].to_string())
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| sets.members(n).is_ok_and(|m| m.iter().any(|m| m.ip == ip)))
        .collect()
}

/// The gateway's TCP port that runtime `ip`'s connections are redirected to
/// (from its daemon's static nat rule for the filtered set it is in).
pub fn egress_gateway_port_of(ip: &str) -> Option<u16> {
    let set = egress_sets_of(ip)
        .into_iter()
        .find(|s| s.ends_with("-eg"))?;
    iptables_save()
        .lines()
        .find(|l| {
            l.contains("-EGN ")
                && l.contains("-p tcp")
                && l.contains(&format!("--match-set {set} src"))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|p| p.parse().ok())
}

pub fn iptables_save() -> String {
    let out = std::process::Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Test hosts for the egress suites: a python3 server (`script`, run with
/// the paths of a certificate and key it makes for `names`) inside `tn`'s
/// namespace, and a hosts(5) file (`hosts`) for `--egress-hosts`. Ready
/// once the host reaches `http://198.18.<net>.2/`; the server is killed on
/// drop (the namespace with `tn`).
pub struct PyHosts {
    pub tn: TestNet,
    server: Child,
    pub hosts_file: PathBuf,
}

impl PyHosts {
    pub fn start(
        tn: TestNet,
        dir_kind: &str,
        script: &str,
        names: &[&str],
        hosts: &str,
    ) -> PyHosts {
        let dir = std::env::temp_dir().join(format!("runta-{dir_kind}-{}", tn.tag));
        std::fs::create_dir_all(&dir).unwrap();
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("server.py"), script).unwrap();
        let server = std::process::Command::new("ip")
            .args(["netns", "exec", &tn.ns, "/usr/bin/python3"])
            .arg(dir.join("server.py"))
            .arg(dir.join("cert.pem"))
            .arg(dir.join("key.pem"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let hosts_file = dir.join("hosts");
        std::fs::write(&hosts_file, hosts).unwrap();
        let url = format!("http://{}/", tn.ip(2));
        for _ in 0..50 {
            let ok = std::process::Command::new("curl")
                .args(["-sf", "-m", "1", &url])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        PyHosts {
            tn,
            server,
            hosts_file,
        }
    }

    pub fn ip(&self, last: u8) -> String {
        self.tn.ip(last)
    }
}

impl Drop for PyHosts {
    fn drop(&mut self) {
        let _ = self.server.kill();
    }
}
