//! Instruction fine-tuning's prompt mask (`first_target`) in the fused engine: the target of
//! a masked (prompt) position changes neither the loss nor any gradient; the target of an
//! answer position changes both. Two-Tower and One-Tower take the target as its own array,
//! so it can be changed without touching the inputs.

mod common;

use common::uniform;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use lcm_engine::one_tower::OneTowerBatch;
use lcm_engine::two_tower::TwoTowerBatch;
use lcm_engine::{OneTowerEngine, TwoTowerEngine};
use lcm_model::one_tower::OneTowerLcm;
use lcm_model::presets::{one_tower_tiny, two_tower_tiny};
use lcm_model::two_tower::TwoTowerLcm;
use rand::SeedableRng;
use rand::rngs::StdRng;

const B: usize = 3;
const T: usize = 7;
const LENGTHS: [usize; B] = [7, 5, 6];
const FIRST: [usize; B] = [3, 2, 0];

struct Data {
    x0: Vec<f32>,
    noisy: Vec<f32>,
    target: Vec<f32>,
    timesteps: Vec<usize>,
}

fn data(dd: usize) -> Data {
    let mut rng = StdRng::seed_from_u64(4);
    let n = B * T * dd;
    Data {
        x0: uniform(&mut rng, n, 1.0),
        noisy: uniform(&mut rng, n, 1.0),
        target: uniform(&mut rng, n, 1.0),
        timesteps: (0..B * T).map(|i| (i * 37) % 100).collect(),
    }
}

/// Loss and gradients with the target of `(row, pos)` shifted by 0.5 (none: unchanged).
type Run<'a> = dyn FnMut(&[f32]) -> (f64, f64, Vec<f32>) + 'a;

fn check(dd: usize, run: &mut Run<'_>, base: &[f32]) {
    let (sum0, count0, grad0) = run(base);
    assert_eq!(
        count0 as usize,
        (0..B).map(|b| LENGTHS[b] - FIRST[b]).sum::<usize>()
    );
    let shifted = |row: usize, pos: usize| {
        let mut t = base.to_vec();
        for v in &mut t[(row * T + pos) * dd..][..dd] {
            *v += 0.5;
        }
        t
    };
    // Prompt positions (before the first target): nothing changes, bit for bit.
    for (row, pos) in [(0, 0), (0, 2), (1, 1)] {
        let (sum, count, grad) = run(&shifted(row, pos));
        assert_eq!((sum, count), (sum0, count0), "prompt target ({row}, {pos})");
        assert_eq!(grad, grad0, "prompt target ({row}, {pos})");
    }
    // Answer positions: the loss and the gradients move.
    for (row, pos) in [(0, 3), (1, 4), (2, 0)] {
        let (sum, count, grad) = run(&shifted(row, pos));
        assert_eq!(count, count0);
        assert_ne!(sum, sum0, "answer target ({row}, {pos})");
        assert_ne!(grad, grad0, "answer target ({row}, {pos})");
    }
}

#[test]
fn two_tower_prompt_targets_are_out_of_the_loss() {
    let cfg = two_tower_tiny();
    let varmap = VarMap::new();
    let _model = TwoTowerLcm::new(
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    common::randomize(&varmap, 3, 1.0);
    let mut engine = TwoTowerEngine::new(&cfg, &varmap).unwrap();
    let d = data(cfg.input_dim);
    let mut run = |target: &[f32]| {
        let batch = TwoTowerBatch {
            x0: &d.x0,
            noisy: &d.noisy,
            target,
            timesteps: &d.timesteps,
            dropped_rows: &[],
            batch: B,
            time: T,
            lengths: &LENGTHS,
            first_target: &FIRST,
        };
        let loss = engine.loss_and_gradients(&batch).unwrap();
        (loss.sum, loss.count, engine.gradients().to_vec())
    };
    check(cfg.input_dim, &mut run, &d.target);
}

#[test]
fn one_tower_prompt_targets_are_out_of_the_loss() {
    let cfg = one_tower_tiny();
    let varmap = VarMap::new();
    let _model = OneTowerLcm::new(
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    common::randomize(&varmap, 3, 1.0);
    let mut engine = OneTowerEngine::new(&cfg, &varmap).unwrap();
    let d = data(cfg.input_dim);
    let mut run = |target: &[f32]| {
        let batch = OneTowerBatch {
            x0: &d.x0,
            noisy: &d.noisy,
            target,
            timesteps: &d.timesteps,
            dropped_rows: &[],
            batch: B,
            time: T,
            lengths: &LENGTHS,
            first_target: &FIRST,
        };
        let loss = engine.loss_and_gradients(&batch).unwrap();
        (loss.sum, loss.count, engine.gradients().to_vec())
    };
    check(cfg.input_dim, &mut run, &d.target);
}
