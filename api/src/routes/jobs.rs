//! `/v1/jobs`: read, list, cancel jobs and download their outputs.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use byteedit_edit::quote;
use byteedit_jobs::db::{self, CancelOutcome};
use byteedit_jobs::{JobRecord, JobStatus, OutputRecord, events};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::parse_job_id;
use crate::auth::{Caller, ClientAuth};
use crate::error::{ApiError, ErrorResponse};
use crate::state::AppState;
use crate::views::{JobOut, job_out};

/// The job `raw_id`, if `caller` may see it and it has not expired: 404 when
/// unknown or another client's (as if it did not exist), 410 once expired.
pub async fn find_job(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
) -> Result<JobRecord, ApiError> {
    let id = parse_job_id(raw_id)?;
    let job = db::jobs::get(&state.backends.db, id)
        .await?
        .filter(|job| caller.may_see(job))
        .ok_or_else(|| ApiError::NotFound(format!("no job `{id}`")))?;
    unexpired(job)
}

/// The job `raw_id`, if `caller` may see its images: as [`find_job`], and
/// volunteers see the jobs of comparisons (experts also the jobs admins
/// submitted, which they rate).
async fn find_job_images(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
) -> Result<JobRecord, ApiError> {
    let id = parse_job_id(raw_id)?;
    let db = &state.backends.db;
    let job = db::jobs::get(db, id).await?;
    let visible = match (&job, &caller.0.volunteer) {
        (None, _) => false,
        (Some(job), None) => caller.may_see(job),
        (Some(_), Some(v)) => db::feedback::open_to_volunteer(db, id, v.expert).await?,
    };
    let job = job
        .filter(|_| visible)
        .ok_or_else(|| ApiError::NotFound(format!("no job `{id}`")))?;
    unexpired(job)
}

/// A stored file of `job`. Retention may delete it between reading the row
/// and the file: that is a 410, not a 500.
async fn stored(state: &AppState, job: &JobRecord, key: &str) -> Result<bytes::Bytes, ApiError> {
    match state.backends.storage.get(key).await {
        Err(e) if e.is_not_found() => Err(ApiError::Gone(format!(
            "job `{}` has expired: its files were deleted after the retention period; submit the edit again",
            job.id
        ))),
        other => Ok(other?),
    }
}

fn unexpired(job: JobRecord) -> Result<JobRecord, ApiError> {
    match job.expired_at {
        Some(_) => Err(gone(&job)),
        None => Ok(job),
    }
}

/// The 410 of an expired job.
pub fn gone(job: &JobRecord) -> ApiError {
    let when = job
        .expired_at
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    ApiError::Gone(format!(
        "job `{}` has expired ({when}): its input, mask and outputs were deleted after the retention period; submit the edit again",
        job.id
    ))
}

/// A job's state, progress, outputs and parameters.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = JobOut),
        (status = 404, description = "No such job", body = ErrorResponse),
        (status = 410, description = "The job has expired", body = ErrorResponse),
    ))]
pub async fn get_job(
    State(state): State<AppState>,
    ClientAuth(caller): ClientAuth,
    Path(id): Path<String>,
) -> Result<Json<JobOut>, ApiError> {
    let job = find_job(&state, &caller, &id).await?;
    Ok(Json(job_out(&state, job).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Jobs per page, 1 to 100 (default 20).
    pub limit: Option<String>,
    /// Cursor: the `next` of the previous page.
    pub before: Option<String>,
    /// Only jobs in this status.
    pub status: Option<String>,
}

/// One page of jobs, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobOut>,
    /// Cursor for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Jobs, newest first, with cursor pagination: a client's own, or every
/// job for an admin.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = JobList),
        (status = 422, description = "A bad `limit`, `before` or `status`", body = ErrorResponse),
    ))]
