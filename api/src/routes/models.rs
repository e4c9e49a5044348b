//! `/v1/models`: what the workers serve.

use axum::Json;
use axum::extract::State;
use byteedit_jobs::{ModelInfo, db};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::settings::UploadLimits;
use crate::state::AppState;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelOut {
    #[serde(flatten)]
    pub info: ModelInfo,
    /// Workers serving it now; jobs for a model with none wait in its queue.
    pub workers: u32,
    /// Last time a worker registered it.
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelOut>,
    /// What an upload to `POST /v1/edits` may be, so a client can say so
    /// before it sends one.
    pub upload_limits: UploadLimits,
}

/// Every model a worker has served, with its defaults and live worker
/// count, and the upload limits.
#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses((status = 200, description = "The models", body = ModelList)))]
pub async fn list_models(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<ModelList>, ApiError> {
    let models = db::models::list(&state.backends.db).await?;
    Ok(Json(ModelList {
        models: models
            .into_iter()
            .map(|m| ModelOut {
                info: m.info,
                workers: m.workers,
                updated_at: m.updated_at,
            })
            .collect(),
        upload_limits: state.settings.uploads,
    }))
}
