//! Routes of the official v1 API for features runtad does not have yet
//! (secrets, secret stubs and injection rules, SSH keys, WatchFox). Each answers `501 unimplemented` in the error envelope, so a
//! client learns at once that the feature is missing instead of getting a 404
//! that reads like a wrong id. docs/api.md lists them.

use axum::http::{Method, StatusCode, Uri};
use axum::routing::any;
use axum::Router;

use super::error::ApiError;
use super::AppState;
use crate::auth::Principal;

/// Top-level paths that answer 501.
const ROUTES: &[&str] = &[
    "/v1/secrets",
    "/v1/secrets/{id}",
    "/v1/secret-stubs",
    "/v1/secret-stubs/{id}",
    "/v1/default-secret-stubs",
    "/v1/default-secret-stubs/{id}",
    "/v1/secret-injection-rules",
    "/v1/secret-injection-rules/{id}",
];

/// Paths under `/v1/runtimes` that answer 501.
const RUNTIME_ROUTES: &[&str] = &[
    "/{id}/secret-stubs",
    "/{id}/secret-stubs/replace",
    "/{id}/secret-stubs/{sid}",
    "/{id}/secret-injection-rules",
    "/{id}/secret-injection-rules/{sid}",
    "/{id}/ssh-keys",
    "/{id}/ssh-keys/{sid}",
    "/{id}/watchfox",
    "/{id}/watchfox/{*rest}",
];

/// Adds the top-level 501 routes to `r`.
pub fn routes(r: Router<AppState>) -> Router<AppState> {
    ROUTES
        .iter()
        .fold(r, |r, path| r.route(path, any(unimplemented)))
}

/// Adds the runtime-scoped 501 routes to the `/v1/runtimes` router `r`.
pub fn runtime_routes(r: Router<AppState>) -> Router<AppState> {
    RUNTIME_ROUTES
        .iter()
        .fold(r, |r, path| r.route(path, any(unimplemented)))
}

/// Authenticated like every other route: an anonymous caller learns nothing.
async fn unimplemented(_p: Principal, method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        runta_api::ErrorCode::Unimplemented,
        format!(
            "{method} {}: this feature of the Runta v1 API is not available on runtad yet",
            uri.path()
        ),
    )
}
