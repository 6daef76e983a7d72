//! Checkpoint routes: save a runtime's files, list, inspect and delete
//! checkpoints. Forks are made with `POST /v1/runtimes {"checkpoint": …}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use runta_api::{
    Checkpoint, CreateCheckpointBody, Data, ListResponse, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT,
};

use super::error::ApiResult;
use super::extract::{ApiJson, QueryPairs};
use super::AppState;
use crate::auth::Principal;

#[utoipa::path(post, path = "/v1/runtimes/{id}/checkpoints", tag = "checkpoints",
    params(("id" = String, Path, description = "Runtime UUID or name")),
    request_body = CreateCheckpointBody,
    responses((status = 200, body = Data<Checkpoint>, description = "Saved; the runtime was frozen while its files were copied"),
              (status = 409, body = runta_api::ErrorBody, description = "Name taken, or the runtime is not up")))]
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CreateCheckpointBody>,
) -> ApiResult<(StatusCode, Json<Data<Checkpoint>>)> {
    // The official client may leave the name out; `kind` can only be `full`.
    let name = req
        .name
        .unwrap_or_else(|| format!("ckpt-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
    let c = state
        .manager
        .create_checkpoint(&p.tenant, &id, &name)
        .await?;
    // 200 as the official API answers (its client parses nothing else).
    Ok((
        StatusCode::OK,
        Json(Data {
            data: state.manager.checkpoint_view(&c),
        }),
    ))
}

#[utoipa::path(get, path = "/v1/checkpoints", tag = "checkpoints",
    params(("limit" = Option<u32>, Query, description = "1..100, default 50"),
           ("after" = Option<String>, Query, description = "Cursor from pagination.next_cursor"),
           ("include_system" = Option<bool>, Query, description = "Accepted for the official client; runtad makes no system checkpoints")),
    responses((status = 200, body = ListResponse<Checkpoint>)))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    q: QueryPairs,
) -> ApiResult<Json<ListResponse<Checkpoint>>> {
    let (limit, after) = q.page(DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT)?;
    q.bool("include_system", false)?;
    let rows = state
        .manager
        .list_checkpoints(&p.tenant, after, limit + 1)?;
    Ok(Json(
        ListResponse::page(rows, limit, |c| c.seq.to_string())
            .map(|c| state.manager.checkpoint_view(&c)),
    ))
}

#[utoipa::path(get, path = "/v1/checkpoints/{id}", tag = "checkpoints",
    params(("id" = String, Path, description = "Checkpoint UUID or name")),
    responses((status = 200, body = Data<Checkpoint>), (status = 404, body = runta_api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Data<Checkpoint>>> {
    let c = state.manager.find_checkpoint(&p.tenant, &id)?;
    Ok(Json(Data {
        data: state.manager.checkpoint_view(&c),
    }))
}

#[utoipa::path(delete, path = "/v1/checkpoints/{id}", tag = "checkpoints",
    params(("id" = String, Path, description = "Checkpoint UUID or name")),
    responses((status = 200, description = "Deleted and its space freed; the body is `{\"data\": {}}`"),
              (status = 409, body = runta_api::ErrorBody, description = "Runtimes or checkpoints are built on it")))]
pub async fn delete(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.manager.delete_checkpoint(&p.tenant, &id).await?;
    Ok(super::runtimes::deleted())
}
