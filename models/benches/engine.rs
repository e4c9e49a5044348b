//! Engine benchmark: one UNet step (with guidance: batch 2), VAE encode and
//! decode, text encoding (prompt + negative), and whole edits (`edit8`,
//! `edit20`; `edit8x4`: 8 steps, 4 outputs of one job in one batch; `jobs8x4`: 8 steps, 4
//! one-output jobs with their own prompts and seeds in one batch, as a batching worker
//! runs them), on the tiny fixture model and on a
//! full-size SD-1.5-inpainting model with random weights, reporting time and
//! peak memory (VmHWM, reset before each case). Also: loading the full-size
//! model from an fp16 checkpoint, and the CPU backend comparison.
//!
//! cargo bench -p byteedit-models --features ndarray --bench engine -- \
//!     --model tiny|sd15 --sizes 64,256 --cases unet,vae_encode,vae_decode,text,edit8,edit8x4,edit20 \
//!     --backend flex|ndarray --reps 3 [--json out.json]
//!
//! See docs/PERFORMANCE.md for results and for the diffusers comparison.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use byteedit_models::memory::{peak_rss_mib, reset_peak_rss};
use byteedit_models::weights::SaveDtype;
use byteedit_models::{BatchItem, EditRequest, InpaintModel, SchedulerKind};
use clap::Parser;
use image::{GrayImage, RgbImage};

#[derive(Parser, Debug)]
struct Args {
    /// `tiny` (the test fixture) or `sd15` (SD-1.5-inpainting size, random fp16 weights).
    #[arg(long, default_value = "tiny")]
    model: String,
    #[arg(long, value_delimiter = ',', default_value = "64,256")]
    sizes: Vec<u32>,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "load,unet,vae_encode,vae_decode,edit8,edit20"
    )]
    cases: Vec<String>,
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Timed repetitions after one warm-up (edits at size >= --no-warmup-over run once, unwarmed).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    #[arg(long, default_value_t = 512)]
    no_warmup_over: u32,
    #[arg(long)]
    json: Option<PathBuf>,
    // `cargo bench` passes --bench; accept and ignore it.
    #[arg(long, hide = true)]
    bench: bool,
}

