//! Red-team pass on Dockerfile builds (docs/security.md, Image builds
//! red-team pass): each test performs an attack through the API of a real
//! runtad with a real buildah and asserts it is refused with a 4xx naming
//! the Dockerfile line, or that its effect is absent.
//!
//! Needs root and `buildah`; each test prints SKIPPED and returns without it.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::registry::have;
use common::{Client, Daemon, TestNet};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

macro_rules! skip_without_buildah {
    () => {
        if !have("buildah") {
            eprintln!("SKIPPED: buildah is not installed (apt-get install buildah)");
            return;
        }
    };
}

/// A `docker-registry` on a free loopback port (plain HTTP), when the
/// tool is installed; it dies with the test process.
fn registry() -> Option<&'static str> {
    static R: OnceLock<Option<String>> = OnceLock::new();
    R.get_or_init(|| {
        if !have("docker-registry") {
            return None;
        }
        let root = tmp("rtb-reg");
        let addr = format!("127.0.0.1:{}", common::free_port());
        let cfg = root.join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                root.join("data").display()
            ),
        )
        .unwrap();
        // From a thread that lives as long as the process: PDEATHSIG fires
        // when the spawning thread ends.
        std::thread::spawn(move || {
            use std::os::unix::process::CommandExt;
            let mut c = Command::new("docker-registry");
            c.args(["serve", cfg.to_str().unwrap()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            // SAFETY: prctl in the child before exec.
            unsafe {
                c.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            // This thread holds the registry until the process ends.
            let mut child = c.spawn().expect("start docker-registry");
            let _ = child.wait();
        });
        let url = format!("http://{addr}/v2/");
        let up = (0..300).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "-m", "1", &url])
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(up, "docker-registry did not start");
        Some(addr)
    })
    .as_deref()
}

fn daemon() -> &'static Daemon {
    static D: OnceLock<Daemon> = OnceLock::new();
    D.get_or_init(|| match registry() {
        Some(r) => Daemon::start_new(&["--insecure-registry", r]),
        None => Daemon::start_new(&[]),
    })
}

fn tmp(prefix: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A tar of `dir` (symlinks stored as links).
fn tar_of(dir: &Path) -> Vec<u8> {
    let out = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(dir)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// A context holding `Dockerfile` and `files`.
fn context(dockerfile: &str, files: &[(&str, &str)]) -> Vec<u8> {
    let d = tmp("rtb-ctx");
    std::fs::write(d.join("Dockerfile"), dockerfile).unwrap();
    for (n, body) in files {
        std::fs::write(d.join(n), body).unwrap();
    }
    let t = tar_of(&d);
    let _ = std::fs::remove_dir_all(&d);
    t
}

struct Built {
    status: StatusCode,
    /// The error body of a refusal (status other than 200).
    error: Value,
    log: Vec<String>,
    /// The last event of a 200 answer (`done` or `error`).
    last: Value,
}

impl Built {
    fn done(&self) -> &str {
        assert_eq!(self.status, StatusCode::OK, "{}", self.error);
        assert_eq!(
            self.last["type"],
            "done",
            "{}\n{}",
            self.last,
            self.log.join("\n")
        );
        self.last["image"]["name"].as_str().unwrap()
    }

    /// A refusal before anything ran: 422 on `dockerfile`, naming the line.
    fn refused_at(&self, line: usize, needle: &str) {
        assert_eq!(
            self.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "expected a refusal naming line {line} ({needle}), got {} {}\n{}",
            self.status,
            self.last,
            self.log.join("\n")
        );
        assert_eq!(
            self.error["error"]["code"], "invalid_argument",
            "{}",
            self.error
        );
        assert_eq!(self.error["error"]["field"], "dockerfile", "{}", self.error);
        let msg = self.error["error"]["message"].as_str().unwrap_or("");
        assert!(
            msg.contains(&format!("line {line}:")) && msg.contains(needle),
            "{msg:?} should name line {line} and mention {needle:?}"
        );
        assert!(self.log.is_empty());
    }
}

/// Posts a build with `query` (`name=…&build_arg=…`).
async fn build_q(c: &Client, query: &str, tar: Vec<u8>) -> Built {
    let resp = c
        .http
        .request(Method::POST, format!("{}/v1/images/builds?{query}", c.base))
        .bearer_auth(&c.token)
        .header("content-type", "application/x-tar")
        .timeout(Duration::from_secs(900))
        .body(tar)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    if status != StatusCode::OK {
        return Built {
            status,
            error: serde_json::from_str(&text).unwrap_or(Value::Null),
            log: vec![],
            last: Value::Null,
        };
    }
    let mut log = Vec::new();
    let mut last = Value::Null;
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        match v["type"].as_str() {
            Some("log") => log.push(v["line"].as_str().unwrap().to_string()),
            _ => last = v,
        }
    }
    Built {
        status,
        error: Value::Null,
        log,
        last,
    }
}

async fn build(c: &Client, name: &str, dockerfile: &str, files: &[(&str, &str)]) -> Built {
    build_q(c, &format!("name={name}"), context(dockerfile, files)).await
}

/// The step numbers the log says came from the cache.
fn cached_steps(log: &[String]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut step = 0;
    for l in log {
        if let Some(rest) = l.strip_prefix("STEP ") {
            step = rest.split('/').next().unwrap().parse().unwrap();
        } else if l.starts_with("--> Using cache") {
            out.push(step);
        }
    }
    out
}

/// A TCP listener on every address of the host that counts connections: a
/// stand-in for any service of the daemon host a build must not reach.
fn host_service() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            n2.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut s) = s {
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let mut b = [0u8; 512];
                let _ = s.read(&mut b);
                use std::io::Write;
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nhost-secret\n");
            }
        }
    });
    (port, n)
}

