//! Noise schedulers, after diffusers' `schedulers/`: DDIM, Euler (discrete) and
//! DPM-Solver++ 2M, each with the `leading`, `trailing` and `linspace`
//! timestep spacings.
//!
//! The schedule (betas, cumulative alphas) is computed the way diffusers does
//! it in float32, so timesteps and sigmas agree with the reference to the last
//! bit that matters; the per-step update is tensor arithmetic over burn, so it
//! runs on any backend and under autodiff.

mod ddim;
mod dpm_solver;
mod euler;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use burn::prelude::*;
use serde::Deserialize;

use crate::config::{read_config, unsupported};
use crate::error::{ModelError, Result};

pub use ddim::DdimScheduler;
pub use dpm_solver::DpmSolverMultistepScheduler;
pub use euler::EulerDiscreteScheduler;

/// The `scheduler/scheduler_config.json` fields shared by all solvers.
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    #[serde(default = "d_train_steps")]
    pub num_train_timesteps: usize,
    #[serde(default = "d_beta_start")]
    pub beta_start: f64,
    #[serde(default = "d_beta_end")]
    pub beta_end: f64,
    #[serde(default = "d_beta_schedule")]
    pub beta_schedule: String,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default = "d_prediction")]
    pub prediction_type: String,
    #[serde(default)]
    pub steps_offset: usize,
    /// DDIM only: the alpha used after the last step.
    #[serde(default = "d_true")]
    pub set_alpha_to_one: bool,
    /// DDIM only.
    #[serde(default)]
    pub clip_sample: bool,
    #[serde(default = "d_one")]
    pub clip_sample_range: f64,
    #[serde(default)]
    pub thresholding: bool,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    #[serde(default)]
    pub timestep_spacing: Option<String>,
}

fn d_train_steps() -> usize {
    1000
}
fn d_beta_start() -> f64 {
    0.0001
}
fn d_beta_end() -> f64 {
    0.02
}
fn d_beta_schedule() -> String {
    "linear".into()
}
fn d_prediction() -> String {
    "epsilon".into()
}
fn d_true() -> bool {
    true
}
fn d_one() -> f64 {
    1.0
}

impl SchedulerConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Self = read_config(path)?;
        if config.thresholding {
            return Err(unsupported(path, "thresholding"));
        }
        if config.rescale_betas_zero_snr {
            return Err(unsupported(path, "rescale_betas_zero_snr"));
        }
        PredictionType::parse(&config.prediction_type).map_err(|m| ModelError::config(path, m))?;
        if let Some(s) = &config.timestep_spacing {
            s.parse::<TimestepSpacing>()
                .map_err(|m| ModelError::config(path, m))?;
        }
        NoiseSchedule::new(&config).map_err(|m| ModelError::config(path, m))?;
        Ok(config)
    }

    pub fn prediction(&self) -> PredictionType {
        // Checked in `from_file`; a config built in code falls back to epsilon.
        PredictionType::parse(&self.prediction_type).unwrap_or(PredictionType::Epsilon)
    }
}

impl Default for SchedulerConfig {
    /// Stable Diffusion 1.x/2.x's schedule.
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: "scaled_linear".into(),
            trained_betas: None,
            prediction_type: "epsilon".into(),
            steps_offset: 1,
            set_alpha_to_one: false,
            clip_sample: false,
            clip_sample_range: 1.0,
            thresholding: false,
            rescale_betas_zero_snr: false,
            timestep_spacing: None,
        }
    }
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    /// The added noise (SD-1.x, SD-2 base 512).
    Epsilon,
    /// `v = alpha * noise - sigma * x0` (SD-2 768, SD-2 inpainting uses epsilon).
    VPrediction,
    /// The clean sample itself.
    Sample,
}

impl PredictionType {
    fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "epsilon" => Ok(Self::Epsilon),
            "v_prediction" => Ok(Self::VPrediction),
            "sample" => Ok(Self::Sample),
            other => Err(format!(
                "prediction_type {other:?} is not one of \"epsilon\", \"v_prediction\", \"sample\""
            )),
        }
    }
}

/// How inference timesteps are picked from the training ones
/// (table 2 of "Common Diffusion Noise Schedules and Sample Steps are Flawed").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

impl FromStr for TimestepSpacing {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "leading" => Ok(Self::Leading),
            "trailing" => Ok(Self::Trailing),
            "linspace" => Ok(Self::Linspace),
            other => Err(format!(
                "timestep spacing {other:?} is not one of leading, trailing, linspace"
            )),
        }
    }
}

impl fmt::Display for TimestepSpacing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Leading => "leading",
            Self::Trailing => "trailing",
            Self::Linspace => "linspace",
        })
    }
}

