//! `runta cp SRC DST`: files and folders between this machine and a runtime,
//! either direction, with `docker cp` rules (copying onto an existing folder
//! puts the source inside it; `dir/.` copies the folder's contents).

use std::path::{Path, PathBuf};

use reqwest::Method;
use runta_api::{FileEntry, Runtime};
use serde_json::json;

use crate::client::{enc, typed, Client};
use crate::error::{CliError, Result};
use crate::output::{bytes, print_json};

#[derive(Debug, PartialEq)]
pub enum Loc {
    Local(PathBuf),
    Remote { runtime: String, path: String },
}

/// `NAME:/abs/path` is in a runtime; anything else is local (`./a:b` stays local).
pub fn parse_loc(s: &str) -> Result<Loc> {
    if let Some((rt, path)) = s.split_once(':') {
        if !rt.is_empty() && !rt.contains('/') && !rt.starts_with('.') {
            if !path.starts_with('/') {
                return Err(CliError::usage(format!(
                    "{s:?}: the path inside the runtime must be absolute, e.g. {rt}:/tmp/{}",
                    path.trim_start_matches("./")
                )));
            }
            return Ok(Loc::Remote {
                runtime: rt.to_string(),
                path: path.to_string(),
            });
        }
    }
    Ok(Loc::Local(PathBuf::from(s)))
}

#[derive(Default)]
struct Tally {
    files: u64,
    bytes: u64,
}

pub async fn run(c: &Client, src: &str, dst: &str, max_bytes: u64, json: bool) -> Result<()> {
    let (src, dst) = (parse_loc(src)?, parse_loc(dst)?);
    let mut t = Tally::default();
    let dest = match (&src, &dst) {
        (Loc::Local(from), Loc::Remote { runtime, path }) => {
            let r = resolve(c, runtime).await?;
            upload(c, &r, from, path, &mut t).await?;
            format!("{}:{path}", r.name)
        }
        (Loc::Remote { runtime, path }, Loc::Local(to)) => {
            let r = resolve(c, runtime).await?;
            download(c, &r, path, to, max_bytes, &mut t).await?;
            to.display().to_string()
        }
        (Loc::Local(_), Loc::Local(_)) => {
            return Err(CliError::usage(
                "one side of cp must be in a runtime, written NAME:/path (e.g. runta cp ./app worker:/srv/app)",
            ))
        }
        (Loc::Remote { .. }, Loc::Remote { .. }) => {
            return Err(CliError::usage(
                "cp copies between this machine and a runtime; copying between two runtimes is not supported",
            ))
        }
    };
    if json {
        print_json(&json!({"files": t.files, "bytes": t.bytes, "destination": dest}));
    } else {
        println!(
            "copied {} file{} ({}) to {dest}",
            t.files,
            if t.files == 1 { "" } else { "s" },
            bytes(t.bytes)
        );
    }
    Ok(())
}

async fn resolve(c: &Client, name: &str) -> Result<Runtime> {
    let v = c
        .on_runtime(name, |id| async move {
            c.get(&format!("/v1/runtimes/{id}")).await
        })
        .await?;
    typed(v)
}

fn base_name(p: &str) -> Result<&str> {
    let b = p.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    if b.is_empty() || b == "." || b == ".." {
        return Err(CliError::usage(format!("{p:?} names no file or folder")));
    }
    Ok(b)
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), name)
}

async fn remote_list(c: &Client, r: &Runtime, path: &str) -> Result<Vec<FileEntry>> {
    let v = c
        .get(&format!(
            "/v1/runtimes/{}/files/list?path={}",
            r.id,
            enc(path)
        ))
        .await?;
    typed(v)
}

async fn remote_is_dir(c: &Client, r: &Runtime, path: &str) -> bool {
    remote_list(c, r, path).await.is_ok()
}

fn shq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

