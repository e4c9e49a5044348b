//! Seam and background report: for each task, how much of the input survives
//! outside the mask, and how visible the border is, for the plain diffusers
//! behaviour (whole image regenerated) against ByteEdit's crop + paste-back.
//!
//! cargo bench -p byteedit-models --bench seams -- [--model DIR] [--picture docs/images/seams.jpg] [--json out.json]
//! (relative paths are taken from the workspace root)
//!
//! Metrics, per task and variant:
//! - `psnr_outside`: PSNR (dB) against the input over pixels whose paste
//!   weight is 0 (beyond the feather band); `inf` means bit-identical.
//! - `psnr_unmasked`: PSNR over every pixel outside the hard mask (feather band included).
//! - `seam`: mean absolute step between neighbouring pixels where the paste
//!   weight changes (the border zone), divided by the mean step everywhere
//!   else in the output. 1 means the border is no sharper than the image.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use byteedit_edit::Sides;
use byteedit_models::image_io::{GrayImage, Rgb, RgbImage};
use byteedit_models::tasks::{EditPlan, NativeSize, Region, TaskOptions};
use byteedit_models::{CpuBackend, EditRequest, InpaintModel, SchedulerKind};
use clap::Parser;
use image::Luma;
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// diffusers inpainting folder (default: the tiny fixture model).
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    steps: usize,
    /// Write input | mask | diffusers | ByteEdit rows, one per task.
    #[arg(long)]
    picture: Option<PathBuf>,
    #[arg(long)]
    json: Option<PathBuf>,
    // `cargo bench` passes `--bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Serialize)]
struct Row {
    task: &'static str,
    variant: &'static str,
    psnr_outside: f64,
    psnr_unmasked: f64,
    seam: f64,
    edit_ms: f64,
}

/// A photo-like scene: sky and ground gradients, a sun, a hill, fine texture.
fn scene(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let horizon = 0.55 + 0.1 * (fx * 6.0).sin();
        let sun = ((fx - 0.75).powi(2) + (fy - 0.25).powi(2)).sqrt() < 0.08;
        let grain = ((x * 31 + y * 17) % 13) as f32 - 6.0;
        let p = if sun {
            [250.0, 220.0, 120.0]
        } else if fy < horizon {
            [90.0 + 80.0 * fy, 140.0 + 60.0 * fy, 230.0 - 40.0 * fy]
        } else {
            [70.0 + 40.0 * fx, 120.0 - 30.0 * fy, 50.0 + grain]
        };
        Rgb(p.map(|v| (v + grain).clamp(0.0, 255.0) as u8))
    })
}

fn ellipse_mask(w: u32, h: u32, (cx, cy, rx, ry): (f32, f32, f32, f32)) -> GrayImage {
    GrayImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (
            (x as f32 / w as f32 - cx) / rx,
            (y as f32 / h as f32 - cy) / ry,
        );
        Luma([if dx * dx + dy * dy <= 1.0 { 255 } else { 0 }])
    })
}

fn psnr(a: &RgbImage, b: &RgbImage, offset: (u32, u32), pick: impl Fn(u32, u32) -> bool) -> f64 {
    let (mut se, mut n) = (0f64, 0u64);
    for (x, y, p) in a.enumerate_pixels() {
        if !pick(x, y) {
            continue;
        }
        let (bx, by) = (x.wrapping_sub(offset.0), y.wrapping_sub(offset.1));
        if bx >= b.width() || by >= b.height() {
            continue;
        }
        let q = b.get_pixel(bx, by);
        for c in 0..3 {
            se += (p.0[c] as f64 - q.0[c] as f64).powi(2);
        }
        n += 3;
    }
    if n == 0 || se == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255f64.powi(2) / (se / n as f64)).log10()
}

/// Mean step across pairs where `weight` changes, over the mean step elsewhere.
fn seam(out: &RgbImage, weight: &[f32]) -> f64 {
    let w = out.width();
    let step = |a: &Rgb<u8>, b: &Rgb<u8>| {
        (0..3)
            .map(|c| (a.0[c] as f64 - b.0[c] as f64).abs())
            .sum::<f64>()
            / 3.0
    };
    let (mut border, mut nb, mut rest, mut nr) = (0f64, 0u64, 0f64, 0u64);
    for (x, y, p) in out.enumerate_pixels() {
        for (nx, ny) in [(x + 1, y), (x, y + 1)] {
            if nx >= w || ny >= out.height() {
                continue;
            }
            let d = step(p, out.get_pixel(nx, ny));
            if weight[(y * w + x) as usize] != weight[(ny * w + nx) as usize] {
                border += d;
                nb += 1;
            } else {
                rest += d;
                nr += 1;
            }
        }
    }
    (border / nb.max(1) as f64) / (rest / nr.max(1) as f64).max(1e-9)
}

/// `cargo bench` runs in the package folder: relative paths are taken from the workspace root.
fn from_root(path: &std::path::Path) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(path)
}

