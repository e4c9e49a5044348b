//! diffusers `models/unets/unet_2d_condition.py`: `UNet2DConditionModel`,
//! built from its `config.json`.

use std::path::Path;

use burn::prelude::*;
use serde::Deserialize;

use crate::config::{PerBlock, read_config, unsupported};
use crate::embeddings::{TimestepEmbedding, timestep_embedding};
use crate::error::{ModelError, Result};
use crate::nn::{Conv2d, GroupNorm};
use crate::unet_2d_blocks::{BlockCommon, CrossAttn, DownBlock, MidBlock, UpBlock, UpChannels};
use crate::weights::Weights;

/// The `unet/config.json` fields this engine reads; defaults are diffusers'.
#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "d_in_channels")]
    pub in_channels: usize,
    #[serde(default = "d_out_channels")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "d_down_blocks")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_mid_block")]
    pub mid_block_type: Option<String>,
    #[serde(default = "d_up_blocks")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_layers_per_block")]
    pub layers_per_block: PerBlock<usize>,
    #[serde(default = "d_one")]
    pub downsample_padding: usize,
    #[serde(default = "d_one_f")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "d_act_fn")]
    pub act_fn: String,
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    #[serde(default = "d_cross_attention_dim")]
    pub cross_attention_dim: PerBlock<usize>,
    #[serde(default = "d_transformer_layers")]
    pub transformer_layers_per_block: PerBlock<usize>,
    #[serde(default = "d_attention_head_dim")]
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub only_cross_attention: PerBlock<bool>,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default = "d_conv_kernel")]
    pub conv_in_kernel: usize,
    #[serde(default = "d_conv_kernel")]
    pub conv_out_kernel: usize,
    #[serde(default = "d_resnet_shift")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "d_time_embedding_type")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default)]
    pub timestep_post_act: Option<String>,
    #[serde(default)]
    pub time_embedding_act_fn: Option<String>,
    #[serde(default)]
    pub cross_attention_norm: Option<String>,
    #[serde(default)]
    pub resnet_skip_time_act: bool,
    #[serde(default = "d_one_f")]
    pub resnet_out_scale_factor: f64,
    #[serde(default = "d_attention_type")]
    pub attention_type: String,
    #[serde(default)]
    pub sample_size: Option<usize>,
}

