//! The Two-Tower denoiser at inference on the fused engine: the output of
//! `lcm_model::two_tower::TwoTowerLcm::predict` for a few rows at a time (the conditional
//! and unconditional rows of a guided DDIM step together), over flat buffers.
//!
//! With `R` rows, `d` the width, `H` heads of `Dh`, `F` the SwiGLU width, `L` layers:
//!
//! ```text
//! once per weights (refresh):
//!   Wₛ = Woˢ·Wvˢ, bₛ = Woˢ·bvˢ + boˢ       the identity self-attention as one [d, d] map
//!   Wm = [Wm¹; …; Wmᴸ]                      every layer's modulator as one [L·9d, d] matrix
//! once per generated concept (set_context):
//!   per row r: K̃ᵣ = [0; cᵣ] (the zero vector alone for an unconditional row)
//!   per layer: k|v = K̃ [Wk;Wv]ᵀ + [bk;bv]   (they do not depend on the DDIM step)
//! per DDIM step (denoise), the timestep embedding shared by every row:
//!   s = silu(silu(sin(t) W1ᵀ + b1) W2ᵀ + b2);  m = s Wmᵀ + bm      [1, L·9d]
//!   h = x_t Wᵢᵀ + bᵢ                                                [R, d]
//!   per layer, each sub-block k:  h ← h + gate_k ⊙ Fₖ(RMSNorm(h) ⊙ (1 + scale_k) + shift_k)
//!     self:  F(u) = u Wₛᵀ + bₛ
//!     cross: F(u) = softmax((u Wqᵀ + bq) kᵀ/√Dh) v Woᵀ + bo   over row r's own keys
//!     ffn:   F(u) = (silu(u Wgᵀ + bg) ⊙ (u Wuᵀ + bu)) Wdᵀ + bd
//!   Ŷ = RMSNorm(h) W₀ᵀ + b₀                                         [R, D]
//! ```
//!
//! At inference the reference passes no cross-attention mask, so row `r` sees all of its
//! keys. Products with few rows run as `(W·xᵀ)ᵀ`, which streams the weight as gemm's left
//! operand in its stored layout. Steady-state calls allocate nothing.

use std::ops::Range;

use candle_core::Tensor;
use candle_nn::Linear;
use lcm_kernels::multiversion;
use lcm_kernels::simd::{dot, exp, fma, max, sum};
use lcm_kernels::{Mat, MatMut, matmul};
use lcm_model::blocks::{MultiHeadAttention, SwiGlu};
use lcm_model::two_tower::{TwoTowerConfig, TwoTowerLcm};

use crate::linear::Affine;
use crate::rows::{rms_norm_forward, swiglu_forward};
use crate::rows_diffusion::{
    gated_add, modulate_forward, silu_forward, timestep_features, timestep_frequencies,
};
use crate::trunk::fit;
use crate::{EngineError, Result};

/// Up to this many rows a product `x·Wᵀ` is computed as `(W·xᵀ)ᵀ` (two rows of the
/// `small` preset: 1.57 ms per denoiser call against 1.81 ms in the plain order, on a
/// 2-vCPU AVX-512 Xeon). Products run on the calling thread: at these sizes two gemm
/// threads were slower there.
const FEW_ROWS: usize = 16;

/// One denoiser layer's weights, in the engine's packing.
#[derive(Default)]
struct LayerWeights {
    self_norm: Vec<f32>,
    /// `Wo·Wv` `[d, d]` and `Wo·bv + bo` `[d]` of the identity self-attention.
    self_w: Vec<f32>,
    self_b: Vec<f32>,
    cross_norm: Vec<f32>,
    q_w: Vec<f32>,
    q_b: Option<Vec<f32>>,
    /// `[Wk; Wv]` `[2d, d]` and `[bk; bv]`.
    kv_w: Vec<f32>,
    kv_b: Option<Vec<f32>>,
    o_w: Vec<f32>,
    o_b: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    /// `[Wg; Wu]` `[2F, d]` and `[bg; bu]`.
    gate_up_w: Vec<f32>,
    gate_up_b: Option<Vec<f32>>,
    down_w: Vec<f32>,
    down_b: Option<Vec<f32>>,
}

