//! The training loop every reward shares (and the fine-tuning stage will):
//! seeded epochs of batches reached by gradient accumulation, optional
//! global-norm clipping, AdamW under a warm-up + cosine schedule, optional
//! EMA, periodic held-out evaluation that keeps the best model, a JSON
//! Lines log, and a `state/` folder from which a run resumes exactly (the
//! weights, the AdamW moments, the EMA and the step; the data order is a
//! function of the seed and the step).

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use byteedit_models::params::{gradients, map_flat, same_key, set_trainable};
use byteedit_models::weights::{SaveDtype, TensorStore, ValuesToSave, save_safetensors_lazily};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::data::epoch_order;
use crate::error::{Result, TrainError};
use crate::optim::{AdamW, Ema, Keyed, LrSchedule, accumulate, clip_global_norm, global_norm};
use crate::plot;

/// One optimiser step, as logged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
}

/// One evaluation on the held-out split: pairwise accuracy for R_α and
/// R_β, per-pixel AUC for R_γ.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub step: u64,
    pub held_out_loss: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_auc: Option<f64>,
}

impl EvalMetrics {
    /// What "best" means: the accuracy, else the AUC.
    pub fn score(&self) -> f64 {
        self.held_out_accuracy.or(self.held_out_auc).unwrap_or(0.0)
    }
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

/// One kind of model being trained: its loss, its evaluation and its files.
pub trait Task<B: AutodiffBackend> {
    type Model: AutodiffModule<B> + Clone;
    type Example;

    /// The summed (not averaged) loss of `batch`, shape `[1]`.
    fn loss(&self, model: &Self::Model, batch: &[&Self::Example]) -> Tensor<B, 1>;

    /// The held-out evaluation; may also return the model to save as best
    /// (ImageReward's recomputed normalisation).
    fn evaluate(
        &self,
        model: <Self::Model as AutodiffModule<B>>::InnerModule,
        step: u64,
    ) -> (EvalMetrics, <Self::Model as AutodiffModule<B>>::InnerModule);

    /// Writes `model` as a complete folder of this kind into `dir`.
    fn save(
        &self,
        model: <Self::Model as AutodiffModule<B>>::InnerModule,
        dir: &Path,
    ) -> Result<()>;
}

/// Where the run stands: `state/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunState {
    step: u64,
    adam_step: u64,
    /// (step, score) of the best evaluation so far.
    best: Option<(u64, f64)>,
}

/// How a run ended.
pub struct RunOutcome {
    pub steps: u64,
    pub best_step: u64,
    pub best_score: f64,
}

/// The output folder of a run and whether it resumes one.
pub struct RunFolder {
    pub out: PathBuf,
    pub resuming: bool,
}

impl RunFolder {
    /// Checks `out` against `--resume`: an existing run is continued only
    /// when asked, never overwritten.
    pub fn open(out: &Path, resume: bool) -> Result<Self> {
        let state_file = out.join("state").join("state.json");
        std::fs::create_dir_all(out.join("state")).map_err(|e| TrainError::io(out, e))?;
        if !resume && state_file.is_file() {
            return Err(TrainError::Config(format!(
                "{} already holds a training run: pass --resume to continue it, or choose another --out",
                out.display()
            )));
        }
        Ok(Self {
            out: out.to_owned(),
            resuming: resume && state_file.is_file(),
        })
    }

    /// The saved model of a run being resumed.
    pub fn state_dir(&self) -> PathBuf {
        self.out.join("state")
    }
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| TrainError::io(path, e))?;
    std::fs::write(path, text + "\n").map_err(|e| TrainError::io(path, e))
}

pub(crate) fn save_keyed<B: Backend>(path: &Path, groups: &[(&str, &Keyed<B>)]) -> Result<()> {
    // Each tensor is read back from the backend only when the file reaches
    // it: a full SD-1.5 run's moments and EMA are 10 GB.
    let mut tensors = Vec::new();
    for (group, keyed) in groups {
        for (key, t) in keyed.iter() {
            let values: ValuesToSave<'_> = Box::new(move || {
                Cow::Owned(
                    t.clone()
                        .into_data()
                        .convert::<f32>()
                        .into_vec()
                        .unwrap_or_default(),
                )
            });
            tensors.push((
                format!("{group}.{key}"),
                vec![t.shape().num_elements()],
                values,
            ));
        }
    }
    save_safetensors_lazily(path, tensors, SaveDtype::F32)?;
    Ok(())
}

