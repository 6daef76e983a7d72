//! Runtime networking: one bridge per daemon instance with NAT to the outside,
//! and per runtime a named network namespace joined to it by a veth pair.
//!
//! Isolation rules: bridge ports are `isolated`, so runtimes cannot reach each
//! other; the INPUT chain drops what runtimes start towards the host (the API
//! port included), while connections the host opens to a runtime (the ingress)
//! are answered normally; the FORWARD chain lets no new connection from
//! elsewhere into the bridge.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};
use uuid::Uuid;

use crate::netlink;
use crate::util::run;
use crate::{BackendError, Result};

#[derive(Debug, Clone)]
pub struct Network {
    /// Short per-instance tag (hex), part of every host-side name.
    tag: String,
    bridge: String,
    second_octet: u8,
}

impl Network {
    /// `tag` is a few hex characters unique to this daemon instance;
    /// `second_octet` picks the subnet `10.N.0.0/16`.
    pub fn new(tag: &str, second_octet: u8) -> Self {
        let tag: String = tag.chars().take(6).collect();
        Network {
            bridge: format!("rtb-{tag}"),
            tag,
            second_octet,
        }
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.second_octet, 0, 1)
    }

    pub fn subnet(&self) -> String {
        format!("10.{}.0.0/16", self.second_octet)
    }

    /// The address for host number `n` (2 ..= 65534) of the subnet.
    pub fn address(&self, n: u32) -> Option<Ipv4Addr> {
        if !(2..=65534).contains(&n) {
            return None;
        }
        Some(Ipv4Addr::new(
            10,
            self.second_octet,
            (n >> 8) as u8,
            (n & 0xff) as u8,
        ))
    }

    /// The inverse of [`Network::address`].
    pub fn host_number(&self, ip: Ipv4Addr) -> Option<u32> {
        let o = ip.octets();
        (o[0] == 10 && o[1] == self.second_octet).then(|| ((o[2] as u32) << 8) | o[3] as u32)
    }

    pub fn netns_name(&self, id: Uuid) -> String {
        format!("rt-{}-{}", self.tag, &id.simple().to_string()[..12])
    }

    pub fn netns_path(&self, id: Uuid) -> PathBuf {
        Path::new("/run/netns").join(self.netns_name(id))
    }

    fn veth_name(&self, id: Uuid) -> String {
        // IFNAMSIZ: at most 15 characters.
        let t: String = self.tag.chars().take(5).collect();
        format!("v{t}{}", &id.simple().to_string()[..9])
    }

    fn chain(&self, what: &str) -> String {
        format!("RT-{}-{what}", self.tag)
    }

    /// Removes other instances' bridges that hold our gateway address but have
    /// no runtime attached (left by daemons that did not shut down cleanly):
    /// two bridges with one subnet would make routing ambiguous.
    async fn remove_stale_bridges(&self) {
        let gw = format!("{}/16", self.gateway());
        let Ok(rd) = std::fs::read_dir("/sys/class/net") else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("rtb-") || name == self.bridge {
                continue;
            }
            let ports = std::fs::read_dir(e.path().join("brif"))
                .map(|d| d.count())
                .unwrap_or(0);
            if ports > 0 {
                continue;
            }
            let holds = run("ip", &["-4", "-o", "addr", "show", "dev", &name], None)
                .await
                .map(|a| a.split_whitespace().any(|w| w == gw))
                .unwrap_or(false);
            if holds {
                warn!(bridge = %name, "removing a stale bridge that holds this daemon's subnet");
                let _ = run("ip", &["link", "del", &name], None).await;
            }
        }
    }

    /// The interface (other than our bridge) holding an address in our subnet.
    async fn subnet_user(&self) -> Option<String> {
        let prefix = format!("10.{}.", self.second_octet);
        let out = run("ip", &["-4", "-o", "addr", "show"], None).await.ok()?;
        out.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            let ifname = w.nth(1)?.to_string();
            let addr = w.nth(1)?;
            (addr.starts_with(&prefix) && ifname != self.bridge).then_some(ifname)
        })
    }

    /// Undoes `setup_host` (bridge, chains, jump rules). Called on a clean
    /// shutdown when no runtime of this instance is left.
    pub async fn teardown_host(&self) {
        for (table, what, parent) in [
            ("filter", "FWD", "FORWARD"),
            ("filter", "IN", "INPUT"),
            ("nat", "NAT", "POSTROUTING"),
        ] {
            let chain = self.chain(what);
            while run(
                "iptables",
                &["-w", "-t", table, "-D", parent, "-j", &chain],
                None,
            )
            .await
            .is_ok()
            {}
            let _ = run("iptables", &["-w", "-t", table, "-F", &chain], None).await;
            let _ = run("iptables", &["-w", "-t", table, "-X", &chain], None).await;
        }
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ = run("ip", &["link", "del", &self.bridge], None).await;
        }
    }

    /// Creates the bridge, turns on forwarding and installs NAT and isolation
    /// rules. Idempotent; called at every daemon start.
    pub async fn setup_host(&self) -> Result<()> {
        self.remove_stale_bridges().await;
        if let Some(other) = self.subnet_user().await {
            // Two interfaces on one subnet make routing to runtimes ambiguous.
            return Err(BackendError::Other(format!(
                "the runtime subnet {} is already used by {other}; choose another with --subnet-octet",
                self.subnet()
            )));
        }
        let br = self.bridge.as_str();
        if !Path::new("/sys/class/net").join(br).exists() {
            run("ip", &["link", "add", br, "type", "bridge"], None).await?;
        }
        let gw = format!("{}/16", self.gateway());
        let addrs = run("ip", &["-4", "-o", "addr", "show", "dev", br], None).await?;
        if !addrs.split_whitespace().any(|w| w == gw) {
            run("ip", &["addr", "add", &gw, "dev", br], None).await?;
        }
        // IPv6 is off on the runtime network: the isolation rules are IPv4
        // rules, and a link-local address would let runtimes reach the host.
        disable_ipv6(br);
        run("ip", &["link", "set", br, "up"], None).await?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;

        let subnet = self.subnet();
        let (fwd, inp, nat) = (self.chain("FWD"), self.chain("IN"), self.chain("NAT"));
        ensure_chain("filter", &fwd, "FORWARD").await?;
        ensure_chain("filter", &inp, "INPUT").await?;
        ensure_chain("nat", &nat, "POSTROUTING").await?;
        // Link-local addresses (169.254.0.0/16: cloud metadata services and
        // their credentials) are never reachable from a runtime, whatever its
        // egress policy; only a host resolver that lives there (some clouds
        // put DNS at 169.254.169.253) is reachable, on port 53.
        let resolvers = link_local_resolvers();
        let mut rules: Vec<(&str, &str, Vec<&str>)> = Vec::new();
        for r in &resolvers {
            for proto in ["udp", "tcp"] {
                rules.push((
                    "filter",
                    &fwd,
                    vec![
                        "-i", br, "-d", r, "-p", proto, "--dport", "53", "-j", "ACCEPT",
                    ],
                ));
            }
        }
        rules.push((
            "filter",
            &fwd,
            vec!["-i", br, "-d", "169.254.0.0/16", "-j", "DROP"],
        ));
        rules.extend([
            // Runtimes never talk to each other, on this bridge or another instance's.
            (
                "filter",
                fwd.as_str(),
                vec!["-i", br, "-o", "rtb-+", "-j", "DROP"],
            ),
            ("filter", &fwd, vec!["-i", br, "-j", "ACCEPT"]),
            (
                "filter",
                &fwd,
                vec![
                    "-o",
                    br,
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "RELATED,ESTABLISHED",
                    "-j",
                    "ACCEPT",
                ],
            ),
            // Nothing else is forwarded into the bridge: a host on the
            // machine's networks that routes to the runtime subnet reaches no
            // runtime port. Inbound traffic arrives only through the ingress,
            // which connects from the host itself (OUTPUT, not FORWARD).
            ("filter", &fwd, vec!["-o", br, "-j", "DROP"]),
            (
                "filter",
                &inp,
                vec![
                    "-i",
                    br,
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "RELATED,ESTABLISHED",
                    "-j",
                    "ACCEPT",
                ],
            ),
            ("filter", &inp, vec!["-i", br, "-j", "DROP"]),
            (
                "nat",
                &nat,
                vec!["-s", &subnet, "!", "-o", br, "-j", "MASQUERADE"],
            ),
        ]);
        for (table, chain, args) in rules {
            let mut a = vec!["-w", "-t", table, "-A", chain];
            a.extend(args);
            run("iptables", &a, None).await?;
        }
        Ok(())
    }

    /// Gives the runtime its namespace, veth and address. Idempotent: a
    /// half-made attachment is removed and made again.
    pub async fn attach(&self, id: Uuid, ip: Ipv4Addr) -> Result<()> {
        let veth = self.veth_name(id);
        if self.netns_path(id).exists() && Path::new("/sys/class/net").join(&veth).exists() {
            return Ok(());
        }
        if !Path::new("/sys/class/net").join(&self.bridge).exists() {
            // Someone removed the bridge (an operator, a host network reset):
            // make it and its rules again rather than fail every create.
            warn!(bridge = %self.bridge, "the runtime bridge is gone; setting the host network up again");
            self.setup_host().await?;
        }
        self.detach(id).await;
        let (ns_path, bridge, gw) = (self.netns_path(id), self.bridge.clone(), self.gateway());
        // In-process rtnetlink on a short-lived thread of its own (it enters the
        // new namespace): no `ip` processes on the create path.
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            netlink::ensure_netns_dir(ns_path.parent().unwrap_or(Path::new("/run/netns")))?;
            let master = netlink::ifindex(&bridge)?;
            let host_veth = veth.clone();
            netlink::with_new_netns(&ns_path, move |nl| {
                let ns = nl.ns.try_clone()?;
                nl.host.del_neigh(master, ip)?;
                nl.host.add_veth(&host_veth, master, "eth0", &ns)?;
                disable_ipv6(&host_veth);
                // Runtimes on one bridge cannot reach each other.
                std::fs::write(format!("/sys/class/net/{host_veth}/brport/isolated"), "1")?;
                nl.host.link_up(netlink::ifindex(&host_veth)?)?;
                nl.enter()?;
                nl.inside.link_up(1)?; // lo is always index 1 in a new namespace
                let eth0 = netlink::ifindex("eth0")?;
                nl.inside.no_ipv6_addrgen(eth0)?;
                nl.inside.add_addr(eth0, ip, 16)?;
                nl.inside.link_up(eth0)?;
                nl.inside.add_default_route(gw)?;
                Ok(())
            })
        })
        .await
        .map_err(|e| BackendError::Other(format!("network setup task: {e}")))?
        .map_err(|e| BackendError::Other(format!("network setup for runtime {id}: {e}")))
        .inspect_err(|_| {
            // The veth may exist even though the namespace pin was removed.
            let _ = netlink::Netlink::open().and_then(|mut n| n.del_link(&self.veth_name(id)));
        })?;
        debug!(%id, %ip, "network attached");
        Ok(())
    }

    /// Removes the namespace and veth pair; missing pieces are fine.
    pub async fn detach(&self, id: Uuid) {
        let veth = self.veth_name(id);
        let ns = self.netns_path(id);
        let r = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            // Deleting the namespace frees the veth too, but asynchronously:
            // delete it explicitly so nothing is left when this returns.
            if Path::new("/sys/class/net").join(&veth).exists() {
                match netlink::Netlink::open()?.del_link(&veth) {
                    Err(e) if e.raw_os_error() != Some(libc::ENODEV) => return Err(e),
                    _ => {}
                }
            }
            netlink::remove_netns(&ns);
            Ok(())
        })
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(%id, "remove network: {e}"),
            Err(e) => warn!(%id, "remove network task: {e}"),
        }
    }
}

