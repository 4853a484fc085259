//! The pre-norm decoder trunk the LCM engines share (Base-LCM's decoder, the Two-Tower
//! contextualizer and the One-Tower backbone): per layer RMSNorm → packed QKV → token
//! mixing → output projection, then RMSNorm → packed gate|up → SwiGLU → down projection,
//! each added onto the residual stream; and its backward pass. The token mixing is a
//! [`Mixer`]: causal attention with RoPE ([`forward`], [`backward`]) or a model's own
//! ([`forward_with`], [`backward_with`]).

use std::ops::Range;

use lcm_kernels::{Mat, MatMut, matmul};
use rayon::prelude::*;

use crate::linear::Affine;
use crate::params::ParamLayout;
use crate::rows::{
    add_assign, causal_softmax, column_sums, rms_norm_apply, rms_norm_backward, rms_norm_forward,
    rope_rows, softmax_backward, swiglu_backward, swiglu_forward,
};
use crate::threads;

/// Sizes a trunk problem for one batch.
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

/// One trunk layer's parameters: Q|K|V and gate|up packed (weights, then biases).
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

impl LayerSlots {
    /// Pushes the parameters of the decoder layer named `prefix` (`….layers.{i}`) in the
    /// order that packs Q|K|V and gate|up.
    pub(crate) fn push(l: &mut ParamLayout, prefix: &str, d: usize, f: usize, bias: bool) -> Self {
        let p = prefix;
        let attn_norm = l.push(format!("{p}.self_attn_layer_norm.weight"), &[d]);
        let q = l.push(format!("{p}.self_attn.q_proj.weight"), &[d, d]);
        let _k = l.push(format!("{p}.self_attn.k_proj.weight"), &[d, d]);
        let v = l.push(format!("{p}.self_attn.v_proj.weight"), &[d, d]);
        let qkv_b = bias.then(|| {
            let q = l.push(format!("{p}.self_attn.q_proj.bias"), &[d]);
            l.push(format!("{p}.self_attn.k_proj.bias"), &[d]);
            let v = l.push(format!("{p}.self_attn.v_proj.bias"), &[d]);
            q.start..v.end
        });
        let out_w = l.push(format!("{p}.self_attn.output_proj.weight"), &[d, d]);
        let out_b = bias.then(|| l.push(format!("{p}.self_attn.output_proj.bias"), &[d]));
        let ffn_norm = l.push(format!("{p}.ffn_layer_norm.weight"), &[d]);
        let g = l.push(format!("{p}.ffn.gate_proj.weight"), &[f, d]);
        let u = l.push(format!("{p}.ffn.inner_proj.weight"), &[f, d]);
        let gate_up_b = bias.then(|| {
            let g = l.push(format!("{p}.ffn.gate_proj.bias"), &[f]);
            let u = l.push(format!("{p}.ffn.inner_proj.bias"), &[f]);
            g.start..u.end
        });
        let down_w = l.push(format!("{p}.ffn.output_proj.weight"), &[d, f]);
        let down_b = bias.then(|| l.push(format!("{p}.ffn.output_proj.bias"), &[d]));
        Self {
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
    }
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

/// Buffers every trunk layer reuses (and that the models' other blocks may reuse too).
#[derive(Default)]
pub(crate) struct TrunkScratch {
    pub(crate) normed: Vec<f32>,
    pub(crate) act: Vec<f32>,
    pub(crate) d_resid: Vec<f32>,
    pub(crate) d_normed: Vec<f32>,
    pub(crate) d_act: Vec<f32>,
    pub(crate) d_gate_up: Vec<f32>,
    pub(crate) d_context: Vec<f32>,
    pub(crate) d_qkv: Vec<f32>,
    pub(crate) d_probs: Vec<f32>,
}

/// Grows `v` to at least `n` floats (only the first batches of a run allocate).
pub(crate) fn fit(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// The bias range `r` of `p`, if the block has one.
pub(crate) fn bias<'a>(p: &'a [f32], r: &Option<Range<usize>>) -> Option<&'a [f32]> {
    r.clone().map(|r| &p[r])
}

/// How a trunk layer mixes its tokens: from the packed `[N, 3d]` Q|K|V rows to the
/// attention context `[N, d]`, saving what its backward pass needs in `probs`.
pub(crate) trait Mixer {
    /// May rewrite `qkv` in place (RoPE); the backward pass then receives the rewritten rows.
    fn forward(&self, qkv: &mut [f32], probs: &mut Vec<f32>, context: &mut [f32]);

    /// Writes `d_qkv`, the gradient with respect to the Q|K|V product's output (before any
    /// in-place rewrite), from `d_context`; `d_probs` is scratch.
    fn backward(
        &self,
        qkv: &[f32],
        probs: &[f32],
        d_context: &[f32],
        d_qkv: &mut [f32],
        d_probs: &mut Vec<f32>,
    );
}

/// Causal attention with RoPE within each sequence of `dims.t` rows (Base-LCM, the
/// Two-Tower contextualizer).
struct CausalRope<'a> {
    dims: Dims,
    cos: &'a [f32],
    sin: &'a [f32],
}

impl Mixer for CausalRope<'_> {
    fn forward(&self, qkv: &mut [f32], probs: &mut Vec<f32>, context: &mut [f32]) {
        let Dims {
            batch: b,
            t,
            rows: n,
            d,
            heads,
            head_dim,
            ..
        } = self.dims;
        let scale = 1.0 / (head_dim as f32).sqrt();
        rope_rows(
            qkv,
            n,
            3 * d,
            2 * heads,
            head_dim,
            t,
            self.cos,
            self.sin,
            false,
        );
        let probs = fit(probs, b * heads * t * t);
        attention_forward(qkv, probs, context, self.dims, scale);
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
            batch: b,
            t,
            rows: n,
            d,
            heads,
            head_dim,
            ..
        } = self.dims;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let d_probs = fit(d_probs, b * t * t);
        attention_backward(
            qkv,
            &probs[..b * heads * t * t],
            d_context,
            d_qkv,
            d_probs,
            self.dims,
            scale,
        );
        rope_rows(
            d_qkv,
            n,
            3 * d,
            2 * heads,
            head_dim,
            t,
            self.cos,
            self.sin,
            true,
        );
    }
}

