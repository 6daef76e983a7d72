//! Admission: whether a new runtime, a boot, a resize or a checkpoint fits, on
//! this machine and in its tenant's quota. Every path that adds to what a tenant
//! holds (create, apply, start, PATCH, checkpoint) asks here, under the
//! manager's admission lock, so concurrent callers cannot both take the last
//! unit.
//!
//! What counts (docs/operations.md, "Quotas and capacity"):
//! - memory: a runtime's *limit*, the most it may use, never less than its
//!   request. A runtime holds it while creating, running, paused or suspended.
//! - PIDs: every live runtime holds its process limit. The sum across all
//!   tenants stays below the host's `pid_max` (and `threads-max`) minus headroom
//!   for the host itself, so runtimes together cannot exhaust the PID space.
//! - runtimes and disk count every record a tenant keeps, shut down or not;
//!   checkpoints count by number and by bytes.
//!
//! The machine out of room gets `ResourceExhausted` (503), checked first; a
//! tenant over its quota gets `QuotaExceeded` (429). A change never fails for a dimension it does
//! not grow, so a tenant whose quota was lowered below its usage can still
//! shrink and delete.

use std::collections::HashSet;

use runta_api::{QuotaUsage, QuotaView, SetQuotaRequest, TenantQuota};
use uuid::Uuid;

use super::{Error, Manager, Result};
use crate::store::RuntimeRecord;

/// A runtime as admission sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate {
    /// The record this one takes the place of (a boot or a resize), if any.
    pub replaces: Option<Uuid>,
    pub vcpus: f64,
    pub memory_mib: u64,
    pub memory_limit_mib: u64,
    pub disk_gib: Option<u64>,
    /// Whether it will hold CPU, memory and PIDs (false for a shut-down one).
    pub live: bool,
}

/// Totals of one tenant, or of the machine (where only memory and PIDs matter).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Totals {
    runtimes: u64,
    vcpus: f64,
    memory_mib: u64,
    disk_gib: u64,
    pids: u64,
}

impl Totals {
    fn add(&mut self, c: &Candidate, pids_limit: u64) {
        self.runtimes += 1;
        self.disk_gib = self.disk_gib.saturating_add(c.disk_gib.unwrap_or(0));
        if c.live {
            self.vcpus += c.vcpus;
            self.memory_mib = self.memory_mib.saturating_add(charged_memory(c));
            self.pids = self.pids.saturating_add(pids_limit);
        }
    }
}

/// What a runtime may use, so what it is charged.
fn charged_memory(c: &Candidate) -> u64 {
    c.memory_mib.max(c.memory_limit_mib)
}

fn of_record(r: &RuntimeRecord) -> Candidate {
    Candidate {
        replaces: Some(r.id),
        vcpus: r.vcpus,
        memory_mib: r.memory_mib,
        memory_limit_mib: r.memory_limit_mib,
        disk_gib: r.disk_gib,
        live: r.status.holds_capacity(),
    }
}

fn read_proc_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// PIDs kept free for the host: an eighth of its PID space, at least 4,096.
pub fn pid_headroom(pid_space: u64) -> u64 {
    (pid_space / 8).max(4096)
}

/// PIDs that runtimes may hold in total on this host, read at every admission
/// so an operator raising `kernel.pid_max` is seen at once.
pub fn host_pid_budget() -> u64 {
    let pid_max = read_proc_u64("/proc/sys/kernel/pid_max").unwrap_or(32_768);
    let threads_max = read_proc_u64("/proc/sys/kernel/threads-max").unwrap_or(u64::MAX);
    let space = pid_max.min(threads_max);
    space.saturating_sub(pid_headroom(space))
}

