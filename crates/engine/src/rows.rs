//! Fused row kernels with their backward passes. Each works on whole rows of a
//! row-major `[rows, width]` buffer and is compiled for AVX-512, AVX2+FMA and the baseline
//! (`lcm_kernels::multiversion!`). Backward kernels that produce an input gradient *add*
//! it to their destination, because every such destination is a residual-stream gradient
//! that already holds the other branch's contribution.

use lcm_kernels::multiversion;
use lcm_kernels::simd::{dot, exp, fma, max, sum, sum_sq};

multiversion! {
    /// `y = x · rstd · gain` per row of `gain.len()`, with `rstd = 1/√(mean(x²) + eps)`
    /// saved for the backward pass.
    pub fn rms_norm_forward(x: &[f32], gain: &[f32], eps: f32, y: &mut [f32], rstd: &mut [f32]) {
        let width = gain.len();
        for ((xr, yr), r) in x.chunks_exact(width).zip(y.chunks_exact_mut(width)).zip(rstd.iter_mut()) {
            let rs = 1.0 / (sum_sq(xr) / width as f32 + eps).sqrt();
            *r = rs;
            for ((yv, &xv), &g) in yr.iter_mut().zip(xr).zip(gain) {
                *yv = xv * rs * g;
            }
        }
    }
}

multiversion! {
    /// Recomputes `y = x · rstd · gain` from the saved `rstd` (the backward pass needs the
    /// normalised rows as the input of the next product's weight gradient).
    pub fn rms_norm_apply(x: &[f32], gain: &[f32], rstd: &[f32], y: &mut [f32]) {
        let width = gain.len();
        for ((xr, yr), &rs) in x.chunks_exact(width).zip(y.chunks_exact_mut(width)).zip(rstd) {
            for ((yv, &xv), &g) in yr.iter_mut().zip(xr).zip(gain) {
                *yv = xv * rs * g;
            }
        }
    }
}

multiversion! {
    /// Backward of [`rms_norm_forward`]: `dx += rstd·u − x·rstd³·⟨u, x⟩/width` with
    /// `u = dy ⊙ gain`, and `dgain += Σ_rows dy ⊙ x · rstd`.
    pub fn rms_norm_backward(x: &[f32], gain: &[f32], rstd: &[f32], dy: &[f32], dx: &mut [f32], dgain: &mut [f32]) {
        let width = gain.len();
        for (((xr, dyr), dxr), &rs) in x
            .chunks_exact(width)
            .zip(dy.chunks_exact(width))
            .zip(dx.chunks_exact_mut(width))
            .zip(rstd)
        {
            let mut acc = [0.0f32; 16];
            let mut i = 0;
            for ((c_x, c_dy), c_g) in xr.chunks_exact(16).zip(dyr.chunks_exact(16)).zip(gain.chunks_exact(16)) {
                for l in 0..16 {
                    acc[l] = fma::<FMA>(c_dy[l] * c_g[l], c_x[l], acc[l]);
                }
                i += 16;
            }
            let mut ux: f32 = acc.iter().sum();
            for j in i..width {
                ux += dyr[j] * gain[j] * xr[j];
            }
            let coef = rs * rs * rs * ux / width as f32;
            for ((((d, &xv), &dyv), &g), dg) in dxr.iter_mut().zip(xr).zip(dyr).zip(gain).zip(dgain.iter_mut()) {
                *d += rs * dyv * g - xv * coef;
                *dg = fma::<FMA>(dyv, xv * rs, *dg);
            }
        }
    }
}

/// Logistic sigmoid through the branch-free `exp`.
#[inline(always)]
fn sigmoid<const F: bool>(x: f32) -> f32 {
    1.0 / (1.0 + exp::<F>(-x))
}

multiversion! {
    /// SwiGLU on packed rows `gu = [gate (width) | up (width)]`: `act = silu(gate) ⊙ up`.
    pub fn swiglu_forward(gu: &[f32], act: &mut [f32], width: usize) {
        for (row, out) in gu.chunks_exact(2 * width).zip(act.chunks_exact_mut(width)) {
            let (g, u) = row.split_at(width);
            for ((o, &gv), &uv) in out.iter_mut().zip(g).zip(u) {
                *o = gv * sigmoid::<FMA>(gv) * uv;
            }
        }
    }
}

multiversion! {
    /// Backward of [`swiglu_forward`]: `dgate = dact ⊙ up ⊙ σ(g)(1 + g(1 − σ(g)))`,
    /// `dup = dact ⊙ silu(g)`, written (not added) into the packed `dgu`.
    pub fn swiglu_backward(gu: &[f32], dact: &[f32], dgu: &mut [f32], width: usize) {
        for ((row, d_out), drow) in gu.chunks_exact(2 * width).zip(dact.chunks_exact(width)).zip(dgu.chunks_exact_mut(2 * width)) {
            let (g, u) = row.split_at(width);
            let (dg, du) = drow.split_at_mut(width);
            for ((((dgv, duv), &gv), &uv), &dv) in dg.iter_mut().zip(du.iter_mut()).zip(g).zip(u).zip(d_out) {
                let s = sigmoid::<FMA>(gv);
                let silu = gv * s;
                *duv = dv * silu;
                *dgv = dv * uv * s * fma::<FMA>(gv, 1.0 - s, 1.0);
            }
        }
    }
}

