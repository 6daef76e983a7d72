//! The host's packet rules for runtimes under a policy: iptables rules that
//! never change while the daemon runs, matching kernel ipsets of runtime
//! addresses (`-m set`). Three chains per daemon instance, each jumped to
//! first from its parent for traffic from the runtimes' bridge:
//!
//! - `nat RT-<tag>-EGN` (PREROUTING): every new TCP connection of a member of
//!   the filtered or the TCP-only set is redirected to the gateway's TCP port,
//!   every UDP datagram of a filtered member to port 53 to its DNS port.
//! - `filter RT-<tag>-EGI` (INPUT): lets those redirected packets in (the
//!   network's own INPUT chain drops everything runtimes start towards the host).
//! - `filter RT-<tag>-EGF` (FORWARD): drops everything else a filtered member
//!   sends (other UDP, QUIC, ICMP): default deny, counted per member by the
//!   sets' counters for the aggregated drop audits.
//!
//! So putting a runtime under the gateway, or taking it off, is a set member
//! added or removed over netlink (`runta_backend::ipset`), with no process
//! and no rule rewritten: create -> ready does not pay for a firewall tool.
//! A policy change never touches them at all (the gateway reads the policy
//! per connection). A daemon restart (also after kill -9) empties the sets
//! and chains and puts every stored policy runtime back.

use std::net::Ipv4Addr;
use std::sync::Mutex;

use runta_backend::ipset::IpSets;

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

/// The sets a runtime under the gateway is a member of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Set {
    /// Fully filtered (a policy): TCP and DNS redirected, everything else
    /// dropped; its counters count what the last catch-all DROP drops.
    Filtered,
    /// Counts the ICMP a filtered runtime has dropped.
    Icmp,
    /// Counts the UDP (QUIC and all) a filtered runtime has dropped.
    Udp,
    /// Only TCP redirected (an open policy with secret bindings).
    TcpOnly,
}

const SETS: [Set; 4] = [Set::Filtered, Set::Icmp, Set::Udp, Set::TcpOnly];

/// The counters last read per (set, member), to report what is new.
type Seen = std::collections::HashMap<(Set, Ipv4Addr), (u64, u64)>;

pub struct Rules {
    bridge: String,
    nat: String,
    input: String,
    forward: String,
    tag: String,
    tcp_port: u16,
    dns_port: u16,
    sets: Option<IpSets>,
    seen: Mutex<Seen>,
}

impl Rules {
    pub fn new(bridge: &str, tag: &str, tcp_port: u16, dns_port: u16) -> Self {
        Rules {
            bridge: bridge.to_string(),
            nat: format!("RT-{tag}-EGN"),
            input: format!("RT-{tag}-EGI"),
            forward: format!("RT-{tag}-EGF"),
            tag: tag.to_string(),
            tcp_port,
            dns_port,
            sets: IpSets::open().ok(),
            seen: Mutex::default(),
        }
    }

    /// Whether the host has a working iptables and the kernel's ipset.
    pub async fn available() -> bool {
        let ipt = Command::new("iptables")
            .arg("--version")
            .output()
            .await
            .is_ok_and(|o| o.status.success());
        ipt && IpSets::open().is_ok()
    }

    fn set_name(&self, s: Set) -> String {
        let kind = match s {
            Set::Filtered => "eg",
            Set::Icmp => "egi",
            Set::Udp => "egu",
            Set::TcpOnly => "tcp",
        };
        format!("RT-{}-{kind}", self.tag)
    }

    fn sets(&self) -> Result<&IpSets, String> {
        self.sets
            .as_ref()
            .ok_or_else(|| "the kernel's ipset is not available (module ip_set)".to_string())
    }

    fn chains(&self) -> [(&'static str, &str, &'static str); 3] {
        [
            ("nat", &self.nat, "PREROUTING"),
            ("filter", &self.input, "INPUT"),
            ("filter", &self.forward, "FORWARD"),
        ]
    }

