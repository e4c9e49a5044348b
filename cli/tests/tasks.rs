//! The editing tasks through the API on inputs of many sizes: tiny, not a
//! multiple of 8, 4000x3000 and very wide. Each result is checked three ways:
//! - it equals, byte for byte, the engine run on the job's reported
//!   parameters (the plan rebuilt here, the tiny model run here);
//! - outside the feathered mask it is the input, pixel for pixel, and the
//!   reported geometry (canvas, crop, working size) is the plan's;
//! - for the 100x75 cases, it matches a committed golden PNG
//!   (`cli/tests/golden/`; regenerate with `UPDATE_GOLDEN=1`).

mod support;

use std::path::PathBuf;

use byteedit_jobs::EditParams;
use byteedit_models::image_io::{alpha_mask, decode_image, max_level_diff, to_luma, to_rgb};
use byteedit_models::tasks::EditPlan;
use byteedit_models::tasks::TaskOptions;
use byteedit_models::{EditRequest, InpaintModel};
use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use serde_json::Value;
use support::{Service, tiny_model};

type Model = InpaintModel<byteedit_models::CpuBackend>;

/// A photo-like test scene: smooth gradients, a few hard edges and texture.
fn scene(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let stripe = if (x / 7 + y / 5) % 2 == 0 { 20.0 } else { 0.0 };
        let disc = ((fx - 0.5).powi(2) + (fy - 0.5).powi(2)).sqrt() < 0.2;
        let base = [60.0 + 150.0 * fx, 40.0 + 120.0 * fy, 200.0 - 100.0 * fx];
        Rgb(base.map(|v| (v + stripe + if disc { 40.0 } else { 0.0 }).min(255.0) as u8))
    })
}

/// A mask over a box in the middle (a fifth of each side, at least a pixel).
fn middle_mask(w: u32, h: u32) -> GrayImage {
    let (bw, bh) = ((w / 5).max(1), (h / 5).max(1));
    let (x0, y0) = ((w - bw) / 2, (h - bh) / 2);
    GrayImage::from_fn(w, h, |x, y| {
        let inside = (x0..x0 + bw).contains(&x) && (y0..y0 + bh).contains(&y);
        Luma([if inside { 255 } else { 0 }])
    })
}

fn png(image: DynamicImage) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}

struct Case {
    name: &'static str,
    size: (u32, u32),
    fields: Vec<(&'static str, &'static str)>,
    /// The mask as a file, or in the image's alpha, or none (outpainting).
    mask: MaskKind,
    canvas: (u32, u32),
}

#[derive(Clone, Copy, PartialEq)]
enum MaskKind {
    File,
    Alpha,
    None,
}