pub(crate) fn load_keyed<B: Backend>(
    path: &Path,
    group: &str,
    device: &B::Device,
) -> Result<Keyed<B>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let store = TensorStore::open_files(dir, &[path.to_owned()])?;
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

/// A saved `state.json` of a run being resumed.
pub(crate) fn read_state<T: serde::de::DeserializeOwned>(state_file: &Path) -> Result<T> {
    let text = std::fs::read_to_string(state_file).map_err(|e| TrainError::io(state_file, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Input {
        path: state_file.to_owned(),
        message: format!("not a saved training state: {e}"),
    })
}

/// Restores an optimiser's step and moments, saved by [`save_keyed`] as the
/// groups `{prefix}first` and `{prefix}second`.
pub(crate) fn load_moments<B: Backend>(
    optimizer: &mut AdamW<B>,
    moments: &Path,
    prefix: &str,
    step: u64,
    device: &B::Device,
) -> Result<()> {
    optimizer.step = step;
    optimizer.first = load_keyed(moments, &format!("{prefix}first"), device)?;
    optimizer.second = load_keyed(moments, &format!("{prefix}second"), device)?;
    Ok(())
}

/// A line of `metrics.jsonl`.
pub(crate) trait Logged: Serialize + serde::de::DeserializeOwned {
    fn step(&self) -> u64;
}

impl Logged for StepMetrics {
    fn step(&self) -> u64 {
        self.step
    }
}

impl Logged for EvalMetrics {
    fn step(&self) -> u64 {
        self.step
    }
}

/// A run's `metrics.jsonl`: one JSON line per step (`S`) and per evaluation
/// (`E`). A resumed run keeps the lines up to its saved step (what came after
/// was not saved, and will be run again) and appends from there.
pub(crate) struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens the log afresh, or for a run resumed at `resumed_at` with the
    /// earlier lines it keeps (returned for the plots).
    pub(crate) fn open<S: Logged, E: Logged>(
        path: &Path,
        resumed_at: Option<u64>,
    ) -> Result<(Self, Vec<S>, Vec<E>)> {
        let (mut steps, mut evals) = (Vec::new(), Vec::new());
        if let Some(saved) = resumed_at {
            let logged = std::fs::read_to_string(path).unwrap_or_default();
            for line in logged.lines() {
                if let Ok(m) = serde_json::from_str::<S>(line) {
                    if m.step() <= saved {
                        steps.push(m);
                    }
                } else if let Ok(m) = serde_json::from_str::<E>(line)
                    && m.step() <= saved
                {
                    evals.push(m);
                }
            }
        }
        let file = std::fs::File::create(path).map_err(|e| TrainError::io(path, e))?;
        let mut log = Self {
            path: path.to_owned(),
            file,
        };
        for m in &steps {
            log.write(m)?;
        }
        for m in &evals {
            log.write(m)?;
        }
        Ok((log, steps, evals))
    }

    pub(crate) fn write<T: Serialize>(&mut self, line: &T) -> Result<()> {
        let text = serde_json::to_string(line).map_err(|e| TrainError::io(&self.path, e))?;
        writeln!(self.file, "{text}").map_err(|e| TrainError::io(&self.path, e))
    }
}