    /// The static rules, in chain order. Every runtime's traffic meets them;
    /// only members of the sets match. Matches on the filtered set leave its
    /// counters alone except in the last DROP, so those counters are the
    /// catch-all's drops.
    fn static_rules(&self) -> Vec<(&'static str, String, String)> {
        let (tcp, dns) = (self.tcp_port, self.dns_port);
        let m = |s: Set| format!("-m set --match-set {} src", self.set_name(s));
        let quiet = |s: Set| format!("{} ! --update-counters", m(s));
        let (f, t) = (Set::Filtered, Set::TcpOnly);
        vec![
            (
                "nat",
                self.nat.clone(),
                format!("-p tcp {} -j REDIRECT --to-ports {tcp}", quiet(f)),
            ),
            (
                "nat",
                self.nat.clone(),
                format!("-p tcp {} -j REDIRECT --to-ports {tcp}", quiet(t)),
            ),
            (
                "nat",
                self.nat.clone(),
                format!(
                    "-p udp --dport 53 {} -j REDIRECT --to-ports {dns}",
                    quiet(f)
                ),
            ),
            (
                "filter",
                self.input.clone(),
                format!("-p tcp --dport {tcp} {} -j ACCEPT", quiet(f)),
            ),
            (
                "filter",
                self.input.clone(),
                format!("-p tcp --dport {tcp} {} -j ACCEPT", quiet(t)),
            ),
            (
                "filter",
                self.input.clone(),
                format!("-p udp --dport {dns} {} -j ACCEPT", quiet(f)),
            ),
            (
                "filter",
                self.forward.clone(),
                format!("-p icmp {} -j DROP", m(Set::Icmp)),
            ),
            (
                "filter",
                self.forward.clone(),
                format!("-p udp {} -j DROP", m(Set::Udp)),
            ),
            ("filter", self.forward.clone(), format!("{} -j DROP", m(f))),
        ]
    }

