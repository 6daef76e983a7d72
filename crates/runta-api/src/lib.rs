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
pub mod event;
pub mod exec;
pub mod image;
pub mod image_build;
pub mod runtime;
pub mod secrets;
pub mod status;
pub mod tenant;
pub mod validate;

pub use compat::*;
pub use deploy::*;
pub use egress::*;
pub use error::*;
pub use event::EventKind;
pub use exec::*;
pub use image::*;
pub use image_build::*;
pub use runtime::*;
pub use secrets::*;
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

impl<T> ListResponse<T> {
    /// The one way a list route pages: `rows` are in cursor order and were
    /// fetched with room for one more than `limit`; the extra row, if it came,
    /// only says that more follow, and the cursor is the last kept row's.
    pub fn page(mut rows: Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Self {
        let has_more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        Self::trimmed(rows, has_more, cursor)
    }

    /// A page already cut to its size, with whether more follow.
    pub fn trimmed(rows: Vec<T>, has_more: bool, cursor: impl Fn(&T) -> String) -> Self {
        let next_cursor = if has_more {
            rows.last().map(cursor)
        } else {
            None
        };
        ListResponse {
            data: rows,
            pagination: Pagination {
                next_cursor,
                has_more,
            },
        }
    }

    /// The same page with each row turned into its view.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> ListResponse<U> {
        ListResponse {
            data: self.data.into_iter().map(f).collect(),
            pagination: self.pagination,
        }
    }
}

/// Page size bounds shared by every list route.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;
pub const MAX_PAGE_LIMIT: u32 = 100;

#[cfg(test)]
mod page_tests {
    use super::*;

    #[test]
    fn a_page_keeps_limit_rows_and_points_past_the_last() {
        let p = ListResponse::page(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!(p.data, vec![1, 2]);
        assert!(p.pagination.has_more);
        assert_eq!(p.pagination.next_cursor.as_deref(), Some("2"));
        let last = ListResponse::page(vec![1, 2], 2, |n| n.to_string());
        assert_eq!(last.data, vec![1, 2]);
        assert!(!last.pagination.has_more);
        assert_eq!(last.pagination.next_cursor, None);
        let empty = ListResponse::page(Vec::<i32>::new(), 2, |n| n.to_string());
        assert!(empty.data.is_empty() && empty.pagination.next_cursor.is_none());
        let mapped = p.map(|n| n * 10);
        assert_eq!(mapped.data, vec![10, 20]);
        assert_eq!(mapped.pagination.next_cursor.as_deref(), Some("2"));
    }
}
