//! Reading weights from diffusers / transformers safetensors files.
//!
//! Files are memory-mapped and each tensor is converted to f32 only when the
//! module that owns it asks for it, so a 2 GB fp16 checkpoint never exists twice
//! in memory: the mapped pages belong to the page cache, and the f32 copy *is*
//! the model. Every key that was read is remembered; [`TensorStore::finish`]
//! turns keys nobody asked for into an error, so a checkpoint that does not
//! match the config cannot load "mostly".

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Display;
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::TensorData;
use memmap2::{Mmap, UncheckedAdvice};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};

/// Buffers that checkpoints carry but models do not learn (skipped, not "unused").
const BUFFER_SUFFIXES: &[&str] = &["position_ids"];

struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
    /// Offset of the tensor data inside the file (8 + header length).
    data_start: usize,
}

/// Stands in for a checkpoint when benchmarking full-size configs that are not
/// on disk: answers every request with deterministic random values of the
/// requested shape and records what was asked for.
struct Synthetic {
    rng: RefCell<StdRng>,
    requested: RefCell<Vec<(String, Vec<usize>)>>,
}

struct Entry {
    shape: Vec<usize>,
    data: EntryData,
}

enum EntryData {
    /// A tensor inside a memory-mapped safetensors file.
    Mapped {
        file: usize,
        dtype: Dtype,
        start: usize,
        end: usize,
    },
    /// A tensor already decoded to f32 (read from a PyTorch pickle).
    Owned(Vec<f32>),
}

/// All tensors of one model component (e.g. `unet/`), possibly over several shards.
pub struct TensorStore {
    dir: PathBuf,
    files: Vec<MappedFile>,
    entries: HashMap<String, Entry>,
    used: RefCell<BTreeSet<String>>,
    synthetic: Option<Synthetic>,
}

impl TensorStore {
    /// Opens the weights of a component folder, given the file stem diffusers or
    /// transformers uses there (`diffusion_pytorch_model` or `model`).
    ///
    /// Preference: the fp32 single file, then the `fp16` variant, then a sharded
    /// checkpoint described by an `.index.json` (plain or `fp16` variant).
    pub fn open_component(dir: &Path, stem: &str) -> Result<Self> {
        let candidates = [
            format!("{stem}.safetensors"),
            format!("{stem}.fp16.safetensors"),
            format!("{stem}.safetensors.index.json"),
            format!("{stem}.safetensors.index.fp16.json"),
            format!("{stem}.fp16.safetensors.index.json"),
        ];
        for name in &candidates {
            let path = dir.join(name);
            if path.is_file() {
                return if name.ends_with(".json") {
                    Self::open_index(dir, &path)
                } else {
                    Self::open_files(dir, &[path])
                };
            }
        }
        let pickled = dir.join(format!("{stem}.bin"));
        let hint = if pickled.is_file() {
            format!(
                "; found `{}` (PyTorch pickle): convert it to safetensors first",
                pickled.display()
            )
        } else {
            String::new()
        };
        Err(ModelError::config(
            dir,
            format!(
                "no weights found: expected one of {}{hint}",
                candidates.join(", ")
            ),
        ))
    }

