//! diffusers `models/attention_processor.py` (`Attention`), `models/attention.py`
//! (`BasicTransformerBlock`, `FeedForward` with GEGLU) and
//! `models/transformers/transformer_2d.py` (`Transformer2DModel`).

use burn::prelude::*;

use crate::error::Result;
use crate::nn::{
    Conv2d, GroupNorm, LayerNorm, Linear, geglu, image_to_tokens, multi_head_attention,
    tokens_to_image,
};
use crate::weights::Weights;

/// `Attention`: q/k/v projections, multi-head attention, output projection.
/// Self-attention when no context is given, cross-attention otherwise.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub to_q: Linear<B>,
    pub to_k: Linear<B>,
    pub to_v: Linear<B>,
    /// `to_out.0` in the checkpoint (`to_out.1` is a dropout).
    pub to_out: Linear<B>,
    heads: usize,
}

impl<B: Backend> Attention<B> {
    /// `qkv_bias` is false in UNet transformer blocks and true in the VAE.
    pub fn load(
        w: &Weights<B>,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        dim_head: usize,
        qkv_bias: bool,
    ) -> Result<Self> {
        let inner = heads * dim_head;
        Ok(Self {
            to_q: Linear::load(&w.pp("to_q"), query_dim, inner, qkv_bias)?,
            to_k: Linear::load(&w.pp("to_k"), context_dim, inner, qkv_bias)?,
            to_v: Linear::load(&w.pp("to_v"), context_dim, inner, qkv_bias)?,
            to_out: Linear::load(&w.pp("to_out").pp(0), inner, query_dim, true)?,
            heads,
        })
    }

    /// The VAE's single-head attention, also from checkpoints that still use the
    /// pre-0.14 names `query`/`key`/`value`/`proj_attn` (diffusers converts them
    /// the same way when it loads such a file).
    pub fn load_vae(w: &Weights<B>, channels: usize) -> Result<Self> {
        let legacy = !w.contains("to_q.weight") && w.contains("query.weight");
        let name = |new: &'static str, old: &'static str| if legacy { old } else { new };
        Ok(Self {
            to_q: Linear::load(&w.pp(name("to_q", "query")), channels, channels, true)?,
            to_k: Linear::load(&w.pp(name("to_k", "key")), channels, channels, true)?,
            to_v: Linear::load(&w.pp(name("to_v", "value")), channels, channels, true)?,
            to_out: Linear::load(
                &if legacy {
                    w.pp("proj_attn")
                } else {
                    w.pp("to_out").pp(0)
                },
                channels,
                channels,
                true,
            )?,
            heads: 1,
        })
    }

    pub fn forward(&self, x: Tensor<B, 3>, context: Option<&Tensor<B, 3>>) -> Tensor<B, 3> {
        let context = context.cloned().unwrap_or_else(|| x.clone());
        let q = self.to_q.forward(x);
        let k = self.to_k.forward(context.clone());
        let v = self.to_v.forward(context);
        self.to_out
            .forward(multi_head_attention(q, k, v, self.heads, false))
    }
}

/// `FeedForward` with the GEGLU activation: `proj` doubles the width, one half
/// gates the other through GELU.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    /// `net.0.proj`
    pub geglu_proj: Linear<B>,
    /// `net.2`
    pub out: Linear<B>,
}

impl<B: Backend> FeedForward<B> {
    pub fn load(w: &Weights<B>, dim: usize) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            geglu_proj: Linear::load(&w.pp("net.0.proj"), dim, inner * 2, true)?,
            out: Linear::load(&w.pp("net.2"), inner, dim, true)?,
        })
    }

    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.out.forward(geglu(self.geglu_proj.forward(x)))
    }
}

/// `BasicTransformerBlock`: self-attention, cross-attention, feed-forward, each
/// pre-normed with LayerNorm and added back.
#[derive(Module, Debug)]
pub struct BasicTransformerBlock<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn1: Attention<B>,
    pub norm2: LayerNorm<B>,
    pub attn2: Attention<B>,
    pub norm3: LayerNorm<B>,
    pub ff: FeedForward<B>,
}

