//! Faults: the daemon killed with SIGKILL in the middle of operations, a
//! runtime's init killed from the host, and a full data disk. After each, every
//! record is true, every runtime's files are intact, nothing is stuck in
//! `creating`/`deleting`, nothing is orphaned on the host, and delete works.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::{id_of, name, Client, Daemon};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The runtime's PID 1 (the agent), seen from the host.
fn agent_pid(d: &Daemon, id: &str) -> Option<i32> {
    d.cgroup_procs(id).into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains("agent"))
            .unwrap_or(false)
    })
}

async fn all(c: &Client) -> Vec<Value> {
    let (st, v) = c.get("/v1/runtimes?limit=100").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["data"].as_array().unwrap().clone()
}

/// Host remains of this daemon instance that belong to no record.
fn orphans(d: &Daemon, known: &BTreeSet<String>) -> Vec<String> {
    let inst = d.instance();
    let mut out = Vec::new();
    let list = |p: &Path| -> Vec<String> {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    for f in list(&d.data_dir.join("runtimes")) {
        if !known.contains(&f) {
            out.push(format!("runtime folder {f}"));
        }
    }
    for c in ["memory", "pids", "cpu", "freezer"] {
        for f in list(Path::new(&format!("/sys/fs/cgroup/{c}/runta-{inst}"))) {
            if !known.contains(&f) {
                out.push(format!("cgroup {c}/{f}"));
            }
        }
    }
    let shorts: BTreeSet<String> = known
        .iter()
        .map(|id| id.replace('-', "").chars().take(12).collect())
        .collect();
    if let Ok(rd) = std::fs::read_dir("/run/netns") {
        for e in rd.filter_map(|e| e.ok()) {
            let n = e.file_name().to_string_lossy().to_string();
            if let Some(short) = n.strip_prefix(&format!("rt-{inst}-")) {
                if !shorts.contains(short) {
                    out.push(format!("netns {n}"));
                }
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = d.data_dir.join("runtimes").display().to_string();
    for l in mounts.lines() {
        if let Some(mp) = l.split_whitespace().nth(4) {
            if let Some(rest) = mp.strip_prefix(&prefix) {
                let id = rest.trim_start_matches('/').split('/').next().unwrap_or("");
                if !known.contains(id) {
                    out.push(format!("mount {mp}"));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The fields a crash must not change.
fn identity(r: &Value) -> Value {
    json!({
        "id": r["id"], "name": r["name"], "env": r["env"], "labels": r["labels"],
        "requests": r["resources"]["requests"], "created_at": r["created_at"], "ip": r["ip"],
    })
}

async fn wait_settled(c: &Client) {
    c.eventually(30, "no runtime in creating/deleting", || {
        let c = c.clone();
        async move {
            all(&c)
                .await
                .iter()
                .all(|r| !matches!(r["status"].as_str(), Some("creating") | Some("deleting")))
        }
    })
    .await;
}

#[tokio::test]
async fn kill9_during_create_exec_stop_and_delete_loses_nothing() {
    let d = Daemon::start_new(&[]);
    let mut c = d.tenant("k9").await;
    let keep = name("keep");
    let kr = c
        .create_with(
            json!({"name": keep, "env": {"E": "1"}, "labels": {"l": "v"},
            "resources": {"requests": {"vcpus": 0.5, "memory_mib": 64}}}),
        )
        .await;
    c.out(&keep, &format!("echo {keep} > /root/id")).await;
    let mut ever: BTreeSet<String> = BTreeSet::from([id_of(&kr)]);
    // Different moments: early (mid-request) and later (mid-operation).
    for (round, delay_ms) in [(0, 40u64), (1, 150), (2, 600)] {
        let (cr, ex, st, de) = (
            name(&format!("cr{round}")),
            name(&format!("ex{round}")),
            name(&format!("st{round}")),
            name(&format!("de{round}")),
        );
        let mut before = Vec::new();
        for n in [&ex, &st, &de] {
            let r = c.create(n, 64).await;
            ever.insert(id_of(&r));
            c.out(n, &format!("echo {n} > /root/id")).await;
            before.push(r);
        }
        // A process that ignores SIGTERM makes stop last its whole grace.
        c.out(
            &st,
            "nohup sh -c 'trap \"\" TERM; while :; do sleep 1; done' >/dev/null 2>&1 & echo ok",
        )
        .await;
        let calls = vec![
            tokio::spawn({
                let c = c.clone();
                let cr = cr.clone();
                async move {
                    c.post(
                        "/v1/runtimes",
                        json!({"name": cr, "resources": {"requests": {"memory_mib": 64}}}),
                    )
                    .await
                }
            }),
            tokio::spawn({
                let c = c.clone();
                let ex = ex.clone();
                async move {
                    c.post(
                        &format!("/v1/runtimes/{ex}/exec"),
                        json!({"command": "sleep 20; echo done > /root/late", "timeout_secs": 60}),
                    )
                    .await
                }
            }),
            tokio::spawn({
                let c = c.clone();
                let st = st.clone();
                async move { c.post(&format!("/v1/runtimes/{st}/stop"), json!({})).await }
            }),
            tokio::spawn({
                let c = c.clone();
                let de = de.clone();
                async move { c.delete(&format!("/v1/runtimes/{de}")).await }
            }),
        ];
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        d.kill9();
        for t in calls {
            t.abort();
            let _ = t.await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        d.spawn();
        c = Client::new(&d.endpoint, &c.token);
        wait_settled(&c).await;

        // Every record is true and intact.
        let (_, v) = c.get(&format!("/v1/runtimes/{keep}")).await;
        assert_eq!(v["data"]["status"], "running", "round {round}: {v}");
        assert_eq!(identity(&v["data"]), identity(&kr), "round {round}");
        assert_eq!(c.out(&keep, "cat /root/id").await.trim(), keep);

        let (_, v) = c.get(&format!("/v1/runtimes/{ex}")).await;
        assert_eq!(
            v["data"]["status"], "running",
            "round {round}: exec runtime {v}"
        );
        assert_eq!(identity(&v["data"]), identity(&before[0]));
        assert_eq!(c.out(&ex, "cat /root/id").await.trim(), ex);

        let (_, v) = c.get(&format!("/v1/runtimes/{st}")).await;
        assert_eq!(identity(&v["data"]), identity(&before[1]));
        let s = v["data"]["status"].as_str().unwrap_or("").to_string();
        assert!(
            ["running", "shutdown"].contains(&s.as_str()),
            "round {round}: stopped runtime is {s}: {v}"
        );
        if s == "shutdown" {
            let (code, v) = c.post(&format!("/v1/runtimes/{st}/start"), json!({})).await;
            assert_eq!(code, StatusCode::OK, "round {round}: start after stop: {v}");
        }
        assert_eq!(c.out(&st, "cat /root/id").await.trim(), st);

        let (code, v) = c.get(&format!("/v1/runtimes/{de}")).await;
        if code == StatusCode::OK {
            let s = v["data"]["status"].as_str().unwrap_or("");
            assert!(s != "deleting", "round {round}: delete stuck: {v}");
            let (code, v) = c.delete(&format!("/v1/runtimes/{de}")).await;
            assert!(
                code.is_success(),
                "round {round}: delete after restart: {v}"
            );
        } else {
            assert_eq!(code, StatusCode::NOT_FOUND, "{v}");
        }
        assert_eq!(
            d.leftovers(&id_of(&before[2])),
            Vec::<String>::new(),
            "round {round}: remains of the deleted runtime"
        );

        let (code, v) = c.get(&format!("/v1/runtimes/{cr}")).await;
        if code == StatusCode::OK {
            let s = v["data"]["status"].as_str().unwrap_or("").to_string();
            ever.insert(id_of(&v["data"]));
            assert!(
                ["running", "error"].contains(&s.as_str()),
                "round {round}: interrupted create is {s}: {v}"
            );
            if s == "running" {
                assert_eq!(c.out(&cr, "hostname").await.trim(), cr);
            }
        } else {
            assert_eq!(code, StatusCode::NOT_FOUND, "{v}");
        }
        // Nothing on the host without a record.
        let known: BTreeSet<String> = all(&c).await.iter().map(id_of).collect();
        let o = orphans(&d, &known);
        assert!(o.is_empty(), "round {round}: orphans after kill -9: {o:?}");
        for n in [&cr, &ex, &st] {
            let (code, _) = c.get(&format!("/v1/runtimes/{n}")).await;
            if code == StatusCode::OK {
                let (code, v) = c.delete(&format!("/v1/runtimes/{n}")).await;
                assert!(code.is_success(), "round {round}: delete {n}: {v}");
            }
        }
    }
    for r in all(&c).await {
        ever.insert(id_of(&r));
        let (code, v) = c.delete(&format!("/v1/runtimes/{}", id_of(&r))).await;
        assert!(code.is_success(), "{v}");
    }
    for id in &ever {
        assert_eq!(d.leftovers(id), Vec::<String>::new(), "remains of {id}");
    }
    let o = orphans(&d, &BTreeSet::new());
    assert!(o.is_empty(), "orphans at the end: {o:?}");
}

#[tokio::test]
async fn a_killed_agent_is_reported_crashed_and_start_brings_it_back() {
    let d = Daemon::shared();
    let c = d.tenant("crash").await;
    let n = name("crash");
    let r = c.create(&n, 64).await;
    let id = id_of(&r);
    c.out(&n, "echo precious > /root/keep.txt").await;
    for round in 0..2 {
        let pid = agent_pid(d, &id).expect("the agent runs in the runtime's cgroup");
        // SAFETY: a process of the runtime this test owns.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        c.eventually(10, "crashed status", || {
            let (c, n) = (c.clone(), n.clone());
            async move { c.status(&n).await == "crashed" }
        })
        .await;
        let (_, v) = c.get(&format!("/v1/runtimes/{n}")).await;
        let err = v["data"]["error"].as_str().unwrap_or("");
        assert!(
            err.contains("start"),
            "round {round}: no way out named: {v}"
        );
        assert!(c.events(&n).await.iter().any(|e| e == "crashed"));
        let (st, v) = c
            .post(
                &format!("/v1/runtimes/{n}/exec"),
                json!({"command": "true"}),
            )
            .await;
        assert_eq!(st.as_u16(), 409, "round {round}: exec on crashed: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("crashed"),
            "{v}"
        );
        // The way out: start, with the files and the hostname.
        let (st, v) = c.post(&format!("/v1/runtimes/{n}/start"), json!({})).await;
        assert_eq!(
            st,
            StatusCode::OK,
            "round {round}: start a crashed runtime: {v}"
        );
        assert_eq!(v["data"]["status"], "running");
        assert!(v["data"]["error"].is_null(), "error kept after start: {v}");
        assert_eq!(c.out(&n, "cat /root/keep.txt").await, "precious\n");
        assert_eq!(c.out(&n, "hostname").await.trim(), n);
    }
    // And from crashed, delete works and leaves nothing.
    let pid = agent_pid(d, &id).unwrap();
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    c.eventually(10, "crashed status", || {
        let (c, n) = (c.clone(), n.clone());
        async move { c.status(&n).await == "crashed" }
    })
    .await;
    let (st, v) = c.delete(&format!("/v1/runtimes/{n}")).await;
    assert!(st.is_success(), "{v}");
    assert_eq!(d.leftovers(&id), Vec::<String>::new());
}

/// One API call under a deadline: it must answer (no hang), and a failure
/// must carry the error envelope (never a bare 5xx). Problems are collected.
async fn answers(
    problems: &mut Vec<String>,
    what: &str,
    f: impl std::future::Future<Output = (StatusCode, Value)>,
) -> Option<StatusCode> {
    let Ok((st, v)) = tokio::time::timeout(Duration::from_secs(20), f).await else {
        problems.push(format!("{what}: no answer in 20 s"));
        return None;
    };
    let envelope = v["error"]["code"].is_string() && v["request_id"].is_string();
    if !st.is_success() && !envelope {
        problems.push(format!("{what}: {st} without an error envelope: {v}"));
    }
    eprintln!("full disk: {what} -> {st} {}", v["error"]["code"]);
    Some(st)
}

/// The record's status against the cgroup freezer: a record that says
/// running while the runtime is frozen (or the reverse) is a lie.
fn freezer_truth(d: &Daemon, id: &str, status: &str) -> Option<String> {
    let f = format!(
        "/sys/fs/cgroup/freezer/runta-{}/{id}/freezer.state",
        d.instance()
    );
    let state = std::fs::read_to_string(f).ok()?;
    let frozen = state.trim() == "FROZEN";
    let says_frozen = matches!(status, "paused" | "suspended");
    (frozen != says_frozen && status != "shutdown").then(|| {
        format!(
            "the record says {status} but the freezer says {}",
            state.trim()
        )
    })
}

/// Removes by force everything a daemon instance made on the host (for a
/// test that fails with the daemon unable to delete: a full store).
fn force_cleanup(inst: &str) {
    let script = format!(
        r#"
for c in /sys/fs/cgroup/*/runta-{inst}; do
  [ -d "$c" ] || continue
  for r in "$c"/*/; do
    [ -f "$r/freezer.state" ] && echo THAWED > "$r/freezer.state"
    for p in $(cat "$r/cgroup.procs" 2>/dev/null); do kill -9 "$p"; done
  done
done
sleep 0.5
for c in /sys/fs/cgroup/*/runta-{inst}; do
  [ -d "$c" ] || continue
  for r in "$c"/*/; do rmdir "$r" 2>/dev/null; done
  rmdir "$c" 2>/dev/null
done
for n in $(ip netns list | awk '{{print $1}}' | grep "^rt-{inst}-"); do ip netns del "$n"; done
ip link del rtb-{inst} 2>/dev/null
iptables -w -D INPUT -j RT-{inst}-IN 2>/dev/null
iptables -w -D FORWARD -j RT-{inst}-FWD 2>/dev/null
iptables -w -t nat -D POSTROUTING -j RT-{inst}-NAT 2>/dev/null
for ch in IN FWD; do iptables -w -F RT-{inst}-$ch 2>/dev/null; iptables -w -X RT-{inst}-$ch 2>/dev/null; done
iptables -w -t nat -F RT-{inst}-NAT 2>/dev/null; iptables -w -t nat -X RT-{inst}-NAT 2>/dev/null
rm -rf /run/runta/{inst}
true
"#
    );
    let _ = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .status();
}

/// On drop (also when the test fails): the daemon killed, the instance's host
/// remains removed by force, the tmpfs unmounted.
struct FullDiskGuard<'a>(&'a Daemon);

impl Drop for FullDiskGuard<'_> {
    fn drop(&mut self) {
        self.0.kill9();
        force_cleanup(&self.0.instance());
    }
}

struct TmpfsMount(std::path::PathBuf);

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_data_disk_fails_cleanly_and_corrupts_nothing() {
    // A private daemon whose data dir is moved onto a 24 MiB tmpfs (the image
    // stays in the shared images dir).
    let d = Daemon::start_new(&[]);
    d.kill9();
    let dir = d.data_dir.clone();
    let staging = dir.with_extension("staging");
    let run = |cmd: &str, args: &[&str]| {
        let st = std::process::Command::new(cmd).args(args).status().unwrap();
        assert!(st.success(), "{cmd} {args:?}");
    };
    let (dir_s, staging_s) = (dir.display().to_string(), staging.display().to_string());
    run("cp", &["-a", &dir_s, &staging_s]);
    run(
        "mount",
        &["-t", "tmpfs", "-o", "size=24m", "runta-full", &dir_s],
    );
    let _mount = TmpfsMount(dir.clone());
    let _guard = FullDiskGuard(&d);
    run("cp", &["-a", &format!("{staging_s}/."), &dir_s]);
    run("rm", &["-rf", &staging_s]);
    // The daemon's log stays off the full disk here (a full log disk is
    // `an_unwritable_log_does_not_kill_the_daemon`).
    let log = std::env::temp_dir().join(format!(
        "runta-full-{}.log",
        dir.file_name().unwrap().to_string_lossy()
    ));
    std::fs::copy(dir.join("runtad.log"), &log).unwrap();
    std::fs::remove_file(dir.join("runtad.log")).unwrap();
    std::os::unix::fs::symlink(&log, dir.join("runtad.log")).unwrap();
    d.spawn();

    let c = d.tenant("full").await;
    let a = name("full");
    let ra = c
        .create_with(json!({"name": a, "labels": {"keep": "me"},
            "resources": {"requests": {"vcpus": 0.5, "memory_mib": 64}}}))
        .await;
    let a_id = id_of(&ra);
    c.out(&a, "echo before > /root/before.txt").await;
    for i in 0..3 {
        c.patch(
            &format!("/v1/runtimes/{a}"),
            json!({"labels": {"keep": "me", "n": i.to_string()}}),
        )
        .await;
    }
    // Control: a 4 MiB upload works while there is space.
    let resp = c
        .http
        .put(format!(
            "{}/v1/runtimes/{a}/files?path=/root/ok.bin",
            c.base
        ))
        .bearer_auth(&c.token)
        .body(vec![7u8; 4 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    c.out(&a, "rm /root/ok.bin").await;
    let (_, before) = c.get(&format!("/v1/runtimes/{a}")).await;
    let events_before = c.events(&a).await;

    // Fill the disk: from inside the runtime (its writable layer is on the
    // data disk), then whatever is left from the host.
    let v = c
        .sh(&a, "head -c 64M /dev/zero > /root/fill; echo rc=$?")
        .await;
    assert!(
        format!("{v}").contains("No space left"),
        "the tmpfs did not fill: {v}"
    );
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", &format!("of={dir_s}/zz-fill"), "bs=4k"])
        .stderr(std::process::Stdio::null())
        .status();

    // Every kind of call answers, cleanly.
    let b = name("nospace");
    let mut problems = Vec::new();
    let create = answers(
        &mut problems,
        "create",
        c.post(
            "/v1/runtimes",
            json!({"name": b, "resources": {"requests": {"memory_mib": 64}}}),
        ),
    )
    .await;
    answers(
        &mut problems,
        "exec",
        c.post(
            &format!("/v1/runtimes/{a}/exec"),
            json!({"command": "echo hi"}),
        ),
    )
    .await;
    answers(
        &mut problems,
        "patch",
        c.patch(
            &format!("/v1/runtimes/{a}"),
            json!({"labels": {"keep": "me", "n": "full"}}),
        ),
    )
    .await;
    let put = tokio::time::timeout(
        Duration::from_secs(20),
        c.http
            .put(format!("{}/v1/runtimes/{a}/files?path=/root/big", c.base))
            .bearer_auth(&c.token)
            .body(vec![7u8; 4 << 20])
            .send(),
    )
    .await;
    match put {
        Err(_) => problems.push("PUT files (4 MiB): no answer in 20 s".into()),
        Ok(r) => {
            let r = r.unwrap();
            let st = r.status();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            eprintln!("full disk: put file -> {st} {}", v["error"]["code"]);
            if st.is_success() {
                problems.push(format!(
                    "PUT files: a 4 MiB file was written onto a full disk: {st}"
                ));
            } else if !v["error"]["code"].is_string() {
                problems.push(format!("PUT files: {st} without an envelope: {v}"));
            }
        }
    }
    answers(
        &mut problems,
        "pause",
        c.post(&format!("/v1/runtimes/{a}/pause"), json!({})),
    )
    .await;
    answers(
        &mut problems,
        "resume",
        c.post(&format!("/v1/runtimes/{a}/resume"), json!({})),
    )
    .await;
    answers(
        &mut problems,
        "stop",
        c.post(&format!("/v1/runtimes/{a}/stop"), json!({})),
    )
    .await;
    answers(
        &mut problems,
        "start",
        c.post(&format!("/v1/runtimes/{a}/start"), json!({})),
    )
    .await;
    answers(&mut problems, "list", c.get("/v1/runtimes")).await;
    let (_, v) = c.get(&format!("/v1/runtimes/{a}")).await;
    if let Some(p) = freezer_truth(&d, &a_id, v["data"]["status"].as_str().unwrap_or("")) {
        problems.push(format!("after pause/resume/stop/start on a full disk: {p}"));
    }

    // Free the space.
    std::fs::remove_file(dir.join("zz-fill")).unwrap();
    // Through the runtime, not its upper dir on the host (the overlay pins the
    // upper inode, so unlinking it underneath frees nothing); a runtime left
    // frozen by a failed pause is thawed by hand first (reported above).
    let freezer = format!(
        "/sys/fs/cgroup/freezer/runta-{}/{a_id}/freezer.state",
        d.instance()
    );
    if std::fs::read_to_string(&freezer).is_ok_and(|s| s.trim() == "FROZEN") {
        let _ = std::fs::write(&freezer, "THAWED");
    }
    let v = c.sh(&a, "rm -f /root/fill; echo removed").await;
    assert_eq!(v["stdout"], "removed\n", "{v}");
    wait_settled(&c).await;
    let df = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "df -k {dir_s} | tail -1; du -sxk {dir_s}/* {dir_s}/runtimes/*/* | sort -n | tail -6; ls -la {dir_s}/runtimes/*/upper/root"
        ))
        .output()
        .unwrap();
    eprintln!(
        "full disk, after freeing:\n{}",
        String::from_utf8_lossy(&df.stdout)
    );

    // The store works and what it held before is intact.
    let (_, after) = c.get(&format!("/v1/runtimes/{a}")).await;
    assert_eq!(after["data"]["id"], before["data"]["id"]);
    assert_eq!(after["data"]["created_at"], before["data"]["created_at"]);
    assert_eq!(after["data"]["labels"]["keep"], "me", "{after}");
    assert!(
        after["data"]["revision"].as_u64() >= before["data"]["revision"].as_u64(),
        "revision went backwards: {before} -> {after}"
    );
    let ev = c.events(&a).await;
    assert!(ev.len() >= events_before.len() && ev[..events_before.len()] == events_before[..]);
    let s = after["data"]["status"].as_str().unwrap_or("").to_string();
    if let Some(p) = freezer_truth(&d, &a_id, &s) {
        problems.push(format!("after freeing the disk: {p}"));
        // Thaw by hand so the rest of the test can check the files.
        let f = format!(
            "/sys/fs/cgroup/freezer/runta-{}/{a_id}/freezer.state",
            d.instance()
        );
        let _ = std::fs::write(f, "THAWED");
    }
    if s != "running" {
        if s == "paused" {
            c.post(&format!("/v1/runtimes/{a}/resume"), json!({})).await;
        } else {
            let (st, v) = c.post(&format!("/v1/runtimes/{a}/start"), json!({})).await;
            assert_eq!(st, StatusCode::OK, "A ({s}) does not start again: {v}");
        }
    }
    assert_eq!(c.out(&a, "cat /root/before.txt").await, "before\n");
    let (st, v) = c
        .patch(
            &format!("/v1/runtimes/{a}"),
            json!({"labels": {"keep": "me", "n": "after"}}),
        )
        .await;
    if st != StatusCode::OK {
        problems.push(format!(
            "after freeing the disk the store does not take writes: {v}"
        ));
        panic!("a full data disk:\n{}", problems.join("\n"));
    }
    // The create that failed is gone or deletable; a new one works.
    let (st, v) = c.get(&format!("/v1/runtimes/{b}")).await;
    if st == StatusCode::OK {
        eprintln!(
            "full disk: create left {} ({create:?})",
            v["data"]["status"]
        );
        let (st, v) = c.delete(&format!("/v1/runtimes/{b}")).await;
        assert!(st.is_success(), "{v}");
    }
    let c2 = name("after");
    c.create(&c2, 64).await;
    assert_eq!(c.out(&c2, "echo ok").await, "ok\n");
    // The store survives a restart too (nothing half-written).
    d.kill9();
    d.spawn();
    // A fresh connection pool: the old one may hold connections to the dead process.
    let c = Client::new(&d.endpoint, &c.token);
    wait_settled(&c).await;
    let (_, v) = c.get(&format!("/v1/runtimes/{a}")).await;
    assert_eq!(v["data"]["labels"]["n"], "after", "{v}");
    assert_eq!(c.out(&a, "cat /root/before.txt").await, "before\n");
    let known: BTreeSet<String> = all(&c).await.iter().map(id_of).collect();
    let o = orphans(&d, &known);
    assert!(o.is_empty(), "orphans after the full disk: {o:?}");
    for r in all(&c).await {
        let (st, v) = c.delete(&format!("/v1/runtimes/{}", id_of(&r))).await;
        assert!(st.is_success(), "{v}");
        assert_eq!(d.leftovers(&id_of(&r)), Vec::<String>::new());
    }
    d.kill9();
    let _ = std::fs::remove_file(&log);
    assert!(
        problems.is_empty(),
        "a full data disk:\n{}",
        problems.join("\n")
    );
}

/// A daemon whose log cannot be written (its disk is full: every write fails
/// with ENOSPC) keeps serving.
#[tokio::test]
async fn an_unwritable_log_does_not_kill_the_daemon() {
    let d = Daemon::start_new(&[]);
    d.kill9();
    // The log goes to a tiny tmpfs that is full (not /dev/full: the harness
    // reads the log back when the daemon dies).
    let logfs = d.data_dir.join("logfs");
    std::fs::create_dir_all(&logfs).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "runta-logfs"])
        .arg(&logfs)
        .status()
        .unwrap();
    assert!(st.success());
    let _mount = TmpfsMount(logfs.clone());
    std::fs::write(logfs.join("runtad.log"), "").unwrap();
    let _ = std::process::Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", logfs.join("fill").display()))
        .stderr(std::process::Stdio::null())
        .status();
    let log = d.data_dir.join("runtad.log");
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(logfs.join("runtad.log"), &log).unwrap();
    // `spawn` fails the test if the daemon exits before it is healthy.
    d.spawn();
    let c = d.tenant("nolog").await;
    let n = name("nolog");
    c.create(&n, 64).await;
    assert_eq!(c.out(&n, "echo up").await, "up\n");
    let (st, v) = c.get("/v1/runtimes/no-such-runtime").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, _) = c.delete(&format!("/v1/runtimes/{n}")).await;
    assert!(st.is_success());
    d.kill9();
}
