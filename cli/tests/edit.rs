//! `byteedit edit` end to end: the real binary on the fixture model, and the
//! messages it gives for inputs it cannot use.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use byteedit_models::image_io::{max_level_diff, read_image, to_rgb};
use byteedit_models::weights::{SaveDtype, TensorStore, save_safetensors};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/sd15-inpaint-tiny")
}

fn byteedit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_byteedit"))
        .args(args)
        .env_remove("BYTEEDIT_MODEL")
        .env_remove("BYTEEDIT_DEVICE")
        .output()
        .expect("byteedit runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs an edit that must fail, and returns its message.
fn failing(extra: &[&str], image: &Path, mask: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out_png = dir.path().join("out.png");
    let model = fixture();
    let mut args = vec![
        "edit",
        "--model",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--mask",
        mask.to_str().unwrap(),
        "--out",
        out_png.to_str().unwrap(),
    ];
    if !extra.contains(&"--steps") {
        args.extend_from_slice(&["--steps", "2"]);
    }
    args.extend_from_slice(extra);
    let out = byteedit(&args);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    assert!(
        !err.contains("panicked"),
        "panicked instead of an error: {err}"
    );
    assert!(!out_png.exists(), "no output may be written on failure");
    err
}

#[test]
fn edit_reproduces_the_diffusers_pipeline_from_given_latents() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    // Take the reference run's initial noise as `--latents`.
    let expected = TensorStore::open_files(&f, &[f.join("expected.safetensors")]).unwrap();
    let key = "pipeline.ddim_8_cfg.latents";
    let shape = expected.shape(key).unwrap().to_vec();
    let values = expected.read_f32(key, &shape, &[]).unwrap();
    let latents = dir.path().join("latents.safetensors");
    save_safetensors(
        &latents,
        &[("latents".into(), shape, values)],
        SaveDtype::F32,
    )
    .unwrap();
    let out_png = dir.path().join("edited.png");
    let compare_png = dir.path().join("compare.png");

    let out = byteedit(&[
        "edit",
        "--model",
        f.to_str().unwrap(),
        "--image",
        f.join("expected_image.png").to_str().unwrap(),
        "--mask",
        f.join("expected_mask.png").to_str().unwrap(),
        "--prompt",
        "a red apple on a wooden table",
        "--steps",
        "8",
        "--guidance",
        "7.5",
        "--scheduler",
        "ddim",
        "--latents",
        latents.to_str().unwrap(),
        // The whole image, unpasted: exactly what diffusers returns.
        "--region",
        "full",
        "--no-paste-back",
        "--out",
        out_png.to_str().unwrap(),
        "--compare",
        compare_png.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let compare = to_rgb(&read_image(&compare_png).unwrap());
    assert_eq!(compare.dimensions(), (192, 64), "input | mask | result");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("edited 64x64") && summary.contains("8 steps"),
        "{summary}"
    );

    let ours = to_rgb(&read_image(&out_png).unwrap());
    let reference = to_rgb(&read_image(&f.join("expected_ddim_8_cfg.png")).unwrap());
    assert_eq!(ours.dimensions(), reference.dimensions());
    let worst = max_level_diff(&ours, &reference);
    assert!(worst <= 1, "differs from diffusers by {worst} levels");
}

#[test]
fn seeded_edits_are_repeatable_and_seeds_differ() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    let run = |seed: &str, name: &str| {
        let out_png = dir.path().join(name);
        let out = byteedit(&[
            "edit",
            "--model",
            f.to_str().unwrap(),
            "--image",
            f.join("expected_image.png").to_str().unwrap(),
            "--mask",
            f.join("expected_mask.png").to_str().unwrap(),
            "--steps",
            "3",
            "--guidance",
            "1",
            "--seed",
            seed,
            "--scheduler",
            "euler",
            "--out",
            out_png.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        std::fs::read(out_png).unwrap()
    };
    assert_eq!(run("7", "a.png"), run("7", "b.png"));
    assert_ne!(run("7", "c.png"), run("8", "d.png"));
}

#[test]
fn bad_inputs_get_errors_that_say_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    let image = f.join("expected_image.png");
    let mask = f.join("expected_mask.png");

    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"this is not a picture").unwrap();
    let err = failing(&[], &garbage, &mask);
    assert!(err.contains("garbage.png"), "{err}");

    let err = failing(&[], &dir.path().join("missing.png"), &mask);
    assert!(err.contains("missing.png"), "{err}");

    let small_mask = dir.path().join("small_mask.png");
    image::GrayImage::new(32, 32).save(&small_mask).unwrap();
    let err = failing(&[], &image, &small_mask);
    assert!(
        err.contains("32x32") && err.contains("64x64") && err.contains("same size"),
        "{err}"
    );

    let empty_mask = dir.path().join("empty_mask.png");
    image::GrayImage::new(64, 64).save(&empty_mask).unwrap();
    let err = failing(&[], &image, &empty_mask);
    assert!(err.contains("mask is empty"), "{err}");

    let err = failing(&["--mask-grow", "-40"], &image, &mask);
    assert!(err.contains("empty after shrinking it by 40"), "{err}");

    let err = failing(&["--task", "outpaint"], &image, &mask);
    assert!(err.contains("--extend-left"), "{err}");

    let err = failing(&["--extend-left", "8"], &image, &mask);
    assert!(err.contains("`--task outpaint`"), "{err}");

    let err = failing(
        &["--task", "outpaint", "--target-width", "32"],
        &image,
        &mask,
    );
    assert!(err.contains("smaller than the image"), "{err}");

    let err = failing(&["--task", "paint"], &image, &mask);
    assert!(err.contains("inpaint, erase, outpaint"), "{err}");

    let err = failing(&["--scheduler", "heun"], &image, &mask);
    assert!(err.contains("ddim, euler, dpmpp-2m"), "{err}");

    let err = failing(&["--steps", "0"], &image, &mask);
    assert!(
        err.contains("`--steps` must be an integer from 1 to 1000"),
        "{err}"
    );

    let err = failing(&["--guidance", "-1"], &image, &mask);
    assert!(
        err.contains("`--guidance-scale` must be a number from 0 to 50"),
        "{err}"
    );

    let wrong_latents = dir.path().join("wrong.safetensors");
    save_safetensors(
        &wrong_latents,
        &[("latents".into(), vec![1, 4, 4, 4], vec![0.0; 64])],
        SaveDtype::F32,
    )
    .unwrap();
    let err = failing(
        &[
            "--latents",
            wrong_latents.to_str().unwrap(),
            "--region",
            "full",
        ],
        &image,
        &mask,
    );
    assert!(
        err.contains("[1, 4, 4, 4]") && err.contains("[1, 4, 8, 8]"),
        "{err}"
    );

    let err = failing(&["--device", "tpu"], &image, &mask);
    assert!(err.contains("cpu, cuda"), "{err}");
}

