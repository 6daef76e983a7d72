//! The manager's side of egress control: keeping `crate::egress` in step with
//! the stored policies, writing its decisions to the store (one task, in
//! batches, off the gateway's path), and the tenant-scoped audit listing.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use runta_api::{Audit, EgressAuditKind, EgressPolicy};
use runta_backend::RuntimeSpec;

use super::{Error, Manager, Result};
use crate::store::RuntimeRecord;

impl Manager {
    pub fn egress(&self) -> &Arc<crate::egress::Egress> {
        &self.egress
    }

    /// At daemon start: binds the gateway and puts every stored policy
    /// runtime back under it (rules left by a killed daemon are rebuilt).
    pub async fn start_egress(self: &Arc<Self>, hosts_file: Option<PathBuf>) -> Result<()> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(uuid::Uuid, String)>();
        self.egress.report_to(tx);
        self.spawn_audit_writer();
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some((id, msg)) = rx.recv().await {
                let Some(m) = me.upgrade() else { return };
                if let Ok(Some(r)) = m.store.get_runtime(id) {
                    m.event(&r, runta_api::EventKind::Egress, Some(&msg));
                }
            }
        });
        let policies = self
            .store
            .list_runtimes(&Default::default())?
            .into_iter()
            .filter(|r| !r.egress.is_open())
            .filter_map(|r| {
                let ip = Ipv4Addr::from_str(&r.ip).ok()?;
                Some((r.id, r.tenant, ip, r.egress))
            })
            .collect();
        self.egress
            .start(hosts_file, policies)
            .await
            .map_err(Error::Internal)
    }

    /// The one writer of egress audits: takes what is queued (up to 512 at
    /// once), writes it in one transaction on a blocking thread, then answers
    /// the flushes that were queued behind it.
    fn spawn_audit_writer(self: &Arc<Self>) {
        use crate::egress::AuditMsg;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<AuditMsg>(crate::egress::AUDIT_QUEUE);
        self.egress.audit_to(tx);
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut msgs = Vec::with_capacity(512);
            while rx.recv_many(&mut msgs, 512).await > 0 {
                let mut batch = Vec::with_capacity(msgs.len());
                let mut flushes = Vec::new();
                for m in msgs.drain(..) {
                    match m {
                        AuditMsg::Record(runtime_id, observed_unix_ms, payload) => {
                            batch.push(crate::store::NewAudit {
                                runtime_id,
                                observed_unix_ms,
                                payload: *payload,
                            })
                        }
                        AuditMsg::Flush(done) => flushes.push(done),
                    }
                }
                if !batch.is_empty() {
                    let st = store.clone();
                    match tokio::task::spawn_blocking(move || st.insert_audits(&batch)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::warn!("egress audits not written: {e}"),
                        Err(e) => tracing::warn!("egress audit writer: {e}"),
                    }
                }
                for f in flushes {
                    let _ = f.send(());
                }
            }
        });
    }

    /// Holds `r` to `p` from now on.
    pub(super) async fn egress_set(&self, r: &RuntimeRecord, p: &EgressPolicy) -> Result<()> {
        let ip = Ipv4Addr::from_str(&r.ip)
            .map_err(|_| Error::Internal(format!("runtime {} has no IPv4 address", r.id)))?;
        self.egress
            .apply(r.id, &r.tenant, ip, p.clone())
            .await
            .map_err(Error::Unavailable)
    }

    /// A new runtime's policy is in force before its first process starts;
    /// an open one costs nothing here. The rules go in while the sandbox is
    /// being made (the rules are keyed by the runtime's address, known
    /// already): nothing in the sandbox sends a packet before the create
    /// returns, because until then it runs only the agent, which never
    /// connects out, and no exec reaches it. So a policy adds the longer of
    /// the two, not their sum, to create.
    pub(super) async fn egress_then_create(
        &self,
        r: &RuntimeRecord,
        spec: &RuntimeSpec,
    ) -> Result<()> {
        if r.egress.is_open() {
            return Ok(self.backend.create(spec).await?);
        }
        let (rules, made) = tokio::join!(self.egress_set(r, &r.egress), self.backend.create(spec));
        match (rules, made) {
            (Ok(()), Ok(())) => Ok(()),
            (rules, made) => {
                self.egress.forget(r.id).await;
                if made.is_ok() {
                    // Never left running without its rules.
                    if let Err(e) = self.backend.delete(r.id).await {
                        tracing::warn!(id = %r.id, "removing a runtime whose egress rules failed: {e}");
                    }
                }
                rules?;
                Ok(made?)
            }
        }
    }

    /// `GET /v1/audits?category=egress[&runtime=…]`: newest first, of one
    /// runtime or of all the tenant's. Another tenant's runtime is "not found".
    pub async fn egress_audits(
        &self,
        tenant: &str,
        runtime: Option<&str>,
        kind: Option<EgressAuditKind>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Audit>, bool)> {
        use crate::store::AuditScope;
        let scope = match runtime {
            Some(rt) => AuditScope::Runtime(self.find(tenant, rt)?.id),
            None => AuditScope::Tenant(tenant),
        };
        let before = match after {
            None => None,
            Some(a) => Some(crate::store::audit_seq(a).ok_or_else(|| {
                Error::invalid("after", format!("{a:?} is not a pagination.next_cursor"))
            })?),
        };
        self.egress.flush_audits().await;
        Ok(self.store.list_audits(scope, kind, before, limit)?)
    }
}
