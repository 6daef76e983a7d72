//! The secrets API against a real daemon (issue 18): CRUD in both client
//! spellings, values that never come back out (responses, the daemon's log,
//! events, the store file), tenant isolation, hostile input, and a kill -9
//! that loses nothing and leaves no binding half-applied. What the gateway
//! injects is tested in secrets_egress.rs.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{name, Client, Daemon};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Every body a test saw, to search for leaked values at the end.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn add(&mut self, v: &Value) -> Value {
        self.0.push(v.to_string());
        v.clone()
    }
    fn assert_never(&self, secret: &str) {
        for b in &self.0 {
            assert!(!b.contains(secret), "a response carries the value: {b}");
        }
    }
}

fn uniq(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

async fn put(c: &Client, path: &str, body: Value) -> (StatusCode, Value) {
    c.call(Method::PUT, path, Some(body)).await
}

fn header_rule(host: &str, secret: &str) -> Value {
    json!({"host": host, "path": "/v1/*", "secret": secret,
           "injection": {"headerName": "Authorization", "valueFormat": "Bearer ${credential}"}})
}

/// The bytes of the store (database and its WAL) and of the whole data dir's
/// text files.
fn data_dir_has(d: &Daemon, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![d.data_dir.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                // Runtime root filesystems are big and hold no daemon state.
                if p.file_name().is_some_and(|n| n == "runtimes") {
                    continue;
                }
                stack.push(p);
            } else if ft.is_file() {
                if let Ok(bytes) = std::fs::read(&p) {
                    if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                        hits.push(p.display().to_string());
                    }
                }
            }
        }
    }
    hits
}

