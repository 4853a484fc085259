//! Base-LCM on the fused engine: the forward pass of `lcm_model::base_lcm::BaseLcm`, its
//! shifted summed-squared-error loss and the exact backward pass, over flat buffers.
//!
//! With `N = B·(T−1)` predicting rows, `d` the model width, `H` heads of `Dh`, `F` the
//! SwiGLU width:
//!
//! ```text
//! h⁰ = X Wᵢₙᵀ + bᵢₙ                                  [N, d]
//! per layer:  a = RMSNorm(hˡ)·[Wq;Wk;Wv]ᵀ + b         [N, 3d]   (one product)
//!             q, k ← RoPE(q), RoPE(k)
//!             P = causal_softmax(q kᵀ/√Dh)            [B, H, T−1, T−1]
//!             m = hˡ + (P v) Woᵀ + bo                 [N, d]
//!             g|u = RMSNorm(m)·[Wg;Wu]ᵀ + b           [N, 2F]   (one product)
//!             hˡ⁺¹ = m + (silu(g) ⊙ u) Wdᵀ + bd       [N, d]
//! Ŷ = RMSNorm(hᴸ) Wₒᵤₜᵀ + bₒᵤₜ                        [N, D]
//! loss = Σ_rows w_r ‖Ŷ_r − x_{r+1}‖²,  w_r = 1 when the target position is real
//! ```
//!
//! Saved for the backward pass: each layer's input, both RMSNorm `rstd`s, the rotated
//! QKV rows, the attention probabilities, the attention context, the post-attention
//! residual and the SwiGLU pre-activations. Normalised rows and SwiGLU outputs are
//! recomputed in the backward pass (one cheap row pass each) instead of stored.

use std::ops::Range;

use candle_nn::VarMap;
use lcm_model::base_lcm::BaseLcmConfig;

use crate::linear::Affine;
use crate::params::{FlatParams, ParamLayout};
use crate::rows::{column_sums, rms_norm_backward, rms_norm_forward, rope_tables, squared_error};
use crate::trunk::{self, Dims, LayerActs, LayerSlots, TrunkScratch, bias, fit};
use crate::{EngineError, Result, threads};

/// A batch as the trainer holds it: `x: [B, T, D]` row-major normalised concepts, right
/// padded, `lengths[b]` real positions in row `b`; targets at positions before
/// `first_target[b]` are left out of the loss (empty: none is).
#[derive(Debug, Clone, Copy)]
pub struct ConceptBatch<'a> {
    pub x: &'a [f32],
    pub batch: usize,
    pub time: usize,
    pub lengths: &'a [usize],
    /// Per row, the first position whose target counts (prompt masking); empty: 0 for all.
    pub first_target: &'a [usize],
}

/// A summed loss and the number of predictions it covers (the trainer reports
/// `sum / count`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SummedLoss {
    pub sum: f64,
    pub count: f64,
}

impl SummedLoss {
    pub fn mean(&self) -> f64 {
        self.sum / self.count.max(1.0)
    }
}

struct Slots {
    in_w: Range<usize>,
    in_b: Option<Range<usize>>,
    layers: Vec<LayerSlots>,
    final_norm: Range<usize>,
    post_w: Range<usize>,
    post_b: Option<Range<usize>>,
}

/// The flat layout of a Base-LCM's parameters under their VarMap names.
fn layout(cfg: &BaseLcmConfig) -> (ParamLayout, Slots) {
    let dec = &cfg.decoder;
    let (dd, d, f) = (cfg.input_dim, dec.d_model, dec.ffn_inner_dim);
    let mut l = ParamLayout::new();
    let in_w = l.push("frontend.pre_linear.weight", &[d, dd]);
    let in_b = cfg
        .proj_bias
        .then(|| l.push("frontend.pre_linear.bias", &[d]));
    let layers = (0..dec.n_layers)
        .map(|i| LayerSlots::push(&mut l, &format!("lcm.layers.{i}"), d, f, dec.bias))
        .collect();
    let final_norm = l.push("lcm.layer_norm.weight", &[d]);
    let post_w = l.push("postnet.fc.weight", &[dd, d]);
    let post_b = cfg.proj_bias.then(|| l.push("postnet.fc.bias", &[dd]));
    (
        l,
        Slots {
            in_w,
            in_b,
            layers,
            final_norm,
            post_w,
            post_b,
        },
    )
}

#[derive(Default)]
struct Arena {
    layers: Vec<LayerActs>,
    x_in: Vec<f32>,
    last: Vec<f32>,
    rstd_final: Vec<f32>,
    normed_final: Vec<f32>,
    pred: Vec<f32>,
    d_pred: Vec<f32>,
    trunk: TrunkScratch,
}

