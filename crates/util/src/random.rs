//! Seeded standard-normal draws by the Box–Muller transform.
//!
//! Every seeded normal in the workspace comes from here, so one seed means the same
//! numbers in every crate. `1 − U` lies in `(0, 1]`, so the logarithm is always finite.

use rand::Rng;

/// One standard normal draw from two uniforms; the sine half of the pair is discarded,
/// which keeps the stream position simple (two uniforms per draw).
pub fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `n` standard normal draws using both halves of each Box–Muller pair (two uniforms per
/// two draws; for odd `n` the last sine is discarded).
pub fn standard_normals<R: Rng + ?Sized>(rng: &mut R, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        out.push(r * theta.cos());
        out.push(r * theta.sin());
    }
    out.truncate(n);
    out
}
