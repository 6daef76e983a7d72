//! The user a command runs as: an image config's `User` (`name`, `uid`,
//! `name:group`, `uid:gid`, `uid:group`, `name:gid`) resolved against the
//! runtime's own `/etc/passwd` and `/etc/group`, as Docker and runc do
//! (docs/images.md, "User").
//!
//! Both files were written by the image or by programs in the runtime, so
//! they are read as hostile input: only a regular file on the runtime's root
//! filesystem is read (never through a `/proc` magic link, never across a
//! mount into `/proc`, `/sys`, `/dev` or the agent's own folder), never more
//! than [`MAX_ETC_FILE`] bytes, without blocking, and any bytes (non-UTF-8,
//! NUL, absurd numbers) are tolerated.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};

/// Largest `/etc/passwd` or `/etc/group` the agent reads; anything larger is
/// refused rather than parsed at every command.
pub const MAX_ETC_FILE: u64 = 4 * 1024 * 1024;

/// The kernel's limit on supplementary groups (`NGROUPS_MAX`).
const MAX_GROUPS: usize = 65_536;

/// Who a command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (`setgroups`), from `/etc/group` membership.
    pub groups: Vec<u32>,
    /// The passwd entry's name, when there is one.
    pub name: Option<String>,
    pub home: String,
}

impl Identity {
    /// `HOME`, `USER` and `LOGNAME` for the command, each only when the
    /// environment (image, runtime, caller) does not set it already.
    pub fn fill_env(&self, env: &mut Vec<(String, String)>) {
        let mut add = |k: &str, v: &str| {
            if !env.iter().any(|(key, _)| key == k) {
                env.push((k.to_string(), v.to_string()));
            }
        };
        add("HOME", &self.home);
        if let Some(n) = &self.name {
            add("USER", n);
            add("LOGNAME", n);
        }
    }
}

/// A passwd or group file as read: absent, readable, or refused (why).
#[derive(Debug)]
pub enum EtcFile {
    Missing,
    Data(Vec<u8>),
    Refused(String),
}

/// Reads `/etc/passwd` and `/etc/group` and resolves `spec`.
pub fn resolve(spec: &str) -> Result<Identity, String> {
    resolve_with(spec, &read_etc("/etc/passwd"), &|| read_etc("/etc/group"))
}

/// Resolves `spec` against the given files; `group` is read only when needed.
pub fn resolve_with(
    spec: &str,
    passwd: &EtcFile,
    group: &dyn Fn() -> EtcFile,
) -> Result<Identity, String> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(format!("User {spec:?} names no user"));
    }
    let numeric_uid = numeric(user).transpose()?;
    let entry = match passwd {
        EtcFile::Data(d) => find_passwd(d, user, numeric_uid),
        EtcFile::Missing | EtcFile::Refused(_) => None,
    };
    let mut id = match (entry, numeric_uid) {
        (Some(e), _) => Identity {
            uid: e.uid,
            gid: e.gid,
            groups: vec![],
            home: e.home,
            name: e.name,
        },
        // A numeric user needs no passwd entry (gid 0, HOME=/), as in runc.
        (None, Some(uid)) => Identity {
            uid,
            gid: 0,
            groups: vec![],
            name: None,
            home: "/".into(),
        },
        // `root` is the agent's own identity: an image without a usable
        // entry for it runs as before User was applied (runc would refuse).
        (None, None) if user == "root" => Identity {
            uid: 0,
            gid: 0,
            groups: vec![],
            name: Some("root".into()),
            home: "/root".into(),
        },
        (None, None) => {
            return Err(match passwd {
                EtcFile::Data(_) => {
                    format!("no user {user:?} in the runtime's /etc/passwd")
                }
                EtcFile::Missing => {
                    format!("no user {user:?}: the runtime has no /etc/passwd")
                }
                EtcFile::Refused(why) => {
                    format!("cannot look up user {user:?}: {why}")
                }
            })
        }
    };
    match grp {
        Some(g) => {
            // An explicit group replaces the primary group and brings no
            // supplementary groups (runc's rule).
            id.gid = match numeric(g).transpose()? {
                Some(gid) => gid,
                None => match group() {
                    EtcFile::Data(d) => find_group(&d, g)
                        .ok_or_else(|| format!("no group {g:?} in the runtime's /etc/group"))?,
                    EtcFile::Missing => {
                        return Err(format!("no group {g:?}: the runtime has no /etc/group"))
                    }
                    EtcFile::Refused(why) => {
                        return Err(format!("cannot look up group {g:?}: {why}"))
                    }
                },
            };
        }
        None => {
            // Supplementary groups are extra rights: a missing or unreadable
            // /etc/group means none, never an error.
            if let (Some(name), EtcFile::Data(d)) = (&id.name, group()) {
                id.groups = member_of(&d, name.as_bytes());
            }
        }
    }
    Ok(id)
}