multiversion! {
    /// Rotates `heads` interleaved-pair RoPE heads of `head_dim` in each row of `x`, which
    /// starts every `row_stride` floats; row `r` sits at position `r % period` and uses
    /// row `r % period` of the `[positions, head_dim/2]` tables. `inverse` rotates by the
    /// negative angle (the backward pass, since the rotation is orthogonal).
    #[allow(clippy::too_many_arguments)]
    pub fn rope_rows(x: &mut [f32], rows: usize, row_stride: usize, heads: usize, head_dim: usize, period: usize, cos: &[f32], sin: &[f32], inverse: bool) {
        let half = head_dim / 2;
        let sign = if inverse { -1.0f32 } else { 1.0 };
        for r in 0..rows {
            let pos = r % period;
            let c = &cos[pos * half..][..half];
            let s = &sin[pos * half..][..half];
            let row = &mut x[r * row_stride..][..heads * head_dim];
            for head in row.chunks_exact_mut(head_dim) {
                for ((pair, &cv), &sv) in head.chunks_exact_mut(2).zip(c).zip(s) {
                    let (re, im) = (pair[0], pair[1]);
                    let sv = sign * sv;
                    pair[0] = re * cv - im * sv;
                    pair[1] = re * sv + im * cv;
                }
            }
        }
    }
}

multiversion! {
    /// In place on a `[t, t]` score block: `p = softmax(scale · s)` over keys `j ≤ i`
    /// for query row `i` (causal); masked entries become exactly 0.
    pub fn causal_softmax(scores: &mut [f32], t: usize, scale: f32) {
        for (i, row) in scores.chunks_exact_mut(t).enumerate() {
            let (seen, masked) = row.split_at_mut(i + 1);
            let m = max(seen) * scale;
            for v in seen.iter_mut() {
                *v = exp::<FMA>(fma::<FMA>(*v, scale, -m));
            }
            let inv = 1.0 / sum(seen);
            for v in seen.iter_mut() {
                *v *= inv;
            }
            masked.fill(0.0);
        }
    }
}

multiversion! {
    /// Backward of a softmax over rows of `width` (any mask: masked entries have `p = 0`
    /// and so get 0): in place, `dp ← scale · p ⊙ (dp − ⟨dp, p⟩)`, the gradient with
    /// respect to the unscaled scores.
    pub fn softmax_backward(p: &[f32], dp: &mut [f32], width: usize, scale: f32) {
        for (pr, dr) in p.chunks_exact(width).zip(dp.chunks_exact_mut(width)) {
            let inner = dot::<FMA>(pr, dr);
            for (d, &pv) in dr.iter_mut().zip(pr) {
                *d = scale * pv * (*d - inner);
            }
        }
    }
}

multiversion! {
    /// Fills every row of `y` (rows of `bias.len()`) with `bias`.
    pub fn fill_rows(y: &mut [f32], bias: &[f32]) {
        for row in y.chunks_exact_mut(bias.len()) {
            row.copy_from_slice(bias);
        }
    }
}

multiversion! {
    /// `acc += Σ_rows dy` over rows of `acc.len()`: a bias gradient.
    pub fn column_sums(dy: &[f32], acc: &mut [f32]) {
        for row in dy.chunks_exact(acc.len()) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
    }
}

multiversion! {
    /// `dst += src`.
    pub fn add_assign(dst: &mut [f32], src: &[f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d += s;
        }
    }
}

/// Weighted summed squared error per row of `width`: returns `Σ_r w_r ‖pred_r − target_r‖²`
/// (accumulated in f64) and writes `dpred_r = grad_scale · 2 w_r (pred_r − target_r)`.
/// `target(r)` gives row `r`'s target and weight.
pub fn squared_error<'a>(
    pred: &[f32],
    width: usize,
    grad_scale: f32,
    dpred: &mut [f32],
    target: impl Fn(usize) -> (&'a [f32], f32),
) -> f64 {
    let mut total = 0.0f64;
    for (r, (p, d)) in pred
        .chunks_exact(width)
        .zip(dpred.chunks_exact_mut(width))
        .enumerate()
    {
        let (tgt, w) = target(r);
        if w == 0.0 {
            d.fill(0.0);
            continue;
        }
        total += f64::from(w) * f64::from(squared_error_row(p, tgt, d, 2.0 * w * grad_scale));
    }
    total
}

multiversion! {
    fn squared_error_row_into(p: &[f32], tgt: &[f32], d: &mut [f32], k: f32, out: &mut f32) {
        let mut acc = [0.0f32; 16];
        let mut i = 0;
        for ((cp, ct), cd) in p.chunks_exact(16).zip(tgt.chunks_exact(16)).zip(d.chunks_exact_mut(16)) {
            for l in 0..16 {
                let e = cp[l] - ct[l];
                acc[l] = fma::<FMA>(e, e, acc[l]);
                cd[l] = k * e;
            }
            i += 16;
        }
        let mut s: f32 = acc.iter().sum();
        for j in i..p.len() {
            let e = p[j] - tgt[j];
            s += e * e;
            d[j] = k * e;
        }
        *out = s;
    }
}

fn squared_error_row(p: &[f32], tgt: &[f32], d: &mut [f32], k: f32) -> f32 {
    let mut out = 0.0;
    squared_error_row_into(p, tgt, d, k, &mut out);
    out
}

/// RoPE tables in the model crate's convention (angles in f64, rounded to f32):
/// `[positions, head_dim/2]` cosines and sines of `p · θ^(−2i/head_dim)`.
pub fn rope_tables(head_dim: usize, positions: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(positions * half);
    let mut sin = Vec::with_capacity(positions * half);
    for p in 0..positions {
        for i in 0..half {
            let angle = p as f64 * theta.powf(-((2 * i) as f64) / head_dim as f64);
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}
