//! Finite-difference gradient checks for tests: every op used in training must pass
//! gradients (candle's fused kernels silently pass none), and this is how the workspace
//! proves it, once, for every crate that trains something (`lcm-model`, `lcm-sonar`,
//! `lcm-plan`).
//!
//! Only a dev-dependency: the helpers panic with the variable, the element and both
//! values, which is what a failing test should report. Variables are expected in `f64`
//! (central differences in `f32` are too coarse to tell a wrong gradient from rounding).

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

/// All values of `t`, flattened, as `f64`.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .expect("tensor values as f64")
}

/// The backprop gradient of `var` in `grads`, flattened; panics naming `name` when the
/// variable received no gradient (the symptom of a non-differentiable op).
pub fn gradient(grads: &GradStore, var: &Var, name: &str) -> Vec<f64> {
    let g = grads
        .get(var.as_tensor())
        .unwrap_or_else(|| panic!("no gradient for {name}"));
    values(g)
}

/// `(loss(x + h·eₖ) − loss(x − h·eₖ)) / 2h` for element `index` of `var`; the variable is
/// restored afterwards.
pub fn central_difference(var: &Var, index: usize, h: f64, loss: &dyn Fn() -> f64) -> f64 {
    let orig = values(var.as_tensor());
    let set = |p: Vec<f64>| {
        let t = Tensor::from_vec(p, var.dims(), var.device())
            .and_then(|t| t.to_dtype(var.dtype()))
            .expect("perturbed tensor");
        var.set(&t).expect("set perturbed variable");
    };
    let mut p = orig.clone();
    p[index] = orig[index] + h;
    set(p.clone());
    let up = loss();
    p[index] = orig[index] - h;
    set(p);
    let down = loss();
    set(orig);
    (up - down) / (2.0 * h)
}

/// Asserts `|fd − grad[k]| ≤ tolerance(fd, grad[k])` for every `k` of `indices`, where `fd`
/// is the [`central_difference`] with step `h` and `grad` the flattened backprop gradient
/// of `var`. Returns the largest `|grad[k]|` seen, so callers can also refuse an all-zero
/// gradient.
pub fn assert_matches_central_differences(
    name: &str,
    var: &Var,
    grad: &[f64],
    indices: impl IntoIterator<Item = usize>,
    h: f64,
    tolerance: impl Fn(f64, f64) -> f64,
    loss: &dyn Fn() -> f64,
) -> f64 {
    let mut largest = 0f64;
    for k in indices {
        let fd = central_difference(var, k, h, loss);
        let tol = tolerance(fd, grad[k]);
        assert!(
            (fd - grad[k]).abs() <= tol,
            "{name}[{k}]: backprop {} vs central difference {fd}",
            grad[k]
        );
        largest = largest.max(grad[k].abs());
    }
    largest
}
