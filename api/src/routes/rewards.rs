//! `GET /v1/rewards`: the registered reward checkpoints (admins), what
//! `byteedit train-reward --register` recorded.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use byteedit_jobs::db::rewards::{self, RewardModel};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::body;
use crate::auth::AdminAuth;
use crate::error::{ApiError, ErrorResponse};
use crate::state::AppState;

const KINDS: [&str; 3] = ["aesthetic", "alignment", "coherence"];

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RewardQuery {
    /// `aesthetic`, `alignment` or `coherence` (default: every kind).
    pub kind: Option<String>,
}

/// One registered reward checkpoint.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RewardOut {
    pub id: Uuid,
    pub name: String,
    /// `aesthetic` (R_α), `alignment` (R_β) or `coherence` (R_γ).
    pub kind: String,
    /// 1 for a name's first checkpoint, then one more each time.
    pub version: i32,
    /// The registered checkpoint it was trained from, if any.
    pub parent_id: Option<Uuid>,
    /// The folder it was trained from (`--init`), registered or not.
    pub parent_path: Option<String>,
    /// The reward folder.
    pub location: String,
    /// The data file, its example counts and the training config.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// `accuracy` (pairwise, aesthetic and alignment) or `auc` (per pixel, coherence).
    pub metric: String,
    pub held_out_score: f64,
    /// The normalisation stored with it (recomputed on the held-out split).
    pub score_mean: f64,
    pub score_std: f64,
    pub steps: i64,
    pub created_at: DateTime<Utc>,
}

impl From<RewardModel> for RewardOut {
    fn from(r: RewardModel) -> Self {
        Self {
            id: r.id,
            name: r.name,
            kind: r.kind,
            version: r.version,
            parent_id: r.parent_id,
            parent_path: r.parent_path,
            location: r.location,
            data: r.data,
            metric: r.metric,
            held_out_score: r.held_out_score,
            score_mean: r.score_mean,
            score_std: r.score_std,
            steps: r.steps,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RewardList {
    pub rewards: Vec<RewardOut>,
}

/// Every registered reward checkpoint, newest first.
#[utoipa::path(get, path = "/v1/rewards", tag = "feedback", params(RewardQuery),
    responses(
        (status = 200, description = "The checkpoints", body = RewardList),
        (status = 422, description = "An unknown kind", body = ErrorResponse),
    ))]
pub async fn list_rewards(
    State(state): State<AppState>,
    _admin: AdminAuth,
    query: Result<Query<RewardQuery>, QueryRejection>,
) -> Result<Json<RewardList>, ApiError> {
    let q = body::query(query)?;
    if let Some(kind) = q.kind.as_deref()
        && !KINDS.contains(&kind)
    {
        return Err(ApiError::invalid(
            "invalid_field",
            format!(
                "`kind` must be one of {}, not {}",
                KINDS.join(", "),
                byteedit_edit::quote(kind)
            ),
        ));
    }
    let rewards = rewards::list(&state.backends.db, q.kind.as_deref()).await?;
    Ok(Json(RewardList {
        rewards: rewards.into_iter().map(RewardOut::from).collect(),
    }))
}
