//! The worker loop: take a job id, claim the job, run it, record the result,
//! acknowledge. Heartbeats and cancellation run beside it.

use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::prelude::Backend;
use byteedit_jobs::db::Claim;
use byteedit_jobs::db::jobs::NewOutput;
use byteedit_jobs::job::keys;
use byteedit_jobs::{
    Backends, Delivery, EventMessage, Geometry, JobError, JobEvent, JobRecord, JobStatus,
    JobTimings, QueueConsumer, db, events,
};
use byteedit_models::ModelError;
use bytes::Bytes;
use futures_util::StreamExt;
use image::{ImageFormat, RgbImage};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config::WorkerArgs;
use crate::engine::{Engine, EngineJob, EngineOutput};
use crate::error::WorkerError;
use crate::inputs::prepare;

/// How long one queue read blocks; also the longest a stop request waits.
const POLL: Duration = Duration::from_secs(1);
/// Progress goes to Postgres at most this often (every step goes to Redis).
const PROGRESS_WRITE_INTERVAL: Duration = Duration::from_millis(250);

/// The job being run and its cancel flag.
type Current = Arc<Mutex<Option<(Uuid, Arc<AtomicBool>)>>>;

pub struct Worker {
    pub id: Uuid,
    name: String,
    lease: Duration,
    max_attempts: u32,
    backends: Backends,
    engine: Engine,
    current: Current,
}

/// A running worker; `stop` finishes the current job and returns.
pub struct WorkerHandle {
    pub id: Uuid,
    pub models: Vec<byteedit_jobs::ModelInfo>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), WorkerError>>,
}

impl WorkerHandle {
    pub async fn stop(self) -> Result<(), WorkerError> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or(Err(WorkerError::EngineGone))
    }

    /// Resolves when the worker ends by itself (a fatal error).
    pub async fn wait(&mut self) -> Result<(), WorkerError> {
        (&mut self.task)
            .await
            .unwrap_or(Err(WorkerError::EngineGone))
    }
}