/// Erasing with the mask in the image's alpha, and outpainting an odd-sized
/// image: outputs have the right size, and pixels beyond the feather band
/// are the input's, bit for bit.
#[test]
fn tasks_on_odd_sizes_keep_the_input_outside_the_mask() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    let (w, h) = (60u32, 44u32);
    let scene = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) * 2) as u8])
    });
    // Transparent square at (20..30, 10..20) marks what to erase.
    let rgba = image::RgbaImage::from_fn(w, h, |x, y| {
        let [r, g, b] = scene.get_pixel(x, y).0;
        let hole = (20..30).contains(&x) && (10..20).contains(&y);
        image::Rgba([r, g, b, if hole { 0 } else { 255 }])
    });
    let input = dir.path().join("input.png");
    rgba.save(&input).unwrap();
    let run = |extra: &[&str], out: &Path| {
        let mut args = vec![
            "edit",
            "--model",
            f.to_str().unwrap(),
            "--image",
            input.to_str().unwrap(),
            "--steps",
            "2",
            "--mask-feather",
            "2",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let result = byteedit(&args);
        assert!(result.status.success(), "{}", stderr(&result));
        String::from_utf8_lossy(&result.stdout).into_owned()
    };

    let erased = dir.path().join("erased.png");
    let summary = run(&["--task", "erase", "--color-match"], &erased);
    assert!(summary.contains("edited 60x44 (crop"), "{summary}");
    let out = to_rgb(&read_image(&erased).unwrap());
    assert_eq!(out.dimensions(), (w, h));
    let mut changed = 0;
    for (x, y, p) in out.enumerate_pixels() {
        // Feather 2 reaches at most 4 pixels beyond the hole.
        let near = (16..34).contains(&x) && (6..24).contains(&y);
        if !near {
            assert_eq!(
                p,
                scene.get_pixel(x, y),
                "({x},{y}) changed outside the mask"
            );
        } else if p != scene.get_pixel(x, y) {
            changed += 1;
        }
    }
    assert!(
        changed > 50,
        "the hole was repainted ({changed} pixels changed)"
    );

    let extended = dir.path().join("extended.png");
    let compare = dir.path().join("compare.png");
    run(
        &[
            "--task",
            "outpaint",
            "--aspect-ratio",
            "2:1",
            "--anchor",
            "left",
            "--overlap",
            "2",
            "--compare",
            compare.to_str().unwrap(),
        ],
        &extended,
    );
    let out = to_rgb(&read_image(&extended).unwrap());
    assert_eq!(
        out.dimensions(),
        (88, 44),
        "2:1 canvas with the image on the left"
    );
    // The transparent hole is repainted too; far from it and from the new
    // area (overlap 2 + feather band 4), the input is untouched.
    for y in 0..h {
        for x in 0..(w - 6) {
            let near_hole = (16..34).contains(&x) && (6..24).contains(&y);
            if !near_hole {
                assert_eq!(out.get_pixel(x, y), scene.get_pixel(x, y), "({x},{y})");
            }
        }
    }
    let compare = to_rgb(&read_image(&compare).unwrap());
    assert_eq!(compare.dimensions(), (3 * 88, 44));
}

#[test]
fn a_missing_model_folder_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    let out = byteedit(&[
        "edit",
        "--model",
        dir.path().join("no-model").to_str().unwrap(),
        "--image",
        f.join("expected_image.png").to_str().unwrap(),
        "--mask",
        f.join("expected_mask.png").to_str().unwrap(),
        "--out",
        dir.path().join("o.png").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no-model") && stderr(&out).contains("model_index.json"),
        "{}",
        stderr(&out)
    );
}