async fn put_file(
    c: &Client,
    r: &Runtime,
    local: &Path,
    remote: &str,
    follow: bool,
    t: &mut Tally,
) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |e: std::io::Error| CliError::failed(format!("{}: {e}", local.display()));
    // Opened without blocking (a FIFO swapped in after the folder was read
    // would wait forever) and, inside a folder, without following a link that
    // replaced the file; what is sent is what the open descriptor says.
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(local)
        .map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if !meta.is_file() {
        return Err(CliError::failed(format!(
            "{}: not a regular file",
            local.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    let rb = c
        .request(
            Method::PUT,
            &format!(
                "/v1/runtimes/{}/files?path={}&mode={:04o}",
                r.id,
                enc(remote),
                mode
            ),
        )?
        .header("content-type", "application/octet-stream")
        .header("content-length", meta.len())
        .body(reqwest::Body::from(tokio::fs::File::from_std(file)));
    c.send(rb).await.map_err(|e| with_path(e, remote))?;
    t.files += 1;
    t.bytes += meta.len();
    Ok(())
}

fn with_path(e: CliError, path: &str) -> CliError {
    match e {
        CliError::Api(mut a) => {
            if !a.body.error.message.contains(path) {
                a.body.error.message = format!("{path}: {}", a.body.error.message);
            }
            CliError::Api(a)
        }
        other => other,
    }
}

async fn upload(c: &Client, r: &Runtime, from: &Path, to: &str, t: &mut Tally) -> Result<()> {
    let meta = std::fs::metadata(from)
        .map_err(|e| CliError::failed(format!("{}: {e}", from.display())))?;
    let from_s = from.to_string_lossy().to_string();
    if meta.is_file() {
        let target = if to.ends_with('/') || remote_is_dir(c, r, to).await {
            join(to, base_name(&from_s)?)
        } else {
            to.to_string()
        };
        return put_file(c, r, from, &target, true, t).await;
    }
    if !meta.is_dir() {
        return Err(CliError::failed(format!(
            "{}: only regular files and folders can be copied",
            from.display()
        )));
    }
    let contents_only = from_s.ends_with("/.");
    let target = if !contents_only && remote_is_dir(c, r, to).await {
        join(to, base_name(&from_s)?)
    } else {
        to.trim_end_matches('/').to_string()
    };
    let target = if target.is_empty() {
        "/".to_string()
    } else {
        target
    };
    // Files go through the files API (parents are created); empty folders and
    // symbolic links are made with one shell command at the end.
    let mut script = Vec::new();
    let mut stack = vec![(from.to_path_buf(), target.clone())];
    let mut any_file = false;
    while let Some((dir, rdir)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| CliError::failed(format!("{}: {e}", dir.display())))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| CliError::failed(format!("{}: {e}", dir.display())))?;
        entries.sort_by_key(|e| e.file_name());
        if entries.is_empty() {
            script.push(format!("mkdir -p -- {}", shq(&rdir)));
        }
        for e in entries {
            let name = e.file_name().to_string_lossy().to_string();
            let lpath = e.path();
            let rpath = join(&rdir, &name);
            let ft = e
                .file_type()
                .map_err(|err| CliError::failed(format!("{}: {err}", lpath.display())))?;
            if ft.is_symlink() {
                let dest = std::fs::read_link(&lpath)?;
                script.push(format!(
                    "mkdir -p -- {} && ln -sfn -- {} {}",
                    shq(&rdir),
                    shq(&dest.to_string_lossy()),
                    shq(&rpath)
                ));
            } else if ft.is_dir() {
                stack.push((lpath, rpath));
            } else if ft.is_file() {
                put_file(c, r, &lpath, &rpath, false, t).await?;
                any_file = true;
            } else {
                eprintln!(
                    "runta: skipping {} (not a file, folder or link)",
                    lpath.display()
                );
            }
        }
    }
    let _ = any_file;
    if !script.is_empty() {
        let res = crate::exec::sh(c, &r.id.to_string(), &script.join(" && ")).await?;
        if res.exit_code != 0 {
            return Err(CliError::failed(format!(
                "creating folders and links in {}: {}",
                r.name,
                res.stderr.trim()
            )));
        }
    }
    Ok(())
}

/// Entries one folder download may hold: a runtime can make millions of empty
/// files for nothing, and each costs an inode here.
const MAX_ENTRIES: usize = 1_000_000;
/// Folder depth: every level holds one open descriptor while it is written.
const MAX_DEPTH: usize = 256;

/// `--max-bytes`: a byte count, optionally with K, M, G or T (powers of 1024).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size such as 1048576, 512M or 4G"))
}

