//! End-to-end tests of the `runta` binary against a real daemon (see common/).

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn inspect(name: &str) -> Value {
    runta(&["inspect", name]).ok().json()
}

#[test]
fn run_ps_inspect_rm() {
    let _c = cleanup(&["t-basic"]);
    let out = runta(&[
        "run", "--name", "t-basic", "--cpus", "2", "--memory", "2048",
    ])
    .ok();
    assert!(out.stdout.starts_with("t-basic running"), "{out:?}");
    // No spinner when stderr is not a terminal.
    assert_eq!(out.stderr, "", "{out:?}");
    let r = inspect("t-basic");
    assert_eq!(r["name"], "t-basic");
    assert_eq!(r["status"], "running");
    assert_eq!(r["resources"]["requests"]["vcpus"], 2.0);
    assert_eq!(r["resources"]["requests"]["memory_mib"], 2048);
    let id = r["id"].as_str().unwrap().to_string();

    let ps = runta(&["ps", "-a"]).ok();
    let mut lines = ps.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "NAME", "STATUS", "CPUS", "MEMORY", "AGE", "URL"]
    );
    let row = ps
        .stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("t-basic"))
        .unwrap_or_else(|| panic!("no t-basic row: {ps:?}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[0], &id[..8]);
    assert_eq!(&cells[2..6], ["running", "2", "2048", "MiB"]);
    assert_eq!(cells[7], "-");

    let q = runta(&["ps", "-q"]).ok();
    assert!(q.stdout.lines().any(|l| l == id), "{q:?}");
    assert!(q.stdout.lines().all(|l| l.len() == 36), "{q:?}");
    let full = runta(&["ps", "--no-trunc"]).ok();
    assert!(full.stdout.contains(&id));

    // The short id from the table works as a reference.
    assert_eq!(inspect(&id[..8])["name"], "t-basic");
    // Several names: an array.
    let both = runta(&["inspect", "t-basic", &id]).ok().json();
    assert_eq!(both.as_array().unwrap().len(), 2);

    // `rm` deletes a running runtime, as the official `runtime.delete()` does.
    let rm = runta(&["rm", "t-basic"]).ok();
    assert_eq!(rm.stdout.trim(), "t-basic", "{rm:?}");
    let gone = runta(&["inspect", "t-basic"]);
    assert_eq!(gone.code, 1);
    assert!(
        gone.stderr.contains("no runtime named 't-basic'"),
        "{gone:?}"
    );
    // -f on a missing runtime is not an error.
    runta(&["rm", "-f", "t-basic"]).ok();
    let again = runta(&["rm", "t-basic"]);
    assert_eq!(again.code, 1, "{again:?}");
}

/// `rm` gives processes SIGTERM and the daemon's grace (10 s) before killing
/// them; `-f` kills at once. A process that ignores SIGTERM holds `rm` for the
/// whole grace and is killed at its end; one that honours it lets `rm` finish
/// early; paused and suspended runtimes go the same way.
#[test]
fn rm_terminates_with_grace_and_f_skips_it() {
    let _c = cleanup(&["t-rm-deaf", "t-rm-deaf-f", "t-rm-polite", "t-rm-paused"]);
    let deaf = "trap '' TERM; while :; do sleep 0.2; done";
    for n in ["t-rm-deaf", "t-rm-deaf-f", "t-rm-polite", "t-rm-paused"] {
        runta(&["run", "--name", n, "--cpus", "0.5", "--memory", "256"]).ok();
    }
    for n in ["t-rm-deaf", "t-rm-deaf-f"] {
        runta(&[
            "exec",
            n,
            "--",
            "sh",
            "-c",
            &format!("nohup sh -c \"{deaf}\" >/dev/null 2>&1 &"),
        ])
        .ok();
    }
    runta(&[
        "exec",
        "t-rm-polite",
        "--",
        "sh",
        "-c",
        "nohup sleep 1000 >/dev/null 2>&1 &",
    ])
    .ok();

    let t = Instant::now();
    runta(&["rm", "t-rm-deaf"]).ok();
    let graceful = t.elapsed();
    assert!(
        graceful >= Duration::from_secs(9),
        "rm did not wait for the grace: {graceful:?}"
    );
    assert!(graceful < Duration::from_secs(30), "{graceful:?}");
    assert_eq!(runta(&["inspect", "t-rm-deaf"]).code, 1);

    let t = Instant::now();
    runta(&["rm", "-f", "t-rm-deaf-f"]).ok();
    let forced = t.elapsed();
    assert!(forced < Duration::from_secs(5), "rm -f waited: {forced:?}");
    assert_eq!(runta(&["inspect", "t-rm-deaf-f"]).code, 1);

    let t = Instant::now();
    runta(&["rm", "t-rm-polite"]).ok();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    runta(&["pause", "t-rm-paused"]).ok();
    runta(&["rm", "t-rm-paused"]).ok();
    assert_eq!(runta(&["inspect", "t-rm-paused"]).code, 1);
}

#[test]
fn json_everywhere() {
    let _c = cleanup(&["t-json"]);
    let run = runta(&["run", "--name", "t-json", "--memory", "256", "--json"])
        .ok()
        .json();
    assert_eq!(run["name"], "t-json");
    assert_eq!(run["status"], "running");
    let ps = runta(&["ps", "--json"]).ok().json();
    assert!(ps.as_array().unwrap().iter().any(|r| r["name"] == "t-json"));
    let ex = runta(&[
        "--json",
        "exec",
        "t-json",
        "--",
        "sh",
        "-c",
        "echo hi; exit 3",
    ]);
    assert_eq!(ex.code, 3, "{ex:?}");
    let v = ex.json();
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["stdout"], "hi\n");
    let p = runta(&["pause", "t-json", "--json"]).ok().json();
    assert_eq!(p["status"], "paused");
    let p = runta(&["resume", "t-json", "--json"]).ok().json();
    assert_eq!(p["status"], "running");
    let rs = runta(&["resize", "--memory", "300", "t-json", "--json"])
        .ok()
        .json();
    assert_eq!(rs["resources"]["requests"]["memory_mib"], 300);
    let ev = runta(&["events", "t-json", "--json"]).ok().json();
    assert_eq!(ev[0]["type"], "created");
    // Errors: the API error object on stderr.
    let e = runta(&["inspect", "t-jsno", "--json"]);
    assert_eq!(e.code, 1);
    let err: Value = serde_json::from_str(e.stderr.trim()).expect("error JSON");
    assert_eq!(err["error"]["code"], "not_found");
    assert!(err["request_id"].as_str().unwrap().len() >= 32, "{err}");
    assert!(err["error"]["hint"]
        .as_str()
        .unwrap()
        .contains("did you mean 't-json'"));
    let e = runta_opts(
        &["ps", "--json"],
        Opts {
            no_token: true,
            ..Default::default()
        },
    );
    let err: Value = serde_json::from_str(e.stderr.trim()).expect("error JSON");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("RUNTA_TOKEN is not set"));
    let rm = runta(&["rm", "-f", "t-json", "--json"]).ok().json();
    assert_eq!(rm["deleted"], true);
}

