//! Exec routes: buffered (`POST …/exec`) and interactive (`GET …/exec/ws`).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::StreamExt;
use runta_api::{ClientFrame, Data, ExecRequest, ExecResult, ServerFrame};

use super::error::ApiResult;
use super::extract::ApiJson;
use super::AppState;
use crate::auth::Principal;
use crate::manager::{EncodedExec, Error, ExecInput, ExecOutput, ExecSession, ExecStart};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[utoipa::path(post, path = "/v1/runtimes/{id}/exec", tag = "exec",
    params(("id" = String, Path, description = "UUID or name")),
    request_body = ExecRequest,
    responses((status = 200, body = Data<ExecResult>), (status = 409, body = runta_api::ErrorBody, description = "Runtime not running")))]
pub async fn exec(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> ApiResult<Response> {
    let r = state.manager.exec(&p.tenant, &id, req).await?;
    Ok(exec_reply(r))
}

/// Writes `{"data": ExecResult}` around output that is already escaped, so the
/// reply costs no copy beyond the bounded buffers (docs/security.md, item 7).
/// The budget those buffers hold is given back once the body has been sent.
fn exec_reply(r: EncodedExec) -> Response {
    let head = format!("{{\"data\":{{\"exit_code\":{},\"stdout\":\"", r.exit_code);
    let tail = format!(
        "\",\"stdout_truncated\":{},\"stderr_truncated\":{},\"duration_ms\":{},\"timed_out\":{}}}}}",
        r.stdout_truncated, r.stderr_truncated, r.duration_ms, r.timed_out
    );
    let held = r.held;
    let chunks = [
        Bytes::from(head),
        Bytes::from(r.stdout),
        Bytes::from_static(b"\",\"stderr\":\""),
        Bytes::from(r.stderr),
        Bytes::from(tail),
    ];
    let len: usize = chunks.iter().map(|c| c.len()).sum();
    let body = futures_util::stream::iter(chunks.map(Ok::<_, std::convert::Infallible>)).chain(
        futures_util::stream::once(async move {
            drop(held);
            Ok(Bytes::new())
        }),
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, len)
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[utoipa::path(get, path = "/v1/runtimes/{id}/exec/ws", tag = "exec",
    params(("id" = String, Path, description = "UUID or name")),
    responses((status = 101, description = "WebSocket: client sends `start`, then `stdin`/`resize`/`signal`/`close_stdin`; server sends `stdout`/`stderr`/`exit`/`error` (see ClientFrame, ServerFrame)")))]
pub async fn exec_ws(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    upgrade(state, p, id, ws, WsDialect::Ours).await
}

/// Which spelling of the exec WebSocket a route speaks. `/exec/stream` is the
/// official client's: its exit frame is `{"type":"exit","code"}` and the server
/// sends `{"type":"heartbeat"}` every [`HEARTBEAT`], which the client echoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WsDialect {
    Ours,
    Stream,
}

/// How often `/exec/stream` sends a heartbeat frame.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(15);

/// Resolves the runtime, upgrades, and serves one command in `dialect`.
pub(super) async fn upgrade(
    state: AppState,
    p: Principal,
    id: String,
    ws: WebSocketUpgrade,
    dialect: WsDialect,
) -> ApiResult<Response> {
    // Resolve now so a wrong name is a plain 404 and a paused or shut-down
    // runtime a plain 409, before the upgrade.
    let session = state.manager.exec_session(&p.tenant, &id).await?;
    let manager = state.manager.clone();
    Ok(ws
        .protocols(["runta-v1"])
        .max_message_size(8 * 1024 * 1024)
        .on_upgrade(move |mut socket| async move {
            // A token revoked while the session runs ends it (and with it the
            // command): revocation takes effect at once, here too.
            let served = tokio::select! {
                r = serve_ws(&mut socket, session, dialect) => r,
                _ = manager.token_revoked(&p.token_id) => Err(Error::Unauthenticated(
                    "the token of this session was revoked".into(),
                )),
            };
            if let Err(e) = served {
                let e = crate::api::error::ApiError::from(e);
                let _ = send(
                    &mut socket,
                    &ServerFrame::Error {
                        code: e.code.to_string(),
                        message: e.message,
                    },
                )
                .await;
            }
            let _ = socket.send(Message::Close(None)).await;
        }))
}

async fn send_exit(
    socket: &mut WebSocket,
    dialect: WsDialect,
    exit_code: i32,
) -> Result<(), axum::Error> {
    match dialect {
        WsDialect::Ours => send(socket, &ServerFrame::Exit { exit_code }).await,
        WsDialect::Stream => {
            let f = serde_json::json!({"type": "exit", "code": exit_code, "exit_code": exit_code});
            socket.send(Message::Text(f.to_string().into())).await
        }
    }
}

async fn send(socket: &mut WebSocket, f: &ServerFrame) -> Result<(), axum::Error> {
    socket
        .send(Message::Text(
            serde_json::to_string(f).unwrap_or_default().into(),
        ))
        .await
}

fn parse_signal(v: &serde_json::Value) -> Option<i32> {
    if let Some(n) = v.as_i64() {
        return (1..=64).contains(&n).then_some(n as i32);
    }
    let s = v.as_str()?.trim().to_ascii_uppercase();
    let s = s.strip_prefix("SIG").unwrap_or(&s);
    Some(match s {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "WINCH" => libc::SIGWINCH,
        _ => return None,
    })
}

async fn serve_ws(
    socket: &mut WebSocket,
    session: ExecSession,
    dialect: WsDialect,
) -> Result<(), Error> {
    // The first frame must be `start`.
    let first = tokio::time::timeout(Duration::from_secs(30), socket.recv())
        .await
        .map_err(|_| Error::invalid("start", "no start frame within 30 s"))?;
    let start: ClientFrame = match first {
        Some(Ok(Message::Text(t))) => serde_json::from_str(&t)
            .map_err(|e| Error::invalid("start", format!("malformed frame: {e}")))?,
        _ => return Ok(()),
    };
    let ClientFrame::Start {
        command,
        args,
        env,
        cwd,
        tty,
        rows,
        cols,
    } = start
    else {
        return Err(Error::invalid(
            "type",
            "the first frame must be of type start",
        ));
    };
    let mut process = session
        .start(ExecStart {
            command,
            args,
            env,
            cwd,
            tty,
            rows,
            cols,
        })
        .await?;

    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        tokio::select! {
            _ = beat.tick(), if dialect == WsDialect::Stream => {
                let f = Message::Text(r#"{"type":"heartbeat"}"#.into());
                if socket.send(f).await.is_err() {
                    return Ok(());
                }
            }
            out = process.output() => {
                let Some(out) = out else {
                    return Err(Error::Unavailable("the runtime's agent went away".into()));
                };
                let msg = match out {
                    ExecOutput::Stdout(d) => ServerFrame::Stdout { data_base64: B64.encode(&d) },
                    ExecOutput::Stderr(d) => ServerFrame::Stderr { data_base64: B64.encode(&d) },
                    ExecOutput::Exited(exit_code) => {
                        let _ = send_exit(socket, dialect, exit_code).await;
                        return Ok(());
                    }
                    ExecOutput::Error { code, message } => ServerFrame::Error { code, message },
                };
                if send(socket, &msg).await.is_err() {
                    return Ok(());
                }
            }
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(b))) => {
                        // Raw bytes are stdin too (cheaper than base64 for terminals).
                        if process.send(ExecInput::Stdin(b.to_vec())).await.is_err() { return Ok(()); }
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                    Some(Ok(_)) => continue,
                };
                let refuse = |code: &str, message: String| ServerFrame::Error { code: code.into(), message };
                let input = match serde_json::from_str::<ClientFrame>(&text) {
                    Err(e) => Err(refuse("invalid_argument", format!("malformed frame: {e}"))),
                    Ok(ClientFrame::Stdin { data_base64 }) => match B64.decode(data_base64.as_bytes()) {
                        Ok(d) => Ok(Some(ExecInput::Stdin(d))),
                        Err(e) => Err(refuse("invalid_argument", format!("data_base64: {e}"))),
                    },
                    Ok(ClientFrame::Resize { rows, cols }) => Ok(Some(ExecInput::Resize { rows, cols })),
                    Ok(ClientFrame::Signal { signal }) => match parse_signal(&signal) {
                        Some(sig) => Ok(Some(ExecInput::Signal(sig))),
                        None => Err(refuse("invalid_argument", format!("signal: {signal} is not a known signal"))),
                    },
                    Ok(ClientFrame::CloseStdin) => Ok(Some(ExecInput::CloseStdin)),
                    Ok(ClientFrame::Heartbeat) => Ok(None),
                    Ok(ClientFrame::Start { .. }) => Err(refuse(
                        "failed_precondition",
                        "a command is already running on this connection".into(),
                    )),
                };
                match input {
                    Ok(Some(input)) => process.send(input).await?,
                    Ok(None) => {}
                    Err(frame) => {
                        let _ = send(socket, &frame).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::exec_output::{ExecGate, JsonStream};
    use std::sync::Arc;

    /// The hand-written reply is exactly an `ExecResult`: a field added to the
    /// wire type without being written here fails this test.
    #[tokio::test]
    async fn reply_is_an_exec_result() {
        let gate = Arc::new(ExecGate::default());
        let raw_out: &[u8] = b"a\0\"\\\n\xff\xe2\x9c\x93";
        let mut o = JsonStream::new(&gate, 1024);
        o.push(raw_out);
        let (stdout, t1, h1) = o.finish(false);
        let mut e = JsonStream::new(&gate, 1024);
        e.push(b"err");
        let (stderr, t2, h2) = e.finish(true);
        let resp = exec_reply(EncodedExec {
            exit_code: -3,
            stdout,
            stderr,
            stdout_truncated: t1,
            stderr_truncated: t2,
            duration_ms: 7,
            timed_out: true,
            held: vec![h1, h2],
        });
        let declared: usize = resp.headers()[header::CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(body.len(), declared);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let r: ExecResult = serde_json::from_value(v["data"].clone()).unwrap();
        let want = ExecResult {
            exit_code: -3,
            stdout: String::from_utf8_lossy(raw_out).into_owned(),
            stderr: "err".into(),
            stdout_truncated: false,
            stderr_truncated: true,
            duration_ms: 7,
            timed_out: true,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::to_value(&want).unwrap()
        );
        assert_eq!(
            v["data"].as_object().unwrap().len(),
            serde_json::to_value(&want)
                .unwrap()
                .as_object()
                .unwrap()
                .len()
        );
        assert_eq!(gate.used_bytes(), 0);
    }
}
