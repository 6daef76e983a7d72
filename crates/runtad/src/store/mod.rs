//! The embedded store: one SQLite file under the data dir holding tenants,
//! hashed tokens, runtime records, events and idempotency keys.
//!
//! This file opens it (schema, then `migrations.rs`) and holds the shared
//! column helpers; each table's rows and calls live in their own file:
//! `runtimes.rs` (with idempotency keys), `checkpoints.rs`, `events.rs`,
//! `tokens.rs` (tenants and tokens), `quotas.rs`.
//!
//! Calls are short and synchronous behind one mutex; SQLite in WAL mode makes
//! each write durable before the API answers, so a killed daemon loses nothing
//! it has acknowledged.

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use rusqlite::Connection;

mod audits;
mod checkpoints;
mod events;
mod images;
mod migrations;
mod quotas;
mod runtimes;
mod secrets;
mod tokens;

pub use audits::{audit_seq, AuditScope, NewAudit, RETAINED_PER_CLASS as AUDITS_PER_CLASS};
pub use checkpoints::CheckpointRecord;
pub use events::EventRecord;
pub use images::{ImageRecord, ImageRef, RegistryLogin};
pub use quotas::QuotaOverrides;
pub use runtimes::{ListFilter, RuntimeRecord};
pub use secrets::{BindingRecord, BindingScope, BindingWrite, BindingWriteError, SecretRecord};
pub use tokens::{TokenInfoRecord, TokenRecord};

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

pub struct Store {
    conn: Mutex<Connection>,
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
        migrations::run(&conn)?;
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

    /// Cheap liveness probe of the database file (used by `/healthz`).
    pub fn ping(&self) -> Result<()> {
        self.with(|c| c.prepare_cached("SELECT 1")?.query_row([], |_| Ok(())))
    }
}
