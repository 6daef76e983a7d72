//! Secret and binding routes. Both client spellings of a binding
//! (0.1.1 `secret-injection-rules`, 0.1.21 `secret-stubs` and
//! `default-secret-stubs`) land on the same manager calls; only the path
//! differs. A secret's value is read from the body and never written to a
//! response (docs/api.md, "Secrets").

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, put};
use axum::{Json, Router};
use runta_api::{
    CreateSecretBindingRequest, CreateSecretRequest, Data, ListResponse, Pagination,
    ReplaceSecretStubsRequest, Secret, SecretBinding, SetSecretRequest, MAX_PAGE_LIMIT,
    MAX_SECRETS_PER_TENANT,
};

use super::error::ApiResult;
use super::extract::{ApiJson, QueryPairs};
use super::AppState;
use crate::auth::Principal;
use crate::manager::secrets::BindingOwner;

/// The top-level routes.
pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/v1/secrets", get(list).post(create))
        .route("/v1/secrets/{id}", get(get_one).put(set).delete(delete))
        .route("/v1/secret-injection-rules", get(list_all_bindings))
        .route(
            "/v1/secret-injection-rules/{bid}",
            get(get_any_binding).delete(delete_any_binding),
        )
        .route("/v1/secret-stubs", get(list_all_bindings))
        .route(
            "/v1/secret-stubs/{bid}",
            get(get_any_binding).delete(delete_any_binding),
        )
        .route(
            "/v1/default-secret-stubs",
            get(list_defaults).post(create_default).put(set_default),
        )
        .route(
            "/v1/default-secret-stubs/{bid}",
            get(get_default).delete(delete_default),
        )
}

/// The routes under `/v1/runtimes`.
pub fn runtime_routes(r: Router<AppState>) -> Router<AppState> {
    r.route(
        "/{id}/secret-injection-rules",
        get(list_runtime_bindings).post(create_runtime_binding),
    )
    .route(
        "/{id}/secret-injection-rules/{bid}",
        get(get_runtime_binding).delete(delete_runtime_binding),
    )
    .route(
        "/{id}/secret-stubs",
        get(list_runtime_bindings)
            .post(create_runtime_binding)
            .put(set_runtime_binding),
    )
    .route("/{id}/secret-stubs/replace", put(replace_runtime_bindings))
    .route(
        "/{id}/secret-stubs/{bid}",
        get(get_runtime_binding).delete(delete_runtime_binding),
    )
}

fn list_of<T>(data: Vec<T>) -> Json<ListResponse<T>> {
    Json(ListResponse {
        data,
        pagination: Pagination::default(),
    })
}

fn one<T>(data: T) -> Json<Data<T>> {
    Json(Data { data })
}

// ---- secrets ----

#[utoipa::path(post, path = "/v1/secrets", tag = "secrets",
    request_body = CreateSecretRequest,
    responses((status = 200, body = Data<Secret>, description = "Stored; the value is never returned"),
              (status = 409, body = runta_api::ErrorBody, description = "The name is taken"),
              (status = 422, body = runta_api::ErrorBody, description = "A field is refused (named in the error)"),
              (status = 429, body = runta_api::ErrorBody, description = "The tenant has the most secrets it may have")))]
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<CreateSecretRequest>,
) -> ApiResult<Json<Data<Secret>>> {
    let s = state
        .manager
        .create_secret(&p.tenant, &req.name, &req.value.0, req.cache_ttl_secs)?;
    // 200, as the official API answers (its client parses nothing else).
    Ok(one(s))
}

#[utoipa::path(get, path = "/v1/secrets", tag = "secrets",
    params(("limit" = Option<u32>, Query, description = "1..100; without it, every secret of the tenant in one page (the official clients send none and read one page)"),
           ("after" = Option<String>, Query, description = "Cursor from pagination.next_cursor")),
    responses((status = 200, body = ListResponse<Secret>, description = "The tenant's secrets, oldest first"),
              (status = 400, body = runta_api::ErrorBody, description = "A bad `limit` or `after` (named in the error)")))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    q: QueryPairs,
) -> ApiResult<Json<ListResponse<Secret>>> {
    // Without `limit`, one page holds them all: the official client (and
    // ours) list secrets with no parameters and never follow a cursor, and
    // a tenant has at most MAX_SECRETS_PER_TENANT of them.
    let (limit, after) = q.page(MAX_SECRETS_PER_TENANT as u32, MAX_PAGE_LIMIT)?;
    Ok(Json(state.manager.list_secrets(&p.tenant, after, limit)?))
}

#[utoipa::path(get, path = "/v1/secrets/{id}", tag = "secrets",
    params(("id" = String, Path, description = "Secret UUID or name")),
    responses((status = 200, body = Data<Secret>), (status = 404, body = runta_api::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Data<Secret>>> {
    Ok(one(state.manager.get_secret(&p.tenant, &id)?))
}

#[utoipa::path(put, path = "/v1/secrets/{id}", tag = "secrets",
    params(("id" = String, Path, description = "Secret UUID or name; an unknown name creates the secret")),
    request_body = SetSecretRequest,
    responses((status = 200, body = Data<Secret>, description = "Stored or replaced; bindings use the new value at once"),
              (status = 404, body = runta_api::ErrorBody, description = "An unknown UUID"),
              (status = 422, body = runta_api::ErrorBody)))]
