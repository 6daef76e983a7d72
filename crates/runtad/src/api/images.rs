//! Image routes: list, inspect, delete, pull (and its progress), garbage
//! collection, registry logins. docs/images.md.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use runta_api::{
    Data, Image, ImageGc, ImagePull, ListResponse, Pagination, PullImageRequest, RegistryLogin,
    RegistryLoginRequest,
};

use super::error::ApiResult;
use super::extract::ApiJson;
use super::AppState;
use crate::auth::Principal;

#[utoipa::path(get, path = "/v1/images", tag = "images",
    responses((status = 200, body = ListResponse<Image>, description = "`base` first, then every image in the store")))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
) -> ApiResult<Json<ListResponse<Image>>> {
    Ok(Json(ListResponse {
        data: state.manager.list_images(&p)?,
        pagination: Pagination::default(),
    }))
}

#[utoipa::path(get, path = "/v1/images/{ref}", tag = "images",
    params(("ref" = String, Path, description = "Name, reference or digest (URL-encode the slashes)")),
    responses((status = 200, body = Data<Image>), (status = 404, body = runta_api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    Path(r): Path<String>,
) -> ApiResult<Json<Data<Image>>> {
    Ok(Json(Data {
        data: state.manager.get_image(&p, &r)?,
    }))
}

#[utoipa::path(delete, path = "/v1/images/{ref}", tag = "images",
    params(("ref" = String, Path, description = "Name, reference or digest")),
    responses((status = 200, body = Data<Image>, description = "The caller's names removed (the admin: any); its layers are collected once nothing holds it"),
              (status = 409, body = runta_api::ErrorBody, description = "Runtimes or checkpoints use it; the message names them")))]
pub async fn delete(
    State(state): State<AppState>,
    p: Principal,
    Path(r): Path<String>,
) -> ApiResult<Json<Data<Image>>> {
    Ok(Json(Data {
        data: state.manager.delete_image(&p, &r).await?,
    }))
}

#[utoipa::path(post, path = "/v1/images/pulls", tag = "images",
    request_body = PullImageRequest,
    responses((status = 202, body = Data<ImagePull>, description = "Started (or joined the running pull of the same reference)")))]
pub async fn pull(
    State(state): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<PullImageRequest>,
) -> ApiResult<(StatusCode, Json<Data<ImagePull>>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(Data {
            data: state.manager.pull_image(&p, &req.reference)?,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/images/pulls/{id}", tag = "images",
    params(("id" = String, Path, description = "Pull id")),
    responses((status = 200, body = Data<ImagePull>)))]
pub async fn pull_status(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Data<ImagePull>>> {
    Ok(Json(Data {
        data: state.manager.image_pull(&p, &id)?,
    }))
}

#[utoipa::path(post, path = "/v1/images/gc", tag = "images",
    responses((status = 200, body = Data<ImageGc>, description = "Unreferenced blobs and layers removed (admin)")))]
pub async fn gc(State(state): State<AppState>, p: Principal) -> ApiResult<Json<Data<ImageGc>>> {
    Ok(Json(Data {
        data: state.manager.gc_images(&p).await?,
    }))
}

#[utoipa::path(post, path = "/v1/images/logins", tag = "images",
    request_body = RegistryLoginRequest,
    responses((status = 200, body = Data<RegistryLogin>, description = "Checked against the registry and stored for the caller's tenant only; the password is never returned")))]
pub async fn login(
    State(state): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<RegistryLoginRequest>,
) -> ApiResult<Json<Data<RegistryLogin>>> {
    Ok(Json(Data {
        data: state.manager.registry_login(&p, req).await?,
    }))
}

#[utoipa::path(get, path = "/v1/images/logins", tag = "images",
    responses((status = 200, body = ListResponse<RegistryLogin>)))]
pub async fn logins(
    State(state): State<AppState>,
    p: Principal,
) -> ApiResult<Json<ListResponse<RegistryLogin>>> {
    Ok(Json(ListResponse {
        data: state.manager.registry_logins(&p)?,
        pagination: Pagination::default(),
    }))
}

#[utoipa::path(delete, path = "/v1/images/logins/{registry}", tag = "images",
    params(("registry" = String, Path, description = "host[:port]")),
    responses((status = 204, description = "Forgotten")))]
pub async fn logout(
    State(state): State<AppState>,
    p: Principal,
    Path(registry): Path<String>,
) -> ApiResult<StatusCode> {
    state.manager.registry_logout(&p, &registry)?;
    Ok(StatusCode::NO_CONTENT)
}
