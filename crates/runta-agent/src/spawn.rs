//! Starting a command with `posix_spawn`: glibc creates the child with
//! `CLONE_VM | CLONE_VFORK`, so no page tables are copied, which makes a spawn
//! several times cheaper than the fork that `std::process::Command` falls back
//! to in a static binary. The child starts with no signal blocked and every
//! signal at its default action, in a new process group, in `cwd`.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub struct Spawned {
    pub pid: i32,
    pub stdin: Option<File>,
    pub stdout: File,
    pub stderr: File,
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argument"))
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned by nobody else.
    unsafe { Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))) }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// Spawns `program` (an absolute path) with `argv` and `env`, stdout and stderr
/// to fresh pipes, stdin from a pipe when `piped_stdin`, else /dev/null.
pub fn spawn(
    program: &str,
    argv: &[String],
    env: &[(String, String)],
    cwd: &str,
    piped_stdin: bool,
) -> io::Result<Spawned> {
    let prog = cstr(program)?;
    let argv_c: Vec<CString> = argv.iter().map(|a| cstr(a)).collect::<io::Result<_>>()?;
    let env_c: Vec<CString> = env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect::<io::Result<_>>()?;
    let cwd_c = cstr(cwd)?;
    let mut argv_p: Vec<*mut libc::c_char> = argv_c.iter().map(|c| c.as_ptr() as *mut _).collect();
    argv_p.push(std::ptr::null_mut());
    let mut env_p: Vec<*mut libc::c_char> = env_c.iter().map(|c| c.as_ptr() as *mut _).collect();
    env_p.push(std::ptr::null_mut());

    let (in_r, in_w): (OwnedFd, Option<OwnedFd>) = if piped_stdin {
        let (r, w) = pipe()?;
        (r, Some(w))
    } else {
        let null = File::options().read(true).open("/dev/null")?;
        (OwnedFd::from(null), None)
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;

    // SAFETY: the attr and file-action objects are initialised before use and
    // destroyed on every path; every pointer passed lives until posix_spawn returns.
    unsafe {
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut at: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut fa))?;
        if let Err(e) = check(libc::posix_spawnattr_init(&mut at)) {
            libc::posix_spawn_file_actions_destroy(&mut fa);
            return Err(e);
        }
        let result = (|| -> io::Result<i32> {
            for (fd, target) in [
                (in_r.as_raw_fd(), 0),
                (out_w.as_raw_fd(), 1),
                (err_w.as_raw_fd(), 2),
            ] {
                check(libc::posix_spawn_file_actions_adddup2(
                    &mut fa,
                    fd as RawFd,
                    target,
                ))?;
            }
            check(libc::posix_spawn_file_actions_addchdir_np(
                &mut fa,
                cwd_c.as_ptr(),
            ))?;
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            check(libc::posix_spawnattr_setsigmask(&mut at, &empty))?;
            check(libc::posix_spawnattr_setsigdefault(&mut at, &all))?;
            check(libc::posix_spawnattr_setpgroup(&mut at, 0))?;
            check(libc::posix_spawnattr_setflags(
                &mut at,
                (libc::POSIX_SPAWN_SETSIGMASK
                    | libc::POSIX_SPAWN_SETSIGDEF
                    | libc::POSIX_SPAWN_SETPGROUP) as _,
            ))?;
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &mut pid,
                prog.as_ptr(),
                &fa,
                &at,
                argv_p.as_ptr(),
                env_p.as_ptr(),
            ))?;
            Ok(pid)
        })();
        libc::posix_spawn_file_actions_destroy(&mut fa);
        libc::posix_spawnattr_destroy(&mut at);
        let pid = result?;
        Ok(Spawned {
            pid,
            stdin: in_w.map(File::from),
            stdout: File::from(out_r),
            stderr: File::from(err_r),
        })
    }
}
