//! `byteedit`: the ByteEdit command line. `byteedit edit` runs one inpainting
//! edit with a diffusers model folder; later roles (API, worker, trainer) join
//! as further subcommands.

mod device;
mod edit;

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
    Edit(edit::EditArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Edit(args) => edit::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
