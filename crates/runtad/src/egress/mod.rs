//! Egress control: the host-side enforcement of runtimes' `egress_policy`.
//!
//! Job: a runtime whose policy is not open can reach only what its policy
//! allows, whatever the program inside does (no proxy variables to ignore),
//! and every decision is audited. A runtime with the open default is never
//! seen here: no rules, no gateway, the plain NAT path of `runta-backend`.
//!
//! How (each part in its own file):
//! - `rules`: iptables redirects the runtime's new TCP connections to the
//!   gateway's TCP listener and its UDP port 53 to the gateway's DNS listener,
//!   and drops everything else it sends (other UDP, QUIC, ICMP).
//! - `gateway`: accepts a redirected connection, reads the original
//!   destination (`SO_ORIGINAL_DST`), peeks the TLS ClientHello's SNI or the
//!   HTTP Host header, checks the policy, resolves the name itself and
//!   connects only to that resolution, then splices bytes. A denied HTTP
//!   request gets a 403 naming the policy and host; a denied TLS connection
//!   is reset at once. Without a name, the original address is checked.
//! - `dns`: answers the runtime's DNS itself (allowed names only under an
//!   allowlist, A records only).
//! - `resolve`: the `--egress-hosts` file, the system resolver, and the
//!   addresses no policy opens (the host, runtimes, loopback, link-local and
//!   metadata; private ranges unless named explicitly).
//! - `audit`: every decision, queued for the manager's writer (the store
//!   keeps them, bounded per runtime, behind `GET /v1/audits`).
//!
//! - `ca` and `intercept`: secret injection. A runtime with secret bindings,
//!   or whose tenant has any secret (so stubs to look for), is on the
//!   gateway even under the open policy (its TCP only: no DNS or packet
//!   filtering then): a plain-HTTP request carrying a stub is refused; a TLS
//!   connection whose SNI is a bound host is
//!   terminated with a leaf of the runtime's own name-constrained CA and
//!   proxied with the binding's header or query parameter set. Every other
//!   connection is spliced as above. See docs/security.md, "Secrets".
//!
//! Boundaries: the manager calls [`Egress::apply`] / [`Egress::remove`] when a
//! policy runtime is created, changed or deleted, and [`Egress::start`] once at
//! daemon start with every stored policy (reconciling rules left by a killed
//! daemon). Nothing here touches the store or the backend.

mod audit;
mod ca;
mod dns;
mod gateway;
mod intercept;
mod relays;
mod resolve;
mod rules;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use runta_api::{EgressAuditKind, EgressPolicy};
use tracing::{info, warn};
use uuid::Uuid;

pub use audit::{AuditMsg, QUEUE as AUDIT_QUEUE};

/// One runtime under a policy.
pub(crate) struct Guarded {
    id: Uuid,
    policy: RwLock<EgressPolicy>,
    /// Open connections, so a policy change can cut what it now denies.
    conns: Mutex<HashMap<u64, gateway::Live>>,
    /// Whose runtime it is (the gateway's per-tenant connection cap).
    tenant: Arc<str>,
    /// Connections refused at a cap, not yet in an audit row.
    refusals: Mutex<gateway::Refusals>,
    /// Its DNS queries' rate limit.
    dns: Mutex<dns::Budget>,
}

