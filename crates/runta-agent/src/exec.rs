//! Buffered exec: run to completion (or timeout), forward each stream up to a cap.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use runta_agent::{tag, ProcessSpec, Response};

use crate::conn::{Conn, Writer};
use crate::reaper;
use crate::user::Identity;

/// How long to keep reading after the command exits, for output still in the
/// pipes. Background processes that keep the pipe open do not hold the reply.
const DRAIN_GRACE: Duration = Duration::from_millis(100);
/// How long one write of output to the daemon may block.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Exit code reported when the command timed out (as coreutils `timeout` does).
pub const TIMEOUT_EXIT: i32 = 124;

/// A command ready to start: the program's path and the working directory,
/// both checked, the environment, and the user it runs as (`None`: as the
/// agent, root); or the (exit code, message) a shell would give.
pub struct Resolved {
    pub program: String,
    pub cwd: String,
    pub env: Vec<(String, String)>,
    pub ident: Option<Identity>,
}

pub fn resolve(p: &ProcessSpec) -> Result<Resolved, (i32, String)> {
    let Some(program) = p.argv.first() else {
        return Err((127, "runta: empty command".into()));
    };
    let mut env = p.env.clone();
    // Looked up at every command, as `docker exec` does: a user added in the
    // runtime (useradd) is found without a restart.
    let ident = match p.user.as_deref() {
        None => None,
        Some(u) => match crate::user::resolve(u) {
            Ok(id) => {
                id.fill_env(&mut env);
                Some(id)
            }
            Err(e) => {
                return Err((
                    126,
                    format!("runta: cannot run as the image's User {u:?}: {e}"),
                ))
            }
        },
    };
    let cwd = p.cwd.as_deref().unwrap_or("/");
    match std::fs::metadata(cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err((126, format!("runta: cwd {cwd}: Not a directory"))),
        Err(e) => return Err((126, format!("runta: cwd {cwd}: {e}"))),
    }
    // Resolve the program ourselves: a missing one is exit 127 like a shell's,
    // without starting anything.
    let path = if program.contains('/') {
        let full = std::path::Path::new(cwd).join(program);
        match std::fs::metadata(&full) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err((127, format!("runta: {program}: No such file or directory")))
            }
            Ok(m) if m.is_dir() => return Err((126, format!("runta: {program}: Is a directory"))),
            _ => full.to_string_lossy().into_owned(),
        }
    } else {
        let search = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or("/usr/local/bin:/usr/bin:/bin");
        match search
            .split(':')
            .map(|d| std::path::Path::new(d).join(program))
            .find(|c| c.is_file())
        {
            Some(found) => found.to_string_lossy().into_owned(),
            None => return Err((127, format!("runta: {program}: command not found"))),
        }
    };
    Ok(Resolved {
        program: path,
        cwd: cwd.to_string(),
        env,
        ident,
    })
}

/// A `std::process::Command` for the streaming path (which needs pipes or a
/// terminal set up in the child), and for every command that runs as an
/// image's user (`posix_spawn` cannot change the user). Also returns the
/// identity, for the terminal's owner.
pub fn command(p: &ProcessSpec) -> Result<(Command, Option<Identity>), (i32, String)> {
    let r = resolve(p)?;
    Ok((build(p, &r), r.ident))
}

fn build(p: &ProcessSpec, r: &Resolved) -> Command {
    let mut cmd = Command::new(&r.program);
    cmd.arg0(&p.argv[0])
        .args(&p.argv[1..])
        .env_clear()
        .envs(r.env.iter().cloned())
        .current_dir(&r.cwd);
    // The agent blocks the signals it handles with sigwait; a child must start
    // with none blocked, or SIGINT/SIGTERM would never reach it.
    // SAFETY: pthread_sigmask on a local empty set is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    if let Some(id) = &r.ident {
        let (uid, gid, groups) = (id.uid, id.gid, id.groups.clone());
        // SAFETY: become_user makes raw syscalls only, on data prepared here.
        unsafe {
            cmd.pre_exec(move || crate::user::become_user(uid, gid, &groups));
        }
    }
    cmd
}

/// Spawns, turning a panic inside std's spawn into an error. (When exec fails,
/// std waits for the child and asserts that the wait succeeds; our PID-1 reaper
/// may have reaped it first.)
pub fn spawn(cmd: &mut Command) -> io::Result<std::process::Child> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cmd.spawn()))
        .unwrap_or_else(|_| Err(io::Error::other("could not start the command")))
}

pub fn spawn_error(program: &str, e: &io::Error) -> (i32, String) {
    let code = match e.kind() {
        io::ErrorKind::NotFound => 127,
        _ => 126,
    };
    (code, format!("runta: {program}: {e}"))
}

