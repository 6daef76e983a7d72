//! Egress decisions, kept in memory: the newest [`PER_RUNTIME`] per runtime
//! (older ones fall off), dropped with the runtime and not kept across a
//! daemon restart. docs/api.md documents the bound.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use runta_api::{Audit, AuditCategory, AuditPayload, EgressAuditKind, EgressAuditPayload};
use uuid::Uuid;

pub const PER_RUNTIME: usize = 1000;

#[derive(Default)]
pub struct Audits {
    seq: AtomicU64,
    by_runtime: Mutex<HashMap<Uuid, VecDeque<(u64, Audit)>>>,
}

impl Audits {
    pub fn record(&self, runtime_id: Uuid, egress: EgressAuditPayload) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let a = Audit {
            id: format!("eg-{seq:012}"),
            category: AuditCategory::Egress,
            observed_unix_ms: chrono::Utc::now().timestamp_millis(),
            runtime_id,
            payload: AuditPayload { egress },
        };
        let mut g = self.by_runtime.lock().unwrap_or_else(|e| e.into_inner());
        let q = g.entry(runtime_id).or_default();
        if q.len() >= PER_RUNTIME {
            q.pop_front();
        }
        q.push_back((seq, a));
    }

    pub fn forget(&self, runtime_id: Uuid) {
        self.by_runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&runtime_id);
    }

    /// Newest first, at most `limit`, older than the entry `before` (an id
    /// from an earlier page). `kind` None = every kind the 0.1.1 client can
    /// parse (DNS entries only when asked for).
    pub fn list(
        &self,
        runtime_ids: &[Uuid],
        kind: Option<EgressAuditKind>,
        before: Option<u64>,
        limit: usize,
    ) -> (Vec<Audit>, bool) {
        let g = self.by_runtime.lock().unwrap_or_else(|e| e.into_inner());
        let mut hits: Vec<&(u64, Audit)> = runtime_ids
            .iter()
            .filter_map(|id| g.get(id))
            .flat_map(|q| q.iter())
            .filter(|(s, _)| before.is_none_or(|b| *s < b))
            .filter(|(_, a)| match kind {
                Some(k) => a.payload.egress.kind == k,
                None => a.payload.egress.kind != EgressAuditKind::DnsQuery,
            })
            .collect();
        hits.sort_unstable_by_key(|h| std::cmp::Reverse(h.0));
        let more = hits.len() > limit;
        (
            hits.into_iter()
                .take(limit)
                .map(|(_, a)| a.clone())
                .collect(),
            more,
        )
    }
}

/// The sequence number inside an audit id (`eg-000000000042` → 42).
pub fn seq_of(id: &str) -> Option<u64> {
    id.strip_prefix("eg-")?.parse().ok()
}
