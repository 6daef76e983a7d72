//! The one mapping from errors to HTTP status + error code, at the API edge.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use runta_api::{ErrorBody, ErrorCode, ErrorDetail};

use crate::manager::Error as ManagerError;

tokio::task_local! {
    /// The id of the request being served (set by the request-id middleware).
    pub static REQUEST_ID: String;
}

pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(|id| id.clone())
        .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string())
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 400: the body or query could not be read as the route expects.
    pub fn bad_request(message: impl Into<String>, field: Option<String>) -> Self {
        ApiError {
            field,
            ..Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidArgument, message)
        }
    }

    /// 422: well-formed, but a value is not acceptable.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        ApiError {
            message: format!("{field}: {}", message.into()),
            field: Some(field),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidArgument,
                "",
            )
        }
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            message,
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::PermissionDenied, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::InvalidArgument,
            message,
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            message,
        )
    }
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> Self {
        use ManagerError as E;
        match e {
            E::NotFound(m) => Self::not_found(m),
            E::AlreadyExists(m) => Self::new(StatusCode::CONFLICT, ErrorCode::AlreadyExists, m),
            E::FailedPrecondition(m) => {
                Self::new(StatusCode::CONFLICT, ErrorCode::FailedPrecondition, m)
            }
            E::Invalid { field, message } => Self::invalid(field, message),
            E::ResourceExhausted(m) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::ResourceExhausted,
                m,
            ),
            E::QuotaExceeded(m) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::ResourceExhausted,
                m,
            ),
            E::Unavailable(m) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, m)
            }
            E::PermissionDenied(m) => Self::forbidden(m),
            E::RateLimited(m) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, m)
            }
            E::Unauthenticated(m) => Self::unauthenticated(m),
            E::DeadlineExceeded(m) => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, ErrorCode::DeadlineExceeded, m)
            }
            E::Internal(m) => {
                tracing::error!("internal error: {m}");
                Self::internal(m)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
            request_id: current_request_id(),
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // Limits that clear within moments (exec slots, connection caps) say when
        // to come back; capacity (resource_exhausted) does not.
        if matches!(self.code, ErrorCode::RateLimited | ErrorCode::Unavailable) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