impl Guarded {
    fn policy(&self) -> EgressPolicy {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

struct Running {
    rules: rules::Rules,
}

pub struct Egress {
    bridge: String,
    tag: String,
    gateway_ip: Ipv4Addr,
    /// The runtime network (`10.N.0.0/16`): other runtimes, never reachable.
    subnet: (Ipv4Addr, u8),
    by_ip: RwLock<HashMap<Ipv4Addr, Arc<Guarded>>>,
    running: OnceLock<Running>,
    /// Serialises rule changes.
    rules_lock: tokio::sync::Mutex<()>,
    resolver: OnceLock<resolve::Resolver>,
    local: resolve::LocalAddrs,
    audits: audit::Audits,
    /// Denials worth a line in the runtime's events (the manager writes them).
    events: OnceLock<tokio::sync::mpsc::UnboundedSender<(Uuid, String)>>,
    /// When each (runtime, host) last got such a line.
    evented: Mutex<HashMap<(Uuid, String), std::time::Instant>>,
    /// Per runtime: the minute now counted and its lines so far, against
    /// [`EVENTS_PER_MINUTE`].
    event_budget: Mutex<HashMap<Uuid, (std::time::Instant, u32)>>,
    /// Secret injection: the live binding sets, the per-runtime CAs, the
    /// upstream trust, and which CA certificate each runtime was given.
    hub: OnceLock<Arc<crate::secrets::SecretsHub>>,
    cas: OnceLock<ca::Cas>,
    upstream: OnceLock<Result<intercept::Upstream, String>>,
    trusted: Mutex<HashMap<Uuid, String>>,
    watchers: Mutex<HashMap<Uuid, tokio::task::AbortHandle>>,
    /// One trust-store sync at a time per runtime (see [`Egress::sync_lock`]).
    syncing: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
    resync: OnceLock<tokio::sync::mpsc::UnboundedSender<Uuid>>,
    admission: gateway::Admission,
}

/// What the runtime's trust store must be told after [`Egress::sync_bindings`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Nothing to change.
    Same,
    /// Put this CA certificate (PEM) in, replacing any earlier one.
    Set(String),
    /// Take the earlier one out (no binding left).
    Remove,
}

/// `egress` event lines a runtime gets per minute at most, whatever the
/// number of distinct hosts it is denied (a flood of random names would
/// otherwise write one line each, unbounded): the audit has every attempt.
const EVENTS_PER_MINUTE: u32 = 20;

impl Egress {
    pub fn new(network: &runta_backend::network::Network) -> Self {
        Self::with_admission(
            network,
            gateway::Admission::for_nofile(crate::serve::raise_nofile_limit()),
        )
    }

    fn with_admission(
        network: &runta_backend::network::Network,
        admission: gateway::Admission,
    ) -> Self {
        let bridge = network.bridge().to_string();
        let tag = bridge.trim_start_matches("rtb-").to_string();
        let subnet: Ipv4Addr = network
            .subnet()
            .split('/')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        Egress {
            bridge,
            tag,
            gateway_ip: network.gateway(),
            subnet: (subnet, 16),
            by_ip: RwLock::new(HashMap::new()),
            running: OnceLock::new(),
            rules_lock: tokio::sync::Mutex::new(()),
            resolver: OnceLock::new(),
            local: resolve::LocalAddrs::new(),
            audits: audit::Audits::default(),
            events: OnceLock::new(),
            evented: Mutex::new(HashMap::new()),
            event_budget: Mutex::new(HashMap::new()),
            hub: OnceLock::new(),
            cas: OnceLock::new(),
            upstream: OnceLock::new(),
            trusted: Mutex::new(HashMap::new()),
            watchers: Mutex::new(HashMap::new()),
            syncing: Mutex::new(HashMap::new()),
            resync: OnceLock::new(),
            admission,
        }
    }

    /// Secret injection: where the binding sets are published, where the
    /// per-runtime CAs are kept (`<data-dir>/egress-ca`), the extra upstream
    /// CA (`--egress-upstream-ca`), and where a runtime whose bindings
    /// changed is reported (the manager brings its trust store up to date).
    pub fn configure_secrets(
        &self,
        hub: Arc<crate::secrets::SecretsHub>,
        ca_dir: PathBuf,
        upstream_ca: Option<PathBuf>,
        resync: tokio::sync::mpsc::UnboundedSender<Uuid>,
    ) -> Result<(), String> {
        let up = intercept::Upstream::new(upstream_ca.as_deref())?;
        let _ = self.upstream.set(Ok(up));
        let _ = self.cas.set(ca::Cas::new(Some(ca_dir)));
        let _ = self.hub.set(hub);
        let _ = self.resync.set(resync);
        Ok(())
    }

    fn cas(&self) -> &ca::Cas {
        self.cas.get_or_init(|| ca::Cas::new(None))
    }

