//! Inference kernels for the CPU backend (burn's flex), where flex's own ops
//! leave time on the table (docs/PERFORMANCE.md, "Where the CPU time goes"):
//!
//! - [`attention`]: flash-style attention parallel over batch, heads and
//!   blocks of query rows, reading the heads straight out of the
//!   `[batch, tokens, heads × dim]` projections (no head split or merge copies);
//!   flex's runs one (batch, head) after another on one core with a scalar `exp`.
//! - [`group_norm`]: GroupNorm (+ SiLU) in one pass per group instead of a
//!   dozen broadcast ops.
//! - [`geglu`]: GEGLU's `hidden * gelu(gate)` over the projection's two halves,
//!   which flex otherwise walks as two strided views.
//! - [`conv2d`]: `W · im2col(x)` in NCHW with the weight as loaded, where
//!   flex re-lays out the weight and the input at every call, on one core.
//! - [`transpose`]: `[batch, rows, cols] → [batch, cols, rows]` (NCHW ↔ tokens)
//!   in cache tiles on every core; flex copies rank-3 permutations one scalar
//!   at a time.
//!
//! Each entry takes burn tensors of any backend and gives them back
//! untouched (`Err`) unless the backend is flex on f32 without autodiff:
//! training (`Autodiff<B>`) and other backends keep burn's generic ops, so
//! gradients and the CUDA path are unaffected. The model code asks here
//! first and falls back to the generic formula, which the tests compare with.

mod attention;
mod conv;
mod layout;
mod math;
mod norm;

#[cfg(feature = "flex")]
use std::any::{Any, TypeId};

use burn::prelude::*;
#[cfg(feature = "flex")]
use burn::tensor::TensorPrimitive;
#[cfg(feature = "flex")]
use burn_flex::FlexTensor;

/// The contiguous f32 values of a flex tensor, or `Err(t)` on any other
/// backend (or dtype).
#[cfg(feature = "flex")]
fn flex<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<FlexTensor, Tensor<B, D>> {
    if TypeId::of::<B>() != TypeId::of::<crate::CpuBackend>()
        || t.dtype() != burn::tensor::DType::F32
    {
        return Err(t);
    }
    let primitive: Box<dyn Any> = Box::new(t.into_primitive().tensor());
    match primitive.downcast::<FlexTensor>() {
        Ok(f) => Ok(*f),
        Err(_) => unreachable!("B is flex, whose float primitive is FlexTensor"),
    }
}

/// A flex tensor back as `Tensor<B, D>` (`B` is flex: only called after
/// [`flex`] succeeded).
#[cfg(feature = "flex")]
fn unwrapped<B: Backend, const D: usize>(tensor: FlexTensor) -> Tensor<B, D> {
    let tensor: Box<dyn Any> = Box::new(tensor);
    match tensor.downcast::<<B as burn::tensor::backend::BackendTypes>::FloatTensorPrimitive>() {
        Ok(p) => Tensor::from_primitive(TensorPrimitive::Float(*p)),
        Err(_) => unreachable!("B is flex"),
    }
}

/// A kernel's output values as `Tensor<B, D>`.
#[cfg(feature = "flex")]
fn wrap<B: Backend, const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
    unwrapped(FlexTensor::from_data(TensorData::new(values, shape)))
}

/// Softmax(Q Kᵀ / √dim) V per head on `[batch, tokens, heads × dim]`
/// inputs, giving `[batch, q tokens, heads × dim]`.
pub fn attention<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    heads: usize,
) -> Result<Tensor<B, 3>, [Tensor<B, 3>; 3]> {
    #[cfg(feature = "flex")]
    {
        let (q, k, v) = match (flex(q), flex(k), flex(v)) {
            (Ok(q), Ok(k), Ok(v)) => (q, k, v),
            (q, k, v) => return Err([unflex(q), unflex(k), unflex(v)]),
        };
        let [b, n_q, inner] = dims3(&q);
        let out = attention::attention(&q, &k, &v, heads);
        Ok(wrap(out, [b, n_q, inner]))
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = heads;
        Err([q, k, v])
    }
}

/// GroupNorm over `[N, C, H, W]` with per-channel affine, then SiLU when
/// `silu` is set.
pub fn group_norm<B: Backend>(
    x: Tensor<B, 4>,
    groups: usize,
    gamma: &Tensor<B, 1>,
    beta: &Tensor<B, 1>,
    eps: f64,
    silu: bool,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    #[cfg(feature = "flex")]
    {
        let x = flex(x)?;
        let shape: [usize; 4] = x.layout().shape().dims();
        let (Ok(gamma), Ok(beta)) = (flex(gamma.clone()), flex(beta.clone())) else {
            unreachable!("the weights live on the input's backend")
        };
        let out = norm::group_norm(&x, groups, &gamma, &beta, eps, silu);
        Ok(wrap(out, shape))
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (groups, gamma, beta, eps, silu);
        Err(x)
    }
}

/// GEGLU: the last dimension holds `[hidden | gate]`; gives
/// `hidden * gelu(gate)` (exact, erf-based GELU).
pub fn geglu<B: Backend>(x: Tensor<B, 3>) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    #[cfg(feature = "flex")]
    {
        let x = flex(x)?;
        let [b, n, two_inner] = dims3(&x);
        let out = norm::geglu(&x);
        Ok(wrap(out, [b, n, two_inner / 2]))
    }
    #[cfg(not(feature = "flex"))]
    Err(x)
}

pub use conv::Geometry as ConvGeometry;

/// A 2-D convolution (one group, no dilation) of `[N, C, H, W]` by
/// `[out, C, kh, kw]`, with the window placed by `geometry`.
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    bias: Option<&Tensor<B, 1>>,
    geometry: ConvGeometry,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    #[cfg(feature = "flex")]
    {
        let x = flex(x)?;
        let (Ok(w), Ok(b)) = (flex(weight.clone()), bias.cloned().map(flex).transpose()) else {
            unreachable!("the weights live on the input's backend")
        };
        let n = x.layout().shape()[0];
        let c_out = w.layout().shape()[0];
        let out = conv::conv2d(&x, &w, b.as_ref(), geometry);
        Ok(wrap(out, [n, c_out, geometry.out_h, geometry.out_w]))
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (weight, bias, geometry);
        Err(x)
    }
}

/// `[batch, rows, cols] → [batch, cols, rows]`, contiguous.
pub fn transpose<B: Backend>(x: Tensor<B, 3>) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    #[cfg(feature = "flex")]
    {
        let x = flex(x)?;
        let [b, r, c] = dims3(&x);
        let out = layout::transpose(&x);
        Ok(wrap(out, [b, c, r]))
    }
    #[cfg(not(feature = "flex"))]
    Err(x)
}

#[cfg(feature = "flex")]
fn unflex<B: Backend>(t: Result<FlexTensor, Tensor<B, 3>>) -> Tensor<B, 3> {
    t.map_or_else(|t| t, unwrapped)
}

#[cfg(feature = "flex")]
fn dims3(t: &FlexTensor) -> [usize; 3] {
    t.layout().shape().dims()
}

/// A flex tensor's values in row-major order: borrowed when it is already
/// contiguous, else copied by flex.
#[cfg(feature = "flex")]
fn contiguous(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        // One copy: flex's contiguous buffer is handed over, not cloned.
        None => std::borrow::Cow::Owned(
            t.to_contiguous()
                .into_data()
                .into_vec::<f32>()
                .unwrap_or_default(),
        ),
    }
}

#[cfg(test)]
mod tests;
