//! BLIP's text encoder, `blip.text_encoder` (`med.py`'s `BertModel` in its
//! multimodal mode): BERT layers whose self-attention is masked by the
//! prompt's padding and whose cross-attention reads every image token.
//! Module paths are the checkpoint's names (`encoder.layer.{i}.attention.self.query`,
//! `crossattention.output.LayerNorm`, ...).

use std::path::Path;

use burn::prelude::*;
use byteedit_models::nn::{Embedding, LayerNorm, Linear, attention_with_padding, gelu};
use byteedit_models::weights::Weights;
use serde::{Deserialize, Serialize};

use crate::config::{read_json, write_json};
use crate::error::{Result, RewardError};

/// `med_config.json`: the sizes BLIP's BERT is built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub layer_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    #[serde(default)]
    pub hidden_act: Option<String>,
}

impl TextConfig {
    /// Writes `med_config.json` as BLIP's `BertConfig.from_json_file` reads
    /// it, for a model built fresh from sizes (a loaded folder's own file is
    /// copied instead, keeping every field it had).
    pub fn write(&self, dir: &Path, image_width: usize) -> Result<()> {
        let mut value = serde_json::to_value(self).map_err(|e| RewardError::InvalidFile {
            path: dir.join("med_config.json"),
            message: e.to_string(),
        })?;
        if let Some(map) = value.as_object_mut() {
            map.insert("architectures".into(), serde_json::json!(["BertModel"]));
            map.insert("model_type".into(), "bert".into());
            map.insert("hidden_act".into(), "gelu".into());
            map.insert("add_cross_attention".into(), true.into());
            map.insert("encoder_width".into(), image_width.into());
            map.insert("pad_token_id".into(), 0.into());
            map.insert("type_vocab_size".into(), 2.into());
        }
        write_json(&dir.join("med_config.json"), &value)
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("med_config.json");
        let config: Self = read_json(&path, "BLIP's BERT config sits beside the weights")?;
        let invalid = |message: String| RewardError::InvalidFile {
            path: path.clone(),
            message,
        };
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(invalid(format!(
                "`hidden_size` {} is not a multiple of `num_attention_heads` {}",
                config.hidden_size, config.num_attention_heads
            )));
        }
        if let Some(act) = config.hidden_act.as_deref().filter(|a| *a != "gelu") {
            return Err(invalid(format!(
                "`hidden_act` `{act}` is not supported; BLIP's text encoder uses `gelu`"
            )));
        }
        Ok(config)
    }
}

/// `attention.self` / `crossattention.self`: separate query, key and value.
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    pub query: Linear<B>,
    pub key: Linear<B>,
    pub value: Linear<B>,
    heads: usize,
}

/// `*.output`: `LayerNorm(dense(x) + residual)`.
#[derive(Module, Debug)]
pub struct Output<B: Backend> {
    pub dense: Linear<B>,
    /// The checkpoint's `LayerNorm`.
    pub layer_norm: LayerNorm<B>,
}

impl<B: Backend> Output<B> {
    fn load(w: &Weights<B>, d_in: usize, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            dense: Linear::load(&w.pp("dense"), d_in, dim, true)?,
            layer_norm: LayerNorm::load(&w.pp("LayerNorm"), dim, eps)?,
        })
    }

    fn forward(&self, x: Tensor<B, 3>, residual: Tensor<B, 3>) -> Tensor<B, 3> {
        self.layer_norm.forward(self.dense.forward(x) + residual)
    }
}

/// `attention` or `crossattention`: attention, then its output.
#[derive(Module, Debug)]
pub struct AttentionBlock<B: Backend> {
    /// The checkpoint's `self` (a Rust keyword).
    pub self_: SelfAttention<B>,
    pub output: Output<B>,
}

impl<B: Backend> AttentionBlock<B> {
    fn load(w: &Weights<B>, c: &TextConfig, kv_width: usize) -> Result<Self> {
        let (dim, s) = (c.hidden_size, w.pp("self"));
        Ok(Self {
            self_: SelfAttention {
                query: Linear::load(&s.pp("query"), dim, dim, true)?,
                key: Linear::load(&s.pp("key"), kv_width, dim, true)?,
                value: Linear::load(&s.pp("value"), kv_width, dim, true)?,
                heads: c.num_attention_heads,
            },
            output: Output::load(&w.pp("output"), dim, dim, c.layer_norm_eps)?,
        })
    }

