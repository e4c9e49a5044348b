//! The perceptual term's feature extractor V (paper Eq. 3): torchvision's
//! `vgg16().features`, read from a safetensors file with its keys
//! (`features.{i}.weight` as saved from the whole model, or `{i}.weight`
//! from `model.features`; the classifier, if present, is ignored). The
//! channel widths come from the file's shapes, so a tiny VGG for tests
//! loads the same way. Inputs are RGB in [0, 1], normalised with
//! ImageNet's mean and std as torchvision's weights expect.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use byteedit_models::nn::Conv2d;
use byteedit_models::weights::{TensorStore, Weights};

use crate::error::{Result, TrainError};

/// `vgg16().features`: the indices of its convolutions, in blocks; a
/// 2x2 max-pool follows each block but the last.
const BLOCKS: [&[usize]; 5] = [
    &[0, 2],
    &[5, 7],
    &[10, 12, 14],
    &[17, 19, 21],
    &[24, 26, 28],
];
const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Module, Debug)]
pub struct Vgg16Features<B: Backend> {
    /// The 13 convolutions in order (keys `features.{BLOCKS[..]}`).
    pub convs: Vec<Conv2d<B>>,
}

impl<B: Backend> Vgg16Features<B> {
    pub fn load(path: &Path, device: &B::Device) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let store = TensorStore::open_files(dir, &[path.to_owned()])?;
        let prefix = if store.contains("features.0.weight") {
            "features"
        } else if store.contains("0.weight") {
            ""
        } else {
            return Err(TrainError::Input {
                path: path.to_owned(),
                message: "not torchvision's vgg16 features: neither `features.0.weight` nor `0.weight` is in it".into(),
            });
        };
        let root = Weights::new(&store, device);
        let at = |i: usize| {
            if prefix.is_empty() {
                root.pp(i)
            } else {
                root.pp(prefix).pp(i)
            }
        };
        let mut convs = Vec::new();
        let mut c_in = 3;
        for index in BLOCKS.iter().flat_map(|b| b.iter()) {
            let key = at(*index).key("weight");
            let c_out = match store.shape(&key) {
                Some([c_out, _, 3, 3]) => *c_out,
                found => {
                    return Err(TrainError::Input {
                        path: path.to_owned(),
                        message: format!(
                            "`{key}` should be a 3x3 convolution weight [out, {c_in}, 3, 3]; found {found:?}"
                        ),
                    });
                }
            };
            convs.push(Conv2d::load(&at(*index), c_in, c_out, 3, 1, 1)?);
            c_in = c_out;
        }
        // The classifier and anything else are not part of `features`.
        store.ignore("classifier");
        store.finish()?;
        Ok(Self { convs })
    }

    /// The activations after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3.
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        let device = pixels.device();
        let mean = Tensor::<B, 1>::from_floats(IMAGENET_MEAN, &device).reshape([1, 3, 1, 1]);
        let std = Tensor::<B, 1>::from_floats(IMAGENET_STD, &device).reshape([1, 3, 1, 1]);
        let mut x = pixels.sub(mean).div(std);
        let mut convs = self.convs.iter();
        let mut out = Vec::with_capacity(BLOCKS.len());
        for (b, block) in BLOCKS.iter().enumerate() {
            if b > 0 {
                x = max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false);
            }
            for _ in block.iter() {
                if let Some(conv) = convs.next() {
                    x = relu(conv.forward(x));
                }
            }
            out.push(x.clone());
        }
        out
    }

    /// `Σ_l mean |V_l(a) − V_l(b)|`: the perceptual distance per the paper's L_vgg.
    pub fn distance(&self, a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 1> {
        let fa = self.forward(a);
        let fb = self.forward(b);
        let mut terms = fa.into_iter().zip(fb).map(|(x, y)| x.sub(y).abs().mean());
        let first = terms.next();
        // `forward` returns one map per block, never none.
        first.map_or_else(
            || Tensor::zeros([1], &Default::default()),
            |f| terms.fold(f, |s, t| s.add(t)),
        )
    }
}