    /// The `iptables-restore` input that empties the chains and puts the
    /// static rules in (each table's COMMIT is atomic).
    fn script(&self) -> String {
        let rules = self.static_rules();
        let mut out = String::new();
        for table in ["filter", "nat"] {
            out.push_str(&format!("*{table}\n"));
            for (t, chain, _) in self.chains() {
                if t == table {
                    out.push_str(&format!("-F {chain}\n"));
                }
            }
            for (t, chain, rule) in &rules {
                if *t == table {
                    out.push_str(&format!("-A {chain} {rule}\n"));
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    /// Creates (or empties) the sets and the chains, puts the static rules
    /// in and the chains' jumps first. Run at every start: members left by
    /// a daemon killed with -9 are dropped and put back from the store, and
    /// rules left by it point at its old ports.
    ///
    /// The filtered sets are NOT emptied here: a daemon killed with -9 left
    /// its policy runtimes in them, and emptying them before the store puts
    /// them back left every policy runtime open (plain NAT) until then
    /// (docs/security.md, "Second egress red-team pass"). They are kept,
    /// their counters taken as already reported, and [`Rules::prune`] drops
    /// the members the store no longer holds once the refill is done. The
    /// TCP-only set is emptied (an open policy: nothing to keep closed).
    pub async fn reset(&self) -> Result<(), String> {
        self.seen().clear();
        let sets = self.sets()?;
        for s in SETS {
            let name = self.set_name(s);
            sets.create(&name).map_err(|e| e.to_string())?;
            if s == Set::TcpOnly {
                sets.flush(&name).map_err(|e| e.to_string())?;
                continue;
            }
            let members = sets.members(&name).map_err(|e| e.to_string())?;
            let mut seen = self.seen();
            for m in members {
                seen.insert((s, m.ip), (m.packets, m.bytes));
            }
        }
        for (table, chain, _) in self.chains() {
            let _ = ipt(table, &["-N", chain]).await;
        }
        restore(&self.script()).await?;
        // A jump left by the daemon before (also killed with -9) stays where
        // it is: taking it out to put it back would leave the runtimes on
        // the plain path in between, while their sets are still filled.
        for (table, chain, parent) in self.chains() {
            let jump = ["-i", self.bridge.as_str(), "-j", chain];
            let mut check = vec!["-C", parent];
            check.extend_from_slice(&jump);
            if ipt(table, &check).await.is_err() {
                let mut insert = vec!["-I", parent, "1"];
                insert.extend_from_slice(&jump);
                ipt(table, &insert).await?;
            }
        }
        Ok(())
    }

    /// Removes the chains and the sets (a clean stop with no runtime left).
    pub async fn teardown(&self) {
        self.seen().clear();
        for (table, chain, parent) in self.chains() {
            while ipt(table, &["-D", parent, "-i", &self.bridge, "-j", chain])
                .await
                .is_ok()
            {}
            let _ = ipt(table, &["-F", chain]).await;
            let _ = ipt(table, &["-X", chain]).await;
        }
        if let Ok(sets) = self.sets() {
            for s in SETS {
                let _ = sets.destroy(&self.set_name(s));
            }
        }
    }

    fn join(&self, ip: Ipv4Addr, order: &[Set]) -> Result<(), String> {
        let sets = self.sets()?;
        for &s in order {
            sets.add(&self.set_name(s), ip).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Takes `ip` out of the sets in `order` and returns the drops its
    /// counters saw since the last [`Rules::drop_counts`]: they would
    /// otherwise go with the member, unaudited (a burst just before a policy
    /// is lifted).
    fn leave(&self, ip: Ipv4Addr, order: &[Set]) -> Vec<(Ipv4Addr, String, u64, u64)> {
        let Ok(sets) = self.sets() else {
            return vec![];
        };
        let mut out = Vec::new();
        let mut seen = self.seen();
        for &s in order {
            let name = self.set_name(s);
            let last = seen.remove(&(s, ip));
            if let Some(proto) = proto_of(s) {
                let now = sets
                    .members(&name)
                    .ok()
                    .and_then(|m| m.into_iter().find(|m| m.ip == ip));
                if let Some(m) = now {
                    let (p0, b0) = last.filter(|l| l.0 <= m.packets).unwrap_or((0, 0));
                    if m.packets > p0 {
                        out.push((
                            ip,
                            proto.to_string(),
                            m.packets - p0,
                            m.bytes.saturating_sub(b0),
                        ));
                    }
                }
            }
            if let Err(e) = sets.del(&name, ip) {
                tracing::warn!(%ip, "egress rules: {e}");
            }
        }
        out
    }

    /// After a restart's refill: drops the filtered members that are not
    /// among `keep` (the runtimes the store holds under a policy).
    pub async fn prune(&self, keep: &std::collections::HashSet<Ipv4Addr>) {
        let Ok(sets) = self.sets() else { return };
        for s in [Set::Filtered, Set::Icmp, Set::Udp] {
            let Ok(members) = sets.members(&self.set_name(s)) else {
                continue;
            };
            for m in members.into_iter().filter(|m| !keep.contains(&m.ip)) {
                self.leave(m.ip, &[s]);
            }
        }
    }

    /// Puts a runtime under the gateway: three set members over netlink (no
    /// process, no rule change: create -> ready pays for it). The counting
    /// sets go first, the filtered set last, and that one member switches
    /// the redirects and the catch-all drop on at once: the runtime is
    /// never briefly half filtered. Idempotent.
    pub async fn add(&self, ip: Ipv4Addr) -> Result<(), String> {
        self.join(ip, &[Set::Icmp, Set::Udp, Set::Filtered])
    }

    /// Puts a runtime's TCP under the gateway and nothing else (an open-policy
    /// runtime with secret bindings: its DNS and UDP keep the plain path).
    /// Idempotent.
    pub async fn add_tcp(&self, ip: Ipv4Addr) -> Result<(), String> {
        self.join(ip, &[Set::TcpOnly])
    }

    /// From full filtering back to TCP only (the policy became open while
    /// the runtime still has secret bindings): its TCP is redirected by the
    /// TCP-only member before the filtered one goes.
    /// Returns the drops not reported yet (see [`Rules::leave`]).
    pub async fn unfilter(&self, ip: Ipv4Addr) -> Vec<(Ipv4Addr, String, u64, u64)> {
        if let Err(e) = self.join(ip, &[Set::TcpOnly]) {
            tracing::warn!(%ip, "egress rules: {e}");
        }
        self.leave(ip, &[Set::Filtered, Set::Icmp, Set::Udp])
    }

    /// Takes a runtime off the gateway (back to the plain NAT path); returns
    /// the drops not reported yet (see [`Rules::leave`]).
    pub async fn remove(&self, ip: Ipv4Addr) -> Vec<(Ipv4Addr, String, u64, u64)> {
        self.leave(ip, &[Set::TcpOnly, Set::Filtered, Set::Icmp, Set::Udp])
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Packets and bytes each runtime had dropped since the last call, by
    /// protocol (`icmp`, `udp`, `ip` for the rest), from the sets' counters.
    pub async fn drop_counts(&self) -> Vec<(Ipv4Addr, String, u64, u64)> {
        let Ok(sets) = self.sets() else {
            return vec![];
        };
        let mut out = Vec::new();
        let mut seen = self.seen();
        for s in [Set::Icmp, Set::Udp, Set::Filtered] {
            let Some(proto) = proto_of(s) else { continue };
            let Ok(members) = sets.members(&self.set_name(s)) else {
                continue;
            };
            for m in members {
                let last = seen.insert((s, m.ip), (m.packets, m.bytes));
                // A member added again starts from zero.
                let (p0, b0) = last.filter(|l| l.0 <= m.packets).unwrap_or((0, 0));
                if m.packets > p0 {
                    out.push((
                        m.ip,
                        proto.to_string(),
                        m.packets - p0,
                        m.bytes.saturating_sub(b0),
                    ));
                }
            }
        }
        out
    }
}

/// The protocol a set's counters count drops of (the TCP-only set drops nothing).
fn proto_of(s: Set) -> Option<&'static str> {
    match s {
        Set::Icmp => Some("icmp"),
        Set::Udp => Some("udp"),
        Set::Filtered => Some("ip"),
        Set::TcpOnly => None,
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

    /// The one batch at start empties the chains and holds every static
    /// rule, filter before nat, the catch-all DROP last in its chain.
    #[test]
    fn the_static_rules_match_the_sets_only() {
        let r = Rules::new("rtb-t", "t", 4000, 4001);
        let s = r.script();
        assert!(s.find("*filter").unwrap() < s.find("*nat").unwrap());
        assert_eq!(s.matches("COMMIT\n").count(), 2);
        assert_eq!(s.lines().filter(|l| l.starts_with("-F ")).count(), 3);
        assert_eq!(s.lines().filter(|l| l.starts_with("-A ")).count(), 9);
        assert!(s.contains(
            "-A RT-t-EGN -p tcp -m set --match-set RT-t-eg src ! --update-counters -j REDIRECT --to-ports 4000\n"
        ));
        assert!(s.contains("-A RT-t-EGN -p tcp -m set --match-set RT-t-tcp src ! --update-counters -j REDIRECT --to-ports 4000\n"));
        assert!(s.contains("-A RT-t-EGF -p icmp -m set --match-set RT-t-egi src -j DROP\n"));
        let fwd: Vec<&str> = s.lines().filter(|l| l.starts_with("-A RT-t-EGF")).collect();
        assert_eq!(
            fwd.last(),
            Some(&"-A RT-t-EGF -m set --match-set RT-t-eg src -j DROP")
        );
        // Every rule names a set: no rule matches a runtime that is in none.
        assert!(s
            .lines()
            .filter(|l| l.starts_with("-A "))
            .all(|l| l.contains("--match-set RT-t-")));
    }
}
