//! The SONAR-architecture decoder (`lcm_sonar::model::SonarDecoder`) on the fused engine:
//! teacher-forced forward pass, the label-smoothed token cross-entropy that
//! `lcm train-decoder` optimises, and the exact backward pass, over flat buffers.
//!
//! With `B` sentences of `T` input ids, `N = B·T` rows, `d` the model width, `H` heads of
//! `Dh`, `F` the FFN width, `V` the vocabulary, `E: [V, d]` the embedding (also the output
//! projection) and `e: [B, d]` the conditioning vectors:
//!
//! ```text
//! x⁰[b,t] = √d · E[ids[b,t]] + P[t]               [N, d]  (fairseq1 sinusoids, offset pad+1)
//! per layer:  a = LN₁(xˡ)·[Wq;Wk;Wv]ᵀ + [bq;bk;bv]     [N, 3d]  (one product)
//!             P = causal_softmax(q kᵀ/√Dh)            [B, H, T, T]
//!             m = xˡ + (P v) Woᵀ + bo                 [N, d]
//!             m[b,·] += c[b],  c = (e W'vᵀ + b'v) W'oᵀ + b'o      [B, d]
//!             xˡ⁺¹ = m + relu(LN₃(m) W₁ᵀ + b₁) W₂ᵀ + b₂          [N, d]
//! logits = LN_f(xᴸ) · Eᵀ                               [K, V]  (only the K scored rows)
//! loss = (1/K) Σ_scored  lse(z) − (1 − ε)·z_gold − ε·mean(z)
//! ```
//!
//! The cross-attention attends to one key (the concept), so its softmax is exactly 1 and
//! its output `c` does not depend on the queries: the cross-attention's q/k projections and
//! its layer norm (`encoder_decoder_attn.{q,k}_proj.*`, `encoder_decoder_attn_layer_norm.*`)
//! never enter the loss. candle's autograd leaves them without a gradient, and so does
//! this engine ([`SonarDecoderEngine::has_gradient`] is false for them; their slots in the
//! gradient buffer stay 0 and the optimiser must skip them, as it skips them on candle).
//!
//! The loss is the one of `lcm_decoder`'s `token_loss`: rows whose target is the pad id
//! are not scored, the others are averaged. The `[K, V]` logits never exist at once: the
//! scored rows are gathered into `[K, d]` and handled in chunks of rows
//! ([`SonarDecoderEngine::set_logit_rows`]); each chunk's logits are turned into their
//! gradient in place and multiplied back at once (`dE += dzᵀ·h`, `dh = dz·E`).
//!
//! Saved for the backward pass: each layer's input, both LayerNorms' means and `rstd`s, the
//! QKV rows, the attention probabilities and context, the residual after both attentions,
//! the FFN pre-activations and the cross-attention's value rows; normalised rows and ReLU
//! outputs are recomputed. Every row of every sentence runs through the layers (padding
//! included: right padding cannot reach a real position through causal attention, and
//! only scored rows send a gradient back).

use std::ops::Range;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use lcm_sonar::model::{LAYER_NORM_EPS, SonarDecoderConfig, sinusoidal_positions};
use rayon::prelude::*;

use crate::linear::Affine;
use crate::params::{FlatParams, ParamLayout};
use crate::rows::{add_assign, column_sums};
use crate::rows_sonar::{
    embed_backward, embed_forward, layer_norm_apply, layer_norm_backward, layer_norm_forward,
    relu_backward, relu_forward, smoothed_cross_entropy_row,
};
use crate::trunk::{Dims, attention_backward, attention_forward, fit};
use crate::{EngineError, Result, threads};

/// Scored rows per logit chunk by default: about 2²¹ logits (8 MiB) per chunk, at least 16
/// rows.
const LOGIT_FLOATS: usize = 1 << 21;

