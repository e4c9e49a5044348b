//! `byteedit edit`: one edit from files on disk, with a progress bar.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::Backend;
use byteedit_models::image_io::{GrayImage, Rgb, RgbImage, read_image, to_luma, to_rgb, write_png};
use byteedit_models::pipeline::check_guidance;
use byteedit_models::schedulers::{Scheduler, SchedulerConfig};
use byteedit_models::{
    EditRequest, InitialLatents, InpaintModel, ModelError, SchedulerKind, TimestepSpacing,
};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::device::DeviceChoice;

#[derive(Args, Debug)]
pub struct EditArgs {
    /// diffusers model folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    #[arg(long, env = "BYTEEDIT_MODEL")]
    model: PathBuf,
    /// Input image (PNG, JPEG or WebP); width and height must be multiples of 8.
    #[arg(long)]
    image: PathBuf,
    /// Mask of the same size: white (>= 50% grey) is repainted, black is kept.
    #[arg(long)]
    mask: PathBuf,
    /// What to paint into the masked region; empty for prompt-free filling.
    #[arg(long, default_value = "")]
    prompt: String,
    /// What to steer away from (used when --guidance > 1).
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Denoising steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Classifier-free guidance scale; 1 or less disables guidance (one UNet pass per step).
    #[arg(long, default_value_t = 7.5, allow_negative_numbers = true)]
    guidance: f64,
    /// Solver: ddim, euler or dpmpp-2m.
    #[arg(long, default_value = "dpmpp-2m")]
    scheduler: SchedulerKind,
    /// leading, trailing or linspace (default: the solver's diffusers default).
    #[arg(long)]
    timestep_spacing: Option<TimestepSpacing>,
    /// Seed for the initial noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// safetensors file with one f32 tensor `latents` of shape [1,4,H/8,W/8] used as the initial noise.
    #[arg(long)]
    latents: Option<PathBuf>,
    /// Where to write the edited image (PNG, same size as the input).
    #[arg(long)]
    out: PathBuf,
    /// Also write a side-by-side picture: input | mask over the input | result.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// cpu, or cuda / cuda:N in builds with the `cuda` feature.
    #[arg(long, default_value = "cpu", env = "BYTEEDIT_DEVICE")]
    device: DeviceChoice,
}

pub fn run(args: EditArgs) -> Result<(), ModelError> {
    match args.device {
        DeviceChoice::Cpu => run_on::<byteedit_models::CpuBackend>(&args, &Default::default()),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(index) => {
            crate::device::check_cuda_driver().map_err(ModelError::InvalidInput)?;
            let device = burn::backend::cuda::CudaDevice::new(index);
            run_on::<burn::backend::Cuda>(&args, &device)
        }
        #[cfg(not(feature = "cuda"))]
        DeviceChoice::Cuda(_) => Err(ModelError::InvalidInput(
            "this build has no CUDA support: rebuild with `--features cuda`".into(),
        )),
    }
}

fn run_on<B: Backend>(args: &EditArgs, device: &B::Device) -> Result<(), ModelError> {
    // Check the cheap inputs before spending seconds on loading the model.
    let image = to_rgb(&read_image(&args.image)?);
    let mask = to_luma(&read_image(&args.mask)?);
    if image.dimensions() != mask.dimensions() {
        return Err(ModelError::InvalidInput(format!(
            "mask `{}` is {}x{} but image `{}` is {}x{}; they must be the same size",
            args.mask.display(),
            mask.width(),
            mask.height(),
            args.image.display(),
            image.width(),
            image.height()
        )));
    }
    check_out_path(&args.out)?;
    if let Some(compare) = &args.compare {
        check_out_path(compare)?;
    }
    let latents = args
        .latents
        .as_deref()
        .map(InitialLatents::from_safetensors)
        .transpose()?;

    // Check the options against the model's schedule before spending seconds
    // on loading it (a folder without one is reported by the load below).
    check_guidance(args.guidance)?;
    if let Ok(config) =
        SchedulerConfig::from_file(&args.model.join("scheduler/scheduler_config.json"))
    {
        Scheduler::<B>::new(args.scheduler, &config, args.steps, args.timestep_spacing)?;
    }

    let load_started = Instant::now();
    let model = InpaintModel::<B>::load(&args.model, device)?;
    model.check_size(image.width(), image.height())?;
    let load_time = load_started.elapsed();

    let request = EditRequest {
        image,
        mask,
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        steps: args.steps,
        guidance_scale: args.guidance,
        scheduler: args.scheduler,
        timestep_spacing: args.timestep_spacing,
        seed: args.seed,
        latents,
    };
    // indicatif draws only when stderr is a terminal.
    let bar = ProgressBar::new(args.steps as u64).with_style(
        ProgressStyle::with_template(
            "{spinner} step {pos}/{len} [{bar:30}] {elapsed} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let output = model.edit(&request, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.step as u64);
        bar.set_message(format!("t={:.0}", p.timestep));
        ControlFlow::Continue(())
    })?;
    bar.finish_and_clear();
    let edited = output.to_rgb8();
    write_png(&edited, &args.out)?;
    if let Some(compare) = &args.compare {
        write_png(
            &side_by_side(&request.image, &request.mask, &edited),
            compare,
        )?;
    }

    let t = output.timings;
    println!(
        "edited {}x{} in {:.2}s: {} steps x {:.3}s/step ({}, guidance {}), text {:.3}s, vae encode {:.3}s, decode {:.3}s, model load {:.2}s -> {}",
        output.width,
        output.height,
        t.total.as_secs_f64(),
        t.steps,
        t.per_step().as_secs_f64(),
        args.scheduler,
        args.guidance,
        t.text_encode.as_secs_f64(),
        t.vae_encode.as_secs_f64(),
        t.vae_decode.as_secs_f64(),
        load_time.as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// Input, the mask as a red tint over the input, and the result, left to right.
fn side_by_side(input: &RgbImage, mask: &GrayImage, edited: &RgbImage) -> RgbImage {
    let (w, h) = input.dimensions();
    RgbImage::from_fn(w * 3, h, |x, y| match x / w {
        0 => *input.get_pixel(x, y),
        1 => {
            let [r, g, b] = input.get_pixel(x - w, y).0;
            if mask.get_pixel(x - w, y).0[0] >= 128 {
                Rgb([r / 2 + 127, g / 2, b / 2])
            } else {
                Rgb([r, g, b])
            }
        }
        _ => *edited.get_pixel(x - 2 * w, y),
    })
}

/// Fails early (before the model runs) if the output cannot be written there.
fn check_out_path(out: &Path) -> Result<(), ModelError> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(ModelError::InvalidInput(format!(
            "cannot write `{}`: folder `{}` does not exist",
            out.display(),
            parent.display()
        )));
    }
    Ok(())
}
