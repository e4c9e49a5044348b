//! The worker as a whole: its settings and the parts every concern shares,
//! starting it, and the handle that stops it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use burn::prelude::Backend;
use byteedit_jobs::{Backends, ModelInfo, QueueConsumer, WorkerId, db};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config::WorkerArgs;
use crate::engine::Engine;
use crate::error::WorkerError;
use crate::lease::RunningJobs;
use crate::recording::RetryPolicy;

/// How long `stop` lets the current jobs finish by default.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The settings the loop and its parts run with (from [`WorkerArgs`]).
pub(crate) struct Settings {
    /// A running job's lease: without a heartbeat for this long, its worker
    /// is presumed dead.
    pub lease: Duration,
    pub heartbeat: Duration,
    pub max_attempts: u32,
    pub retry: RetryPolicy,
    /// Most outputs one engine batch holds, over all its jobs.
    pub max_batch: u32,
}

impl Settings {
    fn of(args: &WorkerArgs) -> Self {
        let secs = |s: f64| Duration::from_secs_f64(s.clamp(0.0, 86_400.0));
        Self {
            // A lease shorter than a heartbeat would be lost between beats.
            lease: Duration::from_secs(args.lease_secs.max(args.heartbeat_secs + 1)),
            heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
            max_attempts: args.max_attempts.max(1),
            max_batch: args.max_batch.unwrap_or(1).max(1),
            retry: RetryPolicy {
                base: secs(args.retry_backoff_secs),
                max: secs(args.retry_backoff_max_secs),
            },
        }
    }
}

/// What the delivery loop, the lease keepers and the recorder share.
pub struct Worker {
    pub(crate) id: WorkerId,
    pub(crate) name: String,
    pub(crate) settings: Settings,
    pub(crate) backends: Backends,
    pub(crate) engine: Engine,
    pub(crate) running: RunningJobs,
    /// Set when the shutdown grace period is over: the current job is
    /// stopped and given back to the queue instead of finished.
    pub(crate) handing_back: Arc<AtomicBool>,
}

/// A running worker; `stop` lets the current job finish and returns.
pub struct WorkerHandle {
    pub id: Uuid,
    pub models: Vec<ModelInfo>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), WorkerError>>,
    running: RunningJobs,
    handing_back: Arc<AtomicBool>,
}

impl WorkerHandle {
    /// Stops within [`DEFAULT_SHUTDOWN_GRACE`].
    pub async fn stop(self) -> Result<(), WorkerError> {
        self.stop_within(DEFAULT_SHUTDOWN_GRACE).await
    }

    /// Takes no new job; lets the current one finish for up to `grace`, then
    /// stops it at its next step and gives it back to the queue (released in
    /// Postgres and enqueued again), so another worker starts it at once
    /// rather than after the lease.
    pub async fn stop_within(self, grace: Duration) -> Result<(), WorkerError> {
        let _ = self.stop.send(true);
        let mut task = self.task;
        match tokio::time::timeout(grace, &mut task).await {
            Ok(result) => result.map_err(WorkerError::LoopFailed)?,
            Err(_) => {
                tracing::warn!(worker = %self.id, "shutdown grace period over; handing the current job back");
                self.handing_back.store(true, Ordering::Relaxed);
                self.running.cancel_all();
                task.await.map_err(WorkerError::LoopFailed)?
            }
        }
    }

    /// Resolves when the worker ends by itself (a fatal error).
    pub async fn wait(&mut self) -> Result<(), WorkerError> {
        (&mut self.task).await.map_err(WorkerError::LoopFailed)?
    }
}

impl Worker {
    /// Loads the models, registers the worker, and starts consuming.
    pub async fn start<B: Backend>(
        args: WorkerArgs,
        backends: Backends,
        device: B::Device,
    ) -> Result<WorkerHandle, WorkerError> {
        let mut args = args;
        for spec in &mut args.models {
            if let Some(reference) = spec.registry.clone() {
                crate::registry::resolve(spec, &reference, &backends, &args.model_cache).await?;
            }
        }
        let engine_args = args.clone();
        // Loading blocks for seconds: off the async runtime.
        let engine = tokio::task::spawn_blocking(move || Engine::start::<B>(&engine_args, device))
            .await
            .map_err(WorkerError::EngineStartFailed)??;
        let id = WorkerId::new();
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
            settings: Settings::of(&args),
            backends,
            engine,
            running: RunningJobs::default(),
            handing_back: Arc::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let running = worker.running.clone();
        let handing_back = worker.handing_back.clone();
        let task = tokio::spawn(worker.run(consumer, stopped));
        Ok(WorkerHandle {
            id: id.as_uuid(),
            models,
            stop,
            task,
            running,
            handing_back,
        })
    }
}
