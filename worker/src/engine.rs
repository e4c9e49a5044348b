//! The engine actor: one thread owns the loaded models (burn modules need
//! not be `Sync`) and runs one batch at a time: one job's outputs, or the
//! outputs of several compatible jobs of one model (see
//! [`crate::batching`]). Async callers talk to it through channels; each job
//! of a batch gets its own answer, a cancelled one at once.

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
use byteedit_models::{BatchItem, EditRequest, InpaintModel, ModelError};
use image::RgbImage;
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use crate::config::WorkerArgs;
use crate::error::{WorkerError, panic_message};

/// One job for the engine: `num_outputs` edits with seeds `seed`, `seed+1`, ...
pub struct EngineJob {
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
    /// The whole batch's time in the engine.
    pub model_time: Duration,
    /// One output's share of a denoising step.
    pub step_time: Duration,
    /// Outputs denoised together, this job's included.
    pub batch_outputs: u32,
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

/// A job's answer from the engine.
pub type Answer = oneshot::Receiver<Result<EngineOutput, EngineError>>;

/// One batch for the engine thread: jobs of one model.
struct Batch {
    model: String,
    jobs: Vec<(EngineJob, Reply)>,
    /// Sent when the engine is done with the batch.
    done: oneshot::Sender<()>,
}

/// A submitted batch: each job's answer, and word that the engine is free.
pub struct Submitted {
    pub answers: Vec<Answer>,
    pub done: oneshot::Receiver<()>,
}

pub struct Engine {
    batches: mpsc::Sender<Batch>,
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
        let (batches, inbox) = mpsc::channel::<Batch>();
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
                for Batch { model, jobs, done } in inbox {
                    match models.get(&model) {
                        Some(loaded) => run_guarded(loaded, jobs),
                        None => {
                            for (_, reply) in jobs {
                                let _ = reply.send(Err(EngineError::NotServed(model.clone())));
                            }
                        }
                    }
                    let _ = done.send(());
                }
            })
            .map_err(WorkerError::EngineSpawn)?;
        // The sender is dropped unsent only if loading panicked.
        let models = loaded
            .recv()
            .map_err(|_| WorkerError::EngineLoadAborted)??;
        Ok(Self { batches, models })
    }

    /// What the worker registered for model `name`.
    pub fn model(&self, name: &str) -> Result<&ModelInfo, EngineError> {
        self.models
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| EngineError::NotServed(name.to_owned()))
    }

    /// Queues `jobs` of `model` as one batch on the engine thread; each
    /// job's answer comes on its own channel. The error says the engine
    /// thread is gone.
    pub fn submit(&self, model: &str, jobs: Vec<EngineJob>) -> Result<Submitted, WorkerError> {
        let (jobs, answers): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .map(|job| {
                let (reply, answer) = oneshot::channel();
                ((job, reply), answer)
            })
            .unzip();
        let (done, free) = oneshot::channel();
        self.batches
            .send(Batch {
                model: model.to_owned(),
                jobs,
                done,
            })
            .map_err(|_| WorkerError::EngineStopped)?;
        Ok(Submitted {
            answers,
            done: free,
        })
    }
}

/// A panic inside the engine fails the batch's jobs, not the worker.
fn run_guarded<B: Backend>(model: &InpaintModel<B>, batch: Vec<(EngineJob, Reply)>) {
    let (jobs, replies): (Vec<EngineJob>, Vec<Reply>) = batch.into_iter().unzip();
    let mut replies: Vec<Option<Reply>> = replies.into_iter().map(Some).collect();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(model, &jobs, &mut replies)));
    let results: Vec<Result<EngineOutput, EngineError>> = match outcome {
        Ok(Ok(results)) => results
            .into_iter()
            .map(|r| r.map_err(EngineError::Model))
            .collect(),
        // The device failed: every job of the batch fails with its sentence.
        Ok(Err(e)) => {
            let why = e.to_string();
            (0..jobs.len())
                .map(|_| Err(EngineError::Model(ModelError::Backend(why.clone()))))
                .collect()
        }
        Err(panic) => {
            let why = panic_message(&*panic);
            tracing::error!("engine panicked: {why}");
            (0..jobs.len())
                .map(|_| Err(EngineError::Panicked(why.clone())))
                .collect()
        }
    };
    for (reply, result) in replies.into_iter().zip(results) {
        // Cancelled jobs were answered already.
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }
}

/// The jobs as one batch ([`InpaintModel::edit_batch`]): each prompt and
/// masked image is encoded once, and each UNet call serves every output.
/// A job cancelled mid-run is answered at once and leaves the batch.
fn run<B: Backend>(
    model: &InpaintModel<B>,
    jobs: &[EngineJob],
    replies: &mut [Option<Reply>],
) -> Result<Vec<Result<EngineOutput, ModelError>>, ModelError> {
    let items: Vec<BatchItem<'_>> = jobs
        .iter()
        .map(|job| BatchItem {
            request: &job.request,
            count: job.num_outputs.max(1) as usize,
        })
        .collect();
    let started = Instant::now();
    let results = model.edit_batch(&items, &mut |i, p| {
        let job = &jobs[i];
        // Progress counts steps over all of a job's outputs.
        let _ = job.progress.send(p.step as u32 * items[i].count as u32);
        if job.cancel.load(Ordering::Relaxed) {
            if let Some(reply) = replies[i].take() {
                let _ = reply.send(Err(EngineError::Model(ModelError::Cancelled)));
            }
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    let model_time = started.elapsed();
    // The rows that were denoised: every job not refused up front.
    let batch_outputs: u32 = results
        .iter()
        .zip(&items)
        .filter(|(r, _)| matches!(r, Ok(_) | Err(ModelError::Cancelled)))
        .map(|(_, item)| item.count as u32)
        .sum();
    Ok(results
        .into_iter()
        .zip(jobs)
        .map(|(result, job)| {
            let outputs = result?;
            let images = outputs
                .to_rgb8()?
                .iter()
                .map(|image| job.plan.finish(image))
                .collect();
            Ok(EngineOutput {
                images,
                model_time,
                // One output's share of a batched step.
                step_time: outputs.timings.per_step() / batch_outputs.max(1),
                batch_outputs,
            })
        })
        .collect())
}
