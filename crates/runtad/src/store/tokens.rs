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

#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: String,
    pub tenant: String,
    pub admin: bool,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl Store {
    // Tenants and the tokens authentication looks up.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `runta.db` made before tokens had `last_used_at` and before the quota
    /// table existed opens, keeps its tokens, and gains both.
    #[test]
    fn an_older_store_is_migrated_in_place() {
        let dir = std::env::temp_dir().join(format!("runta-store-mig-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("runta.db");
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE tenants (name TEXT PRIMARY KEY, created_at TEXT NOT NULL);
                 CREATE TABLE tokens (id TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(name),
                     hash TEXT NOT NULL UNIQUE, admin INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
                 INSERT INTO tenants VALUES ('acme', '2026-01-01T00:00:00.000000Z');
                 INSERT INTO tokens VALUES ('tok_old', 'acme', 'h1', 0, '2026-01-01T00:00:00.000000Z');",
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let t = s.token_by_hash("h1").unwrap().unwrap();
        assert_eq!((t.id.as_str(), t.last_used_at), ("tok_old", None));
        s.mark_token_used("tok_old", None).unwrap();
        let listed = s.list_tokens(Some("acme")).unwrap();
        assert!(listed[0].last_used_at.is_some());
        assert_eq!(s.quota_overrides("acme").unwrap(), Default::default());
        s.set_quota_overrides(
            "acme",
            &crate::store::QuotaOverrides {
                runtimes: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
        drop(s);
        // And opening it again changes nothing.
        let s = Store::open(&path).unwrap();
        assert_eq!(s.quota_overrides("acme").unwrap().runtimes, Some(3));
        assert!(s.rotate_token("tok_old", "tok_new", "h2").unwrap());
        assert!(s.token_by_hash("h1").unwrap().is_none());
        assert_eq!(s.token_by_hash("h2").unwrap().unwrap().tenant, "acme");
        assert!(!s.rotate_token("tok_old", "tok_x", "h3").unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
