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
//! policy per connection), so a policy change never touches them. A
//! runtime's seven rules go in, and out, in one `iptables-restore --noflush`
//! call; a daemon restart (also after kill -9) empties the chains and puts
//! every stored policy runtime back.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

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
    /// The runtimes whose rules `add` put in (since the last `reset`).
    added: Arc<Mutex<HashSet<Ipv4Addr>>>,
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
            added: Arc::default(),
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
        self.added().clear();
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
        self.added().clear();
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

    /// Puts a runtime under the gateway: its seven rules in one
    /// `iptables-restore --noflush` call (one process, not a check and an
    /// append per rule: create -> ready pays for it). Idempotent: a runtime
    /// already added (since the last [`Rules::reset`]) is left as it is.
    /// The filter table goes first, so the runtime's non-TCP traffic is
    /// dropped before its TCP is redirected: it is never briefly open.
    pub async fn add(&self, ip: Ipv4Addr) -> Result<(), String> {
        if self.added().contains(&ip) {
            return Ok(());
        }
        restore(&self.script("-A", ip, &["filter", "nat"])).await?;
        self.added().insert(ip);
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
        // No longer fully added: a later `add` must put every rule back.
        self.added().remove(&ip);
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

    /// The `iptables-restore` input that applies `op` (`-A` or `-D`) to the
    /// rules of `ip`, table by table in `order` (each table's COMMIT is
    /// atomic).
    fn script(&self, op: &str, ip: Ipv4Addr, order: &[&str]) -> String {
        let specs = self.specs(ip);
        let mut out = String::new();
        for table in order {
            out.push_str(&format!("*{table}\n"));
            for (t, chain, args) in &specs {
                if t == table {
                    out.push_str(&format!("{op} {chain} {}\n", args.join(" ")));
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    fn added(&self) -> std::sync::MutexGuard<'_, HashSet<Ipv4Addr>> {
        self.added.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Takes a runtime off the gateway (back to the plain NAT path). A
    /// runtime [`Rules::add`] put on goes in one `iptables-restore` call, nat
    /// first so the FORWARD drop goes last and the runtime is never briefly
    /// open. Otherwise (an `add` that failed half-way), or when that call
    /// fails (a rule removed by hand), each rule is deleted one by one until
    /// none is left, the way every rule of the runtime is sure to go.
    pub async fn remove(&self, ip: Ipv4Addr) {
        if self.added().remove(&ip)
            && restore(&self.script("-D", ip, &["nat", "filter"]))
                .await
                .is_ok()
        {
            // A runtime given bindings under an open policy got its TCP rules
            // from `add_tcp` too: copies of those may remain; none may.
            for (i, (table, chain, args)) in self.specs(ip).into_iter().enumerate() {
                if TCP_ONLY.contains(&i) {
                    let mut del = vec!["-D", chain.as_str()];
                    del.extend(args.iter().map(String::as_str));
                    while ipt(table, &del).await.is_ok() {}
                }
            }
            return;
        }
        for (table, chain, args) in self.specs(ip) {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut del = vec!["-D", chain.as_str()];
            del.extend_from_slice(&a);
            while ipt(table, &del).await.is_ok() {}
        }
    }
}

/// Feeds `script` to `iptables-restore --noflush` (waiting for the xtables
/// lock like every `ipt` call, so concurrent creates and other tools on the
/// host never fail on it).
async fn restore(script: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("iptables-restore: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| format!("iptables-restore: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("iptables-restore: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables-restore: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batch holds exactly the rules `specs` lists (the ones a one by one
    /// removal and the drop counters look for), filter before nat on add.
    #[test]
    fn one_batch_holds_every_rule_of_the_runtime() {
        let r = Rules::new("rtb-t", "t", 4000, 4001);
        let s = r.script("-A", Ipv4Addr::new(10, 9, 0, 2), &["filter", "nat"]);
        assert!(s.starts_with("*filter\n"), "{s}");
        assert!(s.find("*filter").unwrap() < s.find("*nat").unwrap());
        assert_eq!(s.matches("COMMIT\n").count(), 2);
        assert_eq!(s.lines().filter(|l| l.starts_with("-A ")).count(), 7);
        assert!(s.contains("-A RT-t-EGN -s 10.9.0.2 -p tcp -j REDIRECT --to-ports 4000\n"));
        assert!(
            s.contains("-A RT-t-EGN -s 10.9.0.2 -p udp --dport 53 -j REDIRECT --to-ports 4001\n")
        );
        assert!(s.contains("-A RT-t-EGF -s 10.9.0.2 -j DROP\n"));
        let d = r.script("-D", Ipv4Addr::new(10, 9, 0, 2), &["nat", "filter"]);
        assert!(d.find("*nat").unwrap() < d.find("*filter").unwrap());
        assert_eq!(d.lines().filter(|l| l.starts_with("-D ")).count(), 7);
    }
}
