//! One step of feedback fine-tuning (paper section 3): the generator loss
//! L_G of Eq. 7–8 through the three stages of PeFL, and the discriminator
//! loss L_D that trains R_γ online.
//!
//! - Stage 1: the masked input's latents are noised straight to step T1
//!   of a T-step DDIM schedule (the noisiest steps are skipped).
//! - Stage 2: denoised without gradient, on the inner backend (a graph
//!   recorded under autodiff and never backpropagated would hold its
//!   memory), from T1 down to each sample's t′ ∈ [1, T2].
//! - Stage 3: one UNet call with gradient at t′ predicts x′0, decoded by
//!   the VAE (with gradient, unclamped) to the image G.
//!
//! Steps count as the paper counts them: step k of T is the schedule's
//! timestep `timesteps[T - k]` (step T is the noisiest).

use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation::log_sigmoid;
use burn::tensor::backend::AutodiffBackend;
use byteedit_models::InpaintModel;
use byteedit_models::image_io::binarize_mask;
use byteedit_models::schedulers::{DdimScheduler, NoiseSchedule, PredictionType, TimestepSpacing};
use byteedit_rewards::{CoherenceFolder, RewardFolder};
use image::{GrayImage, RgbImage};
use serde::{Deserialize, Serialize};

use crate::coherence::pixel_loss;
use crate::error::Result;
use crate::finetune::config::{LossWeights, PhaseConfig};
use crate::vgg::Vgg16Features;

/// The phase's DDIM schedule, ready for stages 1–3.
pub struct PhaseSchedule {
    pub phase: PhaseConfig,
    solver: DdimScheduler,
    pub noise: NoiseSchedule,
    pub prediction: PredictionType,
}

impl PhaseSchedule {
    pub fn new<C: Backend>(model: &InpaintModel<C>, phase: PhaseConfig) -> Result<Self> {
        phase.check()?;
        let noise = model.noise_schedule()?;
        if phase.steps > noise.alphas_cumprod.len() {
            return Err(crate::error::TrainError::Config(format!(
                "phase: T={} is more than the model's {} training timesteps",
                phase.steps,
                noise.alphas_cumprod.len()
            )));
        }
        // DDIM, deterministic, with diffusers' default `leading` spacing.
        let solver = DdimScheduler::new(
            &model.scheduler_config,
            noise.clone(),
            phase.steps,
            TimestepSpacing::Leading,
        );
        Ok(Self {
            phase,
            solver,
            noise,
            prediction: model.scheduler_config.prediction(),
        })
    }

    /// The schedule index of step `k` (1 = least noisy, T = noisiest).
    fn index(&self, k: usize) -> usize {
        self.phase.steps - k
    }

    /// The training timestep of step `k`.
    pub fn timestep(&self, k: usize) -> usize {
        self.solver.timesteps[self.index(k)] as usize
    }
}

/// The frozen feedback: R_α, R_β (either may be absent) and V.
pub struct Feedback<B: Backend> {
    pub aesthetic: Option<RewardFolder<B>>,
    pub alignment: Option<RewardFolder<B>>,
    pub vgg: Option<Vgg16Features<B>>,
}

/// What a step draws at random, drawn by the caller (seeded) or given
/// (the parity test): the noise of stage 1, each sample's t′, and the
/// denoising loss's noise and timesteps.
pub struct StepNoise<B: Backend> {
    /// `[b, C, h, w]`.
    pub start: Tensor<B, 4>,
    /// Each sample's t′ in [1, T2].
    pub t_prime: Vec<usize>,
    /// `[b, C, h, w]`, and a training timestep per sample.
    pub denoise: Tensor<B, 4>,
    pub denoise_t: Vec<usize>,
}

/// One training batch: images, masks (white = repaint) and captions, of one size.
pub struct Batch {
    pub images: Vec<RgbImage>,
    pub masks: Vec<GrayImage>,
    pub prompts: Vec<String>,
}

/// Each term of L_G, and the rewards of G, as logged.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GeneratorTerms {
    pub loss: f64,
    /// −log σ(R) terms (before their weights).
    pub aesthetic_loss: Option<f64>,
    pub alignment_loss: Option<f64>,
    pub coherence_loss: Option<f64>,
    pub l1: f64,
    pub vgg: Option<f64>,
    pub denoise: Option<f64>,
    /// Mean rewards of G.
    pub aesthetic: Option<f64>,
    pub alignment: Option<f64>,
    /// Mean σ(R_γ) over G's generated pixels: how real R_γ finds them.
    pub coherence: Option<f64>,
}

/// L_G with its graph, and what the discriminator step needs.
pub struct GeneratorStep<B: AutodiffBackend> {
    pub loss: Tensor<B, 1>,
    pub terms: GeneratorTerms,
    /// x, m and G (detached), `[b, 3|1, H, W]`, pixels in [0, 1].
    pub real: Tensor<B::InnerBackend, 4>,
    pub mask: Tensor<B::InnerBackend, 4>,
    pub generated: Tensor<B::InnerBackend, 4>,
}