fn cases() -> Vec<Case> {
    let fast = [("steps", "2"), ("guidance_scale", "1"), ("seed", "11")];
    let with = |extra: &[(&'static str, &'static str)]| [&fast[..], extra].concat();
    vec![
        Case {
            name: "inpaint-100x75",
            size: (100, 75),
            fields: with(&[("task", "inpaint"), ("prompt", "a red apple")]),
            mask: MaskKind::File,
            canvas: (100, 75),
        },
        Case {
            name: "erase-100x75",
            size: (100, 75),
            fields: with(&[
                ("task", "erase"),
                ("mask_grow", "2"),
                ("color_match", "true"),
            ]),
            mask: MaskKind::Alpha,
            canvas: (100, 75),
        },
        Case {
            name: "outpaint-100x75",
            size: (100, 75),
            fields: with(&[
                ("task", "outpaint"),
                ("aspect_ratio", "16:9"),
                ("anchor", "right"),
            ]),
            mask: MaskKind::None,
            canvas: (134, 75),
        },
        Case {
            name: "inpaint-tiny",
            size: (13, 7),
            fields: with(&[
                ("task", "inpaint"),
                ("prompt", "sky"),
                ("mask_feather", "1"),
            ]),
            mask: MaskKind::File,
            canvas: (13, 7),
        },
        Case {
            name: "outpaint-tiny",
            size: (13, 7),
            fields: with(&[
                ("task", "outpaint"),
                ("extend_top", "5"),
                ("extend_left", "3"),
            ]),
            mask: MaskKind::None,
            canvas: (16, 12),
        },
        Case {
            name: "erase-4000x3000",
            size: (4000, 3000),
            fields: with(&[("task", "erase"), ("mask_feather", "12")]),
            mask: MaskKind::File,
            canvas: (4000, 3000),
        },
        Case {
            name: "outpaint-4000x3000",
            size: (4000, 3000),
            fields: with(&[
                ("task", "outpaint"),
                ("target_width", "4096"),
                ("anchor", "left"),
            ]),
            mask: MaskKind::None,
            canvas: (4096, 3000),
        },
        Case {
            name: "inpaint-wide",
            size: (3000, 120),
            fields: with(&[
                ("task", "inpaint"),
                ("prompt", "a boat"),
                ("crop_padding", "200"),
            ]),
            mask: MaskKind::File,
            canvas: (3000, 120),
        },
        // The caller's working size: the crop as it is, or a given size.
        Case {
            name: "inpaint-original-96x72",
            size: (96, 72),
            fields: with(&[
                ("task", "inpaint"),
                ("prompt", "a red apple"),
                ("working_size", "original"),
            ]),
            mask: MaskKind::File,
            canvas: (96, 72),
        },
        Case {
            name: "outpaint-exact-96x72",
            size: (96, 72),
            fields: with(&[
                ("task", "outpaint"),
                ("extend_right", "20"),
                ("working_size", "48x32"),
            ]),
            mask: MaskKind::None,
            canvas: (116, 72),
        },
        Case {
            name: "outpaint-wide",
            size: (3000, 120),
            fields: with(&[
                ("task", "outpaint"),
                ("extend_bottom", "40"),
                ("overlap", "16"),
            ]),
            mask: MaskKind::None,
            canvas: (3000, 160),
        },
    ]
}

