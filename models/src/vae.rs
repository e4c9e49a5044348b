//! diffusers `models/autoencoders/autoencoder_kl.py` and `vae.py`:
//! the KL autoencoder that maps images to latents and back.

use std::path::Path;

use burn::prelude::*;
use serde::Deserialize;

use crate::attention::SpatialSelfAttention;
use crate::config::{read_config, unsupported};
use crate::error::{ModelError, Result};
use crate::nn::{Conv2d, GroupNorm};
use crate::resnet::{Downsample2D, ResnetBlock2D, ResnetConfig, Upsample2D};
use crate::weights::Weights;

/// diffusers uses a fixed epsilon in the VAE's norms.
const VAE_EPS: f64 = 1e-6;

/// The `vae/config.json` fields this engine reads; defaults are diffusers'.
#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "d_three")]
    pub in_channels: usize,
    #[serde(default = "d_three")]
    pub out_channels: usize,
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_one")]
    pub layers_per_block: usize,
    #[serde(default = "d_act_fn")]
    pub act_fn: String,
    #[serde(default = "d_four")]
    pub latent_channels: usize,
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "d_scaling_factor")]
    pub scaling_factor: f64,
    #[serde(default = "d_true")]
    pub use_quant_conv: bool,
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
}

fn d_three() -> usize {
    3
}
fn d_four() -> usize {
    4
}
fn d_one() -> usize {
    1
}
fn d_groups() -> usize {
    32
}
fn d_true() -> bool {
    true
}
fn d_scaling_factor() -> f64 {
    0.18215
}
fn d_act_fn() -> String {
    "silu".into()
}
fn d_channels() -> Vec<usize> {
    vec![64]
}
fn d_down() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn d_up() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}

impl VaeConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Self = read_config(path)?;
        let n = config.block_out_channels.len();
        if n == 0 || config.down_block_types.len() != n || config.up_block_types.len() != n {
            return Err(ModelError::config(
                path,
                "block_out_channels, down_block_types and up_block_types must have the same non-zero length",
            ));
        }
        if config.act_fn != "silu" {
            return Err(unsupported(path, format!("act_fn = {:?}", config.act_fn)));
        }
        if let Some(t) = config
            .down_block_types
            .iter()
            .find(|t| *t != "DownEncoderBlock2D")
        {
            return Err(unsupported(path, format!("down block type {t:?}")));
        }
        if let Some(t) = config
            .up_block_types
            .iter()
            .find(|t| *t != "UpDecoderBlock2D")
        {
            return Err(unsupported(path, format!("up block type {t:?}")));
        }
        Ok(config)
    }

    /// Pixels per latent along each side: `2^(blocks - 1)`.
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    fn resnet(&self, cin: usize, cout: usize) -> ResnetConfig {
        ResnetConfig {
            in_channels: cin,
            out_channels: cout,
            temb_channels: None,
            groups: self.norm_num_groups,
            eps: VAE_EPS,
            output_scale_factor: 1.0,
        }
    }
}

/// `UNetMidBlock2D` without time embedding: resnet, attention, resnet.
#[derive(Module, Debug)]
pub struct VaeMidBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<SpatialSelfAttention<B>>,
}

impl<B: Backend> VaeMidBlock<B> {
    fn load(w: &Weights<B>, config: &VaeConfig, channels: usize) -> Result<Self> {
        let resnet = |i: usize| {
            ResnetBlock2D::load(&w.pp("resnets").pp(i), config.resnet(channels, channels))
        };
        let attentions = if config.mid_block_add_attention {
            vec![SpatialSelfAttention::load(
                &w.pp("attentions").pp(0),
                channels,
                config.norm_num_groups,
                VAE_EPS,
            )?]
        } else {
            Vec::new()
        };
        Ok(Self {
            resnets: vec![resnet(0)?, resnet(1)?],
            attentions,
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x, None);
        for attn in &self.attentions {
            x = attn.forward(x);
        }
        self.resnets[1].forward(x, None)
    }
}

/// `DownEncoderBlock2D`.
#[derive(Module, Debug)]
pub struct DownEncoderBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub downsamplers: Vec<Downsample2D<B>>,
}

/// `UpDecoderBlock2D`.
#[derive(Module, Debug)]
pub struct UpDecoderBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub upsamplers: Vec<Upsample2D<B>>,
}

