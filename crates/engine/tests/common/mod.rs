//! Helpers the engine's parity tests share: seeded random weights and the comparison
//! measure every test reports.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn uniform(rng: &mut StdRng, n: usize, a: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-a..a)).collect()
}

/// Gives every parameter of `varmap` seeded random values, in name order: uniform in
/// `±scale/√fan_in`, norm gains shifted to around 1, so that no path through the model is
/// zero.
pub fn randomize(varmap: &VarMap, seed: u64, scale: f32) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut named: Vec<_> = varmap
        .data()
        .lock()
        .expect("varmap")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, var) in named {
        let fan_in = *var.dims().last().unwrap_or(&1) as f32;
        let mut values = uniform(&mut rng, var.elem_count(), scale / fan_in.sqrt());
        if name.ends_with("norm.weight") {
            values.iter_mut().for_each(|v| *v += 1.0);
        }
        let t = Tensor::from_vec(values, var.dims(), &Device::Cpu).expect("tensor");
        var.set(&t).expect("set");
    }
}

pub fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1())
        .expect("tensor values")
}

pub fn max_abs(v: &[f32]) -> f64 {
    v.iter().fold(0.0f64, |m, &x| m.max(f64::from(x).abs()))
}

/// Largest `|got − want|` over the largest `|want|` (the plain difference when `want` is
/// all zeros).
pub fn relative_difference(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "compared buffers differ in length");
    let scale = max_abs(want);
    let diff = got.iter().zip(want).fold(0.0f64, |m, (&a, &b)| {
        m.max((f64::from(a) - f64::from(b)).abs())
    });
    if scale == 0.0 { diff } else { diff / scale }
}
