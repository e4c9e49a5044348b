//! `byteedit train-reward` and `byteedit score` as a user runs them: a
//! short run from a config with fresh sizes writes a reward folder that
//! `score` reads; the coherence reward scores a mask and draws its heat
//! map; bad input gets a sentence and a failing exit code.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

fn byteedit(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_byteedit"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tokenizer() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rewards/tests/fixtures/imagereward-tiny"
    ))
}

fn square(path: &Path, rgb: [u8; 3]) {
    image::RgbImage::from_fn(24, 20, |x, _| {
        if x < 12 {
            image::Rgb(rgb)
        } else {
            image::Rgb([128; 3])
        }
    })
    .save(path)
    .unwrap();
}

/// A folder with 12 aesthetic pairs, a config for a tiny fresh model and
/// a coherence config.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    square(&d.join("red.png"), [220, 30, 30]);
    square(&d.join("blue.png"), [30, 30, 220]);
    let lines: Vec<String> = (0..12)
        .map(|i| {
            let (p, r, c) = if i % 2 == 0 {
                ("red.png", "blue.png", "red")
            } else {
                ("blue.png", "red.png", "blue")
            };
            json!({"prompt": format!("a {c} car"), "preferred": p, "rejected": r}).to_string()
        })
        .collect();
    std::fs::write(d.join("pairs.jsonl"), lines.join("\n")).unwrap();
    let vision =
        json!({"img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2});
    let config = json!({
        "batch": 4, "micro_batch": 4, "steps": 3, "lr": 1e-3, "fix_rate": 0.0, "validation_fraction": 0.25,
        "fresh": {
            "reward": {"kind": "imagereward", "vision": vision, "text_max_length": 12,
                       "score_mean": 0.0, "score_std": 1.0,
                       "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "head": [8, 1]},
            "text": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "intermediate_size": 32, "layer_norm_eps": 1e-12,
                     "max_position_embeddings": 16, "vocab_size": 132},
            "tokenizer": tokenizer()
        },
        "fresh_coherence": {"kind": "coherence", "vision": vision}
    });
    std::fs::write(d.join("config.json"), config.to_string()).unwrap();
    image::GrayImage::from_fn(24, 20, |x, _| image::Luma([if x < 12 { 255 } else { 0 }]))
        .save(d.join("mask.png"))
        .unwrap();
    let edits = [
        json!({"image": "red.png", "mask": "mask.png"}),
        json!({"image": "blue.png"}),
        json!({"image": "blue.png", "mask": "mask.png"}),
        json!({"image": "red.png", "mask": "mask.png"}),
        json!({"image": "blue.png", "mask": "mask.png"}),
        json!({"image": "red.png"}),
        json!({"image": "red.png", "mask": "mask.png"}),
        json!({"image": "blue.png", "mask": "mask.png"}),
    ];
    let edits: Vec<String> = edits.iter().map(|l| l.to_string()).collect();
    std::fs::write(d.join("edits.jsonl"), edits.join("\n")).unwrap();
    dir
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}

#[test]
fn train_reward_writes_a_folder_that_score_reads() {
    let dir = workspace();
    let d = dir.path();
    let out = path(d, "aesthetic");
    let (ok, stdout, stderr) = byteedit(&[
        "train-reward",
        "--kind",
        "aesthetic",
        "--data",
        &path(d, "pairs.jsonl"),
        "--out",
        &out,
        "--config",
        &path(d, "config.json"),
        "--seed",
        "2",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("saved") && stdout.contains("held-out score"),
        "{stdout}"
    );
    assert!(stderr.contains("9 training pairs, 3 held out"), "{stderr}");
    for file in [
        "model.safetensors",
        "reward_config.json",
        "med_config.json",
        "vocab.txt",
        "training.json",
        "metrics.jsonl",
        "loss.png",
    ] {
        assert!(Path::new(&out).join(file).is_file(), "{file}");
    }
    let training: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(&out).join("training.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(training["steps"], 3);
    assert_eq!(training["kind"], "aesthetic");

    let score = |prompt: &str| {
        let (ok, stdout, stderr) = byteedit(&[
            "score",
            "--reward",
            &out,
            "--image",
            &path(d, "red.png"),
            "--prompt",
            prompt,
        ]);
        assert!(ok, "{stderr}");
        stdout.trim().parse::<f32>().unwrap()
    };
    assert_eq!(score("a red car"), score("a red car"));
    // A continued run needs --resume; with it, it goes on from step 4.
    let (ok, _, stderr) = byteedit(&[
        "train-reward",
        "--kind",
        "aesthetic",
        "--data",
        &path(d, "pairs.jsonl"),
        "--out",
        &out,
        "--config",
        &path(d, "config.json"),
        "--seed",
        "2",
    ]);
    assert!(!ok && stderr.contains("--resume"), "{stderr}");
    let (ok, _, stderr) = byteedit(&[
        "train-reward",
        "--kind",
        "aesthetic",
        "--data",
        &path(d, "pairs.jsonl"),
        "--out",
        &out,
        "--config",
        &path(d, "config.json"),
        "--seed",
        "2",
        "--resume",
        "--steps",
        "5",
    ]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("steps 4..=5"), "{stderr}");
}

#[test]
fn the_coherence_reward_scores_a_mask_and_draws_a_heat_map() {
    let dir = workspace();
    let d = dir.path();
    let out = path(d, "coherence");
    let (ok, _, stderr) = byteedit(&[
        "train-reward",
        "--kind",
        "coherence",
        "--data",
        &path(d, "edits.jsonl"),
        "--out",
        &out,
        "--config",
        &path(d, "config.json"),
    ]);
    assert!(ok, "{stderr}");
    let heatmap = path(d, "heat.png");
    let (ok, stdout, stderr) = byteedit(&[
        "score",
        "--reward",
        &out,
        "--image",
        &path(d, "red.png"),
        "--mask",
        &path(d, "mask.png"),
        "--heatmap",
        &heatmap,
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.trim().parse::<f32>().unwrap().is_finite(),
        "{stdout}"
    );
    let map = image::open(&heatmap).unwrap();
    assert_eq!((map.width(), map.height()), (20, 20));
    let (ok, _, stderr) = byteedit(&[
        "score",
        "--reward",
        &out,
        "--image",
        &path(d, "red.png"),
        "--mask",
        &path(d, "heat.png"),
    ]);
    assert!(
        !ok && stderr.contains("the mask is 20x20 but the image is 24x20"),
        "{stderr}"
    );
}

#[test]
fn bad_input_is_refused_with_what_to_fix() {
    let dir = workspace();
    let d = dir.path();
    let train = |data: &str, extra: &[&str]| {
        let out = path(d, "out");
        let _ = std::fs::remove_dir_all(&out);
        let mut args = vec![
            "train-reward",
            "--kind",
            "aesthetic",
            "--data",
            data,
            "--out",
            &out,
        ];
        args.extend_from_slice(extra);
        let (ok, _, stderr) = byteedit(&args);
        assert!(!ok, "{stderr}");
        stderr
    };
    let config = path(d, "config.json");
    std::fs::write(d.join("empty.jsonl"), "").unwrap();
    let message = train(&path(d, "empty.jsonl"), &["--config", &config]);
    assert!(message.contains("no pairs to train on"), "{message}");

    let tie = json!({"comparison_id": "0190b6a4-0000-7000-8000-000000000000", "task": "erase", "prompt": "x",
                     "aspect": "overall", "input_key": "in.png", "mask_key": null,
                     "candidate": {"model": "a", "key": "red.png"}, "baseline": {"model": "b", "key": "blue.png"},
                     "good": 1, "same": 0, "bad": 1, "preferred": null, "rejected": null, "tie": true});
    std::fs::write(d.join("ties.jsonl"), format!("{tie}\n{tie}\n")).unwrap();
    let message = train(
        &path(d, "ties.jsonl"),
        &["--config", &config, "--storage", &path(d, "")],
    );
    assert!(message.contains("all 2 pairs are ties"), "{message}");
    let message = train(&path(d, "ties.jsonl"), &["--config", &config]);
    assert!(message.contains("--storage"), "{message}");

    std::fs::write(
        d.join("broken.jsonl"),
        json!({"prompt": "a red car", "preferred": "nowhere.png", "rejected": "red.png"})
            .to_string()
            + "\n"
            + &json!({"prompt": "a red car", "preferred": "red.png", "rejected": "blue.png"})
                .to_string(),
    )
    .unwrap();
    let message = train(&path(d, "broken.jsonl"), &["--config", &config]);
    assert!(
        message.contains("nowhere.png") && message.contains("cannot read the image"),
        "{message}"
    );

    std::fs::write(d.join("garbled.jsonl"), "{\"prompt\": 1}\n").unwrap();
    let message = train(&path(d, "garbled.jsonl"), &["--config", &config]);
    assert!(message.contains("line 1"), "{message}");

    let out = path(d, "db-out");
    let (ok, _, stderr) = byteedit(&[
        "train-reward",
        "--kind",
        "alignment",
        "--from-database",
        "--out",
        &out,
    ]);
    assert!(
        !ok && stderr.contains("--from-database trains the aesthetic reward"),
        "{stderr}"
    );
    let (ok, _, stderr) = byteedit(&[
        "train-reward",
        "--kind",
        "aesthetic",
        "--from-database",
        "--out",
        &out,
    ]);
    assert!(!ok && stderr.contains("give --storage"), "{stderr}");
    let (ok, _, stderr) = byteedit(&["train-reward", "--kind", "aesthetic", "--out", &out]);
    assert!(!ok && stderr.contains("--data"), "{stderr}");

    let message = train(&path(d, "pairs.jsonl"), &[]);
    assert!(
        message.contains("nothing to start from") && message.contains("--init"),
        "{message}"
    );

    let message = train(&path(d, "pairs.jsonl"), &["--config", &config, "--lr", "0"]);
    assert!(
        message.contains("`lr` must be a positive number"),
        "{message}"
    );

    let (ok, _, stderr) = byteedit(&[
        "score",
        "--reward",
        &tokenizer().to_string_lossy(),
        "--image",
        &path(d, "red.png"),
    ]);
    assert!(!ok && stderr.contains("give --prompt"), "{stderr}");
    let (ok, _, stderr) = byteedit(&[
        "score",
        "--reward",
        &tokenizer().to_string_lossy(),
        "--image",
        &path(d, "missing.png"),
        "--prompt",
        "a",
    ]);
    assert!(!ok && stderr.contains("missing.png"), "{stderr}");
}