#[derive(Default)]
struct Weights {
    init_w: Vec<f32>,
    init_b: Option<Vec<f32>>,
    time1_w: Vec<f32>,
    time1_b: Vec<f32>,
    time2_w: Vec<f32>,
    time2_b: Vec<f32>,
    /// Every layer's modulator stacked, `[L·9d, d]` and `[L·9d]`.
    mod_w: Vec<f32>,
    mod_b: Vec<f32>,
    layers: Vec<LayerWeights>,
    final_norm: Vec<f32>,
    final_w: Vec<f32>,
    final_b: Option<Vec<f32>>,
}

/// Buffers of one call, grown to the largest row count seen.
#[derive(Default)]
struct Scratch {
    sinus: Vec<f32>,
    pre: Vec<f32>,
    hidden: Vec<f32>,
    emb: Vec<f32>,
    act: Vec<f32>,
    /// `[L·9d]`: the step's modulation, shared by every row.
    m: Vec<f32>,
    h: Vec<f32>,
    normed: Vec<f32>,
    rstd: Vec<f32>,
    u: Vec<f32>,
    branch: Vec<f32>,
    q: Vec<f32>,
    context: Vec<f32>,
    gate_up: Vec<f32>,
    ffn_act: Vec<f32>,
    scores: Vec<f32>,
    /// The transposed product `W·xᵀ` before it is written row-major.
    transposed: Vec<f32>,
}

/// The Two-Tower denoiser for inference, over flat copies of a [`TwoTowerLcm`]'s weights.
///
/// ```text
/// let mut den = TwoTowerDenoiser::from_model(&model)?;
/// den.set_context(&[Some(&context_rows), None])?;      // once per generated concept
/// den.denoise(&noisy, t, &mut out)?;                   // every DDIM step, [R, D] → [R, D]
/// ```
pub struct TwoTowerDenoiser {
    config: TwoTowerConfig,
    model: TwoTowerLcm,
    freqs: Vec<f64>,
    w: Weights,
    /// Per row, its range of key rows in `key_rows` / the layers' `kv`.
    keys: Vec<Range<usize>>,
    key_rows: Vec<f32>,
    /// Per layer `[Nk, 2d]`: the keys' K|V projections.
    kv: Vec<Vec<f32>>,
    s: Scratch,
}

fn values(t: &Tensor, what: &str) -> Result<Vec<f32>> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| EngineError::Unsupported(format!("reading {what}: {e}")))
}

fn linear(l: &Linear, what: &str) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
    Ok((
        values(l.weight(), what)?,
        l.bias().map(|b| values(b, what)).transpose()?,
    ))
}

/// `[a; b]` of two optional biases, present only if both are.
fn stack_bias(a: Option<Vec<f32>>, b: Option<Vec<f32>>) -> Option<Vec<f32>> {
    a.zip(b).map(|(mut a, b)| {
        a.extend(b);
        a
    })
}

/// `y = x·Wᵀ (+ b)` for `x: [rows, inputs]`, `W: [outputs, inputs]`, single-threaded: with
/// few rows as `(W·xᵀ)ᵀ` through `transposed`.
#[allow(clippy::too_many_arguments)]
fn product(
    x: &[f32],
    rows: usize,
    inputs: usize,
    w: &[f32],
    outputs: usize,
    b: Option<&[f32]>,
    y: &mut [f32],
    transposed: &mut Vec<f32>,
) {
    if rows > FEW_ROWS {
        Affine {
            rows,
            inputs,
            outputs,
        }
        .forward(x, w, b, y, 1);
        return;
    }
    let t = fit(transposed, outputs * rows);
    matmul(
        MatMut::dense(t, outputs, rows),
        Mat::dense(w, outputs, inputs),
        Mat::dense(&x[..rows * inputs], rows, inputs).t(),
        false,
        1,
    );
    for (r, yr) in y[..rows * outputs].chunks_exact_mut(outputs).enumerate() {
        for (o, yv) in yr.iter_mut().enumerate() {
            *yv = t[o * rows + r] + b.map_or(0.0, |b| b[o]);
        }
    }
}

