//! The few layer types the models are made of, built straight from checkpoint
//! tensors. Field names equal the last key segment (`weight`, `bias`), so a
//! module's path in Rust is its key in the checkpoint.
//!
//! They are burn modules: under `Autodiff<B>` every weight is a trainable
//! parameter, which is what feedback fine-tuning will need.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation;
use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, PaddedConvOptions};

use crate::error::Result;
use crate::lora::LoraAdapter;
use crate::weights::Weights;

/// `torch.nn.Linear`; the weight is kept as `[in, out]`. A LoRA adapter,
/// when the loader attached one ([`crate::lora`]), adds its low-rank update.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    pub lora: Option<LoraAdapter<B>>,
}

impl<B: Backend> Linear<B> {
    pub fn load(w: &Weights<B>, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        let weight = Param::from_tensor(w.linear_weight("weight", d_in, d_out)?);
        let bias = if bias {
            Some(Param::from_tensor(w.tensor("bias", [d_out])?))
        } else {
            None
        };
        let lora = match w.lora_here() {
            Some(spec) => Some(LoraAdapter::load_or_fresh(w, spec, d_in, d_out)?),
            None => None,
        };
        Ok(Self { weight, bias, lora })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let adapted = self.lora.as_ref().map(|lora| lora.forward(x.clone()));
        let y =
            burn::tensor::module::linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()));
        match adapted {
            Some(delta) => y.add(delta),
            None => y,
        }
    }
}

/// `torch.nn.Conv2d` with square kernel, symmetric or (0,1,0,1) padding.
#[derive(Module, Debug)]
pub struct Conv2d<B: Backend> {
    pub weight: Param<Tensor<B, 4>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    pub(crate) stride: usize,
    pub(crate) padding: usize,
    /// diffusers' VAE downsampler pads only right and bottom by one.
    pub(crate) pad_end_only: bool,
}

impl<B: Backend> Conv2d<B> {
    pub fn load(
        w: &Weights<B>,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        Ok(Self {
            weight: Param::from_tensor(w.tensor("weight", [c_out, c_in, kernel, kernel])?),
            bias: Some(Param::from_tensor(w.tensor("bias", [c_out])?)),
            stride,
            padding,
            pad_end_only: false,
        })
    }

    /// A stride-2 convolution padded by one row/column at the end only, as
    /// diffusers' `Downsample2D(padding=0)` does.
    pub fn load_pad_end(w: &Weights<B>, c_in: usize, c_out: usize, kernel: usize) -> Result<Self> {
        let mut conv = Self::load(w, c_in, c_out, kernel, 2, 0)?;
        conv.pad_end_only = true;
        Ok(conv)
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let [_, _, kh, kw] = self.weight.dims();
        // diffusers' end-only padding adds one row and column after the image.
        let (before, total) = if self.pad_end_only {
            (0, 1)
        } else {
            (self.padding, 2 * self.padding)
        };
        let geometry = crate::cpu_kernels::ConvGeometry {
            stride: self.stride,
            pad_top: before,
            pad_left: before,
            out_h: (h + total).saturating_sub(kh) / self.stride + 1,
            out_w: (w + total).saturating_sub(kw) / self.stride + 1,
        };
        let weight = self.weight.val();
        let bias = self.bias.as_ref().map(|b| b.val());
        match crate::cpu_kernels::conv2d(x, &weight, bias.as_ref(), geometry) {
            Ok(y) => y,
            Err(x) => self.forward_generic(x),
        }
    }

    /// burn's convolution, on every backend (and under autodiff).
    pub fn forward_generic(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let stride = [self.stride, self.stride];
        let options: PaddedConvOptions<2> = if self.pad_end_only {
            PaddedConvOptions::asymmetric(stride, [0, 0], [1, 1], [1, 1], 1)
        } else {
            ConvOptions::new(stride, [self.padding, self.padding], [1, 1], 1).into()
        };
        conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            options,
        )
    }
}

/// `torch.nn.GroupNorm` over `[N, C, H, W]`.
#[derive(Module, Debug)]
pub struct GroupNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    groups: usize,
    eps: f64,
}

impl<B: Backend> GroupNorm<B> {
    pub fn load(w: &Weights<B>, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: Param::from_tensor(w.tensor("weight", [channels])?),
            bias: Param::from_tensor(w.tensor("bias", [channels])?),
            groups,
            eps,
        })
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self.fused(x, false) {
            Ok(y) => y,
            Err(x) => self.forward_generic(x),
        }
    }

    /// `silu(self.forward(x))`, in one pass on the CPU backend.
    pub fn forward_silu(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self.fused(x, true) {
            Ok(y) => y,
            Err(x) => silu(self.forward_generic(x)),
        }
    }

    fn fused(
        &self,
        x: Tensor<B, 4>,
        silu: bool,
    ) -> std::result::Result<Tensor<B, 4>, Tensor<B, 4>> {
        let (gamma, beta) = (self.weight.val(), self.bias.val());
        crate::cpu_kernels::group_norm(x, self.groups, &gamma, &beta, self.eps, silu)
    }

    /// The op-by-op form every backend runs (and autodiff differentiates).
    pub fn forward_generic(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let grouped = x.reshape([n, self.groups, (c / self.groups) * h * w]);
        let (var, mean) = grouped.clone().var_mean_bias(2);
        let normed = grouped
            .sub(mean)
            .div(var.add_scalar(self.eps).sqrt())
            .reshape([n, c, h, w]);
        let gamma = self.weight.val().reshape([1, c, 1, 1]);
        let beta = self.bias.val().reshape([1, c, 1, 1]);
        normed.mul(gamma).add(beta)
    }
}