    /// Brings runtime `id` (at `ip`, under `policy`) in line with its binding
    /// set: its CA made or renewed for the bound hosts (or dropped), the
    /// runtime put on the gateway when it has bindings (TCP only under the
    /// open policy) or taken off when it has neither bindings nor a policy,
    /// and a watcher that calls the manager back at every later change. Says
    /// what the runtime's trust store needs; after writing it the caller
    /// calls [`Egress::trusted`].
    pub async fn sync_bindings(
        self: &Arc<Self>,
        id: Uuid,
        tenant: &str,
        ip: Ipv4Addr,
        policy: &EgressPolicy,
    ) -> Result<Trust, String> {
        let Some(hub) = self.hub.get() else {
            return Ok(Trust::Same);
        };
        let set = hub.current(id);
        let hosts: std::collections::BTreeSet<String> = set
            .host_patterns()
            .iter()
            .filter_map(|h| ca::subtree(&h.to_string()))
            .collect();
        let stubbed = set.stubs().next().is_some();
        drop(set);
        let had_ca = self.has_ca(id);
        let ca = self.cas().ensure(id, hosts)?;
        self.watch_bindings(id);
        if ca.is_some() || stubbed {
            // A stub may be sent anywhere, not only to bound hosts: the
            // gateway must see the runtime's plain HTTP to block it
            // (docs/security.md, "Secrets red-team pass").
            self.apply_with_bindings(id, tenant, ip, policy.clone(), true)
                .await?
        } else if policy.is_open() && (had_ca || self.guarded_id(id)) {
            self.remove(id).await
        }
        let had = self
            .trusted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned();
        Ok(match (ca, had) {
            (Some((c, _)), Some(h)) if h == c.cert_pem => Trust::Same,
            (Some((c, _)), _) => Trust::Set(c.cert_pem.clone()),
            (None, Some(_)) => Trust::Remove,
            (None, None) => Trust::Same,
        })
    }

    /// Held across one [`Egress::sync_bindings`] and the trust-store write
    /// that follows: two at once (a command's, and the background one after
    /// a binding change) would read and rewrite the bundle over each other,
    /// and the command's could fail and run without the CA.
    pub async fn sync_lock(&self, id: Uuid) -> tokio::sync::OwnedMutexGuard<()> {
        let m = self
            .syncing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .clone();
        m.lock_owned().await
    }

    /// The runtime's trust store now holds `pem` (`None`: no Runta CA).
    pub fn trusted(&self, id: Uuid, pem: Option<String>) {
        let mut m = self.trusted.lock().unwrap_or_else(|e| e.into_inner());
        match pem {
            Some(p) => m.insert(id, p),
            None => m.remove(&id),
        };
    }

    /// Whether runtime `id` has a CA now (its commands get the CA variables).
    pub fn has_ca(&self, id: Uuid) -> bool {
        self.cas().get(id).is_some()
    }

    /// Whether runtime `id` must be on the gateway for secret injection even
    /// under the open policy: it has bound hosts (a CA), or its tenant has
    /// a secret, whose stub sent over plain HTTP is blocked and audited.
    fn secret_gated(&self, id: Uuid) -> bool {
        self.has_ca(id)
            || self
                .hub
                .get()
                .is_some_and(|h| h.current(id).stubs().next().is_some())
    }

    /// Whether runtime `id` is on the gateway now.
    fn guarded_id(&self, id: Uuid) -> bool {
        self.by_ip
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|g| g.id == id)
    }

    /// Calls the manager back whenever runtime `id`'s binding set changes.
    pub fn watch_runtime(&self, id: Uuid) {
        self.watch_bindings(id)
    }

    fn watch_bindings(&self, id: Uuid) {
        let (Some(hub), Some(tx)) = (self.hub.get(), self.resync.get()) else {
            return;
        };
        let mut w = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        if w.get(&id).is_some_and(|h| !h.is_finished()) {
            return;
        }
        let mut watch = hub.watch(id);
        let tx = tx.clone();
        let t = tokio::spawn(async move {
            loop {
                watch.changed().await;
                if tx.send(id).is_err() {
                    return;
                }
            }
        });
        w.insert(id, t.abort_handle());
    }

    /// The CA and live bindings to intercept `sni` of runtime `id` with, when
    /// it is a bound host (else the connection is spliced as always).
    fn intercepts(
        &self,
        id: Uuid,
        sni: &str,
    ) -> Option<(Arc<ca::RuntimeCa>, crate::secrets::BindingWatch)> {
        let watch = self.hub.get()?.watch(id);
        if !watch.current().is_bound_host(sni) {
            return None;
        }
        let ca = self.cas().get(id)?;
        ca.covers(&crate::secrets::normalize_host(sni))
            .then_some((ca, watch))
    }

    /// A plain-HTTP request head carrying one of the tenant's stubs: refused
    /// (a stub travels only over TLS to a bound host, where it is replaced).
    fn plain_stub(&self, id: Uuid, head: &[u8]) -> Option<String> {
        let set = self.hub.get()?.current(id);
        let hit = set.contains_stub(head)?;
        Some(format!(
            "the request carries the stub of secret {:?} over plain HTTP (stubs are only replaced over TLS to a bound host)",
            hit.secret_name
        ))
    }