/// `Some(n)` for an all-digit string, an error for one out of range.
fn numeric(s: &str) -> Option<Result<u32, String>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // u32::MAX is (uid_t)-1, "no change" to the kernel: never an id.
    Some(
        s.parse::<u32>()
            .ok()
            .filter(|n| *n != u32::MAX)
            .ok_or_else(|| format!("id {s} is out of range (0 to 4294967294)")),
    )
}

struct PasswdEntry {
    name: Option<String>,
    uid: u32,
    gid: u32,
    home: String,
}

fn id_field(b: &[u8]) -> Option<u32> {
    std::str::from_utf8(b)
        .ok()
        .and_then(numeric)
        .and_then(Result::ok)
}

/// Text for the environment: lossy UTF-8, and never a NUL (which no
/// environment string can carry).
fn text(b: &[u8]) -> Option<String> {
    (!b.contains(&0)).then(|| String::from_utf8_lossy(b).into_owned())
}

/// The first entry named `user` (or, for a numeric user, with that uid);
/// malformed lines are skipped.
fn find_passwd(data: &[u8], user: &str, uid: Option<u32>) -> Option<PasswdEntry> {
    let by_name = data.split(|b| *b == b'\n').find_map(|line| {
        let f: Vec<&[u8]> = line.splitn(7, |b| *b == b':').collect();
        (f.len() >= 4 && f[0] == user.as_bytes())
            .then(|| entry(&f))
            .flatten()
    });
    by_name.or_else(|| {
        let uid = uid?;
        data.split(|b| *b == b'\n').find_map(|line| {
            let f: Vec<&[u8]> = line.splitn(7, |b| *b == b':').collect();
            (f.len() >= 4 && id_field(f[2]) == Some(uid))
                .then(|| entry(&f))
                .flatten()
        })
    })
}

fn entry(f: &[&[u8]]) -> Option<PasswdEntry> {
    let home = f
        .get(5)
        .and_then(|h| text(h))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into());
    Some(PasswdEntry {
        name: text(f[0]).filter(|n| !n.is_empty()),
        uid: id_field(f[2])?,
        gid: id_field(f[3])?,
        home,
    })
}

fn group_lines(data: &[u8]) -> impl Iterator<Item = (&[u8], u32, &[u8])> {
    data.split(|b| *b == b'\n').filter_map(|line| {
        let f: Vec<&[u8]> = line.splitn(4, |b| *b == b':').collect();
        if f.len() < 3 {
            return None;
        }
        Some((f[0], id_field(f[2])?, f.get(3).copied().unwrap_or(b"")))
    })
}

fn find_group(data: &[u8], name: &str) -> Option<u32> {
    group_lines(data).find_map(|(n, gid, _)| (n == name.as_bytes()).then_some(gid))
}

/// Groups whose member list names `user`, in file order, without repeats.
fn member_of(data: &[u8], user: &[u8]) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    for (_, gid, members) in group_lines(data) {
        if out.len() >= MAX_GROUPS {
            break;
        }
        let members = members.strip_suffix(b"\r").unwrap_or(members);
        if members.split(|b| *b == b',').any(|m| m == user) && !out.contains(&gid) {
            out.push(gid);
        }
    }
    out
}

/// Reads one of the runtime's account files without ever blocking or leaving
/// the runtime's root filesystem: `openat2` with `RESOLVE_NO_MAGICLINKS`
/// (no `/proc/1/fd/N`, which would reach the agent's own descriptors) and
/// `RESOLVE_NO_XDEV` (no symlink into `/proc`, `/sys`, `/dev` or another
/// mount), `O_NONBLOCK` (a FIFO never waits for a writer), then only a
/// regular file of at most [`MAX_ETC_FILE`] bytes.
pub fn read_etc(path: &str) -> EtcFile {
    read_at(libc::AT_FDCWD, path)
}