/// `torch.nn.LayerNorm` over the last dimension.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    pub fn load(w: &Weights<B>, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: Param::from_tensor(w.tensor("weight", [dim])?),
            bias: Param::from_tensor(w.tensor("bias", [dim])?),
            eps,
        })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let (var, mean) = x.clone().var_mean_bias(D - 1);
        let normed = x.sub(mean).div(var.add_scalar(self.eps).sqrt());
        normed
            .mul(self.weight.val().unsqueeze())
            .add(self.bias.val().unsqueeze())
    }
}

/// `torch.nn.Embedding`.
#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> Embedding<B> {
    pub fn load(w: &Weights<B>, count: usize, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: Param::from_tensor(w.tensor("weight", [count, dim])?),
        })
    }

    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        burn::tensor::module::embedding(self.weight.val(), ids)
    }
}

pub fn silu<const D: usize, B: Backend>(x: Tensor<B, D>) -> Tensor<B, D> {
    activation::silu(x)
}

/// Exact (erf) GELU, as `torch.nn.functional.gelu` without approximation.
pub fn gelu<const D: usize, B: Backend>(x: Tensor<B, D>) -> Tensor<B, D> {
    activation::gelu(x)
}

/// GEGLU on a projection whose last dimension is `[hidden | gate]`:
/// `hidden * gelu(gate)`.
pub fn geglu<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    match crate::cpu_kernels::geglu(x) {
        Ok(y) => y,
        Err(x) => geglu_generic(x),
    }
}

pub fn geglu_generic<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    let mut halves = x.chunk(2, 2);
    let gate = halves.pop().expect("chunk(2) gives two halves");
    let hidden = halves.pop().expect("chunk(2) gives two halves");
    hidden.mul(gelu(gate))
}

/// `[batch, channels, height, width]` → `[batch, height × width, channels]`.
pub fn image_to_tokens<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, c, h, w] = x.dims();
    match crate::cpu_kernels::transpose(x.reshape([b, c, h * w])) {
        Ok(tokens) => tokens,
        Err(x) => x.swap_dims(1, 2),
    }
}

/// The inverse of [`image_to_tokens`].
pub fn tokens_to_image<B: Backend>(t: Tensor<B, 3>, h: usize, w: usize) -> Tensor<B, 4> {
    let [b, _, c] = t.dims();
    match crate::cpu_kernels::transpose(t) {
        Ok(x) => x.reshape([b, c, h, w]),
        Err(t) => t.swap_dims(1, 2).reshape([b, c, h, w]),
    }
}

/// Multi-head scaled dot-product attention on `[batch, tokens, heads * dim_head]`.
pub fn multi_head_attention<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    heads: usize,
    causal: bool,
) -> Tensor<B, 3> {
    attention_with_padding(q, k, v, heads, causal, None)
}

/// [`multi_head_attention`] where `padding` (`[batch, keys]`, true for a
/// padding position) marks keys no query may attend to: BERT's attention
/// mask, so padded prompts read as their unpadded selves.
pub fn attention_with_padding<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    heads: usize,
    causal: bool,
    padding: Option<Tensor<B, 2, Bool>>,
) -> Tensor<B, 3> {
    // Inference on the CPU backend: our parallel kernel on the unsplit heads.
    let (q, k, v) = match (&padding, causal) {
        (None, false) => match crate::cpu_kernels::attention(q, k, v, heads) {
            Ok(out) => return out,
            Err([q, k, v]) => (q, k, v),
        },
        _ => (q, k, v),
    };
    let [b, n_q, inner] = q.dims();
    let n_k = k.dims()[1];
    let dim_head = inner / heads;
    let split = |t: Tensor<B, 3>, n: usize| t.reshape([b, n, heads, dim_head]).swap_dims(1, 2);
    let options = burn::tensor::ops::AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: causal,
    };
    let (q, k, v) = (split(q, n_q), split(k, n_k), split(v, n_k));
    // Training: the UNet's and VAE's attention without the score matrix kept
    // for backward (crate::training_attention); masks and causal text
    // attention (frozen, short) keep burn's op.
    let (q, k, v) = match (&padding, causal) {
        (None, false) => match crate::training_attention::on_autodiff(q, k, v) {
            Ok(out) => return out.swap_dims(1, 2).reshape([b, n_q, inner]),
            Err(inputs) => inputs,
        },
        _ => (q, k, v),
    };
    let mask = padding.map(|p| p.reshape([b, 1, 1, n_k]).expand([b, heads, n_q, n_k]));
    let out = burn::tensor::module::attention(q, k, v, mask, None, options);
    out.swap_dims(1, 2).reshape([b, n_q, inner])
}
