//! ImageReward (R_α aesthetics, R_β alignment): BLIP's ViT reads the image,
//! BLIP's BERT reads the prompt while cross-attending to the image tokens,
//! and an MLP head turns the text `[CLS]` state into one score, normalised
//! by the folder's mean and std. Loaded by ImageReward's own names.

use std::path::Path;

use burn::prelude::*;
use byteedit_models::nn::Linear;
use byteedit_models::weights::{TensorStore, Weights};

use crate::config::RewardConfig;
use crate::error::{Result, RewardError};
use crate::text::{TextConfig, TextEncoder};
use crate::tokenizer::Encoded;
use crate::vision::VisionTransformer;

/// Parts of the released checkpoint that scoring does not use (BLIP's
/// contrastive projections).
pub const UNUSED: [&str; 2] = ["blip.vision_proj.", "blip.text_proj."];

/// `mlp.layers`: linears only (the dropouts between them hold no weights,
/// and ImageReward puts no activation there).
#[derive(Module, Debug)]
pub struct Head<B: Backend> {
    pub layers: Vec<Linear<B>>,
}

impl<B: Backend> Head<B> {
    /// Reads the linears in index order, each size from the checkpoint's
    /// shapes: from the text width down to one score.
    fn load(store: &TensorStore, w: &Weights<B>, width: usize, dir: &Path) -> Result<Self> {
        let mut indices: Vec<usize> = store
            .keys()
            .iter()
            .filter_map(|k| {
                k.strip_prefix("mlp.layers.")?
                    .strip_suffix(".weight")?
                    .parse()
                    .ok()
            })
            .collect();
        indices.sort_unstable();
        let mut layers = Vec::with_capacity(indices.len());
        let mut d_in = width;
        for i in indices {
            let key = format!("mlp.layers.{i}.weight");
            let d_out = store.shape(&key).map_or(0, |s| s[0]);
            layers.push(Linear::load(
                &w.pp("mlp").pp("layers").pp(i),
                d_in,
                d_out,
                true,
            )?);
            d_in = d_out;
        }
        if layers.is_empty() || d_in != 1 {
            return Err(RewardError::InvalidFile {
                path: dir.to_owned(),
                message: format!(
                    "the `mlp.layers.*` head must end in one score; it has {} layers ending at width {d_in}",
                    layers.len()
                ),
            });
        }
        Ok(Self { layers })
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.layers.iter().fold(x, |x, layer| layer.forward(x))
    }
}

#[derive(Module, Debug)]
pub struct ImageReward<B: Backend> {
    /// `blip.visual_encoder`.
    pub visual_encoder: VisionTransformer<B>,
    /// `blip.text_encoder`.
    pub text_encoder: TextEncoder<B>,
    /// `mlp`.
    pub mlp: Head<B>,
    score_mean: f64,
    score_std: f64,
}

impl<B: Backend> ImageReward<B> {
    /// Loads a reward folder: `reward_config.json`, `med_config.json` and
    /// `model.safetensors`. Every tensor must be used, but the documented
    /// [`UNUSED`] ones.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let config = RewardConfig::read(dir)?;
        let text = TextConfig::read(dir)?;
        let store = TensorStore::open_files(dir, &[dir.join("model.safetensors")])?;
        let w = Weights::<B>::new(&store, device);
        let blip = w.pp("blip");
        let visual_encoder = VisionTransformer::load(&blip.pp("visual_encoder"), &config.vision)?;
        let text_encoder =
            TextEncoder::load(&blip.pp("text_encoder"), &text, config.vision.embed_dim)?;
        let mlp = Head::load(&store, &w, text.hidden_size, dir)?;
        for prefix in UNUSED {
            store.ignore(prefix);
        }
        store.finish()?;
        Ok(Self {
            visual_encoder,
            text_encoder,
            mlp,
            score_mean: config.score_mean,
            score_std: config.score_std,
        })
    }

    /// The text `[CLS]` state `[batch, hidden]` for normalised `pixels` and
    /// tokenised prompts (one per image).
    pub fn text_cls(&self, pixels: Tensor<B, 4>, prompts: &[Encoded]) -> Tensor<B, 2> {
        let device = pixels.device();
        let image = self.visual_encoder.forward(pixels);
        let (ids, mask) = batch(prompts, &device);
        let hidden = self.text_encoder.forward(ids, mask, image);
        let [b, _, width] = hidden.dims();
        hidden.slice([0..b, 0..1, 0..width]).reshape([b, width])
    }

    /// Normalised scores `[batch, 1]`: `(mlp(cls) - mean) / std`.
    pub fn score(&self, pixels: Tensor<B, 4>, prompts: &[Encoded]) -> Tensor<B, 2> {
        let raw = self.mlp.forward(self.text_cls(pixels, prompts));
        raw.sub_scalar(self.score_mean).div_scalar(self.score_std)
    }
}

/// Ids and masks as `[batch, tokens]` integer tensors.
fn batch<B: Backend>(
    prompts: &[Encoded],
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let tokens = prompts.first().map_or(0, |p| p.ids.len());
    let flat = |pick: fn(&Encoded) -> &Vec<u32>| -> Vec<i64> {
        prompts
            .iter()
            .flat_map(|p| pick(p).iter().map(|&v| i64::from(v)))
            .collect()
    };
    let shape = [prompts.len(), tokens];
    let make = |values: Vec<i64>| {
        Tensor::<B, 2, Int>::from_data(burn::tensor::TensorData::new(values, shape), device)
    };
    (make(flat(|p| &p.ids)), make(flat(|p| &p.attention_mask)))
}
