//! Gradient parity with PyTorch autograd: the preference loss of a fixed
//! pair of raw images, through the differentiable preprocessing, the ViT,
//! the cross-attending BERT and the head, and its gradients with respect to
//! the head, the last text layer's cross-attention, the last ViT block and
//! the input pixels, within 1e-4 relative of torch's
//! (`fixtures/imagereward-tiny/make_gradients.py`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation::log_sigmoid;
use byteedit_models::params::{gradients, same_key};
use byteedit_models::{CpuBackend, TrainingBackend};
use byteedit_rewards::RewardFolder;

type B = TrainingBackend<CpuBackend>;

fn fixture() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/imagereward-tiny"
    ))
}

/// Every tensor of `gradients.safetensors` as (shape, values).
fn reference() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(fixture().join("gradients.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

/// max |got − want| / max |want|; a gradient that is zero in exact
/// arithmetic (the key bias of an attention, to which softmax is blind)
/// is compared absolutely, at 1e-6.
fn relative(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
        / scale
}

#[test]
fn preference_loss_gradients_equal_torch_autograd() {
    let reference = reference();
    let device = Default::default();
    let folder = RewardFolder::<B>::load(&fixture(), &device).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap())
            .unwrap();
    let prompt = meta["prompts"][0].as_str().unwrap();
    let input = |name: &str| {
        let (shape, values) = &reference[name];
        let shape: [usize; 4] = shape.clone().try_into().unwrap();
        Tensor::<B, 4>::from_data(TensorData::new(values.clone(), shape), &device).require_grad()
    };
    let (preferred, rejected) = (input("input.preferred"), input("input.rejected"));
    let pixels = folder
        .preprocess
        .forward(Tensor::cat(vec![preferred.clone(), rejected.clone()], 0));
    let prompts = folder.encode(&[prompt, prompt]).unwrap();
    let raw = folder.model.raw_score(pixels, &prompts).reshape([2]);
    let loss = log_sigmoid(raw.clone().slice(0..1) - raw.slice(1..2)).neg();
    let got_loss: f32 = loss.clone().into_scalar();
    let want_loss = reference["loss"].1[0];
    assert!(
        (got_loss - want_loss).abs() <= 1e-5 * want_loss.abs().max(1.0),
        "loss {got_loss} vs {want_loss}"
    );

    let grads = loss.backward();
    let mut checked = 0;
    for (name, got) in [("input.preferred", preferred), ("input.rejected", rejected)] {
        let got: Vec<f32> = got.grad(&grads).unwrap().into_data().to_vec().unwrap();
        let err = relative(&got, &reference[&format!("grad.{name}")].1);
        assert!(err <= 1e-4, "d loss / d {name}: relative error {err}");
        checked += 1;
    }
    for (path, grad) in gradients(&folder.model, &grads, &same_key) {
        let key = folder.model.checkpoint_key(&path);
        let Some((shape, want)) = reference.get(&format!("grad.{key}")) else {
            continue;
        };
        let mut got = grad;
        // Linears keep their weight as [in, out]; torch's is [out, in].
        if shape.len() == 2 {
            got = got
                .reshape([shape[1], shape[0]])
                .transpose()
                .reshape([shape[0] * shape[1]]);
        }
        let got: Vec<f32> = got.into_data().to_vec().unwrap();
        if key.ends_with(".key.bias") {
            // A key bias shifts every score of a softmax row alike: its true
            // gradient is zero and both sides hold rounding noise, whose
            // order changes with how backward recomputes (checkpointing).
            let noise = got.iter().chain(want).fold(0f32, |m, v| m.max(v.abs()));
            assert!(
                noise <= 1e-6,
                "d loss / d {key} should be zero, is up to {noise}"
            );
            checked += 1;
            continue;
        }
        let err = relative(&got, want);
        assert!(err <= 1e-4, "d loss / d {key}: relative error {err}");
        checked += 1;
    }
    let expected = reference.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(checked, expected, "every reference gradient was compared");
}
