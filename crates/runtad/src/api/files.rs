//! File routes: read and write one regular file, list a folder. Contents stream
//! through the agent; nothing is held whole in the daemon's memory.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use runta_agent::{tag, Response as AgentResponse};
use runta_api::{validate, Data, FileEntry};

use super::error::{ApiError, ApiResult};
use super::extract::QueryPairs;
use super::{AppState, MAX_FILE_BODY};
use crate::agent_client::AgentError;
use crate::auth::Principal;
use crate::manager::Error;

/// How much of a failed upload is still read so the client sees the error.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

fn path_param(q: &QueryPairs) -> ApiResult<String> {
    let path = q.get("path").ok_or_else(|| {
        ApiError::bad_request("query parameter path is required", Some("path".into()))
    })?;
    validate::runtime_path("path", path).map_err(|e| ApiError::invalid(e.field, e.message))?;
    Ok(path.to_string())
}

#[utoipa::path(get, path = "/v1/runtimes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "UUID or name"), ("path" = String, Query, description = "Absolute path inside the runtime")),
    responses((status = 200, content_type = "application/octet-stream", description = "The file's bytes"),
              (status = 404, body = runta_api::ErrorBody), (status = 422, body = runta_api::ErrorBody)))]
pub async fn read(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<Response> {
    let path = path_param(&q)?;
    let (_r, guard, agent) = state.manager.running(&p.tenant, &id, "read files").await?;
    let (size, reader) = agent.read_file(&path).await.map_err(Error::from)?;
    let stream =
        futures_util::stream::unfold((reader, guard, false), |(mut r, g, done)| async move {
            if done {
                return None;
            }
            match r.next().await {
                Ok(Some(f)) if f.tag == tag::STDOUT => {
                    Some((Ok(Bytes::from(f.payload)), (r, g, false)))
                }
                Ok(Some(f)) if f.tag == tag::EOF => None,
                Ok(_) => Some((
                    Err(std::io::Error::other("file stream ended early")),
                    (r, g, true),
                )),
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), (r, g, true))),
            }
        });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[utoipa::path(put, path = "/v1/runtimes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "UUID or name"),
           ("path" = String, Query, description = "Absolute path inside the runtime; parent folders are created"),
           ("mode" = Option<String>, Query, description = "Octal permissions, default 0644")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 204, description = "Written (atomically: readers see the old or the new file)"),
              (status = 413, body = runta_api::ErrorBody), (status = 422, body = runta_api::ErrorBody)))]
pub async fn write(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    q: QueryPairs,
    req: Request,
) -> ApiResult<StatusCode> {
    let path = path_param(&q)?;
    let mode = match q.get("mode") {
        Some(m) => Some(
            u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| {
                    ApiError::invalid("mode", "must be octal permissions such as 0644")
                })?,
        ),
        None => None,
    };
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > MAX_FILE_BODY {
            return Err(ApiError::too_large(format!(
                "files are limited to {MAX_FILE_BODY} bytes"
            )));
        }
    }
    let mut body = req.into_body().into_data_stream();
    let result = upload(&state, &p, &id, &path, mode, &mut body).await;
    if result.is_err() {
        // Read (and drop) what the client is still sending, up to a bound, so
        // it gets this answer instead of a connection closed mid-upload.
        let mut drained: u64 = 0;
        while let Some(Ok(chunk)) = body.next().await {
            drained += chunk.len() as u64;
            if drained > DRAIN_LIMIT {
                break;
            }
        }
    }
    result
}

async fn upload(
    state: &AppState,
    p: &Principal,
    id: &str,
    path: &str,
    mode: Option<u32>,
    body: &mut axum::body::BodyDataStream,
) -> ApiResult<StatusCode> {
    let (_r, _guard, agent) = state.manager.running(&p.tenant, id, "write files").await?;
    let (mut ar, mut aw) = agent.write_file(path, mode).await.map_err(Error::from)?;
    let mut total: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the upload: {e}"), None))?;
        total += chunk.len() as u64;
        if total > MAX_FILE_BODY {
            // Dropping the connection makes the agent discard the partial file.
            return Err(ApiError::too_large(format!(
                "files are limited to {MAX_FILE_BODY} bytes"
            )));
        }
        for part in chunk.chunks(1024 * 1024) {
            if let Err(e) = aw.frame(tag::STDIN, part).await {
                // The agent may have refused the path: prefer its reason.
                return Err(match ar.response().await {
                    Err(refused @ AgentError::Refused { .. }) => Error::from(refused).into(),
                    _ => Error::from(e).into(),
                });
            }
        }
    }
    aw.frame(tag::EOF, b"").await.map_err(Error::from)?;
    match ar.response().await.map_err(Error::from)? {
        AgentResponse::Written { .. } => Ok(StatusCode::NO_CONTENT),
        other => Err(ApiError::internal(format!(
            "unexpected agent reply {other:?}"
        ))),
    }
}

#[utoipa::path(get, path = "/v1/runtimes/{id}/files/list", tag = "files",
    params(("id" = String, Path, description = "UUID or name"), ("path" = String, Query, description = "Absolute path of a folder")),
    responses((status = 200, body = Data<Vec<FileEntry>>), (status = 404, body = runta_api::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<Json<Data<Vec<FileEntry>>>> {
    let path = path_param(&q)?;
    let (_r, _guard, agent) = state.manager.running(&p.tenant, &id, "list files").await?;
    let entries = agent.list_dir(&path).await.map_err(Error::from)?;
    Ok(Json(Data {
        data: entries
            .into_iter()
            .map(|e| FileEntry {
                name: e.name,
                kind: e.kind,
                size: e.size,
                mode: e.mode,
            })
            .collect(),
    }))
}
