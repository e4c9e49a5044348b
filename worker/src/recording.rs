//! Recording a run's outcome in Postgres (success, failure, cancel), with
//! retries while Postgres is unreachable; the retry-with-backoff policy for
//! failures worth another attempt; handing a job back at shutdown; and the
//! events that announce each.
//!
//! Every write is guarded on "still this worker's running job": `false`
//! means another worker took the job over (fencing), and its queue entry is
//! then left to that worker.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use byteedit_jobs::db::jobs::{NewOutput, SuccessOutcome};
use byteedit_jobs::{
    EventMessage, JobError, JobEvent, JobRecord, JobStatus, JobTimings, JobsError, db, events,
};

use crate::error::WorkerError;
use crate::execution::Executed;
use crate::failure::Failure;
use crate::worker::Worker;

/// First and longest wait between two tries of a Postgres write while the
/// database is unreachable.
const DB_RETRY_FIRST: Duration = Duration::from_millis(200);
const DB_RETRY_MAX: Duration = Duration::from_secs(5);

/// What to do with a job's queue entry once its outcome is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Done with (or another entry will be added when due): acknowledge it.
    Acknowledge,
    /// The job is another worker's now, or running under a live lease:
    /// leave the entry pending, to be found again if that worker dies.
    LeavePending,
    /// Add a fresh entry, then acknowledge this one: any worker takes the
    /// job now.
    Requeue,
}

/// The wait before attempt `n + 1` of a job whose attempt `n` failed for a
/// transient reason: `base × 2^(n - 1)`, at most `max`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << exponent).min(self.max)
    }
}

impl Worker {
    /// Writes the outcome of a run; says what becomes of its entry.
    pub(crate) async fn record(
        &self,
        job: &JobRecord,
        claimed: Instant,
        outcome: Result<Executed, Failure>,
    ) -> Result<Entry, WorkerError> {
        let recorded = match outcome {
            Ok(executed) => self.record_success(job, claimed, executed).await?,
            Err(Failure::Canceled) if self.handing_back.load(Ordering::Relaxed) => {
                return self.hand_back(job).await;
            }
            Err(Failure::Canceled) => self.record_canceled(job).await?,
            Err(Failure::Failed(error)) => match error.failure_code() {
                Some(code) if code.is_retried() => {
                    if job.attempts < self.settings.max_attempts {
                        return self.retry_later(job, error).await;
                    }
                    let message = format!(
                        "{} (gave up after {} attempts)",
                        error.message, job.attempts
                    );
                    self.record_failed(job, JobError { message, ..error })
                        .await?
                }
                _ => self.record_failed(job, error).await?,
            },
            Err(Failure::Worker(e)) => return Err(e),
        };
        Ok(self.settled(job, recorded))
    }

    /// The entry of a job whose final write went through (`recorded`) or was
    /// refused because the lease was lost.
    fn settled(&self, job: &JobRecord, recorded: bool) -> Entry {
        if recorded {
            Entry::Acknowledge
        } else {
            tracing::warn!(job = %job.id, "lost the job's lease; the result was refused");
            Entry::LeavePending
        }
    }

    async fn record_success(
        &self,
        job: &JobRecord,
        claimed: Instant,
        executed: Executed,
    ) -> Result<bool, WorkerError> {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let timings = JobTimings {
            queue_ms: job
                .started_at
                .map(|s| (s - job.created_at).num_microseconds().unwrap_or(0) as f64 / 1000.0)
                .unwrap_or(0.0),
            model_ms: ms(executed.output.model_time),
            step_ms: ms(executed.output.step_time),
            run_ms: ms(claimed.elapsed()),
            batch_outputs: executed.output.batch_outputs,
        };
        let db = &self.backends.db;
        let (stored, timings_ref, geometry) = (&executed.stored, &timings, &executed.geometry);
        let outcome = self
            .persist("record the result", move || {
                db::jobs::succeed(db, job.job_id(), self.id, stored, timings_ref, geometry)
            })
            .await?;
        Ok(match outcome {
            SuccessOutcome::Succeeded => {
                tracing::info!(job = %job.id, ms = timings.run_ms, "job succeeded");
                self.publish(job, JobEvent::Succeeded { timings }).await;
                true
            }
            SuccessOutcome::Canceled => {
                // The cancel came after the last step: its 202 promised
                // `canceled`, so the outputs are not published.
                tracing::info!(job = %job.id, "job canceled after its last step; its outputs are discarded");
                self.publish(job, JobEvent::Canceled).await;
                self.discard_outputs(job, &executed.stored).await;
                true
            }
            SuccessOutcome::Refused => false,
        })
    }

