//! `POST /v1/edits`: upload an image (and mask), get a queued job back.

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use byteedit_jobs::db::{self, NewJob};
use byteedit_jobs::job::keys;
use byteedit_jobs::{JobError, JobStatus};
use utoipa::ToSchema;
use uuid::Uuid;

use super::jobs::job_out;
use crate::error::{ApiError, ErrorResponse};
use crate::state::AppState;
use crate::validation::{RawEditForm, validate};

/// The multipart form of `POST /v1/edits` (documentation only: the handler
/// reads the parts itself to refuse unknown fields with a clear message).
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct EditForm {
    /// PNG, JPEG or WebP; the format is read from the bytes.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// Same size as `image`; white = the region to edit. Required for
    /// `inpaint` and `erase`; for `outpaint` it marks extra area to repaint.
    #[schema(value_type = Option<String>, format = Binary)]
    mask: Option<Vec<u8>>,
    /// `inpaint`, `erase` or `outpaint`.
    task: String,
    /// Required for `inpaint`; optional otherwise.
    prompt: Option<String>,
    negative_prompt: Option<String>,
    /// A name from `GET /v1/models`; default: the only (or configured) model.
    model: Option<String>,
    /// Denoising steps, 1 to the model's `max_steps`; default: the model's.
    steps: Option<u32>,
    /// Classifier-free guidance, 0 to 50; at most 1 turns guidance off.
    guidance_scale: Option<f64>,
    /// One of the model's `schedulers`.
    scheduler: Option<String>,
    /// 0 to 2^53-1; default: random (the job reports the one used).
    seed: Option<u64>,
    /// 1 to 4 images, with seeds `seed`, `seed+1`, ...
    num_outputs: Option<u32>,
    /// Outpainting: pixels to add on the left (0 to 2048).
    extend_left: Option<u32>,
    extend_right: Option<u32>,
    extend_top: Option<u32>,
    extend_bottom: Option<u32>,
}

/// Submits an edit. Answers at once with the queued job; follow it with
/// `GET /v1/jobs/{id}` or its `/events` stream.
#[utoipa::path(post, path = "/v1/edits", tag = "edits",
    request_body(content = EditForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "Queued", body = super::jobs::JobOut,
            headers(("Location" = String, description = "URL of the job"))),
        (status = 400, description = "The form cannot be read", body = ErrorResponse),
        (status = 413, description = "The upload is too large", body = ErrorResponse),
        (status = 422, description = "A field is missing or wrong; the message says which", body = ErrorResponse),
        (status = 503, description = "Postgres, Redis or storage is unavailable", body = ErrorResponse),
    ))]
pub async fn create_edit(
    State(state): State<AppState>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let multipart = multipart.map_err(|e| {
        ApiError::BadRequest(format!(
            "send the edit as multipart/form-data: {}",
            e.body_text()
        ))
    })?;
    let form = RawEditForm::read(multipart, state.config.max_upload_mb).await?;
    let backends = &state.backends;
    let mut models = state.models(false).await?;
    let name = form.model_name(&state.config, &models)?;
    if !models.iter().any(|m| m.info.name == name) {
        models = state.models(true).await?;
    }
    let model = models.iter().find(|m| m.info.name == name).ok_or_else(|| {
        let known: Vec<&str> = models.iter().map(|m| m.info.name.as_str()).collect();
        ApiError::invalid(
            "unknown_model",
            format!("no model `{name}`; the models are: {}", known.join(", ")),
        )
    })?;
    let edit = validate(form, &state.config, model)?;

    let id = Uuid::now_v7();
    let image_key = keys::input(id);
    let mask_key = edit.mask.as_ref().map(|_| keys::mask(id));
    let storage = &backends.storage;
    match (&mask_key, edit.mask.clone()) {
        (Some(key), Some(mask)) => {
            tokio::try_join!(
                storage.put(&image_key, edit.image.clone()),
                storage.put(key, mask)
            )?;
        }
        _ => storage.put(&image_key, edit.image.clone()).await?,
    }
    let job = db::jobs::insert(
        &backends.db,
        &NewJob {
            id,
            task: edit.task,
            model: edit.model.clone(),
            params: edit.params,
            image_key,
            mask_key,
            width: edit.width,
            height: edit.height,
        },
    )
    .await?;
    if let Err(e) = backends.queue().enqueue(&job.model, id).await {
        // Without a queue entry no worker would ever see it: end it now so
        // the client is told, rather than leaving it queued forever.
        let error = JobError {
            code: "queue_unavailable".into(),
            message: "the job queue was unreachable; submit again".into(),
        };
        if let Err(e2) = db::jobs::abandon(&backends.db, id, &error).await {
            tracing::error!("cannot mark unqueued job {id} failed: {e2}");
        }
        return Err(e.into());
    }
    state
        .metrics
        .jobs_submitted
        .with_label_values(&[job.model.as_str(), job.task.as_str()])
        .inc();
    tracing::info!(job = %id, model = %job.model, task = %job.task, "job queued");
    debug_assert_eq!(job.status, JobStatus::Queued);
    let out = job_out(&state, job).await?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/jobs/{id}"))],
        Json(out),
    )
        .into_response())
}
