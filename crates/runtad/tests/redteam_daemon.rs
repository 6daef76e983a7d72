//! Red-team findings against the daemon itself (issue 14, items 7, 8, 9, 13;
//! docs/security.md): exec output that blows up the daemon's memory, slowloris
//! connections, a wedged agent, and a world-readable data dir. Each test drives
//! a real daemon and fails on the code before the fix.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{assert_error, name, Daemon};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The daemon's process id, found by its data dir on its command line.
async fn exec_raw(c: &common::Client, rt: &str, body: Value) -> (StatusCode, usize, Value) {
    let resp = c
        .raw(
            reqwest::Method::POST,
            &format!("/v1/runtimes/{rt}/exec"),
            Some(serde_json::to_vec(&body).unwrap()),
        )
        .await;
    let st = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.bytes().await.unwrap();
    let mut v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if let Some(r) = retry {
        v["retry_after"] = json!(r);
    }
    (st, bytes.len(), v)
}

// ---- item 7: exec output ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_output_that_escaping_inflates_is_bounded_and_memory_stays_flat() {
    let d = Daemon::start_new(&[]);
    let c = d.tenant("rtd-out").await;
    let rt = name("flood");
    c.create(&rt, 1024).await;
    const M: u64 = 16 * 1024 * 1024;

    // One exec: 16 MiB of NUL on each stream was a 192 MB reply (`\u0000` is
    // six bytes) before; now each stream's encoding is at most the cap plus
    // 16 MiB (five times the cap for small caps).
    let (st, len, v) = exec_raw(
        &c,
        &rt,
        json!({"command": "head -c 16777216 /dev/zero; head -c 16777216 /dev/zero >&2",
               "max_output_bytes": M}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(len as u64 <= 4 * M + 4096, "reply is {len} bytes");
    let data = &v["data"];
    assert_eq!(data["exit_code"], 0);
    assert_eq!(data["stdout_truncated"], true, "cut output is flagged");
    assert_eq!(data["stderr_truncated"], true);
    let out = data["stdout"].as_str().unwrap();
    assert!(
        out.len() > 1_000_000 && out.bytes().all(|b| b == 0),
        "a prefix of NULs"
    );

    // Invalid UTF-8 (U+FFFD is three bytes each) and mixed control bytes are
    // bounded the same way, and plain text up to the cap is never cut.
    let (st, len, v) = exec_raw(
        &c,
        &rt,
        json!({"command": "head -c 12000000 /dev/zero | tr '\\0' '\\377'", "max_output_bytes": 12000000}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(len <= 12_000_000 + (16 << 20) + 4096, "{len}");
    assert_eq!(v["data"]["stdout_truncated"], true);
    assert!(v["data"]["stdout"]
        .as_str()
        .unwrap()
        .chars()
        .all(|c| c == '\u{FFFD}'));
    let (_, _, v) = exec_raw(
        &c,
        &rt,
        json!({"command": "yes '' | head -c 1000000", "max_output_bytes": 1000000}),
    )
    .await;
    assert_eq!(
        v["data"]["stdout_truncated"], false,
        "newlines escape to 2 bytes: fits"
    );
    assert_eq!(v["data"]["stdout"].as_str().unwrap().len(), 1_000_000);

    // A flood: 12 execs at once, each 16 MiB of NUL and control bytes on both
    // streams (before: ~250 MB each). The daemon's peak memory may grow by
    // its exec buffer budget (96 MiB by default) and some slack, no more.
    let pid = d.pid();
    let before = common::status_kib(pid, "VmHWM");
    let cmd = "head -c 16777216 /dev/zero | tr '\\0' '\\001'; head -c 16777216 /dev/zero >&2";
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let c = c.clone();
        let rt = rt.clone();
        tasks.push(tokio::spawn(async move {
            exec_raw(&c, &rt, json!({"command": cmd, "max_output_bytes": M})).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (st, len, v) = t.await.unwrap();
        match st {
            StatusCode::OK => {
                ok += 1;
                assert!(len as u64 <= 4 * M + 4096);
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(v["error"]["code"], "unavailable", "{v}");
                assert_eq!(v["retry_after"], "1");
            }
            other => panic!("{other}: {v}"),
        }
    }
    assert!(ok >= 1);
    let grown_mib = (common::status_kib(pid, "VmHWM").saturating_sub(before)) / 1024;
    assert!(
        grown_mib < 150,
        "daemon peak memory grew {grown_mib} MiB under the flood"
    );
    // And it still answers normally afterwards.
    assert_eq!(c.out(&rt, "echo ok").await, "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_buffered_execs_are_capped_per_tenant_and_in_total() {
    let d = Daemon::start_new(&["--exec-max-per-tenant", "3", "--exec-max-concurrent", "5"]);
    let a = d.tenant("rtd-cap-a").await;
    let b = d.tenant("rtd-cap-b").await;
    let (ra, rb) = (name("capa"), name("capb"));
    a.create(&ra, 256).await;
    b.create(&rb, 256).await;

    let fire = |c: common::Client, rt: String, n: usize| {
        (0..n)
            .map(|_| {
                let c = c.clone();
                let rt = rt.clone();
                tokio::spawn(async move {
                    exec_raw(&c, &rt, json!({"command": "sleep 3; echo done"})).await
                })
            })
            .collect::<Vec<_>>()
    };
    let ta = fire(a.clone(), ra.clone(), 5);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let tb = fire(b.clone(), rb.clone(), 4);
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for (who, ts) in [("a", ta), ("b", tb)] {
        for t in ts {
            let (st, _, v) = t.await.unwrap();
            let key = match st {
                StatusCode::OK => {
                    assert_eq!(v["data"]["stdout"], "done\n");
                    format!("{who}:ok")
                }
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                    let code = v["error"]["code"].as_str().unwrap().to_string();
                    assert!(v["request_id"].is_string(), "envelope: {v}");
                    assert_eq!(v["retry_after"], "1", "{v}");
                    format!("{who}:{code}")
                }
                other => panic!("{other}: {v}"),
            };
            *codes.entry(key).or_default() += 1;
        }
    }
    // A: 3 run, 2 are told to slow down. B: the daemon has 2 slots left.
    assert_eq!(codes.get("a:ok"), Some(&3), "{codes:?}");
    assert_eq!(codes.get("a:rate_limited"), Some(&2), "{codes:?}");
    assert_eq!(codes.get("b:ok"), Some(&2), "{codes:?}");
    assert_eq!(codes.get("b:unavailable"), Some(&2), "{codes:?}");
    // Slots come back when execs end.
    assert_eq!(a.out(&ra, "echo again").await, "again\n");
    let (st, v) = a
        .post(
            &format!("/v1/runtimes/{ra}/exec"),
            json!({"command": "true", "max_output_bytes": 1u64 << 40}),
        )
        .await;
    assert_error(st, &v, 422, "invalid_argument", "max_output_bytes");
}

// ---- item 8: slowloris -----------------------------------------------------

/// Starts a private daemon whose soft descriptor limit is 1024 (a common
/// default for services), as the red team's was.
fn daemon_with_low_fd_limit(extra: &[&str]) -> Daemon {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain rlimit calls on our own process; restored right after
    // the daemon has been forked (start_new returns once it is healthy).
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut old);
        let low = libc::rlimit {
            rlim_cur: 1024.min(old.rlim_max),
            rlim_max: old.rlim_max,
        };
        libc::setrlimit(libc::RLIMIT_NOFILE, &low);
    }
    let d = Daemon::start_new(extra);
    unsafe {
        libc::setrlimit(libc::RLIMIT_NOFILE, &old);
    }
    d
}

/// A blocking connection to `to` from the loopback address `src`.
async fn connect_from(src: &str, to: SocketAddr) -> Option<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4().ok()?;
    sock.bind(format!("{src}:0").parse().unwrap()).ok()?;
    let s = tokio::time::timeout(Duration::from_secs(2), sock.connect(to))
        .await
        .ok()?
        .ok()?
        .into_std()
        .ok()?;
    s.set_nonblocking(false).ok()?;
    Some(s)
}

/// True when the server has closed `s` (EOF or reset) within `within`.
fn closed_within(mut s: &TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a 408/400 before the close is fine
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

fn healthz_within(endpoint: &str) -> Duration {
    let t0 = Instant::now();
    let out = std::process::Command::new("curl")
        .args(["-sf", "-m", "1", &format!("{endpoint}/healthz")])
        .output()
        .unwrap();
    assert!(out.status.success(), "/healthz did not answer within 1 s");
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_half_requests_neither_exhaust_the_daemon_nor_stay_open() {
    let d = daemon_with_low_fd_limit(&[
        "--http-header-timeout-secs",
        "3",
        "--http-body-idle-secs",
        "3",
    ]);
    let addr: SocketAddr = d.endpoint.trim_start_matches("http://").parse().unwrap();

    // 1) 1,200 half-requests from one peer: beyond its cap they are closed at
    //    once, /healthz (another peer) answers, the rest close at the deadline.
    let mut conns: Vec<TcpStream> = Vec::new();
    for _ in 0..1200 {
        if let Some(mut s) = connect_from("127.0.0.2", addr).await {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
            conns.push(s);
        }
    }
    assert!(conns.len() >= 1100, "connected {}", conns.len());
    healthz_within(&d.endpoint);
    let early = conns
        .iter()
        .filter(|s| closed_within(s, Duration::from_millis(5)))
        .count();
    assert!(
        early >= conns.len() - 256 - 10,
        "only {early} extra connections closed at once"
    );
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let open = conns
        .iter()
        .filter(|s| !closed_within(s, Duration::from_millis(5)))
        .count();
    assert_eq!(
        open,
        0,
        "half-requests still open {:?} after the start",
        t0.elapsed()
    );
    drop(conns);

    // 2) The same number spread over peers under the per-peer cap: all held
    //    (the descriptor limit was raised at start), /healthz still answers.
    let mut conns: Vec<TcpStream> = Vec::new();
    for i in 0..1200 {
        if let Some(mut s) = connect_from(&format!("127.0.1.{}", 2 + i % 6), addr).await {
            let _ = s.write_all(b"GET /v1/runtimes HTTP/1.1\r\n");
            conns.push(s);
        }
    }
    assert!(conns.len() >= 1100);
    for _ in 0..3 {
        healthz_within(&d.endpoint);
    }
    std::thread::sleep(Duration::from_secs(4));
    let open = conns
        .iter()
        .filter(|s| !closed_within(s, Duration::from_millis(5)))
        .count();
    assert_eq!(open, 0, "half-requests outlived the header deadline");
    drop(conns);

    // 3) Silent connections (not one byte) and a body that stops halfway.
    let silent = connect_from("127.0.0.3", addr).await.unwrap();
    let mut body = connect_from("127.0.0.3", addr).await.unwrap();
    body.write_all(
        format!(
            "POST /v1/runtimes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"name\":",
            d.admin_token
        )
        .as_bytes(),
    )
    .unwrap();
    assert!(
        closed_within(&silent, Duration::from_secs(5)),
        "silent connection kept"
    );
    assert!(
        closed_within(&body, Duration::from_secs(5)),
        "stalled body kept"
    );
    healthz_within(&d.endpoint);
    let log = std::fs::read_to_string(d.data_dir.join("runtad.log")).unwrap();
    assert!(!log.contains("Too many open files"), "{}", d.log_tail());
}

// ---- item 9: a wedged agent ------------------------------------------------

/// Stops the runtime's PID 1 (its agent): from inside with ptrace as the red
/// team did; where the runtime may not ptrace its init (the hole closed in the
/// runtime's profile), from the host with SIGSTOP, the same wedge.
async fn wedge(d: &Daemon, c: &common::Client, rt: &str) {
    let r = c
        .sh(
            rt,
            "setsid python3 -c 'import ctypes,time; l=ctypes.CDLL(None); \
             r=l.ptrace(16,1,0,0); open(\"/tmp/attached\",\"w\").write(str(r)); time.sleep(3600)' \
             </dev/null >/dev/null 2>&1 & sleep 1; cat /tmp/attached",
        )
        .await;
    if r["stdout"] == "0" {
        return;
    }
    let (_, v) = c.get(&format!("/v1/runtimes/{rt}")).await;
    let id = v["data"]["id"].as_str().unwrap();
    let init = d
        .cgroup_procs(id)
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with("NSpid:") && l.split_whitespace().last() == Some("1"))
        })
        .expect("the runtime's init");
    // SAFETY: signalling a process of a runtime this test owns.
    unsafe {
        libc::kill(init, libc::SIGSTOP);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stopped_by_ptrace_fails_the_call_and_marks_the_runtime_error() {
    let d = Daemon::shared();
    let c = d.tenant("rtd-wedge").await;
    let rt = name("wedge");
    c.create(&rt, 256).await;
    wedge(d, &c, &rt).await;

    let t0 = Instant::now();
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{rt}/exec"),
            json!({"command": "true", "timeout_secs": 2}),
        )
        .await;
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(15), "exec hung for {took:?}");
    assert_error(st, &v, 504, "deadline_exceeded", "stopped answering");
    let (_, v) = c.get(&format!("/v1/runtimes/{rt}")).await;
    assert_eq!(v["data"]["status"], "error", "{v}");
    let msg = v["data"]["error"].as_str().unwrap_or("");
    assert!(msg.contains("start") && msg.contains("delete"), "{msg}");
    assert!(c.events(&rt).await.contains(&"error".to_string()));

    // Nothing else hangs on it: exec is refused at once, naming the status.
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{rt}/exec"),
            json!({"command": "true"}),
        )
        .await;
    assert_error(st, &v, 409, "failed_precondition", "error");

    // The way out: start boots it again (the tracer dies with the old one).
    let (st, v) = c.post(&format!("/v1/runtimes/{rt}/start"), json!({})).await;
    assert_eq!(st, StatusCode::OK, "start from error: {v}");
    assert_eq!(v["data"]["status"], "running");
    assert_eq!(c.out(&rt, "echo back").await, "back\n");

    // Wedge it again; delete still works from error.
    wedge(d, &c, &rt).await;
    let (st, _) = c
        .post(
            &format!("/v1/runtimes/{rt}/exec"),
            json!({"command": "true", "timeout_secs": 1}),
        )
        .await;
    assert_eq!(st.as_u16(), 504);
    let t0 = Instant::now();
    let (st, v) = c.delete(&format!("/v1/runtimes/{rt}")).await;
    assert!(st.is_success(), "delete from error: {st} {v}");
    assert!(t0.elapsed() < Duration::from_secs(20));
    let (st, _) = c.get(&format!("/v1/runtimes/{rt}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_command_is_not_mistaken_for_a_wedged_agent() {
    let d = Daemon::shared();
    let c = d.tenant("rtd-slow").await;
    let rt = name("slow");
    c.create(&rt, 256).await;
    // The agent kills it at the timeout and answers: timed_out, still running.
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{rt}/exec"),
            json!({"command": "sleep 30", "timeout_secs": 1}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["timed_out"], true);
    assert_eq!(c.status(&rt).await, "running");
}

// ---- item 13: the data dir -------------------------------------------------

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_data_on_the_host_is_root_only_and_an_old_data_dir_is_tightened() {
    let https = format!("127.0.0.1:{}", common::free_port());
    let d = Daemon::start_new(&["--ingress-listen-https", &https]);
    let c = d.tenant("rtd-perm").await;
    let rt = name("perm");
    let r = c
        .create_with(json!({"name": rt, "env": {"API_KEY": "secret"},
                            "resources": {"requests": {"vcpus": 1, "memory_mib": 256}}}))
        .await;
    let id = r["id"].as_str().unwrap().to_string();
    let dd = d.data_dir.clone();
    let rt_dir = dd.join("runtimes").join(&id);
    let check = |fresh: bool| {
        assert_eq!(mode(&dd), 0o700, "data dir");
        for f in ["runta.db", "admin-token", "ingress/ca-key.pem"] {
            assert_eq!(mode(&dd.join(f)), 0o600, "{f}");
        }
        for f in ["runta.db-wal", "runta.db-shm"] {
            if dd.join(f).exists() {
                assert_eq!(mode(&dd.join(f)), 0o600, "{f}");
            }
        }
        assert_eq!(mode(&dd.join("runtimes")), 0o700, "runtimes folder");
        if !fresh {
            assert_eq!(mode(&rt_dir), 0o700, "runtime folder");
            if rt_dir.join("config.json").exists() {
                assert_eq!(mode(&rt_dir.join("config.json")), 0o600, "config.json");
            }
        }
    };
    check(true);

    // A data dir an older daemon left world-readable is tightened at start.
    d.terminate();
    for p in [dd.clone(), dd.join("runtimes"), rt_dir.clone()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for f in ["runta.db", "admin-token", "ingress/ca-key.pem"] {
        std::fs::set_permissions(dd.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    if rt_dir.join("config.json").exists() {
        std::fs::set_permissions(
            rt_dir.join("config.json"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    d.spawn();
    check(false);

    // The runtime still works, for root and for an unprivileged user inside.
    let c2 = common::Client::new(&d.endpoint, &c.token);
    c2.eventually(30, "runtime running", || async {
        c2.status(&rt).await == "running"
    })
    .await;
    let out = c2
        .out(
            &rt,
            "su -s /bin/sh nobody -c 'cat /etc/hostname >/dev/null && ls / >/dev/null && echo ok'",
        )
        .await;
    assert_eq!(out, "ok\n");
    // And a host user who is not root reads nothing of it.
    let out = std::process::Command::new("su")
        .args(["-s", "/bin/sh", "nobody", "-c"])
        .arg(format!(
            "cat {}/runta.db {}/config.json 2>&1; ls {} 2>&1",
            dd.display(),
            rt_dir.display(),
            dd.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("secret") && text.contains("Permission denied"),
        "{text}"
    );
}
