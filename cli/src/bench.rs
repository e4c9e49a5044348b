//! `byteedit bench`: the tools `bench/device.sh` needs on a machine that has
//! the binary and the repository but no Rust toolchain, no Python packages and
//! no internet: a full-size model with random weights, the fixtures'
//! reference cases as `byteedit edit` arguments, and a PNG comparison.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use byteedit_models::image_io::{max_level_diff, read_image, to_rgb};
use byteedit_models::random_model::write_random_model;
use byteedit_models::weights::{SaveDtype, TensorStore, save_safetensors};
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;

#[derive(Args, Debug)]
pub struct BenchCommand {
    #[command(subcommand)]
    command: BenchSub,
}

#[derive(Subcommand, Debug)]
enum BenchSub {
    /// Write a diffusers inpainting folder with random weights from config files.
    Model(ModelArgs),
    /// Write a test fixture's reference pipeline cases as `byteedit edit`
    /// arguments (one per line) and initial latents; print one line per case:
    /// NAME, ARGS FILE and EXPECTED PNG, tab-separated.
    Cases(CasesArgs),
    /// Compare two images channel by channel; fail when they differ by more
    /// than --max-diff levels anywhere, or differ in size.
    ComparePng(CompareArgs),
}

#[derive(Args, Debug)]
struct ModelArgs {
    /// Folder with model_index.json, unet/config.json, vae/config.json,
    /// text_encoder/config.json and scheduler/scheduler_config.json (e.g.
    /// models/benches/sd15-inpaint-config, or a fixture for a tiny model).
    #[arg(long)]
    config: PathBuf,
    /// Tokenizer files to copy (default: CONFIG/tokenizer).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Folder to write; must not exist yet or be empty.
    #[arg(long)]
    out: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Weight type on disk: f16 halves the files; the model computes in f32 either way.
    #[arg(long, value_enum, default_value = "f16")]
    dtype: DtypeArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DtypeArg {
    F16,
    F32,
}

#[derive(Args, Debug)]
struct CasesArgs {
    /// A fixture folder: the model plus expected.json, expected.safetensors,
    /// expected_image.png, expected_mask.png and expected_{case}.png.
    #[arg(long)]
    fixture: PathBuf,
    /// Folder for the argument and latent files (created).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct CompareArgs {
    a: PathBuf,
    b: PathBuf,
    /// Largest difference allowed in any channel of any pixel, in 8-bit levels.
    #[arg(long, default_value_t = 0)]
    max_diff: u8,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd.command {
        BenchSub::Model(args) => model(args),
        BenchSub::Cases(args) => cases(args),
        BenchSub::ComparePng(args) => compare_png(args),
    }
}

fn model(args: ModelArgs) -> Result<()> {
    // Writing into a folder that already holds a model would mix two.
    if let Ok(mut entries) = std::fs::read_dir(&args.out)
        && entries.next().is_some()
    {
        bail!(
            "`{}` is not empty: pick a new folder for the model",
            args.out.display()
        );
    }
    let tokenizer = args
        .tokenizer
        .clone()
        .unwrap_or_else(|| args.config.join("tokenizer"));
    let dtype = match args.dtype {
        DtypeArg::F16 => SaveDtype::F16,
        DtypeArg::F32 => SaveDtype::F32,
    };
    let started = Instant::now();
    // Built on the CPU: the modules are only asked for their tensor shapes.
    let written = write_random_model::<byteedit_models::CpuBackend>(
        &args.config,
        &tokenizer,
        &args.out,
        args.seed,
        dtype,
        &Default::default(),
    )?;
    println!(
        "wrote {} tensors, {:.1} M parameters, {:.1} MB of weights to {} in {:.1}s",
        written.tensors,
        written.parameters as f64 / 1e6,
        written.bytes as f64 / 1e6,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `expected.json` of a fixture (the fields the pipeline cases need).
#[derive(Deserialize)]
struct Expected {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    scheduler: String,
    steps: usize,
    guidance: f64,
    prompt: String,
}

fn cases(args: CasesArgs) -> Result<()> {
    let f = &args.fixture;
    let json_path = f.join("expected.json");
    let text = std::fs::read_to_string(&json_path)
        .with_context(|| format!("cannot read `{}`", json_path.display()))?;
    let expected: Expected = serde_json::from_str(&text)
        .with_context(|| format!("`{}` is not a fixture's case list", json_path.display()))?;
    ensure!(
        !expected.cases.is_empty(),
        "`{}` lists no cases",
        json_path.display()
    );
    let image = f.join("expected_image.png");
    let mask = f.join("expected_mask.png");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create `{}`", args.out.display()))?;
    let tensors_path = f.join("expected.safetensors");
    let tensors = TensorStore::open_files(f, std::slice::from_ref(&tensors_path))?;

    let mut listing = String::new();
    for case in &expected.cases {
        let key = format!("pipeline.{}.latents", case.name);
        let shape = tensors
            .shape(&key)
            .with_context(|| format!("`{}` has no `{key}`", tensors_path.display()))?
            .to_vec();
        let values = tensors.read_f32(&key, &shape, &[])?;
        let latents = args.out.join(format!("{}.latents.safetensors", case.name));
        save_safetensors(
            &latents,
            &[("latents".into(), shape, values)],
            SaveDtype::F32,
        )?;
        let reference = f.join(format!("expected_{}.png", case.name));
        ensure!(
            reference.is_file(),
            "`{}` is missing: the fixture has no reference PNG for case `{}`",
            reference.display(),
            case.name
        );
        // Exactly what the diffusers reference ran (as the CPU test in
        // cli/tests/edit.rs passes it): the whole image, unpasted, from the
        // reference noise; the empty negative prompt is the edit's default.
        let edit_args: Vec<String> = vec![
            "--model".into(),
            path_arg(f)?,
            "--image".into(),
            path_arg(&image)?,
            "--mask".into(),
            path_arg(&mask)?,
            "--prompt".into(),
            case.prompt.clone(),
            "--steps".into(),
            case.steps.to_string(),
            "--guidance".into(),
            case.guidance.to_string(),
            "--scheduler".into(),
            case.scheduler.clone(),
            "--latents".into(),
            path_arg(&latents)?,
            "--region".into(),
            "full".into(),
            // The reference ran at the image's own size (diffusers' `height`/`width`).
            "--working-size".into(),
            "original".into(),
            "--no-paste-back".into(),
        ];
        ensure!(
            edit_args.iter().all(|a| !a.contains('\n')),
            "case `{}` has a newline in an argument, which the argument file cannot hold",
            case.name
        );
        let args_file = args.out.join(format!("{}.args", case.name));
        std::fs::write(&args_file, edit_args.join("\n") + "\n")
            .with_context(|| format!("cannot write `{}`", args_file.display()))?;
        writeln!(
            listing,
            "{}\t{}\t{}",
            case.name,
            path_arg(&args_file)?,
            path_arg(&reference)?
        )?;
    }
    print!("{listing}");
    Ok(())
}

/// A path as one argument-file line (the file is read by a shell script, which
/// needs it as text).
fn path_arg(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("path `{}` is not UTF-8", path.display()))
}

fn compare_png(args: CompareArgs) -> Result<()> {
    let a = to_rgb(&read_image(&args.a)?);
    let b = to_rgb(&read_image(&args.b)?);
    if a.dimensions() != b.dimensions() {
        // For the script's summary, like the "max diff" line below.
        println!(
            "sizes differ: {}x{} vs {}x{}",
            a.width(),
            a.height(),
            b.width(),
            b.height()
        );
    }
    ensure!(
        a.dimensions() == b.dimensions(),
        "`{}` is {}x{} but `{}` is {}x{}",
        args.a.display(),
        a.width(),
        a.height(),
        args.b.display(),
        b.width(),
        b.height()
    );
    let worst = max_level_diff(&a, &b);
    // The script reads this line whether or not the images match.
    println!("max diff {worst} levels over {}x{}", a.width(), a.height());
    ensure!(
        worst <= args.max_diff,
        "`{}` and `{}` differ by {worst} levels, more than --max-diff {}",
        args.a.display(),
        args.b.display(),
        args.max_diff
    );
    Ok(())
}
