//! File operations, resolved inside the runtime's own root: a path like
//! `/../../etc/shadow` cannot leave it, because this process is already there.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use runta_agent::{tag, DirEntry, Response, DIR_PART, MAX_DIR_ENTRIES};

use crate::conn::{Conn, Incoming};

const CHUNK: usize = 256 * 1024;

fn error(c: &Conn, e: &io::Error, path: &str) -> io::Result<()> {
    let kind = match e.kind() {
        io::ErrorKind::NotFound => "not_found",
        io::ErrorKind::PermissionDenied => "permission_denied",
        io::ErrorKind::IsADirectory => "is_directory",
        io::ErrorKind::NotADirectory => "not_directory",
        io::ErrorKind::InvalidInput => "invalid_argument",
        _ => "io",
    };
    c.send(&Response::Error {
        kind: kind.into(),
        message: format!("{path}: {e}"),
    })
}

fn check(c: &Conn, path: &str) -> io::Result<bool> {
    if !path.starts_with('/') || path.contains('\0') {
        c.send(&Response::Error {
            kind: "invalid_argument".into(),
            message: format!("{path:?}: must be an absolute path"),
        })?;
        return Ok(false);
    }
    Ok(true)
}

/// Opens `path` for reading without ever blocking: a FIFO opened plainly waits
/// for a writer forever, and a device can stream without end. Only a regular
/// file is served; symlinks along the path (and a final one) are followed as
/// before, since this process already lives inside the runtime's root.
fn open_regular(path: &str) -> io::Result<Result<(File, fs::Metadata), &'static str>> {
    // Looked at first so a device is never opened at all (opening some has
    // effects, and /dev/tty fails oddly); the descriptor is checked again.
    let pre = fs::metadata(path)?;
    if pre.is_dir() {
        return Ok(Err("is_directory"));
    }
    if !pre.is_file() {
        return Ok(Err("not_regular"));
    }
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = f.metadata()?;
    if meta.is_dir() {
        return Ok(Err("is_directory"));
    }
    if !meta.is_file() {
        return Ok(Err("not_regular"));
    }
    Ok(Ok((f, meta)))
}

fn not_regular(c: &Conn, path: &str) -> io::Result<()> {
    c.send(&Response::Error {
        kind: "invalid_argument".into(),
        message: format!("{path}: not a regular file (FIFOs, sockets and devices are refused)"),
    })
}

pub fn read(c: &mut Conn, path: &str) -> io::Result<()> {
    if !check(c, path)? {
        return Ok(());
    }
    let (f, meta) = match open_regular(path) {
        Ok(Ok(fm)) => fm,
        Ok(Err("is_directory")) => {
            return c.send(&Response::Error {
                kind: "is_directory".into(),
                message: format!("{path}: is a directory"),
            })
        }
        Ok(Err(_)) => return not_regular(c, path),
        Err(e) => return error(c, &e, path),
    };
    // Exactly the announced size goes out: a file that grows while it is read
    // must not make the stream longer than the size the daemon was told.
    let size = meta.len();
    c.send(&Response::FileInfo { size })?;
    let mut buf = vec![0u8; CHUNK];
    let mut f = f.take(size);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        c.frame(tag::STDOUT, &buf[..n])?;
    }
    c.frame(tag::EOF, b"")
}

/// Who owns what a write creates: a file it replaces keeps its owner; a new
/// file, and the folders made for it, belong to the image's user when it
/// has one that resolves, else to root (docs/images.md, "User").
fn new_owner(user: Option<&str>) -> Option<(u32, u32)> {
    let id = crate::user::resolve(user?).ok()?;
    Some((id.uid, id.gid))
}

