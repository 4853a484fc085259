//! The Two-Tower diffusion LCM on the fused engine: the training loss of
//! `lcm_model::two_tower::TwoTowerLcm::loss` and its exact backward pass, over flat buffers.
//!
//! With `N = B·T` rows, `Nk = B·(T+1)` key rows, `d` the width of both towers, `H` heads of
//! `Dh`, `F` the SwiGLU width and `Φ` the timestep sinusoid width:
//!
//! ```text
//! contextualizer (clean x0, all T positions; Base-LCM's causal trunk):
//!   c = RMSNorm(Trunk(x0 Wfᵀ + bf))                          [N, d]
//!   K̃ = [0; c_1 … c_T] per sequence                           [Nk, d]
//! timestep embedding (computed once, read by every layer):
//!   s = silu(silu(sin(t) W1ᵀ + b1) W2ᵀ + b2)                 [N, d]    sin(t): [N, Φ]
//! denoiser:
//!   h⁰ = x_t Wᵢᵀ + bᵢ                                        [N, d]
//!   per layer:  m = s Wmᵀ + bm                                [N, 9d]
//!               = [shift|scale|gate] for (self, cross, ffn)
//!     each sub-block k:  x ← x + gate_k ⊙ Fₖ(RMSNorm(x) ⊙ (1 + scale_k) + shift_k)
//!     self  (identity mask: one visible key, probability 1):
//!            F(u) = (u Wvᵀ + bv) Woᵀ + bo                     (Q, K unused: zero gradient)
//!     cross: q = u Wqᵀ + bq                                   [N, d]
//!            k|v = K̃ [Wk;Wv]ᵀ + [bk;bv]                        [Nk, 2d]  (one product)
//!            P = softmax(q kᵀ/√Dh) over keys 0..=ℓᵢ           [B, H, T, T+1]
//!                ℓᵢ = 0 for CFG-dropped rows, i otherwise (no RoPE)
//!            F(u) = (P v) Woᵀ + bo
//!     ffn:   g|u' = u [Wg;Wu]ᵀ + b,  F(u) = (silu(g) ⊙ u') Wdᵀ + bd
//! Ŷ = RMSNorm(hᴸ) W₀ᵀ + b₀                                   [N, D]
//! loss = Σ_{real positions} ‖Ŷ − target‖²
//! ```
//!
//! The gradient reaches the contextualizer only through the cross-attention keys and
//! values: `dK̃` is accumulated over the denoiser layers, its zero row dropped, and sent
//! back through the trunk. Saved for the backward pass: the trunk's activations as in
//! [`crate::base_lcm`]; the timestep MLP's pre-activations; per denoiser layer the
//! modulation, each sub-block's input and `rstd`, its branch output (for the gate's
//! gradient), the self-attention values, the cross-attention queries, key/value rows,
//! probabilities and context, and the SwiGLU pre-activations. Normalised and modulated rows
//! and SwiGLU outputs are recomputed in the backward pass.

use std::ops::Range;

use candle_nn::VarMap;
use lcm_kernels::{Mat, MatMut, matmul};
use lcm_model::two_tower::TwoTowerConfig;
use rayon::prelude::*;

use crate::base_lcm::SummedLoss;
use crate::linear::Affine;
use crate::params::{FlatParams, ParamLayout};
use crate::rows::{
    column_sums, rms_norm_apply, rms_norm_backward, rms_norm_forward, rope_tables,
    softmax_backward, squared_error, swiglu_backward, swiglu_forward,
};
use crate::rows_diffusion::{
    gated_add, gated_add_backward, modulate_backward, modulate_forward, prefix_softmax,
    silu_backward, silu_forward, timestep_features, timestep_frequencies,
};
use crate::trunk::{self, LayerActs, LayerSlots, TrunkScratch, bias, fit};
use crate::{EngineError, Result, threads};

/// One training batch with its diffusion randomness already applied: the caller draws
/// timesteps, noise and CFG rows, and computes `(noisy, target)` with
/// `NoiseSchedule::noisy_and_target`, so that the engine needs no schedule.
#[derive(Debug, Clone, Copy)]
pub struct TwoTowerBatch<'a> {
    /// `[B, T, D]` clean normalised concepts (the contextualizer's input), zero padded.
    pub x0: &'a [f32],
    /// `[B, T, D]` noised `x0`.
    pub noisy: &'a [f32],
    /// `[B, T, D]` regression target.
    pub target: &'a [f32],
    /// `B·T` per-position timesteps, row-major.
    pub timesteps: &'a [usize],
    /// CFG-dropped query rows (`cfg_dropped_rows`), shared by every sequence.
    pub dropped_rows: &'a [usize],
    pub batch: usize,
    pub time: usize,
    /// Real positions per row (right padding after them).
    pub lengths: &'a [usize],
    /// Per row, the first position whose target counts (prompt masking); empty: 0 for all.
    pub first_target: &'a [usize],
}

/// An attention block's parameters. Q, K and V are pushed next to each other (weights,
/// then biases), so that K|V and Q|K|V are contiguous ranges.
struct AttnSlots {
    q_w: Range<usize>,
    k_w: Range<usize>,
    v_w: Range<usize>,
    o_w: Range<usize>,
    q_b: Option<Range<usize>>,
    k_b: Option<Range<usize>>,
    v_b: Option<Range<usize>>,
    o_b: Option<Range<usize>>,
}

