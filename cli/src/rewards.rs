//! `byteedit train-reward` and `byteedit score`: reward models from votes,
//! and scores from reward models.

use std::path::PathBuf;

use anyhow::Context;
use burn::backend::Autodiff;
use byteedit_models::CpuBackend;
use byteedit_rewards::RewardFolder;
use byteedit_trainer::{Progress, RewardKind, TrainConfig, TrainRequest, train_reward};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    /// R_α: which of two images of a prompt is better.
    Aesthetic,
    /// R_β: which of two captions fits an image.
    Alignment,
}

#[derive(Args, Debug)]
pub struct TrainRewardArgs {
    /// Which reward to train.
    #[arg(long, value_enum)]
    kind: Kind,
    /// JSON Lines of pairs: the service's preference export, or
    /// {"prompt","preferred","rejected"} (aesthetic) /
    /// {"image","preferred_caption","rejected_caption"} (alignment) with
    /// image paths relative to the file.
    #[arg(long)]
    data: PathBuf,
    /// The reward folder to write (and, with --resume, to continue).
    #[arg(long)]
    out: PathBuf,
    /// A reward folder to start from, e.g. the released ImageReward.
    #[arg(long)]
    init: Option<PathBuf>,
    /// A JSON training config (recipe, and `fresh` model sizes); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The service's local storage folder, which export lines' keys name.
    #[arg(long, env = "BYTEEDIT_STORAGE_DIR")]
    storage: Option<PathBuf>,
    /// Optimiser steps (default: the config's epochs over the data).
    #[arg(long)]
    steps: Option<u64>,
    /// Pairs per step, by gradient accumulation.
    #[arg(long)]
    batch: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Continue the run saved in --out.
    #[arg(long)]
    resume: bool,
    /// Stop after this step, saving the state for --resume.
    #[arg(long)]
    stop_after: Option<u64>,
}

pub fn train(args: TrainRewardArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => TrainConfig::read(path)?,
        None => TrainConfig::default(),
    };
    config.steps = args.steps.or(config.steps);
    config.batch = args.batch.unwrap_or(config.batch);
    config.lr = args.lr.unwrap_or(config.lr);
    config.seed = args.seed.unwrap_or(config.seed);
    let request = TrainRequest {
        kind: match args.kind {
            Kind::Aesthetic => RewardKind::Aesthetic,
            Kind::Alignment => RewardKind::Alignment,
        },
        data: args.data,
        out: args.out,
        init: args.init,
        storage: args.storage,
        resume: args.resume,
        stop_after: args.stop_after,
        config,
    };
    let bar = ProgressBar::hidden();
    let mut on_progress = |p: Progress| match p {
        Progress::Started {
            train,
            held_out,
            first_step,
            total_steps,
        } => {
            eprintln!(
                "{train} training pairs, {held_out} held out; steps {first_step}..={total_steps}"
            );
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_length(total_steps);
            bar.set_position(first_step - 1);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} steps {elapsed_precise} (eta {eta}) {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
        }
        Progress::Step(m) => {
            bar.set_position(m.step);
            bar.set_message(format!("loss {:.4}", m.loss));
        }
        Progress::Eval(e) => bar.println(format!(
            "step {}: held-out accuracy {:.3}, loss {:.4}",
            e.step, e.held_out_accuracy, e.held_out_loss
        )),
    };
    let device = Default::default();
    let summary = train_reward::<Autodiff<CpuBackend>>(&request, &device, &mut on_progress)?;
    bar.finish_and_clear();
    println!(
        "saved {} (best at step {}: held-out accuracy {:.3}; score mean {:.4}, std {:.4})",
        request.out.display(),
        summary.best_step,
        summary.held_out_accuracy,
        summary.score_mean,
        summary.score_std
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// A reward folder (ours, or the released ImageReward with vocab.txt).
    #[arg(long)]
    reward: PathBuf,
    /// The image to score (PNG, JPEG or WebP).
    #[arg(long)]
    image: PathBuf,
    /// The prompt (aesthetic) or caption (alignment) it is scored against.
    #[arg(long)]
    prompt: Option<String>,
}

pub fn score(args: ScoreArgs) -> anyhow::Result<()> {
    let prompt = args.prompt.context(
        "an aesthetic or alignment reward scores an image against a text: give --prompt",
    )?;
    let device = Default::default();
    let folder = RewardFolder::<CpuBackend>::load(&args.reward, &device)?;
    let score = folder.score_files(&[args.image], &[&prompt], &device)?[0];
    println!("{score:.6}");
    Ok(())
}
