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
    /// Writing a file failed (disk full, no permission, ...).
    #[error("cannot write {}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    /// A checkpoint tensor is missing or has another shape (the engine's
    /// loader says which and where).
    #[error(transparent)]
    Model(#[from] byteedit_models::ModelError),
    /// The tokenizer library refused a text or a setting.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

pub type Result<T> = std::result::Result<T, RewardError>;
