//! The harness shared by the real-daemon test suites (`crates/runtad/tests`,
//! `crates/runta/tests`): find and start a `runtad`, wait for it, speak plain
//! HTTP/1.1 to it (blocking, usable from an `atexit` hook with no async
//! runtime), mint tokens, and delete what a tenant left behind.
//!
//! Each suite's `tests/common/mod.rs` re-exports this crate and adds what only
//! it needs (the daemon's async REST client, the CLI runner). Dev-only: never
//! published, never a dependency of a shipped crate.
//!
//! Cleanup model: a daemon is spawned from a thread that lives as long as the
//! test process, with PDEATHSIG, so it dies with the tests; before that, the
//! suite's `atexit` hook calls [`delete_all`] for each of its tenants (killing
//! runtad alone would leave runtimes running, by design).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The prepared images (`RUNTA_IMAGES_DIR`, default `/var/lib/runta/images`).
pub fn images_dir() -> String {
    std::env::var("RUNTA_IMAGES_DIR").unwrap_or_else(|_| "/var/lib/runta/images".into())
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The directory cargo built the test binary's package into
/// (`$CARGO_TARGET_DIR/<profile>`, the test binary living in its `deps/`).
pub fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// `RUNTAD_BIN`, else the `runtad` built beside the test binary (which is
/// where `CARGO_TARGET_DIR` put it).
pub fn runtad_bin() -> PathBuf {
    std::env::var_os("RUNTAD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_profile_dir().join("runtad"))
}

/// Ingress listeners for a test daemon: `off` (the defaults, 8443 and 8081,
/// may be another daemon's, and a daemon refuses to start without them).
pub fn ingress_off_args() -> Vec<String> {
    [
        "--ingress-listen-https",
        "off",
        "--ingress-listen-http",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Spawns `runtad args…` with stdout and stderr appended to `log`, from a
/// thread that never ends, so PDEATHSIG (SIGTERM) fires only when the whole
/// test process goes away.
pub fn spawn_runtad(args: &[String], log: &Path) -> Child {
    let bin = runtad_bin();
    assert!(
        bin.is_file(),
        "{} not found: build the daemon first (bash scripts/build.sh) or set RUNTAD_BIN",
        bin.display()
    );
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let args = args.to_vec();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(bin);
        cmd.args(&args)
            .env("RUNTA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
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
    rx.recv().unwrap().expect("start runtad")
}

/// The last 30 lines of a daemon log.
pub fn log_tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Waits up to 60 s for `GET /healthz` to answer 200; panics with the log's
/// tail if `exited` reports the process gone first, or on the deadline.
pub fn wait_healthy(endpoint: &str, log: &Path, mut exited: impl FnMut() -> Option<ExitStatus>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = http(endpoint, "GET", "/healthz", None, None) {
            return;
        }
        if let Some(status) = exited() {
            panic!(
                "runtad exited ({status}) before it was ready; log:\n{}",
                log_tail(log)
            );
        }
        assert!(
            Instant::now() < deadline,
            "runtad did not become healthy within 60 s:\n{}",
            log_tail(log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM, up to 10 s to exit, then SIGKILL; reaps the child.
pub fn stop_daemon(mut child: Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A minimal blocking HTTP/1.1 call with `Connection: close` to `endpoint`
/// (`http://host:port`); returns the status and the (de-chunked) body.
pub fn http(
    endpoint: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
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
    // A reset after a complete answer still leaves the answer.
    let _ = s.read_to_end(&mut raw);
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

/// The admin token a daemon wrote into its data dir on first start.
pub fn admin_token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("admin-token"))
        .expect("admin-token written on first start")
        .trim()
        .to_string()
}

/// Mints a token for `tenant` with the admin token (asserting 201).
pub fn mint_token(endpoint: &str, admin: &str, tenant: &str) -> String {
    let body = serde_json::json!({ "tenant": tenant }).to_string();
    let (status, body) =
        http(endpoint, "POST", "/v1/tokens", Some(admin), Some(&body)).expect("POST /v1/tokens");
    assert_eq!(status, 201, "token create: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["data"]["token"].as_str().unwrap().to_string()
}

/// Deletes every runtime of the token's tenant, then every checkpoint (a
/// checkpoint is refused while one is built on it, so a few rounds). Returns
/// whether every runtime delete was accepted. For `atexit` hooks and drops.
pub fn delete_all(endpoint: &str, token: &str) -> bool {
    let mut all_gone = true;
    match http(endpoint, "GET", "/v1/runtimes?limit=100", Some(token), None) {
        Ok((200, body)) => {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            for r in v["data"].as_array().cloned().unwrap_or_default() {
                let id = r["id"].as_str().unwrap_or_default();
                let path = format!("/v1/runtimes/{id}");
                match http(endpoint, "DELETE", &path, Some(token), None) {
                    Ok((200 | 202 | 404, _)) => {}
                    _ => all_gone = false,
                }
            }
        }
        _ => all_gone = false,
    }
    for _ in 0..5 {
        let Ok((200, body)) = http(endpoint, "GET", "/v1/checkpoints", Some(token), None) else {
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
                endpoint,
                "DELETE",
                &format!("/v1/checkpoints/{id}"),
                Some(token),
                None,
            );
        }
    }
    all_gone
}

/// The first mount point under `dir`, if any (a runtime still mounted there).
pub fn mounted_under(dir: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let dir = dir.to_str()?;
    mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .find(|m| m.starts_with(dir))
        .map(str::to_string)
}

/// A runtime record's id.
pub fn id_of(r: &Value) -> String {
    r["id"].as_str().expect("record has an id").to_string()
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS`, `VmHWM`, …).
pub fn status_kib(pid: i32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A host on one of the machine's networks: a network namespace joined to the
/// host by a veth pair (`198.18.<octet>.1` on the host, `.2` inside), with a
/// route to `subnet` (the runtime network) through the host. Removed on drop.
pub struct Outsider {
    ns: String,
    veth: String,
    inside: String,
    servers: Vec<Child>,
}

impl Outsider {
    pub fn new(subnet: &str, octet: u8) -> Outsider {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let (ns, veth, peer) = (
            format!("rt-out-{tag}"),
            format!("rto{tag}"),
            format!("rtp{tag}"),
        );
        let (host, inside) = (format!("198.18.{octet}.1"), format!("198.18.{octet}.2"));
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().unwrap();
            assert!(st.success(), "ip {args:?}");
        };
        ip(&["netns", "add", &ns]);
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &ns]);
        ip(&["addr", "add", &format!("{host}/30"), "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{inside}/30"),
            "dev",
            &peer,
        ]);
        ip(&["-n", &ns, "link", "set", &peer, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "route", "add", subnet, "via", &host]);
        Outsider {
            ns,
            veth,
            inside,
            servers: Vec::new(),
        }
    }

    /// The outsider's own address (`198.18.<octet>.2`).
    pub fn addr(&self) -> &str {
        &self.inside
    }

    /// Starts a plain HTTP server on port 80 inside the namespace (killed on
    /// drop) and waits until the host reaches it; the URL it serves.
    pub fn serve_http(&mut self) -> String {
        let server = Command::new("ip")
            .args(["netns", "exec", &self.ns, "python3", "-m", "http.server"])
            .args(["--bind", "0.0.0.0", "--directory", "/", "80"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.servers.push(server);
        let url = format!("http://{}/", self.inside);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let up = Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "-m", "1", &url])
                .status()
                .is_ok_and(|s| s.success());
            if up {
                return url;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the outsider's HTTP server did not come up at {url}");
    }

    /// Runs `python3 -c script` inside the outsider's namespace; stdout and stderr.
    pub fn py(&self, script: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "python3", "-c", script])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Outsider {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// Test hosts' network: a namespace `<kind>-<tag>` joined to the host by a
/// veth pair (`<kind>h<tag>` on the host with `198.18.<net>.1/24`,
/// `<kind>p<tag>` inside with `198.18.<net>.<last>/24` for each of `lasts`),
/// the namespace's default route through the host. Whatever an earlier,
/// killed run of the same test left under those names is removed first;
/// everything is removed on drop. The tag is the test process's pid and
/// `net`, so suites running at once do not meet.
pub struct TestNet {
    pub ns: String,
    pub veth: String,
    pub peer: String,
    pub tag: String,
    pub net: u8,
}

impl TestNet {
    pub fn new(kind: &str, net: u8, lasts: &[u8]) -> TestNet {
        let tag = format!("{}{net}", std::process::id() % 10000);
        let t = TestNet {
            ns: format!("{kind}-{tag}"),
            veth: format!("{kind}h{tag}"),
            peer: format!("{kind}p{tag}"),
            tag,
            net,
        };
        let _ = Command::new("ip").args(["netns", "del", &t.ns]).status();
        let _ = Command::new("ip").args(["link", "del", &t.veth]).status();
        let (ns, veth, peer) = (&t.ns, &t.veth, &t.peer);
        let mut script = format!(
            "ip netns add {ns} && ip link add {veth} type veth peer name {peer} && ip link set {peer} netns {ns} && ip addr add 198.18.{net}.1/24 dev {veth} && ip link set {veth} up"
        );
        for last in lasts {
            script += &format!(" && ip -n {ns} addr add 198.18.{net}.{last}/24 dev {peer}");
        }
        script += &format!(
            " && ip -n {ns} link set {peer} up && ip -n {ns} link set lo up && ip -n {ns} route add default via 198.18.{net}.1"
        );
        t.sh(&script);
        t
    }

    /// `198.18.<net>.<last>`.
    pub fn ip(&self, last: u8) -> String {
        format!("198.18.{}.{last}", self.net)
    }

    /// Runs `script` with `sh -c` on the host; panics naming it if it fails.
    pub fn sh(&self, script: &str) {
        let st = Command::new("sh").arg("-c").arg(script).status().unwrap();
        assert!(st.success(), "{script}");
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
    }
}