impl AttnSlots {
    fn push(l: &mut ParamLayout, p: &str, d: usize, bias: bool) -> Self {
        let q_w = l.push(format!("{p}.q_proj.weight"), &[d, d]);
        let k_w = l.push(format!("{p}.k_proj.weight"), &[d, d]);
        let v_w = l.push(format!("{p}.v_proj.weight"), &[d, d]);
        let (q_b, k_b, v_b) = if bias {
            (
                Some(l.push(format!("{p}.q_proj.bias"), &[d])),
                Some(l.push(format!("{p}.k_proj.bias"), &[d])),
                Some(l.push(format!("{p}.v_proj.bias"), &[d])),
            )
        } else {
            (None, None, None)
        };
        let o_w = l.push(format!("{p}.output_proj.weight"), &[d, d]);
        let o_b = bias.then(|| l.push(format!("{p}.output_proj.bias"), &[d]));
        Self {
            q_w,
            k_w,
            v_w,
            o_w,
            q_b,
            k_b,
            v_b,
            o_b,
        }
    }

    fn kv_w(&self) -> Range<usize> {
        self.k_w.start..self.v_w.end
    }

    fn kv_b(&self) -> Option<Range<usize>> {
        self.k_b
            .as_ref()
            .zip(self.v_b.as_ref())
            .map(|(k, v)| k.start..v.end)
    }
}

/// A SwiGLU block's parameters, gate and up packed.
struct FfnSlots {
    gate_up_w: Range<usize>,
    gate_up_b: Option<Range<usize>>,
    down_w: Range<usize>,
    down_b: Option<Range<usize>>,
}

impl FfnSlots {
    fn push(l: &mut ParamLayout, p: &str, d: usize, f: usize, bias: bool) -> Self {
        let g = l.push(format!("{p}.gate_proj.weight"), &[f, d]);
        let u = l.push(format!("{p}.inner_proj.weight"), &[f, d]);
        let gate_up_b = bias.then(|| {
            let g = l.push(format!("{p}.gate_proj.bias"), &[f]);
            let u = l.push(format!("{p}.inner_proj.bias"), &[f]);
            g.start..u.end
        });
        let down_w = l.push(format!("{p}.output_proj.weight"), &[d, f]);
        let down_b = bias.then(|| l.push(format!("{p}.output_proj.bias"), &[d]));
        Self {
            gate_up_w: g.start..u.end,
            gate_up_b,
            down_w,
            down_b,
        }
    }
}

struct DenoiserSlots {
    self_norm: Range<usize>,
    self_attn: AttnSlots,
    cross_norm: Range<usize>,
    cross_attn: AttnSlots,
    ffn_norm: Range<usize>,
    ffn: FfnSlots,
    mod_w: Range<usize>,
    mod_b: Range<usize>,
}

struct Slots {
    front_w: Range<usize>,
    front_b: Option<Range<usize>>,
    ctx_layers: Vec<LayerSlots>,
    ctx_norm: Range<usize>,
    init_w: Range<usize>,
    init_b: Option<Range<usize>>,
    time1_w: Range<usize>,
    time1_b: Range<usize>,
    time2_w: Range<usize>,
    time2_b: Range<usize>,
    den_layers: Vec<DenoiserSlots>,
    den_norm: Range<usize>,
    final_w: Range<usize>,
    final_b: Option<Range<usize>>,
}

/// The flat layout of a Two-Tower LCM's parameters under the names `TwoTowerLcm::new`
/// gives them.
fn layout(cfg: &TwoTowerConfig) -> (ParamLayout, Slots) {
    let (dd, d, f, bias) = (cfg.input_dim, cfg.d_model, cfg.ffn_inner_dim, cfg.bias);
    let mut l = ParamLayout::new();
    let front_w = l.push("encoder_frontend.pre_linear.weight", &[d, dd]);
    let front_b = bias.then(|| l.push("encoder_frontend.pre_linear.bias", &[d]));
    let ctx_layers = (0..cfg.n_context_layers)
        .map(|i| LayerSlots::push(&mut l, &format!("context_encoder.layers.{i}"), d, f, bias))
        .collect();
    let ctx_norm = l.push("context_encoder.layer_norm.weight", &[d]);
    let init_w = l.push("denoiser.initial_proj.fc.weight", &[d, dd]);
    let init_b = bias.then(|| l.push("denoiser.initial_proj.fc.bias", &[d]));
    let time1_w = l.push(
        "denoiser.embed_time.fc1.weight",
        &[d, cfg.timestep_freq_dim],
    );
    let time1_b = l.push("denoiser.embed_time.fc1.bias", &[d]);
    let time2_w = l.push("denoiser.embed_time.fc2.weight", &[d, d]);
    let time2_b = l.push("denoiser.embed_time.fc2.bias", &[d]);
    let den_layers = (0..cfg.n_denoiser_layers)
        .map(|i| {
            let p = format!("denoiser.layers.{i}");
            let self_norm = l.push(format!("{p}.self_attn_layer_norm.weight"), &[d]);
            let self_attn = AttnSlots::push(&mut l, &format!("{p}.self_attn"), d, bias);
            let cross_norm = l.push(format!("{p}.cross_attention_layer_norm.weight"), &[d]);
            let cross_attn = AttnSlots::push(&mut l, &format!("{p}.cross_attention"), d, bias);
            let ffn_norm = l.push(format!("{p}.ffn_layer_norm.weight"), &[d]);
            let ffn = FfnSlots::push(&mut l, &format!("{p}.ffn"), d, f, bias);
            let mod_w = l.push(format!("{p}.modulator.fc.weight"), &[9 * d, d]);
            let mod_b = l.push(format!("{p}.modulator.fc.bias"), &[9 * d]);
            DenoiserSlots {
                self_norm,
                self_attn,
                cross_norm,
                cross_attn,
                ffn_norm,
                ffn,
                mod_w,
                mod_b,
            }
        })
        .collect();
    let den_norm = l.push("denoiser.layer_norm.weight", &[d]);
    let final_w = l.push("denoiser.final_proj.fc.weight", &[dd, d]);
    let final_b = bias.then(|| l.push("denoiser.final_proj.fc.bias", &[dd]));
    (
        l,
        Slots {
            front_w,
            front_b,
            ctx_layers,
            ctx_norm,
            init_w,
            init_b,
            time1_w,
            time1_b,
            time2_w,
            time2_b,
            den_layers,
            den_norm,
            final_w,
            final_b,
        },
    )
}

