//! Checkpoint routes: save a runtime's files, list, inspect and delete
//! checkpoints. Forks are made with `POST /v1/runtimes {"checkpoint": …}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use runta_api::{
    Checkpoint, CreateCheckpointRequest, Data, ListResponse, Pagination, DEFAULT_PAGE_LIMIT,
    MAX_PAGE_LIMIT,
};

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, QueryPairs};
use super::AppState;
use crate::auth::Principal;
use crate::manager::Manager;

#[utoipa::path(post, path = "/v1/runtimes/{id}/checkpoints", tag = "checkpoints",
    params(("id" = String, Path, description = "Runtime UUID or name")),
    request_body = CreateCheckpointRequest,
    responses((status = 201, body = Data<Checkpoint>, description = "Saved; the runtime was frozen while its files were copied"),
              (status = 409, body = runta_api::ErrorBody, description = "Name taken, or the runtime is not up")))]
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CreateCheckpointRequest>,
) -> ApiResult<(StatusCode, Json<Data<Checkpoint>>)> {
    let c = state
        .manager
        .create_checkpoint(&p.tenant, &id, &req.name)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: Manager::checkpoint_view(&c),
        }),
    ))
}

#[utoipa::path(get, path = "/v1/checkpoints", tag = "checkpoints",
    params(("limit" = Option<u32>, Query, description = "1..100, default 50"),
           ("after" = Option<String>, Query, description = "Cursor from pagination.next_cursor")),
    responses((status = 200, body = ListResponse<Checkpoint>)))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    q: QueryPairs,
) -> ApiResult<Json<ListResponse<Checkpoint>>> {
    let limit = q.u32_in("limit", DEFAULT_PAGE_LIMIT, 1, MAX_PAGE_LIMIT)?;
    let after = match q.get("after") {
        Some(c) => c.parse::<i64>().map_err(|_| {
            ApiError::bad_request("after: not a cursor from this API", Some("after".into()))
        })?,
        None => 0,
    };
    let mut rows = state
        .manager
        .list_checkpoints(&p.tenant, after, limit + 1)?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if has_more {
        rows.last().map(|c| c.seq.to_string())
    } else {
        None
    };
    Ok(Json(ListResponse {
        data: rows.iter().map(Manager::checkpoint_view).collect(),
        pagination: Pagination {
            next_cursor,
            has_more,
        },
    }))
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
        data: Manager::checkpoint_view(&c),
    }))
}

#[utoipa::path(delete, path = "/v1/checkpoints/{id}", tag = "checkpoints",
    params(("id" = String, Path, description = "Checkpoint UUID or name")),
    responses((status = 204, description = "Deleted and its space freed"),
              (status = 409, body = runta_api::ErrorBody, description = "Runtimes or checkpoints are built on it")))]
pub async fn delete(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.manager.delete_checkpoint(&p.tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
