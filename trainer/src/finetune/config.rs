//! `finetune`'s configuration: one TOML or JSON file (`--config`) whose
//! fields default to the paper's settings (section 4.1), and the flags
//! that override it. The paper gives no value for η (the regulariser
//! weight) nor for the denoising loss; their defaults are ours, said here.

use std::path::Path;

use byteedit_models::lora::LoraSpec;
use byteedit_rewards::{CoherenceConfig, VisionConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::finetune::masks::MaskConfig;
use crate::optim::AdamWConfig;

/// One phase of progressive training: a `steps`-step schedule whose
/// noisiest `steps - skip_from` steps are skipped (stage 1 noises straight
/// to step `skip_from`), and the gradient step drawn from `[1, grad_max]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseConfig {
    /// T: inference steps of the schedule trained for.
    pub steps: usize,
    /// T1: the step the masked input is noised to.
    pub skip_from: usize,
    /// T2: t′ is drawn uniformly from [1, T2].
    pub grad_max: usize,
}

impl PhaseConfig {
    /// The paper's phase 1 (T=20, T1=15, T2=10) and phase 2 (T=8, T1=6, T2=3).
    pub fn paper(phase: u8) -> Option<Self> {
        match phase {
            1 => Some(Self {
                steps: 20,
                skip_from: 15,
                grad_max: 10,
            }),
            2 => Some(Self {
                steps: 8,
                skip_from: 6,
                grad_max: 3,
            }),
            _ => None,
        }
    }

    pub fn check(&self) -> Result<()> {
        let Self {
            steps,
            skip_from,
            grad_max,
        } = *self;
        if steps < 2
            || skip_from == 0
            || skip_from >= steps
            || grad_max == 0
            || grad_max >= skip_from
        {
            return Err(TrainError::Config(format!(
                "phase: T={steps}, T1={skip_from}, T2={grad_max} cannot train: \
                 it needs 1 <= T2 < T1 < T (the paper: 20, 15, 10 and 8, 6, 3)"
            )));
        }
        Ok(())
    }
}

/// The loss weights of Eq. 7–8 (plus the optional denoising term).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossWeights {
    /// w_α and w_β: the feedback weight (paper: 0.01).
    pub aesthetic: f64,
    pub alignment: f64,
    /// w_γ: the adversarial weight (paper: 0.05).
    pub coherence: f64,
    /// η on ‖x − G‖₁ + ‖V(x) − V(G)‖₁ (the paper gives no value; ours: 1).
    pub eta: f64,
    /// The standard denoising loss at a random training timestep, as
    /// ImageReward's ReFL keeps it (ours: 1; 0 turns it off).
    pub denoise: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self {
            aesthetic: 0.01,
            alignment: 0.01,
            coherence: 0.05,
            eta: 1.0,
            denoise: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinetuneConfig {
    /// 1 or 2: picks the paper's phase values unless `schedule` is given.
    pub phase: u8,
    pub schedule: Option<PhaseConfig>,
    pub weights: LossWeights,
    pub steps: u64,
    /// Images per step.
    pub batch: usize,
    /// Training images are resized (shorter side) and centre-cropped to
    /// this square size; default the model's native size.
    pub resolution: Option<u32>,
    pub lr: f64,
    pub warmup_steps: u64,
    pub adamw: AdamWConfig,
    pub max_grad_norm: Option<f64>,
    pub ema_decay: f64,
    /// The discriminator's (R_γ's) own optimiser.
    pub discriminator_lr: f64,
    /// Low-rank adapters instead of full fine-tuning.
    pub lora: Option<LoraSpec>,
    pub masks: MaskConfig,
    /// Write a checkpoint (and evaluate) every this many steps.
    pub save_every: u64,
    /// Images held out of training to measure the rewards on.
    pub held_out: usize,
    /// The sizes of R_γ with `--coherence fresh` (default: a 6-layer ViT-S/16
    /// at 224 px that reads the mask as a fourth channel).
    pub fresh_coherence: Option<CoherenceConfig>,
    /// Save the exported folder's weights as fp16 (default fp32).
    pub export_fp16: bool,
    pub seed: u64,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            phase: 1,
            schedule: None,
            weights: LossWeights::default(),
            steps: 1000,
            batch: 1,
            resolution: None,
            lr: 2e-6,
            warmup_steps: 1000,
            adamw: AdamWConfig::default(),
            max_grad_norm: Some(1.0),
            ema_decay: 0.9999,
            discriminator_lr: 2e-6,
            lora: None,
            masks: MaskConfig::default(),
            save_every: 100,
            held_out: 2,
            fresh_coherence: None,
            export_fp16: false,
            seed: 0,
        }
    }
}

impl FinetuneConfig {
    /// Reads `.toml` or `.json` (by extension; anything else is tried as TOML).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Input {
            path: path.to_owned(),
            message: format!("cannot read the config: {e}"),
        })?;
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            toml::from_str(&text).map_err(|e| e.to_string())
        };
        parsed.map_err(|message| TrainError::Input {
            path: path.to_owned(),
            message: format!("not a fine-tuning config: {message}"),
        })
    }

    pub fn fresh_coherence(&self) -> CoherenceConfig {
        self.fresh_coherence
            .clone()
            .unwrap_or_else(|| CoherenceConfig {
                kind: "coherence".into(),
                vision: VisionConfig {
                    img_size: 224,
                    patch_size: 16,
                    embed_dim: 384,
                    depth: 6,
                    num_heads: 6,
                    layer_norm_eps: 1e-6,
                    mlp_ratio: 4.0,
                    in_chans: 4,
                },
                mask_channel: true,
                head_hidden: None,
                image_mean: byteedit_rewards::config::CLIP_MEAN,
                image_std: byteedit_rewards::config::CLIP_STD,
            })
    }

    /// The schedule trained: `schedule` if given, else the phase's.
    pub fn phase_config(&self) -> Result<PhaseConfig> {
        match self.schedule {
            Some(s) => Ok(s),
            None => PhaseConfig::paper(self.phase).ok_or_else(|| {
                TrainError::Config(format!(
                    "phase is {}: it must be 1 or 2 (or give `schedule` explicitly)",
                    self.phase
                ))
            }),
        }
    }

    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        self.phase_config()?.check()?;
        if self.batch == 0 || self.steps == 0 {
            return bad("`batch` and `steps` must be at least 1".into());
        }
        for (name, v) in [("lr", self.lr), ("discriminator_lr", self.discriminator_lr)] {
            if !(v > 0.0 && v.is_finite()) {
                return bad(format!("`{name}` must be a positive number, not {v}"));
            }
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return bad(format!(
                "`ema_decay` is {}: it must be in [0, 1)",
                self.ema_decay
            ));
        }
        let w = &self.weights;
        for (name, v) in [
            ("aesthetic", w.aesthetic),
            ("alignment", w.alignment),
            ("coherence", w.coherence),
            ("eta", w.eta),
            ("denoise", w.denoise),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(format!("`weights.{name}` must be a number >= 0, not {v}"));
            }
        }
        if let Some(lora) = &self.lora {
            lora.check()?;
        }
        if self.save_every == 0 {
            return bad("`save_every` must be at least 1".into());
        }
        if let Some(r) = self.resolution
            && r < crate::finetune::masks::MIN_SIDE
        {
            return bad(format!(
                "`resolution` is {r}: masks need at least {} pixels a side",
                crate::finetune::masks::MIN_SIDE
            ));
        }
        self.masks.check()
    }
}
