//! `byteedit finetune`: feedback fine-tuning of an inpainting model (PeFL
//! with R_α / R_β, R_γ trained online, progressive phases, full or LoRA),
//! exported as a diffusers folder that `byteedit edit --model` loads.

use std::path::PathBuf;

use anyhow::{Context, bail};
use burn::prelude::Backend;
use byteedit_models::TrainingBackend;
use byteedit_models::lora::LoraSpec;
use byteedit_trainer::finetune::config::FinetuneConfig;
use byteedit_trainer::finetune::train::{
    CoherenceStart, FinetuneRequest, FinetuneSummary, Progress, finetune,
};
use clap::Args;

use crate::device::{DeviceChoice, OnDevice};

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// The diffusers inpainting folder to start from (for phase 2: phase 1's output).
    #[arg(long)]
    pub model: PathBuf,
    /// JSON Lines of {"image", "caption"} (optional "mask" or "instance_mask";
    /// paths relative to the file), or a folder of images with .txt captions.
    #[arg(long)]
    pub data: PathBuf,
    /// The diffusers folder to write (training state in OUT/training).
    #[arg(long)]
    pub out: PathBuf,
    /// A frozen reward: aesthetic=DIR (R_α) or alignment=DIR (R_β); repeatable.
    #[arg(long = "reward", value_name = "KIND=DIR")]
    pub rewards: Vec<String>,
    /// R_γ, trained online as the discriminator: a coherence folder, or `fresh`.
    #[arg(long, value_name = "DIR|fresh")]
    pub coherence: Option<String>,
    /// 1 (T=20, T1=15, T2=10) or 2 (T=8, T1=6, T2=3).
    #[arg(long)]
    pub phase: Option<u8>,
    #[arg(long)]
    pub steps: Option<u64>,
    /// Train low-rank adapters of this rank (merged into the export) instead of the whole UNet.
    #[arg(long, value_name = "RANK")]
    pub lora: Option<usize>,
    /// torchvision's vgg16 weights (safetensors) for the perceptual term;
    /// without it that term is off.
    #[arg(long)]
    pub vgg: Option<PathBuf>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// A TOML or JSON config (every field defaults to the paper's value); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run saved in OUT/training.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this step, saving the state for --resume.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Register the export as the next version of this model line (uploaded
    /// to --storage-url, recorded in Postgres; `byteedit versions` lists it).
    #[arg(long, value_name = "NAME")]
    pub register: Option<String>,
    #[arg(long, env = "DATABASE_URL", default_value = byteedit_jobs::config::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// The service's object storage, for --register.
    #[arg(long, env = "BYTEEDIT_STORAGE_URL", default_value = "./data/storage")]
    pub storage_url: String,
    /// cpu, or cuda / cuda:N in builds with the `cuda` feature.
    #[arg(long, default_value = "cpu", env = "BYTEEDIT_DEVICE")]
    pub device: DeviceChoice,
}

