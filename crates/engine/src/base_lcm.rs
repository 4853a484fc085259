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
use lcm_kernels::{Mat, MatMut, matmul};
use lcm_model::base_lcm::BaseLcmConfig;
use rayon::prelude::*;

use crate::linear::Affine;
use crate::params::{FlatParams, ParamLayout};
use crate::rows::{
    add_assign, causal_softmax, column_sums, rms_norm_apply, rms_norm_backward, rms_norm_forward,
    rope_rows, rope_tables, softmax_backward, squared_error, swiglu_backward, swiglu_forward,
};
use crate::{EngineError, Result, threads};

/// A batch as the trainer holds it: `x: [B, T, D]` row-major normalised concepts, right
/// padded, `lengths[b]` real positions in row `b`.
#[derive(Debug, Clone, Copy)]
pub struct ConceptBatch<'a> {
    pub x: &'a [f32],
    pub batch: usize,
    pub time: usize,
    pub lengths: &'a [usize],
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

pub(crate) struct LayerSlots {
    pub(crate) attn_norm: Range<usize>,
    pub(crate) qkv_w: Range<usize>,
    pub(crate) qkv_b: Option<Range<usize>>,
    pub(crate) out_w: Range<usize>,
    pub(crate) out_b: Option<Range<usize>>,
    pub(crate) ffn_norm: Range<usize>,
    pub(crate) gate_up_w: Range<usize>,
    pub(crate) gate_up_b: Option<Range<usize>>,
    pub(crate) down_w: Range<usize>,
    pub(crate) down_b: Option<Range<usize>>,
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
        .map(|i| {
            let p = format!("lcm.layers.{i}");
            let attn_norm = l.push(format!("{p}.self_attn_layer_norm.weight"), &[d]);
            let q = l.push(format!("{p}.self_attn.q_proj.weight"), &[d, d]);
            let _k = l.push(format!("{p}.self_attn.k_proj.weight"), &[d, d]);
            let v = l.push(format!("{p}.self_attn.v_proj.weight"), &[d, d]);
            let qkv_b = dec.bias.then(|| {
                let q = l.push(format!("{p}.self_attn.q_proj.bias"), &[d]);
                l.push(format!("{p}.self_attn.k_proj.bias"), &[d]);
                let v = l.push(format!("{p}.self_attn.v_proj.bias"), &[d]);
                q.start..v.end
            });
            let out_w = l.push(format!("{p}.self_attn.output_proj.weight"), &[d, d]);
            let out_b = dec
                .bias
                .then(|| l.push(format!("{p}.self_attn.output_proj.bias"), &[d]));
            let ffn_norm = l.push(format!("{p}.ffn_layer_norm.weight"), &[d]);
            let g = l.push(format!("{p}.ffn.gate_proj.weight"), &[f, d]);
            let u = l.push(format!("{p}.ffn.inner_proj.weight"), &[f, d]);
            let gate_up_b = dec.bias.then(|| {
                let g = l.push(format!("{p}.ffn.gate_proj.bias"), &[f]);
                let u = l.push(format!("{p}.ffn.inner_proj.bias"), &[f]);
                g.start..u.end
            });
            let down_w = l.push(format!("{p}.ffn.output_proj.weight"), &[d, f]);
            let down_b = dec
                .bias
                .then(|| l.push(format!("{p}.ffn.output_proj.bias"), &[d]));
            LayerSlots {
                attn_norm,
                qkv_w: q.start..v.end,
                qkv_b,
                out_w,
                out_b,
                ffn_norm,
                gate_up_w: g.start..u.end,
                gate_up_b,
                down_w,
                down_b,
            }
        })
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

/// Grows `v` to at least `n` floats (only the first batches of a run allocate).
pub(crate) fn fit(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

#[derive(Default)]
pub(crate) struct LayerActs {
    pub(crate) input: Vec<f32>,
    pub(crate) rstd_attn: Vec<f32>,
    pub(crate) qkv: Vec<f32>,
    pub(crate) probs: Vec<f32>,
    pub(crate) context: Vec<f32>,
    pub(crate) mid: Vec<f32>,
    pub(crate) rstd_ffn: Vec<f32>,
    pub(crate) gate_up: Vec<f32>,
}

#[derive(Default)]
struct Arena {
    layers: Vec<LayerActs>,
    x_in: Vec<f32>,
    last: Vec<f32>,
    rstd_final: Vec<f32>,
    normed_final: Vec<f32>,
    pred: Vec<f32>,
    // Scratch, reused by every layer.
    normed: Vec<f32>,
    act: Vec<f32>,
    d_pred: Vec<f32>,
    d_resid: Vec<f32>,
    d_normed: Vec<f32>,
    d_act: Vec<f32>,
    d_gate_up: Vec<f32>,
    d_context: Vec<f32>,
    d_qkv: Vec<f32>,
    d_probs: Vec<f32>,
}

/// Sizes the engine's problem for one batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) batch: usize,
    /// Predicting positions per row, `T − 1`.
    pub(crate) t: usize,
    pub(crate) rows: usize,
    pub(crate) input: usize,
    pub(crate) d: usize,
    pub(crate) heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) ffn: usize,
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
            heads,
            head_dim,
            ffn,
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
        .forward(
            x_in,
            &p[s.in_w.clone()],
            s.in_b.clone().map(|r| &p[r]),
            first,
            threads,
        );

