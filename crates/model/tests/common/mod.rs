//! Helpers shared by the model test files: seeded tensors, named variables, and the
//! central-difference gradient check. Each test file uses a subset.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn cpu() -> Device {
    Device::Cpu
}

/// `shape` values drawn uniformly from `[-scale, scale)` with a seeded generator (drawn in
/// f64, then converted to `dtype`).
pub fn uniform(shape: &[usize], seed: u64, scale: f64, dtype: DType) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let data: Vec<f64> = (0..n)
        .map(|_| scale * (2.0 * rng.random::<f64>() - 1.0))
        .collect();
    Tensor::from_vec(data, shape, &cpu())
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// The variables of `varmap`, sorted by name (a deterministic order for seeded refills).
pub fn named_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().unwrap();
    let mut named: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

pub fn count_vars(varmap: &VarMap) -> usize {
    named_vars(varmap).iter().map(|(_, v)| v.elem_count()).sum()
}

/// All values of `t`, flattened, as f64.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    values(a)
        .iter()
        .zip(values(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Checks `checks` coordinates of `var` (drawn by `pick` from `0..range`) against central
/// differences of `loss` with step `h`: `|fd − grad| ≤ 1e-4 · max(|fd|, |grad|, 1e-3)`.
/// `grad` is the analytic gradient of `var`, flattened. The variable is restored after each
/// probe.
#[allow(clippy::too_many_arguments)]
pub fn assert_matches_central_differences(
    name: &str,
    var: &Var,
    grad: &[f64],
    range: usize,
    checks: usize,
    h: f64,
    pick: &mut StdRng,
    loss: &dyn Fn() -> f64,
) {
    let indices: Vec<usize> = (0..checks).map(|_| pick.random_range(0..range)).collect();
    lcm_gradcheck::assert_matches_central_differences(
        name,
        var,
        grad,
        indices,
        h,
        |fd, g| 1e-4 * fd.abs().max(g.abs()).max(1e-3),
        loss,
    );
}
