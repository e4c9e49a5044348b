//! The `jobs` and `job_outputs` tables.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{JobsError, Result};
use byteedit_edit::Geometry;

use crate::ids::{JobId, WorkerId};
use crate::job::{EditParams, JobError, JobRecord, JobStatus, JobTimings, OutputRecord, Task};

/// A validated job, ready to be recorded.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub task: Task,
    pub model: String,
    pub params: EditParams,
    pub image_key: String,
    pub mask_key: Option<String>,
    pub width: u32,
    pub height: u32,
    /// The submitting API key.
    pub owner_key: Option<Uuid>,
    pub webhook_url: Option<String>,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: Uuid,
    status: String,
    task: String,
    model: String,
    params: serde_json::Value,
    image_key: String,
    mask_key: Option<String>,
    width: i32,
    height: i32,
    progress_step: i32,
    progress_total: i32,
    cancel_requested: bool,
    worker_id: Option<Uuid>,
    owner_key: Option<Uuid>,
    attempts: i32,
    error_code: Option<String>,
    error_message: Option<String>,
    timings: Option<serde_json::Value>,
    geometry: Option<serde_json::Value>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    webhook_url: Option<String>,
    expired_at: Option<DateTime<Utc>>,
}

impl TryFrom<JobRow> for JobRecord {
    type Error = JobsError;
    fn try_from(r: JobRow) -> Result<Self> {
        Ok(Self {
            id: r.id,
            status: r.status.parse().map_err(JobsError::Corrupt)?,
            task: r.task.parse().map_err(JobsError::Corrupt)?,
            model: r.model,
            params: serde_json::from_value(r.params)?,
            image_key: r.image_key,
            mask_key: r.mask_key,
            width: r.width as u32,
            height: r.height as u32,
            progress_step: r.progress_step as u32,
            progress_total: r.progress_total as u32,
            cancel_requested: r.cancel_requested,
            worker_id: r.worker_id,
            owner_key: r.owner_key,
            attempts: r.attempts as u32,
            error: match (r.error_code, r.error_message) {
                (Some(code), message) => Some(JobError {
                    code,
                    message: message.unwrap_or_default(),
                }),
                _ => None,
            },
            timings: r.timings.map(serde_json::from_value).transpose()?,
            geometry: r.geometry.map(serde_json::from_value).transpose()?,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            webhook_url: r.webhook_url,
            expired_at: r.expired_at,
        })
    }
}

/// The columns `JobRow` reads, as a literal so queries stay `&'static str`.
macro_rules! job_columns {
    () => {
        "id, status, task, model, params, image_key, mask_key, width, height, \
         progress_step, progress_total, cancel_requested, worker_id, owner_key, attempts, error_code, \
         error_message, timings, geometry, created_at, started_at, finished_at, webhook_url, \
         expired_at"
    };
}

fn records(rows: Vec<JobRow>) -> Result<Vec<JobRecord>> {
    rows.into_iter().map(JobRecord::try_from).collect()
}

pub async fn insert(db: &PgPool, job: &NewJob) -> Result<JobRecord> {
    let row: JobRow = sqlx::query_as(concat!(
        "INSERT INTO jobs (id, status, task, model, params, image_key, mask_key, width, height, progress_total, owner_key, webhook_url) \
         VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         RETURNING ",
        job_columns!()
    ),
    )
    .bind(job.id)
    .bind(job.task.as_str())
    .bind(&job.model)
    .bind(serde_json::to_value(&job.params)?)
    .bind(&job.image_key)
    .bind(&job.mask_key)
    .bind(job.width as i32)
    .bind(job.height as i32)
    .bind(job.params.total_steps() as i32)
    .bind(job.owner_key)
    .bind(&job.webhook_url)
    .fetch_one(db)
    .await?;
    row.try_into()
}

pub async fn get(db: &PgPool, id: Uuid) -> Result<Option<JobRecord>> {
    let row: Option<JobRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?;
    row.map(JobRecord::try_from).transpose()
}

