//! What every request passes before a handler sees it, and every answer
//! after: the body deadline, the refusal of text SQL cannot hold, and the
//! JSON shape of answers the framework made (rejections, limits, panics).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

use super::body::JSON_LIMIT_KB;
use byteedit_edit::quote;

use crate::error::{ApiError, json_error};
use crate::state::AppState;
use crate::validation::refuse_nul;

pin_project! {
    /// A request body that must have arrived by a deadline; past it, reading
    /// fails and `expired` says why.
    struct DeadlineBody {
        #[pin]
        inner: Body,
        #[pin]
        deadline: tokio::time::Sleep,
        expired: Arc<AtomicBool>,
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match this.deadline.poll(cx) {
            Poll::Ready(()) => {
                this.expired.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(axum::Error::new("the request body timed out"))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Gives a request's body `--body-timeout-secs` to arrive, whatever its
/// pace (a body trickled a few bytes at a time is cut too): a 408, and the
/// connection closed.
pub async fn body_deadline(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    use http_body::Body as _;
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let timeout = state.settings.http.body_timeout;
    let expired = Arc::new(AtomicBool::new(false));
    let flag = expired.clone();
    let request = request.map(|inner| {
        Body::new(DeadlineBody {
            inner,
            deadline: tokio::time::sleep(timeout),
            expired: flag,
        })
    });
    let response = next.run(request).await;
    if expired.load(Ordering::Relaxed) {
        return ApiError::BodyTimeout {
            secs: timeout.as_secs_f64().ceil() as u64,
        }
        .into_response();
    }
    response
}

/// Refuses a NUL character in the path, the query string or a JSON body:
/// Postgres text cannot hold one, so it would otherwise be a 500 at the
/// first query that used it. (Multipart text fields are checked as they are
/// read, in `validation.rs`.)
pub async fn refuse_nul_text(request: Request, next: Next) -> Response {
    match check_nul_text(request).await {
        Ok(request) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

async fn check_nul_text(request: Request) -> Result<Request, ApiError> {
    let uri = request.uri();
    let path = percent_encoding::percent_decode_str(uri.path()).decode_utf8_lossy();
    if path.contains('\0') {
        return Err(ApiError::NotFound(
            "no resource has a NUL character (%00) in its path".into(),
        ));
    }
    for (name, value) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        let what = format!("query parameter {}", quote(&name));
        refuse_nul(&what, &name)?;
        refuse_nul(&what, &value)?;
    }
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let limit = JSON_LIMIT_KB * 1024;
    // A body declared larger than any JSON route takes is left to the
    // route's limit, which refuses it from its Content-Length at once.
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if !json || declared.is_some_and(|n| n > limit as u64) {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
        {
            ApiError::BodyTooLarge {
                limit_kb: JSON_LIMIT_KB,
            }
        } else {
            ApiError::BadRequest(format!("cannot read the request body: {e}"))
        }
    })?;
    // Bodies that are not JSON are left to the handler's own message.
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) {
        check_json(&value, &mut String::new())?;
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Every string and key of a JSON value; `at` is the field's path.
fn check_json(value: &serde_json::Value, at: &mut String) -> Result<(), ApiError> {
    use serde_json::Value;
    let named = |at: &str| {
        format!(
            "JSON field {}",
            quote(if at.is_empty() { "(body)" } else { at })
        )
    };
    match value {
        Value::String(s) => refuse_nul(&named(at), s),
        Value::Array(items) => items.iter().enumerate().try_for_each(|(i, item)| {
            let len = at.len();
            at.push_str(&format!("[{i}]"));
            let checked = check_json(item, at);
            at.truncate(len);
            checked
        }),
        Value::Object(fields) => fields.iter().try_for_each(|(key, item)| {
            refuse_nul(&named(at), key)?;
            let len = at.len();
            if !at.is_empty() {
                at.push('.');
            }
            at.push_str(key);
            let checked = check_json(item, at);
            at.truncate(len);
            checked
        }),
        _ => Ok(()),
    }
}

/// How long, and how much, a body declared over its limit is read before
/// its 413 is sent ("lingering close", as nginx does): a client that
/// writes its whole body before reading the answer, as most do, then gets
/// the 413 instead of a broken pipe; one that sends nothing gets it after
/// the idle wait.
const LINGER_IDLE: std::time::Duration = std::time::Duration::from_millis(300);
const LINGER_TOTAL: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_MAX_BYTES: u64 = 16 << 20;

/// Refuses a `Content-Length` over `limit` with 413 (made JSON by
/// [`errors_as_json`]) after draining what the client sends within the
/// linger window, and closes the connection.
pub async fn linger_over_limit(
    State(limit): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    use futures_util::StreamExt;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(declared) = declared.filter(|d| *d > limit as u64) else {
        return next.run(request).await;
    };
    let mut body = request.into_body().into_data_stream();
    let deadline = tokio::time::Instant::now() + LINGER_TOTAL;
    let mut read = 0u64;
    while read < declared.min(LINGER_MAX_BYTES) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(LINGER_IDLE.min(left), body.next()).await {
            Ok(Some(Ok(chunk))) => read += chunk.len() as u64,
            _ => break,
        }
    }
    let mut response = StatusCode::PAYLOAD_TOO_LARGE.into_response();
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// Gives every error answer the API's JSON shape: those of the framework
/// (axum's rejections, tower-http's size limit, an unknown method) come as
/// text or empty otherwise.
pub async fn errors_as_json(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/"));
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return if multipart {
            ApiError::TooLarge {
                limit_mb: state.settings.uploads.max_upload_mb,
            }
        } else {
            ApiError::BodyTooLarge {
                limit_kb: JSON_LIMIT_KB,
            }
        }
        .into_response();
    }
    let (parts, body) = response.into_parts();
    // The framework's own sentence, when it has a short one.
    let text = axum::body::to_bytes(body, 1024).await.ok();
    let text = text
        .as_deref()
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let reason = status.canonical_reason().unwrap_or("error");
    let message = text.map_or_else(|| reason.to_owned(), str::to_owned);
    let code = reason.to_ascii_lowercase().replace([' ', '-'], "_");
    let mut rewritten = json_error(status, &code, message);
    for name in [header::RETRY_AFTER, header::ALLOW, header::CONNECTION] {
        if let Some(value) = parts.headers.get(&name) {
            rewritten.headers_mut().insert(name, value.clone());
        }
    }
    rewritten
}

/// A handler that panicked: a logged 500 in the JSON shape, not a dropped
/// connection.
pub fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    ApiError::Internal(format!("a request handler panicked: {what}")).into_response()
}
