//! Row kernels of the SONAR-architecture decoder with their backward passes: LayerNorm
//! with gain and bias, ReLU, the scaled token-embedding gather and its scatter-add, and the
//! label-smoothed cross-entropy of one logit row. Compiled per instruction set like
//! [`crate::rows`]; the LayerNorm backward *adds* its input gradient (a residual-stream
//! gradient), every other kernel writes its output.

use lcm_kernels::multiversion;
use lcm_kernels::simd::{exp, fma, max, sum, sum_sq_dev};

multiversion! {
    /// `y = (x − μ)·rstd ⊙ gain + bias` per row of `gain.len()`, with `μ = mean(x)` and
    /// `rstd = 1/√(mean((x − μ)²) + eps)` (biased variance) saved for the backward pass.
    pub fn layer_norm_forward(x: &[f32], gain: &[f32], bias: &[f32], eps: f32, y: &mut [f32], mean: &mut [f32], rstd: &mut [f32]) {
        let width = gain.len();
        for (((xr, yr), mu), r) in x
            .chunks_exact(width)
            .zip(y.chunks_exact_mut(width))
            .zip(mean.iter_mut())
            .zip(rstd.iter_mut())
        {
            let m = sum(xr) / width as f32;
            let rs = 1.0 / (sum_sq_dev(xr, m) / width as f32 + eps).sqrt();
            *mu = m;
            *r = rs;
            for (((yv, &xv), &g), &b) in yr.iter_mut().zip(xr).zip(gain).zip(bias) {
                *yv = fma::<FMA>((xv - m) * rs, g, b);
            }
        }
    }
}

multiversion! {
    /// Recomputes [`layer_norm_forward`]'s output from the saved `mean` and `rstd`.
    pub fn layer_norm_apply(x: &[f32], gain: &[f32], bias: &[f32], mean: &[f32], rstd: &[f32], y: &mut [f32]) {
        let width = gain.len();
        for (((xr, yr), &m), &rs) in x.chunks_exact(width).zip(y.chunks_exact_mut(width)).zip(mean).zip(rstd) {
            for (((yv, &xv), &g), &b) in yr.iter_mut().zip(xr).zip(gain).zip(bias) {
                *yv = fma::<FMA>((xv - m) * rs, g, b);
            }
        }
    }
}

multiversion! {
    /// Backward of [`layer_norm_forward`]: with `x̂ = (x − μ)·rstd` and `u = dy ⊙ gain`,
    /// `dx += rstd·(u − mean(u) − x̂·mean(u ⊙ x̂))`, `dgain += Σ_rows dy ⊙ x̂` and
    /// `dbias += Σ_rows dy`.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm_backward(x: &[f32], gain: &[f32], mean: &[f32], rstd: &[f32], dy: &[f32], dx: &mut [f32], dgain: &mut [f32], dbias: &mut [f32]) {
        let width = gain.len();
        let inv_w = 1.0 / width as f32;
        for ((((xr, dyr), dxr), &m), &rs) in x
            .chunks_exact(width)
            .zip(dy.chunks_exact(width))
            .zip(dx.chunks_exact_mut(width))
            .zip(mean)
            .zip(rstd)
        {
            let mut acc_u = [0.0f32; 16];
            let mut acc_ux = [0.0f32; 16];
            let mut i = 0;
            for ((c_x, c_dy), c_g) in xr.chunks_exact(16).zip(dyr.chunks_exact(16)).zip(gain.chunks_exact(16)) {
                for l in 0..16 {
                    let u = c_dy[l] * c_g[l];
                    acc_u[l] += u;
                    acc_ux[l] = fma::<FMA>(u, (c_x[l] - m) * rs, acc_ux[l]);
                }
                i += 16;
            }
            let mut su: f32 = acc_u.iter().sum();
            let mut sux: f32 = acc_ux.iter().sum();
            for j in i..width {
                let u = dyr[j] * gain[j];
                su += u;
                sux += u * (xr[j] - m) * rs;
            }
            let (mean_u, mean_ux) = (su * inv_w, sux * inv_w);
            for (((((d, &xv), &dyv), &g), dg), db) in dxr
                .iter_mut()
                .zip(xr)
                .zip(dyr)
                .zip(gain)
                .zip(dgain.iter_mut())
                .zip(dbias.iter_mut())
            {
                let xhat = (xv - m) * rs;
                *d += rs * (dyv * g - mean_u - xhat * mean_ux);
                *dg = fma::<FMA>(dyv, xhat, *dg);
                *db += dyv;
            }
        }
    }
}

