//! Buffered exec: run to completion (or timeout), capture each stream up to a cap.

use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use runta_agent::{tag, ProcessSpec, Response};

use crate::conn::Conn;
use crate::reaper;

/// How long to keep reading after the command exits, for output still in the
/// pipes. Background processes that keep the pipe open do not hold the reply.
const DRAIN_GRACE: Duration = Duration::from_millis(100);
const CHUNK: usize = 1024 * 1024;

/// Exit code reported when the command timed out (as coreutils `timeout` does).
pub const TIMEOUT_EXIT: i32 = 124;

/// A command ready to start: the program's path and the working directory,
/// both checked; or the (exit code, message) a shell would give.
pub struct Resolved {
    pub program: String,
    pub cwd: String,
}

pub fn resolve(p: &ProcessSpec) -> Result<Resolved, (i32, String)> {
    let Some(program) = p.argv.first() else {
        return Err((127, "runta: empty command".into()));
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
        let search = p
            .env
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
    })
}

/// A `std::process::Command` for the streaming path (which needs pipes or a
/// terminal set up in the child).
pub fn command(p: &ProcessSpec) -> Result<Command, (i32, String)> {
    let r = resolve(p)?;
    let mut cmd = Command::new(&r.program);
    cmd.arg0(&p.argv[0])
        .args(&p.argv[1..])
        .env_clear()
        .envs(p.env.iter().cloned())
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
    Ok(cmd)
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

#[derive(Default)]
struct Capture {
    data: Vec<u8>,
    truncated: bool,
}

fn capture(
    mut r: impl Read + Send + 'static,
    cap: usize,
    done: mpsc::Sender<()>,
) -> Arc<Mutex<Capture>> {
    let out = Arc::new(Mutex::new(Capture::default()));
    let sink = out.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut c = sink.lock().unwrap_or_else(|e| e.into_inner());
                    let room = cap.saturating_sub(c.data.len());
                    let take = room.min(n);
                    c.data.extend_from_slice(&buf[..take]);
                    if take < n {
                        // Beyond the cap bytes are read and dropped, never kept.
                        c.truncated = true;
                    }
                }
            }
        }
        let _ = done.send(());
    });
    out
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
    let child = match crate::spawn::spawn(
        &resolved.program,
        &process.argv,
        &process.env,
        &resolved.cwd,
        stdin.is_some(),
    ) {
        Ok(ch) => ch,
        Err(e) => {
            let (code, msg) = spawn_error(&process.argv[0], &e);
            return finish_early(c, code, msg);
        }
    };
    let pid = child.pid;
    if let (Some(mut w), Some(text)) = (child.stdin, stdin) {
        std::thread::spawn(move || {
            let _ = w.write_all(text.as_bytes());
        });
    }
    let (done_tx, done_rx) = mpsc::channel();
    let out = capture(child.stdout, cap, done_tx.clone());
    let err = capture(child.stderr, cap, done_tx);

    let mut timed_out = false;
    let mut code = match reaper::wait(pid, Some(Duration::from_millis(timeout_ms))) {
        Some(code) => code,
        None => {
            timed_out = true;
            reaper::kill_group(pid, libc::SIGKILL);
            reaper::wait(pid, None).unwrap_or(TIMEOUT_EXIT)
        }
    };
    if timed_out {
        code = TIMEOUT_EXIT;
    }
    let drain_until = Instant::now() + DRAIN_GRACE;
    for _ in 0..2 {
        let left = drain_until.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }

    for (t, cap) in [(tag::STDOUT, &out), (tag::STDERR, &err)] {
        let c_ = cap.lock().unwrap_or_else(|e| e.into_inner());
        if c_.data.is_empty() {
            c.frame(t, b"")?;
        }
        for chunk in c_.data.chunks(CHUNK) {
            c.frame(t, chunk)?;
        }
    }
    let (ot, et) = (
        out.lock().map(|c| c.truncated).unwrap_or(true),
        err.lock().map(|c| c.truncated).unwrap_or(true),
    );
    c.send(&Response::Done {
        exit_code: code,
        stdout_truncated: ot,
        stderr_truncated: et,
        timed_out,
        duration_ms: start.elapsed().as_millis() as u64,
    })
}
