//! The HTTP API: routes, middleware and handlers. Handlers are short: parse,
//! call one manager method, map the result.

mod admin;
mod audits;
mod checkpoints;
mod dashboard;
mod deploy;
mod egress;
pub mod error;
mod exec;
mod exec_stream;
pub mod extract;
mod files;
mod image_build;
mod images;
#[cfg(test)]
mod layering;
pub mod openapi;
mod runtimes;
mod secrets;
mod unoffered;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

use crate::manager::Manager;
use error::{ApiError, REQUEST_ID};

/// JSON bodies larger than this are refused with 413.
pub const MAX_JSON_BODY: usize = 1024 * 1024;
/// File uploads larger than this are refused with 413.
pub const MAX_FILE_BODY: u64 = 1024 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub manager: Arc<Manager>,
    pub started: Instant,
    /// Reads of files larger than this are refused with 413 (`--max-download-bytes`).
    pub max_download_bytes: u64,
}

pub fn router(state: AppState) -> Router {
    let runtimes = Router::new()
        .route("/", post(runtimes::create).get(runtimes::list))
        .route(
            "/{id}",
            get(runtimes::get)
                .delete(runtimes::delete)
                .patch(runtimes::update),
        )
        .route("/{id}/start", post(runtimes::start))
        .route("/{id}/stop", post(runtimes::stop))
        .route("/{id}/pause", post(runtimes::pause))
        .route("/{id}/resume", post(runtimes::resume))
        .route("/{id}/exec", post(exec::exec))
        .route("/{id}/exec/ws", get(exec::exec_ws))
        .route("/{id}/exec/stream", get(exec_stream::exec_stream))
        .route("/{id}/events", get(runtimes::events))
        .route("/{id}/egress", get(egress::get).put(egress::put))
        .route("/{id}/audits", get(audits::of_runtime))
        .route("/{id}/checkpoints", post(checkpoints::create))
        .route("/{id}/commit", post(image_build::commit_runtime))
        .route("/{id}/files/list", get(files::list))
        .route(
            "/{id}/files",
            get(files::read)
                .put(files::write)
                .layer(DefaultBodyLimit::disable()),
        );
    let runtimes = secrets::runtime_routes(unoffered::runtime_routes(runtimes));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi::serve))
        .route("/v1/tenants", post(admin::create_tenant))
        .route(
            "/v1/tokens",
            post(admin::create_token).get(admin::list_tokens),
        )
        .route(
            "/v1/tokens/{id}",
            axum::routing::delete(admin::revoke_token),
        )
        .route("/v1/tokens/{id}/rotate", post(admin::rotate_token))
        .route(
            "/v1/tenants/{name}/quota",
            get(admin::get_quota).patch(admin::set_quota),
        )
        .route("/v1/quota", get(admin::own_quota))
        .route("/v1/audits", get(audits::list))
        .route("/v1/checkpoints", get(checkpoints::list))
        .route(
            "/v1/checkpoints/{id}",
            get(checkpoints::get).delete(checkpoints::delete),
        )
        .route("/v1/images", get(images::list))
        .route(
            "/v1/images/builds",
            post(image_build::build).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/images/pulls", post(images::pull))
        .route("/v1/images/pulls/{id}", get(images::pull_status))
        .route("/v1/images/gc", post(images::gc))
        .route("/v1/images/logins", post(images::login).get(images::logins))
        .route(
            "/v1/images/logins/{registry}",
            axum::routing::delete(images::logout),
        )
        .route(
            "/v1/images/{*reference}",
            get(images::get)
                .delete(images::delete)
                .post(image_build::push),
        )
        .route(
            "/v1/checkpoints/{id}/commit",
            post(image_build::commit_checkpoint),
        )
        .route("/v1/apply", post(deploy::apply))
        .route("/v1/delete", post(deploy::delete))
        .nest("/v1/runtimes", runtimes)
        .merge(unoffered::routes(Router::new()))
        .merge(secrets::routes(Router::new()))
        .merge(dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("the daemon hit an unexpected error; it has been logged")
                .into_response()
        }))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .with_state(state)
}

/// Gives every request an id (echoed in `X-Request-Id` and in error bodies),
/// logs it, and counts it.
async fn request_context(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let t0 = Instant::now();
    let mut resp = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    let status = resp.status();
    let m = &state.manager.metrics;
    m.http_requests.fetch_add(1, Ordering::Relaxed);
    if status.is_client_error() || status.is_server_error() {
        m.http_errors.fetch_add(1, Ordering::Relaxed);
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    if path != "/healthz" && path != "/metrics" {
        tracing::info!(
            request_id = %id, %method, %path, status = status.as_u16(),
            ms = t0.elapsed().as_secs_f64() * 1000.0, "request"
        );
    }
    resp
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.manager.ping() {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({
                "status": "ok",
                "version": env!("CARGO_PKG_VERSION"),
                "backend": state.manager.backend().name(),
                "uptime_secs": state.started.elapsed().as_secs(),
            })),
        )
            .into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            runta_api::ErrorCode::Unavailable,
            e.to_string(),
        )
        .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut counts: Vec<(String, u64)> = state
        .manager
        .status_counts()
        .unwrap_or_default()
        .into_iter()
        .map(|(s, n)| (s.to_string(), n))
        .collect();
    counts.sort();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state
            .manager
            .metrics
            .render(&counts, &state.manager.backend().name()),
    )
        .into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        runta_api::ErrorCode::Unimplemented,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}
