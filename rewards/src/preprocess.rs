//! ImageReward's preprocessing as part of the model, differentiable: resize
//! the short side to the model's size with PIL's bicubic filter, centre
//! crop, normalise with CLIP's statistics (torchvision's `Resize(size,
//! BICUBIC)`, `CenterCrop(size)`, `Normalize(mean, std)` on a PIL image).
//!
//! The resize and crop are one fixed matrix per axis, `A · X · Bᵀ`: plain
//! matmuls, so gradients flow to the pixels on every backend (burn's
//! bicubic interpolate has no backward on CubeCL backends). The matrices
//! hold PIL's own coefficients, its support widened by the scale when
//! shrinking (PIL always antialiases); PIL then rounds and clips to 8 bits
//! between its two passes, which this float version does not.

use burn::prelude::*;
use burn::tensor::TensorData;

use crate::config::RewardConfig;

/// PIL's bicubic kernel (`a = -0.5`), support 2.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The `[out, in]` matrix that resamples one axis of `input` samples to
/// `output` ones as PIL's `ImagingResample` does (its `precompute_coeffs`).
pub fn resample_matrix(input: usize, output: usize) -> Vec<f64> {
    let scale = input as f64 / output as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    let mut matrix = vec![0.0; output * input];
    for out in 0..output {
        let center = (out as f64 + 0.5) * scale;
        // PIL truncates `center ± support + 0.5` toward zero, then clamps.
        let first = ((center - support + 0.5) as i64).max(0) as usize;
        let last = ((center + support + 0.5) as i64).min(input as i64) as usize;
        let row = &mut matrix[out * input..(out + 1) * input];
        let mut total = 0.0;
        for (x, weight) in row.iter_mut().enumerate().take(last).skip(first) {
            *weight = bicubic((x as f64 - center + 0.5) / filter_scale);
            total += *weight;
        }
        if total != 0.0 {
            row.iter_mut().for_each(|w| *w /= total);
        }
    }
    matrix
}

/// Python's `round` (half to even), which torchvision's `CenterCrop` uses.
fn round_half_even(x: f64) -> usize {
    let rounded = x.round();
    let value = if (x - x.trunc()).abs() == 0.5 && rounded % 2.0 != 0.0 {
        rounded - x.signum()
    } else {
        rounded
    };
    value.max(0.0) as usize
}

/// torchvision's `Resize(size)` on a `height x width` image: the short side
/// becomes `size`, the long one `int(size * long / short)`.
fn resized(height: usize, width: usize, size: usize) -> (usize, usize) {
    let long = |l: usize, s: usize| (size as f64 * l as f64 / s as f64) as usize;
    if width <= height {
        (long(height, width), size)
    } else {
        (size, long(width, height))
    }
}

/// Rows `[offset, offset + size)` of the resampling of `input` to `scaled`.
fn cropped_axis(input: usize, scaled: usize, size: usize) -> Vec<f32> {
    let offset = round_half_even((scaled - size) as f64 / 2.0);
    let full = resample_matrix(input, scaled);
    full[offset * input..(offset + size) * input]
        .iter()
        .map(|&v| v as f32)
        .collect()
}

/// The model's input from pixels in [0, 1]: see the module docs.
#[derive(Debug, Clone)]
pub struct Preprocess {
    pub size: usize,
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

impl Preprocess {
    pub fn new(config: &RewardConfig) -> Self {
        Self {
            size: config.vision.img_size,
            mean: config.image_mean,
            std: config.image_std,
        }
    }

    /// `[batch, 3, height, width]` RGB in [0, 1] → `[batch, 3, size, size]`
    /// normalised, differentiable with respect to `pixels`.
    pub fn forward<B: Backend>(&self, pixels: Tensor<B, 4>) -> Tensor<B, 4> {
        let device = pixels.device();
        let resized = self.resize(pixels);
        let column = |values: [f64; 3]| {
            let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
            Tensor::<B, 1>::from_data(TensorData::new(values, [3]), &device).reshape([1, 3, 1, 1])
        };
        (resized - column(self.mean)) / column(self.std)
    }

    /// The resize and centre crop alone, for any number of channels (a
    /// mask goes through the same geometry as its image).
    pub fn resize<B: Backend>(&self, pixels: Tensor<B, 4>) -> Tensor<B, 4> {
        let [batch, channels, height, width] = pixels.dims();
        let device = pixels.device();
        let size = self.size;
        let (scaled_h, scaled_w) = resized(height, width, size);
        let matrix = |values: Vec<f32>, rows: usize, cols: usize| {
            Tensor::<B, 2>::from_data(TensorData::new(values, [rows, cols]), &device)
                .reshape([1, 1, rows, cols])
                .expand([batch, channels, rows, cols])
        };
        let rows = matrix(cropped_axis(height, scaled_h, size), size, height);
        let cols = matrix(cropped_axis(width, scaled_w, size), size, width);
        rows.matmul(pixels).matmul(cols.swap_dims(2, 3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_to_one_and_identity_is_identity() {
        for (input, output) in [(512, 224), (20, 32), (7, 7), (224, 224)] {
            let m = resample_matrix(input, output);
            for row in m.chunks(input) {
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
        }
        let m = resample_matrix(5, 5);
        for (i, row) in m.chunks(5).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert!((v - f64::from(u8::from(i == j))).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn sizes_and_crops_follow_torchvision() {
        assert_eq!(resized(512, 512, 224), (224, 224));
        assert_eq!(resized(512, 768, 224), (224, 336));
        assert_eq!(resized(700, 300, 224), (522, 224));
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(1.5), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(149.0), 149);
    }
}
