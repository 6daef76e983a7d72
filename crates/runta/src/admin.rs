//! Admin commands: tokens (list, revoke, rotate) and tenant quotas. Each is one
//! REST call; the admin token is the caller.

use reqwest::Method;
use runta_api::{QuotaView, TokenInfo};
use serde_json::{Map, Value};

use crate::client::{enc, typed, Client};
use crate::error::{CliError, Result};
use crate::output::{age, bytes, print_json, table};
use crate::QuotaSetArgs;

pub async fn token_list(c: &Client, tenant: Option<&str>, json: bool) -> Result<()> {
    let path = match tenant {
        Some(t) => format!("/v1/tokens?tenant={}", enc(t)),
        None => "/v1/tokens".to_string(),
    };
    let v = c.get(&path).await?;
    if json {
        print_json(&v);
        return Ok(());
    }
    let tokens: Vec<TokenInfo> = typed(v)?;
    let now = chrono::Utc::now();
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.tenant.clone(),
                if t.admin { "admin" } else { "tenant" }.to_string(),
                age(t.created_at, now),
                t.last_used_at
                    .map(|u| format!("{} ago", age(u, now)))
                    .unwrap_or_else(|| "never".into()),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["ID", "TENANT", "KIND", "AGE", "LAST USED"], &rows)
    );
    Ok(())
}

pub async fn token_revoke(c: &Client, ids: &[String], json: bool) -> Result<()> {
    let mut out = Vec::new();
    for id in ids {
        c.call(
            Method::DELETE,
            &format!("/v1/tokens/{}", enc(id)),
            None::<&()>,
        )
        .await?;
        if json {
            out.push(serde_json::json!({"id": id, "revoked": true}));
        } else {
            println!("revoked {id}");
        }
    }
    crate::output::print_json_results(out, json);
    Ok(())
}

/// Prints only the new token, like `token create`, so scripts can capture it.
pub async fn token_rotate(c: &Client, id: &str, json: bool) -> Result<()> {
    let v = c
        .post(
            &format!("/v1/tokens/{}/rotate", enc(id)),
            &serde_json::json!({}),
        )
        .await?;
    if json {
        print_json(&v);
        return Ok(());
    }
    let token = v
        .get("token")
        .and_then(Value::as_str)
        .ok_or_else(|| CliError::failed("the daemon's answer has no token"))?;
    println!("{token}");
    Ok(())
}

pub async fn quota_get(c: &Client, tenant: Option<&str>, json: bool) -> Result<()> {
    let v = match tenant {
        Some(t) => c.get(&format!("/v1/tenants/{}/quota", enc(t))).await?,
        None => c.get("/v1/quota").await?,
    };
    print_quota(v, json)
}

pub async fn quota_set(c: &Client, a: QuotaSetArgs, json: bool) -> Result<()> {
    let mut body = Map::new();
    let fields: [(&str, Option<Value>); 7] = [
        ("runtimes", a.runtimes.map(Value::from)),
        ("vcpus", a.vcpus.map(Value::from)),
        ("memory_mib", a.memory.map(Value::from)),
        ("disk_gib", a.disk.map(Value::from)),
        ("checkpoints", a.checkpoints.map(Value::from)),
        ("checkpoint_bytes", a.checkpoint_bytes.map(Value::from)),
        ("pids", a.pids.map(Value::from)),
    ];
    for (k, v) in fields {
        match v {
            Some(v) => {
                body.insert(k.into(), v);
            }
            // `--reset`: every field not given goes back to the default.
            None if a.reset => {
                body.insert(k.into(), Value::Null);
            }
            None => {}
        }
    }
    let v = c
        .call(
            Method::PATCH,
            &format!("/v1/tenants/{}/quota", enc(&a.tenant)),
            Some(&Value::Object(body)),
        )
        .await?;
    print_quota(v, json)
}

fn print_quota(v: Value, json: bool) -> Result<()> {
    if json {
        print_json(&v);
        return Ok(());
    }
    let q: QuotaView = typed(v)?;
    let (l, u) = (&q.limits, &q.usage);
    let rows = vec![
        vec![
            "runtimes".into(),
            u.runtimes.to_string(),
            l.runtimes.to_string(),
        ],
        vec![
            "vcpus".into(),
            crate::output::cpus(u.vcpus),
            crate::output::cpus(l.vcpus),
        ],
        vec![
            "memory".into(),
            format!("{} MiB", u.memory_mib),
            format!("{} MiB", l.memory_mib),
        ],
        vec![
            "disk".into(),
            format!("{} GiB", u.disk_gib),
            l.disk_gib
                .map(|g| format!("{g} GiB"))
                .unwrap_or_else(|| "unlimited".into()),
        ],
        vec![
            "checkpoints".into(),
            u.checkpoints.to_string(),
            l.checkpoints.to_string(),
        ],
        vec![
            "checkpoint storage".into(),
            bytes(u.checkpoint_bytes),
            bytes(l.checkpoint_bytes),
        ],
        vec!["pids".into(), u.pids.to_string(), l.pids.to_string()],
    ];
    println!("tenant {}", q.tenant);
    print!("{}", table(&["RESOURCE", "USED", "QUOTA"], &rows));
    Ok(())
}

/// `1024`, `512K`, `300M`, `10G`, `1T` (binary multiples; a trailing `B` or
/// `iB` is allowed).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        Some('T' | 't') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 1048576, 512M or 10G"))?;
    n.checked_mul(1u64 << shift)
        .filter(|v| *v <= runta_api::MAX_QUOTA)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("300M").unwrap(), 300 << 20);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999T").is_err());
        assert!(parse_size("lots").is_err());
    }
}
