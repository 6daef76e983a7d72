//! `runta secret …` against a real daemon: values in through an env var or
//! stdin (never a flag), never out again; rules in the CLI's words, from a
//! file all at once, and as tenant defaults.

mod common;

use common::{runta, runta_opts, scratch, small, Opts, Out};

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid_like()[..10])
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", nanos, std::process::id())
}

fn with_env(args: &[&str], k: &'static str, v: &str) -> Out {
    runta_opts(
        args,
        Opts {
            env: vec![(k, v.to_string())],
            ..Default::default()
        },
    )
}

fn never_shows(outs: &[&Out], value: &str) {
    for o in outs {
        assert!(
            !o.stdout.contains(value) && !o.stderr.contains(value),
            "the value was printed: {o:?}"
        );
    }
}

#[test]
fn secrets_go_in_and_never_come_out() {
    let name = unique("cli-sec");
    let value = format!("sk-{}", uuid_like());
    let add = with_env(
        &["secret", "add", &name, "--value-env", "THE_KEY"],
        "THE_KEY",
        &value,
    )
    .ok();
    assert!(
        add.stdout.contains(&name) && add.stdout.contains("runta-stub-"),
        "{add:?}"
    );
    // Again: the name is taken; --replace changes the value.
    let again = with_env(
        &["secret", "add", &name, "--value-env", "THE_KEY"],
        "THE_KEY",
        &value,
    );
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("--replace"), "{again:?}");
    let replaced = format!("sk2-{}", uuid_like());
    let rep = runta_opts(
        &["secret", "add", &name, "--value-stdin", "--replace"],
        Opts {
            stdin: Some(format!("{replaced}\n").as_bytes()),
            ..Default::default()
        },
    )
    .ok();
    let list = runta(&["secret", "list"]).ok();
    assert!(list.stdout.starts_with("ID"), "{list:?}");
    assert!(list.stdout.contains(&name), "{list:?}");
    let json = runta(&["secret", "list", "--json"]).ok();
    let item = json
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name.as_str())
        .cloned()
        .unwrap();
    assert!(item.get("value").is_none(), "{item}");

    // Usage errors: no source, an unset variable, --prompt with no terminal,
    // and a value is not taken from a flag at all.
    assert_eq!(runta(&["secret", "add", &name]).code, 2);
    assert_eq!(
        runta(&["secret", "add", &name, "--value-env", "NOPE_NOT_SET_X"]).code,
        2
    );
    let p = runta(&["secret", "add", &name, "--prompt"]);
    assert_eq!(p.code, 2, "{p:?}");
    assert_eq!(runta(&["secret", "add", &name, "--value", "x"]).code, 2);
    // A bad name: the daemon's 422 naming the field, exit 1.
    let bad = with_env(&["secret", "add", "bad name", "--value-env", "K"], "K", "v");
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("name"), "{bad:?}");

    let del = runta(&["secret", "delete", &name]).ok();
    let gone = runta(&["secret", "delete", &name]);
    assert_eq!(gone.code, 1);
    assert!(gone.stderr.contains("no secret"), "{gone:?}");
    never_shows(&[&add, &again, &rep, &list, &json, &del, &gone], &value);
    never_shows(&[&rep, &list, &json], &replaced);
}

#[test]
fn rules_by_flags_from_a_file_and_as_defaults() {
    let rt = unique("cli-rule");
    let _c = small(&rt);
    let secret = unique("cli-llm");
    with_env(
        &["secret", "add", &secret, "--value-env", "K"],
        "K",
        "sk-rules",
    )
    .ok();

    let header = runta(&[
        "secret",
        "rule",
        "add",
        &rt,
        "--host",
        "api.openai.com",
        "--path",
        "/v1/*",
        "--credential",
        &secret,
        "--inject-header",
        "Authorization",
        "--inject-value",
        "Bearer ${credential}",
        "--json",
    ])
    .ok();
    let h = header.json();
    let header_id = h[0]["id"].as_str().unwrap().to_string();
    assert_eq!(h[0]["injection"]["headerName"], "Authorization", "{h}");
    let param = runta(&[
        "secret",
        "rule",
        "add",
        &rt,
        "--host",
        "*.maps.example.com",
        "--credential",
        &secret,
        "--inject-param",
        "key",
    ])
    .ok();
    assert!(param.stdout.contains("*.maps.example.com"), "{param:?}");

    // A template without ${credential}: refused by the daemon, naming the field.
    let bad = runta(&[
        "secret",
        "rule",
        "add",
        &rt,
        "--host",
        "a.example.com",
        "--credential",
        &secret,
        "--inject-header",
        "X-Key",
        "--inject-value",
        "Bearer",
    ]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("injection"), "{bad:?}");

    // A file: both rules or neither.
    let dir = scratch("secret-rules");
    let good = dir.join("rules.json");
    std::fs::write(
        &good,
        format!(
            r#"[{{"host": "api.anthropic.com", "credential": "{secret}", "header": "x-api-key"}},
                {{"host": "api.example.com", "path": "/v2/*", "credential": "{secret}", "param": "token", "value": "t-${{credential}}"}}]"#
        ),
    )
    .unwrap();
    let half = dir.join("half.json");
    std::fs::write(
        &half,
        format!(
            r#"[{{"host": "ok.example.com", "credential": "{secret}", "header": "x-k"}},
                {{"host": "https://bad", "credential": "{secret}", "header": "x-k"}}]"#
        ),
    )
    .unwrap();
    let refused = runta(&["secret", "rule", "add", &rt, "-f", half.to_str().unwrap()]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("stubs[1].host"), "{refused:?}");
    let added = runta(&[
        "secret",
        "rule",
        "add",
        &rt,
        "-f",
        good.to_str().unwrap(),
        "--json",
    ])
    .ok();
    assert_eq!(added.json().as_array().unwrap().len(), 2, "{added:?}");

    let list = runta(&["secret", "rule", "list", &rt, "--json"])
        .ok()
        .json();
    let hosts: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["host_pattern"].as_str().unwrap())
        .collect();
    assert_eq!(hosts.len(), 4, "{list}");
    assert!(
        !hosts.contains(&"ok.example.com"),
        "half a file was applied: {list}"
    );
    let table = runta(&["secret", "rule", "list", &rt]).ok();
    assert!(
        table
            .stdout
            .contains("header Authorization: Bearer ${credential}"),
        "{table:?}"
    );
    assert!(
        table.stdout.contains("param token=t-${credential}"),
        "{table:?}"
    );

    // Defaults.
    let def = runta(&[
        "secret",
        "rule",
        "add",
        "--default",
        "--host",
        "api.github.com",
        "--credential",
        &secret,
        "--inject-header",
        "Authorization",
        "--json",
    ])
    .ok()
    .json();
    let def_id = def[0]["id"].as_str().unwrap().to_string();
    let defs = runta(&["secret", "rule", "list", "--default"]).ok();
    assert!(
        defs.stdout.contains("(default)") && defs.stdout.contains(&def_id),
        "{defs:?}"
    );
    runta(&["secret", "rule", "delete", "--default", &def_id]).ok();

    runta(&["secret", "rule", "delete", &header_id]).ok();
    let gone = runta(&["secret", "rule", "delete", &header_id]);
    assert_eq!(gone.code, 1, "{gone:?}");
    // Deleting the secret takes its rules along.
    runta(&["secret", "delete", &secret]).ok();
    let after = runta(&["secret", "rule", "list", &rt, "--json"])
        .ok()
        .json();
    assert_eq!(after, serde_json::json!([]), "{after}");
}
