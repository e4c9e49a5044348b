//! diffusers `pipelines/stable_diffusion/pipeline_stable_diffusion_inpaint.py`
//! for 9-channel inpainting UNets: image + mask + prompt → edited image.
//!
//! Steps, as in `StableDiffusionInpaintPipeline.__call__` with `strength=1`:
//! 1. encode the prompt (and the negative prompt when guidance > 1), once;
//! 2. binarise the mask at 0.5, blank the masked pixels, encode the masked
//!    image with the VAE (posterior mean × scaling factor);
//! 3. start from Gaussian noise (seeded, or given) × the solver's initial sigma;
//! 4. each step: UNet on [latents, mask, masked-image latents], guidance,
//!    solver step;
//! 5. decode latents / scaling factor, map [-1, 1] → [0, 1].

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

use burn::prelude::*;
use burn::tensor::TensorData;
use image::{GrayImage, RgbImage};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use serde::Deserialize;

use byteedit_edit::{EditParams, ModelInfo};

use crate::clip::{ClipTextConfig, ClipTextModel};
use crate::config::read_config;
use crate::error::{ModelError, Result};
use crate::export::{diffusers_tensors, write_inpaint_folder};
use crate::image_io::{binarize_mask, image_to_tensor, resize_nearest};
use crate::lora::LoraSpec;
use crate::schedulers::{NoiseSchedule, SchedulerConfig, SchedulerKind, TimestepSpacing};
use crate::tokenizer::ClipTokenizer;
use crate::unet_2d::{UNet2DConditionModel, UNetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};
use crate::weights::{SaveDtype, TensorStore, Weights};

/// A loaded inpainting model: every component of a diffusers folder.
pub struct InpaintModel<B: Backend> {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel<B>,
    pub unet: UNet2DConditionModel<B>,
    pub vae: AutoencoderKL<B>,
    pub unet_config: UNetConfig,
    pub vae_config: VaeConfig,
    pub scheduler_config: SchedulerConfig,
    /// The LoRA adapters attached to the UNet's linear layers, if any.
    pub lora: Option<LoraSpec>,
    device: B::Device,
}

#[derive(Deserialize)]
struct ModelIndex {
    #[serde(rename = "_class_name", default)]
    class_name: Option<String>,
}

/// A diffusers inpainting folder's configs, read and checked against each
/// other without loading any weight (cheap: the CLI checks a request
/// against them before spending seconds on loading).
#[derive(Debug, Clone)]
pub struct ModelConfigs {
    pub unet: UNetConfig,
    pub vae: VaeConfig,
    pub text_encoder: ClipTextConfig,
    pub scheduler: SchedulerConfig,
}

impl ModelConfigs {
    pub fn read(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model_index.json");
        if !index_path.is_file() {
            return Err(ModelError::config(
                dir,
                "not a diffusers model folder: `model_index.json` is missing",
            ));
        }
        let index: ModelIndex = read_config(&index_path)?;
        tracing::debug!(class = ?index.class_name, dir = %dir.display(), "loading model");

        let unet_config = UNetConfig::from_file(&dir.join("unet/config.json"))?;
        let vae_config = VaeConfig::from_file(&dir.join("vae/config.json"))?;
        let clip_config = ClipTextConfig::from_file(&dir.join("text_encoder/config.json"))?;
        let scheduler_config =
            SchedulerConfig::from_file(&dir.join("scheduler/scheduler_config.json"))?;
        let latent = vae_config.latent_channels;
        if unet_config.in_channels != 2 * latent + 1 {
            return Err(ModelError::config(
                dir.join("unet/config.json"),
                format!(
                    "not an inpainting UNet: in_channels is {}, expected {} ({latent} latent + 1 mask + {latent} masked-image latent)",
                    unet_config.in_channels,
                    2 * latent + 1
                ),
            ));
        }
        if unet_config.out_channels != latent {
            return Err(ModelError::config(
                dir.join("unet/config.json"),
                format!(
                    "out_channels is {}, but the VAE has {latent} latent channels",
                    unet_config.out_channels
                ),
            ));
        }
        let context_dim = unet_config
            .cross_attention_dim
            .iter_n(1)
            .next()
            .unwrap_or(0);
        if context_dim != clip_config.hidden_size {
            return Err(ModelError::config(
                dir.join("unet/config.json"),
                format!(
                    "cross_attention_dim is {context_dim}, but the text encoder's hidden_size is {}",
                    clip_config.hidden_size
                ),
            ));
        }

        Ok(Self {
            unet: unet_config,
            vae: vae_config,
            text_encoder: clip_config,
            scheduler: scheduler_config,
        })
    }