/// A teacher-forcing batch as the decoder trainer builds it: `prev_ids: [B, T]` (the
/// prompt and the sentence without its last token, right-padded with any valid id),
/// `target_ids: [B, T]` (the next tokens; `pad` marks rows that are not scored) and one
/// conditioning vector `[d]` per sentence.
#[derive(Debug, Clone, Copy)]
pub struct TokenBatch<'a> {
    /// `[B, d]` row-major.
    pub conditioning: &'a [f32],
    pub prev_ids: &'a [u32],
    pub target_ids: &'a [u32],
    pub batch: usize,
    pub time: usize,
    /// Targets equal to `pad` are not scored.
    pub pad: u32,
    /// ε of the label-smoothed cross-entropy, in `[0, 1)`.
    pub label_smoothing: f64,
}

/// The summed objective and unsmoothed negative log-likelihood over `count` scored tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenLoss {
    /// `Σ` label-smoothed cross-entropy.
    pub sum: f64,
    /// `Σ −log p(gold)`.
    pub nll_sum: f64,
    pub count: usize,
}

impl TokenLoss {
    /// The training objective: mean label-smoothed cross-entropy per scored token.
    pub fn mean(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }

    /// Mean cross-entropy without smoothing.
    pub fn nll_mean(&self) -> f64 {
        self.nll_sum / self.count.max(1) as f64
    }
}

struct LayerSlots {
    ln1_w: Range<usize>,
    ln1_b: Range<usize>,
    qkv_w: Range<usize>,
    qkv_b: Range<usize>,
    out_w: Range<usize>,
    out_b: Range<usize>,
    cross_v_w: Range<usize>,
    cross_v_b: Range<usize>,
    cross_out_w: Range<usize>,
    cross_out_b: Range<usize>,
    ln3_w: Range<usize>,
    ln3_b: Range<usize>,
    ffn1_w: Range<usize>,
    ffn1_b: Range<usize>,
    ffn2_w: Range<usize>,
    ffn2_b: Range<usize>,
}

struct Slots {
    embed: Range<usize>,
    layers: Vec<LayerSlots>,
    final_w: Range<usize>,
    final_b: Range<usize>,
}

/// Parameters the loss does not depend on (see the module documentation).
fn without_gradient(name: &str) -> bool {
    name.contains(".encoder_decoder_attn_layer_norm.")
        || name.contains(".encoder_decoder_attn.q_proj.")
        || name.contains(".encoder_decoder_attn.k_proj.")
}

