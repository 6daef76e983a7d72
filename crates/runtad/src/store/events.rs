//! A runtime's event list (`GET /v1/runtimes/{id}/events`).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rusqlite::params;
use uuid::Uuid;

use super::{parse_ts, ts, Result, Store};

#[derive(Debug, Clone)]
pub struct EventRecord {
    pub id: i64,
    pub runtime_id: Uuid,
    pub kind: String,
    pub message: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Store {
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
}
