//! A smoke test that the modules run under `Autodiff<B>`: some gradient
//! reaches the UNet's and the VAE decoder's weights. It checks no gradient's
//! value (the fine-tuning issue replaces it with real gradient checks).

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
