//! File routes: read and write one regular file, list a folder. Contents stream
//! through the agent; nothing is held whole in the daemon's memory.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use runta_api::{validate, Data, FileEntry};

use super::error::{ApiError, ApiResult};
use super::extract::QueryPairs;
use super::{AppState, MAX_FILE_BODY};
use crate::auth::Principal;

/// How much of a failed upload is still read so the client sees the error.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

fn path_param(q: &QueryPairs) -> ApiResult<String> {
    let path = q.get("path").ok_or_else(|| {
        ApiError::bad_request("query parameter path is required", Some("path".into()))
    })?;
    validate::runtime_path("path", path).map_err(|e| ApiError::invalid(e.field, e.message))?;
    Ok(path.to_string())
}

/// `max_bytes`: the most the caller wants (the official client's `read(path,
/// max_bytes)` keeps a prefix, so the daemon serves one instead of the file).
fn max_bytes_param(q: &QueryPairs) -> ApiResult<Option<u64>> {
    q.get("max_bytes")
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::invalid("max_bytes", "must be a whole number of bytes, 0 or more")
            })
        })
        .transpose()
}

/// How many bytes of a `size`-byte file a read serves, or why none: more than
/// the daemon's download limit is refused before a byte is sent.
fn served_len(path: &str, size: u64, max_bytes: Option<u64>, limit: u64) -> ApiResult<u64> {
    let served = max_bytes.map_or(size, |m| m.min(size));
    if served > limit {
        return Err(ApiError::too_large(format!(
            "{path}: the file is {size} bytes; downloads are limited to {limit} bytes \
             (ask for a prefix with max_bytes)"
        )));
    }
    Ok(served)
}

#[utoipa::path(get, path = "/v1/runtimes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "UUID or name"),
           ("path" = String, Query, description = "Absolute path of a regular file inside the runtime"),
           ("max_bytes" = Option<u64>, Query, description = "Serve at most this many bytes (a prefix); the full size is in x-runta-file-size")),
    responses((status = 200, content_type = "application/octet-stream", description = "The file's bytes (or their first max_bytes)"),
              (status = 404, body = runta_api::ErrorBody),
              (status = 413, body = runta_api::ErrorBody, description = "Larger than the daemon's download limit (--max-download-bytes)"),
              (status = 422, body = runta_api::ErrorBody, description = "A folder, FIFO, socket or device, or a bad max_bytes")))]
pub async fn read(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<Response> {
    let path = path_param(&q)?;
    let max_bytes = max_bytes_param(&q)?;
    let file = state.manager.read_file(&p.tenant, &id, &path).await?;
    let size = file.size;
    let served = served_len(&path, size, max_bytes, state.max_download_bytes)?;
    let stream = file.into_stream(served);
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, served.to_string()),
            (
                header::HeaderName::from_static("x-runta-file-size"),
                size.to_string(),
            ),
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
    let mut file = state.manager.write_file(&p.tenant, id, path, mode).await?;
    let mut total: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the upload: {e}"), None))?;
        total += chunk.len() as u64;
        if total > MAX_FILE_BODY {
            // Dropping the upload makes the agent discard the partial file.
            return Err(ApiError::too_large(format!(
                "files are limited to {MAX_FILE_BODY} bytes"
            )));
        }
        file.push(&chunk).await?;
    }
    file.finish().await?;
    Ok(StatusCode::NO_CONTENT)
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
    let entries = state.manager.list_files(&p.tenant, &id, &path).await?;
    Ok(Json(Data { data: entries }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_limit_counts_what_is_served() {
        let gib = 1 << 30;
        assert_eq!(served_len("/f", 10, None, gib).unwrap(), 10);
        let e = served_len("/f", 2 << 40, None, gib).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("2199023255552") && e.message.contains("1073741824"));
        // A prefix of a huge file is fine; asking for more than the limit is not.
        assert_eq!(served_len("/f", 2 << 40, Some(4096), gib).unwrap(), 4096);
        assert!(served_len("/f", 2 << 40, Some(gib + 1), gib).is_err());
        assert_eq!(served_len("/f", 5, Some(gib + 1), gib).unwrap(), 5);
    }
}
