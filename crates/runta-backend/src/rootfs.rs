//! A runtime's root filesystem: the image read-only at the bottom, a private
//! writable layer on top (overlayfs). Nothing is copied at create.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::util::run;
use crate::{BackendError, Result};

pub struct Layer {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    /// With a disk quota: the ext4 image holding upper and work, and where it
    /// is mounted. Its size is the quota: writes past it fail with ENOSPC
    /// inside the runtime, never on the host.
    disk: Option<(PathBuf, PathBuf)>,
}

const DISK_IMAGE: &str = "disk.img";

impl Layer {
    /// The layer of the runtime in `runtime_dir`; it has a quota disk if one
    /// was made for it at create.
    pub fn new(runtime_dir: &Path) -> Self {
        let image = runtime_dir.join(DISK_IMAGE);
        if image.exists() {
            let mnt = runtime_dir.join("disk");
            Layer {
                upper: mnt.join("upper"),
                work: mnt.join("work"),
                merged: runtime_dir.join("rootfs"),
                disk: Some((image, mnt)),
            }
        } else {
            Layer {
                upper: runtime_dir.join("upper"),
                work: runtime_dir.join("work"),
                merged: runtime_dir.join("rootfs"),
                disk: None,
            }
        }
    }

    /// Makes the quota disk for a new runtime: a sparse file of `gib` GiB with
    /// an ext4 file system (space is only used as it is written).
    pub async fn create_disk(runtime_dir: &Path, gib: u64) -> Result<()> {
        std::fs::create_dir_all(runtime_dir)?;
        let image = runtime_dir.join(DISK_IMAGE);
        if image.exists() {
            return Ok(());
        }
        let tmp = runtime_dir.join(".disk.img.new");
        let f = std::fs::File::create(&tmp)?;
        f.set_len(gib * 1024 * 1024 * 1024)?;
        drop(f);
        let t = tmp.to_string_lossy();
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-m",
                "0",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1",
                &t,
            ],
            None,
        )
        .await?;
        std::fs::rename(&tmp, &image)?;
        Ok(())
    }

    /// Mounts only the quota disk (if any), so the upper dir of a shut-down
    /// runtime can be read (a commit); idempotent.
    pub async fn mount_disk(&self) -> Result<()> {
        self.mount_loop().await?;
        if !self.upper.is_dir() {
            return Err(BackendError::Other(
                "the runtime has no writable layer".into(),
            ));
        }
        Ok(())
    }

    async fn mount_loop(&self) -> Result<()> {
        if let Some((image, mnt)) = &self.disk {
            std::fs::create_dir_all(mnt)?;
            if !is_mount_point(mnt) {
                let (img, dir) = (image.to_string_lossy(), mnt.to_string_lossy());
                run("mount", &["-o", "loop,nodev,nosuid", &img, &dir], None)
                    .await
                    .map_err(|e| BackendError::Other(format!("mount the runtime's disk: {e}")))?;
            }
        }
        Ok(())
    }

    pub fn is_mounted(&self) -> bool {
        is_mount_point(&self.merged)
    }

    /// Mounts the quota disk (if any) and the overlay if they are not mounted
    /// yet (idempotent: used at create, at boot and after a host reboot).
    /// `lowers` are the read-only layers, topmost first (checkpoints, then the image).
    pub async fn mount(&self, lowers: &[PathBuf]) -> Result<()> {
        self.mount_loop().await?;
        for d in [&self.upper, &self.work, &self.merged] {
            std::fs::create_dir_all(d)?;
        }
        if self.is_mounted() {
            return Ok(());
        }
        // The layers are named by descriptors (`/proc/self/fd/N`), not by
        // their host paths: overlayfs shows its options as given in the
        // runtime's /proc/self/mountinfo, and host paths are none of the
        // runtime's business (docs/security.md, leaks).
        let open_dir = |p: &Path| {
            nix::fcntl::open(
                p,
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| BackendError::Other(format!("open {}: {e}", p.display())))
        };
        let by_fd = |fd: &std::os::fd::OwnedFd| {
            format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd))
        };
        let lower_fds = lowers
            .iter()
            .map(|p| open_dir(p))
            .collect::<Result<Vec<_>>>()?;
        let (upper_fd, work_fd) = (open_dir(&self.upper)?, open_dir(&self.work)?);
        let lowerdir: Vec<String> = lower_fds.iter().map(by_fd).collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowerdir.join(":"),
            by_fd(&upper_fd),
            by_fd(&work_fd)
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
        if let Some((_, mnt)) = &self.disk {
            if is_mount_point(mnt) {
                // The loop device is released with the last reference (autoclear).
                umount2(mnt, MntFlags::MNT_DETACH)
                    .map_err(|e| BackendError::Other(format!("unmount {}: {e}", mnt.display())))?;
            }
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
