//! The reward trainer learns rules it is shown: on synthetic preference
//! sets whose rule is known, tiny fresh models reach ≥ 90 % held-out
//! pairwise accuracy; what it saves scores new data as well; a run stopped
//! and resumed ends with the same weights as one that never stopped.

use std::io::Write;
use std::path::{Path, PathBuf};

use byteedit_models::weights::TensorStore;
use byteedit_models::{CpuBackend, TrainingBackend};
use byteedit_rewards::RewardFolder;
use byteedit_rewards::text::TextConfig;
use byteedit_trainer::config::FreshModel;
use byteedit_trainer::{Progress, RewardKind, TrainConfig, TrainRequest, train_reward};
use rand::{Rng, SeedableRng};

type B = TrainingBackend<CpuBackend>;

const COLOURS: [(&str, [u8; 3]); 4] = [
    ("red", [220, 30, 30]),
    ("green", [30, 200, 40]),
    ("blue", [30, 50, 220]),
    ("yellow", [230, 220, 30]),
];

fn tokenizer_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rewards/tests/fixtures/imagereward-tiny"
    ))
}

/// A noisy grey 40x36 picture with a square of `colour` somewhere.
fn picture(path: &Path, colour: [u8; 3], rng: &mut impl Rng) {
    let (w, h) = (40u32, 36u32);
    let (x0, y0) = (rng.random_range(0..w - 16), rng.random_range(0..h - 16));
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        if (x0..x0 + 16).contains(&x) && (y0..y0 + 16).contains(&y) {
            image::Rgb(colour)
        } else {
            let g = rng.random_range(90..170);
            image::Rgb([g, g, g])
        }
    });
    img.save(path).unwrap();
}

/// `n` pairs of `kind` whose rule is the colour the prompt names, written
/// as the command line's JSON Lines next to their images.
fn synthetic(dir: &Path, kind: RewardKind, n: usize, seed: u64) -> PathBuf {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let data = dir.join("pairs.jsonl");
    let mut file = std::fs::File::create(&data).unwrap();
    for i in 0..n {
        let named = rng.random_range(0..COLOURS.len());
        let other = (named + rng.random_range(1..COLOURS.len())) % COLOURS.len();
        let (name, colour) = COLOURS[named];
        let line = match kind {
            RewardKind::Coherence => unreachable!("coherence data come from `pasted_patches`"),
            RewardKind::Aesthetic => {
                let (good, bad) = (format!("{i}-good.png"), format!("{i}-bad.png"));
                picture(&dir.join(&good), colour, &mut rng);
                picture(&dir.join(&bad), COLOURS[other].1, &mut rng);
                serde_json::json!({"prompt": format!("a {name} apple"), "preferred": good, "rejected": bad})
            }
            RewardKind::Alignment => {
                let image = format!("{i}.png");
                picture(&dir.join(&image), colour, &mut rng);
                serde_json::json!({
                    "image": image,
                    "preferred_caption": format!("a {name} car"),
                    "rejected_caption": format!("a {} car", COLOURS[other].0),
                })
            }
        };
        writeln!(file, "{line}").unwrap();
    }
    data
}

fn tiny_config(steps: u64) -> TrainConfig {
    let reward: byteedit_rewards::RewardConfig = serde_json::from_value(serde_json::json!({
        "kind": "imagereward",
        "vision": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 4},
        "text_max_length": 12,
        "score_mean": 0.0, "score_std": 1.0,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "head": [32, 16, 1]
    }))
    .unwrap();
    let text: TextConfig = serde_json::from_value(serde_json::json!({
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "layer_norm_eps": 1e-12,
        "max_position_embeddings": 16, "vocab_size": 134
    }))
    .unwrap();
    TrainConfig {
        batch: 16,
        micro_batch: 16,
        steps: Some(steps),
        lr: 2e-3,
        warmup_steps: 10,
        fix_rate: 0.0,
        validation_fraction: 0.2,
        eval_every: Some(20),
        seed: 3,
        fresh: Some(FreshModel {
            reward,
            text,
            tokenizer: tokenizer_dir(),
        }),
        ..TrainConfig::default()
    }
}

fn request(kind: RewardKind, data: PathBuf, out: PathBuf, config: TrainConfig) -> TrainRequest {
    TrainRequest {
        kind,
        data,
        out,
        init: None,
        storage: None,
        resume: false,
        stop_after: None,
        config,
    }
}

