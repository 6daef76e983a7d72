//! `runta exec`: buffered (`POST …/exec`, piped stdin sent as `stdin`) and
//! interactive / streaming over the exec WebSocket (`-i`, `-t`).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use runta_api::{ClientFrame, ExecRequest, ExecResult, ServerFrame};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{enc, error_from_parts, typed, unreachable_error, Client};
use crate::error::{CliError, Result};
use crate::output::print_json;

pub struct ExecOpts {
    pub name: String,
    pub argv: Vec<String>,
    pub interactive: bool,
    pub tty: bool,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub timeout_secs: u64,
    pub json: bool,
    /// Stdin already read, to stream over the WebSocket (too big or not text
    /// for the buffered route's JSON body).
    pub stdin_data: Option<Vec<u8>>,
}

/// Piped stdin up to this size goes in the buffered exec body (the daemon takes
/// JSON bodies up to 1 MiB); more is streamed over the WebSocket.
const BUFFERED_STDIN_MAX: usize = 512 * 1024;

/// `["sh -c 'x'"]`-style single words with spaces or shell syntax run under
/// `/bin/sh -c`; anything else is an argv.
fn command_and_args(argv: &[String]) -> (String, Option<Vec<String>>) {
    if argv.len() == 1
        && argv[0].contains(|c: char| c.is_whitespace() || "|&;<>()$`\"'*?".contains(c))
    {
        (argv[0].clone(), None)
    } else {
        (argv[0].clone(), Some(argv[1..].to_vec()))
    }
}

/// Piped or redirected stdin is sent along; a terminal or nothing is not.
fn stdin_is_data() -> bool {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return false;
    }
    match nix::sys::stat::fstat(stdin.as_fd()) {
        Ok(st) => {
            let kind = st.st_mode & libc::S_IFMT;
            kind == libc::S_IFIFO || kind == libc::S_IFREG
        }
        Err(_) => false,
    }
}

pub async fn run(c: &Client, mut o: ExecOpts) -> Result<()> {
    let code = if o.interactive || o.tty {
        c.on_runtime(&o.name, |id| ws_exec(c, id, &o)).await?
    } else {
        let data = if stdin_is_data() {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            Some(buf)
        } else {
            None
        };
        match data {
            Some(d) if d.len() > BUFFERED_STDIN_MAX || std::str::from_utf8(&d).is_err() => {
                if o.json {
                    return Err(CliError::usage(
                        "--json needs the buffered exec, which takes stdin only as UTF-8 text up to 512 KiB",
                    ));
                }
                o.stdin_data = Some(d);
                c.on_runtime(&o.name, |id| ws_exec(c, id, &o)).await?
            }
            d => buffered(c, &o, d.map(|d| String::from_utf8(d).unwrap_or_default())).await?,
        }
    };
    // Flush before leaving: process::exit does not.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    if code == 0 {
        Ok(())
    } else {
        Err(CliError::Exit(code))
    }
}

async fn buffered(c: &Client, o: &ExecOpts, stdin: Option<String>) -> Result<i32> {
    let (command, args) = command_and_args(&o.argv);
    let req = ExecRequest {
        command,
        args,
        cwd: o.cwd.clone(),
        env: o.env.clone(),
        stdin,
        timeout_secs: Some(o.timeout_secs),
        max_output_bytes: Some(runta_api::MAX_MAX_OUTPUT_BYTES),
    };
    let v = c
        .on_runtime(&o.name, |id| {
            let req = &req;
            async move {
                c.call(Method::POST, &format!("/v1/runtimes/{id}/exec"), Some(req))
                    .await
            }
        })
        .await?;
    let r: ExecResult = typed(v.clone())?;
    if o.json {
        print_json(&v);
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(r.stdout.as_bytes())?;
        out.flush()?;
        let mut err = std::io::stderr().lock();
        err.write_all(r.stderr.as_bytes())?;
        if r.stdout_truncated || r.stderr_truncated {
            let _ = writeln!(
                err,
                "runta: output was cut at {} per stream",
                crate::output::bytes(runta_api::MAX_MAX_OUTPUT_BYTES)
            );
        }
        if r.timed_out {
            let _ = writeln!(
                err,
                "runta: the command timed out after {} s and was killed (use --timeout)",
                o.timeout_secs
            );
        }
        err.flush()?;
    }
    Ok(r.exit_code)
}

/// Puts the terminal in raw mode and restores it when dropped.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enable() -> Option<Self> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Rows and columns of the terminal on stdin (or stdout).
fn winsize() -> Option<(u16, u16)> {
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes a winsize into the struct we own.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        if rc == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}

fn ws_url(endpoint: &str, path: &str) -> String {
    if let Some(rest) = endpoint.strip_prefix("https://") {
        format!("wss://{rest}{path}")
    } else {
        format!("ws://{}{path}", endpoint.trim_start_matches("http://"))
    }
}