/// One page of a newest-first listing.
#[derive(Debug)]
pub struct Page {
    pub jobs: Vec<JobRecord>,
    /// Pass as `before` to get the next page; `None` on the last page.
    pub next: Option<Uuid>,
}

/// Jobs newest first, of one owner or (`owner: None`) of all. Ids are
/// UUIDv7, so "created before" is "id less than", and the last id of a page
/// is the cursor of the next.
pub async fn list(
    db: &PgPool,
    owner: Option<Uuid>,
    before: Option<Uuid>,
    status: Option<JobStatus>,
    limit: u32,
) -> Result<Page> {
    let rows: Vec<JobRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs \
         WHERE ($1::uuid IS NULL OR id < $1) AND ($2::text IS NULL OR status = $2) \
         AND ($4::uuid IS NULL OR owner_key = $4) \
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(before)
    .bind(status.map(JobStatus::as_str))
    .bind(limit as i64 + 1)
    .bind(owner)
    .fetch_all(db)
    .await?;
    let mut jobs = records(rows)?;
    let next = if jobs.len() > limit as usize {
        jobs.truncate(limit as usize);
        jobs.last().map(|j| j.id)
    } else {
        None
    };
    Ok(Page { jobs, next })
}

/// How many jobs of `model` wait to start, and how many ended in the last
/// `minutes` (the workers' recent pace), for admission control.
pub async fn backlog(db: &PgPool, model: &str, minutes: i32) -> Result<(u64, u64)> {
    let (queued, finished): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs WHERE model = $1 AND status = 'queued'), \
                (SELECT count(*) FROM jobs WHERE model = $1 \
                   AND finished_at > now() - make_interval(mins => $2))",
    )
    .bind(model)
    .bind(minutes)
    .fetch_one(db)
    .await?;
    Ok((queued as u64, finished as u64))
}

/// 1 for the next job of its model to run, 2 for the one after, ...
pub async fn queue_position(db: &PgPool, job: &JobRecord) -> Result<u32> {
    let (ahead,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM jobs WHERE status = 'queued' AND model = $1 AND id < $2",
    )
    .bind(&job.model)
    .bind(job.id)
    .fetch_one(db)
    .await?;
    Ok(ahead as u32 + 1)
}

/// Queued and running jobs per model, for the queue-depth metric.
pub async fn depth_by_model(db: &PgPool) -> Result<Vec<(String, JobStatus, i64)>> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT model, status, count(*) FROM jobs \
         WHERE status IN ('queued', 'running') GROUP BY model, status",
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|(m, s, n)| Ok((m, s.parse().map_err(JobsError::Corrupt)?, n)))
        .collect()
}

/// Takes a queued job for `worker`. `None` when it is no longer queued
/// (canceled, or already taken), so a job delivered twice never runs twice.
/// Jobs of these models that should have a queue entry: queued for more than
/// `grace_secs` (the API adds the entry right after the row), or running
/// with a lease expired for `lease_secs`. Oldest first.
pub async fn awaiting_delivery(
    db: &PgPool,
    models: &[String],
    grace_secs: f64,
    lease_secs: f64,
) -> Result<Vec<(Uuid, String)>> {
    Ok(sqlx::query_as(
        "SELECT id, model FROM jobs WHERE model = ANY($1) AND ( \
           (status = 'queued' AND coalesce(run_after, created_at) < now() - make_interval(secs => $2)) \
           OR (status = 'running' AND heartbeat_at < now() - make_interval(secs => $3))) \
         ORDER BY id LIMIT 10000",
    )
    .bind(models)
    .bind(grace_secs)
    .bind(lease_secs)
    .fetch_all(db)
    .await?)
}

/// What a worker's claim on a delivered job found.
#[derive(Debug)]
// One per delivery, moved straight into the run: boxing would buy nothing.
pub enum Claim {
    /// The job is this worker's now (attempt `job.attempts`).
    Claimed(Box<JobRecord>),
    /// Another worker runs it and its lease is alive: leave the queue entry
    /// pending, so the job is found again if that worker dies.
    Busy,
    /// Finished, canceled or unknown: nothing to run; acknowledge the entry.
    Gone,
    /// Queued again after a transient failure, but its backoff has not run
    /// out: acknowledge the entry; the job is enqueued again when it is due.
    NotYet,
}