fn golden_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_at_every_size_keeps_the_input_outside_the_mask() {
    let service = Service::start(1).await;
    let model = Model::load(&tiny_model(), &Default::default()).unwrap();
    for case in cases() {
        let (w, h) = case.size;
        let image = scene(w, h);
        let mask = middle_mask(w, h);
        let upload = match case.mask {
            MaskKind::Alpha => png(DynamicImage::ImageRgba8(RgbaImage::from_fn(
                w,
                h,
                |x, y| {
                    let [r, g, b] = image.get_pixel(x, y).0;
                    Rgba([r, g, b, 255 - mask.get_pixel(x, y).0[0]])
                },
            ))),
            _ => png(image.clone().into()),
        };
        let mut form = reqwest::multipart::Form::new()
            .part("image", reqwest::multipart::Part::bytes(upload.clone()));
        if case.mask == MaskKind::File {
            form = form.part(
                "mask",
                reqwest::multipart::Part::bytes(png(mask.clone().into())),
            );
        }
        for (k, v) in &case.fields {
            form = form.text(*k, *v);
        }
        let (status, job) = service.post_form(form).await;
        assert_eq!(status, 202, "{}: {job}", case.name);
        let id = job["id"].as_str().unwrap().to_owned();
        let done = service
            .wait_for(&id, |j| j["status"] != "queued" && j["status"] != "running")
            .await;
        assert_eq!(done["status"], "succeeded", "{}: {done}", case.name);
        let (_, _, bytes) = service
            .download(done["outputs"][0]["url"].as_str().unwrap())
            .await;
        let served = to_rgb(&decode_image(&bytes, "served").unwrap());
        assert_eq!(served.dimensions(), case.canvas, "{}", case.name);

        // The same plan and model run here.
        let params: EditParams = serde_json::from_value(done["parameters"].clone()).unwrap();
        let decoded = decode_image(&upload, "upload").unwrap();
        let plan_mask = match case.mask {
            MaskKind::File => Some(mask.clone()),
            MaskKind::Alpha => alpha_mask(&decoded),
            MaskKind::None => None,
        };
        let plan = EditPlan::new(
            &to_rgb(&decoded),
            plan_mask.as_ref(),
            &TaskOptions::for_params(&params),
            model.native_size(),
        )
        .unwrap();
        check_geometry(&done["geometry"], &plan, case.name);
        let working = (
            done["geometry"]["working_width"].as_u64().unwrap() as u32,
            done["geometry"]["working_height"].as_u64().unwrap() as u32,
        );
        let round8 = |v: u32| ((v as f64 / 8.0).round() as u32).max(1) * 8;
        match params.working_size.to_string().as_str() {
            "original" => assert_eq!(
                working,
                (round8(plan.crop.width), round8(plan.crop.height)),
                "{}",
                case.name
            ),
            "native" => {}
            exact => assert_eq!(
                format!("{}x{}", working.0, working.1),
                exact,
                "{}",
                case.name
            ),
        }
        let request = EditRequest::for_params(&plan, &params).unwrap();
        let direct = plan.finish(
            &model
                .edit(&request, &mut |_| std::ops::ControlFlow::Continue(()))
                .unwrap()
                .to_rgb8()
                .unwrap(),
        );
        assert!(served == direct, "{}: service and engine differ", case.name);

        // Outside the feathered mask: the input, exactly.
        let (ox, oy) = plan.offset;
        let (cw, _) = case.canvas;
        let mut repainted = 0u64;
        for (x, y, p) in served.enumerate_pixels() {
            let a = plan.alpha[(y * cw + x) as usize];
            let inside_input = x >= ox && y >= oy && x - ox < w && y - oy < h;
            if a == 0.0 {
                assert!(
                    inside_input,
                    "{}: ({x},{y}) is new area but unpainted",
                    case.name
                );
                assert_eq!(
                    p,
                    image.get_pixel(x - ox, y - oy),
                    "{}: ({x},{y}) changed outside the mask",
                    case.name
                );
            } else if a == 1.0 {
                repainted += 1;
            }
        }
        assert!(repainted > 0, "{}", case.name);
        if matches!(params.negative_prompt.as_deref(), Some(n) if !n.is_empty()) {
            assert_eq!(
                done["task"], "erase",
                "only erase gets a default negative prompt"
            );
        }

        if case.size == (100, 75) {
            check_golden(case.name, &served);
        }
    }
    service.finish().await;
}

fn check_geometry(g: &Value, plan: &EditPlan, name: &str) {
    let (cw, ch) = plan.canvas.dimensions();
    let (ww, wh) = plan.working_size();
    assert_eq!(g["canvas_width"], cw, "{name}: {g}");
    assert_eq!(g["canvas_height"], ch, "{name}: {g}");
    assert_eq!(g["working_width"], ww, "{name}: {g}");
    assert_eq!(g["working_height"], wh, "{name}: {g}");
    assert!(ww % 8 == 0 && wh % 8 == 0, "{name}: {g}");
    let c = &g["crop"];
    assert_eq!(
        [&c["x"], &c["y"], &c["width"], &c["height"]].map(|v| v.as_u64().unwrap() as u32),
        [plan.crop.x, plan.crop.y, plan.crop.width, plan.crop.height],
        "{name}: {g}"
    );
    assert!(plan.crop.x + plan.crop.width <= cw && plan.crop.y + plan.crop.height <= ch);
    assert_eq!(g["image"]["x"], plan.offset.0, "{name}: {g}");
    assert_eq!(g["masked_pixels"], plan.masked_pixels(), "{name}: {g}");
}

