//! Attention at the shapes the UNet runs: the engine's CPU kernel
//! (`cpu_kernels::attention`, on the unsplit `[batch, tokens, heads × dim]`
//! projections, as the model calls it), burn's fused `attention` op (what
//! autodiff and other backends use) and the classic two-matmul form, sliced
//! over query rows (docs/PERFORMANCE.md).
//!
//! cargo bench -p byteedit-models --bench attention

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::softmax;
use burn::tensor::ops::AttentionModuleOptions;
use byteedit_models::CpuBackend as B;

/// softmax(q kᵀ / sqrt(d)) v with two matmuls per slice of at most 16 Mi scores.
fn sliced_attention(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, h, n_q, d] = q.dims();
    let n_k = k.dims()[2];
    let k_t = k.swap_dims(2, 3);
    let rows = ((16 << 20) / (b * h * n_k)).clamp(1, n_q);
    let slices = (0..n_q)
        .step_by(rows)
        .map(|start| {
            let q = q.clone().narrow(2, start, rows.min(n_q - start));
            softmax(q.matmul(k_t.clone()).mul_scalar((d as f64).powf(-0.5)), 3).matmul(v.clone())
        })
        .collect();
    Tensor::cat(slices, 2)
}

fn best_of<F: FnMut() -> Tensor<B, 4>>(reps: usize, mut f: F) -> f64 {
    let _ = f().into_data();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            let _ = f().into_data();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let device = Default::default();
    // [batch (guidance), heads, query tokens, key tokens, dim_head]
    let shapes = [
        ("SD-1.5 512px level 1 self", [2, 8, 4096, 4096, 40]),
        ("SD-1.5 512px level 1 cross", [2, 8, 4096, 77, 40]),
        ("SD-1.5 512px level 2 self", [2, 8, 1024, 1024, 80]),
        ("SD-1.5 256px level 1 self", [2, 8, 1024, 1024, 40]),
        ("tiny 512px level 1 self", [2, 8, 4096, 4096, 4]),
    ];
    println!("| shape | kernel s | burn fused s | sliced s | kernel / fused | max abs diff |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, [b, h, nq, nk, d]) in shapes {
        let q = Tensor::<B, 4>::random([b, h, nq, d], Distribution::Normal(0.0, 1.0), &device);
        let k = Tensor::<B, 4>::random([b, h, nk, d], Distribution::Normal(0.0, 1.0), &device);
        let v = Tensor::<B, 4>::random([b, h, nk, d], Distribution::Normal(0.0, 1.0), &device);
        let fused = || {
            burn::tensor::module::attention(
                q.clone(),
                k.clone(),
                v.clone(),
                None,
                None,
                AttentionModuleOptions {
                    scale: None,
                    softcap: None,
                    is_causal: false,
                },
            )
        };
        let sliced = || sliced_attention(q.clone(), k.clone(), v.clone());
        // The kernel reads heads out of `[batch, tokens, heads × dim]`.
        let merged = |t: &Tensor<B, 4>, n| t.clone().swap_dims(1, 2).reshape([b, n, h * d]);
        let (qm, km, vm) = (merged(&q, nq), merged(&k, nk), merged(&v, nk));
        let kernel = || {
            let Ok(out) =
                byteedit_models::cpu_kernels::attention(qm.clone(), km.clone(), vm.clone(), h)
            else {
                panic!("flex f32 takes the kernel")
            };
            out.reshape([b, nq, h, d]).swap_dims(1, 2)
        };
        let diff: f32 = (fused() - kernel()).abs().max().into_scalar();
        let (tk, tf, ts) = (best_of(2, kernel), best_of(2, fused), best_of(2, sliced));
        println!(
            "| {name} {:?} | {tk:.3} | {tf:.3} | {ts:.3} | {:.2}x | {diff:.1e} |",
            [b, h, nq, nk, d],
            tk / tf
        );
    }
}
