//! One PeFL training step on the CPU: the generator step (stage 2 from T1
//! down to a fixed t′ without gradient, stage 3 with gradient, decode, the
//! reward, adversarial, L1 and denoising terms), its backward and AdamW
//! update, then the discriminator step and its update: what one iteration
//! of `byteedit finetune` costs. Prints one JSON line: seconds per step
//! (median of `--steps` after `--warmup` untimed ones, with its parts) and
//! peak resident memory.
//! `trainer/benches/run_pefl_step.sh` runs it next to the same step in PyTorch.
//!
//! cargo bench -p byteedit-trainer --bench pefl_step -- --model DIR --size 64 --lora 0 --steps 2

use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;
use byteedit_models::lora::LoraSpec;
use byteedit_models::memory::peak_rss_mib;
use byteedit_models::params::{gradients, map_flat, same_key, set_trainable};
use byteedit_models::{CpuBackend, InpaintModel, TrainingBackend};
use byteedit_rewards::{CoherenceFolder, RewardFolder};
use byteedit_trainer::finetune::config::{LossWeights, PhaseConfig};
use byteedit_trainer::finetune::pefl::{
    Batch, Feedback, PhaseSchedule, StepNoise, discriminator_step, generator_step,
};
use byteedit_trainer::optim::{AdamW, AdamWConfig, Keyed};

mod common;
use common::arg;

type B = TrainingBackend<CpuBackend>;

fn main() {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let model_dir = PathBuf::from(arg(
        "--model",
        root.join("models/tests/fixtures/sd15-inpaint-tiny")
            .to_str()
            .unwrap(),
    ));
    let size: u32 = arg("--size", "64").parse().unwrap();
    let rank: usize = arg("--lora", "0").parse().unwrap();
    let steps: usize = arg("--steps", "2").parse().unwrap();
    let t_prime: usize = arg("--t-prime", "10").parse().unwrap();
    // Untimed steps first (allocator and caches warm); 0 for runs too slow to repeat.
    let warmup: usize = arg("--warmup", "1").parse().unwrap();
    let device = Default::default();
    let lora = (rank > 0).then(|| LoraSpec::new(rank));
    let mut model = InpaintModel::<B>::load_with_lora(&model_dir, &device, lora).unwrap();
    let trained = move |key: &str| rank == 0 || key.contains(".lora_");
    model.unet = set_trainable(model.unet, &same_key, &trained);
    model.vae = set_trainable(model.vae, &same_key, &|_| false);
    model.text_encoder = set_trainable(model.text_encoder, &same_key, &|_| false);
    let fixtures = root.join("trainer/tests/fixtures/pefl");
    let mut reward = RewardFolder::<B>::load(
        &root.join("rewards/tests/fixtures/imagereward-tiny"),
        &device,
    )
    .unwrap();
    reward.model = set_trainable(reward.model, &same_key, &|_| false);
    let feedback = Feedback {
        aesthetic: Some(reward),
        alignment: None,
        vgg: None,
    };
    let coherence = CoherenceFolder::<B>::load(&fixtures.join("coherence"), &device).unwrap();
    let mut coherence =
        coherence.with_model(set_trainable(coherence.model.clone(), &same_key, &|_| true));
    let phase = PhaseConfig::paper(1).unwrap();
    let schedule = PhaseSchedule::new(&model, phase).unwrap();
    let weights = LossWeights::default();
    let image = image::RgbImage::from_fn(size, size, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mask = image::GrayImage::from_fn(size, size, |x, y| {
        let inside = (size / 4..3 * size / 4).contains(&x) && (size / 4..3 * size / 4).contains(&y);
        image::Luma([if inside { 255 } else { 0 }])
    });
    let batch = Batch {
        images: vec![image],
        masks: vec![mask],
        prompts: vec!["a red apple on the table".into()],
    };
    let lat = (size as usize) / model.vae_scale_factor();
    let c = model.vae.latent_channels();
    let noise = || {
        Tensor::<CpuBackend, 4>::random(
            [1, c, lat, lat],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        )
    };
    let mut g_opt = AdamW::<CpuBackend>::new(AdamWConfig::default());
    let mut d_opt = AdamW::<CpuBackend>::new(AdamWConfig::default());
    // Seconds of each part of a step: the generator's forward (stage 2
    // without gradient, stage 3 and the losses), its backward, the AdamW
    // update, and the discriminator step with its update.
    let mut times: Vec<[f64; 5]> = Vec::new();
    for i in 0..warmup + steps {
        let started = Instant::now();
        let step_noise = StepNoise {
            start: noise(),
            t_prime: vec![t_prime],
            denoise: noise(),
            denoise_t: vec![500],
        };
        let g = generator_step(
            &model,
            &schedule,
            &feedback,
            Some(&coherence),
            &weights,
            &batch,
            &step_noise,
        )
        .unwrap();
        let forward = started.elapsed().as_secs_f64();
        let grads = g.loss.backward();
        let mut summed: Keyed<CpuBackend> = gradients(&model.unet, &grads, &same_key)
            .into_iter()
            .collect();
        drop(grads);
        let backward = started.elapsed().as_secs_f64();
        g_opt.begin_step();
        model.unet = map_flat(model.unet, &same_key, &mut |key, flat| {
            let grad = summed.remove(key)?;
            Some(Tensor::from_inner(g_opt.update(
                key,
                flat.inner(),
                grad,
                2e-6,
            )))
        });
        let update = started.elapsed().as_secs_f64();
        let (d_loss, _) = discriminator_step(&coherence, g.real, g.generated, g.mask);
        let grads = d_loss.backward();
        let mut summed: Keyed<CpuBackend> = gradients(&coherence.model, &grads, &same_key)
            .into_iter()
            .collect();
        d_opt.begin_step();
        let updated = map_flat(coherence.model.clone(), &same_key, &mut |key, flat| {
            let grad = summed.remove(key)?;
            Some(Tensor::from_inner(d_opt.update(
                key,
                flat.inner(),
                grad,
                2e-6,
            )))
        });
        coherence = coherence.with_model(updated);
        if i >= warmup {
            let total = started.elapsed().as_secs_f64();
            times.push([
                total,
                forward,
                backward - forward,
                update - backward,
                total - update,
            ]);
        }
    }
    times.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let median = times[times.len() / 2];
    println!(
        "{}",
        serde_json::json!({
            "engine": "byteedit", "model": model_dir.file_name().unwrap().to_string_lossy(),
            "size": size, "lora": rank, "t_prime": t_prime, "warmup": warmup,
            "step_seconds": median[0], "forward_s": median[1], "backward_s": median[2],
            "update_s": median[3], "discriminator_s": median[4],
            "peak_rss_mib": peak_rss_mib(),
        })
    );
}