// ---- 1. RUN flags ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_mounts_and_network_flags_are_refused() {
    skip_without_buildah!();
    let c = daemon().tenant("rtb-mount").await;
    for flag in [
        "--mount=type=bind,source=/,target=/h",
        "--mount=type=bind,from=base,source=/,target=/h",
        "--mount=type=cache,target=/h,sharing=shared",
        "--mount=type=tmpfs,target=/h",
        "--mount=type=secret,id=x,src=/etc/shadow,target=/h/etc/shadow",
        "--mount=type=ssh",
        "--network=host",
        "--security=insecure",
    ] {
        let df = format!("FROM base\nRUN {flag} cat /h/etc/shadow > /leak || true\n");
        let b = build(&c, "mount:1", &df, &[]).await;
        b.refused_at(2, "RUN flags");
    }
    // Spelled with odd whitespace and a continuation, the flag is still seen.
    let b = build(
        &c,
        "mount:2",
        "FROM base\nRUN \\\n\t--mount=type=bind,source=/,target=/h \\\n  cat /h/etc/shadow\n",
        &[],
    )
    .await;
    b.refused_at(2, "RUN flags");
}

// ---- 2. remote ADD/COPY sources ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_add_sources_are_refused_and_nothing_is_fetched() {
    skip_without_buildah!();
    let c = daemon().tenant("rtb-ssrf").await;
    let (port, hits) = host_service();
    let url = format!("http://127.0.0.1:{port}/secret");
    for (df, line, needle) in [
        (format!("FROM base\nADD {url} /x\n"), 2, "remote"),
        (format!("FROM base\nADD [\"{url}\", \"/x\"]\n"), 2, "remote"),
        (
            format!("FROM base\nADD \"http\"://127.0.0.1:{port}/x /x\n"),
            2,
            "remote",
        ),
        (
            format!("FROM base\nARG U={url}\nADD $U /x\n"),
            3,
            "variable",
        ),
        (
            format!("FROM base\nENV U={url}\nADD ${{U}} /x\n"),
            3,
            "variable",
        ),
        (
            "FROM base\nADD http://169.254.169.254/latest/meta-data/ /m\n".into(),
            2,
            "remote",
        ),
        (
            "FROM base\nADD git@github.com:runta/secret.git /src\n".into(),
            2,
            "remote",
        ),
        (format!("FROM base\nCOPY {url} /x\n"), 2, "remote"),
    ] {
        let b = build(&c, "ssrf:1", &df, &[]).await;
        b.refused_at(line, needle);
    }
    // The same with a build arg carrying the URL.
    let b = build_q(
        &c,
        &format!("name=ssrf:2&build_arg=U={url}"),
        context("FROM base\nARG U\nADD $U /x\n", &[]),
    )
    .await;
    b.refused_at(3, "variable");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the daemon host fetched");
}

