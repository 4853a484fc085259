use candle_core::{D, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// Root-mean-square layer normalisation (Zhang & Sennrich 2019), weight only, no bias,
/// as fairseq2's `RMSNorm(bias=False)` used by the LCM reference.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    /// Parameter `weight` of shape `[dim]`, initialised to ones.
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        Ok(Self { weight, eps })
    }

    pub fn num_parameters(dim: usize) -> usize {
        dim
    }
}

impl Module for RmsNorm {
    /// `x: [..., dim] -> [..., dim]`, `x · rsqrt(mean(x²) + eps) · w`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // [..., 1]
        let inv_rms = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?
            .sqrt()?
            .recip()?;
        x.broadcast_mul(&inv_rms)?.broadcast_mul(&self.weight)
    }
}