multiversion! {
    /// `act = max(pre, 0)`.
    pub fn relu_forward(pre: &[f32], act: &mut [f32]) {
        for (a, &p) in act.iter_mut().zip(pre) {
            *a = p.max(0.0);
        }
    }
}

multiversion! {
    /// Backward of [`relu_forward`]: `dpre = dact ⊙ [pre ≥ 0]` (written). The derivative at
    /// 0 is taken as 1, as candle's backward does.
    pub fn relu_backward(pre: &[f32], dact: &[f32], dpre: &mut [f32]) {
        for ((d, &p), &g) in dpre.iter_mut().zip(pre).zip(dact) {
            *d = if p >= 0.0 { g } else { 0.0 };
        }
    }
}

/// The fairseq1 frontend over rows of `width`: row `r` of `x` is
/// `scale · table[ids[r]] + positions[r % period]`.
pub fn embed_forward(
    ids: &[u32],
    table: &[f32],
    positions: &[f32],
    period: usize,
    scale: f32,
    x: &mut [f32],
) {
    let width = positions.len() / period.max(1);
    for (r, (row, &id)) in x.chunks_exact_mut(width).zip(ids).enumerate() {
        let e = &table[id as usize * width..][..width];
        let p = &positions[(r % period) * width..][..width];
        scaled_add_rows(e, p, scale, row);
    }
}

multiversion! {
    /// `y = scale · e + p`.
    fn scaled_add_rows(e: &[f32], p: &[f32], scale: f32, y: &mut [f32]) {
        for ((yv, &ev), &pv) in y.iter_mut().zip(e).zip(p) {
            *yv = fma::<FMA>(ev, scale, pv);
        }
    }
}

/// Backward of [`embed_forward`] into the embedding table's gradient:
/// `dtable[ids[r]] += scale · dx[r]` (a token seen twice accumulates twice).
pub fn embed_backward(ids: &[u32], dx: &[f32], scale: f32, dtable: &mut [f32]) {
    let width = dx.len() / ids.len().max(1);
    for (row, &id) in dx.chunks_exact(width).zip(ids) {
        scaled_accumulate(row, scale, &mut dtable[id as usize * width..][..width]);
    }
}

multiversion! {
    /// `acc += scale · x`.
    fn scaled_accumulate(x: &[f32], scale: f32, acc: &mut [f32]) {
        for (a, &v) in acc.iter_mut().zip(x) {
            *a = fma::<FMA>(v, scale, *a);
        }
    }
}

