//! The API's one error type and its one mapping to HTTP:
//! `{"error": {"code", "message"}}` everywhere.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use byteedit_jobs::JobsError;
use serde::Serialize;
use thiserror::Error;
use utoipa::ToSchema;

#[derive(Debug, Error)]
pub enum ApiError {
    /// The caller's request is well formed but a value is wrong (422).
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
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
    #[error("the upload is larger than the {limit_mb} MB limit; send smaller images")]
    TooLarge { limit_mb: usize },
    /// A body above a JSON route's limit (413).
    #[error("the request body is larger than the {limit_kb} KB limit of this route")]
    BodyTooLarge { limit_kb: usize },
    /// The job existed but retention removed its images (410).
    #[error("{0}")]
    Gone(String),
    /// A backing service is down (503 with `Retry-After`).
    #[error("{0}")]
    Unavailable(String),
    /// Postgres, Redis or storage failed; logged, never shown to clients.
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
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::TooLarge { .. } | Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Gone(_) => StatusCode::GONE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Backend(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Backend(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable snake_case code for the body and for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { code, .. } | Self::Conflict { code, .. } => code,
            Self::BadRequest(_) => "bad_request",
            Self::NotFound(_) => "not_found",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::TooLarge { .. } | Self::BodyTooLarge { .. } => "payload_too_large",
            Self::Gone(_) => "expired",
            Self::Unavailable(_) => "unavailable",
            Self::Backend(e) if e.is_unavailable() => "unavailable",
            Self::Backend(_) | Self::Internal(_) => "internal",
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Self::Backend(e) => {
                tracing::error!(error_type = e.error_type(), "request failed: {e}");
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    "a backing service (database or queue) is unavailable; retry shortly".to_owned()
                } else {
                    "internal error; it has been logged".to_owned()
                }
            }
            Self::Internal(e) => {
                tracing::error!("request failed: {e}");
                "internal error; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        let body = ErrorResponse {
            error: ErrorBody {
                code: self.code().to_owned(),
                message,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}
