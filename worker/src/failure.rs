//! Why a run produced no result, and which failure code each cause gets
//! (the codes and their table: `byteedit_jobs::FailureCode`,
//! `docs/ARCHITECTURE.md`).

use byteedit_jobs::{FailureCode, JobError, JobsError};
use byteedit_models::ModelError;
use tokio::task::JoinError;

use crate::engine::EngineError;
use crate::error::{WorkerError, panic_message};

/// Why a job did not succeed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Stopped on request (or at shutdown, to be handed back).
    Canceled,
    /// Recorded on the job: it fails, or, for a code that
    /// [`FailureCode::is_retried`], runs again after a backoff until the
    /// attempt limit.
    Failed(JobError),
    /// The worker cannot go on with it (the entry is left unacknowledged).
    Worker(WorkerError),
}

impl Failure {
    fn failed(code: FailureCode, message: impl Into<String>) -> Self {
        Self::Failed(JobError::new(code, message))
    }

    /// The engine's own error names are the codes (`ModelError::error_type`).
    pub fn model(e: ModelError) -> Self {
        if matches!(e, ModelError::Cancelled) {
            return Self::Canceled;
        }
        // Every name but `canceled` is a code (a test checks): the fallback
        // is for an engine newer than this table.
        let code = e.error_type().parse().unwrap_or(FailureCode::EngineError);
        Self::failed(code, e.to_string())
    }

    pub fn engine(e: EngineError) -> Self {
        match e {
            EngineError::Model(e) => Self::model(e),
            EngineError::Panicked(_) => Self::failed(
                FailureCode::PoisonInput,
                format!("{e}; it will not be retried"),
            ),
            EngineError::NotServed(_) => Self::failed(FailureCode::ModelNotServed, e.to_string()),
        }
    }

    pub fn storage(e: JobsError) -> Self {
        if e.is_not_found() {
            // The input is gone for good: another attempt cannot help.
            return Self::failed(
                FailureCode::InputMissing,
                format!("the job's input images are gone: {e}"),
            );
        }
        Self::failed(
            FailureCode::StorageError,
            format!("cannot read or write the job's images: {e}"),
        )
    }

    /// A blocking step (decoding, encoding) panicked or was lost; a panic is
    /// the input's doing, as in the engine.
    pub fn blocking(step: &'static str) -> impl FnOnce(JoinError) -> Self {
        move |e| {
            if e.is_panic() {
                let why = panic_message(&*e.into_panic());
                tracing::error!("{step} panicked: {why}");
                Self::engine(EngineError::Panicked(why))
            } else {
                Self::Worker(WorkerError::StepCancelled { step })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(failure: Failure) -> Option<FailureCode> {
        match failure {
            Failure::Failed(error) => error.failure_code(),
            _ => None,
        }
    }

    #[test]
    fn every_model_error_type_is_a_failure_code() {
        for name in ModelError::ERROR_TYPES.iter().filter(|n| **n != "canceled") {
            assert!(name.parse::<FailureCode>().is_ok(), "`{name}`");
        }
        assert!(matches!(
            Failure::model(ModelError::Cancelled),
            Failure::Canceled
        ));
    }

    #[test]
    fn each_cause_has_its_own_code() {
        let bad = ModelError::InvalidInput("no".into());
        assert_eq!(
            code_of(Failure::model(bad)),
            Some(FailureCode::InvalidInput)
        );
        let write = ModelError::ImageWrite {
            path: "out".into(),
            message: "no".into(),
        };
        assert_eq!(
            code_of(Failure::model(write)),
            Some(FailureCode::OutputEncodingFailed)
        );
        let poison = Failure::engine(EngineError::Panicked("boom".into()));
        let Failure::Failed(error) = poison else {
            panic!("{poison:?}")
        };
        assert_eq!(error.code, "poison_input");
        assert!(
            error.message.contains("crashed on this input (boom)"),
            "{error:?}"
        );
        assert_eq!(
            code_of(Failure::engine(EngineError::NotServed("x".into()))),
            Some(FailureCode::ModelNotServed)
        );
    }
}
