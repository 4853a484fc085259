//! The One-Tower diffusion LCM on the fused engine: the training loss of
//! `lcm_model::one_tower::OneTowerLcm::loss` and its exact backward pass, over flat buffers.
//!
//! The model interleaves a document `x_0..x_{T−1}` with its noised copy as
//! `[x̃_0, x_0, x̃_1, x_1, …]` under a mask in which clean `x_n` sees clean `x_{≤n}` and noisy
//! `x̃_n` sees clean `x_{<n}` and itself (only itself when CFG-dropped). Every block but
//! attention works row by row, and attention is permutation-equivariant given the mask, so
//! the engine keeps the `2N` rows (`N = B·T`) in the order that makes both halves dense:
//! the `N` clean rows first, then the `N` noisy rows, each `(b, n)` row-major. With `D` the
//! concept width, `d` the model width, `H` heads of `Dh`, `F` the SwiGLU width and `Φ` the
//! timestep sinusoid width:
//!
//! ```text
//! timestep embedding (noisy rows only; clean rows carry τ = 0):
//!   τ = silu(sin(t) W1ᵀ + b1) W2ᵀ + b2                       [N, d]    sin(t): [N, Φ]
//! input projection of [x ; τ], W = [Wx | Wτ]: [d, D + d], and positions:
//!   h⁰_clean = x0 Wxᵀ + b + pos[n]                             [N, d]
//!   h⁰_noisy = x̃ Wxᵀ + τ Wτᵀ + b + pos[n]                      [N, d]
//! per layer (Base-LCM's pre-norm layer without RoPE):
//!   a = RMSNorm(hˡ)·[Wq;Wk;Wv]ᵀ + b                            [2N, 3d]  (one product)
//!   per (sequence, head):
//!     clean:  P = causal_softmax(q_c k_cᵀ/√Dh)                  [T, T]
//!             ctx_c = P v_c
//!     noisy:  S = [q_z·k_z | q_z k_cᵀ]                          [T, T+1]  (self key first)
//!             P = softmax(S/√Dh) over columns 0..=ℓₙ            ℓₙ = n, or 0 when dropped
//!             ctx_z = P[:, 0] ⊙ v_z + P[:, 1..] v_c
//!   m = hˡ + ctx Woᵀ + bo
//!   hˡ⁺¹ = m + (silu(g) ⊙ u) Wdᵀ + bd,  g|u = RMSNorm(m)·[Wg;Wu]ᵀ + b
//! Ŷ = RMSNorm(hᴸ_noisy) W₀ᵀ + b₀                               [N, D]
//! loss = Σ_{real positions} ‖Ŷ − target‖²
//! ```
//!
//! Only the allowed score blocks are formed: a causal `[T, T]` block for the clean rows and
//! a `[T, T+1]` block for the noisy rows, whose self key sits in column 0 so that the
//! visible keys of row `n` are a prefix (`rows_diffusion::prefix_softmax`, as in Two-Tower's
//! cross-attention). The clean rows of the last layer and the final RMSNorm feed nothing,
//! and get no gradient. Saved for the backward pass: the timestep MLP's activations, the
//! trunk's as in [`crate::base_lcm`] (with both probability blocks per head), and the final
//! RMSNorm's input rows and `rstd`.

use std::ops::Range;

use candle_nn::VarMap;
use lcm_kernels::{Mat, MatMut, matmul};
use lcm_model::one_tower::OneTowerConfig;
use rayon::prelude::*;

use crate::base_lcm::SummedLoss;
use crate::linear::Affine;
use crate::params::{FlatParams, ParamLayout};
use crate::rows::{
    add_assign, causal_softmax, column_sums, fill_rows, rms_norm_backward, rms_norm_forward,
    softmax_backward, squared_error,
};
use crate::rows_diffusion::{
    prefix_softmax, silu_backward, silu_forward, timestep_features, timestep_frequencies,
};
use crate::trunk::{self, LayerActs, LayerSlots, Mixer, TrunkScratch, bias, fit};
use crate::{EngineError, Result, threads};

