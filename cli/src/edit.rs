//! `byteedit edit`: one edit from files on disk, with a progress bar.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::Backend;
use byteedit_edit::{CanvasLimits, Context, Decoded, EditError, EditForm, Naming};
use byteedit_models::image_io::{
    GrayImage, MAX_PIXELS, MAX_SIDE, Rgb, RgbImage, alpha_mask, read_image, to_luma, to_rgb,
    write_png,
};
use byteedit_models::masks::is_masked;
use byteedit_models::schedulers::Scheduler;
use byteedit_models::tasks::{EditPlan, Region, TaskOptions};
use byteedit_models::{
    EditRequest, InitialLatents, InpaintModel, ModelConfigs, ModelError, SchedulerKind,
    ServingDefaults, TimestepSpacing,
};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::device::{DeviceChoice, OnDevice};

/// `byteedit edit`: the edit request's own fields (the same as the API's
/// form, spelled as flags: `--extend-left`, `--working-size`, ...) and what
/// only a local run has (paths, region, latents, device). Defaults: `--task
/// inpaint` (an empty prompt fills prompt-free), `--seed 0`, and 20 steps,
/// guidance 7.5 and `dpmpp-2m`, as a worker serves by default.
#[derive(Args, Debug)]
pub struct EditArgs {
    /// diffusers model folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    #[arg(long, env = "BYTEEDIT_MODEL")]
    model: PathBuf,
    /// Input image (PNG, JPEG or WebP), any size.
    #[arg(long)]
    image: PathBuf,
    /// Mask of the same size: white (>= 50% grey) is repainted, black is
    /// kept. Default: the image's transparent pixels. Optional for outpaint.
    #[arg(long)]
    mask: Option<PathBuf>,
    #[command(flatten)]
    request: EditForm,
    /// masked: edit the crop around the mask; full: the whole image.
    #[arg(long, value_enum, default_value = "masked")]
    region: RegionArg,
    /// Keep the model's whole output instead of pasting the edit into the input.
    #[arg(long)]
    no_paste_back: bool,
    /// leading, trailing or linspace (default: the solver's diffusers default).
    #[arg(long)]
    timestep_spacing: Option<TimestepSpacing>,
    /// safetensors file with one f32 tensor `latents` of shape [N,4,H/8,W/8]
    /// (N = --num-outputs) used as the initial noise.
    #[arg(long)]
    latents: Option<PathBuf>,
    /// Where to write the edited image (PNG, the input's size, or the canvas's
    /// when outpainting). With --num-outputs N > 1: NAME-1.png ... NAME-N.png
    /// beside it (seeds --seed, --seed + 1, ...; one batch).
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
    struct Edit<'a>(&'a EditArgs);
    impl OnDevice for Edit<'_> {
        type Output = Result<(), ModelError>;
        fn run<B: Backend>(self, device: B::Device) -> Self::Output {
            run_on::<B>(self.0, &device)
        }
    }
    args.device
        .run(Edit(&args))
        .map_err(ModelError::InvalidInput)?
}

/// The CLI's refusals are the API's, spelled with flags.
fn refused(e: EditError) -> ModelError {
    ModelError::InvalidInput(e.to_string())
}

