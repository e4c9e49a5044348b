//! Model versions end to end: `byteedit finetune` (phase 2) exports a
//! folder, `byteedit versions register` uploads it to the service's
//! storage and records it; a worker given `NAME=registry:LINE` downloads
//! it into its cache (checked by digest; a damaged cache is fetched
//! again) and serves it with the version's 8 steps, which `GET
//! /v1/models` shows and jobs without `steps` get; `byteedit versions
//! compare` submits comparisons of it against its parent.

mod support;

use std::path::Path;
use std::process::Command;

use support::{MODEL, Service, tiny_model};

fn byteedit(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_byteedit"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn dataset(dir: &Path) -> std::path::PathBuf {
    let mut lines = String::new();
    for i in 0..3u32 {
        let img = image::RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 4) as u8, (i * 80) as u8])
        });
        img.save(dir.join(format!("img{i}.png"))).unwrap();
        lines.push_str(&format!(
            "{{\"image\": \"img{i}.png\", \"caption\": \"a red apple on the table\"}}\n"
        ));
    }
    std::fs::write(dir.join("data.jsonl"), lines).unwrap();
    dir.join("data.jsonl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_version_is_served_by_name_with_its_defaults_and_compared() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let out = dir.path().join("ft");
    std::fs::write(
        dir.path().join("ft.toml"),
        "phase = 2\nsteps = 1\nheld_out = 0\nwarmup_steps = 0\nlr = 1e-4\n[weights]\ndenoise = 0.0\n",
    )
    .unwrap();
    let reward = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rewards/tests/fixtures/imagereward-tiny"
    );
    let (ok, text) = byteedit(
        &[
            "finetune",
            "--model",
            tiny_model().to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--config",
            dir.path().join("ft.toml").to_str().unwrap(),
            "--reward",
            &format!("aesthetic={reward}"),
        ],
        &[],
    );
    assert!(ok, "{text}");
    assert!(text.contains("serve with 8 steps"), "{text}");

    let mut service = Service::start(1).await;
    let env = [
        ("DATABASE_URL", service.connect.database_url.as_str()),
        ("BYTEEDIT_STORAGE_URL", service.connect.storage_url.as_str()),
    ];
    let (ok, text) = byteedit(
        &[
            "versions",
            "register",
            "byteedit-inpaint",
            "--folder",
            out.to_str().unwrap(),
        ],
        &env,
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("registered byteedit-inpaint:1") && text.contains("serves with 8 steps"),
        "{text}"
    );
    let (ok, text) = byteedit(&["versions", "list"], &env);
    assert!(
        ok && text.contains("byteedit-inpaint:1\tphase 2\t1 steps trained\tserves 8 steps"),
        "{text}"
    );
    // Registering a folder that is no run says so.
    let (ok, text) = byteedit(
        &[
            "versions",
            "register",
            "x",
            "--folder",
            tiny_model().to_str().unwrap(),
        ],
        &env,
    );
    assert!(
        !ok && text.contains("is not a finished fine-tuning run"),
        "{text}"
    );

    let cache = dir.path().join("cache");
    let worker_cache = cache.clone();
    service
        .add_worker_with(&[], move |args| {
            args.models = vec!["ft=registry:byteedit-inpaint".parse().unwrap()];
            args.model_cache = worker_cache;
        })
        .await;
    let cached: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let unet = "unet/diffusion_pytorch_model.safetensors";
    assert_eq!(
        std::fs::read(cached[0].join(unet)).unwrap(),
        std::fs::read(out.join(unet)).unwrap()
    );
    assert!(
        !cached[0].join("training").exists(),
        "the run's state is not part of the version"
    );

    let (status, models) = service.get("/v1/models").await;
    assert_eq!(status, 200);
    let ft = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "ft")
        .cloned()
        .unwrap_or_default();
    assert_eq!(ft["default_steps"], 8, "{models}");

    // A damaged cache is noticed and fetched again.
    std::fs::write(cached[0].join(unet), b"damaged").unwrap();
    let worker_cache = cache.clone();
    service
        .add_worker_with(&[], move |args| {
            args.models = vec!["ft=registry:byteedit-inpaint:1".parse().unwrap()];
            args.model_cache = worker_cache;
        })
        .await;
    assert_eq!(
        std::fs::read(cached[0].join(unet)).unwrap(),
        std::fs::read(out.join(unet)).unwrap()
    );

    // Compare against the parent over a folder of inputs.
    let inputs = dir.path().join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::write(
        inputs.join("apple.png"),
        support::fixture_bytes("expected_image.png"),
    )
    .unwrap();
    std::fs::write(
        inputs.join("apple.mask.png"),
        support::fixture_bytes("expected_mask.png"),
    )
    .unwrap();
    std::fs::write(inputs.join("apple.txt"), "a red apple").unwrap();
    let (ok, text) = byteedit(
        &[
            "versions",
            "compare",
            "ft",
            MODEL,
            "--inputs",
            inputs.to_str().unwrap(),
            "--api",
            &service.base,
            "--key",
            &service.admin_key,
        ],
        &[],
    );
    assert!(
        ok && text.contains("submitted 1 comparisons of ft against tiny"),
        "{text}"
    );
    let (status, gsb) = service
        .get_as(
            "/v1/stats/gsb?candidate=ft&baseline=tiny",
            &service.admin_key,
        )
        .await;
    assert_eq!(status, 200, "{gsb}");
    let (status, jobs) = service.get_as("/v1/jobs", &service.admin_key).await;
    assert_eq!(status, 200, "{jobs}");
    let job = jobs["jobs"]
        .as_array()
        .and_then(|all| all.iter().find(|j| j["model"] == "ft"))
        .and_then(|j| j["id"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no ft job: {jobs}"));
    let done = service
        .wait_for_as(&service.admin, &job, |j| j["status"] == "succeeded")
        .await;
    assert_eq!(done["parameters"]["steps"], 8, "{done}");
    // A name that is not registered stops the worker with a sentence.
    let backends = byteedit_jobs::Backends::connect(&service.connect)
        .await
        .unwrap();
    let mut args =
        byteedit_worker::WorkerArgs::for_models(vec!["x=registry:nothing".parse().unwrap()]);
    args.model_cache = cache.clone();
    let err = byteedit_worker::Worker::start::<byteedit_models::CpuBackend>(
        args,
        backends,
        Default::default(),
    )
    .await
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("no registered version of `nothing`"), "{err}");
    service.finish().await;
}

