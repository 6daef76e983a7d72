//! Routes of the official v1 API for features runtad does not have yet (SSH
//! keys, WatchFox). Each answers `501 unimplemented` in the error envelope, so a
//! client learns at once that the feature is missing instead of getting a 404
//! that reads like a wrong id. docs/api.md lists them.

use axum::http::{Method, StatusCode, Uri};
use axum::routing::any;
use axum::Router;

use super::error::ApiError;
use super::AppState;
use crate::auth::Principal;

/// Top-level paths that answer 501.
const ROUTES: &[&str] = &[];

/// Paths under `/v1/runtimes` that answer 501.
const RUNTIME_ROUTES: &[&str] = &[
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
