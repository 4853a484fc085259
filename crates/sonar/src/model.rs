//! SONAR's text encoder and decoder (sonar-space 0.5.0 on fairseq2 0.5.2), in candle.
//!
//! Both are pre-norm Transformers (Vaswani et al. 2017) with the fairseq1 frontend:
//!
//! ```text
//! frontend:   x₀ = √d · E[ids] + P[p]            P[p] = sinusoid(p + 2), sines then cosines
//! encoder:    x  = x + MHA(LN₁(x))               (padding mask on keys)
//!             x  = x + W₂ relu(W₁ LN₂(x))
//!             h  = LN_final(x);   e = Σ_valid h / (len + 1e-7)
//! decoder:    x  = x + MHA_causal(LN₁(x))
//!             x  = x + CrossAttn(LN₂(x), e)      = W_o (W_v e + b_v) + b_o (one key: softmax = 1)
//!             x  = x + W₂ relu(W₁ LN₃(x))
//!             logits = LN_final(x) · Eᵀ          (output projection tied to the embedding)
//! ```
//!
//! The conditioning of the decoder is the sentence embedding `e` seen as an encoder output of
//! length one. Softmax over a single key is exactly 1, so cross-attention does not depend on
//! the query: the `encoder_decoder_attn` q/k projections and its layer norm are loaded (they
//! are in every checkpoint and are trained parameters of the reference) but never change the
//! output, and they receive exactly zero gradient in the reference too. We compute
//! `W_o(W_v e)` once per sentence and layer.
//!
//! Every forward exists in two modes (`Mode`): `Train` composes elementary candle ops that
//! all have a backward pass (candle's fused `softmax_last_dim` and `layer_norm` have none,
//! see `crates/model/src/blocks/mod.rs`), `Infer` uses the fused kernels. The weights are
//! used as loaded (no transposed copies), so a decoder trained through a `VarMap` decodes
//! with its current weights; `gemm` packs transposed operands itself.

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SonarError};
use crate::incremental::IncrementalDecoder;

/// Layer-norm epsilon of every SONAR norm (fairseq2 `StandardLayerNorm` default).
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// Additive attention bias for masked keys. Finite so that a fully masked row cannot
/// produce NaN; `exp(-1e9)` is exactly 0 in f32 and f64.
const MASK_NEG: f64 = -1e9;

/// Hyper-parameters of the text encoder (`SonarTextEncoderConfig`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SonarEncoderConfig {
    pub vocab_size: usize,
    pub model_dim: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub ffn_inner_dim: usize,
    /// Longest input in tokens (512 + pad_idx + 1 = 514 for the fairseq1-derived models).
    pub max_seq_len: usize,
    /// The model's pad index. It only sets the sinusoid offset (`pad_idx + 1`).
    pub pad_idx: usize,
}

impl SonarEncoderConfig {
    /// `basic` encoder: 24 layers, d 1024, 16 heads, FFN 8192, vocab 256206.
    pub fn sonar_basic() -> Self {
        Self {
            vocab_size: 256_206,
            model_dim: 1024,
            num_layers: 24,
            num_heads: 16,
            ffn_inner_dim: 8192,
            max_seq_len: 514,
            pad_idx: 1,
        }
    }
}

/// Hyper-parameters of the text decoder (`SonarTextDecoderConfig`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SonarDecoderConfig {
    pub vocab_size: usize,
    pub model_dim: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub ffn_inner_dim: usize,
    /// Longest target (prompt + generated tokens).
    pub max_seq_len: usize,
    /// The model's pad index. It only sets the sinusoid offset (`pad_idx + 1`).
    pub pad_idx: usize,
}

impl SonarDecoderConfig {
    /// `basic` decoder: 24 layers, d 1024, 16 heads, FFN 8192, vocab 256206.
    pub fn sonar_basic() -> Self {
        Self {
            vocab_size: 256_206,
            model_dim: 1024,
            num_layers: 24,
            num_heads: 16,
            ffn_inner_dim: 8192,
            max_seq_len: 512,
            pad_idx: 1,
        }
    }
}

fn check_dims(model_dim: usize, num_heads: usize, what: &str) -> Result<()> {
    if num_heads == 0 || model_dim == 0 || !model_dim.is_multiple_of(num_heads) {
        return Err(SonarError::Input(format!(
            "{what}: model_dim {model_dim} must be a positive multiple of num_heads {num_heads}"
        )));
    }
    Ok(())
}

/// Which kernels a forward uses: differentiable composed ops, or fused inference kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Train,
    Infer,
}

// ---------------------------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------------------------

/// `y = x Wᵀ + b`, torch layout `W: [out, in]`.
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get((out_dim, in_dim), "weight")?,
            bias: vb.get(out_dim, "bias")?,
        })
    }

    /// `[..., in] -> [..., out]`, as one `[rows, in] × [in, out]` product.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim.max(1);
        let y =
            weight_product(&x.reshape((rows, in_dim))?, &self.weight)?.broadcast_add(&self.bias)?;
        let mut out_dims = dims;
        let last = out_dims.len() - 1;
        out_dims[last] = self.weight.dim(0)?;
        Ok(y.reshape(out_dims)?)
    }
}

/// Below this many rows (incremental decoding: beams × sentences), `x · Wᵀ` is computed as
/// `(W · xᵀ)ᵀ`.
const FEW_ROWS: usize = 256;

/// `x · Wᵀ` for `x: [rows, in]` and a weight in torch layout `W: [out, in]`.
///
/// With few rows the product is dominated by streaming the weight; gemm reads it 1.3–3×
/// faster as the left operand in its stored layout than through a transposed view
/// (m = 5…160, k = 1024, n = 1024…65536; `examples/matmul_probe.rs`). With many rows both
/// orders run at the same speed, and the plain order avoids transposing the output.
fn weight_product(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    if x.dim(0)? <= FEW_ROWS {
        Ok(weight.matmul(&x.t()?)?.t()?)
    } else {
        Ok(x.matmul(&weight.t()?)?)
    }
}

/// `LN(x) = (x − mean) / √(var + eps) · γ + β` over the last axis.
#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        match mode {
            Mode::Infer => Ok(candle_nn::ops::layer_norm(
                &x.contiguous()?,
                &self.weight,
                &self.bias,
                LAYER_NORM_EPS as f32,
            )?),
            Mode::Train => {
                // [..., 1]
                let mean = x.mean_keepdim(D::Minus1)?;
                let centered = x.broadcast_sub(&mean)?;
                let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
                let inv_std = (var + LAYER_NORM_EPS)?.sqrt()?.recip()?;
                Ok(centered
                    .broadcast_mul(&inv_std)?
                    .broadcast_mul(&self.weight)?
                    .broadcast_add(&self.bias)?)
            }
        }
    }
}

