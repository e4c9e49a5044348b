//! The engine actor: one thread owns the loaded models (burn modules need
//! not be `Sync`) and runs one edit at a time, which is all one device does
//! well anyway. Async callers talk to it through channels.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use burn::prelude::Backend;
use byteedit_jobs::ModelInfo;
use byteedit_models::tasks::EditPlan;
use byteedit_models::{EditRequest, InpaintModel, ModelError};
use image::RgbImage;
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use crate::config::WorkerArgs;
use crate::error::{WorkerError, panic_message};

/// One job for the engine: `num_outputs` edits with seeds `seed`, `seed+1`, ...,
/// run as one batch.
pub struct EngineJob {
    pub model: String,
    /// The model's input (the plan's working image and mask).
    pub request: EditRequest,
    /// Takes each output back onto the canvas.
    pub plan: EditPlan,
    pub num_outputs: u32,
    /// Receives the number of steps done so far, over all outputs.
    pub progress: tokio_mpsc::UnboundedSender<u32>,
    /// Set to stop at the next step.
    pub cancel: Arc<AtomicBool>,
}

pub struct EngineOutput {
    pub images: Vec<RgbImage>,
    pub model_time: Duration,
    pub step_time: Duration,
}

/// Why the engine produced no images for a job.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The pipeline refused the job (bad input, cancel, ...).
    #[error(transparent)]
    Model(ModelError),
    /// The pipeline panicked on it (a poison input): the job fails, the
    /// engine thread goes on with the next one.
    #[error("the engine crashed on this input ({0})")]
    Panicked(String),
    /// The job names a model this worker did not load.
    #[error("this worker does not serve model `{0}`")]
    NotServed(String),
}

type Reply = oneshot::Sender<Result<EngineOutput, EngineError>>;

pub struct Engine {
    jobs: mpsc::Sender<(EngineJob, Reply)>,
    pub models: Vec<ModelInfo>,
}

impl Engine {
    /// Starts the engine thread and loads every model on it. Blocks until
    /// they are loaded (seconds for real weights): call it off the runtime.
    pub fn start<B: Backend>(args: &WorkerArgs, device: B::Device) -> Result<Self, WorkerError> {
        for (i, spec) in args.models.iter().enumerate() {
            if args.models[..i].iter().any(|s| s.name == spec.name) {
                return Err(WorkerError::DuplicateModel(spec.name.clone()));
            }
        }
        let (jobs, inbox) = mpsc::channel::<(EngineJob, Reply)>();
        let (loaded_tx, loaded) = mpsc::channel();
        let args = args.clone();
        std::thread::Builder::new()
            .name("byteedit-engine".into())
            .spawn(move || {
                let mut models = HashMap::new();
                let mut infos = Vec::new();
                for spec in &args.models {
                    tracing::info!("loading model `{}` from {}", spec.name, spec.dir.display());
                    match InpaintModel::<B>::load(&spec.dir, &device) {
                        Ok(model) => {
                            let mut defaults = args.serving_defaults();
                            if let Some(steps) = spec.default_steps {
                                defaults.default_steps = steps;
                            }
                            infos.push(model.describe(&spec.name, &defaults));
                            models.insert(spec.name.clone(), model);
                        }
                        Err(source) => {
                            let _ = loaded_tx.send(Err(WorkerError::Load {
                                name: spec.name.clone(),
                                source,
                            }));
                            return;
                        }
                    }
                }
                let _ = loaded_tx.send(Ok(infos));
                // Runs until every `Engine` handle is dropped.
                for (job, reply) in inbox {
                    let result = match models.get(&job.model) {
                        Some(model) => run_guarded(model, &job),
                        None => Err(EngineError::NotServed(job.model.clone())),
                    };
                    let _ = reply.send(result);
                }
            })
            .map_err(WorkerError::EngineSpawn)?;
        // The sender is dropped unsent only if loading panicked.
        let models = loaded
            .recv()
            .map_err(|_| WorkerError::EngineLoadAborted)??;
        Ok(Self { jobs, models })
    }

    /// What the worker registered for model `name`.
    pub fn model(&self, name: &str) -> Result<&ModelInfo, EngineError> {
        self.models
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| EngineError::NotServed(name.to_owned()))
    }

    /// Runs one job on the engine thread. The outer error says the engine
    /// thread is gone; the inner one is the job's own.
    pub async fn run(
        &self,
        job: EngineJob,
    ) -> Result<Result<EngineOutput, EngineError>, WorkerError> {
        let model = job.model.clone();
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send((job, reply))
            .map_err(|_| WorkerError::EngineStopped)?;
        answer
            .await
            .map_err(|_| WorkerError::EngineNoAnswer { model })
    }
}

/// A panic inside the engine fails the job, not the worker.
fn run_guarded<B: Backend>(
    model: &InpaintModel<B>,
    job: &EngineJob,
) -> Result<EngineOutput, EngineError> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| run(model, job))) {
        Ok(result) => result.map_err(EngineError::Model),
        Err(panic) => {
            let why = panic_message(&*panic);
            tracing::error!("engine panicked: {why}");
            Err(EngineError::Panicked(why))
        }
    }
}

/// The job's outputs as one batch (seeds `seed`, `seed + 1`, ...): the
/// prompt and the masked image are encoded once, and each UNet call serves
/// every output.
fn run<B: Backend>(model: &InpaintModel<B>, job: &EngineJob) -> Result<EngineOutput, ModelError> {
    let count = job.num_outputs.max(1);
    let started = Instant::now();
    let outputs = model.edit_outputs(&job.request, count as usize, &mut |p| {
        // Progress counts steps over all outputs: each batched step is `count` of them.
        let _ = job.progress.send(p.step as u32 * count);
        if job.cancel.load(Ordering::Relaxed) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    let model_time = started.elapsed();
    let images = outputs
        .to_rgb8()?
        .iter()
        .map(|image| job.plan.finish(image))
        .collect();
    let t = outputs.timings;
    Ok(EngineOutput {
        images,
        model_time,
        // The time of one output's step: the batch's step over its outputs.
        step_time: t.per_step() / count,
    })
}
