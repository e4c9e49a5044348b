//! End to end: volunteers' votes through the real API → the preference
//! export → `byteedit train-reward --register` → a checkpoint in the
//! registry (`GET /v1/rewards`) whose held-out agreement with the votes is
//! better than chance. The candidate model is the tiny model with a VAE
//! that decodes brighter, and the volunteer follows a rule a model can
//! learn: the brighter result is better.

mod support;

use std::path::Path;
use std::process::Command;

use byteedit_models::weights::{SaveDtype, TensorStore, save_safetensors};

use serde_json::{Value, json};
use support::{Service, authorized, tiny_model};

const CANDIDATE: &str = "tiny-v2";
const BASELINE: &str = "tiny";
const PAIRS: usize = 16;

fn brightness(png: &[u8]) -> f64 {
    let img = image::load_from_memory(png).unwrap().to_luma8();
    img.pixels().map(|p| f64::from(p[0])).sum::<f64>() / f64::from(img.width() * img.height())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The tiny model whose VAE decoder adds `shift` to every output value.
fn brighter_model(dir: &Path, shift: f32) {
    copy_dir(&tiny_model(), dir);
    let path = dir.join("vae/diffusion_pytorch_model.safetensors");
    let store = TensorStore::open_files(&dir.join("vae"), std::slice::from_ref(&path)).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = store
        .keys()
        .into_iter()
        .map(|k| {
            let shape = store.shape(k).unwrap().to_vec();
            let mut values = store.read_f32(k, &shape, &[]).unwrap();
            if k == "decoder.conv_out.bias" {
                values.iter_mut().for_each(|v| *v += shift);
            }
            (k.to_owned(), shape, values)
        })
        .collect();
    drop(store);
    save_safetensors(&path, &tensors, SaveDtype::F32).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_train_a_registered_reward_that_agrees_with_held_out_votes() {
    let models = tempfile::tempdir().unwrap();
    let brighter = models.path().join("tiny-brighter");
    brighter_model(&brighter, 0.6);
    let mut service = Service::start(0).await;
    service
        .add_worker_with(&[BASELINE, CANDIDATE], |args| {
            args.models[1].dir = brighter.clone()
        })
        .await;
    let mut comparisons = Vec::new();
    for _ in 0..PAIRS {
        comparisons.push(service.comparison_run(CANDIDATE, BASELINE, "inpaint").await);
    }
    let ann = service.volunteer("ann", false).await;
    let as_ann = authorized(&ann);
    for _ in 0..PAIRS {
        let (status, next) = service.get_as("/v1/comparisons/next", &ann).await;
        assert_eq!(status, 200, "{next}");
        let mut light = Vec::new();
        for side in ["left", "right"] {
            let (status, _, png) = service
                .download_as(&as_ann, next[side]["url"].as_str().unwrap())
                .await;
            assert_eq!(status, 200);
            light.push(brightness(&png));
        }
        assert!(
            (light[0] - light[1]).abs() > 1.0,
            "the two models' results look alike: {light:?}"
        );
        let choice = if light[0] >= light[1] {
            "left"
        } else {
            "right"
        };
        let path = format!(
            "/v1/comparisons/{}/votes",
            next["comparison_id"].as_str().unwrap()
        );
        let (status, vote) = service
            .post_json(
                &path,
                Some(&ann),
                json!({"choice": choice, "presentation_id": next["presentation_id"]}),
            )
            .await;
        assert_eq!(status, 201, "{vote}");
    }

    let export = service
        .admin
        .get(service.url("/v1/preferences/export"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(export.lines().count(), PAIRS);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("votes.jsonl");
    std::fs::write(&data, &export).unwrap();
    let tokenizer = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rewards/tests/fixtures/imagereward-tiny"
    );
    let vision =
        json!({"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 4});
    let config = json!({
        "batch": 8, "micro_batch": 8, "steps": 60, "lr": 2e-3, "warmup_steps": 5, "fix_rate": 0.0,
        "validation_fraction": 0.25, "eval_every": 10, "seed": 1,
        "fresh": {
            "reward": {"kind": "imagereward", "vision": vision, "text_max_length": 12,
                       "score_mean": 0.0, "score_std": 1.0,
                       "image_mean": [0.48145466, 0.4578275, 0.40821073],
                       "image_std": [0.26862954, 0.26130258, 0.27577711], "head": [16, 1]},
            "text": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
                     "intermediate_size": 64, "layer_norm_eps": 1e-12,
                     "max_position_embeddings": 16, "vocab_size": 132},
            "tokenizer": tokenizer
        }
    });
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let out = dir.path().join("aesthetic");
    let db = &service.connect.database_url;
    let output = tokio::task::spawn_blocking({
        let (data, out, config_path, storage, db) = (
            data.clone(),
            out.clone(),
            config_path.clone(),
            service.storage_dir(),
            db.clone(),
        );
        move || {
            Command::new(env!("CARGO_BIN_EXE_byteedit"))
                .args([
                    "train-reward",
                    "--kind",
                    "aesthetic",
                    "--register",
                    "aesthetic-votes",
                ])
                .arg("--data")
                .arg(&data)
                .arg("--storage")
                .arg(&storage)
                .arg("--config")
                .arg(&config_path)
                .arg("--out")
                .arg(&out)
                .arg("--database-url")
                .arg(&db)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("registered aesthetic-votes version 1"),
        "{stdout}"
    );

    let (status, list) = service
        .get_as("/v1/rewards?kind=aesthetic", &service.admin_key)
        .await;
    assert_eq!(status, 200, "{list}");
    let rewards = list["rewards"].as_array().unwrap();
    assert_eq!(rewards.len(), 1, "{list}");
    let reward: &Value = &rewards[0];
    assert_eq!(
        (reward["name"].as_str(), reward["version"].as_i64()),
        (Some("aesthetic-votes"), Some(1))
    );
    assert_eq!(reward["metric"], "accuracy");
    assert_eq!(reward["data"]["held_out_examples"], 4);
    assert_eq!(
        reward["location"],
        std::fs::canonicalize(&out)
            .unwrap()
            .to_string_lossy()
            .as_ref()
    );
    let agreement = reward["held_out_score"].as_f64().unwrap();
    eprintln!("held-out agreement with the votes: {agreement}");
    assert!(
        agreement > 0.5,
        "held-out agreement with the votes {agreement}: no better than chance"
    );
    // The registered folder scores.
    assert!(out.join("model.safetensors").is_file());
    let (status, refused) = service
        .get_as("/v1/rewards?kind=beauty", &service.admin_key)
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`kind` must be one of")
    );
}
