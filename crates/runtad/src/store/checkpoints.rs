//! Checkpoint rows: a runtime's files saved as a layer, and who is built on it.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};
use uuid::Uuid;

use super::{is_unique_violation, json_col, parse_ts, ts, Result, Store, StoreError};

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

impl Store {
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
}