    fn forward(
        &self,
        x: Tensor<B, 3>,
        context: Tensor<B, 3>,
        padding: Option<Tensor<B, 2, Bool>>,
    ) -> Tensor<B, 3> {
        let a = &self.self_;
        let out = attention_with_padding(
            a.query.forward(x.clone()),
            a.key.forward(context.clone()),
            a.value.forward(context),
            a.heads,
            false,
            padding,
        );
        self.output.forward(out, x)
    }
}

/// `intermediate`: `dense`, followed by exact GELU.
#[derive(Module, Debug)]
pub struct Intermediate<B: Backend> {
    pub dense: Linear<B>,
}

/// `encoder.layer.{i}`.
#[derive(Module, Debug)]
pub struct Layer<B: Backend> {
    pub attention: AttentionBlock<B>,
    pub crossattention: AttentionBlock<B>,
    pub intermediate: Intermediate<B>,
    pub output: Output<B>,
}

impl<B: Backend> Layer<B> {
    fn load(l: &Weights<B>, c: &TextConfig, image_width: usize) -> Result<Self> {
        let (dim, eps) = (c.hidden_size, c.layer_norm_eps);
        Ok(Self {
            attention: AttentionBlock::load(&l.pp("attention"), c, dim)?,
            crossattention: AttentionBlock::load(&l.pp("crossattention"), c, image_width)?,
            intermediate: Intermediate {
                dense: Linear::load(
                    &l.pp("intermediate").pp("dense"),
                    dim,
                    c.intermediate_size,
                    true,
                )?,
            },
            output: Output::load(&l.pp("output"), c.intermediate_size, dim, eps)?,
        })
    }

    fn forward(
        &self,
        x: Tensor<B, 3>,
        image: Tensor<B, 3>,
        padding: Tensor<B, 2, Bool>,
    ) -> Tensor<B, 3> {
        let x = self.attention.forward(x.clone(), x, Some(padding));
        let x = self.crossattention.forward(x, image, None);
        let hidden = gelu(self.intermediate.dense.forward(x.clone()));
        self.output.forward(hidden, x)
    }
}

/// `embeddings`: words plus learned positions, then LayerNorm (BLIP's BERT
/// has no token types).
#[derive(Module, Debug)]
pub struct Embeddings<B: Backend> {
    pub word_embeddings: Embedding<B>,
    pub position_embeddings: Embedding<B>,
    /// The checkpoint's `LayerNorm`.
    pub layer_norm: LayerNorm<B>,
}

/// `encoder`.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    pub layer: Vec<Layer<B>>,
}

/// `blip.text_encoder`.
#[derive(Module, Debug)]
pub struct TextEncoder<B: Backend> {
    pub embeddings: Embeddings<B>,
    pub encoder: Encoder<B>,
}

impl<B: Backend> TextEncoder<B> {
    /// `image_width`: the width of the image tokens cross-attended to.
    pub fn load(w: &Weights<B>, c: &TextConfig, image_width: usize) -> Result<Self> {
        let (dim, eps) = (c.hidden_size, c.layer_norm_eps);
        let e = w.pp("embeddings");
        let embeddings = Embeddings {
            word_embeddings: Embedding::load(&e.pp("word_embeddings"), c.vocab_size, dim)?,
            position_embeddings: Embedding::load(
                &e.pp("position_embeddings"),
                c.max_position_embeddings,
                dim,
            )?,
            layer_norm: LayerNorm::load(&e.pp("LayerNorm"), dim, eps)?,
        };
        let layer = (0..c.num_hidden_layers)
            .map(|i| Layer::load(&w.pp("encoder").pp("layer").pp(i), c, image_width))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings,
            encoder: Encoder { layer },
        })
    }

    /// The last hidden states `[batch, tokens, hidden]` of `ids` (with
    /// `mask` 1 for tokens, 0 for padding) reading `image` tokens.
    pub fn forward(
        &self,
        ids: Tensor<B, 2, Int>,
        mask: Tensor<B, 2, Int>,
        image: Tensor<B, 3>,
    ) -> Tensor<B, 3> {
        let [batch, tokens] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<B, 1, Int>::arange(0..tokens as i64, &device)
            .reshape([1, tokens])
            .expand([batch, tokens]);
        let e = &self.embeddings;
        let mut x = e
            .layer_norm
            .forward(e.word_embeddings.forward(ids) + e.position_embeddings.forward(positions));
        let padding = mask.equal_elem(0);
        for layer in &self.encoder.layer {
            x = layer.forward(x, image.clone(), padding.clone());
        }
        x
    }
}
