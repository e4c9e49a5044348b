//! Training R_α and R_β from preference pairs (paper Eq. 1 and 5):
//! minimise −log σ(R(c, x_p) − R(c, x_n)) with AdamW, a cosine schedule,
//! gradient accumulation up to the configured batch, the first layers of
//! both encoders frozen (ImageReward's `fix_rate`), and a held-out split
//! that picks the best model and recomputes the score's normalisation.
//!
//! `out` becomes a reward folder (what `score --reward` and `--init`
//! read) plus `metrics.jsonl`, `loss.png`, `accuracy.png`, `training.json`
//! and `state/`, from which `--resume` continues exactly where it stopped.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;
use burn::tensor::backend::AutodiffBackend;
use byteedit_models::params::{gradients, map_flat, same_key, set_trainable};
use byteedit_models::weights::{SaveDtype, TensorStore, save_safetensors};
use byteedit_rewards::folder::read_pixels;
use byteedit_rewards::{Encoded, ImageReward, RewardFolder};
use serde::{Deserialize, Serialize};

use crate::config::{RewardKind, TrainConfig};
use crate::data::{Pair, epoch_order, read_pairs, split};
use crate::error::{Result, TrainError};
use crate::optim::{AdamW, Ema, Keyed, LrSchedule, accumulate, clip_global_norm, global_norm};
use crate::plot;

/// What to train, from what, into where.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    pub kind: RewardKind,
    pub data: PathBuf,
    pub out: PathBuf,
    /// A reward folder to start from (e.g. the released ImageReward).
    pub init: Option<PathBuf>,
    /// The service's local storage folder, for export lines' keys.
    pub storage: Option<PathBuf>,
    pub resume: bool,
    /// Stop (saving the state) after this step, to `--resume` later.
    pub stop_after: Option<u64>,
    pub config: TrainConfig,
}

/// One optimiser step, as logged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
}

/// One evaluation on the held-out pairs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub step: u64,
    /// Share of non-tie pairs scored in the voters' order.
    pub held_out_accuracy: f64,
    pub held_out_loss: f64,
}

/// What the trainer reports as it goes.
pub enum Progress<'a> {
    Started {
        train: usize,
        held_out: usize,
        first_step: u64,
        total_steps: u64,
    },
    Step(&'a StepMetrics),
    Eval(&'a EvalMetrics),
}

/// `training.json`: what the saved model is, for the registry and people.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    pub kind: RewardKind,
    pub data: PathBuf,
    pub parent: Option<PathBuf>,
    pub train_pairs: usize,
    pub held_out_pairs: usize,
    pub steps: u64,
    pub best_step: u64,
    pub held_out_accuracy: f64,
    pub score_mean: f64,
    pub score_std: f64,
    pub config: TrainConfig,
}

/// `state/state.json`: where a run stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunState {
    step: u64,
    adam_step: u64,
    best: Option<(u64, f64)>,
}

/// The training side's images and prompts, decoded once.
struct Inputs<B: Backend> {
    images: HashMap<PathBuf, Tensor<B, 3>>,
    prompts: HashMap<String, Encoded>,
}

impl<B: Backend> Inputs<B> {
    fn load<C: Backend>(
        folder: &RewardFolder<C>,
        pairs: &[&Pair],
        device: &B::Device,
    ) -> Result<Self> {
        let mut images = HashMap::new();
        let mut prompts = HashMap::new();
        for side in pairs.iter().flat_map(|p| [&p.preferred, &p.rejected]) {
            if !images.contains_key(&side.image) {
                let pixels = read_pixels::<B>(&side.image, device)?;
                let normalised = folder.preprocess.forward(pixels);
                let [_, c, h, w] = normalised.dims();
                let normalised = normalised.reshape([c, h, w]);
                images.insert(side.image.clone(), normalised);
            }
            if !prompts.contains_key(&side.prompt) {
                prompts.insert(side.prompt.clone(), folder.tokenizer.encode(&side.prompt)?);
            }
        }
        Ok(Self { images, prompts })
    }

