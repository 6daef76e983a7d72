//! The red-team findings about what a hostile program inside a runtime could do
//! to the daemon and to other runtimes (issue 14, items 1, 4 and 10, and the
//! leaks): redirecting the daemon's agent connection, impersonating the agent,
//! wedging or robbing PID 1, writing past the disk quota through shared host
//! files, being reached from the host's networks, and reading host paths and
//! kernel internals. Every test fails on the code before the fixes (2e1fba2).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{id_of, name, py, Daemon, Outsider};
use reqwest::StatusCode;
use serde_json::json;

/// The host pid of a runtime's init (the one that is PID 1 in its namespace).
fn init_pid(d: &Daemon, id: &str) -> i32 {
    d.cgroup_procs(id)
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with("NSpid:") && l.split_whitespace().last() == Some("1"))
        })
        .expect("the runtime has an init")
}

fn run_dir(d: &Daemon, id: &str) -> PathBuf {
    Path::new("/run/runta").join(d.instance()).join(id)
}

// ---------------------------------------------------------------------------
// Item 1: nothing the runtime writes decides where the daemon connects.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn planted_links_and_fake_agents_never_redirect_the_daemon() {
    let d = Daemon::shared();
    let (ca, cb) = (d.tenant("rta").await, d.tenant("rtb").await);
    let (na, nb) = (name("victim-a"), name("victim-b"));
    let ra = ca.create(&na, 128).await;
    let rb = cb.create(&nb, 128).await;
    let (ida, idb) = (id_of(&ra), id_of(&rb));
    let b_pid = init_pid(d, &idb);
    let b_sock = run_dir(d, &idb).join("agent.sock");
    assert!(b_sock.exists(), "B's agent socket exists on the host");

    // Every place an attacker in A might expect the daemon to look, and every
    // way to point it at B's agent or at another host socket.
    let targets = [
        b_sock.display().to_string(),
        format!("/proc/{b_pid}/root/.runta/run/agent.sock"),
        format!("/proc/{b_pid}/root/.runta/agent.sock"),
        "/run/systemd/private".to_string(),
    ];
    for target in &targets {
        let plant = format!(
            "for d in /.runta/run /.runta /run /tmp; do mkdir -p $d && rm -rf $d/agent.sock && ln -sf '{target}' $d/agent.sock; done; echo planted"
        );
        assert_eq!(ca.out(&na, &plant).await, "planted\n");
        // A's own requests still reach A, and only A.
        assert_eq!(ca.out(&na, "hostname").await.trim(), na, "via {target}");
        let (st, body) = ca
            .call(
                reqwest::Method::GET,
                &format!("/v1/runtimes/{na}/files?path=/etc/hostname"),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
        assert_eq!(
            body.as_str().map(str::trim),
            Some(na.as_str()),
            "via {target}"
        );
        let marker = format!("written-through-a-{}", &ida[..8]);
        let resp = ca
            .http
            .put(format!(
                "{}/v1/runtimes/{na}/files?path=/tmp/{marker}",
                ca.base
            ))
            .bearer_auth(&ca.token)
            .body(marker.clone())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        let found = cb
            .sh(&nb, &format!("ls /tmp/{marker} 2>/dev/null | wc -l"))
            .await;
        assert_eq!(
            found["stdout"], "0\n",
            "A's upload landed in B (via {target})"
        );
    }

    // A fake agent listening at those paths inside A is never spoken to.
    let fake = r#"
import os, socket, sys
if os.fork():
    sys.exit(0)
os.setsid()
null = os.open("/dev/null", os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
socks = []
for p in ["/.runta/run/agent.sock", "/.runta/agent.sock", "/run/agent.sock", "/tmp/agent.sock"]:
    try:
        os.unlink(p)
    except OSError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(p); s.listen(16); socks.append(s)
import select
while True:
    r, _, _ = select.select(socks, [], [])
    for s in r:
        c, _ = s.accept()
        open("/tmp/fake-agent-hit", "a").write("hit\n")
        c.close()
"#;
    py(&ca, &na, fake).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        assert_eq!(ca.out(&na, "hostname").await.trim(), na);
    }
    assert_eq!(
        ca.out(&na, "cat /tmp/fake-agent-hit 2>/dev/null | wc -l")
            .await,
        "0\n",
        "the daemon connected to a fake agent inside the runtime"
    );

    // Overwriting where the socket used to be breaks nothing and is not hidden.
    let resp = ca
        .http
        .put(format!(
            "{}/v1/runtimes/{na}/files?path=/.runta/run/agent.sock",
            ca.base
        ))
        .bearer_auth(&ca.token)
        .body("garbage")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success() || resp.status().is_client_error());
    assert_eq!(ca.out(&na, "echo alive").await, "alive\n");
    assert_eq!(ca.status(&na).await, "running");
    // B never saw any of it.
    assert_eq!(cb.out(&nb, "hostname").await.trim(), nb);
    assert_eq!(
        cb.out(&nb, "ls /tmp | grep -c written-through || true")
            .await,
        "0\n"
    );

    // The socket's folder on the host is the daemon's alone, and no host
    // folder is mounted writable into the runtime.
    let meta = std::fs::metadata(run_dir(d, &ida)).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o700
    );
    let mounts = ca.out(&na, "cat /proc/self/mountinfo").await;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let (mnt, opts) = (f[4], f[5]);
        if mnt == "/"
            || mnt.starts_with("/proc")
            || mnt.starts_with("/dev")
            || mnt.starts_with("/sys")
        {
            continue;
        }
        assert!(
            opts.split(',').any(|o| o == "ro"),
            "{mnt} is mounted writable from the host: {l}"
        );
    }
    ca.delete(&format!("/v1/runtimes/{na}")).await;
    cb.delete(&format!("/v1/runtimes/{nb}")).await;
}

