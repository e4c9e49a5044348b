//! ByteEdit's trainer: reward models learned from the service's votes
//! (this crate's [`reward`]), and the pieces the feedback fine-tuning stage
//! shares with it ([`optim`]: AdamW, global-norm clipping, EMA, schedules).

pub mod coherence;
pub mod config;
pub mod data;
pub mod error;
pub mod finetune;
pub mod optim;
pub mod plot;
pub mod reward;
pub mod run;
pub mod vgg;

pub use config::{RewardKind, TrainConfig};
pub use error::{Result, TrainError};
pub use reward::{Progress, TrainRequest, TrainSummary, train_reward};
