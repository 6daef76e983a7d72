//! Runtime rows (what the user asked for and where it stands) and the
//! idempotency keys of create requests.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use runta_api::{PortSpec, RuntimeStatus};
use rusqlite::{params, OptionalExtension, Row};
use uuid::Uuid;

use super::{is_unique_violation, json_col, now, parse_ts, ts, Result, Store, StoreError};

/// A runtime as stored: what the user asked for plus where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeRecord {
    pub seq: i64,
    pub id: Uuid,
    pub tenant: String,
    pub name: String,
    pub status: RuntimeStatus,
    pub desired_status: RuntimeStatus,
    pub image: String,
    pub vcpus: f64,
    pub memory_mib: u64,
    pub memory_limit_mib: u64,
    pub disk_gib: Option<u64>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub publish: Vec<PortSpec>,
    pub idle_timeout_secs: Option<u64>,
    /// `false`: suspended for idleness, it wakes only on start/resume.
    pub idle_wakeup: bool,
    pub ip: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub revision: u64,
    pub error: Option<String>,
    /// Checkpoint layers below the runtime's own (ids, topmost first).
    pub layers: Vec<String>,
    /// Outbound policy (stored `''` when open).
    pub egress: runta_api::EgressPolicy,
}

/// Filters for `list_runtimes`.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub tenant: Option<String>,
    pub statuses: Vec<RuntimeStatus>,
    pub labels: Vec<(String, String)>,
    pub after_seq: Option<i64>,
    pub limit: Option<u32>,
}

fn status_col(s: &str) -> rusqlite::Result<RuntimeStatus> {
    RuntimeStatus::parse(s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown status {s:?}").into(),
        )
    })
}

const RUNTIME_COLS: &str = "seq, id, tenant, name, status, desired_status, image, vcpus, memory_mib, \
     memory_limit_mib, disk_gib, env, labels, publish, idle_timeout_secs, ip, created_at, updated_at, \
     started_at, revision, error, layers, idle_wakeup, egress_policy";

fn runtime_row(r: &Row<'_>) -> rusqlite::Result<RuntimeRecord> {
    let id: String = r.get(1)?;
    Ok(RuntimeRecord {
        seq: r.get(0)?,
        id: Uuid::from_str(&id).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
        })?,
        tenant: r.get(2)?,
        name: r.get(3)?,
        status: status_col(&r.get::<_, String>(4)?)?,
        desired_status: status_col(&r.get::<_, String>(5)?)?,
        image: r.get(6)?,
        vcpus: r.get(7)?,
        memory_mib: r.get::<_, i64>(8)? as u64,
        memory_limit_mib: r.get::<_, i64>(9)? as u64,
        disk_gib: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
        env: json_col(&r.get::<_, String>(11)?)?,
        labels: json_col(&r.get::<_, String>(12)?)?,
        publish: json_col(&r.get::<_, String>(13)?)?,
        idle_timeout_secs: r.get::<_, Option<i64>>(14)?.map(|v| v as u64),
        ip: r.get(15)?,
        created_at: parse_ts(&r.get::<_, String>(16)?)?,
        updated_at: parse_ts(&r.get::<_, String>(17)?)?,
        started_at: r
            .get::<_, Option<String>>(18)?
            .map(|s| parse_ts(&s))
            .transpose()?,
        revision: r.get::<_, i64>(19)? as u64,
        error: r.get(20)?,
        layers: json_col(&r.get::<_, String>(21)?)?,
        idle_wakeup: r.get::<_, i64>(22)? != 0,
        egress: egress_col(&r.get::<_, String>(23)?)?,
    })
}

fn egress_col(s: &str) -> rusqlite::Result<runta_api::EgressPolicy> {
    if s.is_empty() {
        Ok(runta_api::EgressPolicy::open())
    } else {
        json_col(s)
    }
}

fn egress_text(p: &runta_api::EgressPolicy) -> String {
    if p.is_open() && p.allowed_hosts.is_empty() {
        String::new()
    } else {
        serde_json::to_string(p).unwrap_or_default()
    }
}

