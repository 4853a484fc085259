//! Base-LCM: next-concept regression with a causal transformer (paper §2.3.1; reference
//! `lcm/models/base_lcm`).
//!
//! `PreNet (Linear D→d, bias) → causal pre-RMSNorm decoder with RoPE → final RMSNorm →
//! PostNet (Linear d→D, bias)`. Inputs are already normalised (`lcm_concept::normalizer`);
//! outputs live in the same normalised space. Reference details followed here:
//! - the frontend's `scale_embeddings` defaults to `False`, so no `sqrt(d)` input scaling;
//! - positions come from RoPE inside attention (`pos_embedding_style="rope"`), no learned
//!   position table;
//! - the loss sums squared errors over the embedding channels of each predicted concept
//!   (`compute_standard_mse`), with prediction `i` compared to target `x_{i+1}`.

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder, linear_b};
use serde::{Deserialize, Serialize};

use crate::blocks::{DecoderCache, DecoderConfig, TransformerDecoder};

/// Hyper-parameters of a Base-LCM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseLcmConfig {
    /// Sentence-embedding width `D` (1024 for SONAR, 384 for MiniLM).
    pub input_dim: usize,
    /// The causal trunk; its `d_model` is the model width `d`.
    pub decoder: DecoderConfig,
    /// Biases on the PreNet and PostNet projections (true in the reference).
    pub proj_bias: bool,
}

impl BaseLcmConfig {
    pub fn d_model(&self) -> usize {
        self.decoder.d_model
    }

    /// Analytic parameter count; equals the number of scalars [`BaseLcm::new`] creates.
    pub fn num_parameters(&self) -> usize {
        let (dd, d) = (self.input_dim, self.d_model());
        let b = usize::from(self.proj_bias);
        (dd * d + b * d) + self.decoder.num_parameters() + (d * dd + b * dd)
    }
}

/// A sum of per-concept losses and the number of concepts it covers, so that the trainer
/// can normalise across micro-batches (the reference reports the mean per concept).
#[derive(Debug, Clone)]
pub struct SummedLoss {
    /// Scalar tensor (differentiable).
    pub sum: Tensor,
    /// Number of target concepts included in `sum`.
    pub count: f64,
}

impl SummedLoss {
    /// Σ‖prediction − target‖² over the real positions of `[B, T, D]` tensors; `mask` is
    /// `[B, T]` with 1 for real and 0 for padded positions (all real when `None`).
    pub fn masked_squared_error(
        prediction: &Tensor,
        target: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Self> {
        let (b, t, _) = prediction.dims3()?;
        // [B, T]
        let per_concept = (prediction - target)?.sqr()?.sum(D::Minus1)?;
        let weights = match mask {
            Some(m) => m.to_dtype(per_concept.dtype())?,
            None => Tensor::ones((b, t), per_concept.dtype(), prediction.device())?,
        };
        let count = weights
            .to_dtype(DType::F64)?
            .sum_all()?
            .to_scalar::<f64>()?;
        let sum = (per_concept * weights)?.sum_all()?;
        Ok(Self { sum, count })
    }

    /// `sum / count` (0-count batches give `sum` unchanged, i.e. 0).
    pub fn mean(&self) -> Result<Tensor> {
        self.sum.affine(1.0 / self.count.max(1.0), 0.0)
    }
}

/// `[B, T]` mask with 1 on the first `lengths[b]` positions of row `b`, 0 after (right
/// padding).
pub fn padding_mask_from_lengths(
    lengths: &[usize],
    t: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let data: Vec<f32> = lengths
        .iter()
        .flat_map(|&l| (0..t).map(move |i| if i < l { 1.0 } else { 0.0 }))
        .collect();
    Tensor::from_vec(data, (lengths.len(), t), device)?.to_dtype(dtype)
}

/// Base-LCM with parameters named after the reference: `frontend.pre_linear`, `lcm.*`,
/// `postnet.fc`.
#[derive(Debug, Clone)]
pub struct BaseLcm {
    pub prenet: Linear,
    pub decoder: TransformerDecoder,
    pub postnet: Linear,
    pub config: BaseLcmConfig,
}

impl BaseLcm {
    pub fn new(cfg: &BaseLcmConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model();
        Ok(Self {
            prenet: linear_b(
                cfg.input_dim,
                d,
                cfg.proj_bias,
                vb.pp("frontend").pp("pre_linear"),
            )?,
            decoder: TransformerDecoder::new(&cfg.decoder, vb.pp("lcm"))?,
            postnet: linear_b(d, cfg.input_dim, cfg.proj_bias, vb.pp("postnet").pp("fc"))?,
            config: cfg.clone(),
        })
    }

    /// An empty KV cache for incremental decoding.
    pub fn new_cache(&self) -> DecoderCache {
        DecoderCache::new(self.config.decoder.n_layers)
    }

    /// `x: [B, T, D]` normalised concepts → `[B, T, D]` predictions of the *next* concept
    /// at every position. With a cache, `x` holds only the new positions.
    pub fn forward(&self, x: &Tensor, cache: Option<&mut DecoderCache>) -> Result<Tensor> {
        let h = self.prenet.forward(x)?;
        let h = self.decoder.forward(&h, cache)?;
        self.postnet.forward(&h)
    }

    /// Shifted summed-squared-error loss. `x: [B, T, D]`; `mask: [B, T]` with 1 on real
    /// positions and 0 on (right) padding, `None` for no padding. Prediction at `i` is
    /// compared with `x_{i+1}`; a pair counts when its target position is real. Returns the
    /// sum over counted pairs of `‖pred − target‖²` and the number of such pairs.
    pub fn loss(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<SummedLoss> {
        let (_, t, _) = x.dims3()?;
        if t < 2 {
            candle_core::bail!("Base-LCM loss needs at least 2 positions, got {t}");
        }
        // [B, T-1, D]
        let pred = self.forward(&x.narrow(1, 0, t - 1)?, None)?;
        let target = x.narrow(1, 1, t - 1)?;
        // A pair counts when its target position is real.
        let target_mask = mask.map(|m| m.narrow(1, 1, t - 1)).transpose()?;
        SummedLoss::masked_squared_error(&pred, &target, target_mask.as_ref())
    }
}
