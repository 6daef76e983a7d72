//! Egress audits (`GET /v1/audits`): the newest [`RETAINED_PER_RUNTIME`]
//! decisions of each runtime, older ones pruned as new ones arrive, deleted
//! with the runtime. Written in batches by one task off the gateway's path
//! (`manager/egress.rs`); a row exists only while its runtime does (the
//! insert reads the runtime's tenant from `runtimes`, so a late write for a
//! deleted runtime inserts nothing). docs/api.md documents the bound.

use std::str::FromStr;

use runta_api::{Audit, AuditCategory, AuditPayload, EgressAuditKind, EgressAuditPayload};
use rusqlite::{params, Connection};
use uuid::Uuid;

use super::{Result, Store};

/// How many decisions each runtime keeps (a few hundred bytes each).
pub const RETAINED_PER_RUNTIME: usize = 5000;

/// One decision as the gateway made it, before it has a row id.
#[derive(Debug, Clone)]
pub struct NewAudit {
    pub runtime_id: Uuid,
    pub observed_unix_ms: i64,
    pub payload: EgressAuditPayload,
}

/// Which runtimes a listing covers.
pub enum AuditScope<'a> {
    Runtime(Uuid),
    Tenant(&'a str),
}

/// The table (idempotent; called last in `Store::open`). Rows of runtimes
/// that are gone (a daemon killed between the two deletes) are dropped here.
pub(super) fn migrate(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS audits (
             seq               INTEGER PRIMARY KEY AUTOINCREMENT,
             runtime_id        TEXT NOT NULL,
             tenant            TEXT NOT NULL,
             observed_unix_ms  INTEGER NOT NULL,
             kind              TEXT NOT NULL,
             payload           TEXT NOT NULL
         );
         CREATE INDEX IF NOT EXISTS audits_runtime ON audits(runtime_id, seq);
         CREATE INDEX IF NOT EXISTS audits_tenant ON audits(tenant, seq);
         DELETE FROM audits WHERE runtime_id NOT IN (SELECT id FROM runtimes);",
    )
}

fn kind_name(k: EgressAuditKind) -> &'static str {
    match k {
        EgressAuditKind::TcpConnection => "tcp_connection",
        EgressAuditKind::HttpRequest => "http_request",
        EgressAuditKind::IcmpDrop => "icmp_drop",
        EgressAuditKind::DnsQuery => "dns_query",
    }
}

impl Store {
    /// Writes a batch in one transaction and prunes each runtime it touched
    /// to its newest [`RETAINED_PER_RUNTIME`]. Returns the rows written.
    pub fn insert_audits(&self, batch: &[NewAudit]) -> Result<usize> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut n = 0;
            let mut touched: Vec<Uuid> = Vec::new();
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO audits(runtime_id, tenant, observed_unix_ms, kind, payload) \
                     SELECT id, tenant, ?2, ?3, ?4 FROM runtimes WHERE id = ?1",
                )?;
                for a in batch {
                    let payload = serde_json::to_string(&a.payload)
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                    n += ins.execute(params![
                        a.runtime_id.to_string(),
                        a.observed_unix_ms,
                        kind_name(a.payload.kind),
                        payload
                    ])?;
                    if !touched.contains(&a.runtime_id) {
                        touched.push(a.runtime_id);
                    }
                }
                let mut prune = tx.prepare_cached(
                    "DELETE FROM audits WHERE runtime_id = ?1 AND seq < \
                     (SELECT seq FROM audits WHERE runtime_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
                )?;
                for id in touched {
                    prune.execute(params![id.to_string(), (RETAINED_PER_RUNTIME - 1) as i64])?;
                }
            }
            tx.commit()?;
            Ok(n)
        })
    }

    /// Newest first: at most `limit` (plus whether there are more), older
    /// than row `before`. `kind` None = every kind but `dns_query` (the
    /// 0.1.1 client cannot parse it, so it is listed only when asked for).
    pub fn list_audits(
        &self,
        scope: AuditScope<'_>,
        kind: Option<EgressAuditKind>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<Audit>, bool)> {
        let (col, key) = match scope {
            AuditScope::Runtime(id) => ("runtime_id", id.to_string()),
            AuditScope::Tenant(t) => ("tenant", t.to_string()),
        };
        let (kind_op, kind_val) = match kind {
            Some(k) => ("=", kind_name(k)),
            None => ("<>", "dns_query"),
        };
        let sql = format!(
            "SELECT seq, runtime_id, observed_unix_ms, payload FROM audits \
             WHERE {col} = ?1 AND kind {kind_op} ?2 AND seq < ?3 ORDER BY seq DESC LIMIT ?4"
        );
        let rows = self.with(|c| {
            let mut st = c.prepare_cached(&sql)?;
            let rows = st
                .query_map(
                    params![
                        key,
                        kind_val,
                        before.unwrap_or(i64::MAX),
                        (limit + 1) as i64
                    ],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, String>(3)?,
                        ))
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        let more = rows.len() > limit;
        let list = rows
            .into_iter()
            .take(limit)
            .filter_map(|(seq, rt, ms, payload)| {
                Some(Audit {
                    id: audit_id(seq),
                    category: AuditCategory::Egress,
                    observed_unix_ms: ms,
                    runtime_id: Uuid::from_str(&rt).ok()?,
                    payload: AuditPayload {
                        egress: serde_json::from_str(&payload).ok()?,
                    },
                })
            })
            .collect();
        Ok((list, more))
    }

    pub fn delete_audits(&self, runtime_id: Uuid) -> Result<()> {
        self.with(|c| {
            c.prepare_cached("DELETE FROM audits WHERE runtime_id = ?1")?
                .execute([runtime_id.to_string()])
                .map(|_| ())
        })
    }
}

