//! Routes that make images: commit a runtime or checkpoint, push an image,
//! build a Dockerfile from an uploaded context (docs/images.md).

use std::io::Write;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use runta_api::{BuildEvent, CommitRequest, Data, Image, ImagePush, PushImageRequest};

use super::error::{ApiError, ApiResult};
use super::extract::{parse_json, ApiJson, QueryPairs};
use super::AppState;
use crate::auth::Principal;
use crate::images::build::BuildSpec;
use crate::manager::MAX_BUILD_CONTEXT;

#[utoipa::path(post, path = "/v1/runtimes/{id}/commit", tag = "images",
    params(("id" = String, Path, description = "Runtime UUID or name")),
    request_body = CommitRequest,
    responses((status = 201, body = Data<Image>, description = "The runtime's files as a new image over its image (a running runtime is frozen meanwhile)"),
              (status = 409, body = runta_api::ErrorBody, description = "The runtime is being created or deleted, or in error"),
              (status = 503, body = runta_api::ErrorBody, description = "resource_exhausted: the files are larger than the runtime's disk quota")))]
pub async fn commit_runtime(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CommitRequest>,
) -> ApiResult<(StatusCode, Json<Data<Image>>)> {
    let img = state.manager.commit_runtime(&p, &id, &req.name).await?;
    Ok((StatusCode::CREATED, Json(Data { data: img })))
}

#[utoipa::path(post, path = "/v1/checkpoints/{id}/commit", tag = "images",
    params(("id" = String, Path, description = "Checkpoint UUID or name")),
    request_body = CommitRequest,
    responses((status = 201, body = Data<Image>, description = "The checkpoint's files as a new image over its image")))]
pub async fn commit_checkpoint(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CommitRequest>,
) -> ApiResult<(StatusCode, Json<Data<Image>>)> {
    let img = state.manager.commit_checkpoint(&p, &id, &req.name).await?;
    Ok((StatusCode::CREATED, Json(Data { data: img })))
}

#[utoipa::path(post, path = "/v1/images/{ref}/push", tag = "images",
    params(("ref" = String, Path, description = "The image to push: name, reference or digest")),
    request_body = PushImageRequest,
    responses((status = 200, body = Data<ImagePush>, description = "Pushed: blobs the registry had were skipped"),
              (status = 403, body = runta_api::ErrorBody, description = "Not the admin token, or the registry refused the credentials")))]
pub async fn push(
    State(state): State<AppState>,
    p: Principal,
    Path(r): Path<String>,
    req: Request,
) -> ApiResult<Json<Data<ImagePush>>> {
    // `{ref}` may hold slashes, so the route is a wildcard ending in `/push`.
    let Some(image) = r.strip_suffix("/push").filter(|i| !i.is_empty()) else {
        return Err(ApiError::not_found(format!(
            "no route POST /v1/images/{r} (push is POST /v1/images/{{ref}}/push)"
        )));
    };
    let bytes = axum::body::to_bytes(req.into_body(), super::MAX_JSON_BODY)
        .await
        .map_err(|_| ApiError::too_large("the body is larger than 1 MiB"))?;
    let body: PushImageRequest = parse_json(&bytes)?;
    let out = state.manager.push_image(&p, image, &body.reference).await?;
    Ok(Json(Data { data: out }))
}

/// Query of `POST /v1/images/builds`.
fn build_spec(q: &QueryPairs) -> ApiResult<(String, BuildSpec)> {
    let name = q
        .get("name")
        .or_else(|| q.get("t"))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::invalid("name", "the image name is required (?name=myapp:1)"))?
        .to_string();
    let mut build_args = Vec::new();
    for a in q.all("build_arg") {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| ApiError::invalid("build_arg", format!("{a:?} is not NAME=VALUE")))?;
        let name_ok = k
            .as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
            && k.len() <= 128
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            return Err(ApiError::invalid(
                "build_arg",
                format!("{k:?}: a name is a letter or '_' then letters, digits, '_'"),
            ));
        }
        build_args.push((k.to_string(), v.to_string()));
    }
    Ok((
        name,
        BuildSpec {
            dockerfile: q.get("dockerfile").unwrap_or("Dockerfile").to_string(),
            build_args,
            no_cache: q.bool("no_cache", false)?,
        },
    ))
}

