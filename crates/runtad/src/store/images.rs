//! Image records: what the image store (`src/images/`) has pulled or imported.
//!
//! An image is keyed by its manifest digest; names (`registry/repo:tag`, or a
//! local name such as `myapp:1`) point at one image each. A runtime pins the
//! digest in its `image` column (`name@sha256:…`), so moving a tag never
//! changes the layers under a runtime that exists. Registry logins are kept
//! here too (the password is never returned by any API).

use rusqlite::{params, Connection, OptionalExtension};

use super::{parse_ts, ts, Result, Store};
use chrono::{DateTime, Utc};

/// The tables, created at every start (a store of an older version gains
/// them). Names and logins are per tenant (docs/images.md, Tenants): a store
/// of before moves its global names to their owner (`localhost/<tenant>/…`
/// to that tenant, the rest to the admin) and its logins to the admin.
pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS images (
            digest      TEXT PRIMARY KEY,
            manifest    TEXT NOT NULL,
            config      TEXT NOT NULL,
            layers      TEXT NOT NULL,
            size        INTEGER NOT NULL,
            created_at  TEXT NOT NULL,
            pulled_at   TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS image_refs (
            tenant      TEXT NOT NULL,
            name        TEXT NOT NULL,
            digest      TEXT NOT NULL REFERENCES images(digest),
            updated_at  TEXT NOT NULL,
            shared      INTEGER NOT NULL DEFAULT 1,
            PRIMARY KEY (tenant, name)
        );
        CREATE INDEX IF NOT EXISTS image_refs_digest ON image_refs(digest);
        CREATE TABLE IF NOT EXISTS tenant_registry_logins (
            tenant      TEXT NOT NULL,
            registry    TEXT NOT NULL,
            username    TEXT NOT NULL,
            secret      TEXT NOT NULL,
            created_at  TEXT NOT NULL,
            PRIMARY KEY (tenant, registry)
        );",
    )?;
    let has = |t: &str| -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [t],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
    };
    if has("image_names")? {
        conn.execute_batch(
            "INSERT OR IGNORE INTO image_refs (tenant, name, digest, updated_at)
               SELECT CASE
                   WHEN name LIKE 'localhost/%/%' AND name NOT LIKE 'localhost/runta/%'
                     THEN substr(name, 11, instr(substr(name, 11), '/') - 1)
                   ELSE 'admin' END,
                 name, digest, updated_at FROM image_names;
             DROP TABLE image_names;",
        )?;
    }
    if has("registry_logins")? {
        conn.execute_batch(
            "INSERT OR IGNORE INTO tenant_registry_logins (tenant, registry, username, secret, created_at)
               SELECT 'admin', registry, username, secret, created_at FROM registry_logins;
             DROP TABLE registry_logins;",
        )?;
    }
    Ok(())
}

/// One image as stored. `layers` is the JSON list of
/// [`crate::images::Layer`]; `manifest` and `config` are the raw documents.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    pub digest: String,
    pub manifest: String,
    pub config: String,
    pub layers: String,
    pub size: u64,
    pub created_at: DateTime<Utc>,
    pub pulled_at: DateTime<Utc>,
}

/// A stored registry login (`secret` is the password or token), of one
/// tenant: only that tenant's pulls use it.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryLogin {
    pub tenant: String,
    pub registry: String,
    pub username: String,
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

fn image_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRecord> {
    Ok(ImageRecord {
        digest: r.get(0)?,
        manifest: r.get(1)?,
        config: r.get(2)?,
        layers: r.get(3)?,
        size: r.get::<_, i64>(4)?.max(0) as u64,
        created_at: parse_ts(&r.get::<_, String>(5)?)?,
        pulled_at: parse_ts(&r.get::<_, String>(6)?)?,
    })
}

const IMAGE_COLS: &str = "digest, manifest, config, layers, size, created_at, pulled_at";

/// The tenant whose names the operator's (admin) token makes: visible to
/// every tenant.
const OPERATOR: &str = crate::auth::ADMIN_TENANT;

