//! `byteedit`: the ByteEdit command line. `byteedit edit` runs one edit with
//! a diffusers model folder; `api`, `worker` and `serve` run the service.

mod bench;
mod device;
mod edit;
mod finetune;
mod keys;
mod progress;
mod rewards;
mod service;
mod versions;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "byteedit",
    version,
    about = "Generative image editing: outpainting, inpainting, erasing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Edit one image: repaint the white part of MASK following PROMPT.
    Edit(Box<edit::EditArgs>),
    /// Run the HTTP API alone (jobs go to workers through Redis).
    Api(service::ApiCommand),
    /// Run a worker: load models once, then take their jobs from the queue.
    Worker(service::WorkerCommand),
    /// Run the API and a worker in one process, for a single machine.
    Serve(service::ServeCommand),
    /// Make, list and revoke API keys (straight in Postgres).
    Keys(keys::KeysCommand),
    /// Train a reward model (aesthetic or alignment) from preference pairs.
    TrainReward(Box<rewards::TrainRewardArgs>),
    /// Score an image with a reward model.
    Score(rewards::ScoreArgs),
    /// Fine-tune an inpainting model with reward feedback (PeFL, adversarial R_γ, phases).
    Finetune(Box<finetune::FinetuneArgs>),
    /// Register, list and compare fine-tuned model versions.
    #[command(subcommand)]
    Versions(versions::VersionsCommand),
    /// Tools for bench/device.sh: random full-size models, reference cases, PNG comparison.
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    // Before anything allocates: the engine's big buffers are reused, not remapped.
    byteedit_models::memory::keep_freed_buffers();
    let cli = Cli::parse();
    // The one-shot `edit` stays quiet; services log what they do.
    let default_level = match cli.command {
        Command::Edit(_)
        | Command::Keys(_)
        | Command::Bench(_)
        | Command::Score(_)
        | Command::Versions(_) => "warn",
        Command::TrainReward(_) | Command::Finetune(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result: anyhow::Result<()> = match cli.command {
        Command::Edit(args) => edit::run(*args).map_err(Into::into),
        Command::Api(cmd) => service::api(cmd),
        Command::Worker(cmd) => service::worker(cmd),
        Command::Serve(cmd) => service::serve(cmd),
        Command::Keys(cmd) => keys::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::TrainReward(args) => rewards::train(*args),
        Command::Score(args) => rewards::score(args),
        Command::Finetune(args) => finetune::run(*args),
        Command::Versions(cmd) => versions::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", describe(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes in one line, each said once (our error types
/// already quote their source, which the chain would repeat).
fn describe(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message
}
