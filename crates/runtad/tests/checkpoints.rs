//! Checkpoints and forks: consistent saves, independent forks, chains, and
//! the rules for deleting.

mod common;

use common::{assert_error, name, Daemon};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn checkpoint_fork_and_delete() {
    let d = Daemon::shared();
    let c = d.tenant("ckpt").await;
    let src = name("src");
    c.create(&src, 128).await;
    c.out(&src, "echo v1 > /root/a.txt; mkdir -p /root/dir && echo in > /root/dir/f; rm /etc/debian_version").await;
    let ck = name("c1");
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{src}/checkpoints"),
            json!({"name": ck}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["source_runtime_name"], src);
    assert!(v["data"]["size_bytes"].as_u64().unwrap() > 0);
    let ck_id = v["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        c.status(&src).await,
        "running",
        "the source is thawed again"
    );
    c.out(&src, "echo v2 > /root/a.txt").await;

    // Two forks: each sees the checkpoint, not the later change, and not each other.
    let (f1, f2) = (name("f1"), name("f2"));
    for f in [&f1, &f2] {
        c.create_with(
            json!({"name": f, "checkpoint": ck, "resources": {"requests": {"memory_mib": 64}}}),
        )
        .await;
        assert_eq!(c.out(f, "cat /root/a.txt /root/dir/f").await, "v1\nin\n");
        assert_ne!(
            c.sh(f, "test -e /etc/debian_version").await["exit_code"],
            0,
            "deletions are kept"
        );
    }
    c.out(&f1, "echo mine > /root/x.txt; echo changed > /root/a.txt")
        .await;
    assert_ne!(c.sh(&f2, "test -e /root/x.txt").await["exit_code"], 0);
    assert_ne!(c.sh(&src, "test -e /root/x.txt").await["exit_code"], 0);
    assert_eq!(c.out(&f2, "cat /root/a.txt").await, "v1\n");
    assert_eq!(c.out(&src, "cat /root/a.txt").await, "v2\n");
    // Forks keep their files over a reboot.
    c.post(&format!("/v1/runtimes/{f1}/stop"), json!({})).await;
    c.post(&format!("/v1/runtimes/{f1}/start"), json!({})).await;
    assert_eq!(
        c.out(&f1, "cat /root/a.txt /root/x.txt").await,
        "changed\nmine\n"
    );

    // A paused runtime stays paused through a checkpoint.
    c.post(&format!("/v1/runtimes/{src}/pause"), json!({}))
        .await;
    let ck2 = name("c2");
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{src}/checkpoints"),
            json!({"name": ck2}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(c.status(&src).await, "paused");
    let f3 = name("f3");
    c.create_with(
        json!({"name": f3, "checkpoint": ck2, "resources": {"requests": {"memory_mib": 64}}}),
    )
    .await;
    assert_eq!(c.out(&f3, "cat /root/a.txt").await, "v2\n");

    // A checkpoint of a fork stacks on the one below it.
    let ck3 = name("c3");
    let (st, _) = c
        .post(
            &format!("/v1/runtimes/{f1}/checkpoints"),
            json!({"name": ck3}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let f4 = name("f4");
    c.create_with(
        json!({"name": f4, "checkpoint": ck3, "resources": {"requests": {"memory_mib": 64}}}),
    )
    .await;
    assert_eq!(
        c.out(&f4, "cat /root/a.txt /root/x.txt /root/dir/f").await,
        "changed\nmine\nin\n"
    );

    // Errors.
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{src}/checkpoints"),
            json!({"name": ck}),
        )
        .await;
    assert_error(st, &v, 409, "already_exists", &ck);
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{src}/checkpoints"),
            json!({"name": "Bad Name"}),
        )
        .await;
    assert_error(st, &v, 422, "invalid_argument", "name");
    let (st, v) = c
        .post(
            "/v1/runtimes",
            json!({"name": name("nf"), "checkpoint": "no-such-checkpoint"}),
        )
        .await;
    assert_error(st, &v, 422, "invalid_argument", "checkpoint");
    c.post(&format!("/v1/runtimes/{f3}/stop"), json!({})).await;
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{f3}/checkpoints"),
            json!({"name": name("off")}),
        )
        .await;
    assert_error(st, &v, 409, "failed_precondition", "shutdown");
    let other = d.tenant("ckpt-other").await;
    let (st, _) = other.get(&format!("/v1/checkpoints/{ck_id}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = other
        .post(
            "/v1/runtimes",
            json!({"name": name("steal"), "checkpoint": ck_id}),
        )
        .await;
    assert_error(st, &v, 422, "invalid_argument", "checkpoint");
    let (st, _) = other.delete(&format!("/v1/checkpoints/{ck}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Listing; deleting the source keeps its checkpoints.
    let (_, v) = c.get("/v1/checkpoints").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
    let (_, v) = c.get("/v1/checkpoints?limit=2").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["pagination"]["has_more"], true);
    let cursor = v["pagination"]["next_cursor"].as_str().unwrap().to_string();
    let (_, v) = c.get(&format!("/v1/checkpoints?after={cursor}")).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    c.delete(&format!("/v1/runtimes/{src}")).await;
    let (st, v) = c.get(&format!("/v1/checkpoints/{ck}")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // In use: refused, naming the users; once free, deleted and its space freed.
    let (st, v) = c.delete(&format!("/v1/checkpoints/{ck}")).await;
    assert_error(st, &v, 409, "failed_precondition", &f2);
    for f in [&f1, &f2, &f3, &f4] {
        c.delete(&format!("/v1/runtimes/{f}")).await;
    }
    let (st, v) = c.delete(&format!("/v1/checkpoints/{ck}")).await;
    assert_error(st, &v, 409, "failed_precondition", &ck3);
    for k in [&ck3, &ck, &ck2] {
        let (st, v) = c.delete(&format!("/v1/checkpoints/{k}")).await;
        assert_eq!(st, StatusCode::OK, "{k}: {v}");
    }
    assert!(
        !d.data_dir.join("checkpoints").join(&ck_id).exists(),
        "space not freed"
    );
    let (_, v) = c.get("/v1/checkpoints").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 0);
}
