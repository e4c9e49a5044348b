//! `bench/device.sh` and the `byteedit bench` tools it runs. The script is
//! meant for a GPU machine; here it runs on the CPU with a tiny random model,
//! so a change that breaks it (a renamed flag, another summary line) fails CI
//! rather than the first, rare, GPU run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn byteedit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_byteedit"))
        .args(args)
        .output()
        .expect("byteedit runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn device_script_passes_on_the_cpu_with_a_tiny_random_model() {
    let keep = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(repo().join("bench/device.sh"))
        .env("DEVICE", "cpu")
        .env("BYTEEDIT_BIN", env!("CARGO_BIN_EXE_byteedit"))
        .env("BENCH_MODEL", "tiny")
        .env("BENCH_STEPS", "3")
        .env("KEEP", keep.path())
        .env_remove("BYTEEDIT_MODEL")
        .env_remove("BYTEEDIT_DEVICE")
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    // One summary line: every fixture case within a level, and the timing.
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    for part in [
        "device: cpu ok",
        "sd15-inpaint-tiny 3 cases max diff",
        "sd2-vpred-tiny 3 cases max diff",
        "tiny 64x64 3 steps: ",
        "s/step beyond the first",
    ] {
        assert!(stdout.contains(part), "no `{part}` in {stdout}");
    }
    assert!(keep.path().join("sd2-vpred-tiny-ddim_8_cfg.png").is_file());
}

#[test]
fn device_script_says_how_to_build_a_missing_binary() {
    let out = Command::new("bash")
        .arg(repo().join("bench/device.sh"))
        .env("BYTEEDIT_BIN", "/nonexistent/byteedit")
        .env("DEVICE", "cuda")
        .output()
        .expect("bash runs");
    assert!(!out.status.success());
    let all = text(&out);
    assert!(
        all.contains("cargo build --release -p byteedit --features cuda")
            && all.contains("device: cuda FAILED | no binary at /nonexistent/byteedit"),
        "{all}"
    );
}

#[test]
fn compare_png_allows_max_diff_levels_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, level: u8, width: u32| {
        let path = dir.path().join(name);
        image::RgbImage::from_fn(width, 4, |x, _| {
            image::Rgb([if x == 1 { level } else { 100 }, 100, 100])
        })
        .save(&path)
        .unwrap();
        path.to_str().unwrap().to_owned()
    };
    let base = write("base.png", 100, 4);
    let one = write("one.png", 101, 4);
    let two = write("two.png", 98, 4);
    let wide = write("wide.png", 100, 5);

    let out = byteedit(&["bench", "compare-png", &base, &one, "--max-diff", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("max diff 1 levels over 4x4"),
        "{}",
        text(&out)
    );

    let out = byteedit(&["bench", "compare-png", &base, &two, "--max-diff", "1"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("max diff 2 levels") && text(&out).contains("more than --max-diff 1"),
        "{}",
        text(&out)
    );

    let out = byteedit(&["bench", "compare-png", &base, &wide, "--max-diff", "255"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("sizes differ: 4x4 vs 5x4"),
        "{}",
        text(&out)
    );
}

#[test]
fn bench_model_writes_a_loadable_folder_and_refuses_a_used_one() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = repo().join("models/tests/fixtures/sd15-inpaint-tiny");
    let model = dir.path().join("model");
    let args = [
        "bench",
        "model",
        "--config",
        fixture.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
    ];
    let out = byteedit(&args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("wrote "), "{}", text(&out));
    assert!(model.join("model_index.json").is_file());

    // The folder edits like any model (one step is enough to load everything).
    let edited = dir.path().join("edited.png");
    let out = byteedit(&[
        "edit",
        "--model",
        model.to_str().unwrap(),
        "--image",
        fixture.join("expected_image.png").to_str().unwrap(),
        "--mask",
        fixture.join("expected_mask.png").to_str().unwrap(),
        "--steps",
        "1",
        "--device",
        "cpu",
        "--out",
        edited.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));

    let out = byteedit(&args);
    assert!(!out.status.success());
    assert!(text(&out).contains("is not empty"), "{}", text(&out));
}
