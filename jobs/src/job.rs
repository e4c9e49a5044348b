//! What a job is: its task, its effective parameters, its state and outputs.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

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

    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown job status `{s}`"))
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The three editing tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Fill the masked region with what the prompt says.
    Inpaint,
    /// Remove what the mask covers, consistent with the surroundings.
    Erase,
    /// Extend the scene beyond the image's borders.
    Outpaint,
}

impl Task {
    pub const ALL: [Task; 3] = [Self::Inpaint, Self::Erase, Self::Outpaint];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inpaint => "inpaint",
            Self::Erase => "erase",
            Self::Outpaint => "outpaint",
        }
    }
}

impl FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("`task` must be one of inpaint, erase, outpaint; got `{s}`"))
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The parameters a job actually ran with: the caller's values with the
/// model's defaults filled in and the seed chosen, so a result can be
/// reproduced by submitting them again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EditParams {
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub steps: u32,
    pub guidance_scale: f64,
    /// `ddim`, `euler` or `dpmpp-2m`.
    pub scheduler: String,
    /// Seed of the first output; output `i` uses `seed + i`.
    pub seed: u64,
    pub num_outputs: u32,
    /// Outpainting: pixels added on each side.
    #[serde(default)]
    pub extend_left: u32,
    #[serde(default)]
    pub extend_right: u32,
    #[serde(default)]
    pub extend_top: u32,
    #[serde(default)]
    pub extend_bottom: u32,
    /// Outpainting: how far the mask reaches into the original along each
    /// extended side, so the seam is repainted.
    #[serde(default = "defaults::overlap")]
    pub overlap: u32,
    /// Pixels to grow (> 0) or shrink (< 0) the mask by.
    #[serde(default)]
    pub mask_grow: i32,
    /// Blend band width: the edit fades out within 2x this many pixels outside the mask.
    #[serde(default = "defaults::mask_feather")]
    pub mask_feather: u32,
    /// A mask of another size was resized to the image.
    #[serde(default)]
    pub mask_resize: bool,
    /// Context kept around the mask when cropping.
    #[serde(default = "defaults::crop_padding")]
    pub crop_padding: u32,
    /// The generated region's colours were matched to its surroundings.
    #[serde(default)]
    pub color_match: bool,
}

/// Defaults of the task options, shared by the API, the worker and the CLI.
pub mod defaults {
    pub const OVERLAP: u32 = 8;
    pub const MASK_FEATHER: u32 = 8;
    pub const CROP_PADDING: u32 = 32;
    /// What erasing steers away from unless the worker is configured otherwise.
    pub const ERASE_NEGATIVE_PROMPT: &str =
        "object, person, animal, text, watermark, logo, frame, border, artifacts, blurry";

    pub fn overlap() -> u32 {
        OVERLAP
    }
    pub fn mask_feather() -> u32 {
        MASK_FEATHER
    }
    pub fn crop_padding() -> u32 {
        CROP_PADDING
    }
}

impl EditParams {
    /// Denoising steps over all outputs: the job's progress total.
    pub fn total_steps(&self) -> u32 {
        self.steps * self.num_outputs
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
    /// Mean time of one denoising step.
    pub step_ms: f64,
    /// Claimed to recorded: model time plus loading inputs and storing outputs.
    pub run_ms: f64,
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
    pub geometry: Option<crate::geometry::Geometry>,
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

/// What a worker tells the API about a model it serves, so requests can be
/// checked and defaults filled in before a job is queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelInfo {
    pub name: String,
    /// Image sides must be multiples of this.
    pub vae_scale_factor: u32,
    pub default_steps: u32,
    /// The most steps the model's schedule allows.
    pub max_steps: u32,
    pub default_guidance_scale: f64,
    pub default_scheduler: String,
    pub schedulers: Vec<String>,
    /// The square side, in pixels, the model was trained at: the crop
    /// around the mask is resized to about this area.
    pub native_size: u32,
    /// The negative prompt `erase` jobs use unless they give one.
    pub erase_negative_prompt: String,
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
