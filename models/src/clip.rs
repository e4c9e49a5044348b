//! transformers `models/clip/modeling_clip.py`: `CLIPTextModel`, the text
//! encoder whose last hidden state conditions the UNet.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::{Int, TensorData, activation};
use serde::Deserialize;

use crate::config::{read_config, unsupported};
use crate::error::{ModelError, Result};
use crate::nn::{Embedding, LayerNorm, Linear, gelu, multi_head_attention};
use crate::weights::Weights;

/// The `text_encoder/config.json` fields this engine reads.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipTextConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d_eos")]
    pub eos_token_id: u32,
}

fn d_vocab() -> usize {
    49408
}
fn d_hidden() -> usize {
    512
}
fn d_intermediate() -> usize {
    2048
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    8
}
fn d_positions() -> usize {
    77
}
fn d_act() -> String {
    "quick_gelu".into()
}
fn d_eps() -> f64 {
    1e-5
}
fn d_eos() -> u32 {
    2
}

impl ClipTextConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Self = read_config(path)?;
        if !matches!(config.hidden_act.as_str(), "quick_gelu" | "gelu") {
            return Err(unsupported(
                path,
                format!("hidden_act = {:?}", config.hidden_act),
            ));
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(ModelError::config(
                path,
                format!(
                    "hidden_size {} is not divisible by num_attention_heads {}",
                    config.hidden_size, config.num_attention_heads
                ),
            ));
        }
        Ok(config)
    }
}

#[derive(Module, Debug)]
pub struct ClipAttention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub out_proj: Linear<B>,
    heads: usize,
}

#[derive(Module, Debug)]
pub struct ClipMlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    /// `quick_gelu` (SD-1.x) rather than exact `gelu` (SD-2.x).
    quick_gelu: bool,
}

#[derive(Module, Debug)]
pub struct ClipEncoderLayer<B: Backend> {
    pub self_attn: ClipAttention<B>,
    pub layer_norm1: LayerNorm<B>,
    pub mlp: ClipMlp<B>,
    pub layer_norm2: LayerNorm<B>,
}

impl<B: Backend> ClipEncoderLayer<B> {
    fn load(w: &Weights<B>, c: &ClipTextConfig) -> Result<Self> {
        let d = c.hidden_size;
        let a = w.pp("self_attn");
        Ok(Self {
            self_attn: ClipAttention {
                q_proj: Linear::load(&a.pp("q_proj"), d, d, true)?,
                k_proj: Linear::load(&a.pp("k_proj"), d, d, true)?,
                v_proj: Linear::load(&a.pp("v_proj"), d, d, true)?,
                out_proj: Linear::load(&a.pp("out_proj"), d, d, true)?,
                heads: c.num_attention_heads,
            },
            layer_norm1: LayerNorm::load(&w.pp("layer_norm1"), d, c.layer_norm_eps)?,
            mlp: ClipMlp {
                fc1: Linear::load(&w.pp("mlp.fc1"), d, c.intermediate_size, true)?,
                fc2: Linear::load(&w.pp("mlp.fc2"), c.intermediate_size, d, true)?,
                quick_gelu: c.hidden_act == "quick_gelu",
            },
            layer_norm2: LayerNorm::load(&w.pp("layer_norm2"), d, c.layer_norm_eps)?,
        })
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.layer_norm1.forward(x.clone());
        let a = &self.self_attn;
        let attn = multi_head_attention(
            a.q_proj.forward(h.clone()),
            a.k_proj.forward(h.clone()),
            a.v_proj.forward(h),
            a.heads,
            true,
        );
        let x = a.out_proj.forward(attn).add(x);
        let h = self.mlp.fc1.forward(self.layer_norm2.forward(x.clone()));
        let h = if self.mlp.quick_gelu {
            // x * sigmoid(1.702 x)
            h.clone().mul(activation::sigmoid(h.mul_scalar(1.702)))
        } else {
            gelu(h)
        };
        self.mlp.fc2.forward(h).add(x)
    }
}