/// Accuracy of the saved folder on fresh pairs of the same rule.
fn accuracy_on_new_pairs(folder: &Path, kind: RewardKind) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), kind, 40, 99);
    let model = RewardFolder::<CpuBackend>::load(folder, &Default::default()).unwrap();
    let pairs = byteedit_trainer::data::read_pairs(&data, kind, None, false).unwrap();
    let correct = pairs
        .iter()
        .filter(|p| {
            let score = |s: &byteedit_trainer::data::Sample| {
                model
                    .score_files(
                        std::slice::from_ref(&s.image),
                        &[&s.prompt],
                        &Default::default(),
                    )
                    .unwrap()[0]
            };
            score(&p.preferred) > score(&p.rejected)
        })
        .count();
    correct as f64 / pairs.len() as f64
}

fn learns(kind: RewardKind) {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), kind, 200, 1);
    let out = dir.path().join("reward");
    let mut evals = Vec::new();
    let summary = train_reward::<B>(
        &request(kind, data, out.clone(), tiny_config(100)),
        &Default::default(),
        &mut |p| {
            if let Progress::Eval(e) = p {
                evals.push(e.score());
            }
        },
    )
    .unwrap();
    eprintln!("{kind:?}: held-out accuracy by evaluation {evals:?}");
    assert!(
        summary.held_out_score >= 0.9,
        "{kind:?}: held-out accuracy {} (evals {evals:?})",
        summary.held_out_score
    );
    for file in [
        "model.safetensors",
        "reward_config.json",
        "med_config.json",
        "vocab.txt",
        "metrics.jsonl",
        "loss.png",
        "accuracy.png",
        "training.json",
    ] {
        assert!(out.join(file).is_file(), "{file} was not written");
    }
    let new = accuracy_on_new_pairs(&out, kind);
    assert!(
        new >= 0.85,
        "{kind:?}: the saved model scores new pairs right {new}"
    );
}

#[test]
fn the_aesthetic_reward_learns_which_image_shows_the_named_colour() {
    learns(RewardKind::Aesthetic);
}

#[test]
fn the_alignment_reward_learns_which_caption_names_the_colour_shown() {
    learns(RewardKind::Alignment);
}

fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let path = dir.join("state/model.safetensors");
    let store = TensorStore::open_files(dir, &[path]).unwrap();
    store
        .keys()
        .into_iter()
        .map(|k| {
            let shape = store.shape(k).unwrap().to_vec();
            (k.to_owned(), store.read_f32(k, &shape, &[]).unwrap())
        })
        .collect()
}

#[test]
fn a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), RewardKind::Aesthetic, 40, 5);
    let mut config = tiny_config(12);
    config.eval_every = Some(5);
    config.ema_decay = Some(0.9);
    config.max_grad_norm = Some(1.0);
    let device = Default::default();
    let whole = dir.path().join("whole");
    train_reward::<B>(
        &request(
            RewardKind::Aesthetic,
            data.clone(),
            whole.clone(),
            config.clone(),
        ),
        &device,
        &mut |_| {},
    )
    .unwrap();

    let parts = dir.path().join("parts");
    let mut first = request(
        RewardKind::Aesthetic,
        data.clone(),
        parts.clone(),
        config.clone(),
    );
    first.stop_after = Some(7);
    train_reward::<B>(&first, &device, &mut |_| {}).unwrap();
    // Without --resume the folder is not overwritten.
    let again = train_reward::<B>(
        &request(
            RewardKind::Aesthetic,
            data.clone(),
            parts.clone(),
            config.clone(),
        ),
        &device,
        &mut |_| {},
    );
    assert!(again.unwrap_err().to_string().contains("--resume"));
    let mut rest = request(RewardKind::Aesthetic, data, parts.clone(), config);
    rest.resume = true;
    let mut first_step = 0;
    train_reward::<B>(&rest, &device, &mut |p| {
        if let Progress::Started { first_step: s, .. } = p {
            first_step = s;
        }
    })
    .unwrap();
    assert_eq!(first_step, 8);
    assert_eq!(weights(&whole), weights(&parts));
    assert_eq!(
        std::fs::read(whole.join("model.safetensors")).unwrap(),
        std::fs::read(parts.join("model.safetensors")).unwrap()
    );
}