fn d_in_channels() -> usize {
    4
}
fn d_out_channels() -> usize {
    4
}
fn d_true() -> bool {
    true
}
fn d_one() -> usize {
    1
}
fn d_one_f() -> f64 {
    1.0
}
fn d_groups() -> usize {
    32
}
fn d_eps() -> f64 {
    1e-5
}
fn d_conv_kernel() -> usize {
    3
}
fn d_act_fn() -> String {
    "silu".into()
}
fn d_resnet_shift() -> String {
    "default".into()
}
fn d_time_embedding_type() -> String {
    "positional".into()
}
fn d_attention_type() -> String {
    "default".into()
}
fn d_mid_block() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn d_layers_per_block() -> PerBlock<usize> {
    PerBlock::One(2)
}
fn d_cross_attention_dim() -> PerBlock<usize> {
    PerBlock::One(1280)
}
fn d_transformer_layers() -> PerBlock<usize> {
    PerBlock::One(1)
}
fn d_attention_head_dim() -> PerBlock<usize> {
    PerBlock::One(8)
}
fn d_block_out_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn d_down_blocks() -> Vec<String> {
    [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn d_up_blocks() -> Vec<String> {
    [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ]
    .map(String::from)
    .to_vec()
}

impl UNetConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Self = read_config(path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Rejects settings this engine would otherwise silently compute wrong.
    fn validate(&self, path: &Path) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(ModelError::config(
                path,
                format!(
                    "block_out_channels ({n}), down_block_types ({}) and up_block_types ({}) must have the same non-zero length",
                    self.down_block_types.len(),
                    self.up_block_types.len()
                ),
            ));
        }
        let checks: [(bool, String); 14] = [
            (self.act_fn != "silu", format!("act_fn = {:?}", self.act_fn)),
            (
                self.resnet_time_scale_shift != "default",
                format!(
                    "resnet_time_scale_shift = {:?}",
                    self.resnet_time_scale_shift
                ),
            ),
            (
                self.time_embedding_type != "positional",
                format!("time_embedding_type = {:?}", self.time_embedding_type),
            ),
            (
                self.class_embed_type.is_some() || self.num_class_embeds.is_some(),
                "class embeddings".into(),
            ),
            (
                self.addition_embed_type.is_some(),
                format!(
                    "addition_embed_type = {:?} (SDXL-style added conditioning)",
                    self.addition_embed_type
                ),
            ),
            (self.encoder_hid_dim.is_some(), "encoder_hid_dim".into()),
            (
                self.time_cond_proj_dim.is_some(),
                "time_cond_proj_dim".into(),
            ),
            (
                self.timestep_post_act.is_some() || self.time_embedding_act_fn.is_some(),
                "extra time-embedding activations".into(),
            ),
            (
                self.cross_attention_norm.is_some(),
                "cross_attention_norm".into(),
            ),
            (self.dual_cross_attention, "dual_cross_attention".into()),
            (
                self.only_cross_attention.iter_n(n).any(|b| b),
                "only_cross_attention".into(),
            ),
            (
                self.resnet_skip_time_act || self.resnet_out_scale_factor != 1.0,
                "resnet_skip_time_act / resnet_out_scale_factor".into(),
            ),
            (
                self.attention_type != "default",
                format!("attention_type = {:?}", self.attention_type),
            ),
            (
                self.cross_attention_dim
                    .iter_n(n)
                    .collect::<Vec<_>>()
                    .windows(2)
                    .any(|w| w[0] != w[1]),
                "a per-block cross_attention_dim".into(),
            ),
        ];
        for (bad, feature) in checks {
            if bad {
                return Err(unsupported(path, feature));
            }
        }
        for t in &self.down_block_types {
            if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
                return Err(unsupported(path, format!("down block type {t:?}")));
            }
        }
        for t in &self.up_block_types {
            if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
                return Err(unsupported(path, format!("up block type {t:?}")));
            }
        }
        match self.mid_block_type.as_deref() {
            Some("UNetMidBlock2DCrossAttn") => {}
            other => return Err(unsupported(path, format!("mid_block_type {other:?}"))),
        }
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if c % self.norm_num_groups != 0 {
                return Err(ModelError::config(
                    path,
                    format!(
                        "block_out_channels[{i}] = {c} is not divisible by norm_num_groups = {}",
                        self.norm_num_groups
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Attention heads per down block. diffusers' configs call this
    /// `attention_head_dim` for historical reasons; `num_attention_heads`, when
    /// set, takes precedence, exactly as in `UNet2DConditionModel.__init__`.
    fn heads(&self) -> Vec<usize> {
        let n = self.block_out_channels.len();
        match &self.num_attention_heads {
            Some(h) => h.iter_n(n).collect(),
            None => self.attention_head_dim.iter_n(n).collect(),
        }
    }
}

/// `UNet2DConditionModel`: predicts noise (or v) for a latent at timestep `t`
/// given the text embedding.
#[derive(Module, Debug)]
pub struct UNet2DConditionModel<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub time_embedding: TimestepEmbedding<B>,
    pub down_blocks: Vec<DownBlock<B>>,
    pub mid_block: MidBlock<B>,
    pub up_blocks: Vec<UpBlock<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
    time_proj_dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    center_input_sample: bool,
}

impl<B: Backend> UNet2DConditionModel<B> {
    pub fn load(w: &Weights<B>, config: &UNetConfig) -> Result<Self> {
        let c = config;
        let n = c.block_out_channels.len();
        let ch = &c.block_out_channels;
        let heads = c.heads();
        let layers: Vec<usize> = c.layers_per_block.iter_n(n).collect();
        let transformer_layers: Vec<usize> = c.transformer_layers_per_block.iter_n(n).collect();
        let time_proj_dim = ch[0];
        let temb_channels = c.time_embedding_dim.unwrap_or(ch[0] * 4);
        let common = BlockCommon {
            temb_channels,
            groups: c.norm_num_groups,
            eps: c.norm_eps,
            cross_attention_dim: c.cross_attention_dim.iter_n(n).next().unwrap_or(768),
            use_linear_projection: c.use_linear_projection,
        };
        let cross = |i: usize, kind: &str| {
            kind.starts_with("CrossAttn").then_some(CrossAttn {
                heads: heads[i],
                transformer_layers: transformer_layers[i],
            })
        };

        let mut down_blocks = Vec::with_capacity(n);
        let mut output = ch[0];
        for (i, kind) in c.down_block_types.iter().enumerate() {
            let input = output;
            output = ch[i];
            down_blocks.push(DownBlock::load(
                &w.pp("down_blocks").pp(i),
                &common,
                input,
                output,
                layers[i],
                cross(i, kind),
                i + 1 < n,
                c.downsample_padding,
            )?);
        }

        let mid_block = MidBlock::load(
            &w.pp("mid_block"),
            &common,
            ch[n - 1],
            CrossAttn {
                heads: heads[n - 1],
                transformer_layers: transformer_layers[n - 1],
            },
            c.mid_block_scale_factor,
        )?;

        // The up path mirrors the down path: reversed channels, heads and layers.
        let rev = |v: &[usize]| v.iter().rev().copied().collect::<Vec<_>>();
        let (rch, rheads, rlayers, rtl) =
            (rev(ch), rev(&heads), rev(&layers), rev(&transformer_layers));
        let mut up_blocks = Vec::with_capacity(n);
        let mut output = rch[0];
        for (i, kind) in c.up_block_types.iter().enumerate() {
            let prev_output = output;
            output = rch[i];
            let input = rch[(i + 1).min(n - 1)];
            let cross = kind.starts_with("CrossAttn").then_some(CrossAttn {
                heads: rheads[i],
                transformer_layers: rtl[i],
            });
            up_blocks.push(UpBlock::load(
                &w.pp("up_blocks").pp(i),
                &common,
                UpChannels {
                    input,
                    output,
                    prev_output,
                },
                rlayers[i] + 1,
                cross,
                i + 1 < n,
            )?);
        }

        let (k_in, k_out) = (c.conv_in_kernel, c.conv_out_kernel);
        Ok(Self {
            conv_in: Conv2d::load(
                &w.pp("conv_in"),
                c.in_channels,
                ch[0],
                k_in,
                1,
                (k_in - 1) / 2,
            )?,
            time_embedding: TimestepEmbedding::load(
                &w.pp("time_embedding"),
                time_proj_dim,
                temb_channels,
            )?,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::load(
                &w.pp("conv_norm_out"),
                c.norm_num_groups,
                ch[0],
                c.norm_eps,
            )?,
            conv_out: Conv2d::load(
                &w.pp("conv_out"),
                ch[0],
                c.out_channels,
                k_out,
                1,
                (k_out - 1) / 2,
            )?,
            time_proj_dim,
            flip_sin_to_cos: c.flip_sin_to_cos,
            freq_shift: c.freq_shift,
            center_input_sample: c.center_input_sample,
        })
    }

    /// `sample`: `[batch, in_channels, h, w]`; `timestep` is shared by the batch;
    /// `context`: `[batch, tokens, cross_attention_dim]`.
    pub fn forward(
        &self,
        sample: Tensor<B, 4>,
        timestep: f32,
        context: &Tensor<B, 3>,
    ) -> Tensor<B, 4> {
        let batch = sample.dims()[0];
        self.forward_timesteps(sample, &vec![timestep; batch], context)
    }

    /// One denoising call of an inpainting UNet: `[latents, condition]`
    /// (mask + masked-image latents) at a timestep per sample.
    pub fn predict(
        &self,
        latents: Tensor<B, 4>,
        condition: &Tensor<B, 4>,
        context: &Tensor<B, 3>,
        timesteps: &[f32],
    ) -> Tensor<B, 4> {
        let input = Tensor::cat(vec![latents, condition.clone()], 1);
        self.forward_timesteps(input, timesteps, context)
    }

    /// [`forward`](Self::forward) with a timestep per sample (training
    /// batches mix noise levels); `timesteps.len()` must equal the batch.
    pub fn forward_timesteps(
        &self,
        sample: Tensor<B, 4>,
        timesteps: &[f32],
        context: &Tensor<B, 3>,
    ) -> Tensor<B, 4> {
        let device = sample.device();
        let sample = if self.center_input_sample {
            sample.mul_scalar(2.0).sub_scalar(1.0)
        } else {
            sample
        };

        // 1. time
        let t_emb = timestep_embedding::<B>(
            timesteps,
            self.time_proj_dim,
            self.flip_sin_to_cos,
            self.freq_shift,
            &device,
        );
        let temb = self.time_embedding.forward(t_emb);

        // 2. pre-process, 3. down
        let mut x = self.conv_in.forward(sample);
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            x = block.forward(x, &temb, context, &mut skips);
        }

        // 4. mid
        x = self.mid_block.forward(x, &temb, context);

        // 5. up: each block takes its skips from the end; it upsamples to the
        // size of the skips the next block will take, which handles odd sizes.
        for block in &self.up_blocks {
            let keep = skips.len().saturating_sub(block.resnets.len());
            let upsample_size = skips[..keep].last().map(|s| {
                let d = s.dims();
                [d[2], d[3]]
            });
            let mut own = skips.split_off(keep);
            x = block.forward(x, &temb, context, &mut own, upsample_size);
        }

        // 6. post-process
        self.conv_out.forward(self.conv_norm_out.forward_silu(x))
    }
}
