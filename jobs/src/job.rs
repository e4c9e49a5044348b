//! What a job is: its state, its outputs and why it failed. Its task and
//! parameters are the edit request's ([`byteedit_edit`]), re-exported here.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub use byteedit_edit::{EditParams, ModelInfo, Task, defaults};

/// Where a job is in its life. `succeeded`, `failed` and `canceled` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Canceled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown job status {}", byteedit_edit::quote(s)))
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a job failed: a stable code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobError {
    /// Stable snake_case code, e.g. `invalid_input`, `engine_error`.
    pub code: String,
    pub message: String,
}

/// Where a job's time went, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobTimings {
    /// Created to claimed by a worker.
    pub queue_ms: f64,
    /// Inside the engine (text encoding, VAE, denoising) over all outputs.
    pub model_ms: f64,
    /// Mean time of one denoising step for one output: the batch's step
    /// over the outputs in it.
    pub step_ms: f64,
    /// Claimed to recorded: model time plus loading inputs and storing outputs.
    pub run_ms: f64,
    /// Outputs denoised together with this job's, its own included (the
    /// worker's `--max-batch`): more than its `num_outputs` when it shared
    /// a batch with other jobs. Model and step times are the batch's.
    #[serde(default = "one")]
    pub batch_outputs: u32,
}

fn one() -> u32 {
    1
}

/// A job as stored in Postgres.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: Uuid,
    pub status: JobStatus,
    pub task: Task,
    pub model: String,
    pub params: EditParams,
    pub image_key: String,
    pub mask_key: Option<String>,
    pub width: u32,
    pub height: u32,
    pub progress_step: u32,
    pub progress_total: u32,
    pub cancel_requested: bool,
    pub worker_id: Option<Uuid>,
    /// The API key that submitted it (clients see only their own jobs).
    pub owner_key: Option<Uuid>,
    pub attempts: u32,
    pub error: Option<JobError>,
    pub timings: Option<JobTimings>,
    /// Set when the job succeeded.
    pub geometry: Option<byteedit_edit::Geometry>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Where the job's end is announced (a webhook), if anywhere.
    pub webhook_url: Option<String>,
    /// Set when retention removed the job's images.
    pub expired_at: Option<DateTime<Utc>>,
}

/// One output image of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRecord {
    pub id: Uuid,
    pub job_id: Uuid,
    pub index: u32,
    pub storage_key: String,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
}

/// Storage keys of a job's images.
pub mod keys {
    use uuid::Uuid;

    /// Everything stored for a job lives under this prefix.
    pub fn job_prefix(job: Uuid) -> String {
        format!("jobs/{job}")
    }
    pub fn input(job: Uuid) -> String {
        format!("jobs/{job}/input")
    }
    pub fn mask(job: Uuid) -> String {
        format!("jobs/{job}/mask")
    }
    /// Per attempt, so a worker that lost its lease can never overwrite the
    /// outputs of the attempt that replaced it (fencing in storage too).
    pub fn output(job: Uuid, attempt: u32, index: u32) -> String {
        format!("jobs/{job}/attempt-{attempt}/output-{index}.png")
    }
}
