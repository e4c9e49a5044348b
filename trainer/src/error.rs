//! The trainer's one error type: each says what to fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A data or config file that cannot be used as it is (line numbers
    /// count from 1).
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },
    /// A setting that cannot train.
    #[error("config: {0}")]
    Config(String),
    /// The data leave nothing to learn from.
    #[error("{0}")]
    NoData(String),
    #[error(transparent)]
    Reward(#[from] byteedit_rewards::RewardError),
    #[error(transparent)]
    Model(#[from] byteedit_models::ModelError),
    #[error("cannot write {}: {message}", path.display())]
    Io { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    pub(crate) fn io(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        Self::Io {
            path: path.to_owned(),
            message: e.to_string(),
        }
    }
}
