//! GroupNorm (+ SiLU) and GEGLU: one pass over the data per output, on
//! every core, where flex runs a chain of broadcast ops (GroupNorm: reshape,
//! mean, variance, subtract, divide, scale, shift, then SiLU's four).

use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{contiguous, dims3, math};

/// torch's GroupNorm: biased variance over each (sample, group), in f64
/// sums of f32 blocks; then the channel's affine and optionally SiLU.
pub fn group_norm(
    x: &FlexTensor,
    groups: usize,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    eps: f64,
    silu: bool,
) -> Vec<f32> {
    let [_, c, h, w]: [usize; 4] = x.layout().shape().dims();
    let (x, gamma, beta) = (contiguous(x), contiguous(gamma), contiguous(beta));
    let hw = h * w;
    let per_group = c / groups;
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(per_group * hw)
        .zip(x.par_chunks(per_group * hw))
        .enumerate()
        .for_each(|(i, (out, x))| {
            let first = (i % groups) * per_group;
            let channels = first..first + per_group;
            normalize_group(
                out,
                x,
                hw,
                &gamma[channels.clone()],
                &beta[channels],
                eps,
                silu,
            );
        });
    out
}

math::simd_targets! {
/// One (sample, group): `x` holds its channels' planes of `hw` values.
fn normalize_group(
    out: &mut [f32],
    x: &[f32],
    hw: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    silu: bool,
) {
    let len = x.len() as f64;
    let mean = math::sum_f64(x, |v| v) / len;
    let m = mean as f32;
    let var = math::sum_f64(x, |v| (v - m) * (v - m)) / len;
    let rstd = 1.0 / (var + eps).sqrt();
    for ((out, x), (&g, &shift)) in out.chunks_mut(hw).zip(x.chunks(hw)).zip(gamma.iter().zip(beta)) {
        // (v - mean) first, as torch does: folding the mean into the shift
        // cancels badly when the variance is tiny.
        let scale = (g as f64 * rstd) as f32;
        if silu {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = math::silu((v - m) * scale + shift);
            }
        } else {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = (v - m) * scale + shift;
            }
        }
    }
}
}

/// `hidden * gelu(gate)` where each row of the last dimension is `[hidden | gate]`.
pub fn geglu(x: &FlexTensor) -> Vec<f32> {
    let [_, _, two_inner] = dims3(x);
    let inner = two_inner / 2;
    let x = contiguous(x);
    let mut out = vec![0f32; x.len() / 2];
    // 16 rows a task: enough work to be worth a hand-off.
    out.par_chunks_mut(inner * 16)
        .zip(x.par_chunks(two_inner * 16))
        .for_each(|(out, x)| geglu_rows(out, x, inner));
    out
}

math::simd_targets! {
fn geglu_rows(out: &mut [f32], x: &[f32], inner: usize) {
    for (out, row) in out.chunks_mut(inner).zip(x.chunks(2 * inner)) {
        let (hidden, gate) = row.split_at(inner);
        for ((o, &h), &g) in out.iter_mut().zip(hidden).zip(gate) {
            *o = h * math::gelu(g);
        }
    }
}
}