multiversion! {
    /// One query row's multi-head attention over its own key/value rows `kv: [n, 2d]`
    /// (keys then values per row), without a mask: `context = softmax(scale·q kᵀ) v` per
    /// head, `scores` holding at least `n` floats.
    fn attend(q: &[f32], kv: &[f32], heads: usize, scale: f32, scores: &mut [f32], context: &mut [f32]) {
        let d = q.len();
        let dh = d / heads;
        let n = kv.len() / (2 * d);
        let scores = &mut scores[..n];
        for h in 0..heads {
            let qh = &q[h * dh..][..dh];
            for (j, s) in scores.iter_mut().enumerate() {
                *s = dot::<FMA>(qh, &kv[j * 2 * d + h * dh..][..dh]);
            }
            let m = max(scores) * scale;
            for s in scores.iter_mut() {
                *s = exp::<FMA>(fma::<FMA>(*s, scale, -m));
            }
            let inv = 1.0 / sum(scores);
            let ch = &mut context[h * dh..][..dh];
            ch.fill(0.0);
            for (j, &p) in scores.iter().enumerate() {
                let p = p * inv;
                for (c, &v) in ch.iter_mut().zip(&kv[j * 2 * d + d + h * dh..][..dh]) {
                    *c = fma::<FMA>(p, v, *c);
                }
            }
        }
    }
}

impl TwoTowerDenoiser {
    /// Copies the denoiser weights of `model` (which it keeps, sharing the tensors, for
    /// [`Self::refresh`]). Refuses ([`EngineError::Unsupported`]) weights that are not f32
    /// or a configuration it does not implement.
    pub fn from_model(model: &TwoTowerLcm) -> Result<Self> {
        let config = model.config.clone();
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
        if model.denoiser.layers.len() != config.n_denoiser_layers {
            return Err(EngineError::Unsupported(format!(
                "{} denoiser layers for a configuration of {}",
                model.denoiser.layers.len(),
                config.n_denoiser_layers
            )));
        }
        let mut den = Self {
            freqs: timestep_frequencies(config.timestep_freq_dim),
            config,
            model: model.clone(),
            w: Weights::default(),
            keys: Vec::new(),
            key_rows: Vec::new(),
            kv: Vec::new(),
            s: Scratch::default(),
        };
        den.refresh()?;
        Ok(den)
    }

    pub fn config(&self) -> &TwoTowerConfig {
        &self.config
    }

