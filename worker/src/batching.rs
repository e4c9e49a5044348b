//! Gathering a batch: the job of the entry at hand, then other jobs of the
//! same model whose engine input has the same [`BatchKey`] (size, steps,
//! solver, guided or not), up to `--max-batch` outputs over all of them.
//!
//! Candidates are the entries already delivered to this worker and, while
//! room is left, new entries of the model's stream. A candidate is looked
//! at before it is claimed (its record read, its inputs read and planned):
//! only one that fits is claimed, so a job that does not fit is not marked
//! running while it waits. It stays in the inbox for a later batch, with its
//! key remembered so it is not decoded again.

use std::collections::VecDeque;
use std::time::Instant;

use byteedit_jobs::{Delivery, JobStatus, QueueConsumer, db};
use byteedit_models::BatchKey;

use crate::claim::Claimed;
use crate::delivery::Inbox;
use crate::execution::Member;
use crate::inputs::PreparedEdit;
use crate::recording::Entry;
use crate::worker::Worker;

impl Worker {
    /// The batch that starts with `first`: empty when `first` has nothing to
    /// run (its entry is settled here).
    pub(crate) async fn gather(
        &self,
        first: Delivery,
        consumer: &mut QueueConsumer,
        inbox: &mut Inbox,
    ) -> Vec<Member> {
        let Some(first) = self.take(first, consumer).await else {
            return Vec::new();
        };
        let key = match &first.prepared {
            Ok(prepared) => prepared.request.batch_key(),
            Err(_) => return vec![first],
        };
        let model = first.job.model.clone();
        let mut room = self
            .settings
            .max_batch
            .saturating_sub(first.job.params.num_outputs.max(1));
        let mut batch = vec![first];
        if room == 0 {
            return batch;
        }
        let (mut candidates, others): (VecDeque<_>, VecDeque<_>) = inbox
            .waiting
            .drain(..)
            .partition(|d: &Delivery| d.model == model);
        inbox.waiting = others;
        let mut read_more = true;
        let mut passed = Vec::new();
        while room > 0 {
            let Some(delivery) = candidates.pop_front() else {
                if !std::mem::take(&mut read_more) {
                    break;
                }
                match consumer.more(&model, room as usize).await {
                    Ok(new) => candidates.extend(new),
                    Err(e) => tracing::warn!("queue read failed: {e}"),
                }
                continue;
            };
            let Some(prepared) = self.fits(&delivery, &model, key, room, inbox).await else {
                passed.push(delivery);
                continue;
            };
            let Some(id) = delivery.job else { continue };
            match self.claim(id.into()).await {
                Ok(Claimed::Run(job)) => {
                    room = room.saturating_sub(job.params.num_outputs.max(1));
                    batch.push(Member {
                        delivery,
                        job,
                        claimed: Instant::now(),
                        prepared: Ok(prepared),
                    });
                }
                Ok(Claimed::Skip(entry)) => {
                    self.settle(&consumer.settler(), &delivery, Ok(entry)).await
                }
                Err(e) => {
                    tracing::warn!(job = %id, "cannot claim a job to batch: {e}");
                    passed.push(delivery);
                }
            }
        }
        // What did not join goes back to the front, in its order.
        for delivery in passed.into_iter().chain(candidates).rev() {
            inbox.waiting.push_front(delivery);
        }
        inbox
            .keys
            .retain(|id, _| inbox.waiting.iter().any(|d| d.job == Some(*id)));
        batch
    }

    /// Claims the job of `delivery` and prepares its inputs; `None` when it
    /// has nothing to run here (its entry is settled).
    async fn take(&self, delivery: Delivery, consumer: &QueueConsumer) -> Option<Member> {
        let Some(id) = delivery.job else {
            tracing::warn!(entry = %delivery.entry, "queue entry without a job id; dropping it");
            self.settle(&consumer.settler(), &delivery, Ok(Entry::Acknowledge))
                .await;
            return None;
        };
        match self.claim(id.into()).await {
            Ok(Claimed::Run(job)) => {
                let claimed = Instant::now();
                let prepared = self.prepare(&job).await;
                Some(Member {
                    delivery,
                    job,
                    claimed,
                    prepared,
                })
            }
            Ok(Claimed::Skip(entry)) => {
                self.settle(&consumer.settler(), &delivery, Ok(entry)).await;
                None
            }
            Err(e) => {
                self.settle(&consumer.settler(), &delivery, Err(e)).await;
                None
            }
        }
    }

    /// The inputs of a waiting job that can join a batch of `key` with
    /// `room` outputs left, read without claiming it.
    async fn fits(
        &self,
        delivery: &Delivery,
        model: &str,
        key: BatchKey,
        room: u32,
        inbox: &mut Inbox,
    ) -> Option<PreparedEdit> {
        let id = delivery.job?;
        if inbox.keys.get(&id).is_some_and(|seen| *seen != Some(key)) {
            return None;
        }
        let job = match db::jobs::get(&self.backends.db, id).await {
            Ok(Some(job)) => job,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(job = %id, "cannot read a job to batch: {e}");
                return None;
            }
        };
        // Anything but a plain queued job (a takeover, a canceled one) runs
        // on its own, through the usual claim.
        if job.status != JobStatus::Queued
            || job.model != model
            || job.params.num_outputs.max(1) > room
        {
            return None;
        }
        let prepared = self.prepare(&job).await.ok();
        let found = prepared.as_ref().map(|p| p.request.batch_key());
        inbox.keys.insert(id, found);
        prepared.filter(|_| found == Some(key))
    }
}
