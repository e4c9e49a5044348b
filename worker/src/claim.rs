//! The claim on a delivered job: Postgres decides whether this worker runs
//! it (`Claimed`), leaves its entry pending (`Busy`: running elsewhere under
//! a live lease) or acknowledges it (`Gone`, `NotYet`); and a job started
//! too many times fails here instead of crashing another worker.

use byteedit_jobs::db::Claim;
use byteedit_jobs::{FailureCode, JobError, JobId, JobRecord, db};

use crate::error::WorkerError;
use crate::recording::Entry;
use crate::worker::Worker;

/// What a claim decided.
pub(crate) enum Claimed {
    /// This worker runs the job now (attempt `job.attempts`).
    Run(Box<JobRecord>),
    /// Nothing to run; the entry goes as said.
    Skip(Entry),
}

impl Worker {
    pub(crate) async fn claim(&self, id: JobId) -> Result<Claimed, WorkerError> {
        let lease = self.settings.lease.as_secs_f64();
        let db = &self.backends.db;
        let claim = self
            .persist("claim", || db::jobs::claim(db, id, self.id, lease))
            .await?;
        let job = match claim {
            Claim::Claimed(job) => job,
            Claim::Busy => {
                // Its worker is alive: the entry stays pending (now ours) and
                // is looked at again after another lease.
                tracing::debug!(job = %id, "job is running elsewhere with a live lease");
                return Ok(Claimed::Skip(Entry::LeavePending));
            }
            Claim::Gone => {
                // Canceled while queued, or finished: nothing to run.
                tracing::debug!(job = %id, "job is no longer queued; skipping");
                return Ok(Claimed::Skip(Entry::Acknowledge));
            }
            Claim::NotYet => {
                // A duplicate entry of a job waiting out its retry backoff:
                // the job is enqueued again when it is due.
                tracing::debug!(job = %id, "job waits for its retry; skipping the entry");
                return Ok(Claimed::Skip(Entry::Acknowledge));
            }
        };
        if job.attempts > self.settings.max_attempts {
            // Each start before this one ended with its worker gone: the job
            // itself may be what kills them.
            let error = JobError::new(
                FailureCode::WorkerLost,
                format!(
                    "the job was started {} times and its worker stopped answering each time; it may crash the worker",
                    job.attempts - 1
                ),
            );
            self.record_failed(&job, error).await?;
            return Ok(Claimed::Skip(Entry::Acknowledge));
        }
        if job.attempts > 1 {
            tracing::warn!(job = %job.id, attempt = job.attempts, "taking over a job whose worker was lost");
        }
        Ok(Claimed::Run(job))
    }
}
