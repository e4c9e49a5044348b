//! The fine-tuning run: alternating generator (UNet) and discriminator
//! (R_γ) steps, each with its own AdamW, EMA of the trained UNet weights,
//! held-out edits scored by the frozen rewards, checkpoints that resume
//! exactly, and the EMA model exported as a diffusers folder.
//!
//! `--out` is the exported folder; `--out/training/` beside its components
//! holds the run: `finetune.json` (what was trained from what),
//! `metrics.jsonl`, the plots, and `state/` (trained weights, both
//! optimisers, the EMA, R_γ, the step). Every random draw of step `s` comes
//! from a generator seeded by `(seed, s)`, so the RNG state is the step.

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::backend::AutodiffBackend;
use byteedit_models::export::{diffusers_tensors, write_inpaint_folder};
use byteedit_models::params::{gradients, map_flat, same_key, set_trainable};
use byteedit_models::weights::SaveDtype;
use byteedit_models::{InpaintModel, ModelConfigs, SchedulerKind};
use byteedit_rewards::coherence::folder_kind;
use byteedit_rewards::{CoherenceFolder, RewardFolder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::data::epoch_order;
use crate::error::{Result, TrainError};
use crate::finetune::config::FinetuneConfig;
use crate::finetune::data::{Example, read_dataset};
use crate::finetune::pefl::{
    Batch, Feedback, GeneratorTerms, PhaseSchedule, StepNoise, discriminator_step, generator_step,
};
use crate::optim::{AdamW, Ema, Keyed, LrSchedule, clip_global_norm, global_norm};
use crate::run::{
    Logged, MetricsLog, load_keyed, load_moments, read_state, save_keyed, write_json,
};
use crate::vgg::Vgg16Features;

/// Where R_γ starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CoherenceStart {
    /// No adversarial term.
    Off,
    /// A fresh model of the given sizes (default: a small ViT at 224 px).
    Fresh,
    Folder(PathBuf),
}

/// Everything `byteedit finetune` was asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneRequest {
    pub model: PathBuf,
    pub data: PathBuf,
    pub out: PathBuf,
    pub aesthetic: Option<PathBuf>,
    pub alignment: Option<PathBuf>,
    pub coherence: CoherenceStart,
    pub vgg: Option<PathBuf>,
    pub config: FinetuneConfig,
    #[serde(skip)]
    pub resume: bool,
    #[serde(skip)]
    pub stop_after: Option<u64>,
}

/// One logged step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepLine {
    pub step: u64,
    pub lr: f64,
    pub grad_norm: f64,
    #[serde(flatten)]
    pub generator: GeneratorTerms,
    pub discriminator_loss: Option<f64>,
    pub discriminator_accuracy: Option<f64>,
}

impl Logged for StepLine {
    fn step(&self) -> u64 {
        self.step
    }
}

impl Logged for EvalLine {
    fn step(&self) -> u64 {
        self.step
    }
}

/// One held-out evaluation: full edits at the phase's step count.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalLine {
    pub step: u64,
    pub held_out_aesthetic: Option<f64>,
    pub held_out_alignment: Option<f64>,
    /// Mean |output − input| over the pixels the masks keep, in [0, 1].
    pub held_out_unmasked_l1: f64,
}

/// What the trainer reports as it goes.
pub enum Progress<'a> {
    Started {
        train: usize,
        held_out: usize,
        first_step: u64,
        total_steps: u64,
    },
    Step(&'a StepLine),
    Eval(&'a EvalLine),
}

/// Where the run stands (`state/state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunState {
    step: u64,
    adam_step: u64,
    discriminator_adam_step: u64,
}

/// How a run ended: what `finetune.json` records and registration reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneSummary {
    pub request: FinetuneRequest,
    pub phase: crate::finetune::config::PhaseConfig,
    pub steps: u64,
    pub train_examples: usize,
    pub held_out_examples: usize,
    pub first_eval: Option<EvalLine>,
    pub last_eval: Option<EvalLine>,
    /// The step count a model of this phase is served with.
    pub serving_steps: usize,
}

/// The fine-tuning state's parts that do not change shape.
struct Parts<B: AutodiffBackend> {
    model: InpaintModel<B>,
    feedback: Feedback<B>,
    coherence: Option<CoherenceFolder<B>>,
}

