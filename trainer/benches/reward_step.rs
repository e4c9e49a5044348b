//! One training step of R_α (ImageReward) on the CPU: the preference loss of
//! `batch` pairs (2·batch images through the ViT and the cross-attending
//! BERT), backward, and the AdamW update, with ImageReward's `fix_rate` 0.7
//! freezing. Prints one JSON line: seconds per step (median of `--steps`
//! after a warm-up) and peak resident memory. `bench/reward_step.sh` runs it
//! next to the same step in PyTorch.
//!
//! cargo bench -p byteedit-trainer --bench reward_step -- --size tiny|full --batch 8 --steps 3

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;
use byteedit_models::memory::peak_rss_mib;
use byteedit_models::params::{gradients, map_flat, same_key, set_trainable};
use byteedit_models::{CpuBackend, TrainingBackend};
use byteedit_rewards::text::TextConfig;
use byteedit_rewards::tokenizer::Encoded;
use byteedit_rewards::{ImageReward, RewardConfig};
use byteedit_trainer::optim::{AdamW, AdamWConfig, Keyed, accumulate};

mod common;
use common::arg;

type B = TrainingBackend<CpuBackend>;

fn configs(size: &str) -> (RewardConfig, TextConfig) {
    let text = |hidden: usize, layers: usize, heads: usize, inter: usize, vocab: usize| {
        serde_json::from_value::<TextConfig>(serde_json::json!({
            "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
            "intermediate_size": inter, "layer_norm_eps": 1e-12,
            "max_position_embeddings": 512, "vocab_size": vocab
        }))
        .unwrap()
    };
    match size {
        "full" => (RewardConfig::released(), text(768, 12, 12, 3072, 30524)),
        _ => {
            let dir = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../rewards/tests/fixtures/imagereward-tiny"
            );
            (
                RewardConfig::read(std::path::Path::new(dir)).unwrap(),
                TextConfig::read(std::path::Path::new(dir)).unwrap(),
            )
        }
    }
}

fn main() {
    let size = arg("--size", "tiny");
    let batch: usize = arg("--batch", "8").parse().unwrap();
    let steps: usize = arg("--steps", "3").parse().unwrap();
    let (config, text) = configs(&size);
    let device = Default::default();
    let model = ImageReward::<B>::fresh(&config, &text, 0, &device).unwrap();
    let (layers, depth) = (text.num_hidden_layers, config.vision.depth);
    let frozen = |key: &str, prefix: &str, n: usize| {
        key.strip_prefix(prefix)
            .and_then(|r| r.split('.').next()?.parse::<usize>().ok())
            .is_some_and(|i| i < (n as f64 * 0.7) as usize)
    };
    let trainable = |key: &str| {
        !(key.starts_with("blip.text_encoder.embeddings.")
            || key.starts_with("blip.visual_encoder.patch_embed.")
            || key.ends_with("cls_token")
            || key.ends_with("pos_embed")
            || frozen(key, "blip.text_encoder.encoder.layer.", layers)
            || frozen(key, "blip.visual_encoder.blocks.", depth))
    };
    let mut model = set_trainable(model, &same_key, &trainable);
    let s = config.vision.img_size;
    let pixels = Tensor::<CpuBackend, 4>::random(
        [2 * batch, 3, s, s],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    // 35 tokens, 12 of them real: a prompt as the tokenizer pads it.
    let prompt = Encoded {
        ids: (0..35u32)
            .map(|i| if i < 12 { 100 + i } else { 0 })
            .collect(),
        attention_mask: (0..35u32).map(|i| u32::from(i < 12)).collect(),
    };
    let prompts = vec![prompt; 2 * batch];
    let mut optimizer = AdamW::<CpuBackend>::new(AdamWConfig::default());
    let mut times = Vec::new();
    for step in 0..=steps {
        let start = Instant::now();
        let raw = model
            .raw_score(Tensor::from_inner(pixels.clone()), &prompts)
            .reshape([2 * batch]);
        let (p, r) = (raw.clone().slice(0..batch), raw.slice(batch..2 * batch));
        let loss = log_sigmoid(p - r).neg().mean();
        let grads = loss.backward();
        let mut summed: Keyed<CpuBackend> = Keyed::new();
        accumulate(&mut summed, gradients(&model, &grads, &same_key));
        optimizer.begin_step();
        model = map_flat(model, &same_key, &mut |key, flat| {
            let grad = summed.remove(key)?;
            Some(Tensor::from_inner(optimizer.update(
                key,
                flat.inner(),
                grad,
                1e-5,
            )))
        });
        if step > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "engine": "byteedit", "size": size, "batch": batch,
            "step_seconds": times[times.len() / 2], "peak_rss_mib": peak_rss_mib(),
        })
    );
}
