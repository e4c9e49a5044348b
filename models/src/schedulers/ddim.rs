//! diffusers `schedulers/scheduling_ddim.py` with `eta = 0` (deterministic),
//! as Stable Diffusion pipelines run it.

use burn::prelude::*;

use super::{NoiseSchedule, PredictionType, SchedulerConfig, TimestepSpacing, spaced_timesteps};

pub struct DdimScheduler {
    pub timesteps: Vec<f32>,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    /// `num_train_timesteps // steps`: how far back each step jumps.
    step_ratio: i64,
    prediction: PredictionType,
    clip_range: Option<f64>,
}

impl DdimScheduler {
    pub fn new(
        config: &SchedulerConfig,
        schedule: NoiseSchedule,
        steps: usize,
        spacing: TimestepSpacing,
    ) -> Self {
        let n = config.num_train_timesteps;
        let timesteps = spaced_timesteps(spacing, config, steps, true, false);
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            schedule.alphas_cumprod[0]
        };
        Self {
            timesteps: timesteps.iter().map(|&t| t as f32).collect(),
            alphas_cumprod: schedule.alphas_cumprod,
            final_alpha_cumprod,
            step_ratio: (n / steps) as i64,
            prediction: config.prediction(),
            clip_range: config.clip_sample.then_some(config.clip_sample_range),
        }
    }

    fn alpha_at(&self, t: i64) -> f64 {
        if t >= 0 {
            self.alphas_cumprod[(t as usize).min(self.alphas_cumprod.len() - 1)] as f64
        } else {
            self.final_alpha_cumprod as f64
        }
    }

    pub fn step<B: Backend>(
        &self,
        model_output: Tensor<B, 4>,
        step: usize,
        sample: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let t = self.timesteps[step] as i64;
        let alpha_t = self.alpha_at(t);
        let alpha_prev = self.alpha_at(t - self.step_ratio);
        let beta_t = 1.0 - alpha_t;
        let (x0, eps) = match self.prediction {
            PredictionType::Epsilon => (
                sample
                    .sub(model_output.clone().mul_scalar(beta_t.sqrt()))
                    .div_scalar(alpha_t.sqrt()),
                model_output,
            ),
            PredictionType::Sample => (
                model_output.clone(),
                sample
                    .sub(model_output.mul_scalar(alpha_t.sqrt()))
                    .div_scalar(beta_t.sqrt()),
            ),
            PredictionType::VPrediction => (
                sample
                    .clone()
                    .mul_scalar(alpha_t.sqrt())
                    .sub(model_output.clone().mul_scalar(beta_t.sqrt())),
                model_output
                    .mul_scalar(alpha_t.sqrt())
                    .add(sample.mul_scalar(beta_t.sqrt())),
            ),
        };
        let x0 = match self.clip_range {
            Some(r) => x0.clamp(-r, r),
            None => x0,
        };
        x0.mul_scalar(alpha_prev.sqrt())
            .add(eps.mul_scalar((1.0 - alpha_prev).sqrt()))
    }
}