/// The public id of row `seq` (`eg-000000000042`); ids only grow, across
/// restarts too, so one is a stable cursor.
pub fn audit_id(seq: i64) -> String {
    format!("eg-{seq:012}")
}

/// The row behind a public id (or cursor).
pub fn audit_seq(id: &str) -> Option<i64> {
    id.strip_prefix("eg-")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use runta_api::{EgressAction, EgressIcmpDropAudit};

    fn icmp(n: u64) -> EgressAuditPayload {
        EgressAuditPayload {
            kind: EgressAuditKind::IcmpDrop,
            tcp_connection: None,
            http_request: None,
            icmp_drop: Some(EgressIcmpDropAudit {
                src_ip: "10.1.0.2".into(),
                packets: n,
                bytes: n * 84,
                action: EgressAction::Deny,
                outcome: "dropped".into(),
                reason: "test".into(),
            }),
            dns_query: None,
        }
    }

    /// Written rows read back newest first, in pages; a runtime keeps only
    /// its newest RETAINED_PER_RUNTIME; rows of unknown or deleted runtimes
    /// are never kept; they survive reopening the file.
    #[test]
    fn audits_are_bounded_paged_and_go_with_the_runtime() {
        let dir = std::env::temp_dir().join(format!("runta-store-audits-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("runta.db");
        let s = Store::open(&path).unwrap();
        let id = Uuid::new_v4();
        s.with(|c| {
            c.execute(
                "INSERT INTO runtimes(id, tenant, name, status, desired_status, image, vcpus, \
                 memory_mib, memory_limit_mib, env, labels, publish, ip, created_at, updated_at, \
                 revision) VALUES (?1, 't', 'aud', 'running', 'running', 'base', 1, 64, 64, \
                 '{}', '{}', '[]', '10.1.0.2', '', '', 1)",
                [id.to_string()],
            )
        })
        .unwrap();
        let batch: Vec<NewAudit> = (0..(RETAINED_PER_RUNTIME as u64 + 10))
            .map(|i| NewAudit {
                runtime_id: id,
                observed_unix_ms: 1 + i as i64,
                payload: icmp(i),
            })
            .collect();
        assert_eq!(s.insert_audits(&batch).unwrap(), batch.len());
        let stranger = NewAudit {
            runtime_id: Uuid::new_v4(),
            observed_unix_ms: 1,
            payload: icmp(1),
        };
        assert_eq!(s.insert_audits(&[stranger]).unwrap(), 0);
        drop(s);
        let s = Store::open(&path).unwrap();
        let (p1, more) = s
            .list_audits(AuditScope::Runtime(id), None, None, 3)
            .unwrap();
        assert!(more);
        let packets = |a: &Audit| a.payload.egress.icmp_drop.as_ref().unwrap().packets;
        assert_eq!(packets(&p1[0]), RETAINED_PER_RUNTIME as u64 + 9);
        let (p2, _) = s
            .list_audits(
                AuditScope::Tenant("t"),
                Some(EgressAuditKind::IcmpDrop),
                audit_seq(&p1[2].id),
                RETAINED_PER_RUNTIME * 2,
            )
            .unwrap();
        assert_eq!(p2.len(), RETAINED_PER_RUNTIME - 3);
        assert_eq!(packets(&p2[0]), RETAINED_PER_RUNTIME as u64 + 6);
        let (dns, _) = s
            .list_audits(
                AuditScope::Runtime(id),
                Some(EgressAuditKind::DnsQuery),
                None,
                10,
            )
            .unwrap();
        assert!(dns.is_empty());
        s.delete_audits(id).unwrap();
        s.delete_runtime(id).unwrap();
        let (gone, _) = s
            .list_audits(AuditScope::Runtime(id), None, None, 10)
            .unwrap();
        assert!(gone.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