/// `[b, 3, H, W]` in [0, 1] and `[b, 1, H, W]` in {0, 1}.
pub fn batch_pixels<B: Backend>(batch: &Batch, device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let (w, h) = batch.images[0].dimensions();
    let (w, h) = (w as usize, h as usize);
    let mut rgb = Vec::with_capacity(batch.images.len() * 3 * h * w);
    for image in &batch.images {
        for c in 0..3 {
            rgb.extend(image.pixels().map(|p| p.0[c] as f32 / 255.0));
        }
    }
    let masks: Vec<f32> = batch.masks.iter().flat_map(binarize_mask).collect();
    let b = batch.images.len();
    (
        Tensor::from_data(TensorData::new(rgb, [b, 3, h, w]), device),
        Tensor::from_data(TensorData::new(masks, [b, 1, h, w]), device),
    )
}

fn scalar<B: Backend>(t: &Tensor<B, 1>) -> f64 {
    t.clone().into_scalar().elem::<f64>()
}

/// Stages 1–3 and L_G. `model`'s UNet is the one trained (its frozen
/// parts take no gradient); `coherence` is R_γ as it stands.
pub fn generator_step<B: AutodiffBackend>(
    model: &InpaintModel<B>,
    schedule: &PhaseSchedule,
    feedback: &Feedback<B>,
    coherence: Option<&CoherenceFolder<B>>,
    weights: &LossWeights,
    batch: &Batch,
    noise: &StepNoise<B::InnerBackend>,
) -> Result<GeneratorStep<B>> {
    let inner = model.valid();
    let device = model.device().clone();
    let b = batch.images.len();
    let phase = schedule.phase;

    // Conditions, once per batch, without gradient.
    let prompts: Vec<&str> = batch.prompts.iter().map(String::as_str).collect();
    let context = inner.encode_prompts(&prompts);
    let (conditions, masked): (Vec<_>, Vec<_>) = batch
        .images
        .iter()
        .zip(&batch.masks)
        .map(|(image, mask)| inner.mask_condition(image, mask))
        .unzip();
    let masked_latents = Tensor::cat(masked, 0);
    let condition = Tensor::cat(vec![Tensor::cat(conditions, 0), masked_latents.clone()], 1);

    // Stage 1: the masked input noised to step T1.
    let t1 = schedule.timestep(phase.skip_from);
    let noisy = schedule
        .noise
        .add_noise(masked_latents, noise.start.clone(), &vec![t1; b])?;

    // Stage 2: T1 → t′ without gradient, each sample to its own t′.
    let mut at_t_prime = Vec::with_capacity(b);
    for (j, &t_prime) in noise.t_prime.iter().enumerate() {
        let mut x = noisy.clone().narrow(0, j, 1);
        let cond = condition.clone().narrow(0, j, 1);
        let ctx = context.clone().narrow(0, j, 1);
        for i in schedule.index(phase.skip_from)..schedule.index(t_prime) {
            let t = schedule.solver.timesteps[i];
            let prediction = inner.predict(x.clone(), &cond, &ctx, &[t]);
            x = schedule.solver.step(prediction, i, x);
        }
        at_t_prime.push(x);
    }
    let x_t = Tensor::<B, 4>::from_inner(Tensor::cat(at_t_prime, 0));
    let condition_ad = Tensor::<B, 4>::from_inner(condition.clone());
    let context_ad = Tensor::<B, 3>::from_inner(context.clone());

    // Stage 3: one call with gradient at t′, x′0 decoded to G.
    let t_prime: Vec<usize> = noise
        .t_prime
        .iter()
        .map(|&k| schedule.timestep(k))
        .collect();
    let t_prime_f: Vec<f32> = t_prime.iter().map(|&t| t as f32).collect();
    let prediction = model.predict(x_t.clone(), &condition_ad, &context_ad, &t_prime_f);
    let x0 = schedule
        .noise
        .pred_original_sample(schedule.prediction, prediction, x_t, &t_prime)?;
    let generated = model.decode_unclamped(x0);

    let (real_inner, mask_inner) = batch_pixels::<B::InnerBackend>(batch, &device);
    let real = Tensor::<B, 4>::from_inner(real_inner.clone());
    let mask = Tensor::<B, 4>::from_inner(mask_inner.clone());

    let mut terms = GeneratorTerms::default();
    let mut loss = Tensor::<B, 1>::zeros([1], &device);
    let reward_term = |folder: &RewardFolder<B>, weight: f64| -> Result<(f64, f64, Tensor<B, 1>)> {
        let encoded = folder.encode(&prompts)?;
        let score = folder.score(generated.clone(), &encoded);
        let mean_score = scalar(&score.clone().mean());
        let term = log_sigmoid(score).mean().neg();
        Ok((scalar(&term), mean_score, term.mul_scalar(weight)))
    };
    if let Some(folder) = &feedback.aesthetic {
        let (term, score, weighted) = reward_term(folder, weights.aesthetic)?;
        (terms.aesthetic_loss, terms.aesthetic) = (Some(term), Some(score));
        loss = loss.add(weighted);
    }
    if let Some(folder) = &feedback.alignment {
        let (term, score, weighted) = reward_term(folder, weights.alignment)?;
        (terms.alignment_loss, terms.alignment) = (Some(term), Some(score));
        loss = loss.add(weighted);
    }
    if let Some(d) = coherence {
        // G's masked region over the real rest: what R_γ judges.
        let composite = composite(real.clone(), generated.clone(), mask.clone());
        let logits = d.logits(composite, Some(mask.clone()));
        let generated_pixels = d.mask_at_model_size(mask.clone());
        let count = generated_pixels.clone().sum().add_scalar(1e-6);
        let term = generated_pixels
            .clone()
            .mul(log_sigmoid(logits.clone()))
            .sum()
            .div(count.clone())
            .neg();
        let realness = generated_pixels
            .mul(burn::tensor::activation::sigmoid(logits))
            .sum()
            .div(count);
        terms.coherence_loss = Some(scalar(&term));
        terms.coherence = Some(scalar(&realness));
        loss = loss.add(term.mul_scalar(weights.coherence));
    }
    let l1 = real.clone().sub(generated.clone()).abs().mean();
    terms.l1 = scalar(&l1);
    let mut regulariser = l1;
    if let Some(vgg) = &feedback.vgg {
        let distance = vgg.distance(real.clone(), generated.clone());
        terms.vgg = Some(scalar(&distance));
        regulariser = regulariser.add(distance);
    }
    loss = loss.add(regulariser.mul_scalar(weights.eta));

    if weights.denoise > 0.0 {
        // The standard loss on the full image's latents at a random timestep.
        let clean = inner.encode_latents(real_inner.clone().mul_scalar(2.0).sub_scalar(1.0));
        let noisy =
            schedule
                .noise
                .add_noise(clean.clone(), noise.denoise.clone(), &noise.denoise_t)?;
        let target = schedule.noise.training_target(
            schedule.prediction,
            clean,
            noise.denoise.clone(),
            &noise.denoise_t,
        )?;
        let t: Vec<f32> = noise.denoise_t.iter().map(|&t| t as f32).collect();
        let prediction = model.predict(Tensor::from_inner(noisy), &condition_ad, &context_ad, &t);
        let mse = prediction
            .sub(Tensor::from_inner(target))
            .powi_scalar(2)
            .mean();
        terms.denoise = Some(scalar(&mse));
        loss = loss.add(mse.mul_scalar(weights.denoise));
    }
    terms.loss = scalar(&loss);
    Ok(GeneratorStep {
        loss,
        terms,
        real: real_inner,
        mask: mask_inner,
        generated: generated.inner(),
    })
}

