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

    // Signals are handled by one thread with sigwait; block them everywhere else
    // before any thread exists so every thread inherits the mask.
    reaper::block_signals();
    reaper::spawn_signal_thread();

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

    let pool = pool::Pool::new();
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                pool.run(move || {
                    let mut c = conn::Conn::new(s);
                    if let Err(e) = serve(&mut c) {
                        let _ = c.send(&Response::Error {
                            kind: "io".into(),
                            message: e.to_string(),
                        });
                    }
                });
            }
            Err(e) => eprintln!("runta-agent: accept: {e}"),
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
