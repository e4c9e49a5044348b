//! Feedback fine-tuning on the tiny inpainting model, CPU: a short PeFL run
//! raises the frozen R_α's mean score of held-out edits while the pixels
//! the masks keep stay as close to the input as before; the exported
//! folder reproduces the training-time EMA model's evaluation exactly; a
//! phase-2 run starts from phase 1's weights; a LoRA run stopped and
//! resumed ends where an uninterrupted one does; and what cannot train is
//! refused with a sentence.

use std::path::{Path, PathBuf};

use byteedit_models::{CpuBackend, InpaintModel, TrainingBackend};
use byteedit_rewards::RewardFolder;
use byteedit_trainer::finetune::config::FinetuneConfig;
use byteedit_trainer::finetune::data::read_dataset;
use byteedit_trainer::finetune::pefl::Feedback;
use byteedit_trainer::finetune::train::{
    CoherenceStart, FinetuneRequest, FinetuneSummary, Progress, evaluate_held_out, finetune,
};

type AD = TrainingBackend<CpuBackend>;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn tiny_model() -> PathBuf {
    root().join("models/tests/fixtures/sd15-inpaint-tiny")
}

fn reward() -> PathBuf {
    root().join("rewards/tests/fixtures/imagereward-tiny")
}

/// Six smooth 64x64 pictures with one caption (the tiny reward's case 0).
fn dataset(dir: &Path) -> PathBuf {
    let mut lines = String::new();
    for i in 0..6u32 {
        let img = image::RgbImage::from_fn(64, 64, |x, y| {
            let f = |a: f32| (127.0 + 100.0 * a.sin()) as u8;
            image::Rgb([
                f(x as f32 / 9.0 + i as f32),
                f(y as f32 / 7.0 + 2.0 * i as f32),
                f((x + y) as f32 / 13.0),
            ])
        });
        img.save(dir.join(format!("img{i}.png"))).unwrap();
        lines.push_str(&format!(
            "{{\"image\": \"img{i}.png\", \"caption\": \"a red apple on the table\"}}\n"
        ));
    }
    let path = dir.join("data.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

fn config() -> FinetuneConfig {
    let mut c: FinetuneConfig = toml::from_str(
        r#"
        steps = 4
        batch = 1
        lr = 5e-4
        warmup_steps = 0
        ema_decay = 0.5
        save_every = 100
        held_out = 2
        [weights]
        aesthetic = 1.0
        alignment = 0.0
        coherence = 0.05
        eta = 0.1
        denoise = 0.0
        [fresh_coherence]
        kind = "coherence"
        mask_channel = true
        [fresh_coherence.vision]
        img_size = 32
        patch_size = 8
        embed_dim = 16
        depth = 1
        num_heads = 2
        in_chans = 4
        "#,
    )
    .unwrap();
    c.seed = 3;
    c
}

fn request(data: &Path, out: &Path, config: FinetuneConfig) -> FinetuneRequest {
    FinetuneRequest {
        model: tiny_model(),
        data: data.to_owned(),
        out: out.to_owned(),
        aesthetic: Some(reward()),
        alignment: None,
        coherence: CoherenceStart::Fresh,
        vgg: None,
        config,
        resume: false,
        stop_after: None,
    }
}

fn run(request: &FinetuneRequest) -> byteedit_trainer::Result<FinetuneSummary> {
    finetune::<AD>(request, &Default::default(), &mut |_: Progress| {})
}

/// The held-out evaluation of the folder at `dir`, as the run computes it.
fn evaluate(
    run: &FinetuneRequest,
    dir: &Path,
    summary: &FinetuneSummary,
    step: u64,
) -> byteedit_trainer::finetune::train::EvalLine {
    let device = Default::default();
    let model = InpaintModel::<CpuBackend>::load(dir, &device).unwrap();
    let feedback = Feedback::<AD> {
        aesthetic: Some(RewardFolder::load(&reward(), &device).unwrap()),
        alignment: None,
        vgg: None,
    };
    let (held, masks) = byteedit_trainer::finetune::train::held_out_set(run).unwrap();
    evaluate_held_out::<AD>(
        &model,
        &feedback,
        &held,
        &masks,
        summary.phase.steps,
        run.config.seed,
        step,
        &device,
    )
    .unwrap()
}

#[test]
fn a_short_run_raises_the_held_out_reward_and_exports_the_ema_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let out = dir.path().join("phase1");
    let req = request(&data, &out, config());
    let summary = run(&req).unwrap();
    let (first, last) = (
        summary.first_eval.clone().unwrap(),
        summary.last_eval.clone().unwrap(),
    );
    assert_eq!((first.step, last.step), (0, 4));
    let (before, after) = (
        first.held_out_aesthetic.unwrap(),
        last.held_out_aesthetic.unwrap(),
    );
    assert!(
        after > before + 1e-3,
        "R_α of held-out edits: {before} → {after}"
    );
    // The kept pixels stay within 0.02 (of 1) of where the starting model left them.
    assert!(
        last.held_out_unmasked_l1 <= first.held_out_unmasked_l1 + 0.02,
        "unmasked L1 {} → {}",
        first.held_out_unmasked_l1,
        last.held_out_unmasked_l1
    );
    // The folder at --out is the EMA model: `edit` on it gives the same evaluation, exactly.
    assert_eq!(evaluate(&req, &out, &summary, 4), last);
    assert!(
        out.join("training/metrics.jsonl").is_file() && out.join("training/rewards.png").is_file()
    );

    // Phase 2 starts from phase 1's weights: its step-0 evaluation is phase 1's model at 8 steps.
    let mut c2 = config();
    c2.phase = 2;
    c2.steps = 1;
    let mut req2 = request(&data, &dir.path().join("phase2"), c2);
    req2.model = out.clone();
    let summary2 = run(&req2).unwrap();
    assert_eq!(
        (
            summary2.phase.steps,
            summary2.phase.skip_from,
            summary2.phase.grad_max
        ),
        (8, 6, 3)
    );
    assert_eq!(summary2.serving_steps, 8);
    let mut start = evaluate(&req2, &out, &summary2, 0);
    start.step = 0;
    assert_eq!(summary2.first_eval.unwrap(), start);
}

#[test]
fn a_lora_run_stopped_and_resumed_ends_where_an_uninterrupted_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let mut c = config();
    c.steps = 3;
    c.held_out = 1;
    c.lora = Some(byteedit_models::lora::LoraSpec::new(2));
    c.lr = 5e-3;
    let straight = request(&data, &dir.path().join("straight"), c.clone());
    run(&straight).unwrap();
    let mut stopped = request(&data, &dir.path().join("resumed"), c.clone());
    stopped.stop_after = Some(2);
    run(&stopped).unwrap();
    // Not resumable without --resume, and not from another config.
    let again = run(&stopped).unwrap_err().to_string();
    assert!(again.contains("pass --resume"), "{again}");
    let mut other = stopped.clone();
    other.resume = true;
    other.config.lr = 1e-3;
    let refused = run(&other).unwrap_err().to_string();
    assert!(refused.contains("these differ: config.lr"), "{refused}");
    let mut resumed = stopped.clone();
    resumed.resume = true;
    resumed.stop_after = None;
    run(&resumed).unwrap();
    let unet = "unet/diffusion_pytorch_model.safetensors";
    let a = std::fs::read(dir.path().join("straight").join(unet)).unwrap();
    let b = std::fs::read(dir.path().join("resumed").join(unet)).unwrap();
    assert!(
        a == b,
        "the resumed run's export differs from the uninterrupted one's"
    );
    // The adapters were merged: the export has the base model's names only.
    let keys = |p: &Path| -> Vec<String> {
        let store =
            byteedit_models::weights::TensorStore::open_files(p.parent().unwrap(), &[p.to_owned()])
                .unwrap();
        store.keys().into_iter().map(String::from).collect()
    };
    let exported = dir.path().join("straight").join(unet);
    assert_eq!(keys(&exported), keys(&tiny_model().join(unet)));
    assert!(
        a != std::fs::read(tiny_model().join(unet)).unwrap(),
        "LoRA changed nothing"
    );
}

