//! Each kernel against the generic burn formula it replaces, on flex.

use burn::prelude::*;
use burn::tensor::{Distribution, activation};

use super::*;
use crate::CpuBackend as B;

fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<B, D> {
    <B as burn::tensor::backend::Backend>::seed(&Default::default(), seed);
    Tensor::random(shape, Distribution::Normal(0.0, 1.5), &Default::default())
}

fn max_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    a.sub(b).abs().max().into_scalar()
}

fn reference_attention(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    heads: usize,
) -> Tensor<B, 3> {
    let [b, n_q, inner] = q.dims();
    let n_k = k.dims()[1];
    let d = inner / heads;
    let split = |t: Tensor<B, 3>, n| t.reshape([b, n, heads, d]).swap_dims(1, 2);
    let scores = split(q, n_q)
        .matmul(split(k, n_k).swap_dims(2, 3))
        .div_scalar((d as f32).sqrt());
    activation::softmax(scores, 3)
        .matmul(split(v, n_k))
        .swap_dims(1, 2)
        .reshape([b, n_q, inner])
}

#[test]
fn attention_equals_softmax_formula() {
    // Self- and cross-attention shapes, a query count that is no multiple of
    // the block, one head of width 512 (the VAE's), and strided inputs.
    for (i, &(b, n_q, n_k, heads, d)) in [
        (2, 130, 130, 8, 5),
        (2, 100, 77, 4, 8),
        (1, 70, 70, 1, 512),
        (3, 1, 9, 2, 3),
    ]
    .iter()
    .enumerate()
    {
        let seed = 10 * i as u64;
        let q = random([b, n_q, heads * d], seed);
        let k = random([b, n_k, heads * d], seed + 1);
        // V made non-contiguous: the kernel must read its layout.
        let v = random([b, heads * d, n_k], seed + 2).swap_dims(1, 2);
        let expected = reference_attention(q.clone(), k.clone(), v.clone(), heads);
        let Ok(ours) = attention(q, k, v, heads) else {
            panic!("flex f32 must take the kernel")
        };
        let diff = max_diff(ours, expected);
        assert!(diff < 2e-5, "case {i}: max diff {diff}");
    }
}

#[test]
fn group_norm_equals_generic_formula() {
    for (i, &(shape, groups)) in [([2, 64, 9, 7], 32), ([1, 6, 5, 5], 3), ([1, 32, 1, 1], 32)]
        .iter()
        .enumerate()
    {
        let x = random(shape, 100 + i as u64).add_scalar(3.0);
        let c = shape[1];
        let gamma = random([c], 200 + i as u64);
        let beta = random([c], 300 + i as u64);
        let grouped = x
            .clone()
            .reshape([shape[0], groups, c / groups * shape[2] * shape[3]]);
        let (var, mean) = grouped.clone().var_mean_bias(2);
        let expected = grouped
            .sub(mean)
            .div(var.add_scalar(1e-5).sqrt())
            .reshape(shape)
            .mul(gamma.clone().reshape([1, c, 1, 1]))
            .add(beta.clone().reshape([1, c, 1, 1]));
        for silu in [false, true] {
            let Ok(ours) = group_norm(x.clone(), groups, &gamma, &beta, 1e-5, silu) else {
                panic!("flex f32 must take the kernel")
            };
            let expected = if silu {
                activation::silu(expected.clone())
            } else {
                expected.clone()
            };
            let diff = max_diff(ours, expected);
            assert!(diff < 1e-5, "case {i} silu {silu}: max diff {diff}");
        }
    }
}

#[test]
fn geglu_and_transpose_equal_generic_ops() {
    let x = random([2, 37, 2 * 24], 7);
    let Ok(ours) = geglu(x.clone()) else {
        panic!("flex f32 must take the kernel")
    };
    let diff = max_diff(ours, crate::nn::geglu_generic(x));
    assert!(diff < 2e-6, "geglu max diff {diff}");

    for shape in [[2, 77, 45], [1, 1, 5], [3, 64, 64], [1, 33, 1]] {
        let x = random(shape, 8);
        let Ok(ours) = transpose(x.clone()) else {
            panic!("flex f32 must take the kernel")
        };
        assert_eq!(max_diff(ours, x.swap_dims(1, 2)), 0.0, "{shape:?}");
    }
}

#[test]
fn autodiff_keeps_the_generic_path() {
    type A = burn::backend::Autodiff<B>;
    let x = Tensor::<A, 3>::ones([1, 2, 4], &Default::default());
    assert!(geglu(x.clone()).is_err());
    assert!(transpose(x).is_err());
}

#[test]
fn conv2d_equals_burns_convolution() {
    use crate::nn::Conv2d;
    // (in, out, kernel, stride, padding, end-only padding, input h × w):
    // the UNet's 3×3 and 1×1, its stride-2 downsampler, the VAE's end-padded
    // one, and a band split (a tall image with many channels).
    for (i, &(c_in, c_out, k, stride, pad, end_only, h, w)) in [
        (3, 5, 3, 1, 1, false, 9, 7),
        (4, 6, 1, 1, 0, false, 5, 6),
        (6, 4, 3, 2, 1, false, 9, 8),
        (5, 3, 3, 2, 0, true, 8, 10),
        (64, 8, 3, 1, 1, false, 300, 33),
        (2, 2, 3, 1, 1, false, 1, 1),
    ]
    .iter()
    .enumerate()
    {
        let seed = 500 + 10 * i as u64;
        let x = random([2, c_in, h, w], seed);
        let conv = Conv2d {
            weight: burn::module::Param::from_tensor(random([c_out, c_in, k, k], seed + 1)),
            bias: Some(burn::module::Param::from_tensor(random([c_out], seed + 2))),
            stride,
            padding: pad,
            pad_end_only: end_only,
        };
        let ours = conv.forward(x.clone());
        let expected = conv.forward_generic(x);
        // Long dot products (576 terms in case 4) summed in another order:
        // compare against the outputs' scale.
        let scale = expected.clone().abs().max().into_scalar();
        let diff = max_diff(ours, expected);
        assert!(
            diff < 2e-6 * scale.max(1.0),
            "case {i}: max diff {diff} at scale {scale}"
        );
    }
}
