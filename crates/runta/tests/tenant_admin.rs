//! The admin's CLI: `runta token list|revoke|rotate` and `runta tenant quota
//! get|set`, against a real daemon, including what a tenant token may not do.

mod common;

use common::{daemon, runta_opts, Opts, Out};

/// Runs `runta` with the given token instead of the harness tenant's.
fn as_token(token: &str, args: &[&str]) -> Out {
    runta_opts(
        args,
        Opts {
            env: vec![("RUNTA_TOKEN", token.to_string())],
            no_token: true,
            ..Default::default()
        },
    )
}

fn as_admin(args: &[&str]) -> Out {
    as_token(&daemon().admin_token, args)
}

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{:x}{}",
        nanos ^ std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[test]
fn token_list_revoke_and_rotate() {
    let tenant = unique("cli-tok");
    let t1 = as_admin(&["token", "create", "--tenant", &tenant])
        .ok()
        .stdout
        .trim()
        .to_string();
    let t2 = as_admin(&["token", "create", "--tenant", &tenant])
        .ok()
        .stdout
        .trim()
        .to_string();
    as_token(&t1, &["ps", "-aq"]).ok();

    let list = as_admin(&["token", "list", "--tenant", &tenant, "--json"])
        .ok()
        .json();
    let items = list.as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    let text = list.to_string();
    assert!(
        !text.contains(&t1) && !text.contains(&t2),
        "values are never shown"
    );
    let ids: Vec<String> = items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    let human = as_admin(&["token", "list", "--tenant", &tenant]).ok();
    assert!(human.stdout.starts_with("ID"), "{human:?}");
    assert!(human.stdout.contains(&ids[0]) && human.stdout.contains(&ids[1]));
    assert!(
        human.stdout.contains("never"),
        "t2 was never used: {human:?}"
    );

    // Rotate prints only the new token; the old one stops working at once.
    let out = as_admin(&["token", "rotate", &ids[0]]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{out:?}");
    let t3 = lines[0].to_string();
    assert!(t3.starts_with("rt_") && t3 != t1);
    let old = as_token(&t1, &["ps", "-aq"]);
    assert_eq!(old.code, 1, "{old:?}");
    assert!(old.stderr.contains("token"), "{old:?}");
    as_token(&t3, &["ps", "-aq"]).ok();

    // Revoke: the next command with it is refused.
    let out = as_admin(&["token", "revoke", &ids[1]]).ok();
    assert!(out.stdout.contains(&ids[1]), "{out:?}");
    assert_eq!(as_token(&t2, &["ps", "-aq"]).code, 1);
    let again = as_admin(&["token", "revoke", &ids[1]]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("no token"), "{again:?}");

    // A tenant token may do none of it, not even to its own tokens.
    for args in [
        vec!["token", "list"],
        vec!["token", "revoke", ids[0].as_str()],
        vec!["token", "rotate", ids[0].as_str()],
    ] {
        let out = as_token(&t3, &args);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert!(out.stderr.contains("admin"), "{out:?}");
    }
    as_token(&t3, &["ps", "-aq"]).ok();
    assert_eq!(as_admin(&["token", "revoke"]).code, 2, "an id is required");
}

#[test]
fn tenant_quota_get_set_and_enforced() {
    let tenant = unique("cli-quota");
    let token = as_admin(&["token", "create", "--tenant", &tenant])
        .ok()
        .stdout
        .trim()
        .to_string();
    let v = as_admin(&[
        "tenant",
        "quota",
        "set",
        &tenant,
        "--runtimes",
        "1",
        "--checkpoint-bytes",
        "10M",
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(v["limits"]["runtimes"], 1, "{v}");
    assert_eq!(v["limits"]["checkpoint_bytes"], 10 << 20, "{v}");
    let human = as_admin(&["tenant", "quota", "get", &tenant]).ok();
    assert!(human.stdout.contains("RESOURCE"), "{human:?}");
    assert!(
        human
            .stdout
            .lines()
            .any(|l| l.starts_with("runtimes") && l.ends_with(" 1")),
        "{human:?}"
    );
    // The tenant sees its own quota.
    let own = as_token(&token, &["tenant", "quota", "get", "--json"])
        .ok()
        .json();
    assert_eq!(own["tenant"], tenant.as_str());
    assert_eq!(own["limits"]["runtimes"], 1);

    // Enforced: the second runtime is refused, with the quota named.
    let (a, b) = (unique("qa"), unique("qb"));
    as_token(
        &token,
        &["run", "--name", &a, "--cpus", "0.5", "--memory", "64"],
    )
    .ok();
    let out = as_token(
        &token,
        &["run", "--name", &b, "--cpus", "0.5", "--memory", "64"],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("quota"), "{out:?}");

    // The tenant cannot raise it.
    let out = as_token(
        &token,
        &["tenant", "quota", "set", &tenant, "--runtimes", "100"],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("admin"), "{out:?}");
    // Bad numbers never reach the daemon.
    for bad in [
        vec!["--runtimes", "-1"],
        vec!["--vcpus", "abc"],
        vec!["--checkpoint-bytes", "99999999T"],
        vec![],
    ] {
        let mut args = vec!["tenant", "quota", "set", tenant.as_str()];
        args.extend(bad.iter().copied());
        let out = as_admin(&args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
    }
    // Beyond the daemon's bounds: the API's 422, naming the field.
    let out = as_admin(&[
        "tenant",
        "quota",
        "set",
        &tenant,
        "--memory",
        "18446744073709551615",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("memory_mib"), "{out:?}");

    // --reset returns every field to the default.
    let v = as_admin(&["tenant", "quota", "set", &tenant, "--reset", "--json"])
        .ok()
        .json();
    assert_eq!(v["limits"]["runtimes"], 64, "{v}");
    assert_eq!(v["usage"]["runtimes"], 1, "{v}");
    as_token(
        &token,
        &["run", "--name", &b, "--cpus", "0.5", "--memory", "64"],
    )
    .ok();
    as_token(&token, &["rm", "-f", &a, &b]).ok();
}
