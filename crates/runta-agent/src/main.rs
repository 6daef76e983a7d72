//! `runta-agent`: PID 1 of a Runta runtime.
//!
//! It reaps every zombie in the runtime, forwards SIGTERM to all processes on
//! shutdown, and serves one operation per connection on a unix socket that the
//! daemon created outside the runtime and passed in as a descriptor (see
//! `boot.rs`). It is deliberately synchronous: a (reused)
//! thread per connection, no async runtime, so it stays a small
//! static binary that costs little memory per runtime.

mod boot;
mod conn;
mod exec;
mod files;
mod pool;
mod reaper;
mod spawn;
mod stream;
mod user;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::Path;

use runta_agent::{Request, Response, PROTOCOL_VERSION};

fn main() {
    boot::shield();
    let mut args = std::env::args().skip(1);
    let mut socket: Option<String> = None;
    let mut b = boot::Boot::default();
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            // For running the agent by hand; runtimes get --listen-fd.
            "--socket" => socket = Some(value()),
            "--listen-fd" => b.listen_fd = Some(value().parse().unwrap_or_else(|_| usage())),
            "--hostname" => b.hostname = Some(value()),
            "--ip" => b.ip = Some(value()),
            "--resolv" => b.resolv = Some(value()),
            "--version" => {
                println!(
                    "runta-agent {} (protocol {PROTOCOL_VERSION})",
                    env!("CARGO_PKG_VERSION")
                );
                return;
            }
            _ => usage(),
        }
    }

    // Signals are read from a signalfd in the main loop; block them before any
    // thread exists so every thread inherits the mask.
    reaper::block_signals();
    let signals = match reaper::signal_fd() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("runta-agent: signalfd: {e}");
            std::process::exit(1);
        }
    };

    boot::write_etc(&b);
    let listener = match (b.listen_fd, &socket) {
        (Some(fd), _) => boot::listener(fd),
        (None, Some(socket)) => bind(Path::new(socket)),
        (None, None) => usage(),
    };
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            eprintln!("runta-agent: cannot listen: {e}");
            std::process::exit(1);
        }
    };

    if let Err(e) = listener.set_nonblocking(true) {
        eprintln!("runta-agent: {e}");
        std::process::exit(1);
    }
    let pool = pool::Pool::new();
    // One thread waits for both connections and signals.
    loop {
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: signals.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array for the duration of the call.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue; // EINTR
        }
        if fds[1].revents != 0 {
            reaper::handle_signals(&signals);
        }
        if fds[0].revents == 0 {
            continue;
        }
        loop {
            match listener.accept() {
                // Accepted sockets are blocking whatever the listener is.
                Ok((s, _)) => pool.run(move || {
                    let mut c = conn::Conn::new(s);
                    if let Err(e) = serve(&mut c) {
                        let _ = c.send(&Response::Error {
                            kind: "io".into(),
                            message: e.to_string(),
                        });
                    }
                }),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // Out of fds or memory: do not spin on a listener that
                    // stays readable.
                    eprintln!("runta-agent: accept: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    break;
                }
            }
        }
    }
}

fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    // Only root may connect.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(l)
}

fn usage() -> ! {
    eprintln!(
        "usage: runta-agent (--listen-fd FD | --socket PATH) [--hostname NAME [--ip ADDR]] [--resolv TEXT] | --version"
    );
    std::process::exit(2)
}

fn serve(c: &mut conn::Conn) -> std::io::Result<()> {
    let req = match c.recv_request()? {
        Some(r) => r,
        None => return Ok(()),
    };
    match req {
        Request::Hello => c.send(&Response::Hello {
            version: PROTOCOL_VERSION,
            pid: std::process::id(),
        }),
        Request::Exec {
            process,
            stdin,
            timeout_ms,
            max_output_bytes,
        } => exec::run_buffered(c, process, stdin, timeout_ms, max_output_bytes),
        Request::Spawn {
            process,
            tty,
            rows,
            cols,
        } => stream::run_streaming(c, process, tty, rows, cols),
        Request::ReadFile { path } => files::read(c, &path),
        Request::WriteFile { path, mode, user } => files::write(c, &path, mode, user.as_deref()),
        Request::ListDir { path } => files::list(c, &path),
        Request::Resize { .. } | Request::Signal { .. } => c.send(&Response::Error {
            kind: "invalid_argument".into(),
            message: "resize and signal are only valid after spawn".into(),
        }),
    }
}
