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

    #[error("cannot write `{path}`: {source}")]
    Write {
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

    /// The backend could not do what the engine asked (a device error, a
    /// tensor it cannot read back): the engine's fault, not the caller's.
    #[error("the compute backend failed: {0}")]
    Backend(String),

    /// The progress callback asked to stop.
    #[error("the edit was cancelled")]
    Cancelled,
}

impl ModelError {
    /// Every name [`ModelError::error_type`] gives.
    pub const ERROR_TYPES: &'static [&'static str] = &[
        "file_unreadable",
        "model_config_invalid",
        "model_unsupported",
        "model_weights_invalid",
        "tokenizer_invalid",
        "invalid_input",
        "output_encoding_failed",
        "canceled",
        "engine_error",
    ];

    /// A short stable snake_case name, for logs and metrics; the worker
    /// records it as a failed job's `error.code` (but `canceled`, which is a
    /// status, not a failure).
    pub fn error_type(&self) -> &'static str {
        match self {
            ModelError::Io { .. } => "file_unreadable",
            ModelError::Write { .. } => "file_unwritable",
            ModelError::Config { .. } => "model_config_invalid",
            ModelError::Unsupported { .. } => "model_unsupported",
            ModelError::Safetensors { .. }
            | ModelError::MissingTensor { .. }
            | ModelError::ShapeMismatch { .. }
            | ModelError::BadDtype { .. }
            | ModelError::UnusedTensors { .. } => "model_weights_invalid",
            ModelError::Tokenizer { .. } => "tokenizer_invalid",
            ModelError::InvalidInput(_) | ModelError::Image { .. } => "invalid_input",
            ModelError::Cancelled => "canceled",
            ModelError::Backend(_) => "engine_error",
            ModelError::ImageWrite { .. } => "output_encoding_failed",
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Write {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_type_is_listed() {
        let path = || PathBuf::from("x");
        let text = || "x".to_string();
        let errors = [
            ModelError::io("x", std::io::Error::other("x")),
            ModelError::config("x", "x"),
            ModelError::Unsupported {
                path: path(),
                feature: text(),
            },
            ModelError::Safetensors {
                path: path(),
                message: text(),
            },
            ModelError::MissingTensor {
                key: text(),
                files: text(),
            },
            ModelError::ShapeMismatch {
                key: text(),
                path: path(),
                expected: vec![],
                found: vec![],
            },
            ModelError::BadDtype {
                key: text(),
                path: path(),
                dtype: text(),
            },
            ModelError::UnusedTensors {
                dir: path(),
                count: 1,
                examples: text(),
            },
            ModelError::Tokenizer {
                path: path(),
                message: text(),
            },
            ModelError::InvalidInput(text()),
            ModelError::Image {
                path: text(),
                message: text(),
            },
            ModelError::ImageWrite {
                path: text(),
                message: text(),
            },
            ModelError::Backend(text()),
            ModelError::Cancelled,
        ];
        for e in &errors {
            assert!(ModelError::ERROR_TYPES.contains(&e.error_type()), "{e:?}");
        }
        for name in ModelError::ERROR_TYPES {
            assert!(errors.iter().any(|e| e.error_type() == *name), "{name}");
        }
    }
}
