//! R_γ, the pixel-level coherence reward: a ViT (sizes from the config)
//! reads the edited image (and, if configured, its mask as a fourth
//! channel) and a per-patch MLP head gives `patch_size²` logits per patch
//! token, reshaped to one logit per pixel of the model's input (the head
//! predicts pixels directly; nothing is upsampled). A high logit means
//! "real". Trained as the paper's discriminator:
//! −[log σ(R_γ(z)) + log(1 − σ(R_γ(z′)))] over real pixels z and generated
//! pixels z′; by default the generated pixels are an edit's mask region and
//! the rest of that image counts as real.
//!
//! A coherence folder holds `reward_config.json` (`"kind": "coherence"`)
//! and `model.safetensors` with keys `visual_encoder.*` and `head.fc1/fc2.*`.

use std::path::Path;

use burn::prelude::*;
use byteedit_models::nn::{Linear, gelu};
use byteedit_models::params::{NamedTensor, named_tensors, save_named};
use byteedit_models::weights::{TensorStore, Weights};
use serde::{Deserialize, Serialize};

use crate::checkpoint::open_weights;
use crate::config::{CLIP_MEAN, CLIP_STD, VisionConfig, read_json, write_json};
use crate::error::{Result, RewardError};
use crate::preprocess::Preprocess;
use crate::vision::VisionTransformer;

/// `reward_config.json` of a coherence reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoherenceConfig {
    /// Always `"coherence"`.
    pub kind: String,
    /// The backbone; `in_chans` is 4 when `mask_channel` is on.
    pub vision: VisionConfig,
    /// Read the edit's mask as a fourth input channel.
    #[serde(default)]
    pub mask_channel: bool,
    /// Width of the head's hidden layer (default: the ViT width).
    #[serde(default)]
    pub head_hidden: Option<usize>,
    #[serde(default = "clip_mean")]
    pub image_mean: [f64; 3],
    #[serde(default = "clip_std")]
    pub image_std: [f64; 3],
}

fn clip_mean() -> [f64; 3] {
    CLIP_MEAN
}

fn clip_std() -> [f64; 3] {
    CLIP_STD
}

impl CoherenceConfig {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("reward_config.json");
        let config: Self = read_json(
            &path,
            "a coherence reward folder holds its reward_config.json",
        )?;
        config.check(&path)?;
        Ok(config)
    }

    pub fn check(&self, path: &Path) -> Result<()> {
        let invalid = |message: String| RewardError::InvalidFile {
            path: path.to_owned(),
            message,
        };
        if self.kind != "coherence" {
            return Err(invalid(format!(
                "`kind` is `{}`, not `coherence`",
                self.kind
            )));
        }
        let channels = if self.mask_channel { 4 } else { 3 };
        if self.vision.in_chans != channels {
            return Err(invalid(format!(
                "`vision.in_chans` is {} but `mask_channel` {} needs {channels}",
                self.vision.in_chans, self.mask_channel
            )));
        }
        self.vision.check(path)
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        write_json(&dir.join("reward_config.json"), self)
    }

    fn hidden(&self) -> usize {
        self.head_hidden.unwrap_or(self.vision.embed_dim)
    }
}

/// `head`: `fc1`, GELU, `fc2` to one logit per pixel of the patch.
#[derive(Module, Debug)]
pub struct PixelHead<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

#[derive(Module, Debug)]
pub struct Coherence<B: Backend> {
    pub visual_encoder: VisionTransformer<B>,
    pub head: PixelHead<B>,
    patch: usize,
}

impl<B: Backend> Coherence<B> {
    fn build(store: &TensorStore, c: &CoherenceConfig, device: &B::Device) -> Result<Self> {
        let w = Weights::<B>::new(store, device);
        let (dim, p) = (c.vision.embed_dim, c.vision.patch_size);
        let h = w.pp("head");
        Ok(Self {
            visual_encoder: VisionTransformer::load(&w.pp("visual_encoder"), &c.vision)?,
            head: PixelHead {
                fc1: Linear::load(&h.pp("fc1"), dim, c.hidden(), true)?,
                fc2: Linear::load(&h.pp("fc2"), c.hidden(), p * p, true)?,
            },
            patch: p,
        })
    }