/// [`read_etc`] of `path` relative to the folder `dir` (a descriptor).
fn read_at(dir: libc::c_int, path: &str) -> EtcFile {
    let fd = match open_confined(dir, path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return EtcFile::Missing,
        Err(e) => match e.raw_os_error() {
            Some(libc::EXDEV) => {
                return EtcFile::Refused(format!(
                    "{path} leads out of the runtime's root filesystem"
                ))
            }
            Some(libc::ELOOP) => {
                return EtcFile::Refused(format!("{path} is a symlink loop or a magic link"))
            }
            _ => return EtcFile::Refused(format!("{path}: {e}")),
        },
    };
    let f = std::fs::File::from(fd);
    let meta = match f.metadata() {
        Ok(m) => m,
        Err(e) => return EtcFile::Refused(format!("{path}: {e}")),
    };
    if !meta.is_file() {
        return EtcFile::Refused(format!("{path} is not a regular file"));
    }
    if meta.len() > MAX_ETC_FILE {
        return EtcFile::Refused(format!("{path} is larger than {MAX_ETC_FILE} bytes"));
    }
    let mut data = Vec::new();
    // The size may change under us: never read more than the limit.
    if let Err(e) = f.take(MAX_ETC_FILE + 1).read_to_end(&mut data) {
        return EtcFile::Refused(format!("{path}: {e}"));
    }
    if data.len() as u64 > MAX_ETC_FILE {
        return EtcFile::Refused(format!("{path} is larger than {MAX_ETC_FILE} bytes"));
    }
    EtcFile::Data(data)
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_XDEV: u64 = 0x01;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;

fn open_confined(dir: libc::c_int, path: &str) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    let how = OpenHow {
        flags: flags as u64,
        mode: 0,
        resolve: RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 reads the path and the open_how struct (its size passed
    // along) and returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd >= 0 {
        // SAFETY: a fresh descriptor that nobody else owns.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ENOSYS) {
        return Err(e);
    }
    // Kernels before 5.6: no symlink at all in the last component, and the
    // file must be on the same filesystem as the runtime's root.
    // SAFETY: openat with a valid C string; the result is checked.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_NOFOLLOW) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let f = std::fs::File::from(fd);
    let root = std::fs::metadata("/")?;
    use std::os::unix::fs::MetadataExt;
    if f.metadata()?.dev() != root.dev() {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    Ok(OwnedFd::from(f))
}

/// The identity change, run in the child between fork and exec (raw
/// syscalls only: they act on this one thread, and nothing here allocates).
/// Stdio pipes are given to the user first, as runc does, so that
/// `/dev/stdin` and `/proc/self/fd/1` can be reopened; then the
/// supplementary groups, the gid and last the uid (after `setresuid` away
/// from 0 the others are no longer allowed). Leaving uid 0 makes the kernel
/// clear the permitted, effective and ambient capabilities.
///
/// # Safety
/// Only to be called in a freshly forked child.
pub unsafe fn become_user(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    for fd in 0..3 {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO {
            libc::fchown(fd, uid, u32::MAX);
        }
    }
    if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
        return Err(io::Error::last_os_error());
    }
    if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0 {
        return Err(io::Error::last_os_error());
    }
    if libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n\
app:x:1000:1000:App:/home/app:/bin/sh\n\
broken:x:notanumber:1:::\n\
svc:x:999:999::/srv:/bin/false\n\
toor:x:0:0::/toor:/bin/sh\n";
    const GROUP: &[u8] = b"root:x:0:\n\
app:x:1000:\n\
wheel:x:10:root,app\n\
docker:x:998:svc,app\n\
dup:x:10:app\n\
staff:x:50:\n";

    fn r(spec: &str) -> Result<Identity, String> {
        resolve_with(spec, &EtcFile::Data(PASSWD.to_vec()), &|| {
            EtcFile::Data(GROUP.to_vec())
        })
    }

    #[test]
    fn names_and_numbers() {
        let id = r("app").unwrap();
        assert_eq!((id.uid, id.gid), (1000, 1000));
        assert_eq!(id.groups, vec![10, 998]);
        assert_eq!(id.home, "/home/app");
        assert_eq!(id.name.as_deref(), Some("app"));

        let id = r("1000").unwrap();
        assert_eq!(
            (id.uid, id.gid, id.name.as_deref()),
            (1000, 1000, Some("app"))
        );

        let id = r("4242").unwrap();
        assert_eq!((id.uid, id.gid), (4242, 0));
        assert_eq!((id.home.as_str(), id.name), ("/", None));
        assert!(id.groups.is_empty());

        let id = r("4242:77").unwrap();
        assert_eq!((id.uid, id.gid), (4242, 77));
    }

    #[test]
    fn explicit_groups() {
        let id = r("app:staff").unwrap();
        assert_eq!((id.uid, id.gid), (1000, 50));
        assert!(id.groups.is_empty(), "an explicit group brings no others");
        let id = r("app:5").unwrap();
        assert_eq!(id.gid, 5);
        let id = r("1000:wheel").unwrap();
        assert_eq!((id.uid, id.gid), (1000, 10));
        let id = r("app:").unwrap();
        assert_eq!(id.gid, 1000);
        assert!(r("app:nogroup")
            .unwrap_err()
            .contains("no group \"nogroup\""));
    }

    #[test]
    fn unknown_and_bad() {
        assert!(r("nobody").unwrap_err().contains("no user \"nobody\""));
        assert!(r(":0").is_err());
        assert!(r("4294967295").unwrap_err().contains("out of range"));
        assert!(r("99999999999").unwrap_err().contains("out of range"));
        // The malformed line is skipped, not matched.
        assert!(r("broken").is_err());
    }

    #[test]
    fn uid_zero_under_another_name_is_the_images_choice() {
        let id = r("toor").unwrap();
        assert_eq!((id.uid, id.gid, id.home.as_str()), (0, 0, "/toor"));
    }

    #[test]
    fn missing_or_refused_files() {
        let none = || EtcFile::Missing;
        let id = resolve_with("1000:1000", &EtcFile::Missing, &none).unwrap();
        assert_eq!((id.uid, id.gid), (1000, 1000));
        let refused = EtcFile::Refused("/etc/passwd is not a regular file".into());
        let id = resolve_with("1000", &refused, &none).unwrap();
        assert_eq!((id.uid, id.gid), (1000, 0));
        let e = resolve_with("app", &refused, &none).unwrap_err();
        assert!(e.contains("app") && e.contains("not a regular file"), "{e}");
        let e = resolve_with("app", &EtcFile::Missing, &none).unwrap_err();
        assert!(e.contains("no /etc/passwd"), "{e}");
        let id = resolve_with("root", &EtcFile::Missing, &none).unwrap();
        assert_eq!((id.uid, id.gid, id.home.as_str()), (0, 0, "/root"));
        // A refused /etc/group costs only the supplementary groups.
        let id = resolve_with("app", &EtcFile::Data(PASSWD.to_vec()), &|| {
            EtcFile::Refused("x".into())
        })
        .unwrap();
        assert!(id.groups.is_empty());
    }

    #[test]
    fn hostile_bytes() {
        let mut p = b"\xff\xfe:x:1:1::/h\xffome:/bin/sh\nn\0ul:x:2:2::/h\0:/x\n".to_vec();
        p.extend(std::iter::repeat_n(b':', 100_000));
        p.extend(b"\nz:x:3:3::/z\xff:/bin/sh\r\n");
        let files = EtcFile::Data(p);
        let none = || EtcFile::Data(b"\xff\n:::::\n::\n".to_vec());
        let id = resolve_with("z", &files, &none).unwrap();
        assert_eq!((id.uid, id.gid), (3, 3));
        assert_eq!(id.home, "/z\u{fffd}");
        // NUL never reaches the environment.
        let id = resolve_with("2", &files, &none).unwrap();
        assert_eq!(id.home, "/");
        assert_eq!(id.name, None);
        let mut env = vec![("HOME".to_string(), "/mine".to_string())];
        id.fill_env(&mut env);
        assert_eq!(env, vec![("HOME".to_string(), "/mine".to_string())]);
    }

    #[test]
    fn env_is_filled_only_where_unset() {
        let id = r("app").unwrap();
        let mut env = vec![("USER".to_string(), "me".to_string())];
        id.fill_env(&mut env);
        assert!(env.contains(&("USER".into(), "me".into())));
        assert!(env.contains(&("HOME".into(), "/home/app".into())));
        assert!(env.contains(&("LOGNAME".into(), "app".into())));
    }

    #[test]
    fn read_etc_refuses_what_is_not_a_plain_file() {
        let dir = std::env::temp_dir().join(format!("runta-user-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Relative to the folder: RESOLVE_NO_XDEV also refuses the mount
        // points between / and a test folder.
        let d = std::fs::File::open(&dir).unwrap();
        let at = |name: &str| read_at(std::os::fd::AsRawFd::as_raw_fd(&d), name);
        let c = CString::new(dir.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(matches!(at("fifo"), EtcFile::Refused(m) if m.contains("not a regular")));
        std::fs::File::create(dir.join("big"))
            .unwrap()
            .set_len(MAX_ETC_FILE + 1)
            .unwrap();
        assert!(matches!(at("big"), EtcFile::Refused(m) if m.contains("larger")));
        std::os::unix::fs::symlink("/proc/self/status", dir.join("link")).unwrap();
        assert!(matches!(at("link"), EtcFile::Refused(_)));
        std::os::unix::fs::symlink("/proc/self/fd/0", dir.join("magic")).unwrap();
        assert!(matches!(at("magic"), EtcFile::Refused(_)));
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero")).unwrap();
        assert!(matches!(at("zero"), EtcFile::Refused(_)));
        std::os::unix::fs::symlink("loop", dir.join("loop")).unwrap();
        assert!(matches!(at("loop"), EtcFile::Refused(_)));
        assert!(matches!(at("none"), EtcFile::Missing));
        std::fs::write(dir.join("ok"), PASSWD).unwrap();
        assert!(matches!(at("ok"), EtcFile::Data(d) if d == PASSWD));
        std::os::unix::fs::symlink("ok", dir.join("inside")).unwrap();
        assert!(matches!(at("inside"), EtcFile::Data(d) if d == PASSWD));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