/// Takes a queued job, or a running one whose worker has not renewed its
/// lease (`heartbeat_at`) for `lease_secs`: that worker is presumed dead, and
/// from now on its writes are refused (they are guarded on `worker_id`).
pub async fn claim(db: &PgPool, id: JobId, worker: WorkerId, lease_secs: f64) -> Result<Claim> {
    let row: Option<JobRow> = sqlx::query_as(concat!(
        "UPDATE jobs SET status = 'running', worker_id = $2, started_at = now(), \
         heartbeat_at = now(), attempts = attempts + 1, progress_step = 0, run_after = NULL \
         WHERE id = $1 AND ((status = 'queued' AND (run_after IS NULL OR run_after <= now())) \
           OR (status = 'running' AND heartbeat_at < now() - make_interval(secs => $3))) RETURNING ",
        job_columns!(),
        ""
    ))
    .bind(id)
    .bind(worker)
    .bind(lease_secs)
    .fetch_optional(db)
    .await?;
    if let Some(row) = row {
        return Ok(Claim::Claimed(Box::new(row.try_into()?)));
    }
    let status: Option<(String,)> = sqlx::query_as("SELECT status FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?;
    let status = status
        .map(|(s,)| s.parse::<JobStatus>().map_err(JobsError::Corrupt))
        .transpose()?;
    Ok(match status {
        Some(JobStatus::Running) => Claim::Busy,
        Some(JobStatus::Queued) => Claim::NotYet,
        Some(JobStatus::Succeeded | JobStatus::Failed | JobStatus::Canceled) | None => Claim::Gone,
    })
}

pub async fn set_progress(db: &PgPool, id: JobId, worker: WorkerId, step: u32) -> Result<()> {
    sqlx::query(
        "UPDATE jobs SET progress_step = $3, heartbeat_at = now() \
         WHERE id = $1 AND worker_id = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(worker)
    .bind(step as i32)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks the worker's running job alive (renews its lease); answers whether
/// a cancel was asked, or `None` when the job is no longer this worker's.
pub async fn heartbeat(db: &PgPool, id: JobId, worker: WorkerId) -> Result<Option<bool>> {
    let row: Option<(bool,)> = sqlx::query_as(
        "UPDATE jobs SET heartbeat_at = now() \
         WHERE id = $1 AND worker_id = $2 AND status = 'running' RETURNING cancel_requested",
    )
    .bind(id)
    .bind(worker)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(c,)| c))
}

/// An output about to be recorded.
#[derive(Debug, Clone)]
pub struct NewOutput {
    pub index: u32,
    pub storage_key: String,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
}

/// What the final write of a run that produced its outputs did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuccessOutcome {
    /// The job succeeded with its outputs recorded.
    Succeeded,
    /// A cancel had been asked: the job ended `canceled`, no output
    /// recorded (the caller deletes the files it stored).
    Canceled,
    /// The job was not this worker's running job any more: nothing recorded.
    Refused,
}