fn frame(f: &ClientFrame) -> Message {
    Message::Text(serde_json::to_string(f).unwrap_or_default().into())
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

async fn ws_exec(c: &Client, id: String, o: &ExecOpts) -> Result<i32> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let url = ws_url(&c.endpoint, &format!("/v1/runtimes/{id}/exec/ws"));
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| CliError::usage(format!("bad endpoint {}: {e}", c.endpoint)))?;
    let auth = HeaderValue::from_str(&format!("Bearer {}", c.token()?))
        .map_err(|_| CliError::usage("the token contains characters that cannot go in a header"))?;
    req.headers_mut().insert("authorization", auth);
    let ws = match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => ws,
        Err(WsError::Http(resp)) => {
            let rid = resp
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            return Err(error_from_parts(resp.status().as_u16(), &rid, &body));
        }
        Err(WsError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Err(unreachable_error(&c.endpoint));
        }
        Err(e) => {
            return Err(CliError::unavailable(format!(
                "exec WebSocket to {}: {e}",
                c.endpoint
            )))
        }
    };
    let (mut sink, mut stream) = ws.split();

    let stdin_tty = std::io::stdin().is_terminal();
    let (rows, cols) = winsize().unwrap_or((24, 80));
    let (command, args) = command_and_args(&o.argv);
    let start = ClientFrame::Start {
        command,
        args,
        env: o.env.clone(),
        cwd: o.cwd.clone(),
        tty: o.tty,
        rows: o.tty.then_some(rows),
        cols: o.tty.then_some(cols),
    };
    sink.send(frame(&start))
        .await
        .map_err(|e| CliError::unavailable(format!("exec WebSocket: {e}")))?;

    // Raw mode only for a real terminal with -t: keys (Ctrl-C too) go to the remote.
    let raw = if o.tty && stdin_tty {
        RawMode::enable()
    } else {
        None
    };

    // Stdin in a thread: blocking reads, chunks over a channel; None is EOF.
    let (tx, mut stdin_rx) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(16);
    if let Some(data) = o.stdin_data.clone() {
        std::thread::spawn(move || {
            for chunk in data.chunks(64 * 1024) {
                if tx.blocking_send(Some(chunk.to_vec())).is_err() {
                    return;
                }
            }
            let _ = tx.blocking_send(None);
        });
    } else if o.interactive {
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(None);
                        break;
                    }
                    Ok(n) => {
                        if tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    } else {
        drop(tx);
    }
    let mut stdin_open = o.interactive || o.stdin_data.is_some();

    use tokio::signal::unix::{signal, SignalKind};
    let mut winch = signal(SignalKind::window_change())?;
    // Without raw mode, Ctrl-C reaches us as SIGINT: pass it on to the remote.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;

    let mut exit: Option<i32> = None;
    let mut remote_error: Option<(String, String)> = None;
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    loop {
        tokio::select! {
            msg = stream.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(b))) => { out.write_all(&b)?; out.flush()?; continue; }
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => { remote_error.get_or_insert(("unavailable".into(), format!("exec WebSocket: {e}"))); break; }
                };
                match serde_json::from_str::<ServerFrame>(&text) {
                    Ok(ServerFrame::Stdout { data_base64 }) => {
                        out.write_all(&B64.decode(data_base64.as_bytes()).unwrap_or_default())?;
                        out.flush()?;
                    }
                    Ok(ServerFrame::Stderr { data_base64 }) => {
                        err.write_all(&B64.decode(data_base64.as_bytes()).unwrap_or_default())?;
                        err.flush()?;
                    }
                    Ok(ServerFrame::Exit { exit_code }) => { exit = Some(exit_code); break; }
                    Ok(ServerFrame::Error { code, message }) => { remote_error = Some((code, message)); }
                    Err(_) => {}
                }
            }
            chunk = stdin_rx.recv(), if stdin_open => {
                match chunk {
                    Some(Some(bytes)) => {
                        if sink.send(Message::Binary(bytes.into())).await.is_err() { break; }
                    }
                    _ => {
                        stdin_open = false;
                        if !o.tty {
                            let _ = sink.send(frame(&ClientFrame::CloseStdin)).await;
                        }
                    }
                }
            }
            _ = winch.recv() => {
                if o.tty {
                    if let Some((rows, cols)) = winsize() {
                        let _ = sink.send(frame(&ClientFrame::Resize { rows, cols })).await;
                    }
                }
            }
            _ = sigint.recv() => {
                let _ = sink.send(frame(&ClientFrame::Signal { signal: "INT".into() })).await;
            }
            _ = sigterm.recv() => {
                let _ = sink.send(frame(&ClientFrame::Signal { signal: "TERM".into() })).await;
            }
        }
    }
    drop(raw);
    let _ = sink.send(Message::Close(None)).await;
    match (exit, remote_error) {
        (Some(code), _) => Ok(code),
        (None, Some((code, message))) => {
            let code = serde_json::from_value(serde_json::Value::String(code.clone()))
                .unwrap_or(runta_api::ErrorCode::Internal);
            Err(CliError::Api(crate::error::ApiError {
                status: 0,
                body: runta_api::ErrorBody {
                    error: runta_api::ErrorDetail {
                        code,
                        message,
                        field: None,
                    },
                    request_id: String::new(),
                },
                human: None,
            }))
        }
        (None, None) => Err(CliError::unavailable(
            "the exec connection closed before the command exited",
        )),
    }
}

/// Runs a small shell script in the runtime (used by `cp` for folders and links).
pub async fn sh(c: &Client, id: &str, script: &str) -> Result<ExecResult> {
    let req = ExecRequest {
        command: "/bin/sh".into(),
        args: Some(vec!["-c".into(), script.into()]),
        ..Default::default()
    };
    let v = c
        .call(
            Method::POST,
            &format!("/v1/runtimes/{}/exec", enc(id)),
            Some(&req),
        )
        .await?;
    typed(v)
}