/// The flat layout of a SONAR decoder's parameters under their VarMap (fairseq2) names,
/// with Q|K|V of the self-attention packed.
fn layout(cfg: &SonarDecoderConfig) -> (ParamLayout, Slots) {
    let (v, d, f) = (cfg.vocab_size, cfg.model_dim, cfg.ffn_inner_dim);
    let mut l = ParamLayout::new();
    let embed = l.push("decoder_frontend.embed.weight", &[v, d]);
    let layers = (0..cfg.num_layers)
        .map(|i| {
            let p = format!("decoder.layers.{i}");
            let ln1_w = l.push(format!("{p}.self_attn_layer_norm.weight"), &[d]);
            let ln1_b = l.push(format!("{p}.self_attn_layer_norm.bias"), &[d]);
            let q = l.push(format!("{p}.self_attn.q_proj.weight"), &[d, d]);
            l.push(format!("{p}.self_attn.k_proj.weight"), &[d, d]);
            let vw = l.push(format!("{p}.self_attn.v_proj.weight"), &[d, d]);
            let qb = l.push(format!("{p}.self_attn.q_proj.bias"), &[d]);
            l.push(format!("{p}.self_attn.k_proj.bias"), &[d]);
            let vb = l.push(format!("{p}.self_attn.v_proj.bias"), &[d]);
            let out_w = l.push(format!("{p}.self_attn.output_proj.weight"), &[d, d]);
            let out_b = l.push(format!("{p}.self_attn.output_proj.bias"), &[d]);
            let x = format!("{p}.encoder_decoder_attn");
            l.push(format!("{x}_layer_norm.weight"), &[d]);
            l.push(format!("{x}_layer_norm.bias"), &[d]);
            for proj in ["q_proj", "k_proj"] {
                l.push(format!("{x}.{proj}.weight"), &[d, d]);
                l.push(format!("{x}.{proj}.bias"), &[d]);
            }
            let cross_v_w = l.push(format!("{x}.v_proj.weight"), &[d, d]);
            let cross_v_b = l.push(format!("{x}.v_proj.bias"), &[d]);
            let cross_out_w = l.push(format!("{x}.output_proj.weight"), &[d, d]);
            let cross_out_b = l.push(format!("{x}.output_proj.bias"), &[d]);
            let ln3_w = l.push(format!("{p}.ffn_layer_norm.weight"), &[d]);
            let ln3_b = l.push(format!("{p}.ffn_layer_norm.bias"), &[d]);
            let ffn1_w = l.push(format!("{p}.ffn.inner_proj.weight"), &[f, d]);
            let ffn1_b = l.push(format!("{p}.ffn.inner_proj.bias"), &[f]);
            let ffn2_w = l.push(format!("{p}.ffn.output_proj.weight"), &[d, f]);
            let ffn2_b = l.push(format!("{p}.ffn.output_proj.bias"), &[d]);
            LayerSlots {
                ln1_w,
                ln1_b,
                qkv_w: q.start..vw.end,
                qkv_b: qb.start..vb.end,
                out_w,
                out_b,
                cross_v_w,
                cross_v_b,
                cross_out_w,
                cross_out_b,
                ln3_w,
                ln3_b,
                ffn1_w,
                ffn1_b,
                ffn2_w,
                ffn2_b,
            }
        })
        .collect();
    let final_w = l.push("decoder.layer_norm.weight", &[d]);
    let final_b = l.push("decoder.layer_norm.bias", &[d]);
    (
        l,
        Slots {
            embed,
            layers,
            final_w,
            final_b,
        },
    )
}

#[derive(Default)]
struct LayerActs {
    input: Vec<f32>,
    mean1: Vec<f32>,
    rstd1: Vec<f32>,
    qkv: Vec<f32>,
    probs: Vec<f32>,
    context: Vec<f32>,
    /// The residual stream after self- and cross-attention.
    mid: Vec<f32>,
    mean3: Vec<f32>,
    rstd3: Vec<f32>,
    /// FFN pre-activations `[N, F]`.
    pre: Vec<f32>,
    /// Cross-attention values `e W'vᵀ + b'v`, `[B, d]`.
    cross_v: Vec<f32>,
}

#[derive(Default)]
struct Arena {
    layers: Vec<LayerActs>,
    last: Vec<f32>,
    mean_f: Vec<f32>,
    rstd_f: Vec<f32>,
    normed_final: Vec<f32>,
    /// Flat indices of the scored rows and their gold ids.
    scored: Vec<usize>,
    gold: Vec<u32>,
    /// Scored rows of the final normalised stream `[K, d]` and their gradient.
    h_scored: Vec<f32>,
    d_h_scored: Vec<f32>,
    /// One chunk of logits `[rows, V]`, turned into its gradient in place.
    logits: Vec<f32>,
    /// `[ℓ, nll]` per row of the chunk.
    row_loss: Vec<f32>,
    cross_c: Vec<f32>,
    // Scratch shared by the layers.
    normed: Vec<f32>,
    act: Vec<f32>,
    d_resid: Vec<f32>,
    d_normed: Vec<f32>,
    d_act: Vec<f32>,
    d_pre: Vec<f32>,
    d_context: Vec<f32>,
    d_qkv: Vec<f32>,
    d_probs: Vec<f32>,
    d_cross_c: Vec<f32>,
    d_cross_v: Vec<f32>,
}