fn training_dir(out: &Path) -> PathBuf {
    out.join("training")
}

/// Is the key a trained UNet parameter?
fn trains(lora: bool) -> impl Fn(&str) -> bool {
    move |key: &str| !lora || key.contains(".lora_")
}

/// Loads what the request names, refusing what cannot train with a sentence.
fn load_parts<B: AutodiffBackend>(
    request: &FinetuneRequest,
    device: &B::Device,
) -> Result<Parts<B>> {
    let config = &request.config;
    for (flag, dir) in [
        ("aesthetic", &request.aesthetic),
        ("alignment", &request.alignment),
    ] {
        if let Some(dir) = dir {
            let kind = folder_kind(dir)?;
            if kind != "imagereward" {
                return Err(TrainError::Config(format!(
                    "--reward {flag}={} is a `{kind}` reward folder; {flag} needs an ImageReward-style one (R_α or R_β)",
                    dir.display()
                )));
            }
        }
    }
    if let CoherenceStart::Folder(dir) = &request.coherence {
        let kind = folder_kind(dir)?;
        if kind != "coherence" {
            return Err(TrainError::Config(format!(
                "--coherence {} is a `{kind}` reward folder; it needs a coherence (R_γ) folder, or `fresh`",
                dir.display()
            )));
        }
    }
    let mut model = InpaintModel::<B>::load_with_lora(&request.model, device, config.lora.clone())?;
    let lora = config.lora.is_some();
    model.text_encoder = set_trainable(model.text_encoder, &same_key, &|_| false);
    model.vae = set_trainable(model.vae, &same_key, &|_| false);
    model.unet = set_trainable(model.unet, &same_key, &trains(lora));
    let frozen_reward = |dir: &Option<PathBuf>| -> Result<Option<RewardFolder<B>>> {
        dir.as_ref()
            .map(|d| {
                let mut folder = RewardFolder::<B>::load(d, device)?;
                folder.model = set_trainable(folder.model, &same_key, &|_| false);
                Ok(folder)
            })
            .transpose()
    };
    let feedback = Feedback {
        aesthetic: frozen_reward(&request.aesthetic)?,
        alignment: frozen_reward(&request.alignment)?,
        vgg: request
            .vgg
            .as_ref()
            .map(|p| {
                Vgg16Features::load(p, device).map(|v| set_trainable(v, &same_key, &|_| false))
            })
            .transpose()?,
    };
    let coherence = match &request.coherence {
        CoherenceStart::Off => None,
        CoherenceStart::Fresh => Some(CoherenceFolder::fresh(
            config.fresh_coherence(),
            config.seed,
            device,
        )?),
        CoherenceStart::Folder(dir) => Some(CoherenceFolder::load(dir, device)?),
    }
    .map(|d: CoherenceFolder<B>| {
        let trained = set_trainable(d.model.clone(), &same_key, &|_| true);
        d.with_model(trained)
    });
    Ok(Parts {
        model,
        feedback,
        coherence,
    })
}

/// Per-step randomness: a generator for `(seed, step)`.
fn step_rng(seed: u64, step: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 0x5EED)
}

