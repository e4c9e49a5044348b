//! A batch's run: each member's inputs were read and planned when it was
//! gathered ([`crate::batching`]); here the members start (lease slot,
//! `started` event, progress relay), go to the engine as one batch, and each
//! finishes in a task of its own as its answer comes: outputs encoded as PNG
//! and stored, the outcome recorded ([`crate::recording`]), its queue entry
//! settled. A cancelled member finishes while the rest
//! still run, and a batch's outputs are stored while the next one denoises.

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use byteedit_jobs::db::jobs::NewOutput;
use byteedit_jobs::job::keys;
use byteedit_jobs::{
    Backends, Delivery, EventMessage, Geometry, JobEvent, JobRecord, QueueSettler, WorkerId, db,
    events,
};
use byteedit_models::ModelError;
use bytes::Bytes;
use image::{ImageFormat, RgbImage};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::engine::{Answer, EngineJob, EngineOutput};
use crate::error::WorkerError;
use crate::failure::Failure;
use crate::inputs::{PreparedEdit, prepare};
use crate::worker::Worker;

/// Progress goes to Postgres at most this often (every step goes to Redis).
const PROGRESS_WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// A job this worker claimed, with its queue entry and its engine input
/// (or why it has none).
pub(crate) struct Member {
    pub delivery: Delivery,
    pub job: Box<JobRecord>,
    pub claimed: Instant,
    pub prepared: Result<PreparedEdit, Failure>,
}

/// A run that produced its outputs, stored but not yet recorded.
pub(crate) struct Executed {
    pub output: EngineOutput,
    pub stored: Vec<NewOutput>,
    pub geometry: Geometry,
}

/// A member on its way through the engine.
struct InFlight {
    answer: Answer,
    geometry: Geometry,
    /// The progress relay: it ends when the engine drops the job.
    forward: JoinHandle<()>,
}

impl Worker {
    /// Runs the members as one engine batch and returns once the engine is
    /// done with it. Each member finishes in a task of its own (outputs
    /// stored, outcome recorded) as soon as its answer comes, so the next
    /// batch denoises while this one's outputs are encoded and stored; the
    /// tasks also settle each job's queue entry.
    pub(crate) async fn run_batch(
        self: &Arc<Self>,
        queue: &QueueSettler,
        members: Vec<Member>,
    ) -> Vec<JoinHandle<()>> {
        let mut finishing = Vec::new();
        let mut engine_jobs = Vec::new();
        let mut started = Vec::new();
        for member in members {
            // A cancel asked before a takeover still holds.
            let cancel = Arc::new(AtomicBool::new(member.job.cancel_requested));
            self.running.insert(member.job.job_id(), cancel.clone());
            self.publish(&member.job, JobEvent::Started).await;
            tracing::info!(job = %member.job.id, model = %member.job.model, task = %member.job.task, "job started");
            match member.prepared {
                Ok(prepared) => {
                    let (job, geometry, forward) = self.engine_job(&member.job, prepared, cancel);
                    engine_jobs.push(job);
                    started.push((
                        member.delivery,
                        member.job,
                        member.claimed,
                        (geometry, forward),
                    ));
                }
                Err(failure) => {
                    let (worker, queue) = (self.clone(), queue.clone());
                    let (delivery, job, claimed) = (member.delivery, member.job, member.claimed);
                    finishing.push(tokio::spawn(async move {
                        worker
                            .conclude(&queue, &delivery, &job, claimed, Err(failure))
                            .await
                    }));
                }
            }
        }
        if started.is_empty() {
            return finishing;
        }
        let model = started[0].1.model.clone();
        if engine_jobs.len() > 1 {
            tracing::info!(%model, jobs = engine_jobs.len(), "running jobs as one batch");
        }
        let (answers, free) = match self.engine.submit(&model, engine_jobs) {
            Ok(submitted) => (
                submitted.answers.into_iter().map(Some).collect(),
                Some(submitted.done),
            ),
            Err(_) => (started.iter().map(|_| None).collect::<Vec<_>>(), None),
        };
        for ((delivery, job, claimed, (geometry, forward)), answer) in
            started.into_iter().zip(answers)
        {
            let (worker, queue) = (self.clone(), queue.clone());
            finishing.push(tokio::spawn(async move {
                let outcome = match answer {
                    Some(answer) => {
                        worker
                            .finish(
                                &job,
                                InFlight {
                                    answer,
                                    geometry,
                                    forward,
                                },
                            )
                            .await
                    }
                    None => Err(Failure::Worker(WorkerError::EngineStopped)),
                };
                worker
                    .conclude(&queue, &delivery, &job, claimed, outcome)
                    .await
            }));
        }
        if let Some(free) = free {
            // Also answered if the engine thread dies.
            let _ = free.await;
        }
        finishing
    }

    /// Records a member's outcome, lets go of its lease and settles its
    /// queue entry.
    async fn conclude(
        &self,
        queue: &QueueSettler,
        delivery: &Delivery,
        job: &JobRecord,
        claimed: Instant,
        outcome: Result<Executed, Failure>,
    ) {
        let entry = self.record(job, claimed, outcome).await;
        // Removed only now: until the result is written the heartbeat keeps
        // renewing the lease, so a worker waiting out a Postgres outage still
        // holds its job when Postgres returns.
        self.running.remove(job.job_id());
        self.settle(queue, delivery, entry).await;
    }

