//! Shared by the reference tests: the fixtures, reading expected tensors,
//! comparing with a tolerance.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::TensorData;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

pub type B = byteedit_models::CpuBackend;

/// Both reference models: SD-1.5-style and SD-2-style (v-prediction, linear
/// projections, GELU text encoder, 3-block VAE, non-square input).
pub const FIXTURES: [&str; 2] = ["sd15-inpaint-tiny", "sd2-vpred-tiny"];

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[derive(Debug, Deserialize)]
pub struct Case {
    /// Absent in the odd-size fixtures, which hold one case each.
    #[serde(default)]
    pub name: String,
    pub scheduler: String,
    pub steps: usize,
    pub guidance: f64,
    pub prompt: String,
}

impl Case {
    /// The edit the reference pipeline ran: this case's settings, no negative
    /// prompt, the solver's default spacing, and the reference's initial noise.
    pub fn request(
        &self,
        image: image::RgbImage,
        mask: image::GrayImage,
        (shape, values): (Vec<usize>, Vec<f32>),
    ) -> byteedit_models::EditRequest {
        byteedit_models::EditRequest {
            image,
            mask,
            prompt: self.prompt.clone(),
            negative_prompt: None,
            steps: self.steps,
            guidance_scale: self.guidance,
            scheduler: self.scheduler.parse().expect("known scheduler"),
            timestep_spacing: None,
            seed: 0,
            latents: Some(byteedit_models::InitialLatents { shape, values }),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ExpectedIndex {
    pub prompts: Vec<String>,
    pub cases: Vec<Case>,
}

/// A fixture's pipeline inputs: `expected_image.png` and `expected_mask.png`.
pub fn inputs(dir: &Path) -> (image::RgbImage, image::GrayImage) {
    use byteedit_models::image_io::{read_image, to_luma, to_rgb};
    let image = to_rgb(&read_image(&dir.join("expected_image.png")).expect("fixture image"));
    let mask = to_luma(&read_image(&dir.join("expected_mask.png")).expect("fixture mask"));
    (image, mask)
}

/// `expected.safetensors` + `expected.json` of one fixture.
pub struct Expected {
    bytes: Vec<u8>,
    pub index: ExpectedIndex,
}

impl Expected {
    pub fn load(fixture_name: &str) -> Self {
        let dir = fixture(fixture_name);
        let bytes = std::fs::read(dir.join("expected.safetensors")).expect("expected.safetensors");
        let index = serde_json::from_str(
            &std::fs::read_to_string(dir.join("expected.json")).expect("expected.json"),
        )
        .expect("expected.json parses");
        Self { bytes, index }
    }

    /// Only the tensors of a safetensors file (no `expected.json`).
    pub fn tensors_only(path: &Path) -> Self {
        Self {
            bytes: std::fs::read(path).expect("reference tensors"),
            index: ExpectedIndex {
                prompts: Vec::new(),
                cases: Vec::new(),
            },
        }
    }

    fn view(&self, name: &str) -> (Vec<usize>, Dtype, Vec<u8>) {
        let st = SafeTensors::deserialize(&self.bytes).expect("valid safetensors");
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("missing expected tensor {name}"));
        (t.shape().to_vec(), t.dtype(), t.data().to_vec())
    }

    pub fn has(&self, name: &str) -> bool {
        SafeTensors::deserialize(&self.bytes)
            .map(|st| st.names().contains(&name))
            .unwrap_or(false)
    }

    pub fn f32s(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let (shape, dtype, data) = self.view(name);
        assert_eq!(dtype, Dtype::F32, "{name} dtype");
        let values = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (shape, values)
    }

    /// Integer or float tensors as f32 (timesteps are int64 for some solvers).
    pub fn numbers(&self, name: &str) -> Vec<f32> {
        match self.view(name).1 {
            Dtype::I64 => self.ids(name).into_iter().map(|v| v as f32).collect(),
            _ => self.f32s(name).1,
        }
    }

    pub fn ids(&self, name: &str) -> Vec<u32> {
        let (_, dtype, data) = self.view(name);
        assert_eq!(dtype, Dtype::I64, "{name} dtype");
        data.chunks_exact(8)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as u32)
            .collect()
    }

    pub fn tensor<const D: usize>(&self, name: &str) -> Tensor<B, D> {
        let (shape, values) = self.f32s(name);
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }
}

/// Largest absolute difference; panics with context when above `tol` or when
/// shapes differ.
pub fn assert_close<const D: usize>(
    what: &str,
    actual: Tensor<B, D>,
    expected: Tensor<B, D>,
    tol: f32,
) {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape");
    let a = actual.into_data().into_vec::<f32>().expect("f32");
    let e = expected.into_data().into_vec::<f32>().expect("f32");
    assert_slices_close(what, &a, &e, tol);
}

pub fn assert_slices_close(what: &str, actual: &[f32], expected: &[f32], tol: f32) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let (mut worst, mut at) = (0f32, 0usize);
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let d = (a - e).abs();
        if d.is_nan() || d > worst {
            worst = if d.is_nan() { f32::INFINITY } else { d };
            at = i;
        }
    }
    assert!(
        worst <= tol,
        "{what}: max abs error {worst:e} at index {at} (got {}, expected {}) exceeds {tol:e}",
        actual[at],
        expected[at]
    );
    eprintln!("{what}: max abs error {worst:e} (tolerance {tol:e})");
}

/// Checks a configured solver against reference group `prefix`: its timesteps,
/// sigmas (where both have them), initial sigma, and a whole run from
/// `sample0` with the fixtures' stand-in model
/// `eps = 0.7 * scale_model_input(x, t) + 0.1 * (j % 3)`.
pub fn check_scheduler_run(
    label: &str,
    expected: &Expected,
    prefix: &str,
    sample0: Tensor<B, 4>,
    scheduler: &mut byteedit_models::schedulers::Scheduler<B>,
) {
    let timesteps = expected.numbers(&format!("{prefix}.timesteps"));
    assert_slices_close(
        &format!("{label}.timesteps"),
        scheduler.timesteps(),
        &timesteps,
        1e-3,
    );
    if expected.has(&format!("{prefix}.sigmas")) {
        let sigmas = expected.numbers(&format!("{prefix}.sigmas"));
        let ours = scheduler.sigmas().expect("the solver has sigmas");
        assert_slices_close(&format!("{label}.sigmas"), ours, &sigmas, 1e-4);
    }
    let init = expected.numbers(&format!("{prefix}.init_noise_sigma"));
    let ours = [scheduler.init_noise_sigma() as f32];
    assert_slices_close(&format!("{label}.init_noise_sigma"), &ours, &init, 1e-4);

    let mut x = sample0.mul_scalar(scheduler.init_noise_sigma());
    for j in 0..scheduler.timesteps().len() {
        let eps = scheduler
            .scale_model_input(x.clone(), j)
            .mul_scalar(0.7)
            .add_scalar(0.1 * (j % 3) as f64);
        x = scheduler.step(eps, j, x);
    }
    assert_close(
        &format!("{label}.final"),
        x,
        expected.tensor(&format!("{prefix}.final")),
        1e-4,
    );
}