/// One training batch with its diffusion randomness already applied. To reproduce
/// `OneTowerLcm::loss_sampled(x0, mask, schedule, cfg_p, rng)`, draw from the same `rng`
/// in its order — `schedule.sample_timesteps(B·T, rng)`, then
/// `standard_normal(&[B, T, D], rng, …)`, then `cfg_dropped_rows(B, T, cfg_p, rng)` — and
/// compute `(noisy, target)` with `NoiseSchedule::noisy_and_target(x0, noise, timesteps)`.
#[derive(Debug, Clone, Copy)]
pub struct OneTowerBatch<'a> {
    /// `[B, T, D]` clean normalised concepts, zero padded.
    pub x0: &'a [f32],
    /// `[B, T, D]` noised `x0`.
    pub noisy: &'a [f32],
    /// `[B, T, D]` regression target.
    pub target: &'a [f32],
    /// `B·T` per-position timesteps, row-major.
    pub timesteps: &'a [usize],
    /// CFG-dropped noisy rows `(sequence, position)` (`cfg_dropped_rows`): each sees only
    /// itself.
    pub dropped_rows: &'a [(usize, usize)],
    pub batch: usize,
    pub time: usize,
    /// Real positions per row (right padding after them).
    pub lengths: &'a [usize],
    /// Per row, the first position whose target counts (prompt masking); empty: 0 for all.
    pub first_target: &'a [usize],
}

struct Slots {
    time1_w: Range<usize>,
    time1_b: Range<usize>,
    time2_w: Range<usize>,
    time2_b: Range<usize>,
    /// `[d, D + d]`: the concept columns, then the timestep columns.
    in_w: Range<usize>,
    in_b: Option<Range<usize>>,
    pos: Range<usize>,
    layers: Vec<LayerSlots>,
    final_norm: Range<usize>,
    out_w: Range<usize>,
    out_b: Option<Range<usize>>,
}

/// The flat layout of a One-Tower LCM's parameters under the names `OneTowerLcm::new`
/// gives them.
fn layout(cfg: &OneTowerConfig) -> (ParamLayout, Slots) {
    let (dd, d, f, bias) = (cfg.input_dim, cfg.d_model, cfg.ffn_inner_dim, cfg.bias);
    let mut l = ParamLayout::new();
    let time1_w = l.push("embed_time.fc1.weight", &[d, cfg.timestep_freq_dim]);
    let time1_b = l.push("embed_time.fc1.bias", &[d]);
    let time2_w = l.push("embed_time.fc2.weight", &[d, d]);
    let time2_b = l.push("embed_time.fc2.bias", &[d]);
    let in_w = l.push("input_proj.fc.weight", &[d, dd + d]);
    let in_b = bias.then(|| l.push("input_proj.fc.bias", &[d]));
    let pos = l.push("pos_embed.weight", &[cfg.max_seq_len, d]);
    let layers = (0..cfg.n_layers)
        .map(|i| LayerSlots::push(&mut l, &format!("decoder.layers.{i}"), d, f, bias))
        .collect();
    let final_norm = l.push("decoder.layer_norm.weight", &[d]);
    let out_w = l.push("final_proj.fc.weight", &[dd, d]);
    let out_b = bias.then(|| l.push("final_proj.fc.bias", &[dd]));
    (
        l,
        Slots {
            time1_w,
            time1_b,
            time2_w,
            time2_b,
            in_w,
            in_b,
            pos,
            layers,
            final_norm,
            out_w,
            out_b,
        },
    )
}

#[derive(Default)]
struct Arena {
    /// Timestep MLP: sinusoid features, `fc1` output, its SiLU, and `τ`.
    sinus: Vec<f32>,
    pre: Vec<f32>,
    hidden: Vec<f32>,
    tau: Vec<f32>,
    layers: Vec<LayerActs>,
    /// The trunk's output before the final RMSNorm, all `2N` rows.
    last: Vec<f32>,
    rstd_final: Vec<f32>,
    normed_final: Vec<f32>,
    pred: Vec<f32>,
    /// Per noisy row, the last visible column of its `[T, T+1]` score block.
    limits: Vec<usize>,
    d_pred: Vec<f32>,
    d_tau: Vec<f32>,
    d_hidden: Vec<f32>,
    d_pre: Vec<f32>,
    trunk: TrunkScratch,
}

