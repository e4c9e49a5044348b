//! diffusers `models/resnet.py` and `models/downsampling.py` / `upsampling.py`:
//! the residual block and the 2x resamplers shared by the UNet and the VAE.

use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use crate::error::Result;
use crate::nn::{Conv2d, GroupNorm, Linear, silu};
use crate::weights::Weights;

/// Shape of a [`ResnetBlock2D`]; `temb_channels` is `None` in the VAE.
#[derive(Debug, Clone, Copy)]
pub struct ResnetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub temb_channels: Option<usize>,
    pub groups: usize,
    pub eps: f64,
    pub output_scale_factor: f64,
}

/// `ResnetBlock2D`: two GroupNorm-SiLU-conv stages, the time embedding added in
/// between, and a 1x1 shortcut when the channel count changes.
#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: Backend> {
    pub norm1: GroupNorm<B>,
    pub conv1: Conv2d<B>,
    pub time_emb_proj: Option<Linear<B>>,
    pub norm2: GroupNorm<B>,
    pub conv2: Conv2d<B>,
    pub conv_shortcut: Option<Conv2d<B>>,
    output_scale_factor: f64,
}

impl<B: Backend> ResnetBlock2D<B> {
    pub fn load(w: &Weights<B>, c: ResnetConfig) -> Result<Self> {
        let (cin, cout) = (c.in_channels, c.out_channels);
        let time_emb_proj = match c.temb_channels {
            Some(t) => Some(Linear::load(&w.pp("time_emb_proj"), t, cout, true)?),
            None => None,
        };
        let conv_shortcut = if cin != cout {
            Some(Conv2d::load(&w.pp("conv_shortcut"), cin, cout, 1, 1, 0)?)
        } else {
            None
        };
        Ok(Self {
            norm1: GroupNorm::load(&w.pp("norm1"), c.groups, cin, c.eps)?,
            conv1: Conv2d::load(&w.pp("conv1"), cin, cout, 3, 1, 1)?,
            time_emb_proj,
            norm2: GroupNorm::load(&w.pp("norm2"), c.groups, cout, c.eps)?,
            conv2: Conv2d::load(&w.pp("conv2"), cout, cout, 3, 1, 1)?,
            conv_shortcut,
            output_scale_factor: c.output_scale_factor,
        })
    }

    pub fn forward(&self, x: Tensor<B, 4>, temb: Option<&Tensor<B, 2>>) -> Tensor<B, 4> {
        let mut h = self.conv1.forward(self.norm1.forward_silu(x.clone()));
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let [b, c] = [temb.dims()[0], h.dims()[1]];
            h = h.add(proj.forward(silu(temb.clone())).reshape([b, c, 1, 1]));
        }
        h = self.conv2.forward(self.norm2.forward_silu(h));
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        let out = shortcut.add(h);
        if self.output_scale_factor == 1.0 {
            out
        } else {
            out.div_scalar(self.output_scale_factor)
        }
    }
}

/// `Downsample2D` with a convolution: stride 2, padded 1 all round (UNet) or
/// only at the end (VAE, `padding=0`).
#[derive(Module, Debug)]
pub struct Downsample2D<B: Backend> {
    pub conv: Conv2d<B>,
}

impl<B: Backend> Downsample2D<B> {
    pub fn load(w: &Weights<B>, channels: usize, padding: usize) -> Result<Self> {
        let w = w.pp("conv");
        let conv = if padding == 0 {
            Conv2d::load_pad_end(&w, channels, channels, 3)?
        } else {
            Conv2d::load(&w, channels, channels, 3, 2, padding)?
        };
        Ok(Self { conv })
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.conv.forward(x)
    }
}

/// `Upsample2D` with a convolution: nearest-neighbour resize, then a 3x3 conv.
#[derive(Module, Debug)]
pub struct Upsample2D<B: Backend> {
    pub conv: Conv2d<B>,
}

impl<B: Backend> Upsample2D<B> {
    pub fn load(w: &Weights<B>, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(&w.pp("conv"), channels, channels, 3, 1, 1)?,
        })
    }

    /// `size` is the target `[h, w]`: twice the input unless the skip connection
    /// it meets is odd-sized (diffusers' `upsample_size`).
    pub fn forward(&self, x: Tensor<B, 4>, size: Option<[usize; 2]>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let size = size.unwrap_or([h * 2, w * 2]);
        let up = interpolate(x, size, InterpolateOptions::new(InterpolateMode::Nearest));
        self.conv.forward(up)
    }
}