/// The contextualizer's activations.
#[derive(Default)]
struct ContextActs {
    layers: Vec<LayerActs>,
    /// The trunk's output before its final RMSNorm.
    last: Vec<f32>,
    rstd: Vec<f32>,
    /// `[Nk, d]`: per sequence the zero vector, then the contextualised concepts.
    keys: Vec<f32>,
}

/// The timestep MLP's activations.
#[derive(Default)]
struct TimeActs {
    sinus: Vec<f32>,
    /// `fc1` output.
    pre: Vec<f32>,
    /// `silu(pre)`, the input of `fc2`.
    hidden: Vec<f32>,
    /// `fc2` output, the timestep embedding.
    emb: Vec<f32>,
    /// `silu(emb)`, the input of every modulator.
    act: Vec<f32>,
}

#[derive(Default)]
struct DenoiserActs {
    m: Vec<f32>,
    self_in: Vec<f32>,
    self_rstd: Vec<f32>,
    self_v: Vec<f32>,
    self_out: Vec<f32>,
    cross_in: Vec<f32>,
    cross_rstd: Vec<f32>,
    q: Vec<f32>,
    kv: Vec<f32>,
    probs: Vec<f32>,
    context: Vec<f32>,
    cross_out: Vec<f32>,
    ffn_in: Vec<f32>,
    ffn_rstd: Vec<f32>,
    gate_up: Vec<f32>,
    ffn_out: Vec<f32>,
}

/// Buffers reused by every layer of both towers: the trunk's, and the denoiser's own.
#[derive(Default)]
struct Scratch {
    trunk: TrunkScratch,
    modulated: Vec<f32>,
    d_pred: Vec<f32>,
    d_branch: Vec<f32>,
    d_modulated: Vec<f32>,
    d_q: Vec<f32>,
    d_kv: Vec<f32>,
    d_m: Vec<f32>,
    d_emb: Vec<f32>,
    d_keys: Vec<f32>,
    d_time: Vec<f32>,
    d_hidden: Vec<f32>,
}

#[derive(Default)]
struct Arena {
    ctx: ContextActs,
    time: TimeActs,
    den: Vec<DenoiserActs>,
    /// The denoiser's output before its final RMSNorm.
    last: Vec<f32>,
    rstd_final: Vec<f32>,
    normed_final: Vec<f32>,
    pred: Vec<f32>,
    /// Per query row, the last visible key of the cross-attention.
    limits: Vec<usize>,
    s: Scratch,
}

/// Sizes the engine's problem for one batch.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    time: usize,
    rows: usize,
    key_rows: usize,
    input: usize,
    d: usize,
    heads: usize,
    head_dim: usize,
    ffn: usize,
    freq: usize,
}

impl Dims {
    /// The contextualizer's trunk in Base-LCM's terms: all `T` positions of every row.
    fn trunk(&self) -> trunk::Dims {
        trunk::Dims {
            batch: self.batch,
            t: self.time,
            rows: self.rows,
            input: self.input,
            d: self.d,
            heads: self.heads,
            head_dim: self.head_dim,
            ffn: self.ffn,
        }
    }
}

/// A Two-Tower LCM bound to its VarMap, with gradient buffer and activation arena.
pub struct TwoTowerEngine {
    config: TwoTowerConfig,
    params: FlatParams,
    slots: Slots,
    grads: Vec<f32>,
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    /// The sinusoid's `Φ/2` frequencies, in f64 as the model computes them.
    freqs: Vec<f64>,
    arena: Arena,
}

