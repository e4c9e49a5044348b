//! `byteedit edit`: one edit from files on disk, with a progress bar.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::Backend;
use byteedit_api::validation::{
    MAX_CROP_PADDING, MAX_EXTEND, MAX_MASK_FEATHER, MAX_MASK_GROW, MAX_OVERLAP,
};
use byteedit_jobs::Task;
use byteedit_jobs::geometry::{self, Anchor, OutpaintRequest, Sides};
use byteedit_jobs::job::defaults;
use byteedit_models::image_io::MAX_SIDE;
use byteedit_models::image_io::{
    GrayImage, Rgb, RgbImage, alpha_mask, read_image, to_luma, to_rgb, write_png,
};
use byteedit_models::pipeline::check_guidance;
use byteedit_models::schedulers::{Scheduler, SchedulerConfig};
use byteedit_models::tasks::{EditPlan, Extension, Region, TaskOptions};
use byteedit_models::{
    EditRequest, InitialLatents, InpaintModel, ModelError, SchedulerKind, TimestepSpacing,
};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::device::DeviceChoice;

#[derive(Args, Debug)]
pub struct EditArgs {
    /// diffusers model folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    #[arg(long, env = "BYTEEDIT_MODEL")]
    model: PathBuf,
    /// inpaint (fill the mask with the prompt), erase (remove what the mask
    /// covers) or outpaint (extend the image).
    #[arg(long, default_value = "inpaint")]
    task: Task,
    /// Input image (PNG, JPEG or WebP), any size.
    #[arg(long)]
    image: PathBuf,
    /// Mask of the same size: white (>= 50% grey) is repainted, black is
    /// kept. Default: the image's transparent pixels. Optional for outpaint.
    #[arg(long)]
    mask: Option<PathBuf>,
    /// Resize a mask of another size to the image instead of refusing it.
    #[arg(long)]
    mask_resize: bool,
    /// Grow (> 0) or shrink (< 0) the mask by this many pixels.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-(MAX_MASK_GROW as i64)..=MAX_MASK_GROW as i64))]
    mask_grow: i32,
    /// Blend band: the edit fades out within twice this many pixels outside the mask.
    #[arg(long, default_value_t = defaults::MASK_FEATHER,
          value_parser = clap::value_parser!(u32).range(0..=MAX_MASK_FEATHER as i64))]
    mask_feather: u32,
    /// Outpaint: pixels to add on the left.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=MAX_EXTEND as i64))]
    extend_left: u32,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=MAX_EXTEND as i64))]
    extend_right: u32,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=MAX_EXTEND as i64))]
    extend_top: u32,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=MAX_EXTEND as i64))]
    extend_bottom: u32,
    /// Outpaint, instead of --extend-*: the canvas width.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_SIDE as i64))]
    target_width: Option<u32>,
    /// Outpaint: the canvas height.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_SIDE as i64))]
    target_height: Option<u32>,
    /// Outpaint, instead of a target size: W:H, e.g. 16:9.
    #[arg(long)]
    aspect_ratio: Option<String>,
    /// Outpaint with a target size or ratio: where the image sits (center, top-left, top, ...; default center).
    #[arg(long)]
    anchor: Option<Anchor>,
    /// Outpaint: how far the mask reaches into the image along extended sides.
    #[arg(long, default_value_t = defaults::OVERLAP,
          value_parser = clap::value_parser!(u32).range(0..=MAX_OVERLAP as i64))]
    overlap: u32,
    /// Context kept around the mask when cropping.
    #[arg(long, default_value_t = defaults::CROP_PADDING,
          value_parser = clap::value_parser!(u32).range(0..=MAX_CROP_PADDING as i64))]
    crop_padding: u32,
    /// masked: edit the crop around the mask at the model's size; full: the whole image.
    #[arg(long, value_enum, default_value = "masked")]
    region: RegionArg,
    /// Keep the model's whole output instead of pasting the edit into the input.
    #[arg(long)]
    no_paste_back: bool,
    /// Match the generated region's colours to its surroundings.
    #[arg(long)]
    color_match: bool,
    /// What to paint into the masked region; empty for prompt-free filling.
    #[arg(long, default_value = "")]
    prompt: String,
    /// What to steer away from (used when --guidance > 1); erase has a default.
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
    /// Where to write the edited image (PNG, the input's size, or the canvas's when outpainting).
    #[arg(long)]
    out: PathBuf,
    /// Also write a side-by-side picture: input | mask over the input | result (canvas size).
    #[arg(long)]
    compare: Option<PathBuf>,
    /// cpu, or cuda / cuda:N in builds with the `cuda` feature.
    #[arg(long, default_value = "cpu", env = "BYTEEDIT_DEVICE")]
    device: DeviceChoice,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RegionArg {
    Masked,
    Full,
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
    let decoded = read_image(&args.image)?;
    let mask = match &args.mask {
        Some(path) => Some(to_luma(&read_image(path)?)),
        None => alpha_mask(&decoded),
    };
    let image = to_rgb(&decoded);
    if let (Some(path), Some(m)) = (&args.mask, &mask)
        && m.dimensions() != image.dimensions()
        && !args.mask_resize
    {
        return Err(ModelError::InvalidInput(format!(
            "mask `{}` is {}x{} but image `{}` is {}x{}; they must be the same size (or pass --mask-resize)",
            path.display(),
            m.width(),
            m.height(),
            args.image.display(),
            image.width(),
            image.height()
        )));
    }
    let options = task_options(args, image.dimensions())?;
    if mask.is_none() && args.task != Task::Outpaint {
        return Err(ModelError::InvalidInput(format!(
            "`--task {}` needs `--mask` (white marks the region), or an image with transparent pixels",
            args.task
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
    let load_time = load_started.elapsed();
    let plan = EditPlan::new(&image, mask.as_ref(), &options, model.working_size())?;

    let negative_prompt = args
        .negative_prompt
        .clone()
        .or_else(|| (args.task == Task::Erase).then(|| defaults::ERASE_NEGATIVE_PROMPT.to_owned()));
    let request = EditRequest {
        image: plan.image.clone(),
        mask: plan.model_mask.clone(),
        prompt: args.prompt.clone(),
        negative_prompt,
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
    let edited = plan.finish(&output.to_rgb8());
    write_png(&edited, &args.out)?;
    if let Some(compare) = &args.compare {
        write_png(&side_by_side(&plan.canvas, &plan.mask, &edited), compare)?;
    }

    let t = output.timings;
    let c = plan.crop;
    println!(
        "edited {}x{} (crop {}x{}+{}+{} at {}x{}) in {:.2}s: {} steps x {:.3}s/step ({}, guidance {}), text {:.3}s, vae encode {:.3}s, decode {:.3}s, model load {:.2}s -> {}",
        edited.width(),
        edited.height(),
        c.width,
        c.height,
        c.x,
        c.y,
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

/// The task options from the flags; the outpaint extension is resolved from
/// `--extend-*` or a target size / aspect ratio.
fn task_options(args: &EditArgs, (w, h): (u32, u32)) -> Result<TaskOptions, ModelError> {
    let invalid = ModelError::InvalidInput;
    let aspect_ratio = args
        .aspect_ratio
        .as_deref()
        .map(geometry::parse_aspect)
        .transpose()
        .map_err(invalid)?;
    let sides = OutpaintRequest {
        sides: Sides {
            left: args.extend_left,
            right: args.extend_right,
            top: args.extend_top,
            bottom: args.extend_bottom,
        },
        target_width: args.target_width,
        target_height: args.target_height,
        aspect_ratio,
        anchor: args.anchor,
    }
    .resolve((w, h))
    .map_err(invalid)?;
    let extension = Extension {
        left: sides.left,
        right: sides.right,
        top: sides.top,
        bottom: sides.bottom,
    };
    match (args.task, extension.is_empty()) {
        (Task::Outpaint, true) => {
            return Err(invalid(
                "`--task outpaint` needs --extend-left/right/top/bottom, --target-width/--target-height or --aspect-ratio"
                    .into(),
            ));
        }
        (Task::Inpaint | Task::Erase, false) => {
            return Err(invalid(format!(
                "extending the image is `--task outpaint`, not `{}`",
                args.task
            )));
        }
        _ => {}
    }
    Ok(TaskOptions {
        extension,
        overlap: args.overlap,
        mask_grow: args.mask_grow,
        mask_feather: args.mask_feather,
        crop_padding: args.crop_padding,
        region: match args.region {
            RegionArg::Masked => Region::Masked,
            RegionArg::Full => Region::Full,
        },
        color_match: args.color_match,
        paste_back: !args.no_paste_back,
        resize_mask: args.mask_resize,
    })
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
