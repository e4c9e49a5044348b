//! BLIP's image encoder against ImageReward's own: the fixture's weights by
//! their checkpoint names, its normalised images in, its `image_embeds` out
//! within 1e-4.

use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::TensorData;
use byteedit_models::CpuBackend;
use byteedit_models::weights::{TensorStore, Weights};
use byteedit_rewards::RewardConfig;
use byteedit_rewards::vision::VisionTransformer;

fn fixture() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/imagereward-tiny"
    ))
}

/// An F32 tensor of `expected.safetensors` and its shape.
fn expected(name: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(fixture().join("expected.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = tensors.tensor(name).unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
    let values = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (values, view.shape().to_vec())
}

fn max_abs_diff<const D: usize>(got: Tensor<CpuBackend, D>, want: &[f32]) -> f32 {
    let got: Vec<f32> = got.into_data().to_vec().unwrap();
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
}

#[test]
fn image_embeddings_equal_imagerewards_vit() {
    let config = RewardConfig::read(&fixture()).unwrap();
    let store =
        TensorStore::open_files(&fixture(), &[fixture().join("model.safetensors")]).unwrap();
    let device = Default::default();
    let weights = Weights::<CpuBackend>::new(&store, &device);
    let vit =
        VisionTransformer::load(&weights.pp("blip").pp("visual_encoder"), &config.vision).unwrap();
    for case in 0..3 {
        let (image, shape) = expected(&format!("case{case}.image"));
        let shape: [usize; 4] = shape.try_into().unwrap();
        let pixels = Tensor::<CpuBackend, 4>::from_data(TensorData::new(image, shape), &device);
        let got = vit.forward(pixels);
        let (want, want_shape) = expected(&format!("case{case}.image_embeds"));
        assert_eq!(got.dims().to_vec(), want_shape);
        let diff = max_abs_diff(got, &want);
        assert!(diff <= 1e-4, "case {case}: max abs diff {diff}");
    }
}

#[test]
fn text_cls_and_rewards_equal_imagerewards_own() {
    use byteedit_rewards::{ImageReward, TextTokenizer};
    let device = Default::default();
    let model = ImageReward::<CpuBackend>::load(&fixture(), &device).unwrap();
    let tokenizer = TextTokenizer::from_folder(&fixture(), 35).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap())
            .unwrap();
    for (case, prompt) in meta["prompts"].as_array().unwrap().iter().enumerate() {
        let (image, shape) = expected(&format!("case{case}.image"));
        let shape: [usize; 4] = shape.try_into().unwrap();
        let pixels = Tensor::<CpuBackend, 4>::from_data(TensorData::new(image, shape), &device);
        let encoded = [tokenizer.encode(prompt.as_str().unwrap()).unwrap()];
        for (name, got) in [
            ("text_cls", model.text_cls(pixels.clone(), &encoded)),
            ("reward", model.score(pixels.clone(), &encoded)),
        ] {
            let (want, want_shape) = expected(&format!("case{case}.{name}"));
            assert_eq!(got.dims().to_vec(), want_shape, "{name}");
            let diff = max_abs_diff(got, &want);
            assert!(diff <= 1e-4, "case {case} {name}: max abs diff {diff}");
        }
    }
}
