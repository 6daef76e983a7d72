//! Images made by Runta: `commit` of a runtime (whiteouts, opaque dirs,
//! Runta's own files left out), `push` to a real registry on loopback
//! (Debian's `docker-registry`, with and without Basic auth) checked with
//! `skopeo` + `umoci unpack`, and Dockerfile builds through buildah (the step
//! cache, a runtime from the result, hostile contexts). docs/images.md.
//!
//! Needs root, `docker-registry`, `skopeo`, `umoci`, `buildah` and `python3`;
//! each test prints SKIPPED and returns when a tool is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::registry::{have, start_registry, Registry};
use common::{Client, Daemon};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn missing(tools: &[&str]) -> Option<String> {
    tools.iter().find(|t| !have(t)).map(|t| {
        format!("{t} is not installed (apt-get install docker-registry skopeo umoci buildah)")
    })
}

macro_rules! skip_without {
    ($($t:expr),*) => {
        if let Some(why) = missing(&[$($t),*]) {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

struct World {
    plain: Registry,
    authed: Registry,
    daemon: Daemon,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let plain = start_registry(None, None);
        let authed = start_registry(None, Some(("pusher", "s3cret-pw")));
        let daemon = Daemon::start_new(&[
            "--insecure-registry",
            &plain.addr,
            "--insecure-registry",
            &authed.addr,
        ]);
        World {
            plain,
            authed,
            daemon,
        }
    })
}

fn admin(w: &World) -> Client {
    Client::new(&w.daemon.endpoint, &w.daemon.admin_token)
}

fn tmp(prefix: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a runtime of the test does to its files before the commit.
const CHANGES: &str = r#"set -e
mkdir -p /data && echo created > /data/new.txt
echo changed > /etc/debian_version
rm /etc/issue
rm -rf /etc/apt/apt.conf.d && mkdir /etc/apt/apt.conf.d && echo only > /etc/apt/apt.conf.d/only
ln -s /etc/shadow /data/outside-link
ln /data/new.txt /data/hard
printf x > "/data/line
break"
chmod 4755 /data/new.txt
"#;

/// Checks, inside runtime `n`, what [`CHANGES`] did.
async fn check_changes(c: &Client, n: &str) {
    assert_eq!(c.out(n, "cat /data/new.txt").await, "created\n");
    assert_eq!(c.out(n, "cat /etc/debian_version").await, "changed\n");
    assert_eq!(
        c.out(n, "test -e /etc/issue && echo yes || echo no").await,
        "no\n"
    );
    assert_eq!(c.out(n, "ls -A /etc/apt/apt.conf.d").await, "only\n");
    assert_eq!(
        c.out(n, "readlink /data/outside-link").await,
        "/etc/shadow\n"
    );
    assert_eq!(
        c.out(n, "stat -c %i /data/new.txt; stat -c %i /data/hard")
            .await
            .lines()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        1,
        "the hard link is one file"
    );
    assert_eq!(c.out(n, "stat -c %a /data/new.txt").await, "4755\n");
    assert_eq!(c.out(n, "cat '/data/line\nbreak'").await, "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_runs_pushes_and_pulls_back_equal() {
    skip_without!("docker-registry", "skopeo", "umoci", "python3", "curl");
    let w = world();
    let c = w.daemon.tenant("commit").await;
    let n = common::name("src");
    c.create(&n, 256).await;
    let d = c.sh(&n, CHANGES).await;
    assert_eq!(d["exit_code"], 0, "{d}");
    // A user edit of a managed file without the marker is kept; the
    // runtime's own hostname never is.
    c.out(
        &n,
        "printf '127.0.0.1 localhost\\n10.9.9.9 mine\\n' > /etc/hosts",
    )
    .await;

    // Running: frozen for the copy, running again after.
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{n}/commit"),
            json!({"name": "app:1"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(c.status(&n).await, "running");
    let name = v["data"]["name"].as_str().unwrap().to_string();
    assert!(
        name.starts_with("localhost/commit-") && name.ends_with("/app:1"),
        "{name}"
    );
    let digest = v["data"]["digest"].as_str().unwrap().to_string();
    let base_layers = v["data"]["layers"].as_u64().unwrap();
    assert!(base_layers >= 2, "base layer + the runtime's: {v}");

    // A new runtime of the image sees every change, and its own hostname.
    let m = common::name("copy");
    c.create_with(json!({"name": m, "image": name,
        "resources": {"requests": {"vcpus": 1, "memory_mib": 256}}}))
        .await;
    check_changes(&c, &m).await;
    assert_eq!(c.out(&m, "hostname").await.trim(), m);
    // The agent takes over an image's own /etc/hosts at first boot (it
    // has no marker line); the image itself holds the user's version.
    assert!(c.out(&m, "cat /etc/hosts").await.contains(&m));

    // A tenant may not push (it would use the daemon's registry logins).
    let plain = &w.plain.addr;
    let (st, v) = c
        .post(
            &format!("/v1/images/{name}/push"),
            json!({"reference": format!("{plain}/t/app:1")}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");

    // The admin pushes; skopeo and umoci read it back.
    let a = admin(w);
    let target = format!("{plain}/team/app:1");
    let (st, v) = a
        .post(
            &format!("/v1/images/{name}/push"),
            json!({"reference": target}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["digest"], digest, "{v}");
    assert!(v["data"]["uploaded"].as_u64().unwrap() >= 2, "{v}");
    let (st, v) = a
        .post(
            &format!("/v1/images/{name}/push"),
            json!({"reference": target}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["uploaded"], 0, "a second push sends no blob: {v}");

    let work = tmp("commit-pull");
    let layout = work.join("oci");
    run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--insecure-policy",
            "--src-tls-verify=false",
            &format!("docker://{target}"),
            &format!("oci:{}:app", layout.display()),
        ],
    );
    let bundle = work.join("bundle");
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:app", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("data/new.txt")).unwrap(),
        "created\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/debian_version")).unwrap(),
        "changed\n"
    );
    assert!(!rootfs.join("etc/issue").exists(), "whiteout applied");
    let conf: Vec<String> = std::fs::read_dir(rootfs.join("etc/apt/apt.conf.d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(conf, vec!["only".to_string()], "opaque dir applied");
    assert_eq!(
        std::fs::read_link(rootfs.join("data/outside-link")).unwrap(),
        Path::new("/etc/shadow")
    );
    assert!(!rootfs.join(".runta").exists());
    assert!(std::fs::read_to_string(rootfs.join("etc/hosts"))
        .unwrap()
        .contains("10.9.9.9 mine"));
    assert!(
        !rootfs.join("etc/hostname").exists()
            || !std::fs::read_to_string(rootfs.join("etc/hostname"))
                .unwrap()
                .contains(&n)
    );
    use std::os::unix::fs::MetadataExt;
    let (m1, m2) = (
        std::fs::metadata(rootfs.join("data/new.txt")).unwrap(),
        std::fs::metadata(rootfs.join("data/hard")).unwrap(),
    );
    assert_eq!(m1.ino(), m2.ino(), "hard link kept");
    assert_eq!(m1.mode() & 0o7777, 0o4755, "setuid mode kept");
    assert!(rootfs.join("data/line\nbreak").exists());

    // Pushing to a registry that wants credentials: refused without a
    // login, accepted after `runta image login`.
    let authed = format!("{}/team/app:1", w.authed.addr);
    let (st, v) = a
        .post(
            &format!("/v1/images/{name}/push"),
            json!({"reference": authed}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, v) = a
        .post(
            "/v1/images/logins",
            json!({"registry": w.authed.addr, "username": "pusher", "password": "s3cret-pw"}),
        )
        .await;
    assert!(st.is_success(), "{v}");
    assert!(!v.to_string().contains("s3cret-pw"));
    let (st, v) = a
        .post(
            &format!("/v1/images/{name}/push"),
            json!({"reference": authed}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    run(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            "pusher:s3cret-pw",
            &format!("docker://{authed}"),
        ],
    );

    // The image is in use: not deletable while `m` runs.
    let (st, _) = a.delete(&format!("/v1/images/{name}")).await;
    assert_eq!(st, StatusCode::CONFLICT);
    let _ = std::fs::remove_dir_all(&work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_of_a_shut_down_runtime_and_of_a_checkpoint() {
    skip_without!("python3");
    let w = world();
    let c = w.daemon.tenant("commit2").await;
    let n = common::name("stopped");
    c.create(&n, 256).await;
    c.out(&n, "echo kept > /kept").await;
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{n}/checkpoints"),
            json!({"name": common::name("ck")}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let ck = v["data"]["name"].as_str().unwrap().to_string();
    c.out(&n, "echo after > /after").await;
    let (st, v) = c.post(&format!("/v1/runtimes/{n}/stop"), json!({})).await;
    assert!(st.is_success(), "{v}");
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{n}/commit"),
            json!({"name": "stopped:1"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(c.status(&n).await, "shutdown");
    let img = v["data"]["name"].as_str().unwrap().to_string();
    let (st, v) = c
        .post(
            &format!("/v1/checkpoints/{ck}/commit"),
            json!({"name": "ck:1"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let ck_img = v["data"]["name"].as_str().unwrap().to_string();
    for (image, after) in [(img, "after\n"), (ck_img, "no\n")] {
        let m = common::name("from");
        c.create_with(json!({"name": m, "image": image,
            "resources": {"requests": {"vcpus": 1, "memory_mib": 256}}}))
            .await;
        assert_eq!(c.out(&m, "cat /kept").await, "kept\n");
        assert_eq!(c.out(&m, "cat /after 2>/dev/null || echo no").await, after);
    }
    // Booting the committed runtime again still works (its disk was
    // mounted for the commit and released).
    let (st, v) = c.post(&format!("/v1/runtimes/{n}/start"), json!({})).await;
    assert!(st.is_success(), "{v}");
    assert_eq!(c.out(&n, "cat /after").await, "after\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_runtime_commit_is_bounded_and_names_are_scoped() {
    skip_without!("python3");
    let w = world();
    let c = w.daemon.tenant("hostile").await;
    let n = common::name("sparse");
    c.create_with(json!({"name": n,
        "resources": {"requests": {"vcpus": 1, "memory_mib": 256, "disk_gib": 1}}}))
        .await;
    // 64 GiB that take no space: a tar would hold them in full.
    c.out(&n, "truncate -s 64G /huge").await;
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{n}/commit"),
            json!({"name": "huge:1"}),
        )
        .await;
    common::assert_error(st, &v, st.as_u16(), "resource_exhausted", "disk quota");
    assert_eq!(c.status(&n).await, "running", "thawed after the refusal");
    // A tenant cannot take a name other tenants' runtimes would resolve.
    c.out(&n, "rm /huge").await;
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{n}/commit"),
            json!({"name": "python:3.12"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let name = v["data"]["name"].as_str().unwrap();
    assert!(name.starts_with("localhost/hostile-"), "{name}");
    let (st, _) = c.get("/v1/images/python:3.12").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = c
        .post(&format!("/v1/runtimes/{n}/commit"), json!({"name": ""}))
        .await;
    common::assert_error(st, &v, 422, "invalid_argument", "name");
}

// ---- builds ----

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

/// Posts a build; returns the HTTP status, the log lines and the last event.
async fn build(c: &Client, name: &str, tar: Vec<u8>) -> (StatusCode, Vec<String>, Value) {
    let resp = c
        .http
        .request(
            Method::POST,
            format!("{}/v1/images/builds?name={}", c.base, name),
        )
        .bearer_auth(&c.token)
        .header("content-type", "application/x-tar")
        .timeout(Duration::from_secs(900))
        .body(tar)
        .send()
        .await
        .unwrap();
    let st = resp.status();
    let text = resp.text().await.unwrap();
    if st != StatusCode::OK {
        return (
            st,
            vec![],
            serde_json::from_str(&text).unwrap_or(Value::Null),
        );
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
    (st, log, last)
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

const DOCKERFILE: &str = "FROM base
ARG GREETING=hello
ENV APP_MODE=test
RUN echo one > /one
COPY f.txt /srv/f.txt
RUN cat /srv/f.txt > /two && echo $GREETING >> /two
WORKDIR /srv
USER root
CMD [\"/bin/sh\"]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_caches_steps_and_runs() {
    skip_without!("buildah");
    let w = world();
    let c = w.daemon.tenant("build").await;
    let ctx = tmp("ctx");
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.join("f.txt"), "from the context\n").unwrap();
    let (st, log, last) = build(&c, "app:1", tar_of(&ctx)).await;
    assert_eq!(st, StatusCode::OK, "{last}");
    assert_eq!(last["type"], "done", "{last}\n{}", log.join("\n"));
    let name = last["image"]["name"].as_str().unwrap().to_string();
    assert!(
        log.iter().any(|l| l.starts_with("STEP 4/9: RUN echo one")),
        "{log:?}"
    );

    // The same context again: every step after FROM from the cache.
    let (_, log2, last2) = build(&c, "app:1", tar_of(&ctx)).await;
    assert_eq!(last2["type"], "done", "{last2}");
    assert_eq!(cached_steps(&log2), (2..=9).collect::<Vec<_>>(), "{log2:?}");

    // One changed line (step 6): steps before it cached, it and later rerun.
    std::fs::write(
        ctx.join("Dockerfile"),
        DOCKERFILE.replace("echo $GREETING >> /two", "echo changed-$GREETING >> /two"),
    )
    .unwrap();
    let (_, log3, last3) = build(&c, "app:2", tar_of(&ctx)).await;
    assert_eq!(last3["type"], "done", "{last3}");
    assert_eq!(cached_steps(&log3), vec![2, 3, 4, 5], "{log3:?}");

    // A runtime of the built image: its files, and the image's Env/WorkingDir.
    let img = last3["image"]["name"].as_str().unwrap().to_string();
    assert_ne!(img, name);
    let r = common::name("built");
    c.create_with(json!({"name": r, "image": img,
        "resources": {"requests": {"vcpus": 1, "memory_mib": 256}}}))
        .await;
    assert_eq!(
        c.out(&r, "cat /one /two").await,
        "one\nfrom the context\nchanged-hello\n"
    );
    assert_eq!(c.out(&r, "pwd").await, "/srv\n");
    assert_eq!(c.out(&r, "echo $APP_MODE").await, "test\n");
    let _ = std::fs::remove_dir_all(&ctx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_build_contexts_are_refused() {
    skip_without!("buildah", "python3");
    let w = world();
    let c = w.daemon.tenant("hbuild").await;
    // A tar entry that climbs out of the context: refused before any build.
    let evil = Command::new("python3")
        .args([
            "-c",
            "import tarfile,io,sys\nb=io.BytesIO()\nt=tarfile.open(fileobj=b,mode='w')\nfor n,d in [('Dockerfile',b'FROM base\\n'),('../../escaped',b'x')]:\n  i=tarfile.TarInfo(n); i.size=len(d); t.addfile(i,io.BytesIO(d))\nt.close(); sys.stdout.buffer.write(b.getvalue())",
        ])
        .output()
        .unwrap()
        .stdout;
    let (st, log, v) = build(&c, "evil:1", evil).await;
    common::assert_error(st, &v, 422, "invalid_argument", "outside the context");
    assert_eq!(v["error"]["field"], "context", "{v}");
    assert!(log.is_empty(), "refused before buildah ran: {log:?}");
    assert!(!Path::new("/escaped").exists());

    // COPY of `..` and of a symlink to the host's /etc: nothing of the
    // host's reaches the image (buildah resolves both inside the context).
    let ctx = tmp("hctx");
    std::os::unix::fs::symlink("/etc", ctx.join("hostetc")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM base\nCOPY ../../../../etc/shadow /from-dotdot\n",
    )
    .unwrap();
    let (st, log, last) = build(&c, "dotdot:1", tar_of(&ctx)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(last["type"], "error", "COPY ../ must fail: {log:?}");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM base\nCOPY hostetc/shadow /from-link\n",
    )
    .unwrap();
    let (_, log, last) = build(&c, "link:1", tar_of(&ctx)).await;
    if last["type"] == "done" {
        let r = common::name("link");
        let img = last["image"]["name"].as_str().unwrap();
        c.create_with(json!({"name": r, "image": img,
            "resources": {"requests": {"vcpus": 1, "memory_mib": 256}}}))
            .await;
        let host = std::fs::read_to_string("/etc/shadow").unwrap();
        let got = c.out(&r, "cat /from-link 2>/dev/null || true").await;
        assert_ne!(got, host, "the host's /etc/shadow reached the image");
    } else {
        assert_eq!(last["type"], "error", "{log:?}");
    }
    // A Dockerfile that is a link to a host file is not read.
    let ctx2 = tmp("hctx2");
    std::os::unix::fs::symlink("/etc/shadow", ctx2.join("Dockerfile")).unwrap();
    let (st, _, v) = build(&c, "dflink:1", tar_of(&ctx2)).await;
    common::assert_error(st, &v, 422, "invalid_argument", "not a regular file");
    let _ = std::fs::remove_dir_all(&ctx);
    let _ = std::fs::remove_dir_all(&ctx2);
}

/// Mount points under `dir` in the host's mount table.
fn mounts_under(dir: &Path) -> Vec<String> {
    let d = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(1).map(str::to_string))
        .filter(|m| m.starts_with(&d))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_and_a_stop_leave_no_mounts_behind() {
    skip_without!("buildah");
    // Its own daemon: the shared one may be mid-build for another test.
    let d = Daemon::start_new(&[]);
    let c = d.tenant("mounts").await;
    let ctx = tmp("ctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM base\nRUN echo one > /one\nRUN echo two > /two\n",
    )
    .unwrap();
    let (st, log, last) = build(&c, "mounts:1", tar_of(&ctx)).await;
    assert_eq!(st, StatusCode::OK, "{last}");
    assert_eq!(last["type"], "done", "{last}\n{}", log.join("\n"));
    let builder = d.data_dir.join("images").join("builder");
    assert_eq!(mounts_under(&builder), Vec::<String>::new());
    // A failing build too.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM base\nRUN echo x > /x\nRUN false\n",
    )
    .unwrap();
    let (_, _, last) = build(&c, "mounts:2", tar_of(&ctx)).await;
    assert_eq!(last["type"], "error", "{last}");
    assert_eq!(mounts_under(&builder), Vec::<String>::new());
    assert!(d.terminate().success());
    assert_eq!(mounts_under(&d.data_dir), Vec::<String>::new());
    // Nothing mounted: the data dir can go.
    std::fs::remove_dir_all(&d.data_dir).unwrap();
    let _ = std::fs::remove_dir_all(&ctx);
}

/// Every process of `d`'s builds (their cgroups' `cgroup.procs`, v1 or v2).
fn build_procs(inst: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for top in [
        format!("/sys/fs/cgroup/pids/runta-{inst}-builds"),
        format!("/sys/fs/cgroup/runta-{inst}-builds"),
    ] {
        let mut dirs = vec![PathBuf::from(top)];
        while let Some(d) = dirs.pop() {
            if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
                out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
            if let Ok(rd) = std::fs::read_dir(&d) {
                dirs.extend(
                    rd.flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
    }
    out
}

fn alive(pid: i32) -> bool {
    // A zombie's status line says so; it is gone for every purpose here.
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| !s.contains("State:\tZ"))
        .unwrap_or(false)
}

/// `d`'s builds' parent cgroup in every hierarchy that has it.
fn build_cgroups(d: &Daemon) -> Vec<PathBuf> {
    let inst = d.instance();
    let mut roots: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    roots.push("/sys/fs/cgroup".into());
    roots
        .into_iter()
        .map(|r| r.join(format!("runta-{inst}-builds")))
        .filter(|p| p.is_dir())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_are_held_to_their_limits_and_deadline_and_reaped_after_a_crash() {
    skip_without!("buildah");
    let d = Daemon::start_new(&["--build-timeout-secs", "25", "--build-pids-max", "256"]);
    let c = d.tenant("limits").await;
    let ctx = tmp("ctx");

    // A step that forks 400 sleepers and waits for them: the build's cgroup
    // holds it to 256 processes (buildah keeps some for itself), and the
    // deadline ends it.
    std::fs::write(
        ctx.join("bomb.py"),
        "import os, time\nfor i in range(400):\n    try:\n        if os.fork() == 0:\n            time.sleep(120)\n            os._exit(0)\n    except OSError as e:\n        print('fork failed:', e.strerror, flush=True)\n        break\ntime.sleep(120)\n",
    )
    .unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM base\nCOPY bomb.py /bomb.py\nRUN python3 /bomb.py\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watch = {
        let (most, inst) = (most.clone(), d.instance());
        std::thread::spawn(move || {
            while started.elapsed() < Duration::from_secs(40) {
                let n = build_procs(&inst).len();
                most.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let (st, log, last) = build(&c, "bomb:1", tar_of(&ctx)).await;
    let took = started.elapsed();
    assert_eq!(st, StatusCode::OK, "{last}");
    assert_eq!(last["type"], "error", "{last}\n{}", log.join("\n"));
    assert!(
        last.to_string().contains("deadline"),
        "the error names the deadline: {last}"
    );
    assert!(
        took < Duration::from_secs(60),
        "stopped at its deadline, not at the end of the step: {took:?}"
    );
    assert!(
        log.iter().any(|l| l.starts_with("fork failed:")),
        "forks past the limit failed inside the step: {log:?}"
    );
    watch.join().unwrap();
    let seen = most.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        seen > 100 && seen <= 256,
        "the build's processes were seen and held to 256: {seen}"
    );
    // Nothing of it is left: no process, no cgroup of its own.
    assert_eq!(build_procs(&d.instance()), Vec::<i32>::new());
    c.eventually(10, "the build cgroup is removed", || {
        let left = build_cgroups(&d)
            .iter()
            .flat_map(|p| std::fs::read_dir(p).into_iter().flatten().flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .count();
        async move { left == 0 }
    })
    .await;

    // A daemon killed mid-build: its build goes on without it (buildah
    // and the step are its own processes), and the next start ends it and
    // removes its network.
    std::fs::write(ctx.join("Dockerfile"), "FROM base\nRUN sleep 300\n").unwrap();
    let resp = c
        .http
        .post(format!("{}/v1/images/builds?name=crash:1", c.base))
        .bearer_auth(&c.token)
        .header("content-type", "application/x-tar")
        .body(tar_of(&ctx))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut resp = resp;
    let mut text = String::new();
    let netns = loop {
        let chunk = tokio::time::timeout(Duration::from_secs(120), resp.chunk())
            .await
            .expect("the build log goes on")
            .unwrap()
            .expect("the build is still running");
        text.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(i) = text.find("network rtbuild-") {
            break text[i + "network ".len()..i + "network ".len() + 20].to_string();
        }
    };
    assert!(Path::new(&format!("/run/netns/{netns}")).exists());
    c.eventually(60, "the step runs", || {
        let n = build_procs(&d.instance())
            .iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|s| s.starts_with("sleep\x00300"))
            })
            .count();
        async move { n == 1 }
    })
    .await;
    d.kill9();
    drop(resp);
    let orphans = build_procs(&d.instance());
    assert!(!orphans.is_empty(), "the build outlived the daemon");
    d.spawn();
    for p in &orphans {
        assert!(
            !alive(*p),
            "process {p} of the killed daemon's build is gone"
        );
    }
    assert_eq!(build_procs(&d.instance()), Vec::<i32>::new());
    assert!(
        !Path::new(&format!("/run/netns/{netns}")).exists(),
        "the build's network {netns} is removed"
    );
    let veth = format!("rbh{}", &netns["rtbuild-".len()..][..9]);
    assert!(!Path::new(&format!("/sys/class/net/{veth}")).exists());
    let chain = format!("RTB-{}", &netns["rtbuild-".len()..][..9]);
    assert!(
        !common::iptables_save().contains(&chain),
        "{chain} is removed"
    );
    let builds = d.data_dir.join("images").join("builds");
    assert_eq!(
        std::fs::read_dir(&builds).map(|r| r.count()).unwrap_or(0),
        0,
        "the build's folder is removed"
    );
    // And the tenant builds again.
    std::fs::write(ctx.join("Dockerfile"), "FROM base\nRUN echo ok > /ok\n").unwrap();
    let (_, log, last) = build(&c, "after:1", tar_of(&ctx)).await;
    assert_eq!(last["type"], "done", "{last}\n{}", log.join("\n"));
    // A daemon that stops leaves no cgroup of its builds, in any hierarchy.
    assert!(d.terminate().success());
    assert_eq!(build_cgroups(&d), Vec::<PathBuf>::new());
    let _ = std::fs::remove_dir_all(&ctx);
}