    /// Raw scores of the pairs' preferred and rejected sides, `[n]` each.
    fn scores<M: Backend>(
        &self,
        model: &ImageReward<M>,
        pairs: &[&Pair],
        lift: impl Fn(Tensor<B, 3>) -> Tensor<M, 3>,
    ) -> (Tensor<M, 1>, Tensor<M, 1>) {
        let sides: Vec<_> = pairs
            .iter()
            .map(|p| &p.preferred)
            .chain(pairs.iter().map(|p| &p.rejected))
            .collect();
        let images = sides
            .iter()
            .map(|s| lift(self.images[&s.image].clone()).unsqueeze_dim::<4>(0))
            .collect();
        let prompts: Vec<Encoded> = sides
            .iter()
            .map(|s| self.prompts[&s.prompt].clone())
            .collect();
        let raw = model.raw_score(Tensor::cat(images, 0), &prompts);
        let n = pairs.len();
        let raw = raw.reshape([2 * n]);
        (raw.clone().slice(0..n), raw.slice(n..2 * n))
    }
}

/// The preference loss per pair: −[t log σ(d) + (1 − t) log σ(−d)] with
/// t = 1, or ½ for a tie.
fn pair_loss<B: Backend>(
    preferred: Tensor<B, 1>,
    rejected: Tensor<B, 1>,
    pairs: &[&Pair],
) -> Tensor<B, 1> {
    let d = preferred - rejected;
    let targets: Vec<f32> = pairs
        .iter()
        .map(|p| if p.tie { 0.5 } else { 1.0 })
        .collect();
    let t = Tensor::<B, 1>::from_floats(targets.as_slice(), &d.device());
    let one_minus = t.clone().neg().add_scalar(1.0);
    (t * log_sigmoid(d.clone()) + one_minus * log_sigmoid(d.neg())).neg()
}

/// Whether parameter `key` trains under `fix_rate`: the embeddings and the
/// first ⌊n·rate⌋ layers of each encoder are frozen.
fn trainable(key: &str, fix_rate: f64, text_layers: usize, vision_blocks: usize) -> bool {
    if fix_rate <= 0.0 {
        return true;
    }
    let index_after = |prefix: &str| -> Option<usize> {
        key.strip_prefix(prefix)?.split('.').next()?.parse().ok()
    };
    if key.starts_with("blip.text_encoder.embeddings.")
        || key.starts_with("blip.visual_encoder.patch_embed.")
        || key == "blip.visual_encoder.cls_token"
        || key == "blip.visual_encoder.pos_embed"
    {
        return false;
    }
    let frozen = |n: usize| (n as f64 * fix_rate).floor() as usize;
    if let Some(i) = index_after("blip.text_encoder.encoder.layer.") {
        return i >= frozen(text_layers);
    }
    if let Some(i) = index_after("blip.visual_encoder.blocks.") {
        return i >= frozen(vision_blocks);
    }
    true
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| TrainError::io(path, e))?;
    std::fs::write(path, text + "\n").map_err(|e| TrainError::io(path, e))
}

fn save_keyed<B: Backend>(path: &Path, groups: &[(&str, &Keyed<B>)]) -> Result<()> {
    let mut tensors = Vec::new();
    for (group, keyed) in groups {
        for (key, t) in keyed.iter() {
            let values: Vec<f32> = t
                .clone()
                .into_data()
                .convert::<f32>()
                .into_vec()
                .unwrap_or_default();
            tensors.push((format!("{group}.{key}"), vec![values.len()], values));
        }
    }
    save_safetensors(path, &tensors, SaveDtype::F32)?;
    Ok(())
}

fn load_keyed<B: Backend>(path: &Path, group: &str, device: &B::Device) -> Result<Keyed<B>> {
    let store =
        TensorStore::open_files(path.parent().unwrap_or(Path::new(".")), &[path.to_owned()])?;
    let mut out = Keyed::new();
    let prefix = format!("{group}.");
    for key in store.keys() {
        if let Some(name) = key.strip_prefix(&prefix) {
            let shape = store.shape(key).unwrap_or(&[]).to_vec();
            let values = store.read_f32(key, &shape, &[])?;
            out.insert(
                name.to_owned(),
                Tensor::from_floats(values.as_slice(), device),
            );
        }
    }
    Ok(out)
}

