//! The agent's presence on the host: its socket and its binary.
//!
//! The socket is made by the daemon: created and bound in the runtime's
//! host-only run folder (mode 0700, never mounted into the runtime), then
//! handed to `runta-agent` as descriptor 3, which only listens on it. The path
//! the daemon connects to is therefore one no program in the runtime can
//! replace or redirect (docs/security.md, item 1).
//!
//! The binary is bind-mounted read-only into every runtime from a copy on a
//! small tmpfs of its own, so the runtime's mountinfo names no host path.

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, UnixAddr};

use crate::{BackendError, Result};

/// The descriptor number the agent receives the socket on.
pub const AGENT_FD: i32 = 3;

/// Creates `run_dir` (0700) and a fresh unix socket bound at `run_dir/agent.sock`.
pub fn create(run_dir: &Path) -> Result<OwnedFd> {
    std::fs::create_dir_all(run_dir)?;
    std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o700))?;
    let path = run_dir.join("agent.sock");
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| BackendError::Other(format!("agent socket: {e}")))?;
    let addr =
        UnixAddr::new(&path).map_err(|e| BackendError::Other(format!("agent socket: {e}")))?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)
        .map_err(|e| BackendError::Other(format!("bind {}: {e}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(fd)
}

/// Copies `agent` onto a private tmpfs at `run_root/agent` (mounted if it is
/// not yet) and returns the copy's path. A changed binary is written beside
/// and renamed over, so running runtimes keep the inode they mounted.
pub fn stage_binary(run_root: &Path, agent: &Path) -> Result<PathBuf> {
    let dir = run_root.join("agent");
    std::fs::create_dir_all(&dir)?;
    if !crate::rootfs::is_mount_point(&dir) {
        nix::mount::mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some("size=64m,mode=0755"),
        )
        .map_err(|e| BackendError::Other(format!("mount tmpfs on {}: {e}", dir.display())))?;
    }
    let staged = dir.join("runta-agent");
    let want = std::fs::read(agent).map_err(|e| {
        BackendError::Other(format!("read the agent binary {}: {e}", agent.display()))
    })?;
    if std::fs::read(&staged).ok().as_deref() != Some(want.as_slice()) {
        let tmp = dir.join(".runta-agent.new");
        std::fs::write(&tmp, &want)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &staged)?;
    }
    Ok(staged)
}

/// Unmounts the staging tmpfs (lazily: runtimes still running keep their copy).
pub fn unstage_binary(run_root: &Path) {
    let dir = run_root.join("agent");
    if crate::rootfs::is_mount_point(&dir) {
        let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir(&dir);
}
