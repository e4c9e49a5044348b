//! Gradient parity of one PeFL step with PyTorch (fixtures/pefl/make_reference.py,
//! diffusers' own UNet, VAE, text encoder and DDIM): on the tiny inpainting
//! fixture with LoRA adapters, the tiny ImageReward as R_α and R_β, a tiny
//! R_γ and a tiny VGG, the generator loss and each of its terms agree to
//! 1e-4 and the gradients of conv_in, a mid-block attention projection,
//! conv_out and a LoRA A/B pair to 1e-3 relative; the discriminator's loss
//! and its head's gradients likewise.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use byteedit_models::InpaintModel;
use byteedit_models::export::diffusers_key;
use byteedit_models::lora::LoraSpec;
use byteedit_models::params::{gradients, same_key, set_trainable};
use byteedit_models::weights::{SaveDtype, TensorStore, save_safetensors};
use byteedit_models::{CpuBackend, TrainingBackend};
use byteedit_rewards::{CoherenceFolder, RewardFolder};
use byteedit_trainer::finetune::config::{LossWeights, PhaseConfig};
use byteedit_trainer::finetune::pefl::{
    Batch, Feedback, PhaseSchedule, StepNoise, discriminator_step, generator_step,
};
use byteedit_trainer::vgg::Vgg16Features;

type AD = TrainingBackend<CpuBackend>;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn here() -> PathBuf {
    root().join("trainer/tests/fixtures/pefl")
}

fn read_all(path: &Path) -> TensorStore {
    TensorStore::open_files(path.parent().unwrap(), &[path.to_owned()]).unwrap()
}

fn tensor(store: &TensorStore, key: &str) -> (Vec<usize>, Vec<f32>) {
    let shape = store
        .shape(key)
        .unwrap_or_else(|| panic!("reference has no {key}"))
        .to_vec();
    let values = store.read_f32(key, &shape, &[]).unwrap();
    (shape, values)
}

/// The fixture model with the reference's adapters written into its UNet
/// file under peft's names: `load_with_lora` reads them from there.
fn model_with_adapters(dir: &Path) {
    let source = root().join("models/tests/fixtures/sd15-inpaint-tiny");
    for entry in walk(&source) {
        let target = dir.join(entry.strip_prefix(&source).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &target).unwrap();
    }
    let unet_file = dir.join("unet/diffusion_pytorch_model.safetensors");
    let mut rows = Vec::new();
    for file in [unet_file.clone(), here().join("lora.safetensors")] {
        let store = read_all(&file);
        for key in store.keys() {
            let (shape, values) = tensor(&store, key);
            rows.push((key.to_owned(), shape, values));
        }
    }
    save_safetensors(&unet_file, &rows, SaveDtype::F32).unwrap();
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-4 * want.abs().max(1.0),
        "{what}: {got} vs torch {want}"
    );
}