pub async fn set(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetSecretRequest>,
) -> ApiResult<Json<Data<Secret>>> {
    let (s, _created) =
        state
            .manager
            .set_secret(&p.tenant, &id, &req.value.0, req.cache_ttl_secs)?;
    Ok(one(s))
}

#[utoipa::path(delete, path = "/v1/secrets/{id}", tag = "secrets",
    params(("id" = String, Path, description = "Secret UUID or name")),
    responses((status = 200, description = "Deleted with every binding of it; no request is injected with it from now on"),
              (status = 404, body = runta_api::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.manager.delete_secret(&p.tenant, &id)?;
    Ok(super::runtimes::deleted())
}

// ---- bindings of one runtime ----

#[utoipa::path(post, path = "/v1/runtimes/{id}/secret-injection-rules", tag = "secrets",
    params(("id" = String, Path, description = "Runtime UUID or name")),
    request_body = CreateSecretBindingRequest,
    responses((status = 200, body = Data<SecretBinding>, description = "Bound; injected from the next request on (also `POST …/secret-stubs`)"),
              (status = 404, body = runta_api::ErrorBody, description = "No such runtime"),
              (status = 422, body = runta_api::ErrorBody, description = "A field is refused, or no such secret")))]
pub async fn create_runtime_binding(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CreateSecretBindingRequest>,
) -> ApiResult<Json<Data<SecretBinding>>> {
    Ok(one(state.manager.create_binding(
        &p.tenant,
        BindingOwner::Runtime(&id),
        &req,
    )?))
}

#[utoipa::path(put, path = "/v1/runtimes/{id}/secret-stubs", tag = "secrets",
    params(("id" = String, Path, description = "Runtime UUID or name")),
    request_body = CreateSecretBindingRequest,
    responses((status = 200, body = Data<SecretBinding>, description = "Stored, replacing the runtime's binding of the same host, path and target")))]
pub async fn set_runtime_binding(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CreateSecretBindingRequest>,
) -> ApiResult<Json<Data<SecretBinding>>> {
    Ok(one(state.manager.set_binding(
        &p.tenant,
        BindingOwner::Runtime(&id),
        &req,
    )?))
}

#[utoipa::path(put, path = "/v1/runtimes/{id}/secret-stubs/replace", tag = "secrets",
    params(("id" = String, Path, description = "Runtime UUID or name")),
    request_body = ReplaceSecretStubsRequest,
    responses((status = 200, body = ListResponse<SecretBinding>, description = "The runtime's bindings after the change; all of it or nothing was applied"),
              (status = 404, body = runta_api::ErrorBody, description = "No such runtime, or a delete_ids entry is not one of its bindings")))]
pub async fn replace_runtime_bindings(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ReplaceSecretStubsRequest>,
) -> ApiResult<Json<ListResponse<SecretBinding>>> {
    Ok(list_of(state.manager.replace_bindings(
        &p.tenant,
        &id,
        &req.delete_ids,
        &req.stubs,
    )?))
}

#[utoipa::path(get, path = "/v1/runtimes/{id}/secret-injection-rules", tag = "secrets",
    params(("id" = String, Path, description = "Runtime UUID or name")),
    responses((status = 200, body = ListResponse<SecretBinding>, description = "The runtime's own bindings (also `GET …/secret-stubs`)")))]
pub async fn list_runtime_bindings(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<ListResponse<SecretBinding>>> {
    Ok(list_of(state.manager.list_bindings(
        &p.tenant,
        Some(BindingOwner::Runtime(&id)),
    )?))
}

#[utoipa::path(get, path = "/v1/runtimes/{id}/secret-injection-rules/{bid}", tag = "secrets",
    params(("id" = String, Path, description = "Runtime UUID or name"), ("bid" = String, Path, description = "Binding UUID")),
    responses((status = 200, body = Data<SecretBinding>), (status = 404, body = runta_api::ErrorBody)))]
pub async fn get_runtime_binding(
    State(state): State<AppState>,
    p: Principal,
    Path((id, bid)): Path<(String, String)>,
) -> ApiResult<Json<Data<SecretBinding>>> {
    Ok(one(state.manager.get_binding(
        &p.tenant,
        Some(BindingOwner::Runtime(&id)),
        &bid,
    )?))
}

#[utoipa::path(delete, path = "/v1/runtimes/{id}/secret-injection-rules/{bid}", tag = "secrets",
    params(("id" = String, Path, description = "Runtime UUID or name"), ("bid" = String, Path, description = "Binding UUID")),
    responses((status = 200, description = "Removed; not injected from now on"), (status = 404, body = runta_api::ErrorBody)))]