/// Sizes the engine's problem for one batch.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    time: usize,
    /// `N = B·T`: the clean rows, and as many noisy rows.
    rows: usize,
    input: usize,
    d: usize,
    heads: usize,
    head_dim: usize,
    ffn: usize,
    freq: usize,
}

impl Dims {
    /// The trunk over both halves: `2N` rows (the mixer knows their structure).
    fn trunk(&self) -> trunk::Dims {
        trunk::Dims {
            batch: self.batch,
            t: self.time,
            rows: 2 * self.rows,
            input: self.input,
            d: self.d,
            heads: self.heads,
            head_dim: self.head_dim,
            ffn: self.ffn,
        }
    }

    /// Probabilities saved per sequence: `H` causal `[T, T]` blocks, then `H` noisy
    /// `[T, T+1]` blocks.
    fn probs_per_sequence(&self) -> usize {
        let t = self.time;
        self.heads * (t * t + t * (t + 1))
    }
}

/// The One-Tower attention over the split rows `[clean (N) | noisy (N)]`.
struct OneTowerMixer<'a> {
    dims: Dims,
    limits: &'a [usize],
}

impl Mixer for OneTowerMixer<'_> {
    fn forward(&self, qkv: &mut [f32], probs: &mut Vec<f32>, context: &mut [f32]) {
        let probs = fit(probs, self.dims.batch * self.dims.probs_per_sequence());
        attention_forward(qkv, probs, context, self.limits, self.dims);
    }

    fn backward(
        &self,
        qkv: &[f32],
        probs: &[f32],
        d_context: &[f32],
        d_qkv: &mut [f32],
        d_probs: &mut Vec<f32>,
    ) {
        let Dims {
            batch: b, time: t, ..
        } = self.dims;
        let d_probs = fit(d_probs, b * t * (t + 1));
        let probs = &probs[..b * self.dims.probs_per_sequence()];
        attention_backward(qkv, probs, d_context, d_qkv, d_probs, self.dims);
    }
}

/// A One-Tower LCM bound to its VarMap, with gradient buffer and activation arena.
pub struct OneTowerEngine {
    config: OneTowerConfig,
    params: FlatParams,
    slots: Slots,
    grads: Vec<f32>,
    /// The sinusoid's `Φ/2` frequencies, in f64 as the model computes them.
    freqs: Vec<f64>,
    arena: Arena,
}

impl OneTowerEngine {
    /// Binds the engine to the parameters a `OneTowerLcm::new(config, VarBuilder over
    /// varmap)` created. Refuses ([`EngineError::Unsupported`]) anything it does not
    /// implement.
    pub fn new(config: &OneTowerConfig, varmap: &VarMap) -> Result<Self> {
        let (d, heads) = (config.d_model, config.n_heads);
        if heads == 0 || !d.is_multiple_of(heads) {
            return Err(EngineError::Unsupported(format!(
                "d_model {d} is not a multiple of n_heads {heads}"
            )));
        }
        if config.timestep_freq_dim == 0 {
            return Err(EngineError::Unsupported(
                "a timestep sinusoid of width 0".into(),
            ));
        }
        if config.input_dim == 0 || d == 0 {
            return Err(EngineError::Unsupported(format!(
                "widths D = {}, d = {d}",
                config.input_dim
            )));
        }
        let (layout, slots) = layout(config);
        let params = FlatParams::bind(layout, varmap)?;
        let mut arena = Arena::default();
        arena
            .layers
            .resize_with(config.n_layers, LayerActs::default);
        Ok(Self {
            config: config.clone(),
            grads: vec![0.0; params.layout().len()],
            params,
            slots,
            freqs: timestep_frequencies(config.timestep_freq_dim),
            arena,
        })
    }