/// `got` is burn's flat layout: linear weights are `[in, out]`.
fn relative(what: &str, got: Vec<f32>, want: (Vec<usize>, Vec<f32>), linear: bool) {
    let (shape, want) = want;
    let got = if linear {
        let (o, i) = (shape[0], shape[1]);
        (0..o * i).map(|k| got[(k % i) * o + k / i]).collect()
    } else {
        got
    };
    let num: f64 = got
        .iter()
        .zip(&want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    let rel = (num / den.max(1e-30)).sqrt();
    assert!(den > 0.0, "{what}: the reference gradient is zero");
    assert!(rel <= 1e-3, "{what}: relative gradient error {rel:.2e}");
}

#[test]
fn one_pefl_step_matches_pytorch() {
    let device = Default::default();
    let reference = read_all(&here().join("reference.safetensors"));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(here().join("reference.json")).unwrap())
            .unwrap();
    let folder = tempfile::tempdir().unwrap();
    model_with_adapters(folder.path());
    let spec = LoraSpec {
        rank: meta["lora"]["rank"].as_u64().unwrap() as usize,
        alpha: meta["lora"]["alpha"].as_f64(),
        ..LoraSpec::new(2)
    };
    let mut model = InpaintModel::<AD>::load_with_lora(folder.path(), &device, Some(spec)).unwrap();
    model.unet = set_trainable(model.unet, &same_key, &|_| true);
    model.vae = set_trainable(model.vae, &same_key, &|_| false);
    model.text_encoder = set_trainable(model.text_encoder, &same_key, &|_| false);
    let reward_dir = root().join("rewards/tests/fixtures/imagereward-tiny");
    let frozen = || {
        let mut f = RewardFolder::<AD>::load(&reward_dir, &device).unwrap();
        f.model = set_trainable(f.model, &same_key, &|_| false);
        f
    };
    let feedback = Feedback {
        aesthetic: Some(frozen()),
        alignment: Some(frozen()),
        vgg: Some(Vgg16Features::load(&here().join("vgg-tiny.safetensors"), &device).unwrap()),
    };
    let coherence = CoherenceFolder::<AD>::load(&here().join("coherence"), &device).unwrap();
    let coherence =
        coherence.with_model(set_trainable(coherence.model.clone(), &same_key, &|_| true));
    let phase: PhaseConfig = serde_json::from_value(meta["phase"].clone()).unwrap();
    let schedule = PhaseSchedule::new(&model, phase).unwrap();
    let w = &meta["weights"];
    let weights = LossWeights {
        aesthetic: w["aesthetic"].as_f64().unwrap(),
        alignment: w["alignment"].as_f64().unwrap(),
        coherence: w["coherence"].as_f64().unwrap(),
        eta: w["eta"].as_f64().unwrap(),
        denoise: w["denoise"].as_f64().unwrap(),
    };
    let batch = Batch {
        images: vec![image::open(here().join("image.png")).unwrap().to_rgb8()],
        masks: vec![image::open(here().join("mask.png")).unwrap().to_luma8()],
        prompts: vec![meta["prompt"].as_str().unwrap().to_owned()],
    };
    let noise_tensor = |key: &str| {
        let (shape, values) = tensor(&reference, key);
        Tensor::<CpuBackend, 1>::from_floats(values.as_slice(), &device)
            .reshape([shape[0], shape[1], shape[2], shape[3]])
    };
    let noise = StepNoise {
        start: noise_tensor("noise.start"),
        t_prime: vec![meta["t_prime"].as_u64().unwrap() as usize],
        denoise: noise_tensor("noise.denoise"),
        denoise_t: vec![meta["denoise_t"].as_u64().unwrap() as usize],
    };

    let step = generator_step(
        &model,
        &schedule,
        &feedback,
        Some(&coherence),
        &weights,
        &batch,
        &noise,
    )
    .unwrap();
    let want = |key: &str| tensor(&reference, key).1[0] as f64;
    let t = &step.terms;
    close("L_G", t.loss, want("loss"));
    close(
        "aesthetic term",
        t.aesthetic_loss.unwrap(),
        want("term.aesthetic_loss"),
    );
    close(
        "alignment term",
        t.alignment_loss.unwrap(),
        want("term.alignment_loss"),
    );
    close(
        "coherence term",
        t.coherence_loss.unwrap(),
        want("term.coherence_loss"),
    );
    close("L1", t.l1, want("term.l1"));
    close("VGG", t.vgg.unwrap(), want("term.vgg"));
    close("denoise", t.denoise.unwrap(), want("term.denoise"));
    let generated: Vec<f32> = step.generated.clone().into_data().into_vec().unwrap();
    let (_, want_g) = tensor(&reference, "generated");
    let g_diff = generated
        .iter()
        .zip(&want_g)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(g_diff < 1e-4, "G differs from diffusers' by {g_diff}");

    let grads = step.loss.backward();
    let by_key: std::collections::HashMap<String, Vec<f32>> =
        gradients(&model.unet, &grads, &same_key)
            .into_iter()
            .map(|(k, g)| (diffusers_key(&k), g.into_data().into_vec().unwrap()))
            .collect();
    for (key, linear) in [
        ("conv_in.weight", false),
        (
            "mid_block.attentions.0.transformer_blocks.0.attn2.to_q.weight",
            true,
        ),
        ("conv_out.weight", false),
        (
            "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight",
            true,
        ),
        (
            "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight",
            true,
        ),
    ] {
        let got = by_key
            .get(key)
            .unwrap_or_else(|| panic!("no gradient for {key}"))
            .clone();
        relative(
            key,
            got,
            tensor(&reference, &format!("grad.unet.{key}")),
            linear,
        );
    }
    // The frozen parts took none.
    assert!(
        model.vae.decoder.conv_out.weight.grad(&grads).is_none(),
        "the frozen VAE got a gradient"
    );
    let reward = feedback.aesthetic.as_ref().unwrap();
    assert!(
        gradients(&reward.model, &grads, &same_key).is_empty(),
        "R_α got a gradient"
    );

    let (d_loss, accuracy) = discriminator_step(&coherence, step.real, step.generated, step.mask);
    close(
        "L_D",
        d_loss.clone().into_scalar().elem::<f64>(),
        want("discriminator.loss"),
    );
    assert!((0.0..=1.0).contains(&accuracy));
    let grads = d_loss.backward();
    let by_key: std::collections::HashMap<String, Vec<f32>> =
        gradients(&coherence.model, &grads, &same_key)
            .into_iter()
            .map(|(k, g)| (k, g.into_data().into_vec().unwrap()))
            .collect();
    for (key, linear) in [
        ("head.fc1.weight", true),
        ("head.fc2.weight", true),
        ("head.fc2.bias", false),
    ] {
        relative(
            key,
            by_key[key].clone(),
            tensor(&reference, &format!("grad.coherence.{key}")),
            linear,
        );
    }
}