    /// The size crops are resized to: the UNet's `sample_size` latents (64
    /// for SD-1.5, so 512 px) at the VAE factor; 64 latents when unset.
    pub fn native_size(&self) -> crate::tasks::NativeSize {
        let sf = self.vae.scale_factor() as u32;
        crate::tasks::NativeSize {
            native: self.unet.sample_size.unwrap_or(64) as u32 * sf,
            multiple: sf,
        }
    }

    /// What callers are told about this model served as `name` with
    /// `defaults` (steps are capped by the schedule's length).
    pub fn describe(&self, name: &str, defaults: &ServingDefaults) -> ModelInfo {
        describe(name, self.native_size(), &self.scheduler, defaults)
    }
}

fn describe(
    name: &str,
    native: crate::tasks::NativeSize,
    schedule: &SchedulerConfig,
    defaults: &ServingDefaults,
) -> ModelInfo {
    let max_steps = defaults
        .max_steps
        .min(schedule.num_train_timesteps as u32)
        .max(1);
    ModelInfo {
        name: name.to_owned(),
        vae_scale_factor: native.multiple,
        default_steps: defaults.default_steps.clamp(1, max_steps),
        max_steps,
        default_guidance_scale: defaults.default_guidance_scale,
        default_scheduler: defaults.default_scheduler.to_string(),
        schedulers: SchedulerKind::NAMES.iter().map(|s| s.to_string()).collect(),
        native_size: native.native,
        erase_negative_prompt: defaults.erase_negative_prompt.clone(),
    }
}

/// The defaults a model is served with (the worker's flags; the CLI's own).
#[derive(Debug, Clone, PartialEq)]
pub struct ServingDefaults {
    pub default_steps: u32,
    /// At most this many steps (and never more than the schedule has).
    pub max_steps: u32,
    pub default_guidance_scale: f64,
    pub default_scheduler: SchedulerKind,
    pub erase_negative_prompt: String,
}

impl Default for ServingDefaults {
    fn default() -> Self {
        Self {
            default_steps: 20,
            max_steps: 100,
            default_guidance_scale: 7.5,
            default_scheduler: SchedulerKind::DpmSolverPlusPlus2M,
            erase_negative_prompt: byteedit_edit::defaults::ERASE_NEGATIVE_PROMPT.into(),
        }
    }
}

