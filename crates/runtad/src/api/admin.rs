//! Admin routes: tenants, their tokens and their quotas; and `GET /v1/quota`,
//! where a tenant reads its own quota and usage. Token values are shown once,
//! when minted; listings never carry a value or a hash.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use runta_api::{
    validate, CreateTenantRequest, CreateTokenRequest, Data, ListResponse, Pagination, QuotaView,
    SetQuotaRequest, Tenant, TokenCreated, TokenInfo,
};

use super::error::{ApiError, ApiResult};
use super::extract::{Admin, ApiJson, QueryPairs};
use super::AppState;
use crate::auth::{self, Principal};

#[utoipa::path(post, path = "/v1/tenants", tag = "admin",
    request_body = CreateTenantRequest,
    responses((status = 201, body = Data<Tenant>), (status = 403, body = runta_api::ErrorBody)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(req): ApiJson<CreateTenantRequest>,
) -> ApiResult<(StatusCode, Json<Data<Tenant>>)> {
    validate::name("name", &req.name).map_err(|e| ApiError::invalid(e.field, e.message))?;
    not_reserved("name", &req.name)?;
    let (created, tenant) = state.manager.create_tenant(&req.name)?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(Data { data: tenant }),
    ))
}

#[utoipa::path(post, path = "/v1/tokens", tag = "admin",
    request_body = CreateTokenRequest,
    responses((status = 201, body = Data<TokenCreated>), (status = 403, body = runta_api::ErrorBody)))]
pub async fn create_token(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<Data<TokenCreated>>)> {
    validate::name("tenant", &req.tenant).map_err(|e| ApiError::invalid(e.field, e.message))?;
    if req.tenant == auth::ADMIN_TENANT {
        return Err(ApiError::invalid(
            "tenant",
            "the admin tenant gets no further tokens",
        ));
    }
    not_reserved("tenant", &req.tenant)?;
    let created = state.manager.mint_token(&req.tenant)?;
    Ok((StatusCode::CREATED, Json(Data { data: created })))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "admin",
    params(("tenant" = Option<String>, Query, description = "Only this tenant's tokens")),
    responses((status = 200, body = ListResponse<TokenInfo>, description = "Ids and dates only, never a token's value"),
              (status = 403, body = runta_api::ErrorBody)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    _admin: Admin,
    q: QueryPairs,
) -> ApiResult<Json<ListResponse<TokenInfo>>> {
    let tenant = q.get("tenant");
    if let Some(t) = tenant {
        validate::name("tenant", t).map_err(|e| ApiError::invalid(e.field, e.message))?;
    }
    Ok(Json(ListResponse {
        data: state.manager.list_tokens(tenant)?,
        pagination: Pagination::default(),
    }))
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "admin",
    params(("id" = String, Path, description = "Token id (tok_…)")),
    responses((status = 204, description = "Revoked: the next request with it is a 401"),
              (status = 404, body = runta_api::ErrorBody), (status = 403, body = runta_api::ErrorBody)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.manager.revoke_token(&id)?;
    tracing::info!(token = %id, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/tokens/{id}/rotate", tag = "admin",
    params(("id" = String, Path, description = "Token id (tok_…)")),
    responses((status = 201, body = Data<TokenCreated>, description = "A new token for the same tenant, shown once; the old one is revoked"),
              (status = 404, body = runta_api::ErrorBody), (status = 403, body = runta_api::ErrorBody)))]
pub async fn rotate_token(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Data<TokenCreated>>)> {
    let created = state.manager.rotate_token(&id)?;
    tracing::info!(old = %id, new = %created.id, "token rotated");
    Ok((StatusCode::CREATED, Json(Data { data: created })))
}

#[utoipa::path(get, path = "/v1/tenants/{name}/quota", tag = "admin",
    params(("name" = String, Path, description = "Tenant name")),
    responses((status = 200, body = Data<QuotaView>), (status = 404, body = runta_api::ErrorBody),
              (status = 403, body = runta_api::ErrorBody)))]
pub async fn get_quota(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<Data<QuotaView>>> {
    if !state.manager.tenant_exists(&name)? {
        return Err(ApiError::not_found(format!("no tenant named {name:?}")));
    }
    Ok(Json(Data {
        data: state.manager.quota_view(&name)?,
    }))
}

#[utoipa::path(patch, path = "/v1/tenants/{name}/quota", tag = "admin",
    params(("name" = String, Path, description = "Tenant name (created if new)")),
    request_body = SetQuotaRequest,
    responses((status = 200, body = Data<QuotaView>, description = "The quota now in force, with usage"),
              (status = 400, body = runta_api::ErrorBody, description = "A negative or non-numeric value; the field is named"),
              (status = 422, body = runta_api::ErrorBody, description = "A value out of range; the field is named"),
              (status = 403, body = runta_api::ErrorBody)))]
pub async fn set_quota(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<SetQuotaRequest>,
) -> ApiResult<Json<Data<QuotaView>>> {
    validate::name("name", &name).map_err(|e| ApiError::invalid(e.field, e.message))?;
    req.validate()
        .map_err(|e| ApiError::invalid(e.field, e.message))?;
    state.manager.create_tenant(&name)?;
    let view = state.manager.set_quota(&name, &req).await?;
    tracing::info!(tenant = %name, "quota set");
    Ok(Json(Data { data: view }))
}

#[utoipa::path(get, path = "/v1/quota", tag = "tenants",
    responses((status = 200, body = Data<QuotaView>, description = "The caller's tenant: its quota and what it holds now")))]
pub async fn own_quota(
    State(state): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Data<QuotaView>>> {
    Ok(Json(Data {
        data: state.manager.quota_view(&p.tenant)?,
    }))
}

/// `runta` is no tenant's name: `localhost/runta/…` images are the
/// operator's (images/mod.rs, `owner_of_name`), so a tenant of that name
/// would pass for the operator.
fn not_reserved(field: &str, name: &str) -> ApiResult<()> {
    if name == "runta" {
        return Err(ApiError::invalid(
            field,
            "\"runta\" is reserved (the operator's image names are localhost/runta/…)",
        ));
    }
    Ok(())
}
