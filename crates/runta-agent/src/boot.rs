//! What PID 1 does once at start, before serving: take the listening socket the
//! daemon handed over, shield itself from the runtime's other processes, and
//! write the runtime's `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`.
//!
//! The socket is created and bound by the daemon in a host folder the runtime
//! cannot see, and reaches the agent as an inherited descriptor: nothing a
//! program inside the runtime can write decides where the daemon connects
//! (docs/security.md, item 1). The agent only calls `listen()` on it, so the
//! daemon's `SO_PEERCRED` on every connection names this process.
//!
//! The `/etc` files are written here, inside the runtime, rather than bind
//! mounted from host files: they live in the runtime's own writable layer
//! (inside its disk quota, never on the host's disk) and a symlink planted in
//! the image resolves inside the runtime's root, as every path the agent opens.

use std::io::Write;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixListener;

/// First line of the files the agent manages. While it is there the file is
/// rewritten at every boot; a user who removes it keeps their own version.
pub const MANAGED: &str = runta_agent::MANAGED_ETC_MARKER;

/// Start-up settings, from the command line the daemon writes into the
/// runtime's OCI config.
#[derive(Debug, Default)]
pub struct Boot {
    pub listen_fd: Option<RawFd>,
    pub hostname: Option<String>,
    pub ip: Option<String>,
    /// Full content of resolv.conf (nameserver lines), without the marker.
    pub resolv: Option<String>,
}

/// Makes PID 1 non-dumpable: other processes in the runtime (all root) can then
/// neither ptrace it (a stopped PID 1 would wedge every daemon call) nor open
/// its descriptors through `/proc/1/fd` (its listening socket, its log).
pub fn shield() {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

/// Takes the inherited, bound socket and starts listening on it.
pub fn listener(fd: RawFd) -> std::io::Result<UnixListener> {
    // SAFETY: plain syscalls on the descriptor the daemon passed in.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        if libc::listen(fd, 128) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(UnixListener::from_raw_fd(fd))
    }
}

/// Writes the managed `/etc` files. Failures (a read-only or full disk, an
/// image without `/etc`) are reported and never stop the agent.
pub fn write_etc(b: &Boot) {
    if let Some(name) = &b.hostname {
        report(
            "/etc/hostname",
            write_managed("/etc/hostname", &format!("{name}\n"), false),
        );
        if let Some(ip) = &b.ip {
            let hosts = format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{name}\n"
            );
            report("/etc/hosts", write_managed("/etc/hosts", &hosts, true));
        }
    }
    if let Some(resolv) = &b.resolv {
        report(
            "/etc/resolv.conf",
            write_managed("/etc/resolv.conf", resolv, true),
        );
    }
}

fn report(path: &str, r: std::io::Result<()>) {
    if let Err(e) = r {
        eprintln!("runta-agent: cannot write {path}: {e}");
    }
}

/// Writes `content` to `path` unless the file exists and the user took it
/// over (it has content but no marker line). `/etc/hostname` carries no marker
/// (programs read its first line as the name): it is always the runtime's name.
fn write_managed(path: &str, content: &str, marker: bool) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path);
    if marker {
        if let Ok(m) = &meta {
            if m.is_file() {
                let head = read_plain(path, 4096).unwrap_or_default();
                let ours = head.lines().next() == Some(MANAGED);
                // The image's own file (first boot) has no marker either: take
                // it over once, recorded by a stamp in /.runta.
                if !ours && stamped(path) {
                    return Ok(());
                }
            }
        }
    }
    if let Ok(m) = &meta {
        // A symlink (e.g. to a systemd-resolved stub that is not there) is
        // replaced by a plain file rather than written through.
        if m.file_type().is_symlink() || !m.is_file() {
            if m.is_dir() {
                return Err(std::io::Error::other("is a directory"));
            }
            std::fs::remove_file(path)?;
        }
    }
    let body = if marker {
        format!("{MANAGED}\n{content}")
    } else {
        content.to_string()
    };
    let tmp = format!("{path}.runta-new");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    f.write_all(body.as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    stamp(path);
    Ok(())
}

const STAMPS: &str = "/.runta/etc-managed";

/// Reads at most `limit` bytes of a regular file, never blocking and never
/// following a final symlink: everything here was written by the runtime's
/// programs, and PID 1 must not hang at boot on a FIFO, a device or a link to
/// `/dev/zero` planted in its place.
fn read_plain(path: &str, limit: u64) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut s = String::new();
    f.take(limit).read_to_string(&mut s).ok()?;
    Some(s)
}

fn stamps() -> Option<String> {
    read_plain(STAMPS, 64 * 1024)
}

fn stamped(path: &str) -> bool {
    stamps().is_some_and(|s| s.lines().any(|l| l == path))
}

fn stamp(path: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let current = stamps();
    if current
        .as_deref()
        .is_some_and(|s| s.lines().any(|l| l == path))
    {
        return;
    }
    // Anything but a small regular file in its place is replaced.
    if current.is_none() {
        if let Ok(m) = std::fs::symlink_metadata(STAMPS) {
            if m.is_dir() {
                let _ = std::fs::rename(STAMPS, format!("{STAMPS}.moved"));
            } else {
                let _ = std::fs::remove_file(STAMPS);
            }
        }
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(STAMPS)
    {
        let _ = writeln!(f, "{path}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_is_one_line() {
        assert!(!MANAGED.contains('\n'));
        assert!(MANAGED.starts_with('#'));
    }
}