/// A name in a listing that came from a runtime, checked before it is used
/// as one path component here: the runtime (or its agent) is not trusted.
pub fn check_entry_name(name: &str) -> std::result::Result<(), String> {
    let why = if name.is_empty() {
        "is empty"
    } else if name == "." || name == ".." {
        "is a parent or self reference"
    } else if name.contains('/') {
        "contains a slash"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else if name.len() > 255 {
        "is longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(format!(
        "the runtime listed an entry whose name {why}: {name:?}"
    ))
}

/// One entry of a remote folder, planned before anything is written locally.
enum Node {
    File { name: String, size: u64, mode: u32 },
    Dir { name: String, children: Vec<Node> },
    Link { name: String },
    Other { name: String },
}

struct Plan {
    entries: usize,
    bytes: u64,
}

fn plan_dir<'a>(
    c: &'a Client,
    r: &'a Runtime,
    rdir: String,
    listed: Vec<FileEntry>,
    depth: usize,
    plan: &'a mut Plan,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Node>>> + 'a>> {
    Box::pin(async move {
        if depth > MAX_DEPTH {
            return Err(CliError::failed(format!(
                "{rdir}: folders nest deeper than {MAX_DEPTH} levels; refusing to copy"
            )));
        }
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(listed.len());
        for e in listed {
            check_entry_name(&e.name).map_err(|m| CliError::failed(format!("{rdir}: {m}")))?;
            if !seen.insert(e.name.clone()) {
                return Err(CliError::failed(format!(
                    "{rdir}: the runtime listed {:?} twice",
                    e.name
                )));
            }
            plan.entries += 1;
            if plan.entries > MAX_ENTRIES {
                return Err(CliError::failed(format!(
                    "{rdir}: more than {MAX_ENTRIES} entries; refusing to copy"
                )));
            }
            out.push(match e.kind.as_str() {
                "dir" => {
                    let rpath = join(&rdir, &e.name);
                    let sub = remote_list(c, r, &rpath).await?;
                    let children = plan_dir(c, r, rpath, sub, depth + 1, plan).await?;
                    Node::Dir {
                        name: e.name,
                        children,
                    }
                }
                "file" => {
                    plan.bytes = plan.bytes.saturating_add(e.size);
                    Node::File {
                        name: e.name,
                        size: e.size,
                        mode: e.mode,
                    }
                }
                "symlink" => Node::Link { name: e.name },
                _ => Node::Other { name: e.name },
            });
        }
        Ok(out)
    })
}

fn too_much(what: &str, size: u64, max: u64) -> CliError {
    CliError::failed(format!(
        "{what} is {} ({size} bytes), more than cp writes without --max-bytes (at most {}, {max} bytes); nothing was written",
        bytes(size),
        bytes(max)
    ))
}

