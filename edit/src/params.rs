//! The validated request: the parameters a job runs with, as stored in
//! Postgres, reported by the API and read by the worker.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::geometry::{Sides, WorkingSize};

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
    /// `native`, `original` or `WxH`: the size the crop was edited at
    /// (jobs stored before this field existed ran at `native`).
    #[serde(default)]
    #[schema(value_type = String, example = "native")]
    pub working_size: WorkingSize,
}

/// Defaults of the optional fields, shared by the API, the worker and the CLI.
pub mod defaults {
    pub const OVERLAP: u32 = 8;
    pub const MASK_FEATHER: u32 = 8;
    pub const CROP_PADDING: u32 = 32;
    pub const NUM_OUTPUTS: u32 = 1;
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

    /// The outpainting extension.
    pub fn sides(&self) -> Sides {
        Sides {
            left: self.extend_left,
            right: self.extend_right,
            top: self.extend_top,
            bottom: self.extend_bottom,
        }
    }
}