fn disable_ipv6(ifname: &str) {
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
        "1",
    );
}

async fn ensure_chain(table: &str, chain: &str, parent: &str) -> Result<()> {
    // -N fails when the chain exists; then flush it so rules are not doubled.
    if run("iptables", &["-w", "-t", table, "-N", chain], None)
        .await
        .is_err()
    {
        run("iptables", &["-w", "-t", table, "-F", chain], None).await?;
    }
    if run(
        "iptables",
        &["-w", "-t", table, "-C", parent, "-j", chain],
        None,
    )
    .await
    .is_err()
    {
        run(
            "iptables",
            &["-w", "-t", table, "-I", parent, "1", "-j", chain],
            None,
        )
        .await
        .map_err(|e| BackendError::Other(format!("install {chain}: {e}")))?;
    }
    Ok(())
}

/// Whether any interface holds an address in `10.<octet>.0.0/16` (used to pick
/// a free subnet when none is configured).
pub fn subnet_taken(octet: u8) -> bool {
    let prefix = format!("10.{octet}.");
    std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).lines().any(|l| {
                l.split_whitespace()
                    .nth(3)
                    .is_some_and(|a| a.starts_with(&prefix))
            })
        })
        .unwrap_or(false)
}

/// The host's IPv4 resolvers (`/etc/resolv.conf`) in the link-local range.
fn link_local_resolvers() -> Vec<String> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .filter(|a| a.is_link_local())
        .map(|a| a.to_string())
        .collect()
}