/// The training commands take `--device` like `edit` and the worker; a build
/// without CUDA (or a machine without the driver) says so, and names the fix,
/// before any model is loaded.
#[test]
fn training_on_a_device_this_build_cannot_use_is_refused_with_a_sentence() {
    if cfg!(feature = "cuda") && Path::new("/dev/nvidiactl").exists() {
        return; // this machine can train on CUDA: nothing to refuse
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let out = dir.path().join("out");
    let model = tiny_model();
    let commands: [Vec<&str>; 2] = [
        vec!["finetune", "--model", model.to_str().unwrap()],
        vec!["train-reward", "--kind", "aesthetic"],
    ];
    for command in commands {
        let mut args = command.clone();
        args.extend([
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        args.extend(["--device", "cuda:1"]);
        let (ok, text) = byteedit(&args, &[]);
        assert!(!ok, "{text}");
        assert!(
            text.contains("rebuild with `--features cuda`") || text.contains("NVIDIA driver"),
            "{command:?}: {text}"
        );
        args.pop();
        args.push("tpu");
        let (ok, text) = byteedit(&args, &[]);
        assert!(
            !ok && text.contains("cpu, cuda, cuda:N"),
            "{command:?}: {text}"
        );
        assert!(!out.exists(), "{command:?} started a run");
    }
}
