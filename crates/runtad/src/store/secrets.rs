//! Secrets and their injection bindings. A secret's value is stored only as
//! ciphertext (`crate::secrets::crypto`); the store never sees it in clear.
//!
//! A binding references its secret and (unless it is a tenant default) its
//! runtime with `ON DELETE CASCADE`, so deleting either removes the binding
//! in the same transaction; a replace-all is one transaction too. A killed
//! daemon leaves either the old bindings or the new ones, never half.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};
use uuid::Uuid;

use super::{is_unique_violation, parse_ts, ts, Result, Store, StoreError};

/// Appended to the migrations in `Store::open`; idempotent.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS secrets (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    tenant          TEXT NOT NULL,
    name            TEXT NOT NULL,
    -- crate::secrets::crypto: version || nonce || sealed value || tag
    ciphertext      BLOB NOT NULL,
    -- the placeholder code in a runtime may hold; not secret
    stub            TEXT NOT NULL UNIQUE,
    cache_ttl_secs  INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    UNIQUE (tenant, name)
);
CREATE TABLE IF NOT EXISTS secret_bindings (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    tenant        TEXT NOT NULL,
    -- NULL: a tenant default, applied to every runtime of the tenant
    runtime_id    TEXT REFERENCES runtimes(id) ON DELETE CASCADE,
    secret_id     TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    host_pattern  TEXT NOT NULL,
    path_pattern  TEXT NOT NULL,
    target_kind   TEXT NOT NULL CHECK (target_kind IN ('header', 'param')),
    target_name   TEXT NOT NULL,
    template      TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS secret_bindings_tenant ON secret_bindings(tenant, runtime_id);
CREATE INDEX IF NOT EXISTS secret_bindings_secret ON secret_bindings(secret_id);
";

#[derive(Clone)]
pub struct SecretRecord {
    pub seq: i64,
    pub id: Uuid,
    pub tenant: String,
    pub name: String,
    pub ciphertext: Vec<u8>,
    pub stub: String,
    pub cache_ttl_secs: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRecord")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A binding as stored, with the names it shows in responses.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingRecord {
    pub seq: i64,
    pub id: Uuid,
    pub tenant: String,
    /// `None`: a tenant default.
    pub runtime_id: Option<Uuid>,
    pub secret_id: Uuid,
    pub host_pattern: String,
    pub path_pattern: String,
    /// `header` or `param`.
    pub target_kind: String,
    pub target_name: String,
    pub template: String,
    pub created_at: DateTime<Utc>,
    /// Filled by reads (joined): the secret's and the runtime's names.
    pub secret_name: String,
    pub runtime_name: Option<String>,
}

/// Which bindings a listing wants.
#[derive(Debug, Clone, Copy)]
pub enum BindingScope {
    /// A runtime's own.
    Runtime(Uuid),
    /// The tenant's defaults.
    Defaults,
    /// Every runtime-scoped binding of the tenant (not the defaults).
    AllRuntimes,
    /// Everything of the tenant.
    Everything,
}

fn uuid_col(r: &Row<'_>, i: usize) -> rusqlite::Result<Uuid> {
    let s: String = r.get(i)?;
    Uuid::from_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

const SECRET_COLS: &str =
    "seq, id, tenant, name, ciphertext, stub, cache_ttl_secs, created_at, updated_at";

fn secret_row(r: &Row<'_>) -> rusqlite::Result<SecretRecord> {
    Ok(SecretRecord {
        seq: r.get(0)?,
        id: uuid_col(r, 1)?,
        tenant: r.get(2)?,
        name: r.get(3)?,
        ciphertext: r.get(4)?,
        stub: r.get(5)?,
        cache_ttl_secs: r.get(6)?,
        created_at: parse_ts(&r.get::<_, String>(7)?)?,
        updated_at: parse_ts(&r.get::<_, String>(8)?)?,
    })
}

const BINDING_SELECT: &str =
    "SELECT b.seq, b.id, b.tenant, b.runtime_id, b.secret_id, b.host_pattern, \
     b.path_pattern, b.target_kind, b.target_name, b.template, b.created_at, s.name, r.name \
     FROM secret_bindings b JOIN secrets s ON s.id = b.secret_id \
     LEFT JOIN runtimes r ON r.id = b.runtime_id";

fn binding_row(r: &Row<'_>) -> rusqlite::Result<BindingRecord> {
    Ok(BindingRecord {
        seq: r.get(0)?,
        id: uuid_col(r, 1)?,
        tenant: r.get(2)?,
        runtime_id: r
            .get::<_, Option<String>>(3)?
            .map(|s| Uuid::from_str(&s))
            .transpose()
            .map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    3,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
        secret_id: uuid_col(r, 4)?,
        host_pattern: r.get(5)?,
        path_pattern: r.get(6)?,
        target_kind: r.get(7)?,
        target_name: r.get(8)?,
        template: r.get(9)?,
        created_at: parse_ts(&r.get::<_, String>(10)?)?,
        secret_name: r.get(11)?,
        runtime_name: r.get(12)?,
    })
}

fn insert_binding(tx: &rusqlite::Transaction<'_>, b: &BindingRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO secret_bindings(id, tenant, runtime_id, secret_id, host_pattern, path_pattern, \
         target_kind, target_name, template, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        b.id.to_string(),
        b.tenant,
        b.runtime_id.map(|r| r.to_string()),
        b.secret_id.to_string(),
        b.host_pattern,
        b.path_pattern,
        b.target_kind,
        b.target_name,
        b.template,
        ts(&b.created_at),
    ])
    .map(|_| ())
}

