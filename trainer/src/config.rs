//! `train-reward`'s configuration: one JSON file (`--config`) whose every
//! field has ImageReward's published recipe as its default, and the
//! command-line flags that override it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::optim::AdamWConfig;

/// Which of the paper's rewards is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RewardKind {
    /// R_α: which of two images of one prompt looks better.
    Aesthetic,
    /// R_β: which of two captions fits one image.
    Alignment,
    /// R_γ: which pixels of an image were generated.
    Coherence,
}

impl RewardKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Aesthetic => "aesthetic",
            Self::Alignment => "alignment",
            Self::Coherence => "coherence",
        }
    }
}

/// A fresh model's sizes (used when no `--init` folder is given).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreshModel {
    /// A `reward_config.json` body.
    pub reward: byteedit_rewards::RewardConfig,
    /// A `med_config.json` body.
    pub text: byteedit_rewards::text::TextConfig,
    /// The folder holding `vocab.txt` (relative to the config file).
    pub tokenizer: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Pairs per optimiser step (ImageReward: 64), reached by accumulating
    /// `micro_batch`-sized passes.
    pub batch: usize,
    pub micro_batch: usize,
    /// Epochs over the training split, when `steps` is not given.
    pub epochs: usize,
    pub steps: Option<u64>,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub adamw: AdamWConfig,
    /// Clip the global gradient norm to this (off by default, as in
    /// ImageReward).
    pub max_grad_norm: Option<f64>,
    /// Keep an EMA of the weights with this decay; evaluation and the saved
    /// model then use the average.
    pub ema_decay: Option<f64>,
    /// Freeze this share of both encoders' layers, from the input side
    /// (ImageReward's `fix_rate`), with the embeddings.
    pub fix_rate: f64,
    /// Share of the pairs held out for validation (at least one pair).
    pub validation_fraction: f64,
    /// Evaluate (and keep the best model) every this many steps; default
    /// once per epoch.
    pub eval_every: Option<u64>,
    /// Train on "Same" votes too, as a target of one half (ImageReward
    /// drops them).
    pub include_ties: bool,
    pub seed: u64,
    /// Sizes of an ImageReward-style model trained from scratch.
    pub fresh: Option<FreshModel>,
    /// Sizes of a coherence model trained from scratch.
    pub fresh_coherence: Option<byteedit_rewards::CoherenceConfig>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            batch: 64,
            micro_batch: 8,
            epochs: 10,
            steps: None,
            lr: 1e-5,
            min_lr: 0.0,
            warmup_steps: 0,
            adamw: AdamWConfig::default(),
            max_grad_norm: None,
            ema_decay: None,
            fix_rate: 0.7,
            validation_fraction: 0.1,
            eval_every: None,
            include_ties: false,
            seed: 0,
            fresh: None,
            fresh_coherence: None,
        }
    }
}

impl TrainConfig {
    /// Reads a config file; a relative `fresh.tokenizer` is resolved
    /// against the file's folder.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Input {
            path: path.to_owned(),
            message: format!("cannot read the config: {e}"),
        })?;
        let mut config: Self = serde_json::from_str(&text).map_err(|e| TrainError::Input {
            path: path.to_owned(),
            message: format!("not a training config: {e}"),
        })?;
        if let Some(fresh) = &mut config.fresh
            && fresh.tokenizer.is_relative()
        {
            fresh.tokenizer = path
                .parent()
                .unwrap_or(Path::new("."))
                .join(&fresh.tokenizer);
        }
        Ok(config)
    }

    /// Settings that cannot train are refused with the field to fix.
    pub fn check(&self) -> Result<()> {
        let bad = |message: String| Err(TrainError::Config(message));
        if self.batch == 0 || self.micro_batch == 0 {
            return bad("`batch` and `micro_batch` must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("`lr` must be a positive number, not {}", self.lr));
        }
        if !(0.0..=1.0).contains(&self.fix_rate) {
            return bad(format!(
                "`fix_rate` must lie in [0, 1], not {}",
                self.fix_rate
            ));
        }
        if !(self.validation_fraction > 0.0 && self.validation_fraction < 1.0) {
            return bad(format!(
                "`validation_fraction` must lie strictly between 0 and 1, not {}",
                self.validation_fraction
            ));
        }
        if let Some(d) = self.ema_decay
            && !(0.0..1.0).contains(&d)
        {
            return bad(format!("`ema_decay` must lie in [0, 1), not {d}"));
        }
        if self.max_grad_norm.is_some_and(|n| n <= 0.0) {
            return bad("`max_grad_norm` must be positive".into());
        }
        Ok(())
    }
}