/// The VAE encoder: image → `2 * latent_channels` moments.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub down_blocks: Vec<DownEncoderBlock<B>>,
    pub mid_block: VaeMidBlock<B>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Encoder<B> {
    fn load(w: &Weights<B>, c: &VaeConfig) -> Result<Self> {
        let ch = &c.block_out_channels;
        let n = ch.len();
        let mut down_blocks = Vec::with_capacity(n);
        let mut output = ch[0];
        for (i, &channels) in ch.iter().enumerate() {
            let input = output;
            output = channels;
            let wb = w.pp("down_blocks").pp(i);
            let resnets = (0..c.layers_per_block)
                .map(|j| {
                    let cin = if j == 0 { input } else { output };
                    ResnetBlock2D::load(&wb.pp("resnets").pp(j), c.resnet(cin, output))
                })
                .collect::<Result<_>>()?;
            let downsamplers = if i + 1 < n {
                vec![Downsample2D::load(&wb.pp("downsamplers").pp(0), output, 0)?]
            } else {
                Vec::new()
            };
            down_blocks.push(DownEncoderBlock {
                resnets,
                downsamplers,
            });
        }
        let last = ch[n - 1];
        Ok(Self {
            conv_in: Conv2d::load(&w.pp("conv_in"), c.in_channels, ch[0], 3, 1, 1)?,
            down_blocks,
            mid_block: VaeMidBlock::load(&w.pp("mid_block"), c, last)?,
            conv_norm_out: GroupNorm::load(
                &w.pp("conv_norm_out"),
                c.norm_num_groups,
                last,
                VAE_EPS,
            )?,
            conv_out: Conv2d::load(&w.pp("conv_out"), last, 2 * c.latent_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.conv_in.forward(x);
        for block in &self.down_blocks {
            for resnet in &block.resnets {
                x = resnet.forward(x, None);
            }
            for down in &block.downsamplers {
                x = down.forward(x);
            }
        }
        x = self.mid_block.forward(x);
        self.conv_out.forward(self.conv_norm_out.forward_silu(x))
    }
}

/// The VAE decoder: latents → image in [-1, 1].
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub mid_block: VaeMidBlock<B>,
    pub up_blocks: Vec<UpDecoderBlock<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Decoder<B> {
    fn load(w: &Weights<B>, c: &VaeConfig) -> Result<Self> {
        let rch: Vec<usize> = c.block_out_channels.iter().rev().copied().collect();
        let n = rch.len();
        let mut up_blocks = Vec::with_capacity(n);
        let mut output = rch[0];
        for (i, &channels) in rch.iter().enumerate() {
            let prev = output;
            output = channels;
            let wb = w.pp("up_blocks").pp(i);
            let resnets = (0..=c.layers_per_block)
                .map(|j| {
                    let cin = if j == 0 { prev } else { output };
                    ResnetBlock2D::load(&wb.pp("resnets").pp(j), c.resnet(cin, output))
                })
                .collect::<Result<_>>()?;
            let upsamplers = if i + 1 < n {
                vec![Upsample2D::load(&wb.pp("upsamplers").pp(0), output)?]
            } else {
                Vec::new()
            };
            up_blocks.push(UpDecoderBlock {
                resnets,
                upsamplers,
            });
        }
        let first = c.block_out_channels[0];
        Ok(Self {
            conv_in: Conv2d::load(&w.pp("conv_in"), c.latent_channels, rch[0], 3, 1, 1)?,
            mid_block: VaeMidBlock::load(&w.pp("mid_block"), c, rch[0])?,
            up_blocks,
            conv_norm_out: GroupNorm::load(
                &w.pp("conv_norm_out"),
                c.norm_num_groups,
                first,
                VAE_EPS,
            )?,
            conv_out: Conv2d::load(&w.pp("conv_out"), first, c.out_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.mid_block.forward(self.conv_in.forward(z));
        for block in &self.up_blocks {
            for resnet in &block.resnets {
                x = resnet.forward(x, None);
            }
            for up in &block.upsamplers {
                x = up.forward(x, None);
            }
        }
        self.conv_out.forward(self.conv_norm_out.forward_silu(x))
    }
}

/// The diagonal Gaussian the encoder predicts for each latent.
pub struct LatentDistribution<B: Backend> {
    pub mean: Tensor<B, 4>,
    pub std: Tensor<B, 4>,
}

/// `AutoencoderKL`.
#[derive(Module, Debug)]
pub struct AutoencoderKL<B: Backend> {
    pub encoder: Encoder<B>,
    pub decoder: Decoder<B>,
    pub quant_conv: Option<Conv2d<B>>,
    pub post_quant_conv: Option<Conv2d<B>>,
    latent_channels: usize,
}

impl<B: Backend> AutoencoderKL<B> {
    pub fn load(w: &Weights<B>, c: &VaeConfig) -> Result<Self> {
        let l = c.latent_channels;
        Ok(Self {
            encoder: Encoder::load(&w.pp("encoder"), c)?,
            decoder: Decoder::load(&w.pp("decoder"), c)?,
            quant_conv: if c.use_quant_conv {
                Some(Conv2d::load(&w.pp("quant_conv"), 2 * l, 2 * l, 1, 1, 0)?)
            } else {
                None
            },
            post_quant_conv: if c.use_post_quant_conv {
                Some(Conv2d::load(&w.pp("post_quant_conv"), l, l, 1, 1, 0)?)
            } else {
                None
            },
            latent_channels: l,
        })
    }

    /// `vae.encode(x).latent_dist` for an image in [-1, 1], NCHW.
    pub fn encode(&self, x: Tensor<B, 4>) -> LatentDistribution<B> {
        let mut moments = self.encoder.forward(x);
        if let Some(conv) = &self.quant_conv {
            moments = conv.forward(moments);
        }
        let mut halves = moments.chunk(2, 1);
        let logvar = halves
            .pop()
            .expect("chunk(2) gives two halves")
            .clamp(-30.0, 20.0);
        let mean = halves.pop().expect("chunk(2) gives two halves");
        LatentDistribution {
            mean,
            std: logvar.mul_scalar(0.5).exp(),
        }
    }

    /// `vae.decode(z).sample`: unscaled latents → image in about [-1, 1].
    pub fn decode(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(z),
            None => z,
        };
        self.decoder.forward(z)
    }

    pub fn latent_channels(&self) -> usize {
        self.latent_channels
    }
}
