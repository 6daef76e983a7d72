//! Declarative deployment: `POST /v1/apply` and `POST /v1/delete` take a
//! `deployment.json`; the manager validates the whole file before anything
//! changes (manager/apply.rs).

use axum::extract::State;
use axum::Json;
use runta_api::{ApplyResult, Data, Deployment};

use super::error::ApiResult;
use super::extract::ApiJson;
use super::AppState;
use crate::auth::Principal;

#[utoipa::path(post, path = "/v1/apply", tag = "deploy",
    request_body = Deployment,
    responses((status = 200, body = Data<ApplyResult>, description = "One plan line per sandbox: created, updated or unchanged"),
              (status = 422, body = runta_api::ErrorBody, description = "The file is rejected whole; the field path is named")))]
pub async fn apply(
    State(state): State<AppState>,
    p: Principal,
    ApiJson(d): ApiJson<Deployment>,
) -> ApiResult<Json<Data<ApplyResult>>> {
    let data = state.manager.apply(&p.tenant, &d).await?;
    Ok(Json(Data { data }))
}

#[utoipa::path(post, path = "/v1/delete", tag = "deploy",
    request_body = Deployment,
    responses((status = 200, body = Data<ApplyResult>, description = "One plan line per sandbox: deleted or not_found")))]
pub async fn delete(
    State(state): State<AppState>,
    p: Principal,
    ApiJson(d): ApiJson<Deployment>,
) -> ApiResult<Json<Data<ApplyResult>>> {
    let data = state.manager.delete_deployment(&p.tenant, &d).await?;
    Ok(Json(Data { data }))
}
