//! ImageReward (R_α aesthetics, R_β alignment): BLIP's ViT reads the image,
//! BLIP's BERT reads the prompt while cross-attending to the image tokens,
//! and an MLP head turns the text `[CLS]` state into one score, normalised
//! by the folder's mean and std. Module paths are ImageReward's own names
//! (`blip.visual_encoder`, `blip.text_encoder`, `mlp.layers`).

use std::path::Path;

use burn::prelude::*;
use byteedit_models::nn::Linear;
use byteedit_models::params::{NamedTensor, named_tensors, save_named};
use byteedit_models::weights::{TensorStore, Weights};

use crate::checkpoint::open_weights;
use crate::config::RewardConfig;
use crate::error::{Result, RewardError};
use crate::text::{TextConfig, TextEncoder};
use crate::tokenizer::Encoded;
use crate::vision::VisionTransformer;

/// Parts of the released checkpoint that scoring does not use (BLIP's
/// contrastive projections; the `position_ids` buffer is skipped by the
/// engine's loader).
pub const UNUSED: [&str; 2] = ["blip.vision_proj.", "blip.text_proj."];

/// `mlp.layers`: linears only (the dropouts between them hold no weights,
/// and ImageReward puts no activation there).
#[derive(Module, Debug)]
pub struct Head<B: Backend> {
    pub layers: Vec<Linear<B>>,
    /// Each linear's index in ImageReward's `nn.Sequential` (dropouts take
    /// the indices between: 0, 2, 4, 6, 7), so saved keys match its names.
    indices: Vec<usize>,
}

impl<B: Backend> Head<B> {
    /// `layers`: (Sequential index, output width) in order, from the text
    /// width down to one score.
    fn load(w: &Weights<B>, width: usize, layers: &[(usize, usize)]) -> Result<Self> {
        let mut linears = Vec::with_capacity(layers.len());
        let mut d_in = width;
        for &(index, d_out) in layers {
            linears.push(Linear::load(&w.pp("layers").pp(index), d_in, d_out, true)?);
            d_in = d_out;
        }
        Ok(Self {
            layers: linears,
            indices: layers.iter().map(|&(i, _)| i).collect(),
        })
    }

    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.layers.iter().fold(x, |x, layer| layer.forward(x))
    }
}

/// The head a checkpoint holds, read from its `mlp.layers.*.weight` shapes.
fn head_in_checkpoint(store: &TensorStore, dir: &Path) -> Result<Vec<(usize, usize)>> {
    let mut layers: Vec<(usize, usize)> = store
        .keys()
        .iter()
        .filter_map(|k| {
            let index = k
                .strip_prefix("mlp.layers.")?
                .strip_suffix(".weight")?
                .parse()
                .ok()?;
            Some((index, store.shape(k)?.first().copied()?))
        })
        .collect();
    layers.sort_unstable();
    if layers.last().map(|l| l.1) != Some(1) {
        return Err(RewardError::InvalidFile {
            path: dir.to_owned(),
            message: format!(
                "the `mlp.layers.*` head must end in one score; it has {} layers ending at width {}",
                layers.len(),
                layers.last().map_or(0, |l| l.1)
            ),
        });
    }
    Ok(layers)
}

/// A fresh head's Sequential indices: a dropout after each linear but the
/// last two, as ImageReward's `MLP` is built.
fn fresh_head(widths: &[usize]) -> Vec<(usize, usize)> {
    let n = widths.len();
    widths
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            (
                if i + 1 == n && n > 1 {
                    2 * (n - 2) + 1
                } else {
                    2 * i
                },
                w,
            )
        })
        .collect()
}

/// `blip`: the two encoders.
#[derive(Module, Debug)]
pub struct Blip<B: Backend> {
    pub visual_encoder: VisionTransformer<B>,
    pub text_encoder: TextEncoder<B>,
}

#[derive(Module, Debug)]
pub struct ImageReward<B: Backend> {
    pub blip: Blip<B>,
    pub mlp: Head<B>,
    score_mean: f64,
    score_std: f64,
}

