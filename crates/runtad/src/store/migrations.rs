//! Migrations of stores made by earlier versions, in the order they were
//! added: each looks for what it adds and adds it only when it is missing, so
//! opening a store twice, or an up-to-date one, changes nothing. A new one goes
//! at the end of [`run`].

use rusqlite::Connection;

use super::Result;

/// Brings a store opened on `schema.sql` up to date (called by `Store::open`).
pub(super) fn run(conn: &Connection) -> Result<()> {
    if conn.prepare("SELECT layers FROM runtimes LIMIT 0").is_err() {
        conn.execute_batch("ALTER TABLE runtimes ADD COLUMN layers TEXT NOT NULL DEFAULT '[]'")?;
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
    // Egress audits (store/audits.rs), added after egress_policy.
    super::audits::migrate(conn)?;
    // Secrets and their bindings (store/secrets.rs), added after audits.
    conn.execute_batch(super::secrets::SCHEMA)?;
    // The image store's tables (store/images.rs).
    super::images::migrate(conn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::runtimes::test_record as record;
    use super::super::Store;
    use rusqlite::Connection;
    use uuid::Uuid;

    /// A `runta.db` whose runtimes table is as an older version left it: the
    /// columns every version had, then `later` (columns added since, as their
    /// migrations wrote them), holding one runtime inserted with `insert`
    /// (`?1` is its id). Returns the store's path and the runtime's id.
    fn older_store(tag: &str, later: &str, insert: &str) -> (std::path::PathBuf, Uuid) {
        let dir = std::env::temp_dir().join(format!("runta-store-{tag}-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("runta.db");
        let id = Uuid::new_v4();
        let c = Connection::open(&path).unwrap();
        c.execute_batch(&format!(
            "CREATE TABLE runtimes (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
                 tenant TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
                 desired_status TEXT NOT NULL, image TEXT NOT NULL, vcpus REAL NOT NULL,
                 memory_mib INTEGER NOT NULL, memory_limit_mib INTEGER NOT NULL, disk_gib INTEGER,
                 env TEXT NOT NULL, labels TEXT NOT NULL, publish TEXT NOT NULL,
                 idle_timeout_secs INTEGER, ip TEXT NOT NULL, created_at TEXT NOT NULL,
                 updated_at TEXT NOT NULL, started_at TEXT, revision INTEGER NOT NULL, error TEXT,
                 {later} UNIQUE (tenant, name));"
        ))
        .unwrap();
        c.execute(insert, [id.to_string()]).unwrap();
        (path, id)
    }

    /// A `runta.db` whose runtimes table predates `layers` and `idle_wakeup`
    /// opens, keeps its runtimes (they woke on a request, so they still do),
    /// and stores the new setting from then on.
    #[test]
    fn an_older_runtimes_table_gains_idle_wakeup() {
        let (path, id) = older_store(
            "idle",
            "",
            "INSERT INTO runtimes(id, tenant, name, status, desired_status, image, vcpus, memory_mib,
                 memory_limit_mib, env, labels, publish, idle_timeout_secs, ip, created_at, updated_at,
                 revision) VALUES (?1, 't', 'old', 'suspended', 'running', 'base', 1, 64, 64, '{}', '{}',
                 '[]', 30, '10.1.0.9', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z', 3)",
        );
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
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }

    /// The same older table with `layers` and `idle_wakeup` gains
    /// `egress_policy`: old runtimes read as open, and a policy written
    /// afterwards survives a reopen.
    #[test]
    fn an_older_runtimes_table_gains_egress_policy() {
        let (path, id) = older_store(
            "egress",
            "layers TEXT NOT NULL DEFAULT '[]', idle_wakeup INTEGER NOT NULL DEFAULT 1,",
            "INSERT INTO runtimes(id, tenant, name, status, desired_status, image, vcpus, memory_mib,
                 memory_limit_mib, env, labels, publish, ip, created_at, updated_at,
                 revision) VALUES (?1, 't', 'old', 'running', 'running', 'base', 1, 64, 64, '{}', '{}',
                 '[]', '10.1.0.9', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z', 3)",
        );
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
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }
}