#[tokio::test]
async fn secrets_crud_is_write_only() {
    let d = Daemon::shared();
    let c = d.tenant("sec").await;
    let mut seen = Seen::default();
    let value = uniq("sk-crud");
    let replaced = uniq("sk-crud2");
    let n = name("openai");

    let (st, v) = c
        .post(
            "/v1/secrets",
            json!({"name": n, "value": value, "cache_ttl_secs": 60}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let s = seen.add(&v)["data"].clone();
    assert_eq!(s["display_name"], n.as_str());
    assert_eq!(s["name"], n.as_str());
    assert_eq!(s["cache_ttl_secs"], 60);
    assert!(
        s["stub"].as_str().unwrap().starts_with("runta-stub-"),
        "{s}"
    );
    assert!(
        s.get("value").is_none() && s.get("value_preview").is_none(),
        "{s}"
    );
    let id = s["id"].as_str().unwrap().to_string();

    // By id and by name.
    for key in [&id, &n] {
        let (st, v) = c.get(&format!("/v1/secrets/{key}")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(seen.add(&v)["data"]["id"], id.as_str());
    }
    let (st, v) = c.get("/v1/secrets").await;
    assert_eq!(st, StatusCode::OK);
    let listed = seen.add(&v)["data"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "{v}");

    // A taken name.
    let (st, v) = c
        .post("/v1/secrets", json!({"name": n, "value": "x"}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "already_exists");

    // 0.1.21: PUT replaces the value (same id), or creates under a new name.
    let (st, v) = put(&c, &format!("/v1/secrets/{n}"), json!({"value": replaced})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(seen.add(&v)["data"]["id"], id.as_str());
    let n2 = name("fresh");
    let (st, v) = put(
        &c,
        &format!("/v1/secrets/{n2}"),
        json!({"value": value, "cache_ttl_secs": 5}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_ne!(seen.add(&v)["data"]["id"], id.as_str());
    let (st, _) = put(
        &c,
        &format!("/v1/secrets/{}", uuid::Uuid::new_v4()),
        json!({"value": "x"}),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Delete, then it is gone.
    let (st, v) = c.delete(&format!("/v1/secrets/{id}")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    seen.add(&v);
    let (st, _) = c.get(&format!("/v1/secrets/{id}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = c.delete(&format!("/v1/secrets/{id}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = c.delete(&format!("/v1/secrets/{n2}")).await;
    assert_eq!(st, StatusCode::OK, "{v}");

    // Nowhere: responses, the daemon's log, the store (database and WAL).
    seen.assert_never(&value);
    seen.assert_never(&replaced);
    let log = std::fs::read_to_string(d.data_dir.join("runtad.log")).unwrap_or_default();
    assert!(
        !log.contains(&value) && !log.contains(&replaced),
        "the log has a value"
    );
    assert!(
        data_dir_has(d, &value).is_empty(),
        "{:?}",
        data_dir_has(d, &value)
    );
    assert!(data_dir_has(d, &replaced).is_empty());
}

/// The names of a list page and its `pagination`.
fn page_of(v: &Value) -> (Vec<String>, Option<String>, bool) {
    let names = v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|s| s["display_name"].as_str().unwrap().to_string())
        .collect();
    let p = &v["pagination"];
    (
        names,
        p["next_cursor"].as_str().map(str::to_string),
        p["has_more"].as_bool().unwrap_or_else(|| panic!("{v}")),
    )
}

#[tokio::test]
async fn the_list_pages_with_limit_and_after() {
    let d = Daemon::shared();
    let c = d.tenant("page").await;
    let other = d.tenant("page2").await;
    let mut seen = Seen::default();
    let value = uniq("sk-page");
    // More than a default page of the other list routes (50).
    let names: Vec<String> = (0..57).map(|i| format!("p{i:02}")).collect();
    for n in &names {
        let (st, v) = c
            .post("/v1/secrets", json!({"name": n, "value": value}))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    let (st, v) = other
        .post("/v1/secrets", json!({"name": "theirs", "value": value}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");

    // runta-sdk 0.1.21's `list_secrets` sends `GET /v1/secrets` with no query
    // and reads `data` of that one answer (so do our CLI and SDKs): every
    // secret, in one page.
    let (st, v) = c.get("/v1/secrets").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (all, cursor, more) = page_of(&seen.add(&v));
    assert_eq!(all, names);
    assert_eq!((cursor, more), (None, false));

    // `limit` and `after` as the official client sends them on its other
    // list routes (`?limit=50&after=<next_cursor>`, 50 its default).
    for limit in [50usize, 7, 1, 100] {
        let mut got = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let q = match &after {
                Some(a) => format!("/v1/secrets?limit={limit}&after={a}"),
                None => format!("/v1/secrets?limit={limit}"),
            };
            let (st, v) = c.get(&q).await;
            assert_eq!(st, StatusCode::OK, "{q}: {v}");
            let (page, cursor, more) = page_of(&seen.add(&v));
            assert!(page.len() <= limit, "{q}: {v}");
            got.extend(page);
            assert_eq!(more, cursor.is_some(), "{v}");
            match cursor {
                Some(cur) => after = Some(cur),
                None => break,
            }
            assert!(got.len() <= names.len(), "a cursor loops: {q}");
        }
        assert_eq!(got, names, "limit={limit}");
    }
    let (_, v) = c.get("/v1/secrets?limit=50").await;
    let (first, cursor, more) = page_of(&v);
    assert_eq!((first.len(), more), (50, true));
    let (_, v) = c
        .get(&format!("/v1/secrets?after={}", cursor.clone().unwrap()))
        .await;
    assert_eq!(page_of(&v).0, names[50..].to_vec(), "after alone: the rest");
    // Another tenant's list with this tenant's cursor: its own secrets only.
    let (st, v) = other
        .get(&format!("/v1/secrets?limit=5&after={}", cursor.unwrap()))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(!page_of(&v).0.iter().any(|n| n.starts_with('p')), "{v}");
    let (_, v) = other.get("/v1/secrets?after=0").await;
    assert_eq!(page_of(&v).0, ["theirs"]);

    // Bad values: 400 naming the field.
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=", "limit"),
        ("limit=99999999999999999999", "limit"),
        ("after=abc", "after"),
        ("after=1.5", "after"),
        ("after=%00", "after"),
        ("limit=5&after=' OR 1=1 --", "after"),
    ] {
        let (st, v) = c.get(&format!("/v1/secrets?{q}")).await;
        common::assert_error(st, &v, 400, "invalid_argument", field);
        assert_eq!(v["error"]["field"], field, "{q}: {v}");
    }
    seen.assert_never(&value);
    for n in names {
        c.delete(&format!("/v1/secrets/{n}")).await;
    }
    other.delete("/v1/secrets/theirs").await;
}

#[tokio::test]
async fn bindings_in_both_spellings_are_one_model() {
    let d = Daemon::shared();
    let c = d.tenant("bind").await;
    let mut seen = Seen::default();
    let value = uniq("sk-bind");
    let rt = name("agent");
    c.create(&rt, 64).await;
    let (st, v) = c
        .post("/v1/secrets", json!({"name": "llm", "value": value}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");

    // 0.1.1: a rule.
    let (st, v) = c
        .post(
            &format!("/v1/runtimes/{rt}/secret-injection-rules"),
            header_rule("api.openai.com", "llm"),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let rule = seen.add(&v)["data"].clone();
    assert_eq!(rule["credential_display_name"], "llm");
    assert_eq!(rule["stub_value_display_name"], "llm");
    assert_eq!(rule["runtime_display_name"], rt.as_str());
    assert_eq!(rule["host_pattern"], "api.openai.com");
    assert_eq!(rule["path_pattern"], "/v1/*");
    let cfg: Value = serde_json::from_str(rule["injection_config_json"].as_str().unwrap()).unwrap();
    assert_eq!(
        cfg,
        json!({"headerName": "Authorization", "valueFormat": "Bearer ${credential}"})
    );
    assert_eq!(rule["stub_config_json"], rule["injection_config_json"]);
    let rule_id = rule["id"].as_str().unwrap().to_string();

    // 0.1.21: the same binding is a stub of the runtime.
    let (st, v) = c.get(&format!("/v1/runtimes/{rt}/secret-stubs")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(seen.add(&v)["data"][0]["id"], rule_id.as_str());
    for path in [
        format!("/v1/runtimes/{rt}/secret-injection-rules/{rule_id}"),
        format!("/v1/runtimes/{rt}/secret-stubs/{rule_id}"),
        format!("/v1/secret-injection-rules/{rule_id}"),
    ] {
        let (st, v) = c.get(&path).await;
        assert_eq!(st, StatusCode::OK, "{path}: {v}");
        seen.add(&v);
    }
    for path in ["/v1/secret-injection-rules", "/v1/secret-stubs"] {
        let (_, v) = c.get(path).await;
        assert_eq!(
            seen.add(&v)["data"].as_array().unwrap().len(),
            1,
            "{path}: {v}"
        );
    }

    // 0.1.21 spelling in: stub_value + config; PUT replaces the same target.
    let stub =
        json!({"host": "*.example.com", "stub_value": "llm", "config": {"paramName": "key"}});
    let (st, v) = c
        .post(&format!("/v1/runtimes/{rt}/secret-stubs"), stub.clone())
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let first = seen.add(&v)["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(v["data"]["path_pattern"], "/*");
    let (st, v) = put(&c, &format!("/v1/runtimes/{rt}/secret-stubs"), stub).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_ne!(seen.add(&v)["data"]["id"], first.as_str());
    let (_, v) = c.get(&format!("/v1/runtimes/{rt}/secret-stubs")).await;
    assert_eq!(
        v["data"].as_array().unwrap().len(),
        2,
        "PUT replaced nothing: {v}"
    );

    // Replace: one transaction; one bad entry and nothing changes.
    let (st, v) = put(
        &c,
        &format!("/v1/runtimes/{rt}/secret-stubs/replace"),
        json!({"delete_ids": [rule_id], "stubs": [
            header_rule("api.anthropic.com", "llm"),
            {"host": "bad host", "secret": "llm", "injection": {"headerName": "x"}},
        ]}),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stubs[1].host"),
        "{v}"
    );
    let (_, v) = c.get(&format!("/v1/runtimes/{rt}/secret-stubs")).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");
    let (st, v) = put(
        &c,
        &format!("/v1/runtimes/{rt}/secret-stubs/replace"),
        json!({"delete_ids": [rule_id], "stubs": [header_rule("api.anthropic.com", "llm")]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let hosts: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["host_pattern"].as_str().unwrap())
        .collect();
    assert_eq!(hosts.len(), 2, "{v}");
    assert!(
        hosts.contains(&"api.anthropic.com") && !hosts.contains(&"api.openai.com"),
        "{v}"
    );
    // A delete id that is not this runtime's: 404, nothing changed.
    let (st, _) = put(
        &c,
        &format!("/v1/runtimes/{rt}/secret-stubs/replace"),
        json!({"delete_ids": [uuid::Uuid::new_v4()], "stubs": []}),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Tenant defaults: 201 on create, listed apart from runtime bindings.
    let (st, v) = c
        .post(
            "/v1/default-secret-stubs",
            header_rule("api.github.com", "llm"),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let def = seen.add(&v)["data"].clone();
    assert_eq!(def["scope"], "tenant_default");
    assert!(def.get("runtime_display_name").is_none(), "{def}");
    let (st, v) = put(
        &c,
        "/v1/default-secret-stubs",
        header_rule("api.github.com", "llm"),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, v) = c.get("/v1/default-secret-stubs").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1, "{v}");
    let def_id = v["data"][0]["id"].as_str().unwrap().to_string();
    let (_, v) = c.get("/v1/secret-stubs").await;
    assert_eq!(
        v["data"].as_array().unwrap().len(),
        2,
        "defaults are not runtime stubs: {v}"
    );
    // A default is not reachable through the runtime routes.
    let (st, _) = c.delete(&format!("/v1/secret-stubs/{def_id}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = c
        .delete(&format!("/v1/default-secret-stubs/{def_id}"))
        .await;
    assert_eq!(st, StatusCode::OK);

    // Deleting a binding through the top-level route, then the secret takes
    // the rest with it.
    let (_, v) = c.get(&format!("/v1/runtimes/{rt}/secret-stubs")).await;
    let one = v["data"][0]["id"].as_str().unwrap().to_string();
    let (st, _) = c.delete(&format!("/v1/secret-injection-rules/{one}")).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = c.delete(&format!("/v1/secret-injection-rules/{one}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = c.delete("/v1/secrets/llm").await;
    assert_eq!(st, StatusCode::OK);
    let (_, v) = c.get("/v1/secret-stubs").await;
    assert_eq!(v["data"], json!([]), "{v}");

    // The binding's runtime going takes its bindings along.
    c.post("/v1/secrets", json!({"name": "again", "value": value}))
        .await;
    let (st, _) = c
        .post(
            &format!("/v1/runtimes/{rt}/secret-injection-rules"),
            header_rule("h.example.com", "again"),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = c.delete(&format!("/v1/runtimes/{rt}")).await;
    assert!(st.is_success());
    let (_, v) = c.get("/v1/secret-injection-rules").await;
    assert_eq!(v["data"], json!([]), "{v}");

    seen.assert_never(&value);
    // Nor in the runtime's events.
    let log = std::fs::read_to_string(d.data_dir.join("runtad.log")).unwrap_or_default();
    assert!(!log.contains(&value));
}

#[tokio::test]
async fn another_tenant_can_neither_read_nor_bind() {
    let d = Daemon::shared();
    let a = d.tenant("own").await;
    let b = d.tenant("thief").await;
    let (_, v) = a
        .post(
            "/v1/secrets",
            json!({"name": "mine", "value": uniq("sk-a")}),
        )
        .await;
    let id = v["data"]["id"].as_str().unwrap().to_string();
    let rt_a = name("a");
    let rt_b = name("b");
    a.create(&rt_a, 64).await;
    b.create(&rt_b, 64).await;
    let (st, v) = a
        .post(
            &format!("/v1/runtimes/{rt_a}/secret-injection-rules"),
            header_rule("x.example.com", "mine"),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let rule = v["data"]["id"].as_str().unwrap().to_string();

    for path in [format!("/v1/secrets/{id}"), "/v1/secrets/mine".to_string()] {
        assert_eq!(b.get(&path).await.0, StatusCode::NOT_FOUND, "{path}");
        // By A's id: 404. By the name: B makes its own secret of that name.
        let (st, v) = put(&b, &path, json!({"value": "overwrite"})).await;
        if path.contains(&id) {
            assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
        } else {
            assert_ne!(v["data"]["id"], id.as_str(), "{v}");
        }
    }
    assert_eq!(
        b.delete(&format!("/v1/secrets/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, v) = b.get("/v1/secrets").await;
    assert!(!v.to_string().contains(&id), "{v}");
    // Bind A's secret to B's runtime, by id or by name: 404.
    for s in [id.as_str(), "mine"] {
        let (st, v) = b
            .post(
                &format!("/v1/runtimes/{rt_b}/secret-injection-rules"),
                header_rule("x.example.com", s),
            )
            .await;
        // "mine" by name may exist in B only if B made it; B did not, except
        // through the PUT above, which creates B's own secret of that name.
        if s == "mine" && st == StatusCode::OK {
            assert_ne!(v["data"]["secret_id"], id.as_str(), "bound A's secret: {v}");
        } else {
            assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
        }
        let (st, _) = b
            .post(
                "/v1/default-secret-stubs",
                header_rule("x.example.com", &id),
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
    // A's runtime and A's rule do not exist for B.
    assert_eq!(
        b.post(
            &format!("/v1/runtimes/{rt_a}/secret-injection-rules"),
            header_rule("x.example.com", "mine")
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        b.get(&format!("/v1/secret-injection-rules/{rule}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        b.delete(&format!("/v1/secret-injection-rules/{rule}"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        b.delete(&format!("/v1/secret-stubs/{rule}")).await.0,
        StatusCode::NOT_FOUND
    );
    // A still has everything, unchanged.
    assert_eq!(
        a.get(&format!("/v1/secret-injection-rules/{rule}")).await.0,
        StatusCode::OK
    );
    let (_, v) = a.get(&format!("/v1/secrets/{id}")).await;
    assert_eq!(v["data"]["updated_at"], v["data"]["created_at"], "{v}");
    // No token: 401.
    let anon = Client::new(&d.endpoint, "rt_nope");
    assert_eq!(anon.get("/v1/secrets").await.0, StatusCode::UNAUTHORIZED);
    a.delete(&format!("/v1/runtimes/{rt_a}")).await;
    b.delete(&format!("/v1/runtimes/{rt_b}")).await;
}

#[tokio::test]
async fn hostile_input_is_refused_naming_the_field() {
    let d = Daemon::shared();
    let c = d.tenant("hostile").await;
    let rt = name("h");
    c.create(&rt, 64).await;
    let marker = uniq("LEAKME");
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"name": "ok", "value": format!("{marker}{}", "a".repeat(8 * 1024))}),
            "value",
        ),
        (json!({"name": "ok", "value": ""}), "value"),
        (
            json!({"name": "ok", "value": format!("{marker}\r\nX-Evil: 1")}),
            "value",
        ),
        (
            json!({"name": "ok", "value": format!("{marker}\0")}),
            "value",
        ),
        (json!({"name": "bad name", "value": "x"}), "name"),
        (json!({"name": "../etc", "value": "x"}), "name"),
        (json!({"name": "a".repeat(64), "value": "x"}), "name"),
        (
            json!({"name": uuid::Uuid::new_v4().to_string(), "value": "x"}),
            "name",
        ),
        (
            json!({"name": "ok", "value": "x", "cache_ttl_secs": -1}),
            "cache_ttl_secs",
        ),
    ];
    for (body, field) in cases {
        let (st, v) = c.post("/v1/secrets", body.clone()).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with(field),
            "{field}: {v}"
        );
        assert!(
            !v.to_string().contains(&marker),
            "the error quotes the value: {v}"
        );
    }
    // Not a string: 400, and the value is not quoted back.
    let (st, v) = c
        .post("/v1/secrets", json!({"name": "ok", "value": 987654321}))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(!v.to_string().contains("987654321"), "{v}");
    let (st, _) = c
        .post(
            "/v1/secrets",
            json!({"name": "ok", "value": "x", "extra": 1}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // Half a megabyte: read (under the body limit), refused, not stored.
    let (st, v) = c
        .post(
            "/v1/secrets",
            json!({"name": "big", "value": "a".repeat(512 * 1024)}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(c.get("/v1/secrets/big").await.0, StatusCode::NOT_FOUND);

    let (st, _) = c
        .post("/v1/secrets", json!({"name": "ok", "value": "fine"}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let rules = format!("/v1/runtimes/{rt}/secret-injection-rules");
    let inj = |i: Value| json!({"host": "api.example.com", "secret": "ok", "injection": i});
    let bad: Vec<(Value, &str)> = vec![
        (
            inj(json!({"headerName": "X-Key", "valueFormat": "Bearer"})),
            "injection",
        ),
        (
            inj(json!({"headerName": "X-Key", "valueFormat": "${credential}\r\nEvil: 1"})),
            "injection",
        ),
        (
            inj(json!({"headerName": "X-Key\r\nEvil", "valueFormat": "${credential}"})),
            "injection",
        ),
        (inj(json!({"headerName": "Host"})), "injection"),
        (inj(json!({"headerName": "Content-Length"})), "injection"),
        (inj(json!({"paramName": "a b"})), "injection"),
        (
            inj(json!({"headerName": "a", "paramName": "b"})),
            "injection",
        ),
        (inj(json!({})), "injection"),
        (inj(json!("not json")), "injection"),
        (
            json!({"host": "*", "secret": "ok", "injection": {"headerName": "X"}}),
            "host",
        ),
        (
            json!({"host": "*.com", "secret": "ok", "injection": {"headerName": "X"}}),
            "host",
        ),
        (
            json!({"host": "https://api.example.com/v1", "secret": "ok", "injection": {"headerName": "X"}}),
            "host",
        ),
        (
            json!({"host": "10.0.0.1", "secret": "ok", "injection": {"headerName": "X"}}),
            "host",
        ),
        (
            json!({"host": "a\r\nb.com", "secret": "ok", "injection": {"headerName": "X"}}),
            "host",
        ),
        (
            json!({"host": "api.example.com", "path": "v1", "secret": "ok", "injection": {"headerName": "X"}}),
            "path",
        ),
        (
            json!({"host": "api.example.com", "path": "/v1/*/x", "secret": "ok", "injection": {"headerName": "X"}}),
            "path",
        ),
    ];
    for (body, field) in bad {
        let (st, v) = c.post(&rules, body.clone()).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert_eq!(v["error"]["code"], "invalid_argument");
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with(field),
            "{field}: {v}"
        );
    }
    // An unknown secret: 404 naming the field.
    let (st, v) = c.post(&rules, header_rule("api.example.com", "nope")).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("secret"),
        "{v}"
    );
    // Bad ids in paths: 404, not 500.
    assert_eq!(
        c.get(&format!("{rules}/not-a-uuid")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.delete("/v1/secret-injection-rules/%00").await.0,
        StatusCode::NOT_FOUND
    );
    let (_, v) = c.get(&rules).await;
    assert_eq!(v["data"], json!([]), "a refused binding was stored: {v}");
    c.delete(&format!("/v1/runtimes/{rt}")).await;
}

/// Runs runtad on `d`'s arguments (plus `extra`) and returns its exit status
/// and output if it exits within 30 s; `None` if it kept running (killed).
fn start_once(d: &Daemon, extra: &[&str]) -> Option<(bool, String)> {
    let mut child = Command::new(common::runtad_bin())
        .args(&d.args)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return Some((out.status.success(), text));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn kill9_keeps_secrets_and_bindings_and_a_bad_key_stops_the_start() {
    let mut d = Daemon::start_new(&[]);
    let c = std::sync::Arc::new(d.tenant("k9").await);
    let value = uniq("sk-k9");
    let rt = name("k");
    c.create(&rt, 64).await;
    let (_, v) = c
        .post("/v1/secrets", json!({"name": "s", "value": value}))
        .await;
    let sid = v["data"]["id"].as_str().unwrap().to_string();
    let key = d.data_dir.join("secrets.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the key file is not 0600");
    c.post(
        &format!("/v1/runtimes/{rt}/secret-injection-rules"),
        header_rule("a.example.com", "s"),
    )
    .await;
    c.post(
        "/v1/default-secret-stubs",
        header_rule("b.example.com", "s"),
    )
    .await;
    // Writes racing the kill: each lands whole or not at all.
    let racer = {
        let c = c.clone();
        let rt = rt.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                let _ = put(
                    &c,
                    &format!("/v1/runtimes/{rt}/secret-stubs/replace"),
                    json!({"delete_ids": [], "stubs": [
                        header_rule(&format!("r{i}.example.com"), "s"),
                        header_rule(&format!("q{i}.example.com"), "s"),
                    ]}),
                )
                .await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    d.kill9();
    racer.abort();
    d.spawn();
    // A new connection pool: the old one's sockets died with the daemon.
    let c = Client::new(&d.endpoint, &c.token);

    let (st, v) = c.get(&format!("/v1/secrets/{sid}")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, v) = c.get(&format!("/v1/runtimes/{rt}/secret-stubs")).await;
    let hosts: Vec<String> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["host_pattern"].as_str().unwrap().to_string())
        .collect();
    assert!(hosts.contains(&"a.example.com".to_string()), "{v}");
    // Pairs written in one request: both or neither.
    for h in hosts.iter().filter(|h| h.starts_with('r')) {
        let twin = format!("q{}", &h[1..]);
        assert!(
            hosts.contains(&twin),
            "{h} without {twin}: half a replace survived"
        );
    }
    let (_, v) = c.get("/v1/default-secret-stubs").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1, "{v}");
    assert!(
        data_dir_has(&d, &value).is_empty(),
        "{:?}",
        data_dir_has(&d, &value)
    );

    // The daemon decrypted everything at start (it refuses to start
    // otherwise); a wrong or missing key is a clear start-up error.
    d.terminate();
    let saved = std::fs::read(&key).unwrap();
    let other = d.data_dir.join("other.key");
    let other_s = other.display().to_string();
    // A valid key of the right shape, not the one the secrets were sealed with.
    {
        use base64::Engine;
        let text = format!(
            "runta-secrets-key-v1 {}\n",
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        );
        std::fs::write(&other, text).unwrap();
        std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }
    let (ok, out) = start_once(&d, &["--secrets-key-file", &other_s])
        .expect("runtad kept running with a wrong key");
    assert!(!ok);
    assert!(out.contains("does not decrypt the stored secrets"), "{out}");
    std::fs::remove_file(&key).unwrap();
    let (ok, out) = start_once(&d, &[]).expect("runtad kept running without its key");
    assert!(!ok);
    assert!(
        out.contains("secrets.key") && out.contains("does not exist"),
        "{out}"
    );
    assert!(!key.exists(), "a new key was made over stored secrets");
    // A world-readable key file is refused too.
    std::fs::write(&key, &saved).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (ok, out) = start_once(&d, &[]).expect("runtad kept running with an open key file");
    assert!(!ok && out.contains("chmod 600"), "{out}");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // The right key, as a flag, from elsewhere: starts, everything there.
    let moved = d.data_dir.join("elsewhere.key");
    std::fs::rename(&key, &moved).unwrap();
    d.args.extend([
        "--secrets-key-file".to_string(),
        moved.display().to_string(),
    ]);
    d.spawn();
    let c = Client::new(&d.endpoint, &c.token);
    let (st, _) = c.get(&format!("/v1/secrets/{sid}")).await;
    assert_eq!(st, StatusCode::OK);
    c.delete(&format!("/v1/runtimes/{rt}")).await;
}
