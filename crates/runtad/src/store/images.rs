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

/// The tables, created at every start (a store of an older version gains them).
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
        CREATE TABLE IF NOT EXISTS image_names (
            name        TEXT PRIMARY KEY,
            digest      TEXT NOT NULL REFERENCES images(digest),
            updated_at  TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS registry_logins (
            registry    TEXT PRIMARY KEY,
            username    TEXT NOT NULL,
            secret      TEXT NOT NULL,
            created_at  TEXT NOT NULL
        );",
    )
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

/// A stored registry login (`secret` is the password or token).
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryLogin {
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

impl Store {
    /// Records an image and points `name` at it, in one transaction (a name
    /// never points at an image that is not recorded).
    pub fn put_image(&self, img: &ImageRecord, name: &str) -> Result<()> {
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
            tx.execute(
                "INSERT INTO image_names (name, digest, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
                params![name, img.digest, ts(&super::now())],
            )?;
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

    /// The digest a name points at.
    pub fn image_name(&self, name: &str) -> Result<Option<String>> {
        self.with(|c| {
            c.prepare_cached("SELECT digest FROM image_names WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()
        })
    }

    /// Every image with the names pointing at it (sorted by name).
    pub fn list_images(&self) -> Result<Vec<(ImageRecord, Vec<String>)>> {
        self.with(|c| {
            let imgs: Vec<ImageRecord> = c
                .prepare_cached(&format!("SELECT {IMAGE_COLS} FROM images ORDER BY digest"))?
                .query_map([], image_row)?
                .collect::<rusqlite::Result<_>>()?;
            let names: Vec<(String, String)> = c
                .prepare_cached("SELECT name, digest FROM image_names ORDER BY name")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(imgs
                .into_iter()
                .map(|i| {
                    let n = names
                        .iter()
                        .filter(|(_, d)| *d == i.digest)
                        .map(|(n, _)| n.clone())
                        .collect();
                    (i, n)
                })
                .collect())
        })
    }

    /// Removes a name; with no name left the image record goes too. Returns
    /// whether the image record was removed.
    pub fn delete_image_name(&self, name: &str) -> Result<bool> {
        self.with(|c| {
            let tx = c.transaction()?;
            let digest: Option<String> = tx
                .query_row(
                    "SELECT digest FROM image_names WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(digest) = digest else {
                return Ok(false);
            };
            tx.execute("DELETE FROM image_names WHERE name = ?1", [name])?;
            let left: i64 = tx.query_row(
                "SELECT COUNT(*) FROM image_names WHERE digest = ?1",
                [&digest],
                |r| r.get(0),
            )?;
            if left == 0 {
                tx.execute("DELETE FROM images WHERE digest = ?1", [&digest])?;
            }
            tx.commit()?;
            Ok(left == 0)
        })
    }

    /// Removes an image and every name pointing at it.
    pub fn delete_image(&self, digest: &str) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM image_names WHERE digest = ?1", [digest])?;
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
                "INSERT INTO registry_logins (registry, username, secret, created_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(registry) DO UPDATE SET username = excluded.username, secret = excluded.secret, \
                 created_at = excluded.created_at",
            )?
            .execute(params![l.registry, l.username, l.secret, ts(&l.created_at)])
            .map(drop)
        })
    }

    pub fn registry_login(&self, registry: &str) -> Result<Option<RegistryLogin>> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT registry, username, secret, created_at FROM registry_logins WHERE registry = ?1",
            )?
            .query_row([registry], |r| {
                Ok(RegistryLogin {
                    registry: r.get(0)?,
                    username: r.get(1)?,
                    secret: r.get(2)?,
                    created_at: parse_ts(&r.get::<_, String>(3)?)?,
                })
            })
            .optional()
        })
    }

    pub fn list_registry_logins(&self) -> Result<Vec<RegistryLogin>> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT registry, username, secret, created_at FROM registry_logins ORDER BY registry",
            )?
            .query_map([], |r| {
                Ok(RegistryLogin {
                    registry: r.get(0)?,
                    username: r.get(1)?,
                    secret: r.get(2)?,
                    created_at: parse_ts(&r.get::<_, String>(3)?)?,
                })
            })?
            .collect()
        })
    }

    pub fn delete_registry_login(&self, registry: &str) -> Result<bool> {
        self.with(|c| {
            c.prepare_cached("DELETE FROM registry_logins WHERE registry = ?1")?
                .execute([registry])
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
    fn names_point_at_images_and_the_last_name_takes_the_image() {
        let dir = std::env::temp_dir().join(format!("runta-img-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = Store::open(&dir.join("t.db")).unwrap();
        s.put_image(&rec("sha256:aa"), "a:1").unwrap();
        s.put_image(&rec("sha256:aa"), "a:2").unwrap();
        assert_eq!(s.image_name("a:1").unwrap().as_deref(), Some("sha256:aa"));
        assert_eq!(s.list_images().unwrap()[0].1, vec!["a:1", "a:2"]);
        assert!(!s.delete_image_name("a:1").unwrap());
        assert!(s.delete_image_name("a:2").unwrap());
        assert!(s.image_by_digest("sha256:aa").unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
