//! Liveness, readiness and metrics: open to everyone, no auth.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use byteedit_jobs::db;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Serialize, serde::Deserialize, ToSchema)]
pub struct HealthOut {
    /// `ok`.
    pub status: String,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process answers", body = HealthOut)))]
pub async fn healthz() -> Json<HealthOut> {
    Json(HealthOut {
        status: "ok".into(),
    })
}

/// Postgres and Redis are reachable.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready to take jobs", body = HealthOut),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<HealthOut>, ApiError> {
    state.backends.ping().await.map_err(|e| {
        if e.is_unavailable() {
            // database_unavailable / queue_unavailable, as on every route.
            ApiError::Backend(e)
        } else {
            // A failing ping means not ready, whatever the error's kind.
            tracing::warn!("not ready: {e}");
            ApiError::Unavailable(format!("not ready: {}", e.error_type()))
        }
    })?;
    Ok(Json(HealthOut {
        status: "ok".into(),
    }))
}

/// Prometheus metrics: requests, queue depth, job durations, step times.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let m = &state.metrics;
    // Gauges are read from Postgres at scrape time: it is the source of truth.
    m.queue_depth.reset();
    m.workers.reset();
    match db::jobs::depth_by_model(&state.backends.db).await {
        Ok(rows) => {
            for (model, status, n) in rows {
                m.queue_depth
                    .with_label_values(&[&model, status.as_str()])
                    .set(n);
            }
        }
        Err(e) => tracing::warn!("metrics: cannot read queue depth: {e}"),
    }
    match db::models::list(&state.backends.db).await {
        Ok(models) => {
            for model in models {
                m.workers
                    .with_label_values(&[&model.info.name])
                    .set(model.workers as i64);
            }
        }
        Err(e) => tracing::warn!("metrics: cannot read workers: {e}"),
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
}
