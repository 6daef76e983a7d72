//! Per-tenant quota overrides. A row holds only what the admin set; a NULL
//! column means "the daemon's default", so changing a default flag reaches every
//! tenant that was never given its own value.

use rusqlite::{params, OptionalExtension};

use super::{ts, Result, Store};

/// The admin's overrides for one tenant (`None`: the default applies).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuotaOverrides {
    pub runtimes: Option<u64>,
    pub vcpus: Option<f64>,
    pub memory_mib: Option<u64>,
    pub disk_gib: Option<u64>,
    pub checkpoints: Option<u64>,
    pub checkpoint_bytes: Option<u64>,
    pub pids: Option<u64>,
}

fn int(v: Option<u64>) -> Option<i64> {
    v.map(|n| n.min(i64::MAX as u64) as i64)
}

fn uint(v: Option<i64>) -> Option<u64> {
    v.map(|n| n.max(0) as u64)
}

impl Store {
    pub fn quota_overrides(&self, tenant: &str) -> Result<QuotaOverrides> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT runtimes, vcpus, memory_mib, disk_gib, checkpoints, checkpoint_bytes, pids \
                 FROM quotas WHERE tenant = ?1",
            )?
            .query_row([tenant], |r| {
                Ok(QuotaOverrides {
                    runtimes: uint(r.get(0)?),
                    vcpus: r.get(1)?,
                    memory_mib: uint(r.get(2)?),
                    disk_gib: uint(r.get(3)?),
                    checkpoints: uint(r.get(4)?),
                    checkpoint_bytes: uint(r.get(5)?),
                    pids: uint(r.get(6)?),
                })
            })
            .optional()
            .map(Option::unwrap_or_default)
        })
    }

    pub fn set_quota_overrides(&self, tenant: &str, q: &QuotaOverrides) -> Result<()> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO quotas(tenant, runtimes, vcpus, memory_mib, disk_gib, checkpoints, \
                 checkpoint_bytes, pids, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT(tenant) DO UPDATE SET runtimes = ?2, vcpus = ?3, memory_mib = ?4, \
                 disk_gib = ?5, checkpoints = ?6, checkpoint_bytes = ?7, pids = ?8, updated_at = ?9",
            )?
            .execute(params![
                tenant,
                int(q.runtimes),
                q.vcpus,
                int(q.memory_mib),
                int(q.disk_gib),
                int(q.checkpoints),
                int(q.checkpoint_bytes),
                int(q.pids),
                ts(&chrono::Utc::now()),
            ])
            .map(|_| ())
        })
    }

    /// A tenant's checkpoints: how many, and their bytes in total.
    pub fn checkpoint_usage(&self, tenant: &str) -> Result<(u64, u64)> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM checkpoints WHERE tenant = ?1",
            )?
            .query_row([tenant], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)?.max(0) as u64,
                ))
            })
        })
    }
}
