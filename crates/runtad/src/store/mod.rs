//! The embedded store: one SQLite file under the data dir holding tenants,
//! hashed tokens, runtime records, events and idempotency keys.
//!
//! Calls are short and synchronous behind one mutex; SQLite in WAL mode makes
//! each write durable before the API answers, so a killed daemon loses nothing
//! it has acknowledged.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use runta_api::{PortSpec, RuntimeStatus};
use rusqlite::{params, Connection, OptionalExtension, Row};
use uuid::Uuid;

mod images;
mod quotas;
mod tokens;

pub use images::{ImageRecord, RegistryLogin};
pub use quotas::QuotaOverrides;
pub use tokens::TokenInfoRecord;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The disk holding the store is full.
    #[error("the data disk is full")]
    Full,
    #[error("store: corrupt row: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

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

#[derive(Debug, Clone)]
pub struct CheckpointRecord {
    pub seq: i64,
    pub id: Uuid,
    pub tenant: String,
    pub name: String,
    pub source_id: Uuid,
    pub source_name: String,
    pub image: String,
    /// This checkpoint's layer followed by the ones below it (ids, topmost first).
    pub layers: Vec<String>,
    pub size_bytes: u64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct EventRecord {
    pub id: i64,
    pub runtime_id: Uuid,
    pub kind: String,
    pub message: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: String,
    pub tenant: String,
    pub admin: bool,
    pub last_used_at: Option<DateTime<Utc>>,
}

pub struct Store {
    conn: Mutex<Connection>,
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

/// The current time at the precision the store keeps (microseconds), so a
/// record reads back exactly as it was returned when written.
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
}

fn json_col<T: serde::de::DeserializeOwned>(s: &str) -> rusqlite::Result<T> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
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

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Every statement below is prepared once and kept (about 25 of them).
        conn.set_prepared_statement_cache_capacity(64);
        conn.execute_batch(include_str!("schema.sql"))?;
        // Migrations of stores made by earlier versions.
        if conn.prepare("SELECT layers FROM runtimes LIMIT 0").is_err() {
            conn.execute_batch(
                "ALTER TABLE runtimes ADD COLUMN layers TEXT NOT NULL DEFAULT '[]'",
            )?;
        }
        if conn
            .prepare("SELECT last_used_at FROM tokens LIMIT 0")
            .is_err()
        {
            conn.execute_batch("ALTER TABLE tokens ADD COLUMN last_used_at TEXT")?;
        }
        // Runtimes made before suspend_only existed all woke on a request.
        if conn
            .prepare("SELECT idle_wakeup FROM runtimes LIMIT 0")
            .is_err()
        {
            conn.execute_batch(
                "ALTER TABLE runtimes ADD COLUMN idle_wakeup INTEGER NOT NULL DEFAULT 1",
            )?;
        }
        // Runtimes made before egress policies were all open.
        if conn
            .prepare("SELECT egress_policy FROM runtimes LIMIT 0")
            .is_err()
        {
            conn.execute_batch(
                "ALTER TABLE runtimes ADD COLUMN egress_policy TEXT NOT NULL DEFAULT ''",
            )?;
        }
        // The image store's tables (store/images.rs).
        images::migrate(&conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut c = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut c).map_err(|e| match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
                StoreError::Full
            }
            _ => StoreError::Sqlite(e),
        })
    }

    // ---- tenants and tokens ----

    pub fn ensure_tenant(&self, name: &str) -> Result<bool> {
        self.with(|c| {
            let n = c
                .prepare_cached("INSERT OR IGNORE INTO tenants(name, created_at) VALUES (?1, ?2)")?
                .execute(params![name, ts(&Utc::now())])?;
            Ok(n == 1)
        })
    }

    pub fn tenant_created_at(&self, name: &str) -> Result<Option<DateTime<Utc>>> {
        self.with(|c| {
            c.prepare_cached("SELECT created_at FROM tenants WHERE name = ?1")?
                .query_row([name], |r| parse_ts(&r.get::<_, String>(0)?))
                .optional()
        })
    }

    pub fn insert_token(&self, id: &str, tenant: &str, hash: &str, admin: bool) -> Result<()> {
        self.with(|c| {
            c.prepare_cached("INSERT INTO tokens(id, tenant, hash, admin, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(
                params![id, tenant, hash, admin as i64, ts(&Utc::now())],
            )
            .map(|_| ())
        })
    }

    pub fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        self.with(|c| {
            c.prepare_cached("SELECT id, tenant, admin, last_used_at FROM tokens WHERE hash = ?1")?
                .query_row([hash], |r| {
                    Ok(TokenRecord {
                        id: r.get(0)?,
                        tenant: r.get(1)?,
                        admin: r.get::<_, i64>(2)? != 0,
                        last_used_at: r
                            .get::<_, Option<String>>(3)?
                            .map(|s| parse_ts(&s))
                            .transpose()?,
                    })
                })
                .optional()
        })
    }

    pub fn has_admin_token(&self) -> Result<bool> {
        self.with(|c| {
            c.prepare_cached("SELECT COUNT(*) FROM tokens WHERE admin = 1")?
                .query_row([], |r| r.get::<_, i64>(0))
                .map(|n| n > 0)
        })
    }

    // ---- runtimes ----

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

    // ---- checkpoints ----

    pub fn insert_checkpoint(&self, c: &CheckpointRecord) -> Result<()> {
        let res = self.with(|conn| {
            conn.execute(
                "INSERT INTO checkpoints(id, tenant, name, source_id, source_name, image, layers, size_bytes, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    c.id.to_string(),
                    c.tenant,
                    c.name,
                    c.source_id.to_string(),
                    c.source_name,
                    c.image,
                    serde_json::to_string(&c.layers).unwrap_or_default(),
                    c.size_bytes as i64,
                    ts(&c.created_at),
                ],
            )
            .map(|_| ())
        });
        match res {
            Err(StoreError::Sqlite(e)) if is_unique_violation(&e) => Err(StoreError::Conflict(
                format!("a checkpoint named {:?}", c.name),
            )),
            other => other,
        }
    }

    fn checkpoint_row(r: &Row<'_>) -> rusqlite::Result<CheckpointRecord> {
        let uuid = |i: usize, s: String| {
            Uuid::from_str(&s).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    i,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })
        };
        Ok(CheckpointRecord {
            seq: r.get(9)?,
            id: uuid(0, r.get(0)?)?,
            tenant: r.get(1)?,
            name: r.get(2)?,
            source_id: uuid(3, r.get(3)?)?,
            source_name: r.get(4)?,
            image: r.get(5)?,
            layers: json_col(&r.get::<_, String>(6)?)?,
            size_bytes: r.get::<_, i64>(7)? as u64,
            created_at: parse_ts(&r.get::<_, String>(8)?)?,
        })
    }

    /// A tenant's checkpoint by UUID or name.
    pub fn find_checkpoint(
        &self,
        tenant: &str,
        id_or_name: &str,
    ) -> Result<Option<CheckpointRecord>> {
        const COLS: &str =
            "id, tenant, name, source_id, source_name, image, layers, size_bytes, created_at, seq";
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {COLS} FROM checkpoints WHERE tenant = ?1 AND (id = ?2 OR name = ?2)"
            ))?
            .query_row(params![tenant, id_or_name], Self::checkpoint_row)
            .optional()
        })
    }

    /// A tenant's checkpoints after cursor `after_seq`, at most `limit`.
    pub fn list_checkpoints(
        &self,
        tenant: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<CheckpointRecord>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, tenant, name, source_id, source_name, image, layers, size_bytes, created_at, seq \
                 FROM checkpoints WHERE tenant = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = st
                .query_map(params![tenant, after_seq, limit as i64], Self::checkpoint_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    pub fn delete_checkpoint(&self, id: Uuid) -> Result<()> {
        self.with(|c| {
            c.prepare_cached("DELETE FROM checkpoints WHERE id = ?1")?
                .execute([id.to_string()])
                .map(|_| ())
        })
    }

    /// Names of runtimes and checkpoints whose layers include `checkpoint`.
    pub fn checkpoint_users(&self, checkpoint: Uuid) -> Result<Vec<String>> {
        let needle = format!("%\"{checkpoint}\"%");
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT 'runtime ' || name FROM runtimes WHERE layers LIKE ?1 \
                 UNION ALL SELECT 'checkpoint ' || name FROM checkpoints WHERE layers LIKE ?1 AND id != ?2",
            )?;
            let rows = st
                .query_map(params![needle, checkpoint.to_string()], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    // ---- events ----

    pub fn add_event(
        &self,
        runtime_id: Uuid,
        tenant: &str,
        kind: &str,
        message: Option<&str>,
    ) -> Result<i64> {
        self.with(|c| {
            c.prepare_cached("INSERT INTO events(runtime_id, tenant, kind, message, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(
                params![runtime_id.to_string(), tenant, kind, message, ts(&Utc::now())],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    pub fn events(&self, runtime_id: Uuid, after: i64, limit: u32) -> Result<Vec<EventRecord>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, runtime_id, kind, message, created_at FROM events \
                 WHERE runtime_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = st
                .query_map(params![runtime_id.to_string(), after, limit as i64], |r| {
                    let rid: String = r.get(1)?;
                    Ok(EventRecord {
                        id: r.get(0)?,
                        runtime_id: Uuid::from_str(&rid).unwrap_or_default(),
                        kind: r.get(2)?,
                        message: r.get(3)?,
                        created_at: parse_ts(&r.get::<_, String>(4)?)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    pub fn delete_events(&self, runtime_id: Uuid) -> Result<()> {
        self.with(|c| {
            c.prepare_cached("DELETE FROM events WHERE runtime_id = ?1")?
                .execute([runtime_id.to_string()])
                .map(|_| ())
        })
    }

    // ---- idempotency ----

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

    /// Cheap liveness probe of the database file (used by `/healthz`).
    pub fn ping(&self) -> Result<()> {
        self.with(|c| c.prepare_cached("SELECT 1")?.query_row([], |_| Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> RuntimeRecord {
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

    /// A `runta.db` whose runtimes table predates `layers` and `idle_wakeup`
    /// opens, keeps its runtimes (they woke on a request, so they still do),
    /// and stores the new setting from then on.
    #[test]
    fn an_older_runtimes_table_gains_idle_wakeup() {
        let dir = std::env::temp_dir().join(format!("runta-store-idle-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("runta.db");
        let id = Uuid::new_v4();
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE runtimes (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
                     tenant TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
                     desired_status TEXT NOT NULL, image TEXT NOT NULL, vcpus REAL NOT NULL,
                     memory_mib INTEGER NOT NULL, memory_limit_mib INTEGER NOT NULL, disk_gib INTEGER,
                     env TEXT NOT NULL, labels TEXT NOT NULL, publish TEXT NOT NULL,
                     idle_timeout_secs INTEGER, ip TEXT NOT NULL, created_at TEXT NOT NULL,
                     updated_at TEXT NOT NULL, started_at TEXT, revision INTEGER NOT NULL, error TEXT,
                     UNIQUE (tenant, name));",
            )
            .unwrap();
            c.execute(
                "INSERT INTO runtimes(id, tenant, name, status, desired_status, image, vcpus, memory_mib,
                     memory_limit_mib, env, labels, publish, idle_timeout_secs, ip, created_at, updated_at,
                     revision) VALUES (?1, 't', 'old', 'suspended', 'running', 'base', 1, 64, 64, '{}', '{}',
                     '[]', 30, '10.1.0.9', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z', 3)",
                [id.to_string()],
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let mut r = s.get_runtime(id).unwrap().unwrap();
        assert!(r.idle_wakeup, "an old runtime keeps waking on a request");
        assert_eq!((r.idle_timeout_secs, r.layers.len()), (Some(30), 0));
        r.idle_wakeup = false;
        s.update_runtime(&mut r).unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        assert!(!s.get_runtime(id).unwrap().unwrap().idle_wakeup);
        let mut fresh = record("new");
        fresh.idle_wakeup = false;
        s.insert_runtime(&fresh).unwrap();
        assert!(!s.find_runtime("t", "new").unwrap().unwrap().idle_wakeup);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The same older table gains `egress_policy`: old runtimes read as open,
    /// and a policy written afterwards survives a reopen.
    #[test]
    fn an_older_runtimes_table_gains_egress_policy() {
        let dir = std::env::temp_dir().join(format!("runta-store-egress-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("runta.db");
        let id = Uuid::new_v4();
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE runtimes (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
                     tenant TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
                     desired_status TEXT NOT NULL, image TEXT NOT NULL, vcpus REAL NOT NULL,
                     memory_mib INTEGER NOT NULL, memory_limit_mib INTEGER NOT NULL, disk_gib INTEGER,
                     env TEXT NOT NULL, labels TEXT NOT NULL, publish TEXT NOT NULL,
                     idle_timeout_secs INTEGER, ip TEXT NOT NULL, created_at TEXT NOT NULL,
                     updated_at TEXT NOT NULL, started_at TEXT, revision INTEGER NOT NULL, error TEXT,
                     layers TEXT NOT NULL DEFAULT '[]', idle_wakeup INTEGER NOT NULL DEFAULT 1,
                     UNIQUE (tenant, name));",
            )
            .unwrap();
            c.execute(
                "INSERT INTO runtimes(id, tenant, name, status, desired_status, image, vcpus, memory_mib,
                     memory_limit_mib, env, labels, publish, ip, created_at, updated_at,
                     revision) VALUES (?1, 't', 'old', 'running', 'running', 'base', 1, 64, 64, '{}', '{}',
                     '[]', '10.1.0.9', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z', 3)",
                [id.to_string()],
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let mut r = s.get_runtime(id).unwrap().unwrap();
        assert!(r.egress.is_open());
        r.egress = serde_json::from_value(serde_json::json!(
            {"mode": "allowlist", "allowed_hosts": ["a.test", "198.18.0.0/24"]}
        ))
        .unwrap();
        s.update_runtime(&mut r).unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        let back = s.get_runtime(id).unwrap().unwrap().egress;
        assert_eq!(back.mode, runta_api::EgressMode::Allowlist);
        assert!(back.allows_name("a.test").is_ok() && back.allows_name("b.test").is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

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
