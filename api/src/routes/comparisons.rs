//! `/v1/comparisons`: pairs of outputs of one input (candidate against
//! baseline), served to volunteers in a random left/right order, and their
//! Good / Same / Bad votes.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use byteedit_jobs::db::feedback::{self, Comparison, NewVote};
use byteedit_jobs::db::{self};
use byteedit_jobs::feedback::{Aspect, Verdict};
use byteedit_jobs::{JobRecord, JobStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::body::{json, upsert_status};
use super::edits;
use crate::auth::{AdminAuth, VolunteerAuth};
use crate::error::{ApiError, ErrorResponse};
use crate::state::AppState;
use crate::validation::RawEditForm;
use byteedit_edit::bounds::MAX_SEED;

/// Votes a comparison gets before it stops being served, unless asked otherwise.
pub const DEFAULT_VOTES_WANTED: i32 = 3;
const MAX_VOTES_WANTED: i32 = 1000;

/// `POST /v1/comparisons` with a JSON body: compare two finished jobs.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComparisonFromJobs {
    pub candidate_job: Uuid,
    pub baseline_job: Uuid,
    /// Which output of each job (default 0).
    #[serde(default)]
    pub candidate_output: u32,
    #[serde(default)]
    pub baseline_output: u32,
    /// Overall votes wanted before it stops being served (default 3).
    pub votes_wanted: Option<i32>,
}

/// `POST /v1/comparisons` as multipart: the `POST /v1/edits` fields (without
/// `model`) plus these; the input is run on both models with one seed.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct ComparisonRun {
    candidate_model: String,
    baseline_model: String,
    votes_wanted: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ComparisonOut {
    pub id: Uuid,
    pub task: String,
    pub prompt: String,
    pub candidate_job: Uuid,
    pub candidate_output: u32,
    pub candidate_model: String,
    pub baseline_job: Uuid,
    pub baseline_output: u32,
    pub baseline_model: String,
    pub votes_wanted: i32,
}

impl From<Comparison> for ComparisonOut {
    fn from(c: Comparison) -> Self {
        Self {
            id: c.id,
            task: c.task,
            prompt: c.prompt,
            candidate_job: c.candidate_job,
            candidate_output: c.candidate_output as u32,
            candidate_model: c.candidate_model,
            baseline_job: c.baseline_job,
            baseline_output: c.baseline_output as u32,
            baseline_model: c.baseline_model,
            votes_wanted: c.votes_wanted,
        }
    }
}

fn votes_wanted(v: Option<i32>) -> Result<i32, ApiError> {
    match v.unwrap_or(DEFAULT_VOTES_WANTED) {
        v if (1..=MAX_VOTES_WANTED).contains(&v) => Ok(v),
        v => Err(ApiError::invalid(
            "invalid_field",
            format!("`votes_wanted` must be from 1 to {MAX_VOTES_WANTED}; got {v}"),
        )),
    }
}

/// Creates a comparison: from two finished jobs of the same input (JSON), or
/// by running one input on two models (multipart; both jobs are queued and
/// the pair is served once both succeed).
#[utoipa::path(post, path = "/v1/comparisons", tag = "feedback",
    request_body(content(
        (ComparisonFromJobs = "application/json"),
        (ComparisonRun = "multipart/form-data"),
    )),
    responses(
        (status = 201, description = "Created", body = ComparisonOut),
        (status = 400, description = "The body is neither JSON nor a readable multipart form", body = ErrorResponse),
        (status = 404, description = "No such job", body = ErrorResponse),
        (status = 409, description = "A job has not succeeded", body = ErrorResponse),
        (status = 410, description = "A job has expired", body = ErrorResponse),
        (status = 422, description = "Not the same input, or a bad field", body = ErrorResponse),
    ))]