    /// Opens a sharded checkpoint from its `weight_map` index.
    fn open_index(dir: &Path, index: &Path) -> Result<Self> {
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: HashMap<String, String>,
        }
        let text = std::fs::read_to_string(index).map_err(|e| ModelError::io(index, e))?;
        let parsed: Index = serde_json::from_str(&text)
            .map_err(|e| ModelError::config(index, format!("bad shard index: {e}")))?;
        let shards: BTreeSet<&String> = parsed.weight_map.values().collect();
        let paths: Vec<PathBuf> = shards.into_iter().map(|s| dir.join(s)).collect();
        Self::open_files(dir, &paths)
    }

    /// Maps the given safetensors files and indexes their tensors.
    pub fn open_files(dir: &Path, paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut entries = HashMap::new();
        for path in paths {
            let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
            // SAFETY: the mapping is read-only and lives as long as the store; a
            // checkpoint rewritten while loading is outside what we can defend against.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
            let (header_len, metadata) =
                SafeTensors::read_metadata(&mmap).map_err(|e| ModelError::Safetensors {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            let index = files.len();
            for (key, info) in metadata.tensors() {
                entries.insert(
                    key,
                    Entry {
                        shape: info.shape.clone(),
                        data: EntryData::Mapped {
                            file: index,
                            dtype: info.dtype,
                            start: info.data_offsets.0,
                            end: info.data_offsets.1,
                        },
                    },
                );
            }
            files.push(MappedFile {
                path: path.clone(),
                mmap,
                data_start: 8 + header_len,
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            entries,
            used: RefCell::new(BTreeSet::new()),
            synthetic: None,
        })
    }

    /// A store over tensors already in memory (f32, PyTorch layout), such as
    /// those of a `.pt` state dict; `origin` is the file they came from, named
    /// in errors.
    pub fn from_tensors(origin: &Path, tensors: Vec<(String, Vec<usize>, Vec<f32>)>) -> Self {
        let entries = tensors
            .into_iter()
            .map(|(key, shape, values)| {
                let data = EntryData::Owned(values);
                (key, Entry { shape, data })
            })
            .collect();
        Self {
            dir: origin.to_path_buf(),
            files: Vec::new(),
            entries,
            used: RefCell::new(BTreeSet::new()),
            synthetic: None,
        }
    }

    /// A store with no files that makes up random weights of whatever shape
    /// the model asks for (1-D `weight`s are ones, biases zeros, other tensors
    /// uniform in ±1/sqrt(fan-in)), for benchmarks of configs with no checkpoint.
    pub fn synthetic(seed: u64) -> Self {
        Self {
            dir: PathBuf::from("<synthetic>"),
            files: Vec::new(),
            entries: HashMap::new(),
            used: RefCell::new(BTreeSet::new()),
            synthetic: Some(Synthetic {
                rng: RefCell::new(StdRng::seed_from_u64(seed)),
                requested: RefCell::new(Vec::new()),
            }),
        }
    }

    /// The keys and shapes a synthetic store was asked for, in order.
    pub fn requested(&self) -> Vec<(String, Vec<usize>)> {
        self.synthetic
            .as_ref()
            .map(|s| s.requested.borrow().clone())
            .unwrap_or_default()
    }

    fn make_up(synthetic: &Synthetic, key: &str, shape: &[usize]) -> Vec<f32> {
        synthetic
            .requested
            .borrow_mut()
            .push((key.to_string(), shape.to_vec()));
        let count: usize = shape.iter().product();
        if shape.len() == 1 {
            let value = if key.ends_with("weight") { 1.0 } else { 0.0 };
            return vec![value; count];
        }
        let fan_in: usize = shape[1..].iter().product();
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        let mut rng = synthetic.rng.borrow_mut();
        (0..count)
            .map(|_| rng.random_range(-bound..bound))
            .collect()
    }

    /// The folder (or, for tensors from memory, the file) the tensors came from.
    pub fn origin(&self) -> &Path {
        &self.dir
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Every tensor name in the checkpoint, sorted.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }

    /// The stored shape of `key`, if present.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.entries.get(key).map(|e| e.shape.as_slice())
    }

    fn files_list(&self) -> String {
        if self.files.is_empty() {
            return format!("`{}`", self.dir.display());
        }
        self.files
            .iter()
            .map(|f| format!("`{}`", f.path.display()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Reads `key` as f32 values after checking its shape, and marks it used.
    /// `accept` lists the shapes allowed besides `expected` (same element count),
    /// for legacy layouts such as 1x1 convolutions stored where linears are expected.
    pub fn read_f32(&self, key: &str, expected: &[usize], accept: &[&[usize]]) -> Result<Vec<f32>> {
        if let Some(synthetic) = &self.synthetic {
            return Ok(Self::make_up(synthetic, key, expected));
        }
        let entry = self
            .entries
            .get(key)
            .ok_or_else(|| ModelError::MissingTensor {
                key: key.to_string(),
                files: self.files_list(),
            })?;
        let origin = match &entry.data {
            EntryData::Mapped { file, .. } => &self.files[*file].path,
            EntryData::Owned(_) => &self.dir,
        };
        if entry.shape != expected && !accept.contains(&entry.shape.as_slice()) {
            return Err(ModelError::ShapeMismatch {
                key: key.to_string(),
                path: origin.clone(),
                expected: expected.to_vec(),
                found: entry.shape.clone(),
            });
        }
        let (file, dtype, start, end) = match &entry.data {
            EntryData::Owned(values) => {
                self.used.borrow_mut().insert(key.to_string());
                return Ok(values.clone());
            }
            EntryData::Mapped {
                file,
                dtype,
                start,
                end,
            } => (&self.files[*file], *dtype, *start, *end),
        };
        let bytes = file
            .mmap
            .get(file.data_start + start..file.data_start + end)
            .ok_or_else(|| ModelError::Safetensors {
                path: file.path.clone(),
                message: format!("tensor `{key}` points past the end of the file"),
            })?;
        let values = match dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|b| {
                    f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                })
                .collect(),
            other => {
                return Err(ModelError::BadDtype {
                    key: key.to_string(),
                    path: file.path.clone(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        // The f32 copy is what the model keeps: drop the mapped pages so the
        // checkpoint does not stay resident next to it.
        let offset = file.data_start + start;
        // SAFETY: the range lies inside this read-only file mapping, and
        // MADV_DONTNEED on a private file mapping only forgets cached pages:
        // a later read maps them from the file again.
        if let Err(e) = unsafe {
            file.mmap
                .unchecked_advise_range(UncheckedAdvice::DontNeed, offset, end - start)
        } {
            tracing::debug!(key, error = %e, "madvise failed; pages stay cached");
        }
        self.used.borrow_mut().insert(key.to_string());
        Ok(values)
    }

    /// Marks the tensors under `prefix` as deliberately unused (a released
    /// checkpoint's parts a model does not need, e.g. ImageReward's
    /// `blip.vision_proj`), so [`TensorStore::finish`] does not count them.
    pub fn ignore(&self, prefix: &str) {
        let mut used = self.used.borrow_mut();
        for key in self.entries.keys().filter(|k| k.starts_with(prefix)) {
            used.insert(key.clone());
        }
    }

    /// Fails if the checkpoint holds tensors the model never read.
    pub fn finish(&self) -> Result<()> {
        if self.synthetic.is_some() {
            return Ok(());
        }
        let used = self.used.borrow();
        let unused: Vec<&String> = self
            .entries
            .keys()
            .filter(|k| !used.contains(*k))
            .filter(|k| !BUFFER_SUFFIXES.iter().any(|s| k.ends_with(s)))
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        let mut sorted = unused.clone();
        sorted.sort();
        Err(ModelError::UnusedTensors {
            dir: self.dir.clone(),
            count: sorted.len(),
            examples: sorted
                .iter()
                .take(5)
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// A position in the weight tree: a store, a key prefix and the target device.
/// Modules are built by walking down the diffusers names: `w.pp("down_blocks").pp(0)`.
pub struct Weights<'a, B: Backend> {
    store: &'a TensorStore,
    prefix: String,
    device: B::Device,
    /// Adapters to attach to the linear layers this spec names.
    lora: Option<&'a crate::lora::LoraSpec>,
}

impl<B: Backend> Clone for Weights<'_, B> {
    fn clone(&self) -> Self {
        Self {
            store: self.store,
            prefix: self.prefix.clone(),
            device: self.device.clone(),
            lora: self.lora,
        }
    }
}

impl<'a, B: Backend> Weights<'a, B> {
    pub fn new(store: &'a TensorStore, device: &B::Device) -> Self {
        Self {
            store,
            prefix: String::new(),
            device: device.clone(),
            lora: None,
        }
    }

    /// The same position, attaching LoRA adapters where `spec` says.
    pub fn with_lora(mut self, spec: Option<&'a crate::lora::LoraSpec>) -> Self {
        self.lora = spec;
        self
    }

    /// The adapter spec, if this layer (the current prefix) gets one.
    pub fn lora_here(&self) -> Option<&'a crate::lora::LoraSpec> {
        self.lora.filter(|spec| spec.targets_key(&self.prefix))
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// One level down: `prefix.name`.
    pub fn pp(&self, name: impl Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Self {
            store: self.store,
            prefix,
            device: self.device.clone(),
            lora: self.lora,
        }
    }

    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.store.contains(&self.key(name))
    }

    /// The tensor `prefix.name`, which must have exactly `shape`.
    pub fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        let values = self.store.read_f32(&self.key(name), &shape, &[])?;
        Ok(Tensor::from_data(
            TensorData::new(values, shape),
            &self.device,
        ))
    }

    /// A PyTorch `[out, in]` linear weight (optionally stored as `[out, in, 1, 1]`),
    /// returned as burn's `[in, out]` so the forward pass needs no transpose.
    pub fn linear_weight(&self, name: &str, d_in: usize, d_out: usize) -> Result<Tensor<B, 2>> {
        let values =
            self.store
                .read_f32(&self.key(name), &[d_out, d_in], &[&[d_out, d_in, 1, 1]])?;
        let mut transposed = vec![0f32; values.len()];
        for o in 0..d_out {
            for i in 0..d_in {
                transposed[i * d_out + o] = values[o * d_in + i];
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(transposed, [d_in, d_out]),
            &self.device,
        ))
    }
}

/// Element type for [`save_safetensors`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveDtype {
    F32,
    F16,
}

/// Writes named f32 tensors (PyTorch layout) to a safetensors file, as f32 or
/// f16: for checkpoints the trainer produces and for test and benchmark models.
pub fn save_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    dtype: SaveDtype,
) -> Result<()> {
    save_safetensors_lazily(
        path,
        tensors
            .iter()
            .map(|(name, shape, values)| {
                let values: ValuesToSave<'_> = Box::new(move || Cow::Borrowed(values.as_slice()));
                (name.clone(), shape.clone(), values)
            })
            .collect(),
        dtype,
    )
}

/// Produces a tensor's values when the writer reaches it.
pub type ValuesToSave<'a> = Box<dyn Fn() -> Cow<'a, [f32]> + 'a>;

/// [`save_safetensors`] for tensors whose values are produced one at a time
/// as the file is written: at most one tensor is encoded at once, so saving
/// an SD-1.5 UNet's optimiser moments and EMA (10 GB) needs no second copy.
pub fn save_safetensors_lazily(
    path: &Path,
    tensors: Vec<(String, Vec<usize>, ValuesToSave<'_>)>,
    dtype: SaveDtype,
) -> Result<()> {
    struct Lazy<'a> {
        shape: Vec<usize>,
        dtype: SaveDtype,
        values: ValuesToSave<'a>,
    }
    impl safetensors::View for Lazy<'_> {
        fn dtype(&self) -> Dtype {
            match self.dtype {
                SaveDtype::F32 => Dtype::F32,
                SaveDtype::F16 => Dtype::F16,
            }
        }
        fn shape(&self) -> &[usize] {
            &self.shape
        }
        fn data(&self) -> Cow<'_, [u8]> {
            let values = (self.values)();
            Cow::Owned(match self.dtype {
                SaveDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                SaveDtype::F16 => values
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
            })
        }
        fn data_len(&self) -> usize {
            let width = match self.dtype {
                SaveDtype::F32 => 4,
                SaveDtype::F16 => 2,
            };
            self.shape.iter().product::<usize>() * width
        }
    }
    let views = tensors.into_iter().map(|(name, shape, values)| {
        (
            name,
            Lazy {
                shape,
                dtype,
                values,
            },
        )
    });
    safetensors::serialize_to_file(views, None, path).map_err(|e| ModelError::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
