//! The fused inference denoiser against candle's `TwoTowerLcm::predict` (the reference):
//! conditional rows with a context, unconditional rows without, and rows with contexts of
//! different lengths in one call, agree to a relative 1e-5 (max-abs difference over max-abs
//! reference) on the tiny and small presets, with and without biases, below and above the
//! few-rows product threshold.

mod common;

use common::{flat, relative_difference};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_engine::{EngineError, TwoTowerDenoiser};
use lcm_model::presets::{two_tower_small, two_tower_tiny};
use lcm_model::two_tower::{TwoTowerConfig, TwoTowerLcm, standard_normal};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Every parameter seeded-random, the zero-initialised modulators included (zero gates
/// would make every denoiser layer the identity).
fn random_model(cfg: &TwoTowerConfig, seed: u64) -> TwoTowerLcm {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = TwoTowerLcm::new(cfg, vb).expect("model");
    common::randomize(&varmap, seed, 1.0);
    model
}

/// Contextualised concepts `[N, d]` of `n` random concepts (`None` for `n = 0`).
fn context(model: &TwoTowerLcm, n: usize, rng: &mut StdRng) -> Option<Tensor> {
    (n > 0).then(|| {
        let x = standard_normal(
            &[1, n, model.config.input_dim],
            rng,
            DType::F32,
            &Device::Cpu,
        )
        .expect("x");
        model
            .encode(&x, None)
            .expect("encode")
            .squeeze(0)
            .expect("[N, d]")
    })
}

/// Rows with `lengths[r]` context concepts each (0: unconditional), denoised at every
/// timestep of `timesteps` by both sides; returns the worst relative difference.
fn check(cfg: &TwoTowerConfig, lengths: &[usize], timesteps: &[usize], seed: u64) -> f64 {
    let model = random_model(cfg, seed);
    let mut rng = StdRng::seed_from_u64(seed + 1);
    let contexts: Vec<Option<Tensor>> = lengths
        .iter()
        .map(|&n| context(&model, n, &mut rng))
        .collect();
    let context_rows: Vec<Option<Vec<f32>>> =
        contexts.iter().map(|c| c.as_ref().map(flat)).collect();
    let refs: Vec<Option<&[f32]>> = context_rows.iter().map(|c| c.as_deref()).collect();
    let mut den = TwoTowerDenoiser::from_model(&model).expect("denoiser");
    den.set_context(&refs).expect("set_context");
    assert_eq!(den.rows(), lengths.len());
    let dd = cfg.input_dim;
    let mut worst = 0f64;
    for &t in timesteps {
        let noisy = standard_normal(&[lengths.len(), 1, dd], &mut rng, DType::F32, &Device::Cpu)
            .expect("noisy");
        let mut out = vec![0f32; lengths.len() * dd];
        den.denoise(&flat(&noisy), t, &mut out).expect("denoise");
        for (r, c) in contexts.iter().enumerate() {
            let row = noisy.narrow(0, r, 1).expect("row");
            let want = model
                .predict(
                    &row,
                    t,
                    c.as_ref()
                        .map(|c| c.unsqueeze(0).expect("[1, N, d]"))
                        .as_ref(),
                )
                .expect("predict");
            let rel = relative_difference(&out[r * dd..(r + 1) * dd], &flat(&want));
            assert!(
                rel <= 1e-5,
                "row {r} (context {}) at t = {t}: relative difference {rel:e}",
                lengths[r]
            );
            worst = worst.max(rel);
        }
    }
    eprintln!("lengths {lengths:?}: worst relative difference {worst:e}");
    worst
}

#[test]
fn tiny_cond_and_uncond_rows_match_predict() {
    check(&two_tower_tiny(), &[5, 0], &[0, 1, 250, 500, 999], 1);
}

#[test]
fn rows_with_contexts_of_different_lengths_match_predict() {
    check(&two_tower_tiny(), &[3, 7, 0, 1, 0], &[13, 640, 998], 2);
}

#[test]
fn tiny_without_biases_matches_predict() {
    let mut cfg = two_tower_tiny();
    cfg.bias = false;
    cfg.n_denoiser_layers = 3;
    cfg.timestep_freq_dim = 15;
    check(&cfg, &[4, 0], &[7, 500], 3);
}

#[test]
fn more_rows_than_the_few_rows_threshold_match_predict() {
    let lengths: Vec<usize> = (0..20).map(|i| i % 6).collect();
    check(&two_tower_tiny(), &lengths, &[321], 4);
}

#[test]
fn small_cond_and_uncond_rows_match_predict() {
    check(&two_tower_small(), &[16, 0], &[999, 500, 24], 5);
}

#[test]
fn the_context_is_reused_and_replaced() {
    let cfg = two_tower_tiny();
    let model = random_model(&cfg, 6);
    let mut rng = StdRng::seed_from_u64(7);
    let a = flat(&context(&model, 4, &mut rng).expect("context"));
    let b = flat(&context(&model, 2, &mut rng).expect("context"));
    let dd = cfg.input_dim;
    let noisy = flat(&standard_normal(&[1, 1, dd], &mut rng, DType::F32, &Device::Cpu).expect("x"));
    let mut den = TwoTowerDenoiser::from_model(&model).expect("denoiser");
    let run = |den: &mut TwoTowerDenoiser, t| {
        let mut out = vec![0f32; dd];
        den.denoise(&noisy, t, &mut out).expect("denoise");
        out
    };
    den.set_context(&[Some(&a)]).expect("a");
    let first = run(&mut den, 100);
    let _ = run(&mut den, 900);
    assert_eq!(
        run(&mut den, 100),
        first,
        "a later step changed nothing it keeps"
    );
    den.set_context(&[Some(&b)]).expect("b");
    let other = run(&mut den, 100);
    assert_ne!(other, first, "a new context changes the output");
    den.set_context(&[Some(&a)]).expect("a again");
    assert_eq!(run(&mut den, 100), first);
    // An empty context is the zero key alone, as `None`.
    den.set_context(&[Some(&[])]).expect("empty");
    let empty = run(&mut den, 100);
    den.set_context(&[None]).expect("none");
    assert_eq!(run(&mut den, 100), empty);
}

#[test]
fn bad_shapes_are_refused() {
    let cfg = two_tower_tiny();
    let model = random_model(&cfg, 8);
    let mut den = TwoTowerDenoiser::from_model(&model).expect("denoiser");
    let dd = cfg.input_dim;
    let mut out = vec![0f32; dd];
    assert!(matches!(
        den.denoise(&vec![0.0; dd], 10, &mut out),
        Err(EngineError::Shape(_))
    ));
    let ragged = vec![0.0; cfg.d_model + 1];
    assert!(matches!(
        den.set_context(&[Some(&ragged)]),
        Err(EngineError::Shape(_))
    ));
    den.set_context(&[None, None]).expect("two rows");
    assert!(matches!(
        den.denoise(&vec![0.0; dd], 10, &mut out),
        Err(EngineError::Shape(_))
    ));
}
