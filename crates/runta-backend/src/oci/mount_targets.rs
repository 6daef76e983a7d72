//! Makes the places the OCI runtime mounts onto usable again before a boot.
//!
//! A runtime's programs own its root filesystem, including where `/proc`,
//! `/dev`, `/sys` and the agent binary get mounted at the next boot: replacing
//! `/.runta/agent` with a directory, or `/proc` with a file, would make every
//! later boot fail (and the runtime's files unreachable). Before each boot,
//! while nothing in the runtime runs, anything of the wrong kind at those
//! places is moved aside (never followed, never deleted: it is the user's) and
//! the right kind of entry is made. Every step is relative to a descriptor of
//! the root and refuses symlinks, so nothing outside the runtime is touched.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{openat, renameat2, AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};

use crate::{BackendError, Result};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Dir,
    File,
}

/// (path relative to the root, what it must be). Parents come first.
const TARGETS: &[(&str, Kind)] = &[
    ("proc", Kind::Dir),
    ("dev", Kind::Dir),
    ("sys", Kind::Dir),
    (".runta", Kind::Dir),
    (".runta/agent", Kind::File),
];

fn err(what: &str, e: nix::Error) -> BackendError {
    BackendError::Other(format!("prepare the runtime's {what}: {e}"))
}

fn open_dir_at<Fd: AsFd>(dir: Fd, name: &str) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_PATH,
        Mode::empty(),
    )
}

/// Prepares the mount targets under `rootfs` (the runtime's merged root).
pub fn prepare(rootfs: &Path) -> Result<()> {
    let root = nix::fcntl::open(
        rootfs,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_PATH,
        Mode::empty(),
    )
    .map_err(|e| err("root", e))?;
    for (rel, kind) in TARGETS {
        let (parent, name) = match rel.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, *rel),
        };
        let dir = match parent {
            Some(p) => open_dir_at(&root, p).map_err(|e| err(rel, e))?,
            None => root
                .try_clone()
                .map_err(|e| BackendError::Other(e.to_string()))?,
        };
        ensure(&dir, name, *kind).map_err(|e| err(rel, e))?;
    }
    Ok(())
}

fn ensure(dir: &OwnedFd, name: &str, kind: Kind) -> nix::Result<()> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => {
            let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            let right = match kind {
                Kind::Dir => fmt == SFlag::S_IFDIR,
                Kind::File => fmt == SFlag::S_IFREG,
            };
            if right {
                return Ok(());
            }
            // Moved aside under a name that says why (never over anything:
            // RENAME_NOREPLACE); a clash gets a numbered name.
            let mut n = 0;
            loop {
                let aside = if n == 0 {
                    format!("{name}.moved-by-runta")
                } else {
                    format!("{name}.moved-by-runta.{n}")
                };
                match renameat2(
                    dir,
                    name,
                    dir,
                    aside.as_str(),
                    RenameFlags::RENAME_NOREPLACE,
                ) {
                    Ok(()) => break,
                    Err(nix::Error::EEXIST) if n < 100 => n += 1,
                    Err(e) => return Err(e),
                }
            }
        }
        Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(e),
    }
    match kind {
        Kind::Dir => mkdirat(dir, name, Mode::from_bits_truncate(0o755)),
        Kind::File => openat(
            dir,
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o755),
        )
        .map(drop),
    }
}
