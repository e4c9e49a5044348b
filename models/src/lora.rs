//! Low-rank adapters (LoRA, as peft adds them to diffusers' UNet): a frozen
//! `Linear` `W` gains `scale · B A` with `A: [rank, in]`, `B: [out, rank]`,
//! `scale = alpha / rank`. burn has no LoRA, so the adapter lives inside
//! [`Linear`](crate::nn::Linear) as an optional field: its keys are peft's
//! (`…attn1.to_q.lora_A.weight`), the loader attaches adapters where a
//! [`LoraSpec`] names the layer, and the exporter folds them back into `W`
//! ([`merge_adapters`]), so an exported folder is a plain diffusers UNet.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::params::NamedTensor;
use crate::weights::Weights;

/// Which layers get adapters, and their size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    pub rank: usize,
    /// `scale = alpha / rank`; peft's default alpha is the rank (scale 1).
    #[serde(default)]
    pub alpha: Option<f64>,
    /// Layer names matched against the end of a linear layer's key
    /// (`to_q` matches `…attn1.to_q`); default: the attention projections.
    #[serde(default = "default_targets")]
    pub targets: Vec<String>,
    /// Seeds the fresh `A` matrices (`B` starts at zero, so a fresh adapter
    /// leaves the model's output unchanged).
    #[serde(default)]
    pub seed: u64,
}

pub fn default_targets() -> Vec<String> {
    ["to_q", "to_k", "to_v", "to_out.0"]
        .map(String::from)
        .to_vec()
}

impl LoraSpec {
    pub fn new(rank: usize) -> Self {
        Self {
            rank,
            alpha: None,
            targets: default_targets(),
            seed: 0,
        }
    }

    pub fn scale(&self) -> f64 {
        self.alpha.unwrap_or(self.rank as f64) / self.rank as f64
    }

    pub fn check(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(ModelError::InvalidInput(
                "LoRA rank must be at least 1".into(),
            ));
        }
        if self.targets.is_empty() {
            return Err(ModelError::InvalidInput(
                "LoRA needs at least one target layer (e.g. to_q, to_k, to_v, to_out.0)".into(),
            ));
        }
        Ok(())
    }

    /// Whether the linear layer at `key` (its prefix, without `.weight`) gets an adapter.
    pub fn targets_key(&self, key: &str) -> bool {
        self.targets
            .iter()
            .any(|t| key == t || key.ends_with(&format!(".{t}")))
    }
}

/// One adapter matrix; kept as burn's `[in, out]` like `Linear`'s weight
/// (the exporter transposes both back).
#[derive(Module, Debug)]
pub struct LoraMatrix<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
}

/// `lora_A` (down to the rank) and `lora_B` (back up), as peft names them.
/// Fields are snake case; the exporter writes peft's `lora_A` / `lora_B`.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    pub lora_a: LoraMatrix<B>,
    pub lora_b: LoraMatrix<B>,
    scale: f64,
}

impl<B: Backend> LoraAdapter<B> {
    /// The adapter for the layer at `w` (`d_in → d_out`): read from the
    /// store when it holds `lora_A.weight` (a resumed or shipped adapter),
    /// else fresh (A uniform in ±1/sqrt(in) as peft's kaiming init, B zero).
    pub fn load_or_fresh(
        w: &Weights<B>,
        spec: &LoraSpec,
        d_in: usize,
        d_out: usize,
    ) -> Result<Self> {
        let r = spec.rank;
        let (a, b) = if w.contains("lora_A.weight") {
            (
                w.linear_weight("lora_A.weight", d_in, r)?,
                w.linear_weight("lora_B.weight", r, d_out)?,
            )
        } else {
            let mut rng = StdRng::seed_from_u64(spec.seed ^ fnv1a(&w.key("lora_A")));
            let bound = 1.0 / (d_in as f32).sqrt();
            let a: Vec<f32> = (0..d_in * r)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let device = w.device();
            (
                Tensor::from_data(TensorData::new(a, [d_in, r]), device),
                Tensor::zeros([r, d_out], device),
            )
        };
        Ok(Self {
            lora_a: LoraMatrix {
                weight: Param::from_tensor(a),
            },
            lora_b: LoraMatrix {
                weight: Param::from_tensor(b),
            },
            scale: spec.scale(),
        })
    }

    /// `scale · B(A(x))`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let down = burn::tensor::module::linear(x, self.lora_a.weight.val(), None);
        burn::tensor::module::linear(down, self.lora_b.weight.val(), None).mul_scalar(self.scale)
    }
}

/// Folds every adapter in `tensors` (named by [`named_tensors`](crate::params::named_tensors),
/// PyTorch layout) into its layer's weight, `W + scale · B A`, and drops the
/// adapter keys: the result has exactly the keys of the model without LoRA.
pub fn merge_adapters(tensors: Vec<NamedTensor>, scale: f64) -> Result<Vec<NamedTensor>> {
    use std::collections::HashMap;
    let mut adapters: HashMap<String, (Option<NamedTensor>, Option<NamedTensor>)> = HashMap::new();
    let mut rest = Vec::with_capacity(tensors.len());
    for t in tensors {
        if let Some(layer) = t.key.strip_suffix(".lora_A.weight").map(str::to_owned) {
            adapters.entry(layer).or_default().0 = Some(t);
        } else if let Some(layer) = t.key.strip_suffix(".lora_B.weight").map(str::to_owned) {
            adapters.entry(layer).or_default().1 = Some(t);
        } else {
            rest.push(t);
        }
    }
    for t in &mut rest {
        let Some(layer) = t.key.strip_suffix(".weight") else {
            continue;
        };
        let Some((a, b)) = adapters.remove(layer) else {
            continue;
        };
        let (Some(a), Some(b)) = (a, b) else {
            return Err(ModelError::InvalidInput(format!(
                "the adapter of `{layer}` has only one of lora_A and lora_B"
            )));
        };
        let (r, d_in) = (a.shape[0], a.shape[1]);
        let d_out = b.shape[0];
        if t.shape != [d_out, d_in] || b.shape[1] != r {
            return Err(ModelError::InvalidInput(format!(
                "the adapter of `{layer}` ({:?} × {:?}) does not fit its weight {:?}",
                b.shape, a.shape, t.shape
            )));
        }
        // W[o, i] += scale Σ_k B[o, k] A[k, i], accumulated in f64.
        for o in 0..d_out {
            for i in 0..d_in {
                let dot: f64 = (0..r)
                    .map(|k| b.values[o * r + k] as f64 * a.values[k * d_in + i] as f64)
                    .sum();
                t.values[o * d_in + i] += (scale * dot) as f32;
            }
        }
    }
    if let Some(layer) = adapters.keys().next() {
        return Err(ModelError::InvalidInput(format!(
            "an adapter `{layer}.lora_A/B` has no layer weight to merge into"
        )));
    }
    Ok(rest)
}

/// FNV-1a of a key: a stable per-layer seed offset.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}