impl TwoTowerEngine {
    /// Binds the engine to the parameters a `TwoTowerLcm::new(config, VarBuilder over
    /// varmap)` created. Refuses ([`EngineError::Unsupported`]) anything it does not
    /// implement.
    pub fn new(config: &TwoTowerConfig, varmap: &VarMap) -> Result<Self> {
        let (d, heads) = (config.d_model, config.n_heads);
        if heads == 0 || !d.is_multiple_of(heads) {
            return Err(EngineError::Unsupported(format!(
                "d_model {d} is not a multiple of n_heads {heads}"
            )));
        }
        let head_dim = d / heads;
        if !head_dim.is_multiple_of(2) {
            return Err(EngineError::Unsupported(format!(
                "RoPE needs an even head dimension, got {head_dim}"
            )));
        }
        if config.timestep_freq_dim == 0 {
            return Err(EngineError::Unsupported(
                "a timestep sinusoid of width 0".into(),
            ));
        }
        let (layout, slots) = layout(config);
        let params = FlatParams::bind(layout, varmap)?;
        let (rope_cos, rope_sin) = rope_tables(head_dim, config.max_seq_len, config.rope_theta);
        let freqs = timestep_frequencies(config.timestep_freq_dim);
        let mut arena = Arena::default();
        arena
            .ctx
            .layers
            .resize_with(config.n_context_layers, LayerActs::default);
        arena
            .den
            .resize_with(config.n_denoiser_layers, DenoiserActs::default);
        Ok(Self {
            config: config.clone(),
            grads: vec![0.0; params.layout().len()],
            params,
            slots,
            rope_cos,
            rope_sin,
            freqs,
            arena,
        })
    }

