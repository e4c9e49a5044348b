//! What burn 0.21 lacks for training the way the paper and ImageReward do,
//! written once for the reward models and the fine-tuning stage: AdamW with
//! PyTorch's semantics, clipping by the global gradient norm (burn clips
//! each tensor on its own), an exponential moving average of the weights,
//! and warm-up plus cosine learning rates. Every state is keyed by the
//! parameter's checkpoint name, so it is saved and resumed with the model.

use std::collections::BTreeMap;
use std::f64::consts::PI;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Flat gradients (or moments, or averages) by parameter key.
pub type Keyed<B> = BTreeMap<String, Tensor<B, 1>>;

/// AdamW settings; defaults are PyTorch's `torch.optim.AdamW` but the
/// weight decay, which is 0 as in ImageReward's Adam.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// AdamW's moments for each parameter and the step count.
pub struct AdamW<B: Backend> {
    pub config: AdamWConfig,
    pub step: u64,
    pub first: Keyed<B>,
    pub second: Keyed<B>,
}

impl<B: Backend> AdamW<B> {
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            step: 0,
            first: BTreeMap::new(),
            second: BTreeMap::new(),
        }
    }

    /// Counts one step; call once before the [`AdamW::update`]s of a step.
    pub fn begin_step(&mut self) {
        self.step += 1;
    }

    /// The new value of parameter `key` (`param`, flat) for its gradient:
    /// decoupled decay, then the bias-corrected Adam update, as torch does.
    pub fn update(
        &mut self,
        key: &str,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        lr: f64,
    ) -> Tensor<B, 1> {
        let c = &self.config;
        let t = self.step.max(1) as i32;
        let zeros = || grad.zeros_like();
        let m = self.first.remove(key).unwrap_or_else(zeros);
        let v = self.second.remove(key).unwrap_or_else(zeros);
        let m = m.mul_scalar(c.beta1) + grad.clone().mul_scalar(1.0 - c.beta1);
        let v = v.mul_scalar(c.beta2) + grad.powi_scalar(2).mul_scalar(1.0 - c.beta2);
        let m_hat = m.clone().div_scalar(1.0 - c.beta1.powi(t));
        let v_hat = v.clone().div_scalar(1.0 - c.beta2.powi(t));
        let decayed = param.mul_scalar(1.0 - lr * c.weight_decay);
        let new = decayed - (m_hat / v_hat.sqrt().add_scalar(c.eps)).mul_scalar(lr);
        self.first.insert(key.to_owned(), m);
        self.second.insert(key.to_owned(), v);
        new
    }
}

/// The L2 norm of all gradients together.
pub fn global_norm<B: Backend>(grads: &Keyed<B>) -> f64 {
    grads
        .values()
        .map(|g| g.clone().powi_scalar(2).sum().into_scalar().elem::<f64>())
        .sum::<f64>()
        .sqrt()
}

/// Scales all gradients together so that their global norm is at most
/// `max_norm` (`torch.nn.utils.clip_grad_norm_`); returns the norm before.
pub fn clip_global_norm<B: Backend>(grads: &mut Keyed<B>, max_norm: f64) -> f64 {
    let norm = global_norm(grads);
    let scale = max_norm / (norm + 1e-6);
    if scale < 1.0 {
        for g in grads.values_mut() {
            *g = g.clone().mul_scalar(scale);
        }
    }
    norm
}

/// Adds `more` into `sum`, key by key (gradient accumulation).
pub fn accumulate<B: Backend>(sum: &mut Keyed<B>, more: Vec<(String, Tensor<B, 1>)>) {
    for (key, g) in more {
        let total = match sum.remove(&key) {
            Some(s) => s + g,
            None => g,
        };
        sum.insert(key, total);
    }
}

/// An exponential moving average of the weights: `ema = d·ema + (1-d)·w`.
pub struct Ema<B: Backend> {
    pub decay: f64,
    pub average: Keyed<B>,
}

impl<B: Backend> Ema<B> {
    pub fn new(decay: f64) -> Self {
        Self {
            decay,
            average: BTreeMap::new(),
        }
    }