/// A SONAR-architecture decoder bound to its VarMap, with gradient buffer and activation
/// arena.
pub struct SonarDecoderEngine {
    config: SonarDecoderConfig,
    params: FlatParams,
    slots: Slots,
    /// Per layout slot: whether the loss depends on the parameter.
    gradient_mask: Vec<bool>,
    grads: Vec<f32>,
    /// `[max_seq_len, d]` position rows.
    positions: Vec<f32>,
    logit_rows: usize,
    arena: Arena,
}

impl SonarDecoderEngine {
    /// Binds the engine to the parameters a `SonarDecoder::new(config, VarBuilder over
    /// varmap)` created. Refuses ([`EngineError::Unsupported`]) anything it does not
    /// implement.
    pub fn new(config: &SonarDecoderConfig, varmap: &VarMap) -> Result<Self> {
        let (d, heads) = (config.model_dim, config.num_heads);
        if heads == 0 || d == 0 || !d.is_multiple_of(heads) {
            return Err(EngineError::Unsupported(format!(
                "model_dim {d} is not a positive multiple of num_heads {heads}"
            )));
        }
        if config.vocab_size == 0 || config.ffn_inner_dim == 0 || config.max_seq_len == 0 {
            return Err(EngineError::Unsupported(
                "an empty vocabulary, FFN or sequence length".into(),
            ));
        }
        let (layout, slots) = layout(config);
        let params = FlatParams::bind(layout, varmap)?;
        let positions = sinusoidal_positions(
            config.max_seq_len,
            d,
            config.pad_idx,
            DType::F32,
            &Device::Cpu,
        )
        .map_err(|e| EngineError::Unsupported(format!("position table: {e}")))?
        .flatten_all()?
        .to_vec1::<f32>()?;
        let gradient_mask = params
            .layout()
            .slots()
            .iter()
            .map(|s| !without_gradient(&s.name))
            .collect();
        let mut arena = Arena::default();
        arena
            .layers
            .resize_with(config.num_layers, LayerActs::default);
        Ok(Self {
            config: config.clone(),
            grads: vec![0.0; params.layout().len()],
            params,
            slots,
            gradient_mask,
            positions,
            logit_rows: (LOGIT_FLOATS / config.vocab_size).max(16),
            arena,
        })
    }

