//! `runta run --egress-*`, `runta egress …` and `runta audits` against a real
//! daemon and real runtimes. The outside hosts live in a network namespace this
//! test creates (198.18.61.2 = allowed.test, 198.18.61.3 = other.test, named in
//! the daemon's `--egress-hosts` file); nothing leaves the machine.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const NET: u8 = 61;

const SERVER: &str = r#"
import http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello %s\n" % self.connection.getsockname()[0]).encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
S(("0.0.0.0", 80), H).serve_forever()
"#;

/// Two HTTP test hosts in a namespace of their own, torn down on drop. One at
/// a time (they share the namespace's name and the daemon's hosts file).
struct TestHosts {
    ns: String,
    veth: String,
    server: Child,
    _one: std::sync::MutexGuard<'static, ()>,
}

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl TestHosts {
    fn new() -> TestHosts {
        let one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let tag = format!("{}", std::process::id() % 10000);
        let ns = format!("egc-{tag}");
        let veth = format!("egch{tag}");
        let peer = format!("egcp{tag}");
        let sh = |c: &str| {
            let st = Command::new("sh").arg("-c").arg(c).status().unwrap();
            assert!(st.success(), "{c}");
        };
        let quiet = |args: &[&str]| {
            let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
        };
        quiet(&["netns", "del", &ns]);
        quiet(&["link", "del", &veth]);
        sh(&format!("ip netns add {ns}"));
        sh(&format!("ip link add {veth} type veth peer name {peer}"));
        sh(&format!("ip link set {peer} netns {ns}"));
        sh(&format!(
            "ip addr add 198.18.{NET}.1/24 dev {veth} && ip link set {veth} up"
        ));
        sh(&format!(
            "ip -n {ns} addr add 198.18.{NET}.2/24 dev {peer} && ip -n {ns} addr add 198.18.{NET}.3/24 dev {peer} && ip -n {ns} link set {peer} up && ip -n {ns} link set lo up && ip -n {ns} route add default via 198.18.{NET}.1"
        ));
        let dir = daemon().data_dir.join("egress-hosts-server");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("server.py"), SERVER).unwrap();
        let server = Command::new("ip")
            .args(["netns", "exec", &ns, "/usr/bin/python3"])
            .arg(dir.join("server.py"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(
            egress_hosts_file(&daemon().data_dir),
            format!("198.18.{NET}.2 allowed.test\n198.18.{NET}.3 other.test\n"),
        )
        .unwrap();
        let t0 = Instant::now();
        while !Command::new("curl")
            .args(["-sf", "-m", "1", &format!("http://198.18.{NET}.2/")])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(t0.elapsed() < Duration::from_secs(10), "test server not up");
            std::thread::sleep(Duration::from_millis(100));
        }
        TestHosts {
            ns,
            veth,
            server,
            _one: one,
        }
    }
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        for args in [["netns", "del", &self.ns], ["link", "del", &self.veth]] {
            let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
        }
    }
}

/// `curl` from inside the runtime: (exit code, output with ` status=CODE`).
/// A test host's name is pinned to its address (`--resolve`), so a denial
/// comes from the gateway reading the Host, not only from its DNS (which
/// answers NXDOMAIN for a denied name).
fn curl(rt: &str, url: &str) -> (i32, String) {
    let host = url.split('/').nth(2).unwrap_or("");
    let pin = match host {
        "allowed.test" => format!("--resolve {host}:80:198.18.{NET}.2"),
        "other.test" => format!("--resolve {host}:80:198.18.{NET}.3"),
        _ => String::new(),
    };
    let o = runta(&[
        "exec",
        rt,
        "--",
        "sh",
        "-c",
        &format!("curl -s -m 5 {pin} -w ' status=%{{http_code}}' {url}"),
    ]);
    (o.code, o.stdout + &o.stderr)
}