/// The solvers a caller can pick by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    Ddim,
    Euler,
    DpmSolverPlusPlus2M,
}

impl SchedulerKind {
    pub const NAMES: [&'static str; 3] = ["ddim", "euler", "dpmpp-2m"];

    /// The spacing diffusers' class uses when none is configured.
    pub fn default_spacing(self) -> TimestepSpacing {
        match self {
            Self::Ddim => TimestepSpacing::Leading,
            Self::Euler | Self::DpmSolverPlusPlus2M => TimestepSpacing::Linspace,
        }
    }
}

impl FromStr for SchedulerKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "ddim" => Ok(Self::Ddim),
            "euler" => Ok(Self::Euler),
            "dpmpp-2m" | "dpm++-2m" | "dpmpp2m" => Ok(Self::DpmSolverPlusPlus2M),
            _ => Err(format!(
                "scheduler {s:?} is not one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ddim => "ddim",
            Self::Euler => "euler",
            Self::DpmSolverPlusPlus2M => "dpmpp-2m",
        })
    }
}

/// The training noise schedule: cumulative alphas, stored as float32 like
/// diffusers' tensors.
#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    pub alphas_cumprod: Vec<f32>,
}

impl NoiseSchedule {
    pub fn new(config: &SchedulerConfig) -> std::result::Result<Self, String> {
        let n = config.num_train_timesteps;
        if n < 2 {
            return Err(format!("num_train_timesteps = {n} must be at least 2"));
        }
        let betas: Vec<f32> = if let Some(trained) = &config.trained_betas {
            if trained.len() != n {
                return Err(format!(
                    "trained_betas has {} values for num_train_timesteps = {n}",
                    trained.len()
                ));
            }
            trained.iter().map(|&b| b as f32).collect()
        } else {
            match config.beta_schedule.as_str() {
                "linear" => linspace_f32(config.beta_start as f32, config.beta_end as f32, n),
                "scaled_linear" => linspace_f32(
                    config.beta_start.sqrt() as f32,
                    config.beta_end.sqrt() as f32,
                    n,
                )
                .into_iter()
                .map(|b| b * b)
                .collect(),
                "squaredcos_cap_v2" => {
                    let alpha_bar = |t: f64| {
                        ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                            .cos()
                            .powi(2)
                    };
                    (0..n)
                        .map(|i| {
                            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                        })
                        .collect()
                }
                other => {
                    return Err(format!(
                        "beta_schedule {other:?} is not one of linear, scaled_linear, squaredcos_cap_v2"
                    ));
                }
            }
        };
        // torch.cumprod accumulates float32 inputs in double on the CPU.
        let mut acc = 1f64;
        let alphas_cumprod = betas
            .iter()
            .map(|&b| {
                acc *= (1f32 - b) as f64;
                acc as f32
            })
            .collect();
        Ok(Self { alphas_cumprod })
    }

    /// The sigma `sqrt((1 - ᾱ) / ᾱ)` at each (possibly fractional) timestep,
    /// linearly interpolated between training timesteps as diffusers' Euler and
    /// DPM-Solver do, followed by the final sigma 0.
    fn sigmas_at(&self, timesteps: &[f64]) -> Vec<f32> {
        let train: Vec<f32> = self
            .alphas_cumprod
            .iter()
            .map(|&a| ((1f32 - a) / a).sqrt())
            .collect();
        let mut sigmas: Vec<f32> = timesteps
            .iter()
            .map(|&t| interp(t, &train) as f32)
            .collect();
        sigmas.push(0.0);
        sigmas
    }
}

/// The forward process and the x0 estimate at given training timesteps,
/// one per sample: what training (and any solver) builds on.
impl NoiseSchedule {
    /// `[b, 1, 1, 1]` of `f(ᾱ_t)` per sample, in f32 as diffusers' tensors.
    fn per_sample<B: Backend>(
        &self,
        timesteps: &[usize],
        f: impl Fn(f32) -> f32,
        device: &B::Device,
    ) -> Result<Tensor<B, 4>> {
        let last = self.alphas_cumprod.len();
        let values = timesteps
            .iter()
            .map(|&t| {
                self.alphas_cumprod.get(t).map(|&a| f(a)).ok_or_else(|| {
                    ModelError::InvalidInput(format!(
                        "timestep {t} is outside the schedule's {last} training timesteps"
                    ))
                })
            })
            .collect::<Result<Vec<f32>>>()?;
        Ok(
            Tensor::<B, 1>::from_floats(values.as_slice(), device).reshape([
                timesteps.len(),
                1,
                1,
                1,
            ]),
        )
    }

