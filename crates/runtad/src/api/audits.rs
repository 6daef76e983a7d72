//! `GET /v1/audits`: the egress decisions of the caller's runtimes, in the v1
//! `Audit` shape the official client parses.

use axum::extract::{Path, State};
use axum::Json;
use runta_api::{Audit, EgressAuditKind, ListResponse};

use super::error::{ApiError, ApiResult};
use super::extract::QueryPairs;
use super::AppState;
use crate::auth::Principal;

/// The most audits one page holds.
const MAX_LIMIT: u32 = 1000;

/// Query: `category` (only `egress`), `runtime` (id or name; all the
/// tenant's runtimes when absent), `kind` (`tcp_connection`, `http_request`,
/// `icmp_drop`, `dns_query`; DNS entries are listed only when asked for),
/// `limit` (1-1000, default 100), `after` (the `next_cursor` of a page).
#[utoipa::path(get, path = "/v1/audits", tag = "audits",
    params(("category" = Option<String>, Query, description = "Only `egress`"),
           ("runtime" = Option<String>, Query, description = "Runtime UUID or name; all the caller's runtimes when absent"),
           ("kind" = Option<String>, Query, description = "tcp_connection, http_request, icmp_drop or dns_query (DNS only when asked for)"),
           ("limit" = Option<u32>, Query, description = "1..1000, default 100"),
           ("after" = Option<String>, Query, description = "Cursor from pagination.next_cursor")),
    responses((status = 200, body = ListResponse<Audit>),
              (status = 404, body = runta_api::ErrorBody, description = "No such runtime of the caller's tenant")))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    q: QueryPairs,
) -> ApiResult<Json<ListResponse<Audit>>> {
    page(&state, &p, q.get("runtime").filter(|r| !r.is_empty()), &q).await
}

/// `GET /v1/runtimes/{id}/audits`: the same listing for one runtime (the
/// query's `runtime` is ignored; the path names it).
#[utoipa::path(get, path = "/v1/runtimes/{id}/audits", tag = "audits",
    params(("id" = String, Path, description = "UUID or name"),
           ("category" = Option<String>, Query, description = "Only `egress`"),
           ("kind" = Option<String>, Query, description = "tcp_connection, http_request, icmp_drop or dns_query (DNS only when asked for)"),
           ("limit" = Option<u32>, Query, description = "1..1000, default 100"),
           ("after" = Option<String>, Query, description = "Cursor from pagination.next_cursor")),
    responses((status = 200, body = ListResponse<Audit>),
              (status = 404, body = runta_api::ErrorBody, description = "No such runtime of the caller's tenant")))]
pub async fn of_runtime(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<Json<ListResponse<Audit>>> {
    page(&state, &p, Some(&id), &q).await
}

async fn page(
    state: &AppState,
    p: &Principal,
    runtime: Option<&str>,
    q: &QueryPairs,
) -> ApiResult<Json<ListResponse<Audit>>> {
    if let Some(c) = q.get("category").filter(|c| *c != "egress") {
        return Err(ApiError::bad_request(
            format!("category: {c:?} is not an audit category (egress is the only one)"),
            Some("category".into()),
        ));
    }
    let kind = match q.get("kind") {
        None => None,
        Some(k) => Some(
            serde_json::from_value::<EgressAuditKind>(serde_json::Value::String(k.into()))
                .map_err(|_| {
                    ApiError::bad_request(
                        format!("kind: {k:?} is not tcp_connection, http_request, icmp_drop or dns_query"),
                        Some("kind".into()),
                    )
                })?,
        ),
    };
    let limit = q.u32_in("limit", 100, 1, MAX_LIMIT)?;
    let (data, has_more) = state
        .manager
        .egress_audits(
            &p.tenant,
            runtime,
            kind,
            q.get("after").filter(|a| !a.is_empty()),
            limit as usize,
        )
        .await?;
    Ok(Json(ListResponse::trimmed(data, has_more, |a| {
        a.id.clone()
    })))
}