/// Waits (the daemon re-reads its hosts file every 2 s) until `url` answers
/// from inside the runtime as `want` says.
fn until(rt: &str, url: &str, want: impl Fn(i32, &str) -> bool) -> (i32, String) {
    let t0 = Instant::now();
    loop {
        let (code, out) = curl(rt, url);
        if want(code, &out) || t0.elapsed() > Duration::from_secs(15) {
            return (code, out);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn reached(code: i32, out: &str, ip_last: u8) -> bool {
    code == 0 && out.contains(&format!("hello 198.18.{NET}.{ip_last}"))
}

fn denied_403(out: &str) -> bool {
    out.contains("status=403")
}

#[test]
fn cli_sets_a_policy_live_and_shows_the_audits() {
    let _c = cleanup(&["t-eg"]);
    let _h = TestHosts::new();

    // `run --egress-allow`: an allowlist from the first packet.
    let out = runta(&[
        "run",
        "--name",
        "t-eg",
        "--cpus",
        "0.5",
        "--memory",
        "256",
        "--egress-allow",
        "Allowed.TEST",
    ])
    .ok();
    assert!(out.stdout.contains("egress: allowlist"), "{out:?}");
    let show = runta(&["egress", "show", "t-eg"]).ok();
    assert!(show.stdout.starts_with("t-eg: allowlist"), "{show:?}");
    assert!(show.stdout.contains("allow   allowed.test"), "{show:?}");
    let pj = runta(&["egress", "show", "t-eg", "--json"]).ok().json();
    assert_eq!(pj["mode"], "allowlist");
    assert_eq!(pj["enabled"], true);
    assert_eq!(pj["allowed_hosts"], serde_json::json!(["allowed.test"]));

    let (code, out) = until("t-eg", "http://allowed.test/", |c, o| reached(c, o, 2));
    assert!(reached(code, &out, 2), "allowed host not reached: {out}");
    let (_, out) = curl("t-eg", "http://other.test/");
    assert!(denied_403(&out), "other.test not denied: {out}");
    assert!(!out.contains("hello"), "{out}");
    assert!(
        out.contains("other.test"),
        "the 403 does not name the host: {out}"
    );
    // The gateway's DNS does not know a denied name.
    let dns = runta(&["exec", "t-eg", "--", "getent", "hosts", "other.test"]);
    assert_ne!(dns.code, 0, "{dns:?}");
    // A program that names the allowed host but aims at the other address
    // reaches the allowed host's own resolution, never the other server.
    let forged = runta(&[
        "exec",
        "t-eg",
        "--",
        "sh",
        "-c",
        &format!("curl -s -m 5 --noproxy '*' -H 'Host: allowed.test' http://198.18.{NET}.3/"),
    ]);
    let out = forged.stdout + &forged.stderr;
    assert!(
        !out.contains(&format!("hello 198.18.{NET}.3")),
        "a forged Host reached the denied address: {out}"
    );

    // The denial is in `runta audits`, as a table and as JSON.
    let t0 = Instant::now();
    let table = loop {
        let a = runta(&["audits", "--runtime", "t-eg"]).ok();
        if a.stdout
            .lines()
            .any(|l| l.contains("other.test") && l.contains("deny"))
            || t0.elapsed() > Duration::from_secs(10)
        {
            break a;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let header: Vec<&str> = table
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["TIME", "RUNTIME", "KIND", "ACTION", "HOST", "DEST", "DETAIL"]
    );
    let row = table
        .stdout
        .lines()
        .find(|l| l.contains("other.test") && l.contains("deny"))
        .unwrap_or_else(|| panic!("no denial of other.test: {table:?}"));
    assert!(row.contains("t-eg"), "{row}");
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains("allowed.test") && l.contains("allow")),
        "{table:?}"
    );
    let all = runta(&["audits", "--runtime", "t-eg", "--json"])
        .ok()
        .json();
    let list = all.as_array().unwrap();
    assert!(
        list.iter().any(|a| {
            let e = &a["payload"]["egress"];
            let k = e["kind"].as_str().unwrap_or("");
            e[k]["action"] == "deny" && e[k]["host"] == "other.test"
        }),
        "{all}"
    );
    // Oldest first, like `runta events`.
    let times: Vec<i64> = list
        .iter()
        .map(|a| a["observed_unix_ms"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // `egress events` is the same list.
    let ev = runta(&["egress", "events", "t-eg"]).ok();
    assert!(ev.stdout.contains("other.test"), "{ev:?}");
    // DNS decisions only when asked for.
    assert!(!all.to_string().contains("dns_query"), "{all}");
    let dns = runta(&[
        "audits",
        "--runtime",
        "t-eg",
        "--kind",
        "dns_query",
        "--json",
    ])
    .ok()
    .json();
    let dns = dns.as_array().unwrap();
    assert!(
        dns.iter()
            .all(|a| a["payload"]["egress"]["kind"] == "dns_query"),
        "{dns:?}"
    );
    assert!(
        dns.iter().any(|a| {
            let q = &a["payload"]["egress"]["dns_query"];
            q["name"] == "other.test" && q["action"] == "deny"
        }),
        "{dns:?}"
    );
    let dns_table = runta(&["audits", "--runtime", "t-eg", "--kind", "dns_query"]).ok();
    assert!(
        dns_table
            .stdout
            .lines()
            .any(|l| l.contains("dns") && l.contains("other.test") && l.contains("deny")),
        "{dns_table:?}"
    );

    // Live changes, both ways.
    let out = runta(&["egress", "allow", "t-eg", "other.test"]).ok();
    assert!(out.stdout.contains("allow   other.test"), "{out:?}");
    let (code, out) = until("t-eg", "http://other.test/", |c, o| reached(c, o, 3));
    assert!(reached(code, &out, 3), "allowed live, still denied: {out}");
    runta(&["egress", "remove", "t-eg", "other.test"]).ok();
    let (_, out) = until("t-eg", "http://other.test/", |_, o| denied_403(o));
    assert!(denied_403(&out), "removed live, still reached: {out}");

    // A denylist: everything but the denied host.
    let out = runta(&[
        "egress",
        "set",
        "t-eg",
        "--mode",
        "denylist",
        "--deny",
        "other.test",
    ])
    .ok();
    assert!(out.stdout.starts_with("t-eg: denylist"), "{out:?}");
    let (code, out) = until("t-eg", "http://allowed.test/", |c, o| reached(c, o, 2));
    assert!(reached(code, &out, 2), "{out}");
    let (_, out) = curl("t-eg", "http://other.test/");
    assert!(denied_403(&out), "{out}");
    // `enable` turns the same lists into an allowlist: allowed.test was taken
    // off nothing, other.test is still denied, and nothing else is allowed.
    runta(&["egress", "allow", "t-eg", "allowed.test"]).ok();
    let en = runta(&["egress", "enable", "t-eg", "--json"]).ok().json();
    assert_eq!(en["mode"], "allowlist", "{en}");
    assert_eq!(
        en["denied_hosts"],
        serde_json::json!(["other.test"]),
        "{en}"
    );
    let dis = runta(&["egress", "disable", "t-eg", "--json"]).ok().json();
    assert_eq!(dis["mode"], "denylist", "{dis}");

    // Off: open again, nothing filtered.
    let off = runta(&["egress", "off", "t-eg"]).ok();
    assert_eq!(
        off.stdout.trim(),
        "t-eg: open (nothing filtered)",
        "{off:?}"
    );
    let (code, out) = until("t-eg", "http://other.test/", |c, o| reached(c, o, 3));
    assert!(reached(code, &out, 3), "open policy still denies: {out}");
}

#[test]
fn audits_follow_prints_new_decisions_as_they_come() {
    let _c = cleanup(&["t-eg-follow"]);
    let _h = TestHosts::new();
    runta(&[
        "run",
        "--name",
        "t-eg-follow",
        "--cpus",
        "0.5",
        "--memory",
        "256",
        "--egress-mode",
        "allowlist",
    ])
    .ok();
    let d = daemon();
    let mut child = Command::new(runta_bin())
        .args(["audits", "--runtime", "t-eg-follow", "--follow", "--json"])
        .env("RUNTA_TOKEN", &d.token)
        .env("RUNTA_ENDPOINT", &d.endpoint)
        .env("RUNTA_CONFIG", "/nonexistent/runta-config.toml")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // An allowlist with nothing on it: every name is denied.
    let (_, out) = curl("t-eg-follow", "http://allowed.test/");
    assert!(denied_403(&out), "{out}");
    let t0 = Instant::now();
    let mut found: Option<Value> = None;
    while t0.elapsed() < Duration::from_secs(20) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not one JSON object a line ({e}): {line}"));
            if v.to_string().contains("allowed.test") {
                found = Some(v);
                break;
            }
        }
    }
    // SAFETY: killing our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let v = found.expect("--follow never printed the denial");
    let e = &v["payload"]["egress"];
    let k = e["kind"].as_str().unwrap();
    assert_eq!(e[k]["action"], "deny", "{v}");
}

#[test]
fn careless_and_hostile_input_is_refused_with_the_reason() {
    let _c = small("t-eg-bad");
    for (args, needle) in [
        (
            vec![
                "run",
                "--name",
                "t-eg-x",
                "--egress-allow",
                "https://evil.test/x",
            ],
            "URL",
        ),
        (
            vec!["run", "--name", "t-eg-x", "--egress-allow", "evil.test:443"],
            "port",
        ),
        (
            vec!["run", "--name", "t-eg-x", "--egress-deny", "a b"],
            "not a host name",
        ),
        (
            vec!["run", "--name", "t-eg-x", "--egress-allow", "10.0.0.0/33"],
            "prefix",
        ),
        (
            vec!["run", "--name", "t-eg-x", "--egress-allow", ""],
            "empty",
        ),
        (
            vec!["run", "--name", "t-eg-x", "--egress-mode", "blocklist"],
            "allowlist",
        ),
        (
            vec!["egress", "allow", "t-eg-bad", "file:///etc/passwd"],
            "URL",
        ),
        (vec!["egress", "allow", "t-eg-bad"], "HOST"),
        (vec!["egress", "set", "t-eg-bad"], "--mode"),
        (
            vec!["egress", "set", "t-eg-bad", "--mode", "open"],
            "denylist",
        ),
        (vec!["audits", "--category", "network"], "egress"),
        (vec!["audits", "--kind", "everything"], "tcp_connection"),
        (vec!["audits", "--limit", "0"], "limit"),
        (vec!["audits", "--limit", "100000"], "limit"),
    ] {
        let o = runta(&args);
        assert_eq!(o.code, 2, "{args:?}: {o:?}");
        assert!(
            o.stderr.contains(needle),
            "{args:?}: {needle:?} not in {o:?}"
        );
    }
    // Nothing was created by the refused runs.
    assert_eq!(runta(&["inspect", "t-eg-x"]).code, 1);

    // What only the daemon can judge: a clear API error naming the field.
    let many: Vec<String> = (0..257).map(|i| format!("h{i}.test")).collect();
    let mut args = vec!["egress", "set", "t-eg-bad"];
    for h in &many {
        args.push("--allow");
        args.push(h);
    }
    let o = runta(&args);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("egress_policy.allowed_hosts"), "{o:?}");
    assert!(o.stderr.contains("256"), "{o:?}");
    let j = runta(&[&args[..], &["--json"]].concat());
    assert_eq!(j.code, 1, "{j:?}");
    let err: Value = serde_json::from_str(&j.stderr).unwrap_or_else(|e| panic!("{e}: {j:?}"));
    assert!(
        err.to_string().contains("egress_policy.allowed_hosts"),
        "{err}"
    );

    // The refused change left the policy as it was.
    let p = runta(&["egress", "show", "t-eg-bad", "--json"]).ok().json();
    assert_eq!(p["mode"], "denylist", "{p}");
    assert_eq!(p["allowed_hosts"], serde_json::json!([]), "{p}");

    // Unknown runtimes: the usual "no runtime named".
    let o = runta(&["egress", "allow", "t-eg-nope", "a.test"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("no runtime named 't-eg-nope'"), "{o:?}");
    let o = runta(&["audits", "--runtime", "t-eg-nope"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("no runtime named"), "{o:?}");
}
