//! The modules under `Autodiff<B>`: some gradient reaches the UNet's and the
//! VAE decoder's weights (values are checked against PyTorch in
//! trainer/tests/pefl.rs), frozen parameters take none, and the training
//! attention matches burn's attention and its gradients.

mod common;

use burn::backend::Autodiff;
use burn::prelude::*;
use byteedit_models::InpaintModel;
use common::{B, Expected, fixture};

type AD = Autodiff<B>;

#[test]
fn some_gradient_reaches_unet_and_vae_weights() {
    let device = Default::default();
    let model = InpaintModel::<AD>::load(&fixture("sd15-inpaint-tiny"), &device).unwrap();
    let expected = Expected::load("sd15-inpaint-tiny");
    let lift = |t: Tensor<B, 4>| Tensor::<AD, 4>::from_data(t.into_data(), &device);
    let sample = lift(expected.tensor("unet.sample"));
    let context: Tensor<B, 3> = expected.tensor("unet.encoder_hidden_states");
    let context = Tensor::<AD, 3>::from_data(context.into_data(), &device);

    // Any scalar of the decoded UNet output will do: the UNet's noise
    // prediction is decoded as if it were latents, only to connect the two.
    let noise = model.unet.forward(sample, 500.0, &context);
    let image = model.decode_latents(noise);
    let loss = image.powf_scalar(2.0).mean();
    let grads = loss.backward();

    let norm = |what: &str, grad: Option<Tensor<B, 1>>| {
        let grad = grad.unwrap_or_else(|| panic!("{what} has no gradient"));
        let norm: f32 = grad.abs().sum().into_scalar();
        assert!(
            norm.is_finite() && norm > 0.0,
            "{what}: gradient norm {norm}"
        );
    };
    norm(
        "unet.conv_in",
        model
            .unet
            .conv_in
            .weight
            .grad(&grads)
            .map(|g| g.flatten(0, 3)),
    );
    norm(
        "unet.mid attention",
        model.unet.mid_block.attentions[0].transformer_blocks[0]
            .attn2
            .to_k
            .weight
            .grad(&grads)
            .map(|g| g.flatten(0, 1)),
    );
    norm(
        "vae.decoder.conv_out",
        model
            .vae
            .decoder
            .conv_out
            .weight
            .grad(&grads)
            .map(|g| g.flatten(0, 3)),
    );
    // The text encoder was not part of the graph.
    assert!(
        model
            .text_encoder
            .final_layer_norm
            .weight
            .grad(&grads)
            .is_none()
    );
}

/// `set_trainable(false)` really freezes: burn's `detach` keeps
/// `require_grad`, so freezing must clear it (a frozen layer that still
/// took gradients would be trained by any optimiser that walks them).
#[test]
fn frozen_parameters_take_no_gradient() {
    use byteedit_models::params::{gradients, same_key, set_trainable};
    let device = Default::default();
    let mut model = InpaintModel::<AD>::load(&fixture("sd15-inpaint-tiny"), &device).unwrap();
    model.unet = set_trainable(model.unet, &same_key, &|key| key.starts_with("conv_out"));
    let expected = Expected::load("sd15-inpaint-tiny");
    let sample =
        Tensor::<AD, 4>::from_data(expected.tensor::<4>("unet.sample").into_data(), &device);
    let context: Tensor<B, 3> = expected.tensor("unet.encoder_hidden_states");
    let context = Tensor::<AD, 3>::from_data(context.into_data(), &device);
    let loss = model
        .unet
        .forward(sample, 500.0, &context)
        .powf_scalar(2.0)
        .mean();
    let grads = loss.backward();
    let keys: Vec<String> = gradients(&model.unet, &grads, &same_key)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["conv_out.weight", "conv_out.bias"]);
}

/// The training attention (O(tokens) state, scores recomputed chunk by chunk
/// in backward) gives burn's attention's output and gradients, for chunks of
/// one row, chunks that do not divide the rows, one chunk, and keys ≠ queries.
#[test]
fn training_attention_matches_burns_attention_and_its_gradients() {
    use burn::tensor::Distribution;
    use byteedit_models::training_attention::attention_in_chunks;

    let device = Default::default();
    for (b, h, n_q, n_k, d, rows) in [
        (2, 3, 10, 7, 8, 1),
        (2, 3, 10, 7, 8, 3),
        (1, 2, 16, 16, 4, 16),
        (1, 1, 9, 77, 16, 4),
    ] {
        let draw = |shape: [usize; 4]| {
            Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device)
        };
        let (q, k, v) = (
            draw([b, h, n_q, d]),
            draw([b, h, n_k, d]),
            draw([b, h, n_k, d]),
        );
        let weight = draw([b, h, n_q, d]);
        let run = |ours: bool| {
            let leaf = |t: &Tensor<B, 4>| Tensor::<AD, 4>::from_inner(t.clone()).require_grad();
            let (lq, lk, lv) = (leaf(&q), leaf(&k), leaf(&v));
            let out = if ours {
                attention_in_chunks(lq.clone(), lk.clone(), lv.clone(), rows * b * h * n_k)
            } else {
                let options = burn::tensor::ops::AttentionModuleOptions {
                    scale: None,
                    softcap: None,
                    is_causal: false,
                };
                burn::tensor::module::attention(
                    lq.clone(),
                    lk.clone(),
                    lv.clone(),
                    None,
                    None,
                    options,
                )
            };
            let grads = (out.clone() * Tensor::from_inner(weight.clone()))
                .sum()
                .backward();
            let grad = |t: &Tensor<AD, 4>| t.grad(&grads).unwrap();
            (out.inner(), grad(&lq), grad(&lk), grad(&lv))
        };
        let (ours, theirs) = (run(true), run(false));
        for (name, a, e) in [
            ("output", ours.0, theirs.0),
            ("dQ", ours.1, theirs.1),
            ("dK", ours.2, theirs.2),
            ("dV", ours.3, theirs.3),
        ] {
            let diff: f32 = (a - e.clone()).abs().max().into_scalar();
            let scale: f32 = e.abs().max().into_scalar();
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "{name} of [{b},{h},{n_q},{n_k},{d}] in chunks of {rows} rows: off by {diff}"
            );
        }
    }
}
