//! A reward folder as one thing to load, score with and save: the model,
//! its tokenizer and its preprocessing. This is the library call that
//! `byteedit score`, the trainer and the fine-tuning stage use, batched.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::TensorData;

use crate::checkpoint::copy_tokenizer;
use crate::config::RewardConfig;
use crate::error::{Result, RewardError};
use crate::imagereward::ImageReward;
use crate::preprocess::Preprocess;
use crate::text::TextConfig;
use crate::tokenizer::{Encoded, TextTokenizer};

pub struct RewardFolder<B: Backend> {
    pub model: ImageReward<B>,
    pub tokenizer: TextTokenizer,
    pub preprocess: Preprocess,
    pub config: RewardConfig,
    pub text: TextConfig,
    /// Where the tokenizer files were read from.
    pub source: PathBuf,
    /// The `med_config.json` the text config was read from, copied on save
    /// to keep every field; `None` for a fresh model (written from `text`).
    pub text_file: Option<PathBuf>,
}

impl<B: Backend> RewardFolder<B> {
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let config = RewardConfig::read(dir)?;
        let text = TextConfig::read(dir)?;
        let tokenizer = TextTokenizer::from_folder(dir, config.text_max_length)?;
        let model = ImageReward::load(dir, device)?;
        Ok(Self {
            model,
            tokenizer,
            preprocess: Preprocess::new(&config),
            config,
            text,
            source: dir.to_owned(),
            text_file: Some(dir.join("med_config.json")),
        })
    }

    /// A fresh model of the given sizes, the tokenizer read from `tokenizer_dir`.
    pub fn fresh(
        config: RewardConfig,
        text: TextConfig,
        tokenizer_dir: &Path,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self> {
        let tokenizer = TextTokenizer::from_folder(tokenizer_dir, config.text_max_length)?;
        if tokenizer.vocab_size() > text.vocab_size {
            return Err(RewardError::InvalidFile {
                path: tokenizer_dir.join("vocab.txt"),
                message: format!(
                    "the tokenizer has {} tokens but the text config's `vocab_size` is {}",
                    tokenizer.vocab_size(),
                    text.vocab_size
                ),
            });
        }
        let model = ImageReward::fresh(&config, &text, seed, device)?;
        Ok(Self {
            model,
            tokenizer,
            preprocess: Preprocess::new(&config),
            config,
            text,
            source: tokenizer_dir.to_owned(),
            text_file: None,
        })
    }

    /// The same folder around another model (e.g. the inner-backend copy
    /// of a model in training).
    pub fn with_model<C: Backend>(&self, model: ImageReward<C>) -> RewardFolder<C> {
        RewardFolder {
            model,
            tokenizer: self.tokenizer.clone(),
            preprocess: self.preprocess.clone(),
            config: self.config.clone(),
            text: self.text.clone(),
            source: self.source.clone(),
            text_file: self.text_file.clone(),
        }
    }

    pub fn encode(&self, prompts: &[&str]) -> Result<Vec<Encoded>> {
        prompts.iter().map(|p| self.tokenizer.encode(p)).collect()
    }

    /// Normalised scores `[batch, 1]` of RGB `pixels` in [0, 1] (any size:
    /// the preprocessing resizes, differentiably), one prompt per image.
    pub fn score(&self, pixels: Tensor<B, 4>, prompts: &[Encoded]) -> Tensor<B, 2> {
        self.model.score(self.preprocess.forward(pixels), prompts)
    }

    /// Scores image files, `batch` at a time.
    pub fn score_files(
        &self,
        images: &[PathBuf],
        prompts: &[&str],
        device: &B::Device,
    ) -> Result<Vec<f32>> {
        let mut scores = Vec::with_capacity(images.len());
        for (path, prompt) in images.iter().zip(prompts) {
            let pixels = read_pixels::<B>(path, device)?;
            let encoded = self.encode(&[prompt])?;
            let pixels = self.preprocess.forward(pixels);
            scores.push(
                self.model
                    .score(pixels, &encoded)
                    .into_scalar()
                    .elem::<f32>(),
            );
        }
        Ok(scores)
    }

    /// Writes a complete reward folder: `reward_config.json` (with the
    /// model's current normalisation), `med_config.json`, the tokenizer
    /// files and `model.safetensors`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| RewardError::Io {
            path: dir.to_owned(),
            message: e.to_string(),
        })?;
        let (score_mean, score_std) = self.model.normalisation();
        RewardConfig {
            score_mean,
            score_std,
            ..self.config.clone()
        }
        .write(dir)?;
        let target = dir.join("med_config.json");
        match &self.text_file {
            Some(med) if *med == target => {}
            Some(med) => {
                std::fs::copy(med, &target).map_err(|e| RewardError::Io {
                    path: target.clone(),
                    message: e.to_string(),
                })?;
            }
            None => self.text.write(dir, self.config.vision.embed_dim)?,
        }
        copy_tokenizer(&self.source, dir)?;
        self.model.save_weights(dir)
    }
}

/// An image file as `[1, 3, h, w]` RGB in [0, 1].
pub fn read_pixels<B: Backend>(path: &Path, device: &B::Device) -> Result<Tensor<B, 4>> {
    let img = image::open(path).map_err(|e| RewardError::InvalidFile {
        path: path.to_owned(),
        message: format!("cannot read the image: {e}"),
    })?;
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let mut planar = vec![0f32; 3 * h * w];
    for (x, y, p) in rgb.enumerate_pixels() {
        for c in 0..3 {
            planar[c * h * w + y as usize * w + x as usize] = f32::from(p[c]) / 255.0;
        }
    }
    Ok(Tensor::from_data(
        TensorData::new(planar, [1, 3, h, w]),
        device,
    ))
}