    /// diffusers' `add_noise`: `sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε`, a timestep per sample.
    pub fn add_noise<B: Backend>(
        &self,
        original: Tensor<B, 4>,
        noise: Tensor<B, 4>,
        timesteps: &[usize],
    ) -> Result<Tensor<B, 4>> {
        let device = original.device();
        let a = self.per_sample::<B>(timesteps, |a| a.sqrt(), &device)?;
        let s = self.per_sample::<B>(timesteps, |a| (1.0 - a).sqrt(), &device)?;
        Ok(original.mul(a).add(noise.mul(s)))
    }

    /// The solvers' `pred_original_sample`: x0 from the model's output at
    /// `timesteps` (one per sample), for each prediction type.
    pub fn pred_original_sample<B: Backend>(
        &self,
        prediction: PredictionType,
        model_output: Tensor<B, 4>,
        sample: Tensor<B, 4>,
        timesteps: &[usize],
    ) -> Result<Tensor<B, 4>> {
        let device = sample.device();
        let a = self.per_sample::<B>(timesteps, |a| a.sqrt(), &device)?;
        let s = self.per_sample::<B>(timesteps, |a| (1.0 - a).sqrt(), &device)?;
        Ok(match prediction {
            PredictionType::Epsilon => sample.sub(model_output.mul(s)).div(a),
            PredictionType::VPrediction => sample.mul(a).sub(model_output.mul(s)),
            PredictionType::Sample => model_output,
        })
    }

    /// What the model is trained to output (diffusers' training scripts):
    /// ε, `v = sqrt(ᾱ) ε - sqrt(1 - ᾱ) x0`, or x0.
    pub fn training_target<B: Backend>(
        &self,
        prediction: PredictionType,
        original: Tensor<B, 4>,
        noise: Tensor<B, 4>,
        timesteps: &[usize],
    ) -> Result<Tensor<B, 4>> {
        Ok(match prediction {
            PredictionType::Epsilon => noise,
            PredictionType::Sample => original,
            PredictionType::VPrediction => {
                let device = original.device();
                let a = self.per_sample::<B>(timesteps, |a| a.sqrt(), &device)?;
                let s = self.per_sample::<B>(timesteps, |a| (1.0 - a).sqrt(), &device)?;
                noise.mul(a).sub(original.mul(s))
            }
        })
    }
}

/// `torch.linspace(start, end, n, dtype=float32)`: float32 steps, the second
/// half counted back from `end` as ATen does.
fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (n - 1 - i) as f32
            }
        })
        .collect()
}

/// `np.linspace(start, end, n)` in float64.
fn linspace_f64(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    (0..n).map(|i| start + step * i as f64).collect()
}

/// `np.arange(start, stop, -step)` for a positive `step`, counting down.
fn arange_down(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let count = ((start - stop) / step).ceil().max(0.0) as usize;
    (0..count).map(|i| start - step * i as f64).collect()
}

/// `np.interp(x, arange(len(table)), table)`.
fn interp(x: f64, table: &[f32]) -> f64 {
    let last = table.len() - 1;
    if x <= 0.0 {
        return table[0] as f64;
    }
    if x >= last as f64 {
        return table[last] as f64;
    }
    let i = x.floor() as usize;
    let frac = x - i as f64;
    let (a, b) = (table[i] as f64, table[i + 1] as f64);
    a + (b - a) * frac
}

