//! Attention on `[batch, tokens, heads × dim]` projections, one task per
//! (batch, head, block of query rows) on rayon's pool: the block's scores
//! against every key (`rows × keys` floats: 1 MiB at 4096 keys) by one gemm,
//! an exact softmax over each row, and the product with V by another gemm
//! written straight into the output's head columns.

use burn_flex::FlexTensor;
use gemm::{Parallelism, gemm};
use rayon::prelude::*;

use super::{contiguous, dims3, math};

/// Query rows per task: small enough that a 4096-key score block stays in
/// L2, many enough that the gemm micro-kernels run full.
const BLOCK_ROWS: usize = 64;

thread_local! {
    /// Each worker thread's score block, kept between tasks and calls: a
    /// fresh megabyte per task cost page faults (the kernel zeroing pages).
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The output pointer, shared by tasks that each write their own rows and
/// head columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A method, not `.0`: closures capture the whole wrapper, not its raw field.
    fn at(self, offset: usize) -> *mut f32 {
        unsafe { self.0.add(offset) }
    }
}

pub fn attention(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor, heads: usize) -> Vec<f32> {
    let [batch, n_q, inner] = dims3(q);
    let n_k = dims3(k)[1];
    let dim = inner / heads;
    let (q, k, v) = (contiguous(q), contiguous(k), contiguous(v));
    let scale = 1.0 / (dim as f32).sqrt();
    let mut out = vec![0f32; batch * n_q * inner];
    let out_ptr = OutPtr(out.as_mut_ptr());
    let blocks = n_q.div_ceil(BLOCK_ROWS);
    (0..batch * heads * blocks)
        .into_par_iter()
        .for_each(|item| {
            SCORES.with_borrow_mut(|scores| {
                let (bh, block) = (item / blocks, item % blocks);
                let (b, h) = (bh / heads, bh % heads);
                let first = block * BLOCK_ROWS;
                let rows = BLOCK_ROWS.min(n_q - first);
                scores.resize(rows * n_k, 0.0);
                let q_off = b * n_q * inner + first * inner + h * dim;
                let kv_off = b * n_k * inner + h * dim;
                let inner_s = inner as isize;
                // SAFETY: every offset stays inside its tensor (shapes checked by
                // the caller's dims); each task writes only its own rows of its
                // own head's columns of `out`.
                unsafe {
                    // scores = scale · Q_block Kᵀ
                    gemm(
                        rows,
                        n_k,
                        dim,
                        scores.as_mut_ptr(),
                        1,
                        n_k as isize,
                        false,
                        q.as_ptr().add(q_off),
                        1,
                        inner_s,
                        k.as_ptr().add(kv_off),
                        inner_s,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
                let mut inv_sums = [0f32; BLOCK_ROWS];
                softmax_numerators(scores, n_k, &mut inv_sums);
                let dst = out_ptr.at(q_off);
                unsafe {
                    // out_block = exp(scores - max) V, then each row / its sum
                    gemm(
                        rows,
                        dim,
                        n_k,
                        dst,
                        1,
                        inner_s,
                        false,
                        scores.as_ptr(),
                        1,
                        n_k as isize,
                        v.as_ptr().add(kv_off),
                        1,
                        inner_s,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                    for (r, inv) in inv_sums.iter().take(rows).enumerate() {
                        let row = std::slice::from_raw_parts_mut(dst.add(r * inner), dim);
                        row.iter_mut().for_each(|x| *x *= inv);
                    }
                }
            })
        });
    out
}

math::simd_targets! {
/// Replaces each row of scores by `exp(score - max)` and gives `1 / sum`.
fn softmax_numerators(scores: &mut [f32], n_k: usize, inv_sums: &mut [f32]) {
    for (row, inv) in scores.chunks_mut(n_k).zip(inv_sums.iter_mut()) {
        let max = math::max(row);
        row.iter_mut().for_each(|x| *x = math::exp(*x - max));
        *inv = 1.0 / math::sum(row, |x| x);
    }
}
}
