//! BLIP's image encoder, `blip.visual_encoder` (timm's ViT as BLIP's
//! `vit.py` builds it): patch embedding, class token and learned positions,
//! pre-norm transformer blocks, a final LayerNorm. Module paths are the
//! checkpoint's names (`blocks.{i}.attn.qkv`, `mlp.fc1`, ...).

use burn::module::Param;
use burn::prelude::*;
use byteedit_models::nn::{Conv2d, LayerNorm, Linear, gelu, multi_head_attention};
use byteedit_models::weights::Weights;

use crate::config::VisionConfig;
use crate::error::Result;

/// `blocks.{i}.attn`: one fused `qkv` projection, then `proj`.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub qkv: Linear<B>,
    pub proj: Linear<B>,
    heads: usize,
}

impl<B: Backend> Attention<B> {
    fn load(w: &Weights<B>, dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            qkv: Linear::load(&w.pp("qkv"), dim, 3 * dim, true)?,
            proj: Linear::load(&w.pp("proj"), dim, dim, true)?,
            heads,
        })
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, dim] = x.dims();
        // timm reshapes qkv to (3, heads, head_dim): q, k, v are the thirds.
        let qkv = self.qkv.forward(x);
        let part = |i: usize| qkv.clone().slice([0..b, 0..n, i * dim..(i + 1) * dim]);
        let out = multi_head_attention(part(0), part(1), part(2), self.heads, false);
        self.proj.forward(out)
    }
}

/// `blocks.{i}.mlp`: `fc1`, exact GELU, `fc2`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

/// `blocks.{i}`: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn: Attention<B>,
    pub norm2: LayerNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: Backend> Block<B> {
    fn load(w: &Weights<B>, c: &VisionConfig) -> Result<Self> {
        let (dim, eps) = (c.embed_dim, c.layer_norm_eps);
        let m = w.pp("mlp");
        Ok(Self {
            norm1: LayerNorm::load(&w.pp("norm1"), dim, eps)?,
            attn: Attention::load(&w.pp("attn"), dim, c.num_heads)?,
            norm2: LayerNorm::load(&w.pp("norm2"), dim, eps)?,
            mlp: Mlp {
                fc1: Linear::load(&m.pp("fc1"), dim, c.mlp_dim(), true)?,
                fc2: Linear::load(&m.pp("fc2"), c.mlp_dim(), dim, true)?,
            },
        })
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.attn.forward(self.norm1.forward(x));
        let hidden = self.mlp.fc1.forward(self.norm2.forward(x.clone()));
        x + self.mlp.fc2.forward(gelu(hidden))
    }
}

/// `patch_embed`: `proj`, a patch-sized convolution with patch-sized stride.
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    pub proj: Conv2d<B>,
}

/// `blip.visual_encoder`.
#[derive(Module, Debug)]
pub struct VisionTransformer<B: Backend> {
    pub patch_embed: PatchEmbed<B>,
    pub cls_token: Param<Tensor<B, 3>>,
    pub pos_embed: Param<Tensor<B, 3>>,
    pub blocks: Vec<Block<B>>,
    pub norm: LayerNorm<B>,
}

impl<B: Backend> VisionTransformer<B> {
    pub fn load(w: &Weights<B>, c: &VisionConfig) -> Result<Self> {
        let dim = c.embed_dim;
        let patch_embed = PatchEmbed {
            proj: Conv2d::load(
                &w.pp("patch_embed").pp("proj"),
                c.in_chans,
                dim,
                c.patch_size,
                c.patch_size,
                0,
            )?,
        };
        let blocks = (0..c.depth)
            .map(|i| Block::load(&w.pp("blocks").pp(i), c))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_embed,
            cls_token: Param::from_tensor(w.tensor("cls_token", [1, 1, dim])?),
            pos_embed: Param::from_tensor(w.tensor("pos_embed", [1, c.tokens(), dim])?),
            blocks,
            norm: LayerNorm::load(&w.pp("norm"), dim, c.layer_norm_eps)?,
        })
    }

    /// `[batch, in_chans, size, size]` normalised pixels → `[batch, tokens, dim]`,
    /// the class token first (BLIP's `image_embeds`).
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let batch = pixels.dims()[0];
        let patches = self.patch_embed.proj.forward(pixels);
        let [_, dim, gh, gw] = patches.dims();
        let patches = patches.reshape([batch, dim, gh * gw]).swap_dims(1, 2);
        let cls = self.cls_token.val().expand([batch, 1, dim]);
        let mut x = Tensor::cat(vec![cls, patches], 1) + self.pos_embed.val();
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.norm.forward(x)
    }
}
