//! `runta commit` and `runta image build` against a real daemon
//! (docs/cli.md). `runta image push` is covered through the API in
//! crates/runtad/tests/images_build.rs (it needs a registry the shared CLI
//! daemon is not configured for).

mod common;

use common::{cleanup, http, runta, scratch};

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn commit_then_run_the_image() {
    let (a, b) = ("cli-commit-src", "cli-commit-copy");
    let _c = cleanup(&[a, b]);
    runta(&["run", "--name", a, "--memory", "256"]).ok();
    runta(&[
        "exec",
        a,
        "--",
        "sh",
        "-c",
        "echo hi > /hi && rm /etc/issue",
    ])
    .ok();
    let out = runta(&["--json", "commit", a, "cli-img:1"]).ok();
    let name = out.json()["name"].as_str().unwrap().to_string();
    assert!(name.ends_with("/cli-img:1"), "{name}");
    // The plain form prints name and digest.
    let plain = runta(&["commit", a, "cli-img:2"]).ok();
    assert!(plain.stdout.contains("cli-img:2 sha256:"), "{plain:?}");
    runta(&["run", "--name", b, "--memory", "256", "--image", &name]).ok();
    assert_eq!(runta(&["exec", b, "--", "cat", "/hi"]).ok().stdout, "hi\n");
    let gone = runta(&[
        "exec",
        b,
        "--",
        "sh",
        "-c",
        "test -e /etc/issue || echo gone",
    ])
    .ok();
    assert_eq!(gone.stdout, "gone\n");
    // A runtime that does not exist: exit 1, one line naming it.
    let bad = runta(&["commit", "no-such-runtime", "x:1"]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("no-such-runtime"), "{bad:?}");
    // The images go too (delete is admin-only; the runtime of one first).
    let d = common::daemon();
    let (st, _) = http("DELETE", &format!("/v1/runtimes/{b}"), Some(&d.token), None).unwrap();
    assert!(st == 200 || st == 204, "{st}");
    let name2 = name.replace("cli-img:1", "cli-img:2");
    for n in [&name, &name2] {
        let (st, body) = http(
            "DELETE",
            &format!("/v1/images/{n}"),
            Some(&d.admin_token),
            None,
        )
        .unwrap();
        assert!(st == 200 || st == 204, "delete {n}: {st} {body}");
    }
}

#[test]
fn build_prints_the_log_and_caches() {
    if !have("buildah") {
        eprintln!("SKIPPED: buildah is not installed (apt-get install buildah)");
        return;
    }
    let r = "cli-built";
    let _c = cleanup(&[r]);
    let dir = scratch("cli-build");
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM base\nCOPY msg /msg\nRUN cat /msg > /built\n",
    )
    .unwrap();
    std::fs::write(dir.join("msg"), "from the cli\n").unwrap();
    let ctx = dir.to_str().unwrap();
    let first = runta(&["image", "build", "-t", "cli-build:1", ctx]).ok();
    assert!(first.stderr.contains("STEP 3/3: RUN cat /msg"), "{first:?}");
    let name = first.stdout.split_whitespace().next().unwrap().to_string();
    assert!(name.ends_with("/cli-build:1"), "{first:?}");
    let again = runta(&["image", "build", "-t", "cli-build:1", ctx]).ok();
    assert_eq!(
        again.stderr.matches("--> Using cache").count(),
        2,
        "COPY and RUN from the cache: {again:?}"
    );
    // --json: one event per line, the last one `done`.
    let j = runta(&["--json", "image", "build", "-t", "cli-build:1", ctx]).ok();
    let last: serde_json::Value = serde_json::from_str(j.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "done", "{j:?}");
    runta(&["run", "--name", r, "--memory", "256", "--image", &name]).ok();
    assert_eq!(
        runta(&["exec", r, "--", "cat", "/built"]).ok().stdout,
        "from the cli\n"
    );
    // A failing step: exit 1 and the builder's message.
    std::fs::write(dir.join("Dockerfile"), "FROM base\nRUN exit 3\n").unwrap();
    let bad = runta(&["image", "build", "-t", "cli-build:bad", ctx]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("build failed"), "{bad:?}");
}
