//! `POST /v1/edits`: upload an image (and mask), get a queued job back.

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use byteedit_jobs::db::idempotency::{self, KeyState};
use byteedit_jobs::db::{self, NewJob};
use byteedit_jobs::job::keys;
use byteedit_jobs::{JobError, JobRecord, JobStatus};
use utoipa::ToSchema;
use uuid::Uuid;

use super::jobs::job_out;
use crate::auth::ClientAuth;
use crate::error::{ApiError, ErrorResponse};
use crate::state::AppState;
use crate::validation::{RawEditForm, validate};

/// The multipart form of `POST /v1/edits` (documentation only: the handler
/// reads the parts itself to refuse unknown fields with a clear message).
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct EditForm {
    /// PNG, JPEG or WebP of any size within the limits; the format is read
    /// from the bytes. Without `mask`, its transparent pixels (alpha below
    /// 50 %) mark the region to edit.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// Grey or binary image, same size as `image` (or any size with
    /// `mask_resize=true`); pixels at 50 % grey or more are edited. Required
    /// for `inpaint` and `erase` unless the image has transparency; for
    /// `outpaint` it marks extra area to repaint.
    #[schema(value_type = Option<String>, format = Binary)]
    mask: Option<Vec<u8>>,
    /// `inpaint` (fill the mask with the prompt), `erase` (remove what the
    /// mask covers; no prompt needed) or `outpaint` (extend the canvas).
    task: String,
    /// Required for `inpaint`; optional otherwise.
    prompt: Option<String>,
    /// Default for `erase`: the model's `erase_negative_prompt`.
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
    /// Outpainting, instead of `extend_*`: the canvas width (at least the image's).
    target_width: Option<u32>,
    /// Outpainting: the canvas height (at least the image's).
    target_height: Option<u32>,
    /// Outpainting, instead of a target size: `W:H` (e.g. `16:9`); the
    /// smallest canvas with this ratio that holds the image.
    aspect_ratio: Option<String>,
    /// Outpainting with a target size or ratio: where the image sits:
    /// `center` (default), `top-left`, `top`, `top-right`, `left`, `right`,
    /// `bottom-left`, `bottom`, `bottom-right`.
    anchor: Option<String>,
    /// Outpainting: how far the mask reaches into the image along each
    /// extended side (0 to 256, default 8), so the seam is repainted.
    overlap: Option<u32>,
    /// Grow (> 0) or shrink (< 0) the mask by this many pixels (-256 to 256, default 0).
    mask_grow: Option<i32>,
    /// Blend band (0 to 128, default 8): the edit fades out within twice
    /// this many pixels outside the mask; beyond it the output is the input.
    mask_feather: Option<u32>,
    /// `true`: resize a mask of another size to the image instead of refusing it.
    mask_resize: Option<bool>,
    /// Context around the mask given to the model, in pixels (0 to 2048, default 32).
    crop_padding: Option<u32>,
    /// `true`: match the generated region's colours to its surroundings.
    color_match: Option<bool>,
    /// An http(s) URL (at most 2048 characters) that is `POST`ed a JSON
    /// body when the job ends (succeeded, failed or canceled), signed with
    /// `ByteEdit-Signature` and retried with backoff until it answers 2xx.
    #[schema(max_length = 2048)]
    webhook_url: Option<String>,
}

/// The `Idempotency-Key` header, checked.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_owned()))
        }
        _ => Err(ApiError::invalid(
            "invalid_header",
            "`Idempotency-Key` must be 1 to 255 visible ASCII characters (a UUID works well)",
        )),
    }
}

