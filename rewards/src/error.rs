//! The reward layer's one error type: each says what to fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    /// A file the reward folder needs is not there.
    #[error("{} is missing: {hint}", path.display())]
    MissingFile { path: PathBuf, hint: String },
    /// A file is there but cannot be used as it is.
    #[error("{}: {message}", path.display())]
    InvalidFile { path: PathBuf, message: String },
    /// The tokenizer library refused a text or a setting.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

pub type Result<T> = std::result::Result<T, RewardError>;