struct Row {
    case: String,
    size: u32,
    mean_s: f64,
    min_s: f64,
    reps: usize,
    peak_rss_mib: f64,
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes the SD-1.5-sized model with random weights as fp16 once, so that
/// it loads through the same code path as a downloaded checkpoint.
fn sd15_folder() -> PathBuf {
    let dir = manifest().join("../target/bench-models/sd15-inpaint-random-fp16");
    // Written last by the generator: its presence means the folder is complete.
    if dir.join("model_index.json").is_file() {
        return dir;
    }
    eprintln!("writing random SD-1.5 weights to {} (once)", dir.display());
    byteedit_models::random_model::write_random_model::<byteedit_models::CpuBackend>(
        &manifest().join("benches/sd15-inpaint-config"),
        &manifest().join("tests/fixtures/sd15-inpaint-tiny/tokenizer"),
        &dir,
        1,
        SaveDtype::F16,
        &Default::default(),
    )
    .expect("random SD-1.5 model written");
    dir
}

/// Peak memory covers the warm-up and the timed runs (as the diffusers script).
fn time<F: FnMut()>(warmup: bool, reps: usize, mut f: F) -> (f64, f64, f64) {
    if warmup {
        f();
    }
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    let mean = times.iter().sum::<f64>() / reps as f64;
    let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
    (mean, min, peak_rss_mib())
}

/// Forces a lazy backend to finish the work.
fn sync<B: Backend, const D: usize>(t: Tensor<B, D>) {
    let _ = t.into_data();
}

fn run<B: Backend>(args: &Args, dir: &Path) -> Vec<Row> {
    let device: B::Device = Default::default();
    let mut rows = Vec::new();

    reset_peak_rss();
    let t = Instant::now();
    let model = InpaintModel::<B>::load(dir, &device).expect("model loads");
    let load_s = t.elapsed().as_secs_f64();
    if args.cases.iter().any(|c| c == "load") {
        rows.push(Row {
            case: "load".into(),
            size: 0,
            mean_s: load_s,
            min_s: load_s,
            reps: 1,
            peak_rss_mib: peak_rss_mib(),
        });
    }

    let context_dim = model
        .unet_config
        .cross_attention_dim
        .iter_n(1)
        .next()
        .unwrap();
    for &size in &args.sizes {
        let latent = (size / 8) as usize;
        let s = size as usize;
        for case in &args.cases {
            // Large edits run once, without warm-up: one already takes minutes.
            let whole_edit = case.starts_with("edit") || case.starts_with("jobs");
            let single = whole_edit && size >= args.no_warmup_over;
            let (warm, reps) = if single {
                (false, 1)
            } else {
                (true, args.reps)
            };
            reset_peak_rss();
            let measured = match case.as_str() {
                "unet" => {
                    let x = Tensor::<B, 4>::random(
                        [2, 9, latent, latent],
                        Distribution::Normal(0.0, 1.0),
                        &device,
                    );
                    let ctx = Tensor::<B, 3>::random(
                        [2, 77, context_dim],
                        Distribution::Normal(0.0, 1.0),
                        &device,
                    );
                    Some(time(warm, reps, || {
                        sync(model.unet.forward(x.clone(), 500.0, &ctx))
                    }))
                }
                "vae_encode" => {
                    let x = Tensor::<B, 4>::random(
                        [1, 3, s, s],
                        Distribution::Uniform(-1.0, 1.0),
                        &device,
                    );
                    Some(time(warm, reps, || sync(model.encode_latents(x.clone()))))
                }
                "vae_decode" => {
                    let z = Tensor::<B, 4>::random(
                        [1, 4, latent, latent],
                        Distribution::Normal(0.0, 1.0),
                        &device,
                    );
                    Some(time(warm, reps, || sync(model.decode_latents(z.clone()))))
                }
                "text" => Some(time(warm, reps, || {
                    sync(model.encode_prompts(&["", "a red apple on a wooden table"]))
                })),
                edit if whole_edit => {
                    let (steps, outputs) = edit_case(edit);
                    let image = RgbImage::from_fn(size, size, |x, y| {
                        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
                    });
                    let mask = GrayImage::from_fn(size, size, |x, y| {
                        let inside = (size / 4..3 * size / 4).contains(&x)
                            && (size / 4..3 * size / 4).contains(&y);
                        image::Luma([if inside { 255 } else { 0 }])
                    });
                    let request = EditRequest {
                        image,
                        mask,
                        prompt: "a red apple on a wooden table".into(),
                        negative_prompt: None,
                        steps,
                        guidance_scale: 7.5,
                        scheduler: SchedulerKind::DpmSolverPlusPlus2M,
                        timestep_spacing: None,
                        seed: 0,
                        latents: None,
                    };
                    // `jobs`: separate jobs, each its own prompt and seed.
                    let jobs: Vec<EditRequest> = (0..outputs as u64)
                        .map(|i| EditRequest {
                            prompt: format!("{} {i}", request.prompt),
                            seed: i,
                            ..request.clone()
                        })
                        .collect();
                    let items: Vec<BatchItem<'_>> = jobs
                        .iter()
                        .map(|request| BatchItem { request, count: 1 })
                        .collect();
                    Some(time(warm, reps, || {
                        if edit.starts_with("jobs") {
                            for result in model
                                .edit_batch(&items, &mut |_, _| ControlFlow::Continue(()))
                                .expect("batch runs")
                            {
                                result.expect("edit runs");
                            }
                        } else {
                            model
                                .edit_outputs(&request, outputs, &mut |_| ControlFlow::Continue(()))
                                .expect("edit runs");
                        }
                    }))
                }
                "load" => None,
                other => panic!("unknown case {other}"),
            };
            if let Some((mean_s, min_s, peak)) = measured {
                eprintln!(
                    "{case:>10} {size:>4}px  mean {mean_s:8.4}s  min {min_s:8.4}s  peak {peak:8.0} MiB"
                );
                rows.push(Row {
                    case: case.clone(),
                    size,
                    mean_s,
                    min_s,
                    reps,
                    peak_rss_mib: peak,
                });
            }
        }
    }
    rows
}

/// `editS` or `editSxN`: S steps, N outputs in one batch (default 1); the
/// same for `jobs`.
fn edit_case(case: &str) -> (usize, usize) {
    let spec = &case["edit".len()..];
    let (steps, outputs) = spec.split_once('x').unwrap_or((spec, "1"));
    match (steps.parse(), outputs.parse()) {
        (Ok(s), Ok(n)) => (s, n),
        _ => panic!(
            "unknown case {case}: edit cases are editS, editSxN or jobsSxN (S steps, N outputs or jobs)"
        ),
    }
}

fn main() {
    byteedit_models::memory::keep_freed_buffers();
    let args = Args::parse();
    let dir = match args.model.as_str() {
        "tiny" => manifest().join("tests/fixtures/sd15-inpaint-tiny"),
        "sd15" => sd15_folder(),
        other => PathBuf::from(other),
    };
    let rows = match args.backend.as_str() {
        #[cfg(feature = "flex")]
        "flex" => run::<burn::backend::Flex>(&args, &dir),
        #[cfg(feature = "ndarray")]
        "ndarray" => run::<burn::backend::NdArray>(&args, &dir),
        other => panic!("backend {other} is not compiled in (features: flex, ndarray)"),
    };
    println!("| model | backend | case | size | mean s | min s | reps | peak RSS MiB |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.4} | {:.4} | {} | {:.0} |",
            args.model, args.backend, r.case, r.size, r.mean_s, r.min_s, r.reps, r.peak_rss_mib
        );
    }
    if let Some(path) = &args.json {
        let results: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| serde_json::json!({"case": r.case, "size": r.size, "mean_s": r.mean_s, "min_s": r.min_s, "reps": r.reps, "peak_rss_mib": r.peak_rss_mib}))
            .collect();
        let doc = serde_json::json!({"engine": "byteedit", "backend": args.backend, "model": args.model, "results": results});
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    }
}
