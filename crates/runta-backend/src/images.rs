//! The image store: read-only root filesystems that runtimes are layered on.
//!
//! `base` is built in: Debian bookworm (debootstrap, minbase) with python3, bash,
//! coreutils, curl and ca-certificates. It is built once, on first need, and
//! reused read-only by every runtime. Other images are root filesystem folders
//! placed (or imported) under `<store>/<name>/rootfs`.

use std::path::{Path, PathBuf};

use tokio::sync::Mutex;
use tracing::info;

use crate::{BackendError, Result};

pub const BASE_IMAGE: &str = "base";
const BASE_SUITE: &str = "bookworm";
const BASE_PACKAGES: &str = "python3,bash,coreutils,curl,ca-certificates,procps";
const READY: &str = ".ready";

pub struct ImageStore {
    dir: PathBuf,
    mirror: String,
    build_lock: Mutex<()>,
}

impl ImageStore {
    pub fn new(dir: impl Into<PathBuf>, mirror: Option<String>) -> Self {
        ImageStore {
            dir: dir.into(),
            mirror: mirror.unwrap_or_else(default_mirror),
            build_lock: Mutex::new(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn rootfs(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("rootfs")
    }

    pub fn is_ready(&self, name: &str) -> bool {
        self.dir.join(name).join(READY).exists()
    }

    /// Names of ready images.
    pub fn list(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().join(READY).exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    pub async fn ensure(&self, name: &str) -> Result<()> {
        if self.is_ready(name) {
            return Ok(());
        }
        if name != BASE_IMAGE {
            // A folder dropped in by hand counts once it has a rootfs.
            if self.rootfs(name).join("bin").exists() || self.rootfs(name).join("usr").exists() {
                std::fs::write(self.dir.join(name).join(READY), b"")?;
                return Ok(());
            }
            return Err(BackendError::ImageNotFound(name.to_string()));
        }
        let _guard = self.build_lock.lock().await;
        if self.is_ready(name) {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)?;
        // Another daemon sharing this store may be building it: take a file lock.
        let lock_path = self.dir.join(format!(".{name}.lock"));
        let lock = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(lock_path)?;
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| std::io::Error::from(e))
        })
        .await
        .map_err(|e| BackendError::Other(e.to_string()))??;
        if self.is_ready(name) {
            return Ok(());
        }
        let result = self.build_base().await;
        drop(lock);
        result.map_err(|e| BackendError::ImageBuild(name.to_string(), e.to_string()))
    }

    async fn build_base(&self) -> Result<()> {
        let target = self.dir.join(BASE_IMAGE);
        let tmp = self
            .dir
            .join(format!(".build-{BASE_IMAGE}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let log = self.dir.join(format!("{BASE_IMAGE}.build.log"));
        info!(mirror = %self.mirror, log = %log.display(), "building image base with debootstrap (about a minute, once)");
        let logf = std::fs::File::create(&log)?;
        let status = tokio::process::Command::new("debootstrap")
            .args([
                "--variant=minbase",
                &format!("--include={BASE_PACKAGES}"),
                BASE_SUITE,
            ])
            .arg(&tmp)
            .arg(&self.mirror)
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .status()
            .await
            .map_err(|e| BackendError::Other(format!("run debootstrap (is it installed?): {e}")))?;
        if !status.success() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(BackendError::Other(format!(
                "debootstrap failed ({status}); see {}: {}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        // Drop caches the image never needs; keep it lean.
        for p in ["var/cache/apt/archives", "var/lib/apt/lists"] {
            let d = tmp.join(p);
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.path().is_file() {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        std::fs::create_dir_all(&target)?;
        let _ = std::fs::remove_dir_all(target.join("rootfs"));
        std::fs::rename(&tmp, target.join("rootfs"))?;
        std::fs::write(target.join(READY), b"")?;
        info!("image base is ready");
        Ok(())
    }
}

/// The Debian mirror apt is configured with here, so debootstrap works on a
/// machine that reaches only that mirror.
fn default_mirror() -> String {
    if let Ok(m) = std::env::var("RUNTA_DEBIAN_MIRROR") {
        return m;
    }
    let mut texts = Vec::new();
    if let Ok(s) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(s);
    }
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "sources" || x == "list") {
                if let Ok(s) = std::fs::read_to_string(p) {
                    texts.push(s);
                }
            }
        }
    }
    for t in &texts {
        for line in t.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            let url = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest.split_whitespace().find(|w| w.starts_with("http"))
            } else {
                None
            };
            if let Some(u) = url {
                if u.ends_with("/debian") || u.ends_with("/debian/") {
                    return u.to_string();
                }
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}