// ---- 3. COPY --from and FROM reach only the store, per tenant ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_and_from_reach_only_this_tenants_store_images() {
    skip_without_buildah!();
    let d = daemon();
    let a = d.tenant("rtb-ta").await;
    let b = d.tenant("rtb-tb").await;
    let built = build(
        &a,
        "secret:1",
        "FROM base\nCOPY secret.txt /secret.txt\n",
        &[("secret.txt", "tenant A's secret\n")],
    )
    .await;
    let a_img = built.done().to_string();
    assert!(a_img.starts_with("localhost/rtb-ta-"), "{a_img}");
    // buildah's own names for the base copy and the build tags.
    let base_local = built
        .log
        .iter()
        .find_map(|l| l.strip_prefix("runta: base is sha256:"))
        .map(|h| format!("localhost/runta-from:{}", &h[..32]))
        .expect("the log names the base digest");

    for (df, line, needle) in [
        (format!("FROM {a_img}\n"), 1, "another tenant"),
        (
            format!("FROM base\nCOPY --from={a_img} /secret.txt /stolen\n"),
            2,
            "another tenant",
        ),
        (format!("FROM {base_local}\n"), 1, "not in the store"),
        (
            format!("FROM base\nCOPY --from={base_local} /etc/hostname /x\n"),
            2,
            "not in the store",
        ),
        (
            "FROM base\nCOPY --from=localhost/runta-build:latest / /x\n".into(),
            2,
            "not in the store",
        ),
        ("FROM base\nCOPY --from=$X / /x\n".into(), 2, "--from"),
        (
            "FROM base\nCOPY --from=3 / /x\n".into(),
            2,
            "no earlier stage",
        ),
        // A byte-order mark does not hide a FROM from the checks.
        (format!("\u{feff}FROM {a_img}\n"), 1, "another tenant"),
    ] {
        build(&b, "steal:1", &df, &[])
            .await
            .refused_at(line, needle);
    }
    // Tenant A uses its own image, and B copies from an earlier stage and
    // from a shared image, each rewritten to the store's copy.
    let own = build(
        &a,
        "own:1",
        &format!("FROM {a_img}\nRUN cat /secret.txt\n"),
        &[],
    )
    .await;
    own.done();
    let ok = build(
        &b,
        "stages:1",
        "FROM base AS one\nRUN echo from-stage > /s\nFROM base\nCOPY --from=one /s /s\nCOPY --from=0 /s /s0\nCOPY --from=base /etc/debian_version /v\nRUN cat /s /s0 && test -s /v && echo copies-ok\n",
        &[],
    )
    .await;
    ok.done();
    assert!(ok.log.iter().any(|l| l == "copies-ok"), "{:?}", ok.log);
}

// ---- 4. the step cache is per tenant ----

