//! Signal handling for PID 1: reaps every child (ours and orphans re-parented to
//! us) and hands exit statuses to whoever waits for a given pid.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Statuses that arrived before anyone asked for them; bounded so orphans reaped
/// for nobody cannot grow it without end.
const MAX_UNCLAIMED: usize = 4096;

struct Table {
    statuses: HashMap<i32, i32>,
    order: VecDeque<i32>,
}

fn table() -> &'static (Mutex<Table>, Condvar) {
    static T: OnceLock<(Mutex<Table>, Condvar)> = OnceLock::new();
    T.get_or_init(|| {
        (
            Mutex::new(Table {
                statuses: HashMap::new(),
                order: VecDeque::new(),
            }),
            Condvar::new(),
        )
    })
}

fn handled_set() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local, zero-initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

pub fn block_signals() {
    let set = handled_set();
    // SAFETY: blocks signals for the calling (main) thread; threads inherit it.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// A non-blocking signalfd for the signals PID 1 handles (blocked first with
/// [`block_signals`]); the main loop polls it beside the listening socket, so
/// no thread is kept just to wait for signals.
pub fn signal_fd() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let set = handled_set();
    // SAFETY: signalfd on a valid set; the fd is owned right after.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Handles every signal queued on `fd`: reaps on SIGCHLD, shuts down on the others.
pub fn handle_signals(fd: &impl std::os::fd::AsRawFd) {
    loop {
        // SAFETY: signalfd_siginfo is plain data; read fills at most its size.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                std::mem::size_of::<libc::signalfd_siginfo>(),
            )
        };
        if n != std::mem::size_of::<libc::signalfd_siginfo>() as isize {
            return; // EAGAIN: nothing more queued
        }
        match info.ssi_signo as i32 {
            libc::SIGCHLD => reap_all(),
            _ => shutdown(),
        }
    }
}

fn reap_all() {
    let (lock, cv) = table();
    let mut any = false;
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: plain waitpid on any child, non-blocking.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            continue;
        };
        let mut t = lock.lock().unwrap_or_else(|e| e.into_inner());
        t.statuses.insert(pid, code);
        t.order.push_back(pid);
        while t.order.len() > MAX_UNCLAIMED {
            if let Some(old) = t.order.pop_front() {
                t.statuses.remove(&old);
            }
        }
        any = true;
    }
    if any {
        cv.notify_all();
    }
}

/// Waits for `pid` to exit, up to `timeout` (None = forever). Returns its exit
/// code (128+signal when killed by one).
pub fn wait(pid: i32, timeout: Option<Duration>) -> Option<i32> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let (lock, cv) = table();
    let mut t = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(code) = t.statuses.remove(&pid) {
            t.order.retain(|p| *p != pid);
            return Some(code);
        }
        match deadline {
            None => t = cv.wait(t).unwrap_or_else(|e| e.into_inner()),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return None;
                }
                t = cv
                    .wait_timeout(t, d - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }
}

/// SIGTERM to PID 1: pass it to every process, give them a moment, then exit
/// (which makes the kernel kill whatever is left in the namespace).
fn shutdown() {
    // SAFETY: signalling all processes we can see (our PID namespace).
    unsafe {
        libc::kill(-1, libc::SIGTERM);
    }
    std::thread::spawn(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            reap_all();
            // SAFETY: probe whether any child remains.
            let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
            if r < 0 {
                break; // ECHILD: nothing left
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::process::exit(0);
    });
}

pub fn kill_group(pgid: i32, sig: i32) {
    // SAFETY: signal a process group we created.
    unsafe {
        libc::kill(-pgid, sig);
    }
}