    pub fn config(&self) -> &OneTowerConfig {
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
    /// [`Self::params`]. Rows of the position table beyond the batch's `T` get exactly 0,
    /// as under autograd; so do, up to rounding, the key biases (without RoPE a key bias
    /// shifts a query's scores by a constant, which the softmax cancels).
    pub fn gradients(&self) -> &[f32] {
        &self.grads
    }

    pub fn gradients_mut(&mut self) -> &mut [f32] {
        &mut self.grads
    }

    /// Whether parameter `name` receives a gradient at all. Every parameter of the
    /// One-Tower LCM is on the loss's path (autograd gives each a gradient, if partly
    /// zero), so this is true for every name in the layout and false for any other.
    pub fn has_gradient(&self, name: &str) -> bool {
        self.params.layout().slots().iter().any(|s| s.name == name)
    }

    fn dims(&self, batch: &OneTowerBatch<'_>) -> Result<Dims> {
        let cfg = &self.config;
        let (b, t, dd) = (batch.batch, batch.time, cfg.input_dim);
        if b == 0 || t == 0 {
            return Err(EngineError::Shape(format!("an empty batch [B={b}, T={t}]")));
        }
        let n = b * t * dd;
        if batch.x0.len() != n || batch.noisy.len() != n || batch.target.len() != n {
            return Err(EngineError::Shape(format!(
                "x0, noisy and target of {}, {} and {} floats for [B={b}, T={t}, D={dd}]",
                batch.x0.len(),
                batch.noisy.len(),
                batch.target.len()
            )));
        }
        if batch.timesteps.len() != b * t || batch.lengths.len() != b {
            return Err(EngineError::Shape(format!(
                "{} timesteps and {} lengths for [B={b}, T={t}]",
                batch.timesteps.len(),
                batch.lengths.len()
            )));
        }
        crate::check_first_target(batch.first_target, b)?;
        if t > cfg.max_seq_len {
            return Err(EngineError::Shape(format!(
                "{t} positions exceed the model's max_seq_len {}",
                cfg.max_seq_len
            )));
        }
        if let Some(&(bi, pos)) = batch
            .dropped_rows
            .iter()
            .find(|&&(bi, pos)| bi >= b || pos >= t)
        {
            return Err(EngineError::Shape(format!(
                "dropped row ({bi}, {pos}) outside a [B={b}, T={t}] batch"
            )));
        }
        Ok(Dims {
            batch: b,
            time: t,
            rows: b * t,
            input: dd,
            d: cfg.d_model,
            heads: cfg.n_heads,
            head_dim: cfg.d_model / cfg.n_heads,
            ffn: cfg.ffn_inner_dim,
            freq: cfg.timestep_freq_dim,
        })
    }

    /// The loss alone (validation).
    pub fn loss(&mut self, batch: &OneTowerBatch<'_>) -> Result<SummedLoss> {
        let dims = self.dims(batch)?;
        self.forward(batch, dims);
        Ok(self.loss_and_output_gradient(batch, dims))
    }

    /// The loss and the gradient of its mean (`sum / count`, as the trainer optimises)
    /// with respect to every parameter, left in [`Self::gradients`].
    pub fn loss_and_gradients(&mut self, batch: &OneTowerBatch<'_>) -> Result<SummedLoss> {
        let dims = self.dims(batch)?;
        self.forward(batch, dims);
        let loss = self.loss_and_output_gradient(batch, dims);
        self.backward(batch, dims);
        Ok(loss)
    }

    fn forward(&mut self, batch: &OneTowerBatch<'_>, dims: Dims) {
        let Dims {
            time: t,
            rows: n,
            input: dd,
            d,
            freq,
            ..
        } = dims;
        let threads = threads();
        let eps = self.config.rms_eps as f32;
        let p = self.params.data();
        let s = &self.slots;
        let a = &mut self.arena;

        // Timestep embedding τ of the noisy rows.
        let sinus = fit(&mut a.sinus, n * freq);
        timestep_features(batch.timesteps, &self.freqs, freq, sinus);
        let pre = fit(&mut a.pre, n * d);
        Affine {
            rows: n,
            inputs: freq,
            outputs: d,
        }
        .forward(
            sinus,
            &p[s.time1_w.clone()],
            Some(&p[s.time1_b.clone()]),
            pre,
            threads,
        );
        let hidden = fit(&mut a.hidden, n * d);
        silu_forward(pre, hidden);
        let tau = fit(&mut a.tau, n * d);
        Affine {
            rows: n,
            inputs: d,
            outputs: d,
        }
        .forward(
            hidden,
            &p[s.time2_w.clone()],
            Some(&p[s.time2_b.clone()]),
            tau,
            threads,
        );

        // input_proj([x ; τ]) + pos[n] for the clean half, then the noisy half.
        let h0 = match a.layers.first_mut() {
            Some(first) => fit(&mut first.input, 2 * n * d),
            None => fit(&mut a.last, 2 * n * d),
        };
        let w = &p[s.in_w.clone()];
        let wx = Mat::block(w, dd + d, d, 0, dd);
        let wt = Mat::block(w, dd + d, d, dd, d);
        let in_b = bias(p, &s.in_b);
        let (hc, hz) = h0.split_at_mut(n * d);
        for (h, x) in [(&mut *hc, batch.x0), (&mut *hz, batch.noisy)] {
            if let Some(b) = in_b {
                fill_rows(h, b);
            }
            matmul(
                MatMut::dense(h, n, d),
                Mat::dense(x, n, dd),
                wx.t(),
                in_b.is_some(),
                threads,
            );
        }
        matmul(
            MatMut::dense(hz, n, d),
            Mat::dense(tau, n, d),
            wt.t(),
            true,
            threads,
        );
        let pos = &p[s.pos.clone()];
        for (r, row) in h0.chunks_exact_mut(d).enumerate() {
            add_assign(row, &pos[(r % t) * d..][..d]);
        }

        // Visible key columns of each noisy row.
        a.limits.clear();
        a.limits.extend((0..n).map(|r| r % t));
        for &(bi, pos) in batch.dropped_rows {
            a.limits[bi * t + pos] = 0;
        }

        let mixer = OneTowerMixer {
            dims,
            limits: &a.limits,
        };
        trunk::forward_with(
            p,
            &s.layers,
            &mut a.layers,
            &mut a.last,
            &mut a.trunk,
            dims.trunk(),
            eps,
            &mixer,
        );

        // Final RMSNorm and projection at the noisy rows.
        let normed_final = fit(&mut a.normed_final, n * d);
        rms_norm_forward(
            &a.last[n * d..2 * n * d],
            &p[s.final_norm.clone()],
            eps,
            normed_final,
            fit(&mut a.rstd_final, n),
        );
        Affine {
            rows: n,
            inputs: d,
            outputs: dd,
        }
        .forward(
            normed_final,
            &p[s.out_w.clone()],
            bias(p, &s.out_b),
            fit(&mut a.pred, n * dd),
            threads,
        );
    }

    /// The summed loss, and `∂(sum/count)/∂Ŷ` into the arena.
    fn loss_and_output_gradient(&mut self, batch: &OneTowerBatch<'_>, dims: Dims) -> SummedLoss {
        let Dims {
            time: t,
            rows: n,
            input: dd,
            ..
        } = dims;
        let from = |bi: usize| crate::first_target(batch.first_target, bi);
        let count: usize = batch
            .lengths
            .iter()
            .enumerate()
            .map(|(bi, &len)| len.min(t).saturating_sub(from(bi)))
            .sum();
        let a = &mut self.arena;
        let d_pred = fit(&mut a.d_pred, n * dd);
        let grad_scale = 1.0 / count.max(1) as f32;
        let sum = squared_error(&a.pred[..n * dd], dd, grad_scale, d_pred, |r| {
            let (bi, pos) = (r / t, r % t);
            let real = pos < batch.lengths[bi] && pos >= from(bi);
            (&batch.target[r * dd..][..dd], if real { 1.0 } else { 0.0 })
        });
        SummedLoss {
            sum,
            count: count as f64,
        }
    }

    fn backward(&mut self, batch: &OneTowerBatch<'_>, dims: Dims) {
        let Dims {
            time: t,
            rows: n,
            input: dd,
            d,
            freq,
            ..
        } = dims;
        let threads = threads();
        let p = self.params.data();
        let s = &self.slots;
        let g = &mut self.grads;
        g.fill(0.0);
        let a = &mut self.arena;

        // Output projection and final RMSNorm: only the noisy half gets a gradient.
        let d_normed = fit(&mut a.trunk.d_normed, n * d);
        Affine {
            rows: n,
            inputs: d,
            outputs: dd,
        }
        .backward(
            &a.d_pred[..n * dd],
            &a.normed_final[..n * d],
            &p[s.out_w.clone()],
            &mut g[s.out_w.clone()],
            Some((d_normed, false)),
            threads,
        );
        if let Some(r) = s.out_b.clone() {
            column_sums(&a.d_pred[..n * dd], &mut g[r]);
        }
        let d_resid = fit(&mut a.trunk.d_resid, 2 * n * d);
        d_resid.fill(0.0);
        rms_norm_backward(
            &a.last[n * d..2 * n * d],
            &p[s.final_norm.clone()],
            &a.rstd_final[..n],
            d_normed,
            &mut d_resid[n * d..],
            &mut g[s.final_norm.clone()],
        );

        let mixer = OneTowerMixer {
            dims,
            limits: &a.limits,
        };
        trunk::backward_with(
            p,
            g,
            &s.layers,
            &a.layers,
            &mut a.trunk,
            dims.trunk(),
            &mixer,
        );
        let dh = &a.trunk.d_resid[..2 * n * d];
        let (dhc, dhz) = dh.split_at(n * d);

        // Positions: both halves of row (b, n) read pos[n].
        let g_pos = &mut g[s.pos.clone()];
        for (r, row) in dh.chunks_exact(d).enumerate() {
            add_assign(&mut g_pos[(r % t) * d..][..d], row);
        }

        // Input projection: dWx from both halves, dWτ and dτ from the noisy half.
        let g_in = &mut g[s.in_w.clone()];
        for (dh_half, x) in [(dhc, batch.x0), (dhz, batch.noisy)] {
            matmul(
                MatMut::block(g_in, dd + d, d, 0, dd),
                Mat::dense(dh_half, n, d).t(),
                Mat::dense(x, n, dd),
                true,
                threads,
            );
        }
        matmul(
            MatMut::block(g_in, dd + d, d, dd, d),
            Mat::dense(dhz, n, d).t(),
            Mat::dense(&a.tau[..n * d], n, d),
            true,
            threads,
        );
        if let Some(r) = s.in_b.clone() {
            column_sums(dh, &mut g[r]);
        }
        let d_tau = fit(&mut a.d_tau, n * d);
        matmul(
            MatMut::dense(d_tau, n, d),
            Mat::dense(dhz, n, d),
            Mat::block(&p[s.in_w.clone()], dd + d, d, dd, d),
            false,
            threads,
        );

        // Timestep MLP.
        let d_hidden = fit(&mut a.d_hidden, n * d);
        Affine {
            rows: n,
            inputs: d,
            outputs: d,
        }
        .backward(
            d_tau,
            &a.hidden[..n * d],
            &p[s.time2_w.clone()],
            &mut g[s.time2_w.clone()],
            Some((d_hidden, false)),
            threads,
        );
        column_sums(d_tau, &mut g[s.time2_b.clone()]);
        let d_pre = fit(&mut a.d_pre, n * d);
        silu_backward(&a.pre[..n * d], d_hidden, d_pre);
        Affine {
            rows: n,
            inputs: freq,
            outputs: d,
        }
        .backward(
            d_pre,
            &a.sinus[..n * freq],
            &p[s.time1_w.clone()],
            &mut g[s.time1_w.clone()],
            None,
            threads,
        );
        column_sums(d_pre, &mut g[s.time1_b.clone()]);
    }
}

/// `Σ a ⊙ b` (a self score, or the gradient of one: a head's width, once per row).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(&x, &y)| x * y).sum()
}