pub async fn create_comparison(
    State(state): State<AppState>,
    AdminAuth(caller): AdminAuth,
    request: Request,
) -> Result<(StatusCode, Json<ComparisonOut>), ApiError> {
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    // A run's jobs come back too: they are announced once the comparison is
    // saved, and removed if it is not.
    let (comparison, ran) = if multipart {
        let form =
            <Multipart as axum::extract::FromRequest<AppState>>::from_request(request, &state)
                .await
                .map_err(|e: axum::extract::multipart::MultipartRejection| {
                    ApiError::BadRequest(format!(
                        "cannot read the multipart form: {}",
                        e.body_text()
                    ))
                })?;
        let (comparison, jobs) = from_run(&state, caller.0.id, form).await?;
        (comparison, jobs.to_vec())
    } else {
        let body =
            <Json<ComparisonFromJobs> as axum::extract::FromRequest<AppState>>::from_request(
                request, &state,
            )
            .await;
        (from_jobs(&state, json(body)?).await?, Vec::new())
    };
    let saved = match feedback::insert_comparison(&state.backends.db, &comparison).await {
        Ok(Some(saved)) => saved,
        refused => {
            // A run's jobs are useless without their comparison.
            for job in &ran {
                edits::withdraw(&state, job.id).await;
            }
            return Err(match refused {
                Err(e) => e.into(),
                Ok(_) => ApiError::Gone(
                    "a job of this comparison has expired and its images are deleted; compare newer jobs"
                        .into(),
                ),
            });
        }
    };
    for job in &ran {
        edits::announce(&state, job);
    }
    Ok((StatusCode::CREATED, Json(saved.into())))
}

/// Runs one input on two models: the comparison to save and its two jobs.
async fn from_run(
    state: &AppState,
    owner: Uuid,
    multipart: Multipart,
) -> Result<(Comparison, [JobRecord; 2]), ApiError> {
    let extra = ["candidate_model", "baseline_model", "votes_wanted"];
    let mut form =
        RawEditForm::read(multipart, state.settings.uploads.max_upload_mb, &extra).await?;
    if form.value("model").is_some() {
        return Err(ApiError::invalid(
            "invalid_field",
            "name the models in `candidate_model` and `baseline_model`, not `model`",
        ));
    }
    let model = |name: &str| {
        form.value(name)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::invalid("missing_field", format!("`{name}` is required")))
    };
    let (candidate, baseline) = (model("candidate_model")?, model("baseline_model")?);
    if candidate == baseline {
        return Err(ApiError::invalid(
            "invalid_field",
            "`candidate_model` and `baseline_model` must differ",
        ));
    }
    let wanted = votes_wanted(form.number("votes_wanted", i32::MIN, i32::MAX, "an integer")?)?;
    // One seed for both, so the models are the only difference.
    if form.value("seed").is_none() {
        form.edit.seed = Some(rand::random_range(0..=MAX_SEED).to_string());
    }
    // Both models are checked (known, admitting, the form valid for each)
    // before anything is stored, so a refusal of either leaves nothing.
    let candidate_checked = edits::check(state, form.clone(), &candidate).await?;
    let baseline_checked = edits::check(state, form, &baseline).await?;
    let candidate_job = edits::create(state, owner, candidate_checked).await?;
    let baseline_job = match edits::create(state, owner, baseline_checked).await {
        Ok(job) => job,
        Err(e) => {
            // Without its pair the first job is useless: remove it.
            edits::withdraw(state, candidate_job.id).await;
            return Err(e);
        }
    };
    let comparison = Comparison {
        id: Uuid::now_v7(),
        task: candidate_job.task.to_string(),
        prompt: candidate_job.params.prompt.clone(),
        candidate_job: candidate_job.id,
        candidate_output: 0,
        candidate_model: candidate,
        baseline_job: baseline_job.id,
        baseline_output: 0,
        baseline_model: baseline,
        votes_wanted: wanted,
        created_at: chrono::Utc::now(),
    };
    Ok((comparison, [candidate_job, baseline_job]))
}

