//! The queue loop: read new entries (and, every half lease, re-add entries
//! Redis lost and take over entries held too long elsewhere), run each
//! delivered job in turn (claim → execute → record), and settle its entry
//! (acknowledge, leave pending, or requeue).
//!
//! Redis may deliver several entries at once (one per served model's stream):
//! all of them are pending on this consumer from then on, so they wait in
//! [`Inbox`] and run one after the other, and whatever is still there at
//! shutdown is requeued for the other workers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use byteedit_jobs::{Delivery, JobEvent, JobRecord, QueueConsumer, db};
use tokio::sync::watch;

use crate::claim::Claimed;
use crate::error::WorkerError;
use crate::recording::Entry;
use crate::worker::Worker;

/// How long one queue read blocks; also the longest a stop request waits.
const POLL: Duration = Duration::from_secs(1);

/// Entries delivered to this consumer and not yet run, oldest first.
#[derive(Default)]
struct Inbox {
    waiting: VecDeque<Delivery>,
    last_reclaim: Option<Instant>,
}

impl Worker {
    /// Runs until `stopped` says so; then requeues what it was given but did
    /// not start, and marks the worker stopped.
    pub(crate) async fn run(
        self: Arc<Self>,
        mut consumer: QueueConsumer,
        stopped: watch::Receiver<bool>,
    ) -> Result<(), WorkerError> {
        let beats = tokio::spawn(self.clone().heartbeat());
        let cancels = tokio::spawn(self.clone().listen_for_cancels());
        let mut inbox = Inbox::default();
        while !*stopped.borrow() {
            let Some(delivery) = self.next_delivery(&mut consumer, &mut inbox).await else {
                continue;
            };
            if let Err(e) = self.dispatch(&consumer, &delivery).await {
                // Not acknowledged: the entry stays pending for recovery.
                tracing::error!(entry = %delivery.entry, "cannot record job: {e}");
            }
        }
        self.requeue_unstarted(&consumer, inbox.waiting).await;
        beats.abort();
        cancels.abort();
        if let Err(e) = db::models::worker_stopped(&self.backends.db, self.id).await {
            tracing::warn!("cannot record worker stop: {e}");
        }
        tracing::info!(worker = %self.id, name = %self.name, "worker stopped");
        Ok(())
    }

    /// The next entry to run: one already delivered, else one taken over
    /// (when a reclaim is due), else a new one (waiting up to [`POLL`]).
    async fn next_delivery(
        &self,
        consumer: &mut QueueConsumer,
        inbox: &mut Inbox,
    ) -> Option<Delivery> {
        if let Some(delivery) = inbox.waiting.pop_front() {
            return Some(delivery);
        }
        // Entries held too long by another consumer: its worker may be dead.
        let lease = self.settings.lease;
        if inbox.last_reclaim.is_none_or(|t| t.elapsed() >= lease / 2) {
            inbox.last_reclaim = Some(Instant::now());
            if let Err(e) = self.requeue_lost().await {
                tracing::warn!("queue sweep failed: {e}");
            }
            match consumer.reclaim(lease).await {
                Ok(Some(d)) => {
                    tracing::info!(entry = %d.entry, job = ?d.job, "took over an entry held too long");
                    return Some(d);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("queue read failed: {e}; retrying");
                    tokio::time::sleep(POLL).await;
                    return None;
                }
            }
        }
        match consumer.next(POLL).await {
            Ok(delivered) => {
                inbox.waiting.extend(delivered);
                inbox.waiting.pop_front()
            }
            Err(e) => {
                tracing::warn!("queue read failed: {e}; retrying");
                tokio::time::sleep(POLL).await;
                None
            }
        }
    }

    /// Re-adds queue entries that Redis lost (a restart without its data, a
    /// failed `XADD`): every job Postgres says is waiting, or running with a
    /// dead lease, and that has no entry in its stream. A duplicate entry is
    /// harmless: the claim in Postgres runs each job once.
    async fn requeue_lost(&self) -> Result<(), WorkerError> {
        let models: Vec<String> = self.engine.models.iter().map(|m| m.name.clone()).collect();
        let lease = self.settings.lease.as_secs_f64();
        let waiting = db::jobs::awaiting_delivery(&self.backends.db, &models, lease, lease).await?;
        if waiting.is_empty() {
            return Ok(());
        }
        let queue = self.backends.queue();
        for model in &models {
            let present = queue.queued_ids(model).await?;
            for (job, _) in waiting
                .iter()
                .filter(|(j, m)| m == model && !present.contains(j))
            {
                tracing::warn!(job = %job, %model, "job had no queue entry; adding it again");
                queue.enqueue(model, *job).await?;
            }
        }
        Ok(())
    }

    /// Entries delivered but not started when the worker stops go back to
    /// the other workers now, rather than a lease later (the reclaim).
    async fn requeue_unstarted(&self, consumer: &QueueConsumer, waiting: VecDeque<Delivery>) {
        for delivery in waiting {
            match consumer.requeue(&delivery).await {
                Ok(()) => tracing::info!(job = ?delivery.job, "gave back a job not started"),
                Err(e) => tracing::warn!(
                    entry = %delivery.entry,
                    "cannot give back a job not started (it is reclaimed after a lease): {e}"
                ),
            }
        }
    }

    /// One delivered entry: claim its job, run it if it is ours, settle the
    /// entry.
    async fn dispatch(
        &self,
        consumer: &QueueConsumer,
        delivery: &Delivery,
    ) -> Result<(), WorkerError> {
        let entry = match delivery.job {
            None => {
                tracing::warn!(entry = %delivery.entry, "queue entry without a job id; dropping it");
                Entry::Acknowledge
            }
            Some(id) => match self.claim(id.into()).await? {
                Claimed::Run(job) => self.run_job(&job).await?,
                Claimed::Skip(entry) => entry,
            },
        };
        match entry {
            Entry::Acknowledge => consumer.ack(delivery).await?,
            Entry::LeavePending => {}
            Entry::Requeue => consumer.requeue(delivery).await?,
        }
        Ok(())
    }

    /// Runs a claimed job and records its outcome, holding its lease
    /// meanwhile.
    async fn run_job(&self, job: &JobRecord) -> Result<Entry, WorkerError> {
        let claimed = Instant::now();
        // A cancel asked before a takeover still holds.
        let cancel = Arc::new(AtomicBool::new(job.cancel_requested));
        self.current.set(job.job_id(), cancel.clone());
        self.publish(job, JobEvent::Started).await;
        tracing::info!(job = %job.id, model = %job.model, task = %job.task, "job started");
        let outcome = self.execute(job, cancel).await;
        let entry = self.record(job, claimed, outcome).await;
        // Cleared only now: until the result is written the heartbeat keeps
        // renewing the lease, so a worker waiting out a Postgres outage still
        // holds its job when Postgres returns.
        self.current.clear();
        entry
    }
}