    /// Re-reads the model's weights (after they changed) and forgets the context.
    pub fn refresh(&mut self) -> Result<()> {
        let cfg = &self.config;
        let (d, f) = (cfg.d_model, cfg.ffn_inner_dim);
        let den = &self.model.denoiser;
        let (init_w, init_b) = linear(&den.initial_proj, "initial_proj")?;
        let (time1_w, time1_b) = linear(&den.embed_time.fc1, "embed_time.fc1")?;
        let (time2_w, time2_b) = linear(&den.embed_time.fc2, "embed_time.fc2")?;
        let (final_w, final_b) = linear(&den.final_proj, "final_proj")?;
        let mut w = Weights {
            init_w,
            init_b,
            time1_b: time1_b.unwrap_or_else(|| vec![0.0; d]),
            time1_w,
            time2_b: time2_b.unwrap_or_else(|| vec![0.0; d]),
            time2_w,
            mod_w: Vec::with_capacity(cfg.n_denoiser_layers * 9 * d * d),
            mod_b: Vec::with_capacity(cfg.n_denoiser_layers * 9 * d),
            layers: Vec::with_capacity(cfg.n_denoiser_layers),
            final_norm: values(&den.final_norm.weight, "layer_norm")?,
            final_w,
            final_b,
        };
        for layer in &den.layers {
            let (mw, mb) = linear(&layer.modulator, "modulator")?;
            w.mod_w.extend(mw);
            w.mod_b.extend(mb.unwrap_or_else(|| vec![0.0; 9 * d]));
            let (self_w, self_b) = fold_value_output(&layer.self_attn, d)?;
            let ca: &MultiHeadAttention = &layer.cross_attn;
            let (q_w, q_b) = linear(&ca.q, "cross_attention.q_proj")?;
            let (mut kv_w, k_b) = linear(&ca.k, "cross_attention.k_proj")?;
            let (v_w, v_b) = linear(&ca.v, "cross_attention.v_proj")?;
            kv_w.extend(v_w);
            let (o_w, o_b) = linear(&ca.o, "cross_attention.output_proj")?;
            let ffn: &SwiGlu = &layer.ffn;
            let (mut gate_up_w, g_b) = linear(&ffn.gate, "ffn.gate_proj")?;
            let (u_w, u_b) = linear(&ffn.up, "ffn.inner_proj")?;
            gate_up_w.extend(u_w);
            let (down_w, down_b) = linear(&ffn.down, "ffn.output_proj")?;
            w.layers.push(LayerWeights {
                self_norm: values(&layer.self_attn_norm.weight, "self_attn_layer_norm")?,
                self_w,
                self_b,
                cross_norm: values(&layer.cross_attn_norm.weight, "cross_attention_layer_norm")?,
                q_w,
                q_b,
                kv_w,
                kv_b: stack_bias(k_b, v_b),
                o_w,
                o_b,
                ffn_norm: values(&layer.ffn_norm.weight, "ffn_layer_norm")?,
                gate_up_w,
                gate_up_b: stack_bias(g_b, u_b),
                down_w,
                down_b,
            });
        }
        let dd = cfg.input_dim;
        let expected = [
            (w.init_w.len(), d * dd, "initial_proj"),
            (w.time1_w.len(), d * cfg.timestep_freq_dim, "embed_time.fc1"),
            (w.time2_w.len(), d * d, "embed_time.fc2"),
            (w.final_w.len(), dd * d, "final_proj"),
            (w.final_norm.len(), d, "layer_norm"),
        ];
        for (got, want, what) in expected {
            if got != want {
                return Err(EngineError::Unsupported(format!(
                    "{what} holds {got} weights, the configuration implies {want}"
                )));
            }
        }
        if let Some(l) = w
            .layers
            .iter()
            .find(|l| l.gate_up_w.len() != 2 * f * d || l.q_w.len() != d * d)
        {
            return Err(EngineError::Unsupported(format!(
                "a denoiser layer with {} SwiGLU and {} query weights, the configuration implies {} and {}",
                l.gate_up_w.len(),
                l.q_w.len(),
                2 * f * d,
                d * d
            )));
        }
        self.w = w;
        self.keys.clear();
        self.kv.clear();
        Ok(())
    }

    /// Rows of the last [`Self::set_context`]: what [`Self::denoise`] expects.
    pub fn rows(&self) -> usize {
        self.keys.len()
    }

