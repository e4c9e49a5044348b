//! Request parts whose rejections speak the API's error shape, shared by the
//! JSON routes.

use std::str::FromStr;

use axum::extract::Query;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;

use crate::error::ApiError;

/// Largest body of the JSON routes (votes, ratings, volunteers, comparisons
/// of existing jobs): far above any valid one, small enough that a client
/// cannot make the API buffer megabytes of JSON. Multipart upload routes
/// have `--max-upload-mb` instead.
pub const JSON_LIMIT_KB: usize = 64;

/// A JSON body or the error that says what is wrong with it.
pub fn json<T>(body: Result<axum::Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match body {
        Ok(axum::Json(v)) => Ok(v),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::BodyTooLarge {
            limit_kb: JSON_LIMIT_KB,
        }),
        Err(e) if e.status() == StatusCode::UNPROCESSABLE_ENTITY => {
            Err(ApiError::invalid("invalid_field", brief(e.body_text())))
        }
        Err(e) => Err(ApiError::BadRequest(format!(
            "send a JSON body: {}",
            brief(e.body_text())
        ))),
    }
}

/// A query string, or a 422 naming the bad parameter.
pub fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::invalid("invalid_field", brief(e.body_text())))
}

/// Longest framework message passed on: serde's messages quote the bad
/// value whole, and a caller's value is never echoed back whole.
const BRIEF_CHARS: usize = 300;

/// A framework's message, cut to [`BRIEF_CHARS`] characters.
pub fn brief(message: String) -> String {
    match message.char_indices().nth(BRIEF_CHARS) {
        Some((cut, _)) => format!("{}… (message cut)", &message[..cut]),
        None => message,
    }
}

/// An optional named value (task, aspect, anchor...); its `FromStr` error
/// already lists the allowed names.
pub fn named<T: FromStr<Err = String>>(raw: Option<&str>) -> Result<Option<T>, ApiError> {
    raw.map(str::parse)
        .transpose()
        .map_err(|m| ApiError::invalid("invalid_field", m))
}

/// 201 for a new vote or rating, 200 when it replaced the caller's earlier one.
pub fn upsert_status(replaced: bool) -> StatusCode {
    if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}
