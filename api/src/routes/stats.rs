//! `/v1/stats`: GSB preference statistics and mean expert ratings.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use byteedit_jobs::db::feedback;
use byteedit_jobs::feedback::{Aspect, GsbStats};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::body;
use crate::auth::AdminAuth;
use crate::error::{ApiError, ErrorResponse};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GsbQuery {
    /// Candidate model name (default: every candidate).
    pub candidate: Option<String>,
    /// Baseline model name (default: every baseline).
    pub baseline: Option<String>,
    /// `inpaint`, `erase` or `outpaint` (default: every task).
    pub task: Option<String>,
    /// Default `overall`.
    pub aspect: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GsbRow {
    pub candidate: String,
    pub baseline: String,
    pub task: String,
    #[serde(flatten)]
    pub stats: GsbStats,
    /// Votes with a preference whose preferred image was on the left, out of
    /// `sided` such votes with a recorded side: far from half means position bias.
    pub left_preferred: u64,
    pub sided: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GsbReport {
    pub aspect: Aspect,
    pub rows: Vec<GsbRow>,
}

/// G, S, B, the GSB superiority (G+S)/(S+B) and the win rate
/// (G+S)/((G+S)+(S+B)) with 95 % intervals, per candidate, baseline and task.
#[utoipa::path(get, path = "/v1/stats/gsb", tag = "feedback", params(GsbQuery),
    responses(
        (status = 200, description = "The statistics", body = GsbReport),
        (status = 422, description = "A bad filter", body = ErrorResponse),
    ))]
pub async fn gsb(
    State(state): State<AppState>,
    _admin: AdminAuth,
    query: Result<Query<GsbQuery>, QueryRejection>,
) -> Result<Json<GsbReport>, ApiError> {
    let q = body::query(query)?;
    let aspect: Aspect = body::named(q.aspect.as_deref())?.unwrap_or_default();
    body::named::<byteedit_jobs::Task>(q.task.as_deref())?;
    let rows = feedback::gsb_counts(
        &state.backends.db,
        q.candidate.as_deref(),
        q.baseline.as_deref(),
        q.task.as_deref(),
        aspect,
    )
    .await?;
    Ok(Json(GsbReport {
        aspect,
        rows: rows
            .into_iter()
            .map(|r| GsbRow {
                stats: GsbStats::new(r.good as u64, r.same as u64, r.bad as u64),
                candidate: r.candidate_model,
                baseline: r.baseline_model,
                task: r.task,
                left_preferred: r.left_preferred as u64,
                sided: r.sided as u64,
            })
            .collect(),
    }))
}

/// Mean expert scores of one model on one task.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskScores {
    pub ratings: u64,
    pub coherence: f64,
    pub structure: f64,
    /// `null` when no rating of this model and task has one (erase may omit it).
    pub aesthetics: Option<f64>,
}

/// One row of the table: a model, with a column group per task.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelScores {
    pub model: String,
    /// Keyed by task (`outpaint`, `inpaint`, `erase`); tasks without ratings are absent.
    pub tasks: BTreeMap<String, TaskScores>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RatingReport {
    pub models: Vec<ModelScores>,
}

/// Mean expert scores in the paper's Table 1 layout: one row per model, a
/// column group (coherence, structure, aesthetics) per task.
#[utoipa::path(get, path = "/v1/stats/ratings", tag = "feedback",
    responses((status = 200, description = "The means", body = RatingReport)))]
pub async fn ratings(
    State(state): State<AppState>,
    _admin: AdminAuth,
) -> Result<Json<RatingReport>, ApiError> {
    let mut models: Vec<ModelScores> = Vec::new();
    // Rows come ordered by model, then task.
    for r in feedback::rating_means(&state.backends.db).await? {
        if models.last().is_none_or(|m| m.model != r.model) {
            models.push(ModelScores {
                model: r.model.clone(),
                tasks: BTreeMap::new(),
            });
        }
        if let Some(row) = models.last_mut() {
            row.tasks.insert(
                r.task,
                TaskScores {
                    ratings: r.ratings as u64,
                    coherence: r.coherence,
                    structure: r.structure,
                    aesthetics: r.aesthetics,
                },
            );
        }
    }
    Ok(Json(RatingReport { models }))
}