pub async fn list_jobs(
    State(state): State<AppState>,
    ClientAuth(caller): ClientAuth,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<JobList>, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::BadRequest(super::body::brief(e.body_text())))?;
    for key in query.keys() {
        if !["limit", "before", "status"].contains(&key.as_str()) {
            return Err(ApiError::invalid(
                "unknown_field",
                format!(
                    "unknown query parameter {}; use limit, before, status",
                    quote(key)
                ),
            ));
        }
    }
    let limit = match query.get("limit") {
        None => 20,
        Some(raw) => match raw.parse::<u32>() {
            Ok(n @ 1..=100) => n,
            _ => {
                return Err(ApiError::invalid(
                    "invalid_field",
                    format!(
                        "`limit` must be an integer from 1 to 100; got {}",
                        quote(raw)
                    ),
                ));
            }
        },
    };
    let before = query
        .get("before")
        .map(|raw| {
            Uuid::parse_str(raw).map_err(|_| {
                ApiError::invalid(
                    "invalid_field",
                    format!(
                        "`before` must be the `next` cursor of a previous page; got {}",
                        quote(raw)
                    ),
                )
            })
        })
        .transpose()?;
    let status = query
        .get("status")
        .map(|raw| {
            raw.parse::<JobStatus>().map_err(|_| {
                ApiError::invalid(
                    "invalid_field",
                    format!("`status` must be one of queued, running, succeeded, failed, canceled; got {}", quote(raw)),
                )
            })
        })
        .transpose()?;
    let db = &state.backends.db;
    let page = db::jobs::list(db, caller.owner_filter(), before, status, limit).await?;
    let ids: Vec<Uuid> = page.jobs.iter().map(|j| j.id).collect();
    let outputs = db::jobs::outputs_of(db, &ids).await?;
    let mut jobs = Vec::with_capacity(page.jobs.len());
    for job in page.jobs {
        let position = match job.status {
            JobStatus::Queued => Some(db::jobs::queue_position(db, &job).await?),
            _ => None,
        };
        let mine: Vec<OutputRecord> = outputs
            .iter()
            .filter(|o| o.job_id == job.id)
            .cloned()
            .collect();
        jobs.push(JobOut::new(job, &mine, position));
    }
    Ok(Json(JobList {
        jobs,
        next: page.next.map(|id| id.to_string()),
    }))
}

/// Cancels a job: a queued job never runs; a running one stops at its next
/// denoising step, and if its last step was already done its outputs are
/// discarded: either way it ends `canceled` (or `failed`, had it failed
/// first), never `succeeded`, and `cancel_requested` stays true. A job that
/// had already ended is left as it is (409).
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "Canceled (was queued)", body = JobOut),
        (status = 202, description = "Cancel requested (running): the job ends `canceled`, with no outputs, never `succeeded`; watch its events", body = JobOut),
        (status = 404, description = "No such job", body = ErrorResponse),
        (status = 409, description = "The job had already ended; it is left as it ended", body = ErrorResponse),
    ))]
pub async fn cancel_job(
    State(state): State<AppState>,
    ClientAuth(caller): ClientAuth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = find_job(&state, &caller, &id).await?.id;
    let backends = &state.backends;
    match db::jobs::cancel(&backends.db, id).await? {
        CancelOutcome::Canceled(job) => {
            let message = event(&job, events::JobEvent::Canceled);
            publish_quietly(&state, &message).await;
            Ok((StatusCode::OK, Json(job_out(&state, job).await?)).into_response())
        }
        CancelOutcome::Requested(job) => {
            let message = event(&job, events::JobEvent::CancelRequested);
            publish_quietly(&state, &message).await;
            Ok((StatusCode::ACCEPTED, Json(job_out(&state, job).await?)).into_response())
        }
        CancelOutcome::AlreadyFinished(job) => Err(ApiError::Conflict {
            code: "job_finished",
            message: format!(
                "job `{id}` already ended ({}); there is nothing to cancel",
                job.status
            ),
        }),
        CancelOutcome::NotFound => Err(ApiError::NotFound(format!("no job `{id}`"))),
    }
}

