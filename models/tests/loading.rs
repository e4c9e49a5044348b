//! Loading model folders: fp16 variants, shards, legacy names, and clear
//! errors for folders that do not match their configs.

mod common;

use std::path::Path;

use byteedit_models::weights::{SaveDtype, TensorStore, save_safetensors};
use byteedit_models::{InpaintModel, ModelError};
use common::{B, Expected, assert_close, fixture};

type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A writable copy of the SD-1.5-style fixture.
fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("sd15-inpaint-tiny"), dir.path());
    dir
}

fn read_all(file: &Path) -> Tensors {
    let store = TensorStore::open_files(file.parent().unwrap(), &[file.to_path_buf()]).unwrap();
    store
        .keys()
        .into_iter()
        .map(|k| {
            let shape = store.shape(k).unwrap().to_vec();
            let values = store.read_f32(k, &shape, &[]).unwrap();
            (k.to_string(), shape, values)
        })
        .collect()
}

/// Rewrites a component's single weights file through `edit`.
fn rewrite(file: &Path, edit: impl FnOnce(&mut Tensors)) {
    let mut tensors = read_all(file);
    edit(&mut tensors);
    save_safetensors(file, &tensors, SaveDtype::F32).unwrap();
}

fn load(dir: &Path) -> Result<InpaintModel<B>, ModelError> {
    InpaintModel::load(dir, &Default::default())
}

fn unet_matches_reference(model: &InpaintModel<B>, tol: f32) {
    let expected = Expected::load("sd15-inpaint-tiny");
    let out = model.unet.forward(
        expected.tensor("unet.sample"),
        500.0,
        &expected.tensor("unet.encoder_hidden_states"),
    );
    assert_close("unet.t500", out, expected.tensor("unet.t500.output"), tol);
}

#[test]
fn fp16_variant_files_load_and_are_cast_to_f32() {
    let dir = fixture_copy();
    for (component, stem) in [
        ("unet", "diffusion_pytorch_model"),
        ("vae", "diffusion_pytorch_model"),
        ("text_encoder", "model"),
    ] {
        let fp32 = dir
            .path()
            .join(component)
            .join(format!("{stem}.safetensors"));
        let tensors = read_all(&fp32);
        std::fs::remove_file(&fp32).unwrap();
        save_safetensors(
            &dir.path()
                .join(component)
                .join(format!("{stem}.fp16.safetensors")),
            &tensors,
            SaveDtype::F16,
        )
        .unwrap();
    }
    let model = load(dir.path()).unwrap();
    // The weights are the fp16 values exactly, held as f32.
    let original =
        read_all(&fixture("sd15-inpaint-tiny").join("unet/diffusion_pytorch_model.safetensors"));
    let (_, _, conv_in) = original
        .iter()
        .find(|(k, _, _)| k == "conv_in.weight")
        .unwrap();
    let rounded: Vec<f32> = conv_in
        .iter()
        .map(|v| half::f16::from_f32(*v).to_f32())
        .collect();
    let loaded = model
        .unet
        .conv_in
        .weight
        .val()
        .into_data()
        .into_vec::<f32>()
        .unwrap();
    assert_eq!(loaded, rounded);
    // And the model still computes about the same thing.
    unet_matches_reference(&model, 2e-2);
}