    /// Loads `model.safetensors` of a coherence folder; every tensor must be used.
    pub fn load(dir: &Path, config: &CoherenceConfig, device: &B::Device) -> Result<Self> {
        let store = open_weights(dir)?;
        let model = Self::build(&store, config, device)?;
        store.finish()?;
        Ok(model)
    }

    /// Fresh weights of the config's sizes, from `seed`.
    pub fn fresh(config: &CoherenceConfig, seed: u64, device: &B::Device) -> Result<Self> {
        Self::build(&TensorStore::synthetic(seed), config, device)
    }

    pub fn named_tensors(&self) -> Vec<NamedTensor> {
        named_tensors::<B, _>(self, &byteedit_models::params::same_key)
    }

    /// Per-pixel logits `[batch, size, size]` of the model's input.
    pub fn forward(&self, input: Tensor<B, 4>) -> Tensor<B, 3> {
        let tokens = self.visual_encoder.forward(input);
        let [b, n, dim] = tokens.dims();
        let patches = tokens.slice([0..b, 1..n, 0..dim]);
        let logits = self.head.fc2.forward(gelu(self.head.fc1.forward(patches)));
        let (g, p) = (((n - 1) as f64).sqrt() as usize, self.patch);
        // [b, gy*gx, py*px] → [b, gy, py, gx, px] → [b, gy*py, gx*px].
        logits
            .reshape([b, g, g, p, p])
            .swap_dims(2, 3)
            .reshape([b, g * p, g * p])
    }
}

/// A coherence folder: the model, its config and its preprocessing.
pub struct CoherenceFolder<B: Backend> {
    pub model: Coherence<B>,
    pub config: CoherenceConfig,
    pub preprocess: Preprocess,
}

impl<B: Backend> CoherenceFolder<B> {
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let config = CoherenceConfig::read(dir)?;
        Ok(Self::with(Coherence::load(dir, &config, device)?, config))
    }

    pub fn fresh(config: CoherenceConfig, seed: u64, device: &B::Device) -> Result<Self> {
        config.check(Path::new("the coherence config"))?;
        Ok(Self::with(Coherence::fresh(&config, seed, device)?, config))
    }

    fn with(model: Coherence<B>, config: CoherenceConfig) -> Self {
        let preprocess = Preprocess {
            size: config.vision.img_size,
            mean: config.image_mean,
            std: config.image_std,
        };
        Self {
            model,
            config,
            preprocess,
        }
    }

    /// The same folder around another model (e.g. the inner-backend copy).
    pub fn with_model<C: Backend>(&self, model: Coherence<C>) -> CoherenceFolder<C> {
        CoherenceFolder {
            model,
            config: self.config.clone(),
            preprocess: self.preprocess.clone(),
        }
    }

    /// The mask `[batch, 1, h, w]` (1 = generated) at the model's size,
    /// through the image's resize and crop.
    pub fn mask_at_model_size(&self, mask: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, _, _, _] = mask.dims();
        let s = self.preprocess.size;
        self.preprocess
            .resize(mask)
            .clamp(0.0, 1.0)
            .reshape([b, s, s])
    }

    /// Per-pixel "real" logits `[batch, size, size]` of RGB `pixels` in
    /// [0, 1]; `mask` is read only by a model with a mask channel.
    pub fn logits(&self, pixels: Tensor<B, 4>, mask: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        let mut input = self.preprocess.forward(pixels);
        if self.config.mask_channel {
            let [b, _, s, _] = input.dims();
            let mask = mask.map_or_else(
                || Tensor::zeros([b, 1, s, s], &input.device()),
                |m| self.preprocess.resize(m),
            );
            input = Tensor::cat(vec![input, mask], 1);
        }
        self.model.forward(input)
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| RewardError::Io {
            path: dir.to_owned(),
            message: e.to_string(),
        })?;
        self.config.write(dir)?;
        save_named(&dir.join("model.safetensors"), self.model.named_tensors())?;
        Ok(())
    }
}

/// The `kind` a reward folder declares (`imagereward` when it has no
/// `reward_config.json`: the released model).
pub fn folder_kind(dir: &Path) -> Result<String> {
    let path = dir.join("reward_config.json");
    if !path.exists() {
        return Ok("imagereward".into());
    }
    #[derive(Deserialize)]
    struct Kind {
        kind: String,
    }
    Ok(read_json::<Kind>(&path, "a reward folder holds its reward_config.json")?.kind)
}