#[derive(Module, Debug)]
pub struct ClipEmbeddings<B: Backend> {
    pub token_embedding: Embedding<B>,
    pub position_embedding: Embedding<B>,
}

/// What the text encoder returns, as transformers names it.
pub struct ClipTextOutput<B: Backend> {
    /// `[batch, tokens, hidden]`: what the UNet attends to.
    pub last_hidden_state: Tensor<B, 3>,
    /// `[batch, hidden]`: the final state at each prompt's end-of-text token.
    pub pooler_output: Tensor<B, 2>,
}

/// `CLIPTextModel`.
#[derive(Module, Debug)]
pub struct ClipTextModel<B: Backend> {
    pub embeddings: ClipEmbeddings<B>,
    /// `encoder.layers`
    pub layers: Vec<ClipEncoderLayer<B>>,
    pub final_layer_norm: LayerNorm<B>,
    eos_token_id: u32,
}

impl<B: Backend> ClipTextModel<B> {
    pub fn load(w: &Weights<B>, c: &ClipTextConfig) -> Result<Self> {
        // transformers < 5 saves `CLIPTextModel` under `text_model.`; 5.x saves
        // the same tensors without that prefix. Both are the same model.
        let w = if w.contains("text_model.embeddings.token_embedding.weight") {
            w.pp("text_model")
        } else {
            w.clone()
        };
        let e = w.pp("embeddings");
        let layers = (0..c.num_hidden_layers)
            .map(|i| ClipEncoderLayer::load(&w.pp("encoder.layers").pp(i), c))
            .collect::<Result<_>>()?;
        Ok(Self {
            embeddings: ClipEmbeddings {
                token_embedding: Embedding::load(
                    &e.pp("token_embedding"),
                    c.vocab_size,
                    c.hidden_size,
                )?,
                position_embedding: Embedding::load(
                    &e.pp("position_embedding"),
                    c.max_position_embeddings,
                    c.hidden_size,
                )?,
            },
            layers,
            final_layer_norm: LayerNorm::load(
                &w.pp("final_layer_norm"),
                c.hidden_size,
                c.layer_norm_eps,
            )?,
            eos_token_id: c.eos_token_id,
        })
    }

    /// Encodes a batch of equally long token-id rows.
    pub fn forward(&self, ids: &[Vec<u32>], device: &B::Device) -> ClipTextOutput<B> {
        let batch = ids.len();
        let len = ids.first().map_or(0, Vec::len);
        let flat: Vec<i64> = ids.iter().flatten().map(|&i| i as i64).collect();
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [batch, len]), device);
        let positions = Tensor::<B, 1, Int>::arange(0..len as i64, device)
            .reshape([1, len])
            .repeat_dim(0, batch);
        let mut x = self
            .embeddings
            .token_embedding
            .forward(tokens)
            .add(self.embeddings.position_embedding.forward(positions));
        for layer in &self.layers {
            x = layer.forward(x);
        }
        let last_hidden_state = self.final_layer_norm.forward(x);

        // transformers: legacy configs (eos_token_id == 2) pool at the largest id,
        // newer ones at the first end-of-text token.
        let eos_positions: Vec<i64> = ids
            .iter()
            .map(|row| {
                let pos = if self.eos_token_id == 2 {
                    row.iter()
                        .enumerate()
                        .max_by_key(|(i, id)| (**id, std::cmp::Reverse(*i)))
                        .map(|(i, _)| i)
                } else {
                    row.iter().position(|&id| id == self.eos_token_id)
                };
                pos.unwrap_or(len.saturating_sub(1)) as i64
            })
            .collect();
        let hidden = last_hidden_state.dims()[2];
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(eos_positions, [batch]), device)
            .reshape([batch, 1, 1])
            .repeat_dim(2, hidden);
        let pooler_output = last_hidden_state
            .clone()
            .gather(1, index)
            .reshape([batch, hidden]);
        ClipTextOutput {
            last_hidden_state,
            pooler_output,
        }
    }
}
