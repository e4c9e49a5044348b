//! `byteedit train-reward` and `byteedit score`: reward models from votes,
//! and scores from reward models.

use std::path::PathBuf;

use anyhow::Context;
use burn::prelude::Backend;
use byteedit_models::{CpuBackend, TrainingBackend};
use byteedit_rewards::RewardFolder;
use byteedit_trainer::{
    Progress, RewardKind, TrainConfig, TrainRequest, TrainSummary, train_reward,
};
use clap::{Args, ValueEnum};

use crate::device::{DeviceChoice, OnDevice};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    /// R_α: which of two images of a prompt is better.
    Aesthetic,
    /// R_β: which of two captions fits an image.
    Alignment,
    /// R_γ: which pixels of an image were generated.
    Coherence,
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
    #[arg(
        long,
        required_unless_present = "from_database",
        conflicts_with = "from_database"
    )]
    data: Option<PathBuf>,
    /// Aesthetic rewards: read the votes and the experts' aesthetics ratings
    /// straight from Postgres (--database-url) instead of a file; the pairs
    /// are written to OUT/data.jsonl (kept with the model) and the images are
    /// read from --storage.
    #[arg(long)]
    from_database: bool,
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
    /// Register the result in Postgres under this name (its next version),
    /// listed by `GET /v1/rewards`.
    #[arg(long)]
    register: Option<String>,
    /// Postgres URL for --register; the database is created and migrated if needed.
    #[arg(long, env = "DATABASE_URL", default_value = byteedit_jobs::config::DEFAULT_DATABASE_URL)]
    database_url: String,
    /// cpu, or cuda / cuda:N in builds with the `cuda` feature.
    #[arg(long, default_value = "cpu", env = "BYTEEDIT_DEVICE")]
    device: DeviceChoice,
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
    let kind = match args.kind {
        Kind::Aesthetic => RewardKind::Aesthetic,
        Kind::Alignment => RewardKind::Alignment,
        Kind::Coherence => RewardKind::Coherence,
    };
    let data = match args.data {
        Some(data) => data,
        None => pairs_from_database(
            kind,
            &args.database_url,
            args.storage.as_deref(),
            &args.out,
            args.resume,
        )?,
    };
    let request = TrainRequest {
        kind,
        data,
        out: args.out,
        init: args.init,
        storage: args.storage,
        resume: args.resume,
        stop_after: args.stop_after,
        config,
    };
    let bar = crate::progress::training_bar();
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
            crate::progress::show_steps(&bar, first_step, total_steps);
        }
        Progress::Step(m) => {
            bar.set_position(m.step);
            bar.set_message(format!("loss {:.4}", m.loss));
        }
        Progress::Eval(e) => bar.println(format!(
            "step {}: held-out {} {:.3}, loss {:.4}",
            e.step,
            if e.held_out_auc.is_some() {
                "AUC"
            } else {
                "accuracy"
            },
            e.score(),
            e.held_out_loss
        )),
    };
    struct Run<'a>(&'a TrainRequest, &'a mut dyn FnMut(Progress));
    impl OnDevice for Run<'_> {
        type Output = byteedit_trainer::Result<TrainSummary>;
        fn run<B: Backend>(self, device: B::Device) -> Self::Output {
            train_reward::<TrainingBackend<B>>(self.0, &device, self.1)
        }
    }
    let summary = args
        .device
        .run(Run(&request, &mut on_progress))
        .map_err(anyhow::Error::msg)??;
    bar.finish_and_clear();
    if let Some(name) = &args.register {
        register(name, &args.database_url, &request, &summary)?;
    }
    println!(
        "saved {} (best at step {}: held-out score {:.3}; score mean {:.4}, std {:.4})",
        request.out.display(),
        summary.best_step,
        summary.held_out_score,
        summary.score_mean,
        summary.score_std
    );
    Ok(())
}

/// A current-thread runtime and a pool on `database_url`, for the one-shot
/// database work of these commands.
fn with_database<T>(
    database_url: &str,
    purpose: &str,
    work: impl AsyncFnOnce(sqlx::PgPool) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let db = byteedit_jobs::config::connect_database(database_url, 2, 10.0)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to Postgres ({}) to {purpose}",
                    byteedit_jobs::config::redacted(database_url)
                )
            })?;
        work(db).await
    })
}

/// Writes OUT/data.jsonl from Postgres: one pair per voted comparison
/// (majority Good against Bad; "Same" majorities marked as ties) and one
/// per two expert-rated outputs of an input whose aesthetics differ. A
/// resumed run keeps the file it started with.
fn pairs_from_database(
    kind: RewardKind,
    database_url: &str,
    storage: Option<&std::path::Path>,
    out: &std::path::Path,
    resume: bool,
) -> anyhow::Result<PathBuf> {
    use byteedit_jobs::db::feedback;
    use futures_util::TryStreamExt;
    if kind != RewardKind::Aesthetic {
        anyhow::bail!(
            "--from-database trains the aesthetic reward (votes and aesthetics ratings); give --kind aesthetic or a --data file"
        );
    }
    let storage = storage.context(
        "--from-database reads the images the database names from the service's storage folder: give --storage",
    )?;
    let storage = std::fs::canonicalize(storage)
        .with_context(|| format!("the storage folder {} cannot be read", storage.display()))?;
    let path = out.join("data.jsonl");
    if resume && path.is_file() {
        return Ok(path);
    }
    let image = |key: &str| storage.join(key).to_string_lossy().into_owned();
    let (lines, votes, ratings) = with_database(database_url, "read the votes", async |db| {
        let mut lines = Vec::new();
        let rows: Vec<feedback::PreferenceRow> =
            feedback::preferences(&db, byteedit_jobs::feedback::Aspect::default())
                .try_collect()
                .await?;
        for r in &rows {
            let (preferred, rejected) = if r.bad > r.good {
                (&r.baseline_key, &r.candidate_key)
            } else {
                (&r.candidate_key, &r.baseline_key)
            };
            lines.push(serde_json::json!({
                "prompt": r.prompt, "preferred": image(preferred), "rejected": image(rejected),
                "tie": r.good == r.bad,
            }));
        }
        let pairs = feedback::rating_pairs(&db).await?;
        for p in &pairs {
            lines.push(serde_json::json!({
                "prompt": p.prompt, "preferred": image(&p.preferred_key), "rejected": image(&p.rejected_key),
            }));
        }
        anyhow::Ok((lines, rows.len(), pairs.len()))
    })?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "{votes} voted comparisons and {ratings} expert-rating pairs from the database → {}",
        path.display()
    );
    Ok(path)
}