impl Store {
    pub fn insert_runtime(&self, r: &RuntimeRecord) -> Result<i64> {
        let res = self.with(|c| {
            c.prepare_cached("INSERT INTO runtimes(id, tenant, name, status, desired_status, image, vcpus, memory_mib, \
                 memory_limit_mib, disk_gib, env, labels, publish, idle_timeout_secs, ip, created_at, \
                 updated_at, started_at, revision, error, layers, idle_wakeup, egress_policy) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)")?
                .execute(
                params![
                    r.id.to_string(),
                    r.tenant,
                    r.name,
                    r.status.as_str(),
                    r.desired_status.as_str(),
                    r.image,
                    r.vcpus,
                    r.memory_mib as i64,
                    r.memory_limit_mib as i64,
                    r.disk_gib.map(|v| v as i64),
                    serde_json::to_string(&r.env).unwrap_or_default(),
                    serde_json::to_string(&r.labels).unwrap_or_default(),
                    serde_json::to_string(&r.publish).unwrap_or_default(),
                    r.idle_timeout_secs.map(|v| v as i64),
                    r.ip,
                    ts(&r.created_at),
                    ts(&r.updated_at),
                    r.started_at.as_ref().map(ts),
                    r.revision as i64,
                    r.error,
                    serde_json::to_string(&r.layers).unwrap_or_else(|_| "[]".into()),
                    r.idle_wakeup as i64,
                    egress_text(&r.egress),
                ],
            )?;
            Ok(c.last_insert_rowid())
        });
        match res {
            Err(StoreError::Sqlite(e)) if is_unique_violation(&e) => Err(StoreError::Conflict(
                format!("a runtime named {:?}", r.name),
            )),
            other => other,
        }
    }

    /// Writes every mutable field and bumps the revision.
    pub fn update_runtime(&self, r: &mut RuntimeRecord) -> Result<()> {
        r.revision += 1;
        r.updated_at = now();
        self.with(|c| {
            c.prepare_cached("UPDATE runtimes SET status = ?2, desired_status = ?3, vcpus = ?4, memory_mib = ?5, \
                 memory_limit_mib = ?6, disk_gib = ?7, labels = ?8, publish = ?9, idle_timeout_secs = ?10, \
                 updated_at = ?11, started_at = ?12, revision = ?13, error = ?14, name = ?15, env = ?16, \
                 idle_wakeup = ?17, egress_policy = ?18 WHERE id = ?1")?
                .execute(
                params![
                    r.id.to_string(),
                    r.status.as_str(),
                    r.desired_status.as_str(),
                    r.vcpus,
                    r.memory_mib as i64,
                    r.memory_limit_mib as i64,
                    r.disk_gib.map(|v| v as i64),
                    serde_json::to_string(&r.labels).unwrap_or_default(),
                    serde_json::to_string(&r.publish).unwrap_or_default(),
                    r.idle_timeout_secs.map(|v| v as i64),
                    ts(&r.updated_at),
                    r.started_at.as_ref().map(ts),
                    r.revision as i64,
                    r.error,
                    r.name,
                    serde_json::to_string(&r.env).unwrap_or_default(),
                    r.idle_wakeup as i64,
                    egress_text(&r.egress),
                ],
            )
            .map(|_| ())
        })
    }

