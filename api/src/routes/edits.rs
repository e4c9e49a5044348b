//! `POST /v1/edits`: upload an image (and mask), get a queued job back.

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use byteedit_edit::{EditForm, quote};
use byteedit_jobs::db::idempotency::{self, KeyState};
use byteedit_jobs::db::{self, NewJob};
use byteedit_jobs::job::keys;
use byteedit_jobs::{JobError, JobRecord, JobStatus};
use uuid::Uuid;

use crate::auth::ClientAuth;
use crate::error::{ApiError, ErrorResponse};
use crate::state::AppState;
use crate::validation::{Checked, RawEditForm, canvas_limits, validate};
use crate::views::job_out;

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
            format!(
                "no model {}; the models are: {}",
                quote(name),
                known.join(", ")
            ),
        )
    })?;
    crate::limits::admit(state, name).await?;
    // Every file is decoded whole: off the async threads.
    let (limits, model) = (canvas_limits(&state.settings.uploads), model.clone());
    let checked = tokio::task::spawn_blocking(move || validate(&form, limits, &model))
        .await
        .map_err(|e| ApiError::Internal(format!("validation task failed: {e}")))??;
    let Checked { edit, image, mask } = checked;

    let id = Uuid::now_v7();
    let image_key = keys::input(id);
    let mask_key = mask.as_ref().map(|_| keys::mask(id));
    let storage = &backends.storage;
    match (&mask_key, mask) {
        (Some(key), Some(mask)) => {
            tokio::try_join!(storage.put(&image_key, image), storage.put(key, mask))?;
        }
        _ => storage.put(&image_key, image).await?,
    }
    let job = db::jobs::insert(
        &backends.db,
        &NewJob {
            id,
            task: edit.task,
            model: name.to_owned(),
            params: edit.params,
            image_key,
            mask_key,
            width: edit.canvas.0,
            height: edit.canvas.1,
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
        (status = 202, description = "Queued", body = crate::views::JobOut,
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
    let form = RawEditForm::read(multipart, state.settings.uploads.max_upload_mb, &[]).await?;
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
        let name = form.model_name(
            state.settings.default_model.as_deref(),
            &state.models(false).await?,
        )?;
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
