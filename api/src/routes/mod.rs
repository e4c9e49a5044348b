//! HTTP routes, one file per resource, assembled into one router.

pub mod edits;
pub mod events;
pub mod health;
pub mod jobs;
pub mod models;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use utoipa_swagger_ui::SwaggerUi;

use crate::error::ApiError;
use crate::openapi::ApiDoc;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let upload_limit = state.config.max_upload_mb * 1024 * 1024;
    let v1 = Router::new()
        .route(
            "/edits",
            post(edits::create_edit).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/jobs", get(jobs::list_jobs))
        .route("/jobs/{id}", get(jobs::get_job).delete(jobs::cancel_job))
        .route("/jobs/{id}/outputs/{index}", get(jobs::get_output))
        .route("/jobs/{id}/events", get(events::job_events))
        .route("/models", get(models::list_models));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::spec()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .with_state(state)
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