async fn from_jobs(state: &AppState, body: ComparisonFromJobs) -> Result<Comparison, ApiError> {
    if body.candidate_job == body.baseline_job {
        return Err(ApiError::invalid(
            "invalid_field",
            "`candidate_job` and `baseline_job` must be two different jobs",
        ));
    }
    let db = &state.backends.db;
    let finished = |job: Option<JobRecord>, id: Uuid| -> Result<JobRecord, ApiError> {
        let job = job.ok_or_else(|| ApiError::NotFound(format!("no job `{id}`")))?;
        if job.expired_at.is_some() {
            return Err(super::jobs::gone(&job));
        }
        if job.status != JobStatus::Succeeded {
            return Err(ApiError::Conflict {
                code: "job_not_succeeded",
                message: format!(
                    "job `{id}` is {}; compare jobs that have succeeded",
                    job.status
                ),
            });
        }
        Ok(job)
    };
    let candidate = finished(
        db::jobs::get(db, body.candidate_job).await?,
        body.candidate_job,
    )?;
    let baseline = finished(
        db::jobs::get(db, body.baseline_job).await?,
        body.baseline_job,
    )?;
    for (job, index, field) in [
        (&candidate, body.candidate_output, "candidate_output"),
        (&baseline, body.baseline_output, "baseline_output"),
    ] {
        if index >= job.params.num_outputs {
            return Err(ApiError::invalid(
                "invalid_field",
                format!(
                    "`{field}` is {index}, but job `{}` has {} output(s)",
                    job.id, job.params.num_outputs
                ),
            ));
        }
    }
    if candidate.model == baseline.model {
        return Err(ApiError::invalid(
            "invalid_field",
            format!(
                "both jobs ran on model `{}`; compare two models or versions",
                candidate.model
            ),
        ));
    }
    // What shapes the input the model sees: canvas placement and mask handling.
    let input_settings = |j: &JobRecord| {
        let p = &j.params;
        (
            j.task,
            p.prompt.clone(),
            (j.width, j.height),
            j.mask_key.is_some(),
            (
                p.extend_left,
                p.extend_right,
                p.extend_top,
                p.extend_bottom,
                p.overlap,
            ),
            (p.mask_grow, p.mask_feather, p.mask_resize, p.crop_padding),
        )
    };
    let same_settings = input_settings(&candidate) == input_settings(&baseline);
    let storage = &state.backends.storage;
    let same_input = same_settings
        && storage.get(&candidate.image_key).await? == storage.get(&baseline.image_key).await?
        && match (&candidate.mask_key, &baseline.mask_key) {
            (Some(a), Some(b)) => storage.get(a).await? == storage.get(b).await?,
            _ => true,
        };
    if !same_input {
        return Err(ApiError::invalid(
            "not_same_input",
            "the two jobs must edit the same input: same image, mask, prompt, task, extension and mask options",
        ));
    }
    Ok(Comparison {
        id: Uuid::now_v7(),
        task: candidate.task.to_string(),
        prompt: candidate.params.prompt.clone(),
        candidate_job: candidate.id,
        candidate_output: body.candidate_output as i32,
        candidate_model: candidate.model,
        baseline_job: baseline.id,
        baseline_output: body.baseline_output as i32,
        baseline_model: baseline.model,
        votes_wanted: votes_wanted(body.votes_wanted)?,
        created_at: chrono::Utc::now(),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShownImage {
    /// Path of the PNG on this API.
    pub url: String,
}

/// A pair to judge, in the order to show it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NextComparison {
    pub comparison_id: Uuid,
    /// Send it back with the vote (`choice` is then relative to this order).
    pub presentation_id: Uuid,
    pub task: String,
    pub prompt: String,
    pub input_url: String,
    pub mask_url: Option<String>,
    pub left: ShownImage,
    pub right: ShownImage,
}

fn output_url(job: Uuid, index: i32) -> String {
    format!("/v1/jobs/{job}/outputs/{index}")
}

/// A comparison this volunteer has not voted on yet, in a random left/right
/// order (recorded); 204 when none is left.
#[utoipa::path(get, path = "/v1/comparisons/next", tag = "feedback",
    responses(
        (status = 200, description = "A pair to judge", body = NextComparison),
        (status = 204, description = "Nothing left to judge"),
    ))]
