//! A fused training engine for the LCM architectures on CPU.
//!
//! candle remains the reference implementation and the owner of the weights; this crate
//! runs the same forward and backward passes as straight-line Rust over flat buffers, in
//! the manner of llm.c:
//!
//! - [`params`]: a flat copy of the model's candle `Var`s in the engine's own order (so
//!   that Q/K/V and SwiGLU gate/up weights sit next to each other and multiply as one
//!   matrix) and a flat gradient buffer with the same layout, handed to the existing AdamW
//!   by parameter name;
//! - [`rows`]: fused row kernels with explicit backward passes (RMSNorm, SwiGLU, RoPE,
//!   masked softmax, bias and loss passes), compiled per instruction set;
//! - [`linear`]: affine layers as strided `gemm` products, the weight gradient accumulated
//!   straight into the gradient buffer;
//! - [`base_lcm`]: the Base-LCM forward, loss and backward with an activation arena sized
//!   by the largest batch seen, so that steady-state steps allocate nothing;
//! - [`two_tower`]: the same for the Two-Tower diffusion LCM's training loss (causal
//!   contextualizer, AdaLN-modulated denoiser with identity self-attention and
//!   shifted-causal cross-attention with CFG-dropped rows), the gradient flowing into the
//!   contextualizer through the cross-attention keys; its extra row kernels (SiLU, AdaLN
//!   modulation and gating, prefix softmax) are in `rows_diffusion`;
//! - [`sonar_decoder`]: the SONAR-architecture decoder `lcm train-decoder` trains (LayerNorm
//!   with bias, causal self-attention, single-key cross-attention on the concept, ReLU FFN,
//!   output projection tied to the embedding) with its label-smoothed token loss, the
//!   logits formed and differentiated in row chunks; its row kernels are in `rows_sonar`;
//! - [`one_tower`]: the One-Tower diffusion LCM's training loss (timestep MLP, `[x ; τ]`
//!   input projection and learned positions, the pre-norm trunk without RoPE over clean
//!   and noisy rows under the One-Tower mask with CFG-dropped rows);
//! - [`two_tower_infer`]: the Two-Tower denoiser at inference (a guided DDIM step's
//!   conditional and unconditional rows in one call), the cross-attention keys and values
//!   projected once per generated concept and the timestep modulation once per step;
//! - [`parallel`]: data parallelism over a batch's sequences, one engine replica per
//!   thread with single-threaded products, the shares' gradients summed afterwards.
//!
//! Every pass is checked against candle autograd on the `tiny` and `small` presets
//! (`tests/parity.rs`, `tests/parity_two_tower.rs`, `tests/parity_one_tower.rs`) and by
//! central differences.

pub mod base_lcm;
pub mod linear;
pub mod one_tower;
pub mod parallel;
pub mod params;
pub mod rows;
mod rows_diffusion;
mod rows_sonar;
pub mod sonar_decoder;
mod trunk;
pub mod two_tower;
pub mod two_tower_infer;

pub use base_lcm::BaseLcmEngine;
pub use one_tower::OneTowerEngine;
pub use params::{FlatParams, ParamLayout, ParamSlot};
pub use sonar_decoder::SonarDecoderEngine;
pub use two_tower::TwoTowerEngine;
pub use two_tower_infer::TwoTowerDenoiser;

/// Why the engine cannot run a model; the trainer then uses the candle path.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration or the parameters differ from what the engine implements.
    #[error("the fused engine does not cover this model: {0}")]
    Unsupported(String),
    /// Input shapes disagree with the model.
    #[error("fused engine input: {0}")]
    Shape(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, EngineError>;

pub use parallel::threads;

/// The first position of row `b` whose target counts in the loss: `first_target[b]`, or 0
/// (every real target) when `first_target` is empty. Instruction fine-tuning masks the
/// prompt's positions out of the loss this way.
pub(crate) fn first_target(first_target: &[usize], b: usize) -> usize {
    first_target.get(b).copied().unwrap_or(0)
}

/// Refuses a `first_target` that is neither empty nor one entry per row.
pub(crate) fn check_first_target(first_target: &[usize], rows: usize) -> Result<()> {
    if first_target.is_empty() || first_target.len() == rows {
        Ok(())
    } else {
        Err(EngineError::Shape(format!(
            "{} first-target positions for a batch of {rows} sequences",
            first_target.len()
        )))
    }
}