    /// An instance for unit tests: runtime network 10.250.0.0/16, no rules.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Self::with_admission(
            &runta_backend::network::Network::new("test", 250),
            gateway::Admission::for_nofile(4096),
        )
    }

    /// Binds the gateway, resets this instance's chains and puts every stored
    /// policy runtime back under the gateway. Without iptables on the host,
    /// nothing is bound and a policy runtime cannot be created (fail closed).
    pub async fn start(
        self: &Arc<Self>,
        hosts_file: Option<PathBuf>,
        policies: Vec<(Uuid, String, Ipv4Addr, EgressPolicy)>,
    ) -> Result<(), String> {
        let _ = self.resolver.set(resolve::Resolver::new(hosts_file));
        if !rules::Rules::available().await {
            warn!("iptables is not available: runtimes with an egress policy cannot be created");
            return Ok(());
        }
        let tcp = tokio::net::TcpListener::bind((self.gateway_ip, 0))
            .await
            .map_err(|e| format!("bind the egress gateway on {}: {e}", self.gateway_ip))?;
        let udp = tokio::net::UdpSocket::bind((self.gateway_ip, 0))
            .await
            .map_err(|e| format!("bind the egress DNS on {}: {e}", self.gateway_ip))?;
        let tcp_port = tcp.local_addr().map_err(|e| e.to_string())?.port();
        let dns_port = udp.local_addr().map_err(|e| e.to_string())?.port();
        let r = rules::Rules::new(&self.bridge, &self.tag, tcp_port, dns_port);
        if let Err(e) = r.reset().await {
            // Fail closed, not at start: the daemon serves everything else.
            warn!("egress rules cannot be set up ({e}): runtimes with an egress policy cannot be created");
            return Ok(());
        }
        let _ = self.running.set(Running { rules: r });
        gateway::spawn(self.clone(), tcp);
        dns::spawn(self.clone(), udp);
        self.spawn_drop_audits();
        let n = policies.len();
        let keep: std::collections::HashSet<Ipv4Addr> =
            policies.iter().map(|(_, _, ip, _)| *ip).collect();
        for (id, tenant, ip, p) in policies {
            if let Err(e) = self.apply(id, &tenant, ip, p).await {
                warn!(%id, "egress policy could not be restored: {e}");
            }
        }
        // Only now: until the refill, the members a killed daemon left keep
        // its policy runtimes filtered (`Rules::reset`).
        if let Some(run) = self.running.get() {
            let _l = self.rules_lock.lock().await;
            run.rules.prune(&keep).await;
        }
        info!(tcp_port, dns_port, runtimes = n, "egress gateway ready");
        Ok(())
    }

    /// Holds runtime `id` (at `ip`) to `policy` from now on: an open policy
    /// takes it off the gateway, another puts it on (rules first, so it is
    /// never briefly unfiltered) and cuts open connections the new policy
    /// denies.
    pub async fn apply(
        &self,
        id: Uuid,
        tenant: &str,
        ip: Ipv4Addr,
        policy: EgressPolicy,
    ) -> Result<(), String> {
        let bound = self.secret_gated(id);
        self.apply_with_bindings(id, tenant, ip, policy, bound)
            .await
    }

    /// [`Egress::apply`], `bound` = the runtime has secret bindings or its
    /// tenant has stubs (then it stays on the gateway under the open policy,
    /// its TCP only).
    async fn apply_with_bindings(
        &self,
        id: Uuid,
        tenant: &str,
        ip: Ipv4Addr,
        policy: EgressPolicy,
        bound: bool,
    ) -> Result<(), String> {
        if policy.is_open() && !bound {
            self.remove(id).await;
            return Ok(());
        }
        let filtered = !policy.is_open();
        let existing = self
            .by_ip
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ip)
            .cloned();
        if let Some(g) = existing.filter(|g| g.id == id) {
            let was = !g.policy().is_open();
            *g.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
            self.cut_denied(&g);
            if was != filtered {
                if let Some(run) = self.running.get() {
                    let _l = self.rules_lock.lock().await;
                    if filtered {
                        run.rules.add(ip).await?;
                    } else {
                        for (ip, proto, packets, bytes) in run.rules.unfilter(ip).await {
                            self.audits
                                .record(g.id, drop_audit(ip, &proto, packets, bytes));
                        }
                    }
                }
            }
            return Ok(());
        }
        let Some(run) = self.running.get() else {
            return Err(
                "egress policies need iptables on the host, and this daemon has none".into(),
            );
        };
        let g = Arc::new(Guarded {
            id,
            policy: RwLock::new(policy),
            conns: Mutex::new(HashMap::new()),
            tenant: tenant.into(),
            refusals: Mutex::new(Default::default()),
            dns: Mutex::default(),
        });
        self.by_ip
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ip, g);
        let _l = self.rules_lock.lock().await;
        let added = if filtered {
            run.rules.add(ip).await
        } else {
            run.rules.add_tcp(ip).await
        };
        if let Err(e) = added {
            run.rules.remove(ip).await;
            self.by_ip
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&ip);
            return Err(e);
        }
        Ok(())
    }

    /// Takes runtime `id` off the gateway (deleted, or its policy opened).
    /// The connections the gateway holds for it end too: they would go on
    /// being checked against the old policy, which a later policy (the
    /// runtime put back under the gateway) would never see or cut.
    pub async fn remove(&self, id: Uuid) {
        let ip = {
            let mut m = self.by_ip.write().unwrap_or_else(|e| e.into_inner());
            let ip = m.iter().find(|(_, g)| g.id == id).map(|(ip, _)| *ip);
            let g = ip.and_then(|ip| m.remove(&ip));
            if let Some(g) = &g {
                for live in g.conns.lock().unwrap_or_else(|e| e.into_inner()).values() {
                    live.abort.abort();
                }
            }
            drop(m);
            // The DNS queries over budget and the refused connections not
            // written yet are written now, not lost with the record.
            if let Some(g) = &g {
                gateway::flush_refusals(self, g);
                dns::flush_dropped(self, g);
            }
            ip
        };
        if let (Some(ip), Some(run)) = (ip, self.running.get()) {
            let _l = self.rules_lock.lock().await;
            // What it dropped since the last 2 s tick is audited now, not
            // lost with the members (a deleted runtime's rows go with it).
            for (ip, proto, packets, bytes) in run.rules.remove(ip).await {
                self.audits
                    .record(id, drop_audit(ip, &proto, packets, bytes));
            }
        }
    }

    /// Where denials are reported as runtime events.
    pub fn report_to(&self, tx: tokio::sync::mpsc::UnboundedSender<(Uuid, String)>) {
        let _ = self.events.set(tx);
    }

    /// A denial becomes an `egress` event of the runtime, at most once a
    /// minute per host and [`EVENTS_PER_MINUTE`] a minute per runtime: a
    /// program retrying in a loop, or asking for random names, must not
    /// flood the event log (the audit has every attempt).
    fn denied(&self, id: Uuid, host: &str, reason: &str) {
        let Some(tx) = self.events.get() else { return };
        let now = std::time::Instant::now();
        {
            let mut m = self.evented.lock().unwrap_or_else(|e| e.into_inner());
            if m.len() > 10_000 {
                m.retain(|_, t| now.duration_since(*t).as_secs() < 60);
            }
            let key = (id, host.to_string());
            if m.get(&key)
                .is_some_and(|t| now.duration_since(*t).as_secs() < 60)
            {
                return;
            }
            let mut b = self.event_budget.lock().unwrap_or_else(|e| e.into_inner());
            if b.len() > 10_000 {
                b.retain(|_, (t, _)| now.duration_since(*t).as_secs() < 60);
            }
            let (since, n) = b.entry(id).or_insert((now, 0));
            if now.duration_since(*since).as_secs() >= 60 {
                (*since, *n) = (now, 0);
            }
            if *n >= EVENTS_PER_MINUTE {
                return;
            }
            *n += 1;
            m.insert(key, now);
        }
        let _ = tx.send((id, format!("denied {host}: {reason}")));
    }

    /// A deleted runtime (its audits go with its store record): its CA and
    /// binding watcher go too.
    pub async fn forget(&self, id: Uuid) {
        self.remove(id).await;
        if let Some(h) = self
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
        {
            h.abort();
        }
        self.cas().forget(id);
        self.trusted(id, None);
        self.syncing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Where decisions go to be kept (the manager's writer).
    pub fn audit_to(&self, tx: tokio::sync::mpsc::Sender<AuditMsg>) {
        self.audits.connect(tx);
    }

    /// Returns once every decision made so far has reached the writer's
    /// store (or after 2 s).
    pub async fn flush_audits(&self) {
        self.audits.flush().await;
    }

    /// Removes the chains (clean stop, no runtime left).
    pub async fn shutdown(&self) {
        if let Some(run) = self.running.get() {
            run.rules.teardown().await;
        }
    }

    fn guarded(&self, ip: IpAddr) -> Option<Arc<Guarded>> {
        let IpAddr::V4(v4) = runta_api::canonical(ip) else {
            return None;
        };
        self.by_ip
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&v4)
            .cloned()
    }

    fn resolver(&self) -> &resolve::Resolver {
        self.resolver.get_or_init(|| resolve::Resolver::new(None))
    }

    /// Why `ip` may not be reached by runtime traffic, whatever the policy's
    /// lists say; `named` = an entry or the operator's hosts file names it.
    fn forbidden(&self, ip: IpAddr, named: bool) -> Option<String> {
        let ip = runta_api::canonical(ip);
        if let Some(why) = resolve::never(ip) {
            return Some(why.into());
        }
        if let IpAddr::V4(v4) = ip {
            let m = u32::MAX << (32 - self.subnet.1 as u32);
            if u32::from(v4) & m == u32::from(self.subnet.0) {
                return Some(
                    "an address on the runtime network (other runtimes and the host)".into(),
                );
            }
        }
        if self.local.contains(ip) {
            return Some("an address of the host itself".into());
        }
        if resolve::private(ip) && !named {
            return Some("a private address no policy entry names".into());
        }
        None
    }

    /// Every 2 s, what the packet filter dropped (ICMP, UDP other than DNS,
    /// anything else not TCP) becomes one aggregated audit per runtime and
    /// protocol: per-packet records would let a flood evict everything else.
    /// Connections refused at the gateway's caps are written here too when
    /// their aggregated row is due.
    fn spawn_drop_audits(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                let Some(eg) = me.upgrade() else { return };
                if eg
                    .by_ip
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_empty()
                {
                    continue;
                }
                let Some(run) = eg.running.get() else {
                    continue;
                };
                for (ip, proto, packets, bytes) in run.rules.drop_counts().await {
                    let Some(g) = eg.guarded(IpAddr::V4(ip)) else {
                        continue;
                    };
                    eg.audits
                        .record(g.id, drop_audit(ip, &proto, packets, bytes));
                }
                let all: Vec<Arc<Guarded>> = eg
                    .by_ip
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .cloned()
                    .collect();
                for g in all {
                    gateway::flush_refusals(&eg, &g);
                    dns::flush_dropped(&eg, &g);
                }
            }
        });
    }

    fn cut_denied(&self, g: &Guarded) {
        let p = g.policy();
        let conns = g.conns.lock().unwrap_or_else(|e| e.into_inner());
        for live in conns.values() {
            if !live.still_allowed(&p) {
                live.abort.abort();
            }
        }
    }
}

