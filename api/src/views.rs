//! What the API answers about jobs, shared by the routes (`GET /v1/jobs`,
//! `POST /v1/edits`, SSE final events) and the webhook bodies, so that
//! neither imports the other.

use byteedit_jobs::db;
use byteedit_jobs::{
    EditParams, Geometry, JobError, JobRecord, JobStatus, JobTimings, OutputRecord, Task,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// A job as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobOut {
    pub id: Uuid,
    pub status: JobStatus,
    pub task: Task,
    pub model: String,
    /// The effective parameters (defaults filled in, seed chosen): submit
    /// them again to reproduce the result.
    pub parameters: EditParams,
    /// Size of the edited canvas (the image, extended when outpainting).
    pub width: u32,
    pub height: u32,
    /// While queued: 1 runs next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u32>,
    /// While running: denoising steps done over all outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressOut>,
    /// True once a cancel was asked (`DELETE /v1/jobs/{id}` answered 200 or
    /// 202), and stays true whatever came after. A job whose cancel was asked
    /// never ends `succeeded`: it ends `canceled` (with no outputs), or
    /// `failed` if it failed before it could stop. A cancel asked after the
    /// job ended is refused (409) and changes nothing.
    pub cancel_requested: bool,
    pub outputs: Vec<OutputOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<JobTimings>,
    /// Once succeeded: the canvas, the crop around the mask and the size the model worked at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geometry: Option<Geometry>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Where the job's end is announced (`POST`ed, signed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Set once retention deleted the job's images (input, mask, outputs):
    /// the job then answers 410 and lists show it with no outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct ProgressOut {
    pub step: u32,
    pub total: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutputOut {
    pub index: u32,
    /// Path of the PNG on this API.
    pub url: String,
    pub width: u32,
    pub height: u32,
    /// The seed this output was made with.
    pub seed: u64,
}

impl JobOut {
    pub fn new(job: JobRecord, outputs: &[OutputRecord], queue_position: Option<u32>) -> Self {
        Self {
            id: job.id,
            status: job.status,
            task: job.task,
            model: job.model,
            parameters: job.params,
            width: job.width,
            height: job.height,
            queue_position: (job.status == JobStatus::Queued)
                .then_some(queue_position)
                .flatten(),
            progress: (job.status == JobStatus::Running).then_some(ProgressOut {
                step: job.progress_step,
                total: job.progress_total,
            }),
            // The stored value: a cancel once asked is never unsaid.
            cancel_requested: job.cancel_requested,
            // An expired job's images are gone: no dead links.
            outputs: outputs
                .iter()
                .filter(|_| job.expired_at.is_none())
                .map(|o| OutputOut {
                    index: o.index,
                    url: format!("/v1/jobs/{}/outputs/{}", o.job_id, o.index),
                    width: o.width,
                    height: o.height,
                    seed: o.seed,
                })
                .collect(),
            error: job.error,
            timings: job.timings,
            geometry: job.geometry,
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            webhook_url: job.webhook_url,
            expired_at: job.expired_at,
        }
    }

    /// The output URLs made absolute under `base` (`https://edit.example.com`),
    /// for bodies read away from this API (webhooks).
    pub fn with_base_url(mut self, base: &str) -> Self {
        let base = base.trim_end_matches('/');
        for output in &mut self.outputs {
            output.url = format!("{base}{}", output.url);
        }
        self
    }
}

/// Reads a job with its outputs and queue position.
pub async fn job_out(state: &AppState, job: JobRecord) -> Result<JobOut, ApiError> {
    let db = &state.backends.db;
    let outputs = if job.status == JobStatus::Succeeded {
        db::jobs::outputs(db, job.id).await?
    } else {
        Vec::new()
    };
    let position = match job.status {
        JobStatus::Queued => Some(db::jobs::queue_position(db, &job).await?),
        _ => None,
    };
    Ok(JobOut::new(job, &outputs, position))
}