/// Tenant A makes a RUN step's result depend on a value outside its cache
/// key (`HTTP_PROXY` is one of Docker's predefined build args: passed to
/// RUN, left out of the history the cache key is made from), then tenant
/// B builds the same Dockerfile without it.
const POISON: &str =
    "FROM base\nRUN echo \"result=${HTTP_PROXY:-clean}\" > /result\nRUN cat /result\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_poison_another_tenants_step_cache() {
    skip_without_buildah!();
    let d = daemon();
    let a = d.tenant("rtb-pa").await;
    let b = d.tenant("rtb-pb").await;
    let ra = build_q(
        &a,
        "name=poison:1&build_arg=HTTP_PROXY=poisoned-by-a",
        context(POISON, &[]),
    )
    .await;
    ra.done();
    assert!(
        ra.log.iter().any(|l| l == "result=poisoned-by-a"),
        "{:?}",
        ra.log
    );
    // The attack is real: A's own build without the arg reuses the step.
    let ra2 = build(&a, "poison:2", POISON, &[]).await;
    ra2.done();
    assert_eq!(cached_steps(&ra2.log), vec![2, 3], "{:?}", ra2.log);
    // B's identical build runs its own steps and gets its own result.
    let rb = build(&b, "victim:1", POISON, &[]).await;
    let img = rb.done().to_string();
    assert_eq!(cached_steps(&rb.log), Vec::<usize>::new(), "{:?}", rb.log);
    assert!(rb.log.iter().any(|l| l == "result=clean"), "{:?}", rb.log);
    let r = common::name("victim");
    b.create_with(json!({"name": r, "image": img,
        "resources": {"requests": {"vcpus": 1, "memory_mib": 256}}}))
        .await;
    assert_eq!(b.out(&r, "cat /result").await, "result=clean\n");
    // Each tenant's storage is its own folder.
    let builder = d.data_dir.join("images").join("builder");
    let dirs: Vec<String> = std::fs::read_dir(&builder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for t in ["t-rtb-pa-", "t-rtb-pb-"] {
        assert!(dirs.iter().any(|d| d.starts_with(t)), "{dirs:?}");
    }
}

// ---- 5. RUN steps reach no network ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_steps_reach_neither_the_host_nor_private_networks() {
    skip_without_buildah!();
    let d = daemon();
    let c = d.tenant("rtb-net").await;
    let (port, hits) = host_service();
    let api_port = d.endpoint.rsplit(':').next().unwrap().to_string();
    // A test host on a private 198.18.x address, answering HTTP on port 80.
    let tn = TestNet::new("rtbn", 91, &[2]);
    let mut server = Command::new("ip")
        .args(["netns", "exec", &tn.ns, "python3", "-m", "http.server"])
        .args(["--bind", "0.0.0.0", "80"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "-m", "1"])
            .arg(format!("http://{}/", tn.ip(2)))
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(up, "the test host did not come up");
    // A public-like host: 203.0.113.7 behind a router hop (198.18.92.2), so
    // it is on none of the host's own subnets, as an Internet host is not.
    let pubnet = TestNet::new("rtbq", 92, &[2]);
    let public = "203.0.113.7";
    pubnet.sh(&format!(
        "ip -n {} addr add {public}/32 dev lo && ip route replace {public}/32 via {}",
        pubnet.ns,
        pubnet.ip(2)
    ));
    let mut pub_server = Command::new("ip")
        .args(["netns", "exec", &pubnet.ns, "python3", "-m", "http.server"])
        .args(["--bind", public, "80"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "-m", "1"])
            .arg(format!("http://{public}/"))
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(up, "the public-like test host did not come up");
    // Every address the host has, the runtime gateway and buildah's default
    // bridge gateway, on the host service's port and the API's.
    let mut targets: Vec<String> = vec![
        format!("{}:80", tn.ip(2)),
        format!("{}:{port}", tn.ip(1)),
        format!("10.{}.0.1:{api_port}", d.subnet_octet),
        format!("10.88.0.1:{port}"),
        format!("10.88.0.1:{api_port}"),
        "169.254.169.254:80".into(),
    ];
    let addrs = Command::new("sh")
        .args(["-c", "ip -4 -o addr show | awk '{print $4}' | cut -d/ -f1"])
        .output()
        .unwrap();
    for a in String::from_utf8_lossy(&addrs.stdout).split_whitespace() {
        if a != "127.0.0.1" {
            targets.push(format!("{a}:{port}"));
        }
    }
    let mut probe = String::from("RUN ");
    for t in &targets {
        let (h, p) = t.rsplit_once(':').unwrap();
        probe.push_str(&format!(
            "(timeout 3 bash -c 'exec 3<>/dev/tcp/{h}/{p}' 2>/dev/null && echo REACHED {t} || echo blocked {t}); "
        ));
    }
    // The allowed path: outbound NAT to a public-like address works.
    probe.push_str(&format!(
        "(timeout 5 bash -c 'exec 3<>/dev/tcp/{public}/80' && echo PUBLIC-OK || echo public-failed); "
    ));
    probe.push_str("echo probe-done\n");
    let b = build(&c, "net:1", &format!("FROM base\n{probe}"), &[]).await;
    b.done();
    assert!(b.log.iter().any(|l| l == "probe-done"), "{:?}", b.log);
    let reached: Vec<&String> = b.log.iter().filter(|l| l.starts_with("REACHED")).collect();
    assert!(reached.is_empty(), "a RUN step reached {reached:?}");
    for t in &targets {
        assert!(
            b.log.iter().any(|l| *l == format!("blocked {t}")),
            "{t} not probed: {:?}",
            b.log
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the host service was reached"
    );
    assert!(
        b.log.iter().any(|l| l == "PUBLIC-OK"),
        "outbound NAT to a public-like host failed: {:?}",
        b.log
    );
    // The build's namespace, link and rules are gone.
    let ns = b
        .log
        .iter()
        .find_map(|l| l.strip_prefix("runta: RUN steps in network "))
        .expect("the log names the build network")
        .to_string();
    let id: String = ns["rtbuild-".len()..].chars().take(9).collect();
    assert!(!Path::new("/run/netns").join(&ns).exists(), "{ns} is left");
    assert!(
        !Path::new("/sys/class/net")
            .join(format!("rbh{id}"))
            .exists(),
        "its link is left"
    );
    let rules = Command::new("iptables-save").output().unwrap();
    assert!(
        !String::from_utf8_lossy(&rules.stdout).contains(&format!("RTB-{id}")),
        "its rules are left"
    );
    for s in [&mut server, &mut pub_server] {
        let _ = s.kill();
        let _ = s.wait();
    }
    drop(tn);
    drop(pubnet);
}

