//! JEPA world model: gradients of every training op against central differences, the
//! VICReg terms and collapse diagnostics on known inputs, batched rollouts against the
//! one-step predictor, the host probe against the tensor probe, and training (loss falls,
//! bit-identical resume, detached loading).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use lcm_plan::world::WorldModel;
use lcm_plan::world::jepa::{
    Jepa, JepaConfig, JepaLossConfig, ObservationKind, collapse_stats, covariance_loss, jepa_loss,
    seeded_init, symmetric_eigenvalues, variance_loss,
};
use lcm_plan::world::learned::{HostProbe, LearnedWorld, probe_tensor};
use lcm_plan::world::load::load_world_model;
use lcm_plan::world::train::{DatasetSpec, WmTrainConfig, train_world_model};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

fn uniform(rng: &mut ChaCha12Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

fn tensor(rng: &mut ChaCha12Rng, shape: &[usize], lo: f64, hi: f64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(uniform(rng, n, lo, hi), shape, &Device::Cpu).unwrap()
}

/// Compares backprop gradients of `loss` with central differences on a sample of elements
/// of every variable (f64, step 1e-5).
fn assert_gradients(varmap: &VarMap, loss: impl Fn() -> Tensor, samples: usize) {
    assert_gradients_of(varmap, |_| true, loss, samples)
}

fn assert_gradients_of(
    varmap: &VarMap,
    select: impl Fn(&str) -> bool,
    loss: impl Fn() -> Tensor,
    samples: usize,
) {
    let grads = loss().backward().unwrap();
    let mut vars: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| select(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rng = ChaCha12Rng::seed_from_u64(7);
    let scalar_loss = || loss().to_scalar::<f64>().unwrap();
    let mut checked = 0;
    for (name, var) in vars {
        let g = lcm_gradcheck::gradient(&grads, &var, &name);
        let indices: Vec<usize> = (0..samples.min(g.len()))
            .map(|_| rng.random_range(0..g.len()))
            .collect();
        checked += indices.len();
        lcm_gradcheck::assert_matches_central_differences(
            &name,
            &var,
            &g,
            indices,
            1e-5,
            |fd, g| 1e-6 + 1e-4 * fd.abs().max(g.abs()),
            &scalar_loss,
        );
    }
    assert!(checked > 0);
}

fn tiny_config(observation: ObservationKind) -> JepaConfig {
    JepaConfig {
        observation,
        latent_dim: 4,
        hidden_dim: 8,
        action_dim: 2,
        action_scale: 2.45,
        state_shift: 32.0,
        state_scale: 32.0,
        conv_channels: [2, 3, 3],
        probe_dim: 2,
    }
}

fn check_model_gradients(observation: ObservationKind) {
    let cfg = tiny_config(observation);
    let varmap = VarMap::new();
    let model = Jepa::new(
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu),
    )
    .unwrap();
    // Random biases too: with the zero-bias init some ReLUs sit exactly at their kink for a
    // dead input, where a central difference measures half a derivative.
    let mut rng = ChaCha12Rng::seed_from_u64(1);
    for var in varmap.all_vars() {
        let fresh = tensor(&mut rng, var.dims(), -0.5, 0.5);
        var.set(&fresh).unwrap();
    }
    let (b, h) = (6, 3);
    let (obs_lo, obs_hi) = match observation {
        ObservationKind::State { .. } => (4.0, 60.0),
        ObservationKind::Pixels { .. } => (0.0, 1.0),
    };
    let obs = tensor(&mut rng, &[b, h + 1, observation.len()], obs_lo, obs_hi);
    let actions = tensor(&mut rng, &[b, h, 2], -2.0, 2.0);
    let states = tensor(&mut rng, &[b, h + 1, 2], 4.0, 60.0);
    // The world-model terms: every encoder and predictor weight (the probe is not in them).
    let world_terms = JepaLossConfig {
        rollout_steps: h,
        std_weight: 1.0,
        cov_weight: 1.0,
        probe_weight: 0.0,
    };
    assert_gradients_of(
        &varmap,
        |name| !name.starts_with("probe"),
        || {
            jepa_loss(&model, &obs, &actions, &states, &world_terms)
                .unwrap()
                .total
        },
        6,
    );
    // The probe term alone: its own weights get exact gradients and, through the stop-gradient,
    // the encoder gets none although the term does depend on it.
    let probe_only = || {
        jepa_loss(&model, &obs, &actions, &states, &world_terms)
            .unwrap()
            .probe
    };
    assert_gradients_of(&varmap, |name| name.starts_with("probe"), probe_only, 6);
    let grads = probe_only().backward().unwrap();
    for (name, var) in varmap.data().lock().unwrap().iter() {
        if name.starts_with("encoder") {
            assert!(
                grads.get(var.as_tensor()).is_none(),
                "{name} receives a probe gradient"
            );
        }
    }
}

#[test]
fn state_model_gradients_match_central_differences() {
    check_model_gradients(ObservationKind::State { dim: 2 });
}

#[test]
fn pixel_model_gradients_match_central_differences() {
    // 20×20 leaves a 1×1 map after the three stride-2 convolutions.
    check_model_gradients(ObservationKind::Pixels {
        channels: 2,
        height: 20,
        width: 20,
    });
}

#[test]
fn vicreg_terms_gradients_match_central_differences() {
    let varmap = VarMap::new();
    let mut rng = ChaCha12Rng::seed_from_u64(2);
    // Small spread, so the variance hinge is active on every dimension.
    let init = tensor(&mut rng, &[7, 3], -0.5, 0.5);
    let z = varmap
        .get(
            (7, 3),
            "z",
            candle_nn::Init::Const(0.0),
            DType::F64,
            &Device::Cpu,
        )
        .unwrap();
    varmap.data().lock().unwrap()["z"].set(&init).unwrap();
    assert_gradients(&varmap, || variance_loss(&z).unwrap(), 21);
    assert_gradients(&varmap, || covariance_loss(&z).unwrap(), 21);
}

#[test]
fn variance_and_covariance_terms_on_known_inputs() {
    let dev = Device::Cpu;
    // Columns with sample std 2 (values ±2 alternating... plus a shifted copy) pay no hinge.
    let spread = Tensor::new(&[[2.0f64, 0.0], [-2.0, 0.0], [2.0, 0.0], [-2.0, 0.0]], &dev).unwrap();
    // Column 0: unbiased var = 16/3, std 2.31 → hinge 0. Column 1: constant → 1 − sqrt(1e-4).
    let v = variance_loss(&spread).unwrap().to_scalar::<f64>().unwrap();
    assert!((v - (1.0 - 0.01) / 2.0).abs() < 1e-9, "{v}");
    // Perfectly correlated columns: C = [[s, s], [s, s]], off-diagonal squares 2s², /L=2.
    let corr = Tensor::new(&[[1.0f64, 1.0], [-1.0, -1.0], [3.0, 3.0]], &dev).unwrap();
    let s = (1.0f64 + 1.0 + 9.0 - 3.0 * 1.0) / 2.0; // unbiased variance around mean 1
    let c = covariance_loss(&corr).unwrap().to_scalar::<f64>().unwrap();
    assert!((c - s * s).abs() < 1e-9, "{c} vs {}", s * s);
    // Uncorrelated (orthogonal centred) columns: no covariance penalty.
    let orth = Tensor::new(
        &[[1.0f64, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]],
        &dev,
    )
    .unwrap();
    assert!(
        covariance_loss(&orth)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            .abs()
            < 1e-12
    );
}

#[test]
fn eigenvalues_and_effective_rank() {
    let mut e = symmetric_eigenvalues(&[2.0, 1.0, 1.0, 2.0], 2);
    e.sort_by(f64::total_cmp);
    assert!(
        (e[0] - 1.0).abs() < 1e-12 && (e[1] - 3.0).abs() < 1e-12,
        "{e:?}"
    );
    // A 3×3 with known spectrum {1, 2, 4}: Q diag Qᵀ for a rotation Q.
    let (c, s) = (0.6f64, 0.8f64);
    let q = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
    let d = [1.0, 2.0, 4.0];
    let mut a = vec![0.0; 9];
    for i in 0..3 {
        for j in 0..3 {
            a[i * 3 + j] = (0..3).map(|k| q[i][k] * d[k] * q[j][k]).sum();
        }
    }
    let mut e = symmetric_eigenvalues(&a, 3);
    e.sort_by(f64::total_cmp);
    for (got, want) in e.iter().zip(d) {
        assert!((got - want).abs() < 1e-10, "{e:?}");
    }

    let mut rng = ChaCha12Rng::seed_from_u64(5);
    // Isotropic 8-d latents: effective rank close to 8.
    let iso: Vec<f32> = (0..8 * 4000)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let stats = collapse_stats(&iso, 8);
    assert!(stats.effective_rank > 7.8, "{stats:?}");
    assert!(
        (stats.mean_std - (1.0f32 / 3.0).sqrt()).abs() < 0.02,
        "{stats:?}"
    );
    // Latents on a line: rank 1, and a dead dimension shows up as min_std 0.
    let line: Vec<f32> = (0..4000)
        .flat_map(|_| {
            let t = rng.random_range(-1.0f32..1.0);
            [t, 2.0 * t, -t, 0.0]
        })
        .collect();
    let stats = collapse_stats(&line, 4);
    assert!((stats.effective_rank - 1.0).abs() < 1e-3, "{stats:?}");
    assert_eq!(stats.min_std, 0.0);
}

fn random_state_model(seed: u64) -> Jepa {
    let cfg = JepaConfig::two_rooms_state();
    let varmap = VarMap::new();
    let model = Jepa::new(
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    seeded_init(&varmap, seed).unwrap();
    // The seeded init zeroes the predictor's output layer; randomise it so rollouts move.
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    for var in varmap.all_vars() {
        let fresh = tensor(&mut rng, var.dims(), -0.3, 0.3)
            .to_dtype(DType::F32)
            .unwrap();
        var.set(&fresh).unwrap();
    }
    model
}

#[test]
fn batched_rollouts_match_the_one_step_predictor_and_host_probe_matches_tensor_probe() {
    let model = random_state_model(4);
    let world = LearnedWorld::new(model.clone());
    let z0 = world.encode(&[12.0, 40.0]).unwrap();
    assert_eq!(z0.len(), 16);
    let mut rng = ChaCha12Rng::seed_from_u64(9);
    let candidates: Vec<Vec<f32>> = (0..5)
        .map(|_| (0..6 * 2).map(|_| rng.random_range(-2.0f32..2.0)).collect())
        .collect();
    let batched = world.rollout_batch(&z0, &candidates);
    for (cand, rollout) in candidates.iter().zip(&batched) {
        assert_eq!(rollout.len(), 6);
        let mut z = Tensor::from_slice(&z0, (1, 16), &Device::Cpu).unwrap();
        for (t, a) in cand.chunks_exact(2).enumerate() {
            let a = Tensor::from_slice(a, (1, 2), &Device::Cpu).unwrap();
            z = model.predict(&z, &a).unwrap();
            let want = z.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (x, y) in want.iter().zip(&rollout[t]) {
                // Batched and single-row matmuls round differently, and six compounding
                // steps of random ±0.3 weights amplify that to a few 1e-5.
                assert!(
                    (x - y).abs() <= 2e-4 * x.abs().max(1.0),
                    "step {t}: {x} vs {y}"
                );
            }
        }
    }
    let probe = HostProbe::from_model(&model).unwrap();
    let tensor_probe = probe_tensor(&model, &z0).unwrap();
    let host_probe = probe.position(&z0);
    for (t, h) in tensor_probe.iter().zip(&host_probe) {
        assert!((t * 32.0 + 32.0 - h).abs() < 1e-4, "{t} vs {h}");
    }
    // Wrong observation length and NaN are reported, not panicked on.
    assert!(world.encode(&[1.0, 2.0, 3.0]).is_err());
    assert!(world.encode(&[f32::NAN, 2.0]).is_err());
}

fn tiny_training(steps: u64) -> WmTrainConfig {
    WmTrainConfig {
        data: DatasetSpec {
            num_trajectories: 20,
            steps: 60,
            seed: 11,
        },
        valid_trajectories: 4,
        steps,
        batch_size: 32,
        lr: 3e-3,
        final_lr: 3e-4,
        warmup_steps: 5,
        eval_every: 20,
        checkpoint_every: 10,
        keep_last: 0,
        // Short rollouts keep the debug-build test fast; the recipe's 48 are exercised by
        // `lcm wm train`.
        loss: JepaLossConfig::default(),
        ..WmTrainConfig::two_rooms(false)
    }
}

fn weights(run: &std::path::Path) -> Vec<(String, Vec<f32>)> {
    let loaded = load_world_model(run).unwrap();
    let z = LearnedWorld::new(loaded.model);
    // Weights are compared through behaviour on fixed inputs and through the raw file.
    let probe = z.encode(&[20.0, 30.0]).unwrap();
    let bytes = std::fs::read(loaded.checkpoint.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let vals = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (n, vals)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.push(("encoded".into(), probe));
    out
}

#[test]
fn training_reduces_prediction_loss_and_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight");
    let mut history = Vec::new();
    let summary = train_world_model(&tiny_training(40), &straight, false, |m| {
        history.push(m.clone())
    })
    .unwrap();
    assert_eq!(summary.final_step, 40);
    let first = &history[0];
    let last = history.last().unwrap();
    assert!(
        last.prediction < 0.5 * first.prediction,
        "{} → {}",
        first.prediction,
        last.prediction
    );

    // 20 steps, stop, resume to 40: same weights as the straight run.
    let split = dir.path().join("split");
    let mut half = tiny_training(40);
    half.max_seconds = None;
    train_world_model(
        &WmTrainConfig {
            steps: 40,
            ..half.clone()
        },
        &split,
        false,
        |m| assert!(m.step <= 40),
    )
    .map(|_| ())
    .unwrap();
    // Roll back to step 20 by deleting the later checkpoints, as an interrupted run leaves it.
    for step in [30u64, 40] {
        std::fs::remove_dir_all(split.join("checkpoints").join(format!("step-{step:08}"))).unwrap();
    }
    let resumed = train_world_model(&half, &split, true, |_| {}).unwrap();
    assert_eq!(resumed.start_step, 20);
    assert_eq!(resumed.final_step, 40);
    assert_eq!(weights(&straight), weights(&split));

    // Resuming with different settings is refused, and so is training into a used directory.
    let other = WmTrainConfig {
        lr: 1e-2,
        ..half.clone()
    };
    assert!(train_world_model(&other, &split, true, |_| {}).is_err());
    assert!(train_world_model(&half, &split, false, |_| {}).is_err());
    // Loading something that is not a run names the problem.
    let err = load_world_model(dir.path()).err().unwrap().to_string();
    assert!(err.contains("not a world-model run"), "{err}");
}

#[test]
fn seeded_init_is_deterministic_he_scaled_with_a_zero_predictor_output() {
    let values = |seed| {
        let varmap = VarMap::new();
        Jepa::new(
            &JepaConfig::two_rooms_state(),
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )
        .unwrap();
        seeded_init(&varmap, seed).unwrap();
        let mut all: Vec<(String, Vec<f32>)> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_tensor()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap(),
                )
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    };
    let a = values(1);
    assert_eq!(a, values(1));
    assert_ne!(a, values(2));
    for (name, v) in &a {
        if name == "predictor.2.weight" || name.ends_with("bias") {
            assert!(v.iter().all(|x| *x == 0.0), "{name} should start at zero");
        } else if name == "predictor.1.weight" {
            // fan-in 128: He std sqrt(2/128) = 0.125.
            let std = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
            assert!((std - 0.125).abs() < 0.01, "{name}: std {std}");
        }
    }
}

#[test]
fn training_learns_latents_a_probe_can_read_positions_from() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WmTrainConfig {
        eval_every: 50,
        checkpoint_every: 150,
        ..tiny_training(150)
    };
    let mut history = Vec::new();
    train_world_model(&cfg, dir.path(), false, |m| history.push(m.clone())).unwrap();
    // Positions are uniform over a 55 px room, so a constant readout is off by ~16 px RMS.
    let probes: Vec<f64> = history.iter().filter_map(|m| m.valid_probe_rms).collect();
    let last = *probes.last().unwrap();
    assert!(
        last < probes[0] && last < 6.0,
        "probe rms by validation: {probes:?}"
    );
    let collapse = history.last().unwrap().collapse.clone().unwrap();
    assert!(
        collapse.effective_rank > 1.5 && collapse.min_std > 0.05,
        "{collapse:?}"
    );
}