/// `n` smooth "photos" (colour gradients); four in five have a square
/// pasted in under another exposure, with its mask.
fn pasted_patches(dir: &Path, n: usize, seed: u64) -> PathBuf {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let data = dir.join("edits.jsonl");
    let mut file = std::fs::File::create(&data).unwrap();
    let (w, h) = (40u32, 40u32);
    for i in 0..n {
        let base: [f32; 3] = [
            rng.random_range(40.0..200.0),
            rng.random_range(40.0..200.0),
            rng.random_range(40.0..200.0),
        ];
        let slope: [f32; 3] = [
            rng.random_range(-1.5..1.5),
            rng.random_range(-1.5..1.5),
            rng.random_range(-1.5..1.5),
        ];
        // The pasted patch: the scene under another exposure and white
        // balance, as a badly blended fill looks.
        let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        let shift: [f32; 3] = std::array::from_fn(|_| sign * rng.random_range(90.0..130.0));
        let side = rng.random_range(10..18);
        let (x0, y0) = (rng.random_range(0..w - side), rng.random_range(0..h - side));
        let pasted = i % 5 != 0;
        let inside =
            |x: u32, y: u32| pasted && (x0..x0 + side).contains(&x) && (y0..y0 + side).contains(&y);
        let image = image::RgbImage::from_fn(w, h, |x, y| {
            let c = |k: usize| {
                let smooth = base[k] + slope[k] * (x + y) as f32;
                let v = if inside(x, y) {
                    smooth + shift[k]
                } else {
                    smooth
                };
                v.clamp(0.0, 255.0) as u8
            };
            image::Rgb([c(0), c(1), c(2)])
        });
        image.save(dir.join(format!("{i}.png"))).unwrap();
        let line = if pasted {
            let mask = image::GrayImage::from_fn(w, h, |x, y| {
                image::Luma([if inside(x, y) { 255 } else { 0 }])
            });
            mask.save(dir.join(format!("{i}.mask.png"))).unwrap();
            serde_json::json!({"image": format!("{i}.png"), "mask": format!("{i}.mask.png")})
        } else {
            serde_json::json!({"image": format!("{i}.png")})
        };
        writeln!(file, "{line}").unwrap();
    }
    data
}

#[test]
fn the_coherence_reward_learns_which_pixels_were_pasted_in() {
    let dir = tempfile::tempdir().unwrap();
    let data = pasted_patches(dir.path(), 100, 8);
    let out = dir.path().join("coherence");
    let mut config = tiny_config(120);
    config.fresh = None;
    config.fresh_coherence = Some(
        serde_json::from_value(serde_json::json!({
            "kind": "coherence",
            "vision": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 4}
        }))
        .unwrap(),
    );
    let mut evals = Vec::new();
    let summary = train_reward::<B>(
        &request(RewardKind::Coherence, data, out.clone(), config),
        &Default::default(),
        &mut |p| {
            if let Progress::Eval(e) = p {
                evals.push(e.score());
            }
        },
    )
    .unwrap();
    eprintln!("coherence: held-out AUC by evaluation {evals:?}");
    assert!(
        summary.held_out_score >= 0.9,
        "per-pixel AUC {} (evals {evals:?})",
        summary.held_out_score
    );
    for file in [
        "model.safetensors",
        "reward_config.json",
        "metrics.jsonl",
        "loss.png",
        "auc.png",
        "training.json",
    ] {
        assert!(out.join(file).is_file(), "{file} was not written");
    }
    // The saved folder reloads and gives the same logits twice.
    let folder =
        byteedit_rewards::CoherenceFolder::<CpuBackend>::load(&out, &Default::default()).unwrap();
    let pixels = byteedit_rewards::folder::read_pixels::<CpuBackend>(
        &dir.path().join("1.png"),
        &Default::default(),
    )
    .unwrap();
    let a: Vec<f32> = folder
        .logits(pixels.clone(), None)
        .into_data()
        .to_vec()
        .unwrap();
    let again =
        byteedit_rewards::CoherenceFolder::<CpuBackend>::load(&out, &Default::default()).unwrap();
    let b: Vec<f32> = again.logits(pixels, None).into_data().to_vec().unwrap();
    assert_eq!(a, b);
}
