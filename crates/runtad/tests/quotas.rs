//! Admission and quotas (docs/security.md items 5, 6, 11, 12): memory admitted
//! at its limit, per-tenant quotas set by the admin and enforced under races,
//! checkpoints inside a storage quota, the host's PID space shared by every
//! tenant, and tokens that the admin lists, revokes and rotates.

mod common;

use common::{assert_error, name, Client, Daemon};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn admin(d: &Daemon) -> Client {
    Client::new(&d.endpoint, &d.admin_token)
}

/// The tenant name behind a client (from its own quota view).
async fn tenant_of(c: &Client) -> String {
    let (st, v) = c.get("/v1/quota").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["data"]["tenant"].as_str().unwrap().to_string()
}

async fn set_quota(d: &Daemon, tenant: &str, body: Value) -> Value {
    let (st, v) = admin(d)
        .patch(&format!("/v1/tenants/{tenant}/quota"), body)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["data"].clone()
}

fn small(n: &str) -> Value {
    json!({"name": n, "resources": {"requests": {"vcpus": 0.5, "memory_mib": 64}}})
}

fn host_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap()
        / 1024
}

fn cgroup_memory_limit(d: &Daemon, id: &str) -> u64 {
    let inst = d.instance();
    for p in [
        format!("/sys/fs/cgroup/memory/runta-{inst}/{id}/memory.limit_in_bytes"),
        format!("/sys/fs/cgroup/runta-{inst}/{id}/memory.max"),
    ] {
        if let Ok(s) = std::fs::read_to_string(p) {
            return s.trim().parse().unwrap_or(u64::MAX);
        }
    }
    panic!("no memory cgroup for {id}");
}

// ---- item 6: memory is admitted at its limit ----

