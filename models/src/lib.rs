//! ByteEdit's editing engine: a Stable-Diffusion inpainting model (CLIP text
//! encoder, 9-channel UNet, KL VAE, schedulers) on burn, loaded from a
//! diffusers folder and driven entirely by its config files.
//!
//! Module paths mirror the diffusers / transformers weight names, one file per
//! model part, so the Rust and Python sources can be read side by side.

pub mod attention;
pub mod batch;
pub mod clip;
pub mod config;
pub mod cpu_kernels;
pub mod embeddings;
pub mod error;
pub mod export;
pub mod image_io;
pub mod lora;
pub mod masks;
pub mod memory;
pub mod nn;
pub mod params;
pub mod pipeline;
pub mod random_model;
pub mod resnet;
pub mod schedulers;
pub mod tasks;
pub mod tokenizer;
pub mod training_attention;
pub mod unet_2d;
pub mod unet_2d_blocks;
pub mod vae;
pub mod weights;

pub use batch::{BatchItem, BatchKey};
pub use error::{ModelError, Result};
pub use pipeline::{
    EditOutput, EditOutputs, EditRequest, InitialLatents, InpaintModel, ModelConfigs,
    ServingDefaults, StepProgress, Timings,
};
pub use schedulers::{SchedulerKind, TimestepSpacing};

/// The CPU backend: flex (see docs/PERFORMANCE.md for why), or ndarray when
/// only that feature is on.
#[cfg(feature = "flex")]
pub type CpuBackend = burn::backend::Flex;
#[cfg(all(not(feature = "flex"), feature = "ndarray"))]
pub type CpuBackend = burn::backend::NdArray;

/// What training runs on: burn's autodiff over `B`, with balanced
/// checkpointing, which recomputes the outputs of cheap element-wise ops
/// (the pieces of GroupNorm, SiLU, GEGLU) in the backward pass instead of
/// keeping them: an SD-1.5 PeFL step at 256 px peaks 1.4 GiB lower for 5 %
/// more time (docs/PERFORMANCE.md).
pub type TrainingBackend<B> = burn::backend::Autodiff<
    B,
    burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing,
>;
