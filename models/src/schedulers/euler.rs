//! diffusers `schedulers/scheduling_euler_discrete.py` (no churn, linearly
//! interpolated sigmas, final sigma 0).

use burn::prelude::*;

use super::{NoiseSchedule, PredictionType, SchedulerConfig, TimestepSpacing, spaced_timesteps};

pub struct EulerDiscreteScheduler {
    pub timesteps: Vec<f32>,
    pub sigmas: Vec<f32>,
    spacing: TimestepSpacing,
    prediction: PredictionType,
}

impl EulerDiscreteScheduler {
    pub fn new(
        config: &SchedulerConfig,
        schedule: NoiseSchedule,
        steps: usize,
        spacing: TimestepSpacing,
    ) -> Self {
        let timesteps = spaced_timesteps(spacing, config, steps, false, false);
        let sigmas = schedule.sigmas_at(&timesteps);
        let timesteps = timesteps.iter().map(|&t| t as f32).collect();
        Self {
            timesteps,
            sigmas,
            spacing,
            prediction: config.prediction(),
        }
    }

    pub fn init_noise_sigma(&self) -> f64 {
        let max = self.sigmas.iter().fold(0f32, |m, &s| m.max(s)) as f64;
        match self.spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
        }
    }

    pub fn scale_model_input<B: Backend>(&self, sample: Tensor<B, 4>, step: usize) -> Tensor<B, 4> {
        let sigma = self.sigmas[step] as f64;
        sample.div_scalar((sigma * sigma + 1.0).sqrt())
    }

    pub fn step<B: Backend>(
        &self,
        model_output: Tensor<B, 4>,
        step: usize,
        sample: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let sigma = self.sigmas[step] as f64;
        let x0 = match self.prediction {
            PredictionType::Epsilon => sample.clone().sub(model_output.mul_scalar(sigma)),
            PredictionType::Sample => model_output,
            PredictionType::VPrediction => model_output
                .mul_scalar(-sigma / (sigma * sigma + 1.0).sqrt())
                .add(sample.clone().div_scalar(sigma * sigma + 1.0)),
        };
        let derivative = sample.clone().sub(x0).div_scalar(sigma);
        let dt = self.sigmas[step + 1] as f64 - sigma;
        sample.add(derivative.mul_scalar(dt))
    }
}