#[utoipa::path(post, path = "/v1/images/builds", tag = "images",
    params(("name" = String, Query, description = "The image's name (`myapp:1`)"),
           ("dockerfile" = Option<String>, Query, description = "The Dockerfile's path in the context (default `Dockerfile`)"),
           ("build_arg" = Option<String>, Query, description = "`NAME=VALUE`, repeatable"),
           ("no_cache" = Option<bool>, Query, description = "Run every step again")),
    request_body(content = Vec<u8>, content_type = "application/x-tar", description = "The build context: a tar (or gzip'd tar) holding the Dockerfile"),
    responses((status = 200, body = BuildEvent, content_type = "application/x-ndjson", description = "One JSON object per line: `log` lines while it builds, then `done` with the image or `error`"),
              (status = 413, body = runta_api::ErrorBody, description = "The context is larger than the limit"),
              (status = 422, body = runta_api::ErrorBody, description = "A context entry, the Dockerfile or one of its lines is refused (`field` names `context` or `dockerfile`, the message the line)")))]
pub async fn build(
    State(state): State<AppState>,
    p: Principal,
    q: QueryPairs,
    req: Request,
) -> ApiResult<Response> {
    let (name, spec) = build_spec(&q)?;
    state.manager.check_build(&p, &name, &spec)?;
    let too_large = || {
        ApiError::too_large(format!(
            "the build context is limited to {MAX_BUILD_CONTEXT} bytes"
        ))
    };
    if req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BUILD_CONTEXT)
    {
        return Err(too_large());
    }
    // The context goes to a file first (bounded), then the build starts.
    let images_dir = state.manager.images()?.dir().to_path_buf();
    let dir = images_dir.join("uploads");
    std::fs::create_dir_all(&dir).map_err(|e| ApiError::internal(e.to_string()))?;
    let tar_path = dir.join(format!("{}.tar", uuid::Uuid::new_v4().simple()));
    let upload = async {
        let mut f =
            std::fs::File::create(&tar_path).map_err(|e| ApiError::internal(e.to_string()))?;
        let mut body = req.into_body().into_data_stream();
        let mut n: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::bad_request(format!("reading the context: {e}"), None))?;
            n += chunk.len() as u64;
            if n > MAX_BUILD_CONTEXT {
                return Err(too_large());
            }
            f.write_all(&chunk)
                .map_err(|e| ApiError::internal(e.to_string()))?;
        }
        if n == 0 {
            return Err(ApiError::invalid(
                "body",
                "the build context (a tar) is empty",
            ));
        }
        Ok(())
    };
    if let Err(e) = upload.await {
        let _ = std::fs::remove_file(&tar_path);
        return Err(e);
    }
    // The context is unpacked and the Dockerfile checked before the answer
    // starts: a refused line is a plain 4xx, not an event in a 200 stream.
    let prepared = state
        .manager
        .prepare_build(&p, &name, spec, &tar_path)
        .await;
    let _ = std::fs::remove_file(&tar_path);
    let prepared = prepared?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(256);
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(256);
    let manager = state.manager.clone();
    let line = |ev: &BuildEvent| {
        let mut v = serde_json::to_vec(ev).unwrap_or_default();
        v.push(b'\n');
        bytes::Bytes::from(v)
    };
    let fwd = out_tx.clone();
    let pump = tokio::spawn(async move {
        while let Some(l) = rx.recv().await {
            if fwd
                .send(Ok(line(&BuildEvent::Log { line: l })))
                .await
                .is_err()
            {
                // The client went away; keep draining so the build finishes
                // and is stored (a rebuild then hits the cache).
                continue;
            }
        }
    });
    tokio::spawn(async move {
        let r = manager.run_build(&p, prepared, tx).await;
        let _ = pump.await;
        let ev = match r {
            Ok(img) => BuildEvent::Done {
                image: Box::new(img),
            },
            Err(e) => {
                let api: ApiError = e.into();
                BuildEvent::Error {
                    code: api.code.as_str().to_string(),
                    message: api.message,
                }
            }
        };
        let _ = out_tx.send(Ok(line(&ev))).await;
    });
    let stream = tokio_stream_from(out_rx);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}