/// Softmax over the last axis; the `Train` form is built from ops with a backward pass.
fn softmax(x: &Tensor, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Infer => Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?),
        Mode::Train => {
            // The shift by the row max does not change the result; its exact gradient is 0.
            let max = x.max_keepdim(D::Minus1)?.detach();
            let e = x.broadcast_sub(&max)?.exp()?;
            let sum = e.sum_keepdim(D::Minus1)?;
            Ok(e.broadcast_div(&sum)?)
        }
    }
}

/// `W₂ relu(W₁ x + b₁) + b₂` (fairseq2 `StandardFeedForwardNetwork`, keys `inner_proj`,
/// `output_proj`).
#[derive(Debug, Clone)]
struct FeedForward {
    inner_proj: Linear,
    output_proj: Linear,
}

impl FeedForward {
    fn new(model_dim: usize, inner_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            inner_proj: Linear::new(model_dim, inner_dim, vb.pp("inner_proj"))?,
            output_proj: Linear::new(inner_dim, model_dim, vb.pp("output_proj"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.output_proj
            .forward(&self.inner_proj.forward(x)?.relu()?)
    }

    /// The pre-norm feed-forward sublayer over flat buffers, shared by the encoder's packed
    /// layers and the decoder's incremental step: `buf.x += FFN(norm(buf.x))` on `rows` rows,
    /// through `buf.h`, `buf.ffn` and `buf.o`.
    fn residual_flat(&self, norm: &LayerNorm, buf: &mut StepBuffers, rows: usize) -> Result<()> {
        norm.forward_rows(&buf.x, &mut buf.h)?;
        self.inner_proj
            .forward_into(&mut buf.ffn, &buf.h, rows, &mut buf.scratch)?;
        for v in buf.ffn.iter_mut() {
            *v = v.max(0.0);
        }
        self.output_proj
            .forward_into(&mut buf.o, &buf.ffn, rows, &mut buf.scratch)?;
        for (x, &o) in buf.x.iter_mut().zip(&buf.o) {
            *x += o;
        }
        Ok(())
    }
}

/// Multi-head scaled dot-product attention with biased q/k/v/output projections.
#[derive(Debug, Clone)]
struct SonarAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    output_proj: Linear,
    num_heads: usize,
    head_dim: usize,
}

impl SonarAttention {
    fn new(model_dim: usize, num_heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            q_proj: Linear::new(model_dim, model_dim, vb.pp("q_proj"))?,
            k_proj: Linear::new(model_dim, model_dim, vb.pp("k_proj"))?,
            v_proj: Linear::new(model_dim, model_dim, vb.pp("v_proj"))?,
            output_proj: Linear::new(model_dim, model_dim, vb.pp("output_proj"))?,
            num_heads,
            head_dim: model_dim / num_heads,
        })
    }

    /// `[B, T, D] -> [B, H, T, Dh]`, contiguous.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        Ok(x.reshape((b, t, self.num_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// Projected keys and values of `x: [B, T, D]`, each `[B, H, T, Dh]`.
    fn keys_values(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            self.split_heads(&self.k_proj.forward(x)?)?,
            self.split_heads(&self.v_proj.forward(x)?)?,
        ))
    }

    /// Attention of queries `x: [B, Tq, D]` over projected `k, v: [B, H, Tk, Dh]`;
    /// `bias` is additive and broadcastable to `[B, H, Tq, Tk]`. Returns `[B, Tq, D]`.
    fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: Option<&Tensor>,
        mode: Mode,
    ) -> Result<Tensor> {
        let (b, tq, d) = x.dims3()?;
        // q·kᵀ/√Dh, the scale folded into q (fewer elements than the scores).
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let q = (self.split_heads(&self.q_proj.forward(x)?)? * scale)?;
        // [B, H, Tq, Tk]
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(bias) = bias {
            scores = scores.broadcast_add(bias)?;
        }
        let probs = softmax(&scores, mode)?;
        // [B, H, Tq, Dh] -> [B, Tq, H, Dh] -> [B, Tq, D]
        let ctx = probs
            .matmul(v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, tq, d))?;
        self.output_proj.forward(&ctx)
    }

    /// Attention over a memory of length one: softmax is 1, so the output is
    /// `W_o(W_v m + b_v) + b_o` whatever the queries. `memory: [B, D] -> [B, 1, D]`.
    fn single_key_output(&self, memory: &Tensor) -> Result<Tensor> {
        Ok(self
            .output_proj
            .forward(&self.v_proj.forward(memory)?)?
            .unsqueeze(1)?)
    }
}

/// Rows `P[p] = sinusoid(p + pad_idx + 1)` for `p < max_seq_len`: `[sin(s·ω_j)…, cos(s·ω_j)…]`
/// with `ω_j = exp(−j ln(10⁴) / (D/2 − 1))`. The frequencies and products are rounded to f32
/// as fairseq2 computes them in float32. Returns `[max_seq_len, D]`.
pub fn sinusoidal_positions(
    max_seq_len: usize,
    dim: usize,
    pad_idx: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let num_sin = dim / 2;
    let denom = (num_sin.max(2) - 1) as f32;
    let neg_log = -(10000f64.ln()) as f32;
    let freqs: Vec<f32> = (0..num_sin)
        .map(|j| (j as f32 * neg_log / denom).exp())
        .collect();
    let mut table = vec![0f32; max_seq_len * dim];
    for (p, row) in table.chunks_exact_mut(dim.max(1)).enumerate() {
        let step = (p + pad_idx + 1) as f32;
        for (j, &w) in freqs.iter().enumerate() {
            let angle = (step * w) as f64;
            row[j] = angle.sin() as f32;
            if num_sin + j < dim {
                row[num_sin + j] = angle.cos() as f32;
            }
        }
    }
    Ok(Tensor::from_vec(table, (max_seq_len, dim), device)?.to_dtype(dtype)?)
}

/// `√D · E[ids] + P[offset..offset+T]`: `ids: [N, T] -> [N, T, D]`.
#[derive(Debug, Clone)]
struct Frontend {
    embed: Tensor,
    positions: Tensor,
    scale: f64,
}

impl Frontend {
    fn new(
        vocab_size: usize,
        model_dim: usize,
        max_seq_len: usize,
        pad_idx: usize,
        embed: Tensor,
    ) -> Result<Self> {
        if embed.dims() != [vocab_size, model_dim] {
            return Err(SonarError::Weights(format!(
                "embedding has shape {:?}, expected [{vocab_size}, {model_dim}]",
                embed.dims()
            )));
        }
        let positions = sinusoidal_positions(
            max_seq_len,
            model_dim,
            pad_idx,
            embed.dtype(),
            embed.device(),
        )?;
        Ok(Self {
            embed,
            positions,
            scale: (model_dim as f64).sqrt(),
        })
    }