/// Trains `model` on `train` (held-out data live in the task); see the
/// module docs. `trainable(key)` says which parameters learn.
#[allow(clippy::too_many_arguments)]
pub fn run<B: AutodiffBackend, T: Task<B>>(
    task: &T,
    model: T::Model,
    trainable: &dyn Fn(&str) -> bool,
    train: &[T::Example],
    held_out: usize,
    folder: &RunFolder,
    config: &TrainConfig,
    stop_after: Option<u64>,
    device: &B::Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<RunOutcome> {
    let out = &folder.out;
    let state_dir = folder.state_dir();
    let mut model = set_trainable(model, &same_key, trainable);
    let mut optimizer = AdamW::<B::InnerBackend>::new(config.adamw.clone());
    let mut ema = config.ema_decay.map(Ema::<B::InnerBackend>::new);
    let mut state = RunState {
        step: 0,
        adam_step: 0,
        best: None,
    };
    if folder.resuming {
        state = read_state(&state_dir.join("state.json"))?;
        let moments = state_dir.join("optimizer.safetensors");
        load_moments(&mut optimizer, &moments, "", state.adam_step, device)?;
        if let Some(ema) = &mut ema {
            ema.average = load_keyed(&moments, "ema", device)?;
        }
    }
    let (mut log, mut steps_log, mut evals_log) = MetricsLog::open::<StepMetrics, EvalMetrics>(
        &out.join("metrics.jsonl"),
        folder.resuming.then_some(state.step),
    )?;

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
        held_out,
        first_step: state.step + 1,
        total_steps: total,
    });

    let stop = stop_after.unwrap_or(total).min(total);
    while state.step < stop {
        let step = state.step + 1;
        // This step's examples, continuing through epochs in seeded orders.
        let start = (step - 1) * config.batch as u64;
        let len = train.len() as u64;
        // A batch spans at most a few epochs: shuffle each once, not per example.
        let mut order: (u64, Vec<usize>) = (u64::MAX, Vec::new());
        let batch: Vec<&T::Example> = (start..start + config.batch as u64)
            .map(|i| {
                if order.0 != i / len {
                    order = (i / len, epoch_order(train.len(), config.seed, i / len));
                }
                &train[order.1[(i % len) as usize]]
            })
            .collect();
        let mut summed: Keyed<B::InnerBackend> = Keyed::new();
        let mut loss_total = 0.0;
        for micro in batch.chunks(config.micro_batch) {
            let loss = task.loss(&model, micro).div_scalar(batch.len() as f64);
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
        state.step = step;
        state.adam_step = optimizer.step;
        let metrics = StepMetrics {
            step,
            loss: loss_total,
            lr,
            grad_norm,
        };
        log.write(&metrics)?;
        progress(Progress::Step(&metrics));
        steps_log.push(metrics);

        if step.is_multiple_of(eval_every) || step == total {
            let mut evaluated = model.valid();
            if let Some(ema) = &ema {
                evaluated = map_flat(evaluated, &same_key, &mut |key, _| {
                    ema.average.get(key).cloned()
                });
            }
            let (eval, best_model) = task.evaluate(evaluated, step);
            log.write(&eval)?;
            progress(Progress::Eval(&eval));
            if state.best.is_none_or(|(_, best)| eval.score() > best) {
                state.best = Some((step, eval.score()));
                task.save(best_model, out)?;
            }
            evals_log.push(eval);
            save_state(task, &model, &optimizer, ema.as_ref(), &state, &state_dir)?;
        }
    }
    if state.step < total {
        save_state(task, &model, &optimizer, ema.as_ref(), &state, &state_dir)?;
    }
    plot::curves(out, &steps_log, &evals_log);
    let (best_step, best_score) = state.best.unwrap_or((0, 0.0));
    Ok(RunOutcome {
        steps: state.step,
        best_step,
        best_score,
    })
}

/// Writes `state/`: the current weights as a folder of the task's kind,
/// the AdamW moments and the EMA, and the step.
fn save_state<B: AutodiffBackend, T: Task<B>>(
    task: &T,
    model: &T::Model,
    optimizer: &AdamW<B::InnerBackend>,
    ema: Option<&Ema<B::InnerBackend>>,
    state: &RunState,
    dir: &Path,
) -> Result<()> {
    task.save(model.valid(), dir)?;
    let empty = Keyed::new();
    save_keyed(
        &dir.join("optimizer.safetensors"),
        &[
            ("first", &optimizer.first),
            ("second", &optimizer.second),
            ("ema", ema.map_or(&empty, |e| &e.average)),
        ],
    )?;
    write_json(&dir.join("state.json"), state)
}