/// A dimension fails only when the change grows it beyond its limit.
fn grows_past<T: PartialOrd>(before: T, after: T, limit: T) -> bool {
    after > before && after > limit
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

impl Manager {
    /// The quota in force for `tenant`: the admin's values over the defaults.
    pub fn quota(&self, tenant: &str) -> Result<TenantQuota> {
        let o = self.store.quota_overrides(tenant)?;
        let d = &self.cfg.quota_defaults;
        Ok(TenantQuota {
            runtimes: o.runtimes.unwrap_or(d.runtimes),
            vcpus: o.vcpus.unwrap_or(d.vcpus),
            memory_mib: o.memory_mib.unwrap_or(d.memory_mib),
            disk_gib: o.disk_gib.or(d.disk_gib),
            checkpoints: o.checkpoints.unwrap_or(d.checkpoints),
            checkpoint_bytes: o.checkpoint_bytes.unwrap_or(d.checkpoint_bytes),
            pids: o.pids.unwrap_or(d.pids),
        })
    }

    pub fn quota_usage(&self, tenant: &str) -> Result<QuotaUsage> {
        let mut t = Totals::default();
        for r in self.store.list_runtimes(&crate::store::ListFilter {
            tenant: Some(tenant.to_string()),
            ..Default::default()
        })? {
            t.add(&of_record(&r), self.pids_limit());
        }
        let (checkpoints, checkpoint_bytes) = self.store.checkpoint_usage(tenant)?;
        Ok(QuotaUsage {
            runtimes: t.runtimes,
            vcpus: round2(t.vcpus),
            memory_mib: t.memory_mib,
            disk_gib: t.disk_gib,
            checkpoints,
            checkpoint_bytes,
            pids: t.pids,
        })
    }

    pub fn quota_view(&self, tenant: &str) -> Result<QuotaView> {
        Ok(QuotaView {
            tenant: tenant.to_string(),
            limits: self.quota(tenant)?,
            usage: self.quota_usage(tenant)?,
        })
    }

    /// Applies the admin's changes: a field left out keeps its value, `null`
    /// returns it to the default. Lowering below current usage is allowed; it
    /// stops further growth and takes nothing away.
    pub async fn set_quota(&self, tenant: &str, req: &SetQuotaRequest) -> Result<QuotaView> {
        req.validate()?;
        let _admission = self.admission.lock().await;
        let mut o = self.store.quota_overrides(tenant)?;
        fn merge<T: Copy>(slot: &mut Option<T>, v: Option<Option<T>>) {
            if let Some(v) = v {
                *slot = v;
            }
        }
        merge(&mut o.runtimes, req.runtimes);
        merge(&mut o.vcpus, req.vcpus);
        merge(&mut o.memory_mib, req.memory_mib);
        merge(&mut o.disk_gib, req.disk_gib);
        merge(&mut o.checkpoints, req.checkpoints);
        merge(&mut o.checkpoint_bytes, req.checkpoint_bytes);
        merge(&mut o.pids, req.pids);
        self.store.set_quota_overrides(tenant, &o)?;
        drop(_admission);
        self.quota_view(tenant)
    }

    fn pids_limit(&self) -> u64 {
        self.cfg.pids_limit
    }

    /// Limits that are absurd whatever else runs: a limit above the request and
    /// above this machine's memory (a request that large is a capacity matter,
    /// 503, as it always was).
    fn check_limit_sane(&self, memory_mib: u64, memory_limit_mib: u64) -> Result<()> {
        if memory_limit_mib > memory_mib && memory_limit_mib > self.cfg.host_memory_mib {
            return Err(Error::invalid(
                "resources.limits.memory_mib",
                format!(
                    "limit {memory_limit_mib} MiB is more than this machine's {} MiB of memory",
                    self.cfg.host_memory_mib
                ),
            ));
        }
        if memory_limit_mib < memory_mib {
            return Err(Error::invalid(
                "resources.limits.memory_mib",
                format!("limit {memory_limit_mib} MiB is below the request {memory_mib} MiB"),
            ));
        }
        Ok(())
    }

    /// The one check behind every admission: `cands` added to what `tenant`
    /// and the machine hold, each replacing the record it names.
    pub(super) fn admit(&self, tenant: &str, cands: &[Candidate]) -> Result<()> {
        for c in cands {
            self.check_limit_sane(c.memory_mib, c.memory_limit_mib)?;
        }
        let quota = self.quota(tenant)?;
        if quota.disk_gib.is_some()
            && cands
                .iter()
                .any(|c| c.replaces.is_none() && c.disk_gib.is_none())
        {
            return Err(Error::invalid(
                "resources.requests.disk_gib",
                "is required: your tenant has a disk quota, so every runtime needs a disk size",
            ));
        }
        let pids_limit = self.pids_limit();
        let replaced: HashSet<Uuid> = cands.iter().filter_map(|c| c.replaces).collect();
        let all = self.store.list_runtimes(&Default::default())?;
        let (mut t0, mut t1, mut h0, mut h1) = Default::default();
        for r in &all {
            let c = of_record(r);
            let (before, after): (&mut Totals, &mut Totals) = if r.tenant == tenant {
                (&mut t0, &mut t1)
            } else {
                (&mut h0, &mut h1)
            };
            before.add(&c, pids_limit);
            if !replaced.contains(&r.id) {
                after.add(&c, pids_limit);
            }
        }
        for c in cands {
            t1.add(c, pids_limit);
        }
        let (t0, t1): (Totals, Totals) = (t0, t1);
        let over = |what: &str, used: String, limit: String| {
            Err(Error::QuotaExceeded(format!(
                "tenant {tenant:?} would hold {used} {what}, over its quota of {limit}; \
                 delete something or ask the admin to raise the quota (GET /v1/quota shows both)"
            )))
        };
        // The machine first: a request beyond it is a 503 whatever the quota.
        let (mem0, mem1) = (h0.memory_mib + t0.memory_mib, h1.memory_mib + t1.memory_mib);
        let capacity = self.cfg.capacity_memory_mib;
        if grows_past(mem0, mem1, capacity) {
            return Err(Error::ResourceExhausted(format!(
                "not enough memory: {} MiB more wanted (runtimes count their limits), \
                 {} MiB of {capacity} MiB free on this machine",
                mem1 - mem0,
                capacity.saturating_sub(mem0)
            )));
        }
        let (pids0, pids1) = (h0.pids + t0.pids, h1.pids + t1.pids);
        let budget = host_pid_budget();
        if grows_past(pids0, pids1, budget) {
            return Err(Error::ResourceExhausted(format!(
                "not enough PIDs on this machine: runtimes would hold {pids1} process slots \
                 ({pids_limit} each), {budget} are available below the kernel's pid_max"
            )));
        }
        if grows_past(t0.runtimes, t1.runtimes, quota.runtimes) {
            return over(
                "runtimes",
                t1.runtimes.to_string(),
                quota.runtimes.to_string(),
            );
        }
        if grows_past(round2(t0.vcpus), round2(t1.vcpus), quota.vcpus) {
            return over(
                "vCPUs",
                round2(t1.vcpus).to_string(),
                quota.vcpus.to_string(),
            );
        }
        if grows_past(t0.memory_mib, t1.memory_mib, quota.memory_mib) {
            return over(
                "MiB of memory (runtimes count their limits)",
                t1.memory_mib.to_string(),
                quota.memory_mib.to_string(),
            );
        }
        if let Some(disk) = quota.disk_gib {
            if grows_past(t0.disk_gib, t1.disk_gib, disk) {
                return over("GiB of disk", t1.disk_gib.to_string(), disk.to_string());
            }
        }
        if grows_past(t0.pids, t1.pids, quota.pids) {
            return over(
                "PIDs (runtimes count their process limits)",
                t1.pids.to_string(),
                quota.pids.to_string(),
            );
        }
        Ok(())
    }

    /// A new runtime. The caller holds the admission lock until it is recorded.
    pub(super) fn admit_new(
        &self,
        tenant: &str,
        vcpus: f64,
        memory_mib: u64,
        memory_limit_mib: u64,
        disk_gib: Option<u64>,
    ) -> Result<()> {
        self.admit(
            tenant,
            &[Candidate {
                replaces: None,
                vcpus,
                memory_mib,
                memory_limit_mib,
                disk_gib,
                live: true,
            }],
        )
    }

    /// Booting a shut-down (or failed) runtime: it starts holding resources again.
    pub(super) fn admit_start(&self, r: &RuntimeRecord) -> Result<()> {
        self.admit(
            &r.tenant,
            &[Candidate {
                live: true,
                ..of_record(r)
            }],
        )
    }

    /// A resize of `r` to new requests and limit.
    pub(super) fn admit_resize(
        &self,
        r: &RuntimeRecord,
        vcpus: f64,
        memory_mib: u64,
        memory_limit_mib: u64,
    ) -> Result<()> {
        self.admit(
            &r.tenant,
            &[Candidate {
                vcpus,
                memory_mib,
                memory_limit_mib,
                ..of_record(r)
            }],
        )
    }

    /// A whole deployment at once, so it is applied whole or not at all: each
    /// item is (existing runtime, vCPUs, memory request, disk).
    pub fn check_apply_capacity(
        &self,
        tenant: &str,
        items: &[(Option<Uuid>, f64, u64, Option<u64>)],
    ) -> Result<()> {
        let mut cands = Vec::with_capacity(items.len());
        for (id, vcpus, memory_mib, disk_gib) in items {
            let existing = match id {
                Some(id) => self.store.get_runtime(*id)?,
                None => None,
            };
            cands.push(match existing {
                // An update keeps a limit above the request, as PATCH does.
                Some(r) => Candidate {
                    vcpus: *vcpus,
                    memory_mib: *memory_mib,
                    memory_limit_mib: (*memory_mib).max(if r.memory_limit_mib > r.memory_mib {
                        r.memory_limit_mib
                    } else {
                        *memory_mib
                    }),
                    ..of_record(&r)
                },
                None => Candidate {
                    replaces: None,
                    vcpus: *vcpus,
                    memory_mib: *memory_mib,
                    memory_limit_mib: *memory_mib,
                    disk_gib: disk_gib.or(self.cfg.default_disk_gib),
                    live: true,
                },
            });
        }
        self.admit(tenant, &cands)
    }

    /// A checkpoint of `size_bytes` more for `tenant` (0 before the copy, to
    /// refuse early when the count or the bytes are already used up).
    pub(super) fn admit_checkpoint(&self, tenant: &str, size_bytes: u64) -> Result<()> {
        let quota = self.quota(tenant)?;
        let (count, bytes) = self.store.checkpoint_usage(tenant)?;
        if count >= quota.checkpoints {
            return Err(Error::QuotaExceeded(format!(
                "tenant {tenant:?} has {count} checkpoints, its quota is {}; delete one first",
                quota.checkpoints
            )));
        }
        let after = bytes.saturating_add(size_bytes);
        if after > quota.checkpoint_bytes || (size_bytes == 0 && bytes >= quota.checkpoint_bytes) {
            return Err(Error::QuotaExceeded(format!(
                "checkpoint storage: tenant {tenant:?} would hold {after} bytes of checkpoints, \
                 its quota is {} bytes; delete checkpoints first",
                quota.checkpoint_bytes
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_growth_past_the_limit_fails() {
        assert!(grows_past(3, 4, 3));
        assert!(!grows_past(5, 4, 3), "shrinking while over quota is fine");
        assert!(!grows_past(5, 5, 3), "no change is fine");
        assert!(!grows_past(2, 3, 3), "reaching the limit is fine");
    }

    #[test]
    fn memory_is_charged_at_the_limit() {
        let c = Candidate {
            replaces: None,
            vcpus: 1.0,
            memory_mib: 16,
            memory_limit_mib: 4_194_304,
            disk_gib: None,
            live: true,
        };
        let mut t = Totals::default();
        t.add(&c, 1024);
        assert_eq!(t.memory_mib, 4_194_304);
        assert_eq!(t.pids, 1024);
        let mut off = Totals::default();
        off.add(&Candidate { live: false, ..c }, 1024);
        assert_eq!((off.runtimes, off.memory_mib, off.pids), (1, 0, 0));
    }

    #[test]
    fn pid_budget_leaves_headroom() {
        assert_eq!(pid_headroom(32_768), 4096);
        assert_eq!(pid_headroom(4_194_304), 524_288);
        let b = host_pid_budget();
        let pid_max = read_proc_u64("/proc/sys/kernel/pid_max").unwrap();
        assert!(b < pid_max);
        // The case: 32 runtimes of 1,024 PIDs do not all fit on a
        // default 32,768 pid_max.
        assert!(32 * 1024 > 32_768 - pid_headroom(32_768));
    }
}
