//! Reward folders on disk: the released `.pt` as users download it, the
//! full-size layout by name and shape, our own safetensors written in
//! ImageReward's names and read back, and the sentences for folders that
//! do not fit.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::TensorData;
use byteedit_models::CpuBackend;
use byteedit_models::weights::{SaveDtype, TensorStore, save_safetensors};
use byteedit_rewards::checkpoint::copy_tokenizer;
use byteedit_rewards::{ImageReward, RewardConfig, TextTokenizer};
use rand::{Rng, SeedableRng};

fn fixture() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/imagereward-tiny"
    ))
}

/// A copy of the tiny fixture's configs and tokenizer with only `weights`.
fn folder_with(weights: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["reward_config.json", "med_config.json", weights] {
        std::fs::copy(fixture().join(name), dir.path().join(name)).unwrap();
    }
    copy_tokenizer(&fixture(), dir.path()).unwrap();
    dir
}

fn expected(name: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(fixture().join("expected.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = tensors.tensor(name).unwrap();
    let values = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (values, view.shape().to_vec())
}

/// The fixture's three cases scored by the model in `dir`.
fn scores(dir: &Path) -> Vec<f32> {
    let device = Default::default();
    let model = ImageReward::<CpuBackend>::load(dir, &device).unwrap();
    let tokenizer = TextTokenizer::from_folder(dir, 35).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap())
            .unwrap();
    let prompts = meta["prompts"].as_array().unwrap();
    (0..prompts.len())
        .map(|case| {
            let (image, shape) = expected(&format!("case{case}.image"));
            let shape: [usize; 4] = shape.try_into().unwrap();
            let pixels = Tensor::<CpuBackend, 4>::from_data(TensorData::new(image, shape), &device);
            let encoded = [tokenizer.encode(prompts[case].as_str().unwrap()).unwrap()];
            model.score(pixels, &encoded).into_scalar()
        })
        .collect()
}

#[test]
fn the_pytorch_state_dict_scores_as_imagereward_does() {
    let dir = folder_with("model.pt");
    for (case, got) in scores(dir.path()).into_iter().enumerate() {
        let want = expected(&format!("case{case}.reward")).0[0];
        assert!((got - want).abs() <= 1e-4, "case {case}: {got} vs {want}");
    }
    // The released file name is found as well.
    std::fs::rename(
        dir.path().join("model.pt"),
        dir.path().join("ImageReward.pt"),
    )
    .unwrap();
    assert_eq!(scores(dir.path()).len(), 3);
}

#[test]
fn a_saved_model_uses_imagerewards_names_and_scores_the_same() {
    let source = folder_with("model.safetensors");
    let device = Default::default();
    let model = ImageReward::<CpuBackend>::load(source.path(), &device).unwrap();
    let out = folder_with("model.safetensors");
    std::fs::remove_file(out.path().join("model.safetensors")).unwrap();
    model.save_weights(out.path()).unwrap();

    let keys = |path: &Path| -> BTreeSet<String> {
        let store = TensorStore::open_files(path.parent().unwrap(), &[path.to_owned()]).unwrap();
        store.keys().into_iter().map(str::to_owned).collect()
    };
    let saved = keys(&out.path().join("model.safetensors"));
    let released: BTreeSet<String> = keys(&fixture().join("model.safetensors"))
        .into_iter()
        .filter(|k| !k.contains("_proj.") && !k.ends_with("position_ids"))
        .collect();
    assert_eq!(saved, released);
    assert_eq!(scores(out.path()), scores(source.path()));
}

/// The released model's BERT-base config (ImageReward's `med_config.json`).
const BERT_BASE: &str = r#"{"architectures": ["BertModel"], "hidden_act": "gelu",
  "hidden_size": 768, "intermediate_size": 3072, "layer_norm_eps": 1e-12,
  "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
  "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30524,
  "encoder_width": 768, "add_cross_attention": true}"#;