/// A Base-LCM bound to its VarMap, with gradient buffer and activation arena.
pub struct BaseLcmEngine {
    config: BaseLcmConfig,
    params: FlatParams,
    slots: Slots,
    grads: Vec<f32>,
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    arena: Arena,
}

impl BaseLcmEngine {
    /// Binds the engine to the parameters a `BaseLcm::new(config, VarBuilder over varmap)`
    /// created. Refuses ([`EngineError::Unsupported`]) anything it does not implement.
    pub fn new(config: &BaseLcmConfig, varmap: &VarMap) -> Result<Self> {
        let dec = &config.decoder;
        if dec.n_heads == 0 || !dec.d_model.is_multiple_of(dec.n_heads) {
            return Err(EngineError::Unsupported(format!(
                "d_model {} is not a multiple of n_heads {}",
                dec.d_model, dec.n_heads
            )));
        }
        if !dec.head_dim().is_multiple_of(2) {
            return Err(EngineError::Unsupported(format!(
                "RoPE needs an even head dimension, got {}",
                dec.head_dim()
            )));
        }
        let (layout, slots) = layout(config);
        let params = FlatParams::bind(layout, varmap)?;
        let (rope_cos, rope_sin) = rope_tables(dec.head_dim(), dec.max_seq_len, dec.rope_theta);
        let mut arena = Arena::default();
        arena.layers.resize_with(dec.n_layers, LayerActs::default);
        Ok(Self {
            config: config.clone(),
            grads: vec![0.0; params.layout().len()],
            params,
            slots,
            rope_cos,
            rope_sin,
            arena,
        })
    }

    pub fn config(&self) -> &BaseLcmConfig {
        &self.config
    }

    /// The bound parameters (layout, Vars and the flat copy).
    pub fn params(&self) -> &FlatParams {
        &self.params
    }

    /// Re-reads the `Var`s into the flat copy; call after every optimiser step.
    pub fn refresh(&mut self) -> Result<()> {
        self.params.refresh()
    }

    /// The gradient of the last [`Self::loss_and_gradients`], in the layout of
    /// [`Self::params`].
    pub fn gradients(&self) -> &[f32] {
        &self.grads
    }

    pub fn gradients_mut(&mut self) -> &mut [f32] {
        &mut self.grads
    }

    fn dims(&self, batch: &ConceptBatch<'_>) -> Result<Dims> {
        let dec = &self.config.decoder;
        let (b, time, dd) = (batch.batch, batch.time, self.config.input_dim);
        if time < 2 {
            return Err(EngineError::Shape(format!(
                "Base-LCM loss needs at least 2 positions, got {time}"
            )));
        }
        if batch.x.len() != b * time * dd || batch.lengths.len() != b {
            return Err(EngineError::Shape(format!(
                "batch of {} floats and {} lengths for [B={b}, T={time}, D={dd}]",
                batch.x.len(),
                batch.lengths.len()
            )));
        }
        crate::check_first_target(batch.first_target, b)?;
        if time - 1 > dec.max_seq_len {
            return Err(EngineError::Shape(format!(
                "{} positions exceed the model's max_seq_len {}",
                time - 1,
                dec.max_seq_len
            )));
        }
        Ok(Dims {
            batch: b,
            t: time - 1,
            rows: b * (time - 1),
            input: dd,
            d: dec.d_model,
            heads: dec.n_heads,
            head_dim: dec.head_dim(),
            ffn: dec.ffn_inner_dim,
        })
    }

    /// The loss alone (validation).
    pub fn loss(&mut self, batch: &ConceptBatch<'_>) -> Result<SummedLoss> {
        let dims = self.dims(batch)?;
        self.forward(batch, dims);
        Ok(self.loss_and_output_gradient(batch, dims))
    }

    /// The loss and the gradient of its mean (`sum / count`, as the trainer optimises)
    /// with respect to every parameter, left in [`Self::gradients`].
    pub fn loss_and_gradients(&mut self, batch: &ConceptBatch<'_>) -> Result<SummedLoss> {
        let dims = self.dims(batch)?;
        self.forward(batch, dims);
        let loss = self.loss_and_output_gradient(batch, dims);
        self.backward(dims);
        Ok(loss)
    }