impl<B: Backend> ImageReward<B> {
    /// Loads a reward folder: `reward_config.json` (absent for the released
    /// model), `med_config.json` and the weights (see [`open_weights`]).
    /// Every tensor must be used, but the documented [`UNUSED`] ones.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let config = RewardConfig::read(dir)?;
        let text = TextConfig::read(dir)?;
        Self::from_store(&open_weights(dir)?, &config, &text, device)
    }

    /// Builds the model from a checkpoint's tensors, by name and shape.
    pub fn from_store(
        store: &TensorStore,
        config: &RewardConfig,
        text: &TextConfig,
        device: &B::Device,
    ) -> Result<Self> {
        let head = head_in_checkpoint(store, store.origin())?;
        let model = Self::build(store, config, text, &head, device)?;
        for prefix in UNUSED {
            store.ignore(prefix);
        }
        store.finish()?;
        Ok(model)
    }

    /// A model of the configs' sizes with fresh weights (uniform in
    /// ±1/sqrt(fan-in), norms at one, biases at zero), from `seed`.
    pub fn fresh(
        config: &RewardConfig,
        text: &TextConfig,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self> {
        let store = TensorStore::synthetic(seed);
        Self::build(&store, config, text, &fresh_head(&config.head), device)
    }

    fn build(
        store: &TensorStore,
        config: &RewardConfig,
        text: &TextConfig,
        head: &[(usize, usize)],
        device: &B::Device,
    ) -> Result<Self> {
        let w = Weights::<B>::new(store, device);
        let blip = w.pp("blip");
        let visual_encoder = VisionTransformer::load(&blip.pp("visual_encoder"), &config.vision)?;
        let text_encoder =
            TextEncoder::load(&blip.pp("text_encoder"), text, config.vision.embed_dim)?;
        let mlp = Head::load(&w.pp("mlp"), text.hidden_size, head)?;
        Ok(Self {
            blip: Blip {
                visual_encoder,
                text_encoder,
            },
            mlp,
            score_mean: config.score_mean,
            score_std: config.score_std,
        })
    }

    /// The normalisation `(raw - mean) / std` applied by [`Self::score`].
    pub fn normalisation(&self) -> (f64, f64) {
        (self.score_mean, self.score_std)
    }

    /// The same model with another normalisation (the trainer recomputes
    /// it on held-out data, as ImageReward does).
    pub fn with_normalisation(mut self, mean: f64, std: f64) -> Self {
        self.score_mean = mean;
        self.score_std = std;
        self
    }

    /// ImageReward's name for one of this module's parameter paths (as
    /// `byteedit_models::params` walks them).
    pub fn checkpoint_key(&self, path: &str) -> String {
        checkpoint_key(path, &self.mlp.indices)
    }

    /// Every parameter under ImageReward's key names, PyTorch layout.
    pub fn named_tensors(&self) -> Vec<NamedTensor> {
        named_tensors::<B, _>(self, &|key| self.checkpoint_key(key))
    }

    /// Writes the weights as `model.safetensors` in ImageReward's names,
    /// which ImageReward's own loader reads (`load_state_dict(strict=False)`
    /// tolerates the projections it lacks).
    pub fn save_weights(&self, dir: &Path) -> Result<()> {
        save_named(&dir.join("model.safetensors"), self.named_tensors())?;
        Ok(())
    }

    /// The text `[CLS]` state `[batch, hidden]` for normalised `pixels` and
    /// tokenised prompts (one per image).
    pub fn text_cls(&self, pixels: Tensor<B, 4>, prompts: &[Encoded]) -> Tensor<B, 2> {
        let device = pixels.device();
        let image = self.blip.visual_encoder.forward(pixels);
        let (ids, mask) = batch(prompts, &device);
        let hidden = self.blip.text_encoder.forward(ids, mask, image);
        let [b, _, width] = hidden.dims();
        hidden.slice([0..b, 0..1, 0..width]).reshape([b, width])
    }

    /// The head's raw scores `[batch, 1]`, before normalisation.
    pub fn raw_score(&self, pixels: Tensor<B, 4>, prompts: &[Encoded]) -> Tensor<B, 2> {
        self.mlp.forward(self.text_cls(pixels, prompts))
    }

    /// Normalised scores `[batch, 1]`: `(mlp(cls) - mean) / std`.
    pub fn score(&self, pixels: Tensor<B, 4>, prompts: &[Encoded]) -> Tensor<B, 2> {
        self.raw_score(pixels, prompts)
            .sub_scalar(self.score_mean)
            .div_scalar(self.score_std)
    }
}

/// A parameter path of this module as ImageReward names it.
fn checkpoint_key(path: &str, head_indices: &[usize]) -> String {
    if let Some(rest) = path.strip_prefix("mlp.layers.") {
        let (i, tail) = rest.split_once('.').unwrap_or((rest, ""));
        let index = i
            .parse::<usize>()
            .ok()
            .and_then(|i| head_indices.get(i))
            .map_or_else(|| i.to_string(), usize::to_string);
        return format!("mlp.layers.{index}.{tail}");
    }
    path.split('.')
        .map(|part| {
            if part == "layer_norm" {
                "LayerNorm"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join(".")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_head_takes_imagerewards_sequential_indices() {
        let indices: Vec<usize> = fresh_head(&[1024, 128, 64, 16, 1])
            .iter()
            .map(|l| l.0)
            .collect();
        assert_eq!(indices, [0, 2, 4, 6, 7]);
        assert_eq!(fresh_head(&[1]), [(0, 1)]);
    }

    #[test]
    fn keys_are_imagerewards_names() {
        assert_eq!(
            checkpoint_key(
                "blip.text_encoder.encoder.layer.3.crossattention.output.layer_norm.weight",
                &[]
            ),
            "blip.text_encoder.encoder.layer.3.crossattention.output.LayerNorm.weight"
        );
        assert_eq!(
            checkpoint_key("mlp.layers.4.bias", &[0, 2, 4, 6, 7]),
            "mlp.layers.7.bias"
        );
    }
}
