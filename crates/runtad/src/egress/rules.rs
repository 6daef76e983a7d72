//! The host's packet rules for runtimes under a policy, with iptables (the tool
//! the runtime network itself is built with, so a host that runs runtimes has
//! it). Three chains per daemon instance, each jumped to first from its parent:
//!
//! - `nat RT-<tag>-EGN` (PREROUTING): every new TCP connection of the runtime is
//!   redirected to the gateway's TCP port, every UDP datagram to port 53 to
//!   its DNS port.
//! - `filter RT-<tag>-EGI` (INPUT): lets those redirected packets in (the
//!   network's own INPUT chain drops everything runtimes start towards the host).
//! - `filter RT-<tag>-EGF` (FORWARD): drops everything else the runtime sends
//!   (other UDP, QUIC, ICMP): default deny.
//!
//! The rules of a runtime do not depend on its policy (the gateway reads the
//! policy per connection), so a policy change never touches them.

use std::net::Ipv4Addr;

use tokio::process::Command;

async fn ipt(table: &str, args: &[&str]) -> Result<(), String> {
    let mut a = vec!["-w", "-t", table];
    a.extend_from_slice(args);
    let out = Command::new("iptables")
        .args(&a)
        .output()
        .await
        .map_err(|e| format!("iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {}: {}",
            a.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Indexes in [`Rules::specs`] of the TCP redirect and its INPUT accept.
const TCP_ONLY: [usize; 2] = [0, 2];

#[derive(Debug, Clone)]
pub struct Rules {
    bridge: String,
    nat: String,
    input: String,
    forward: String,
    tcp_port: u16,
    dns_port: u16,
}

impl Rules {
    pub fn new(bridge: &str, tag: &str, tcp_port: u16, dns_port: u16) -> Self {
        Rules {
            bridge: bridge.to_string(),
            nat: format!("RT-{tag}-EGN"),
            input: format!("RT-{tag}-EGI"),
            forward: format!("RT-{tag}-EGF"),
            tcp_port,
            dns_port,
        }
    }

    /// Whether the host has a working iptables.
    pub async fn available() -> bool {
        Command::new("iptables")
            .arg("--version")
            .output()
            .await
            .is_ok_and(|o| o.status.success())
    }

    fn chains(&self) -> [(&'static str, &str, &'static str); 3] {
        [
            ("nat", &self.nat, "PREROUTING"),
            ("filter", &self.input, "INPUT"),
            ("filter", &self.forward, "FORWARD"),
        ]
    }

    /// Creates (or empties) the chains and puts their jumps first. Run at
    /// every start: rules left by a daemon killed with -9 point at its old
    /// ports and are rebuilt from the store.
    pub async fn reset(&self) -> Result<(), String> {
        for (table, chain, parent) in self.chains() {
            if ipt(table, &["-N", chain]).await.is_err() {
                ipt(table, &["-F", chain]).await?;
            }
            while ipt(table, &["-D", parent, "-i", &self.bridge, "-j", chain])
                .await
                .is_ok()
            {}
            ipt(table, &["-I", parent, "1", "-i", &self.bridge, "-j", chain]).await?;
        }
        Ok(())
    }

    /// Removes the chains (a clean stop with no runtime left).
    pub async fn teardown(&self) {
        for (table, chain, parent) in self.chains() {
            while ipt(table, &["-D", parent, "-i", &self.bridge, "-j", chain])
                .await
                .is_ok()
            {}
            let _ = ipt(table, &["-F", chain]).await;
            let _ = ipt(table, &["-X", chain]).await;
        }
    }

    fn specs(&self, ip: Ipv4Addr) -> Vec<(&'static str, String, Vec<String>)> {
        let ip = ip.to_string();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (tcp, dns) = (self.tcp_port.to_string(), self.dns_port.to_string());
        vec![
            (
                "nat",
                self.nat.clone(),
                s(&["-s", &ip, "-p", "tcp", "-j", "REDIRECT", "--to-ports", &tcp]),
            ),
            (
                "nat",
                self.nat.clone(),
                s(&[
                    "-s",
                    &ip,
                    "-p",
                    "udp",
                    "--dport",
                    "53",
                    "-j",
                    "REDIRECT",
                    "--to-ports",
                    &dns,
                ]),
            ),
            (
                "filter",
                self.input.clone(),
                s(&["-s", &ip, "-p", "tcp", "--dport", &tcp, "-j", "ACCEPT"]),
            ),
            (
                "filter",
                self.input.clone(),
                s(&["-s", &ip, "-p", "udp", "--dport", &dns, "-j", "ACCEPT"]),
            ),
            // Counted apart, for the aggregated drop audits.
            (
                "filter",
                self.forward.clone(),
                s(&["-s", &ip, "-p", "icmp", "-j", "DROP"]),
            ),
            (
                "filter",
                self.forward.clone(),
                s(&["-s", &ip, "-p", "udp", "-j", "DROP"]),
            ),
            (
                "filter",
                self.forward.clone(),
                s(&["-s", &ip, "-j", "DROP"]),
            ),
        ]
    }

    /// Puts a runtime under the gateway. Idempotent.
    pub async fn add(&self, ip: Ipv4Addr) -> Result<(), String> {
        for (table, chain, args) in self.specs(ip) {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut check = vec!["-C", chain.as_str()];
            check.extend_from_slice(&a);
            if ipt(table, &check).await.is_ok() {
                continue;
            }
            let mut add = vec!["-A", chain.as_str()];
            add.extend_from_slice(&a);
            ipt(table, &add).await?;
        }
        Ok(())
    }

    /// Puts a runtime's TCP under the gateway and nothing else (an open-policy
    /// runtime with secret bindings: its DNS and UDP keep the plain path).
    /// Idempotent; the first two of [`Rules::specs`].
    pub async fn add_tcp(&self, ip: Ipv4Addr) -> Result<(), String> {
        for (i, (table, chain, args)) in self.specs(ip).into_iter().enumerate() {
            if !TCP_ONLY.contains(&i) {
                continue;
            }
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut check = vec!["-C", chain.as_str()];
            check.extend_from_slice(&a);
            if ipt(table, &check).await.is_ok() {
                continue;
            }
            let mut add = vec!["-A", chain.as_str()];
            add.extend_from_slice(&a);
            ipt(table, &add).await?;
        }
        Ok(())
    }

    /// From full filtering back to TCP only (the policy became open while
    /// the runtime still has secret bindings).
    pub async fn unfilter(&self, ip: Ipv4Addr) {
        for (i, (table, chain, args)) in self.specs(ip).into_iter().enumerate() {
            if TCP_ONLY.contains(&i) {
                continue;
            }
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut del = vec!["-D", chain.as_str()];
            del.extend_from_slice(&a);
            while ipt(table, &del).await.is_ok() {}
        }
    }

    /// Packets and bytes each runtime had dropped since the last call, by
    /// protocol (`icmp`, `udp`, `all`), read and zeroed in one listing.
    pub async fn drop_counts(&self) -> Vec<(Ipv4Addr, String, u64, u64)> {
        let out = Command::new("iptables")
            .args([
                "-w",
                "-t",
                "filter",
                "-L",
                &self.forward,
                "-v",
                "-x",
                "-n",
                "-Z",
            ])
            .output()
            .await;
        let Ok(out) = out else {
            return vec![];
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                // pkts bytes target prot opt in out source destination
                let w: Vec<&str> = l.split_whitespace().collect();
                if w.len() < 9 || w[2] != "DROP" {
                    return None;
                }
                let pkts = w[0].parse::<u64>().ok().filter(|n| *n > 0)?;
                let bytes = w[1].parse::<u64>().ok()?;
                let src = w[7].trim_end_matches("/32").parse::<Ipv4Addr>().ok()?;
                // Newer iptables print the protocol as its number.
                let proto = match w[3] {
                    "1" | "icmp" => "icmp",
                    "17" | "udp" => "udp",
                    _ => "ip",
                };
                Some((src, proto.to_string(), pkts, bytes))
            })
            .collect()
    }

    /// Takes a runtime off the gateway (back to the plain NAT path).
    pub async fn remove(&self, ip: Ipv4Addr) {
        // The FORWARD drop goes last so the runtime is never briefly open.
        for (table, chain, args) in self.specs(ip) {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut del = vec!["-D", chain.as_str()];
            del.extend_from_slice(&a);
            while ipt(table, &del).await.is_ok() {}
        }
    }
}
