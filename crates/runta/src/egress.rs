//! `runta egress …` (a runtime's outbound policy, changed live with PATCH) and
//! `runta audits` (the gateway's decisions, `GET /v1/audits`). The policy is
//! the runtime's `egress_policy`; every verb reads it, changes it and sends the
//! whole of it back, as the official client does (docs/api.md, "Egress").

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use runta_api::{
    Audit, EgressAction, EgressMode, EgressPolicy, EgressPolicyView, HostEntry, Runtime,
    UpdateRuntimeRequest,
};
use serde_json::Value;

use crate::client::{enc, typed, Client};
use crate::error::{CliError, Result};
use crate::output::{print_json, table};

/// `allowlist` or `denylist` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Only the allowed hosts are reachable
    Allowlist,
    /// Everything but the denied hosts is reachable
    Denylist,
}

impl From<ModeArg> for EgressMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Allowlist => EgressMode::Allowlist,
            ModeArg::Denylist => EgressMode::Denylist,
        }
    }
}

/// A policy entry, checked before anything is sent: a host name,
/// `*.example.com`, an address or a CIDR block (no URLs, ports or paths).
pub fn parse_host(s: &str) -> std::result::Result<HostEntry, String> {
    HostEntry::try_from(s.to_string())
}

/// The policy `runta run --egress-*` asks for; `None` when no flag is given
/// (the daemon's open default). An allowed host without `--egress-mode`
/// means an allowlist.
pub fn policy_from_flags(
    mode: Option<ModeArg>,
    allow: &[HostEntry],
    deny: &[HostEntry],
) -> Option<EgressPolicy> {
    if mode.is_none() && allow.is_empty() && deny.is_empty() {
        return None;
    }
    let mode = match mode {
        Some(m) => m.into(),
        None if !allow.is_empty() => EgressMode::Allowlist,
        None => EgressMode::Denylist,
    };
    Some(EgressPolicy {
        mode,
        allowed_hosts: allow.to_vec(),
        denied_hosts: deny.to_vec(),
    })
}

const EGRESS_EXAMPLES: &str = "\
Examples:
  runta egress show worker
  runta egress set worker --mode allowlist --allow pypi.org --allow '*.pythonhosted.org'
  runta egress allow worker api.example.com 10.0.0.0/8
  runta egress deny worker tracker.example.com
  runta egress remove worker api.example.com
  runta egress enable worker       # only the allowed hosts from now on
  runta egress disable worker      # everything but the denied hosts
  runta egress off worker          # open again: nothing filtered
  runta egress events worker -f    # the runtime's audits, as they come

Entries are host names, *.example.com (subdomains only), IPv4/IPv6 addresses
and CIDR blocks. A change is in force for new connections at once, and open
connections the new policy denies are cut. The host, other runtimes, link-local
and metadata addresses are never reachable; private ranges only when an
address or CIDR entry names them.";

#[derive(Subcommand)]
pub enum EgressCmd {
    /// Show a runtime's outbound policy
    #[command(
        visible_alias = "table",
        after_help = "Example:\n  runta egress show worker"
    )]
    Show {
        /// Runtime name or id
        #[arg(value_name = "RUNTIME")]
        runtime: String,
    },
    /// Add hosts to the allowed list (and take them off the denied list)
    #[command(
        after_help = "Examples:\n  runta egress allow worker pypi.org '*.pythonhosted.org'\n  runta egress allow worker 198.51.100.7 10.1.0.0/16\n\nIn denylist mode allowed entries only open private addresses; `runta egress enable` makes the list the only way out."
    )]
    Allow(HostsArgs),
    /// Add hosts to the denied list (and take them off the allowed list)
    #[command(
        after_help = "Example:\n  runta egress deny worker tracker.example.com 203.0.113.0/24"
    )]
    Deny(HostsArgs),
    /// Take hosts off both lists
    #[command(after_help = "Example:\n  runta egress remove worker pypi.org")]
    Remove(HostsArgs),
    /// Replace the whole policy
    #[command(
        after_help = "Examples:\n  runta egress set worker --mode allowlist --allow pypi.org\n  runta egress set worker --mode denylist --deny tracker.example.com\n  runta egress set worker --allow pypi.org        # an allowed host alone: allowlist"
    )]
    Set(SetArgs),
    /// Allowlist mode: only the allowed hosts are reachable
    #[command(after_help = "Example:\n  runta egress enable worker")]
    Enable {
        #[arg(value_name = "RUNTIME")]
        runtime: String,
    },
    /// Denylist mode: everything but the denied hosts is reachable
    #[command(after_help = "Example:\n  runta egress disable worker")]
    Disable {
        #[arg(value_name = "RUNTIME")]
        runtime: String,
    },
    /// Open: no filtering at all (denylist mode, both lists emptied)
    #[command(after_help = "Example:\n  runta egress off worker")]
    Off {
        #[arg(value_name = "RUNTIME")]
        runtime: String,
    },
    /// The runtime's egress audits (same as `runta audits --runtime RUNTIME`)
    #[command(
        after_help = "Examples:\n  runta egress events worker\n  runta egress events worker --watch"
    )]
    Events {
        #[arg(value_name = "RUNTIME")]
        runtime: String,
        /// Keep printing new decisions
        #[arg(short = 'f', long, visible_alias = "watch", short_alias = 'w')]
        follow: bool,
        /// Most entries to show first (1-1000)
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
}

