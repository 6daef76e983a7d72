//! Interactive exec over the WebSocket, with and without a terminal.

mod common;

use base64::Engine;
use common::{name, Daemon};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(d: &Daemon, token: &str, runtime: &str, via_subprotocol: bool) -> Ws {
    let url = format!(
        "{}/v1/runtimes/{runtime}/exec/ws",
        d.endpoint.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    if via_subprotocol {
        req.headers_mut().insert(
            "sec-websocket-protocol",
            format!("runta-v1, runta-token.{token}").parse().unwrap(),
        );
    } else {
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .expect("ws connect")
        .0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Reads frames until `exit`, returning (stdout, stderr, exit code).
async fn collect(ws: &mut Ws) -> (String, String, i64) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let Ok(msg) = tokio::time::timeout_at(deadline, ws.next()).await else {
            panic!(
                "no exit frame in time; stdout so far: {:?}",
                String::from_utf8_lossy(&out)
            );
        };
        let Some(Ok(Message::Text(t))) = msg else {
            continue;
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        match v["type"].as_str().unwrap() {
            "stdout" => out.extend(B64.decode(v["data_base64"].as_str().unwrap()).unwrap()),
            "stderr" => err.extend(B64.decode(v["data_base64"].as_str().unwrap()).unwrap()),
            "exit" => {
                return (
                    String::from_utf8_lossy(&out).into(),
                    String::from_utf8_lossy(&err).into(),
                    v["exit_code"].as_i64().unwrap(),
                )
            }
            "error" => panic!("error frame: {v}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn streams_pipes_stdin_and_exit_code() {
    let d = Daemon::shared();
    let c = d.tenant("ws").await;
    let n = name("ws");
    c.create(&n, 128).await;
    let mut ws = connect(d, &c.token, &n, false).await;
    send(
        &mut ws,
        json!({"type": "start", "command": "read line; echo got:$line; echo oops >&2; exit 5"}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "stdin", "data_base64": B64.encode("hello\n")}),
    )
    .await;
    let (out, err, code) = collect(&mut ws).await;
    assert_eq!(
        (out.as_str(), err.as_str(), code),
        ("got:hello\n", "oops\n", 5)
    );

    // close_stdin ends `cat`.
    let mut ws = connect(d, &c.token, &n, true).await;
    send(
        &mut ws,
        json!({"type": "start", "command": "cat", "args": []}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "stdin", "data_base64": B64.encode("abc")}),
    )
    .await;
    send(&mut ws, json!({"type": "close_stdin"})).await;
    let (out, _, code) = collect(&mut ws).await;
    assert_eq!((out.as_str(), code), ("abc", 0));
    c.delete(&format!("/v1/runtimes/{n}")).await;
}

#[tokio::test]
async fn terminal_resize_and_signals() {
    let d = Daemon::shared();
    let c = d.tenant("tty").await;
    let n = name("tty");
    c.create(&n, 128).await;
    let mut ws = connect(d, &c.token, &n, false).await;
    send(&mut ws, json!({"type": "start", "command": "bash", "args": ["--norc", "-i"], "tty": true, "rows": 30, "cols": 100})).await;
    send(&mut ws, json!({"type": "resize", "rows": 40, "cols": 120})).await;
    send(&mut ws, json!({"type": "stdin", "data_base64": B64.encode("tty -s && echo IS-TTY; stty size; exit 3\n")})).await;
    let (out, _, code) = collect(&mut ws).await;
    assert!(out.contains("IS-TTY"), "{out}");
    assert!(out.contains("40 120"), "{out}");
    assert_eq!(code, 3);

    // A signal reaches the process group.
    let mut ws = connect(d, &c.token, &n, false).await;
    send(
        &mut ws,
        json!({"type": "start", "command": "sleep", "args": ["100"]}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    send(&mut ws, json!({"type": "signal", "signal": "SIGINT"})).await;
    let (_, _, code) = collect(&mut ws).await;
    assert_eq!(code, 130);

    // Bad frames get an error frame, not a dropped connection.
    let mut ws = connect(d, &c.token, &n, false).await;
    send(
        &mut ws,
        json!({"type": "start", "command": "sleep", "args": ["1"]}),
    )
    .await;
    send(&mut ws, json!({"type": "signal", "signal": "NOPE"})).await;
    let msg = ws.next().await.unwrap().unwrap();
    let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["code"], "invalid_argument");
    c.delete(&format!("/v1/runtimes/{n}")).await;
}

#[tokio::test]
async fn refused_without_a_valid_token() {
    let d = Daemon::shared();
    let url = format!(
        "{}/v1/runtimes/x/exec/ws",
        d.endpoint.replace("http://", "ws://")
    );
    let err = tokio_tungstenite::connect_async(url).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    // A paused runtime is refused before the upgrade, with a plain 409.
    let c = d.tenant("wsp").await;
    let n = name("wsp");
    c.create(&n, 64).await;
    c.post(&format!("/v1/runtimes/{n}/pause"), json!({})).await;
    let url = format!(
        "{}/v1/runtimes/{n}/exec/ws",
        d.endpoint.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", c.token).parse().unwrap(),
    );
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(err.to_string().contains("409"), "{err}");
    c.delete(&format!("/v1/runtimes/{n}")).await;
}
