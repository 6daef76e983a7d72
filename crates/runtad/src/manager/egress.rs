//! The manager's side of egress control: keeping `crate::egress` in step with
//! the stored policies, and the tenant-scoped audit listing.

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
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some((id, msg)) = rx.recv().await {
                let Some(m) = me.upgrade() else { return };
                if let Ok(Some(r)) = m.store.get_runtime(id) {
                    m.event(&r, "egress", Some(&msg));
                }
            }
        });
        let policies = self
            .store
            .list_runtimes(&Default::default())?
            .into_iter()
            .filter(|r| !r.egress.is_open())
            .filter_map(|r| Some((r.id, Ipv4Addr::from_str(&r.ip).ok()?, r.egress)))
            .collect();
        self.egress
            .start(hosts_file, policies)
            .await
            .map_err(Error::Internal)
    }

    /// Holds `r` to `p` from now on.
    pub(super) async fn egress_set(&self, r: &RuntimeRecord, p: &EgressPolicy) -> Result<()> {
        let ip = Ipv4Addr::from_str(&r.ip)
            .map_err(|_| Error::Internal(format!("runtime {} has no IPv4 address", r.id)))?;
        self.egress
            .apply(r.id, ip, p.clone())
            .await
            .map_err(Error::Unavailable)
    }

    /// A new runtime's policy is in force before its first process starts;
    /// an open one costs nothing here.
    pub(super) async fn egress_then_create(
        &self,
        r: &RuntimeRecord,
        spec: &RuntimeSpec,
    ) -> Result<()> {
        if r.egress.is_open() {
            return Ok(self.backend.create(spec).await?);
        }
        self.egress_set(r, &r.egress).await?;
        let res = self.backend.create(spec).await;
        if res.is_err() {
            self.egress.forget(r.id).await;
        }
        Ok(res?)
    }

    /// `GET /v1/audits?category=egress[&runtime=…]`: newest first, of one
    /// runtime or of all the tenant's. Another tenant's runtime is "not found".
    pub fn egress_audits(
        &self,
        tenant: &str,
        runtime: Option<&str>,
        kind: Option<EgressAuditKind>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Audit>, bool)> {
        let ids: Vec<uuid::Uuid> = match runtime {
            Some(rt) => vec![self.find(tenant, rt)?.id],
            None => self
                .store
                .list_runtimes(&crate::store::ListFilter {
                    tenant: Some(tenant.to_string()),
                    ..Default::default()
                })?
                .iter()
                .map(|r| r.id)
                .collect(),
        };
        Ok(self.egress.audits(&ids, kind, after, limit))
    }
}