    pub fn config(&self) -> &SonarDecoderConfig {
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
    /// [`Self::params`] (0 for the parameters without gradient).
    pub fn gradients(&self) -> &[f32] {
        &self.grads
    }

    pub fn gradients_mut(&mut self) -> &mut [f32] {
        &mut self.grads
    }

    /// Whether the loss depends on parameter `name` (false for the cross-attention's q/k
    /// projections and layer norm, which candle's autograd leaves without gradient too,
    /// and for names the model does not have).
    pub fn has_gradient(&self, name: &str) -> bool {
        self.params
            .layout()
            .slots()
            .iter()
            .zip(&self.gradient_mask)
            .any(|(s, &g)| g && s.name == name)
    }

    /// The gradient of parameter `name` from the last [`Self::loss_and_gradients`], `None`
    /// for a parameter without gradient: what `AdamW::step_flat` expects.
    pub fn gradient(&self, name: &str) -> Option<&[f32]> {
        self.params
            .layout()
            .slots()
            .iter()
            .zip(&self.gradient_mask)
            .find(|(s, _)| s.name == name)
            .and_then(|(s, &g)| g.then(|| &self.grads[s.range.clone()]))
    }

    /// Scored rows per logit chunk (at least 1): at most `rows × V` logits exist at once.
    pub fn set_logit_rows(&mut self, rows: usize) {
        self.logit_rows = rows.max(1);
    }

    /// Checks the batch against the model; collects the scored rows.
    fn prepare(&mut self, batch: &TokenBatch<'_>) -> Result<Dims> {
        let cfg = &self.config;
        let (b, t, d, v) = (batch.batch, batch.time, cfg.model_dim, cfg.vocab_size);
        if b == 0 || t == 0 {
            return Err(EngineError::Shape(format!("an empty batch [B={b}, T={t}]")));
        }
        if batch.conditioning.len() != b * d
            || batch.prev_ids.len() != b * t
            || batch.target_ids.len() != b * t
        {
            return Err(EngineError::Shape(format!(
                "{} conditioning floats, {} input and {} target ids for [B={b}, T={t}, d={d}]",
                batch.conditioning.len(),
                batch.prev_ids.len(),
                batch.target_ids.len()
            )));
        }
        if t > cfg.max_seq_len {
            return Err(EngineError::Shape(format!(
                "{t} positions exceed the model's max_seq_len {}",
                cfg.max_seq_len
            )));
        }
        if !(0.0..1.0).contains(&batch.label_smoothing) {
            return Err(EngineError::Shape(format!(
                "label smoothing must be in [0, 1), got {}",
                batch.label_smoothing
            )));
        }
        if let Some(&bad) = batch.prev_ids.iter().find(|&&id| id as usize >= v) {
            return Err(EngineError::Shape(format!(
                "input id {bad} is outside the vocabulary of {v}"
            )));
        }
        let a = &mut self.arena;
        a.scored.clear();
        a.gold.clear();
        for (r, &g) in batch.target_ids.iter().enumerate() {
            if g == batch.pad {
                continue;
            }
            if g as usize >= v {
                return Err(EngineError::Shape(format!(
                    "target id {g} is outside the vocabulary of {v}"
                )));
            }
            a.scored.push(r);
            a.gold.push(g);
        }
        if a.scored.is_empty() {
            return Err(EngineError::Shape("a batch without target tokens".into()));
        }
        Ok(Dims {
            batch: b,
            t,
            rows: b * t,
            input: d,
            d,
            heads: cfg.num_heads,
            head_dim: d / cfg.num_heads,
            ffn: cfg.ffn_inner_dim,
        })
    }

    /// The loss alone (validation); leaves the gradients untouched.
    pub fn loss(&mut self, batch: &TokenBatch<'_>) -> Result<TokenLoss> {
        let dims = self.prepare(batch)?;
        self.forward(batch, dims);
        Ok(self.head(batch, dims, false))
    }

    /// The loss and the gradient of its mean (the label-smoothed cross-entropy per scored
    /// token, as the trainer optimises) with respect to every parameter, left in
    /// [`Self::gradients`].
    pub fn loss_and_gradients(&mut self, batch: &TokenBatch<'_>) -> Result<TokenLoss> {
        let dims = self.prepare(batch)?;
        self.forward(batch, dims);
        self.grads.fill(0.0);
        let loss = self.head(batch, dims, true);
        self.backward(batch, dims);
        Ok(loss)
    }

    fn forward(&mut self, batch: &TokenBatch<'_>, dims: Dims) {
        let Dims {
            batch: b,
            t,
            rows: n,
            d,
            heads,
            head_dim,
            ffn,
            ..
        } = dims;
        let threads = threads();
        let eps = LAYER_NORM_EPS as f32;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let p = self.params.data();
        let s = &self.slots;
        let a = &mut self.arena;
        let square_b = Affine {
            rows: b,
            inputs: d,
            outputs: d,
        };

        embed_forward(
            batch.prev_ids,
            &p[s.embed.clone()],
            &self.positions[..t * d],
            t,
            (d as f64).sqrt() as f32,
            fit(&mut a.layers[0].input, n * d),
        );
        for (l, ls) in s.layers.iter().enumerate() {
            let (done, rest) = a.layers.split_at_mut(l + 1);
            let la = &mut done[l];
            let normed = fit(&mut a.normed, n * d);
            layer_norm_forward(
                &la.input[..n * d],
                &p[ls.ln1_w.clone()],
                &p[ls.ln1_b.clone()],
                eps,
                normed,
                fit(&mut la.mean1, n),
                fit(&mut la.rstd1, n),
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
                Some(&p[ls.qkv_b.clone()]),
                qkv,
                threads,
            );
            let probs = fit(&mut la.probs, b * heads * t * t);
            let context = fit(&mut la.context, n * d);
            attention_forward(qkv, probs, context, dims, scale);
            let mid = fit(&mut la.mid, n * d);
            // m = x + (P v)Woᵀ + bo + c[b]: the two constant rows are added once.
            let cross_v = fit(&mut la.cross_v, b * d);
            square_b.forward(
                batch.conditioning,
                &p[ls.cross_v_w.clone()],
                Some(&p[ls.cross_v_b.clone()]),
                cross_v,
                threads,
            );
            let cross_c = fit(&mut a.cross_c, b * d);
            square_b.forward(
                cross_v,
                &p[ls.cross_out_w.clone()],
                Some(&p[ls.cross_out_b.clone()]),
                cross_c,
                threads,
            );
            for row in cross_c.chunks_exact_mut(d) {
                add_assign(row, &p[ls.out_b.clone()]);
            }
            for (mid_b, (x_b, c)) in mid
                .chunks_exact_mut(t * d)
                .zip(la.input.chunks_exact(t * d).zip(cross_c.chunks_exact(d)))
            {
                mid_b.copy_from_slice(x_b);
                for row in mid_b.chunks_exact_mut(d) {
                    add_assign(row, c);
                }
            }
            lcm_kernels::matmul(
                lcm_kernels::MatMut::dense(mid, n, d),
                lcm_kernels::Mat::dense(context, n, d),
                lcm_kernels::Mat::dense(&p[ls.out_w.clone()], d, d).t(),
                true,
                threads,
            );
            layer_norm_forward(
                mid,
                &p[ls.ln3_w.clone()],
                &p[ls.ln3_b.clone()],
                eps,
                normed,
                fit(&mut la.mean3, n),
                fit(&mut la.rstd3, n),
            );
            let pre = fit(&mut la.pre, n * ffn);
            Affine {
                rows: n,
                inputs: d,
                outputs: ffn,
            }
            .forward(
                normed,
                &p[ls.ffn1_w.clone()],
                Some(&p[ls.ffn1_b.clone()]),
                pre,
                threads,
            );
            let act = fit(&mut a.act, n * ffn);
            relu_forward(pre, act);
            let out = match rest.first_mut() {
                Some(next) => fit(&mut next.input, n * d),
                None => fit(&mut a.last, n * d),
            };
            let b2 = &p[ls.ffn2_b.clone()];
            for (o, m) in out.chunks_exact_mut(d).zip(mid.chunks_exact(d)) {
                o.copy_from_slice(m);
                add_assign(o, b2);
            }
            lcm_kernels::matmul(
                lcm_kernels::MatMut::dense(out, n, d),
                lcm_kernels::Mat::dense(act, n, ffn),
                lcm_kernels::Mat::dense(&p[ls.ffn2_w.clone()], d, ffn).t(),
                true,
                threads,
            );
        }
        layer_norm_forward(
            &a.last[..n * d],
            &p[s.final_w.clone()],
            &p[s.final_b.clone()],
            eps,
            fit(&mut a.normed_final, n * d),
            fit(&mut a.mean_f, n),
            fit(&mut a.rstd_f, n),
        );
    }

    /// The tied output projection and the loss over the scored rows, chunk by chunk; with
    /// `backward`, also `dE += dzᵀ·h` into the gradient buffer and `∂loss/∂h` of the scored
    /// rows into the arena.
    fn head(&mut self, batch: &TokenBatch<'_>, dims: Dims, backward: bool) -> TokenLoss {
        let d = dims.d;
        let v = self.config.vocab_size;
        let threads = threads();
        let p = self.params.data();
        let embed = &p[self.slots.embed.clone()];
        let a = &mut self.arena;
        let k = a.scored.len();
        let h = fit(&mut a.h_scored, k * d);
        for (dst, &r) in h.chunks_exact_mut(d).zip(&a.scored) {
            dst.copy_from_slice(&a.normed_final[r * d..][..d]);
        }
        let dh = fit(&mut a.d_h_scored, k * d);
        let smoothing = batch.label_smoothing as f32;
        let grad_scale = 1.0 / k as f32;
        let (mut sum, mut nll_sum) = (0.0f64, 0.0f64);
        let chunk = self.logit_rows.min(k);
        for start in (0..k).step_by(chunk) {
            let rows = chunk.min(k - start);
            let proj = Affine {
                rows,
                inputs: d,
                outputs: v,
            };
            let h_c = &h[start * d..][..rows * d];
            let logits = fit(&mut a.logits, rows * v);
            proj.forward(h_c, embed, None, logits, threads);
            let row_loss = fit(&mut a.row_loss, rows * 2);
            logits
                .par_chunks_mut(v)
                .zip(a.gold[start..start + rows].par_iter())
                .zip(row_loss.par_chunks_mut(2))
                .for_each(|((z, &g), out)| {
                    smoothed_cross_entropy_row(z, g as usize, smoothing, grad_scale, out);
                });
            for pair in row_loss.chunks_exact(2) {
                sum += f64::from(pair[0]);
                nll_sum += f64::from(pair[1]);
            }
            if backward {
                proj.backward(
                    logits,
                    h_c,
                    embed,
                    &mut self.grads[self.slots.embed.clone()],
                    Some((&mut dh[start * d..][..rows * d], false)),
                    threads,
                );
            }
        }
        TokenLoss {
            sum,
            nll_sum,
            count: k,
        }
    }

    fn backward(&mut self, batch: &TokenBatch<'_>, dims: Dims) {
        let Dims {
            batch: b,
            t,
            rows: n,
            d,
            heads,
            head_dim,
            ffn,
            ..
        } = dims;
        let threads = threads();
        let scale = 1.0 / (head_dim as f32).sqrt();
        let p = self.params.data();
        let s = &self.slots;
        let g = &mut self.grads;
        let a = &mut self.arena;
        let square_b = Affine {
            rows: b,
            inputs: d,
            outputs: d,
        };
        let square = Affine {
            rows: n,
            inputs: d,
            outputs: d,
        };

        // The final LayerNorm: only scored rows have an output gradient.
        let d_normed = fit(&mut a.d_normed, n * d);
        d_normed.fill(0.0);
        for (src, &r) in a.d_h_scored.chunks_exact(d).zip(&a.scored) {
            d_normed[r * d..][..d].copy_from_slice(src);
        }
        let d_resid = fit(&mut a.d_resid, n * d);
        d_resid.fill(0.0);
        {
            let (gw, gb) = two_ranges(g, &s.final_w, &s.final_b);
            layer_norm_backward(
                &a.last[..n * d],
                &p[s.final_w.clone()],
                &a.mean_f[..n],
                &a.rstd_f[..n],
                d_normed,
                d_resid,
                gw,
                gb,
            );
        }

        for (ls, la) in s.layers.iter().zip(&a.layers).rev() {
            // FFN: x⁺ = m + relu(LN₃(m) W₁ᵀ + b₁) W₂ᵀ + b₂.
            let normed = fit(&mut a.normed, n * d);
            layer_norm_apply(
                &la.mid[..n * d],
                &p[ls.ln3_w.clone()],
                &p[ls.ln3_b.clone()],
                &la.mean3[..n],
                &la.rstd3[..n],
                normed,
            );
            let pre = &la.pre[..n * ffn];
            let act = fit(&mut a.act, n * ffn);
            relu_forward(pre, act);
            let d_act = fit(&mut a.d_act, n * ffn);
            Affine {
                rows: n,
                inputs: ffn,
                outputs: d,
            }
            .backward(
                d_resid,
                act,
                &p[ls.ffn2_w.clone()],
                &mut g[ls.ffn2_w.clone()],
                Some((d_act, false)),
                threads,
            );
            column_sums(d_resid, &mut g[ls.ffn2_b.clone()]);
            let d_pre = fit(&mut a.d_pre, n * ffn);
            relu_backward(pre, d_act, d_pre);
            Affine {
                rows: n,
                inputs: d,
                outputs: ffn,
            }
            .backward(
                d_pre,
                normed,
                &p[ls.ffn1_w.clone()],
                &mut g[ls.ffn1_w.clone()],
                Some((d_normed, false)),
                threads,
            );
            column_sums(d_pre, &mut g[ls.ffn1_b.clone()]);
            {
                let (gw, gb) = two_ranges(g, &ls.ln3_w, &ls.ln3_b);
                layer_norm_backward(
                    &la.mid[..n * d],
                    &p[ls.ln3_w.clone()],
                    &la.mean3[..n],
                    &la.rstd3[..n],
                    d_normed,
                    d_resid,
                    gw,
                    gb,
                );
            }

            // Cross-attention: ∂/∂c[b] = Σ_t ∂/∂m[b,t].
            let d_c = fit(&mut a.d_cross_c, b * d);
            d_c.fill(0.0);
            for (dc, dr) in d_c.chunks_exact_mut(d).zip(d_resid.chunks_exact(t * d)) {
                column_sums(dr, dc);
            }
            let d_v = fit(&mut a.d_cross_v, b * d);
            square_b.backward(
                d_c,
                &la.cross_v[..b * d],
                &p[ls.cross_out_w.clone()],
                &mut g[ls.cross_out_w.clone()],
                Some((d_v, false)),
                threads,
            );
            column_sums(d_c, &mut g[ls.cross_out_b.clone()]);
            square_b.backward(
                d_v,
                batch.conditioning,
                &p[ls.cross_v_w.clone()],
                &mut g[ls.cross_v_w.clone()],
                None,
                threads,
            );
            column_sums(d_v, &mut g[ls.cross_v_b.clone()]);

            // Self-attention.
            let d_context = fit(&mut a.d_context, n * d);
            square.backward(
                d_resid,
                &la.context[..n * d],
                &p[ls.out_w.clone()],
                &mut g[ls.out_w.clone()],
                Some((d_context, false)),
                threads,
            );
            column_sums(d_resid, &mut g[ls.out_b.clone()]);
            let d_qkv = fit(&mut a.d_qkv, n * 3 * d);
            attention_backward(
                &la.qkv[..n * 3 * d],
                &la.probs[..b * heads * t * t],
                d_context,
                d_qkv,
                fit(&mut a.d_probs, b * t * t),
                dims,
                scale,
            );
            layer_norm_apply(
                &la.input[..n * d],
                &p[ls.ln1_w.clone()],
                &p[ls.ln1_b.clone()],
                &la.mean1[..n],
                &la.rstd1[..n],
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
            column_sums(d_qkv, &mut g[ls.qkv_b.clone()]);
            let (gw, gb) = two_ranges(g, &ls.ln1_w, &ls.ln1_b);
            layer_norm_backward(
                &la.input[..n * d],
                &p[ls.ln1_w.clone()],
                &la.mean1[..n],
                &la.rstd1[..n],
                d_normed,
                d_resid,
                gw,
                gb,
            );
        }

        embed_backward(
            batch.prev_ids,
            d_resid,
            (d as f64).sqrt() as f32,
            &mut g[s.embed.clone()],
        );
    }
}

/// Two disjoint ranges of `g` borrowed mutably at once (`first` lies before `second`).
fn two_ranges<'a>(
    g: &'a mut [f32],
    first: &Range<usize>,
    second: &Range<usize>,
) -> (&'a mut [f32], &'a mut [f32]) {
    let (lo, hi) = g.split_at_mut(second.start);
    (&mut lo[first.clone()], &mut hi[..second.len()])
}
