//! `byteedit api`, `byteedit worker` and `byteedit serve`: the service roles.

use std::future::Future;
use std::pin::Pin;

use anyhow::Context;
use burn::prelude::Backend;
use byteedit_api::ApiArgs;
use byteedit_jobs::config::redacted;
use byteedit_jobs::{Backends, ConnectArgs};
use byteedit_worker::{Worker, WorkerArgs, WorkerHandle};
use clap::Args;

use crate::device::{DeviceChoice, OnDevice};

/// What SIGTERM (or Ctrl-C) allows before the process exits.
#[derive(Args, Debug)]
pub struct ShutdownArgs {
    /// Seconds given on SIGTERM/Ctrl-C to the requests in flight (API) and
    /// to the current job (worker); after that a worker stops its job and
    /// hands it back to the queue, and exits 0.
    #[arg(long, env = "BYTEEDIT_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    shutdown_grace_secs: u64,
}

impl ShutdownArgs {
    fn grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_grace_secs)
    }
}

#[derive(Args, Debug)]
pub struct ApiCommand {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    shutdown: ShutdownArgs,
}

#[derive(Args, Debug)]
pub struct WorkerCommand {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    worker: WorkerArgs,
    /// cpu, or cuda / cuda:N in builds with the `cuda` feature.
    #[arg(long, default_value = "cpu", env = "BYTEEDIT_DEVICE")]
    device: DeviceChoice,
    #[command(flatten)]
    shutdown: ShutdownArgs,
}

#[derive(Args, Debug)]
pub struct ServeCommand {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    worker: WorkerArgs,
    /// cpu, or cuda / cuda:N in builds with the `cuda` feature.
    #[arg(long, default_value = "cpu", env = "BYTEEDIT_DEVICE")]
    device: DeviceChoice,
    #[command(flatten)]
    shutdown: ShutdownArgs,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn connect(args: &ConnectArgs) -> anyhow::Result<Backends> {
    Backends::connect(args).await.with_context(|| {
        format!(
            "cannot connect to Postgres ({}), Redis ({}) or storage ({})",
            redacted(&args.database_url),
            redacted(&args.redis_url),
            redacted(&args.storage_url)
        )
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

async fn start_worker(
    mut args: WorkerArgs,
    backends: Backends,
    device: DeviceChoice,
) -> anyhow::Result<WorkerHandle> {
    // A CPU edit already keeps every core busy: batching jobs there only
    // delays the first; a GPU has room for several.
    args.max_batch.get_or_insert(match device {
        DeviceChoice::Cpu => 1,
        DeviceChoice::Cuda(_) => 8,
    });
    struct Start(WorkerArgs, Backends);
    impl OnDevice for Start {
        type Output = Pin<Box<dyn Future<Output = anyhow::Result<WorkerHandle>>>>;
        fn run<B: Backend>(self, device: B::Device) -> Self::Output {
            Box::pin(async move { Ok(Worker::start::<B>(self.0, self.1, device).await?) })
        }
    }
    device
        .run(Start(args, backends))
        .map_err(anyhow::Error::msg)?
        .await
}

async fn bind(api: &ApiArgs) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(api.bind)
        .await
        .with_context(|| format!("cannot listen on {}", api.bind))
}

pub fn api(cmd: ApiCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let backends = connect(&cmd.connect).await?;
        let listener = bind(&cmd.api).await?;
        let state = byteedit_api::app_state(&cmd.api, backends);
        byteedit_api::serve_draining(listener, state, shutdown_signal(), cmd.shutdown.grace())
            .await?;
        Ok(())
    })
}

pub fn worker(cmd: WorkerCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let backends = connect(&cmd.connect).await?;
        let mut handle = start_worker(cmd.worker, backends, cmd.device).await?;
        tokio::select! {
            _ = shutdown_signal() => handle.stop_within(cmd.shutdown.grace()).await?,
            result = handle.wait() => result?,
        }
        Ok(())
    })
}

pub fn serve(cmd: ServeCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let backends = connect(&cmd.connect).await?;
        let listener = bind(&cmd.api).await?;
        let worker = start_worker(cmd.worker, backends.clone(), cmd.device).await?;
        let state = byteedit_api::app_state(&cmd.api, backends);
        let grace = cmd.shutdown.grace();
        // One stop for both roles, at once: the worker must stop taking jobs
        // while the API drains, not after it (that would double the time an
        // orchestrator has to wait, and start jobs it would then hand back).
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let stop = std::sync::Arc::new(stop);
        let on_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stopping| *stopping).await;
        };
        let signal_stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = signal_stop.send(true);
        });
        let api = async {
            let served =
                byteedit_api::serve_draining(listener, state, on_stop(stopped.clone()), grace)
                    .await;
            // An API that fails by itself takes the worker down with it.
            let _ = stop.send(true);
            served
        };
        let worker = async {
            on_stop(stopped.clone()).await;
            worker.stop_within(grace).await
        };
        let (served, stopped_worker) = tokio::join!(api, worker);
        served?;
        stopped_worker?;
        Ok(())
    })
}
