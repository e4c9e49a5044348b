//! The differentiable resize + centre crop against PIL's own (the
//! reference PNGs come from `fixtures/preprocess/make_reference.py`), and
//! its gradient reaching every input pixel.

use std::path::PathBuf;

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::TensorData;
use byteedit_models::CpuBackend;
use byteedit_rewards::preprocess::Preprocess;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/preprocess"
    ))
    .join(name)
}

/// An RGB PNG as `[1, 3, h, w]` in [0, 1].
fn load<B: Backend>(name: &str, device: &B::Device) -> Tensor<B, 4> {
    let img = image::open(fixture(name)).unwrap().to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut planar = vec![0f32; 3 * h * w];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            planar[c * h * w + y as usize * w + x as usize] = f32::from(p[c]) / 255.0;
        }
    }
    Tensor::from_data(TensorData::new(planar, [1, 3, h, w]), device)
}

fn identity_normalisation(size: usize) -> Preprocess {
    Preprocess {
        size,
        mean: [0.0; 3],
        std: [1.0; 3],
    }
}

#[test]
fn resize_and_crop_equal_pils_bicubic() {
    let device = Default::default();
    for case in ["shrink", "grow"] {
        let input = load::<CpuBackend>(&format!("{case}.png"), &device);
        let want = load::<CpuBackend>(&format!("{case}.pil32.png"), &device);
        let got = identity_normalisation(32).forward(input).clamp(0.0, 1.0);
        assert_eq!(got.dims(), want.dims());
        let diff: f32 = (got - want).abs().max().into_scalar();
        // PIL rounds to 8 bits between its horizontal and vertical passes.
        assert!(diff * 255.0 <= 1.5, "{case}: {} levels apart", diff * 255.0);
    }
}

#[test]
fn normalisation_uses_the_configured_statistics() {
    let device = Default::default();
    let input = load::<CpuBackend>("grow.png", &device);
    let plain = identity_normalisation(32).forward(input.clone());
    let clip = Preprocess {
        size: 32,
        mean: [0.5, 0.25, 0.125],
        std: [0.5, 0.25, 2.0],
    }
    .forward(input);
    let mean =
        Tensor::<CpuBackend, 1>::from_floats([0.5, 0.25, 0.125], &device).reshape([1, 3, 1, 1]);
    let std = Tensor::<CpuBackend, 1>::from_floats([0.5, 0.25, 2.0], &device).reshape([1, 3, 1, 1]);
    let diff: f32 = ((plain - mean) / std - clip).abs().max().into_scalar();
    assert!(diff < 1e-5, "{diff}");
}

#[test]
fn gradients_reach_every_input_pixel() {
    type B = Autodiff<CpuBackend>;
    let device = Default::default();
    let input = load::<B>("shrink.png", &device).require_grad();
    let out = identity_normalisation(32).forward(input.clone());
    let grads = out.sum().backward();
    let grad = input.grad(&grads).unwrap();
    assert_eq!(grad.dims(), [1, 3, 53, 77]);
    // Each output pixel's weights sum to one; the crop (32 of the 46
    // resized columns) reaches about 70 % of the input columns.
    let total: f32 = grad.clone().sum().into_scalar();
    assert!((total - 3.0 * 32.0 * 32.0).abs() < 0.05, "{total}");
    let reached: f32 = grad.abs().greater_elem(0.0).float().sum().into_scalar();
    assert!(reached > 0.6 * 3.0 * 53.0 * 77.0, "{reached}");
}
