//! Holding the running jobs: the set naming them with their cancel flags,
//! the heartbeat that renews their leases (and reads cancel requests from
//! Postgres), and the pub/sub listener that stops one on a cancel request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use byteedit_jobs::{JobEvent, JobId, db, events};
use futures_util::StreamExt;

use crate::worker::Worker;

/// How long to wait before subscribing again after the subscription ended.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// The jobs this worker runs now (one batch), each with its cancel flag:
/// shared by the delivery loop, the heartbeat, the cancel listener and the
/// handle's shutdown.
#[derive(Clone, Default)]
pub(crate) struct RunningJobs(Arc<Mutex<HashMap<JobId, Arc<AtomicBool>>>>);

impl RunningJobs {
    fn slots(&self) -> MutexGuard<'_, HashMap<JobId, Arc<AtomicBool>>> {
        // Nothing holding the lock can leave it half-written: a poisoned
        // lock is still a good one.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn insert(&self, job: JobId, cancel: Arc<AtomicBool>) {
        self.slots().insert(job, cancel);
    }

    pub fn remove(&self, job: JobId) {
        self.slots().remove(&job);
    }

    pub fn ids(&self) -> Vec<JobId> {
        self.slots().keys().copied().collect()
    }

    /// Stops `job` at its next step, if it is running here.
    pub fn cancel(&self, job: JobId) {
        if let Some(cancel) = self.slots().get(&job) {
            cancel.store(true, Ordering::Relaxed);
        }
    }

    /// Stops every running job (shutdown).
    pub fn cancel_all(&self) {
        for cancel in self.slots().values() {
            cancel.store(true, Ordering::Relaxed);
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
            for job in self.running.ids() {
                match db::jobs::heartbeat(db, job, self.id).await {
                    // Cancel asked, or the lease was lost to another worker:
                    // either way, stop spending the device on it.
                    Ok(Some(true)) | Ok(None) => self.running.cancel(job),
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
                            self.running.cancel(message.job.into());
                        }
                    }
                }
                Err(e) => tracing::warn!("cannot subscribe to cancel requests: {e}"),
            }
            tokio::time::sleep(RESUBSCRIBE).await;
        }
    }
}
