//! A complete diffusers inpainting folder with random weights, made from
//! config files alone, for timing full-size models where no checkpoint can be
//! downloaded (a GPU machine without internet, CI). The folder loads through
//! [`InpaintModel::load`](crate::InpaintModel::load) like a downloaded one, so
//! load time and memory are those of a real checkpoint.
//!
//! Each module is asked which tensors it reads (a [`TensorStore::synthetic`]
//! store records the keys and shapes), and exactly those are written: the
//! folder cannot drift from what the loader expects.

use std::path::{Path, PathBuf};

use burn::prelude::Backend;

use crate::clip::{ClipTextConfig, ClipTextModel};
use crate::error::{ModelError, Result};
use crate::unet_2d::{UNet2DConditionModel, UNetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};
use crate::weights::{SaveDtype, TensorStore, Weights, save_safetensors};

/// The config files a diffusers folder needs besides its weights, relative to
/// the folder. `model_index.json` is copied last (see [`write_random_model`]).
const CONFIG_FILES: [&str; 4] = [
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "scheduler/scheduler_config.json",
];

/// What [`write_random_model`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenModel {
    pub tensors: usize,
    pub parameters: usize,
    /// Size of the weight files on disk.
    pub bytes: u64,
}

/// Writes a diffusers inpainting folder at `out`: the configs of `configs` (a
/// folder with `model_index.json`, `unet/config.json`, `vae/config.json`,
/// `text_encoder/config.json` and `scheduler/scheduler_config.json`, such as
/// `models/benches/sd15-inpaint-config` or a fixture), the tokenizer files of
/// `tokenizer`, and weights with the values [`TensorStore::synthetic`]`(seed)`
/// gives (so loading the folder gives the same model, up to `dtype`'s rounding).
/// The weight files are named as diffusers names them (`.fp16.` variant for
/// f16). Modules are built once on `device` to learn their tensors.
///
/// `model_index.json` is written last, so an interrupted run leaves a folder
/// that the loader refuses instead of one that loads with missing weights.
pub fn write_random_model<B: Backend>(
    configs: &Path,
    tokenizer: &Path,
    out: &Path,
    seed: u64,
    dtype: SaveDtype,
    device: &B::Device,
) -> Result<WrittenModel> {
    // Parse every config first: a bad one fails before gigabytes are written.
    let unet = UNetConfig::from_file(&configs.join("unet/config.json"))?;
    let vae = VaeConfig::from_file(&configs.join("vae/config.json"))?;
    let clip = ClipTextConfig::from_file(&configs.join("text_encoder/config.json"))?;
    let index = configs.join("model_index.json");
    if !index.is_file() {
        return Err(ModelError::config(
            configs,
            "not a diffusers config folder: `model_index.json` is missing",
        ));
    }
    let tokenizer_files = regular_files(tokenizer)?;
    if tokenizer_files.is_empty() {
        return Err(ModelError::config(
            tokenizer,
            "no tokenizer files (vocab.json, merges.txt, ...) in this folder",
        ));
    }

    for sub in ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] {
        let dir = out.join(sub);
        std::fs::create_dir_all(&dir).map_err(|e| ModelError::io(&dir, e))?;
    }
    let mut written = WrittenModel {
        tensors: 0,
        parameters: 0,
        bytes: 0,
    };
    // Each component gets its own seed, so that no two share their values.
    write_component::<B>(
        &out.join("unet"),
        "diffusion_pytorch_model",
        seed,
        dtype,
        device,
        &mut written,
        |w| UNet2DConditionModel::load(w, &unet).map(drop),
    )?;
    write_component::<B>(
        &out.join("vae"),
        "diffusion_pytorch_model",
        seed.wrapping_add(1),
        dtype,
        device,
        &mut written,
        |w| AutoencoderKL::load(w, &vae).map(drop),
    )?;
    write_component::<B>(
        &out.join("text_encoder"),
        "model",
        seed.wrapping_add(2),
        dtype,
        device,
        &mut written,
        |w| ClipTextModel::load(w, &clip).map(drop),
    )?;

    for file in CONFIG_FILES {
        copy(&configs.join(file), &out.join(file))?;
    }
    for path in tokenizer_files {
        if let Some(name) = path.file_name() {
            copy(&path, &out.join("tokenizer").join(name))?;
        }
    }
    copy(&index, &out.join("model_index.json"))?;
    Ok(written)
}

