//! A reward folder on disk: which weight files it may hold (ours, or the
//! released `ImageReward.pt` as users download it) and the tokenizer files
//! that travel with it.

use std::path::Path;

use byteedit_models::weights::TensorStore;

use crate::error::{Result, RewardError};

/// Weight files a reward folder may hold, in order of preference: the
/// safetensors the trainer writes, then PyTorch state dicts in a zip-pickle
/// (the released checkpoint is `ImageReward.pt`).
pub const WEIGHT_FILES: [&str; 4] = [
    "model.safetensors",
    "ImageReward.safetensors",
    "ImageReward.pt",
    "model.pt",
];

/// The tokenizer's files; `vocab.txt` is required, the others optional.
pub const TOKENIZER_FILES: [&str; 4] = [
    "vocab.txt",
    "added_tokens.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
];

/// Opens the first of [`WEIGHT_FILES`] in `dir`.
pub fn open_weights(dir: &Path) -> Result<TensorStore> {
    let Some(path) = WEIGHT_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
    else {
        return Err(RewardError::MissingFile {
            path: dir.join(WEIGHT_FILES[0]),
            hint: format!(
                "a reward folder holds its weights as one of {}",
                WEIGHT_FILES.join(", ")
            ),
        });
    };
    if path.extension().is_some_and(|e| e == "pt") {
        read_pickle(&path)
    } else {
        Ok(TensorStore::open_files(dir, &[path])?)
    }
}

/// Reads a PyTorch state dict (torch's zip format, or the legacy pickle)
/// with burn-store's reader, every tensor decoded to f32.
fn read_pickle(path: &Path) -> Result<TensorStore> {
    let invalid = |message: String| RewardError::InvalidFile {
        path: path.to_owned(),
        message,
    };
    let reader = burn_store::pytorch::PytorchReader::new(path)
        .map_err(|e| invalid(format!("not a PyTorch state dict: {e}")))?;
    let mut tensors = Vec::with_capacity(reader.len());
    for (key, snapshot) in reader.into_tensors() {
        let data = snapshot
            .to_data()
            .map_err(|e| invalid(format!("tensor `{key}`: {e:?}")))?;
        let shape = data.shape.to_vec();
        let values = data
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| invalid(format!("tensor `{key}`: {e:?}")))?;
        tensors.push((key, shape, values));
    }
    Ok(TensorStore::from_tensors(path, tensors))
}

/// Copies the tokenizer files present in `from` to `to`.
pub fn copy_tokenizer(from: &Path, to: &Path) -> Result<()> {
    for name in TOKENIZER_FILES {
        let source = from.join(name);
        if !source.is_file() {
            if name == "vocab.txt" {
                return Err(RewardError::MissingFile {
                    path: source,
                    hint: "the text encoder's BERT vocabulary sits beside the weights".into(),
                });
            }
            continue;
        }
        if source == to.join(name) {
            continue;
        }
        std::fs::copy(&source, to.join(name)).map_err(|e| RewardError::Io {
            path: to.join(name),
            message: e.to_string(),
        })?;
    }
    Ok(())
}
