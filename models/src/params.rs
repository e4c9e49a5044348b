//! A module's parameters by checkpoint key: the way back from burn modules
//! to the names they were loaded from. Export (writing a trained model as a
//! checkpoint) and the trainer's optimiser, EMA and gradient clipping all
//! address parameters this way, so their state survives a reload, which
//! burn's random `ParamId`s do not.
//!
//! A key is the path of field names, `.`-joined, as the modules mirror the
//! checkpoint's names; a Rust-keyword field's trailing `_` is dropped
//! (`self_` is `self`) and a caller's `rename` handles the rest.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// One parameter as a checkpoint holds it: PyTorch layout, f32.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub key: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// The field path while walking a module.
#[derive(Default)]
struct Path {
    /// (field name, the struct that holds it).
    parts: Vec<(String, String)>,
}

impl Path {
    fn key(&self, rename: &dyn Fn(&str) -> String) -> String {
        let joined = self
            .parts
            .iter()
            .map(|(name, _)| name.strip_suffix('_').unwrap_or(name))
            .collect::<Vec<_>>()
            .join(".");
        rename(&joined)
    }

    /// `nn::Linear` (and a LoRA matrix) keeps its weight as `[in, out]`;
    /// checkpoints hold `[out, in]`.
    fn is_linear_weight(&self) -> bool {
        self.parts.last().is_some_and(|(name, holder)| {
            name == "weight" && (holder == "Struct:Linear" || holder == "Struct:LoraMatrix")
        })
    }
}

/// Every float parameter of `module` with its checkpoint key, shape and
/// values in PyTorch layout, in visiting order.
pub fn named_tensors<B: Backend, M: Module<B>>(
    module: &M,
    rename: &dyn Fn(&str) -> String,
) -> Vec<NamedTensor> {
    struct Collect<'a> {
        path: Path,
        rename: &'a dyn Fn(&str) -> String,
        out: Vec<NamedTensor>,
    }
    impl<B: Backend> ModuleVisitor<B> for Collect<'_> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path
                .parts
                .push((name.to_string(), container_type.to_string()));
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.parts.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let mut tensor = param.val();
            if self.path.is_linear_weight() {
                tensor = tensor.transpose();
            }
            let shape = tensor.dims().to_vec();
            let values = tensor
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap_or_default();
            self.out.push(NamedTensor {
                key: self.path.key(self.rename),
                shape,
                values,
            });
        }
    }
    let mut collect = Collect {
        path: Path::default(),
        rename,
        out: Vec::new(),
    };
    module.visit(&mut collect);
    collect.out
}

/// Calls `visit(key, id, flat)` for every float parameter, its values as a
/// 1-D tensor in burn's layout (what element-wise optimiser state needs).
pub fn visit_flat<B: Backend, M: Module<B>>(
    module: &M,
    rename: &dyn Fn(&str) -> String,
    visit: &mut dyn FnMut(&str, ParamId, Tensor<B, 1>),
) {
    struct Walk<'a, B: Backend> {
        path: Path,
        rename: &'a dyn Fn(&str) -> String,
        visit: &'a mut dyn FnMut(&str, ParamId, Tensor<B, 1>),
    }
    impl<B: Backend> ModuleVisitor<B> for Walk<'_, B> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path
                .parts
                .push((name.to_string(), container_type.to_string()));
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.parts.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let flat = param.val().flatten::<1>(0, D - 1);
            (self.visit)(&self.path.key(self.rename), param.id, flat);
        }
    }
    module.visit(&mut Walk {
        path: Path::default(),
        rename,
        visit,
    });
}

/// The gradient of every trained float parameter after `backward`, by key,
/// flattened (burn's layout) on the inner backend. Frozen parameters have
/// none and are left out.
pub fn gradients<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    grads: &B::Gradients,
    rename: &dyn Fn(&str) -> String,
) -> Vec<(String, Tensor<B::InnerBackend, 1>)> {
    struct Collect<'a, B: AutodiffBackend> {
        path: Path,
        rename: &'a dyn Fn(&str) -> String,
        grads: &'a B::Gradients,
        out: Vec<(String, Tensor<B::InnerBackend, 1>)>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path
                .parts
                .push((name.to_string(), container_type.to_string()));
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.parts.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(grad) = param.val().grad(self.grads) {
                let key = self.path.key(self.rename);
                self.out.push((key, grad.flatten::<1>(0, D - 1)));
            }
        }
    }
    let mut collect = Collect {
        path: Path::default(),
        rename,
        grads,
        out: Vec::new(),
    };
    module.visit(&mut collect);
    collect.out
}

/// Rebuilds `module` with each float parameter replaced by `map(key,
/// flat)` (a 1-D tensor in burn's layout, reshaped back and made a leaf
/// again), keeping parameter ids and whether each takes a gradient; `None`
/// keeps the parameter as it is.
pub fn map_flat<B: Backend, M: Module<B>>(
    module: M,
    rename: &dyn Fn(&str) -> String,
    map: &mut FlatMap<'_, B>,
) -> M {
    module.map(&mut Map {
        path: Path::default(),
        rename,
        map,
        trainable: None,
    })
}

/// Marks each float parameter as trained (`trainable(key)`) or frozen: a
/// frozen one gets no gradient, so backward skips it.
pub fn set_trainable<B: Backend, M: Module<B>>(
    module: M,
    rename: &dyn Fn(&str) -> String,
    trainable: &dyn Fn(&str) -> bool,
) -> M {
    module.map(&mut Map {
        path: Path::default(),
        rename,
        map: &mut |_, _| None,
        trainable: Some(trainable),
    })
}

struct Map<'a, B: Backend> {
    path: Path,
    rename: &'a dyn Fn(&str) -> String,
    map: &'a mut FlatMap<'a, B>,
    trainable: Option<&'a dyn Fn(&str) -> bool>,
}

impl<B: Backend> ModuleMapper<B> for Map<'_, B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path
            .parts
            .push((name.to_string(), container_type.to_string()));
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.parts.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let key = self.path.key(self.rename);
        let require_grad = match self.trainable {
            Some(trainable) => trainable(&key),
            None => tensor.is_require_grad(),
        };
        let shape = tensor.shape();
        let flat = tensor.clone().flatten::<1>(0, D - 1);
        let tensor = match (self.map)(&key, flat) {
            Some(new) => new.reshape(shape).detach(),
            None => tensor.detach(),
        };
        // burn's `detach` keeps `require_grad`: set it either way.
        let tensor = tensor.set_require_grad(require_grad);
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Writes [`named_tensors`]' output as one f32 safetensors file.
pub fn save_named(path: &std::path::Path, tensors: Vec<NamedTensor>) -> crate::Result<()> {
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
        .into_iter()
        .map(|t| (t.key, t.shape, t.values))
        .collect();
    crate::weights::save_safetensors(path, &tensors, crate::weights::SaveDtype::F32)
}

/// A replacement for a parameter's flat values, or `None` to keep them.
pub type FlatMap<'a, B> = dyn FnMut(&str, Tensor<B, 1>) -> Option<Tensor<B, 1>> + 'a;

/// The identity `rename`.
pub fn same_key(key: &str) -> String {
    key.to_string()
}
