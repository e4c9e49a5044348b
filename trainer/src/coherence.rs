//! Training R_γ, the pixel-coherence discriminator, offline from edited
//! images and their masks (the fine-tuning stage trains it online with the
//! same loss): −[y log σ(l) + (1 − y) log σ(−l)] per pixel, y = 1 for real
//! pixels and 0 for generated ones (white in the mask; a line without a
//! mask is an all-real photo), averaged over each image's pixels. The
//! held-out split reports the per-pixel AUC of "real" against "generated".
//!
//! Data: JSON Lines `{"image", "mask"}`, paths relative to the file.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;
use burn::tensor::backend::AutodiffBackend;
use byteedit_rewards::folder::read_pixels;
use byteedit_rewards::{CoherenceFolder, coherence::Coherence};
use serde::Deserialize;

use crate::data::split_examples;
use crate::error::{Result, TrainError};
use crate::reward::{KindOutcome, TrainRequest, trainable};
use crate::run::{EvalMetrics, Progress, RunFolder, Task, run};

/// One image at the model's size: its input and each pixel's "real" label.
pub struct PixelExample<B: Backend> {
    /// `[channels, size, size]`, normalised (plus the mask channel if the
    /// model reads one).
    input: Tensor<B, 3>,
    /// `[size, size]`: 1 real, 0 generated (soft at resized mask edges).
    real: Tensor<B, 2>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    image: String,
    mask: Option<String>,
}

/// Reads `{"image", "mask"}` lines into examples at the model's size.
fn read_examples<B: Backend, C: Backend>(
    path: &Path,
    folder: &CoherenceFolder<C>,
    device: &B::Device,
) -> Result<Vec<PixelExample<B>>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::Input {
        path: path.to_owned(),
        message: format!("cannot read the data file: {e}"),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut examples = Vec::new();
    for (n, raw) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line: Line = serde_json::from_str(raw).map_err(|e| TrainError::Input {
            path: path.to_owned(),
            message: format!(
                "line {}: coherence lines are {{\"image\", \"mask\"}}: {e}",
                n + 1
            ),
        })?;
        let pixels = read_pixels::<B>(&base.join(&line.image), device)?;
        let [_, _, h, w] = pixels.dims();
        let mask = match &line.mask {
            Some(m) => {
                let mask = read_pixels::<B>(&base.join(m), device)?;
                let [_, _, mh, mw] = mask.dims();
                if (mh, mw) != (h, w) {
                    return Err(TrainError::Input {
                        path: path.to_owned(),
                        message: format!(
                            "line {}: the mask is {mw}x{mh} but its image is {w}x{h}",
                            n + 1
                        ),
                    });
                }
                mask.slice([0..1, 0..1, 0..h, 0..w])
            }
            None => Tensor::zeros([1, 1, h, w], device),
        };
        let size = folder.preprocess.size;
        let mut input = folder.preprocess.forward(pixels);
        let generated = folder.preprocess.resize(mask.clone()).clamp(0.0, 1.0);
        if folder.config.mask_channel {
            input = Tensor::cat(vec![input, generated.clone()], 1);
        }
        let channels = input.dims()[1];
        examples.push(PixelExample {
            input: input.reshape([channels, size, size]),
            real: generated.neg().add_scalar(1.0).reshape([size, size]),
        });
    }
    if examples.is_empty() {
        return Err(TrainError::NoData(format!(
            "{}: no images to train on (the file is empty)",
            path.display()
        )));
    }
    Ok(examples)
}

/// Per-image mean pixel loss, `[batch]`.
pub(crate) fn pixel_loss<B: Backend>(logits: Tensor<B, 3>, real: Tensor<B, 3>) -> Tensor<B, 1> {
    let [b, h, w] = logits.dims();
    let fake = real.clone().neg().add_scalar(1.0);
    let per_pixel = (real * log_sigmoid(logits.clone()) + fake * log_sigmoid(logits.neg())).neg();
    per_pixel.reshape([b, h * w]).mean_dim(1).reshape([b])
}

/// The probability that a random real pixel scores above a random
/// generated one (ties count half): the Mann-Whitney form of the ROC AUC.
pub fn auc(scores: &[f32], real: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += (i..=j).filter(|&k| real[order[k]]).count() as f64 * mid;
        i = j + 1;
    }
    let positives = real.iter().filter(|r| **r).count() as f64;
    let negatives = real.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

struct CoherenceTask<B: AutodiffBackend> {
    folder: CoherenceFolder<B>,
    held: Vec<PixelExample<B::InnerBackend>>,
    micro_batch: usize,
}

