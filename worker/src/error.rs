//! Errors of the worker process itself. A job's own failure (bad input, an
//! engine error) is not one of these: it is recorded on the job, with a
//! [`byteedit_jobs::FailureCode`].

use std::any::Any;

use byteedit_jobs::JobsError;
use byteedit_models::ModelError;
use thiserror::Error;
use tokio::task::JoinError;

#[derive(Debug, Error)]
pub enum WorkerError {
    #[error(transparent)]
    Jobs(#[from] JobsError),
    #[error("model `{name}`: {source}")]
    Load { name: String, source: ModelError },
    /// A `registry:` model that is not registered.
    #[error("model `{name}`: no registered version {reference} (see `byteedit versions list`)")]
    NotRegistered { name: String, reference: String },
    #[error("two models are named `{0}`; give each --model a different NAME")]
    DuplicateModel(String),
    #[error("cannot start the engine thread: {0}")]
    EngineSpawn(#[source] std::io::Error),
    /// The engine thread ended before saying the models were loaded.
    #[error("the engine thread ended while loading the models (it panicked: see the log)")]
    EngineLoadAborted,
    /// The blocking task that waits for the engine to load panicked or was
    /// cancelled.
    #[error("the task starting the engine failed: {0}")]
    EngineStartFailed(#[source] JoinError),
    /// A job was sent to an engine thread that is no longer running.
    #[error("the engine thread has stopped; it takes no more jobs")]
    EngineStopped,
    /// The engine thread took a job and ended without answering.
    #[error("the engine thread stopped before answering for a job of model `{model}`")]
    EngineNoAnswer { model: String },
    /// A blocking step of a job (decoding, encoding) was cancelled, as
    /// happens when the runtime shuts down under it.
    #[error("{step} was cancelled before it finished (the runtime is shutting down)")]
    StepCancelled { step: &'static str },
    /// The worker's queue loop panicked or was aborted.
    #[error("the worker's queue loop ended abnormally: {0}")]
    LoopFailed(#[source] JoinError),
}

/// The message of a caught panic (`panic!` gives a `String` or a `&str`).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_read_from_either_payload() {
        let owned = std::panic::catch_unwind(|| panic!("{}", String::from("owned"))).unwrap_err();
        let literal = std::panic::catch_unwind(|| panic!("literal")).unwrap_err();
        let other = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(&*owned), "owned");
        assert_eq!(panic_message(&*literal), "literal");
        assert_eq!(panic_message(&*other), "unknown panic");
    }
}