#[test]
fn exec_output_exit_codes_and_stdin() {
    let _c = small("t-exec");
    let out = runta(&[
        "exec",
        "t-exec",
        "--",
        "sh",
        "-lc",
        "pwd && python3 --version",
    ])
    .ok();
    assert!(out.stdout.starts_with("/root\nPython 3."), "{out:?}");

    let out = runta(&[
        "exec",
        "t-exec",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(out.code, 7, "{out:?}");
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");

    // Piped stdin is sent as the command's stdin.
    let out = runta_opts(
        &["exec", "t-exec", "--", "cat"],
        Opts {
            stdin: Some(b"hi\n"),
            ..Default::default()
        },
    )
    .ok();
    assert_eq!(out.stdout, "hi\n");
    let out = runta_opts(
        &["exec", "t-exec", "--", "wc", "-l"],
        Opts {
            stdin: Some(b"a\nb\nc\n"),
            ..Default::default()
        },
    )
    .ok();
    assert_eq!(out.stdout.trim(), "3");

    // Stdin too big for the buffered body, or not text, is streamed instead.
    let big = vec![b'a'; 2_000_000];
    let out = runta_opts(
        &["exec", "t-exec", "--", "wc", "-c"],
        Opts {
            stdin: Some(&big),
            ..Default::default()
        },
    )
    .ok();
    assert_eq!(out.stdout.trim(), "2000000", "{out:?}");
    let bin: Vec<u8> = (0..=255u8).collect();
    let out = runta_opts(
        &[
            "exec",
            "t-exec",
            "--",
            "sh",
            "-c",
            "od -An -tx1 | tr -d ' \\n' | tail -c 8; exit 9",
        ],
        Opts {
            stdin: Some(&bin),
            ..Default::default()
        },
    );
    assert_eq!(out.code, 9, "{out:?}");
    assert_eq!(out.stdout, "fcfdfeff", "{out:?}");

    // One quoted word with shell syntax runs under /bin/sh -c.
    let out = runta(&["exec", "t-exec", "echo a b | tr a-z A-Z"]).ok();
    assert_eq!(out.stdout, "A B\n");
    // No `--` needed when the command has no flags of its own; env and workdir.
    let out = runta(&[
        "exec",
        "-e",
        "GREETING=hey",
        "-w",
        "/tmp",
        "t-exec",
        "sh",
        "-c",
        "echo $GREETING; pwd",
    ])
    .ok();
    assert_eq!(out.stdout, "hey\n/tmp\n");
    // A missing executable is the remote's failure, passed on.
    let out = runta(&["exec", "t-exec", "--", "/no/such/binary"]);
    assert_ne!(out.code, 0, "{out:?}");
    // Exec on a paused runtime: one clear line, exit 1.
    runta(&["pause", "t-exec"]).ok();
    let out = runta(&["exec", "t-exec", "--", "true"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("paused") && out.stderr.contains("runta resume"),
        "{out:?}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    runta(&["resume", "t-exec"]).ok();
}

#[test]
fn exec_interactive_without_tty_streams_stdin() {
    let _c = small("t-exec-i");
    let out = runta_opts(
        &[
            "exec",
            "-i",
            "t-exec-i",
            "--",
            "sh",
            "-c",
            "cat; echo done >&2; exit 4",
        ],
        Opts {
            stdin: Some(b"line1\nline2\n"),
            ..Default::default()
        },
    );
    assert_eq!(out.code, 4, "{out:?}");
    assert_eq!(out.stdout, "line1\nline2\n");
    assert_eq!(out.stderr, "done\n");
    // The WebSocket path also explains a wrong name.
    let out = runta(&["exec", "-i", "t-exec-x", "--", "true"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("did you mean 't-exec-i'?"), "{out:?}");
}

/// A child process whose stdin/stdout/stderr are a fresh pseudo-terminal.
struct PtyChild {
    master: OwnedFd,
    /// Kept open so the terminal's settings can be read after runta exits.
    slave: OwnedFd,
    child: std::process::Child,
    buf: Arc<Mutex<Vec<u8>>>,
}

impl PtyChild {
    fn spawn(args: &[&str]) -> Self {
        let d = daemon();
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let slave = pty.slave;
        let keep = slave.try_clone().unwrap();
        let mut cmd = Command::new(runta_bin());
        cmd.args(args)
            .env("RUNTA_TOKEN", &d.token)
            .env("RUNTA_ENDPOINT", &d.endpoint)
            .env("RUNTA_CONFIG", "/nonexistent")
            .env("TERM", "xterm")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY as _, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn runta under a pty");
        drop(cmd); // closes our copies of the slave
        let buf = Arc::new(Mutex::new(Vec::new()));
        let reader = pty.master.try_clone().unwrap();
        let b = buf.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::from(reader);
            let mut chunk = [0u8; 4096];
            while let Ok(n) = f.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                b.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        Self {
            master: pty.master,
            slave: keep,
            child,
            buf,
        }
    }

    fn write(&self, data: &[u8]) {
        let mut f = std::fs::File::from(self.master.try_clone().unwrap());
        f.write_all(data).unwrap();
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, pat: &str, secs: u64) {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(secs) {
            if self.text().contains(pat) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{pat:?} not seen within {secs} s; got {:?}", self.text());
    }

    fn set_size(&self, rows: u16, cols: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads the struct we pass.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(rc, 0);
    }

    /// (ECHO, ICANON) of the terminal now.
    fn cooked(&self) -> (bool, bool) {
        use nix::sys::termios::LocalFlags;
        let t = nix::sys::termios::tcgetattr(&self.slave).unwrap();
        (
            t.local_flags.contains(LocalFlags::ECHO),
            t.local_flags.contains(LocalFlags::ICANON),
        )
    }

    fn wait_exit(&mut self, secs: u64) -> i32 {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            if t0.elapsed() > Duration::from_secs(secs) {
                let _ = self.child.kill();
                panic!(
                    "runta did not exit within {secs} s; output {:?}",
                    self.text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn exec_it_is_a_real_terminal() {
    let _c = cleanup(&["t-pty"]);
    // The create spinner shows when stderr is a terminal.
    let mut p = PtyChild::spawn(&["run", "--name", "t-pty", "--cpus", "0.5", "--memory", "256"]);
    p.wait_for("t-pty running", 120);
    assert!(
        p.text().contains("creating t-pty"),
        "no spinner: {:?}",
        p.text()
    );
    assert_eq!(p.wait_exit(30), 0);

    let mut p = PtyChild::spawn(&["exec", "-it", "t-pty", "sh"]);
    p.set_size(40, 100);
    // The remote prompt: by now runta has the terminal in raw mode.
    p.wait_for("# ", 30);
    // Raw mode: what we type is echoed once, by the remote terminal, not twice.
    p.write(b"echo mark-$((40+2))\n");
    p.wait_for("mark-42\r\n", 30);
    assert_eq!(
        p.text().matches("echo mark-$((40+2))").count(),
        1,
        "{:?}",
        p.text()
    );
    assert_eq!(
        p.cooked(),
        (false, false),
        "raw mode while the session runs"
    );
    p.write(b"stty size\n");
    p.wait_for("40 100", 30);
    // SIGWINCH -> resize frame -> the remote terminal follows.
    p.set_size(50, 120);
    std::thread::sleep(Duration::from_millis(300));
    p.write(b"stty size\n");
    p.wait_for("50 120", 30);
    // Ctrl-C goes to the remote as a byte: it stops `sleep`, not runta.
    p.write(b"sleep 60\n");
    std::thread::sleep(Duration::from_millis(500));
    p.write(b"\x03");
    p.write(b"echo after-interrupt\n");
    p.wait_for("after-interrupt\r\n", 30);
    p.write(b"echo hello; exit 3\n");
    p.wait_for("hello\r\n", 30);
    assert_eq!(p.wait_exit(30), 3);
    assert_eq!(p.cooked(), (true, true), "the terminal is restored on exit");

    // A command with arguments gets a terminal too; exit 0 passes through.
    let mut p = PtyChild::spawn(&["exec", "-it", "t-pty", "bash", "-c", "tty && exit 0"]);
    p.wait_for("/dev/pts/", 30);
    assert_eq!(p.wait_exit(30), 0);
}

#[test]
fn lifecycle_and_events() {
    let _c = small("t-life");
    let row = |all: bool| {
        let ps = runta(if all { &["ps", "-a"] } else { &["ps"] }).ok();
        ps.stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("t-life"))
            .map(|l| l.split_whitespace().nth(2).unwrap().to_string())
    };
    let out = runta(&["pause", "t-life"]).ok();
    assert!(out.stdout.contains("t-life paused"), "{out:?}");
    assert_eq!(row(false).as_deref(), Some("paused"));
    runta(&["resume", "t-life"]).ok();
    assert_eq!(inspect("t-life")["status"], "running");
    let out = runta(&["shutdown", "t-life"]).ok();
    assert!(out.stdout.contains("t-life shut down"), "{out:?}");
    assert_eq!(row(false), None, "ps without -a hides shut-down runtimes");
    assert_eq!(row(true).as_deref(), Some("shutdown"));
    // Asking for the state it is in is a no-op.
    runta(&["shutdown", "t-life"]).ok();
    // Impossible transition: exit 1, the daemon's reason.
    let out = runta(&["pause", "t-life"]);
    assert_eq!(out.code, 1, "{out:?}");
    runta(&["boot", "t-life"]).ok();
    assert_eq!(inspect("t-life")["status"], "running");
    // docker-style aliases
    runta(&["stop", "t-life"]).ok();
    runta(&["start", "t-life"]).ok();
    assert_eq!(inspect("t-life")["status"], "running");

    let ev = runta(&["events", "t-life"]).ok();
    let kinds: Vec<&str> = ev
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    for k in ["created", "started", "paused", "resumed", "stopped"] {
        assert!(kinds.contains(&k), "no {k} in {ev:?}");
    }
    assert!(ev.stdout.starts_with("TIME"), "{ev:?}");
    let logs = runta(&["logs", "t-life"]).ok();
    assert_eq!(logs.stdout, ev.stdout);
}

#[test]
fn resize_memory_and_cpus() {
    let _c = small("t-resize");
    let out = runta(&["resize", "--memory", "512", "t-resize"]).ok();
    assert!(out.stdout.contains("512 MiB"), "{out:?}");
    assert_eq!(
        inspect("t-resize")["resources"]["requests"]["memory_mib"],
        512
    );
    runta(&["resize", "--memory", "384", "--cpus", "1.5", "t-resize"]).ok();
    let r = inspect("t-resize");
    assert_eq!(r["resources"]["requests"]["memory_mib"], 384);
    assert_eq!(r["resources"]["requests"]["vcpus"], 1.5);
    assert_eq!(r["status"], "running", "live resize keeps it running");
    let out = runta(&["resize", "t-resize"]);
    assert_eq!(out.code, 2, "{out:?}");
    let out = runta(&["resize", "--memory", "512", "t-resise"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("did you mean 't-resize'?"), "{out:?}");
}

#[test]
fn publish_prints_the_url() {
    let _c = cleanup(&["t-web"]);
    let out = runta(&[
        "run",
        "--name",
        "t-web",
        "--cpus",
        "2",
        "--memory",
        "2048",
        "--publish",
        "8080/https",
        "--idle-timeout",
        "300",
    ])
    .ok();
    let r = inspect("t-web");
    let url = r["publish"][0]["url"].as_str().unwrap();
    assert!(url.starts_with("https://"), "{r}");
    assert!(out.stdout.contains(url), "{out:?}");
    assert!(out.stdout.contains("8080/https"), "{out:?}");
    assert_eq!(r["idle_timeout_secs"], 300);
    let ps = runta(&["ps"]).ok();
    assert!(
        ps.stdout
            .lines()
            .any(|l| l.contains("t-web") && l.ends_with(url)),
        "{ps:?}"
    );
    let bad = runta(&["run", "--name", "t-web2", "--publish", "8080/ftp"]);
    assert_eq!(bad.code, 2, "{bad:?}");
}

#[test]
fn apply_and_delete_a_deployment() {
    let _c = cleanup(&["t-dep-a", "t-dep-b"]);
    let dir = scratch("deploy");
    let file = dir.join("deployment.json");
    let write = |mem_b: u64| {
        std::fs::write(
            &file,
            format!(
                r#"{{"apiVersion": "runta/v1", "kind": "SandboxSet",
 "sandboxes": [{{"name": "t-dep-a", "image": "base", "resources": {{"vcpus": 1, "memory_mib": 256}},
                "env": {{}}, "publish": ["8080/https"], "idle_timeout_secs": 300}},
               {{"name": "t-dep-b", "resources": {{"vcpus": 0.5, "memory_mib": {mem_b}}}}}]}}"#
            ),
        )
        .unwrap();
    };
    let f = file.to_str().unwrap();
    let action = |out: &Out, name: &str| -> String {
        out.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no plan line for {name}: {out:?}"))
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    write(128);
    let out = runta(&["apply", "-f", f]).ok();
    assert_eq!(action(&out, "t-dep-a"), "created");
    assert_eq!(action(&out, "t-dep-b"), "created");
    assert!(out.stdout.contains("https://"), "{out:?}");
    let out = runta(&["apply", "-f", f]).ok();
    assert_eq!(action(&out, "t-dep-a"), "unchanged");
    assert_eq!(action(&out, "t-dep-b"), "unchanged");
    write(192);
    let out = runta(&["apply", "-f", f]).ok();
    assert_eq!(action(&out, "t-dep-a"), "unchanged");
    assert_eq!(action(&out, "t-dep-b"), "updated");
    assert!(out.stdout.contains("memory_mib 128 -> 192"), "{out:?}");
    assert_eq!(
        inspect("t-dep-b")["resources"]["requests"]["memory_mib"],
        192
    );
    let js = runta(&["apply", "-f", f, "--json"]).ok().json();
    assert_eq!(js["plan"][0]["action"], "unchanged");

    let out = runta(&["delete", "-f", f]).ok();
    assert_eq!(action(&out, "t-dep-a"), "deleted");
    assert_eq!(action(&out, "t-dep-b"), "deleted");
    assert_eq!(runta(&["inspect", "t-dep-a"]).code, 1);
    let out = runta(&["delete", "-f", f]).ok();
    assert!(out.stdout.contains("t-dep-a  not found"), "{out:?}");

    // A bad file is rejected whole, naming the field; nothing is created.
    std::fs::write(
        &file,
        r#"{"apiVersion":"runta/v1","kind":"SandboxSet","sandboxes":[{"name":"t-dep-a"},{"name":"Bad"}]}"#,
    )
    .unwrap();
    let out = runta(&["apply", "-f", f]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("sandboxes[1].name"), "{out:?}");
    assert_eq!(
        runta(&["inspect", "t-dep-a"]).code,
        1,
        "nothing half-applied"
    );
    std::fs::write(&file, "{ not json").unwrap();
    let out = runta(&["apply", "-f", f]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("not valid JSON"), "{out:?}");
    let out = runta(&["apply", "-f", "/nonexistent/deployment.json"]);
    assert_eq!(out.code, 1, "{out:?}");
}

fn tree(root: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                out.push((
                    rel,
                    format!("-> {}", std::fs::read_link(e.path()).unwrap().display()),
                ));
            } else if ft.is_dir() {
                out.push((rel.clone(), "dir".into()));
                stack.push(e.path());
            } else {
                use std::os::unix::fs::PermissionsExt;
                let mode = e.metadata().unwrap().permissions().mode() & 0o777;
                let body = std::fs::read(e.path()).unwrap();
                out.push((rel, format!("{mode:o} {}", String::from_utf8_lossy(&body))));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn cp_files_and_folders_both_ways() {
    use std::os::unix::fs::PermissionsExt;
    let _c = small("t-cp");
    let s = scratch("cp");
    let src = s.join("dir");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(src.join("empty")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(src.join("sub/b.txt"), "beta\n").unwrap();
    std::fs::write(src.join("sub/deeper/run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(
        src.join("sub/deeper/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(src.join("big.bin"), &big).unwrap();

    let out = runta(&["cp", src.to_str().unwrap(), "t-cp:/tmp/dir"]).ok();
    assert!(out.stdout.contains("copied 4 files"), "{out:?}");
    let ls = runta(&[
        "exec",
        "t-cp",
        "--",
        "sh",
        "-c",
        "cd /tmp/dir && find . | sort && ./sub/deeper/run.sh && readlink link && wc -c < big.bin",
    ])
    .ok();
    for p in [
        "./a.txt",
        "./empty",
        "./sub/b.txt",
        "./sub/deeper/run.sh",
        "./link",
        "ran",
        "3000000",
    ] {
        assert!(
            ls.stdout.lines().any(|l| l.trim() == p),
            "{p} missing: {ls:?}"
        );
    }
    // Onto an existing folder: inside it (docker cp rules).
    runta(&["cp", src.to_str().unwrap(), "t-cp:/tmp/dir"]).ok();
    runta(&["exec", "t-cp", "--", "test", "-f", "/tmp/dir/dir/a.txt"]).ok();

    // Back again, into a new local folder, then into an existing one.
    let back = s.join("back");
    runta(&["cp", "t-cp:/tmp/dir", back.to_str().unwrap()]).ok();
    let mut want = tree(&src);
    let got: Vec<_> = tree(&back)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("dir"))
        .collect();
    want.retain(|(p, _)| !p.starts_with("dir"));
    assert_eq!(got, want);
    assert_eq!(std::fs::read(back.join("big.bin")).unwrap(), big);
    let existing = s.join("existing");
    std::fs::create_dir_all(&existing).unwrap();
    runta(&["cp", "t-cp:/tmp/dir/sub", existing.to_str().unwrap()]).ok();
    assert_eq!(
        std::fs::read_to_string(existing.join("sub/b.txt")).unwrap(),
        "beta\n"
    );

    // Single files, both directions.
    runta(&["cp", src.join("a.txt").to_str().unwrap(), "t-cp:/root/"]).ok();
    assert_eq!(
        runta(&["exec", "t-cp", "--", "cat", "/root/a.txt"])
            .ok()
            .stdout,
        "alpha\n"
    );
    runta(&[
        "cp",
        src.join("a.txt").to_str().unwrap(),
        "t-cp:/root/renamed.txt",
    ])
    .ok();
    let one = s.join("one.txt");
    runta(&["cp", "t-cp:/root/renamed.txt", one.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read_to_string(&one).unwrap(), "alpha\n");

    // Failures: missing remote file, both sides local, relative remote path.
    let out = runta(&["cp", "t-cp:/no/such/file", s.join("x").to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("/no/such/file"), "{out:?}");
    assert_eq!(runta(&["cp", "a", "b"]).code, 2);
    assert_eq!(runta(&["cp", "a", "t-cp:tmp"]).code, 2);
    let out = runta(&["cp", "a", "t-cq:/tmp"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("did you mean 't-cp'?"), "{out:?}");
}

#[test]
fn token_create_prints_only_the_token() {
    let d = daemon();
    let out = runta_opts(
        &["token", "create", "--tenant", "cli-e2e-other"],
        Opts {
            env: vec![("RUNTA_TOKEN", d.admin_token.clone())],
            no_token: true,
            ..Default::default()
        },
    )
    .ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{out:?}");
    assert!(lines[0].starts_with("rt_"), "{out:?}");
    assert_eq!(out.stderr, "");
    // The new token works (its tenant sees none of ours).
    let ps = runta_opts(
        &["ps", "-aq"],
        Opts {
            env: vec![("RUNTA_TOKEN", lines[0].to_string())],
            no_token: true,
            ..Default::default()
        },
    )
    .ok();
    assert_eq!(ps.stdout, "");
    let js = runta_opts(
        &["token", "create", "--tenant", "cli-e2e-other", "--json"],
        Opts {
            env: vec![("RUNTA_TOKEN", d.admin_token.clone())],
            no_token: true,
            ..Default::default()
        },
    )
    .ok()
    .json();
    assert_eq!(js["tenant"], "cli-e2e-other");
    assert!(js["token"].as_str().unwrap().starts_with("rt_"));
    // A tenant token may not mint tokens.
    let out = runta(&["token", "create", "--tenant", "x"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stdout, "");
    assert_eq!(runta(&["token", "create", "--tenant", "Not_Valid"]).code, 2);
}

#[test]
fn error_messages() {
    let _c = small("t-err-worker");
    // Wrong name: did you mean, from the tenant's runtime list.
    for args in [
        vec!["inspect", "t-err-wrker"],
        vec!["exec", "t-err-wrker", "--", "true"],
        vec!["pause", "t-err-wrker"],
        vec!["rm", "t-err-wrker"],
        vec!["events", "t-err-wrker"],
    ] {
        let out = runta(&args);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert_eq!(
            out.stderr.trim(),
            "error: no runtime named 't-err-wrker' — did you mean 't-err-worker'?",
            "{args:?}"
        );
    }
    let out = runta(&["inspect", "zzzzzzzzzzzzzz"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("no runtime named 'zzzzzzzzzzzzzz'")
            && !out.stderr.contains("did you mean"),
        "{out:?}"
    );

    // No token anywhere.
    let out = runta_opts(
        &["ps"],
        Opts {
            no_token: true,
            ..Default::default()
        },
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.starts_with("error: RUNTA_TOKEN is not set"),
        "{out:?}"
    );
    assert_eq!(out.stderr.lines().count(), 1);
    // A wrong token.
    let out = runta_opts(
        &["ps"],
        Opts {
            env: vec![("RUNTA_TOKEN", "rt_wrong".into())],
            no_token: true,
            ..Default::default()
        },
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("RUNTA_TOKEN"), "{out:?}");

    // Daemon not reachable (a closed port), also on the WebSocket path.
    let port = closed_port();
    let ep = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["ps"],
        vec!["exec", "-it", "x", "sh"],
        vec!["run", "--name", "x"],
    ] {
        let out = runta_opts(
            &args,
            Opts {
                env: vec![("RUNTA_ENDPOINT", ep.clone())],
                no_endpoint: true,
                ..Default::default()
            },
        );
        assert_eq!(out.code, 1, "{out:?}");
        assert_eq!(
            out.stderr.trim(),
            format!("error: daemon not reachable at {ep} — start it with `runta server`")
        );
    }
    // The --endpoint flag names the address in the message too.
    let out = runta_opts(&["ps", "--endpoint", "http://127.0.0.1:1"], Opts::default());
    assert!(
        out.stderr
            .contains("daemon not reachable at http://127.0.0.1:1 "),
        "{out:?}"
    );

    // Bad flags: exit 2.
    for args in [
        vec!["frobnicate"],
        vec!["run"],
        vec!["run", "--name", "Bad_Name"],
        vec!["run", "--name", "x", "--cpus", "lots"],
        vec!["run", "--name", "x", "--memory", "1"],
        vec!["run", "--name", "x", "--env", "NOEQUALS"],
        vec!["exec", "t-err-worker"],
        vec!["ps", "--bogus"],
        vec!["rm"],
        vec!["apply"],
        vec!["completion", "tcsh"],
    ] {
        let out = runta(&args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("error:"), "{args:?}: {out:?}");
    }
    let out = runta_opts(
        &["ps"],
        Opts {
            env: vec![("RUNTA_ENDPOINT", "ftp://x".into())],
            no_endpoint: true,
            ..Default::default()
        },
    );
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn help_shows_examples_and_completion_works() {
    let top = runta(&["--help"]).ok();
    assert!(
        top.stdout.contains("Examples:") && top.stdout.contains("runta run --name worker"),
        "{top:?}"
    );
    for sub in [
        "run",
        "ps",
        "inspect",
        "exec",
        "boot",
        "pause",
        "resume",
        "shutdown",
        "rm",
        "resize",
        "cp",
        "apply",
        "delete",
        "events",
        "logs",
        "server",
        "token",
        "snapshot",
        "completion",
    ] {
        let out = runta(&[sub, "--help"]).ok();
        assert!(
            out.stdout.contains("Example"),
            "{sub} --help has no example: {out:?}"
        );
        assert!(
            out.stdout.contains(&format!(
                "runta {}",
                if sub == "logs" { "logs" } else { sub }
            )),
            "{sub}: {out:?}"
        );
    }
    let out = runta(&["token", "create", "--help"]).ok();
    assert!(out.stdout.contains("Example"));
    for sub in ["create", "ls", "restore", "rm"] {
        let out = runta(&["snapshot", sub, "--help"]).ok();
        assert!(
            out.stdout.contains("Example") && out.stdout.contains(&format!("runta snapshot {sub}")),
            "snapshot {sub}: {out:?}"
        );
    }
    assert!(runta(&["run", "--help"])
        .ok()
        .stdout
        .contains("--from-snapshot"));
    assert!(runta(&["--version"]).ok().stdout.starts_with("runta "));
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef runta"),
        ("fish", "complete -c runta"),
    ] {
        let out = runta(&["completion", shell]).ok();
        assert!(
            out.stdout.contains(marker),
            "{shell}: {}",
            &out.stdout[..200.min(out.stdout.len())]
        );
        assert!(out.stdout.contains("resize"), "{shell}");
    }
}

#[test]
fn config_file_env_and_flags_in_that_order() {
    let d = daemon();
    let dir = scratch("config");
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!("endpoint = \"{}\"\ntoken = \"{}\"\n", d.endpoint, d.token),
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap().to_string();
    let with = |args: &[&str], env: Vec<(&'static str, String)>| {
        let mut e = vec![("RUNTA_CONFIG", cfg_s.clone())];
        e.extend(env);
        runta_opts(
            args,
            Opts {
                env: e,
                no_token: true,
                no_endpoint: true,
                ..Default::default()
            },
        )
    };
    // The config file alone is enough.
    with(&["ps"], vec![]).ok();
    // The environment beats the file.
    let out = with(&["ps"], vec![("RUNTA_TOKEN", "rt_fromenv".into())]);
    assert_eq!(out.code, 1, "{out:?}");
    let port = closed_port();
    let out = with(
        &["ps"],
        vec![("RUNTA_ENDPOINT", format!("http://127.0.0.1:{port}"))],
    );
    assert!(out.stderr.contains(&format!("127.0.0.1:{port}")), "{out:?}");
    // Flags beat the environment.
    with(
        &["ps", "--token", &d.token],
        vec![("RUNTA_TOKEN", "rt_fromenv".into())],
    )
    .ok();
    with(
        &["--endpoint", &d.endpoint, "ps"],
        vec![("RUNTA_ENDPOINT", format!("http://127.0.0.1:{port}"))],
    )
    .ok();
    // A broken file is a usage error naming the file.
    std::fs::write(&cfg, "endpoint = [").unwrap();
    let out = with(&["ps"], vec![]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains(&cfg_s), "{out:?}");
}

#[test]
fn server_execs_runtad_with_the_flags() {
    // The real runtad next to runta answers --version through `runta server`.
    let out = runta(&["server", "--version"]).ok();
    assert!(out.stdout.starts_with("runtad "), "{out:?}");
    // Flags are passed through untouched (RUNTAD_BIN swaps in a recorder).
    let dir = scratch("server");
    let fake = dir.join("fake-runtad");
    std::fs::write(&fake, "#!/bin/sh\nprintf '%s\\n' \"$@\"\nexit 5\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = runta_opts(
        &[
            "server",
            "--data-dir",
            "/tmp/x y",
            "--listen",
            "127.0.0.1:9",
            "--no-prebuild",
        ],
        Opts {
            env: vec![("RUNTAD_BIN", fake.to_str().unwrap().into())],
            ..Default::default()
        },
    );
    assert_eq!(out.code, 5, "exit code of runtad: {out:?}");
    assert_eq!(
        out.stdout,
        "--data-dir\n/tmp/x y\n--listen\n127.0.0.1:9\n--no-prebuild\n"
    );
    let help = runta(&["server", "--help"]).ok();
    assert!(
        help.stdout.contains("Example") && help.stdout.contains("--data-dir"),
        "{help:?}"
    );
    let out = runta_opts(
        &["server"],
        Opts {
            env: vec![("RUNTAD_BIN", "/nonexistent/runtad".into())],
            ..Default::default()
        },
    );
    assert_eq!(out.code, 1, "{out:?}");
}

fn cat(name: &str, path: &str) -> Out {
    runta(&["exec", name, "--", "cat", path])
}

#[test]
fn snapshot_create_restore_ls_rm() {
    let _s = cleanup_snapshots(&["t-snap-1", "t-snap-p", "t-snap-off"]);
    let _c = cleanup(&["t-snap-src", "t-snap-f1", "t-snap-f2", "t-snap-f3"]);
    runta(&[
        "run",
        "--name",
        "t-snap-src",
        "--cpus",
        "0.5",
        "--memory",
        "256",
    ])
    .ok();
    runta(&[
        "exec",
        "t-snap-src",
        "--",
        "sh",
        "-c",
        "echo v1 > /root/a.txt",
    ])
    .ok();

    // Create: one line naming the snapshot, its source, id and size.
    let out = runta(&["snapshot", "create", "t-snap-src", "t-snap-1"]).ok();
    assert!(
        out.stdout
            .starts_with("t-snap-1 saved from t-snap-src — id "),
        "{out:?}"
    );
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    assert_eq!(out.stderr, "", "{out:?}");
    assert_eq!(inspect("t-snap-src")["status"], "running", "thawed again");
    runta(&[
        "exec",
        "t-snap-src",
        "--",
        "sh",
        "-c",
        "echo v2 > /root/a.txt",
    ])
    .ok();

    // Two forks: `snapshot restore` (with flags, printing the URL like `run`) and
    // `run --from-snapshot`.
    let out = runta(&[
        "snapshot",
        "restore",
        "t-snap-1",
        "t-snap-f1",
        "--cpus",
        "0.5",
        "--memory",
        "256",
        "--publish",
        "8080/https",
        "--idle-timeout",
        "300",
    ])
    .ok();
    assert!(out.stdout.starts_with("t-snap-f1 running — id "), "{out:?}");
    assert!(out.stdout.contains("0.5 CPUs, 256 MiB"), "{out:?}");
    let f1 = inspect("t-snap-f1");
    let url = f1["publish"][0]["url"].as_str().unwrap();
    assert!(
        out.stdout.contains(&format!("8080/https → {url}")),
        "{out:?}"
    );
    assert_eq!(f1["idle_timeout_secs"], 300);
    assert_eq!(f1["resources"]["requests"]["memory_mib"], 256);
    let out = runta(&[
        "run",
        "--name",
        "t-snap-f2",
        "--memory",
        "256",
        "--from-snapshot",
        "t-snap-1",
    ])
    .ok();
    assert!(out.stdout.starts_with("t-snap-f2 running"), "{out:?}");

    // Each fork has the snapshot's files, not the later change, and not each
    // other's writes.
    for f in ["t-snap-f1", "t-snap-f2"] {
        assert_eq!(cat(f, "/root/a.txt").ok().stdout, "v1\n", "{f}");
    }
    assert_eq!(cat("t-snap-src", "/root/a.txt").ok().stdout, "v2\n");
    runta(&[
        "exec",
        "t-snap-f1",
        "--",
        "sh",
        "-c",
        "echo f1 > /root/a.txt; echo mine > /root/only-f1",
    ])
    .ok();
    assert_eq!(cat("t-snap-f1", "/root/a.txt").ok().stdout, "f1\n");
    assert_eq!(cat("t-snap-f2", "/root/a.txt").ok().stdout, "v1\n");
    assert_eq!(cat("t-snap-src", "/root/a.txt").ok().stdout, "v2\n");
    for f in ["t-snap-f2", "t-snap-src"] {
        assert_eq!(cat(f, "/root/only-f1").code, 1, "{f} sees f1's file");
    }

    // A paused runtime can be saved and stays paused.
    runta(&["pause", "t-snap-src"]).ok();
    runta(&["snapshot", "create", "t-snap-src", "t-snap-p"]).ok();
    assert_eq!(inspect("t-snap-src")["status"], "paused");
    runta(&["resume", "t-snap-src"]).ok();

    // ls: table, newest first; -q; --no-trunc; --json.
    let ls = runta(&["snapshot", "ls"]).ok();
    let mut lines = ls.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["ID", "NAME", "SOURCE", "SIZE", "AGE"]);
    let js = runta(&["snapshot", "ls", "--json"]).ok().json();
    let by_name = |n: &str| -> Value {
        js.as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("no {n} in {js}"))
    };
    let s1 = by_name("t-snap-1");
    let sp = by_name("t-snap-p");
    let s1_id = s1["id"].as_str().unwrap().to_string();
    assert_eq!(s1["source_runtime_name"], "t-snap-src");
    assert_eq!(s1["source_runtime_id"], inspect("t-snap-src")["id"]);
    assert!(s1["size_bytes"].as_u64().unwrap() > 0, "{s1}");
    let row = |n: &str| -> Vec<String> {
        ls.stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(n))
            .unwrap_or_else(|| panic!("no {n} row: {ls:?}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let r1 = row("t-snap-1");
    assert_eq!(r1[0], s1_id[..8]);
    assert_eq!(r1[2], "t-snap-src");
    let pos = |n: &str| ls.stdout.find(&format!(" {n} ")).unwrap();
    assert!(pos("t-snap-p") < pos("t-snap-1"), "newest first: {ls:?}");
    let q = runta(&["snapshot", "ls", "-q"]).ok();
    assert!(q.stdout.lines().any(|l| l == s1_id), "{q:?}");
    assert!(q.stdout.lines().all(|l| l.len() == 36), "{q:?}");
    assert!(runta(&["snapshot", "ls", "--no-trunc"])
        .ok()
        .stdout
        .contains(&s1_id));
    // The alias and a short id.
    let out = runta(&["checkpoint", "list", "-q"]).ok();
    assert!(out.stdout.contains(&s1_id), "{out:?}");
    let out = runta(&[
        "snapshot",
        "restore",
        &sp["id"].as_str().unwrap()[..8],
        "t-snap-f3",
        "--memory",
        "256",
    ])
    .ok();
    assert!(out.stdout.starts_with("t-snap-f3 running"), "{out:?}");
    assert_eq!(cat("t-snap-f3", "/root/a.txt").ok().stdout, "v2\n");

    // --json: the checkpoint object; the runtime object for restore.
    runta(&["shutdown", "t-snap-f3"]).ok();
    let e = runta(&["snapshot", "create", "t-snap-f3", "t-snap-off"]);
    assert_eq!(e.code, 1, "{e:?}");
    assert!(
        e.stderr.starts_with("error: ") && e.stderr.contains("it is shutdown"),
        "{e:?}"
    );
    runta(&["boot", "t-snap-f3"]).ok();
    let v = runta(&["snapshot", "create", "t-snap-f3", "t-snap-off", "--json"])
        .ok()
        .json();
    assert_eq!(v["name"], "t-snap-off");
    assert_eq!(v["source_runtime_name"], "t-snap-f3");
    assert_eq!(v["image"], "base");

    // Errors: duplicate name, unknown names (with "did you mean"), bad names.
    let e = runta(&["snapshot", "create", "t-snap-src", "t-snap-1"]);
    assert_eq!(e.code, 1, "{e:?}");
    assert!(e.stderr.contains("already exists"), "{e:?}");
    let e = runta(&["snapshot", "create", "t-snap-srx", "t-snap-x"]);
    assert_eq!(e.code, 1, "{e:?}");
    assert_eq!(
        e.stderr.trim(),
        "error: no runtime named 't-snap-srx' — did you mean 't-snap-src'?"
    );
    for args in [
        vec!["snapshot", "restore", "t-snap-1x", "t-snap-nf"],
        vec!["run", "--name", "t-snap-nf", "--from-snapshot", "t-snap-1x"],
        vec!["snapshot", "rm", "t-snap-1x"],
    ] {
        let e = runta(&args);
        assert_eq!(e.code, 1, "{args:?}: {e:?}");
        assert_eq!(
            e.stderr.trim(),
            "error: no snapshot named 't-snap-1x' — did you mean 't-snap-1'?",
            "{args:?}"
        );
    }
    let e = runta(&["snapshot", "rm", "zzzzzzzzzzzzzz"]);
    assert_eq!(e.code, 1, "{e:?}");
    assert_eq!(
        e.stderr.trim(),
        "error: no snapshot named 'zzzzzzzzzzzzzz' — see `runta snapshot ls` for the names"
    );
    let e = runta(&["snapshot", "restore", "t-snap-1x", "t-snap-nf", "--json"]);
    let err: Value = serde_json::from_str(e.stderr.trim()).expect("error JSON");
    assert_eq!(err["error"]["field"], "checkpoint");
    assert!(err["error"]["hint"]
        .as_str()
        .unwrap()
        .contains("did you mean 't-snap-1'"));
    assert_eq!(inspect("t-snap-src")["name"], "t-snap-src");
    assert_eq!(runta(&["inspect", "t-snap-nf"]).code, 1, "nothing created");
    for args in [
        vec!["snapshot", "create", "t-snap-src", "Bad_Name"],
        vec!["snapshot", "create", "t-snap-src"],
        vec!["snapshot", "restore", "t-snap-1", "Bad_Name"],
        vec!["snapshot", "restore", "t-snap-1", "x", "--memory", "1"],
        vec![
            "snapshot",
            "restore",
            "t-snap-1",
            "x",
            "--publish",
            "80/ftp",
        ],
        vec!["snapshot", "rm"],
        vec!["snapshot"],
    ] {
        let e = runta(&args);
        assert_eq!(e.code, 2, "{args:?}: {e:?}");
        assert!(e.stderr.starts_with("error:"), "{args:?}: {e:?}");
    }

    // Another tenant sees none of them and cannot use them.
    let d = daemon();
    let other = runta_opts(
        &["token", "create", "--tenant", "cli-e2e-snap-other"],
        Opts {
            env: vec![("RUNTA_TOKEN", d.admin_token.clone())],
            no_token: true,
            ..Default::default()
        },
    )
    .ok()
    .stdout
    .trim()
    .to_string();
    let as_other = |args: &[&str]| {
        runta_opts(
            args,
            Opts {
                env: vec![("RUNTA_TOKEN", other.clone())],
                no_token: true,
                ..Default::default()
            },
        )
    };
    assert_eq!(as_other(&["snapshot", "ls", "-q"]).ok().stdout, "");
    for args in [
        vec!["snapshot", "restore", "t-snap-1", "t-snap-steal"],
        vec!["snapshot", "restore", &s1_id, "t-snap-steal"],
        vec!["run", "--name", "t-snap-steal", "--from-snapshot", &s1_id],
        vec!["snapshot", "rm", "t-snap-1"],
        vec!["snapshot", "rm", &s1_id],
    ] {
        let e = as_other(&args);
        assert_eq!(e.code, 1, "{args:?}: {e:?}");
        assert!(
            e.stderr.contains("no snapshot named") && e.stderr.contains("no snapshots yet"),
            "{args:?}: {e:?}"
        );
    }
    let e = as_other(&["snapshot", "create", "t-snap-src", "t-snap-steal"]);
    assert_eq!(e.code, 1, "{e:?}");
    assert!(e.stderr.contains("no runtime named 't-snap-src'"), "{e:?}");
    assert_eq!(as_other(&["ps", "-aq"]).ok().stdout, "");

    // In use: refused, naming the runtimes built on it; then deleted.
    let e = runta(&["snapshot", "rm", "t-snap-1"]);
    assert_eq!(e.code, 1, "{e:?}");
    assert!(
        e.stderr.contains("in use")
            && e.stderr.contains("t-snap-f1")
            && e.stderr.contains("t-snap-f2"),
        "{e:?}"
    );
    assert!(runta(&["snapshot", "ls", "-q"])
        .ok()
        .stdout
        .contains(&s1_id));
    runta(&["rm", "-f", "t-snap-f1", "t-snap-f2", "t-snap-f3"]).ok();
    // t-snap-off was taken of a fork of t-snap-p: it is built on it.
    let e = runta(&["snapshot", "rm", "t-snap-p"]);
    assert_eq!(e.code, 1, "{e:?}");
    assert!(e.stderr.contains("t-snap-off"), "{e:?}");
    let out = runta(&["snapshot", "rm", "t-snap-1", "t-snap-off", "t-snap-p"]).ok();
    assert_eq!(out.stdout, "t-snap-1\nt-snap-off\nt-snap-p\n");
    let left = runta(&["snapshot", "ls", "--json"]).ok().json();
    assert!(
        !left
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"].as_str().unwrap().starts_with("t-snap-")),
        "{left}"
    );
    let e = runta(&["snapshot", "rm", "t-snap-1", "--json"]);
    assert_eq!(e.code, 1);
    let err: Value = serde_json::from_str(e.stderr.trim()).expect("error JSON");
    assert_eq!(err["error"]["code"], "not_found");
}
