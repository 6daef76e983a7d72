//! Name resolution for the gateway, and the addresses no policy opens.
//!
//! The gateway resolves every name itself and connects only to what it got,
//! so the address a program aimed at never matters when it names a host. The
//! operator's `--egress-hosts` file (hosts(5) format) is read first; its
//! answers are trusted to point into private ranges (the operator wrote
//! them); a private answer from the system resolver is DNS rebinding and is
//! dropped.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use runta_api::canonical;

/// A hosts(5) file: `ADDRESS NAME [ALIAS…]`, `#` comments.
#[derive(Debug, Default, Clone)]
pub struct HostsFile {
    names: HashMap<String, Vec<IpAddr>>,
}

impl HostsFile {
    pub fn load(path: &Path) -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    pub fn parse(text: &str) -> Self {
        let mut names: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
                continue;
            };
            for n in words {
                let n = n.trim_end_matches('.').to_ascii_lowercase();
                let v = names.entry(n).or_default();
                if !v.contains(&ip) {
                    v.push(ip);
                }
            }
        }
        HostsFile { names }
    }

    pub fn get(&self, name: &str) -> Option<&[IpAddr]> {
        self.names.get(name).map(Vec::as_slice)
    }
}

/// Where a resolution came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    HostsFile,
    System,
}

pub struct Resolver {
    hosts_path: Option<PathBuf>,
    hosts: Mutex<(HostsFile, Instant)>,
}

impl Resolver {
    pub fn new(hosts_path: Option<PathBuf>) -> Self {
        let hosts = hosts_path
            .as_deref()
            .and_then(|p| HostsFile::load(p).ok())
            .unwrap_or_default();
        Resolver {
            hosts_path,
            hosts: Mutex::new((hosts, Instant::now())),
        }
    }

    /// `name` in the hosts file, re-read at most every 2 s so a test or an
    /// operator can change it without a restart.
    fn in_hosts_file(&self, name: &str) -> Option<Vec<IpAddr>> {
        let mut g = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = &self.hosts_path {
            if g.1.elapsed() > Duration::from_secs(2) {
                if let Ok(h) = HostsFile::load(p) {
                    g.0 = h;
                }
                g.1 = Instant::now();
            }
        }
        g.0.get(name).map(<[IpAddr]>::to_vec)
    }

    /// IPv4 addresses of `name` (the runtime network has no IPv6).
    pub async fn resolve(&self, name: &str) -> Result<(Vec<IpAddr>, Source), String> {
        if let Some(v) = self.in_hosts_file(name) {
            return Ok((v, Source::HostsFile));
        }
        let found = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::lookup_host((name.to_string(), 0u16)),
        )
        .await
        .map_err(|_| format!("resolving {name} timed out"))?
        .map_err(|e| format!("resolving {name}: {e}"))?;
        let mut v: Vec<IpAddr> = Vec::new();
        for a in found {
            let ip = canonical(a.ip());
            if !v.contains(&ip) {
                v.push(ip);
            }
        }
        Ok((v, Source::System))
    }
}

/// Addresses of this machine, cached briefly (a connection check must not
/// dump the interface table every time).
pub struct LocalAddrs {
    cache: Mutex<(Vec<IpAddr>, Option<Instant>)>,
}

impl LocalAddrs {
    pub fn new() -> Self {
        LocalAddrs {
            cache: Mutex::new((vec![], None)),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let mut g = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if g.1.is_none_or(|t| t.elapsed() > Duration::from_secs(2)) {
            g.0 = interface_addrs();
            g.1 = Some(Instant::now());
        }
        g.0.contains(&ip)
    }
}

fn interface_addrs() -> Vec<IpAddr> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs fills a list we walk read-only and free once.
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut p = head;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if !a.is_null() {
                match (*a).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(a as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(a as *const libc::sockaddr_in6);
                        out.push(canonical(IpAddr::V6(sin6.sin6_addr.s6_addr.into())));
                    }
                    _ => {}
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

/// Never reachable, whatever a policy says: loopback, link-local and metadata,
/// multicast and broadcast, unspecified.
pub fn never(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v) => {
            let o = v.octets();
            if v.is_loopback() {
                Some("loopback")
            } else if v.is_link_local() {
                Some("link-local or metadata address")
            } else if v.is_multicast() || v.is_broadcast() || v.is_unspecified() || o[0] == 0 {
                Some("not a unicast address")
            } else {
                None
            }
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            if v.is_loopback() || v.is_unspecified() {
                Some("loopback")
            } else if (s[0] & 0xffc0) == 0xfe80
                || v == "fd00:ec2::254".parse::<std::net::Ipv6Addr>().unwrap()
            {
                Some("link-local or metadata address")
            } else if v.is_multicast() {
                Some("not a unicast address")
            } else {
                None
            }
        }
    }
}

/// Private ranges: reachable only when a policy entry or the operator's hosts
/// file names them.
pub fn private(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v) => {
            let o = v.octets();
            v.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v) => (v.segments()[0] & 0xfe00) == 0xfc00,
    }
}
