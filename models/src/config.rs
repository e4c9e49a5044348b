//! Helpers shared by the component configs (`config.json` files).

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{ModelError, Result};

/// A config value given once for all blocks or once per block
/// (`attention_head_dim: 8` or `attention_head_dim: [5, 10, 20, 20]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Default> Default for PerBlock<T> {
    fn default() -> Self {
        PerBlock::One(T::default())
    }
}

impl<T: Copy> PerBlock<T> {
    /// The value for each of `n` blocks (a list shorter than `n` repeats its last value).
    pub fn iter_n(&self, n: usize) -> impl Iterator<Item = T> + '_ {
        (0..n).filter_map(move |i| match self {
            PerBlock::One(v) => Some(*v),
            PerBlock::Each(list) => list.get(i).or(list.last()).copied(),
        })
    }
}

/// Reads and parses a JSON config file, naming the file in every error.
pub fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::config(path, e.to_string()))
}

pub fn unsupported(path: &Path, feature: impl Into<String>) -> ModelError {
    ModelError::Unsupported {
        path: path.to_path_buf(),
        feature: feature.into(),
    }
}
