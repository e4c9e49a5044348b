//! `byteedit versions`: fine-tuned editing models as servable versions.
//! `register` uploads an exported folder (`byteedit finetune --out`) to
//! the service's object storage and records it in Postgres; `list` shows
//! them; `compare` runs a set of inputs on a new version and its parent
//! through `POST /v1/comparisons`, which starts the Good/Same/Bad
//! collection that `GET /v1/stats/gsb` then reports.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use byteedit_jobs::db::versions::{ModelVersion, NewModelVersion};
use byteedit_jobs::model_store;
use byteedit_jobs::storage::Storage;
use byteedit_trainer::finetune::train::FinetuneSummary;
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum VersionsCommand {
    /// Upload a fine-tuned folder and register it as the next version of NAME.
    Register(RegisterArgs),
    /// List the registered versions, newest first.
    List(DatabaseArgs),
    /// Submit comparisons of NEW against PARENT (served model names) over a folder of inputs.
    Compare(CompareArgs),
}

#[derive(Args, Debug, Clone)]
pub struct DatabaseArgs {
    #[arg(long, env = "DATABASE_URL", default_value = byteedit_jobs::config::DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

#[derive(Args, Debug, Clone)]
pub struct RegisterArgs {
    /// The model line, e.g. byteedit-inpaint (versions count from 1 per line).
    pub name: String,
    /// The folder `byteedit finetune --out` wrote.
    #[arg(long)]
    pub folder: PathBuf,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The service's object storage (where workers download models from).
    #[arg(long, env = "BYTEEDIT_STORAGE_URL", default_value = "./data/storage")]
    pub storage_url: String,
}

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// The served model name of the new version.
    pub new: String,
    /// The served model name of its parent.
    pub parent: String,
    /// A folder of inputs: NAME.png (or .jpg/.webp) with NAME.mask.png and,
    /// optionally, NAME.txt (the prompt; none: an erase).
    #[arg(long)]
    pub inputs: PathBuf,
    /// The API's base URL.
    #[arg(
        long,
        env = "BYTEEDIT_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub api: String,
    /// An admin API key.
    #[arg(long, env = "BYTEEDIT_API_KEY")]
    pub key: String,
    /// Votes wanted per comparison.
    #[arg(long)]
    pub votes: Option<u32>,
}

pub fn run(cmd: VersionsCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match cmd {
            VersionsCommand::Register(args) => {
                let v = register(&args).await?;
                println!(
                    "registered {} ({} files, digest {}, serves with {} steps)",
                    v.label(),
                    v.manifest()?.files.len(),
                    &v.digest[..16],
                    v.default_steps
                );
            }
            VersionsCommand::List(args) => {
                let db = connect(&args.database_url).await?;
                for v in byteedit_jobs::db::versions::list(&db).await? {
                    println!(
                        "{}\tphase {}\t{} steps trained\tserves {} steps\tdigest {}\tfrom {}",
                        v.label(),
                        v.phase,
                        v.steps,
                        v.default_steps,
                        &v.digest[..16],
                        v.parent_path
                    );
                }
            }
            VersionsCommand::Compare(args) => {
                let ids = compare(&args).await?;
                println!(
                    "submitted {} comparisons of {} against {}",
                    ids.len(),
                    args.new,
                    args.parent
                );
            }
        }
        anyhow::Ok(())
    })
}

async fn connect(url: &str) -> anyhow::Result<sqlx::PgPool> {
    byteedit_jobs::config::connect_database(url, 2, 10.0)
        .await
        .with_context(|| {
            format!(
                "cannot connect to Postgres ({})",
                byteedit_jobs::config::redacted(url)
            )
        })
}

