//! Transformer building blocks shared by every LCM architecture.
//!
//! Every op on a training path is composed of elementary candle ops that have a backward
//! pass. candle's fused kernels (`candle_nn::ops::softmax_last_dim`, `rms_norm`,
//! `layer_norm`) are forward-only: they are registered with `apply_op*_no_bwd`, so
//! gradients silently stop at them (upstream issues #2168, #3011, #3569, #3752). The
//! integration tests check each block here against finite differences.
//!
//! Conventions follow the LCM reference (facebookresearch/large_concept_model on fairseq2):
//! pre-norm layers, RMSNorm without bias, interleaved-pair RoPE, SwiGLU with biases.

mod attention;
mod decoder;
mod ffn;
mod norm;
mod rope;

pub use attention::{AttentionMask, KvCache, MASK_NEG, MultiHeadAttention};
pub use decoder::{DecoderCache, DecoderConfig, TransformerDecoder, TransformerDecoderLayer};
pub use ffn::{SwiGlu, swiglu_inner_dim};
pub use norm::RmsNorm;
pub use rope::RotaryEmbedding;

use candle_core::{D, Result, Tensor};

/// Softmax over the last dimension built from elementary ops, so that it backpropagates.
///
/// The row maximum is detached: softmax is invariant to a per-row shift, so the exact
/// gradient through the max is zero and tracking it would only cost an extra reduction.
/// A row whose entries are all `-inf` yields NaN; masks in this module use the finite
/// [`MASK_NEG`] so that a fully masked row degrades to a uniform distribution instead.
pub fn softmax_last_dim_differentiable(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&sum)
}