/// Ends the worker's running job with its outputs, in one statement (one
/// round trip). The statement reads `cancel_requested` under the row lock,
/// so it is ordered against [`cancel`]: a cancel that committed first (even
/// after the worker's last step check) makes the job `canceled`, with no
/// outputs; one that comes after finds the job ended (409).
pub async fn succeed(
    db: &PgPool,
    id: JobId,
    worker: WorkerId,
    outputs: &[NewOutput],
    timings: &JobTimings,
    geometry: &Geometry,
) -> Result<SuccessOutcome> {
    // A canceled job keeps no timings nor geometry, as when it stops at a
    // step. Outputs are inserted only for a success.
    let done: Option<(String,)> = sqlx::query_as(
        "WITH done AS ( \
           UPDATE jobs SET \
             status = CASE WHEN cancel_requested THEN 'canceled' ELSE 'succeeded' END, \
             finished_at = now(), \
             progress_step = CASE WHEN cancel_requested THEN progress_step ELSE progress_total END, \
             timings = CASE WHEN cancel_requested THEN NULL ELSE $3::jsonb END, \
             geometry = CASE WHEN cancel_requested THEN NULL ELSE $10::jsonb END \
           WHERE id = $1 AND worker_id = $2 AND status = 'running' RETURNING id, status \
         ), stored AS ( \
           INSERT INTO job_outputs (id, job_id, index, storage_key, width, height, seed) \
           SELECT o.id, done.id, o.index, o.key, o.width, o.height, o.seed \
           FROM done, unnest($4::uuid[], $5::int[], $6::text[], $7::int[], $8::int[], $9::bigint[]) \
             AS o(id, index, key, width, height, seed) \
           WHERE done.status = 'succeeded' \
           RETURNING 1 \
         ) SELECT status FROM done",
    )
    .bind(id)
    .bind(worker)
    .bind(serde_json::to_value(timings)?)
    .bind(outputs.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
    .bind(outputs.iter().map(|o| o.index as i32).collect::<Vec<_>>())
    .bind(outputs.iter().map(|o| o.storage_key.clone()).collect::<Vec<_>>())
    .bind(outputs.iter().map(|o| o.width as i32).collect::<Vec<_>>())
    .bind(outputs.iter().map(|o| o.height as i32).collect::<Vec<_>>())
    .bind(outputs.iter().map(|o| o.seed as i64).collect::<Vec<_>>())
    .bind(serde_json::to_value(geometry)?)
    .fetch_optional(db)
    .await?;
    let Some((status,)) = done else {
        return Ok(SuccessOutcome::Refused);
    };
    match status.parse().map_err(JobsError::Corrupt)? {
        JobStatus::Succeeded => Ok(SuccessOutcome::Succeeded),
        JobStatus::Canceled => Ok(SuccessOutcome::Canceled),
        other => Err(JobsError::Corrupt(format!(
            "the success write left job {id} {other}"
        ))),
    }
}

/// Ends the worker's running job as `failed` or `canceled`.
pub async fn finish_unsuccessfully(
    db: &PgPool,
    id: JobId,
    worker: WorkerId,
    status: JobStatus,
    error: Option<&JobError>,
    timings: Option<&JobTimings>,
) -> Result<bool> {
    debug_assert!(matches!(status, JobStatus::Failed | JobStatus::Canceled));
    let done = sqlx::query(
        "UPDATE jobs SET status = $3, finished_at = now(), error_code = $4, error_message = $5, \
         timings = $6 WHERE id = $1 AND worker_id = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(worker)
    .bind(status.as_str())
    .bind(error.map(|e| e.code.as_str()))
    .bind(error.map(|e| e.message.as_str()))
    .bind(timings.map(serde_json::to_value).transpose()?)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Puts the worker's running job back in the queue after a transient
/// failure, to run again no earlier than `delay_secs` from now. `false` if it
/// was not this worker's running job any more, or a cancel was asked (then
/// it is ended by the caller instead).
pub async fn retry_later(
    db: &PgPool,
    id: JobId,
    worker: WorkerId,
    delay_secs: f64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE jobs SET status = 'queued', worker_id = NULL, progress_step = 0, \
         run_after = now() + make_interval(secs => $3) \
         WHERE id = $1 AND worker_id = $2 AND status = 'running' AND NOT cancel_requested",
    )
    .bind(id)
    .bind(worker)
    .bind(delay_secs)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives the worker's running job back to the queue at once, as if never
/// started (a worker shutting down). The attempt is not counted: nothing of
/// it was stored. `false` as for [`retry_later`].
pub async fn hand_back(db: &PgPool, id: JobId, worker: WorkerId) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE jobs SET status = 'queued', worker_id = NULL, progress_step = 0, \
         started_at = NULL, run_after = NULL, attempts = greatest(attempts - 1, 0) \
         WHERE id = $1 AND worker_id = $2 AND status = 'running' AND NOT cancel_requested",
    )
    .bind(id)
    .bind(worker)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes a queued job that its request could not use (a comparison whose
/// other job was refused), so nothing of the request stays recorded. `false`
/// if a worker claimed it already (the caller cancels it instead). Its queue
/// entry stays: the worker that takes it finds no row and acknowledges it.
pub async fn withdraw(db: &PgPool, id: Uuid) -> Result<bool> {
    let done = sqlx::query("DELETE FROM jobs WHERE id = $1 AND status = 'queued'")
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// What `DELETE /v1/jobs/{id}` did.
#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// It was queued and is now canceled: it will never run.
    Canceled(JobRecord),
    /// It is running; its worker stops it at the next step.
    Requested(JobRecord),
    /// It had already ended.
    AlreadyFinished(JobRecord),
    NotFound,
}

pub async fn cancel(db: &PgPool, id: Uuid) -> Result<CancelOutcome> {
    let queued: Option<JobRow> = sqlx::query_as(concat!(
        "UPDATE jobs SET status = 'canceled', cancel_requested = true, finished_at = now() \
         WHERE id = $1 AND status = 'queued' RETURNING ",
        job_columns!(),
        ""
    ))
    .bind(id)
    .fetch_optional(db)
    .await?;
    if let Some(row) = queued {
        return Ok(CancelOutcome::Canceled(row.try_into()?));
    }
    let running: Option<JobRow> = sqlx::query_as(concat!(
        "UPDATE jobs SET cancel_requested = true \
         WHERE id = $1 AND status = 'running' RETURNING ",
        job_columns!(),
        ""
    ))
    .bind(id)
    .fetch_optional(db)
    .await?;
    if let Some(row) = running {
        return Ok(CancelOutcome::Requested(row.try_into()?));
    }
    Ok(match get(db, id).await? {
        Some(job) => CancelOutcome::AlreadyFinished(job),
        None => CancelOutcome::NotFound,
    })
}

#[derive(sqlx::FromRow)]
struct OutputRow {
    id: Uuid,
    job_id: Uuid,
    index: i32,
    storage_key: String,
    width: i32,
    height: i32,
    seed: i64,
}

impl From<OutputRow> for OutputRecord {
    fn from(r: OutputRow) -> Self {
        Self {
            id: r.id,
            job_id: r.job_id,
            index: r.index as u32,
            storage_key: r.storage_key,
            width: r.width as u32,
            height: r.height as u32,
            seed: r.seed as u64,
        }
    }
}

pub async fn outputs(db: &PgPool, job: Uuid) -> Result<Vec<OutputRecord>> {
    let rows: Vec<OutputRow> = sqlx::query_as(
        "SELECT id, job_id, index, storage_key, width, height, seed FROM job_outputs \
         WHERE job_id = $1 ORDER BY index",
    )
    .bind(job)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(OutputRecord::from).collect())
}

/// Outputs of many jobs at once (for listings), keyed by job.
pub async fn outputs_of(db: &PgPool, jobs: &[Uuid]) -> Result<Vec<OutputRecord>> {
    let rows: Vec<OutputRow> = sqlx::query_as(
        "SELECT id, job_id, index, storage_key, width, height, seed FROM job_outputs \
         WHERE job_id = ANY($1) ORDER BY job_id, index",
    )
    .bind(jobs)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(OutputRecord::from).collect())
}

/// Ends a queued job that could not be put on the queue.
pub async fn abandon(db: &PgPool, id: Uuid, error: &JobError) -> Result<()> {
    sqlx::query(
        "UPDATE jobs SET status = 'failed', finished_at = now(), error_code = $2, \
         error_message = $3 WHERE id = $1 AND status = 'queued'",
    )
    .bind(id)
    .bind(&error.code)
    .bind(&error.message)
    .execute(db)
    .await?;
    Ok(())
}