/// Records the trained folder in the `reward_models` registry.
fn register(
    name: &str,
    database_url: &str,
    request: &TrainRequest,
    summary: &byteedit_trainer::TrainSummary,
) -> anyhow::Result<()> {
    let absolute = |p: &std::path::Path| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_owned())
            .to_string_lossy()
            .into_owned()
    };
    let new = byteedit_jobs::db::rewards::NewRewardModel {
        name: name.to_owned(),
        kind: request.kind.name().to_owned(),
        parent_path: request.init.as_deref().map(absolute),
        location: absolute(&request.out),
        data: serde_json::json!({
            "file": absolute(&request.data),
            "train_examples": summary.train_examples,
            "held_out_examples": summary.held_out_examples,
            "best_step": summary.best_step,
            "config": summary.config,
        }),
        metric: if request.kind == RewardKind::Coherence {
            "auc"
        } else {
            "accuracy"
        }
        .to_owned(),
        held_out_score: summary.held_out_score,
        score_mean: summary.score_mean,
        score_std: summary.score_std,
        steps: summary.steps as i64,
    };
    let record = with_database(database_url, "register the reward", async |db| {
        anyhow::Ok(byteedit_jobs::db::rewards::register(&db, &new).await?)
    })?;
    println!(
        "registered {} version {} ({})",
        record.name, record.version, record.id
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
    /// Coherence rewards: the edit's mask (white = generated); the score is
    /// the mean "real" logit over it (over the whole image without one).
    #[arg(long)]
    mask: Option<PathBuf>,
    /// Coherence rewards: write the per-pixel "real" probability as a PNG
    /// heat map here (green real, red generated; the centre square the
    /// model reads, at the image's scale).
    #[arg(long)]
    heatmap: Option<PathBuf>,
}

pub fn score(args: ScoreArgs) -> anyhow::Result<()> {
    let device = Default::default();
    if byteedit_rewards::coherence::folder_kind(&args.reward)? == "coherence" {
        return score_coherence(args);
    }
    if args.mask.is_some() || args.heatmap.is_some() {
        anyhow::bail!(
            "--mask and --heatmap are for coherence rewards; {} is an aesthetic/alignment reward",
            args.reward.display()
        );
    }
    let prompt = args.prompt.context(
        "an aesthetic or alignment reward scores an image against a text: give --prompt",
    )?;
    let folder = RewardFolder::<CpuBackend>::load(&args.reward, &device)?;
    let score = folder.score_files(&[args.image], &[&prompt], &device)?[0];
    println!("{score:.6}");
    Ok(())
}

fn score_coherence(args: ScoreArgs) -> anyhow::Result<()> {
    let device = Default::default();
    let folder = byteedit_rewards::CoherenceFolder::<CpuBackend>::load(&args.reward, &device)?;
    let pixels = byteedit_rewards::folder::read_pixels::<CpuBackend>(&args.image, &device)?;
    let [_, _, h, w] = pixels.dims();
    let mask = match &args.mask {
        Some(path) => {
            let mask = byteedit_rewards::folder::read_pixels::<CpuBackend>(path, &device)?;
            let [_, _, mh, mw] = mask.dims();
            if (mh, mw) != (h, w) {
                anyhow::bail!(
                    "the mask is {mw}x{mh} but the image is {w}x{h}: give a mask of the image's size"
                );
            }
            Some(mask.slice([0..1, 0..1, 0..h, 0..w]))
        }
        None => None,
    };
    let logits = folder.logits(pixels, mask.clone());
    let weights = match mask {
        Some(m) => folder.mask_at_model_size(m),
        None => logits.ones_like(),
    };
    let covered: f32 = weights.clone().sum().into_scalar();
    if covered <= 0.0 {
        anyhow::bail!("the mask has no white pixels: nothing to score");
    }
    let score: f32 = (logits.clone() * weights).sum().into_scalar() / covered;
    println!("{score:.6}");
    if let Some(path) = &args.heatmap {
        let size = folder.preprocess.size;
        let probability: Vec<f32> = burn::tensor::activation::sigmoid(logits)
            .into_data()
            .to_vec()
            .unwrap_or_default();
        let map = image::RgbImage::from_fn(size as u32, size as u32, |x, y| {
            // Red where the model sees generated pixels, green where real.
            let p = probability[y as usize * size + x as usize];
            image::Rgb([((1.0 - p) * 255.0) as u8, (p * 255.0) as u8, 40])
        });
        // The model reads the image's centre square: the map covers that.
        let side = w.min(h) as u32;
        let map = image::imageops::resize(&map, side, side, image::imageops::FilterType::Triangle);
        map.save(path)
            .with_context(|| format!("cannot write the heat map {}", path.display()))?;
    }
    Ok(())
}
