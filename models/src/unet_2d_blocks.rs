//! diffusers `models/unets/unet_2d_blocks.py`: the down, mid and up blocks of
//! the conditional UNet, with and without cross-attention.

use burn::prelude::*;

use crate::attention::{Transformer2DConfig, Transformer2DModel};
use crate::error::Result;
use crate::resnet::{Downsample2D, ResnetBlock2D, ResnetConfig, Upsample2D};
use crate::weights::Weights;

/// What every block of one UNet shares.
#[derive(Debug, Clone, Copy)]
pub struct BlockCommon {
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    pub cross_attention_dim: usize,
    pub use_linear_projection: bool,
}

impl BlockCommon {
    fn resnet(&self, cin: usize, cout: usize, scale: f64) -> ResnetConfig {
        ResnetConfig {
            in_channels: cin,
            out_channels: cout,
            temb_channels: Some(self.temb_channels),
            groups: self.groups,
            eps: self.eps,
            output_scale_factor: scale,
        }
    }

    fn transformer(&self, channels: usize, heads: usize, layers: usize) -> Transformer2DConfig {
        Transformer2DConfig {
            channels,
            heads,
            layers,
            context_dim: self.cross_attention_dim,
            groups: self.groups,
            use_linear_projection: self.use_linear_projection,
        }
    }
}

/// Cross-attention settings of one block; `None` for plain `DownBlock2D`/`UpBlock2D`.
#[derive(Debug, Clone, Copy)]
pub struct CrossAttn {
    pub heads: usize,
    pub transformer_layers: usize,
}

/// `DownBlock2D` (no attentions) or `CrossAttnDownBlock2D`.
#[derive(Module, Debug)]
pub struct DownBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<Transformer2DModel<B>>,
    pub downsamplers: Vec<Downsample2D<B>>,
}

impl<B: Backend> DownBlock<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &Weights<B>,
        common: &BlockCommon,
        cin: usize,
        cout: usize,
        layers: usize,
        cross: Option<CrossAttn>,
        add_downsample: bool,
        downsample_padding: usize,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for i in 0..layers {
            let c = if i == 0 { cin } else { cout };
            resnets.push(ResnetBlock2D::load(
                &w.pp("resnets").pp(i),
                common.resnet(c, cout, 1.0),
            )?);
            if let Some(x) = cross {
                attentions.push(Transformer2DModel::load(
                    &w.pp("attentions").pp(i),
                    common.transformer(cout, x.heads, x.transformer_layers),
                )?);
            }
        }
        let downsamplers = if add_downsample {
            vec![Downsample2D::load(
                &w.pp("downsamplers").pp(0),
                cout,
                downsample_padding,
            )?]
        } else {
            Vec::new()
        };
        Ok(Self {
            resnets,
            attentions,
            downsamplers,
        })
    }

    /// Returns the block output and every intermediate state the up path skips to.
    pub fn forward(
        &self,
        mut x: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
        skips: &mut Vec<Tensor<B, 4>>,
    ) -> Tensor<B, 4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(x, Some(temb));
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(x, context);
            }
            skips.push(x.clone());
        }
        for down in &self.downsamplers {
            x = down.forward(x);
            skips.push(x.clone());
        }
        x
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (attention, resnet) pairs.
#[derive(Module, Debug)]
pub struct MidBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<Transformer2DModel<B>>,
}

impl<B: Backend> MidBlock<B> {
    pub fn load(
        w: &Weights<B>,
        common: &BlockCommon,
        channels: usize,
        cross: CrossAttn,
        output_scale_factor: f64,
    ) -> Result<Self> {
        // diffusers' mid block has one attention (num_layers = 1).
        let resnet = |i: usize| {
            ResnetBlock2D::load(
                &w.pp("resnets").pp(i),
                common.resnet(channels, channels, output_scale_factor),
            )
        };
        Ok(Self {
            resnets: vec![resnet(0)?, resnet(1)?],
            attentions: vec![Transformer2DModel::load(
                &w.pp("attentions").pp(0),
                common.transformer(channels, cross.heads, cross.transformer_layers),
            )?],
        })
    }

    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
    ) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x, Some(temb));
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = attn.forward(x, context);
            x = resnet.forward(x, Some(temb));
        }
        x
    }
}

/// `UpBlock2D` (no attentions) or `CrossAttnUpBlock2D`.
#[derive(Module, Debug)]
pub struct UpBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<Transformer2DModel<B>>,
    pub upsamplers: Vec<Upsample2D<B>>,
}

/// Channel counts an up block is wired with (see diffusers' `get_up_block` call).
#[derive(Debug, Clone, Copy)]
pub struct UpChannels {
    /// Channels of the down block this block mirrors the input of.
    pub input: usize,
    pub output: usize,
    /// Channels coming from the previous up block (or the mid block).
    pub prev_output: usize,
}

impl<B: Backend> UpBlock<B> {
    pub fn load(
        w: &Weights<B>,
        common: &BlockCommon,
        ch: UpChannels,
        layers: usize,
        cross: Option<CrossAttn>,
        add_upsample: bool,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for i in 0..layers {
            let skip = if i == layers - 1 { ch.input } else { ch.output };
            let cin = if i == 0 { ch.prev_output } else { ch.output };
            resnets.push(ResnetBlock2D::load(
                &w.pp("resnets").pp(i),
                common.resnet(cin + skip, ch.output, 1.0),
            )?);
            if let Some(x) = cross {
                attentions.push(Transformer2DModel::load(
                    &w.pp("attentions").pp(i),
                    common.transformer(ch.output, x.heads, x.transformer_layers),
                )?);
            }
        }
        let upsamplers = if add_upsample {
            vec![Upsample2D::load(&w.pp("upsamplers").pp(0), ch.output)?]
        } else {
            Vec::new()
        };
        Ok(Self {
            resnets,
            attentions,
            upsamplers,
        })
    }

    /// Consumes this block's skip connections from the end of `skips`;
    /// `upsample_size` is the spatial size of the next block's skips.
    pub fn forward(
        &self,
        mut x: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
        skips: &mut Vec<Tensor<B, 4>>,
        upsample_size: Option<[usize; 2]>,
    ) -> Tensor<B, 4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            if let Some(skip) = skips.pop() {
                x = Tensor::cat(vec![x, skip], 1);
            }
            x = resnet.forward(x, Some(temb));
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(x, context);
            }
        }
        for up in &self.upsamplers {
            x = up.forward(x, upsample_size);
        }
        x
    }
}