fn event(job: &JobRecord, event: events::JobEvent) -> events::EventMessage {
    events::EventMessage {
        job: job.id,
        model: job.model.clone(),
        task: job.task,
        event,
    }
}

/// Events are notifications: Postgres already holds the change, and workers
/// also read cancellation from it on their heartbeat, so a failed publish is
/// logged, not returned.
async fn publish_quietly(state: &AppState, message: &events::EventMessage) {
    if let Err(e) = events::publish(&state.backends.conn, &state.backends.prefix, message).await {
        tracing::warn!(
            "cannot publish {} for job {}: {e}",
            message.event.name(),
            message.job
        );
    }
}

/// One output image (PNG).
#[utoipa::path(get, path = "/v1/jobs/{id}/outputs/{index}", tag = "jobs",
    params(
        ("id" = Uuid, Path, description = "Job id"),
        ("index" = u32, Path, description = "Output index, from 0"),
    ),
    responses(
        (status = 200, description = "The image", content_type = "image/png"),
        (status = 404, description = "No such job or output", body = ErrorResponse),
        (status = 410, description = "The job has expired", body = ErrorResponse),
        (status = 409, description = "The job has not succeeded (yet)", body = ErrorResponse),
    ))]
pub async fn get_output(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, index)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let job = find_job_images(&state, &caller, &id).await?;
    if job.status != JobStatus::Succeeded {
        return Err(ApiError::Conflict {
            code: "not_ready",
            message: format!(
                "job `{}` is {}; outputs exist once it has succeeded",
                job.id, job.status
            ),
        });
    }
    let outputs = db::jobs::outputs(&state.backends.db, job.id).await?;
    let output = index
        .parse::<u32>()
        .ok()
        .and_then(|i| outputs.iter().find(|o| o.index == i))
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "job `{}` has outputs 0 to {}; there is no output `{index}`",
                job.id,
                outputs.len().saturating_sub(1)
            ))
        })?;
    let bytes = stored(&state, &job, &output.storage_key).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png".to_owned()),
            (
                header::CACHE_CONTROL,
                "private, max-age=31536000, immutable".to_owned(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{}-{}.png\"", job.id, output.index),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// Which upload of a job to return.
#[derive(Debug, Clone, Copy)]
pub enum Upload {
    Input,
    Mask,
}

/// The image a job was submitted with (as uploaded).
#[utoipa::path(get, path = "/v1/jobs/{id}/input", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "The uploaded image (PNG, JPEG or WebP)"),
        (status = 404, description = "No such job", body = ErrorResponse),
        (status = 410, description = "The job has expired", body = ErrorResponse),
    ))]
pub async fn get_input(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    get_upload(&state, &caller, &id, Upload::Input).await
}

/// The mask a job was submitted with (as uploaded).
#[utoipa::path(get, path = "/v1/jobs/{id}/mask", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "The uploaded mask"),
        (status = 404, description = "No such job, or it has no mask file", body = ErrorResponse),
        (status = 410, description = "The job has expired", body = ErrorResponse),
    ))]
pub async fn get_mask(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    get_upload(&state, &caller, &id, Upload::Mask).await
}

async fn get_upload(
    state: &AppState,
    caller: &Caller,
    id: &str,
    which: Upload,
) -> Result<Response, ApiError> {
    let job = find_job_images(state, caller, id).await?;
    let key = match which {
        Upload::Input => job.image_key.clone(),
        Upload::Mask => job.mask_key.clone().ok_or_else(|| {
            ApiError::NotFound(format!("job `{id}` was submitted without a mask file"))
        })?,
    };
    let bytes = stored(state, &job, &key).await?;
    let kind = match image::guess_format(&bytes) {
        Ok(image::ImageFormat::Jpeg) => "image/jpeg",
        Ok(image::ImageFormat::WebP) => "image/webp",
        _ => "image/png",
    };
    Ok((
        [
            (header::CONTENT_TYPE, kind),
            (
                header::CACHE_CONTROL,
                "private, max-age=31536000, immutable",
            ),
        ],
        bytes,
    )
        .into_response())
}
