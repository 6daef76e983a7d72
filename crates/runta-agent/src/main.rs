//! `runta-agent`: PID 1 of a Runta runtime.
//!
//! It reaps every zombie in the runtime, forwards SIGTERM to all processes on
//! shutdown, and serves one operation per connection on a unix socket that the
//! daemon reaches through a bind mount. It is deliberately synchronous: a (reused)
//! thread per connection, no async runtime, so it stays a small
//! static binary that costs little memory per runtime.

mod conn;
mod exec;
mod files;
mod pool;
mod reaper;
mod spawn;
mod stream;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::Path;

use runta_agent::{Request, Response, PROTOCOL_VERSION};

const DEFAULT_SOCKET: &str = "/.runta/run/agent.sock";

fn main() {
    let mut args = std::env::args().skip(1);
    let mut socket = DEFAULT_SOCKET.to_string();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--socket" => socket = args.next().unwrap_or_else(|| usage()),
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

    let path = Path::new(&socket);
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("runta-agent: cannot listen on {socket}: {e}");
            std::process::exit(1);
        }
    };
    // Only root (the daemon) may connect.
    let _ = std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600));

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

fn usage() -> ! {
    eprintln!("usage: runta-agent [--socket PATH] [--version]");
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
        Request::WriteFile { path, mode } => files::write(c, &path, mode),
        Request::ListDir { path } => files::list(c, &path),
        Request::Resize { .. } | Request::Signal { .. } => c.send(&Response::Error {
            kind: "invalid_argument".into(),
            message: "resize and signal are only valid after spawn".into(),
        }),
    }
}