fn normal<B: Backend>(rng: &mut StdRng, shape: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
    let count = shape.iter().product();
    let values: Vec<f32> = (0..count).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A mask for an example: its own, one drawn around its instance, or one
/// drawn by the strategies.
fn mask_for(example: &Example, config: &FinetuneConfig, rng: &mut StdRng) -> image::GrayImage {
    let (w, h) = example.image.dimensions();
    match (&example.mask, &example.instance_mask) {
        (Some(mask), _) => mask.clone(),
        (None, Some(instance)) => config.masks.around_instance(instance, rng),
        (None, None) => config.masks.draw(w, h, rng).1,
    }
}

/// The step's batch and noise, drawn from `rng`.
fn draw_step<B: Backend>(
    train: &[Example],
    step: u64,
    config: &FinetuneConfig,
    latent: [usize; 3],
    train_timesteps: usize,
    device: &B::Device,
) -> (Batch, StepNoise<B>) {
    let mut rng = step_rng(config.seed, step);
    let len = train.len() as u64;
    let start = (step - 1) * config.batch as u64;
    let mut order: (u64, Vec<usize>) = (u64::MAX, Vec::new());
    let mut batch = Batch {
        images: Vec::new(),
        masks: Vec::new(),
        prompts: Vec::new(),
    };
    for i in start..start + config.batch as u64 {
        if order.0 != i / len {
            order = (i / len, epoch_order(train.len(), config.seed, i / len));
        }
        let example = &train[order.1[(i % len) as usize]];
        batch.masks.push(mask_for(example, config, &mut rng));
        batch.images.push(example.image.clone());
        batch.prompts.push(example.caption.clone());
    }
    let b = config.batch;
    let [c, h, w] = latent;
    let grad_max = config.phase_config().map(|p| p.grad_max).unwrap_or(1);
    let noise = StepNoise {
        start: normal(&mut rng, [b, c, h, w], device),
        t_prime: (0..b).map(|_| rng.random_range(1..=grad_max)).collect(),
        denoise: normal(&mut rng, [b, c, h, w], device),
        denoise_t: (0..b)
            .map(|_| rng.random_range(0..train_timesteps))
            .collect(),
    };
    (batch, noise)
}

/// Runs the request to its end (or `stop_after`), exports the EMA model.
pub fn finetune<B: AutodiffBackend>(
    request: &FinetuneRequest,
    device: &B::Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<FinetuneSummary> {
    let config = &request.config;
    config.check()?;
    let phase = config.phase_config()?;
    let configs = ModelConfigs::read(&request.model)?;
    let size = config.resolution.unwrap_or(configs.native_size().native);
    let multiple = configs.native_size().multiple;
    if !size.is_multiple_of(multiple) {
        return Err(TrainError::Config(format!(
            "`resolution` is {size}: this model needs a multiple of {multiple}"
        )));
    }
    let run_dir = training_dir(&request.out);
    let state_dir = run_dir.join("state");
    let state_file = state_dir.join("state.json");
    let record = run_dir.join("finetune.json");
    if state_file.is_file() && !request.resume {
        return Err(TrainError::Config(format!(
            "{} already holds a fine-tuning run: pass --resume to continue it, or choose another --out",
            request.out.display()
        )));
    }
    if request.resume && state_file.is_file() {
        check_same_run(&record, request)?;
    }
    let resuming = request.resume && state_file.is_file();

    let (train, held_out, held_masks) = split_dataset(request, size)?;

    let Parts {
        mut model,
        feedback,
        mut coherence,
    } = load_parts::<B>(request, device)?;
    let schedule = PhaseSchedule::new(&model, phase)?;
    let lora = config.lora.is_some();
    let mut optimizer = AdamW::<B::InnerBackend>::new(config.adamw.clone());
    let mut d_optimizer = AdamW::<B::InnerBackend>::new(config.adamw.clone());
    let mut ema = Ema::<B::InnerBackend>::new(config.ema_decay);
    let mut state = RunState {
        step: 0,
        adam_step: 0,
        discriminator_adam_step: 0,
    };
    std::fs::create_dir_all(&state_dir).map_err(|e| TrainError::io(&state_dir, e))?;
    if resuming {
        state = read_state(&state_file)?;
        let saved = state_dir.join("unet.safetensors");
        let weights = load_keyed::<B::InnerBackend>(&saved, "unet", device)?;
        model.unet = map_flat(model.unet, &same_key, &mut |key, _| {
            weights.get(key).cloned().map(Tensor::from_inner)
        });
        let moments = state_dir.join("optimizer.safetensors");
        load_moments(&mut optimizer, &moments, "", state.adam_step, device)?;
        ema.average = load_keyed(&moments, "ema", device)?;
        if let Some(d) = &mut coherence {
            *d = CoherenceFolder::<B>::load(&state_dir.join("discriminator"), device)?;
            let step = state.discriminator_adam_step;
            load_moments(&mut d_optimizer, &moments, "d_", step, device)?;
        }
    }
    write_json(&record, request)?;
    let (mut log, mut steps_log, mut evals_log) = MetricsLog::open::<StepLine, EvalLine>(
        &run_dir.join("metrics.jsonl"),
        resuming.then_some(state.step),
    )?;

    let total = config.steps;
    let lr_schedule = LrSchedule {
        lr: config.lr,
        min_lr: config.lr,
        warmup: config.warmup_steps,
        total,
    };
    let d_schedule = LrSchedule {
        lr: config.discriminator_lr,
        min_lr: config.discriminator_lr,
        warmup: config.warmup_steps,
        total,
    };
    progress(Progress::Started {
        train: train.len(),
        held_out: held_out.len(),
        first_step: state.step + 1,
        total_steps: total,
    });
    let sf = model.vae_scale_factor();
    let latent = [
        model.vae.latent_channels(),
        size as usize / sf,
        size as usize / sf,
    ];
    let train_timesteps = model.scheduler_config.num_train_timesteps;
    let evaluate = |unet_ema: &InpaintModel<B::InnerBackend>,
                    step: u64,
                    feedback: &Feedback<B>|
     -> Result<Option<EvalLine>> {
        if held_out.is_empty() {
            return Ok(None);
        }
        evaluate_held_out(
            unet_ema,
            feedback,
            &held_out,
            &held_masks,
            phase.steps,
            config.seed,
            step,
            device,
        )
        .map(Some)
    };
    if state.step == 0
        && let Some(eval) = evaluate(&model.valid(), 0, &feedback)?
    {
        log.write(&eval)?;
        progress(Progress::Eval(&eval));
        evals_log.push(eval);
    }

    let stop = request.stop_after.unwrap_or(total).min(total);
    while state.step < stop {
        let step = state.step + 1;
        let (batch, noise) =
            draw_step::<B::InnerBackend>(&train, step, config, latent, train_timesteps, device);

        // Generator.
        let g = generator_step(
            &model,
            &schedule,
            &feedback,
            coherence.as_ref(),
            &config.weights,
            &batch,
            &noise,
        )?;
        let grads = g.loss.backward();
        let mut summed: Keyed<B::InnerBackend> = gradients(&model.unet, &grads, &same_key)
            .into_iter()
            .collect();
        drop(grads);
        let grad_norm = match config.max_grad_norm {
            Some(max) => clip_global_norm(&mut summed, max),
            None => global_norm(&summed),
        };
        let lr = lr_schedule.at(step);
        optimizer.begin_step();
        model.unet = map_flat(model.unet, &same_key, &mut |key, flat| {
            let grad = summed.remove(key)?;
            let new = optimizer.update(key, flat.inner(), grad, lr);
            ema.update(key, new.clone());
            Some(Tensor::from_inner(new))
        });

        // Discriminator, on the same G (before the generator's update).
        let (mut d_loss, mut d_accuracy) = (None, None);
        if let Some(d) = coherence.take() {
            let (loss, accuracy) =
                discriminator_step(&d, g.real.clone(), g.generated.clone(), g.mask.clone());
            d_loss = Some(loss.clone().into_scalar().elem::<f64>());
            d_accuracy = Some(accuracy);
            let grads = loss.backward();
            let mut summed: Keyed<B::InnerBackend> =
                gradients(&d.model, &grads, &same_key).into_iter().collect();
            if let Some(max) = config.max_grad_norm {
                clip_global_norm(&mut summed, max);
            }
            let d_lr = d_schedule.at(step);
            d_optimizer.begin_step();
            let CoherenceFolder { model: d_model, .. } = &d;
            let updated = map_flat(d_model.clone(), &same_key, &mut |key, flat| {
                let grad = summed.remove(key)?;
                Some(Tensor::from_inner(d_optimizer.update(
                    key,
                    flat.inner(),
                    grad,
                    d_lr,
                )))
            });
            coherence = Some(d.with_model(updated));
        }

        state.step = step;
        state.adam_step = optimizer.step;
        state.discriminator_adam_step = d_optimizer.step;
        let line = StepLine {
            step,
            lr,
            grad_norm,
            generator: g.terms,
            discriminator_loss: d_loss,
            discriminator_accuracy: d_accuracy,
        };
        log.write(&line)?;
        progress(Progress::Step(&line));
        steps_log.push(line);

        if step.is_multiple_of(config.save_every) || step == stop {
            let ema_model = model.valid().with_unet(ema_unet(&model, &ema));
            if let Some(eval) = evaluate(&ema_model, step, &feedback)? {
                log.write(&eval)?;
                progress(Progress::Eval(&eval));
                evals_log.push(eval);
            }
            save_state(
                &model,
                coherence.as_ref(),
                &optimizer,
                &d_optimizer,
                &ema,
                &state,
                &state_dir,
                lora,
            )?;
        }
    }
    let ema_model = model.valid().with_unet(ema_unet(&model, &ema));
    let dtype = if config.export_fp16 {
        SaveDtype::F16
    } else {
        SaveDtype::F32
    };
    let unet = diffusers_tensors(&ema_model.unet, config.lora.as_ref().map(|l| l.scale()))?;
    write_inpaint_folder(&request.model, &request.out, unet, dtype)?;
    if let Some(d) = &coherence {
        d.save(&run_dir.join("coherence"))?;
    }
    crate::finetune::plot::curves(&run_dir, &steps_log, &evals_log);
    let summary = FinetuneSummary {
        request: request.clone(),
        phase,
        steps: state.step,
        train_examples: train.len(),
        held_out_examples: held_out.len(),
        first_eval: evals_log.first().cloned(),
        last_eval: evals_log.last().cloned(),
        serving_steps: phase.steps,
    };
    write_json(&run_dir.join("summary.json"), &summary)?;
    Ok(summary)
}

/// The dataset split as a run splits it: the training images, and the
/// held-out ones (the last of a seeded order, at least one left to train)
/// with their fixed evaluation masks.
fn split_dataset(
    request: &FinetuneRequest,
    size: u32,
) -> Result<(Vec<Example>, Vec<Example>, Vec<image::GrayImage>)> {
    let config = &request.config;
    let examples = read_dataset(&request.data, size)?;
    let held = config.held_out.min(examples.len().saturating_sub(1));
    let mut slots: Vec<Option<Example>> = examples.into_iter().map(Some).collect();
    let mut shuffled: Vec<Example> = epoch_order(slots.len(), config.seed, u64::MAX)
        .into_iter()
        .filter_map(|i| slots[i].take())
        .collect();
    let held_out = shuffled.split_off(shuffled.len() - held);
    let masks = held_out
        .iter()
        .enumerate()
        .map(|(i, e)| mask_for(e, config, &mut step_rng(config.seed ^ 0xE7A1, i as u64)))
        .collect();
    Ok((shuffled, held_out, masks))
}

/// The held-out images and masks a run evaluates on (for checking a
/// run's figures from its exported folder).
pub fn held_out_set(request: &FinetuneRequest) -> Result<(Vec<Example>, Vec<image::GrayImage>)> {
    let configs = ModelConfigs::read(&request.model)?;
    let size = request
        .config
        .resolution
        .unwrap_or(configs.native_size().native);
    let (_, held, masks) = split_dataset(request, size)?;
    Ok((held, masks))
}

/// The UNet with the EMA weights where they exist (the trained keys).
pub fn ema_unet<B: AutodiffBackend>(
    model: &InpaintModel<B>,
    ema: &Ema<B::InnerBackend>,
) -> byteedit_models::unet_2d::UNet2DConditionModel<B::InnerBackend> {
    map_flat(model.unet.valid(), &same_key, &mut |key, _| {
        ema.average.get(key).cloned()
    })
}

/// A resume must continue the same run: the same request but for the
/// step count (which may grow) and the flags that only steer this process.
fn check_same_run(record: &Path, request: &FinetuneRequest) -> Result<()> {
    let text = std::fs::read_to_string(record).map_err(|e| TrainError::io(record, e))?;
    let saved: FinetuneRequest = serde_json::from_str(&text).map_err(|e| TrainError::Input {
        path: record.to_owned(),
        message: format!("not a fine-tuning record: {e}"),
    })?;
    let comparable = |r: &FinetuneRequest| {
        let mut r = r.clone();
        r.config.steps = 0;
        serde_json::to_value(&r).unwrap_or_default()
    };
    let (old, new) = (comparable(&saved), comparable(request));
    if old != new {
        let differs = differing_fields(&old, &new, "");
        return Err(TrainError::Config(format!(
            "--resume continues the run in {} with its own settings, but these differ: {}; \
             resume with the same ones or choose another --out",
            request.out.display(),
            differs.join(", ")
        )));
    }
    Ok(())
}

fn differing_fields(a: &serde_json::Value, b: &serde_json::Value, at: &str) -> Vec<String> {
    match (a, b) {
        (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .flat_map(|k| {
                    let path = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    let null = serde_json::Value::Null;
                    differing_fields(x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null), &path)
                })
                .collect()
        }
        _ if a == b => Vec::new(),
        _ => vec![at.to_owned()],
    }
}

#[allow(clippy::too_many_arguments)]
fn save_state<B: AutodiffBackend>(
    model: &InpaintModel<B>,
    coherence: Option<&CoherenceFolder<B>>,
    optimizer: &AdamW<B::InnerBackend>,
    d_optimizer: &AdamW<B::InnerBackend>,
    ema: &Ema<B::InnerBackend>,
    state: &RunState,
    dir: &Path,
    lora: bool,
) -> Result<()> {
    let trained = trains(lora);
    let mut weights: Keyed<B::InnerBackend> = Keyed::new();
    byteedit_models::params::visit_flat(&model.unet.valid(), &same_key, &mut |key, _, flat| {
        if trained(key) {
            weights.insert(key.to_owned(), flat);
        }
    });
    save_keyed(&dir.join("unet.safetensors"), &[("unet", &weights)])?;
    save_keyed(
        &dir.join("optimizer.safetensors"),
        &[
            ("first", &optimizer.first),
            ("second", &optimizer.second),
            ("ema", &ema.average),
            ("d_first", &d_optimizer.first),
            ("d_second", &d_optimizer.second),
        ],
    )?;
    if let Some(d) = coherence {
        d.with_model(d.model.valid())
            .save(&dir.join("discriminator"))?;
    }
    write_json(&dir.join("state.json"), state)
}

/// Full edits of the held-out images at `steps` DDIM steps without
/// guidance (the fixed seed per image), scored by the frozen rewards.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_held_out<B: AutodiffBackend>(
    model: &InpaintModel<B::InnerBackend>,
    feedback: &Feedback<B>,
    images: &[Example],
    masks: &[image::GrayImage],
    steps: usize,
    seed: u64,
    step: u64,
    device: &B::Device,
) -> Result<EvalLine> {
    let mut outputs = Vec::new();
    let mut l1 = 0.0;
    let mut kept = 0.0;
    for (i, (example, mask)) in images.iter().zip(masks).enumerate() {
        let request = byteedit_models::EditRequest {
            image: example.image.clone(),
            mask: mask.clone(),
            prompt: example.caption.clone(),
            negative_prompt: None,
            steps,
            guidance_scale: 1.0,
            scheduler: SchedulerKind::Ddim,
            timestep_spacing: None,
            seed: seed.wrapping_add(i as u64),
            latents: None,
        };
        let output = model.edit(&request, &mut |_| std::ops::ControlFlow::Continue(()))?;
        let (w, h) = (output.width as usize, output.height as usize);
        for (p, (x, y, pixel)) in output
            .pixels
            .chunks(3)
            .zip(example.image.enumerate_pixels())
        {
            if mask.get_pixel(x, y).0[0] < 128 {
                for (got, want) in p.iter().zip(pixel.0) {
                    l1 += (*got as f64 - want as f64 / 255.0).abs();
                }
                kept += 3.0;
            }
        }
        let mut chw = vec![0f32; 3 * h * w];
        for (j, p) in output.pixels.chunks(3).enumerate() {
            for c in 0..3 {
                chw[c * h * w + j] = p[c];
            }
        }
        outputs.push(Tensor::<B::InnerBackend, 4>::from_data(
            TensorData::new(chw, [1, 3, h, w]),
            device,
        ));
    }
    let pixels = Tensor::cat(outputs, 0);
    let captions: Vec<&str> = images.iter().map(|e| e.caption.as_str()).collect();
    let mean_reward = |folder: &Option<RewardFolder<B>>| -> Result<Option<f64>> {
        folder
            .as_ref()
            .map(|f| {
                let inner = f.with_model(f.model.valid());
                let encoded = inner.encode(&captions)?;
                Ok(inner
                    .score(pixels.clone(), &encoded)
                    .mean()
                    .into_scalar()
                    .elem::<f64>())
            })
            .transpose()
    };
    Ok(EvalLine {
        step,
        held_out_aesthetic: mean_reward(&feedback.aesthetic)?,
        held_out_alignment: mean_reward(&feedback.alignment)?,
        held_out_unmasked_l1: if kept > 0.0 { l1 / kept } else { 0.0 },
    })
}