fn stack<B: Backend>(examples: &[&PixelExample<B>]) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let input = examples
        .iter()
        .map(|e| e.input.clone().unsqueeze_dim(0))
        .collect();
    let real = examples
        .iter()
        .map(|e| e.real.clone().unsqueeze_dim(0))
        .collect();
    (Tensor::cat(input, 0), Tensor::cat(real, 0))
}

impl<B: AutodiffBackend> Task<B> for CoherenceTask<B> {
    type Model = Coherence<B>;
    type Example = PixelExample<B::InnerBackend>;

    fn loss(&self, model: &Coherence<B>, batch: &[&Self::Example]) -> Tensor<B, 1> {
        let (input, real) = stack(batch);
        let logits = model.forward(Tensor::from_inner(input));
        pixel_loss(logits, Tensor::from_inner(real)).sum()
    }

    fn evaluate(
        &self,
        model: Coherence<B::InnerBackend>,
        step: u64,
    ) -> (EvalMetrics, Coherence<B::InnerBackend>) {
        let (mut scores, mut labels, mut loss) = (Vec::new(), Vec::new(), 0.0);
        let held: Vec<&Self::Example> = self.held.iter().collect();
        for chunk in held.chunks(self.micro_batch) {
            let (input, real) = stack(chunk);
            let logits = model.forward(input);
            loss += pixel_loss(logits.clone(), real.clone())
                .sum()
                .into_scalar()
                .elem::<f64>();
            scores.extend(
                logits
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .unwrap_or_default(),
            );
            let real: Vec<f32> = real
                .into_data()
                .convert::<f32>()
                .into_vec()
                .unwrap_or_default();
            labels.extend(real.into_iter().map(|r| r >= 0.5));
        }
        let eval = EvalMetrics {
            step,
            held_out_loss: loss / held.len().max(1) as f64,
            held_out_accuracy: None,
            held_out_auc: Some(auc(&scores, &labels).unwrap_or(0.5)),
        };
        (eval, model)
    }

    fn save(&self, model: Coherence<B::InnerBackend>, dir: &Path) -> Result<()> {
        Ok(self.folder.with_model(model).save(dir)?)
    }
}

pub(crate) fn train_coherence<B: AutodiffBackend>(
    request: &TrainRequest,
    run_folder: &RunFolder,
    device: &B::Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<KindOutcome> {
    let config = &request.config;
    let folder: CoherenceFolder<B> = if run_folder.resuming {
        CoherenceFolder::load(&run_folder.state_dir(), device)?
    } else if let Some(init) = &request.init {
        CoherenceFolder::load(init, device)?
    } else if let Some(fresh) = &config.fresh_coherence {
        CoherenceFolder::fresh(fresh.clone(), config.seed, device)?
    } else {
        return Err(TrainError::Config(
            "nothing to start from: give --init DIR (a coherence reward folder) or a --config with `fresh_coherence` model sizes".into(),
        ));
    };
    let examples = read_examples::<B::InnerBackend, B>(&request.data, &folder, device)?;
    let (train, held) = split_examples(examples, config.validation_fraction, config.seed)?;
    let has = |real: bool| {
        held.iter().any(|e| {
            let v: Vec<f32> = e
                .real
                .clone()
                .into_data()
                .convert::<f32>()
                .into_vec()
                .unwrap_or_default();
            v.iter().any(|&r| (r >= 0.5) == real)
        })
    };
    if !has(true) || !has(false) {
        return Err(TrainError::NoData(
            "the held-out images need both real and generated (masked) pixels to measure the AUC; give more masked edits".into(),
        ));
    }
    let depth = folder.config.vision.depth;
    let fix_rate = config.fix_rate;
    let is_trained = move |key: &str| trainable(key, fix_rate, 0, depth);
    let task = CoherenceTask::<B> {
        held,
        micro_batch: config.micro_batch,
        folder,
    };
    let model = task.folder.model.clone();
    let held_out = task.held.len();
    let outcome = run(
        &task,
        model,
        &is_trained,
        &train,
        held_out,
        run_folder,
        config,
        request.stop_after,
        device,
        progress,
    )?;
    Ok(KindOutcome {
        train: train.len(),
        held_out,
        run: outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::auc;

    #[test]
    fn auc_counts_ordered_pairs_and_ties_half() {
        assert_eq!(auc(&[0.1, 0.9], &[false, true]), Some(1.0));
        assert_eq!(auc(&[0.9, 0.1], &[false, true]), Some(0.0));
        assert_eq!(auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(
            auc(&[0.2, 0.4, 0.3, 0.8], &[false, true, false, true]),
            Some(1.0)
        );
        assert_eq!(auc(&[0.2, 0.4], &[true, true]), None);
    }
}
