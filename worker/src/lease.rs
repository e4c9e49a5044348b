//! Holding the running job: the slot naming it and its cancel flag, the
//! heartbeat that renews its lease (and reads cancel requests from
//! Postgres), and the pub/sub listener that stops it on a cancel request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use byteedit_jobs::{JobEvent, JobId, db, events};
use futures_util::StreamExt;

use crate::worker::Worker;

/// How long to wait before subscribing again after the subscription ended.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// The job this worker runs now, with its cancel flag: shared by the
/// delivery loop, the heartbeat, the cancel listener and the handle's
/// shutdown.
#[derive(Clone, Default)]
pub(crate) struct CurrentJob(Arc<Mutex<Option<Running>>>);

struct Running {
    job: JobId,
    cancel: Arc<AtomicBool>,
}

impl CurrentJob {
    fn slot(&self) -> MutexGuard<'_, Option<Running>> {
        // Nothing holding the lock can leave it half-written: a poisoned
        // lock is still a good one.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set(&self, job: JobId, cancel: Arc<AtomicBool>) {
        *self.slot() = Some(Running { job, cancel });
    }

    pub fn clear(&self) {
        *self.slot() = None;
    }

    pub fn id(&self) -> Option<JobId> {
        self.slot().as_ref().map(|r| r.job)
    }

    /// Stops `job` at its next step, if it is the one running.
    pub fn cancel(&self, job: JobId) {
        if let Some(running) = self.slot().as_ref()
            && running.job == job
        {
            running.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// Stops whatever job is running (shutdown).
    pub fn cancel_any(&self) {
        if let Some(running) = self.slot().as_ref() {
            running.cancel.store(true, Ordering::Relaxed);
        }
    }
}

impl Worker {
    /// Marks the worker alive, and its running job (renewing the lease),
    /// every `settings.heartbeat`.
    pub(crate) async fn heartbeat(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.settings.heartbeat);
        loop {
            ticks.tick().await;
            let db = &self.backends.db;
            if let Err(e) = db::models::worker_seen(db, self.id).await {
                tracing::warn!("heartbeat failed: {e}");
            }
            if let Some(job) = self.current.id() {
                match db::jobs::heartbeat(db, job, self.id).await {
                    // Cancel asked, or the lease was lost to another worker:
                    // either way, stop spending the device on it.
                    Ok(Some(true)) | Ok(None) => self.current.cancel(job),
                    Ok(Some(false)) => {}
                    // Not a lost lease: Postgres did not answer (an outage).
                    // The job goes on; the result is written once Postgres is
                    // back, and refused only if another worker took over.
                    Err(e) => tracing::warn!(job = %job, "job heartbeat failed: {e}"),
                }
            }
        }
    }

    /// Cancel requests arrive over pub/sub at once; the heartbeat also reads
    /// them from Postgres, in case a message was missed.
    pub(crate) async fn listen_for_cancels(self: Arc<Self>) {
        loop {
            match events::subscribe(&self.backends.redis, &self.backends.prefix).await {
                Ok(stream) => {
                    let mut stream = std::pin::pin!(stream);
                    while let Some(message) = stream.next().await {
                        if message.event == JobEvent::CancelRequested {
                            self.current.cancel(message.job.into());
                        }
                    }
                }
                Err(e) => tracing::warn!("cannot subscribe to cancel requests: {e}"),
            }
            tokio::time::sleep(RESUBSCRIBE).await;
        }
    }
}