/// Builds one component from a synthetic store to learn its tensors, then
/// writes them with a fresh store of the same seed, so the values are the
/// ones the synthetic model had.
fn write_component<B: Backend>(
    dir: &Path,
    stem: &str,
    seed: u64,
    dtype: SaveDtype,
    device: &B::Device,
    written: &mut WrittenModel,
    build: impl FnOnce(&Weights<B>) -> Result<()>,
) -> Result<()> {
    let shapes = {
        let probe = TensorStore::synthetic(seed);
        build(&Weights::new(&probe, device))?;
        // The module is dropped here, before the values are made again.
        probe.requested()
    };
    let values = TensorStore::synthetic(seed);
    let tensors = shapes
        .into_iter()
        .map(|(key, shape)| {
            let data = values.read_f32(&key, &shape, &[])?;
            Ok((key, shape, data))
        })
        .collect::<Result<Vec<_>>>()?;
    let name = match dtype {
        SaveDtype::F32 => format!("{stem}.safetensors"),
        SaveDtype::F16 => format!("{stem}.fp16.safetensors"),
    };
    let path = dir.join(name);
    save_safetensors(&path, &tensors, dtype)?;
    written.tensors += tensors.len();
    written.parameters += tensors.iter().map(|(_, _, v)| v.len()).sum::<usize>();
    written.bytes += std::fs::metadata(&path)
        .map_err(|e| ModelError::io(&path, e))?
        .len();
    Ok(())
}

/// The plain files of a folder, sorted (sub-folders are not tokenizer files).
fn regular_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| ModelError::io(dir, e))?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .map(drop)
        .map_err(|e| ModelError::io(from, e))
}

#[cfg(all(test, any(feature = "flex", feature = "ndarray")))]
mod tests {
    use super::*;
    use crate::{CpuBackend, EditRequest, InpaintModel, SchedulerKind};
    use std::ops::ControlFlow;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-inpaint-tiny")
    }

    /// The tiny fixture's configs give a tiny random model: it loads through
    /// the normal loader (which refuses missing and unused tensors) and edits.
    #[test]
    fn random_model_loads_and_edits() {
        let out = tempfile::tempdir().unwrap();
        let device = Default::default();
        let f = fixture();
        let written = write_random_model::<CpuBackend>(
            &f,
            &f.join("tokenizer"),
            out.path(),
            7,
            SaveDtype::F16,
            &device,
        )
        .unwrap();
        assert!(
            written.tensors > 100 && written.parameters > 1000,
            "{written:?}"
        );
        assert!(
            out.path()
                .join("unet/diffusion_pytorch_model.fp16.safetensors")
                .is_file()
        );
        let model = InpaintModel::<CpuBackend>::load(out.path(), &device).unwrap();
        let request = EditRequest {
            image: image::RgbImage::from_pixel(64, 64, image::Rgb([90, 120, 200])),
            mask: image::GrayImage::from_fn(64, 64, |x, _| {
                image::Luma([if x < 32 { 255 } else { 0 }])
            }),
            prompt: "a red apple".into(),
            negative_prompt: None,
            steps: 1,
            guidance_scale: 7.5,
            scheduler: SchedulerKind::Ddim,
            timestep_spacing: None,
            seed: 0,
            latents: None,
        };
        let output = model
            .edit(&request, &mut |_| ControlFlow::Continue(()))
            .unwrap();
        assert_eq!((output.width, output.height), (64, 64));
    }

    /// The same seed writes the same bytes; another seed other values.
    #[test]
    fn random_models_are_seeded() {
        let device = Default::default();
        let f = fixture();
        let write = |seed| {
            let out = tempfile::tempdir().unwrap();
            write_random_model::<CpuBackend>(
                &f,
                &f.join("tokenizer"),
                out.path(),
                seed,
                SaveDtype::F32,
                &device,
            )
            .unwrap();
            std::fs::read(out.path().join("vae/diffusion_pytorch_model.safetensors")).unwrap()
        };
        let a = write(3);
        assert_eq!(a, write(3));
        assert_ne!(a, write(4));
    }

    #[test]
    fn a_folder_without_configs_is_refused_before_writing() {
        let empty = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let err = write_random_model::<CpuBackend>(
            empty.path(),
            empty.path(),
            out.path(),
            0,
            SaveDtype::F16,
            &Default::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unet/config.json"), "{err}");
        assert!(!out.path().join("unet").exists());
    }
}
