//! Declarative deployment: apply and delete a deployment.json.

mod common;

use common::{assert_error, name, Daemon};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn apply_is_idempotent_and_rejects_bad_files_whole() {
    let d = Daemon::shared();
    let c = d.tenant("deploy").await;
    let (a, b) = (name("api"), name("worker"));
    let file = |mem: u64| {
        json!({"apiVersion": "runta/v1", "kind": "SandboxSet", "sandboxes": [
            {"name": a, "image": "base", "resources": {"vcpus": 1, "memory_mib": 128}, "env": {"ROLE": "api"},
             "publish": ["8080/https"], "idle_timeout_secs": 300},
            {"name": b, "resources": {"vcpus": 0.5, "memory_mib": mem}}
        ]})
    };
    let actions = |v: &serde_json::Value| -> Vec<String> {
        v["data"]["plan"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["action"].as_str().unwrap().to_string())
            .collect()
    };
    let (st, v) = c.post("/v1/apply", file(128)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(actions(&v), ["created", "created"]);
    assert_eq!(c.out(&a, "echo $ROLE").await, "api\n");
    let url = v["data"]["plan"][0]["runtime"]["publish"][0]["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        url.starts_with("https://") && url.contains(".runta.localhost"),
        "{url}"
    );
    let (_, v) = c.post("/v1/apply", file(128)).await;
    assert_eq!(actions(&v), ["unchanged", "unchanged"]);
    let (_, v) = c.post("/v1/apply", file(256)).await;
    assert_eq!(actions(&v), ["unchanged", "updated"]);
    let (_, r) = c.get(&format!("/v1/runtimes/{b}")).await;
    assert_eq!(r["data"]["resources"]["requests"]["memory_mib"], 256);

    // A bad file changes nothing, and names the bad field's path.
    let c2 = name("never");
    let mut bad = file(256);
    bad["sandboxes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": c2, "resources": {"memory_mib": 128}}));
    bad["sandboxes"][1]["resources"]["vcpus"] = json!(-2);
    let (st, v) = c.post("/v1/apply", bad).await;
    assert_error(
        st,
        &v,
        422,
        "invalid_argument",
        "sandboxes[1].resources.vcpus",
    );
    assert_eq!(
        c.get(&format!("/v1/runtimes/{c2}")).await.0,
        StatusCode::NOT_FOUND
    );
    let mut bad = file(256);
    bad["sandboxes"][0]["publish"] = json!(["http/8080"]);
    let (st, v) = c.post("/v1/apply", bad).await;
    assert_error(st, &v, 422, "invalid_argument", "sandboxes[0].publish[0]");
    let mut bad = file(256);
    bad["sandboxes"][1]["name"] = json!(a.clone());
    let (st, v) = c.post("/v1/apply", bad).await;
    assert_error(st, &v, 422, "invalid_argument", "appears twice");
    let mut bad = file(256);
    bad["sandboxes"][0]["resources"]["cpu"] = json!(1);
    let (st, v) = c.post("/v1/apply", bad).await;
    assert_error(st, &v, 400, "invalid_argument", "sandboxes[0].resources");
    let (st, v) = c
        .post(
            "/v1/apply",
            json!({"apiVersion": "v2", "kind": "SandboxSet", "sandboxes": []}),
        )
        .await;
    assert_error(st, &v, 422, "invalid_argument", "apiVersion");

    let (st, v) = c.post("/v1/delete", file(256)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(actions(&v), ["deleted", "deleted"]);
    let (_, v) = c.post("/v1/delete", file(256)).await;
    assert_eq!(actions(&v), ["not_found", "not_found"]);
}