/// Deletes the bindings of `tenant` in `scope` with these ids; the number
/// deleted.
fn delete_bindings_in(
    tx: &rusqlite::Transaction<'_>,
    tenant: &str,
    runtime_id: Option<Uuid>,
    ids: &[Uuid],
) -> rusqlite::Result<usize> {
    let mut n = 0;
    for id in ids {
        n += match runtime_id {
            Some(rt) => tx
                .prepare_cached(
                    "DELETE FROM secret_bindings WHERE id = ?1 AND tenant = ?2 AND runtime_id = ?3",
                )?
                .execute(params![id.to_string(), tenant, rt.to_string()])?,
            None => tx
                .prepare_cached(
                    "DELETE FROM secret_bindings WHERE id = ?1 AND tenant = ?2 AND runtime_id IS NULL",
                )?
                .execute(params![id.to_string(), tenant])?,
        };
    }
    Ok(n)
}

/// What a binding write asks of the store, all in one transaction.
#[derive(Debug, Default)]
pub struct BindingWrite {
    /// Removed first; every one must exist in the write's scope.
    pub delete: Vec<Uuid>,
    /// Then inserted.
    pub insert: Vec<BindingRecord>,
}

/// Why a binding write was refused.
#[derive(Debug, thiserror::Error)]
pub enum BindingWriteError {
    #[error("binding {0} does not exist")]
    Missing(Uuid),
    #[error("the runtime or the secret was deleted meanwhile")]
    Gone,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    pub fn insert_secret(&self, s: &SecretRecord) -> Result<()> {
        let res = self.with(|c| {
            c.prepare_cached(
                "INSERT INTO secrets(id, tenant, name, ciphertext, stub, cache_ttl_secs, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                s.id.to_string(),
                s.tenant,
                s.name,
                s.ciphertext,
                s.stub,
                s.cache_ttl_secs,
                ts(&s.created_at),
                ts(&s.updated_at)
            ])
            .map(|_| ())
        });
        match res {
            Err(StoreError::Sqlite(e)) if is_unique_violation(&e) => {
                Err(StoreError::Conflict(format!("secret {:?}", s.name)))
            }
            r => r,
        }
    }

    /// Replaces a secret's value (and TTL); false when it is gone.
    pub fn update_secret(
        &self,
        id: Uuid,
        ciphertext: &[u8],
        cache_ttl_secs: i64,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        self.with(|c| {
            c.prepare_cached(
                "UPDATE secrets SET ciphertext = ?2, cache_ttl_secs = ?3, updated_at = ?4 WHERE id = ?1",
            )?
            .execute(params![id.to_string(), ciphertext, cache_ttl_secs, ts(&at)])
            .map(|n| n == 1)
        })
    }

    /// By UUID or name, within the tenant.
    pub fn find_secret(&self, tenant: &str, id_or_name: &str) -> Result<Option<SecretRecord>> {
        self.with(|c| {
            if let Ok(id) = Uuid::from_str(id_or_name) {
                return c
                    .prepare_cached(&format!(
                        "SELECT {SECRET_COLS} FROM secrets WHERE id = ?1 AND tenant = ?2"
                    ))?
                    .query_row(params![id.to_string(), tenant], secret_row)
                    .optional();
            }
            c.prepare_cached(&format!(
                "SELECT {SECRET_COLS} FROM secrets WHERE name = ?1 AND tenant = ?2"
            ))?
            .query_row(params![id_or_name, tenant], secret_row)
            .optional()
        })
    }

    /// The tenant's secrets in creation order (`None`: every tenant's).
    pub fn list_secrets(&self, tenant: Option<&str>) -> Result<Vec<SecretRecord>> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {SECRET_COLS} FROM secrets WHERE (?1 IS NULL OR tenant = ?1) ORDER BY seq"
            ))?;
            let rows = st
                .query_map(params![tenant], secret_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// One page of the tenant's secrets in creation order: those after the
    /// row with seq `after_seq` (0: from the first), at most `limit`.
    pub fn list_secrets_page(
        &self,
        tenant: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<SecretRecord>> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {SECRET_COLS} FROM secrets WHERE tenant = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
            ))?;
            let rows = st
                .query_map(params![tenant, after_seq, limit as i64], secret_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    pub fn count_secrets(&self, tenant: &str) -> Result<u64> {
        self.with(|c| {
            c.prepare_cached("SELECT COUNT(*) FROM secrets WHERE tenant = ?1")?
                .query_row([tenant], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
        })
    }

    /// Deletes a secret and (cascade) every binding of it; false when it was
    /// not there.
    pub fn delete_secret(&self, tenant: &str, id: Uuid) -> Result<bool> {
        self.with(|c| {
            c.prepare_cached("DELETE FROM secrets WHERE id = ?1 AND tenant = ?2")?
                .execute(params![id.to_string(), tenant])
                .map(|n| n == 1)
        })
    }

    pub fn list_bindings(&self, tenant: &str, scope: BindingScope) -> Result<Vec<BindingRecord>> {
        self.with(|c| {
            let (filter, rt) = match scope {
                BindingScope::Runtime(id) => ("b.runtime_id = ?2", Some(id.to_string())),
                BindingScope::Defaults => ("b.runtime_id IS NULL", None),
                BindingScope::AllRuntimes => ("b.runtime_id IS NOT NULL", None),
                BindingScope::Everything => ("1 = 1", None),
            };
            let sql = format!(
                "{BINDING_SELECT} WHERE b.tenant = ?1 AND (?2 IS NULL OR 1 = 1) AND {filter} ORDER BY b.seq"
            );
            let mut st = c.prepare_cached(&sql)?;
            let rows = st
                .query_map(params![tenant, rt], binding_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    pub fn find_binding(&self, tenant: &str, id: Uuid) -> Result<Option<BindingRecord>> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "{BINDING_SELECT} WHERE b.id = ?1 AND b.tenant = ?2"
            ))?
            .query_row(params![id.to_string(), tenant], binding_row)
            .optional()
        })
    }

    pub fn count_bindings(&self, tenant: &str) -> Result<u64> {
        self.with(|c| {
            c.prepare_cached("SELECT COUNT(*) FROM secret_bindings WHERE tenant = ?1")?
                .query_row([tenant], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
        })
    }

    /// One transaction: delete `w.delete` (each must be a binding of
    /// `tenant` in scope `runtime_id`, `None` for the defaults), then insert
    /// `w.insert`. All or nothing.
    pub fn write_bindings(
        &self,
        tenant: &str,
        runtime_id: Option<Uuid>,
        w: &BindingWrite,
    ) -> std::result::Result<(), BindingWriteError> {
        let mut missing = None;
        let res = self.with(|c| {
            let tx = c.transaction()?;
            for id in &w.delete {
                if delete_bindings_in(&tx, tenant, runtime_id, std::slice::from_ref(id))? == 0 {
                    missing = Some(*id);
                    return Ok(false);
                }
            }
            for b in &w.insert {
                insert_binding(&tx, b)?;
            }
            tx.commit()?;
            Ok(true)
        });
        match res {
            Ok(true) => Ok(()),
            Ok(false) => Err(BindingWriteError::Missing(missing.unwrap_or_default())),
            Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)))
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(BindingWriteError::Gone)
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("runta-store-secrets-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        (Store::open(&dir.join("runta.db")).unwrap(), dir)
    }

    fn secret(tenant: &str, name: &str) -> SecretRecord {
        let now = super::super::now();
        SecretRecord {
            seq: 0,
            id: Uuid::new_v4(),
            tenant: tenant.into(),
            name: name.into(),
            ciphertext: vec![1, 2, 3],
            stub: format!("runta-stub-{}", Uuid::new_v4().simple()),
            cache_ttl_secs: 0,
            created_at: now,
            updated_at: now,
        }
    }

    fn binding(tenant: &str, rt: Option<Uuid>, secret: Uuid) -> BindingRecord {
        BindingRecord {
            seq: 0,
            id: Uuid::new_v4(),
            tenant: tenant.into(),
            runtime_id: rt,
            secret_id: secret,
            host_pattern: "api.example.com".into(),
            path_pattern: "/*".into(),
            target_kind: "header".into(),
            target_name: "Authorization".into(),
            template: "Bearer ${credential}".into(),
            created_at: super::super::now(),
            secret_name: String::new(),
            runtime_name: None,
        }
    }

    #[test]
    fn secrets_are_per_tenant_and_bindings_cascade() {
        let (st, dir) = store();
        let a = secret("a", "key");
        st.insert_secret(&a).unwrap();
        assert!(matches!(
            st.insert_secret(&secret("a", "key")),
            Err(StoreError::Conflict(_))
        ));
        st.insert_secret(&secret("b", "key")).unwrap();
        assert!(st.find_secret("b", &a.id.to_string()).unwrap().is_none());
        assert_eq!(st.find_secret("a", "key").unwrap().unwrap().id, a.id);
        let d = binding("a", None, a.id);
        st.write_bindings(
            "a",
            None,
            &BindingWrite {
                delete: vec![],
                insert: vec![d.clone()],
            },
        )
        .unwrap();
        let listed = st.list_bindings("a", BindingScope::Defaults).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].secret_name, "key");
        assert!(st
            .list_bindings("b", BindingScope::Everything)
            .unwrap()
            .is_empty());
        // A binding on a runtime that does not exist is refused whole.
        let bad = binding("a", Some(Uuid::new_v4()), a.id);
        let e = st.write_bindings(
            "a",
            None,
            &BindingWrite {
                delete: vec![d.id],
                insert: vec![bad],
            },
        );
        assert!(matches!(e, Err(BindingWriteError::Gone)), "{e:?}");
        assert_eq!(
            st.list_bindings("a", BindingScope::Defaults).unwrap().len(),
            1
        );
        // Deleting someone else's binding id: missing, nothing changes.
        let e = st.write_bindings(
            "b",
            None,
            &BindingWrite {
                delete: vec![d.id],
                insert: vec![],
            },
        );
        assert!(matches!(e, Err(BindingWriteError::Missing(_))));
        // Pages: by seq, within the tenant only.
        let more: Vec<SecretRecord> = (0..3).map(|i| secret("a", &format!("p{i}"))).collect();
        for m in &more {
            st.insert_secret(m).unwrap();
        }
        let first = st.list_secrets_page("a", 0, 2).unwrap();
        assert_eq!(
            first.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["key", "p0"]
        );
        let rest = st.list_secrets_page("a", first[1].seq, 10).unwrap();
        assert_eq!(
            rest.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["p1", "p2"]
        );
        assert!(st
            .list_secrets_page("b", 0, 10)
            .unwrap()
            .iter()
            .all(|r| r.tenant == "b"));
        // The secret goes, its bindings with it.
        assert!(st.delete_secret("a", a.id).unwrap());
        assert!(st
            .list_bindings("a", BindingScope::Everything)
            .unwrap()
            .is_empty());
        assert!(!st.delete_secret("a", a.id).unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