/// `y += w · x`.
fn axpy(y: &mut [f32], w: f32, x: &[f32]) {
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv += w * xv;
    }
}

/// `y = w · x`.
fn scaled(y: &mut [f32], w: f32, x: &[f32]) {
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv = w * xv;
    }
}

/// One-Tower attention over packed `[2N, 3d]` rows (clean half, then noisy half):
/// probabilities (per sequence `H` causal `[T, T]` blocks, then `H` `[T, T+1]` noisy
/// blocks with the self key in column 0) and context `[2N, d]`, one sequence per task.
fn attention_forward(
    qkv: &[f32],
    probs: &mut [f32],
    context: &mut [f32],
    limits: &[usize],
    dims: Dims,
) {
    let Dims {
        time: t,
        rows: n,
        d,
        heads,
        head_dim: dh,
        ..
    } = dims;
    let scale = 1.0 / (dh as f32).sqrt();
    let tk = t + 1;
    let (qkv_c, qkv_z) = qkv.split_at(n * 3 * d);
    let (ctx_c, ctx_z) = context.split_at_mut(n * d);
    probs
        .par_chunks_mut(dims.probs_per_sequence())
        .zip(ctx_c.par_chunks_mut(t * d))
        .zip(ctx_z.par_chunks_mut(t * d))
        .enumerate()
        .for_each(|(bi, ((p_b, cc), cz))| {
            let c = &qkv_c[bi * t * 3 * d..][..t * 3 * d];
            let z = &qkv_z[bi * t * 3 * d..][..t * 3 * d];
            let lim = &limits[bi * t..][..t];
            let (p_clean, p_noisy) = p_b.split_at_mut(heads * t * t);
            for h in 0..heads {
                let (qo, ko, vo) = (h * dh, d + h * dh, 2 * d + h * dh);
                let kc = Mat::block(c, 3 * d, t, ko, dh);
                let vc = Mat::block(c, 3 * d, t, vo, dh);

                // Clean rows: causal over the clean keys.
                let p = &mut p_clean[h * t * t..][..t * t];
                matmul(
                    MatMut::dense(p, t, t),
                    Mat::block(c, 3 * d, t, qo, dh),
                    kc.t(),
                    false,
                    1,
                );
                causal_softmax(p, t, scale);
                matmul(
                    MatMut::block(cc, d, t, h * dh, dh),
                    Mat::dense(p, t, t),
                    vc,
                    false,
                    1,
                );

                // Noisy rows: the self key in column 0, the clean keys after it.
                let p = &mut p_noisy[h * t * tk..][..t * tk];
                matmul(
                    MatMut::block(p, tk, t, 1, t),
                    Mat::block(z, 3 * d, t, qo, dh),
                    kc.t(),
                    false,
                    1,
                );
                for (row, zr) in p.chunks_exact_mut(tk).zip(z.chunks_exact(3 * d)) {
                    row[0] = dot(&zr[qo..qo + dh], &zr[ko..ko + dh]);
                }
                prefix_softmax(p, tk, lim, scale);
                matmul(
                    MatMut::block(cz, d, t, h * dh, dh),
                    Mat::block(p, tk, t, 1, t),
                    vc,
                    false,
                    1,
                );
                for ((row, zr), out) in p
                    .chunks_exact(tk)
                    .zip(z.chunks_exact(3 * d))
                    .zip(cz.chunks_exact_mut(d))
                {
                    axpy(&mut out[h * dh..][..dh], row[0], &zr[vo..vo + dh]);
                }
            }
        });
}

