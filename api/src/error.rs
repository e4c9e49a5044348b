//! The API's one error type and its one mapping to HTTP:
//! `{"error": {"code", "message"}}` everywhere.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use byteedit_jobs::JobsError;
use byteedit_jobs::error::Service;
use serde::Serialize;
use thiserror::Error;
use utoipa::ToSchema;

/// What a 503 asks clients to wait: about how long a Postgres, Redis or
/// storage restart takes.
pub const RETRY_AFTER_SECS: u64 = 5;

#[derive(Debug, Error)]
pub enum ApiError {
    /// The caller's request is well formed but a value is wrong (422).
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// An edit request that fails its validation (422, the edit's code).
    #[error(transparent)]
    Edit(#[from] byteedit_edit::EditError),
    /// The request cannot be read at all (400).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// No or an unknown credential (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The credential is known but may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the job's state (409).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// A rate or admission limit (429 with `Retry-After`).
    #[error("{message}")]
    TooManyRequests {
        code: &'static str,
        message: String,
        retry_after_secs: u64,
    },
    #[error("the upload is larger than the {limit_mb} MB limit; send smaller images")]
    TooLarge { limit_mb: usize },
    /// A body above a JSON route's limit (413).
    #[error("the request body is larger than the {limit_kb} KB limit of this route")]
    BodyTooLarge { limit_kb: usize },
    /// A body that did not arrive within `--body-timeout-secs` (408).
    #[error(
        "the request body did not arrive within {secs} s of its headers; send it faster, or send smaller images"
    )]
    BodyTimeout { secs: u64 },
    /// The job existed but retention removed its images (410).
    #[error("{0}")]
    Gone(String),
    /// A backing service is down (503 with `Retry-After`).
    #[error("{0}")]
    Unavailable(String),
    /// Postgres, Redis or storage failed: a 503 naming the service when it
    /// is an outage, else a 500 (logged, never shown to clients).
    #[error(transparent)]
    Backend(#[from] JobsError),
    /// A bug on our side (a request task panicked); logged, never shown.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } | Self::Edit(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::TooLarge { .. } | Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Gone(_) => StatusCode::GONE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Backend(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Backend(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable snake_case code for the body and for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { code, .. }
            | Self::Conflict { code, .. }
            | Self::TooManyRequests { code, .. } => code,
            Self::Edit(e) => e.code(),
            Self::BadRequest(_) => "bad_request",
            Self::NotFound(_) => "not_found",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::TooLarge { .. } | Self::BodyTooLarge { .. } => "payload_too_large",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::Gone(_) => "expired",
            Self::Unavailable(_) => "unavailable",
            Self::Backend(e) => match e.unavailable_service() {
                Some(Service::Database) => "database_unavailable",
                Some(Service::Queue) => "queue_unavailable",
                Some(Service::Storage) => "storage_unavailable",
                None => "internal",
            },
            Self::Internal(_) => "internal",
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable snake_case code, e.g. `invalid_field`, `not_found`.
    pub code: String,
    /// What went wrong and what to change.
    pub message: String,
}

/// An error answer in the one shape, for answers made outside a handler
/// (framework rejections rewritten by `routes::guards`).
pub fn json_error(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorResponse {
        error: ErrorBody {
            code: code.to_owned(),
            message,
        },
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            Self::TooManyRequests {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(RETRY_AFTER_SECS),
            _ => None,
        };
        let message = match &self {
            Self::Backend(e) => match e.unavailable_service() {
                // An outage, not a bug: one warning line, and the client is
                // told to come back (the service recovers by itself).
                Some(service) => {
                    tracing::warn!(error_type = e.error_type(), "{service} unavailable: {e}");
                    format!(
                        "the {service} is unavailable right now; retry after the Retry-After delay"
                    )
                }
                None => {
                    tracing::error!(error_type = e.error_type(), "request failed: {e}");
                    "internal error; it has been logged".to_owned()
                }
            },
            Self::Internal(e) => {
                tracing::error!("request failed: {e}");
                "internal error; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = json_error(status, self.code(), message);
        if matches!(self, Self::BodyTimeout { .. }) {
            // The rest of the body may still come: the connection cannot
            // carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