/// The causal pre-norm layers with RoPE: from the first layer's `input` (already holding
/// the frontend's output) to `last`, the stream before the final RMSNorm.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    p: &[f32],
    slots: &[LayerSlots],
    layers: &mut [LayerActs],
    last: &mut Vec<f32>,
    sc: &mut TrunkScratch,
    dims: Dims,
    eps: f32,
    (cos, sin): (&[f32], &[f32]),
) {
    let mixer = CausalRope { dims, cos, sin };
    forward_with(p, slots, layers, last, sc, dims, eps, &mixer);
}

/// The pre-norm layers with `mixer` as their token mixing: from the first layer's `input`
/// to `last`, the stream before the final RMSNorm. Only `dims.rows`, `dims.d` and
/// `dims.ffn` are read here; the mixer knows its own sequence structure.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_with(
    p: &[f32],
    slots: &[LayerSlots],
    layers: &mut [LayerActs],
    last: &mut Vec<f32>,
    sc: &mut TrunkScratch,
    dims: Dims,
    eps: f32,
    mixer: &impl Mixer,
) {
    let Dims {
        rows: n, d, ffn, ..
    } = dims;
    let threads = threads();
    for (l, ls) in slots.iter().enumerate() {
        let (done, rest) = layers.split_at_mut(l + 1);
        let la = &mut done[l];
        let normed = fit(&mut sc.normed, n * d);
        rms_norm_forward(
            &la.input[..n * d],
            &p[ls.attn_norm.clone()],
            eps,
            normed,
            fit(&mut la.rstd_attn, n),
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
            bias(p, &ls.qkv_b),
            qkv,
            threads,
        );
        let context = fit(&mut la.context, n * d);
        mixer.forward(qkv, &mut la.probs, context);
        let mid = fit(&mut la.mid, n * d);
        mid.copy_from_slice(&la.input[..n * d]);
        accumulate_affine(
            context,
            &p[ls.out_w.clone()],
            bias(p, &ls.out_b),
            mid,
            n,
            d,
            d,
            threads,
        );
        rms_norm_forward(
            mid,
            &p[ls.ffn_norm.clone()],
            eps,
            normed,
            fit(&mut la.rstd_ffn, n),
        );
        let gate_up = fit(&mut la.gate_up, n * 2 * ffn);
        Affine {
            rows: n,
            inputs: d,
            outputs: 2 * ffn,
        }
        .forward(
            normed,
            &p[ls.gate_up_w.clone()],
            bias(p, &ls.gate_up_b),
            gate_up,
            threads,
        );
        let act = fit(&mut sc.act, n * ffn);
        swiglu_forward(gate_up, act, ffn);
        let out = match rest.first_mut() {
            Some(next) => fit(&mut next.input, n * d),
            None => fit(last, n * d),
        };
        out.copy_from_slice(mid);
        accumulate_affine(
            act,
            &p[ls.down_w.clone()],
            bias(p, &ls.down_b),
            out,
            n,
            ffn,
            d,
            threads,
        );
    }
}

/// Backward of [`forward`]: `sc.d_resid` holds `∂/∂last` on entry and the gradient at
/// the trunk's input on return; parameter gradients are written into `g`.
pub(crate) fn backward(
    p: &[f32],
    g: &mut [f32],
    slots: &[LayerSlots],
    acts: &[LayerActs],
    sc: &mut TrunkScratch,
    dims: Dims,
    (cos, sin): (&[f32], &[f32]),
) {
    let mixer = CausalRope { dims, cos, sin };
    backward_with(p, g, slots, acts, sc, dims, &mixer);
}

/// Backward of [`forward_with`] under the same `mixer`, as [`backward`].
pub(crate) fn backward_with(
    p: &[f32],
    g: &mut [f32],
    slots: &[LayerSlots],
    acts: &[LayerActs],
    sc: &mut TrunkScratch,
    dims: Dims,
    mixer: &impl Mixer,
) {
    let Dims {
        rows: n, d, ffn, ..
    } = dims;
    let threads = threads();
    let square = Affine {
        rows: n,
        inputs: d,
        outputs: d,
    };
    let d_resid = &mut sc.d_resid[..n * d];
    for (ls, la) in slots.iter().zip(acts).rev() {
        let normed = fit(&mut sc.normed, n * d);
        let d_normed = fit(&mut sc.d_normed, n * d);
        rms_norm_apply(
            &la.mid[..n * d],
            &p[ls.ffn_norm.clone()],
            &la.rstd_ffn[..n],
            normed,
        );
        let act = fit(&mut sc.act, n * ffn);
        swiglu_forward(&la.gate_up[..n * 2 * ffn], act, ffn);
        let d_act = fit(&mut sc.d_act, n * ffn);
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
        let d_gate_up = fit(&mut sc.d_gate_up, n * 2 * ffn);
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

        let d_context = fit(&mut sc.d_context, n * d);
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
        let d_qkv = fit(&mut sc.d_qkv, n * 3 * d);
        mixer.backward(
            &la.qkv[..n * 3 * d],
            &la.probs,
            d_context,
            d_qkv,
            &mut sc.d_probs,
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
