//! The web dashboard, served at `/` from assets embedded in the binary.
//! (Filled in by the dashboard work; until then no routes.)

use axum::Router;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
