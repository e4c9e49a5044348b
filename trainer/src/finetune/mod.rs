//! Feedback fine-tuning of the editing model (paper section 3): PeFL with
//! the frozen rewards R_α and R_β, R_γ trained online as a discriminator,
//! progressive phases of fewer steps, full or LoRA, exported as a diffusers
//! folder.

pub mod config;
pub mod data;
pub mod masks;
pub mod pefl;
pub mod plot;
pub mod train;
