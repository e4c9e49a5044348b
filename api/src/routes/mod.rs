//! HTTP routes, one file per resource, assembled into one router.

pub(crate) mod body;
pub mod comparisons;
pub mod edits;
pub mod events;
pub mod health;
pub mod jobs;
pub mod keys;
pub mod models;
pub mod preferences;
pub mod ratings;
pub mod stats;
pub mod vote_page;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use utoipa_swagger_ui::SwaggerUi;

use crate::error::ApiError;
use crate::openapi::ApiDoc;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let upload_limit = state.settings.uploads.max_upload_bytes();
    let v1 = Router::new()
        .route(
            "/edits",
            post(edits::create_edit).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/jobs", get(jobs::list_jobs))
        .route("/jobs/{id}", get(jobs::get_job).delete(jobs::cancel_job))
        .route("/jobs/{id}/outputs/{index}", get(jobs::get_output))
        .route("/jobs/{id}/events", get(events::job_events))
        .route("/jobs/{id}/input", get(jobs::get_input))
        .route("/jobs/{id}/mask", get(jobs::get_mask))
        .route("/jobs/{id}/ratings", post(ratings::rate))
        .route("/models", get(models::list_models))
        .route("/keys", post(keys::create_key).get(keys::list_keys))
        .route("/keys/{id}", axum::routing::delete(keys::revoke_key))
        .route(
            "/comparisons",
            post(comparisons::create_comparison).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/comparisons/next", get(comparisons::next_comparison))
        .route("/comparisons/{id}/votes", post(comparisons::vote))
        .route("/stats/gsb", get(stats::gsb))
        .route("/stats/ratings", get(stats::ratings))
        .route("/preferences/export", get(preferences::export));
    Router::new()
        .nest("/v1", v1)
        .route("/vote", get(vote_page::vote_page))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::spec()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Every body-reading extractor obeys this; the upload routes raise
        // it to the upload limit above (the route's layer wins).
        .layer(DefaultBodyLimit::max(body::JSON_LIMIT_KB * 1024))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            too_large_as_json,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .with_state(state)
}

/// A body refused for its size before any handler ran (by hyper or a
/// rejection that does not go through [`body`]) still gets the API's JSON
/// error shape.
async fn too_large_as_json(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    let multipart = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/"));
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        use axum::response::IntoResponse;
        return if multipart {
            ApiError::TooLarge {
                limit_mb: state.settings.uploads.max_upload_mb,
            }
            .into_response()
        } else {
            ApiError::BodyTooLarge {
                limit_kb: body::JSON_LIMIT_KB,
            }
            .into_response()
        };
    }
    response
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route `{}`; see /docs for the API", uri.path()))
}

async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> (axum::http::StatusCode, ApiError) {
    (
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        ApiError::BadRequest(format!(
            "`{method}` is not allowed on `{}`; see /docs",
            uri.path()
        )),
    )
}

/// Parses a job id from the path; a malformed one is simply not found.
pub(crate) fn parse_job_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(format!("no job `{raw}`")))
}