/// Reserves `key` for this request, or answers with the job a repeat of it
/// created. A repeat of a request still being handled waits for it (up to
/// 10 s); the key used for another request is a 409.
async fn claim_key(
    state: &AppState,
    owner: Uuid,
    key: &str,
    fingerprint: &str,
) -> Result<Option<JobRecord>, ApiError> {
    let db = &state.backends.db;
    for _ in 0..100 {
        match idempotency::reserve(db, owner, key, fingerprint).await? {
            KeyState::Reserved => return Ok(None),
            KeyState::Done(job) => {
                return db::jobs::get(db, job)
                    .await?
                    .map(Some)
                    .ok_or_else(|| ApiError::NotFound(format!("no job `{job}`")));
            }
            KeyState::Mismatch => {
                return Err(ApiError::Conflict {
                    code: "idempotency_key_reused",
                    message: format!(
                        "`Idempotency-Key` `{key}` was used for a different request; use a new key for a new edit"
                    ),
                });
            }
            KeyState::InFlight => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    Err(ApiError::Conflict {
        code: "idempotency_in_progress",
        message: format!(
            "a request with `Idempotency-Key` `{key}` is still being handled; retry shortly"
        ),
    })
}

/// Validates a form for model `name`, stores its images, records the job
/// as `owner`'s and queues it (shared with comparisons that run one input on
/// two models).
pub async fn submit(
    state: &AppState,
    owner: Uuid,
    form: RawEditForm,
    name: &str,
) -> Result<JobRecord, ApiError> {
    let backends = &state.backends;
    let mut models = state.models(false).await?;
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
    crate::limits::admit(state, name).await?;
    // Masks are decoded to check their pixels: off the async threads.
    let (config, model) = (state.config.clone(), model.clone());
    let edit = tokio::task::spawn_blocking(move || validate(form, &config, &model))
        .await
        .map_err(|e| ApiError::Internal(format!("validation task failed: {e}")))??;

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
            owner_key: Some(owner),
            webhook_url: edit.webhook_url.clone(),
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
    Ok(job)
}

/// Submits an edit. Answers at once with the queued job; follow it with
/// `GET /v1/jobs/{id}` or its `/events` stream. With an `Idempotency-Key`
/// header, a repeat of the same request returns the first job (header
/// `Idempotent-Replayed: true`) instead of creating another.
#[utoipa::path(post, path = "/v1/edits", tag = "edits",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key and request give the first job")),
    request_body(content = EditForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "Queued", body = super::jobs::JobOut,
            headers(("Location" = String, description = "URL of the job"))),
        (status = 400, description = "The form cannot be read", body = ErrorResponse),
        (status = 409, description = "The `Idempotency-Key` was used for a different request, or its first request is still being handled", body = ErrorResponse),
        (status = 403, description = "The key is not a `client` or `admin` key", body = ErrorResponse),
        (status = 413, description = "The upload is too large", body = ErrorResponse),
        (status = 422, description = "A field is missing or wrong; the message says which", body = ErrorResponse),
        (status = 429, description = "The key's rate limit, or the model's queue, is full; see `Retry-After`", body = ErrorResponse,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Postgres, Redis or storage is unavailable", body = ErrorResponse),
    ))]
pub async fn create_edit(
    State(state): State<AppState>,
    ClientAuth(caller): ClientAuth,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let multipart = multipart.map_err(|e| {
        ApiError::BadRequest(format!(
            "send the edit as multipart/form-data: {}",
            e.body_text()
        ))
    })?;
    let key = idempotency_key(&headers)?;
    let form = RawEditForm::read(multipart, state.config.max_upload_mb, &[]).await?;
    let db = &state.backends.db;
    let owner = caller.0.id;
    if let Some(key) = &key
        && let Some(first) = claim_key(&state, owner, key, &form.fingerprint()).await?
    {
        let out = job_out(&state, first).await?;
        return Ok((
            StatusCode::ACCEPTED,
            [
                (header::LOCATION, format!("/v1/jobs/{}", out.id)),
                (
                    HeaderName::from_static("idempotent-replayed"),
                    "true".into(),
                ),
            ],
            Json(out),
        )
            .into_response());
    }
    let submitted = async {
        let name = form.model_name(&state.config, &state.models(false).await?)?;
        submit(&state, owner, form, &name).await
    }
    .await;
    let job = match (submitted, &key) {
        (Ok(job), Some(key)) => {
            idempotency::complete(db, owner, key, job.id).await?;
            job
        }
        (Ok(job), None) => job,
        (Err(e), Some(key)) => {
            // Nothing was created: free the key for a corrected retry.
            if let Err(e2) = idempotency::release(db, owner, key).await {
                tracing::error!("cannot release idempotency key: {e2}");
            }
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    let id = job.id;
    let out = job_out(&state, job).await?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/jobs/{id}"))],
        Json(out),
    )
        .into_response())
}
