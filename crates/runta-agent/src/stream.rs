//! Streaming exec, with or without a pseudo-terminal.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use runta_agent::{tag, ProcessSpec, Request, Response};

use crate::conn::{Conn, Incoming, Writer};
use crate::exec::{command, spawn, spawn_error};
use crate::reaper;

const OUTPUT_GRACE: Duration = Duration::from_millis(200);

fn winsize(rows: u16, cols: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows.max(1),
        ws_col: cols.max(1),
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn open_pty(rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut master = -1;
    let mut slave = -1;
    let ws = winsize(rows, cols);
    // SAFETY: openpty writes two fds into the locals; we take ownership at once.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just returned by openpty and are owned by nobody else.
    unsafe { Ok((OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave))) }
}

fn pump(mut r: impl Read + Send + 'static, w: Writer, t: u8, done: mpsc::Sender<()>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if w.frame(t, &buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = done.send(());
    });
}

pub fn run_streaming(
    c: &mut Conn,
    process: ProcessSpec,
    tty: bool,
    rows: u16,
    cols: u16,
) -> io::Result<()> {
    let (mut cmd, ident) = match command(&process) {
        Ok(c) => c,
        Err((code, msg)) => {
            c.frame(tag::STDERR, format!("{msg}\r\n").as_bytes())?;
            return c.send(&Response::Exited { exit_code: code });
        }
    };
    let (done_tx, done_rx) = mpsc::channel();
    let mut outputs = 0;
    let mut master: Option<File> = None;
    let mut stdin: Option<Box<dyn Write + Send>>;
    let pid;
    if tty {
        let (m, s) = open_pty(rows, cols)?;
        // The terminal belongs to the user the command runs as (its group
        // stays tty), as runc does, so that it can reopen /dev/tty.
        if let Some(id) = &ident {
            // SAFETY: fchown on the slave descriptor we own.
            unsafe {
                libc::fchown(std::os::fd::AsRawFd::as_raw_fd(&s), id.uid, u32::MAX);
            }
        }
        cmd.stdin(Stdio::from(s.try_clone()?))
            .stdout(Stdio::from(s.try_clone()?))
            .stderr(Stdio::from(s));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = match spawn(&mut cmd) {
            Ok(ch) => ch,
            Err(e) => {
                let (code, msg) = spawn_error(&process.argv[0], &e);
                c.frame(tag::STDERR, format!("{msg}\r\n").as_bytes())?;
                return c.send(&Response::Exited { exit_code: code });
            }
        };
        drop(cmd); // closes our copies of the slave side
        pid = child.id() as i32;
        let m = File::from(m);
        pump(m.try_clone()?, c.writer(), tag::STDOUT, done_tx.clone());
        outputs += 1;
        stdin = Some(Box::new(m.try_clone()?));
        master = Some(m);
    } else {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = match spawn(&mut cmd) {
            Ok(ch) => ch,
            Err(e) => {
                let (code, msg) = spawn_error(&process.argv[0], &e);
                c.frame(tag::STDERR, format!("{msg}\n").as_bytes())?;
                return c.send(&Response::Exited { exit_code: code });
            }
        };
        pid = child.id() as i32;
        pump(
            child.stdout.take().expect("piped"),
            c.writer(),
            tag::STDOUT,
            done_tx.clone(),
        );
        pump(
            child.stderr.take().expect("piped"),
            c.writer(),
            tag::STDERR,
            done_tx.clone(),
        );
        outputs += 2;
        stdin = child
            .stdin
            .take()
            .map(|s| Box::new(s) as Box<dyn Write + Send>);
    }
    drop(done_tx);
    c.send(&Response::Started { pid: pid as u32 })?;

    // The waiter reports the exit once output has drained, then closes the
    // socket, which ends the input loop below.
    let writer = c.writer();
    let closer = c.shutdown_handle()?;
    let waiter = std::thread::spawn(move || {
        let code = reaper::wait(pid, None).unwrap_or(-1);
        for _ in 0..outputs {
            if done_rx.recv_timeout(OUTPUT_GRACE).is_err() {
                break;
            }
        }
        let _ = writer.send(&Response::Exited { exit_code: code });
        let _ = closer.shutdown(std::net::Shutdown::Both);
    });

    loop {
        match c.recv() {
            Ok(Some(Incoming::Data(d))) => {
                if let Some(w) = stdin.as_mut() {
                    if w.write_all(&d).is_err() {
                        stdin = None;
                    }
                }
            }
            Ok(Some(Incoming::Eof)) => {
                if tty {
                    if let Some(w) = stdin.as_mut() {
                        let _ = w.write_all(&[4]); // ^D: end of input on a terminal
                    }
                } else {
                    stdin = None;
                }
            }
            Ok(Some(Incoming::Request(Request::Resize { rows, cols }))) => {
                if let Some(m) = &master {
                    let ws = winsize(rows, cols);
                    // SAFETY: TIOCSWINSZ on our pty master with a valid winsize.
                    unsafe {
                        libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(m), libc::TIOCSWINSZ, &ws);
                    }
                }
            }
            Ok(Some(Incoming::Request(Request::Signal { signal }))) => {
                if (1..=64).contains(&signal) {
                    reaper::kill_group(pid, signal);
                }
            }
            Ok(Some(Incoming::Request(_))) => {}
            Ok(None) | Err(_) => {
                // The daemon went away: hang up the session, then make sure.
                if !waiter.is_finished() {
                    reaper::kill_group(pid, libc::SIGHUP);
                    std::thread::sleep(Duration::from_millis(500));
                    if !waiter.is_finished() {
                        reaper::kill_group(pid, libc::SIGKILL);
                    }
                }
                break;
            }
        }
    }
    let _ = waiter.join();
    Ok(())
}