#[test]
fn the_full_size_release_layout_loads_by_name_and_shape_and_scores() {
    let layout: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/imagereward-layout.json")).unwrap();
    // One random block repeated: realistic magnitudes without drawing
    // 450 million numbers.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let block: Vec<f32> = (0..4099).map(|_| rng.random_range(-0.02..0.02)).collect();
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = layout["parameters"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, shape)| {
            let shape: Vec<usize> = serde_json::from_value(shape.clone()).unwrap();
            let count: usize = shape.iter().product();
            let mut values = Vec::with_capacity(count);
            while values.len() < count {
                let take = (count - values.len()).min(block.len());
                values.extend_from_slice(&block[..take]);
            }
            (name.clone(), shape, values)
        })
        .collect();
    // No reward_config.json: the folder is the released model.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("med_config.json"), BERT_BASE).unwrap();
    let config = RewardConfig::read(dir.path()).unwrap();
    assert_eq!(config, RewardConfig::released());
    let missing_vocab = TextTokenizer::from_folder(dir.path(), 35)
        .unwrap_err()
        .to_string();
    assert!(
        missing_vocab.contains("vocab.txt") && missing_vocab.contains("bert-base-uncased"),
        "{missing_vocab}"
    );
    std::fs::copy(fixture().join("vocab.txt"), dir.path().join("vocab.txt")).unwrap();

    // The tensors go to the loader as a state dict's would (from memory,
    // not a 1.8 GB file: the file readers have their own tests).
    let store = TensorStore::from_tensors(&dir.path().join("ImageReward.pt"), tensors);
    let text = byteedit_rewards::text::TextConfig::read(dir.path()).unwrap();
    let device = Default::default();
    let model = ImageReward::<CpuBackend>::from_store(&store, &config, &text, &device).unwrap();
    drop(store);
    let tokenizer = TextTokenizer::from_folder(dir.path(), config.text_max_length).unwrap();
    let pixels = Tensor::<CpuBackend, 4>::zeros([1, 3, 224, 224], &device);
    let score: f32 = model
        .score(pixels, &[tokenizer.encode("a red apple").unwrap()])
        .into_scalar();
    assert!(score.is_finite());
}

/// Loads `dir` and returns the error's sentence.
fn refusal(dir: &Path) -> String {
    ImageReward::<CpuBackend>::load(dir, &Default::default())
        .unwrap_err()
        .to_string()
}

/// The fixture's tensors, edited by `edit`, as the folder's weights.
fn rewrite(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) {
    let path = fixture().join("model.safetensors");
    let store = TensorStore::open_files(&fixture(), &[path]).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = store
        .keys()
        .into_iter()
        .filter(|k| !k.ends_with("position_ids"))
        .map(|k| {
            let shape = store.shape(k).unwrap().to_vec();
            (
                k.to_owned(),
                shape.clone(),
                store.read_f32(k, &shape, &[]).unwrap(),
            )
        })
        .collect();
    edit(&mut tensors);
    save_safetensors(&dir.join("model.safetensors"), &tensors, SaveDtype::F32).unwrap();
}

#[test]
fn folders_that_do_not_fit_are_refused_with_what_to_fix() {
    let dir = folder_with("model.safetensors");
    let key = "blip.text_encoder.encoder.layer.1.crossattention.self.key.weight";
    rewrite(dir.path(), |t| t.retain(|(k, _, _)| k != key));
    let message = refusal(dir.path());
    assert!(message.contains(key), "{message}");

    rewrite(dir.path(), |t| {
        t.push(("blip.extra.weight".into(), vec![2], vec![0.0; 2]))
    });
    let message = refusal(dir.path());
    assert!(message.contains("blip.extra.weight"), "{message}");

    // A config whose sizes disagree with the weights.
    rewrite(dir.path(), |_| {});
    let config = std::fs::read_to_string(dir.path().join("reward_config.json")).unwrap();
    std::fs::write(
        dir.path().join("reward_config.json"),
        config.replace("\"embed_dim\": 48", "\"embed_dim\": 64"),
    )
    .unwrap();
    let message = refusal(dir.path());
    assert!(
        message.contains("has shape") && message.contains("expected [64"),
        "{message}"
    );

    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let message = refusal(dir.path());
    assert!(message.contains("ImageReward.pt"), "{message}");

    std::fs::write(dir.path().join("model.pt"), b"not a pickle").unwrap();
    std::fs::copy(
        fixture().join("reward_config.json"),
        dir.path().join("reward_config.json"),
    )
    .unwrap();
    let message = refusal(dir.path());
    assert!(message.contains("PyTorch state dict"), "{message}");
}
