//! Egress policies and egress audits: the wire shapes, and the pure decision of
//! whether a name or an address is allowed by a policy. The daemon's gateway
//! (`runtad::egress`) enforces these decisions; everything here is data and is
//! unit-tested without a network.
//!
//! One canonical policy, `{mode, allowed_hosts, denied_hosts}` (the 0.1.21
//! spelling); the 0.1.1 `{enabled, allowed_hosts}` is folded into it on the way
//! in (`enabled: true` = allowlist) and derived from it on the way out
//! (`enabled` = an allowlist is in force).

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::compat::EgressMode;

/// Most entries per list: a policy is for naming services, not for mirroring
/// a blocklist.
pub const MAX_EGRESS_ENTRIES: usize = 256;

/// What one policy entry matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this name (lower case, no trailing dot).
    Name(String),
    /// `*.suffix`: any name strictly below `suffix`, not `suffix` itself.
    Wildcard(String),
    /// One address or a CIDR block (`prefix` = the full width for one address).
    Net { addr: IpAddr, prefix: u8 },
}

impl HostPattern {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        if s.is_empty() {
            return Err("an empty entry matches nothing".into());
        }
        if s.contains("://") || s.starts_with("//") {
            return Err(format!(
                "{raw:?} is a URL; give the host name alone (for example \"example.com\")"
            ));
        }
        let bracketless = s.trim_start_matches('[').trim_end_matches(']');
        if let Ok(addr) = bracketless.parse::<IpAddr>() {
            return Ok(HostPattern::Net {
                addr,
                prefix: width(addr),
            });
        }
        if let Some((a, p)) = s.split_once('/') {
            if let (Ok(addr), Ok(prefix)) = (a.parse::<IpAddr>(), p.parse::<u8>()) {
                if prefix > width(addr) {
                    return Err(format!("{raw:?}: a /{prefix} prefix is too long"));
                }
                return Ok(HostPattern::Net {
                    addr: mask(addr, prefix),
                    prefix,
                });
            }
            return Err(format!(
                "{raw:?} is a URL or path; give a host name, an address or a CIDR block"
            ));
        }
        if s.contains(':') || s.contains('?') || s.contains('@') || s.contains('#') {
            return Err(format!(
                "{raw:?} is not a host name (no ports, users or URLs: give the name alone)"
            ));
        }
        let (wild, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s.as_str()),
        };
        if !valid_name(name) {
            return Err(format!(
                "{raw:?} is not a host name, \"*.\" followed by one, an address or a CIDR block"
            ));
        }
        Ok(if wild {
            HostPattern::Wildcard(name.to_string())
        } else {
            HostPattern::Name(name.to_string())
        })
    }

    pub fn matches_name(&self, host: &str) -> bool {
        match self {
            HostPattern::Name(n) => n == host,
            HostPattern::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            HostPattern::Net { .. } => host.parse::<IpAddr>().is_ok_and(|ip| self.matches_ip(ip)),
        }
    }

    pub fn matches_ip(&self, ip: IpAddr) -> bool {
        match self {
            HostPattern::Net { addr, prefix } => {
                let ip = canonical(ip);
                let addr = canonical(*addr);
                width(ip) == width(addr) && mask(ip, *prefix) == addr
            }
            _ => false,
        }
    }
}

fn valid_name(n: &str) -> bool {
    n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn width(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        32
    } else {
        128
    }
}

/// IPv4-mapped IPv6 addresses are the IPv4 address they carry, so that
/// `::ffff:10.0.0.1` cannot slip past a rule for `10.0.0.0/8`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn mask(a: IpAddr, prefix: u8) -> IpAddr {
    match a {
        IpAddr::V4(v) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix as u32)
            };
            IpAddr::V4((u32::from(v) & m).into())
        }
        IpAddr::V6(v) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix as u32)
            };
            IpAddr::V6((u128::from(v) & m).into())
        }
    }
}

/// One validated entry; kept as its normalised text so it answers as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostEntry {
    text: String,
    pattern: HostPattern,
}

