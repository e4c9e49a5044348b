//! 2-D convolution for inference, NCHW in and out, as `W · im2col(x)`: the
//! checkpoint's `[out, in, kh, kw]` weight is already the row-major
//! `[out, in·kh·kw]` left operand, so nothing is re-laid out per call, and
//! the im2col columns are built in the order the output is written, a band
//! of output rows at a time (bounded memory at any image size). flex instead
//! transposes the weight and converts the input to NHWC on one core at every
//! call, and scatters each tile's result back to NCHW.

use burn_flex::FlexTensor;
use gemm::{Parallelism, gemm};
use rayon::prelude::*;

use super::contiguous;

/// The most im2col values built at once (16 MiB of f32).
const BAND_VALUES: usize = 1 << 22;

/// Where the kernel window starts and how it moves: `stride`, and the
/// padding before the first row and column (the padding after follows from
/// the output size).
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub out_h: usize,
    pub out_w: usize,
}

pub fn conv2d(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
    g: Geometry,
) -> Vec<f32> {
    let [batch, c_in, h, w]: [usize; 4] = x.layout().shape().dims();
    let [c_out, _, kh, kw]: [usize; 4] = weight.layout().shape().dims();
    let (x, weight) = (contiguous(x), contiguous(weight));
    let bias = bias.map(contiguous);
    let out_hw = g.out_h * g.out_w;
    let col_len = c_in * kh * kw;
    let mut out = vec![0f32; batch * c_out * out_hw];
    if out.is_empty() {
        return out;
    }
    if let Some(bias) = &bias {
        out.par_chunks_mut(out_hw)
            .enumerate()
            .for_each(|(i, plane)| plane.fill(bias[i % c_out]));
    }
    let pointwise = kh == 1 && kw == 1 && g.stride == 1 && g.pad_top == 0 && g.pad_left == 0;
    let band_rows = (BAND_VALUES / (col_len * g.out_w)).clamp(1, g.out_h);
    let mut cols = if pointwise {
        Vec::new()
    } else {
        vec![0f32; col_len * band_rows * g.out_w]
    };
    for b in 0..batch {
        let x_b = &x[b * c_in * h * w..(b + 1) * c_in * h * w];
        let out_b = &mut out[b * c_out * out_hw..(b + 1) * c_out * out_hw];
        if pointwise {
            // SAFETY: shapes as read above; the operands are distinct buffers.
            unsafe {
                matmul(
                    out_b.as_mut_ptr(),
                    out_hw,
                    &weight,
                    x_b,
                    c_out,
                    out_hw,
                    c_in,
                    out_hw,
                    bias.is_some(),
                )
            };
            continue;
        }
        for first in (0..g.out_h).step_by(band_rows) {
            let rows = band_rows.min(g.out_h - first);
            let pixels = rows * g.out_w;
            let cols = &mut cols[..col_len * pixels];
            im2col(cols, x_b, [h, w], [kh, kw], g, first, rows);
            // SAFETY: the band's output columns start at `first * out_w` and
            // span `pixels` of each channel's `out_hw`.
            unsafe {
                matmul(
                    out_b.as_mut_ptr().add(first * g.out_w),
                    out_hw,
                    &weight,
                    cols,
                    c_out,
                    pixels,
                    col_len,
                    pixels,
                    bias.is_some(),
                )
            };
        }
    }
    out
}

/// `dst[m × n] (+)= lhs[m × k] · rhs[k × n]`, both operands row-major,
/// `dst` with row stride `dst_rs`, on every core.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    dst: *mut f32,
    dst_rs: usize,
    lhs: &[f32],
    rhs: &[f32],
    m: usize,
    n: usize,
    k: usize,
    rhs_rs: usize,
    accumulate: bool,
) {
    unsafe {
        gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::Rayon(0),
        )
    }
}

/// The im2col rows (one per input channel and kernel position) of output
/// rows `first .. first + rows`, zeros where the window is off the image.
fn im2col(
    cols: &mut [f32],
    x: &[f32],
    [h, w]: [usize; 2],
    [kh, kw]: [usize; 2],
    g: Geometry,
    first: usize,
    rows: usize,
) {
    let pixels = rows * g.out_w;
    cols.par_chunks_mut(pixels)
        .enumerate()
        .for_each(|(r, col)| {
            let (ci, k) = (r / (kh * kw), r % (kh * kw));
            let (ky, kx) = (k / kw, k % kw);
            let plane = &x[ci * h * w..(ci + 1) * h * w];
            for (oy, dst) in (first..first + rows).zip(col.chunks_mut(g.out_w)) {
                let iy = (oy * g.stride + ky) as isize - g.pad_top as isize;
                if iy < 0 || iy >= h as isize {
                    dst.fill(0.0);
                    continue;
                }
                let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                let offset = kx as isize - g.pad_left as isize;
                if g.stride == 1 {
                    // A shifted copy of the input row, zeros past either edge.
                    let lo = (-offset).clamp(0, g.out_w as isize) as usize;
                    let hi = ((w as isize - offset).clamp(lo as isize, g.out_w as isize)) as usize;
                    dst[..lo].fill(0.0);
                    dst[lo..hi].copy_from_slice(
                        &src[(lo as isize + offset) as usize..(hi as isize + offset) as usize],
                    );
                    dst[hi..].fill(0.0);
                } else {
                    for (ox, d) in dst.iter_mut().enumerate() {
                        let ix = (ox * g.stride) as isize + offset;
                        *d = if ix >= 0 && ix < w as isize {
                            src[ix as usize]
                        } else {
                            0.0
                        };
                    }
                }
            }
        });
}
