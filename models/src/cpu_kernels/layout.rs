//! Batched transposes in cache tiles, parallel over the output's rows.

use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{contiguous, dims3};

const TILE: usize = 32;

/// `[batch, rows, cols] → [batch, cols, rows]`.
pub fn transpose(x: &FlexTensor) -> Vec<f32> {
    let [_, rows, cols] = dims3(x);
    let x = contiguous(x);
    let mut out = vec![0f32; x.len()];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(rows * cols)
        .zip(x.par_chunks(rows * cols))
        .for_each(|(out, x)| {
            // Each task: TILE output rows (= input columns), walked in
            // TILE × TILE blocks so both sides stay in cache.
            out.par_chunks_mut(TILE * rows)
                .enumerate()
                .for_each(|(t, out)| {
                    let first_col = t * TILE;
                    let n_cols = out.len() / rows;
                    for r0 in (0..rows).step_by(TILE) {
                        let r1 = (r0 + TILE).min(rows);
                        for c in 0..n_cols {
                            let dst = &mut out[c * rows + r0..c * rows + r1];
                            for (r, d) in (r0..r1).zip(dst) {
                                *d = x[r * cols + first_col + c];
                            }
                        }
                    }
                });
        });
    out
}