impl<B: Backend> InpaintModel<B> {
    /// Loads a diffusers folder (`model_index.json`, `unet/`, `vae/`,
    /// `text_encoder/`, `tokenizer/`, `scheduler/`).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        Self::load_with_lora(dir, device, None)
    }

    /// [`load`](Self::load), attaching LoRA adapters to the UNet layers
    /// `lora` names (fresh ones, or those the UNet's files hold).
    pub fn load_with_lora(dir: &Path, device: &B::Device, lora: Option<LoraSpec>) -> Result<Self> {
        if let Some(spec) = &lora {
            spec.check()?;
        }
        let ModelConfigs {
            unet: unet_config,
            vae: vae_config,
            text_encoder: clip_config,
            scheduler: scheduler_config,
        } = ModelConfigs::read(dir)?;
        let tokenizer = ClipTokenizer::from_dir(&dir.join("tokenizer"))?;
        let text_encoder = load_component(&dir.join("text_encoder"), "model", device, |w| {
            ClipTextModel::load(w, &clip_config)
        })?;
        let unet = load_component(&dir.join("unet"), "diffusion_pytorch_model", device, |w| {
            UNet2DConditionModel::load(&w.clone().with_lora(lora.as_ref()), &unet_config)
        })?;
        let vae = load_component(&dir.join("vae"), "diffusion_pytorch_model", device, |w| {
            AutoencoderKL::load(w, &vae_config)
        })?;
        Ok(Self {
            tokenizer,
            text_encoder,
            unet,
            vae,
            unet_config,
            vae_config,
            scheduler_config,
            lora,
            device: device.clone(),
        })
    }

    /// Writes this model as a diffusers folder at `out`: the UNet from its
    /// current weights (adapters merged), the other components copied from
    /// `source`, the folder it was loaded from.
    pub fn export(&self, source: &Path, out: &Path, dtype: SaveDtype) -> Result<()> {
        let unet = diffusers_tensors(&self.unet, self.lora.as_ref().map(LoraSpec::scale))?;
        write_inpaint_folder(source, out, unet, dtype)
    }

    /// The same model around another UNet (e.g. the inner-backend copy of
    /// one in training, or its EMA weights).
    pub fn with_unet(&self, unet: UNet2DConditionModel<B>) -> Self {
        Self {
            tokenizer: self.tokenizer.clone(),
            text_encoder: self.text_encoder.clone(),
            unet,
            vae: self.vae.clone(),
            unet_config: self.unet_config.clone(),
            vae_config: self.vae_config.clone(),
            scheduler_config: self.scheduler_config.clone(),
            lora: self.lora.clone(),
            device: self.device.clone(),
        }
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Pixels per latent along each side (8 for SD-1.x/2.x).
    pub fn vae_scale_factor(&self) -> usize {
        self.vae_config.scale_factor()
    }

    /// What callers are told about this model (see [`ModelConfigs::describe`]).
    pub fn describe(&self, name: &str, defaults: &ServingDefaults) -> ModelInfo {
        describe(name, self.native_size(), &self.scheduler_config, defaults)
    }

    /// The size crops are resized to by default (see [`ModelConfigs::native_size`]).
    pub fn native_size(&self) -> crate::tasks::NativeSize {
        let sf = self.vae_scale_factor() as u32;
        crate::tasks::NativeSize {
            native: self.unet_config.sample_size.unwrap_or(64) as u32 * sf,
            multiple: sf,
        }
    }

    /// The text encoder's last hidden state for each prompt: `[n, 77, dim]`.
    pub fn encode_prompts(&self, prompts: &[&str]) -> Tensor<B, 3> {
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| self.tokenizer.encode(p)).collect();
        self.text_encoder
            .forward(&ids, &self.device)
            .last_hidden_state
    }

    /// `vae.encode(x).latent_dist.mean * scaling_factor` for an image in [-1, 1].
    pub fn encode_latents(&self, image: Tensor<B, 4>) -> Tensor<B, 4> {
        self.vae
            .encode(image)
            .mean
            .mul_scalar(self.vae_config.scaling_factor)
    }

    /// Latents → image in [0, 1], `[n, 3, H, W]`.
    pub fn decode_latents(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        self.decode_unclamped(latents).clamp(0.0, 1.0)
    }

    /// Latents → image mapped to [0, 1] but not clamped: training decodes
    /// with this, since the clamp zeroes the gradient of every pixel outside.
    pub fn decode_unclamped(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        self.vae
            .decode(latents.div_scalar(self.vae_config.scaling_factor))
            .div_scalar(2.0)
            .add_scalar(0.5)
    }

    /// The training noise schedule of this model's scheduler config.
    pub fn noise_schedule(&self) -> Result<NoiseSchedule> {
        NoiseSchedule::new(&self.scheduler_config).map_err(ModelError::InvalidInput)
    }

    /// One denoising call: the UNet on `[latents, condition]` (the mask and
    /// masked-image latents of [`mask_condition`](Self::mask_condition)) at a
    /// timestep per sample, with the text `context` of each sample. Inference
    /// and training both step through this.
    pub fn predict(
        &self,
        latents: Tensor<B, 4>,
        condition: &Tensor<B, 4>,
        context: &Tensor<B, 3>,
        timesteps: &[f32],
    ) -> Tensor<B, 4> {
        self.unet.predict(latents, condition, context, timesteps)
    }

    /// The inpainting condition for an image and its mask (same size): the mask
    /// binarised at 0.5 and resized to the latent grid (nearest), `[1, 1, h, w]`,
    /// and the latents of the image with the masked pixels blanked, `[1, C, h, w]`.
    pub fn mask_condition(
        &self,
        image: &RgbImage,
        mask: &GrayImage,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let (width, height) = (image.width() as usize, image.height() as usize);
        let sf = self.vae_scale_factor();
        let (lw, lh) = (width / sf, height / sf);
        let mask = binarize_mask(mask);
        let keep: Vec<f32> = mask.iter().map(|m| 1.0 - m).collect();
        let keep =
            Tensor::<B, 4>::from_data(TensorData::new(keep, [1, 1, height, width]), &self.device);
        let masked_latents =
            self.encode_latents(image_to_tensor::<B>(image, &self.device).mul(keep));
        let mask_latent = resize_nearest(&mask, (width, height), (lw, lh));
        let mask_latent =
            Tensor::<B, 4>::from_data(TensorData::new(mask_latent, [1, 1, lh, lw]), &self.device);
        (mask_latent, masked_latents)
    }

    /// Checks that an image of this size can go through the VAE and UNet.
    pub fn check_size(&self, width: u32, height: u32) -> Result<()> {
        let sf = self.vae_scale_factor() as u32;
        if width < sf || height < sf || !width.is_multiple_of(sf) || !height.is_multiple_of(sf) {
            let round = |v: u32| (v / sf).max(1) * sf;
            return Err(ModelError::InvalidInput(format!(
                "image is {width}x{height}; this model needs width and height that are multiples of {sf} \
                 (resize or crop to e.g. {}x{})",
                round(width),
                round(height)
            )));
        }
        Ok(())
    }

    /// Runs one edit. `progress` is called after every step; returning
    /// `ControlFlow::Break` stops the run with [`ModelError::Cancelled`].
    pub fn edit(
        &self,
        request: &EditRequest,
        progress: &mut dyn FnMut(StepProgress) -> ControlFlow<()>,
    ) -> Result<EditOutput> {
        let EditOutputs {
            width,
            height,
            mut images,
            timings,
        } = self.edit_outputs(request, 1, progress)?;
        Ok(EditOutput {
            width,
            height,
            pixels: images.remove(0),
            timings,
        })
    }

    /// Runs `count` edits of one request as one batch: output `i` starts from
    /// the noise of seed `request.seed + i` (or row `i` of the given
    /// latents), so it equals the single edit with that seed. The prompt and
    /// the masked image are encoded once for all of them and every UNet call
    /// takes the whole batch; each output is decoded on its own, which costs
    /// the same time and keeps one image's VAE activations in memory, not
    /// `count`. `progress` reports each step once for the whole batch.
    pub fn edit_outputs(
        &self,
        request: &EditRequest,
        count: usize,
        progress: &mut dyn FnMut(StepProgress) -> ControlFlow<()>,
    ) -> Result<EditOutputs> {
        let item = crate::batch::BatchItem { request, count };
        self.edit_batch(&[item], &mut |_, p| progress(p))?
            .pop()
            .ok_or_else(|| ModelError::Backend("a batch of one edit gave no result".into()))?
    }
}