fn drop_audit(
    ip: Ipv4Addr,
    proto: &str,
    packets: u64,
    bytes: u64,
) -> runta_api::EgressAuditPayload {
    use runta_api::{
        EgressAction, EgressAuditPayload, EgressIcmpDropAudit, EgressTcpConnectionAudit,
    };
    let mut p = EgressAuditPayload {
        kind: EgressAuditKind::IcmpDrop,
        tcp_connection: None,
        http_request: None,
        icmp_drop: None,
        dns_query: None,
    };
    if proto == "icmp" {
        p.icmp_drop = Some(EgressIcmpDropAudit {
            src_ip: ip.to_string(),
            packets,
            bytes,
            action: EgressAction::Deny,
            outcome: "dropped".into(),
            reason: "ICMP is dropped for runtimes under an egress policy".into(),
        });
    } else {
        // The v1 kinds have no UDP record; a dropped datagram flow is written
        // in the connection shape with its transport named.
        p.kind = EgressAuditKind::TcpConnection;
        p.tcp_connection = Some(EgressTcpConnectionAudit {
            src_addr: ip.to_string(),
            dst_addr: "*".into(),
            host: String::new(),
            transport: proto.into(),
            plugin: "packet_filter".into(),
            bytes_up: bytes,
            bytes_down: 0,
            duration_ms: 0,
            action: EgressAction::Deny,
            outcome: "dropped".into(),
            reason: format!(
                "{packets} {proto} packet(s) dropped: only TCP and DNS leave a runtime under an egress policy"
            ),
            error: String::new(),
        });
    }
    p
}
