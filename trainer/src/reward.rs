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
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;
use burn::tensor::backend::AutodiffBackend;
use byteedit_rewards::folder::read_pixels;
use byteedit_rewards::{Encoded, ImageReward, RewardFolder};
use serde::{Deserialize, Serialize};

use crate::config::{RewardKind, TrainConfig};
use crate::data::{Pair, read_pairs, split};
use crate::error::{Result, TrainError};
pub use crate::run::{EvalMetrics, Progress, StepMetrics};
use crate::run::{RunFolder, RunOutcome, Task, run, write_json};

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

/// `training.json`: what the saved model is, for the registry and people.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    pub kind: RewardKind,
    pub data: PathBuf,
    pub parent: Option<PathBuf>,
    pub train_examples: usize,
    pub held_out_examples: usize,
    pub steps: u64,
    pub best_step: u64,
    /// The best held-out pairwise accuracy (R_α, R_β) or per-pixel AUC (R_γ).
    pub held_out_score: f64,
    pub score_mean: f64,
    pub score_std: f64,
    pub config: TrainConfig,
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
pub(crate) fn trainable(
    key: &str,
    fix_rate: f64,
    text_layers: usize,
    vision_blocks: usize,
) -> bool {
    if fix_rate <= 0.0 {
        return true;
    }
    // R_γ's backbone is `visual_encoder` at the top level.
    let owned = format!("blip.{key}");
    let key = if key.starts_with("visual_encoder.") {
        owned.as_str()
    } else {
        key
    };
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

/// R_α / R_β as a [`Task`]: pairs in, the preference loss out.
struct PreferenceTask<B: AutodiffBackend> {
    folder: RewardFolder<B>,
    train: Inputs<B::InnerBackend>,
    held: Inputs<B::InnerBackend>,
    held_pairs: Vec<Pair>,
    micro_batch: usize,
}

impl<B: AutodiffBackend> Task<B> for PreferenceTask<B> {
    type Model = ImageReward<B>;
    type Example = Pair;

    fn loss(&self, model: &ImageReward<B>, batch: &[&Pair]) -> Tensor<B, 1> {
        let (p, r) = self.train.scores(model, batch, Tensor::from_inner);
        pair_loss(p, r, batch).sum()
    }

    /// Accuracy and loss on the held-out pairs; the model to save carries
    /// the mean and (population) std of their raw scores as its
    /// normalisation, as ImageReward recomputes them.
    fn evaluate(
        &self,
        model: ImageReward<B::InnerBackend>,
        step: u64,
    ) -> (EvalMetrics, ImageReward<B::InnerBackend>) {
        let pairs: Vec<&Pair> = self.held_pairs.iter().collect();
        let (mut correct, mut counted, mut loss) = (0usize, 0usize, 0.0);
        let mut raw = Vec::new();
        for chunk in pairs.chunks(self.micro_batch) {
            let (p, r) = self.held.scores(&model, chunk, |t| t);
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
        let n = raw.len().max(1) as f64;
        let mean = raw.iter().sum::<f64>() / n;
        let std = (raw.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        let std = if std > 1e-12 { std } else { 1.0 };
        let eval = EvalMetrics {
            step,
            held_out_loss: loss / pairs.len().max(1) as f64,
            held_out_accuracy: Some(correct as f64 / counted.max(1) as f64),
            held_out_auc: None,
        };
        (eval, model.with_normalisation(mean, std))
    }

    fn save(&self, model: ImageReward<B::InnerBackend>, dir: &Path) -> Result<()> {
        Ok(self.folder.with_model(model).save(dir)?)
    }
}

/// Trains a reward model; see the module docs for what lands in `out`.
pub fn train_reward<B: AutodiffBackend>(
    request: &TrainRequest,
    device: &B::Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<TrainSummary> {
    request.config.check()?;
    let folder = RunFolder::open(&request.out, request.resume)?;
    let outcome = match request.kind {
        RewardKind::Aesthetic | RewardKind::Alignment => {
            train_preference::<B>(request, &folder, device, progress)?
        }
        RewardKind::Coherence => {
            crate::coherence::train_coherence::<B>(request, &folder, device, progress)?
        }
    };
    let (score_mean, score_std) = match request.kind {
        RewardKind::Coherence => (0.0, 1.0),
        _ => {
            let saved = byteedit_rewards::RewardConfig::read(&request.out)?;
            (saved.score_mean, saved.score_std)
        }
    };
    let summary = TrainSummary {
        kind: request.kind,
        data: request.data.clone(),
        parent: request.init.clone(),
        train_examples: outcome.train,
        held_out_examples: outcome.held_out,
        steps: outcome.run.steps,
        best_step: outcome.run.best_step,
        held_out_score: outcome.run.best_score,
        score_mean,
        score_std,
        config: request.config.clone(),
    };
    write_json(&request.out.join("training.json"), &summary)?;
    Ok(summary)
}

/// What a kind's training returns to [`train_reward`].
pub(crate) struct KindOutcome {
    pub train: usize,
    pub held_out: usize,
    pub run: RunOutcome,
}

fn train_preference<B: AutodiffBackend>(
    request: &TrainRequest,
    run_folder: &RunFolder,
    device: &B::Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<KindOutcome> {
    let config = &request.config;
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
    let folder: RewardFolder<B> = if run_folder.resuming {
        RewardFolder::load(&run_folder.state_dir(), device)?
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
    let train_refs: Vec<&Pair> = train.iter().collect();
    let held_refs: Vec<&Pair> = held_out.iter().collect();
    let task = PreferenceTask::<B> {
        train: Inputs::load(&folder, &train_refs, device)?,
        held: Inputs::load(&folder, &held_refs, device)?,
        folder,
        held_pairs: held_out.clone(),
        micro_batch: config.micro_batch,
    };
    let model = task.folder.model.clone();
    let outcome = run(
        &task,
        model,
        &is_trained,
        &train,
        held_out.len(),
        run_folder,
        config,
        request.stop_after,
        device,
        progress,
    )?;
    Ok(KindOutcome {
        train: train.len(),
        held_out: held_out.len(),
        run: outcome,
    })
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
