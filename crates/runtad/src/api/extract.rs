//! Request extractors that fail with the API's error envelope: JSON bodies with
//! the offending field named, query strings, and the caller's identity.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;
use crate::auth::{self, Principal};

/// A JSON body; unknown fields, wrong types and syntax errors are 400s that name
/// the field; a body over the limit is 413.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        // Refuse an announced oversized body at once, without reading it.
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > super::MAX_JSON_BODY as u64) {
            return Err(ApiError::too_large(format!(
                "request body is larger than {} bytes",
                super::MAX_JSON_BODY
            )));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(format!(
                    "request body is larger than {} bytes",
                    super::MAX_JSON_BODY
                ))
            } else {
                ApiError::bad_request(format!("could not read the request body: {e}"), None)
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad_request(
            "request body is empty; expected a JSON object",
            None,
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = if inner.is_syntax() || inner.is_eof() {
            "malformed JSON"
        } else {
            "invalid request body"
        };
        if path.is_empty() || path == "." {
            ApiError::bad_request(format!("{what}: {inner}"), None)
        } else {
            ApiError::bad_request(format!("{what}: {path}: {inner}"), Some(path))
        }
    })
}

/// Decoded query pairs, in order (repeated keys kept).
pub struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn bool(&self, key: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some("true" | "1" | "yes" | "") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(v) => Err(ApiError::bad_request(
                format!("query parameter {key}: {v:?} is not true or false"),
                Some(key.into()),
            )),
        }
    }

    pub fn u32_in(&self, key: &str, default: u32, min: u32, max: u32) -> Result<u32, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        format!(
                            "query parameter {key}: must be a whole number from {min} to {max}"
                        ),
                        Some(key.into()),
                    )
                }),
        }
    }

    /// A list route's page: `limit` (1 to `max`, default `default`) and the
    /// `after` cursor a previous page's `pagination.next_cursor` gave (the
    /// seq of its last row), `0` before the first row.
    pub fn page(&self, default: u32, max: u32) -> Result<(u32, i64), ApiError> {
        let limit = self.u32_in("limit", default, 1, max)?;
        let after = match self.get("after") {
            Some(c) => c.parse::<i64>().map_err(|_| {
                ApiError::bad_request("after: not a cursor from this API", Some("after".into()))
            })?,
            None => 0,
        };
        Ok((limit, after))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        Ok(QueryPairs(
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }
}

/// Browsers cannot set headers on a WebSocket: they may offer the token as a
/// subprotocol `runta-token.<token>` instead.
const WS_TOKEN_PREFIX: &str = "runta-token.";

fn bearer(parts: &Parts) -> Result<String, ApiError> {
    if let Some(h) = parts.headers.get(header::AUTHORIZATION) {
        let v = h
            .to_str()
            .map_err(|_| ApiError::unauthenticated("malformed Authorization header"))?;
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::unauthenticated("Authorization must be 'Bearer <token>'"))?;
        return Ok(token.trim().to_string());
    }
    if let Some(p) = parts.headers.get(header::SEC_WEBSOCKET_PROTOCOL) {
        if let Some(t) = p
            .to_str()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .find_map(|s| s.strip_prefix(WS_TOKEN_PREFIX))
        {
            return Ok(t.to_string());
        }
    }
    Err(ApiError::unauthenticated(
        "missing token: send 'Authorization: Bearer <token>'",
    ))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        if !auth::well_formed(&token) {
            return Err(ApiError::unauthenticated(
                "malformed token: tokens look like rt_…",
            ));
        }
        match state.manager.authenticate(&token)? {
            Some(p) => Ok(p),
            None => Err(ApiError::unauthenticated("invalid token")),
        }
    }
}

/// A principal that must be the admin (403 otherwise).
pub struct Admin(pub Principal);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let p = Principal::from_request_parts(parts, state).await?;
        if !p.admin {
            return Err(ApiError::forbidden("this route needs the admin token"));
        }
        Ok(Admin(p))
    }
}
