//! Egress audits (`GET /v1/audits`): per runtime, the newest
//! [`RETAINED_PER_CLASS`] decisions of each [`class`] (allowed and denied
//! connections, allowed and denied HTTP requests, allowed and denied DNS
//! queries, aggregated drops and refusals), older ones of the same class
//! pruned as new ones arrive, deleted with the runtime. Kept apart so a burst
//! of one class (thousands of denied DNS queries in a second, a loop of
//! allowed connections) never erases another's rows: a program cannot cover
//! its denied connection with cheap decisions of another sort. Written in
//! batches by one task off the gateway's path (`manager/egress.rs`); a row
//! exists only while its runtime does (the insert reads the runtime's tenant
//! from `runtimes`, so a late write for a deleted runtime inserts nothing).
//! docs/api.md documents the bound.

use std::str::FromStr;

use runta_api::{
    Audit, AuditCategory, AuditPayload, EgressAction, EgressAuditKind, EgressAuditPayload,
};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::{Result, Store};

/// How many decisions of each class a runtime keeps (a few hundred bytes
/// each; seven classes, so at most 7 × this rows per runtime).
pub const RETAINED_PER_CLASS: usize = 2500;

/// The retention class of a decision: its kind, allowed (or failed) apart
/// from denied; the packet filter's aggregated drops and the gateway's
/// aggregated refusals at its connection caps have one class of their own.
pub fn class(p: &EgressAuditPayload) -> &'static str {
    let denied = p.action() == EgressAction::Deny;
    match p.kind {
        EgressAuditKind::IcmpDrop => "drops",
        EgressAuditKind::TcpConnection
            if p.tcp_connection
                .as_ref()
                .is_some_and(|t| matches!(t.plugin.as_str(), "packet_filter" | "admission")) =>
        {
            "drops"
        }
        EgressAuditKind::TcpConnection if denied => "tcp_deny",
        EgressAuditKind::TcpConnection => "tcp",
        EgressAuditKind::HttpRequest if denied => "http_deny",
        EgressAuditKind::HttpRequest => "http",
        EgressAuditKind::DnsQuery if denied => "dns_deny",
        EgressAuditKind::DnsQuery => "dns",
    }
}

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
/// that are gone (a daemon killed between the two deletes) are dropped here;
/// rows from before retention classes get theirs.
pub(super) fn migrate(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS audits (
             seq               INTEGER PRIMARY KEY AUTOINCREMENT,
             runtime_id        TEXT NOT NULL,
             tenant            TEXT NOT NULL,
             observed_unix_ms  INTEGER NOT NULL,
             kind              TEXT NOT NULL,
             payload           TEXT NOT NULL,
             class             TEXT NOT NULL DEFAULT ''
         );
         CREATE INDEX IF NOT EXISTS audits_runtime ON audits(runtime_id, seq);
         CREATE INDEX IF NOT EXISTS audits_tenant ON audits(tenant, seq);
         DELETE FROM audits WHERE runtime_id NOT IN (SELECT id FROM runtimes);",
    )?;
    let has_class = c
        .prepare("SELECT 1 FROM pragma_table_info('audits') WHERE name = 'class'")?
        .query_row([], |_| Ok(()))
        .optional()?
        .is_some();
    if !has_class {
        // A table from before retention classes: its rows are classed from
        // their payload, once.
        let tx = c.unchecked_transaction()?;
        tx.execute_batch("ALTER TABLE audits ADD COLUMN class TEXT NOT NULL DEFAULT ''")?;
        let old: Vec<(i64, String)> = tx
            .prepare("SELECT seq, payload FROM audits")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        {
            let mut set = tx.prepare("UPDATE audits SET class = ?2 WHERE seq = ?1")?;
            for (seq, payload) in old {
                let cl = serde_json::from_str::<EgressAuditPayload>(&payload)
                    .map(|p| class(&p))
                    .unwrap_or("tcp");
                set.execute(params![seq, cl])?;
            }
        }
        tx.commit()?;
    }
    c.execute_batch("CREATE INDEX IF NOT EXISTS audits_class ON audits(runtime_id, class, seq);")
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
    /// Writes a batch in one transaction and prunes each (runtime, class)
    /// it touched to its newest [`RETAINED_PER_CLASS`]. Returns the rows
    /// written.
    pub fn insert_audits(&self, batch: &[NewAudit]) -> Result<usize> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut n = 0;
            let mut touched: Vec<(Uuid, &'static str)> = Vec::new();
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO audits(runtime_id, tenant, observed_unix_ms, kind, payload, class) \
                     SELECT id, tenant, ?2, ?3, ?4, ?5 FROM runtimes WHERE id = ?1",
                )?;
                for a in batch {
                    let payload = serde_json::to_string(&a.payload)
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                    let cl = class(&a.payload);
                    n += ins.execute(params![
                        a.runtime_id.to_string(),
                        a.observed_unix_ms,
                        kind_name(a.payload.kind),
                        payload,
                        cl
                    ])?;
                    if !touched.contains(&(a.runtime_id, cl)) {
                        touched.push((a.runtime_id, cl));
                    }
                }
                let mut prune = tx.prepare_cached(
                    "DELETE FROM audits WHERE runtime_id = ?1 AND class = ?2 AND seq < \
                     (SELECT seq FROM audits WHERE runtime_id = ?1 AND class = ?2 \
                      ORDER BY seq DESC LIMIT 1 OFFSET ?3)",
                )?;
                for (id, cl) in touched {
                    prune.execute(params![id.to_string(), cl, (RETAINED_PER_CLASS - 1) as i64])?;
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
    use runta_api::{EgressDnsQueryAudit, EgressIcmpDropAudit, EgressTcpConnectionAudit};

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

    fn dns(name: &str, action: EgressAction) -> EgressAuditPayload {
        EgressAuditPayload {
            kind: EgressAuditKind::DnsQuery,
            dns_query: Some(EgressDnsQueryAudit {
                src_addr: "10.1.0.2:5353".into(),
                name: name.into(),
                qtype: "A".into(),
                answers: vec![],
                action,
                outcome: "nxdomain".into(),
                reason: "test".into(),
            }),
            tcp_connection: None,
            http_request: None,
            icmp_drop: None,
        }
    }

    fn tcp(host: &str, plugin: &str, action: EgressAction) -> EgressAuditPayload {
        EgressAuditPayload {
            kind: EgressAuditKind::TcpConnection,
            tcp_connection: Some(EgressTcpConnectionAudit {
                src_addr: "10.1.0.2:40000".into(),
                dst_addr: "198.18.0.3:80".into(),
                host: host.into(),
                transport: "http".into(),
                plugin: plugin.into(),
                bytes_up: 0,
                bytes_down: 0,
                duration_ms: 0,
                action,
                outcome: "denied".into(),
                reason: "test".into(),
                error: String::new(),
            }),
            http_request: None,
            icmp_drop: None,
            dns_query: None,
        }
    }

    fn store_with_runtime() -> (Store, Uuid, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("runta-store-audits-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = Store::open(&dir.join("runta.db")).unwrap();
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
        (s, id, dir)
    }

    fn batch(id: Uuid, it: impl Iterator<Item = EgressAuditPayload>) -> Vec<NewAudit> {
        it.enumerate()
            .map(|(i, payload)| NewAudit {
                runtime_id: id,
                observed_unix_ms: 1 + i as i64,
                payload,
            })
            .collect()
    }

    /// Written rows read back newest first, in pages; a runtime keeps only
    /// the newest RETAINED_PER_CLASS of a class; rows of unknown or deleted
    /// runtimes are never kept; they survive reopening the file.
    #[test]
    fn audits_are_bounded_paged_and_go_with_the_runtime() {
        let (s, id, dir) = store_with_runtime();
        let path = dir.join("runta.db");
        let b = batch(id, (0..(RETAINED_PER_CLASS as u64 + 10)).map(icmp));
        assert_eq!(s.insert_audits(&b).unwrap(), b.len());
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
        assert_eq!(packets(&p1[0]), RETAINED_PER_CLASS as u64 + 9);
        let (p2, _) = s
            .list_audits(
                AuditScope::Tenant("t"),
                Some(EgressAuditKind::IcmpDrop),
                audit_seq(&p1[2].id),
                RETAINED_PER_CLASS * 2,
            )
            .unwrap();
        assert_eq!(p2.len(), RETAINED_PER_CLASS - 3);
        assert_eq!(packets(&p2[0]), RETAINED_PER_CLASS as u64 + 6);
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

    /// A program covering its tracks: one denied connection, then more than
    /// a class's worth of denied DNS queries, of allowed DNS queries, of
    /// allowed connections, of aggregated drops and refusals, in one batch
    /// and in many. The denied connection is still listed; each burst kept
    /// its own newest rows only.
    #[test]
    fn a_burst_of_one_class_never_erases_another() {
        let (s, id, dir) = store_with_runtime();
        s.insert_audits(&batch(
            id,
            [tcp("exfil.other.test", "http_host", EgressAction::Deny)].into_iter(),
        ))
        .unwrap();
        let over = RETAINED_PER_CLASS + 50;
        let bursts: Vec<Box<dyn Fn(usize) -> EgressAuditPayload>> = vec![
            Box::new(|i| dns(&format!("n{i}.test"), EgressAction::Deny)),
            Box::new(|i| dns(&format!("a{i}.test"), EgressAction::Allow)),
            Box::new(|i| tcp(&format!("ok{i}.test"), "http_host", EgressAction::Allow)),
            Box::new(|_| tcp("*", "admission", EgressAction::Deny)),
            Box::new(|i| icmp(i as u64)),
        ];
        for (k, burst) in bursts.iter().enumerate() {
            if k % 2 == 0 {
                s.insert_audits(&batch(id, (0..over).map(burst))).unwrap();
            } else {
                for part in (0..over).collect::<Vec<_>>().chunks(512) {
                    s.insert_audits(&batch(id, part.iter().map(|i| burst(*i))))
                        .unwrap();
                }
            }
        }
        let all = |kind| {
            s.list_audits(AuditScope::Runtime(id), Some(kind), None, 100_000)
                .unwrap()
                .0
        };
        let conns = all(EgressAuditKind::TcpConnection);
        let host = |a: &Audit| {
            a.payload
                .egress
                .tcp_connection
                .as_ref()
                .unwrap()
                .host
                .clone()
        };
        assert!(
            conns.iter().any(|a| host(a) == "exfil.other.test"),
            "the denied connection was erased"
        );
        // Allowed connections: their newest; aggregated refusals and drops
        // share a class (the ICMP burst came last).
        assert_eq!(conns.len(), 1 + RETAINED_PER_CLASS);
        assert!(!conns.iter().any(|a| host(a) == "ok0.test"));
        assert!(conns
            .iter()
            .any(|a| host(a) == format!("ok{}", over - 1) + ".test"));
        let names: Vec<String> = all(EgressAuditKind::DnsQuery)
            .iter()
            .map(|a| a.payload.egress.dns_query.as_ref().unwrap().name.clone())
            .collect();
        assert_eq!(names.len(), 2 * RETAINED_PER_CLASS);
        assert!(!names.contains(&"n49.test".to_string()) && names.contains(&"n50.test".into()));
        assert!(!names.contains(&"a49.test".to_string()) && names.contains(&"a50.test".into()));
        assert_eq!(all(EgressAuditKind::IcmpDrop).len(), RETAINED_PER_CLASS);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store written before retention classes: its rows get their class
    /// on open and are pruned per class from then on.
    #[test]
    fn rows_from_before_classes_are_classed() {
        let (s, id, dir) = store_with_runtime();
        let path = dir.join("runta.db");
        s.insert_audits(&batch(
            id,
            [
                tcp("exfil.other.test", "http_host", EgressAction::Deny),
                dns("n.test", EgressAction::Deny),
            ]
            .into_iter(),
        ))
        .unwrap();
        // Back to the old table: no class column.
        s.with(|c| {
            c.execute_batch("DROP INDEX audits_class; ALTER TABLE audits DROP COLUMN class;")
        })
        .unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        let classes: Vec<String> = s
            .with(|c| {
                c.prepare("SELECT class FROM audits ORDER BY seq")?
                    .query_map([], |r| r.get(0))?
                    .collect()
            })
            .unwrap();
        assert_eq!(classes, ["tcp_deny", "dns_deny"]);
        s.insert_audits(&batch(
            id,
            (0..RETAINED_PER_CLASS + 1).map(|i| dns(&format!("n{i}.test"), EgressAction::Deny)),
        ))
        .unwrap();
        let (conns, _) = s
            .list_audits(
                AuditScope::Runtime(id),
                Some(EgressAuditKind::TcpConnection),
                None,
                10,
            )
            .unwrap();
        assert_eq!(conns.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