    fn forward(&self, ids: &Tensor, offset: usize) -> Result<Tensor> {
        let (n, t) = ids.dims2()?;
        let d = self.embed.dim(1)?;
        let max = self.positions.dim(0)?;
        if offset + t > max {
            return Err(SonarError::Input(format!(
                "sequence of {} tokens exceeds the model's maximum of {max}",
                offset + t
            )));
        }
        // [N·T, D] -> [N, T, D]
        let x = self
            .embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((n, t, d))?;
        let pos = self.positions.narrow(0, offset, t)?;
        Ok((x * self.scale)?.broadcast_add(&pos)?)
    }
}

impl Frontend {
    /// Packed sequences: `ids` of the sequences of `lens` one after the other, each starting
    /// at position 0, into `x: [Σ lens, D]` (`√D · E[id] + P[position]`, as `forward`).
    fn forward_packed(&self, ids: &[u32], lens: &[usize], x: &mut [f32]) -> Result<()> {
        let max = self.positions.dim(0)?;
        if let Some(&long) = lens.iter().find(|&&l| l > max) {
            return Err(SonarError::Input(format!(
                "sequence of {long} tokens exceeds the model's maximum of {max}"
            )));
        }
        let e = View::<()>::new(&self.embed)?;
        let p = View::<()>::new(&self.positions)?;
        let (e, p) = (e.get()?, p.get()?);
        let d = self.embed.dim(1)?;
        let scale = self.scale as f32;
        let positions = lens.iter().flat_map(|&l| 0..l);
        for ((x, &id), pos) in x.chunks_exact_mut(d).zip(ids).zip(positions) {
            let row = &e[id as usize * d..][..d];
            for ((x, &e), &p) in x.iter_mut().zip(row).zip(&p[pos * d..][..d]) {
                *x = e * scale + p;
            }
        }
        Ok(())
    }
}

/// Host copy of `ids: [N, T]` u32, each checked against the vocabulary.
fn check_ids(ids: &Tensor, vocab_size: usize, what: &str) -> Result<Vec<Vec<u32>>> {
    if ids.dtype() != DType::U32 || ids.rank() != 2 {
        return Err(SonarError::Input(format!(
            "{what}: ids must be a u32 tensor [N, T], got {:?} {:?}",
            ids.dtype(),
            ids.dims()
        )));
    }
    let rows = ids.to_vec2::<u32>()?;
    for row in &rows {
        if let Some(&bad) = row.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(SonarError::Input(format!(
                "{what}: token id {bad} is outside the vocabulary of {vocab_size}"
            )));
        }
    }
    Ok(rows)
}