    /// Sets the cross-attention memory of each row, in order: `Some(context)` with `[N, d]`
    /// contextualised concepts (the row attends to `[0; context]`, as
    /// `TwoTowerLcm::predict` with that context), `None` for the zero vector alone (the
    /// unconditional branch, `predict` with `None`). Projects every layer's keys and
    /// values here, once for all later [`Self::denoise`] calls.
    pub fn set_context(&mut self, contexts: &[Option<&[f32]>]) -> Result<()> {
        let d = self.config.d_model;
        self.keys.clear();
        self.key_rows.clear();
        let mut start = 0;
        for (r, c) in contexts.iter().enumerate() {
            let c = c.unwrap_or(&[]);
            if !c.len().is_multiple_of(d) {
                return Err(EngineError::Shape(format!(
                    "row {r}'s context of {} floats is not a whole number of {d}-wide concepts",
                    c.len()
                )));
            }
            let n = 1 + c.len() / d;
            self.key_rows.extend(std::iter::repeat_n(0.0, d));
            self.key_rows.extend_from_slice(c);
            self.keys.push(start..start + n);
            start += n;
        }
        let nk = start;
        self.kv.resize_with(self.w.layers.len(), Vec::new);
        for (kv, lw) in self.kv.iter_mut().zip(&self.w.layers) {
            let kv = fit(kv, nk * 2 * d);
            product(
                &self.key_rows,
                nk,
                d,
                &lw.kv_w,
                2 * d,
                lw.kv_b.as_deref(),
                kv,
                &mut self.s.transposed,
            );
        }
        Ok(())
    }