/// Trains a reward model; see the module docs for what lands in `out`.
pub fn train_reward<B: AutodiffBackend>(
    request: &TrainRequest,
    device: &B::Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<TrainSummary> {
    let config = &request.config;
    config.check()?;
    let pairs = read_pairs(
        &request.data,
        request.kind,
        request.storage.as_deref(),
        config.include_ties,
    )?;
    let (train, held_out) = split(pairs, config.validation_fraction, config.seed)?;
    if !held_out.iter().any(|p| !p.tie) {
        return Err(TrainError::NoData(
            "the held-out split has only ties: accuracy cannot be measured; give more voted pairs"
                .into(),
        ));
    }

    let out = &request.out;
    let state_dir = out.join("state");
    let state_file = state_dir.join("state.json");
    std::fs::create_dir_all(&state_dir).map_err(|e| TrainError::io(out, e))?;
    let resuming = request.resume && state_file.is_file();
    if !request.resume && state_file.is_file() {
        return Err(TrainError::Config(format!(
            "{} already holds a training run: pass --resume to continue it, or choose another --out",
            out.display()
        )));
    }
    let folder: RewardFolder<B> = if resuming {
        RewardFolder::load(&state_dir, device)?
    } else if let Some(init) = &request.init {
        RewardFolder::load(init, device)?
    } else if let Some(fresh) = &config.fresh {
        RewardFolder::fresh(
            fresh.reward.clone(),
            fresh.text.clone(),
            &fresh.tokenizer,
            config.seed,
            device,
        )?
    } else {
        return Err(TrainError::Config(
            "nothing to start from: give --init DIR (a reward folder, e.g. the released ImageReward) or a --config with `fresh` model sizes".into(),
        ));
    };
    let (text_layers, vision_blocks) = (folder.text.num_hidden_layers, folder.config.vision.depth);
    let fix_rate = config.fix_rate;
    let is_trained = move |key: &str| trainable(key, fix_rate, text_layers, vision_blocks);
    let mut model = set_trainable(folder.model.clone(), &same_key, &is_trained);

    let mut optimizer = AdamW::<B::InnerBackend>::new(config.adamw.clone());
    let mut ema = config.ema_decay.map(Ema::<B::InnerBackend>::new);
    let mut run = RunState {
        step: 0,
        adam_step: 0,
        best: None,
    };
    let metrics_path = out.join("metrics.jsonl");
    let mut steps_log: Vec<StepMetrics> = Vec::new();
    let mut evals_log: Vec<EvalMetrics> = Vec::new();
    if resuming {
        let text =
            std::fs::read_to_string(&state_file).map_err(|e| TrainError::io(&state_file, e))?;
        run = serde_json::from_str(&text).map_err(|e| TrainError::Input {
            path: state_file.clone(),
            message: format!("not a training state: {e}"),
        })?;
        let moments = state_dir.join("optimizer.safetensors");
        optimizer.step = run.adam_step;
        optimizer.first = load_keyed(&moments, "first", device)?;
        optimizer.second = load_keyed(&moments, "second", device)?;
        if let Some(ema) = &mut ema {
            ema.average = load_keyed(&moments, "ema", device)?;
        }
        // Keep the log up to the saved step: a later part was not saved.
        let logged = std::fs::read_to_string(&metrics_path).unwrap_or_default();
        for line in logged.lines() {
            if let Ok(m) = serde_json::from_str::<EvalMetrics>(line) {
                if m.step <= run.step {
                    evals_log.push(m);
                }
            } else if let Ok(m) = serde_json::from_str::<StepMetrics>(line)
                && m.step <= run.step
            {
                steps_log.push(m);
            }
        }
    }
    let mut log =
        std::fs::File::create(&metrics_path).map_err(|e| TrainError::io(&metrics_path, e))?;
    let mut log_line = |line: String| -> Result<()> {
        writeln!(log, "{line}").map_err(|e| TrainError::io(&metrics_path, e))
    };
    for m in &steps_log {
        log_line(serde_json::to_string(m).unwrap_or_default())?;
    }
    for m in &evals_log {
        log_line(serde_json::to_string(m).unwrap_or_default())?;
    }

    let train_refs: Vec<&Pair> = train.iter().collect();
    let held_refs: Vec<&Pair> = held_out.iter().collect();
    let inner_device = device.clone();
    let train_inputs = Inputs::<B::InnerBackend>::load(&folder, &train_refs, &inner_device)?;
    let held_inputs = Inputs::<B::InnerBackend>::load(&folder, &held_refs, &inner_device)?;

    let steps_per_epoch = train.len().div_ceil(config.batch) as u64;
    let total = config
        .steps
        .unwrap_or(steps_per_epoch * config.epochs as u64)
        .max(1);
    let eval_every = config.eval_every.unwrap_or(steps_per_epoch).max(1);
    let schedule = LrSchedule {
        lr: config.lr,
        min_lr: config.min_lr,
        warmup: config.warmup_steps,
        total,
    };
    progress(Progress::Started {
        train: train.len(),
        held_out: held_out.len(),
        first_step: run.step + 1,
        total_steps: total,
    });

    let stop = request.stop_after.unwrap_or(total).min(total);
    while run.step < stop {
        let step = run.step + 1;
        // The pairs of this step, continuing through epochs in seeded orders.
        let start = (step - 1) * config.batch as u64;
        let batch: Vec<&Pair> = (start..start + config.batch as u64)
            .map(|i| {
                let epoch = i / train.len() as u64;
                let order = epoch_order(train.len(), config.seed, epoch);
                &train[order[(i % train.len() as u64) as usize]]
            })
            .collect();
        let mut summed: Keyed<B::InnerBackend> = Keyed::new();
        let mut loss_total = 0.0;
        for micro in batch.chunks(config.micro_batch) {
            let (p, r) = train_inputs.scores(&model, micro, Tensor::from_inner);
            let losses = pair_loss(p, r, micro);
            let loss = losses.sum().div_scalar(batch.len() as f64);
            loss_total += loss.clone().into_scalar().elem::<f64>();
            let grads = loss.backward();
            accumulate(&mut summed, gradients(&model, &grads, &same_key));
        }
        let grad_norm = match config.max_grad_norm {
            Some(max) => clip_global_norm(&mut summed, max),
            None => global_norm(&summed),
        };
        let lr = schedule.at(step);
        optimizer.begin_step();
        model = map_flat(model, &same_key, &mut |key, flat| {
            let grad = summed.remove(key)?;
            let new = optimizer.update(key, flat.inner(), grad, lr);
            if let Some(ema) = &mut ema {
                ema.update(key, new.clone());
            }
            Some(Tensor::from_inner(new))
        });
        run.step = step;
        run.adam_step = optimizer.step;
        let metrics = StepMetrics {
            step,
            loss: loss_total,
            lr,
            grad_norm,
        };
        log_line(serde_json::to_string(&metrics).unwrap_or_default())?;
        progress(Progress::Step(&metrics));
        steps_log.push(metrics);

        if step.is_multiple_of(eval_every) || step == total {
            let mut evaluated = model.valid();
            if let Some(ema) = &ema {
                evaluated = map_flat(evaluated, &same_key, &mut |key, _| {
                    ema.average.get(key).cloned()
                });
            }
            let (eval, mean, std) = evaluate(
                &evaluated,
                &held_inputs,
                &held_refs,
                config.micro_batch,
                step,
            );
            log_line(serde_json::to_string(&eval).unwrap_or_default())?;
            progress(Progress::Eval(&eval));
            let better = run
                .best
                .is_none_or(|(_, best)| eval.held_out_accuracy > best);
            if better {
                run.best = Some((step, eval.held_out_accuracy));
                folder
                    .with_model(evaluated.with_normalisation(mean, std))
                    .save(out)?;
            }
            evals_log.push(eval);
            save_state(&folder, &model, &optimizer, ema.as_ref(), &run, &state_dir)?;
        }
    }
    if run.step < total {
        save_state(&folder, &model, &optimizer, ema.as_ref(), &run, &state_dir)?;
    }
    plot::curves(out, &steps_log, &evals_log);

    let saved = byteedit_rewards::RewardConfig::read(out)?;
    let (best_step, held_out_accuracy) = run.best.unwrap_or((0, 0.0));
    let summary = TrainSummary {
        kind: request.kind,
        data: request.data.clone(),
        parent: request.init.clone(),
        train_pairs: train.len(),
        held_out_pairs: held_out.len(),
        steps: run.step,
        best_step,
        held_out_accuracy,
        score_mean: saved.score_mean,
        score_std: saved.score_std,
        config: config.clone(),
    };
    write_json(&out.join("training.json"), &summary)?;
    Ok(summary)
}

/// Accuracy and loss on the held-out pairs, and the mean and (population)
/// std of their raw scores, which become the saved normalisation.
fn evaluate<B: Backend>(
    model: &ImageReward<B>,
    inputs: &Inputs<B>,
    pairs: &[&Pair],
    micro_batch: usize,
    step: u64,
) -> (EvalMetrics, f64, f64) {
    let (mut correct, mut counted, mut loss) = (0usize, 0usize, 0.0);
    let mut raw = Vec::new();
    for chunk in pairs.chunks(micro_batch) {
        let (p, r) = inputs.scores(model, chunk, |t| t);
        loss += pair_loss(p.clone(), r.clone(), chunk)
            .sum()
            .into_scalar()
            .elem::<f64>();
        let p: Vec<f32> = p
            .into_data()
            .convert::<f32>()
            .into_vec()
            .unwrap_or_default();
        let r: Vec<f32> = r
            .into_data()
            .convert::<f32>()
            .into_vec()
            .unwrap_or_default();
        for ((pair, a), b) in chunk.iter().zip(&p).zip(&r) {
            if !pair.tie {
                counted += 1;
                correct += usize::from(a > b);
            }
        }
        raw.extend(p.into_iter().chain(r).map(f64::from));
    }
    let mean = raw.iter().sum::<f64>() / raw.len().max(1) as f64;
    let var = raw.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / raw.len().max(1) as f64;
    let std = if var.sqrt() > 1e-12 { var.sqrt() } else { 1.0 };
    let eval = EvalMetrics {
        step,
        held_out_accuracy: correct as f64 / counted.max(1) as f64,
        held_out_loss: loss / pairs.len().max(1) as f64,
    };
    (eval, mean, std)
}

/// Writes `state/`: the current weights as a reward folder, the AdamW
/// moments and the EMA, and the step.
fn save_state<B: AutodiffBackend>(
    folder: &RewardFolder<B>,
    model: &ImageReward<B>,
    optimizer: &AdamW<B::InnerBackend>,
    ema: Option<&Ema<B::InnerBackend>>,
    run: &RunState,
    dir: &Path,
) -> Result<()> {
    folder.with_model(model.valid()).save(dir)?;
    let empty = Keyed::new();
    save_keyed(
        &dir.join("optimizer.safetensors"),
        &[
            ("first", &optimizer.first),
            ("second", &optimizer.second),
            ("ema", ema.map_or(&empty, |e| &e.average)),
        ],
    )?;
    write_json(&dir.join("state.json"), run)
}

#[cfg(test)]
mod tests {
    use super::trainable;

    #[test]
    fn fix_rate_freezes_imagerewards_layers_at_full_size() {
        let t = |k: &str| trainable(k, 0.7, 12, 24);
        assert!(!t("blip.text_encoder.embeddings.word_embeddings.weight"));
        assert!(!t("blip.text_encoder.encoder.layer.7.output.dense.weight"));
        assert!(t(
            "blip.text_encoder.encoder.layer.8.attention.self.query.weight"
        ));
        assert!(!t("blip.visual_encoder.blocks.15.attn.qkv.weight"));
        assert!(t("blip.visual_encoder.blocks.16.attn.qkv.weight"));
        assert!(!t("blip.visual_encoder.cls_token"));
        assert!(t("blip.visual_encoder.norm.weight"));
        assert!(t("mlp.layers.0.weight"));
        assert!(trainable(
            "blip.text_encoder.embeddings.word_embeddings.weight",
            0.0,
            12,
            24
        ));
    }
}