impl Worker {
    /// Loads the models, registers the worker, and starts consuming.
    pub async fn start<B: Backend>(
        args: WorkerArgs,
        backends: Backends,
        device: B::Device,
    ) -> Result<WorkerHandle, WorkerError> {
        let engine_args = args.clone();
        let engine = tokio::task::spawn_blocking(move || Engine::start::<B>(&engine_args, device))
            .await
            .map_err(|_| WorkerError::EngineGone)??;
        let id = Uuid::now_v7();
        let name = args.name();
        let models = engine.models.clone();
        db::models::register_worker(&backends.db, id, &name, &models).await?;
        let names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
        let consumer = QueueConsumer::new(
            &backends.redis,
            backends.conn.clone(),
            &backends.prefix,
            &id.to_string(),
            &names,
        )
        .await?;
        tracing::info!(worker = %id, %name, models = ?names, "worker ready");
        let worker = Arc::new(Worker {
            id,
            name,
            lease: Duration::from_secs(args.lease_secs.max(args.heartbeat_secs + 1)),
            max_attempts: args.max_attempts.max(1),
            backends,
            engine,
            current: Arc::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let heartbeat = Duration::from_secs(args.heartbeat_secs.max(1));
        let task = tokio::spawn(worker.clone().run(consumer, stopped, heartbeat));
        Ok(WorkerHandle {
            id,
            models,
            stop,
            task,
        })
    }

    async fn run(
        self: Arc<Self>,
        mut consumer: QueueConsumer,
        stopped: watch::Receiver<bool>,
        heartbeat: Duration,
    ) -> Result<(), WorkerError> {
        let beats = tokio::spawn(self.clone().heartbeat(heartbeat));
        let cancels = tokio::spawn(self.clone().listen_for_cancels());
        let mut last_reclaim: Option<Instant> = None;
        while !*stopped.borrow() {
            // Entries held too long by another consumer: its worker may be dead.
            let reclaim_due = last_reclaim.is_none_or(|t| t.elapsed() >= self.lease / 2);
            let delivery = if reclaim_due {
                last_reclaim = Some(Instant::now());
                if let Err(e) = self.requeue_lost().await {
                    tracing::warn!("queue sweep failed: {e}");
                }
                match consumer.reclaim(self.lease).await {
                    Ok(Some(d)) => {
                        tracing::info!(entry = %d.entry, job = ?d.job, "took over an entry held too long");
                        Ok(Some(d))
                    }
                    Ok(None) => consumer.next(POLL).await,
                    Err(e) => Err(e),
                }
            } else {
                consumer.next(POLL).await
            };
            match delivery {
                Ok(Some(delivery)) => {
                    if let Err(e) = self.handle(&consumer, &delivery).await {
                        // Not acknowledged: the entry stays pending for recovery.
                        tracing::error!(entry = %delivery.entry, "cannot record job: {e}");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("queue read failed: {e}; retrying");
                    tokio::time::sleep(POLL).await;
                }
            }
        }
        beats.abort();
        cancels.abort();
        if let Err(e) = db::models::worker_stopped(&self.backends.db, self.id).await {
            tracing::warn!("cannot record worker stop: {e}");
        }
        tracing::info!(worker = %self.id, name = %self.name, "worker stopped");
        Ok(())
    }

    /// Re-adds queue entries that Redis lost (a restart without its data, a
    /// failed `XADD`): every job Postgres says is waiting, or running with a
    /// dead lease, and that has no entry in its stream. A duplicate entry is
    /// harmless: the claim in Postgres runs each job once.
    async fn requeue_lost(&self) -> Result<(), WorkerError> {
        let models: Vec<String> = self.engine.models.iter().map(|m| m.name.clone()).collect();
        let lease = self.lease.as_secs_f64();
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

    async fn handle(
        &self,
        consumer: &QueueConsumer,
        delivery: &Delivery,
    ) -> Result<(), WorkerError> {
        let Some(job_id) = delivery.job else {
            tracing::warn!(entry = %delivery.entry, "queue entry without a job id; dropping it");
            consumer.ack(delivery).await?;
            return Ok(());
        };
        let lease = self.lease.as_secs_f64();
        let job = match db::jobs::claim(&self.backends.db, job_id, self.id, lease).await? {
            Claim::Claimed(job) => *job,
            Claim::Busy => {
                // Its worker is alive: the entry stays pending (now ours) and
                // is looked at again after another lease.
                tracing::debug!(job = %job_id, "job is running elsewhere with a live lease");
                return Ok(());
            }
            Claim::Gone => {
                // Canceled while queued, or finished: nothing to run.
                tracing::debug!(job = %job_id, "job is no longer queued; skipping");
                consumer.ack(delivery).await?;
                return Ok(());
            }
        };
        if job.attempts > self.max_attempts {
            let error = JobError {
                code: "worker_lost".into(),
                message: format!(
                    "the job was started {} times and its worker stopped answering each time; it may crash the worker",
                    job.attempts - 1
                ),
            };
            if db::jobs::finish_unsuccessfully(
                &self.backends.db,
                job.id,
                self.id,
                JobStatus::Failed,
                Some(&error),
                None,
            )
            .await?
            {
                tracing::warn!(job = %job.id, attempts = job.attempts - 1, "job failed: too many lost attempts");
                self.publish(&job, JobEvent::Failed { error }).await;
            }
            consumer.ack(delivery).await?;
            return Ok(());
        }
        if job.attempts > 1 {
            tracing::warn!(job = %job.id, attempt = job.attempts, "taking over a job whose worker was lost");
        }
        let claimed = Instant::now();
        // A cancel asked before a takeover still holds.
        let cancel = Arc::new(AtomicBool::new(job.cancel_requested));
        self.set_current(Some((job.id, cancel.clone())));
        self.publish(&job, JobEvent::Started).await;
        tracing::info!(job = %job.id, model = %job.model, task = %job.task, "job started");

        let outcome = self.execute(&job, cancel).await;
        self.set_current(None);
        let queue_ms = job
            .started_at
            .map(|s| (s - job.created_at).num_microseconds().unwrap_or(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        let timings_of = |output: &EngineOutput| JobTimings {
            queue_ms,
            model_ms: output.model_time.as_secs_f64() * 1000.0,
            step_ms: output.step_time.as_secs_f64() * 1000.0,
            run_ms: claimed.elapsed().as_secs_f64() * 1000.0,
        };
        let db = &self.backends.db;
        // Every write is guarded on "still this worker's running job": false
        // means another worker took the job over (fencing).
        let recorded = match outcome {
            Ok((output, stored, geometry)) => {
                let timings = timings_of(&output);
                let done =
                    db::jobs::succeed(db, job.id, self.id, &stored, &timings, &geometry).await?;
                if done {
                    tracing::info!(job = %job.id, ms = timings.run_ms, "job succeeded");
                    self.publish(&job, JobEvent::Succeeded { timings }).await;
                }
                done
            }
            Err(Failure::Canceled) => {
                let done = db::jobs::finish_unsuccessfully(
                    db,
                    job.id,
                    self.id,
                    JobStatus::Canceled,
                    None,
                    None,
                )
                .await?;
                if done {
                    tracing::info!(job = %job.id, "job canceled while running");
                    self.publish(&job, JobEvent::Canceled).await;
                }
                done
            }
            Err(Failure::Job(error)) => {
                let done = db::jobs::finish_unsuccessfully(
                    db,
                    job.id,
                    self.id,
                    JobStatus::Failed,
                    Some(&error),
                    None,
                )
                .await?;
                if done {
                    tracing::warn!(job = %job.id, code = %error.code, "job failed: {}", error.message);
                    self.publish(&job, JobEvent::Failed { error }).await;
                }
                done
            }
            Err(Failure::Worker(e)) => return Err(e),
        };
        if !recorded {
            // The entry now belongs to the worker that took over; leave it.
            tracing::warn!(job = %job.id, "lost the job's lease; the result was refused");
            return Ok(());
        }
        consumer.ack(delivery).await?;
        Ok(())
    }

    /// Loads the inputs, runs the engine with progress, stores the outputs.
    async fn execute(
        &self,
        job: &JobRecord,
        cancel: Arc<AtomicBool>,
    ) -> Result<(EngineOutput, Vec<NewOutput>, Geometry), Failure> {
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
        let model = self
            .engine
            .models
            .iter()
            .find(|m| m.name == job.model)
            .cloned()
            .ok_or_else(|| {
                Failure::model(ModelError::InvalidInput(format!(
                    "this worker does not serve model `{}`",
                    job.model
                )))
            })?;
        let prepared =
            tokio::task::spawn_blocking(move || prepare(&record, &model, &image, mask.as_deref()))
                .await
                .map_err(|_| Failure::Worker(WorkerError::EngineGone))?
                .map_err(Failure::model)?;

        let (progress, steps) = mpsc::unbounded_channel();
        let forward = tokio::spawn(forward_progress(
            self.backends.clone(),
            job.clone(),
            self.id,
            steps,
        ));
        let result = self
            .engine
            .run(EngineJob {
                model: job.model.clone(),
                request: prepared.request,
                plan: prepared.plan,
                num_outputs: job.params.num_outputs,
                progress,
                cancel,
            })
            .await;
        // The sender is gone with the job, so the forwarder drains and ends.
        let _ = forward.await;
        let mut output = match result.map_err(Failure::Worker)? {
            Ok(output) => output,
            Err(ModelError::Cancelled) => return Err(Failure::Canceled),
            Err(e) => return Err(Failure::model(e)),
        };

        // The images move into the encoder: only the timings are kept.
        let images = std::mem::take(&mut output.images);
        let encoded = tokio::task::spawn_blocking(move || {
            images
                .iter()
                .map(|image| (encode_png(image), image.width(), image.height()))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|_| Failure::Worker(WorkerError::EngineGone))?;
        let mut stored = Vec::new();
        for (index, (png, width, height)) in encoded.into_iter().enumerate() {
            let index = index as u32;
            let key = keys::output(job.id, job.attempts, index);
            storage
                .put(&key, png.map_err(Failure::model)?)
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
        Ok((output, stored, prepared.geometry))
    }

    fn set_current(&self, current: Option<(Uuid, Arc<AtomicBool>)>) {
        if let Ok(mut slot) = self.current.lock() {
            *slot = current;
        }
    }

    fn cancel_current(&self, job: Uuid) {
        if let Ok(slot) = self.current.lock()
            && let Some((id, flag)) = slot.as_ref()
            && *id == job
        {
            flag.store(true, Ordering::Relaxed);
        }
    }

    async fn publish(&self, job: &JobRecord, event: JobEvent) {
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

    /// Cancel requests arrive over pub/sub at once; the heartbeat also reads
    /// them from Postgres, in case a message was missed.
    async fn listen_for_cancels(self: Arc<Self>) {
        loop {
            match events::subscribe(&self.backends.redis, &self.backends.prefix).await {
                Ok(stream) => {
                    let mut stream = std::pin::pin!(stream);
                    while let Some(message) = stream.next().await {
                        if message.event == JobEvent::CancelRequested {
                            self.cancel_current(message.job);
                        }
                    }
                }
                Err(e) => tracing::warn!("cannot subscribe to cancel requests: {e}"),
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn heartbeat(self: Arc<Self>, every: Duration) {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            let db = &self.backends.db;
            if let Err(e) = db::models::worker_seen(db, self.id).await {
                tracing::warn!("heartbeat failed: {e}");
            }
            let current = self
                .current
                .lock()
                .ok()
                .and_then(|c| c.as_ref().map(|(id, _)| *id));
            if let Some(job) = current {
                match db::jobs::heartbeat(db, job, self.id).await {
                    // Cancel asked, or the lease was lost to another worker:
                    // either way, stop spending the device on it.
                    Ok(Some(true)) | Ok(None) => self.cancel_current(job),
                    Ok(Some(false)) => {}
                    Err(e) => tracing::warn!(job = %job, "job heartbeat failed: {e}"),
                }
            }
        }
    }
}

/// Relays engine progress: every step to Redis, throttled to Postgres.
async fn forward_progress(
    backends: Backends,
    job: JobRecord,
    worker: Uuid,
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
            if let Err(e) = db::jobs::set_progress(&backends.db, job.id, worker, step).await {
                tracing::debug!("cannot record progress: {e}");
            }
        }
    }
}

fn encode_png(image: &RgbImage) -> Result<Bytes, ModelError> {
    let mut buffer = Cursor::new(Vec::new());
    image
        .write_to(&mut buffer, ImageFormat::Png)
        .map_err(|e| ModelError::InvalidInput(format!("cannot encode the output PNG: {e}")))?;
    Ok(Bytes::from(buffer.into_inner()))
}

/// Why a job did not succeed.
enum Failure {
    Canceled,
    /// Recorded on the job.
    Job(JobError),
    /// The worker cannot go on with it (left unacknowledged).
    Worker(WorkerError),
}

impl Failure {
    fn model(e: ModelError) -> Self {
        let code = match &e {
            ModelError::Image { .. } | ModelError::InvalidInput(_) => "invalid_input",
            _ => "engine_error",
        };
        Self::Job(JobError {
            code: code.into(),
            message: e.to_string(),
        })
    }

    fn storage(e: byteedit_jobs::JobsError) -> Self {
        Self::Job(JobError {
            code: "storage_error".into(),
            message: format!("cannot read or write the job's images: {e}"),
        })
    }
}
