use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder, linear_b};

/// SwiGLU inner width: `int(8·d/3)` rounded up to a multiple of `multiple_of`.
///
/// This equals fairseq2's `GLUFeedForwardNetwork(inner_dim=4d, inner_dim_scale=2/3,
/// inner_dim_to_multiple=256)` as configured by the LCM reference, computed in integers
/// so that no float rounding can move the result across a multiple boundary.
pub fn swiglu_inner_dim(d_model: usize, multiple_of: usize) -> usize {
    let raw = 8 * d_model / 3;
    raw.div_ceil(multiple_of) * multiple_of
}

/// Gated feed-forward block `down(silu(gate(x)) ⊙ up(x))` (Shazeer 2020).
///
/// The LCM reference builds all three projections with biases (`bias=True` in
/// `TransformerFactory::build_ffn`), hence the flag.
#[derive(Debug, Clone)]
pub struct SwiGlu {
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl SwiGlu {
    /// Parameter names follow fairseq2: `gate_proj`, `inner_proj`, `output_proj`.
    pub fn new(d_model: usize, inner_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gate: linear_b(d_model, inner_dim, bias, vb.pp("gate_proj"))?,
            up: linear_b(d_model, inner_dim, bias, vb.pp("inner_proj"))?,
            down: linear_b(inner_dim, d_model, bias, vb.pp("output_proj"))?,
        })
    }

    pub fn num_parameters(d_model: usize, inner_dim: usize, bias: bool) -> usize {
        let weights = 3 * d_model * inner_dim;
        let biases = if bias { 2 * inner_dim + d_model } else { 0 };
        weights + biases
    }
}

impl Module for SwiGlu {
    /// `x: [..., d] -> [..., d]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // candle's core `silu` is an elementary unary op with a backward rule
        // (sigmoid(x)·(1 + x·(1 − sigmoid(x)))), unlike the fused ops in candle_nn::ops.
        // [..., inner]
        let gate = self.gate.forward(x)?.silu()?;
        let up = self.up.forward(x)?;
        self.down.forward(&(gate * up)?)
    }
}
