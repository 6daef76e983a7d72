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

/// What the agent's content frames may add up to. The agent announced `size`;
/// a hostile agent sending more (or fewer) bytes is cut off, never relayed.
struct Relay {
    size: u64,
    served: u64,
    sent: u64,
    received: u64,
}

enum Step {
    Send(Bytes),
    Done,
    Fail(&'static str),
}

impl Relay {
    fn content(&mut self, payload: Vec<u8>) -> Step {
        self.received += payload.len() as u64;
        if self.received > self.size {
            return Step::Fail("the agent sent more bytes than the file's size");
        }
        let room = self.served - self.sent;
        if room == 0 {
            return Step::Done;
        }
        let mut b = Bytes::from(payload);
        b.truncate(room.min(b.len() as u64) as usize);
        self.sent += b.len() as u64;
        Step::Send(b)
    }

    fn eof(&self) -> Step {
        if self.sent < self.served {
            Step::Fail("file stream ended early")
        } else {
            Step::Done
        }
    }
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
    let (_r, guard, agent) = state.manager.running(&p.tenant, &id, "read files").await?;
    let (size, reader) = agent.read_file(&path).await.map_err(Error::from)?;
    let served = served_len(&path, size, max_bytes, state.max_download_bytes)?;
    let relay = Relay {
        size,
        served,
        sent: 0,
        received: 0,
    };
    let stream = futures_util::stream::unfold(Some((reader, guard, relay)), |st| async move {
        let (mut r, g, mut relay) = st?;
        loop {
            let step = match r.next().await {
                Ok(Some(f)) if f.tag == tag::STDOUT => relay.content(f.payload),
                Ok(Some(f)) if f.tag == tag::EOF => relay.eof(),
                Ok(_) => Step::Fail("file stream ended early"),
                Err(_) => Step::Fail("the agent broke off the file stream"),
            };
            match step {
                Step::Send(b) if b.is_empty() => continue,
                Step::Send(b) => return Some((Ok(b), Some((r, g, relay)))),
                // Dropping the reader closes the agent's connection, so
                // it stops reading the rest of a file served in part.
                Step::Done => return None,
                Step::Fail(why) => {
                    tracing::warn!(size = relay.size, received = relay.received, "{why}");
                    return Some((Err(std::io::Error::other(why)), None));
                }
            }
        }
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(size: u64, served: u64) -> Relay {
        Relay {
            size,
            served,
            sent: 0,
            received: 0,
        }
    }

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

    #[test]
    fn a_hostile_agent_cannot_send_more_than_it_announced() {
        let mut r = relay(4, 4);
        assert!(matches!(r.content(vec![1, 2, 3]), Step::Send(b) if b.len() == 3));
        assert!(matches!(r.content(vec![4, 5]), Step::Fail(_)));
        let mut r = relay(4, 4);
        assert!(matches!(r.content(vec![1]), Step::Send(_)));
        assert!(matches!(r.eof(), Step::Fail(_)), "short stream is an error");
    }

    #[test]
    fn a_prefix_stops_at_max_bytes() {
        let mut r = relay(10, 3);
        assert!(matches!(r.content(vec![0; 2]), Step::Send(b) if b.len() == 2));
        assert!(matches!(r.content(vec![0; 4]), Step::Send(b) if b.len() == 1));
        assert!(matches!(r.content(vec![0; 4]), Step::Done));
    }
}
