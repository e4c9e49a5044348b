//! Export: a model written back as a diffusers folder has the source's
//! tensor names, loads, and edits exactly as the model it was written
//! from; LoRA adapters merge into the weights they adapt. Plus the
//! training-side schedule calls (add_noise, x0 prediction) against each
//! other.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use burn::prelude::*;
use byteedit_models::lora::LoraSpec;
use byteedit_models::params::{map_flat, same_key};
use byteedit_models::schedulers::{NoiseSchedule, PredictionType};
use byteedit_models::weights::SaveDtype;
use byteedit_models::{EditRequest, InpaintModel, SchedulerKind};
use common::{B, FIXTURES, fixture, inputs};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn keys(path: &Path) -> BTreeSet<String> {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    meta.tensors().keys().cloned().collect()
}

fn request(dir: &Path) -> EditRequest {
    let (image, mask) = inputs(dir);
    EditRequest {
        image,
        mask,
        prompt: "a red chair".into(),
        negative_prompt: None,
        steps: 3,
        guidance_scale: 3.0,
        scheduler: SchedulerKind::Ddim,
        timestep_spacing: None,
        seed: 7,
        latents: None,
    }
}

fn edit(model: &InpaintModel<B>, request: &EditRequest) -> Vec<f32> {
    model
        .edit(request, &mut |_| std::ops::ControlFlow::Continue(()))
        .unwrap()
        .pixels
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Every weight nudged (seeded), so an export that dropped or misnamed a
/// tensor, or wrote one transposed, cannot pass by the fixture's values.
fn nudged(model: InpaintModel<B>, seed: u64) -> InpaintModel<B> {
    let mut rng = StdRng::seed_from_u64(seed);
    let unet = map_flat(model.unet.clone(), &same_key, &mut |_, flat| {
        let n = flat.dims()[0];
        let noise: Vec<f32> = (0..n).map(|_| rng.random_range(-0.01..0.01)).collect();
        Some(flat.add(Tensor::from_floats(noise.as_slice(), &Default::default())))
    });
    model.with_unet(unet)
}

#[test]
fn an_exported_folder_has_diffusers_names_and_edits_exactly_alike() {
    let device = Default::default();
    for name in FIXTURES {
        let dir = fixture(name);
        let model = nudged(InpaintModel::<B>::load(&dir, &device).unwrap(), 1);
        let out = tempfile::tempdir().unwrap();
        model.export(&dir, out.path(), SaveDtype::F32).unwrap();
        let unet_file = "unet/diffusion_pytorch_model.safetensors";
        assert_eq!(
            keys(&out.path().join(unet_file)),
            keys(&dir.join(unet_file)),
            "{name}"
        );
        let reloaded = InpaintModel::<B>::load(out.path(), &device).unwrap();
        let request = request(&dir);
        assert_eq!(
            edit(&reloaded, &request),
            edit(&model, &request),
            "{name}: outputs differ"
        );
        // And it is not the fixture's own model.
        let original = InpaintModel::<B>::load(&dir, &device).unwrap();
        assert!(
            max_diff(&edit(&original, &request), &edit(&model, &request)) > 1e-4,
            "{name}"
        );
    }
}

#[test]
fn an_fp16_export_loads_and_edits_within_half_precision() {
    let device = Default::default();
    let dir = fixture("sd15-inpaint-tiny");
    let model = InpaintModel::<B>::load(&dir, &device).unwrap();
    let out = tempfile::tempdir().unwrap();
    model.export(&dir, out.path(), SaveDtype::F16).unwrap();
    let reloaded = InpaintModel::<B>::load(out.path(), &device).unwrap();
    let request = request(&dir);
    let diff = max_diff(&edit(&reloaded, &request), &edit(&model, &request));
    assert!(diff < 2e-2, "fp16 export differs by {diff}");
}

#[test]
fn lora_adapters_start_neutral_and_merge_into_the_export() {
    let device = Default::default();
    for name in FIXTURES {
        let dir = fixture(name);
        let base = InpaintModel::<B>::load(&dir, &device).unwrap();
        let spec = LoraSpec {
            rank: 2,
            alpha: Some(4.0),
            ..LoraSpec::new(2)
        };
        let adapted = InpaintModel::<B>::load_with_lora(&dir, &device, Some(spec)).unwrap();
        let request = request(&dir);
        // B starts at zero: the adapted model is the base model.
        assert_eq!(edit(&adapted, &request), edit(&base, &request), "{name}");

        // Train-like adapters: every lora_b given values.
        let mut rng = StdRng::seed_from_u64(3);
        let mut touched = 0;
        let unet = map_flat(adapted.unet.clone(), &same_key, &mut |key, flat| {
            if !key.contains(".lora_b.") {
                return None;
            }
            touched += 1;
            let n = flat.dims()[0];
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(-0.2..0.2)).collect();
            Some(Tensor::from_floats(v.as_slice(), &Default::default()))
        });
        assert!(touched >= 4, "{name}: only {touched} adapters attached");
        let adapted = adapted.with_unet(unet);
        let out = tempfile::tempdir().unwrap();
        adapted.export(&dir, out.path(), SaveDtype::F32).unwrap();
        let unet_file = "unet/diffusion_pytorch_model.safetensors";
        assert_eq!(
            keys(&out.path().join(unet_file)),
            keys(&dir.join(unet_file)),
            "{name}: adapters left in the export"
        );
        let merged = InpaintModel::<B>::load(out.path(), &device).unwrap();
        let (a, m, b) = (
            edit(&adapted, &request),
            edit(&merged, &request),
            edit(&base, &request),
        );
        let diff = max_diff(&a, &m);
        assert!(
            diff < 1e-5,
            "{name}: merged export differs from the adapter model by {diff}"
        );
        assert!(
            max_diff(&a, &b) > 1e-4,
            "{name}: the adapters changed nothing"
        );
    }
}

#[test]
fn x0_prediction_inverts_add_noise_for_each_prediction_type() {
    let device = Default::default();
    let schedule = NoiseSchedule::new(&Default::default()).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let mut random = |n: usize| -> Tensor<B, 4> {
        let v: Vec<f32> = (0..n * 16).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::<B, 1>::from_floats(v.as_slice(), &device).reshape([n, 1, 4, 4])
    };
    let (x0, noise) = (random(3), random(3));
    let t = [0, 500, 999];
    let noisy = schedule.add_noise(x0.clone(), noise.clone(), &t).unwrap();
    for prediction in [
        PredictionType::Epsilon,
        PredictionType::VPrediction,
        PredictionType::Sample,
    ] {
        let target = schedule
            .training_target(prediction, x0.clone(), noise.clone(), &t)
            .unwrap();
        let back = schedule
            .pred_original_sample(prediction, target, noisy.clone(), &t)
            .unwrap();
        let diff: f32 = back.sub(x0.clone()).abs().max().into_scalar();
        // ε-prediction divides by sqrt(ᾱ_999) ≈ 0.07: f32 rounding grows by ~14x.
        assert!(diff < 1e-4, "{prediction:?}: {diff}");
    }
    let err = schedule
        .add_noise(x0, noise, &[0, 1, 1000])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("timestep 1000 is outside the schedule's 1000"),
        "{err}"
    );
}