/// Lower-triangular additive bias `[Tq, P + Tq]`: query `i` (absolute position `P + i`) sees
/// keys `j ≤ P + i`.
fn causal_bias(tq: usize, prefix: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let tk = prefix + tq;
    let data: Vec<f32> = (0..tq)
        .flat_map(|i| {
            (0..tk).map(move |j| {
                if j <= prefix + i {
                    0.0
                } else {
                    MASK_NEG as f32
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(data, (tq, tk), device)?.to_dtype(dtype)?)
}

// ---------------------------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------------------------

/// Pre-norm encoder layer: `x += MHA(LN(x))`, `x += FFN(LN(x))`.
#[derive(Debug, Clone)]
struct EncoderLayer {
    self_attn_layer_norm: LayerNorm,
    self_attn: SonarAttention,
    ffn_layer_norm: LayerNorm,
    ffn: FeedForward,
}

impl EncoderLayer {
    fn new(cfg: &SonarEncoderConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.model_dim;
        Ok(Self {
            self_attn_layer_norm: LayerNorm::new(d, vb.pp("self_attn_layer_norm"))?,
            self_attn: SonarAttention::new(d, cfg.num_heads, vb.pp("self_attn"))?,
            ffn_layer_norm: LayerNorm::new(d, vb.pp("ffn_layer_norm"))?,
            ffn: FeedForward::new(d, cfg.ffn_inner_dim, vb.pp("ffn"))?,
        })
    }

    /// Packed, over flat buffers: `buf.x` (`[total, D]`, the tokens of the sequences
    /// `starts[i]..starts[i + 1]` one after the other, no padding) is updated in place;
    /// attention stays within each sequence. The operations and their order are those of
    /// the candle layers (the decoder's `forward` without cross-attention).
    fn forward_packed(&self, buf: &mut StepBuffers, starts: &[usize]) -> Result<()> {
        let attn = &self.self_attn;
        let d = attn.num_heads * attn.head_dim;
        let rows = buf.x.len() / d;
        self.self_attn_layer_norm.forward_rows(&buf.x, &mut buf.h)?;
        attn.q_proj
            .forward_into(&mut buf.q, &buf.h, rows, &mut buf.scratch)?;
        let scale = (1.0 / (attn.head_dim as f64).sqrt()) as f32;
        for v in buf.q.iter_mut() {
            *v *= scale;
        }
        attn.k_proj
            .forward_into(&mut buf.k, &buf.h, rows, &mut buf.scratch)?;
        attn.v_proj
            .forward_into(&mut buf.v, &buf.h, rows, &mut buf.scratch)?;
        packed_attention(&buf.q, &buf.k, &buf.v, starts, attn.num_heads, &mut buf.h)?;
        attn.output_proj
            .forward_into(&mut buf.o, &buf.h, rows, &mut buf.scratch)?;
        for (x, &o) in buf.x.iter_mut().zip(&buf.o) {
            *x += o;
        }
        self.ffn.residual_flat(&self.ffn_layer_norm, buf, rows)
    }
}

/// Self-attention of packed sequences: `q, k, v: [total, D]` (q already scaled), sequence
/// `i` being rows `starts[i]..starts[i + 1]`; every token attends to all tokens of its own
/// sequence. Writes `ctx: [total, D]`, tokens in parallel.
fn packed_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    starts: &[usize],
    heads: usize,
    ctx: &mut [f32],
) -> Result<()> {
    let total = starts.last().copied().unwrap_or(0);
    let dim = q.len() / total.max(1);
    if q.len() != total * dim || k.len() != q.len() || v.len() != q.len() || ctx.len() != q.len() {
        return Err(SonarError::Input(format!(
            "encoder: packed attention over {} values for {total} tokens",
            q.len()
        )));
    }
    ctx.fill(0.0);
    ctx.par_chunks_mut(dim)
        .enumerate()
        .for_each_init(Vec::new, |scores, (tok, out)| {
            // The sequence holding token `tok` (empty sequences hold none).
            let seq = starts.partition_point(|&s| s <= tok) - 1;
            let (a, b) = (starts[seq], starts[seq + 1]);
            scores.resize(b - a, 0.0);
            attend_row(
                &q[tok * dim..][..dim],
                &k[a * dim..b * dim],
                &v[a * dim..b * dim],
                b - a,
                heads,
                scores,
                out,
            );
        });
    Ok(())
}

/// SONAR text encoder: token ids → per-token states and a mean-pooled sentence embedding.
#[derive(Debug, Clone)]
pub struct SonarEncoder {
    cfg: SonarEncoderConfig,
    frontend: Frontend,
    layers: Vec<EncoderLayer>,
    layer_norm: LayerNorm,
}

impl SonarEncoder {
    /// Keys as in fairseq2 checkpoints: `encoder_frontend.embed.weight`,
    /// `encoder.layers.N.…`, and SONAR's top-level `layer_norm.*`.
    pub fn new(cfg: &SonarEncoderConfig, vb: VarBuilder) -> Result<Self> {
        check_dims(cfg.model_dim, cfg.num_heads, "encoder")?;
        let embed = vb
            .pp("encoder_frontend.embed")
            .get((cfg.vocab_size, cfg.model_dim), "weight")?;
        let frontend = Frontend::new(
            cfg.vocab_size,
            cfg.model_dim,
            cfg.max_seq_len,
            cfg.pad_idx,
            embed,
        )?;
        let layers = (0..cfg.num_layers)
            .map(|i| EncoderLayer::new(cfg, vb.pp(format!("encoder.layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            frontend,
            layers,
            layer_norm: LayerNorm::new(cfg.model_dim, vb.pp("layer_norm"))?,
        })
    }

    pub fn config(&self) -> &SonarEncoderConfig {
        &self.cfg
    }

    /// `ids: [N, S]` u32, right-padded with any value; `seq_lens[i] ≤ S` valid tokens of row i.
    /// Returns `(states [N, S, D]` after the final layer norm (rows past `len` are
    /// unspecified), `embeddings [N, D])`.
    pub fn forward(&self, ids: &Tensor, seq_lens: &[usize]) -> Result<(Tensor, Tensor)> {
        let mut rows = check_ids_lenient(ids, "encoder")?;
        let (n, s) = ids.dims2()?;
        if seq_lens.len() != n {
            return Err(SonarError::Input(format!(
                "encoder: {} seq_lens for {n} rows",
                seq_lens.len()
            )));
        }
        for (row, &len) in rows.iter_mut().zip(seq_lens) {
            if len > s {
                return Err(SonarError::Input(format!(
                    "encoder: seq_len {len} exceeds the batch width {s}"
                )));
            }
            // Padding may hold any value; make it a valid id so the lookup cannot fail.
            row[len..].fill(0);
            if let Some(&bad) = row[..len]
                .iter()
                .find(|&&id| id as usize >= self.cfg.vocab_size)
            {
                return Err(SonarError::Input(format!(
                    "encoder: token id {bad} is outside the vocabulary of {}",
                    self.cfg.vocab_size
                )));
            }
        }
        let embed = &self.frontend.embed;
        if embed.dtype() != DType::F32 || !embed.device().is_cpu() {
            return Err(SonarError::Input(format!(
                "encoder: runs on the CPU with f32 weights, the encoder has {:?} weights on {:?}",
                embed.dtype(),
                embed.device()
            )));
        }
        let d = self.cfg.model_dim;
        // Packed: the valid tokens of every row one after the other, no padding.
        let mut starts = Vec::with_capacity(n + 1);
        starts.push(0);
        for &len in seq_lens {
            starts.push(starts[starts.len() - 1] + len);
        }
        let total = starts[n];
        let packed = if total == 0 {
            Vec::new()
        } else {
            let ids: Vec<u32> = rows
                .iter()
                .zip(seq_lens)
                .flat_map(|(row, &len)| row[..len].iter().copied())
                .collect();
            let mut buf = StepBuffers::default();
            buf.resize(total, d, self.cfg.ffn_inner_dim);
            self.frontend.forward_packed(&ids, seq_lens, &mut buf.x)?;
            for layer in &self.layers {
                layer.forward_packed(&mut buf, &starts)?;
            }
            let mut packed = vec![0f32; total * d];
            self.layer_norm.forward_rows(&buf.x, &mut packed)?;
            packed
        };
        // Back to [N, S, D]; rows past a sequence's length are zero.
        let mut padded = vec![0f32; n * s * d];
        for (i, w) in starts.windows(2).enumerate() {
            padded[i * s * d..][..(w[1] - w[0]) * d].copy_from_slice(&packed[w[0] * d..w[1] * d]);
        }
        let states = Tensor::from_vec(padded, (n, s, d), embed.device())?;

        // Mean over valid tokens: Σ h / (len + 1e-7), the divisor rounded as float32.
        let mut pooled = vec![0f32; n * d];
        for (i, w) in starts.windows(2).enumerate() {
            let out = &mut pooled[i * d..][..d];
            for tok in packed[w[0] * d..w[1] * d].chunks_exact(d) {
                for (o, &h) in out.iter_mut().zip(tok) {
                    *o += h;
                }
            }
            let denom = seq_lens[i] as f32 + 1e-7;
            for o in out.iter_mut() {
                *o /= denom;
            }
        }
        let embeddings = Tensor::from_vec(pooled, (n, d), embed.device())?;
        Ok((states, embeddings))
    }

    /// Pooled embeddings `[N, D]` of unpadded id sequences (each truncated to `max_seq_len`,
    /// as `TextToEmbeddingModelPipeline` does).
    pub fn encode(&self, sequences: &[Vec<u32>]) -> Result<Tensor> {
        if sequences.is_empty() {
            return Err(SonarError::Input("encoder: no sequences".into()));
        }
        let lens: Vec<usize> = sequences
            .iter()
            .map(|s| s.len().min(self.cfg.max_seq_len))
            .collect();
        if lens.contains(&0) {
            return Err(SonarError::Input("encoder: empty id sequence".into()));
        }
        let width = lens.iter().copied().max().unwrap_or(0);
        let mut flat = vec![0u32; sequences.len() * width];
        for (i, (seq, &len)) in sequences.iter().zip(&lens).enumerate() {
            flat[i * width..i * width + len].copy_from_slice(&seq[..len]);
        }
        let ids = Tensor::from_vec(flat, (sequences.len(), width), self.frontend.embed.device())?;
        Ok(self.forward(&ids, &lens)?.1)
    }
}

/// Host copy of `ids` (u32 `[N, S]`) without the vocabulary check (padding may be anything).
fn check_ids_lenient(ids: &Tensor, what: &str) -> Result<Vec<Vec<u32>>> {
    check_ids(ids, usize::MAX, what)
}

// ---------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------

/// Pre-norm decoder layer: causal self-attention, cross-attention to the sentence embedding,
/// feed-forward.
#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn_layer_norm: LayerNorm,
    self_attn: SonarAttention,
    /// Loaded, not used: it only feeds the cross-attention queries, which cannot change a
    /// softmax over one key.
    #[allow(dead_code)]
    encoder_decoder_attn_layer_norm: LayerNorm,
    encoder_decoder_attn: SonarAttention,
    ffn_layer_norm: LayerNorm,
    ffn: FeedForward,
}

impl DecoderLayer {
    fn new(cfg: &SonarDecoderConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.model_dim;
        Ok(Self {
            self_attn_layer_norm: LayerNorm::new(d, vb.pp("self_attn_layer_norm"))?,
            self_attn: SonarAttention::new(d, cfg.num_heads, vb.pp("self_attn"))?,
            encoder_decoder_attn_layer_norm: LayerNorm::new(
                d,
                vb.pp("encoder_decoder_attn_layer_norm"),
            )?,
            encoder_decoder_attn: SonarAttention::new(
                d,
                cfg.num_heads,
                vb.pp("encoder_decoder_attn"),
            )?,
            ffn_layer_norm: LayerNorm::new(d, vb.pp("ffn_layer_norm"))?,
            ffn: FeedForward::new(d, cfg.ffn_inner_dim, vb.pp("ffn"))?,
        })
    }

    /// Teacher forcing: `x: [B, T, D]` at positions `0..T`; `cross: [B, 1, D]` (see
    /// [`SonarAttention::single_key_output`]); `bias: [T, T]` causal.
    fn forward(
        &self,
        x: &Tensor,
        cross: &Tensor,
        bias: Option<&Tensor>,
        mode: Mode,
    ) -> Result<Tensor> {
        let h = self.self_attn_layer_norm.forward(x, mode)?;
        let (k, v) = self.self_attn.keys_values(&h)?;
        let x = (x + self.self_attn.attend(&h, &k, &v, bias, mode)?)?;
        self.cross_and_ffn(&x, cross, mode)
    }

    /// `x + cross`, then the feed-forward block.
    fn cross_and_ffn(&self, x: &Tensor, cross: &Tensor, mode: Mode) -> Result<Tensor> {
        let x = x.broadcast_add(cross)?;
        let h = self.ffn_layer_norm.forward(&x, mode)?;
        Ok((&x + self.ffn.forward(&h)?)?)
    }
}

/// Self-attention keys and values of the positions fed so far, written in place: per row a
/// block of `cap` positions × `D` (heads side by side), of which the first `len` are filled.
/// Reordering copies the filled part of the kept rows into a second pair of buffers, which
/// are then swapped in; neither pair is reallocated unless rows or positions outgrow it.
#[derive(Clone, Default)]
struct KvCache {
    k: Vec<f32>,
    v: Vec<f32>,
    spare_k: Vec<f32>,
    spare_v: Vec<f32>,
    rows: usize,
    cap: usize,
    len: usize,
    dim: usize,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("rows", &self.rows)
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish()
    }
}

impl KvCache {
    /// Appends `T` positions of `rows` rows: `k, v` row-major `[rows, T, D]`.
    fn append(&mut self, k: &[f32], v: &[f32], rows: usize, t: usize, dim: usize) -> Result<()> {
        if self.len == 0 {
            self.rows = rows;
            self.dim = dim;
        }
        if rows != self.rows || dim != self.dim || k.len() != rows * t * dim || v.len() != k.len() {
            return Err(SonarError::Input(format!(
                "decoder step: {rows} rows of dim {dim} for a cache of {} rows of dim {}",
                self.rows, self.dim
            )));
        }
        if self.len + t > self.cap {
            self.grow((2 * self.cap).max(self.len + t).max(16));
        }
        let (cap, len) = (self.cap, self.len);
        for (buf, src) in [(&mut self.k, k), (&mut self.v, v)] {
            for (r, chunk) in src.chunks_exact(t * dim).enumerate() {
                buf[(r * cap + len) * dim..][..t * dim].copy_from_slice(chunk);
            }
        }
        self.len += t;
        Ok(())
    }

    /// Room for `cap` positions per row, keeping the filled ones.
    fn grow(&mut self, cap: usize) {
        let (rows, dim, used) = (self.rows, self.dim, self.len * self.dim);
        for buf in [&mut self.k, &mut self.v] {
            let mut next = vec![0f32; rows * cap * dim];
            if self.cap > 0 {
                for (dst, src) in next
                    .chunks_exact_mut(cap * dim)
                    .zip(buf.chunks_exact(self.cap * dim))
                {
                    dst[..used].copy_from_slice(&src[..used]);
                }
            }
            *buf = next;
        }
        self.cap = cap;
    }

    /// Row `i` becomes old row `rows[i]` (indices checked by the caller).
    fn reorder(&mut self, rows: &[u32]) {
        if self.cap == 0 {
            self.rows = rows.len();
            return;
        }
        let block = self.cap * self.dim;
        let used = self.len * self.dim;
        for (buf, spare) in [
            (&mut self.k, &mut self.spare_k),
            (&mut self.v, &mut self.spare_v),
        ] {
            spare.resize(rows.len() * block, 0.0);
            let src = &*buf;
            spare.par_chunks_mut(block).zip(rows).for_each(|(dst, &r)| {
                dst[..used].copy_from_slice(&src[r as usize * block..][..used]);
            });
            std::mem::swap(buf, spare);
        }
        self.rows = rows.len();
    }

    /// Attention of queries `q: [rows, T, D]` (already scaled by `1/√Dh`), the last `T`
    /// positions of the cache, over the cached keys and values: query `i` sees positions
    /// `≤ len − T + i`. Writes `ctx: [rows, T, D]`.
    fn attend_into(&self, q: &[f32], t: usize, heads: usize, ctx: &mut [f32]) {
        let (dim, cap, len) = (self.dim, self.cap, self.len);
        ctx.fill(0.0);
        ctx.par_chunks_mut(t * dim)
            .enumerate()
            .for_each(|(r, out)| {
                let keys = &self.k[r * cap * dim..][..len * dim];
                let values = &self.v[r * cap * dim..][..len * dim];
                let mut scores = vec![0f32; len];
                for (i, out) in out.chunks_exact_mut(dim).enumerate() {
                    let visible = len - t + i + 1;
                    let q = &q[(r * t + i) * dim..][..dim];
                    attend_row(q, keys, values, visible, heads, &mut scores, out);
                }
            });
    }
}

/// One query's multi-head attention: `q: [D]` (already scaled by `1/√Dh`) over the first
/// `visible` positions of `keys, values` (row-major, `D` per position, heads side by side).
/// Per head: scores, softmax shifted by the row max (as candle's `softmax_last_dim`), then
/// the probability-weighted sum of values, accumulated into `out: [D]` (zero on entry).
/// Masked keys never enter the sum, which equals adding `MASK_NEG` to them: its `exp` is 0.
fn attend_row(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    visible: usize,
    heads: usize,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let dim = q.len();
    let dh = dim / heads;
    let scores = &mut scores[..visible];
    for h in 0..heads {
        let qh = &q[h * dh..][..dh];
        let mut max = f32::NEG_INFINITY;
        for (p, s) in scores.iter_mut().enumerate() {
            *s = dot(qh, &keys[p * dim + h * dh..][..dh]);
            max = max.max(*s);
        }
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        let o = &mut out[h * dh..][..dh];
        for (p, &e) in scores.iter().enumerate() {
            let w = e / sum;
            for (o, &v) in o.iter_mut().zip(&values[p * dim + h * dh..][..dh]) {
                *o += w * v;
            }
        }
    }
}

/// `a · b` with eight partial sums (so that it vectorises; the rounding differs from a
/// sequential sum by the order of additions only).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

// ---------------------------------------------------------------------------------------------
// Incremental decoding over flat buffers
// ---------------------------------------------------------------------------------------------

/// The f32 elements of a contiguous CPU tensor, borrowed while the view lives.
struct View<G> {
    guard: G,
    start: usize,
    len: usize,
}

impl View<()> {
    #[allow(clippy::new_ret_no_self)]
    fn new(t: &Tensor) -> Result<View<impl std::ops::Deref<Target = candle_core::Storage> + '_>> {
        if !t.is_contiguous() || t.dtype() != DType::F32 {
            return Err(SonarError::Input(format!(
                "decoder step: needs contiguous f32 weights, got {:?} {:?}",
                t.dtype(),
                t.dims()
            )));
        }
        let (guard, layout) = t.storage_and_layout();
        let start = layout.start_offset();
        Ok(View {
            guard,
            start,
            len: t.elem_count(),
        })
    }
}

impl<G: std::ops::Deref<Target = candle_core::Storage>> View<G> {
    fn get(&self) -> Result<&[f32]> {
        match &*self.guard {
            candle_core::Storage::Cpu(cpu) => Ok(&cpu.as_slice::<f32>()?[self.start..][..self.len]),
            _ => Err(SonarError::Input(
                "decoder step: incremental decoding runs on the CPU".into(),
            )),
        }
    }
}

/// `dst = x · Wᵀ + b` for `x: [rows, in]` and `W: [out, in]`, both row-major, into `dst:
/// [rows, out]` row-major. The product is candle's few-row order (see `weight_product`):
/// `W · xᵀ` into `scratch` as `[out, rows]` (the layout gemm runs fastest here), then
/// transposed while the bias is added, as the candle path's `broadcast_add` does.
fn linear_into(
    dst: &mut [f32],
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    rows: usize,
    scratch: &mut Vec<f32>,
) {
    let out = bias.len();
    let in_dim = x.len() / rows.max(1);
    assert!(
        dst.len() == rows * out && x.len() == rows * in_dim && w.len() == out * in_dim,
        "linear_into shapes"
    );
    if rows == 0 || out == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    if rows > FEW_ROWS {
        // candle's plain order `x · Wᵀ`, straight into dst, then the bias.
        // SAFETY: x is rows × in row-major, Wᵀ is in × out (row stride 1, column stride
        // in), dst is rows × out row-major; the assert keeps every index inside them.
        unsafe {
            gemm::gemm(
                rows,
                out,
                in_dim,
                dst.as_mut_ptr(),
                1,
                out as isize,
                false,
                x.as_ptr(),
                1,
                in_dim as isize,
                w.as_ptr(),
                in_dim as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
        dst.par_chunks_mut(out).for_each(|row| {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        });
        return;
    }
    scratch.resize(rows * out, 0.0);

    // SAFETY: gemm reads W (out × in, row-major), xᵀ (in × rows: row stride 1, column
    // stride in) and writes scratch (out × rows, row-major); the assert and the resize above
    // keep every index inside the three slices.
    unsafe {
        gemm::gemm(
            out,
            rows,
            in_dim,
            scratch.as_mut_ptr(),
            1,
            rows as isize,
            false,
            w.as_ptr(),
            1,
            in_dim as isize,
            x.as_ptr(),
            in_dim as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    // dst[r, o] = scratch[o, r] + b[o].
    let scratch = &scratch[..];
    dst.par_chunks_mut(out).enumerate().for_each(|(r, row)| {
        for (o, (v, &b)) in row.iter_mut().zip(bias).enumerate() {
            *v = scratch[o * rows + r] + b;
        }
    });
}

impl Linear {
    /// `dst = x Wᵀ + b` over flat rows (`x: [rows, in]`).
    fn forward_into(
        &self,
        dst: &mut [f32],
        x: &[f32],
        rows: usize,
        scratch: &mut Vec<f32>,
    ) -> Result<()> {
        let w = View::<()>::new(&self.weight)?;
        let b = View::<()>::new(&self.bias)?;
        linear_into(dst, x, w.get()?, b.get()?, rows, scratch);
        Ok(())
    }
}

impl LayerNorm {
    /// candle's fused layer norm (`candle_nn::ops::layer_norm`, f32 sums, the variance as
    /// `E[x²] − mean²`) over flat rows of `x`, into `out`.
    fn forward_rows(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        let w = View::<()>::new(&self.weight)?;
        let b = View::<()>::new(&self.bias)?;
        let (w, b) = (w.get()?, b.get()?);
        let d = w.len();
        let eps = LAYER_NORM_EPS as f32;
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .for_each(|(dst, src)| {
                let mut sum = 0f32;
                let mut sum2 = 0f32;
                for &v in src {
                    sum += v;
                    sum2 += v * v;
                }
                let mean = sum / d as f32;
                let var = sum2 / d as f32 - mean * mean;
                let inv_std = (var + eps).sqrt().recip();
                for ((o, &s), (&a, &c)) in dst.iter_mut().zip(src).zip(w.iter().zip(b)) {
                    *o = (s - mean) * inv_std * a + c;
                }
            });
        Ok(())
    }
}

/// Buffers of one incremental step, kept in the [`DecoderState`] and reused from step to
/// step (grown when rows grow, never shrunk).
#[derive(Clone, Default)]
struct StepBuffers {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    o: Vec<f32>,
    ffn: Vec<f32>,
    /// Products before their transpose (see `linear_into`).
    scratch: Vec<f32>,
}

impl std::fmt::Debug for StepBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepBuffers")
            .field("rows_x_dim", &self.x.len())
            .finish()
    }
}

impl StepBuffers {
    fn resize(&mut self, rows: usize, d: usize, ffn: usize) {
        for buf in [
            &mut self.x,
            &mut self.h,
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.o,
        ] {
            buf.resize(rows * d, 0.0);
        }
        self.ffn.resize(rows * ffn, 0.0);
    }
}

impl DecoderLayer {
    /// The incremental step of [`DecoderLayer::step`] over flat buffers: `buf.x` (`[B·T, D]`,
    /// row `r` = hypothesis `r / T`, position `P + r % T`) is updated in place; `cross` is
    /// `[B, D]`. Every operation mirrors the candle path, in the same order.
    fn step_flat(
        &self,
        buf: &mut StepBuffers,
        cross: &[f32],
        cache: &mut KvCache,
        b: usize,
        t: usize,
    ) -> Result<()> {
        let attn = &self.self_attn;
        let d = cross.len() / b.max(1);
        let rows = b * t;
        self.self_attn_layer_norm.forward_rows(&buf.x, &mut buf.h)?;
        attn.q_proj
            .forward_into(&mut buf.q, &buf.h, rows, &mut buf.scratch)?;
        let scale = (1.0 / (attn.head_dim as f64).sqrt()) as f32;
        for v in buf.q.iter_mut() {
            *v *= scale;
        }
        attn.k_proj
            .forward_into(&mut buf.k, &buf.h, rows, &mut buf.scratch)?;
        attn.v_proj
            .forward_into(&mut buf.v, &buf.h, rows, &mut buf.scratch)?;
        cache.append(&buf.k, &buf.v, b, t, d)?;
        cache.attend_into(&buf.q, t, attn.num_heads, &mut buf.h);
        attn.output_proj
            .forward_into(&mut buf.o, &buf.h, rows, &mut buf.scratch)?;
        // x = (x + attn) + cross
        for (r, (x, o)) in buf
            .x
            .chunks_exact_mut(d)
            .zip(buf.o.chunks_exact(d))
            .enumerate()
        {
            let c = &cross[(r / t) * d..][..d];
            for ((x, &o), &c) in x.iter_mut().zip(o).zip(c) {
                *x = (*x + o) + c;
            }
        }
        self.ffn.residual_flat(&self.ffn_layer_norm, buf, rows)
    }
}

/// SONAR text decoder: sentence embedding + previous tokens → next-token logits.
#[derive(Debug, Clone)]
pub struct SonarDecoder {
    cfg: SonarDecoderConfig,
    /// Its `embed` is also the output projection (tied).
    frontend: Frontend,
    layers: Vec<DecoderLayer>,
    layer_norm: LayerNorm,
}

/// Incremental decoding state of a [`SonarDecoder`]: per layer the cross-attention output
/// (computed once per sentence) and the self-attention KV cache; rows are hypotheses.
#[derive(Debug, Clone)]
pub struct DecoderState {
    /// Per layer `[B, 1, D]`.
    cross: Vec<Tensor>,
    /// Per layer.
    caches: Vec<KvCache>,
    /// Activations of a step, reused.
    buffers: StepBuffers,
    /// Final-norm rows of the last positions `[B, D]`, reused.
    last: Vec<f32>,
    /// Positions fed so far.
    step: usize,
    rows: usize,
}

impl DecoderState {
    /// Number of positions fed so far.
    pub fn len(&self) -> usize {
        self.step
    }

    pub fn is_empty(&self) -> bool {
        self.step == 0
    }

    /// Number of rows (hypotheses).
    pub fn rows(&self) -> usize {
        self.rows
    }
}

impl SonarDecoder {
    /// Keys as in fairseq2 checkpoints: `decoder_frontend.embed.weight` (read once and used as
    /// the tied output projection too), `decoder.layers.N.…`, `decoder.layer_norm.*`.
    pub fn new(cfg: &SonarDecoderConfig, vb: VarBuilder) -> Result<Self> {
        check_dims(cfg.model_dim, cfg.num_heads, "decoder")?;
        let embed = vb
            .pp("decoder_frontend.embed")
            .get((cfg.vocab_size, cfg.model_dim), "weight")?;
        let frontend = Frontend::new(
            cfg.vocab_size,
            cfg.model_dim,
            cfg.max_seq_len,
            cfg.pad_idx,
            embed,
        )?;
        let layers = (0..cfg.num_layers)
            .map(|i| DecoderLayer::new(cfg, vb.pp(format!("decoder.layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            frontend,
            layers,
            layer_norm: LayerNorm::new(cfg.model_dim, vb.pp("decoder.layer_norm"))?,
        })
    }

    pub fn config(&self) -> &SonarDecoderConfig {
        &self.cfg
    }

    /// Per layer cross-attention output `[N, 1, D]` of `conditioning: [N, D]`.
    fn cross_outputs(&self, conditioning: &Tensor) -> Result<Vec<Tensor>> {
        let (_, d) = conditioning.dims2().map_err(|_| {
            SonarError::Input(format!(
                "decoder: conditioning must be [N, D], got {:?}",
                conditioning.dims()
            ))
        })?;
        if d != self.cfg.model_dim {
            return Err(SonarError::Input(format!(
                "decoder: conditioning has dim {d}, the model expects {}",
                self.cfg.model_dim
            )));
        }
        let e = conditioning.to_dtype(self.frontend.embed.dtype())?;
        self.layers
            .iter()
            .map(|l| l.encoder_decoder_attn.single_key_output(&e))
            .collect()
    }

    /// `logits = LN(h) · Eᵀ`: `[..., D] -> [..., V]`.
    fn project(&self, h: &Tensor, mode: Mode) -> Result<Tensor> {
        let h = self.layer_norm.forward(h, mode)?;
        let mut dims = h.dims().to_vec();
        let d = self.cfg.model_dim;
        let rows = h.elem_count() / d;
        // Not `weight_product`: with V = 256k columns, transposing its `[V, rows]` result back
        // costs more than the product order saves.
        let logits = h.reshape((rows, d))?.matmul(&self.frontend.embed.t()?)?;
        let last = dims.len() - 1;
        dims[last] = self.cfg.vocab_size;
        Ok(logits.reshape(dims)?)
    }

    /// `logits = h · Eᵀ` for normalised rows `h: [B, D]`, into `logits` (`[B·V]`, row-major).
    /// The product is the one `project` asks candle for (same operands, strides and thread
    /// count, so the same numbers), written into the caller's buffer: at V = 256k the output
    /// is ~1 MB per row, and a fresh one per step costs page faults.
    fn project_into(&self, h: &[f32], rows: usize, logits: &mut Vec<f32>) -> Result<()> {
        let d = self.cfg.model_dim;
        let vocab = self.cfg.vocab_size;
        if h.len() != rows * d {
            return Err(SonarError::Input(format!(
                "decoder: {} values for {rows} rows of dim {d}",
                h.len()
            )));
        }
        logits.resize(rows * vocab, 0.0);
        let threads = rayon::current_num_threads();
        let e = View::<()>::new(&self.frontend.embed)?;
        let e = e.get()?;
        // SAFETY: `h` is `rows × d` row-major, `e` is `V × d` row-major (read as its
        // transpose `d × V`: row stride 1, column stride d), `logits` holds `rows × V`;
        // every index gemm forms stays inside these slices.
        unsafe {
            gemm::gemm(
                rows,
                vocab,
                d,
                logits.as_mut_ptr(),
                1,
                vocab as isize,
                false,
                h.as_ptr(),
                1,
                d as isize,
                e.as_ptr(),
                d as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                if threads > 1 {
                    gemm::Parallelism::Rayon(threads)
                } else {
                    gemm::Parallelism::None
                },
            );
        }
        Ok(())
    }

    /// Teacher-forced logits of every position.
    fn forward_mode(&self, conditioning: &Tensor, prev_ids: &Tensor, mode: Mode) -> Result<Tensor> {
        check_ids(prev_ids, self.cfg.vocab_size, "decoder")?;
        let (n, t) = prev_ids.dims2()?;
        if conditioning.dim(0)? != n {
            return Err(SonarError::Input(format!(
                "decoder: {} conditioning rows for {n} id rows",
                conditioning.dim(0)?
            )));
        }
        let cross = self.cross_outputs(conditioning)?;
        // [N, T, D]
        let mut x = self.frontend.forward(prev_ids, 0)?;
        // [T, T]
        let bias = causal_bias(t, 0, x.dtype(), x.device())?;
        for (layer, cross) in self.layers.iter().zip(&cross) {
            x = layer.forward(&x, cross, Some(&bias), mode)?;
        }
        self.project(&x, mode)
    }

    /// Teacher forcing with differentiable ops only: `conditioning: [N, D]`,
    /// `prev_ids: [N, T]` u32 right-padded (any valid id) → logits `[N, T, V]`. Position `t`
    /// predicts token `t + 1`; rows past a sequence's end are meaningless but do not affect
    /// earlier positions (causal attention).
    pub fn forward_train(&self, conditioning: &Tensor, prev_ids: &Tensor) -> Result<Tensor> {
        self.forward_mode(conditioning, prev_ids, Mode::Train)
    }

    /// The same logits `[N, T, V]` with the fused inference kernels.
    pub fn forward(&self, conditioning: &Tensor, prev_ids: &Tensor) -> Result<Tensor> {
        self.forward_mode(conditioning, prev_ids, Mode::Infer)
    }
}

impl IncrementalDecoder for SonarDecoder {
    type State = DecoderState;

    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn start(&self, conditioning: &Tensor) -> Result<DecoderState> {
        let cross = self
            .cross_outputs(conditioning)?
            .into_iter()
            .map(|c| c.contiguous())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(DecoderState {
            rows: conditioning.dim(0)?,
            caches: vec![KvCache::default(); self.layers.len()],
            buffers: StepBuffers::default(),
            last: Vec::new(),
            cross,
            step: 0,
        })
    }

    fn step(&self, state: &mut DecoderState, tokens: &Tensor) -> Result<Tensor> {
        let mut logits = Vec::new();
        self.step_into(state, tokens, &mut logits)?;
        let rows = logits.len() / self.cfg.vocab_size.max(1);
        Ok(Tensor::from_vec(
            logits,
            (rows, self.cfg.vocab_size),
            self.frontend.embed.device(),
        )?)
    }

    fn step_into(
        &self,
        state: &mut DecoderState,
        tokens: &Tensor,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        check_ids(tokens, self.cfg.vocab_size, "decoder step")?;
        let (b, t) = tokens.dims2()?;
        if b != state.rows {
            return Err(SonarError::Input(format!(
                "decoder step: {b} token rows for a state of {} rows",
                state.rows
            )));
        }
        if t == 0 {
            return Err(SonarError::Input("decoder step: no tokens".into()));
        }
        let embed = &self.frontend.embed;
        if embed.dtype() != DType::F32 || !embed.device().is_cpu() {
            return Err(SonarError::Input(format!(
                "decoder step: incremental decoding runs on the CPU with f32 weights, the \
                 decoder has {:?} weights on {:?}",
                embed.dtype(),
                embed.device()
            )));
        }
        let ids = check_ids(tokens, self.cfg.vocab_size, "decoder step")?;
        let d = self.cfg.model_dim;
        let max = self.frontend.positions.dim(0)?;
        if state.step + t > max {
            return Err(SonarError::Input(format!(
                "sequence of {} tokens exceeds the model's maximum of {max}",
                state.step + t
            )));
        }
        let buf = &mut state.buffers;
        buf.resize(b * t, d, self.cfg.ffn_inner_dim);
        {
            // x = √D · E[id] + P[position]: [B·T, D] at positions step..step+T.
            let e = View::<()>::new(embed)?;
            let p = View::<()>::new(&self.frontend.positions)?;
            let (e, p) = (e.get()?, p.get()?);
            let scale = self.frontend.scale as f32;
            for (r, (x, &id)) in buf
                .x
                .chunks_exact_mut(d)
                .zip(ids.iter().flatten())
                .enumerate()
            {
                let row = &e[id as usize * d..][..d];
                let pos = &p[(state.step + r % t) * d..][..d];
                for ((x, &e), &p) in x.iter_mut().zip(row).zip(pos) {
                    *x = e * scale + p;
                }
            }
        }
        for ((layer, cross), cache) in self
            .layers
            .iter()
            .zip(&state.cross)
            .zip(state.caches.iter_mut())
        {
            let cross = View::<()>::new(cross)?;
            layer.step_flat(buf, cross.get()?, cache, b, t)?;
        }
        state.step += t;
        // Only the last position of every row: [B, D] -> [B, V], written into `logits`.
        let rows_last: Vec<f32> = buf
            .x
            .chunks_exact(t * d)
            .flat_map(|r| r[(t - 1) * d..].iter().copied())
            .collect();
        state.last.resize(b * d, 0.0);
        self.layer_norm.forward_rows(&rows_last, &mut state.last)?;
        self.project_into(&state.last, b, logits)
    }

    fn reorder(&self, state: &mut DecoderState, rows: &Tensor) -> Result<()> {
        let rows = rows.to_dtype(DType::U32)?;
        let idx = rows.to_vec1::<u32>()?;
        if let Some(&bad) = idx.iter().find(|&&r| r as usize >= state.rows) {
            return Err(SonarError::Input(format!(
                "reorder: row {bad} of a state with {} rows",
                state.rows
            )));
        }
        for cross in state.cross.iter_mut() {
            *cross = cross.index_select(&rows, 0)?;
        }
        for cache in state.caches.iter_mut() {
            cache.reorder(&idx);
        }
        state.rows = idx.len();
        Ok(())
    }
}