    fn forward(&mut self, batch: &ConceptBatch<'_>, dims: Dims) {
        let Dims {
            batch: b,
            t,
            rows: n,
            input: dd,
            d,
            ..
        } = dims;
        let threads = threads();
        let eps = self.config.decoder.rms_eps as f32;
        let p = self.params.data();
        let s = &self.slots;
        let a = &mut self.arena;

        // X: the first T−1 positions of every row.
        let x_in = fit(&mut a.x_in, n * dd);
        for bi in 0..b {
            let src = &batch.x[bi * batch.time * dd..][..t * dd];
            x_in[bi * t * dd..][..t * dd].copy_from_slice(src);
        }
        let first = fit(&mut a.layers[0].input, n * d);
        Affine {
            rows: n,
            inputs: dd,
            outputs: d,
        }
        .forward(x_in, &p[s.in_w.clone()], bias(p, &s.in_b), first, threads);
        trunk::forward(
            p,
            &s.layers,
            &mut a.layers,
            &mut a.last,
            &mut a.trunk,
            dims,
            eps,
            (&self.rope_cos, &self.rope_sin),
        );

        let normed_final = fit(&mut a.normed_final, n * d);
        let rstd_final = fit(&mut a.rstd_final, n);
        rms_norm_forward(
            &a.last[..n * d],
            &p[s.final_norm.clone()],
            eps,
            normed_final,
            rstd_final,
        );
        Affine {
            rows: n,
            inputs: d,
            outputs: dd,
        }
        .forward(
            normed_final,
            &p[s.post_w.clone()],
            bias(p, &s.post_b),
            fit(&mut a.pred, n * dd),
            threads,
        );
    }

    /// The summed loss, and `∂(sum/count)/∂Ŷ` into the arena.
    fn loss_and_output_gradient(&mut self, batch: &ConceptBatch<'_>, dims: Dims) -> SummedLoss {
        let Dims {
            t,
            rows: n,
            input: dd,
            ..
        } = dims;
        // Targets are positions 1..len, from the row's first target on.
        let from = |bi: usize| crate::first_target(batch.first_target, bi).max(1);
        let count: usize = batch
            .lengths
            .iter()
            .enumerate()
            .map(|(bi, &len)| len.min(batch.time).saturating_sub(from(bi)))
            .sum();
        let a = &mut self.arena;
        let d_pred = fit(&mut a.d_pred, n * dd);
        let grad_scale = 1.0 / count.max(1) as f32;
        let sum = squared_error(&a.pred[..n * dd], dd, grad_scale, d_pred, |r| {
            let (bi, ti) = (r / t, r % t);
            let target = &batch.x[(bi * batch.time + ti + 1) * dd..][..dd];
            let real = ti + 1 < batch.lengths[bi] && ti + 1 >= from(bi);
            (target, if real { 1.0 } else { 0.0 })
        });
        SummedLoss {
            sum,
            count: count as f64,
        }
    }

    fn backward(&mut self, dims: Dims) {
        let Dims {
            rows: n,
            input: dd,
            d,
            ..
        } = dims;
        let threads = threads();
        let p = self.params.data();
        let s = &self.slots;
        let g = &mut self.grads;
        g.fill(0.0);
        let a = &mut self.arena;
        let sc = &mut a.trunk;

        let d_normed = fit(&mut sc.d_normed, n * d);
        Affine {
            rows: n,
            inputs: d,
            outputs: dd,
        }
        .backward(
            &a.d_pred[..n * dd],
            &a.normed_final[..n * d],
            &p[s.post_w.clone()],
            &mut g[s.post_w.clone()],
            Some((d_normed, false)),
            threads,
        );
        if let Some(r) = s.post_b.clone() {
            column_sums(&a.d_pred[..n * dd], &mut g[r]);
        }
        let d_resid = fit(&mut sc.d_resid, n * d);
        d_resid.fill(0.0);
        rms_norm_backward(
            &a.last[..n * d],
            &p[s.final_norm.clone()],
            &a.rstd_final[..n],
            d_normed,
            d_resid,
            &mut g[s.final_norm.clone()],
        );
        trunk::backward(
            p,
            g,
            &s.layers,
            &a.layers,
            sc,
            dims,
            (&self.rope_cos, &self.rope_sin),
        );

        let d_resid = &sc.d_resid[..n * d];
        Affine {
            rows: n,
            inputs: dd,
            outputs: d,
        }
        .backward(
            d_resid,
            &a.x_in[..n * dd],
            &p[s.in_w.clone()],
            &mut g[s.in_w.clone()],
            None,
            threads,
        );
        if let Some(r) = s.in_b.clone() {
            column_sums(d_resid, &mut g[r]);
        }
    }
}
