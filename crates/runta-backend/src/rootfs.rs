//! A runtime's root filesystem: the image read-only at the bottom, a private
//! writable layer on top (overlayfs). Nothing is copied at create.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::{BackendError, Result};

pub struct Layer {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
}

impl Layer {
    pub fn new(runtime_dir: &Path) -> Self {
        Layer {
            upper: runtime_dir.join("upper"),
            work: runtime_dir.join("work"),
            merged: runtime_dir.join("rootfs"),
        }
    }

    pub fn is_mounted(&self) -> bool {
        is_mount_point(&self.merged)
    }

    /// Mounts the overlay if it is not mounted yet (idempotent: used at create,
    /// at boot and after a host reboot).
    pub fn mount(&self, image_rootfs: &Path) -> Result<()> {
        for d in [&self.upper, &self.work, &self.merged] {
            std::fs::create_dir_all(d)?;
        }
        if self.is_mounted() {
            return Ok(());
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            image_rootfs.display(),
            self.upper.display(),
            self.work.display()
        );
        mount(
            Some("overlay"),
            &self.merged,
            Some("overlay"),
            MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .map_err(|e| {
            BackendError::Other(format!("mount overlay on {}: {e}", self.merged.display()))
        })
    }

    pub fn unmount(&self) -> Result<()> {
        if self.is_mounted() {
            umount2(&self.merged, MntFlags::MNT_DETACH).map_err(|e| {
                BackendError::Other(format!("unmount {}: {e}", self.merged.display()))
            })?;
        }
        Ok(())
    }
}

/// True when `path` is itself a mount point (per /proc/self/mountinfo).
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .map(|mp| unescape_mount(mp) == want)
            .unwrap_or(false)
    })
}

fn unescape_mount(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}