impl<B: Backend> BasicTransformerBlock<B> {
    pub fn load(
        w: &Weights<B>,
        dim: usize,
        heads: usize,
        dim_head: usize,
        context_dim: usize,
    ) -> Result<Self> {
        Ok(Self {
            norm1: LayerNorm::load(&w.pp("norm1"), dim, 1e-5)?,
            attn1: Attention::load(&w.pp("attn1"), dim, dim, heads, dim_head, false)?,
            norm2: LayerNorm::load(&w.pp("norm2"), dim, 1e-5)?,
            attn2: Attention::load(&w.pp("attn2"), dim, context_dim, heads, dim_head, false)?,
            norm3: LayerNorm::load(&w.pp("norm3"), dim, 1e-5)?,
            ff: FeedForward::load(&w.pp("ff"), dim)?,
        })
    }

    pub fn forward(&self, x: Tensor<B, 3>, context: &Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self
            .attn1
            .forward(self.norm1.forward(x.clone()), None)
            .add(x);
        let x = self
            .attn2
            .forward(self.norm2.forward(x.clone()), Some(context))
            .add(x);
        self.ff.forward(self.norm3.forward(x.clone())).add(x)
    }
}

/// `proj_in`/`proj_out`: 1x1 convolutions (SD-1.x) or linears (SD-2.x,
/// `use_linear_projection`).
#[derive(Module, Debug)]
// One projection per transformer: the variants' size difference (a LoRA
// slot in `Linear`) costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Projection<B: Backend> {
    Conv(Conv2d<B>),
    Linear(Linear<B>),
}

impl<B: Backend> Projection<B> {
    fn load(w: &Weights<B>, c_in: usize, c_out: usize, linear: bool) -> Result<Self> {
        Ok(if linear {
            Projection::Linear(Linear::load(w, c_in, c_out, true)?)
        } else {
            Projection::Conv(Conv2d::load(w, c_in, c_out, 1, 1, 0)?)
        })
    }
}

/// Where a `Transformer2DModel` sits and how it is shaped.
#[derive(Debug, Clone, Copy)]
pub struct Transformer2DConfig {
    pub channels: usize,
    pub heads: usize,
    pub layers: usize,
    pub context_dim: usize,
    pub groups: usize,
    pub use_linear_projection: bool,
}

/// `Transformer2DModel`: image features as tokens through transformer blocks,
/// attending to the text embedding, added back to the input.
#[derive(Module, Debug)]
pub struct Transformer2DModel<B: Backend> {
    pub norm: GroupNorm<B>,
    pub proj_in: Projection<B>,
    pub transformer_blocks: Vec<BasicTransformerBlock<B>>,
    pub proj_out: Projection<B>,
}

impl<B: Backend> Transformer2DModel<B> {
    pub fn load(w: &Weights<B>, c: Transformer2DConfig) -> Result<Self> {
        let dim_head = c.channels / c.heads;
        let linear = c.use_linear_projection;
        let transformer_blocks = (0..c.layers)
            .map(|i| {
                BasicTransformerBlock::load(
                    &w.pp("transformer_blocks").pp(i),
                    c.channels,
                    c.heads,
                    dim_head,
                    c.context_dim,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            norm: GroupNorm::load(&w.pp("norm"), c.groups, c.channels, 1e-6)?,
            proj_in: Projection::load(&w.pp("proj_in"), c.channels, c.channels, linear)?,
            transformer_blocks,
            proj_out: Projection::load(&w.pp("proj_out"), c.channels, c.channels, linear)?,
        })
    }

    pub fn forward(&self, x: Tensor<B, 4>, context: &Tensor<B, 3>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let residual = x.clone();
        let x = self.norm.forward(x);
        let to_tokens = image_to_tokens;
        let to_image = |t: Tensor<B, 3>| tokens_to_image(t, h, w);
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv.forward(x)),
            Projection::Linear(linear) => linear.forward(to_tokens(x)),
        };
        for block in &self.transformer_blocks {
            tokens = block.forward(tokens, context);
        }
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(to_image(tokens)),
            Projection::Linear(linear) => to_image(linear.forward(tokens)),
        };
        out.add(residual)
    }
}

/// The VAE mid-block attention: GroupNorm, one-head self-attention over pixels,
/// residual.
#[derive(Module, Debug)]
pub struct SpatialSelfAttention<B: Backend> {
    pub group_norm: GroupNorm<B>,
    pub attention: Attention<B>,
}

impl<B: Backend> SpatialSelfAttention<B> {
    pub fn load(w: &Weights<B>, channels: usize, groups: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            group_norm: GroupNorm::load(&w.pp("group_norm"), groups, channels, eps)?,
            attention: Attention::load_vae(w, channels)?,
        })
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let tokens = image_to_tokens(self.group_norm.forward(x.clone()));
        let out = self.attention.forward(tokens, None);
        tokens_to_image(out, h, w).add(x)
    }
}
