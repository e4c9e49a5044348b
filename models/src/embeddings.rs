//! diffusers `models/embeddings.py`: the sinusoidal timestep projection and the
//! MLP that turns it into the UNet's time embedding.

use burn::prelude::*;
use burn::tensor::TensorData;

use crate::error::Result;
use crate::nn::{Linear, silu};
use crate::weights::Weights;

/// `get_timestep_embedding`, computed on the host in f32 as PyTorch does, so
/// fractional timesteps (Euler) and large ones round the same way.
pub fn timestep_embedding<B: Backend>(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    device: &B::Device,
) -> Tensor<B, 2> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| {
            let exponent = -(10000f32.ln()) * i as f32 / (half as f32 - freq_shift as f32);
            exponent.exp()
        })
        .collect();
    let mut values = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args: Vec<f32> = freqs.iter().map(|f| t * f).collect();
        let sin = args.iter().map(|a| a.sin());
        let cos = args.iter().map(|a| a.cos());
        let mut row: Vec<f32> = if flip_sin_to_cos {
            cos.chain(sin).collect()
        } else {
            sin.chain(cos).collect()
        };
        // Odd sizes are zero-padded by one column in diffusers.
        row.resize(dim, 0.0);
        values.extend(row);
    }
    Tensor::from_data(TensorData::new(values, [timesteps.len(), dim]), device)
}

/// `TimestepEmbedding`: linear, SiLU, linear.
#[derive(Module, Debug)]
pub struct TimestepEmbedding<B: Backend> {
    pub linear_1: Linear<B>,
    pub linear_2: Linear<B>,
}

impl<B: Backend> TimestepEmbedding<B> {
    pub fn load(w: &Weights<B>, in_dim: usize, time_embed_dim: usize) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::load(&w.pp("linear_1"), in_dim, time_embed_dim, true)?,
            linear_2: Linear::load(&w.pp("linear_2"), time_embed_dim, time_embed_dim, true)?,
        })
    }

    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear_2.forward(silu(self.linear_1.forward(x)))
    }
}
