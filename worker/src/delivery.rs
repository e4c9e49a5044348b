//! The queue loop: read new entries (and, every half lease, re-add entries
//! Redis lost and take over entries held too long elsewhere), gather a batch
//! from each (claim → prepare, plus compatible jobs: [`crate::batching`]),
//! run it ([`crate::execution`]), and settle each entry (acknowledge, leave
//! pending, or requeue).
//!
//! Redis may deliver several entries at once (one per served model's stream,
//! or more of one stream when batching): all of them are pending on this
//! consumer from then on, so they wait in [`Inbox`] and run one batch after
//! the other, and whatever is still there at shutdown is requeued for the
//! other workers.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use byteedit_jobs::{Delivery, QueueConsumer, QueueSettler, db};
use byteedit_models::BatchKey;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::WorkerError;
use crate::recording::Entry;
use crate::worker::Worker;

/// How long one queue read blocks; also the longest a stop request waits.
const POLL: Duration = Duration::from_secs(1);

/// Entries delivered to this consumer and not yet run, oldest first.
#[derive(Default)]
pub(crate) struct Inbox {
    pub waiting: VecDeque<Delivery>,
    last_reclaim: Option<Instant>,
    /// The batch key of waiting jobs already looked at (`None`: their
    /// inputs did not prepare), so a job that did not fit one batch is not
    /// read and decoded again for the next.
    pub keys: HashMap<uuid::Uuid, Option<BatchKey>>,
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
        let queue = consumer.settler();
        // Jobs whose engine part is over, being stored and recorded.
        let mut recording: Vec<JoinHandle<()>> = Vec::new();
        while !*stopped.borrow() {
            recording.retain(|task| !task.is_finished());
            let Some(delivery) = self.next_delivery(&mut consumer, &mut inbox).await else {
                continue;
            };
            let batch = self.gather(delivery, &mut consumer, &mut inbox).await;
            recording.extend(self.run_batch(&queue, batch).await);
        }
        for task in recording {
            if let Err(e) = task.await {
                // Not settled: the entry stays pending for recovery.
                tracing::error!("a job's recording task failed: {e}");
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

    /// Settles a job's entry once its outcome is recorded; an outcome that
    /// could not be recorded leaves the entry pending, for recovery.
    pub(crate) async fn settle(
        &self,
        queue: &QueueSettler,
        delivery: &Delivery,
        entry: Result<Entry, WorkerError>,
    ) {
        let settled = match entry {
            Ok(Entry::Acknowledge) => queue.ack(delivery).await,
            Ok(Entry::LeavePending) => Ok(()),
            Ok(Entry::Requeue) => queue.requeue(delivery).await,
            Err(e) => {
                tracing::error!(entry = %delivery.entry, "cannot record job: {e}");
                return;
            }
        };
        if let Err(e) = settled {
            // Not acknowledged: the entry stays pending for recovery.
            tracing::error!(entry = %delivery.entry, "cannot settle the queue entry: {e}");
        }
    }
}
