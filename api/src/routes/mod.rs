//! HTTP routes, one file per resource, assembled into one router.

pub(crate) mod body;
pub mod comparisons;
pub mod edits;
pub mod events;
pub mod guards;
pub mod health;
pub mod jobs;
pub mod keys;
pub mod models;
pub mod pages;
pub mod preferences;
pub mod ratings;
pub mod rewards;
pub mod stats;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::ApiError;
use crate::openapi::ApiDoc;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let upload_limit = state.settings.uploads.max_upload_bytes();
    let json_limit = body::JSON_LIMIT_KB * 1024;
    let v1 = Router::new()
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
        .route("/comparisons/next", get(comparisons::next_comparison))
        .route("/comparisons/{id}/votes", post(comparisons::vote))
        .route("/stats/gsb", get(stats::gsb))
        .route("/stats/ratings", get(stats::ratings))
        .route("/preferences/export", get(preferences::export))
        .route("/rewards", get(rewards::list_rewards));
    // The routes that take images. The layers hold the upload limit: the
    // extractors' (`DefaultBodyLimit`), tower-http's for bodies without a
    // length, and `linger_over_limit`, which refuses a larger
    // `Content-Length` without handing the body on (draining what the
    // client sends first, so that it reads the 413 rather than a reset).
    let uploads = Router::new()
        .route("/v1/edits", post(edits::create_edit))
        .route("/v1/comparisons", post(comparisons::create_comparison))
        .layer(DefaultBodyLimit::max(upload_limit))
        .layer(RequestBodyLimitLayer::new(upload_limit))
        .layer(middleware::from_fn_with_state(
            upload_limit,
            guards::linger_over_limit,
        ));
    Router::new()
        .nest("/v1", v1)
        .route("/", get(pages::editor_page))
        .route("/edit", get(pages::editor_page))
        .route("/vote", get(pages::vote_page))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::spec()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Every other route takes JSON at most.
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(RequestBodyLimitLayer::new(json_limit))
        .layer(middleware::from_fn_with_state(
            json_limit,
            guards::linger_over_limit,
        ))
        .merge(uploads)
        .layer(middleware::from_fn(guards::refuse_nul_text))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guards::body_deadline,
        ))
        .layer(CatchPanicLayer::custom(guards::panicked))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guards::errors_as_json,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no route {}; see /docs for the API",
        byteedit_edit::quote(uri.path())
    ))
}

async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> (axum::http::StatusCode, ApiError) {
    (
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        ApiError::BadRequest(format!(
            "`{method}` is not allowed on {}; see /docs",
            byteedit_edit::quote(uri.path())
        )),
    )
}

/// Parses a job id from the path; a malformed one is simply not found.
pub(crate) fn parse_job_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw)
        .map_err(|_| ApiError::NotFound(format!("no job {}", byteedit_edit::quote(raw))))
}
