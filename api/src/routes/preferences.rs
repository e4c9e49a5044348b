//! `GET /v1/preferences/export`: the votes as JSON Lines for reward-model
//! training, streamed straight from Postgres.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use byteedit_jobs::db::feedback::{self, PreferenceRow};
use byteedit_jobs::feedback::Aspect;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::body;
use crate::auth::AdminAuth;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Default `overall`.
    pub aspect: Option<String>,
}

/// One output in a preference pair; `key` is its storage key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExportedImage {
    pub model: String,
    pub key: String,
}

/// One line of the export.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PreferenceLine {
    pub comparison_id: Uuid,
    pub task: String,
    pub prompt: String,
    pub aspect: Aspect,
    /// Storage keys of the input and its mask.
    pub input_key: String,
    pub mask_key: Option<String>,
    pub candidate: ExportedImage,
    pub baseline: ExportedImage,
    pub good: u64,
    pub same: u64,
    pub bad: u64,
    /// The preferred and non-preferred outputs by vote majority (good against
    /// bad); `null` when tied.
    pub preferred: Option<ExportedImage>,
    pub rejected: Option<ExportedImage>,
    pub tie: bool,
}

impl PreferenceLine {
    fn new(r: PreferenceRow, aspect: Aspect) -> Self {
        let candidate = ExportedImage {
            model: r.candidate_model,
            key: r.candidate_key,
        };
        let baseline = ExportedImage {
            model: r.baseline_model,
            key: r.baseline_key,
        };
        let (preferred, rejected) = match r.good.cmp(&r.bad) {
            std::cmp::Ordering::Greater => (Some(candidate.clone()), Some(baseline.clone())),
            std::cmp::Ordering::Less => (Some(baseline.clone()), Some(candidate.clone())),
            std::cmp::Ordering::Equal => (None, None),
        };
        Self {
            comparison_id: r.comparison_id,
            task: r.task,
            prompt: r.prompt,
            aspect,
            input_key: r.input_key,
            mask_key: r.mask_key,
            tie: preferred.is_none(),
            candidate,
            baseline,
            good: r.good as u64,
            same: r.same as u64,
            bad: r.bad as u64,
            preferred,
            rejected,
        }
    }
}

/// Every voted comparison as one JSON object per line (`PreferenceLine`),
/// oldest first. Storage keys resolve against the service's storage, so
/// training reads the images without the API running.
#[utoipa::path(get, path = "/v1/preferences/export", tag = "feedback", params(ExportQuery),
    responses((status = 200, description = "JSON Lines of PreferenceLine", content_type = "application/x-ndjson", body = PreferenceLine)))]
pub async fn export(
    State(state): State<AppState>,
    _admin: AdminAuth,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = body::query(query)?;
    let aspect: Aspect = body::named(q.aspect.as_deref())?.unwrap_or_default();
    let db = state.backends.db.clone();
    let lines = async_stream::stream! {
        let mut rows = feedback::preferences(&db, aspect);
        while let Some(row) = rows.next().await {
            match row {
                Ok(row) => {
                    let mut line = serde_json::to_vec(&PreferenceLine::new(row, aspect)).unwrap_or_default();
                    line.push(b'\n');
                    yield Ok::<_, std::io::Error>(line);
                }
                Err(e) => {
                    // Headers are sent: end the body early; the client sees a short file.
                    tracing::error!("preference export failed: {e}");
                    yield Err(std::io::Error::other(e.to_string()));
                    break;
                }
            }
        }
    };
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}
