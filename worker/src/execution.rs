//! One job's run: read its inputs from storage, plan the edit
//! ([`prepare`]), run the engine while relaying its progress, encode the
//! outputs as PNG and store them. Nothing is recorded here: the outcome goes
//! to [`crate::recording`].

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use byteedit_jobs::db::jobs::NewOutput;
use byteedit_jobs::job::keys;
use byteedit_jobs::{Backends, EventMessage, Geometry, JobEvent, JobRecord, WorkerId, db, events};
use byteedit_models::tasks::EditPlan;
use byteedit_models::{EditRequest, ModelError};
use bytes::Bytes;
use image::{ImageFormat, RgbImage};
use tokio::sync::mpsc;

use crate::engine::{EngineJob, EngineOutput};
use crate::failure::Failure;
use crate::inputs::{PreparedEdit, prepare};
use crate::worker::Worker;

/// Progress goes to Postgres at most this often (every step goes to Redis).
const PROGRESS_WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// A run that produced its outputs, stored but not yet recorded.
pub(crate) struct Executed {
    pub output: EngineOutput,
    pub stored: Vec<NewOutput>,
    pub geometry: Geometry,
}

/// What the engine edits, and how each output goes back onto the canvas.
struct EngineInput {
    request: EditRequest,
    plan: EditPlan,
}

impl Worker {
    /// Runs `job` (already claimed) to stored outputs; `cancel` stops the
    /// engine at its next step.
    pub(crate) async fn execute(
        &self,
        job: &JobRecord,
        cancel: Arc<AtomicBool>,
    ) -> Result<Executed, Failure> {
        let PreparedEdit {
            plan,
            request,
            geometry,
        } = self.prepare(job).await?;
        let mut output = self
            .run_engine(job, EngineInput { request, plan }, cancel)
            .await?;
        // The images move into the encoder: only the timings are kept.
        let images = std::mem::take(&mut output.images);
        let stored = self.store_outputs(job, images).await?;
        Ok(Executed {
            output,
            stored,
            geometry,
        })
    }

    /// Reads the uploads and turns them into the engine's input.
    async fn prepare(&self, job: &JobRecord) -> Result<PreparedEdit, Failure> {
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

    /// The engine call, with its progress relayed while it runs.
    async fn run_engine(
        &self,
        job: &JobRecord,
        input: EngineInput,
        cancel: Arc<AtomicBool>,
    ) -> Result<EngineOutput, Failure> {
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
                request: input.request,
                plan: input.plan,
                num_outputs: job.params.num_outputs,
                progress,
                cancel,
            })
            .await;
        // The sender is gone with the job, so the forwarder drains and ends.
        let _ = forward.await;
        result.map_err(Failure::Worker)?.map_err(Failure::engine)
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