/// Compares with the committed golden output (at most 2 levels apart, so a
/// change of float summation order does not fail it, but any change of
/// geometry, blending or colour does).
fn check_golden(name: &str, served: &RgbImage) {
    let path = golden_dir().join(format!("{name}.png"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        served.save(&path).unwrap();
        return;
    }
    let golden = to_rgb(&image::open(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    }));
    assert_eq!(golden.dimensions(), served.dimensions(), "{name}");
    let worst = max_level_diff(&golden, served);
    assert!(
        worst <= 2,
        "{name}: differs from {} by {worst} levels",
        path.display()
    );
}

/// Masks of another size are refused, or resized when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mask_of_another_size_is_resized_only_when_asked() {
    let service = Service::start(1).await;
    let image = png(scene(90, 60).into());
    let half_mask = png(middle_mask(45, 30).into());
    let form = |resize: bool| {
        let form = reqwest::multipart::Form::new()
            .text("task", "erase")
            .text("steps", "1")
            .part("image", reqwest::multipart::Part::bytes(image.clone()))
            .part("mask", reqwest::multipart::Part::bytes(half_mask.clone()));
        if resize {
            form.text("mask_resize", "true")
        } else {
            form
        }
    };
    let (status, body) = service.post_form(form(false)).await;
    assert_eq!(
        (status, support::error_code(&body).as_str()),
        (422, "size_mismatch")
    );
    let (status, job) = service.post_form(form(true)).await;
    assert_eq!(status, 202, "{job}");
    let done = service
        .wait_for(job["id"].as_str().unwrap(), |j| j["status"] == "succeeded")
        .await;
    assert_eq!(done["parameters"]["mask_resize"], true);
    // The mask doubled: its 9x6 box becomes about 18x12 pixels.
    let masked = done["geometry"]["masked_pixels"].as_u64().unwrap();
    assert!(
        (16 * 10..=20 * 14).contains(&masked),
        "{}",
        done["geometry"]
    );
    let (_, _, bytes) = service
        .download(done["outputs"][0]["url"].as_str().unwrap())
        .await;
    assert_eq!(
        to_luma(&decode_image(&bytes, "out").unwrap()).dimensions(),
        (90, 60)
    );
    service.finish().await;
}

/// An image cut off after a valid header is refused at upload (422: the API
/// walks the file to its end). One that reaches storage anyway (written
/// behind the API's back) fails its job with `invalid_input` saying why,
/// where zune-jpeg would have filled a cut JPEG with grey and succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_image_is_refused_at_upload_and_fails_a_job_that_stores_one() {
    let mut service = Service::start(1).await;
    // The job waits while its stored input is swapped.
    service.workers.pop().unwrap().stop().await.unwrap();
    let form = |image: Vec<u8>| {
        reqwest::multipart::Form::new()
            .text("task", "erase")
            .text("steps", "1")
            .part("image", reqwest::multipart::Part::bytes(image))
            .part(
                "mask",
                reqwest::multipart::Part::bytes(png(middle_mask(64, 64).into())),
            )
    };
    let image = png(scene(64, 64).into());
    let (status, body) = service
        .post_form(form(image[..image.len() / 2].to_vec()))
        .await;
    assert_eq!(
        (status, support::error_code(&body).as_str()),
        (422, "invalid_image"),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("`image` looks truncated"), "{message}");

    let mut jpeg = Vec::new();
    DynamicImage::from(scene(64, 64))
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let (status, job) = service.post_form(form(jpeg.clone())).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap();
    service
        .backends
        .storage
        .put(
            &format!("jobs/{id}/input"),
            jpeg[..jpeg.len() / 2].to_vec().into(),
        )
        .await
        .unwrap();
    service.add_worker().await;
    let done = service
        .wait_for(id, |j| {
            j["status"] == "failed" || j["status"] == "succeeded"
        })
        .await;
    assert_eq!(done["error"]["code"], "invalid_input", "{done}");
    let message = done["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("image") && message.contains("truncated"),
        "{message}"
    );
    service.finish().await;
}