/// One name of an image: whose it is, and (for the operator's) whether
/// every tenant sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRef {
    pub tenant: String,
    pub name: String,
    pub shared: bool,
}

impl ImageRef {
    /// Whether `tenant` sees this name: its own, or the operator's shared.
    pub fn seen_by(&self, tenant: &str) -> bool {
        self.tenant == tenant || (self.tenant == OPERATOR && self.shared)
    }
}

fn ref_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<ImageRef> {
    Ok(ImageRef {
        tenant: r.get(at)?,
        name: r.get(at + 1)?,
        shared: r.get::<_, i64>(at + 2)? != 0,
    })
}

fn login_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RegistryLogin> {
    Ok(RegistryLogin {
        tenant: r.get(0)?,
        registry: r.get(1)?,
        username: r.get(2)?,
        secret: r.get(3)?,
        created_at: parse_ts(&r.get::<_, String>(4)?)?,
    })
}

impl Store {
    /// Records an image and, with a `name`, points the tenant's `name` at
    /// it, in one transaction (a name never points at an image that is not
    /// recorded). `shared`: an operator's (admin) name every tenant sees;
    /// false for what the admin pulled with credentials.
    pub fn put_image(
        &self,
        img: &ImageRecord,
        tenant: &str,
        name: Option<&str>,
        shared: bool,
    ) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO images (digest, manifest, config, layers, size, created_at, pulled_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT(digest) DO UPDATE SET pulled_at = excluded.pulled_at",
                params![
                    img.digest,
                    img.manifest,
                    img.config,
                    img.layers,
                    img.size.min(i64::MAX as u64) as i64,
                    ts(&img.created_at),
                    ts(&img.pulled_at)
                ],
            )?;
            if let Some(name) = name {
                tx.execute(
                    "INSERT INTO image_refs (tenant, name, digest, updated_at, shared) VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT(tenant, name) DO UPDATE SET digest = excluded.digest, \
                     updated_at = excluded.updated_at, shared = excluded.shared",
                    params![tenant, name, img.digest, ts(&super::now()), shared],
                )?;
            }
            tx.commit()
        })
    }

    pub fn image_by_digest(&self, digest: &str) -> Result<Option<ImageRecord>> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {IMAGE_COLS} FROM images WHERE digest = ?1"
            ))?
            .query_row([digest], image_row)
            .optional()
        })
    }

    /// The digest `name` points at for `tenant`: its own name, else the
    /// operator's. `None` for `tenant`: any tenant's (the admin's view), its
    /// own first.
    pub fn image_name(&self, tenant: Option<&str>, name: &str) -> Result<Option<String>> {
        self.with(|c| match tenant {
            Some(t) => c
                .prepare_cached(
                    "SELECT digest FROM image_refs WHERE name = ?1 \
                     AND (tenant = ?2 OR (tenant = ?3 AND shared != 0)) \
                     ORDER BY tenant = ?2 DESC LIMIT 1",
                )?
                .query_row(params![name, t, OPERATOR], |r| r.get(0))
                .optional(),
            None => c
                .prepare_cached(
                    "SELECT digest FROM image_refs WHERE name = ?1 \
                     ORDER BY tenant = ?2 DESC, tenant LIMIT 1",
                )?
                .query_row(params![name, OPERATOR], |r| r.get(0))
                .optional(),
        })
    }

    /// Every image with the names pointing at it (sorted by name).
    pub fn list_images(&self) -> Result<Vec<(ImageRecord, Vec<ImageRef>)>> {
        self.with(|c| {
            let imgs: Vec<ImageRecord> = c
                .prepare_cached(&format!("SELECT {IMAGE_COLS} FROM images ORDER BY digest"))?
                .query_map([], image_row)?
                .collect::<rusqlite::Result<_>>()?;
            let mut by: std::collections::HashMap<String, Vec<ImageRef>> = Default::default();
            let rows: Vec<(String, ImageRef)> = c
                .prepare_cached(
                    "SELECT digest, tenant, name, shared FROM image_refs ORDER BY name, tenant",
                )?
                .query_map([], |r| Ok((r.get(0)?, ref_row(r, 1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (d, r) in rows {
                by.entry(d).or_default().push(r);
            }
            Ok(imgs
                .into_iter()
                .map(|i| {
                    let n = by.remove(&i.digest).unwrap_or_default();
                    (i, n)
                })
                .collect())
        })
    }

    /// The names of one image.
    pub fn image_refs(&self, digest: &str) -> Result<Vec<ImageRef>> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT tenant, name, shared FROM image_refs WHERE digest = ?1 ORDER BY name, tenant",
            )?
            .query_map([digest], |r| ref_row(r, 0))?
            .collect()
        })
    }

    /// Removes the names matching `tenant` (`None`: every tenant) and `name`
    /// (`None`: every name of `digest`). The image record stays: garbage
    /// collection takes an image no name and no runtime holds. Returns how
    /// many names went.
    pub fn delete_image_refs(
        &self,
        tenant: Option<&str>,
        name: Option<&str>,
        digest: &str,
    ) -> Result<usize> {
        self.with(|c| {
            c.prepare_cached(
                "DELETE FROM image_refs WHERE digest = ?1 AND (?2 IS NULL OR tenant = ?2) \
                 AND (?3 IS NULL OR name = ?3)",
            )?
            .execute(params![digest, tenant, name])
        })
    }

    /// Removes an image and every name pointing at it.
    pub fn delete_image(&self, digest: &str) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM image_refs WHERE digest = ?1", [digest])?;
            tx.execute("DELETE FROM images WHERE digest = ?1", [digest])?;
            tx.commit()
        })
    }

    /// Runtimes (`tenant/name`) and checkpoints (`checkpoint tenant/name`)
    /// whose image column names `image` (a name, or `…@digest` pinning it).
    pub fn image_users(&self, names: &[String], digest: &str) -> Result<Vec<String>> {
        let pinned = format!("@{digest}");
        self.with(|c| {
            let mut out = Vec::new();
            for (table, label) in [("runtimes", ""), ("checkpoints", "checkpoint ")] {
                let rows: Vec<(String, String, String)> = c
                    .prepare_cached(&format!(
                        "SELECT tenant, name, image FROM {table} ORDER BY tenant, name"
                    ))?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                for (t, n, img) in rows {
                    let uses = img == digest || names.contains(&img) || img.ends_with(&pinned);
                    if uses {
                        out.push(format!("{label}{t}/{n}"));
                    }
                }
            }
            Ok(out)
        })
    }

    pub fn put_registry_login(&self, l: &RegistryLogin) -> Result<()> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO tenant_registry_logins (tenant, registry, username, secret, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT(tenant, registry) DO UPDATE SET username = excluded.username, \
                 secret = excluded.secret, created_at = excluded.created_at",
            )?
            .execute(params![l.tenant, l.registry, l.username, l.secret, ts(&l.created_at)])
            .map(drop)
        })
    }

    /// The login of `tenant` for `registry` (never another tenant's).
    pub fn registry_login(&self, tenant: &str, registry: &str) -> Result<Option<RegistryLogin>> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT tenant, registry, username, secret, created_at FROM tenant_registry_logins \
                 WHERE tenant = ?1 AND registry = ?2",
            )?
            .query_row([tenant, registry], login_row)
            .optional()
        })
    }

    pub fn list_registry_logins(&self, tenant: &str) -> Result<Vec<RegistryLogin>> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT tenant, registry, username, secret, created_at FROM tenant_registry_logins \
                 WHERE tenant = ?1 ORDER BY registry",
            )?
            .query_map([tenant], login_row)?
            .collect()
        })
    }

    pub fn delete_registry_login(&self, tenant: &str, registry: &str) -> Result<bool> {
        self.with(|c| {
            c.prepare_cached(
                "DELETE FROM tenant_registry_logins WHERE tenant = ?1 AND registry = ?2",
            )?
            .execute([tenant, registry])
            .map(|n| n > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(d: &str) -> ImageRecord {
        ImageRecord {
            digest: d.into(),
            manifest: "{}".into(),
            config: "{}".into(),
            layers: "[]".into(),
            size: 5,
            created_at: crate::store::now(),
            pulled_at: crate::store::now(),
        }
    }

    #[test]
    fn names_are_per_tenant_and_the_operators_are_seen_by_all() {
        let dir = std::env::temp_dir().join(format!("runta-img-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = Store::open(&dir.join("t.db")).unwrap();
        s.put_image(&rec("sha256:aa"), "admin", Some("a:1"), true)
            .unwrap();
        s.put_image(&rec("sha256:aa"), "admin", Some("priv:1"), false)
            .unwrap();
        s.put_image(&rec("sha256:bb"), "t1", Some("a:1"), true)
            .unwrap();
        s.put_image(&rec("sha256:bb"), "t1", Some("mine:1"), true)
            .unwrap();
        assert_eq!(s.image_name(Some("t2"), "priv:1").unwrap(), None);
        assert_eq!(
            s.image_name(Some("t1"), "a:1").unwrap().as_deref(),
            Some("sha256:bb")
        );
        assert_eq!(
            s.image_name(Some("t2"), "a:1").unwrap().as_deref(),
            Some("sha256:aa")
        );
        assert_eq!(s.image_name(Some("t2"), "mine:1").unwrap(), None);
        assert_eq!(
            s.image_name(None, "mine:1").unwrap().as_deref(),
            Some("sha256:bb")
        );
        assert_eq!(
            s.delete_image_refs(Some("t2"), Some("mine:1"), "sha256:bb")
                .unwrap(),
            0
        );
        assert_eq!(
            s.delete_image_refs(Some("t1"), None, "sha256:bb").unwrap(),
            2
        );
        assert!(s.image_by_digest("sha256:bb").unwrap().is_some());
        s.delete_image("sha256:aa").unwrap();
        assert!(s.image_by_digest("sha256:aa").unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_store_of_before_moves_names_to_their_owner_and_logins_to_the_admin() {
        let dir = std::env::temp_dir().join(format!("runta-img-mig-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("t.db");
        {
            let c = Connection::open(&db).unwrap();
            c.execute_batch(
                "CREATE TABLE images (digest TEXT PRIMARY KEY, manifest TEXT NOT NULL, config TEXT NOT NULL,
                   layers TEXT NOT NULL, size INTEGER NOT NULL, created_at TEXT NOT NULL, pulled_at TEXT NOT NULL);
                 CREATE TABLE image_names (name TEXT PRIMARY KEY, digest TEXT NOT NULL, updated_at TEXT NOT NULL);
                 CREATE TABLE registry_logins (registry TEXT PRIMARY KEY, username TEXT NOT NULL,
                   secret TEXT NOT NULL, created_at TEXT NOT NULL);
                 INSERT INTO images VALUES ('sha256:aa', '{}', '{}', '[]', 1, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');
                 INSERT INTO image_names VALUES ('localhost/acme/app:1', 'sha256:aa', '2026-01-01T00:00:00Z');
                 INSERT INTO image_names VALUES ('localhost/runta/base:latest', 'sha256:aa', '2026-01-01T00:00:00Z');
                 INSERT INTO image_names VALUES ('python:3.12', 'sha256:aa', '2026-01-01T00:00:00Z');
                 INSERT INTO registry_logins VALUES ('r:5000', 'u', 'pw', '2026-01-01T00:00:00Z');",
            )
            .unwrap();
        }
        let s = Store::open(&db).unwrap();
        let refs = s.image_refs("sha256:aa").unwrap();
        let owner = |n: &str| refs.iter().find(|r| r.name == n).unwrap().tenant.clone();
        assert_eq!(owner("localhost/acme/app:1"), "acme");
        assert_eq!(owner("localhost/runta/base:latest"), "admin");
        assert_eq!(owner("python:3.12"), "admin");
        assert_eq!(
            s.registry_login("admin", "r:5000")
                .unwrap()
                .unwrap()
                .username,
            "u"
        );
        assert!(s.registry_login("acme", "r:5000").unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