#[test]
fn what_cannot_train_is_refused_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let out = dir.path().join("out");
    let refusal = |req: &FinetuneRequest| run(req).err().map(|e| e.to_string()).unwrap_or_default();

    let mut wrong_kind = request(&data, &out, config());
    let coherence_dir = root().join("trainer/tests/fixtures/pefl/coherence");
    wrong_kind.aesthetic = Some(coherence_dir.clone());
    let m = refusal(&wrong_kind);
    assert!(
        m.contains("is a `coherence` reward folder; aesthetic needs an ImageReward-style one"),
        "{m}"
    );
    let mut wrong_kind = request(&data, &out, config());
    wrong_kind.coherence = CoherenceStart::Folder(reward());
    let m = refusal(&wrong_kind);
    assert!(
        m.contains("is a `imagereward` reward folder; it needs a coherence"),
        "{m}"
    );

    let mut not_inpainting = request(&data, &out, config());
    not_inpainting.model = reward();
    let m = refusal(&not_inpainting);
    assert!(m.contains("not a diffusers model folder"), "{m}");

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let m = refusal(&request(&empty, &out, config()));
    assert!(m.contains("no images to fine-tune on"), "{m}");

    for (steps, skip_from, grad_max) in [(8, 8, 3), (8, 6, 6), (8, 0, 0)] {
        let mut c = config();
        c.schedule = Some(byteedit_trainer::finetune::config::PhaseConfig {
            steps,
            skip_from,
            grad_max,
        });
        let m = refusal(&request(&data, &out, c));
        assert!(m.contains("it needs 1 <= T2 < T1 < T"), "{m}");
    }
    let mut c = config();
    c.phase = 3;
    assert!(refusal(&request(&data, &out, c)).contains("phase is 3: it must be 1 or 2"));
    // Nothing was written by any refusal.
    assert!(!out.join("training/state/state.json").exists());
    // The data reader reports a missing image by path.
    std::fs::write(
        dir.path().join("bad.jsonl"),
        "{\"image\": \"nope.png\", \"caption\": \"x\"}\n",
    )
    .unwrap();
    let m = read_dataset(&dir.path().join("bad.jsonl"), 64)
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("nope.png") && m.contains("cannot read the image"),
        "{m}"
    );
}
