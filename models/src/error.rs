//! The engine's one error type. Every message says what was wrong and where
//! (file, tensor key, expected vs found), so a bad model folder or a bad input
//! can be fixed without reading the code.

use std::path::PathBuf;

/// Everything that can go wrong loading a model or running an edit.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("`{path}` is not valid: {message}")]
    Config { path: PathBuf, message: String },

    #[error("config `{path}` asks for {feature}, which this engine does not support")]
    Unsupported { path: PathBuf, feature: String },

    #[error("`{path}` is not a readable safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },

    #[error("tensor `{key}` is missing (looked in {files})")]
    MissingTensor { key: String, files: String },

    #[error("tensor `{key}` in `{path}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        key: String,
        path: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("tensor `{key}` in `{path}` has dtype {dtype}, expected a float (F32, F16 or BF16)")]
    BadDtype {
        key: String,
        path: PathBuf,
        dtype: String,
    },

    #[error("{count} tensors in `{dir}` are not used by the model, e.g. {examples}")]
    UnusedTensors {
        dir: PathBuf,
        count: usize,
        examples: String,
    },

    #[error("tokenizer files in `{path}` are not valid: {message}")]
    Tokenizer { path: PathBuf, message: String },

    /// A caller's input (image, mask, size, option) that cannot be used as given.
    #[error("{0}")]
    InvalidInput(String),

    #[error("cannot decode image `{path}`: {message}")]
    Image { path: String, message: String },

    #[error("cannot write image `{path}`: {message}")]
    ImageWrite { path: String, message: String },

    /// The progress callback asked to stop.
    #[error("the edit was cancelled")]
    Cancelled,
}

impl ModelError {
    /// A short stable name, for logs, metrics and API error bodies.
    pub fn error_type(&self) -> &'static str {
        match self {
            ModelError::Io { .. } => "io",
            ModelError::Config { .. } => "model_config",
            ModelError::Unsupported { .. } => "model_unsupported",
            ModelError::Safetensors { .. }
            | ModelError::MissingTensor { .. }
            | ModelError::ShapeMismatch { .. }
            | ModelError::BadDtype { .. }
            | ModelError::UnusedTensors { .. } => "model_weights",
            ModelError::Tokenizer { .. } => "tokenizer",
            ModelError::InvalidInput(_) | ModelError::Image { .. } => "invalid_input",
            ModelError::Cancelled => "cancelled",
            ModelError::ImageWrite { .. } => "output",
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        ModelError::Config {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
