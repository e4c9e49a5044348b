//! A reward folder's `reward_config.json`: the vision encoder's sizes and
//! the score's normalisation. Every size comes from here, never from one
//! model's constants.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RewardError};

/// BLIP's `VisionTransformer` (timm's ViT): `vision` in `reward_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Input channels: 3 (RGB), or 4 when a coherence reward also reads the mask.
    #[serde(default = "rgb")]
    pub in_chans: usize,
}

fn rgb() -> usize {
    3
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardConfig {
    pub kind: String,
    pub vision: VisionConfig,
    pub text_max_length: usize,
    pub score_mean: f64,
    pub score_std: f64,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
    /// Widths of the MLP head's linears after the text width, ending in 1:
    /// what a fresh model is built with (a checkpoint's own shapes win).
    #[serde(default = "head_widths")]
    pub head: Vec<usize>,
}

/// ImageReward's head: 768 → 1024 → 128 → 64 → 16 → 1.
fn head_widths() -> Vec<usize> {
    vec![1024, 128, 64, 16, 1]
}

/// CLIP's pixel statistics, which BLIP and ImageReward normalise with.
pub const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

impl RewardConfig {
    /// The folder's `reward_config.json`; a folder without one holds the
    /// released ImageReward ([`RewardConfig::released`]).
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("reward_config.json");
        if !path.exists() {
            return Ok(Self::released());
        }
        let config: Self = read_json(&path, "a reward folder holds its reward_config.json")?;
        config.vision.check(&path)?;
        if config.head.last() != Some(&1) {
            return Err(RewardError::InvalidFile {
                path,
                message: format!("`head` {:?} must end in one score (1)", config.head),
            });
        }
        Ok(config)
    }

    /// The released ImageReward v1.0: BLIP's ViT-L/16 at 224 px and the
    /// normalisation constants of its `ImageReward.py`.
    pub fn released() -> Self {
        Self {
            kind: "imagereward".into(),
            vision: VisionConfig {
                img_size: 224,
                patch_size: 16,
                embed_dim: 1024,
                depth: 24,
                num_heads: 16,
                layer_norm_eps: vision_eps(),
                mlp_ratio: mlp_ratio(),
                in_chans: rgb(),
            },
            text_max_length: 35,
            score_mean: 0.16717362830052426,
            score_std: 1.0333394966054072,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            head: head_widths(),
        }
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        write_json(&dir.join("reward_config.json"), self)
    }
}

/// Writes `value` as pretty JSON.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| RewardError::InvalidFile {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    std::fs::write(path, text + "\n").map_err(|e| RewardError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    })
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