pub async fn next_comparison(
    State(state): State<AppState>,
    VolunteerAuth(volunteer): VolunteerAuth,
) -> Result<Response, ApiError> {
    let db = &state.backends.db;
    let Some(c) = feedback::next_for(db, volunteer.id).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let candidate_left = rand::random::<bool>();
    let presentation_id = feedback::present(db, c.id, volunteer.id, candidate_left).await?;
    let input = db::jobs::get(db, c.candidate_job).await?;
    let has_mask = input.as_ref().is_some_and(|j| j.mask_key.is_some());
    let candidate = ShownImage {
        url: output_url(c.candidate_job, c.candidate_output),
    };
    let baseline = ShownImage {
        url: output_url(c.baseline_job, c.baseline_output),
    };
    let (left, right) = if candidate_left {
        (candidate, baseline)
    } else {
        (baseline, candidate)
    };
    Ok(Json(NextComparison {
        comparison_id: c.id,
        presentation_id,
        task: c.task,
        prompt: c.prompt,
        input_url: format!("/v1/jobs/{}/input", c.candidate_job),
        mask_url: has_mask.then(|| format!("/v1/jobs/{}/mask", c.candidate_job)),
        left,
        right,
    })
    .into_response())
}

/// Which side looked better, as shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    Left,
    Same,
    Right,
}

/// A vote: either `verdict` (for the candidate), or `choice` with the
/// `presentation_id` it was shown under.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoteIn {
    pub verdict: Option<Verdict>,
    pub choice: Option<Choice>,
    pub presentation_id: Option<Uuid>,
    /// Default `overall`.
    #[serde(default)]
    pub aspect: Aspect,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VoteOut {
    pub comparison_id: Uuid,
    pub aspect: Aspect,
    /// Good: the candidate is better.
    pub verdict: Verdict,
    /// True when it replaced this volunteer's earlier vote.
    pub replaced: bool,
}

/// Records a vote; voting again on the same comparison and aspect replaces it.
#[utoipa::path(post, path = "/v1/comparisons/{id}/votes", tag = "feedback",
    params(("id" = Uuid, Path, description = "Comparison id")),
    request_body = VoteIn,
    responses(
        (status = 201, description = "Recorded", body = VoteOut),
        (status = 200, description = "Replaced the earlier vote", body = VoteOut),
        (status = 404, description = "No such comparison", body = ErrorResponse),
        (status = 422, description = "A bad field", body = ErrorResponse),
    ))]
pub async fn vote(
    State(state): State<AppState>,
    VolunteerAuth(volunteer): VolunteerAuth,
    Path(id): Path<String>,
    body: Result<Json<VoteIn>, JsonRejection>,
) -> Result<(StatusCode, Json<VoteOut>), ApiError> {
    let not_found = || ApiError::NotFound(format!("no comparison `{id}`"));
    let comparison = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let body = json(body)?;
    let db = &state.backends.db;
    feedback::get_comparison(db, comparison)
        .await?
        .ok_or_else(not_found)?;
    let presentation = match body.presentation_id {
        Some(p) => {
            let left = feedback::presentation(db, p, comparison, volunteer.id)
                .await?
                .ok_or_else(|| {
                    ApiError::invalid(
                        "invalid_field",
                        "`presentation_id` is not a presentation of this comparison to you; use the one from GET /v1/comparisons/next",
                    )
                })?;
            Some((p, left))
        }
        None => None,
    };
    let verdict = match (body.verdict, body.choice, presentation) {
        (Some(v), None, _) => v,
        (None, Some(choice), Some((_, candidate_left))) => match (choice, candidate_left) {
            (Choice::Same, _) => Verdict::Same,
            (Choice::Left, true) | (Choice::Right, false) => Verdict::Good,
            (Choice::Left, false) | (Choice::Right, true) => Verdict::Bad,
        },
        (None, Some(_), None) => {
            return Err(ApiError::invalid(
                "missing_field",
                "`choice` needs the `presentation_id` the pair was shown under",
            ));
        }
        _ => {
            return Err(ApiError::invalid(
                "invalid_field",
                "send exactly one of `verdict` (good, same, bad: the candidate against the baseline) or `choice` (left, same, right)",
            ));
        }
    };
    let replaced = feedback::upsert_vote(
        db,
        &NewVote {
            comparison,
            volunteer: volunteer.id,
            aspect: body.aspect,
            verdict,
            presentation,
        },
    )
    .await?;
    Ok((
        upsert_status(replaced),
        Json(VoteOut {
            comparison_id: comparison,
            aspect: body.aspect,
            verdict,
            replaced,
        }),
    ))
}
