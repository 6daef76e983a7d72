//! `GET /v1/runtimes/{id}/exec/stream`: the official client's exec WebSocket
//! (runta-sdk 0.1.10+ runs async exec and file transfers over it). The same
//! frames as `/exec/ws`, served by the same code, with the official exit frame
//! `{"type":"exit","code"}` and a server heartbeat the client echoes.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::response::Response;

use super::error::ApiResult;
use super::exec::{upgrade, WsDialect};
use super::AppState;
use crate::auth::Principal;

#[utoipa::path(get, path = "/v1/runtimes/{id}/exec/stream", tag = "exec",
    params(("id" = String, Path, description = "UUID or name")),
    responses((status = 101, description = "WebSocket: the `/exec/ws` frames; the exit frame is `{\"type\":\"exit\",\"code\",\"exit_code\"}`; the server sends `{\"type\":\"heartbeat\"}` every 15 s and the client may answer with the same frame")))]
pub async fn exec_stream(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    upgrade(state, p, id, ws, WsDialect::Stream).await
}