pub fn write(c: &mut Conn, path: &str, mode: Option<u32>, user: Option<&str>) -> io::Result<()> {
    if !check(c, path)? {
        return Ok(());
    }
    let target = Path::new(path);
    if target.is_dir() {
        return c.send(&Response::Error {
            kind: "is_directory".into(),
            message: format!("{path}: is a directory"),
        });
    }
    // Renaming over a FIFO, socket or device node would replace it (a PUT to
    // /dev/null would break the runtime): only regular files (or links, which
    // the rename replaces) are overwritten.
    let mut owner = None;
    if let Ok(m) = fs::symlink_metadata(target) {
        let ft = m.file_type();
        if !(ft.is_file() || ft.is_symlink()) {
            return not_regular(c, path);
        }
        if ft.is_file() {
            owner = Some((m.uid(), m.gid()));
        }
    }
    let created = new_owner(user);
    let owner = owner.or(created);
    let Some(parent) = target.parent() else {
        return c.send(&Response::Error {
            kind: "invalid_argument".into(),
            message: format!("{path}: no file name"),
        });
    };
    let missing: Vec<&Path> = parent
        .ancestors()
        .take_while(|a| fs::symlink_metadata(a).is_err())
        .collect();
    if let Err(e) = fs::create_dir_all(parent) {
        return error(c, &e, path);
    }
    if let Some((uid, gid)) = created {
        for d in missing {
            // lchown: a folder swapped for a symlink meanwhile is not followed.
            let _ = std::os::unix::fs::lchown(d, Some(uid), Some(gid));
        }
    }
    // Write beside the target and rename, so a reader never sees half a file and
    // an interrupted upload leaves the old content in place.
    let tmp = parent.join(format!(
        ".{}.runta-upload-{}",
        target
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id() as u64 * 1_000_003 + rand_suffix()
    ));
    let mut f = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode.unwrap_or(0o644) & 0o7777)
        .open(&tmp)
    {
        Ok(f) => f,
        Err(e) => return error(c, &e, path),
    };
    if let Some((uid, gid)) = owner {
        if let Err(e) = std::os::unix::fs::fchown(&f, Some(uid), Some(gid)) {
            let _ = fs::remove_file(&tmp);
            return error(c, &e, path);
        }
    }
    let mut size = 0u64;
    let outcome: io::Result<bool> = loop {
        match c.recv() {
            Ok(Some(Incoming::Data(d))) => {
                if let Err(e) = f.write_all(&d) {
                    break Err(e);
                }
                size += d.len() as u64;
            }
            Ok(Some(Incoming::Eof)) => break Ok(true),
            Ok(Some(Incoming::Request(_))) => break Ok(false),
            Ok(None) => break Ok(false),
            Err(e) => break Err(e),
        }
    };
    match outcome {
        Ok(true) => {
            if let Some(m) = mode {
                let _ = fs::set_permissions(&tmp, fs::Permissions::from_mode(m & 0o7777));
            }
            drop(f);
            if let Err(e) = fs::rename(&tmp, target) {
                let _ = fs::remove_file(&tmp);
                return error(c, &e, path);
            }
            c.send(&Response::Written { size })
        }
        Ok(false) => {
            let _ = fs::remove_file(&tmp);
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            error(c, &e, path)
        }
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

pub fn list(c: &mut Conn, path: &str) -> io::Result<()> {
    if !check(c, path)? {
        return Ok(());
    }
    let rd = match fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) => return error(c, &e, path),
    };
    let mut entries = Vec::new();
    for e in rd.flatten() {
        if entries.len() >= MAX_DIR_ENTRIES {
            return c.send(&Response::Error {
                kind: "too_large".into(),
                message: format!(
                    "{path} holds more than {MAX_DIR_ENTRIES} entries; list a subfolder, or use exec"
                ),
            });
        }
        let Ok(m) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        let ft = m.file_type();
        let kind = if ft.is_file() {
            "file"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else {
            "other"
        };
        entries.push(DirEntry {
            name: e.file_name().to_string_lossy().into_owned(),
            kind: kind.into(),
            size: m.len(),
            mode: m.mode() & 0o7777,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let parts = entries.len().div_ceil(DIR_PART).max(1);
    let mut rest = entries.into_iter();
    for i in 0..parts {
        let part: Vec<DirEntry> = rest.by_ref().take(DIR_PART).collect();
        c.send(&Response::Dir {
            entries: part,
            more: i + 1 < parts,
        })?;
    }
    Ok(())
}
