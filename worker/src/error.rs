//! Errors of the worker process itself. A job's own failure (bad input, an
//! engine error) is not one of these: it is recorded on the job.

use byteedit_jobs::JobsError;
use byteedit_models::ModelError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum WorkerError {
    #[error(transparent)]
    Jobs(#[from] JobsError),
    #[error("model `{name}`: {source}")]
    Load { name: String, source: ModelError },
    #[error("two models are named `{0}`; give each --model a different NAME")]
    DuplicateModel(String),
    #[error("the engine thread stopped")]
    EngineGone,
}