/// Streams one remote file into `dir/name` through a fresh temporary file that
/// is renamed into place only when complete, so a refused or broken copy
/// leaves whatever `dir/name` was before.
#[allow(clippy::too_many_arguments)]
async fn get_file(
    c: &Client,
    r: &Runtime,
    remote: &str,
    dir: &local::Dir,
    name: &str,
    mode: Option<u32>,
    max: u64,
    t: &mut Tally,
) -> Result<()> {
    let room = max.saturating_sub(t.bytes);
    let rb = c.request(
        Method::GET,
        &format!(
            "/v1/runtimes/{}/files?path={}&max_bytes={room}",
            r.id,
            enc(remote)
        ),
    )?;
    let mut resp = c.send(rb).await.map_err(|e| with_path(e, remote))?;
    let header = |h: &str| {
        resp.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let announced = header("x-runta-file-size").or(header("content-length"));
    if let Some(size) = announced.filter(|s| *s > room) {
        return Err(too_much(remote, t.bytes.saturating_add(size), max));
    }
    let (mut f, tmp) = dir.create_temp(name).map_err(|e| local_err(dir, name, e))?;
    let outcome: Result<u64> = async {
        use std::io::Write;
        let mut n: u64 = 0;
        while let Some(chunk) = resp.chunk().await.map_err(|e| c.transport(e))? {
            n += chunk.len() as u64;
            if n > room {
                return Err(too_much(remote, t.bytes.saturating_add(n), max));
            }
            f.write_all(&chunk).map_err(|e| local_err(dir, name, e))?;
        }
        if let Some(size) = announced.filter(|s| *s != n) {
            return Err(CliError::failed(format!(
                "{remote}: the daemon announced {size} bytes and sent {n}"
            )));
        }
        // Permissions only, never setuid, setgid or sticky: the bits come from
        // the runtime, and a set-id file owned by root is a root shell here.
        let m = mode.unwrap_or_else(|| 0o666 & !local::umask()) & 0o777;
        local::fchmod(&f, m).map_err(|e| local_err(dir, name, e))?;
        Ok(n)
    }
    .await;
    drop(f);
    let n = match outcome {
        Ok(n) => n,
        Err(e) => {
            dir.remove(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = dir.commit(&tmp, name) {
        dir.remove(&tmp);
        return Err(local_err(dir, name, e));
    }
    t.bytes += n;
    t.files += 1;
    Ok(())
}

fn local_err(dir: &local::Dir, name: &str, e: std::io::Error) -> CliError {
    CliError::failed(format!("{}: {e}", dir.path().join(name).display()))
}

async fn remote_link(c: &Client, r: &Runtime, rpath: &str) -> Result<Option<String>> {
    let res = crate::exec::sh(c, &r.id.to_string(), &format!("readlink -- {}", shq(rpath))).await?;
    let dest = res.stdout.trim_end_matches('\n');
    Ok((res.exit_code == 0 && !dest.is_empty() && !dest.contains('\0')).then(|| dest.to_string()))
}

fn write_nodes<'a>(
    c: &'a Client,
    r: &'a Runtime,
    rdir: String,
    dir: &'a local::Dir,
    nodes: Vec<Node>,
    max: u64,
    t: &'a mut Tally,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>> {
    Box::pin(async move {
        for n in nodes {
            match n {
                Node::Dir { name, children } => {
                    let sub = dir.child_dir(&name).map_err(|e| local_err(dir, &name, e))?;
                    write_nodes(c, r, join(&rdir, &name), &sub, children, max, t).await?;
                }
                Node::File { name, mode, size } => {
                    if t.bytes.saturating_add(size) > max {
                        return Err(too_much(&join(&rdir, &name), t.bytes + size, max));
                    }
                    get_file(c, r, &join(&rdir, &name), dir, &name, Some(mode), max, t).await?;
                }
                Node::Link { name } => {
                    let rpath = join(&rdir, &name);
                    match remote_link(c, r, &rpath).await? {
                        // Kept as a link, never followed: later writes walk
                        // folders with O_NOFOLLOW, so it cannot redirect them.
                        Some(dest) => dir
                            .symlink(&dest, &name)
                            .map_err(|e| local_err(dir, &name, e))?,
                        None => eprintln!("runta: skipping link {rpath}"),
                    }
                }
                Node::Other { name } => eprintln!(
                    "runta: skipping {} (not a file, folder or link)",
                    join(&rdir, &name)
                ),
            }
        }
        Ok(())
    })
}

async fn download(
    c: &Client,
    r: &Runtime,
    from: &str,
    to: &Path,
    max: u64,
    t: &mut Tally,
) -> Result<()> {
    let listing = remote_list(c, r, from).await;
    let Ok(top) = listing else {
        // Not a folder: a file (or the file read says why not).
        let target = if to.is_dir() {
            to.join(base_name(from)?)
        } else {
            to.to_path_buf()
        };
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| CliError::usage(format!("{}: names no file", to.display())))?
            .to_string();
        std::fs::create_dir_all(parent)
            .map_err(|e| CliError::failed(format!("{}: {e}", parent.display())))?;
        let dir = local::Dir::open(parent)
            .map_err(|e| CliError::failed(format!("{}: {e}", parent.display())))?;
        return get_file(c, r, from, &dir, &name, None, max, t).await;
    };
    let rroot = from.trim_end_matches("/.").to_string();
    let mut plan = Plan {
        entries: 0,
        bytes: 0,
    };
    let nodes = plan_dir(c, r, rroot.clone(), top, 0, &mut plan).await?;
    // The sizes come from the runtime and may lie; get_file counts again.
    if plan.bytes > max {
        return Err(too_much(from, plan.bytes, max));
    }
    let contents_only = from.ends_with("/.");
    let root = if to.is_dir() && !contents_only {
        let parent =
            local::Dir::open(to).map_err(|e| CliError::failed(format!("{}: {e}", to.display())))?;
        let name = base_name(from)?;
        parent
            .child_dir(name)
            .map_err(|e| local_err(&parent, name, e))?
    } else {
        std::fs::create_dir_all(to)
            .map_err(|e| CliError::failed(format!("{}: {e}", to.display())))?;
        local::Dir::open(to).map_err(|e| CliError::failed(format!("{}: {e}", to.display())))?
    };
    write_nodes(c, r, rroot, &root, nodes, max, t).await
}

/// Writing under a local folder without following any link found there: each
/// step opens the next component relative to the folder's descriptor with
/// `O_NOFOLLOW`, so a link planted by an earlier copy (or by anyone) cannot
/// send a write elsewhere.
mod local {
    use std::ffi::CString;
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::path::{Path, PathBuf};

    pub struct Dir {
        fd: OwnedFd,
        path: PathBuf,
    }

    fn cstr(s: &str) -> io::Result<CString> {
        CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    }

    fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    }

    pub fn umask() -> u32 {
        // SAFETY: umask only swaps the process mask; it is put back at once.
        unsafe {
            let m = libc::umask(0o022);
            libc::umask(m);
            m as u32
        }
    }

    pub fn fchmod(f: &File, mode: u32) -> io::Result<()> {
        // SAFETY: a valid descriptor owned by `f`.
        check(unsafe { libc::fchmod(f.as_raw_fd(), mode as libc::mode_t) }).map(drop)
    }

    impl Dir {
        /// The destination the user named (links in it are the user's own).
        pub fn open(path: &Path) -> io::Result<Dir> {
            let c = CString::new(path.as_os_str().as_encoded_bytes())
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: a NUL-terminated path; the result is checked.
            let fd = check(unsafe {
                libc::open(
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            })?;
            Ok(Dir {
                // SAFETY: a fresh descriptor nobody else owns.
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
                path: path.to_path_buf(),
            })
        }

        pub fn path(&self) -> &Path {
            &self.path
        }

        /// `name` as a folder inside this one: made if missing, refused if it
        /// is a link or anything but a folder.
        pub fn child_dir(&self, name: &str) -> io::Result<Dir> {
            let c = cstr(name)?;
            // SAFETY: valid descriptor and NUL-terminated name.
            let rc = unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), 0o777) };
            if rc < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: as above.
            let fd = unsafe {
                libc::openat(
                    self.fd.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                let e = io::Error::last_os_error();
                return Err(match e.raw_os_error() {
                    Some(libc::ELOOP) | Some(libc::ENOTDIR) => io::Error::other(
                        "exists and is not a folder (a link or a file); refusing to write through it",
                    ),
                    _ => e,
                });
            }
            Ok(Dir {
                // SAFETY: a fresh descriptor nobody else owns.
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
                path: self.path.join(name),
            })
        }

        /// A new file beside `name`, created exclusively (never an existing
        /// file or link), readable only by the user until it is complete.
        pub fn create_temp(&self, name: &str) -> io::Result<(File, String)> {
            for i in 0u32..100 {
                let tmp = format!(
                    ".{}.runta-part-{}-{i}",
                    name.chars().take(64).collect::<String>(),
                    std::process::id()
                );
                let c = cstr(&tmp)?;
                // SAFETY: valid descriptor and NUL-terminated name.
                let fd = unsafe {
                    libc::openat(
                        self.fd.as_raw_fd(),
                        c.as_ptr(),
                        libc::O_WRONLY
                            | libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_NOFOLLOW
                            | libc::O_CLOEXEC,
                        0o600 as libc::c_uint,
                    )
                };
                if fd >= 0 {
                    // SAFETY: a fresh descriptor nobody else owns.
                    return Ok((unsafe { File::from_raw_fd(fd) }, tmp));
                }
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e);
                }
            }
            Err(io::Error::other("cannot create a temporary file"))
        }

        /// Puts `tmp` in place of `name`. A link at `name` is replaced, not
        /// followed; a folder there is refused.
        pub fn commit(&self, tmp: &str, name: &str) -> io::Result<()> {
            let (a, b) = (cstr(tmp)?, cstr(name)?);
            let fd = self.fd.as_raw_fd();
            // SAFETY: valid descriptor and NUL-terminated names.
            check(unsafe { libc::renameat(fd, a.as_ptr(), fd, b.as_ptr()) }).map(drop)
        }

        pub fn remove(&self, name: &str) {
            if let Ok(c) = cstr(name) {
                // SAFETY: valid descriptor and NUL-terminated name.
                unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) };
            }
        }

        /// A link named `name` pointing at `dest`; an existing file or link of
        /// that name is replaced, a folder is refused.
        pub fn symlink(&self, dest: &str, name: &str) -> io::Result<()> {
            let (d, n) = (cstr(dest)?, cstr(name)?);
            let fd = self.fd.as_raw_fd();
            // SAFETY: valid descriptor and NUL-terminated strings.
            if unsafe { libc::symlinkat(d.as_ptr(), fd, n.as_ptr()) } == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
            // Made beside it and renamed over it, so the swap never follows
            // what is there.
            let tmp = format!(
                ".{}.runta-link-{}",
                name.chars().take(64).collect::<String>(),
                std::process::id()
            );
            let t = cstr(&tmp)?;
            // SAFETY: as above.
            unsafe { libc::unlinkat(fd, t.as_ptr(), 0) };
            // SAFETY: as above.
            check(unsafe { libc::symlinkat(d.as_ptr(), fd, t.as_ptr()) })?;
            self.commit(&tmp, name).inspect_err(|_| self.remove(&tmp))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_from_a_runtime_are_one_plain_component() {
        for bad in [
            "", ".", "..", "../x", "a/b", "/etc", "/", "x\0y", "..\0", "a/../..",
        ] {
            assert!(check_entry_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_entry_name(&"a".repeat(256)).is_err());
        for good in [
            "a",
            ".hidden",
            "...",
            "a..b",
            "-rf",
            "with space",
            "ünï",
            "a\\b",
        ] {
            assert!(check_entry_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("10k").unwrap(), 10 << 10);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn local_writes_never_follow_links() {
        let base = std::env::temp_dir().join(format!("runta-cp-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (dest, outside) = (base.join("dest"), base.join("outside"));
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), dest.join("f")).unwrap();
        let d = local::Dir::open(&dest).unwrap();
        assert!(
            d.child_dir("sub").is_err(),
            "a planted link to a folder is followed"
        );
        let (_f, tmp) = d.create_temp("f").unwrap();
        d.commit(&tmp, "f").unwrap();
        assert!(
            !outside.join("f").exists(),
            "a planted file link is written through"
        );
        assert!(std::fs::symlink_metadata(dest.join("f")).unwrap().is_file());
        std::fs::create_dir(dest.join("keep")).unwrap();
        let (_f, tmp) = d.create_temp("keep").unwrap();
        assert!(
            d.commit(&tmp, "keep").is_err(),
            "a folder is replaced by a file"
        );
        d.remove(&tmp);
        assert!(dest.join("keep").is_dir());
        d.symlink("/etc", "lnk").unwrap();
        d.symlink("/etc/passwd", "lnk").unwrap();
        assert_eq!(
            std::fs::read_link(dest.join("lnk")).unwrap(),
            Path::new("/etc/passwd")
        );
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn locations() {
        assert_eq!(
            parse_loc("worker:/tmp/x").unwrap(),
            Loc::Remote {
                runtime: "worker".into(),
                path: "/tmp/x".into()
            }
        );
        assert_eq!(parse_loc("./a:b").unwrap(), Loc::Local("./a:b".into()));
        assert_eq!(parse_loc("dir/x").unwrap(), Loc::Local("dir/x".into()));
        assert!(parse_loc("worker:tmp").is_err());
    }
}