#[tokio::test]
async fn an_impostor_on_the_agent_socket_gets_no_request() {
    let d = Daemon::shared();
    let c = d.tenant("imp").await;
    let n = name("impostor");
    let r = c.create(&n, 128).await;
    let id = id_of(&r);
    // Something other than the runtime's init takes the socket's path (the
    // test process here: another host process, or a stale socket).
    let sock = run_dir(d, &id).join("agent.sock");
    std::fs::remove_file(&sock).unwrap();
    let listener = UnixListener::bind(&sock).unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let got = received.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            if let Ok(k) = s.read(&mut buf) {
                got.fetch_add(k, Ordering::SeqCst);
            }
            // Answer like an agent would, in case the daemon listens.
            let _ = s.write_all(b"\x01\x00\x00\x00\x02{}");
        }
    });
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{n}/exec"),
            json!({"command": "hostname"}),
        )
        .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("verified"),
        "{v}"
    );
    let (st, _) = c
        .call(
            reqwest::Method::GET,
            &format!("/v1/runtimes/{n}/files?path=/etc/hostname"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        received.load(Ordering::SeqCst),
        0,
        "the daemon sent request bytes to an impostor"
    );
    // A reboot makes a fresh socket and the runtime works again.
    let (st, v) = c.post(&format!("/v1/runtimes/{n}/stop"), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = c.post(&format!("/v1/runtimes/{n}/start"), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(c.out(&n, "hostname").await.trim(), n);
    c.delete(&format!("/v1/runtimes/{n}")).await;
}

#[tokio::test]
async fn pid1_can_be_neither_traced_nor_robbed_of_its_descriptors() {
    let d = Daemon::shared();
    let c = d.tenant("pid1").await;
    let n = name("pid1");
    c.create(&n, 128).await;
    let v = py(
        &c,
        &n,
        r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
res = {}
for name, req in [("attach", 16), ("seize", 0x4206)]:
    r = libc.ptrace(req, 1, None, None)
    res[name] = (r, ctypes.get_errno())
    if r == 0:
        libc.ptrace(17, 1, None, None)  # detach
pidfd = libc.syscall(434, 1, 0)          # pidfd_open
fds = []
if pidfd >= 0:
    for fd in range(0, 16):
        got = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd
        if got >= 0:
            fds.append(fd)
res["getfd"] = fds
try:
    res["fd_link"] = os.readlink("/proc/1/fd/0")
except OSError as e:
    res["fd_link"] = e.errno
try:
    with open("/proc/1/fd/1", "a") as f:
        f.write("x" * 100)
    res["log_write"] = "ok"
except OSError as e:
    res["log_write"] = e.errno
print(res)
"#,
    )
    .await;
    let out = v["stdout"].as_str().unwrap_or("");
    assert!(
        out.contains("'attach': (-1, 1)"),
        "ptrace attach to PID 1: {v}"
    );
    assert!(
        out.contains("'seize': (-1, 1)"),
        "ptrace seize of PID 1: {v}"
    );
    assert!(
        out.contains("'getfd': []"),
        "pidfd_getfd took PID 1's descriptors: {v}"
    );
    assert!(
        out.contains("'fd_link': 13"),
        "PID 1's descriptors are readable: {v}"
    );
    assert!(
        out.contains("'log_write': 13"),
        "PID 1's log is writable: {v}"
    );
    assert_eq!(c.out(&n, "echo still-answering").await, "still-answering\n");
    c.delete(&format!("/v1/runtimes/{n}")).await;
}

// ---------------------------------------------------------------------------
// Item 4: every writable path counts against the runtime's disk quota.
// ---------------------------------------------------------------------------

/// Bytes allocated on the host under `dir`, not counting the quota image.
fn host_bytes_outside_quota(dir: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-skx", "--exclude=disk.img"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

#[tokio::test]
async fn no_writable_path_lands_on_the_host_outside_the_quota() {
    let d = Daemon::shared();
    let c = d.tenant("quota").await;
    let n = name("quota");
    let r = c
        .create_with(
            json!({"name": n, "resources": {"requests": {"memory_mib": 128, "disk_gib": 1}}}),
        )
        .await;
    let id = id_of(&r);
    let dir = d.data_dir.join("runtimes").join(&id);
    let before = host_bytes_outside_quota(&dir) + host_bytes_outside_quota(&run_dir(d, &id));
    // The paths that used to be host files or folders, and a few more.
    let paths = [
        "/etc/hosts",
        "/etc/resolv.conf",
        "/etc/hostname",
        "/.runta/run/fill",
        "/.runta/fill",
    ];
    for p in paths {
        let cmd = format!(
            "mkdir -p $(dirname {p}); dd if=/dev/urandom of={p} bs=1M count=100 oflag=append conv=notrunc,fsync 2>&1 | tail -1; sync"
        );
        let v = c
            .post(
                &format!("/v1/runtimes/{n}/exec"),
                json!({"command": cmd, "timeout_secs": 120}),
            )
            .await
            .1;
        eprintln!("{p}: {}", v["data"]["stdout"]);
    }
    let after = host_bytes_outside_quota(&dir) + host_bytes_outside_quota(&run_dir(d, &id));
    assert!(
        after < before + (16 << 20),
        "writes inside the runtime put {} MiB on the host outside its quota",
        (after.saturating_sub(before)) >> 20
    );
    // They did land: inside the quota, which now also runs out for them.
    let v = c
        .post(
            &format!("/v1/runtimes/{n}/exec"),
            json!({"command": "dd if=/dev/zero of=/etc/hosts bs=1M count=1200 oflag=append conv=notrunc 2>&1", "timeout_secs": 180}),
        )
        .await
        .1;
    assert!(
        v["data"]["stdout"]
            .as_str()
            .unwrap_or("")
            .contains("No space left"),
        "/etc/hosts grows past disk_gib: {v}"
    );
    let after = host_bytes_outside_quota(&dir) + host_bytes_outside_quota(&run_dir(d, &id));
    assert!(
        after < before + (16 << 20),
        "{} MiB outside the quota",
        after >> 20
    );
    // The runtime keeps its name and works on after the disk filled up.
    c.sh(&n, "rm -f /.runta/fill /.runta/run/fill; : > /etc/hosts")
        .await;
    assert_eq!(c.out(&n, "hostname").await.trim(), n);
    c.delete(&format!("/v1/runtimes/{n}")).await;
}

#[tokio::test]
async fn managed_etc_files_follow_the_runtime_and_respect_user_edits() {
    let d = Daemon::shared();
    let c = d.tenant("etc").await;
    let n = name("etc");
    c.create(&n, 128).await;
    let hosts = c.out(&n, "cat /etc/hosts").await;
    assert!(
        hosts.lines().any(|l| l.ends_with(&format!("\t{n}"))),
        "{hosts}"
    );
    assert_eq!(c.out(&n, "cat /etc/hostname").await.trim(), n);
    assert!(c
        .out(&n, "cat /etc/resolv.conf")
        .await
        .contains("nameserver"));
    // sed -i (rename over the file) works: no bind mount pins it.
    assert_eq!(
        c.out(
            &n,
            "sed -i 's/localhost$/localhost mine/' /etc/hosts && echo ok"
        )
        .await,
        "ok\n"
    );
    // A user who takes a file over keeps it across a reboot; managed ones are
    // written again; a planted symlink is replaced, not followed.
    c.out(&n, "printf 'nameserver 192.0.2.53\\n' > /etc/resolv.conf; ln -sf /.runta/agent /etc/hostname; echo").await;
    c.post(&format!("/v1/runtimes/{n}/stop"), json!({})).await;
    let (st, v) = c.post(&format!("/v1/runtimes/{n}/start"), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        c.out(&n, "cat /etc/resolv.conf").await,
        "nameserver 192.0.2.53\n"
    );
    assert_eq!(c.out(&n, "cat /etc/hostname").await.trim(), n);
    assert_eq!(
        c.out(&n, "test -L /etc/hostname || echo plain").await,
        "plain\n"
    );
    c.delete(&format!("/v1/runtimes/{n}")).await;
}

// ---------------------------------------------------------------------------
// Item 10: inbound only through the ingress.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn runtime_ports_are_unreachable_from_the_hosts_networks() {
    let d = Daemon::shared();
    let c = d.tenant("fwd").await;
    let n = name("fwd");
    let r = c
        .create_with(
            json!({"name": n, "resources": {"requests": {"memory_mib": 128}},
                            "publish": [{"port": 8080, "protocol": "https"}]}),
        )
        .await;
    let ip = c.out(&n, "hostname -I").await.trim().to_string();
    assert!(!ip.is_empty(), "{r}");
    // Listeners on a published and an unpublished port, TCP and UDP.
    py(
        &c,
        &n,
        r#"
import os, socket, sys
if os.fork():
    sys.exit(0)
os.setsid()
null = os.open("/dev/null", os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
import threading
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(8)
    while True:
        c, _ = s.accept(); c.sendall(b"runtime-answered\n"); c.close()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    while True:
        _, a = s.recvfrom(100); s.sendto(b"runtime-answered", a)
for p in (8080, 9000):
    threading.Thread(target=tcp, args=(p,)).start()
threading.Thread(target=udp, args=(9001,)).start()
"#,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The host itself (the ingress's vantage point) reaches the runtime: the
    // listeners are up, so a refusal below is the firewall's doing.
    let host_sees = std::net::TcpStream::connect_timeout(
        &format!("{ip}:9000").parse().unwrap(),
        Duration::from_secs(2),
    );
    assert!(host_sees.is_ok(), "the listener did not come up");

    let subnet = format!("{}.0.0/16", ip.rsplitn(3, '.').nth(2).unwrap());
    let o = Outsider::new(&subnet, 77);
    // The outsider does reach the host (the route works) ...
    let reach_host = o.py(r#"
import socket
s = socket.socket(); s.settimeout(2)
try:
    s.connect(("198.18.77.1", 1)); print("open")
except ConnectionRefusedError:
    print("host-answered")
except OSError as e:
    print("silent", e)
"#);
    assert_eq!(
        reach_host.trim(),
        "host-answered",
        "outsider cannot reach the host at all"
    );
    // ... but none of the runtime's ports, published or not, TCP or UDP.
    let script = format!(
        r#"
import socket
res = []
for port in (8080, 9000):
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect(("{ip}", port)); res.append(("tcp", port, s.recv(100)))
    except OSError as e:
        res.append(("tcp", port, "blocked"))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2)
u.sendto(b"hi", ("{ip}", 9001))
try:
    res.append(("udp", 9001, u.recvfrom(100)[0]))
except OSError:
    res.append(("udp", 9001, "blocked"))
print(res)
"#
    );
    let res = o.py(&script);
    assert!(
        !res.contains("runtime-answered"),
        "reached from outside: {res}"
    );
    assert_eq!(res.matches("blocked").count(), 3, "{res}");
    drop(o);
    c.delete(&format!("/v1/runtimes/{n}")).await;
}

// ---------------------------------------------------------------------------
// Leaks: host paths in mountinfo, kernel page maps, AF_VSOCK.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn no_host_paths_page_maps_or_vsock() {
    let d = Daemon::shared();
    let c = d.tenant("leak").await;
    let n = name("leak");
    let r = c.create(&n, 128).await;
    let id = id_of(&r);
    for f in [
        "/proc/self/mountinfo",
        "/proc/1/mountinfo",
        "/proc/self/mounts",
    ] {
        let info = c.out(&n, &format!("cat {f} 2>/dev/null")).await;
        let data_dir = d.data_dir.display().to_string();
        for needle in [
            data_dir.as_str(),
            "/var/lib/runta",
            "/run/runta",
            &common::images_dir(),
            "runtimes/",
            "/upper",
            "/work/",
            "target/",
            id.as_str(),
        ] {
            assert!(
                !info.contains(needle),
                "{f} shows the host path {needle:?}:\n{info}"
            );
        }
    }
    let v = py(
        &c,
        &n,
        r#"
import errno, socket
out = {}
for f in ["/proc/kpageflags", "/proc/kpagecount", "/proc/kpagecgroup", "/proc/vmallocinfo", "/proc/slabinfo"]:
    try:
        out[f] = len(open(f, "rb").read(4096))
    except OSError as e:
        out[f] = -e.errno
for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET):
    try:
        socket.socket(40, kind); out[kind] = "created"
    except OSError as e:
        out[kind] = e.errno
print(out)
"#,
    )
    .await;
    let out = v["stdout"].as_str().unwrap_or("");
    assert!(
        !out.contains("created"),
        "AF_VSOCK sockets can be made: {v}"
    );
    for f in [
        "kpageflags",
        "kpagecount",
        "kpagecgroup",
        "vmallocinfo",
        "slabinfo",
    ] {
        let shown = out
            .split(&format!("/proc/{f}': "))
            .nth(1)
            .and_then(|s| s.split([',', '}']).next())
            .unwrap_or("?");
        assert!(
            shown == "0" || shown.starts_with('-'),
            "/proc/{f} is readable: {out}"
        );
    }
    c.delete(&format!("/v1/runtimes/{n}")).await;
}