    /// Deletes the files of an attempt whose outputs were not recorded. Best
    /// effort: a file left behind is unreachable (no row names it) and goes
    /// with the job's folder at retention.
    async fn discard_outputs(&self, job: &JobRecord, stored: &[NewOutput]) {
        for output in stored {
            if let Err(e) = self.backends.storage.delete(&output.storage_key).await {
                tracing::warn!(job = %job.id, key = %output.storage_key, "cannot delete a discarded output: {e}");
            }
        }
    }

    /// Ends the job `canceled` and says so.
    async fn record_canceled(&self, job: &JobRecord) -> Result<bool, WorkerError> {
        let db = &self.backends.db;
        let done = self
            .persist("record the cancel", || {
                db::jobs::finish_unsuccessfully(
                    db,
                    job.job_id(),
                    self.id,
                    JobStatus::Canceled,
                    None,
                    None,
                )
            })
            .await?;
        if done {
            tracing::info!(job = %job.id, "job canceled while running");
            self.publish(job, JobEvent::Canceled).await;
        }
        Ok(done)
    }

    /// Ends the job `failed` with `error` and says so.
    pub(crate) async fn record_failed(
        &self,
        job: &JobRecord,
        error: JobError,
    ) -> Result<bool, WorkerError> {
        let db = &self.backends.db;
        let error_ref = &error;
        let done = self
            .persist("record the failure", move || {
                db::jobs::finish_unsuccessfully(
                    db,
                    job.job_id(),
                    self.id,
                    JobStatus::Failed,
                    Some(error_ref),
                    None,
                )
            })
            .await?;
        if done {
            tracing::warn!(job = %job.id, code = %error.code, "job failed: {}", error.message);
            self.publish(job, JobEvent::Failed { error }).await;
        }
        Ok(done)
    }

    /// A transient failure: the job goes back to the queue and runs again
    /// after the policy's backoff.
    async fn retry_later(&self, job: &JobRecord, error: JobError) -> Result<Entry, WorkerError> {
        let delay = self.settings.retry.delay(job.attempts);
        let db = &self.backends.db;
        let secs = delay.as_secs_f64();
        let requeued = self
            .persist("requeue the job", || {
                db::jobs::retry_later(db, job.job_id(), self.id, secs)
            })
            .await?;
        if !requeued {
            // A cancel was asked meanwhile (honour it), or the lease was lost.
            let canceled = self.record_canceled(job).await?;
            return Ok(self.settled(job, canceled));
        }
        tracing::warn!(
            job = %job.id, attempt = job.attempts, code = %error.code,
            "attempt failed: {}; retrying in {delay:?}", error.message
        );
        // The entry is replaced by a fresh one when the job is due; if this
        // worker is gone by then, the sweep of any worker adds it.
        let queue = self.backends.queue();
        let (model, id) = (job.model.clone(), job.id);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = queue.enqueue(&model, id).await {
                tracing::warn!(job = %id, "cannot enqueue the retry (the sweep will): {e}");
            }
        });
        Ok(Entry::Acknowledge)
    }

    /// Shutdown after the grace period: the stopped job goes back to the
    /// queue, uncounted, with a fresh entry so another worker takes it now.
    async fn hand_back(&self, job: &JobRecord) -> Result<Entry, WorkerError> {
        // Not `persist`: at shutdown there is no waiting out an outage (the
        // lease brings the job back).
        if !db::jobs::hand_back(&self.backends.db, job.job_id(), self.id).await? {
            // A cancel asked meanwhile wins; a lost lease means nothing to do.
            return Ok(if self.record_canceled(job).await? {
                Entry::Acknowledge
            } else {
                Entry::LeavePending
            });
        }
        tracing::info!(job = %job.id, "job handed back to the queue");
        Ok(Entry::Requeue)
    }

    /// Runs a Postgres operation until it goes through: while the database is
    /// unreachable the worker keeps its job and waits with backoff, instead
    /// of losing finished work. Gives up only when handing the job back at
    /// shutdown (the lease then brings the job back).
    pub(crate) async fn persist<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, WorkerError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, JobsError>>,
    {
        let mut delay = DB_RETRY_FIRST;
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(e) if e.is_unavailable() && !self.handing_back.load(Ordering::Relaxed) => {
                    tracing::warn!("cannot {what} ({e}); retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(DB_RETRY_MAX);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Tells the API (and through it, the job's followers) what happened.
    /// Best effort: Postgres has the state, followers re-read it.
    pub(crate) async fn publish(&self, job: &JobRecord, event: JobEvent) {
        let message = EventMessage {
            job: job.id,
            model: job.model.clone(),
            task: job.task,
            event,
        };
        if let Err(e) = events::publish(&self.backends.conn, &self.backends.prefix, &message).await
        {
            tracing::warn!(job = %job.id, "cannot publish {}: {e}", message.event.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_per_attempt_up_to_its_cap() {
        let policy = RetryPolicy {
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
        };
        let delays: Vec<u64> = (1..=7).map(|n| policy.delay(n).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(60));
    }
}