/// The request the flags and the config make.
pub fn request(args: &FinetuneArgs) -> anyhow::Result<FinetuneRequest> {
    let mut config = match &args.config {
        Some(path) => FinetuneConfig::read(path)?,
        None => FinetuneConfig::default(),
    };
    if let Some(phase) = args.phase {
        config.phase = phase;
        config.schedule = None;
    }
    config.steps = args.steps.unwrap_or(config.steps);
    config.lr = args.lr.unwrap_or(config.lr);
    config.seed = args.seed.unwrap_or(config.seed);
    if let Some(rank) = args.lora {
        let mut spec = config.lora.take().unwrap_or_else(|| LoraSpec::new(rank));
        spec.rank = rank;
        config.lora = Some(spec);
    }
    let (mut aesthetic, mut alignment) = (None, None);
    for reward in &args.rewards {
        let Some((kind, dir)) = reward.split_once('=') else {
            bail!("--reward {reward:?} must be KIND=DIR, e.g. aesthetic=rewards/aesthetic");
        };
        let slot = match kind {
            "aesthetic" => &mut aesthetic,
            "alignment" => &mut alignment,
            other => bail!(
                "--reward {other}=…: the frozen rewards are `aesthetic` and `alignment` \
                 (the coherence reward is trained online: give it with --coherence)"
            ),
        };
        if slot.replace(PathBuf::from(dir)).is_some() {
            bail!("--reward {kind}= is given twice");
        }
    }
    let coherence = match args.coherence.as_deref() {
        None => CoherenceStart::Off,
        Some("fresh") => CoherenceStart::Fresh,
        Some(dir) => CoherenceStart::Folder(PathBuf::from(dir)),
    };
    if aesthetic.is_none() && alignment.is_none() && coherence == CoherenceStart::Off {
        eprintln!("note: no reward given (--reward, --coherence): only the regularisers train");
    }
    if args.vgg.is_none() {
        eprintln!("note: no --vgg weights: the perceptual term ‖V(x) − V(G)‖₁ is off");
    }
    Ok(FinetuneRequest {
        model: args.model.clone(),
        data: args.data.clone(),
        out: args.out.clone(),
        aesthetic,
        alignment,
        coherence,
        vgg: args.vgg.clone(),
        config,
        resume: args.resume,
        stop_after: args.stop_after,
    })
}

pub fn run(args: FinetuneArgs) -> anyhow::Result<()> {
    let request = request(&args)?;
    let bar = crate::progress::training_bar();
    let mut on_progress = |p: Progress| match p {
        Progress::Started {
            train,
            held_out,
            first_step,
            total_steps,
        } => {
            eprintln!(
                "{train} training images, {held_out} held out; steps {first_step}..={total_steps}"
            );
            crate::progress::show_steps(&bar, first_step, total_steps);
        }
        Progress::Step(m) => {
            bar.set_position(m.step);
            let d = m
                .discriminator_accuracy
                .map(|a| format!(", D acc {a:.2}"))
                .unwrap_or_default();
            bar.set_message(format!("L_G {:.4}{d}", m.generator.loss));
        }
        Progress::Eval(e) => {
            let show = |name: &str, v: Option<f64>| {
                v.map(|v| format!(", {name} {v:.3}")).unwrap_or_default()
            };
            bar.println(format!(
                "step {}: held-out unmasked L1 {:.4}{}{}",
                e.step,
                e.held_out_unmasked_l1,
                show("aesthetic", e.held_out_aesthetic),
                show("alignment", e.held_out_alignment)
            ))
        }
    };
    struct Run<'a>(&'a FinetuneRequest, &'a mut dyn FnMut(Progress));
    impl OnDevice for Run<'_> {
        type Output = byteedit_trainer::Result<FinetuneSummary>;
        fn run<B: Backend>(self, device: B::Device) -> Self::Output {
            finetune::<TrainingBackend<B>>(self.0, &device, self.1)
        }
    }
    let summary = args
        .device
        .run(Run(&request, &mut on_progress))
        .map_err(anyhow::Error::msg)?
        .with_context(|| format!("fine-tuning {}", request.model.display()))?;
    bar.finish_and_clear();
    println!(
        "saved {} (phase T={} after {} steps; serve with {} steps; run in {})",
        request.out.display(),
        summary.phase.steps,
        summary.steps,
        summary.serving_steps,
        request.out.join("training").display()
    );
    if let Some(name) = &args.register {
        if summary.steps < request.config.steps {
            anyhow::bail!(
                "not registered: the run stopped at step {} of {} (--resume it first)",
                summary.steps,
                request.config.steps
            );
        }
        let register = crate::versions::RegisterArgs {
            name: name.clone(),
            folder: request.out.clone(),
            database: crate::versions::DatabaseArgs {
                database_url: args.database_url.clone(),
            },
            storage_url: args.storage_url.clone(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let version = runtime.block_on(crate::versions::register(&register))?;
        println!(
            "registered {} (serves with {} steps)",
            version.label(),
            version.default_steps
        );
    }
    Ok(())
}
