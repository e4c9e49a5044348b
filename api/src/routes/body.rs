//! JSON bodies whose rejections speak the API's error shape.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;

use crate::error::ApiError;

/// A JSON body or the error that says what is wrong with it.
pub fn json<T>(body: Result<axum::Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match body {
        Ok(axum::Json(v)) => Ok(v),
        Err(e) if e.status() == StatusCode::UNPROCESSABLE_ENTITY => {
            Err(ApiError::invalid("invalid_field", e.body_text()))
        }
        Err(e) => Err(ApiError::BadRequest(format!(
            "send a JSON body: {}",
            e.body_text()
        ))),
    }
}