impl HostEntry {
    pub fn pattern(&self) -> &HostPattern {
        &self.pattern
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for HostEntry {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        let pattern = HostPattern::parse(&raw)?;
        let text = match &pattern {
            HostPattern::Name(n) => n.clone(),
            HostPattern::Wildcard(s) => format!("*.{s}"),
            HostPattern::Net { addr, prefix } if *prefix == width(*addr) => addr.to_string(),
            HostPattern::Net { addr, prefix } => format!("{addr}/{prefix}"),
        };
        Ok(HostEntry { text, pattern })
    }
}

impl From<HostEntry> for String {
    fn from(e: HostEntry) -> String {
        e.text
    }
}

impl fmt::Display for HostEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The policy a runtime is held to (stored as this JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EgressPolicy {
    pub mode: EgressMode,
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub allowed_hosts: Vec<HostEntry>,
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub denied_hosts: Vec<HostEntry>,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        Self::open()
    }
}

impl EgressPolicy {
    /// Everything allowed; the default, and enforced by not intercepting at all.
    pub fn open() -> Self {
        EgressPolicy {
            mode: EgressMode::Denylist,
            allowed_hosts: vec![],
            denied_hosts: vec![],
        }
    }

    /// Open = nothing is filtered, so the runtime stays on the plain NAT path.
    pub fn is_open(&self) -> bool {
        self.mode == EgressMode::Denylist && self.denied_hosts.is_empty()
    }

    /// Allowed to connect by this name (already lower case, no trailing dot)?
    pub fn allows_name(&self, host: &str) -> Result<(), String> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let hit = |list: &[HostEntry]| {
            list.iter()
                .find(|e| e.pattern().matches_name(&host))
                .map(|e| e.to_string())
        };
        match self.mode {
            EgressMode::Allowlist => match hit(&self.allowed_hosts) {
                Some(_) => Ok(()),
                None => Err(format!("{host} is not in the allowlist")),
            },
            EgressMode::Denylist => match hit(&self.denied_hosts) {
                Some(e) => Err(format!("{host} matches denylist entry {e}")),
                None => Ok(()),
            },
        }
    }

    /// Allowed to reach this address? `by_name` = it was reached through an
    /// allowed name (the address is then only checked against denied
    /// addresses); otherwise the address must be allowed on its own.
    pub fn allows_ip(&self, ip: IpAddr, by_name: bool) -> Result<(), String> {
        let ip = canonical(ip);
        if let Some(e) = self
            .denied_hosts
            .iter()
            .find(|e| e.pattern().matches_ip(ip))
        {
            return Err(format!("{ip} matches denylist entry {e}"));
        }
        if by_name || self.mode == EgressMode::Denylist {
            return Ok(());
        }
        if self.names_ip(ip) {
            Ok(())
        } else {
            Err(format!("{ip} is not in the allowlist"))
        }
    }

    /// Whether an allowed entry names this address explicitly (an address or
    /// CIDR entry): the only way to open a private range.
    pub fn names_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.allowed_hosts
            .iter()
            .any(|e| e.pattern().matches_ip(ip))
    }
}

/// What a runtime answers for `egress_policy`: the one policy in both
/// versions' spellings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EgressPolicyView {
    /// 0.1.1 spelling: true when an allowlist is in force.
    pub enabled: bool,
    pub mode: EgressMode,
    pub allowed_hosts: Vec<String>,
    pub denied_hosts: Vec<String>,
}

impl EgressPolicyView {
    pub fn open() -> Self {
        Self::of(&EgressPolicy::open())
    }

    pub fn of(p: &EgressPolicy) -> Self {
        EgressPolicyView {
            enabled: p.mode == EgressMode::Allowlist,
            mode: p.mode,
            allowed_hosts: p.allowed_hosts.iter().map(|e| e.to_string()).collect(),
            denied_hosts: p.denied_hosts.iter().map(|e| e.to_string()).collect(),
        }
    }
}

