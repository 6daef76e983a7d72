//! Token administration: listing (never the value or hash), revoking and
//! rotating. Authentication looks every request's token up afresh, so a revoked
//! token is refused from the next request on.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::{parse_ts, ts, Result, Store};

/// A token's public facts.
#[derive(Debug, Clone)]
pub struct TokenInfoRecord {
    pub id: String,
    pub tenant: String,
    pub admin: bool,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// `last_used_at` is written at most this often per token, so authenticating
/// stays a read on the hot path.
pub const LAST_USED_GRANULARITY_SECS: i64 = 60;

impl Store {
    /// Tokens of `tenant` (all tokens when `None`), oldest first.
    pub fn list_tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenInfoRecord>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, tenant, admin, created_at, last_used_at FROM tokens \
                 WHERE ?1 IS NULL OR tenant = ?1 ORDER BY created_at, id",
            )?;
            let rows = st
                .query_map([tenant], |r| {
                    Ok(TokenInfoRecord {
                        id: r.get(0)?,
                        tenant: r.get(1)?,
                        admin: r.get::<_, i64>(2)? != 0,
                        created_at: parse_ts(&r.get::<_, String>(3)?)?,
                        last_used_at: r
                            .get::<_, Option<String>>(4)?
                            .map(|s| parse_ts(&s))
                            .transpose()?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    pub fn get_token(&self, id: &str) -> Result<Option<TokenInfoRecord>> {
        Ok(self.list_tokens(None)?.into_iter().find(|t| t.id == id))
    }

    /// Removes a token; false if there was none with that id.
    pub fn delete_token(&self, id: &str) -> Result<bool> {
        self.with(|c| {
            c.prepare_cached("DELETE FROM tokens WHERE id = ?1")?
                .execute([id])
                .map(|n| n == 1)
        })
    }

    /// Replaces token `old_id` with a new one of the same tenant in one
    /// transaction: there is no moment with both or neither.
    pub fn rotate_token(&self, old_id: &str, new_id: &str, new_hash: &str) -> Result<bool> {
        self.with(|c| {
            let tx = c.transaction()?;
            let row: Option<(String, i64)> = tx
                .prepare_cached("SELECT tenant, admin FROM tokens WHERE id = ?1")?
                .query_row([old_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((tenant, admin)) = row else {
                return Ok(false);
            };
            tx.prepare_cached("DELETE FROM tokens WHERE id = ?1")?
                .execute([old_id])?;
            tx.prepare_cached(
                "INSERT INTO tokens(id, tenant, hash, admin, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![new_id, tenant, new_hash, admin, ts(&Utc::now())])?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// Notes that a token authenticated a request, unless that was noted less
    /// than [`LAST_USED_GRANULARITY_SECS`] ago.
    pub fn mark_token_used(&self, id: &str, last: Option<DateTime<Utc>>) -> Result<()> {
        let now = Utc::now();
        if last.is_some_and(|t| (now - t).num_seconds() < LAST_USED_GRANULARITY_SECS) {
            return Ok(());
        }
        self.with(|c| {
            c.prepare_cached("UPDATE tokens SET last_used_at = ?2 WHERE id = ?1")?
                .execute(params![id, ts(&now)])
                .map(|_| ())
        })
    }
}
