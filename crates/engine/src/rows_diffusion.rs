//! Row kernels of the Two-Tower denoiser with their backward passes: SiLU, the AdaLN
//! modulation and gated residual (both reading their shift, scale or gate out of the
//! packed `[N, 9d]` modulation rows, so that no slice of it is copied), and the softmax of
//! the shifted-causal cross-attention mask. Compiled per instruction set like
//! [`crate::rows`]; unlike there, every output here is *written*, because none of these
//! destinations is a residual-stream gradient.

use lcm_kernels::multiversion;
use lcm_kernels::simd::{exp, fma, max, sum};

/// Logistic sigmoid through the branch-free `exp`.
#[inline(always)]
fn sigmoid<const F: bool>(x: f32) -> f32 {
    1.0 / (1.0 + exp::<F>(-x))
}

multiversion! {
    /// `y = silu(x) = x·σ(x)`.
    pub fn silu_forward(x: &[f32], y: &mut [f32]) {
        for (yv, &xv) in y.iter_mut().zip(x) {
            *yv = xv * sigmoid::<FMA>(xv);
        }
    }
}

multiversion! {
    /// Backward of [`silu_forward`]: `dx = dy ⊙ σ(x)(1 + x(1 − σ(x)))`.
    pub fn silu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        for ((d, &xv), &dyv) in dx.iter_mut().zip(x).zip(dy) {
            let s = sigmoid::<FMA>(xv);
            *d = dyv * s * fma::<FMA>(xv, 1.0 - s, 1.0);
        }
    }
}

multiversion! {
    /// AdaLN modulation of rows of `width`: `u = x̂ ⊙ (1 + scale) + shift`, where row `r`'s
    /// shift is `m[r·stride + at..][..width]` and its scale the `width` floats after it.
    pub fn modulate_forward(normed: &[f32], m: &[f32], stride: usize, at: usize, width: usize, u: &mut [f32]) {
        for ((xr, ur), mr) in normed.chunks_exact(width).zip(u.chunks_exact_mut(width)).zip(m.chunks_exact(stride)) {
            let (shift, scale) = mr[at..at + 2 * width].split_at(width);
            for (((uv, &xv), &sh), &sc) in ur.iter_mut().zip(xr).zip(shift).zip(scale) {
                *uv = xv * (sc + 1.0) + sh;
            }
        }
    }
}

multiversion! {
    /// Backward of [`modulate_forward`]: `dx̂ = du ⊙ (1 + scale)`, and into the packed
    /// modulation gradient `dshift = du`, `dscale = du ⊙ x̂`.
    #[allow(clippy::too_many_arguments)]
    pub fn modulate_backward(normed: &[f32], m: &[f32], stride: usize, at: usize, width: usize, du: &[f32], dnormed: &mut [f32], dm: &mut [f32]) {
        for ((((xr, dur), dxr), mr), dmr) in normed
            .chunks_exact(width)
            .zip(du.chunks_exact(width))
            .zip(dnormed.chunks_exact_mut(width))
            .zip(m.chunks_exact(stride))
            .zip(dm.chunks_exact_mut(stride))
        {
            let scale = &mr[at + width..at + 2 * width];
            let (dshift, dscale) = dmr[at..at + 2 * width].split_at_mut(width);
            for (((((dx, dsh), dsc), &xv), &dv), &sc) in dxr
                .iter_mut()
                .zip(dshift.iter_mut())
                .zip(dscale.iter_mut())
                .zip(xr)
                .zip(dur)
                .zip(scale)
            {
                *dx = dv * (sc + 1.0);
                *dsh = dv;
                *dsc = dv * xv;
            }
        }
    }
}

multiversion! {
    /// Gated residual over rows of `width`: `y += gate ⊙ o`, row `r`'s gate being
    /// `m[r·stride + at..][..width]`.
    pub fn gated_add(y: &mut [f32], o: &[f32], m: &[f32], stride: usize, at: usize, width: usize) {
        for ((yr, or), mr) in y.chunks_exact_mut(width).zip(o.chunks_exact(width)).zip(m.chunks_exact(stride)) {
            for ((yv, &ov), &gv) in yr.iter_mut().zip(or).zip(&mr[at..at + width]) {
                *yv = fma::<FMA>(gv, ov, *yv);
            }
        }
    }
}

multiversion! {
    /// Backward of [`gated_add`] for the branch: `do = dy ⊙ gate`, and `dgate = dy ⊙ o` into
    /// the packed modulation gradient (`dy` itself passes to `y`'s input unchanged).
    #[allow(clippy::too_many_arguments)]
    pub fn gated_add_backward(dy: &[f32], o: &[f32], m: &[f32], stride: usize, at: usize, width: usize, d_o: &mut [f32], dm: &mut [f32]) {
        for ((((dyr, or), dor), mr), dmr) in dy
            .chunks_exact(width)
            .zip(o.chunks_exact(width))
            .zip(d_o.chunks_exact_mut(width))
            .zip(m.chunks_exact(stride))
            .zip(dm.chunks_exact_mut(stride))
        {
            let gate = &mr[at..at + width];
            let dgate = &mut dmr[at..at + width];
            for ((((dov, dg), &dyv), &ov), &gv) in dor.iter_mut().zip(dgate.iter_mut()).zip(dyr).zip(or).zip(gate) {
                *dov = dyv * gv;
                *dg = dyv * ov;
            }
        }
    }
}

multiversion! {
    /// In place on a `[rows, width]` score block: row `i` becomes `softmax(scale · s)` over
    /// its first `limits[i] + 1` entries (`limits[i] < width`) and exactly 0 after them.
    /// With `limits[i] = i` this is the shifted-causal cross-attention mask; a CFG-dropped
    /// row has limit 0 (the zero key alone).
    pub fn prefix_softmax(scores: &mut [f32], width: usize, limits: &[usize], scale: f32) {
        for (row, &limit) in scores.chunks_exact_mut(width).zip(limits) {
            let (seen, masked) = row.split_at_mut(limit + 1);
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

/// The `Φ/2` frequencies of the DiT timestep sinusoid of width `Φ`, in f64 and by the
/// same expression as `lcm_model::two_tower::timestep_sinusoid`, so that the rounded
/// features agree bit for bit.
pub(crate) fn timestep_frequencies(width: usize) -> Vec<f64> {
    let half = width / 2;
    let max_period: f64 = 10_000.0;
    (0..half)
        .map(|i| (-(max_period.ln()) * i as f64 / half as f64).exp())
        .collect()
}

/// DiT sinusoid features `[cos(t·f) | sin(t·f) | 0 for an odd width]` per row of `width`,
/// computed in f64 and rounded as `lcm_model::two_tower::timestep_sinusoid` does.
pub(crate) fn timestep_features(timesteps: &[usize], freqs: &[f64], width: usize, out: &mut [f32]) {
    let half = freqs.len();
    for (row, &step) in out.chunks_exact_mut(width).zip(timesteps) {
        let (cos, rest) = row.split_at_mut(half);
        let (sin, tail) = rest.split_at_mut(half);
        for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(freqs) {
            let arg = step as f64 * f;
            *c = arg.cos() as f32;
            *s = arg.sin() as f32;
        }
        tail.fill(0.0);
    }
}