/// Uploads `args.folder` (its `training/` left out) and records it.
pub async fn register(args: &RegisterArgs) -> anyhow::Result<ModelVersion> {
    let folder = &args.folder;
    let summary_path = folder.join("training/summary.json");
    let text = std::fs::read_to_string(&summary_path).with_context(|| {
        format!(
            "{} is not a finished fine-tuning run (no training/summary.json)",
            folder.display()
        )
    })?;
    let summary: FinetuneSummary = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a run summary", summary_path.display()))?;
    // It must load as a model before anyone is told to serve it.
    byteedit_models::ModelConfigs::read(folder)?;
    let manifest = model_store::manifest(folder, &["training"])?;
    let parent_manifest = model_store::manifest(&summary.request.model, &["training"]).ok();
    let storage = Storage::from_url(&args.storage_url)?;
    let db = connect(&args.database.database_url).await?;
    let id = uuid::Uuid::now_v7();
    let prefix = format!("models/{}/{id}", args.name);
    model_store::upload(&storage, &prefix, folder, &manifest).await?;
    let absolute = |p: &Path| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_owned())
            .to_string_lossy()
            .into_owned()
    };
    let req = &summary.request;
    let new = NewModelVersion {
        id,
        name: args.name.clone(),
        parent_path: absolute(&req.model),
        parent_digest: parent_manifest.map(|m| m.digest()),
        phase: req.config.phase as i16,
        steps: summary.steps as i64,
        data: serde_json::json!({
            "file": absolute(&req.data),
            "train_examples": summary.train_examples,
            "held_out_examples": summary.held_out_examples,
            "first_eval": summary.first_eval,
            "last_eval": summary.last_eval,
        }),
        config: serde_json::to_value(&req.config)?,
        rewards: serde_json::json!({
            "aesthetic": req.aesthetic.as_deref().map(absolute),
            "alignment": req.alignment.as_deref().map(absolute),
            "coherence": req.coherence,
            "vgg": req.vgg.as_deref().map(absolute),
        }),
        default_steps: summary.serving_steps as i32,
        storage_prefix: prefix,
        manifest,
    };
    Ok(byteedit_jobs::db::versions::register(&db, &new).await?)
}

const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// One comparison per input of `args.inputs`; answers their ids.
pub async fn compare(args: &CompareArgs) -> anyhow::Result<Vec<String>> {
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&args.inputs)
        .with_context(|| format!("cannot list {}", args.inputs.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.contains(".mask.")
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    inputs.sort();
    if inputs.is_empty() {
        bail!(
            "{} holds no input images (NAME.png with NAME.mask.png)",
            args.inputs.display()
        );
    }
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for image in inputs {
        let stem = image
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let mask = image.with_file_name(format!("{stem}.mask.png"));
        let bytes =
            |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        let prompt = std::fs::read_to_string(image.with_extension("txt"))
            .ok()
            .map(|p| p.trim().to_owned());
        let task = if prompt.as_deref().is_some_and(|p| !p.is_empty()) {
            "inpaint"
        } else {
            "erase"
        };
        let mut form = reqwest::multipart::Form::new()
            .part(
                "image",
                reqwest::multipart::Part::bytes(bytes(&image)?).file_name(stem.clone()),
            )
            .part(
                "mask",
                reqwest::multipart::Part::bytes(bytes(&mask)?)
                    .file_name(format!("{stem}.mask.png")),
            )
            .text("task", task)
            .text("candidate_model", args.new.clone())
            .text("baseline_model", args.parent.clone());
        if let Some(prompt) = prompt.filter(|p| !p.is_empty()) {
            form = form.text("prompt", prompt);
        }
        if let Some(votes) = args.votes {
            form = form.text("votes_wanted", votes.to_string());
        }
        let response = http
            .post(format!("{}/v1/comparisons", args.api.trim_end_matches('/')))
            .bearer_auth(&args.key)
            .multipart(form)
            .send()
            .await
            .with_context(|| format!("cannot reach the API at {}", args.api))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("no message");
            bail!("{}: the API answered {status}: {message}", image.display());
        }
        ids.push(body["id"].as_str().unwrap_or_default().to_owned());
    }
    Ok(ids)
}
