//! A reward folder's `reward_config.json`: the vision encoder's sizes and
//! the score's normalisation. Every size comes from here, never from one
//! model's constants.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Result, RewardError};

/// BLIP's `VisionTransformer` (timm's ViT): `vision` in `reward_config.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VisionConfig {
    pub img_size: usize,
    pub patch_size: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    #[serde(default = "vision_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "mlp_ratio")]
    pub mlp_ratio: f64,
}

fn vision_eps() -> f64 {
    1e-6
}

fn mlp_ratio() -> f64 {
    4.0
}

impl VisionConfig {
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.img_size / self.patch_size
    }

    /// Tokens out: one per patch, plus the class token.
    pub fn tokens(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    pub fn mlp_dim(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }

    /// Sizes that cannot build a model are refused with the field to fix.
    pub fn check(&self, path: &Path) -> Result<()> {
        let invalid = |message: String| RewardError::InvalidFile {
            path: path.to_owned(),
            message,
        };
        if self.patch_size == 0 || !self.img_size.is_multiple_of(self.patch_size) {
            return Err(invalid(format!(
                "`vision.img_size` {} is not a multiple of `vision.patch_size` {}",
                self.img_size, self.patch_size
            )));
        }
        if self.num_heads == 0 || !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(invalid(format!(
                "`vision.embed_dim` {} is not a multiple of `vision.num_heads` {}",
                self.embed_dim, self.num_heads
            )));
        }
        Ok(())
    }
}

/// `reward_config.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RewardConfig {
    pub kind: String,
    pub vision: VisionConfig,
    pub text_max_length: usize,
    pub score_mean: f64,
    pub score_std: f64,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
}

impl RewardConfig {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("reward_config.json");
        let config: Self = read_json(&path, "a reward folder holds its reward_config.json")?;
        config.vision.check(&path)?;
        Ok(config)
    }
}

/// A JSON config file; `hint` says what a missing one should be.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path, hint: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| RewardError::MissingFile {
        path: path.to_owned(),
        hint: format!("{hint} ({e})"),
    })?;
    serde_json::from_str(&text).map_err(|e| RewardError::InvalidFile {
        path: path.to_owned(),
        message: e.to_string(),
    })
}
