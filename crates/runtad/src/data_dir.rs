//! Who may read the data dir (docs/security.md, item 13): tenants' records,
//! tokens, runtime configs (their env) and keys are root's alone. The data dir
//! and the folders under it are 0700, the daemon's own files 0600, and a data
//! dir made by an older daemon is tightened at start.
//!
//! The daemon does not set a process-wide umask: crun and every process in a
//! runtime inherit it, and files the backend writes into a runtime's root
//! filesystem must keep the modes the programs inside expect. A runtime's root
//! filesystem is left as it is; its parent folders (0700) are only traversed by
//! root (crun), which 0700 does not stop.

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Folders directly under the data dir that hold per-runtime or per-tenant data.
const PRIVATE_DIRS: [&str; 4] = ["runtimes", "checkpoints", "oci-state", "ingress"];
/// Files of the daemon's own directly under the data dir.
const PRIVATE_FILES: [&str; 5] = [
    "runta.db",
    "runta.db-wal",
    "runta.db-shm",
    "admin-token",
    "runtad.log",
];

/// Tightens the data dir and creates the store file 0600 if it is new (SQLite
/// gives its `-wal` and `-shm` files the mode of the database file).
pub fn secure(data_dir: &Path) -> Result<(), String> {
    chmod(data_dir, 0o700)?;
    let db = data_dir.join("runta.db");
    if !db.exists() {
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&db)
            .map_err(|e| format!("create {}: {e}", db.display()))?;
    }
    for f in PRIVATE_FILES {
        let p = data_dir.join(f);
        if p.is_file() {
            chmod(&p, 0o600)?;
        }
    }
    if let Ok(rd) = fs::read_dir(data_dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log") && p.is_file() {
                chmod(&p, 0o600)?;
            }
        }
    }
    for d in PRIVATE_DIRS {
        let dir = data_dir.join(d);
        if !dir.is_dir() {
            continue;
        }
        chmod(&dir, 0o700)?;
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let p = e.path();
            if ft.is_dir() {
                chmod(&p, 0o700)?;
                private_files_in(&p)?;
            } else if ft.is_file() {
                // The ingress CA certificate is what clients are told to trust;
                // it stays readable (the folder is 0700 all the same).
                let public = d == "ingress"
                    && p.extension().is_some_and(|x| x == "pem")
                    && !p.to_string_lossy().contains("key");
                if !public {
                    chmod(&p, 0o600)?;
                }
            }
        }
    }
    Ok(())
}

/// Regular files directly in one runtime's or checkpoint's folder
/// (`config.json`, state files); subfolders such as the root filesystem keep
/// their modes.
fn private_files_in(dir: &Path) -> Result<(), String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(());
    };
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            chmod(&e.path(), 0o600)?;
        }
    }
    Ok(())
}

fn chmod(p: &Path, mode: u32) -> Result<(), String> {
    let cur = fs::symlink_metadata(p).map_err(|e| format!("stat {}: {e}", p.display()))?;
    // Never follow a link planted in the data dir to chmod something else.
    if cur.file_type().is_symlink() {
        return Ok(());
    }
    if cur.permissions().mode() & 0o7777 == mode {
        return Ok(());
    }
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {:o} {}: {e}", mode, p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn an_old_world_readable_data_dir_is_tightened() {
        let d = std::env::temp_dir().join(format!("runta-dd-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        let rt = d.join("runtimes/abc");
        fs::create_dir_all(rt.join("rootfs/etc")).unwrap();
        fs::write(rt.join("config.json"), "{}").unwrap();
        fs::write(rt.join("rootfs/etc/hosts"), "x").unwrap();
        fs::write(d.join("admin-token"), "t").unwrap();
        fs::create_dir_all(d.join("ingress")).unwrap();
        fs::write(d.join("ingress/ca.pem"), "c").unwrap();
        fs::write(d.join("ingress/ca-key.pem"), "k").unwrap();
        for p in [&d, &d.join("runtimes"), &rt, &rt.join("rootfs")] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        for p in [
            rt.join("config.json"),
            d.join("admin-token"),
            d.join("ingress/ca-key.pem"),
        ] {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        }
        secure(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&d.join("runtimes")), 0o700);
        assert_eq!(mode(&rt), 0o700);
        assert_eq!(mode(&rt.join("config.json")), 0o600);
        assert_eq!(mode(&d.join("admin-token")), 0o600);
        assert_eq!(mode(&d.join("runta.db")), 0o600);
        assert_eq!(mode(&d.join("ingress/ca-key.pem")), 0o600);
        assert_eq!(
            mode(&rt.join("rootfs")),
            0o755,
            "a root filesystem keeps its modes"
        );
        fs::remove_dir_all(&d).unwrap();
    }
}