fn main() {
    let mut args = Args::parse();
    args.picture = args.picture.as_deref().map(from_root);
    args.json = args.json.as_deref().map(from_root);
    let dir = args.model.clone().unwrap_or_else(|| {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sd15-inpaint-tiny"
        ))
    });
    let model = InpaintModel::<CpuBackend>::load(&dir, &Default::default()).expect("model loads");
    let (w, h) = (384u32, 256u32);
    let input = scene(w, h);
    let tasks: [(&str, Option<GrayImage>, Sides, &str); 3] = [
        (
            "inpaint",
            Some(ellipse_mask(w, h, (0.3, 0.6, 0.12, 0.15))),
            Sides::default(),
            "a red car",
        ),
        (
            "erase",
            Some(ellipse_mask(w, h, (0.75, 0.25, 0.1, 0.14))),
            Sides::default(),
            "",
        ),
        (
            "outpaint",
            None,
            Sides {
                right: 96,
                bottom: 32,
                ..Default::default()
            },
            "",
        ),
    ];
    let variants: [(&str, TaskOptions); 4] = [
        (
            "diffusers (whole image, no paste)",
            TaskOptions {
                region: Region::Full,
                paste_back: false,
                mask_feather: 0,
                ..Default::default()
            },
        ),
        (
            "crop + hard paste (feather 0)",
            TaskOptions {
                mask_feather: 0,
                ..Default::default()
            },
        ),
        ("crop + feather 8 (default)", TaskOptions::default()),
        (
            "crop + feather 8 + color match",
            TaskOptions {
                color_match: true,
                ..Default::default()
            },
        ),
    ];
    let mut rows = Vec::new();
    let mut picture_rows = Vec::new();
    println!(
        "model: {}, {} steps, input {w}x{h}",
        dir.display(),
        args.steps
    );
    println!(
        "| task | variant | PSNR outside feather (dB) | PSNR unmasked (dB) | seam ratio | edit ms |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (task, mask, extension, prompt) in &tasks {
        let mut panels = Vec::new();
        for (variant, options) in &variants {
            let options = TaskOptions {
                extension: *extension,
                ..options.clone()
            };
            let (cw, ch) = (
                w + extension.left + extension.right,
                h + extension.top + extension.bottom,
            );
            // diffusers runs the canvas at its own size; the crop variants at the model's.
            let size = if options.region == Region::Full {
                NativeSize {
                    native: ((cw as f64 * ch as f64).sqrt().ceil()) as u32,
                    multiple: model.native_size().multiple,
                }
            } else {
                model.native_size()
            };
            let started = Instant::now();
            let plan = EditPlan::new(&input, mask.as_ref(), &options, size).expect("plan");
            let request = EditRequest {
                image: plan.image.clone(),
                mask: plan.model_mask.clone(),
                prompt: prompt.to_string(),
                negative_prompt: None,
                steps: args.steps,
                guidance_scale: 7.5,
                scheduler: SchedulerKind::DpmSolverPlusPlus2M,
                timestep_spacing: None,
                seed: 1,
                latents: None,
            };
            let edited = model
                .edit(&request, &mut |_| ControlFlow::Continue(()))
                .expect("edit")
                .to_rgb8()
                .expect("decoded output");
            let out = plan.finish(&edited);
            let edit_ms = started.elapsed().as_secs_f64() * 1000.0;
            // Judge every variant by the default feather band, so the numbers compare.
            let band = EditPlan::new(
                &input,
                mask.as_ref(),
                &TaskOptions {
                    extension: *extension,
                    ..Default::default()
                },
                model.native_size(),
            )
            .expect("plan");
            let hard = EditPlan::new(
                &input,
                mask.as_ref(),
                &TaskOptions {
                    extension: *extension,
                    mask_feather: 0,
                    ..Default::default()
                },
                model.native_size(),
            )
            .expect("plan");
            let offset = plan.offset;
            let psnr_outside = psnr(&out, &input, offset, |x, y| {
                band.alpha[(y * cw + x) as usize] == 0.0
            });
            let psnr_unmasked = psnr(&out, &input, offset, |x, y| {
                hard.alpha[(y * cw + x) as usize] == 0.0
            });
            let seam = seam(&out, &plan.alpha);
            println!(
                "| {task} | {variant} | {psnr_outside:.1} | {psnr_unmasked:.1} | {seam:.2} | {edit_ms:.0} |"
            );
            rows.push(Row {
                task,
                variant,
                psnr_outside,
                psnr_unmasked,
                seam,
                edit_ms,
            });
            if panels.is_empty() {
                panels.push(plan.canvas.clone());
                panels.push(tint(&plan.canvas, &plan.mask));
            }
            if matches!(*variant, v if v.starts_with("diffusers") || v.contains("(default)")) {
                panels.push(out);
            }
        }
        picture_rows.push(panels);
    }
    if let Some(path) = &args.picture {
        write_picture(&picture_rows, path);
        println!("picture: {}", path.display());
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows).expect("json"))
            .expect("write json");
    }
}

fn tint(image: &RgbImage, mask: &GrayImage) -> RgbImage {
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let [r, g, b] = image.get_pixel(x, y).0;
        if mask.get_pixel(x, y).0[0] >= 128 {
            Rgb([r / 2 + 127, g / 2, b / 2])
        } else {
            Rgb([r, g, b])
        }
    })
}

/// Rows of panels (input | mask | diffusers | ByteEdit), each panel scaled to 256 px wide.
fn write_picture(rows: &[Vec<RgbImage>], path: &std::path::Path) {
    let pw = 256u32;
    let scaled: Vec<Vec<RgbImage>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|p| {
                    let ph = p.height() * pw / p.width();
                    image::imageops::resize(p, pw, ph, image::imageops::FilterType::Triangle)
                })
                .collect()
        })
        .collect();
    let gap = 4;
    let width = scaled.iter().map(|r| r.len() as u32).max().unwrap_or(0) * (pw + gap);
    let height: u32 = scaled
        .iter()
        .map(|r| r.iter().map(|p| p.height()).max().unwrap_or(0) + gap)
        .sum();
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let mut y = 0;
    for row in &scaled {
        for (i, p) in row.iter().enumerate() {
            image::imageops::replace(&mut canvas, p, (i as u32 * (pw + gap)) as i64, y as i64);
        }
        y += row.iter().map(|p| p.height()).max().unwrap_or(0) + gap;
    }
    canvas.save(path).expect("write picture");
}
