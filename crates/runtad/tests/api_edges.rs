//! The API's edges: authentication, tenancy, bad input, capacity, errors.

mod common;

use common::{assert_error, name, Client, Daemon};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn auth_is_required_and_tenants_are_separate() {
    let d = Daemon::shared();
    let a = d.tenant("alice").await;
    let b = d.tenant("bob").await;
    let n = name("mine");
    let r = a.create(&n, 64).await;
    let id = r["id"].as_str().unwrap().to_string();

    // No token, malformed, unknown.
    let anon = reqwest::Client::new();
    let resp = anon
        .get(format!("{}/v1/runtimes", d.endpoint))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unauthenticated");
    assert_eq!(v["request_id"], rid, "X-Request-Id matches the body");
    for bad in [
        "Bearer",
        "Bearer nope",
        "Basic abc",
        "Bearer rt_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ] {
        let resp = anon
            .get(format!("{}/v1/runtimes/{n}", d.endpoint))
            .header("authorization", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{bad}");
    }
    // /healthz needs none.
    assert_eq!(
        anon.get(format!("{}/healthz", d.endpoint))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // Bob sees nothing of Alice's: 404 by id and by name, and no side effects.
    for key in [id.as_str(), n.as_str()] {
        let (st, v) = b.get(&format!("/v1/runtimes/{key}")).await;
        assert_error(st, &v, 404, "not_found", key);
        let (st, _) = b
            .post(
                &format!("/v1/runtimes/{key}/exec"),
                json!({"command": "true"}),
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _) = b.post(&format!("/v1/runtimes/{key}/stop"), json!({})).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _) = b
            .patch(
                &format!("/v1/runtimes/{key}"),
                json!({"labels": {"x": "y"}}),
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _) = b
            .get(&format!("/v1/runtimes/{key}/files?path=/etc/hostname"))
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _) = b.delete(&format!("/v1/runtimes/{key}")).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
    let (_, v) = b.get("/v1/runtimes").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 0);
    assert_eq!(a.status(&n).await, "running");
    // Bob may use the same name for his own runtime.
    b.create(&n, 64).await;

    // Tenant tokens cannot mint tokens.
    let (st, v) = a.post("/v1/tokens", json!({"tenant": "evil"})).await;
    assert_error(st, &v, 403, "permission_denied", "admin");
    let (st, _) = a.post("/v1/tenants", json!({"name": "evil"})).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let admin = Client::new(&d.endpoint, &d.admin_token);
    let (st, v) = admin
        .post("/v1/tokens", json!({"tenant": "Not Valid"}))
        .await;
    assert_error(st, &v, 422, "invalid_argument", "tenant");
    // `runta` would pass for the operator (its images are localhost/runta/…).
    let (st, v) = admin.post("/v1/tokens", json!({"tenant": "runta"})).await;
    assert_error(st, &v, 422, "invalid_argument", "reserved");
    let (st, v) = admin.post("/v1/tenants", json!({"name": "runta"})).await;
    assert_error(st, &v, 422, "invalid_argument", "reserved");
    a.delete(&format!("/v1/runtimes/{n}")).await;
    b.delete(&format!("/v1/runtimes/{n}")).await;
}