/// A buffered command as the image's user: forked by std with the identity
/// change in the child, in its own process group like `spawn::spawn`.
fn spawn_as_user(
    p: &ProcessSpec,
    r: &Resolved,
    piped_stdin: bool,
) -> io::Result<crate::spawn::Spawned> {
    use std::process::Stdio;
    let mut cmd = build(p, r);
    cmd.stdin(if piped_stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = spawn(&mut cmd)?;
    let file = |fd: OwnedFd| File::from(fd);
    let stdout = child.stdout.take().map(|s| file(s.into()));
    let stderr = child.stderr.take().map(|s| file(s.into()));
    let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
        return Err(io::Error::other("no output pipes"));
    };
    Ok(crate::spawn::Spawned {
        pid: child.id() as i32,
        stdin: child.stdin.take().map(|s| file(s.into())),
        stdout,
        stderr,
    })
}

/// One output stream of a buffered exec, forwarded to the daemon as it is
/// read (so the agent holds no output: a command printing its whole cap costs
/// the runtime's memory nothing), up to the cap; the rest is read and dropped.
struct Capture {
    tag: u8,
    writer: Writer,
    sent: usize,
    truncated: bool,
    cap: usize,
    /// The daemon stopped reading (it gave up on the call): the command still
    /// runs to its end, its output goes nowhere.
    broken: bool,
}

impl Capture {
    fn new(tag: u8, writer: Writer, cap: usize) -> Self {
        Capture {
            tag,
            writer,
            sent: 0,
            truncated: false,
            cap,
            broken: false,
        }
    }

    fn take(&mut self, bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.sent);
        let n = room.min(bytes.len());
        if n < bytes.len() {
            // Beyond the cap bytes are read and dropped, never kept.
            self.truncated = true;
        }
        if n == 0 || self.broken {
            return;
        }
        if self.writer.frame(self.tag, &bytes[..n]).is_err() {
            self.broken = true;
        }
        self.sent += n;
    }
}