/// Backward of [`attention_forward`]: `d_qkv: [2N, 3d]` (written) from `d_context`, with
/// one `[T, T+1]` scratch block per sequence.
fn attention_backward(
    qkv: &[f32],
    probs: &[f32],
    d_context: &[f32],
    d_qkv: &mut [f32],
    d_probs: &mut [f32],
    dims: Dims,
) {
    let Dims {
        time: t,
        rows: n,
        d,
        heads,
        head_dim: dh,
        ..
    } = dims;
    let scale = 1.0 / (dh as f32).sqrt();
    let tk = t + 1;
    let per_seq = dims.probs_per_sequence();
    let (qkv_c, qkv_z) = qkv.split_at(n * 3 * d);
    let (dctx_c, dctx_z) = d_context.split_at(n * d);
    let (dqkv_c, dqkv_z) = d_qkv.split_at_mut(n * 3 * d);
    dqkv_c
        .par_chunks_mut(t * 3 * d)
        .zip(dqkv_z.par_chunks_mut(t * 3 * d))
        .zip(d_probs.par_chunks_mut(t * tk))
        .enumerate()
        .for_each(|(bi, ((gc, gz), dp))| {
            let c = &qkv_c[bi * t * 3 * d..][..t * 3 * d];
            let z = &qkv_z[bi * t * 3 * d..][..t * 3 * d];
            let dcc = &dctx_c[bi * t * d..][..t * d];
            let dcz = &dctx_z[bi * t * d..][..t * d];
            let (p_clean, p_noisy) = probs[bi * per_seq..][..per_seq].split_at(heads * t * t);
            for h in 0..heads {
                let (qo, ko, vo) = (h * dh, d + h * dh, 2 * d + h * dh);
                let qc = Mat::block(c, 3 * d, t, qo, dh);
                let kc = Mat::block(c, 3 * d, t, ko, dh);
                let vc = Mat::block(c, 3 * d, t, vo, dh);
                let qz = Mat::block(z, 3 * d, t, qo, dh);
                let dcc_h = Mat::block(dcc, d, t, h * dh, dh);
                let dcz_h = Mat::block(dcz, d, t, h * dh, dh);

                // Clean rows. dP = dC·Vᵀ, dV = Pᵀ·dC; dQ = dS·K, dK = dSᵀ·Q.
                let pc = &p_clean[h * t * t..][..t * t];
                let ds = &mut dp[..t * t];
                matmul(MatMut::dense(ds, t, t), dcc_h, vc.t(), false, 1);
                matmul(
                    MatMut::block(gc, 3 * d, t, vo, dh),
                    Mat::dense(pc, t, t).t(),
                    dcc_h,
                    false,
                    1,
                );
                softmax_backward(pc, ds, t, scale);
                matmul(
                    MatMut::block(gc, 3 * d, t, qo, dh),
                    Mat::dense(ds, t, t),
                    kc,
                    false,
                    1,
                );
                matmul(
                    MatMut::block(gc, 3 * d, t, ko, dh),
                    Mat::dense(ds, t, t).t(),
                    qc,
                    false,
                    1,
                );

                // Noisy rows: column 0 is the row's own key and value.
                let pz = &p_noisy[h * t * tk..][..t * tk];
                let ds = &mut dp[..t * tk];
                matmul(MatMut::block(ds, tk, t, 1, t), dcz_h, vc.t(), false, 1);
                for ((row, zr), dr) in ds
                    .chunks_exact_mut(tk)
                    .zip(z.chunks_exact(3 * d))
                    .zip(dcz.chunks_exact(d))
                {
                    row[0] = dot(&dr[h * dh..][..dh], &zr[vo..vo + dh]);
                }
                matmul(
                    MatMut::block(gc, 3 * d, t, vo, dh),
                    Mat::block(pz, tk, t, 1, t).t(),
                    dcz_h,
                    true,
                    1,
                );
                for ((prow, gr), dr) in pz
                    .chunks_exact(tk)
                    .zip(gz.chunks_exact_mut(3 * d))
                    .zip(dcz.chunks_exact(d))
                {
                    scaled(&mut gr[vo..vo + dh], prow[0], &dr[h * dh..][..dh]);
                }
                softmax_backward(pz, ds, tk, scale);
                matmul(
                    MatMut::block(gz, 3 * d, t, qo, dh),
                    Mat::block(ds, tk, t, 1, t),
                    kc,
                    false,
                    1,
                );
                matmul(
                    MatMut::block(gc, 3 * d, t, ko, dh),
                    Mat::block(ds, tk, t, 1, t).t(),
                    qz,
                    true,
                    1,
                );
                for ((srow, gr), zr) in ds
                    .chunks_exact(tk)
                    .zip(gz.chunks_exact_mut(3 * d))
                    .zip(z.chunks_exact(3 * d))
                {
                    let (dq, rest) = gr[qo..].split_at_mut(d);
                    axpy(&mut dq[..dh], srow[0], &zr[ko..ko + dh]);
                    scaled(&mut rest[..dh], srow[0], &zr[qo..qo + dh]);
                }
            }
        });
}
