//! What a served model tells callers: its limits and defaults, which the
//! validation of a request needs.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