fn run_on<B: Backend>(args: &EditArgs, device: &B::Device) -> Result<(), ModelError> {
    // Check the cheap inputs before spending seconds on loading the model.
    let decoded = read_image(&args.image)?;
    let mask_file = args.mask.as_deref().map(read_image).transpose()?;
    let configs = ModelConfigs::read(&args.model)?;
    let info = configs.describe(
        "local",
        &ServingDefaults {
            // The schedule's length is the only cap on a local run.
            max_steps: u32::MAX,
            ..ServingDefaults::default()
        },
    );
    let mut request = args.request.clone();
    request.task.get_or_insert_with(|| "inpaint".into());
    request.seed.get_or_insert_with(|| "0".into());
    // The CLI has always taken diffusers' spellings too (`dpmpp_2m`, `DPM++-2M`).
    if let Some(kind) = request
        .scheduler
        .as_deref()
        .and_then(|s| s.parse::<SchedulerKind>().ok())
    {
        request.scheduler = Some(kind.to_string());
    }
    let context = Context {
        model: &info,
        limits: CanvasLimits {
            max_side: MAX_SIDE,
            max_megapixels: MAX_PIXELS as f64 / 1e6,
        },
        naming: Naming::Flags,
        prompt_free_inpaint: true,
    };
    let valid = byteedit_edit::validate(
        &request,
        &Decoded {
            image: &decoded,
            mask: mask_file.as_ref(),
        },
        &context,
    )
    .map_err(refused)?;
    let params = &valid.params;
    let image = to_rgb(&decoded);
    let mask = match &mask_file {
        Some(m) => Some(to_luma(m)),
        None => alpha_mask(&decoded),
    };
    let options = TaskOptions {
        region: match args.region {
            RegionArg::Masked => Region::Masked,
            RegionArg::Full => Region::Full,
        },
        paste_back: !args.no_paste_back,
        ..TaskOptions::for_params(params)
    };
    check_out_path(&args.out)?;
    if let Some(compare) = &args.compare {
        check_out_path(compare)?;
    }
    let latents = args
        .latents
        .as_deref()
        .map(InitialLatents::from_safetensors)
        .transpose()?;
    // The spacing with the solver, before spending seconds on loading.
    let scheduler = params.scheduler.parse().map_err(ModelError::InvalidInput)?;
    Scheduler::<B>::new(
        scheduler,
        &configs.scheduler,
        params.steps as usize,
        args.timestep_spacing,
    )?;

    let load_started = Instant::now();
    let model = InpaintModel::<B>::load(&args.model, device)?;
    let load_time = load_started.elapsed();
    let plan = EditPlan::new(&image, mask.as_ref(), &options, model.native_size())?;
    let request = EditRequest {
        timestep_spacing: args.timestep_spacing,
        latents,
        ..EditRequest::for_params(&plan, params)?
    };
    // indicatif draws only when stderr is a terminal.
    let bar = ProgressBar::new(params.steps as u64).with_style(
        ProgressStyle::with_template(
            "{spinner} step {pos}/{len} [{bar:30}] {elapsed} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let count = params.num_outputs.max(1) as usize;
    let output = model.edit_outputs(&request, count, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.step as u64);
        bar.set_message(format!("t={:.0}", p.timestep));
        ControlFlow::Continue(())
    })?;
    bar.finish_and_clear();
    let paths = output_paths(&args.out, count);
    let edited: Vec<RgbImage> = output.to_rgb8()?.iter().map(|i| plan.finish(i)).collect();
    for (image, path) in edited.iter().zip(&paths) {
        write_png(image, path)?;
    }
    if let Some(compare) = &args.compare {
        write_png(&side_by_side(&plan.canvas, &plan.mask, &edited[0]), compare)?;
    }

    let t = output.timings;
    let c = plan.crop;
    let (canvas_w, canvas_h) = edited[0].dimensions();
    let written = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "edited {}x{} (crop {}x{}+{}+{} at {}x{}) in {:.2}s: {} steps x {:.3}s/step ({}, guidance {}{}), text {:.3}s, vae encode {:.3}s, decode {:.3}s, model load {:.2}s -> {}",
        canvas_w,
        canvas_h,
        c.width,
        c.height,
        c.x,
        c.y,
        output.width,
        output.height,
        t.total.as_secs_f64(),
        t.steps,
        t.per_step().as_secs_f64(),
        params.scheduler,
        params.guidance_scale,
        if count > 1 {
            format!(", {count} outputs in one batch")
        } else {
            String::new()
        },
        t.text_encode.as_secs_f64(),
        t.vae_encode.as_secs_f64(),
        t.vae_decode.as_secs_f64(),
        load_time.as_secs_f64(),
        written
    );
    Ok(())
}

/// `out` itself for one output; `NAME-1.EXT` ... `NAME-N.EXT` beside it for more.
fn output_paths(out: &Path, count: usize) -> Vec<PathBuf> {
    if count == 1 {
        return vec![out.to_path_buf()];
    }
    let stem = out.file_stem().unwrap_or_default().to_string_lossy();
    let ext = out
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (1..=count)
        .map(|i| out.with_file_name(format!("{stem}-{i}{ext}")))
        .collect()
}

/// Input, the mask as a red tint over the input, and the result, left to right.
fn side_by_side(input: &RgbImage, mask: &GrayImage, edited: &RgbImage) -> RgbImage {
    let (w, h) = input.dimensions();
    RgbImage::from_fn(w * 3, h, |x, y| match x / w {
        0 => *input.get_pixel(x, y),
        1 => {
            let [r, g, b] = input.get_pixel(x - w, y).0;
            if is_masked(mask.get_pixel(x - w, y).0[0]) {
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