/// `x ⊙ (1 − m) + g ⊙ m`.
pub fn composite<B: Backend>(x: Tensor<B, 4>, g: Tensor<B, 4>, m: Tensor<B, 4>) -> Tensor<B, 4> {
    let keep = m.clone().neg().add_scalar(1.0);
    x.mul(keep).add(g.mul(m))
}

/// L_D (Eq. 8): every pixel of x is real; in G's composite, the masked
/// pixels are generated and the rest real. Returns the loss and the
/// share of pixels R_γ classifies right (logit > 0 = real).
pub fn discriminator_step<B: AutodiffBackend>(
    coherence: &CoherenceFolder<B>,
    real: Tensor<B::InnerBackend, 4>,
    generated: Tensor<B::InnerBackend, 4>,
    mask: Tensor<B::InnerBackend, 4>,
) -> (Tensor<B, 1>, f64) {
    let composite = composite(real.clone(), generated, mask.clone());
    let mask = Tensor::<B, 4>::from_inner(mask);
    let real_logits = coherence.logits(Tensor::from_inner(real), Some(mask.clone().zeros_like()));
    let fake_logits = coherence.logits(Tensor::from_inner(composite), Some(mask.clone()));
    let real_labels = coherence.mask_at_model_size(mask).neg().add_scalar(1.0);
    let loss = pixel_loss(real_logits.clone(), real_labels.clone().ones_like())
        .mean()
        .add(pixel_loss(fake_logits.clone(), real_labels.clone()).mean());
    let right = |logits: Tensor<B, 3>, labels: Tensor<B, 3>| -> f64 {
        let said_real = logits.inner().greater_elem(0.0).float();
        let labels = labels.inner().greater_elem(0.5).float();
        let agree = said_real.clone().mul(labels.clone()).add(
            said_real
                .neg()
                .add_scalar(1.0)
                .mul(labels.neg().add_scalar(1.0)),
        );
        agree.mean().into_scalar().elem::<f64>()
    };
    let accuracy = (right(real_logits, real_labels.clone().ones_like())
        + right(fake_logits, real_labels))
        / 2.0;
    (loss, accuracy)
}