    pub fn delete_runtime(&self, id: Uuid) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.prepare_cached("DELETE FROM runtimes WHERE id = ?1")?
                .execute([id.to_string()])?;
            tx.prepare_cached("DELETE FROM idempotency WHERE runtime_id = ?1")?
                .execute([id.to_string()])?;
            tx.commit()
        })
    }

    pub fn get_runtime(&self, id: Uuid) -> Result<Option<RuntimeRecord>> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {RUNTIME_COLS} FROM runtimes WHERE id = ?1"
            ))?
            .query_row([id.to_string()], runtime_row)
            .optional()
        })
    }

    /// Looks a runtime up by UUID or name within a tenant.
    pub fn find_runtime(&self, tenant: &str, id_or_name: &str) -> Result<Option<RuntimeRecord>> {
        self.with(|c| {
            if let Ok(id) = Uuid::from_str(id_or_name) {
                if let Some(r) = c
                    .prepare_cached(&format!(
                        "SELECT {RUNTIME_COLS} FROM runtimes WHERE id = ?1 AND tenant = ?2"
                    ))?
                    .query_row(params![id.to_string(), tenant], runtime_row)
                    .optional()?
                {
                    return Ok(Some(r));
                }
            }
            c.prepare_cached(&format!(
                "SELECT {RUNTIME_COLS} FROM runtimes WHERE name = ?1 AND tenant = ?2"
            ))?
            .query_row(params![id_or_name, tenant], runtime_row)
            .optional()
        })
    }

    pub fn list_runtimes(&self, f: &ListFilter) -> Result<Vec<RuntimeRecord>> {
        let mut sql = format!("SELECT {RUNTIME_COLS} FROM runtimes WHERE 1=1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(t) = &f.tenant {
            args.push(t.clone().into());
            sql.push_str(&format!(" AND tenant = ?{}", args.len()));
        }
        if !f.statuses.is_empty() {
            let mut marks = Vec::new();
            for s in &f.statuses {
                args.push(s.as_str().to_string().into());
                marks.push(format!("?{}", args.len()));
            }
            sql.push_str(&format!(" AND status IN ({})", marks.join(",")));
        }
        if let Some(after) = f.after_seq {
            args.push(after.into());
            sql.push_str(&format!(" AND seq > ?{}", args.len()));
        }
        sql.push_str(" ORDER BY seq");
        let rows = self.with(|c| {
            let mut st = c.prepare(&sql)?;
            let rows = st
                .query_map(rusqlite::params_from_iter(args.iter()), runtime_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        // Label filters are few and small: apply them here rather than in SQL.
        let mut out: Vec<RuntimeRecord> = rows
            .into_iter()
            .filter(|r| f.labels.iter().all(|(k, v)| r.labels.get(k) == Some(v)))
            .collect();
        if let Some(limit) = f.limit {
            out.truncate(limit as usize + 1);
        }
        Ok(out)
    }

    // Idempotency keys of create requests.

    pub fn idempotent_runtime(&self, tenant: &str, key: &str) -> Result<Option<(Uuid, String)>> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT runtime_id, request_hash FROM idempotency WHERE tenant = ?1 AND key = ?2",
            )?
            .query_row(params![tenant, key], |r| {
                let id: String = r.get(0)?;
                Ok((Uuid::from_str(&id).unwrap_or_default(), r.get(1)?))
            })
            .optional()
        })
    }

    pub fn remember_idempotency(
        &self,
        tenant: &str,
        key: &str,
        id: Uuid,
        hash: &str,
    ) -> Result<()> {
        self.with(|c| {
            c.prepare_cached("INSERT OR REPLACE INTO idempotency(tenant, key, runtime_id, request_hash, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(
                params![tenant, key, id.to_string(), hash, ts(&Utc::now())],
            )
            .map(|_| ())
        })
    }
}

/// A plain record for the store's unit tests.
#[cfg(test)]
pub(super) fn test_record(name: &str) -> RuntimeRecord {
    let now = Utc::now();
    RuntimeRecord {
        seq: 0,
        id: Uuid::new_v4(),
        tenant: "t".into(),
        name: name.into(),
        status: RuntimeStatus::Creating,
        desired_status: RuntimeStatus::Running,
        image: "base".into(),
        vcpus: 1.5,
        memory_mib: 256,
        memory_limit_mib: 256,
        disk_gib: None,
        env: BTreeMap::from([("A".into(), "b".into())]),
        labels: BTreeMap::new(),
        publish: vec![],
        idle_timeout_secs: Some(5),
        ip: "10.1.0.2".into(),
        created_at: now,
        updated_at: now,
        started_at: None,
        revision: 1,
        error: None,
        layers: vec![],
        idle_wakeup: true,
        egress: runta_api::EgressPolicy::open(),
    }
}

#[cfg(test)]
mod tests {
    use super::test_record as record;
    use super::*;

    #[test]
    fn runtime_roundtrip_and_unique_names() {
        let dir = std::env::temp_dir().join(format!("runta-store-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = Store::open(&dir.join("db")).unwrap();
        let mut r = record("a");
        r.seq = s.insert_runtime(&r).unwrap();
        let got = s.find_runtime("t", "a").unwrap().unwrap();
        assert_eq!(got.id, r.id);
        assert_eq!(got.env, r.env);
        assert!(s.find_runtime("other", "a").unwrap().is_none());
        assert!(s
            .find_runtime("other", &r.id.to_string())
            .unwrap()
            .is_none());
        assert!(matches!(
            s.insert_runtime(&record("a")),
            Err(StoreError::Conflict(_))
        ));
        r.status = RuntimeStatus::Running;
        s.update_runtime(&mut r).unwrap();
        assert_eq!(s.get_runtime(r.id).unwrap().unwrap().revision, 2);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