/// `np.round`: halves go to the even neighbour.
fn round_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// The inference timesteps, noisiest first, as diffusers' `set_timesteps`
/// spaces them. DPM-Solver spaces `steps + 1` points for `leading` and
/// `linspace` and drops the last (`one_extra`); Euler keeps `linspace`
/// timesteps fractional (`round_linspace = false`).
fn spaced_timesteps(
    spacing: TimestepSpacing,
    config: &SchedulerConfig,
    steps: usize,
    round_linspace: bool,
    one_extra: bool,
) -> Vec<f64> {
    let n = config.num_train_timesteps;
    let count = if one_extra { steps + 1 } else { steps };
    let mut timesteps: Vec<f64> = match spacing {
        TimestepSpacing::Linspace => linspace_f64(0.0, (n - 1) as f64, count)
            .into_iter()
            .rev()
            .map(|t| if round_linspace { round_even(t) } else { t })
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = n / count;
            (0..count)
                .rev()
                .map(|i| (i * ratio + config.steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => arange_down(n as f64, 0.0, n as f64 / steps as f64)
            .into_iter()
            .map(|t| round_even(t) - 1.0)
            .collect(),
    };
    timesteps.truncate(steps);
    timesteps
}

/// One configured solver for one run: its timesteps, plus any state carried
/// between steps. Build a fresh one per edit.
pub enum Scheduler<B: Backend> {
    Ddim(DdimScheduler),
    Euler(EulerDiscreteScheduler),
    DpmSolverPlusPlus2M(DpmSolverMultistepScheduler<B>),
}

impl<B: Backend> Scheduler<B> {
    /// Sets up `kind` for `steps` inference steps; `spacing` overrides the
    /// solver's default (diffusers' per-class default, not the config's, so
    /// that a model shipped with DDIM "leading" still gets Euler's "linspace").
    pub fn new(
        kind: SchedulerKind,
        config: &SchedulerConfig,
        steps: usize,
        spacing: Option<TimestepSpacing>,
    ) -> Result<Self> {
        if steps == 0 || steps > config.num_train_timesteps {
            return Err(ModelError::InvalidInput(format!(
                "`steps` must be between 1 and {} (the model's training timesteps), got {steps}",
                config.num_train_timesteps
            )));
        }
        let spacing = spacing.unwrap_or(kind.default_spacing());
        let schedule = NoiseSchedule::new(config).map_err(ModelError::InvalidInput)?;
        Ok(match kind {
            SchedulerKind::Ddim => Self::Ddim(DdimScheduler::new(config, schedule, steps, spacing)),
            SchedulerKind::Euler => Self::Euler(EulerDiscreteScheduler::new(
                config, schedule, steps, spacing,
            )),
            SchedulerKind::DpmSolverPlusPlus2M => Self::DpmSolverPlusPlus2M(
                DpmSolverMultistepScheduler::new(config, schedule, steps, spacing),
            ),
        })
    }

    /// The model timesteps, noisiest first (fractional for Euler's linspace).
    pub fn timesteps(&self) -> &[f32] {
        match self {
            Self::Ddim(s) => &s.timesteps,
            Self::Euler(s) => &s.timesteps,
            Self::DpmSolverPlusPlus2M(s) => &s.timesteps,
        }
    }

    /// The sigmas, where the solver has them (one more than timesteps, ending at 0).
    pub fn sigmas(&self) -> Option<&[f32]> {
        match self {
            Self::Ddim(_) => None,
            Self::Euler(s) => Some(&s.sigmas),
            Self::DpmSolverPlusPlus2M(s) => Some(&s.sigmas),
        }
    }

    /// What the initial Gaussian noise is multiplied by.
    pub fn init_noise_sigma(&self) -> f64 {
        match self {
            Self::Euler(s) => s.init_noise_sigma(),
            Self::Ddim(_) | Self::DpmSolverPlusPlus2M(_) => 1.0,
        }
    }

    /// Scales the latents before they go into the model at `step`.
    pub fn scale_model_input(&self, sample: Tensor<B, 4>, step: usize) -> Tensor<B, 4> {
        match self {
            Self::Euler(s) => s.scale_model_input(sample, step),
            Self::Ddim(_) | Self::DpmSolverPlusPlus2M(_) => sample,
        }
    }

    /// One denoising step from `sample` at `step` to the next, less noisy sample.
    pub fn step(
        &mut self,
        model_output: Tensor<B, 4>,
        step: usize,
        sample: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        match self {
            Self::Ddim(s) => s.step(model_output, step, sample),
            Self::Euler(s) => s.step(model_output, step, sample),
            Self::DpmSolverPlusPlus2M(s) => s.step(model_output, step, sample),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for name in SchedulerKind::NAMES {
            let kind: SchedulerKind = name.parse().unwrap();
            assert_eq!(kind.to_string(), name);
        }
        assert!(
            "heun"
                .parse::<SchedulerKind>()
                .unwrap_err()
                .contains("ddim, euler, dpmpp-2m")
        );
        assert!("middle".parse::<TimestepSpacing>().is_err());
    }

    #[test]
    fn linspace_matches_numpy_shape() {
        assert_eq!(linspace_f64(0.0, 999.0, 3), vec![0.0, 499.5, 999.0]);
        assert_eq!(
            arange_down(1000.0, 0.0, 250.0),
            vec![1000.0, 750.0, 500.0, 250.0]
        );
        assert_eq!(round_even(0.5), 0.0);
        assert_eq!(round_even(1.5), 2.0);
    }

    #[test]
    fn interpolation_between_table_entries() {
        let table = [0.0f32, 1.0, 3.0];
        assert_eq!(interp(0.5, &table), 0.5);
        assert_eq!(interp(1.25, &table), 1.5);
        assert_eq!(interp(5.0, &table), 3.0);
    }

    #[test]
    fn zero_steps_is_a_clear_error() {
        let err = Scheduler::<burn::backend::Flex>::new(
            SchedulerKind::Ddim,
            &SchedulerConfig::default(),
            0,
            None,
        )
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .contains("`steps` must be between 1 and 1000")
        );
    }
}
