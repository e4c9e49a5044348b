//! `POST /v1/edits`: upload an image (and mask), get a queued job back.

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use byteedit_edit::{EditForm, quote};
use byteedit_jobs::db::idempotency::{self, KeyState};
use byteedit_jobs::db::{self, CancelOutcome, NewJob};
use byteedit_jobs::job::keys;
use byteedit_jobs::{EventMessage, JobError, JobEvent, JobRecord, JobStatus, events};
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
/// as `owner`'s and queues it.
pub async fn submit(
    state: &AppState,
    owner: Uuid,
    form: RawEditForm,
    name: &str,
) -> Result<JobRecord, ApiError> {
    let checked = check(state, form, name).await?;
    let job = create(state, owner, checked).await?;
    announce(state, &job);
    Ok(job)
}

/// A form that passed [`check`] for one model: nothing is stored yet.
pub struct Admitted {
    model: String,
    checked: Checked,
}

/// Everything that may refuse a submission before anything is created: the
/// model is known, its queue admits one more (`--max-queued`), the form is
/// valid for it. A comparison checks both of its models with this first, so
/// a refusal of either leaves nothing behind.
pub async fn check(state: &AppState, form: RawEditForm, name: &str) -> Result<Admitted, ApiError> {
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
    Ok(Admitted {
        model: name.to_owned(),
        checked,
    })
}

/// Stores the images of a checked form (only the images, not bytes sent
/// after them), records the job and queues it. A failure leaves no row and
/// (as far as storage allows) no file, but for a job that could not be
/// queued: it is recorded `failed` (`queue_unavailable`), so its client is
/// told.
pub async fn create(
    state: &AppState,
    owner: Uuid,
    admitted: Admitted,
) -> Result<JobRecord, ApiError> {
    let Admitted { model, checked } = admitted;
    let Checked { edit, image, mask } = checked;
    let backends = &state.backends;
    let id = Uuid::now_v7();
    let image_key = keys::input(id);
    let mask_key = mask.as_ref().map(|_| keys::mask(id));
    let storage = &backends.storage;
    let stored = match (&mask_key, mask) {
        (Some(key), Some(mask)) => {
            tokio::try_join!(storage.put(&image_key, image), storage.put(key, mask)).map(|_| ())
        }
        _ => storage.put(&image_key, image).await,
    };
    if let Err(e) = stored {
        // One of the two uploads may have been written.
        delete_files(state, id).await;
        return Err(e.into());
    }
    let inserted = db::jobs::insert(
        &backends.db,
        &NewJob {
            id,
            task: edit.task,
            model,
            params: edit.params,
            image_key,
            mask_key,
            width: edit.canvas.0,
            height: edit.canvas.1,
            owner_key: Some(owner),
            webhook_url: edit.webhook_url.clone(),
        },
    )
    .await;
    let job = match inserted {
        Ok(job) => job,
        Err(e) => {
            delete_files(state, id).await;
            return Err(e.into());
        }
    };
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
    debug_assert_eq!(job.status, JobStatus::Queued);
    Ok(job)
}

/// Counts and logs a job once its request has been accepted.
pub fn announce(state: &AppState, job: &JobRecord) {
    state
        .metrics
        .jobs_submitted
        .with_label_values(&[job.model.as_str(), job.task.as_str()])
        .inc();
    tracing::info!(job = %job.id, model = %job.model, task = %job.task, "job queued");
}

/// Undoes a job [`create`]d for a request that was then refused (a
/// comparison whose other job could not be created). Still queued, its row
/// and files are deleted; a worker that takes its queue entry finds no row
/// and acknowledges it. Already claimed by a worker, it is canceled instead
/// (its files are the worker's input; retention removes them).
pub async fn withdraw(state: &AppState, id: Uuid) {
    let db = &state.backends.db;
    match db::jobs::withdraw(db, id).await {
        Ok(true) => delete_files(state, id).await,
        Ok(false) => match db::jobs::cancel(db, id).await {
            Ok(CancelOutcome::Requested(running)) => {
                let message = EventMessage {
                    job: running.id,
                    model: running.model.clone(),
                    task: running.task,
                    event: JobEvent::CancelRequested,
                };
                // The worker also reads the cancel on its heartbeat.
                let published =
                    events::publish(&state.backends.conn, &state.backends.prefix, &message).await;
                if let Err(e) = published {
                    tracing::warn!(job = %id, "cannot publish the cancel of an unpaired job: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(job = %id, "cannot cancel an unpaired job: {e}"),
        },
        Err(e) => tracing::error!(job = %id, "cannot withdraw an unpaired job: {e}"),
    }
}

/// Deletes whatever is stored for job `id` (best effort: logged, not
/// returned, as the request is already failing for another reason).
async fn delete_files(state: &AppState, id: Uuid) {
    if let Err(e) = state
        .backends
        .storage
        .delete_prefix(&keys::job_prefix(id))
        .await
    {
        tracing::warn!(job = %id, "cannot delete the files of a job not created: {e}");
    }
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