/// A pidfd for `pid` (readable once it exits), or `None` when it already
/// exited and was reaped (or the kernel has no pidfds).
fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative result is a fresh fd that we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn set_nonblocking(fd: &impl AsRawFd) {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// How a buffered command ended.
struct Ended {
    code: i32,
    timed_out: bool,
}

/// Feeds stdin, reads both outputs and watches for the exit, all in this thread
/// with `poll` (no helper threads per command). Returns once the command has
/// exited and its pipes are drained (or the drain grace is over), or once the
/// timeout killed its process group.
fn supervise(
    pid: i32,
    mut stdin: Option<(File, Vec<u8>)>,
    stdout: File,
    stderr: File,
    out: &mut Capture,
    err: &mut Capture,
    deadline: Instant,
) -> Ended {
    let pfd = pidfd(pid);
    let mut ended: Option<(Ended, Instant)> = None;
    if pfd.is_none() {
        // Already reaped (or no pidfds): the reaper has, or will have, its status.
        if let Some(code) = reaper::wait(
            pid,
            Some(deadline.saturating_duration_since(Instant::now())),
        ) {
            ended = Some((
                Ended {
                    code,
                    timed_out: false,
                },
                Instant::now(),
            ));
        }
    }
    if let Some((w, _)) = &stdin {
        set_nonblocking(w);
    }
    let mut written = 0usize;
    let mut pipes: [Option<File>; 2] = [Some(stdout), Some(stderr)];
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        let wait = match &ended {
            Some((_, at)) => {
                if pipes.iter().all(Option::is_none) || now >= *at + DRAIN_GRACE {
                    break;
                }
                *at + DRAIN_GRACE - now
            }
            None if now >= deadline => {
                reaper::kill_group(pid, libc::SIGKILL);
                reaper::wait(pid, None);
                ended = Some((
                    Ended {
                        code: TIMEOUT_EXIT,
                        timed_out: true,
                    },
                    Instant::now(),
                ));
                stdin = None;
                continue;
            }
            // Without a pidfd, look at the reaper's table every 10 ms.
            None if pfd.is_none() => (deadline - now).min(Duration::from_millis(10)),
            None => deadline - now,
        };
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(4);
        let mut what: Vec<u8> = Vec::with_capacity(4);
        for (i, p) in pipes.iter().enumerate() {
            if let Some(f) = p {
                fds.push(libc::pollfd {
                    fd: f.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                what.push(i as u8);
            }
        }
        if ended.is_none() {
            if let Some(p) = &pfd {
                fds.push(libc::pollfd {
                    fd: p.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                what.push(2);
            }
            if let Some((w, _)) = &stdin {
                fds.push(libc::pollfd {
                    fd: w.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                });
                what.push(3);
            }
        }
        let ms = wait.as_millis().min(i32::MAX as u128) as i32;
        // Round up so a sub-millisecond wait does not spin.
        let ms = if ms == 0 && !wait.is_zero() { 1 } else { ms };
        // SAFETY: fds is a valid array of pollfd for the call's duration.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if ended.is_none() && pfd.is_none() {
            if let Some(code) = reaper::wait(pid, Some(Duration::ZERO)) {
                ended = Some((
                    Ended {
                        code,
                        timed_out: false,
                    },
                    Instant::now(),
                ));
            }
        }
        for (fd, w) in fds.iter().zip(&what) {
            if fd.revents == 0 {
                continue;
            }
            match *w {
                i @ (0 | 1) => {
                    let i = i as usize;
                    let Some(f) = pipes[i].as_mut() else { continue };
                    match f.read(&mut buf) {
                        Ok(0) => pipes[i] = None,
                        Ok(k) => {
                            if i == 0 {
                                out.take(&buf[..k])
                            } else {
                                err.take(&buf[..k])
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => pipes[i] = None,
                    }
                }
                2 => {
                    // Exited; the reaper hands over its status (it may be
                    // reaping it right now).
                    let code = reaper::wait(pid, None).unwrap_or(TIMEOUT_EXIT);
                    ended = Some((
                        Ended {
                            code,
                            timed_out: false,
                        },
                        Instant::now(),
                    ));
                    stdin = None;
                }
                _ => {
                    let Some((wr, data)) = stdin.as_mut() else {
                        continue;
                    };
                    match wr.write(&data[written..]) {
                        Ok(k) => {
                            written += k;
                            if written >= data.len() {
                                stdin = None; // all sent: close, so the command sees EOF
                            }
                        }
                        Err(e)
                            if e.kind() == io::ErrorKind::WouldBlock
                                || e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => stdin = None, // the command closed its stdin
                    }
                }
            }
        }
    }
    ended.map(|(e, _)| e).unwrap_or(Ended {
        code: TIMEOUT_EXIT,
        timed_out: true,
    })
}

pub fn run_buffered(
    c: &mut Conn,
    process: ProcessSpec,
    stdin: Option<String>,
    timeout_ms: u64,
    max_output_bytes: u64,
) -> io::Result<()> {
    let start = Instant::now();
    let cap = max_output_bytes.min(usize::MAX as u64) as usize;
    let finish_early = |c: &mut Conn, code: i32, msg: String| -> io::Result<()> {
        c.frame(tag::STDOUT, b"")?;
        c.frame(tag::STDERR, format!("{msg}\n").as_bytes())?;
        c.send(&Response::Done {
            exit_code: code,
            stdout_truncated: false,
            stderr_truncated: false,
            timed_out: false,
            duration_ms: start.elapsed().as_millis() as u64,
        })
    };
    let resolved = match resolve(&process) {
        Ok(r) => r,
        Err((code, msg)) => return finish_early(c, code, msg),
    };
    let spawned = if resolved.ident.is_some() {
        spawn_as_user(&process, &resolved, stdin.is_some())
    } else {
        crate::spawn::spawn(
            &resolved.program,
            &process.argv,
            &resolved.env,
            &resolved.cwd,
            stdin.is_some(),
        )
    };
    let child = match spawned {
        Ok(ch) => ch,
        Err(e) => {
            let (code, msg) = spawn_error(&process.argv[0], &e);
            return finish_early(c, code, msg);
        }
    };
    // A daemon that stops reading must not stall the supervision (and with
    // it the timeout): writes give up after a while and output is dropped.
    if let Ok(h) = c.shutdown_handle() {
        let _ = h.set_write_timeout(Some(SEND_TIMEOUT));
    }
    let (mut out, mut err) = (
        Capture::new(tag::STDOUT, c.writer(), cap),
        Capture::new(tag::STDERR, c.writer(), cap),
    );
    let ended = supervise(
        child.pid,
        child.stdin.zip(stdin.map(String::into_bytes)),
        child.stdout,
        child.stderr,
        &mut out,
        &mut err,
        start + Duration::from_millis(timeout_ms),
    );

    for cap in [&out, &err] {
        if cap.sent == 0 {
            c.frame(cap.tag, b"")?;
        }
    }
    c.send(&Response::Done {
        exit_code: ended.code,
        stdout_truncated: out.truncated,
        stderr_truncated: err.truncated,
        timed_out: ended.timed_out,
        duration_ms: start.elapsed().as_millis() as u64,
    })
}