#[tokio::test]
async fn bad_input_is_rejected_with_the_field_named() {
    let d = Daemon::shared();
    let c = d.tenant("bad").await;
    let cases: Vec<(serde_json::Value, u16, &str)> = vec![
        (json!({"name": "Worker"}), 422, "name"),
        (json!({"name": "-x"}), 422, "name"),
        (json!({"name": "a".repeat(64)}), 422, "name"),
        (json!({"name": "wörker"}), 422, "name"),
        (json!({"name": "a\u{0007}b"}), 422, "name"),
        (json!({"name": ""}), 422, "name"),
        (
            json!({"name": "ok", "resources": {"requests": {"vcpus": -1}}}),
            422,
            "resources.requests.vcpus",
        ),
        (
            json!({"name": "ok", "resources": {"requests": {"vcpus": 0}}}),
            422,
            "resources.requests.vcpus",
        ),
        (
            json!({"name": "ok", "resources": {"requests": {"memory_mib": -5}}}),
            400,
            "resources.requests.memory_mib",
        ),
        (
            json!({"name": "ok", "resources": {"requests": {"memory_mib": 1}}}),
            422,
            "resources.requests.memory_mib",
        ),
        (
            json!({"name": "ok", "resources": {"requests": {"memory_mib": 1e12}}}),
            400,
            "resources.requests.memory_mib",
        ),
        (
            json!({"name": "ok", "resources": {"requests": {"memory_mib": "lots"}}}),
            400,
            "resources.requests.memory_mib",
        ),
        (
            json!({"name": "ok", "resources": {"requests": {"memory_mib": 256}, "limits": {"memory_mib": 128}}}),
            422,
            "resources.limits.memory_mib",
        ),
        (json!({"name": "ok", "colour": "red"}), 400, "colour"),
        (
            json!({"name": "ok", "resources": {"requests": {"gpus": 1}}}),
            400,
            "gpus",
        ),
        (json!({"name": "ok", "env": {"1BAD": "x"}}), 422, "env.1BAD"),
        (
            json!({"name": "ok", "env": {"OK": "nul\u{0000}byte"}}),
            422,
            "env.OK",
        ),
        (json!({"name": "ok", "image": "../../etc"}), 422, "image"),
        (
            // Any well-formed reference is an image to pull (issue 19):
            // only one that cannot be a reference is refused here.
            json!({"name": "ok", "image": "Not An Image!"}),
            422,
            "image",
        ),
        (
            json!({"name": "ok", "publish": [{"port": 0}]}),
            422,
            "publish[0].port",
        ),
        (
            json!({"name": "ok", "publish": [{"port": 80, "protocol": "ftp"}]}),
            400,
            "publish[0].protocol",
        ),
        (
            json!({"name": "ok", "idle_timeout_secs": 99_999_999_999u64}),
            422,
            "idle_timeout_secs",
        ),
        // A missing name is allowed (the official API's; the daemon makes one),
        // one that is not a string is not.
        (json!({"name": 5, "resources": {}}), 400, "name"),
        (json!({"name": "Bad Name"}), 422, "name"),
        (json!([1, 2]), 400, "invalid"),
    ];
    for (body, status, field) in cases {
        let (st, v) = c.post("/v1/runtimes", body.clone()).await;
        assert_eq!(st.as_u16(), status, "{body} -> {v}");
        assert_eq!(v["error"]["code"], "invalid_argument", "{body} -> {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{body}: message should name {field}: {v}"
        );
    }
    // Malformed JSON, empty body, oversized body.
    for raw in [b"{\"name\": ".to_vec(), b"".to_vec(), b"not json".to_vec()] {
        let resp = c.raw(Method::POST, "/v1/runtimes", Some(raw)).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_argument");
    }
    // An oversized body is refused from its Content-Length, before it is read.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = d.endpoint.trim_start_matches("http://");
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /v1/runtimes HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{{\"name\":",
            c.token,
            2 * 1024 * 1024
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        let mut resp = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            sock.read_to_end(&mut resp),
        )
        .await;
        let text = String::from_utf8_lossy(&resp);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(text.contains("\"request_id\""), "{text}");
    }
    // Nothing was created by any of that.
    let (_, v) = c.get("/v1/runtimes").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 0, "{v}");
    // Unknown routes and methods answer with the envelope too.
    let (st, v) = c.get("/v1/nothing-here").await;
    assert_error(st, &v, 404, "not_found", "/v1/nothing-here");
    let (st, v) = c.call(Method::PUT, "/v1/runtimes", Some(json!({}))).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED, "{v}");
    assert!(v["error"]["code"].is_string());
}

#[tokio::test]
async fn duplicates_and_capacity() {
    let d = Daemon::shared();
    let c = d.tenant("cap").await;
    let n = name("dup");
    c.create(&n, 64).await;
    let (st, v) = c
        .post(
            "/v1/runtimes",
            json!({"name": n, "resources": {"requests": {"memory_mib": 64}}}),
        )
        .await;
    assert_error(st, &v, 409, "already_exists", &n);
    // Beyond the machine: 503 and nothing half-created.
    let big = name("big");
    let (st, v) = c
        .post(
            "/v1/runtimes",
            json!({"name": big, "resources": {"requests": {"memory_mib": 4_000_000}}}),
        )
        .await;
    assert_error(st, &v, 503, "resource_exhausted", "memory");
    let (st, v) = c
        .post(
            "/v1/runtimes",
            json!({"name": big, "resources": {"requests": {"vcpus": 200, "memory_mib": 64}}}),
        )
        .await;
    assert_error(st, &v, 503, "resource_exhausted", "vCPUs");
    let (st, _) = c.get(&format!("/v1/runtimes/{big}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    c.delete(&format!("/v1/runtimes/{n}")).await;
}

#[tokio::test]
async fn concurrent_creates_of_one_name_make_one_runtime() {
    let d = Daemon::shared();
    let c = d.tenant("race").await;
    let n = name("race");
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let c = c.clone();
        let n = n.clone();
        tasks.push(tokio::spawn(async move {
            c.post(
                "/v1/runtimes",
                json!({"name": n, "resources": {"requests": {"memory_mib": 64}}}),
            )
            .await
            .0
        }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => created += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 1);
    let (_, v) = c.get("/v1/runtimes").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    c.delete(&format!("/v1/runtimes/{n}")).await;
}

#[tokio::test]
async fn openapi_metrics_and_health() {
    let d = Daemon::shared();
    let c = d.tenant("meta").await;
    let (st, v) = c.get("/v1/openapi.json").await;
    assert_eq!(st, StatusCode::OK);
    assert!(v["openapi"].as_str().unwrap().starts_with("3.1"));
    for p in [
        "/v1/runtimes",
        "/v1/runtimes/{id}",
        "/v1/runtimes/{id}/exec",
        "/v1/runtimes/{id}/files",
        "/v1/apply",
    ] {
        assert!(
            v["paths"][p].is_object(),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(v["components"]["schemas"]["Runtime"].is_object());
    let text = reqwest::get(format!("{}/metrics", d.endpoint))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("runta_http_requests_total"), "{text}");
    assert!(text.contains("runta_build_info"));
    let (st, v) = c.get("/healthz").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "ok");
}
