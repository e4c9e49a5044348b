//! diffusers `schedulers/scheduling_dpmsolver_multistep.py` as
//! DPM-Solver++(2M): `algorithm_type="dpmsolver++"`, `solver_order=2`,
//! midpoint solver, first order on the final step (final sigma 0).
//! Lu et al., "DPM-Solver++", https://arxiv.org/abs/2211.01095.

use burn::prelude::*;

use super::{NoiseSchedule, PredictionType, SchedulerConfig, TimestepSpacing, spaced_timesteps};

pub struct DpmSolverMultistepScheduler<B: Backend> {
    pub timesteps: Vec<f32>,
    pub sigmas: Vec<f32>,
    prediction: PredictionType,
    /// The previous step's data prediction (x0), for the second-order update.
    previous_x0: Option<Tensor<B, 4>>,
}

/// `(alpha_t, sigma_t)` of the variance-preserving process at Karras sigma `s`.
fn alpha_sigma(s: f64) -> (f64, f64) {
    let alpha = 1.0 / (s * s + 1.0).sqrt();
    (alpha, s * alpha)
}

/// Half log signal-to-noise ratio; +inf at sigma 0 (the final step).
fn lambda(s: f64) -> f64 {
    let (alpha, sigma) = alpha_sigma(s);
    alpha.ln() - sigma.ln()
}

impl<B: Backend> DpmSolverMultistepScheduler<B> {
    pub fn new(
        config: &SchedulerConfig,
        schedule: NoiseSchedule,
        steps: usize,
        spacing: TimestepSpacing,
    ) -> Self {
        // With lambda_min_clipped = -inf no timestep is clipped.
        let timesteps = spaced_timesteps(spacing, config, steps, true, true);
        let sigmas = schedule.sigmas_at(&timesteps);
        Self {
            timesteps: timesteps.iter().map(|&t| t as f32).collect(),
            sigmas,
            prediction: config.prediction(),
            previous_x0: None,
        }
    }

    pub fn step(
        &mut self,
        model_output: Tensor<B, 4>,
        step: usize,
        sample: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let s0 = self.sigmas[step] as f64;
        let t = self.sigmas[step + 1] as f64;
        let (alpha_s0, sigma_s0) = alpha_sigma(s0);
        let (alpha_t, sigma_t) = alpha_sigma(t);

        // The solver works on the data prediction x0.
        let x0 = match self.prediction {
            PredictionType::Epsilon => sample
                .clone()
                .sub(model_output.mul_scalar(sigma_s0))
                .div_scalar(alpha_s0),
            PredictionType::Sample => model_output,
            PredictionType::VPrediction => sample
                .clone()
                .mul_scalar(alpha_s0)
                .sub(model_output.mul_scalar(sigma_s0)),
        };

        let h = lambda(t) - lambda(s0);
        let phi = alpha_t * ((-h).exp() - 1.0);
        let last_step = step + 1 == self.timesteps.len();
        let base = sample
            .mul_scalar(sigma_t / sigma_s0)
            .sub(x0.clone().mul_scalar(phi));
        let next = match self.previous_x0.take() {
            // Second order (midpoint): correct with the x0 slope between steps.
            Some(prev) if !last_step && step > 0 => {
                let s1 = self.sigmas[step - 1] as f64;
                let r0 = (lambda(s0) - lambda(s1)) / h;
                let d1 = x0.clone().sub(prev).div_scalar(r0);
                base.sub(d1.mul_scalar(0.5 * phi))
            }
            _ => base,
        };
        self.previous_x0 = Some(x0);
        next
    }
}