#[test]
fn sharded_checkpoint_with_index_loads() {
    let dir = fixture_copy();
    let unet = dir.path().join("unet");
    let tensors = read_all(&unet.join("diffusion_pytorch_model.safetensors"));
    std::fs::remove_file(unet.join("diffusion_pytorch_model.safetensors")).unwrap();
    let (first, second) = tensors.split_at(tensors.len() / 2);
    let names = [
        "diffusion_pytorch_model-00001-of-00002.safetensors",
        "diffusion_pytorch_model-00002-of-00002.safetensors",
    ];
    let mut weight_map = serde_json::Map::new();
    for (part, name) in [first, second].into_iter().zip(names) {
        save_safetensors(&unet.join(name), part, SaveDtype::F32).unwrap();
        for (key, _, _) in part {
            weight_map.insert(key.clone(), name.into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(
        unet.join("diffusion_pytorch_model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let model = load(dir.path()).unwrap();
    unet_matches_reference(&model, 1e-4);
}

#[test]
fn legacy_names_load_like_current_ones() {
    let dir = fixture_copy();
    // transformers < 5 prefixes the text encoder with `text_model.`.
    rewrite(&dir.path().join("text_encoder/model.safetensors"), |t| {
        for (k, _, _) in t.iter_mut() {
            *k = format!("text_model.{k}");
        }
    });
    // diffusers < 0.14 VAEs name the mid-block attention query/key/value/proj_attn.
    rewrite(
        &dir.path().join("vae/diffusion_pytorch_model.safetensors"),
        |t| {
            for (k, _, _) in t.iter_mut() {
                *k = k
                    .replace("attentions.0.to_q", "attentions.0.query")
                    .replace("attentions.0.to_k", "attentions.0.key")
                    .replace("attentions.0.to_v", "attentions.0.value")
                    .replace("attentions.0.to_out.0", "attentions.0.proj_attn");
            }
        },
    );
    let model = load(dir.path()).unwrap();
    let expected = Expected::load("sd15-inpaint-tiny");
    let out = model.text_encoder.forward(
        &[expected.ids("tokenizer.0.input_ids")],
        &Default::default(),
    );
    assert_close(
        "text encoder",
        out.last_hidden_state,
        expected.tensor("text_encoder.0.last_hidden_state"),
        1e-4,
    );
    let decoded = model.vae.decode(expected.tensor("vae.decoder.input"));
    assert_close(
        "vae decoder",
        decoded,
        expected.tensor("vae.decoder.output"),
        1e-4,
    );
}

fn load_error(edit: impl FnOnce(&Path)) -> String {
    let dir = fixture_copy();
    edit(dir.path());
    match load(dir.path()) {
        Ok(_) => panic!("a broken folder loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_tensor_is_named_with_its_file() {
    let msg = load_error(|d| {
        rewrite(&d.join("unet/diffusion_pytorch_model.safetensors"), |t| {
            t.retain(|(k, _, _)| k != "mid_block.resnets.1.conv2.weight")
        })
    });
    assert!(
        msg.contains("`mid_block.resnets.1.conv2.weight` is missing"),
        "{msg}"
    );
    assert!(
        msg.contains("unet/diffusion_pytorch_model.safetensors"),
        "{msg}"
    );
}

#[test]
fn wrong_shape_names_key_file_expected_and_found() {
    let msg = load_error(|d| {
        rewrite(&d.join("unet/diffusion_pytorch_model.safetensors"), |t| {
            let entry = t
                .iter_mut()
                .find(|(k, _, _)| k == "conv_in.weight")
                .unwrap();
            entry.1 = vec![32, 4, 3, 3];
            entry.2.truncate(32 * 4 * 9);
        })
    });
    assert!(msg.contains("`conv_in.weight`"), "{msg}");
    assert!(
        msg.contains("[32, 4, 3, 3]") && msg.contains("[32, 9, 3, 3]"),
        "{msg}"
    );
    assert!(
        msg.contains("unet/diffusion_pytorch_model.safetensors"),
        "{msg}"
    );
}

#[test]
fn unused_tensors_are_an_error() {
    let msg = load_error(|d| {
        rewrite(&d.join("vae/diffusion_pytorch_model.safetensors"), |t| {
            t.push(("decoder.extra_layer.weight".into(), vec![2], vec![0.0, 1.0]))
        })
    });
    assert!(
        msg.contains("not used by the model") && msg.contains("decoder.extra_layer.weight"),
        "{msg}"
    );
}

#[test]
fn config_problems_are_explained() {
    let msg = load_error(|d| std::fs::remove_file(d.join("unet/config.json")).unwrap());
    assert!(msg.contains("unet/config.json"), "{msg}");

    let msg = load_error(|d| {
        let path = d.join("unet/config.json");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"in_channels\": 9", "\"in_channels\": 4");
        std::fs::write(path, text).unwrap();
    });
    assert!(
        msg.contains("not an inpainting UNet") && msg.contains("in_channels is 4"),
        "{msg}"
    );

    let msg = load_error(|d| {
        let path = d.join("unet/config.json");
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "\"resnet_time_scale_shift\": \"default\"",
            "\"resnet_time_scale_shift\": \"scale_shift\"",
        );
        std::fs::write(path, text).unwrap();
    });
    assert!(
        msg.contains("does not support") && msg.contains("scale_shift"),
        "{msg}"
    );

    let msg = load_error(|d| std::fs::remove_file(d.join("model_index.json")).unwrap());
    assert!(msg.contains("model_index.json"), "{msg}");

    let msg = load_error(|d| {
        std::fs::remove_file(d.join("vae/diffusion_pytorch_model.safetensors")).unwrap()
    });
    assert!(
        msg.contains("no weights found")
            && msg.contains("diffusion_pytorch_model.fp16.safetensors"),
        "{msg}"
    );
}