        let scale = 1.0 / (head_dim as f32).sqrt();
        for (l, ls) in s.layers.iter().enumerate() {
            let (done, rest) = a.layers.split_at_mut(l + 1);
            let la = &mut done[l];
            let normed = fit(&mut a.normed, n * d);
            let rstd_attn = fit(&mut la.rstd_attn, n);
            rms_norm_forward(
                &la.input[..n * d],
                &p[ls.attn_norm.clone()],
                eps,
                normed,
                rstd_attn,
            );
            let qkv = fit(&mut la.qkv, n * 3 * d);
            Affine {
                rows: n,
                inputs: d,
                outputs: 3 * d,
            }
            .forward(
                normed,
                &p[ls.qkv_w.clone()],
                ls.qkv_b.clone().map(|r| &p[r]),
                qkv,
                threads,
            );
            // Queries and keys are the first 2H heads of each packed row.
            rope_rows(
                qkv,
                n,
                3 * d,
                2 * heads,
                head_dim,
                t,
                &self.rope_cos,
                &self.rope_sin,
                false,
            );
            let probs = fit(&mut la.probs, b * heads * t * t);
            let context = fit(&mut la.context, n * d);
            attention_forward(qkv, probs, context, dims, scale);

            let mid = fit(&mut la.mid, n * d);
            mid.copy_from_slice(&la.input[..n * d]);
            accumulate_affine(
                context,
                &p[ls.out_w.clone()],
                ls.out_b.clone().map(|r| &p[r]),
                mid,
                n,
                d,
                d,
                threads,
            );
            let rstd_ffn = fit(&mut la.rstd_ffn, n);
            rms_norm_forward(mid, &p[ls.ffn_norm.clone()], eps, normed, rstd_ffn);
            let gate_up = fit(&mut la.gate_up, n * 2 * ffn);
            Affine {
                rows: n,
                inputs: d,
                outputs: 2 * ffn,
            }
            .forward(
                normed,
                &p[ls.gate_up_w.clone()],
                ls.gate_up_b.clone().map(|r| &p[r]),
                gate_up,
                threads,
            );
            let act = fit(&mut a.act, n * ffn);
            swiglu_forward(gate_up, act, ffn);
            let out = match rest.first_mut() {
                Some(next) => fit(&mut next.input, n * d),
                None => fit(&mut a.last, n * d),
            };
            out.copy_from_slice(mid);
            accumulate_affine(
                act,
                &p[ls.down_w.clone()],
                ls.down_b.clone().map(|r| &p[r]),
                out,
                n,
                ffn,
                d,
                threads,
            );
        }

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
            s.post_b.clone().map(|r| &p[r]),
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
        let count: usize = batch
            .lengths
            .iter()
            .map(|&len| len.min(batch.time).saturating_sub(1))
            .sum();
        let a = &mut self.arena;
        let d_pred = fit(&mut a.d_pred, n * dd);
        let grad_scale = 1.0 / count.max(1) as f32;
        let sum = squared_error(&a.pred[..n * dd], dd, grad_scale, d_pred, |r| {
            let (bi, ti) = (r / t, r % t);
            let target = &batch.x[(bi * batch.time + ti + 1) * dd..][..dd];
            let real = ti + 1 < batch.lengths[bi];
            (target, if real { 1.0 } else { 0.0 })
        });
        SummedLoss {
            sum,
            count: count as f64,
        }
    }

    fn backward(&mut self, dims: Dims) {
        let Dims {
            t,
            rows: n,
            input: dd,
            d,
            heads,
            head_dim,
            ffn,
            ..
        } = dims;
        let threads = threads();
        let p = self.params.data();
        let s = &self.slots;
        let g = &mut self.grads;
        g.fill(0.0);
        let a = &mut self.arena;

        let post = Affine {
            rows: n,
            inputs: d,
            outputs: dd,
        };
        let d_normed = fit(&mut a.d_normed, n * d);
        post.backward(
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
        let d_resid = fit(&mut a.d_resid, n * d);
        d_resid.fill(0.0);
        rms_norm_backward(
            &a.last[..n * d],
            &p[s.final_norm.clone()],
            &a.rstd_final[..n],
            d_normed,
            d_resid,
            &mut g[s.final_norm.clone()],
        );

        let scale = 1.0 / (head_dim as f32).sqrt();
        let square = Affine {
            rows: n,
            inputs: d,
            outputs: d,
        };
        for (ls, la) in s.layers.iter().zip(&a.layers).rev() {
            // FFN branch: hˡ⁺¹ = m + down(swiglu(gate_up(RMSNorm(m)))).
            let normed = fit(&mut a.normed, n * d);
            rms_norm_apply(
                &la.mid[..n * d],
                &p[ls.ffn_norm.clone()],
                &la.rstd_ffn[..n],
                normed,
            );
            let act = fit(&mut a.act, n * ffn);
            swiglu_forward(&la.gate_up[..n * 2 * ffn], act, ffn);
            let d_act = fit(&mut a.d_act, n * ffn);
            Affine {
                rows: n,
                inputs: ffn,
                outputs: d,
            }
            .backward(
                d_resid,
                act,
                &p[ls.down_w.clone()],
                &mut g[ls.down_w.clone()],
                Some((d_act, false)),
                threads,
            );
            if let Some(r) = ls.down_b.clone() {
                column_sums(d_resid, &mut g[r]);
            }
            let d_gate_up = fit(&mut a.d_gate_up, n * 2 * ffn);
            swiglu_backward(&la.gate_up[..n * 2 * ffn], d_act, d_gate_up, ffn);
            Affine {
                rows: n,
                inputs: d,
                outputs: 2 * ffn,
            }
            .backward(
                d_gate_up,
                normed,
                &p[ls.gate_up_w.clone()],
                &mut g[ls.gate_up_w.clone()],
                Some((d_normed, false)),
                threads,
            );
            if let Some(r) = ls.gate_up_b.clone() {
                column_sums(d_gate_up, &mut g[r]);
            }
            rms_norm_backward(
                &la.mid[..n * d],
                &p[ls.ffn_norm.clone()],
                &la.rstd_ffn[..n],
                d_normed,
                d_resid,
                &mut g[ls.ffn_norm.clone()],
            );

            // Attention branch: m = hˡ + out(attention(qkv(RMSNorm(hˡ)))).
            let d_context = fit(&mut a.d_context, n * d);
            square.backward(
                d_resid,
                &la.context[..n * d],
                &p[ls.out_w.clone()],
                &mut g[ls.out_w.clone()],
                Some((d_context, false)),
                threads,
            );
            if let Some(r) = ls.out_b.clone() {
                column_sums(d_resid, &mut g[r]);
            }
            let d_qkv = fit(&mut a.d_qkv, n * 3 * d);
            let d_probs = fit(&mut a.d_probs, dims.batch * t * t);
            attention_backward(
                &la.qkv[..n * 3 * d],
                &la.probs[..dims.batch * heads * t * t],
                d_context,
                d_qkv,
                d_probs,
                dims,
                scale,
            );
            rope_rows(
                d_qkv,
                n,
                3 * d,
                2 * heads,
                head_dim,
                t,
                &self.rope_cos,
                &self.rope_sin,
                true,
            );
            rms_norm_apply(
                &la.input[..n * d],
                &p[ls.attn_norm.clone()],
                &la.rstd_attn[..n],
                normed,
            );
            Affine {
                rows: n,
                inputs: d,
                outputs: 3 * d,
            }
            .backward(
                d_qkv,
                normed,
                &p[ls.qkv_w.clone()],
                &mut g[ls.qkv_w.clone()],
                Some((d_normed, false)),
                threads,
            );
            if let Some(r) = ls.qkv_b.clone() {
                column_sums(d_qkv, &mut g[r]);
            }
            rms_norm_backward(
                &la.input[..n * d],
                &p[ls.attn_norm.clone()],
                &la.rstd_attn[..n],
                d_normed,
                d_resid,
                &mut g[ls.attn_norm.clone()],
            );
        }

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

/// `y += x·Wᵀ + b` (a residual branch added onto the stream).
#[allow(clippy::too_many_arguments)]
pub(crate) fn accumulate_affine(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    y: &mut [f32],
    rows: usize,
    inputs: usize,
    outputs: usize,
    threads: usize,
) {
    if let Some(b) = b {
        for row in y.chunks_exact_mut(outputs) {
            add_assign(row, b);
        }
    }
    matmul(
        MatMut::dense(y, rows, outputs),
        Mat::dense(&x[..rows * inputs], rows, inputs),
        Mat::dense(w, outputs, inputs).t(),
        true,
        threads,
    );
}

/// Causal multi-head attention over packed `[N, 3d]` rows (queries and keys already
/// rotated): probabilities `[B, H, T, T]` and context `[N, d]`, one sequence per task.
pub(crate) fn attention_forward(
    qkv: &[f32],
    probs: &mut [f32],
    context: &mut [f32],
    dims: Dims,
    scale: f32,
) {
    let Dims {
        t,
        d,
        heads,
        head_dim: dh,
        ..
    } = dims;
    probs
        .par_chunks_mut(heads * t * t)
        .zip(context.par_chunks_mut(t * d))
        .enumerate()
        .for_each(|(bi, (p_b, ctx_b))| {
            let qkv_b = &qkv[bi * t * 3 * d..][..t * 3 * d];
            for h in 0..heads {
                let p = &mut p_b[h * t * t..][..t * t];
                let q = Mat::block(qkv_b, 3 * d, t, h * dh, dh);
                let k = Mat::block(qkv_b, 3 * d, t, d + h * dh, dh);
                let v = Mat::block(qkv_b, 3 * d, t, 2 * d + h * dh, dh);
                matmul(MatMut::dense(p, t, t), q, k.t(), false, 1);
                causal_softmax(p, t, scale);
                matmul(
                    MatMut::block(ctx_b, d, t, h * dh, dh),
                    Mat::dense(p, t, t),
                    v,
                    false,
                    1,
                );
            }
        });
}

/// Backward of [`attention_forward`]: `dQKV` (before the inverse rotation) from
/// `dcontext`, using one `[T, T]` scratch block per sequence.
pub(crate) fn attention_backward(
    qkv: &[f32],
    probs: &[f32],
    d_context: &[f32],
    d_qkv: &mut [f32],
    d_probs: &mut [f32],
    dims: Dims,
    scale: f32,
) {
    let Dims {
        t,
        d,
        heads,
        head_dim: dh,
        ..
    } = dims;
    d_qkv
        .par_chunks_mut(t * 3 * d)
        .zip(d_probs.par_chunks_mut(t * t))
        .enumerate()
        .for_each(|(bi, (dqkv_b, dp))| {
            let qkv_b = &qkv[bi * t * 3 * d..][..t * 3 * d];
            let dctx_b = &d_context[bi * t * d..][..t * d];
            for h in 0..heads {
                let p = Mat::dense(&probs[(bi * heads + h) * t * t..][..t * t], t, t);
                let dctx = Mat::block(dctx_b, d, t, h * dh, dh);
                let q = Mat::block(qkv_b, 3 * d, t, h * dh, dh);
                let k = Mat::block(qkv_b, 3 * d, t, d + h * dh, dh);
                let v = Mat::block(qkv_b, 3 * d, t, 2 * d + h * dh, dh);
                // dP = dC·Vᵀ, dV = Pᵀ·dC
                matmul(MatMut::dense(dp, t, t), dctx, v.t(), false, 1);
                matmul(
                    MatMut::block(dqkv_b, 3 * d, t, 2 * d + h * dh, dh),
                    p.t(),
                    dctx,
                    false,
                    1,
                );
                softmax_backward(p.data, dp, t, scale);
                let ds = Mat::dense(dp, t, t);
                // dQ = dS·K, dK = dSᵀ·Q
                matmul(MatMut::block(dqkv_b, 3 * d, t, h * dh, dh), ds, k, false, 1);
                matmul(
                    MatMut::block(dqkv_b, 3 * d, t, d + h * dh, dh),
                    ds.t(),
                    q,
                    false,
                    1,
                );
            }
        });
}