multiversion! {
    /// Label-smoothed cross-entropy of one logit row `z` (length `V`) against class `gold`:
    /// `ℓ = lse(z) − (1 − ε)·z_gold − ε·mean(z)`, the mix of the negative log-likelihood
    /// `lse(z) − z_gold` and the uniform-target term `−mean(log_softmax(z))`. Overwrites `z`
    /// with `grad_scale · ∂ℓ/∂z = grad_scale · (softmax(z) − (1 − ε)·onehot(gold) − ε/V)` and
    /// writes `out = [ℓ, nll]`.
    pub fn smoothed_cross_entropy_row(z: &mut [f32], gold: usize, smoothing: f32, grad_scale: f32, out: &mut [f32]) {
        let v = z.len() as f32;
        let m = max(z);
        let mean_z = sum(z) / v;
        let z_gold = z[gold];
        for e in z.iter_mut() {
            *e = exp::<FMA>(*e - m);
        }
        let s = sum(z);
        let lse = m + s.ln();
        let nll = lse - z_gold;
        out[0] = (1.0 - smoothing) * nll + smoothing * (lse - mean_z);
        out[1] = nll;
        let k = grad_scale / s;
        let floor = grad_scale * smoothing / v;
        for e in z.iter_mut() {
            *e = fma::<FMA>(*e, k, -floor);
        }
        z[gold] -= grad_scale * (1.0 - smoothing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f64 reference of the LayerNorm forward and backward on one row.
    fn reference(x: &[f32], g: &[f32], b: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let n = x.len() as f64;
        let x: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let m = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n;
        let rs = 1.0 / (var + 1e-5).sqrt();
        let xhat: Vec<f64> = x.iter().map(|v| (v - m) * rs).collect();
        let y = xhat
            .iter()
            .zip(g)
            .zip(b)
            .map(|((xh, &g), &b)| xh * f64::from(g) + f64::from(b))
            .collect();
        let u: Vec<f64> = dy.iter().zip(g).map(|(&d, &g)| f64::from(d * g)).collect();
        let mu = u.iter().sum::<f64>() / n;
        let mux = u.iter().zip(&xhat).map(|(u, xh)| u * xh).sum::<f64>() / n;
        let dx = u
            .iter()
            .zip(&xhat)
            .map(|(u, xh)| rs * (u - mu - xh * mux))
            .collect();
        (y, dx)
    }

    #[test]
    fn layer_norm_matches_an_f64_reference_on_ragged_widths() {
        for width in [1usize, 7, 16, 37] {
            let x: Vec<f32> = (0..width)
                .map(|i| (i as f32 * 0.71).sin() * 3.0 + 0.5)
                .collect();
            let g: Vec<f32> = (0..width).map(|i| 1.0 + 0.1 * (i as f32).cos()).collect();
            let b: Vec<f32> = (0..width).map(|i| 0.05 * i as f32).collect();
            let dy: Vec<f32> = (0..width).map(|i| (i as f32 * 0.3).cos()).collect();
            let (want_y, want_dx) = reference(&x, &g, &b, &dy);
            let (mut y, mut mean, mut rstd) = (vec![0.0; width], [0.0], [0.0]);
            layer_norm_forward(&x, &g, &b, 1e-5, &mut y, &mut mean, &mut rstd);
            let mut dx = vec![1.0; width];
            let (mut dg, mut db) = (vec![0.0; width], vec![0.0; width]);
            layer_norm_backward(&x, &g, &mean, &rstd, &dy, &mut dx, &mut dg, &mut db);
            for i in 0..width {
                assert!(
                    (f64::from(y[i]) - want_y[i]).abs() < 1e-5,
                    "y[{i}] width {width}"
                );
                // dx was 1 before: the kernel adds.
                assert!(
                    (f64::from(dx[i]) - 1.0 - want_dx[i]).abs() < 1e-4,
                    "dx[{i}] width {width}: {} vs {}",
                    dx[i] - 1.0,
                    want_dx[i]
                );
                assert_eq!(db[i], dy[i]);
            }
        }
    }

    #[test]
    fn cross_entropy_row_gradient_sums_to_zero_and_loss_matches() {
        let z0: Vec<f32> = (0..23).map(|i| (i as f32 * 1.3).sin() * 4.0).collect();
        let (gold, eps) = (5usize, 0.1f32);
        let mut z = z0.clone();
        let mut out = [0.0f32; 2];
        smoothed_cross_entropy_row(&mut z, gold, eps, 1.0, &mut out);
        let zd: Vec<f64> = z0.iter().map(|&v| f64::from(v)).collect();
        let lse = zd.iter().map(|v| v.exp()).sum::<f64>().ln();
        let lsm: Vec<f64> = zd.iter().map(|v| v - lse).collect();
        let want = -(1.0 - 0.1) * lsm[gold] - 0.1 * lsm.iter().sum::<f64>() / lsm.len() as f64;
        assert!(
            (f64::from(out[0]) - want).abs() < 1e-5,
            "{} vs {want}",
            out[0]
        );
        assert!((f64::from(out[1]) + lsm[gold]).abs() < 1e-5);
        let total: f32 = z.iter().sum();
        assert!(total.abs() < 1e-5, "gradient sums to {total}");
    }
}