pub const EGRESS_AFTER_HELP: &str = EGRESS_EXAMPLES;

#[derive(Args)]
pub struct HostsArgs {
    /// Runtime name or id
    #[arg(value_name = "RUNTIME")]
    pub runtime: String,
    /// Host names, *.example.com, addresses or CIDR blocks
    #[arg(required = true, value_name = "HOST", value_parser = parse_host)]
    pub hosts: Vec<HostEntry>,
}

#[derive(Args)]
pub struct SetArgs {
    /// Runtime name or id
    #[arg(value_name = "RUNTIME")]
    pub runtime: String,
    /// allowlist or denylist [default: allowlist when --allow is given]
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// An allowed host (repeatable)
    #[arg(long = "allow", value_name = "HOST", value_parser = parse_host)]
    pub allow: Vec<HostEntry>,
    /// A denied host (repeatable)
    #[arg(long = "deny", value_name = "HOST", value_parser = parse_host)]
    pub deny: Vec<HostEntry>,
}

/// Audit kinds as `--kind` takes them (the API's spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum KindArg {
    TcpConnection,
    HttpRequest,
    IcmpDrop,
    /// DNS decisions (listed only when asked for)
    DnsQuery,
}

impl KindArg {
    fn wire(self) -> &'static str {
        match self {
            KindArg::TcpConnection => "tcp_connection",
            KindArg::HttpRequest => "http_request",
            KindArg::IcmpDrop => "icmp_drop",
            KindArg::DnsQuery => "dns_query",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CategoryArg {
    Egress,
}

#[derive(Args)]
pub struct AuditsArgs {
    /// Only this runtime's (name or id) [default: all your runtimes]
    #[arg(long, value_name = "RUNTIME")]
    pub runtime: Option<String>,
    /// Audit category (egress is the only one)
    #[arg(long, value_enum, default_value = "egress")]
    pub category: CategoryArg,
    /// Only this kind of decision
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Most entries to show first (1-1000)
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Keep printing new decisions (--json: one object a line)
    #[arg(short, long)]
    pub follow: bool,
}

pub async fn run(c: &Client, cmd: EgressCmd, json: bool) -> Result<()> {
    match cmd {
        EgressCmd::Show { runtime } => {
            let (raw, r) = fetch(c, &runtime).await?;
            if json {
                print_json(&raw["egress_policy"]);
            } else {
                print!("{}", describe(&r.name, &r.official.egress_policy));
            }
            Ok(())
        }
        EgressCmd::Allow(a) => {
            change(c, &a.runtime, json, |p| {
                for h in &a.hosts {
                    p.denied_hosts.retain(|e| e != h);
                    if !p.allowed_hosts.contains(h) {
                        p.allowed_hosts.push(h.clone());
                    }
                }
            })
            .await
        }
        EgressCmd::Deny(a) => {
            change(c, &a.runtime, json, |p| {
                for h in &a.hosts {
                    p.allowed_hosts.retain(|e| e != h);
                    if !p.denied_hosts.contains(h) {
                        p.denied_hosts.push(h.clone());
                    }
                }
            })
            .await
        }
        EgressCmd::Remove(a) => {
            change(c, &a.runtime, json, |p| {
                p.allowed_hosts.retain(|e| !a.hosts.contains(e));
                p.denied_hosts.retain(|e| !a.hosts.contains(e));
            })
            .await
        }
        EgressCmd::Set(a) => {
            let policy = policy_from_flags(a.mode, &a.allow, &a.deny).ok_or_else(|| {
                CliError::usage(
                    "say what the policy is: --mode, --allow HOST or --deny HOST (`runta egress off` opens it)",
                )
            })?;
            change(c, &a.runtime, json, move |p| *p = policy.clone()).await
        }
        EgressCmd::Enable { runtime } => {
            change(c, &runtime, json, |p| p.mode = EgressMode::Allowlist).await
        }
        EgressCmd::Disable { runtime } => {
            change(c, &runtime, json, |p| p.mode = EgressMode::Denylist).await
        }
        EgressCmd::Off { runtime } => {
            change(c, &runtime, json, |p| *p = EgressPolicy::open()).await
        }
        EgressCmd::Events {
            runtime,
            follow,
            limit,
        } => {
            audits(
                c,
                AuditsArgs {
                    runtime: Some(runtime),
                    category: CategoryArg::Egress,
                    kind: None,
                    limit,
                    follow,
                },
                json,
            )
            .await
        }
    }
}

async fn fetch(c: &Client, name: &str) -> Result<(Value, Runtime)> {
    let v = c
        .on_runtime(name, |id| async move {
            c.get(&format!("/v1/runtimes/{id}")).await
        })
        .await?;
    Ok((v.clone(), typed(v)?))
}

/// The policy the runtime answers, as the canonical shape.
fn current(view: &EgressPolicyView) -> Result<EgressPolicy> {
    let entries = |v: &[String]| {
        v.iter()
            .map(|s| parse_host(s))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| CliError::failed(format!("the daemon answered a bad entry: {e}")))
    };
    Ok(EgressPolicy {
        mode: view.mode,
        allowed_hosts: entries(&view.allowed_hosts)?,
        denied_hosts: entries(&view.denied_hosts)?,
    })
}

/// Reads the policy, changes it with `f`, PATCHes the whole of it back.
async fn change(
    c: &Client,
    name: &str,
    json: bool,
    f: impl FnOnce(&mut EgressPolicy),
) -> Result<()> {
    let (_, r) = fetch(c, name).await?;
    let mut policy = current(&r.official.egress_policy)?;
    f(&mut policy);
    let req = UpdateRuntimeRequest {
        egress_policy: Some(policy),
        ..Default::default()
    };
    let v = c
        .call(Method::PATCH, &format!("/v1/runtimes/{}", r.id), Some(&req))
        .await?;
    let r: Runtime = typed(v.clone())?;
    if json {
        print_json(&v["egress_policy"]);
        return Ok(());
    }
    let view = &r.official.egress_policy;
    print!("{}", describe(&r.name, view));
    if view.mode == EgressMode::Denylist && !view.allowed_hosts.is_empty() {
        eprintln!(
            "note: {} is in denylist mode: everything not denied is reachable, allowed entries only open private addresses; `runta egress enable {}` makes the allowed hosts the only way out",
            r.name, r.name
        );
    }
    Ok(())
}

/// `worker: allowlist` and the lists, one entry a line.
pub fn describe(name: &str, p: &EgressPolicyView) -> String {
    let mode = match p.mode {
        EgressMode::Allowlist => "allowlist (only the allowed hosts are reachable)",
        EgressMode::Denylist if p.denied_hosts.is_empty() && p.allowed_hosts.is_empty() => {
            "open (nothing filtered)"
        }
        EgressMode::Denylist => "denylist (everything but the denied hosts is reachable)",
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    for h in &p.allowed_hosts {
        rows.push(vec!["allow".into(), h.clone()]);
    }
    for h in &p.denied_hosts {
        rows.push(vec!["deny".into(), h.clone()]);
    }
    let mut out = format!("{name}: {mode}\n");
    if !rows.is_empty() {
        out.push_str(&table(&["LIST", "HOST"], &rows));
    }
    out
}

/// One audit as a table row: time, runtime, kind, action, host, destination,
/// detail (status, reason or error).
fn row(a: &Audit, names: &HashMap<uuid::Uuid, String>) -> Vec<String> {
    let e = &a.payload.egress;
    let time = chrono::DateTime::from_timestamp_millis(a.observed_unix_ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| a.observed_unix_ms.to_string());
    let runtime = names
        .get(&a.runtime_id)
        .cloned()
        .unwrap_or_else(|| a.runtime_id.to_string()[..8].to_string());
    let action = match e.action() {
        EgressAction::Allow => "allow",
        EgressAction::Deny => "deny",
        EgressAction::Error => "error",
    };
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let (kind, host, dest, detail) = if let Some(t) = &e.tcp_connection {
        (
            t.transport.clone(),
            or_dash(&t.host),
            or_dash(&t.dst_addr),
            // An error says what went wrong; a decision says why.
            if t.action == EgressAction::Error {
                first_of(&[&t.error, &t.reason, &t.outcome])
            } else {
                first_of(&[&t.reason, &t.error, &t.outcome])
            },
        )
    } else if let Some(h) = &e.http_request {
        (
            format!("http {}", h.method),
            or_dash(&h.host),
            or_dash(&h.path),
            {
                let why = first_of(&[&h.reason, &h.outcome]);
                if h.status > 0 {
                    format!("{} {why}", h.status)
                } else {
                    why
                }
            },
        )
    } else if let Some(d) = &e.dns_query {
        (
            format!("dns {}", d.qtype),
            or_dash(&d.name),
            if d.answers.is_empty() {
                "-".into()
            } else {
                d.answers.join(",")
            },
            first_of(&[&d.reason, &d.outcome]),
        )
    } else if let Some(i) = &e.icmp_drop {
        (
            "icmp".into(),
            "-".into(),
            "-".into(),
            format!(
                "{} packets; {}",
                i.packets,
                first_of(&[&i.reason, &i.outcome])
            ),
        )
    } else {
        ("?".into(), "-".into(), "-".into(), "-".into())
    };
    vec![time, runtime, kind, action.into(), host, dest, detail]
}

fn first_of(v: &[&String]) -> String {
    v.iter()
        .find(|s| !s.is_empty())
        .map(|s| s.to_string())
        .unwrap_or_else(|| "-".into())
}

const HEADER: [&str; 7] = [
    "TIME", "RUNTIME", "KIND", "ACTION", "HOST", "DEST", "DETAIL",
];

/// `runta audits`: the newest `limit` decisions, oldest first; with
/// `--follow`, then the new ones as they come (polled every second).
pub async fn audits(c: &Client, a: AuditsArgs, json: bool) -> Result<()> {
    // Egress is the only category (clap refuses any other).
    let _ = a.category;
    let runtime_id = match &a.runtime {
        Some(n) => Some(fetch(c, n).await?.1.id),
        None => None,
    };
    let mut query = format!("/v1/audits?category=egress&limit={}", a.limit);
    if let Some(id) = runtime_id {
        query.push_str(&format!("&runtime={}", enc(&id.to_string())));
    }
    if let Some(k) = a.kind {
        query.push_str(&format!("&kind={}", k.wire()));
    }
    let mut names: HashMap<uuid::Uuid, String> = HashMap::new();
    // The ids of the last page: anything older never comes back into it, so
    // this stays as small as one page however long --follow runs.
    let mut seen: HashSet<String> = HashSet::new();
    let mut first = true;
    loop {
        let raw = c.get(&query).await?;
        let list = raw.as_array().cloned().unwrap_or_default();
        let mut fresh: Vec<(Value, Audit)> = Vec::new();
        let mut ids = HashSet::new();
        for v in list {
            let audit: Audit = typed(v.clone())?;
            ids.insert(audit.id.clone());
            if !seen.contains(&audit.id) {
                fresh.push((v, audit));
            }
        }
        seen = ids;
        fresh.sort_by(|x, y| (x.1.observed_unix_ms, &x.1.id).cmp(&(y.1.observed_unix_ms, &y.1.id)));
        if json && !a.follow {
            print_json(&Value::Array(fresh.into_iter().map(|(v, _)| v).collect()));
            return Ok(());
        }
        if json {
            for (v, _) in &fresh {
                println!("{v}");
            }
        } else {
            if fresh
                .iter()
                .any(|(_, x)| !names.contains_key(&x.runtime_id))
            {
                if let Ok((_, all)) = c.list_runtimes().await {
                    names.extend(all.into_iter().map(|r| (r.id, r.name)));
                }
            }
            let rows: Vec<Vec<String>> = fresh.iter().map(|(_, x)| row(x, &names)).collect();
            let t = table(&HEADER, &rows);
            if first {
                print!("{t}");
            } else {
                // Later batches: rows only (their widths may differ).
                for line in t.lines().skip(1) {
                    println!("{line}");
                }
            }
        }
        first = false;
        if !a.follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> HostEntry {
        parse_host(s).unwrap()
    }

    #[test]
    fn flags_make_a_policy() {
        assert_eq!(policy_from_flags(None, &[], &[]), None);
        let p = policy_from_flags(None, &[h("pypi.org")], &[]).unwrap();
        assert_eq!(p.mode, EgressMode::Allowlist);
        let p = policy_from_flags(None, &[], &[h("bad.test")]).unwrap();
        assert_eq!(p.mode, EgressMode::Denylist);
        assert_eq!(p.denied_hosts, vec![h("bad.test")]);
        let p = policy_from_flags(Some(ModeArg::Allowlist), &[], &[]).unwrap();
        assert_eq!(p.mode, EgressMode::Allowlist);
        assert!(p.allowed_hosts.is_empty());
    }

    #[test]
    fn hosts_are_checked_before_sending() {
        assert_eq!(h("PyPI.org.").as_str(), "pypi.org");
        for bad in [
            "https://pypi.org",
            "pypi.org:443",
            "pypi.org/simple",
            "",
            "a b",
        ] {
            assert!(parse_host(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn describe_says_open_allowlist_denylist() {
        let open = EgressPolicyView::open();
        assert_eq!(describe("w", &open), "w: open (nothing filtered)\n");
        let p =
            EgressPolicyView::of(&policy_from_flags(None, &[h("a.test")], &[h("b.test")]).unwrap());
        let d = describe("w", &p);
        assert!(d.starts_with("w: allowlist"), "{d}");
        assert!(d.contains("allow   a.test"), "{d}");
        assert!(d.contains("deny    b.test"), "{d}");
    }
}
