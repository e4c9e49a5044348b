//! `POST /v1/jobs/{id}/ratings`: expert scores of one output, 1 to 5.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use byteedit_jobs::db::feedback::{self, NewRating};
use byteedit_jobs::db::{self};
use byteedit_jobs::{JobStatus, Task};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::body::{json, upsert_status};
use super::parse_job_id;
use crate::auth::VolunteerAuth;
use crate::error::{ApiError, ErrorResponse};
use crate::state::AppState;

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RatingIn {
    /// Which output of the job (default 0).
    #[serde(default)]
    pub output: u32,
    /// Does the edit fit its surroundings (no seams, consistent light)? 1-5.
    pub coherence: i64,
    /// Are shapes and objects well formed? 1-5.
    pub structure: i64,
    /// How good does it look? 1-5; optional for `erase`.
    pub aesthetics: Option<i64>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct RatingOut {
    pub job_id: Uuid,
    #[serde(flatten)]
    pub scores: RatingIn,
    /// True when it replaced this expert's earlier rating.
    pub replaced: bool,
}

/// Records an expert's scores of one output; rating again replaces them.
#[utoipa::path(post, path = "/v1/jobs/{id}/ratings", tag = "feedback",
    params(("id" = Uuid, Path, description = "Job id")),
    request_body = RatingIn,
    responses(
        (status = 201, description = "Recorded", body = RatingOut),
        (status = 200, description = "Replaced the earlier rating", body = RatingOut),
        (status = 403, description = "Not a volunteer key, or the volunteer is not an expert", body = ErrorResponse),
        (status = 404, description = "No such job", body = ErrorResponse),
        (status = 409, description = "The job has not succeeded", body = ErrorResponse),
        (status = 410, description = "The job has expired", body = ErrorResponse),
        (status = 422, description = "A score is missing or out of range", body = ErrorResponse),
    ))]
pub async fn rate(
    State(state): State<AppState>,
    VolunteerAuth(volunteer): VolunteerAuth,
    Path(id): Path<String>,
    body: Result<Json<RatingIn>, JsonRejection>,
) -> Result<(StatusCode, Json<RatingOut>), ApiError> {
    let job_id = parse_job_id(&id)?;
    let body = json(body)?;
    if !volunteer.expert {
        return Err(ApiError::Forbidden(
            "only experts rate single outputs; volunteers vote on pairs".into(),
        ));
    }
    let db = &state.backends.db;
    // Experts rate comparisons' jobs and those admins submit for rating; a
    // client's own job is "not found" to them, as to everyone else.
    let visible = db::feedback::open_to_volunteer(db, job_id, true).await?;
    let job = db::jobs::get(db, job_id)
        .await?
        .filter(|_| visible)
        .ok_or_else(|| ApiError::NotFound(format!("no job `{id}`")))?;
    if job.expired_at.is_some() {
        return Err(super::jobs::gone(&job));
    }
    if job.status != JobStatus::Succeeded {
        return Err(ApiError::Conflict {
            code: "job_not_succeeded",
            message: format!(
                "job `{id}` is {}; rate jobs that have succeeded",
                job.status
            ),
        });
    }
    if body.output >= job.params.num_outputs {
        return Err(ApiError::invalid(
            "invalid_field",
            format!(
                "`output` is {}, but the job has {} output(s)",
                body.output, job.params.num_outputs
            ),
        ));
    }
    let score = |name: &str, v: i64| {
        if (1..=5).contains(&v) {
            Ok(v as i16)
        } else {
            Err(ApiError::invalid(
                "invalid_field",
                format!("`{name}` must be a whole number from 1 to 5; got {v}"),
            ))
        }
    };
    let coherence = score("coherence", body.coherence)?;
    let structure = score("structure", body.structure)?;
    let aesthetics = match (body.aesthetics, job.task) {
        (Some(v), _) => Some(score("aesthetics", v)?),
        (None, Task::Erase) => None,
        (None, task) => {
            return Err(ApiError::invalid(
                "missing_field",
                format!("`aesthetics` is required for `{task}` (only `erase` may leave it out)"),
            ));
        }
    };
    let replaced = feedback::upsert_rating(
        db,
        &NewRating {
            job: job.id,
            output: body.output as i32,
            volunteer: volunteer.id,
            coherence,
            structure,
            aesthetics,
        },
    )
    .await?
    .ok_or_else(|| super::jobs::gone(&job))?;
    Ok((
        upsert_status(replaced),
        Json(RatingOut {
            job_id: job.id,
            scores: body,
            replaced,
        }),
    ))
}
