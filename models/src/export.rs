//! Writing a (trained) model back as a diffusers folder: `config.json` plus
//! `diffusion_pytorch_model.safetensors` in diffusers' names and layouts,
//! fp32 or fp16, so that [`InpaintModel::load`](crate::InpaintModel::load),
//! the workers and diffusers' `from_pretrained` all load it. LoRA adapters
//! are merged into the weights they adapt ([`merge_adapters`]).

use std::path::Path;

use burn::prelude::*;

use crate::error::{ModelError, Result};
use crate::lora::merge_adapters;
use crate::params::{NamedTensor, named_tensors};
use crate::weights::{SaveDtype, save_safetensors};

/// The components a diffusers inpainting folder holds besides the UNet.
pub const OTHER_COMPONENTS: [&str; 4] = ["text_encoder", "tokenizer", "vae", "scheduler"];

/// A module field path → its diffusers key: the few places where a Rust
/// field cannot carry the checkpoint's name (`to_out.0`, `ff.net.0.proj`,
/// `ff.net.2`, peft's `lora_A`/`lora_B`) and the variant level of the
/// `Projection` enum.
pub fn diffusers_key(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('.').collect();
    for (i, seg) in segments.iter().enumerate() {
        let parent = if i > 0 { segments[i - 1] } else { "" };
        let next = segments.get(i + 1).copied().unwrap_or("");
        match (parent, *seg) {
            // `Linear.lora` holds the adapter; peft puts its matrices on the layer.
            (_, "lora") if next.starts_with("lora_") => {}
            (_, "Conv" | "Linear") if matches!(parent, "proj_in" | "proj_out") => {}
            (_, "to_out") => parts.extend(["to_out", "0"]),
            ("ff", "geglu_proj") => parts.extend(["net", "0", "proj"]),
            ("ff", "out") => parts.extend(["net", "2"]),
            (_, "lora_a") => parts.push("lora_A"),
            (_, "lora_b") => parts.push("lora_B"),
            _ => parts.push(seg),
        }
    }
    parts.join(".")
}

/// A module's tensors under diffusers' names, adapters merged.
pub fn diffusers_tensors<B: Backend, M: Module<B>>(
    module: &M,
    lora_scale: Option<f64>,
) -> Result<Vec<NamedTensor>> {
    let tensors = named_tensors(module, &diffusers_key);
    match lora_scale {
        Some(scale) => merge_adapters(tensors, scale),
        None => {
            if let Some(t) = tensors.iter().find(|t| t.key.contains(".lora_")) {
                return Err(ModelError::InvalidInput(format!(
                    "`{}` is a LoRA adapter: export with the adapters' scale to merge it",
                    t.key
                )));
            }
            Ok(tensors)
        }
    }
}

/// Writes one component folder (`dir/config.json` copied from `config`,
/// `dir/diffusion_pytorch_model.safetensors` from `tensors`).
pub fn write_component(
    dir: &Path,
    config: &Path,
    stem: &str,
    tensors: Vec<NamedTensor>,
    dtype: SaveDtype,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::write(dir, e))?;
    let target = dir.join("config.json");
    std::fs::copy(config, &target).map_err(|e| ModelError::write(&target, e))?;
    let rows: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
        .into_iter()
        .map(|t| (t.key, t.shape, t.values))
        .collect();
    save_safetensors(&dir.join(format!("{stem}.safetensors")), &rows, dtype)
}

/// Writes a complete inpainting folder at `out`: the `unet` tensors given
/// (see [`diffusers_tensors`]) and every other component copied from
/// `source`, `model_index.json` last (a folder cut short by a crash has
/// none, and the loader refuses it).
pub fn write_inpaint_folder(
    source: &Path,
    out: &Path,
    unet: Vec<NamedTensor>,
    dtype: SaveDtype,
) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| ModelError::write(out, e))?;
    let index = out.join("model_index.json");
    if index.exists() {
        std::fs::remove_file(&index).map_err(|e| ModelError::write(&index, e))?;
    }
    for component in OTHER_COMPONENTS {
        copy_dir(&source.join(component), &out.join(component))?;
    }
    write_component(
        &out.join("unet"),
        &source.join("unet/config.json"),
        "diffusion_pytorch_model",
        unet,
        dtype,
    )?;
    std::fs::copy(source.join("model_index.json"), &index)
        .map_err(|e| ModelError::write(&index, e))?;
    Ok(())
}

/// Copies a folder's files (one level: diffusers components are flat).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| ModelError::write(to, e))?;
    let entries = std::fs::read_dir(from).map_err(|e| ModelError::io(from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ModelError::io(from, e))?;
        let path = entry.path();
        if path.is_file() {
            let target = to.join(entry.file_name());
            std::fs::copy(&path, &target).map_err(|e| ModelError::write(&target, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::diffusers_key;

    #[test]
    fn field_paths_become_diffusers_names() {
        assert_eq!(
            diffusers_key("mid_block.attentions.0.transformer_blocks.0.attn1.to_out.weight"),
            "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.weight"
        );
        assert_eq!(
            diffusers_key("up_blocks.1.attentions.0.transformer_blocks.0.ff.geglu_proj.bias"),
            "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.bias"
        );
        assert_eq!(
            diffusers_key("down_blocks.0.attentions.0.transformer_blocks.0.ff.out.weight"),
            "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight"
        );
        assert_eq!(
            diffusers_key("down_blocks.0.attentions.0.proj_in.Conv.weight"),
            "down_blocks.0.attentions.0.proj_in.weight"
        );
        assert_eq!(
            diffusers_key(
                "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.lora.lora_a.weight"
            ),
            "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0.lora_A.weight"
        );
        assert_eq!(diffusers_key("conv_out.weight"), "conv_out.weight");
    }
}
