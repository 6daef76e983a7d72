//! Admin routes: tenants and tokens.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use runta_api::{validate, CreateTenantRequest, CreateTokenRequest, Data, Tenant, TokenCreated};

use super::error::{ApiError, ApiResult};
use super::extract::{Admin, ApiJson};
use super::AppState;
use crate::auth;

#[utoipa::path(post, path = "/v1/tenants", tag = "admin",
    request_body = CreateTenantRequest,
    responses((status = 201, body = Data<Tenant>), (status = 403, body = runta_api::ErrorBody)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(req): ApiJson<CreateTenantRequest>,
) -> ApiResult<(StatusCode, Json<Data<Tenant>>)> {
    validate::name("name", &req.name).map_err(|e| ApiError::invalid(e.field, e.message))?;
    let store = state.manager.store();
    let created = store.ensure_tenant(&req.name)?;
    let created_at = store.tenant_created_at(&req.name)?.unwrap_or_else(Utc::now);
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(Data {
            data: Tenant {
                name: req.name,
                created_at,
            },
        }),
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
    let (id, token) = auth::mint(state.manager.store(), &req.tenant, false)?;
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: TokenCreated {
                id,
                tenant: req.tenant,
                token,
                created_at: Utc::now(),
            },
        }),
    ))
}