// ---- 6. contexts, Dockerfile paths, directives, sizes ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_links_paths_directives_and_sizes() {
    skip_without_buildah!();
    let c = daemon().tenant("rtb-ctx").await;
    // A file of the host's with a token no image holds.
    let token = format!("host-token-{}", uuid::Uuid::new_v4().simple());
    let secret = std::env::temp_dir().join(format!("rtb-secret-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&secret, &token).unwrap();

    // Links to the host's files in the context: buildah resolves them
    // inside the context, so nothing of the host's reaches the image.
    let dir = tmp("rtb-links");
    std::os::unix::fs::symlink(&secret, dir.join("secret")).unwrap();
    std::os::unix::fs::symlink("/", dir.join("hostroot")).unwrap();
    let up = format!("../../../../../../..{}", secret.display());
    std::os::unix::fs::symlink(&up, dir.join("up")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", dir.join("shadow")).unwrap();
    // A .dockerignore only ever leaves files out; `!` patterns naming host
    // paths add nothing.
    std::fs::write(
        dir.join(".dockerignore"),
        format!("../*\n!{}\n!../../etc/shadow\n", secret.display()),
    )
    .unwrap();
    let via_root = format!("hostroot{}", secret.display());
    for (i, src) in ["secret", via_root.as_str(), "up", "shadow", "."]
        .iter()
        .enumerate()
    {
        std::fs::write(
            dir.join("Dockerfile"),
            format!("FROM base\nCOPY {src} /leak{i}\n"),
        )
        .unwrap();
        let b = build_q(&c, &format!("name=links:{i}"), tar_of(&dir)).await;
        assert_eq!(b.status, StatusCode::OK, "{}", b.error);
        if b.last["type"] == "done" {
            let img = b.last["image"]["name"].as_str().unwrap();
            let r = common::name("links");
            c.create_with(json!({"name": r, "image": img,
                "resources": {"requests": {"vcpus": 1, "memory_mib": 256}}}))
                .await;
            let got = c
                .out(
                    &r,
                    &format!("cat /leak{i} 2>/dev/null; grep -rs {token} /leak{i}; true"),
                )
                .await;
            assert!(
                !got.contains(&token),
                "COPY {src}: the host's file reached the image"
            );
            let (st, _) = c.delete(&format!("/v1/runtimes/{r}")).await;
            assert!(st.is_success());
        } else {
            assert_eq!(b.last["type"], "error", "{}", b.last);
        }
    }
    // An ignore file that is a link to a host file: buildah would read the
    // host file's lines as patterns, telling which context names match them.
    for ignore in [".dockerignore", ".containerignore"] {
        let dir = tmp("rtb-ignore");
        std::os::unix::fs::symlink(&secret, dir.join(ignore)).unwrap();
        std::fs::write(dir.join(&token), "guess").unwrap();
        std::fs::write(dir.join("Dockerfile"), "FROM base\nCOPY . /c\n").unwrap();
        let b = build_q(&c, "name=ignore:1", tar_of(&dir)).await;
        common::assert_error(b.status, &b.error, 422, "invalid_argument", ignore);
        assert_eq!(b.error["error"]["field"], "context", "{}", b.error);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_file(&secret);
    let _ = std::fs::remove_dir_all(&dir);

    // The Dockerfile path: absolute or `..` refused before the upload.
    for df in ["/etc/shadow", "../Dockerfile", "a/../../x"] {
        let b = build_q(
            &c,
            &format!("name=df:1&dockerfile={}", urlenc(df)),
            context("FROM base\n", &[]),
        )
        .await;
        common::assert_error(
            b.status,
            &b.error,
            422,
            "invalid_argument",
            "inside the context",
        );
    }

    // Build args cannot inject lines or flags into a rewritten FROM, and
    // their names are checked.
    for v in [
        "base\nRUN --mount=type=bind,source=/,target=/h cat /h/etc/shadow",
        "base AS x",
        "localhost/runta-from:0000",
    ] {
        let b = build_q(
            &c,
            &format!("name=inj:1&build_arg=B={}", urlenc(v)),
            context("ARG B\nFROM $B\n", &[]),
        )
        .await;
        b.refused_at(2, "");
    }
    let b = build_q(
        &c,
        &format!("name=inj:2&build_arg={}", urlenc("A B=1")),
        context("FROM base\n", &[]),
    )
    .await;
    common::assert_error(b.status, &b.error, 422, "invalid_argument", "build_arg");

    // Heredocs, the escape directive, ONBUILD: refused by line.
    for (df, line, needle) in [
        ("FROM base\nRUN <<EOF\ncat /etc/shadow\nEOF\n", 2, "heredoc"),
        (
            "# escape=`\nFROM base\nRUN echo `\nFROM localhost/runta-build:x\n",
            1,
            "escape",
        ),
        (
            "FROM base\nONBUILD RUN --mount=type=bind,source=/,target=/h true\n",
            2,
            "ONBUILD",
        ),
    ] {
        build(&c, "dir:1", df, &[]).await.refused_at(line, needle);
    }
    // `# syntax=` names a BuildKit frontend image: buildah never fetches
    // one, so the line is a comment; the build runs and pulls nothing.
    let b = build(
        &c,
        "syntax:1",
        "# syntax=198.18.91.2/evil/frontend:1\nFROM base\nRUN echo syntax-ignored\n",
        &[],
    )
    .await;
    b.done();
    assert!(!b.log.iter().any(|l| l.contains("pulling")), "{:?}", b.log);

    // Huge Dockerfiles and lines.
    let long = format!("FROM base\nRUN echo {}\n", "a".repeat(70 << 10));
    build(&c, "big:1", &long, &[])
        .await
        .refused_at(2, "longer than");
    let huge = format!("FROM base\n{}", "# x\n".repeat(300_000));
    let b = build(&c, "big:2", &huge, &[]).await;
    common::assert_error(b.status, &b.error, 422, "invalid_argument", "at most 1 MiB");
}

fn urlenc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---- ONBUILD triggers of a pulled image ----

/// Runs `buildah` with a storage of the test's own.
fn buildah(root: &Path, args: &[&str]) -> String {
    let out = Command::new("buildah")
        .arg("--root")
        .arg(root.join("storage"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args(["--storage-driver", "vfs"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "buildah {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_with_onbuild_triggers_is_refused() {
    skip_without_buildah!();
    let Some(reg) = registry() else {
        eprintln!("SKIPPED: docker-registry is not installed");
        return;
    };
    if !have("busybox") {
        eprintln!("SKIPPED: busybox is not installed");
        return;
    }
    // A registry image whose config carries a trigger that would bind-mount
    // the daemon host's root into a later build's step.
    let root = tmp("rtb-onbuild");
    let c = buildah(&root, &["from", "scratch"]);
    let m = buildah(&root, &["mount", &c]);
    std::fs::create_dir_all(Path::new(&m).join("bin")).unwrap();
    std::fs::copy("/usr/bin/busybox", Path::new(&m).join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", Path::new(&m).join("bin/sh")).unwrap();
    buildah(&root, &["umount", &c]);
    buildah(
        &root,
        &[
            "config",
            "--onbuild",
            "RUN --mount=type=bind,source=/,target=/h cat /h/etc/shadow > /leak",
            &c,
        ],
    );
    buildah(
        &root,
        &[
            "commit",
            "--quiet",
            "--format",
            "docker",
            &c,
            "evil-onbuild",
        ],
    );
    let target = format!("{reg}/evil/onbuild:1");
    buildah(
        &root,
        &[
            "push",
            "--quiet",
            "--tls-verify=false",
            "--format",
            "v2s2",
            "evil-onbuild",
            &format!("docker://{target}"),
        ],
    );
    let cl = daemon().tenant("rtb-onb").await;
    // First use: pulled during the build, then refused before any step.
    let b = build(&cl, "onb:1", &format!("FROM {target}\nRUN true\n"), &[]).await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.error);
    assert_eq!(b.last["type"], "error", "{}\n{}", b.last, b.log.join("\n"));
    assert!(
        b.last["message"]
            .as_str()
            .unwrap_or("")
            .contains("line 1: image")
            && b.last["message"].as_str().unwrap_or("").contains("ONBUILD"),
        "{}",
        b.last
    );
    assert!(!b.log.iter().any(|l| l.starts_with("STEP")), "{:?}", b.log);
    // Now in the store: refused before the answer starts.
    build(
        &cl,
        "onb:2",
        &format!("FROM base\nCOPY --from={target} /bin/busybox /bb\n"),
        &[],
    )
    .await
    .refused_at(2, "ONBUILD");
    let _ = Command::new("buildah")
        .arg("--root")
        .arg(root.join("storage"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args(["--storage-driver", "vfs", "rm", "--all"])
        .status();
    let _ = std::fs::remove_dir_all(&root);
}

// ---- one tenant cannot take every build slot ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_endless_builds_do_not_block_another_tenants_build() {
    skip_without_buildah!();
    let d = daemon();
    let a = d.tenant("rtb-hog").await;
    let b = d.tenant("rtb-fair").await;
    // Two slow builds of A (there are two build slots in all).
    let slow = |n: &'static str| {
        let a = Client::new(&a.base, &a.token);
        tokio::spawn(
            async move { build(&a, n, &format!("FROM base\nRUN sleep 90 # {n}\n"), &[]).await },
        )
    };
    let (h1, h2) = (slow("hog:1"), slow("hog:2"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t0 = std::time::Instant::now();
    let fair = build(&b, "fair:1", "FROM base\nRUN echo fair\n", &[]).await;
    fair.done();
    eprintln!(
        "B's build took {:?} while A's two 90 s builds ran",
        t0.elapsed()
    );
    // The order, not a time: B's build is done while A's still run.
    assert!(
        !h1.is_finished() && !h2.is_finished(),
        "B's build waited until one of A's was done"
    );
    for h in [h1, h2] {
        h.await.unwrap().done();
    }
}
