//! Runtime records and lifecycle routes.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use runta_api::{
    CreateRuntimeBody, Data, Event, ListResponse, Runtime, UpdateRuntimeBody, DEFAULT_PAGE_LIMIT,
    MAX_PAGE_LIMIT,
};

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, QueryPairs};
use super::AppState;
use crate::auth::Principal;
use crate::manager::ListFilter;
use crate::manager::{Action, Manager};

#[utoipa::path(post, path = "/v1/runtimes", tag = "runtimes",
    request_body = CreateRuntimeBody,
    params(
        ("wait" = Option<bool>, Query, description = "Return once running (default true); false returns the `creating` record at once"),
        ("Idempotency-Key" = Option<String>, Header, description = "Repeat a create safely: the same key returns the same runtime"),
    ),
    responses(
        (status = 200, body = Data<Runtime>, description = "Created; `Location` names it"),
        (status = 400, body = runta_api::ErrorBody), (status = 409, body = runta_api::ErrorBody),
        (status = 422, body = runta_api::ErrorBody), (status = 503, body = runta_api::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    q: QueryPairs,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateRuntimeBody>,
) -> ApiResult<Response> {
    let req = body
        .into_request(generated_name)
        .map_err(crate::manager::Error::from)?;
    let wait = q.bool("wait", true)?;
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::bad_request(
                        "Idempotency-Key must be ASCII",
                        Some("Idempotency-Key".into()),
                    )
                })?
                .to_string(),
        ),
        None => None,
    };
    let r = state
        .manager
        .create(&p.tenant, req, key.as_deref(), wait)
        .await?;
    let view = state.manager.view(&r);
    let location = format!("/v1/runtimes/{}", r.id);
    // 200, not 201: the official client parses only a 200 here, and it wins
    // over SPEC.md where the two disagree (docs/api.md, "Status codes").
    Ok((
        StatusCode::OK,
        [(header::LOCATION, location)],
        Json(Data { data: view }),
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/runtimes", tag = "runtimes",
    params(
        ("status" = Option<String>, Query, description = "Comma-separated statuses, e.g. running,paused"),
        ("label" = Option<String>, Query, description = "k=v; repeat for several"),
        ("limit" = Option<u32>, Query, description = "1..100, default 50"),
        ("after" = Option<String>, Query, description = "Cursor from pagination.next_cursor"),
    ),
    responses((status = 200, body = ListResponse<Runtime>)))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    q: QueryPairs,
) -> ApiResult<Json<ListResponse<Runtime>>> {
    let (limit, after) = q.page(DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT)?;
    let statuses = match q.get("status").map(official_status_aliases) {
        Some(s) => Manager::parse_statuses(&s)
            .map_err(|e| ApiError::bad_request(e.to_string(), Some("status".into())))?,
        None => vec![],
    };
    let labels = Manager::parse_labels(&q.all("label"))
        .map_err(|e| ApiError::bad_request(e.to_string(), Some("label".into())))?;
    let after_seq = Some(after).filter(|a| *a > 0);
    let rows = state.manager.list(&ListFilter {
        tenant: Some(p.tenant),
        statuses,
        labels,
        after_seq,
        limit: Some(limit),
    })?;
    Ok(Json(
        ListResponse::page(rows, limit, |r| r.seq.to_string()).map(|r| state.manager.view(&r)),
    ))
}