pub async fn delete_runtime_binding(
    State(state): State<AppState>,
    p: Principal,
    Path((id, bid)): Path<(String, String)>,
) -> ApiResult<Response> {
    state
        .manager
        .delete_binding(&p.tenant, Some(BindingOwner::Runtime(&id)), &bid)?;
    Ok(super::runtimes::deleted())
}

// ---- every runtime's bindings ----

#[utoipa::path(get, path = "/v1/secret-injection-rules", tag = "secrets",
    responses((status = 200, body = ListResponse<SecretBinding>, description = "Every runtime-scoped binding of the tenant (also `GET /v1/secret-stubs`)")))]
pub async fn list_all_bindings(
    State(state): State<AppState>,
    p: Principal,
) -> ApiResult<Json<ListResponse<SecretBinding>>> {
    Ok(list_of(state.manager.list_bindings(&p.tenant, None)?))
}

#[utoipa::path(get, path = "/v1/secret-injection-rules/{bid}", tag = "secrets",
    params(("bid" = String, Path, description = "Binding UUID")),
    responses((status = 200, body = Data<SecretBinding>), (status = 404, body = runta_api::ErrorBody)))]
pub async fn get_any_binding(
    State(state): State<AppState>,
    p: Principal,
    Path(bid): Path<String>,
) -> ApiResult<Json<Data<SecretBinding>>> {
    Ok(one(state.manager.get_binding(&p.tenant, None, &bid)?))
}

#[utoipa::path(delete, path = "/v1/secret-injection-rules/{bid}", tag = "secrets",
    params(("bid" = String, Path, description = "Binding UUID")),
    responses((status = 200, description = "Removed (also `DELETE /v1/secret-stubs/{bid}`)"), (status = 404, body = runta_api::ErrorBody)))]
pub async fn delete_any_binding(
    State(state): State<AppState>,
    p: Principal,
    Path(bid): Path<String>,
) -> ApiResult<Response> {
    state.manager.delete_binding(&p.tenant, None, &bid)?;
    Ok(super::runtimes::deleted())
}

// ---- tenant defaults ----

#[utoipa::path(post, path = "/v1/default-secret-stubs", tag = "secrets",
    request_body = CreateSecretBindingRequest,
    responses((status = 201, body = Data<SecretBinding>, description = "A default, applied to every runtime of the tenant at once")))]
pub async fn create_default(
    State(state): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<CreateSecretBindingRequest>,
) -> ApiResult<(StatusCode, Json<Data<SecretBinding>>)> {
    let b = state
        .manager
        .create_binding(&p.tenant, BindingOwner::TenantDefault, &req)?;
    // 201, as the official client expects for this route alone.
    Ok((StatusCode::CREATED, one(b)))
}

#[utoipa::path(put, path = "/v1/default-secret-stubs", tag = "secrets",
    request_body = CreateSecretBindingRequest,
    responses((status = 200, body = Data<SecretBinding>, description = "Stored, replacing the default of the same host, path and target")))]
pub async fn set_default(
    State(state): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<CreateSecretBindingRequest>,
) -> ApiResult<Json<Data<SecretBinding>>> {
    Ok(one(state.manager.set_binding(
        &p.tenant,
        BindingOwner::TenantDefault,
        &req,
    )?))
}

#[utoipa::path(get, path = "/v1/default-secret-stubs", tag = "secrets",
    responses((status = 200, body = ListResponse<SecretBinding>)))]
pub async fn list_defaults(
    State(state): State<AppState>,
    p: Principal,
) -> ApiResult<Json<ListResponse<SecretBinding>>> {
    Ok(list_of(state.manager.list_bindings(
        &p.tenant,
        Some(BindingOwner::TenantDefault),
    )?))
}

#[utoipa::path(get, path = "/v1/default-secret-stubs/{bid}", tag = "secrets",
    params(("bid" = String, Path, description = "Binding UUID")),
    responses((status = 200, body = Data<SecretBinding>), (status = 404, body = runta_api::ErrorBody)))]
pub async fn get_default(
    State(state): State<AppState>,
    p: Principal,
    Path(bid): Path<String>,
) -> ApiResult<Json<Data<SecretBinding>>> {
    Ok(one(state.manager.get_binding(
        &p.tenant,
        Some(BindingOwner::TenantDefault),
        &bid,
    )?))
}

#[utoipa::path(delete, path = "/v1/default-secret-stubs/{bid}", tag = "secrets",
    params(("bid" = String, Path, description = "Binding UUID")),
    responses((status = 200, description = "Removed from every runtime of the tenant"), (status = 404, body = runta_api::ErrorBody)))]
pub async fn delete_default(
    State(state): State<AppState>,
    p: Principal,
    Path(bid): Path<String>,
) -> ApiResult<Response> {
    state
        .manager
        .delete_binding(&p.tenant, Some(BindingOwner::TenantDefault), &bid)?;
    Ok(super::runtimes::deleted())
}
