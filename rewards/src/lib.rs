//! ByteEdit's reward models, after the paper's three critics: R_α
//! (aesthetics) and R_β (image-text alignment) with ImageReward's
//! architecture (a BLIP ViT, a BERT text encoder cross-attending to it, an
//! MLP head), and R_γ (pixel-level coherence). The trainer learns them from
//! the service's votes; fine-tuning uses them as critics.
//!
//! Built so far: [`tokenizer`], the text side's BERT WordPiece tokenizer
//! with BLIP's added tokens, exact against ImageReward's own, and
//! [`vision`] and [`text`], BLIP's ViT and cross-attending BERT, and
//! [`imagereward`], the whole model with its MLP head, loaded by name from
//! ImageReward's safetensors and equal to its outputs.

pub mod checkpoint;
pub mod coherence;
pub mod config;
pub mod error;
pub mod folder;
pub mod imagereward;
pub mod preprocess;
pub mod text;
pub mod tokenizer;
pub mod vision;

pub use coherence::{CoherenceConfig, CoherenceFolder};
pub use config::{RewardConfig, VisionConfig};
pub use error::RewardError;
pub use folder::RewardFolder;
pub use imagereward::ImageReward;
pub use tokenizer::{Encoded, TextTokenizer};