impl<B: Backend> InpaintModel<B> {
    /// Waits until the device has done all queued work (a no-op on the CPU).
    pub(crate) fn sync(&self) -> Result<()> {
        B::sync(&self.device).map_err(|e| ModelError::Backend(format!("device: {e:?}")))
    }
}

/// A tensor's values as f32, whatever float type the backend computes in
/// (f16 and bf16 on a GPU are converted, not refused).
pub fn into_f32<B: Backend, const D: usize>(t: Tensor<B, D>, what: &str) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| ModelError::Backend(format!("{what}: cannot read as f32: {e:?}")))
}

impl<B: burn::tensor::backend::AutodiffBackend> InpaintModel<B> {
    /// The same model on the inner backend, sharing the weights: no-grad
    /// work (text encoding, stage-2 denoising, evaluation) runs on this.
    pub fn valid(&self) -> InpaintModel<B::InnerBackend> {
        use burn::module::AutodiffModule;
        InpaintModel {
            tokenizer: self.tokenizer.clone(),
            text_encoder: self.text_encoder.valid(),
            unet: self.unet.valid(),
            vae: self.vae.valid(),
            unet_config: self.unet_config.clone(),
            vae_config: self.vae_config.clone(),
            scheduler_config: self.scheduler_config.clone(),
            lora: self.lora.clone(),
            device: self.device.clone(),
        }
    }
}

/// Classifier-free guidance must be a finite number >= 0.
pub fn check_guidance(guidance: f64) -> Result<()> {
    if !guidance.is_finite() || guidance < 0.0 {
        return Err(ModelError::InvalidInput(format!(
            "`guidance` must be a finite number >= 0, got {guidance}"
        )));
    }
    Ok(())
}

/// Opens a component's weights, builds its module, and insists every tensor was used.
fn load_component<B: Backend, M>(
    dir: &Path,
    stem: &str,
    device: &B::Device,
    build: impl FnOnce(&Weights<B>) -> Result<M>,
) -> Result<M> {
    let store = TensorStore::open_component(dir, stem)?;
    let module = build(&Weights::new(&store, device))?;
    store.finish()?;
    Ok(module)
}

