//! Runta's wire types: every request and response body of the REST API v1, the
//! exec WebSocket frames, the `deployment.json` format and the error envelope.
//!
//! The daemon, the CLI, the end-to-end tests and the benchmark client all use these
//! types, so a field renamed here is renamed everywhere. The OpenAPI document is
//! generated from them (see `runtad::api::openapi`). This crate holds data and pure
//! validation only: no I/O, no HTTP.

pub mod compat;
pub mod deploy;
pub mod egress;
pub mod error;
pub mod exec;
pub mod image;
pub mod image_build;
pub mod runtime;
pub mod status;
pub mod tenant;
pub mod validate;

pub use compat::*;
pub use deploy::*;
pub use egress::*;
pub use error::*;
pub use exec::*;
pub use image::*;
pub use image_build::*;
pub use runtime::*;
pub use status::{allowed_actions, transition, Action, Refusal, StatusEvent};
pub use tenant::*;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{"data": …}`: the envelope of every successful response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Data<T> {
    pub data: T,
}

/// `{"data": […], "pagination": {…}}`: the envelope of every list response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ListResponse<T> {
    pub data: Vec<T>,
    pub pagination: Pagination,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Pagination {
    /// Pass as `after` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

/// Page size bounds shared by every list route.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;
pub const MAX_PAGE_LIMIT: u32 = 100;