    /// Folds in the current value of `key`; the first value starts the average.
    pub fn update(&mut self, key: &str, value: Tensor<B, 1>) {
        let next = match self.average.remove(key) {
            Some(avg) => avg.mul_scalar(self.decay) + value.mul_scalar(1.0 - self.decay),
            None => value,
        };
        self.average.insert(key.to_owned(), next);
    }
}

/// Linear warm-up from 0, then a cosine from `lr` down to `min_lr` at
/// `total` steps (step counts from 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: u64,
    pub total: u64,
}

impl LrSchedule {
    pub fn at(&self, step: u64) -> f64 {
        if step <= self.warmup && self.warmup > 0 {
            return self.lr * step as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((step - self.warmup.min(step)) as f64 / span).min(1.0);
        self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + (PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use byteedit_models::CpuBackend;

    fn tensor(values: &[f32]) -> Tensor<CpuBackend, 1> {
        Tensor::from_floats(values, &Default::default())
    }

    fn values(t: Tensor<CpuBackend, 1>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    #[test]
    fn adamw_matches_torchs_first_two_steps() {
        // torch.optim.AdamW([p], lr=0.1, weight_decay=0.01) on p=[1,-2],
        // grads [0.5,-1] then [0.25, 2] gives these values.
        let mut opt = AdamW::<CpuBackend>::new(AdamWConfig {
            weight_decay: 0.01,
            ..AdamWConfig::default()
        });
        opt.begin_step();
        let p = opt.update("p", tensor(&[1.0, -2.0]), tensor(&[0.5, -1.0]), 0.1);
        let got = values(p.clone());
        // Step 1: m̂/√v̂ = sign(g): p·(1-0.001) - 0.1·sign(g).
        assert!(
            (got[0] - 0.899).abs() < 1e-6 && (got[1] + 1.898).abs() < 1e-6,
            "{got:?}"
        );
        opt.begin_step();
        let got = values(opt.update("p", p, tensor(&[0.25, 2.0]), 0.1));
        let expect = |p: f64, g1: f64, g2: f64| {
            let p = p * (1.0 - 0.001);
            let m = 0.9 * 0.1 * g1 + 0.1 * g2;
            let v = 0.999 * 0.001 * g1 * g1 + 0.001 * g2 * g2;
            let (mh, vh) = (m / (1.0 - 0.81), v / (1.0 - 0.999f64.powi(2)));
            p - 0.1 * mh / (vh.sqrt() + 1e-8)
        };
        assert!((f64::from(got[0]) - expect(0.899, 0.5, 0.25)).abs() < 1e-5);
        assert!((f64::from(got[1]) - expect(-1.898, -1.0, 2.0)).abs() < 1e-5);
    }

    #[test]
    fn clipping_scales_all_gradients_by_one_factor() {
        let mut grads = Keyed::<CpuBackend>::new();
        grads.insert("a".into(), tensor(&[3.0]));
        grads.insert("b".into(), tensor(&[0.0, 4.0]));
        let norm = clip_global_norm(&mut grads, 1.0);
        assert!((norm - 5.0).abs() < 1e-6);
        assert!((values(grads["a"].clone())[0] - 0.6).abs() < 1e-5);
        assert!((values(grads["b"].clone())[1] - 0.8).abs() < 1e-5);
        assert!((global_norm(&grads) - 1.0).abs() < 1e-5);
        // Under the bound nothing changes.
        assert!((clip_global_norm(&mut grads, 10.0) - 1.0).abs() < 1e-5);
        assert!((values(grads["a"].clone())[0] - 0.6).abs() < 1e-5);
    }

    #[test]
    fn ema_and_schedule() {
        let mut ema = Ema::<CpuBackend>::new(0.9);
        ema.update("w", tensor(&[1.0]));
        ema.update("w", tensor(&[2.0]));
        assert!((values(ema.average["w"].clone())[0] - 1.1).abs() < 1e-6);
        let s = LrSchedule {
            lr: 1.0,
            min_lr: 0.0,
            warmup: 10,
            total: 110,
        };
        assert!((s.at(5) - 0.5).abs() < 1e-12);
        assert!((s.at(10) - 1.0).abs() < 1e-12);
        assert!((s.at(60) - 0.5).abs() < 1e-12);
        assert!(s.at(110).abs() < 1e-12);
        assert!(s.at(500).abs() < 1e-12);
    }
}