/// Standard normal noise from a seed: the same seed gives the same noise on
/// every backend and machine.
pub fn gaussian_noise(seed: u64, count: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect()
}

/// Caller-given initial noise, exactly diffusers' `latents=` argument.
#[derive(Debug, Clone)]
pub struct InitialLatents {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl InitialLatents {
    /// Reads the tensor named `latents` (f32, or f16/bf16 cast up) from a safetensors file.
    pub fn from_safetensors(path: &Path) -> Result<Self> {
        let store = TensorStore::open_files(
            path.parent().unwrap_or(Path::new(".")),
            &[path.to_path_buf()],
        )?;
        let shape = store
            .shape("latents")
            .ok_or_else(|| {
                ModelError::InvalidInput(format!(
                    "`{}` has no tensor named `latents`",
                    path.display()
                ))
            })?
            .to_vec();
        let values = store.read_f32("latents", &shape, &[])?;
        Ok(Self { shape, values })
    }

    pub(crate) fn check_shape(&self, expected: [usize; 4], scale_factor: usize) -> Result<()> {
        if self.shape != expected {
            return Err(ModelError::InvalidInput(format!(
                "initial latents have shape {:?}, but this image and model need {expected:?} \
                 ([outputs, latent channels, height / {scale_factor}, width / {scale_factor}])",
                self.shape
            )));
        }
        Ok(())
    }
}

/// One edit, validated by the caller's layer (CLI, worker) into these types.
#[derive(Debug, Clone)]
pub struct EditRequest {
    pub image: RgbImage,
    /// White (≥ 0.5) = repaint, black = keep.
    pub mask: GrayImage,
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub steps: usize,
    /// Classifier-free guidance scale; ≤ 1 runs the UNet once per step.
    pub guidance_scale: f64,
    pub scheduler: SchedulerKind,
    /// `None`: the solver's diffusers default.
    pub timestep_spacing: Option<TimestepSpacing>,
    pub seed: u64,
    /// Initial noise instead of seeded noise.
    pub latents: Option<InitialLatents>,
}

impl EditRequest {
    /// The engine's input for a plan's working image and a validated
    /// request's parameters (seeded noise, the solver's default spacing).
    pub fn for_params(plan: &crate::tasks::EditPlan, p: &EditParams) -> Result<Self> {
        Ok(Self {
            image: plan.image.clone(),
            mask: plan.model_mask.clone(),
            prompt: p.prompt.clone(),
            negative_prompt: p.negative_prompt.clone(),
            steps: p.steps as usize,
            guidance_scale: p.guidance_scale,
            scheduler: p.scheduler.parse().map_err(ModelError::InvalidInput)?,
            timestep_spacing: None,
            seed: p.seed,
            latents: None,
        })
    }
}

/// Reported after each denoising step.
#[derive(Debug, Clone, Copy)]
pub struct StepProgress {
    /// 1-based.
    pub step: usize,
    pub total: usize,
    pub timestep: f32,
    /// Since the first step started.
    pub elapsed: Duration,
}

/// Where an edit's time went.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub text_encode: Duration,
    pub vae_encode: Duration,
    pub denoise: Duration,
    pub vae_decode: Duration,
    pub steps: usize,
    pub total: Duration,
}

impl Timings {
    pub fn per_step(&self) -> Duration {
        self.denoise / self.steps.max(1) as u32
    }
}

/// The edited images of [`InpaintModel::edit_outputs`], each as HWC floats
/// in [0, 1], and the time of the whole batch.
#[derive(Debug, Clone)]
pub struct EditOutputs {
    pub width: u32,
    pub height: u32,
    pub images: Vec<Vec<f32>>,
    pub timings: Timings,
}

impl EditOutputs {
    pub fn to_rgb8(&self) -> Result<Vec<RgbImage>> {
        self.images
            .iter()
            .map(|pixels| crate::image_io::to_rgb8(pixels, self.width, self.height))
            .collect()
    }
}

/// The edited image as HWC floats in [0, 1] (diffusers' `output_type="np"`).
#[derive(Debug, Clone)]
pub struct EditOutput {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<f32>,
    pub timings: Timings,
}

impl EditOutput {
    pub fn to_rgb8(&self) -> Result<RgbImage> {
        crate::image_io::to_rgb8(&self.pixels, self.width, self.height)
    }
}