// ---- audits (`GET /v1/audits`) ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditCategory {
    Egress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EgressAction {
    Allow,
    Deny,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EgressAuditKind {
    TcpConnection,
    HttpRequest,
    IcmpDrop,
    /// Not in the 0.1.1 client's enum: listed only when asked for with
    /// `kind=dns_query` so that client's parser never sees it.
    DnsQuery,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EgressTcpConnectionAudit {
    pub src_addr: String,
    pub dst_addr: String,
    pub host: String,
    /// `tls`, `http` or `tcp` (nothing recognisable was sent first).
    pub transport: String,
    /// The part of the gateway that decided (`sni`, `http_host`, `ip`).
    pub plugin: String,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_ms: u64,
    pub action: EgressAction,
    pub outcome: String,
    pub reason: String,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EgressHttpRequestAudit {
    pub host: String,
    pub method: String,
    /// The path without its query string.
    pub path: String,
    pub status: u16,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub action: EgressAction,
    pub outcome: String,
    pub reason: String,
    pub query_redacted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EgressIcmpDropAudit {
    pub src_ip: String,
    pub packets: u64,
    pub bytes: u64,
    pub action: EgressAction,
    pub outcome: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EgressDnsQueryAudit {
    pub src_addr: String,
    pub name: String,
    /// `A`, `AAAA`, `TXT`, … (the number when unknown).
    pub qtype: String,
    pub answers: Vec<String>,
    pub action: EgressAction,
    pub outcome: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EgressAuditPayload {
    pub kind: EgressAuditKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_connection: Option<EgressTcpConnectionAudit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_request: Option<EgressHttpRequestAudit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_drop: Option<EgressIcmpDropAudit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_query: Option<EgressDnsQueryAudit>,
}

impl EgressAuditPayload {
    pub fn action(&self) -> EgressAction {
        self.tcp_connection
            .as_ref()
            .map(|p| p.action)
            .or(self.http_request.as_ref().map(|p| p.action))
            .or(self.icmp_drop.as_ref().map(|p| p.action))
            .or(self.dns_query.as_ref().map(|p| p.action))
            .unwrap_or(EgressAction::Error)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditPayload {
    pub egress: EgressAuditPayload,
}

/// One entry of `GET /v1/audits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Audit {
    pub id: String,
    pub category: AuditCategory,
    pub observed_unix_ms: i64,
    pub runtime_id: Uuid,
    pub payload: AuditPayload,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(s: &str) -> HostEntry {
        HostEntry::try_from(s.to_string()).unwrap()
    }

    #[test]
    fn entries_parse_and_urls_are_refused() {
        for (raw, text) in [
            ("Example.COM.", "example.com"),
            ("*.example.com", "*.example.com"),
            ("198.18.0.1", "198.18.0.1"),
            ("198.18.7.9/16", "198.18.0.0/16"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("2001:db8::/32", "2001:db8::/32"),
        ] {
            assert_eq!(entry(raw).as_str(), text, "{raw}");
        }
        for bad in [
            "https://example.com",
            "example.com/path",
            "example.com:443",
            "user@example.com",
            "",
            "exa mple.com",
            "10.0.0.0/33",
            "*.",
        ] {
            let e = HostEntry::try_from(bad.to_string());
            assert!(e.is_err(), "{bad:?} accepted");
        }
        assert!(HostEntry::try_from("https://x.com".to_string())
            .unwrap_err()
            .contains("https://x.com"));
    }

    #[test]
    fn wildcard_is_subdomains_only() {
        let p = entry("*.example.com");
        assert!(p.pattern().matches_name("a.example.com"));
        assert!(p.pattern().matches_name("a.b.example.com"));
        assert!(!p.pattern().matches_name("example.com"));
        assert!(!p.pattern().matches_name("badexample.com"));
    }

    #[test]
    fn allowlist_and_denylist() {
        let allow = EgressPolicy {
            mode: EgressMode::Allowlist,
            allowed_hosts: vec![entry("a.test"), entry("*.b.test"), entry("198.18.0.0/24")],
            denied_hosts: vec![],
        };
        assert!(!allow.is_open());
        assert!(allow.allows_name("a.test").is_ok());
        assert!(allow.allows_name("A.TEST.").is_ok());
        assert!(allow.allows_name("x.b.test").is_ok());
        assert!(allow.allows_name("b.test").is_err());
        assert!(allow
            .allows_ip("198.18.0.9".parse().unwrap(), false)
            .is_ok());
        assert!(allow
            .allows_ip("::ffff:198.18.0.9".parse().unwrap(), false)
            .is_ok());
        assert!(allow
            .allows_ip("198.18.1.9".parse().unwrap(), false)
            .is_err());
        assert!(allow.allows_ip("198.18.1.9".parse().unwrap(), true).is_ok());
        let deny = EgressPolicy {
            mode: EgressMode::Denylist,
            allowed_hosts: vec![],
            denied_hosts: vec![entry("bad.test"), entry("198.18.5.5")],
        };
        assert!(deny.allows_name("good.test").is_ok());
        assert!(deny.allows_name("bad.test").is_err());
        assert!(deny.allows_ip("198.18.5.5".parse().unwrap(), true).is_err());
        assert!(deny
            .allows_ip("::ffff:198.18.5.5".parse().unwrap(), false)
            .is_err());
        assert!(deny.allows_ip("198.18.5.6".parse().unwrap(), false).is_ok());
        assert!(EgressPolicy::open().is_open());
    }
}