    /// Reads the uploads and turns them into the engine's input. Reads
    /// only: a job not yet claimed may be prepared to see whether it fits a
    /// batch.
    pub(crate) async fn prepare(&self, job: &JobRecord) -> Result<PreparedEdit, Failure> {
        let model = self
            .engine
            .model(&job.model)
            .map_err(Failure::engine)?
            .clone();
        let storage = &self.backends.storage;
        let image = storage
            .get(&job.image_key)
            .await
            .map_err(Failure::storage)?;
        let mask = match &job.mask_key {
            Some(key) => Some(storage.get(key).await.map_err(Failure::storage)?),
            None => None,
        };
        let record = job.clone();
        // Decoding and planning are CPU work: off the async runtime.
        tokio::task::spawn_blocking(move || prepare(&record, &model, &image, mask.as_deref()))
            .await
            .map_err(Failure::blocking("decoding the inputs"))?
            .map_err(Failure::model)
    }

    /// The engine's job for a member, and the relay of its progress.
    fn engine_job(
        &self,
        job: &JobRecord,
        prepared: PreparedEdit,
        cancel: Arc<AtomicBool>,
    ) -> (EngineJob, Geometry, JoinHandle<()>) {
        let (progress, steps) = mpsc::unbounded_channel();
        let forward = tokio::spawn(forward_progress(
            self.backends.clone(),
            job.clone(),
            self.id,
            steps,
        ));
        let engine_job = EngineJob {
            request: prepared.request,
            plan: prepared.plan,
            num_outputs: job.params.num_outputs,
            progress,
            cancel,
        };
        (engine_job, prepared.geometry, forward)
    }

    /// Waits for a member's answer and stores its outputs.
    async fn finish(&self, job: &JobRecord, flight: InFlight) -> Result<Executed, Failure> {
        let answer = flight.answer.await.map_err(|_| {
            Failure::Worker(WorkerError::EngineNoAnswer {
                model: job.model.clone(),
            })
        })?;
        let mut output = answer.map_err(Failure::engine)?;
        // Answered after the batch: the relay has its last step (a
        // cancelled member's relay ends with the batch, unawaited).
        let _ = flight.forward.await;
        // The images move into the encoder: only the timings are kept.
        let images = std::mem::take(&mut output.images);
        let stored = self.store_outputs(job, images).await?;
        Ok(Executed {
            output,
            stored,
            geometry: flight.geometry,
        })
    }

    /// Encodes the images and stores them under this attempt's keys.
    async fn store_outputs(
        &self,
        job: &JobRecord,
        images: Vec<RgbImage>,
    ) -> Result<Vec<NewOutput>, Failure> {
        let encoded = tokio::task::spawn_blocking(move || {
            images
                .iter()
                .map(|image| (encode_png(image), image.width(), image.height()))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(Failure::blocking("encoding the outputs"))?;
        let mut stored = Vec::new();
        for (index, (png, width, height)) in encoded.into_iter().enumerate() {
            let index = index as u32;
            let key = keys::output(job.id, job.attempts, index);
            let png = png.map_err(|message| {
                Failure::model(ModelError::ImageWrite {
                    path: key.clone(),
                    message,
                })
            })?;
            self.backends
                .storage
                .put(&key, png)
                .await
                .map_err(Failure::storage)?;
            stored.push(NewOutput {
                index,
                storage_key: key,
                width,
                height,
                seed: job.params.seed + index as u64,
            });
        }
        Ok(stored)
    }
}

/// Relays engine progress: every step to Redis, throttled to Postgres.
async fn forward_progress(
    backends: Backends,
    job: JobRecord,
    worker: WorkerId,
    mut steps: mpsc::UnboundedReceiver<u32>,
) {
    let total = job.params.total_steps();
    // The final count is written with the result, so no closing write here.
    let mut last_write: Option<Instant> = None;
    while let Some(step) = steps.recv().await {
        let message = EventMessage {
            job: job.id,
            model: job.model.clone(),
            task: job.task,
            event: JobEvent::Progress { step, total },
        };
        if let Err(e) = events::publish(&backends.conn, &backends.prefix, &message).await {
            tracing::debug!("cannot publish progress: {e}");
        }
        if last_write.is_none_or(|t| t.elapsed() >= PROGRESS_WRITE_INTERVAL) {
            last_write = Some(Instant::now());
            if let Err(e) = db::jobs::set_progress(&backends.db, job.job_id(), worker, step).await {
                tracing::debug!("cannot record progress: {e}");
            }
        }
    }
}

fn encode_png(image: &RgbImage) -> Result<Bytes, String> {
    let mut buffer = Cursor::new(Vec::new());
    image
        .write_to(&mut buffer, ImageFormat::Png)
        .map_err(|e| format!("cannot encode the output PNG: {e}"))?;
    Ok(Bytes::from(buffer.into_inner()))
}
