//! Vector math on `f32` slices.
//!
//! Two precisions on purpose: [`cosine`] accumulates in `f64` (metrics and reports, where
//! the last digits are printed), [`cosine_f32`] in `f32` (planners scoring thousands of
//! candidates, whose outputs are pinned by tests and must not drift).

/// `Σ aᵢ bᵢ` in `f32`.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `‖v‖₂` in `f32`.
pub fn norm(v: &[f32]) -> f32 {
    dot(v, v).sqrt()
}

/// Cosine similarity accumulated in `f32`; 0 when either vector is zero (no direction, no
/// similarity).
pub fn cosine_f32(a: &[f32], b: &[f32]) -> f32 {
    let na = norm(a);
    let nb = norm(b);
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot(a, b) / (na * nb)
    }
}

/// Cosine similarity accumulated in `f64`; 0 when either vector is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&p, &q) in a.iter().zip(b) {
        let (p, q) = (f64::from(p), f64::from(q));
        ab += p * q;
        aa += p * p;
        bb += q * q;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// Squared Euclidean distance accumulated in `f64`.
pub fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x) - f64::from(y);
            d * d
        })
        .sum()
}