#[utoipa::path(get, path = "/v1/runtimes/{id}", tag = "runtimes",
    params(("id" = String, Path, description = "UUID or name")),
    responses((status = 200, body = Data<Runtime>), (status = 404, body = runta_api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Data<Runtime>>> {
    let r = state.manager.find(&p.tenant, &id)?;
    Ok(Json(Data {
        data: state.manager.view(&r),
    }))
}

#[utoipa::path(delete, path = "/v1/runtimes/{id}", tag = "runtimes",
    params(("id" = String, Path, description = "UUID or name")),
    responses((status = 200, description = "Deleted: processes, files and record are gone; the body is `{\"data\": {}}`"),
              (status = 404, body = runta_api::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.manager.delete(&p.tenant, &id).await?;
    Ok(deleted())
}

/// A successful delete: `200 {"data": {}}`, the official API's answer (its
/// client parses nothing else; a 204 would fail it).
pub(super) fn deleted() -> Response {
    (StatusCode::OK, Json(serde_json::json!({"data": {}}))).into_response()
}

/// runta-sdk 0.1.1 filters with `active` for running and `stopped` for shutdown.
fn official_status_aliases(s: &str) -> String {
    s.split(',')
        .map(|v| match v.trim() {
            "active" => "running",
            "stopped" => "shutdown",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A name for a runtime created without one (the official API makes it optional).
fn generated_name() -> String {
    format!("rt-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

#[utoipa::path(patch, path = "/v1/runtimes/{id}", tag = "runtimes",
    params(("id" = String, Path, description = "UUID or name")),
    request_body = UpdateRuntimeBody,
    responses((status = 200, body = Data<Runtime>), (status = 409, body = runta_api::ErrorBody), (status = 422, body = runta_api::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateRuntimeBody>,
) -> ApiResult<Json<Data<Runtime>>> {
    let req = body.into_request().map_err(crate::manager::Error::from)?;
    let r = state.manager.update(&p.tenant, &id, req).await?;
    Ok(Json(Data {
        data: state.manager.view(&r),
    }))
}

async fn act(
    state: AppState,
    p: Principal,
    id: String,
    action: Action,
) -> ApiResult<Json<Data<Runtime>>> {
    let r = state.manager.act(&p.tenant, &id, action).await?;
    Ok(Json(Data {
        data: state.manager.view(&r),
    }))
}

#[utoipa::path(post, path = "/v1/runtimes/{id}/start", tag = "lifecycle",
    params(("id" = String, Path, description = "UUID or name")),
    responses((status = 200, body = Data<Runtime>, description = "Running (a no-op if it already was)"), (status = 409, body = runta_api::ErrorBody)))]
pub async fn start(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Data<Runtime>>> {
    act(s, p, id, Action::Start).await
}

#[utoipa::path(post, path = "/v1/runtimes/{id}/stop", tag = "lifecycle",
    params(("id" = String, Path, description = "UUID or name")),
    responses((status = 200, body = Data<Runtime>, description = "Shut down, files kept"), (status = 409, body = runta_api::ErrorBody)))]
pub async fn stop(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Data<Runtime>>> {
    act(s, p, id, Action::Stop).await
}

#[utoipa::path(post, path = "/v1/runtimes/{id}/pause", tag = "lifecycle",
    params(("id" = String, Path, description = "UUID or name")),
    responses((status = 200, body = Data<Runtime>, description = "Every process frozen"), (status = 409, body = runta_api::ErrorBody)))]
pub async fn pause(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Data<Runtime>>> {
    act(s, p, id, Action::Pause).await
}

#[utoipa::path(post, path = "/v1/runtimes/{id}/resume", tag = "lifecycle",
    params(("id" = String, Path, description = "UUID or name")),
    responses((status = 200, body = Data<Runtime>, description = "Thawed"), (status = 409, body = runta_api::ErrorBody)))]
pub async fn resume(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Data<Runtime>>> {
    act(s, p, id, Action::Resume).await
}

#[utoipa::path(get, path = "/v1/runtimes/{id}/events", tag = "runtimes",
    params(("id" = String, Path, description = "UUID or name"),
           ("after" = Option<i64>, Query, description = "Only events with a larger id"),
           ("limit" = Option<u32>, Query, description = "1..100, default 100")),
    responses((status = 200, body = ListResponse<Event>)))]
pub async fn events(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<Json<ListResponse<Event>>> {
    let limit = q.u32_in("limit", MAX_PAGE_LIMIT, 1, MAX_PAGE_LIMIT)?;
    let after = match q.get("after") {
        Some(a) => a.parse::<i64>().map_err(|_| {
            ApiError::bad_request("after: must be an event id", Some("after".into()))
        })?,
        None => 0,
    };
    Ok(Json(state.manager.events(&p.tenant, &id, after, limit)?))
}