#[tokio::test]
async fn memory_limits_are_admitted_and_absurd_ones_refused() {
    let d = Daemon::start_new(&["--capacity-memory-mib", "2048"]);
    let c = d.tenant("memlim").await;
    let host = host_memory_mib();

    // The red-team request: 16 MiB asked, 4 TiB allowed.
    let n = name("huge-limit");
    let (st, v) = c
        .post(
            "/v1/runtimes",
            json!({"name": n, "resources": {"requests": {"memory_mib": 16},
                                             "limits": {"memory_mib": 4_194_304}}}),
        )
        .await;
    assert_error(
        st,
        &v,
        422,
        "invalid_argument",
        "resources.limits.memory_mib",
    );
    assert_eq!(v["error"]["field"], "resources.limits.memory_mib");
    assert_eq!(
        c.get(&format!("/v1/runtimes/{n}")).await.0,
        StatusCode::NOT_FOUND
    );
    // Just above the machine's memory, and below the request: 422 too.
    for (req, lim) in [(16, host + 1), (256, 128)] {
        let (st, v) = c
            .post(
                "/v1/runtimes",
                json!({"name": n, "resources": {"requests": {"memory_mib": req},
                                                 "limits": {"memory_mib": lim}}}),
            )
            .await;
        assert_error(
            st,
            &v,
            422,
            "invalid_argument",
            "resources.limits.memory_mib",
        );
    }

    // A limit above the request is what the runtime may use: capacity counts it.
    let a = name("a");
    let r = c
        .create_with(
            json!({"name": a, "resources": {"requests": {"memory_mib": 16},
                                                      "limits": {"memory_mib": 1536}}}),
        )
        .await;
    let id = r["id"].as_str().unwrap();
    assert_eq!(cgroup_memory_limit(&d, id), 1536 << 20);
    let b = name("b");
    let (st, v) = c
        .post(
            "/v1/runtimes",
            json!({"name": b, "resources": {"requests": {"memory_mib": 600}}}),
        )
        .await;
    assert_error(st, &v, 503, "resource_exhausted", "memory");
    assert_eq!(
        c.get(&format!("/v1/runtimes/{b}")).await.0,
        StatusCode::NOT_FOUND
    );
    c.create_with(json!({"name": b, "resources": {"requests": {"memory_mib": 400}}}))
        .await;

    // PATCH goes through the same admission: a limit above the machine is 422,
    // a limit that does not fit is 503, and nothing changes.
    let (st, v) = c
        .patch(
            &format!("/v1/runtimes/{b}"),
            json!({"resources": {"requests": {"memory_mib": 400},
                                  "limits": {"memory_mib": 4_194_304}}}),
        )
        .await;
    assert_error(
        st,
        &v,
        422,
        "invalid_argument",
        "resources.limits.memory_mib",
    );
    let (st, v) = c
        .patch(
            &format!("/v1/runtimes/{b}"),
            json!({"resources": {"requests": {"memory_mib": 400},
                                  "limits": {"memory_mib": 1024}}}),
        )
        .await;
    assert_error(st, &v, 503, "resource_exhausted", "memory");
    let (_, v) = c.get(&format!("/v1/runtimes/{b}")).await;
    assert_eq!(v["data"]["resources"]["limits"]["memory_mib"], 400, "{v}");
    // Shrinking always fits.
    let (st, v) = c
        .patch(
            &format!("/v1/runtimes/{a}"),
            json!({"resources": {"requests": {"memory_mib": 16}, "limits": {"memory_mib": 256}}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");

    // Apply: a deployment that does not fit is refused whole.
    let (w1, w2) = (name("w1"), name("w2"));
    let (st, v) = c
        .post(
            "/v1/apply",
            json!({"apiVersion": "runta/v1", "kind": "SandboxSet", "sandboxes": [
                {"name": w1, "resources": {"vcpus": 0.5, "memory_mib": 512}},
                {"name": w2, "resources": {"vcpus": 0.5, "memory_mib": 1024}}]}),
        )
        .await;
    assert_error(st, &v, 503, "resource_exhausted", "memory");
    assert_eq!(
        c.get(&format!("/v1/runtimes/{w1}")).await.0,
        StatusCode::NOT_FOUND
    );

    // The quota view counts the limit too.
    let (_, q) = c.get("/v1/quota").await;
    assert_eq!(q["data"]["usage"]["memory_mib"], 256 + 400, "{q}");
    for n in [&a, &b] {
        c.delete(&format!("/v1/runtimes/{n}")).await;
    }
}

// ---- item 11: per-tenant quotas ----

#[tokio::test]
async fn tenant_quotas_are_set_by_the_admin_and_enforced() {
    let d = Daemon::shared();
    let c = d.tenant("quota").await;
    let t = tenant_of(&c).await;
    let (st, v) = c.get("/v1/quota").await;
    assert_eq!(st, StatusCode::OK);
    // Defaults are finite (docs/operations.md).
    assert_eq!(v["data"]["limits"]["runtimes"], 64, "{v}");
    assert_eq!(v["data"]["limits"]["pids"], 65536, "{v}");
    assert_eq!(v["data"]["usage"]["runtimes"], 0, "{v}");

    let q = set_quota(d, &t, json!({"runtimes": 2, "vcpus": 1.5})).await;
    assert_eq!(q["limits"]["runtimes"], 2);
    assert_eq!(q["limits"]["vcpus"], 1.5);
    let (st, v) = admin(d).get(&format!("/v1/tenants/{t}/quota")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["data"]["limits"]["runtimes"], 2);

    // vCPUs: 1 + 1 > 1.5.
    let (a, b, x) = (name("a"), name("b"), name("x"));
    c.create_with(json!({"name": a, "resources": {"requests": {"vcpus": 1, "memory_mib": 64}}}))
        .await;
    let (st, v) = c
        .post(
            "/v1/runtimes",
            json!({"name": b, "resources": {"requests": {"vcpus": 1, "memory_mib": 64}}}),
        )
        .await;
    assert_error(st, &v, 429, "resource_exhausted", "vCPUs");
    // A resize past the quota is refused the same way.
    let (st, v) = c
        .patch(
            &format!("/v1/runtimes/{a}"),
            json!({"resources": {"requests": {"vcpus": 2}}}),
        )
        .await;
    assert_error(st, &v, 429, "resource_exhausted", "vCPUs");
    c.create_with(small(&b)).await;

    // Runtimes: a third is refused, and a shut-down one still counts.
    let (st, v) = c.post("/v1/runtimes", small(&x)).await;
    assert_error(st, &v, 429, "resource_exhausted", "runtimes");
    let (st, _) = c.post(&format!("/v1/runtimes/{a}/stop"), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = c.post("/v1/runtimes", small(&x)).await;
    assert_error(st, &v, 429, "resource_exhausted", "runtimes");

    // Booting a shut-down one is admitted again: with the vCPUs taken meanwhile
    // it does not fit.
    set_quota(d, &t, json!({"runtimes": 3})).await;
    c.create_with(json!({"name": x, "resources": {"requests": {"vcpus": 1, "memory_mib": 64}}}))
        .await;
    let (st, v) = c.post(&format!("/v1/runtimes/{a}/start"), json!({})).await;
    assert_error(st, &v, 429, "resource_exhausted", "vCPUs");
    assert_eq!(c.status(&a).await, "shutdown");

    // Memory counts limits; PIDs count each runtime's process limit (1,024).
    set_quota(
        d,
        &t,
        json!({"vcpus": 100, "runtimes": 10, "memory_mib": 256, "pids": 4096}),
    )
    .await;
    let m = name("m");
    let (st, v) = c
        .post(
            "/v1/runtimes",
            json!({"name": m, "resources": {"requests": {"memory_mib": 16}, "limits": {"memory_mib": 200}}}),
        )
        .await;
    assert_error(st, &v, 429, "resource_exhausted", "memory");
    set_quota(d, &t, json!({"memory_mib": null, "pids": 2048})).await;
    let (st, v) = c.post("/v1/runtimes", small(&m)).await;
    assert_error(st, &v, 429, "resource_exhausted", "PIDs");

    // Lowered below usage: nothing is taken away, shrinking still works,
    // growing does not.
    set_quota(d, &t, json!({"vcpus": 0.5})).await;
    let (st, v) = c
        .patch(
            &format!("/v1/runtimes/{x}"),
            json!({"resources": {"requests": {"vcpus": 0.5}}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = c
        .patch(
            &format!("/v1/runtimes/{x}"),
            json!({"resources": {"requests": {"vcpus": 0.75}}}),
        )
        .await;
    assert_error(st, &v, 429, "resource_exhausted", "vCPUs");

    // Usage as the tenant sees it.
    let (_, v) = c.get("/v1/quota").await;
    let u = &v["data"]["usage"];
    assert_eq!(u["runtimes"], 3, "{v}");
    assert_eq!(u["vcpus"], 1.0, "{v}");
    assert_eq!(u["pids"], 2048, "{v}");

    // `null` returns every field to the default.
    let q = set_quota(
        d,
        &t,
        json!({"runtimes": null, "vcpus": null, "memory_mib": null, "pids": null}),
    )
    .await;
    assert_eq!(q["limits"]["runtimes"], 64);
    for n in [&a, &b, &x] {
        c.delete(&format!("/v1/runtimes/{n}")).await;
    }
}

#[tokio::test]
async fn racing_creates_never_exceed_the_quota() {
    let d = Daemon::shared();
    let c = d.tenant("race").await;
    let t = tenant_of(&c).await;
    set_quota(d, &t, json!({"runtimes": 3})).await;
    let names: Vec<String> = (0..20).map(|i| name(&format!("r{i}"))).collect();
    let answers = futures_util::future::join_all(names.iter().map(|n| {
        let c = c.clone();
        let n = n.clone();
        async move { c.post("/v1/runtimes", small(&n)).await }
    }))
    .await;
    let ok = answers
        .iter()
        .filter(|(st, _)| *st == StatusCode::OK)
        .count();
    for (st, v) in &answers {
        if *st != StatusCode::OK {
            assert_error(*st, v, 429, "resource_exhausted", "runtimes");
        }
    }
    assert_eq!(ok, 3, "exactly the quota succeeds");
    let (_, v) = c.get("/v1/runtimes?limit=100").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 3, "{v}");
    for n in &names {
        c.delete(&format!("/v1/runtimes/{n}")).await;
    }
}

#[tokio::test]
async fn a_tenant_cannot_set_quotas_or_touch_tokens() {
    let d = Daemon::shared();
    let c = d.tenant("hostile").await;
    let victim = d.tenant("victim").await;
    let me = tenant_of(&c).await;
    let other = tenant_of(&victim).await;
    for path in [
        format!("/v1/tenants/{me}/quota"),
        format!("/v1/tenants/{other}/quota"),
    ] {
        let (st, v) = c.patch(&path, json!({"runtimes": 1_000_000})).await;
        assert_error(st, &v, 403, "permission_denied", "admin");
        let (st, v) = c.get(&path).await;
        assert_error(st, &v, 403, "permission_denied", "admin");
    }
    assert_eq!(tenant_of(&c).await, me);
    let (_, v) = c.get("/v1/quota").await;
    assert_eq!(v["data"]["limits"]["runtimes"], 64, "unchanged: {v}");

    // The victim's token id, as the admin sees it; the hostile tenant can
    // neither list, revoke nor rotate it.
    let (_, list) = admin(d).get(&format!("/v1/tokens?tenant={other}")).await;
    let victim_id = list["data"][0]["id"].as_str().unwrap().to_string();
    let (st, v) = c.get("/v1/tokens").await;
    assert_error(st, &v, 403, "permission_denied", "admin");
    let (st, v) = c.delete(&format!("/v1/tokens/{victim_id}")).await;
    assert_error(st, &v, 403, "permission_denied", "admin");
    let (st, v) = c
        .post(&format!("/v1/tokens/{victim_id}/rotate"), json!({}))
        .await;
    assert_error(st, &v, 403, "permission_denied", "admin");
    assert_eq!(
        victim.get("/v1/runtimes").await.0,
        StatusCode::OK,
        "victim unharmed"
    );

    // Bad numbers, even from the admin: negative, huge, wrong type, unknown.
    let a = admin(d);
    let path = format!("/v1/tenants/{me}/quota");
    for (body, field) in [
        (json!({"runtimes": -1}), "runtimes"),
        (json!({"pids": 1e30}), "pids"),
        (json!({"memory_mib": "lots"}), "memory_mib"),
    ] {
        let (st, v) = a.patch(&path, body.clone()).await;
        assert_error(st, &v, 400, "invalid_argument", field);
    }
    // One past u64: not representable, so a 400, never a wrapped value.
    let resp = a
        .raw(
            reqwest::Method::PATCH,
            &path,
            Some(br#"{"checkpoint_bytes": 18446744073709551616}"#.to_vec()),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert_error(
        StatusCode::BAD_REQUEST,
        &v,
        400,
        "invalid_argument",
        "checkpoint_bytes",
    );
    for (body, field) in [
        (json!({"memory_mib": u64::MAX}), "memory_mib"),
        (json!({"vcpus": -0.5}), "vcpus"),
        (json!({"vcpus": 1e300}), "vcpus"),
    ] {
        let (st, v) = a.patch(&path, body).await;
        assert_error(st, &v, 422, "invalid_argument", field);
        assert_eq!(v["error"]["field"], field);
    }
    let (st, v) = a.patch(&path, json!({"bogus": 1})).await;
    assert_error(st, &v, 400, "invalid_argument", "bogus");
    let (st, v) = a
        .patch("/v1/tenants/Not_Valid/quota", json!({"runtimes": 1}))
        .await;
    assert_error(st, &v, 422, "invalid_argument", "name");
    let (st, _) = a.get("/v1/tenants/no-such-tenant-x1/quota").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, v) = c.get("/v1/quota").await;
    assert_eq!(
        v["data"]["limits"]["runtimes"], 64,
        "nothing was half-applied: {v}"
    );
}

// ---- item 11: the host's PID space ----

fn read_proc(p: &str) -> u64 {
    std::fs::read_to_string(p).unwrap().trim().parse().unwrap()
}

#[tokio::test]
async fn pid_limits_of_all_tenants_stay_below_pid_max() {
    // The documented budget: min(pid_max, threads-max) less an eighth (≥ 4,096).
    let space =
        read_proc("/proc/sys/kernel/pid_max").min(read_proc("/proc/sys/kernel/threads-max"));
    let budget = space - (space / 8).max(4096);
    // Two runtimes fit in the budget, a third does not.
    let per = budget / 3 + 1;
    let d = Daemon::start_new(&["--pids-limit", &per.to_string()]);
    let (ta, tb) = (d.tenant("pida").await, d.tenant("pidb").await);
    for c in [&ta, &tb] {
        let t = tenant_of(c).await;
        set_quota(&d, &t, json!({"pids": 1u64 << 40})).await;
    }
    let (a1, b1, a2) = (name("a1"), name("b1"), name("a2"));
    ta.create_with(small(&a1)).await;
    tb.create_with(small(&b1)).await;
    let (st, v) = ta.post("/v1/runtimes", small(&a2)).await;
    assert_error(st, &v, 503, "resource_exhausted", "pid_max");
    assert_eq!(
        ta.get(&format!("/v1/runtimes/{a2}")).await.0,
        StatusCode::NOT_FOUND
    );
    // A shut-down runtime holds no PIDs; booting it is admitted again.
    assert_eq!(
        tb.post(&format!("/v1/runtimes/{b1}/stop"), json!({}))
            .await
            .0,
        StatusCode::OK
    );
    ta.create_with(small(&a2)).await;
    let (st, v) = tb
        .post(&format!("/v1/runtimes/{b1}/start"), json!({}))
        .await;
    assert_error(st, &v, 503, "resource_exhausted", "pid_max");
    ta.delete(&format!("/v1/runtimes/{a2}")).await;
    let (st, v) = tb
        .post(&format!("/v1/runtimes/{b1}/start"), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    ta.delete(&format!("/v1/runtimes/{a1}")).await;
    tb.delete(&format!("/v1/runtimes/{b1}")).await;
}

// ---- item 5: checkpoints inside a storage quota ----

fn checkpoint_dirs(d: &Daemon) -> usize {
    std::fs::read_dir(d.data_dir.join("checkpoints"))
        .map(|r| r.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn checkpoints_count_against_a_storage_quota() {
    let d = Daemon::start_new(&[]);
    let c = d.tenant("ckq").await;
    let t = tenant_of(&c).await;
    let src = name("src");
    c.create(&src, 128).await;
    // 8 MiB of incompressible data in the writable layer.
    c.out(&src, "head -c 8M /dev/urandom > /root/blob").await;
    set_quota(
        &d,
        &t,
        json!({"checkpoints": 2, "checkpoint_bytes": 20u64 << 20}),
    )
    .await;

    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{src}/checkpoints"),
            json!({"name": "c1"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let s1 = v["data"]["size_bytes"].as_u64().unwrap();
    assert!(s1 >= 8 << 20, "{v}");
    let (_, q) = c.get("/v1/quota").await;
    assert_eq!(q["data"]["usage"]["checkpoints"], 1, "{q}");
    assert_eq!(q["data"]["usage"]["checkpoint_bytes"], s1, "{q}");
    assert_eq!(q["data"]["limits"]["checkpoint_bytes"], 20u64 << 20, "{q}");

    // Bytes: a second copy (another 8 MiB written) would pass 20 MiB.
    c.out(&src, "head -c 8M /dev/urandom > /root/blob2").await;
    let before = checkpoint_dirs(&d);
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{src}/checkpoints"),
            json!({"name": "c2"}),
        )
        .await;
    assert_error(st, &v, 429, "resource_exhausted", "checkpoint storage");
    assert_eq!(
        checkpoint_dirs(&d),
        before,
        "the refused copy left nothing behind"
    );
    assert_eq!(c.get("/v1/checkpoints/c2").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        c.status(&src).await,
        "running",
        "the source is thawed again"
    );

    // Count: with room in bytes, a third checkpoint is still one too many.
    set_quota(&d, &t, json!({"checkpoint_bytes": 1u64 << 30})).await;
    c.out(&src, "rm /root/blob2").await;
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{src}/checkpoints"),
            json!({"name": "c2"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let before = checkpoint_dirs(&d);
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{src}/checkpoints"),
            json!({"name": "c3"}),
        )
        .await;
    assert_error(st, &v, 429, "resource_exhausted", "checkpoints");
    assert_eq!(checkpoint_dirs(&d), before);

    // Racing: several checkpoints of several runtimes at once never exceed it.
    set_quota(&d, &t, json!({"checkpoints": 3})).await;
    let other = name("other");
    c.create(&other, 64).await;
    let answers = futures_util::future::join_all((0..4).map(|i| {
        let c = c.clone();
        let rt = if i % 2 == 0 {
            src.clone()
        } else {
            other.clone()
        };
        async move {
            c.post(
                &format!("/v1/runtimes/{rt}/checkpoints"),
                json!({"name": format!("race{i}")}),
            )
            .await
        }
    }))
    .await;
    let ok = answers
        .iter()
        .filter(|(st, _)| *st == StatusCode::OK)
        .count();
    assert_eq!(ok, 1, "one slot was left: {answers:?}");
    let (_, q) = c.get("/v1/quota").await;
    assert_eq!(q["data"]["usage"]["checkpoints"], 3, "{q}");

    // Deleting frees the slot.
    assert_eq!(c.delete("/v1/checkpoints/c1").await.0, StatusCode::OK);
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{src}/checkpoints"),
            json!({"name": "c4"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    for n in [&src, &other] {
        c.delete(&format!("/v1/runtimes/{n}")).await;
    }
}

// ---- item 12: tokens listed, revoked and rotated ----

#[tokio::test]
async fn admin_lists_revokes_and_rotates_tokens() {
    let d = Daemon::shared();
    let a = admin(d);
    let tenant = format!("tok-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let (st, v) = a.post("/v1/tokens", json!({"tenant": tenant})).await;
        assert_eq!(st, StatusCode::CREATED);
        tokens.push((
            v["data"]["id"].as_str().unwrap().to_string(),
            v["data"]["token"].as_str().unwrap().to_string(),
        ));
    }
    let (t1, t2) = (
        Client::new(&d.endpoint, &tokens[0].1),
        Client::new(&d.endpoint, &tokens[1].1),
    );
    assert_eq!(t1.get("/v1/runtimes").await.0, StatusCode::OK);

    let (st, v) = a.get(&format!("/v1/tokens?tenant={tenant}")).await;
    assert_eq!(st, StatusCode::OK);
    let items = v["data"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{v}");
    let text = v.to_string();
    for (id, secret) in &tokens {
        assert!(text.contains(id.as_str()));
        assert!(
            !text.contains(secret.as_str()),
            "a token's value is never listed"
        );
        let hash = runtad::auth::hash_token(secret);
        assert!(!text.contains(&hash), "nor its hash");
    }
    let used = items
        .iter()
        .find(|i| i["id"] == tokens[0].0.as_str())
        .unwrap();
    assert!(used["last_used_at"].is_string(), "{used}");
    assert!(used.get("token").is_none() && used.get("hash").is_none());

    // Revoke: the very next request is a 401; the other token is untouched.
    assert_eq!(
        a.delete(&format!("/v1/tokens/{}", tokens[0].0)).await.0,
        StatusCode::NO_CONTENT
    );
    let (st, v) = t1.get("/v1/runtimes").await;
    assert_error(st, &v, 401, "unauthenticated", "token");
    assert_eq!(t2.get("/v1/runtimes").await.0, StatusCode::OK);
    let (st, _) = a.delete(&format!("/v1/tokens/{}", tokens[0].0)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Rotate: a new token of the same tenant; the old one is a 401 at once.
    let c2 = t2.clone();
    let r = name("rot");
    c2.create_with(small(&r)).await;
    let (st, v) = a
        .post(&format!("/v1/tokens/{}/rotate", tokens[1].0), json!({}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["data"]["tenant"], tenant.as_str());
    let new_token = v["data"]["token"].as_str().unwrap().to_string();
    let new_id = v["data"]["id"].as_str().unwrap().to_string();
    assert_ne!(new_id, tokens[1].0);
    let (st, _) = t2.get("/v1/runtimes").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let t3 = Client::new(&d.endpoint, &new_token);
    let (st, v) = t3.get(&format!("/v1/runtimes/{r}")).await;
    assert_eq!(
        st,
        StatusCode::OK,
        "the new token acts for the same tenant: {v}"
    );
    let (_, v) = a.get(&format!("/v1/tokens?tenant={tenant}")).await;
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![new_id.as_str()]);
    assert_eq!(
        a.post(&format!("/v1/tokens/{}/rotate", tokens[1].0), json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND,
        "a revoked token cannot be rotated back to life"
    );

    // The admin token is not revoked or rotated over the API.
    let (_, v) = a.get("/v1/tokens?tenant=admin").await;
    let admin_id = v["data"][0]["id"].as_str().unwrap().to_string();
    let (st, v) = a.delete(&format!("/v1/tokens/{admin_id}")).await;
    assert_error(st, &v, 409, "failed_precondition", "admin token");
    let (st, _) = a
        .post(&format!("/v1/tokens/{admin_id}/rotate"), json!({}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(
        a.get("/v1/tokens").await.0,
        StatusCode::OK,
        "admin still works"
    );
    for bogus in ["tok_nope", "..%2F..%2Fetc", "%00"] {
        let (st, _) = a.delete(&format!("/v1/tokens/{bogus}")).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{bogus}");
    }
    t3.delete(&format!("/v1/runtimes/{r}")).await;

    // The routes are in the OpenAPI document.
    let (_, doc) = a.get("/v1/openapi.json").await;
    for p in [
        "/v1/tokens/{id}",
        "/v1/tokens/{id}/rotate",
        "/v1/tenants/{name}/quota",
        "/v1/quota",
    ] {
        assert!(
            doc["paths"][p].is_object(),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(doc["paths"]["/v1/tokens"]["get"].is_object());
    for s in ["QuotaView", "TenantQuota", "SetQuotaRequest", "TokenInfo"] {
        assert!(doc["components"]["schemas"][s].is_object(), "schema {s}");
    }
}
