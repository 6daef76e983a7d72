//! `/v1/runtimes/{id}/egress`: one runtime's policy on its own, over the same
//! stored `egress_policy` that create and PATCH set (the official clients set
//! it with PATCH; these routes are runtad's, for callers that want only the
//! policy). `PUT` replaces the whole policy, in either shape.

use axum::extract::{Path, State};
use axum::Json;
use runta_api::{Data, EgressPolicyRequest, EgressPolicyView, UpdateRuntimeRequest};

use super::error::ApiResult;
use super::extract::ApiJson;
use super::AppState;
use crate::auth::Principal;

#[utoipa::path(get, path = "/v1/runtimes/{id}/egress", tag = "egress",
    params(("id" = String, Path, description = "UUID or name")),
    responses((status = 200, body = Data<EgressPolicyView>),
              (status = 404, body = runta_api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Data<EgressPolicyView>>> {
    let r = state.manager.find(&p.tenant, &id)?;
    Ok(Json(Data {
        data: EgressPolicyView::of(&r.egress),
    }))
}

#[utoipa::path(put, path = "/v1/runtimes/{id}/egress", tag = "egress",
    params(("id" = String, Path, description = "UUID or name")),
    request_body = EgressPolicyRequest,
    responses((status = 200, body = Data<EgressPolicyView>, description = "In force for new connections; open ones it denies are cut"),
              (status = 400, body = runta_api::ErrorBody, description = "An entry that is not a host, or an unknown field, named"),
              (status = 422, body = runta_api::ErrorBody, description = "enabled contradicts mode, or too many entries"),
              (status = 404, body = runta_api::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<EgressPolicyRequest>,
) -> ApiResult<Json<Data<EgressPolicyView>>> {
    // The body is the policy itself: its fields are named from its top.
    let policy = body.fold("").map_err(|mut e| {
        e.field = e.field.trim_start_matches('.').to_string();
        crate::manager::Error::from(e)
    })?;
    let req = UpdateRuntimeRequest {
        egress_policy: Some(policy),
        ..Default::default()
    };
    let r = state.manager.update(&p.tenant, &id, req).await?;
    Ok(Json(Data {
        data: EgressPolicyView::of(&r.egress),
    }))
}
