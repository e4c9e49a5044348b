//! Scaled dot-product attention under autodiff that keeps O(tokens) state,
//! not the [tokens × tokens] score matrix.
//!
//! burn 0.21's `Autodiff` computes attention by its decomposed fallback and
//! keeps the scores, their softmax and the product for the backward pass: at
//! SD-1.5's 64×64 latents (4096 tokens, 8 heads) that is 0.5 GB per matrix,
//! several per self-attention layer, five such layers per UNet call; a
//! 512 px PeFL step did not fit in 24 GB. This op stores Q, K, V, the output
//! and each row's log-sum-exp, and recomputes the probabilities block by
//! block in the backward pass (the FlashAttention recurrences), in chunks of
//! query rows small enough that no step holds more than [`CHUNK_ELEMENTS`]
//! scores. It runs on the inner backend's tensor ops, so it serves every
//! backend; forward passes without gradient never come here.

use std::any::Any;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;

/// At most this many scores (f32: 16 MiB) exist at once per chunk: small
/// enough for the allocator to reuse the memory chunk after chunk (a fresh
/// mapping for each large buffer spent a sixth of the time in page faults).
const CHUNK_ELEMENTS: usize = 1 << 22;

type Primitive<B> = <B as burn::tensor::backend::BackendTypes>::FloatTensorPrimitive;
type Tensors<B> = (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>);

fn wrap<B: Backend>(p: Primitive<B>) -> Tensor<B, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

fn primitive<B: Backend>(t: Tensor<B, 4>) -> Primitive<B> {
    t.into_primitive().tensor()
}

/// softmax(Q Kᵀ · scale) V and, per chunk of `rows` query rows, each row's
/// log-sum-exp of the scaled scores (`[batch, heads, rows, 1]`). The chunks
/// stay separate: a narrowed view broadcast against the scores would take
/// flex's slow strided path.
fn forward<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f64,
    rows: usize,
) -> (Tensor<B, 4>, Vec<Tensor<B, 4>>) {
    let n_q = q.dims()[2];
    // Scaling Q (tokens × dim) is cheaper than scaling the scores.
    let q = q.mul_scalar(scale);
    let k_t = k.swap_dims(2, 3);
    let (mut outs, mut lses) = (Vec::new(), Vec::new());
    for start in (0..n_q).step_by(rows) {
        let len = rows.min(n_q - start);
        let scores = q.clone().narrow(2, start, len).matmul(k_t.clone());
        let max = scores.clone().max_dim(3);
        let p = (scores - max.clone()).exp();
        let sum = p.clone().sum_dim(3);
        outs.push(p.matmul(v.clone()).div(sum.clone()));
        lses.push(max + sum.log());
    }
    (Tensor::cat(outs, 2), lses)
}

/// The gradients of [`forward`]'s output with respect to Q, K and V, given
/// the output's gradient, the output and the log-sum-exp it returned.
/// dK and dV are accumulated transposed (`dKᵀ += Q_cᵀ dS`, `dVᵀ += dO_cᵀ P`)
/// so that only tokens × dim matrices are ever transposed, never the
/// chunk's scores.
fn backward<B: Backend>(state: State<B>, d_out: Tensor<B, 4>) -> Tensors<B> {
    let State {
        q,
        k,
        v,
        out,
        lse,
        scale,
        rows,
    } = state;
    let n_q = q.dims()[2];
    let q = q.mul_scalar(scale);
    let (q_t, d_out_t) = (q.clone().swap_dims(2, 3), d_out.clone().swap_dims(2, 3));
    let (k_t, v_t) = (k.clone().swap_dims(2, 3), v.swap_dims(2, 3));
    let mut d_k_t = k_t.zeros_like();
    let mut d_v_t = v_t.zeros_like();
    let mut d_qs = Vec::new();
    for (start, lse) in (0..n_q).step_by(rows).zip(lse) {
        let len = rows.min(n_q - start);
        let p = (q.clone().narrow(2, start, len).matmul(k_t.clone()) - lse).exp();
        d_v_t = d_v_t + d_out_t.clone().narrow(3, start, len).matmul(p.clone());
        let d_out_c = d_out.clone().narrow(2, start, len);
        // Row sums of dO ⊙ O: the softmax backward's correction term.
        let delta = (d_out_c.clone() * out.clone().narrow(2, start, len)).sum_dim(3);
        let d_p = d_out_c.matmul(v_t.clone());
        let d_s = p * (d_p - delta);
        d_qs.push(d_s.clone().matmul(k.clone()).mul_scalar(scale));
        d_k_t = d_k_t + q_t.clone().narrow(3, start, len).matmul(d_s);
    }
    (
        Tensor::cat(d_qs, 2),
        d_k_t.swap_dims(2, 3),
        d_v_t.swap_dims(2, 3),
    )
}