    pub fn config(&self) -> &TwoTowerConfig {
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
    /// [`Self::params`]. The denoiser's self-attention Q and K weights (and biases) are
    /// unused under its identity mask and always get exactly 0.
    pub fn gradients(&self) -> &[f32] {
        &self.grads
    }

    pub fn gradients_mut(&mut self) -> &mut [f32] {
        &mut self.grads
    }

    /// Whether parameter `name` receives a gradient at all: not the denoiser's
    /// self-attention Q and K, which the identity mask never reads. Autograd leaves them
    /// without a gradient, and an optimiser must then skip them (no step, no weight decay),
    /// as PyTorch's and candle's AdamW do.
    pub fn has_gradient(&self, name: &str) -> bool {
        !(name.starts_with("denoiser.layers.")
            && (name.contains(".self_attn.q_proj.") || name.contains(".self_attn.k_proj.")))
    }

    fn dims(&self, batch: &TwoTowerBatch<'_>) -> Result<Dims> {
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
        Ok(Dims {
            batch: b,
            time: t,
            rows: b * t,
            key_rows: b * (t + 1),
            input: dd,
            d: cfg.d_model,
            heads: cfg.n_heads,
            head_dim: cfg.d_model / cfg.n_heads,
            ffn: cfg.ffn_inner_dim,
            freq: cfg.timestep_freq_dim,
        })
    }

    /// The loss alone (validation).
    pub fn loss(&mut self, batch: &TwoTowerBatch<'_>) -> Result<SummedLoss> {
        let dims = self.dims(batch)?;
        self.forward(batch, dims);
        Ok(self.loss_and_output_gradient(batch, dims))
    }

    /// The loss and the gradient of its mean (`sum / count`, as the trainer optimises)
    /// with respect to every parameter, left in [`Self::gradients`].
    pub fn loss_and_gradients(&mut self, batch: &TwoTowerBatch<'_>) -> Result<SummedLoss> {
        let dims = self.dims(batch)?;
        self.forward(batch, dims);
        let loss = self.loss_and_output_gradient(batch, dims);
        self.backward(batch, dims);
        Ok(loss)
    }

    fn forward(&mut self, batch: &TwoTowerBatch<'_>, dims: Dims) {
        let Dims {
            batch: b,
            time: t,
            rows: n,
            key_rows: nk,
            input: dd,
            d,
            heads,
            head_dim,
            ffn,
            freq,
        } = dims;
        let threads = threads();
        let eps = self.config.rms_eps as f32;
        let p = self.params.data();
        let s = &self.slots;
        let a = &mut self.arena;

        // Contextualizer, then the keys [0; c] per sequence.
        let h0 = match a.ctx.layers.first_mut() {
            Some(first) => fit(&mut first.input, n * d),
            None => fit(&mut a.ctx.last, n * d),
        };
        Affine {
            rows: n,
            inputs: dd,
            outputs: d,
        }
        .forward(
            batch.x0,
            &p[s.front_w.clone()],
            bias(p, &s.front_b),
            h0,
            threads,
        );
        trunk::forward(
            p,
            &s.ctx_layers,
            &mut a.ctx.layers,
            &mut a.ctx.last,
            &mut a.s.trunk,
            dims.trunk(),
            eps,
            (&self.rope_cos, &self.rope_sin),
        );
        let keys = fit(&mut a.ctx.keys, nk * d);
        let rstd = fit(&mut a.ctx.rstd, n);
        for bi in 0..b {
            let (zero, ctx) = keys[bi * (t + 1) * d..][..(t + 1) * d].split_at_mut(d);
            zero.fill(0.0);
            rms_norm_forward(
                &a.ctx.last[bi * t * d..][..t * d],
                &p[s.ctx_norm.clone()],
                eps,
                ctx,
                &mut rstd[bi * t..][..t],
            );
        }

        // Timestep embedding.
        let tm = &mut a.time;
        let sinus = fit(&mut tm.sinus, n * freq);
        timestep_features(batch.timesteps, &self.freqs, freq, sinus);
        let pre = fit(&mut tm.pre, n * d);
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
        let hidden = fit(&mut tm.hidden, n * d);
        silu_forward(pre, hidden);
        let emb = fit(&mut tm.emb, n * d);
        let square = Affine {
            rows: n,
            inputs: d,
            outputs: d,
        };
        square.forward(
            hidden,
            &p[s.time2_w.clone()],
            Some(&p[s.time2_b.clone()]),
            emb,
            threads,
        );
        silu_forward(emb, fit(&mut tm.act, n * d));

        a.limits.clear();
        a.limits.extend((0..t).map(|i| {
            if batch.dropped_rows.contains(&i) {
                0
            } else {
                i
            }
        }));

        // Denoiser.
        let h0 = match a.den.first_mut() {
            Some(first) => fit(&mut first.self_in, n * d),
            None => fit(&mut a.last, n * d),
        };
        Affine {
            rows: n,
            inputs: dd,
            outputs: d,
        }
        .forward(
            batch.noisy,
            &p[s.init_w.clone()],
            bias(p, &s.init_b),
            h0,
            threads,
        );
        let scale = 1.0 / (head_dim as f32).sqrt();
        let ms = 9 * d;
        for (l, ls) in s.den_layers.iter().enumerate() {
            let (done, rest) = a.den.split_at_mut(l + 1);
            let la = &mut done[l];
            let m = fit(&mut la.m, n * ms);
            Affine {
                rows: n,
                inputs: d,
                outputs: ms,
            }
            .forward(
                &a.time.act[..n * d],
                &p[ls.mod_w.clone()],
                Some(&p[ls.mod_b.clone()]),
                m,
                threads,
            );
            let normed = fit(&mut a.s.trunk.normed, n * d);
            let u = fit(&mut a.s.modulated, n * d);

            // Self-attention under the identity mask: O(V(u)).
            let sa = &ls.self_attn;
            rms_norm_forward(
                &la.self_in[..n * d],
                &p[ls.self_norm.clone()],
                eps,
                normed,
                fit(&mut la.self_rstd, n),
            );
            modulate_forward(normed, m, ms, 0, d, u);
            let v = fit(&mut la.self_v, n * d);
            square.forward(u, &p[sa.v_w.clone()], bias(p, &sa.v_b), v, threads);
            let o = fit(&mut la.self_out, n * d);
            square.forward(v, &p[sa.o_w.clone()], bias(p, &sa.o_b), o, threads);
            let x = fit(&mut la.cross_in, n * d);
            x.copy_from_slice(&la.self_in[..n * d]);
            gated_add(x, o, m, ms, 2 * d, d);

            // Cross-attention to the keys.
            let ca = &ls.cross_attn;
            rms_norm_forward(
                x,
                &p[ls.cross_norm.clone()],
                eps,
                normed,
                fit(&mut la.cross_rstd, n),
            );
            modulate_forward(normed, m, ms, 3 * d, d, u);
            let q = fit(&mut la.q, n * d);
            square.forward(u, &p[ca.q_w.clone()], bias(p, &ca.q_b), q, threads);
            let kv = fit(&mut la.kv, nk * 2 * d);
            Affine {
                rows: nk,
                inputs: d,
                outputs: 2 * d,
            }
            .forward(
                &a.ctx.keys[..nk * d],
                &p[ca.kv_w()],
                bias(p, &ca.kv_b()),
                kv,
                threads,
            );
            let probs = fit(&mut la.probs, b * heads * t * (t + 1));
            let context = fit(&mut la.context, n * d);
            cross_attention_forward(q, kv, probs, context, &a.limits, dims, scale);
            let o = fit(&mut la.cross_out, n * d);
            square.forward(context, &p[ca.o_w.clone()], bias(p, &ca.o_b), o, threads);
            let x = fit(&mut la.ffn_in, n * d);
            x.copy_from_slice(&la.cross_in[..n * d]);
            gated_add(x, o, m, ms, 5 * d, d);

            // SwiGLU.
            let fs = &ls.ffn;
            rms_norm_forward(
                x,
                &p[ls.ffn_norm.clone()],
                eps,
                normed,
                fit(&mut la.ffn_rstd, n),
            );
            modulate_forward(normed, m, ms, 6 * d, d, u);
            let gate_up = fit(&mut la.gate_up, n * 2 * ffn);
            Affine {
                rows: n,
                inputs: d,
                outputs: 2 * ffn,
            }
            .forward(
                u,
                &p[fs.gate_up_w.clone()],
                bias(p, &fs.gate_up_b),
                gate_up,
                threads,
            );
            let act = fit(&mut a.s.trunk.act, n * ffn);
            swiglu_forward(gate_up, act, ffn);
            let o = fit(&mut la.ffn_out, n * d);
            Affine {
                rows: n,
                inputs: ffn,
                outputs: d,
            }
            .forward(act, &p[fs.down_w.clone()], bias(p, &fs.down_b), o, threads);
            let out = match rest.first_mut() {
                Some(next) => fit(&mut next.self_in, n * d),
                None => fit(&mut a.last, n * d),
            };
            out.copy_from_slice(&la.ffn_in[..n * d]);
            gated_add(out, o, m, ms, 8 * d, d);
        }

        let normed_final = fit(&mut a.normed_final, n * d);
        rms_norm_forward(
            &a.last[..n * d],
            &p[s.den_norm.clone()],
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
            &p[s.final_w.clone()],
            bias(p, &s.final_b),
            fit(&mut a.pred, n * dd),
            threads,
        );
    }

    /// The summed loss, and `∂(sum/count)/∂Ŷ` into the arena.
    fn loss_and_output_gradient(&mut self, batch: &TwoTowerBatch<'_>, dims: Dims) -> SummedLoss {
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
        let d_pred = fit(&mut a.s.d_pred, n * dd);
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

    fn backward(&mut self, batch: &TwoTowerBatch<'_>, dims: Dims) {
        let Dims {
            batch: b,
            time: t,
            rows: n,
            key_rows: nk,
            input: dd,
            d,
            head_dim,
            ffn,
            freq,
            ..
        } = dims;
        let threads = threads();
        let p = self.params.data();
        let s = &self.slots;
        let g = &mut self.grads;
        g.fill(0.0);
        let a = &mut self.arena;
        let sc = &mut a.s;

        let d_normed = fit(&mut sc.trunk.d_normed, n * d);
        Affine {
            rows: n,
            inputs: d,
            outputs: dd,
        }
        .backward(
            &sc.d_pred[..n * dd],
            &a.normed_final[..n * d],
            &p[s.final_w.clone()],
            &mut g[s.final_w.clone()],
            Some((d_normed, false)),
            threads,
        );
        if let Some(r) = s.final_b.clone() {
            column_sums(&sc.d_pred[..n * dd], &mut g[r]);
        }
        let d_resid = fit(&mut sc.trunk.d_resid, n * d);
        d_resid.fill(0.0);
        rms_norm_backward(
            &a.last[..n * d],
            &p[s.den_norm.clone()],
            &a.rstd_final[..n],
            d_normed,
            d_resid,
            &mut g[s.den_norm.clone()],
        );

        let scale = 1.0 / (head_dim as f32).sqrt();
        let ms = 9 * d;
        let square = Affine {
            rows: n,
            inputs: d,
            outputs: d,
        };
        let d_keys = fit(&mut sc.d_keys, nk * d);
        d_keys.fill(0.0);
        let d_emb = fit(&mut sc.d_emb, n * d);
        d_emb.fill(0.0);
        for (ls, la) in s.den_layers.iter().zip(&a.den).rev() {
            let m = &la.m[..n * ms];
            // Every column of dm is written by one of the three sub-blocks below.
            let dm = fit(&mut sc.d_m, n * ms);
            let normed = fit(&mut sc.trunk.normed, n * d);
            let u = fit(&mut sc.modulated, n * d);
            let d_branch = fit(&mut sc.d_branch, n * d);
            let d_u = fit(&mut sc.d_modulated, n * d);

            // SwiGLU sub-block.
            let fs = &ls.ffn;
            gated_add_backward(d_resid, &la.ffn_out[..n * d], m, ms, 8 * d, d, d_branch, dm);
            rms_norm_apply(
                &la.ffn_in[..n * d],
                &p[ls.ffn_norm.clone()],
                &la.ffn_rstd[..n],
                normed,
            );
            modulate_forward(normed, m, ms, 6 * d, d, u);
            let gate_up = &la.gate_up[..n * 2 * ffn];
            let act = fit(&mut sc.trunk.act, n * ffn);
            swiglu_forward(gate_up, act, ffn);
            let d_act = fit(&mut sc.trunk.d_act, n * ffn);
            Affine {
                rows: n,
                inputs: ffn,
                outputs: d,
            }
            .backward(
                d_branch,
                act,
                &p[fs.down_w.clone()],
                &mut g[fs.down_w.clone()],
                Some((d_act, false)),
                threads,
            );
            if let Some(r) = fs.down_b.clone() {
                column_sums(d_branch, &mut g[r]);
            }
            let d_gate_up = fit(&mut sc.trunk.d_gate_up, n * 2 * ffn);
            swiglu_backward(gate_up, d_act, d_gate_up, ffn);
            Affine {
                rows: n,
                inputs: d,
                outputs: 2 * ffn,
            }
            .backward(
                d_gate_up,
                u,
                &p[fs.gate_up_w.clone()],
                &mut g[fs.gate_up_w.clone()],
                Some((d_u, false)),
                threads,
            );
            if let Some(r) = fs.gate_up_b.clone() {
                column_sums(d_gate_up, &mut g[r]);
            }
            modulate_backward(normed, m, ms, 6 * d, d, d_u, d_normed, dm);
            rms_norm_backward(
                &la.ffn_in[..n * d],
                &p[ls.ffn_norm.clone()],
                &la.ffn_rstd[..n],
                d_normed,
                d_resid,
                &mut g[ls.ffn_norm.clone()],
            );

            // Cross-attention sub-block.
            let ca = &ls.cross_attn;
            gated_add_backward(
                d_resid,
                &la.cross_out[..n * d],
                m,
                ms,
                5 * d,
                d,
                d_branch,
                dm,
            );
            let d_context = fit(&mut sc.trunk.d_context, n * d);
            square.backward(
                d_branch,
                &la.context[..n * d],
                &p[ca.o_w.clone()],
                &mut g[ca.o_w.clone()],
                Some((d_context, false)),
                threads,
            );
            if let Some(r) = ca.o_b.clone() {
                column_sums(d_branch, &mut g[r]);
            }
            let d_q = fit(&mut sc.d_q, n * d);
            let d_kv = fit(&mut sc.d_kv, nk * 2 * d);
            let d_probs = fit(&mut sc.trunk.d_probs, b * t * (t + 1));
            cross_attention_backward(
                &la.q[..n * d],
                &la.kv[..nk * 2 * d],
                &la.probs[..b * dims.heads * t * (t + 1)],
                d_context,
                d_q,
                d_kv,
                d_probs,
                dims,
                scale,
            );
            Affine {
                rows: nk,
                inputs: d,
                outputs: 2 * d,
            }
            .backward(
                d_kv,
                &a.ctx.keys[..nk * d],
                &p[ca.kv_w()],
                &mut g[ca.kv_w()],
                Some((d_keys, true)),
                threads,
            );
            if let Some(r) = ca.kv_b() {
                column_sums(d_kv, &mut g[r]);
            }
            rms_norm_apply(
                &la.cross_in[..n * d],
                &p[ls.cross_norm.clone()],
                &la.cross_rstd[..n],
                normed,
            );
            modulate_forward(normed, m, ms, 3 * d, d, u);
            square.backward(
                d_q,
                u,
                &p[ca.q_w.clone()],
                &mut g[ca.q_w.clone()],
                Some((d_u, false)),
                threads,
            );
            if let Some(r) = ca.q_b.clone() {
                column_sums(d_q, &mut g[r]);
            }
            modulate_backward(normed, m, ms, 3 * d, d, d_u, d_normed, dm);
            rms_norm_backward(
                &la.cross_in[..n * d],
                &p[ls.cross_norm.clone()],
                &la.cross_rstd[..n],
                d_normed,
                d_resid,
                &mut g[ls.cross_norm.clone()],
            );

            // Self-attention sub-block: only V and O are on the path.
            let sa = &ls.self_attn;
            gated_add_backward(
                d_resid,
                &la.self_out[..n * d],
                m,
                ms,
                2 * d,
                d,
                d_branch,
                dm,
            );
            let d_v = d_context;
            square.backward(
                d_branch,
                &la.self_v[..n * d],
                &p[sa.o_w.clone()],
                &mut g[sa.o_w.clone()],
                Some((d_v, false)),
                threads,
            );
            if let Some(r) = sa.o_b.clone() {
                column_sums(d_branch, &mut g[r]);
            }
            rms_norm_apply(
                &la.self_in[..n * d],
                &p[ls.self_norm.clone()],
                &la.self_rstd[..n],
                normed,
            );
            modulate_forward(normed, m, ms, 0, d, u);
            square.backward(
                d_v,
                u,
                &p[sa.v_w.clone()],
                &mut g[sa.v_w.clone()],
                Some((d_u, false)),
                threads,
            );
            if let Some(r) = sa.v_b.clone() {
                column_sums(d_v, &mut g[r]);
            }
            modulate_backward(normed, m, ms, 0, d, d_u, d_normed, dm);
            rms_norm_backward(
                &la.self_in[..n * d],
                &p[ls.self_norm.clone()],
                &la.self_rstd[..n],
                d_normed,
                d_resid,
                &mut g[ls.self_norm.clone()],
            );

            // The modulator, fed by the shared timestep embedding.
            Affine {
                rows: n,
                inputs: d,
                outputs: ms,
            }
            .backward(
                dm,
                &a.time.act[..n * d],
                &p[ls.mod_w.clone()],
                &mut g[ls.mod_w.clone()],
                Some((d_emb, true)),
                threads,
            );
            column_sums(dm, &mut g[ls.mod_b.clone()]);
        }

        Affine {
            rows: n,
            inputs: dd,
            outputs: d,
        }
        .backward(
            d_resid,
            batch.noisy,
            &p[s.init_w.clone()],
            &mut g[s.init_w.clone()],
            None,
            threads,
        );
        if let Some(r) = s.init_b.clone() {
            column_sums(d_resid, &mut g[r]);
        }

        // Timestep MLP: d_time holds ∂/∂emb, then ∂/∂pre.
        let tm = &a.time;
        let d_time = fit(&mut sc.d_time, n * d);
        silu_backward(&tm.emb[..n * d], d_emb, d_time);
        let d_hidden = fit(&mut sc.d_hidden, n * d);
        square.backward(
            d_time,
            &tm.hidden[..n * d],
            &p[s.time2_w.clone()],
            &mut g[s.time2_w.clone()],
            Some((d_hidden, false)),
            threads,
        );
        column_sums(d_time, &mut g[s.time2_b.clone()]);
        silu_backward(&tm.pre[..n * d], d_hidden, d_time);
        Affine {
            rows: n,
            inputs: freq,
            outputs: d,
        }
        .backward(
            d_time,
            &tm.sinus[..n * freq],
            &p[s.time1_w.clone()],
            &mut g[s.time1_w.clone()],
            None,
            threads,
        );
        column_sums(d_time, &mut g[s.time1_b.clone()]);

        // Contextualizer: the keys' gradient without each sequence's zero row.
        d_resid.fill(0.0);
        for bi in 0..b {
            rms_norm_backward(
                &a.ctx.last[bi * t * d..][..t * d],
                &p[s.ctx_norm.clone()],
                &a.ctx.rstd[bi * t..][..t],
                &d_keys[(bi * (t + 1) + 1) * d..][..t * d],
                &mut d_resid[bi * t * d..][..t * d],
                &mut g[s.ctx_norm.clone()],
            );
        }
        trunk::backward(
            p,
            g,
            &s.ctx_layers,
            &a.ctx.layers,
            &mut sc.trunk,
            dims.trunk(),
            (&self.rope_cos, &self.rope_sin),
        );
        let d_resid = &sc.trunk.d_resid[..n * d];
        Affine {
            rows: n,
            inputs: dd,
            outputs: d,
        }
        .backward(
            d_resid,
            batch.x0,
            &p[s.front_w.clone()],
            &mut g[s.front_w.clone()],
            None,
            threads,
        );
        if let Some(r) = s.front_b.clone() {
            column_sums(d_resid, &mut g[r]);
        }
    }
}

/// Multi-head cross-attention of `q: [N, d]` over packed key/value rows `kv: [Nk, 2d]`
/// under per-row key limits: probabilities `[B, H, T, T+1]` and context `[N, d]`, one
/// sequence per task.
fn cross_attention_forward(
    q: &[f32],
    kv: &[f32],
    probs: &mut [f32],
    context: &mut [f32],
    limits: &[usize],
    dims: Dims,
    scale: f32,
) {
    let Dims {
        time: t,
        d,
        heads,
        head_dim: dh,
        ..
    } = dims;
    let tk = t + 1;
    probs
        .par_chunks_mut(heads * t * tk)
        .zip(context.par_chunks_mut(t * d))
        .enumerate()
        .for_each(|(bi, (p_b, ctx_b))| {
            let q_b = &q[bi * t * d..][..t * d];
            let kv_b = &kv[bi * tk * 2 * d..][..tk * 2 * d];
            for h in 0..heads {
                let p = &mut p_b[h * t * tk..][..t * tk];
                let qh = Mat::block(q_b, d, t, h * dh, dh);
                let k = Mat::block(kv_b, 2 * d, tk, h * dh, dh);
                let v = Mat::block(kv_b, 2 * d, tk, d + h * dh, dh);
                matmul(MatMut::dense(p, t, tk), qh, k.t(), false, 1);
                prefix_softmax(p, tk, limits, scale);
                matmul(
                    MatMut::block(ctx_b, d, t, h * dh, dh),
                    Mat::dense(p, t, tk),
                    v,
                    false,
                    1,
                );
            }
        });
}

/// Backward of [`cross_attention_forward`]: `dq: [N, d]` and `dkv: [Nk, 2d]` (both
/// written) from `dcontext`, with one `[T, T+1]` scratch block per sequence.
#[allow(clippy::too_many_arguments)]
fn cross_attention_backward(
    q: &[f32],
    kv: &[f32],
    probs: &[f32],
    d_context: &[f32],
    d_q: &mut [f32],
    d_kv: &mut [f32],
    d_probs: &mut [f32],
    dims: Dims,
    scale: f32,
) {
    let Dims {
        time: t,
        d,
        heads,
        head_dim: dh,
        ..
    } = dims;
    let tk = t + 1;
    d_q.par_chunks_mut(t * d)
        .zip(d_kv.par_chunks_mut(tk * 2 * d))
        .zip(d_probs.par_chunks_mut(t * tk))
        .enumerate()
        .for_each(|(bi, ((dq_b, dkv_b), dp))| {
            let q_b = &q[bi * t * d..][..t * d];
            let kv_b = &kv[bi * tk * 2 * d..][..tk * 2 * d];
            let dctx_b = &d_context[bi * t * d..][..t * d];
            for h in 0..heads {
                let p = Mat::dense(&probs[(bi * heads + h) * t * tk..][..t * tk], t, tk);
                let dctx = Mat::block(dctx_b, d, t, h * dh, dh);
                let qh = Mat::block(q_b, d, t, h * dh, dh);
                let k = Mat::block(kv_b, 2 * d, tk, h * dh, dh);
                let v = Mat::block(kv_b, 2 * d, tk, d + h * dh, dh);
                // dP = dC·Vᵀ, dV = Pᵀ·dC
                matmul(MatMut::dense(dp, t, tk), dctx, v.t(), false, 1);
                matmul(
                    MatMut::block(dkv_b, 2 * d, tk, d + h * dh, dh),
                    p.t(),
                    dctx,
                    false,
                    1,
                );
                softmax_backward(p.data, dp, tk, scale);
                let ds = Mat::dense(dp, t, tk);
                // dQ = dS·K, dK = dSᵀ·Q
                matmul(MatMut::block(dq_b, d, t, h * dh, dh), ds, k, false, 1);
                matmul(
                    MatMut::block(dkv_b, 2 * d, tk, h * dh, dh),
                    ds.t(),
                    qh,
                    false,
                    1,
                );
            }
        });
}