    /// The denoiser's output `out: [R, D]` for the noisy latents `noisy: [R, D]` at
    /// `timestep`, row `r` attending to the memory [`Self::set_context`] gave it.
    pub fn denoise(&mut self, noisy: &[f32], timestep: usize, out: &mut [f32]) -> Result<()> {
        let cfg = &self.config;
        let (dd, d, heads, ffn, freq) = (
            cfg.input_dim,
            cfg.d_model,
            cfg.n_heads,
            cfg.ffn_inner_dim,
            cfg.timestep_freq_dim,
        );
        let r = self.keys.len();
        if r == 0 {
            return Err(EngineError::Shape(
                "no rows: call set_context before denoise".into(),
            ));
        }
        if noisy.len() != r * dd || out.len() != r * dd {
            return Err(EngineError::Shape(format!(
                "noisy and out of {} and {} floats for {r} rows of {dd}",
                noisy.len(),
                out.len()
            )));
        }
        let eps = cfg.rms_eps as f32;
        let ms = 9 * d;
        let w = &self.w;
        let s = &mut self.s;

        // The timestep embedding and every layer's modulation, once for all rows.
        let sinus = fit(&mut s.sinus, freq);
        timestep_features(&[timestep], &self.freqs, freq, sinus);
        let pre = fit(&mut s.pre, d);
        product(
            sinus,
            1,
            freq,
            &w.time1_w,
            d,
            Some(&w.time1_b),
            pre,
            &mut s.transposed,
        );
        let hidden = fit(&mut s.hidden, d);
        silu_forward(pre, hidden);
        let emb = fit(&mut s.emb, d);
        product(
            hidden,
            1,
            d,
            &w.time2_w,
            d,
            Some(&w.time2_b),
            emb,
            &mut s.transposed,
        );
        let act = fit(&mut s.act, d);
        silu_forward(emb, act);
        let layers = w.layers.len();
        let m_all = fit(&mut s.m, layers * ms);
        product(
            act,
            1,
            d,
            &w.mod_w,
            layers * ms,
            Some(&w.mod_b),
            m_all,
            &mut s.transposed,
        );

        let h = fit(&mut s.h, r * d);
        product(
            noisy,
            r,
            dd,
            &w.init_w,
            d,
            w.init_b.as_deref(),
            h,
            &mut s.transposed,
        );
        let normed = fit(&mut s.normed, r * d);
        let rstd = fit(&mut s.rstd, r);
        let u = fit(&mut s.u, r * d);
        let branch = fit(&mut s.branch, r * d);
        let q = fit(&mut s.q, r * d);
        let context = fit(&mut s.context, r * d);
        let gate_up = fit(&mut s.gate_up, r * 2 * ffn);
        let ffn_act = fit(&mut s.ffn_act, r * ffn);
        let max_keys = self.keys.iter().map(|k| k.len()).max().unwrap_or(1);
        let scores = fit(&mut s.scores, max_keys);
        let scale = 1.0 / ((d / heads) as f32).sqrt();

        // `h += gate ⊙ branch` row by row, every row reading the shared modulation.
        let gated = |h: &mut [f32], branch: &[f32], m: &[f32], at: usize| {
            for (hr, br) in h.chunks_exact_mut(d).zip(branch.chunks_exact(d)) {
                gated_add(hr, br, m, ms, at, d);
            }
        };
        let modulated = |normed: &[f32], m: &[f32], at: usize, u: &mut [f32]| {
            for (nr, ur) in normed.chunks_exact(d).zip(u.chunks_exact_mut(d)) {
                modulate_forward(nr, m, ms, at, d, ur);
            }
        };
        for ((lw, kv), m) in w.layers.iter().zip(&self.kv).zip(m_all.chunks_exact(ms)) {
            // Identity self-attention: one folded affine map.
            rms_norm_forward(h, &lw.self_norm, eps, normed, rstd);
            modulated(normed, m, 0, u);
            product(
                u,
                r,
                d,
                &lw.self_w,
                d,
                Some(&lw.self_b),
                branch,
                &mut s.transposed,
            );
            gated(h, branch, m, 2 * d);

            // Cross-attention, each row over its own keys.
            rms_norm_forward(h, &lw.cross_norm, eps, normed, rstd);
            modulated(normed, m, 3 * d, u);
            product(u, r, d, &lw.q_w, d, lw.q_b.as_deref(), q, &mut s.transposed);
            for ((qr, cr), keys) in q
                .chunks_exact(d)
                .zip(context.chunks_exact_mut(d))
                .zip(&self.keys)
            {
                let rows = &kv[keys.start * 2 * d..keys.end * 2 * d];
                attend(qr, rows, heads, scale, scores, cr);
            }
            product(
                context,
                r,
                d,
                &lw.o_w,
                d,
                lw.o_b.as_deref(),
                branch,
                &mut s.transposed,
            );
            gated(h, branch, m, 5 * d);

            // SwiGLU.
            rms_norm_forward(h, &lw.ffn_norm, eps, normed, rstd);
            modulated(normed, m, 6 * d, u);
            product(
                u,
                r,
                d,
                &lw.gate_up_w,
                2 * ffn,
                lw.gate_up_b.as_deref(),
                gate_up,
                &mut s.transposed,
            );
            swiglu_forward(gate_up, ffn_act, ffn);
            product(
                ffn_act,
                r,
                ffn,
                &lw.down_w,
                d,
                lw.down_b.as_deref(),
                branch,
                &mut s.transposed,
            );
            gated(h, branch, m, 8 * d);
        }
        rms_norm_forward(h, &w.final_norm, eps, normed, rstd);
        product(
            normed,
            r,
            d,
            &w.final_w,
            dd,
            w.final_b.as_deref(),
            out,
            &mut s.transposed,
        );
        Ok(())
    }
}

/// The identity self-attention `(u Wvᵀ + bv) Woᵀ + bo` as one map `u (Wo·Wv)ᵀ + (Wo·bv +
/// bo)`: `[d, d]` and `[d]`.
fn fold_value_output(attn: &MultiHeadAttention, d: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let (v_w, v_b) = linear(&attn.v, "self_attn.v_proj")?;
    let (o_w, o_b) = linear(&attn.o, "self_attn.output_proj")?;
    if v_w.len() != d * d || o_w.len() != d * d {
        return Err(EngineError::Unsupported(format!(
            "self-attention value/output weights of {} and {} floats for d = {d}",
            v_w.len(),
            o_w.len()
        )));
    }
    let mut folded = vec![0.0; d * d];
    matmul(
        MatMut::dense(&mut folded, d, d),
        Mat::dense(&o_w, d, d),
        Mat::dense(&v_w, d, d),
        false,
        1,
    );
    let mut bias = o_b.unwrap_or_else(|| vec![0.0; d]);
    if let Some(v_b) = v_b {
        for (b, row) in bias.iter_mut().zip(o_w.chunks_exact(d)) {
            *b += row.iter().zip(&v_b).map(|(a, c)| a * c).sum::<f32>();
        }
    }
    Ok((folded, bias))
}