/// What the backward pass keeps: O(tokens), no scores.
#[derive(Debug, Clone)]
struct State<B: Backend> {
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    out: Tensor<B, 4>,
    /// Per chunk of `rows` query rows.
    lse: Vec<Tensor<B, 4>>,
    scale: f64,
    rows: usize,
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: Backend> Backward<B, 3> for AttentionBackward {
    type State = State<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let d_out = wrap::<B>(grads.consume::<B>(&ops.node));
        let (d_q, d_k, d_v) = backward(ops.state, d_out);
        for (node, grad) in [(node_q, d_q), (node_k, d_k), (node_v, d_v)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, primitive(grad));
            }
        }
    }
}

/// The op on `Autodiff<B, C>` (`[batch, heads, tokens, dim]` in and out):
/// [`forward`] on the inner tensors, recorded with [`AttentionBackward`]
/// when any input needs a gradient.
pub fn attention<B: Backend, C: CheckpointStrategy>(
    q: Tensor<Autodiff<B, C>, 4>,
    k: Tensor<Autodiff<B, C>, 4>,
    v: Tensor<Autodiff<B, C>, 4>,
) -> Tensor<Autodiff<B, C>, 4> {
    attention_in_chunks(q, k, v, CHUNK_ELEMENTS)
}

/// [`attention`] with at most `chunk_elements` scores at a time (tests use
/// small chunks to cover the chunk edges).
pub fn attention_in_chunks<B: Backend, C: CheckpointStrategy>(
    q: Tensor<Autodiff<B, C>, 4>,
    k: Tensor<Autodiff<B, C>, 4>,
    v: Tensor<Autodiff<B, C>, 4>,
    chunk_elements: usize,
) -> Tensor<Autodiff<B, C>, 4> {
    let [b, h, n_q, d] = q.dims();
    let n_k = k.dims()[2];
    let rows = (chunk_elements / (b * h * n_k).max(1)).clamp(1, n_q.max(1));
    let scale = (d as f64).powf(-0.5);
    let (q, k, v) = (
        q.into_primitive().tensor(),
        k.into_primitive().tensor(),
        v.into_primitive().tensor(),
    );
    let nodes = [q.node.clone(), k.node.clone(), v.node.clone()];
    let (inner_q, inner_k, inner_v) = (
        wrap::<B>(q.primitive),
        wrap::<B>(k.primitive),
        wrap::<B>(v.primitive),
    );
    let output = match AttentionBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (out, lse) = forward(
                inner_q.clone(),
                inner_k.clone(),
                inner_v.clone(),
                scale,
                rows,
            );
            let state = State {
                q: inner_q,
                k: inner_k,
                v: inner_v,
                out: out.clone(),
                lse,
                scale,
                rows,
            };
            prep.finish(state, primitive(out))
        }
        OpsKind::UnTracked(prep) => {
            let (out, _) = forward(inner_q, inner_k, inner_v, scale, rows);
            prep.finish(primitive(out))
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

/// Runs [`attention`] when `B` is one of the autodiff backends this build
/// trains on (Rust has no specialisation, so the generic model code asks by
/// type); otherwise hands the tensors back for burn's own op.
pub fn on_autodiff<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Result<Tensor<B, 4>, Tensors<B>> {
    fn as_b<B: Backend, T: Any>(out: T) -> Tensor<B, 4> {
        let out: Box<dyn Any> = Box::new(out);
        match out.downcast::<Tensor<B, 4>>() {
            Ok(out) => *out,
            Err(_) => unreachable!("the output has the inputs' backend"),
        }
    }
    let inputs: Box<dyn Any> = Box::new((q, k, v));
    // Each autodiff backend a build trains on, with either checkpoint strategy.
    macro_rules! run_on {
        ($inputs:ident, $($backend:ty),+) => {$(
            let $inputs = match $inputs.downcast::<Tensors<$backend>>() {
                Ok(t) => return Ok(as_b::<B, _>(attention(t.0, t.1, t.2))),
                Err(other) => other,
            };
        )+};
    }
    run_on!(inputs, Autodiff<crate::CpuBackend>, Autodiff<crate::CpuBackend, BalancedCheckpointing>);
    #[cfg(feature = "cuda")]
    run_on!(inputs, Autodiff<burn::backend::Cuda>, Autodiff<burn::backend::Cuda, BalancedCheckpointing>);
    match inputs.downcast::<Tensors<B>>() {
        Ok(t) => Err(*t),
        Err(_) => unreachable!("the inputs are Tensor<B, 4>"),
    }
}
