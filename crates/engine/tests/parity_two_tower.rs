//! The fused Two-Tower engine against candle autograd (`TwoTowerLcm::loss`, the reference):
//! the loss and every parameter gradient agree to a relative 1e-5 (max-abs difference over
//! max-abs reference, per tensor), and a few coordinates agree with central differences of
//! the engine's own loss.

mod common;

use common::{flat, max_abs, relative_difference, uniform};

use std::cell::RefCell;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_engine::TwoTowerEngine;
use lcm_engine::two_tower::TwoTowerBatch;
use lcm_model::base_lcm::padding_mask_from_lengths;
use lcm_model::diffusion::{NoiseSchedule, NoiseScheduleConfig};
use lcm_model::presets::{two_tower_small, two_tower_tiny};
use lcm_model::two_tower::{TwoTowerConfig, TwoTowerLcm, cfg_dropped_rows, standard_normal};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// A model whose every parameter holds seeded random values: norm gains and biases, and
/// above all the modulators, which the model zero-initialises (zero gates would cut every
/// sub-block out of the gradient).
fn random_model(cfg: &TwoTowerConfig, seed: u64) -> (VarMap, TwoTowerLcm) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = TwoTowerLcm::new(cfg, vb).expect("model");
    common::randomize(&varmap, seed, 1.0);
    (varmap, model)
}

fn schedule() -> NoiseSchedule {
    NoiseSchedule::new(NoiseScheduleConfig::default()).expect("schedule")
}

/// One batch with its diffusion randomness drawn, and the noised input and target the
/// engine is fed (from the same `noisy_and_target` call the model makes).
struct Case {
    batch: usize,
    time: usize,
    lengths: Vec<usize>,
    x0: Vec<f32>,
    noise: Tensor,
    timesteps: Vec<usize>,
    dropped: Vec<usize>,
    noisy: Vec<f32>,
    target: Vec<f32>,
}

impl Case {
    fn batch(&self) -> TwoTowerBatch<'_> {
        TwoTowerBatch {
            x0: &self.x0,
            noisy: &self.noisy,
            target: &self.target,
            timesteps: &self.timesteps,
            dropped_rows: &self.dropped,
            batch: self.batch,
            time: self.time,
            lengths: &self.lengths,
            first_target: &[],
        }
    }

    fn x0_tensor(&self, dd: usize) -> Tensor {
        Tensor::from_vec(self.x0.clone(), (self.batch, self.time, dd), &Device::Cpu).expect("x0")
    }
}

fn case(cfg: &TwoTowerConfig, lengths: &[usize], time: usize, cfg_p: f64, seed: u64) -> Case {
    let mut rng = StdRng::seed_from_u64(seed);
    let (b, dd) = (lengths.len(), cfg.input_dim);
    let mut x0 = uniform(&mut rng, b * time * dd, 1.5);
    for (bi, &len) in lengths.iter().enumerate() {
        x0[(bi * time + len) * dd..(bi + 1) * time * dd].fill(0.0);
    }
    let schedule = schedule();
    let timesteps = schedule.sample_timesteps(b * time, &mut rng);
    let noise = standard_normal(&[b, time, dd], &mut rng, DType::F32, &Device::Cpu).expect("noise");
    let dropped = cfg_dropped_rows(time, cfg_p, &mut rng);
    let x0_t = Tensor::from_vec(x0.clone(), (b, time, dd), &Device::Cpu).expect("x0");
    let (noisy, target) = schedule
        .noisy_and_target(&x0_t, &noise, &timesteps)
        .expect("noisy and target");
    Case {
        batch: b,
        time,
        lengths: lengths.to_vec(),
        x0,
        noise,
        timesteps,
        dropped,
        noisy: flat(&noisy),
        target: flat(&target),
    }
}

/// The denoiser's self-attention runs under the identity mask, which never reads its
/// query and key projections: candle has no gradient for them at all.
fn unused_by_the_model(name: &str) -> bool {
    name.starts_with("denoiser.layers.")
        && (name.contains(".self_attn.q_proj.") || name.contains(".self_attn.k_proj."))
}

fn check_two_tower(cfg: &TwoTowerConfig, c: &Case, seed: u64) -> f64 {
    let (varmap, model) = random_model(cfg, seed);
    let x0 = c.x0_tensor(cfg.input_dim);
    let mask =
        padding_mask_from_lengths(&c.lengths, c.time, DType::F32, &Device::Cpu).expect("mask");
    let reference = model
        .loss(
            &x0,
            Some(&mask),
            &schedule(),
            &c.timesteps,
            &c.noise,
            &c.dropped,
        )
        .expect("candle loss");
    let mean = reference.mean().expect("mean");
    let grads = mean.backward().expect("backward");
    let want_loss = f64::from(mean.to_scalar::<f32>().expect("scalar"));

    let mut engine = TwoTowerEngine::new(cfg, &varmap).expect("engine binds");
    let got = engine.loss_and_gradients(&c.batch()).expect("engine step");
    assert_eq!(got.count, reference.count, "position count");
    let loss_diff = (got.mean() - want_loss).abs() / want_loss.abs();
    assert!(
        loss_diff <= 1e-5,
        "loss {} vs candle {want_loss} (relative {loss_diff:.2e})",
        got.mean()
    );

    let mut worst = (0.0f64, String::new());
    for slot in engine.params().layout().slots() {
        let var = engine
            .params()
            .vars()
            .find(|(n, _)| *n == slot.name)
            .map(|(_, v)| v.clone())
            .expect("var");
        let got = &engine.gradients()[slot.range.clone()];
        assert_eq!(
            engine.has_gradient(&slot.name),
            grads.get(var.as_tensor()).is_some(),
            "{}: the engine and autograd disagree on whether it has a gradient",
            slot.name
        );
        let Some(want) = grads.get(var.as_tensor()) else {
            assert!(
                unused_by_the_model(&slot.name),
                "candle gives no gradient for {}",
                slot.name
            );
            assert!(
                got.iter().all(|&g| g == 0.0),
                "{} is unused by the model but has a non-zero gradient",
                slot.name
            );
            continue;
        };
        let want = flat(want);
        if let Some(weight) = slot.name.strip_suffix("cross_attention.k_proj.bias") {
            // Without RoPE a key bias adds `q·b` to every score of a query's row, which the
            // softmax cancels: the exact gradient is 0, and both sides hold rounding noise
            // that a relative comparison would only measure against itself. Both must be
            // zero at the 1e-5 level of the layer's key-weight gradient.
            let weight = format!("{weight}cross_attention.k_proj.weight");
            let scale = max_abs(&flat(
                grads
                    .get(varmap.data().lock().expect("varmap")[&weight].as_tensor())
                    .expect("key weight gradient"),
            ));
            let noise = max_abs(got).max(max_abs(&want));
            assert!(
                noise <= 1e-5 * scale,
                "{}: {noise:.2e} is not zero next to the key weights' {scale:.2e}",
                slot.name
            );
            continue;
        }
        let rel = relative_difference(got, &want);
        assert!(
            rel <= 1e-5,
            "gradient of {} differs from candle by {rel:.2e} (relative)",
            slot.name
        );
        if rel > worst.0 {
            worst = (rel, slot.name.clone());
        }
    }
    eprintln!(
        "worst relative gradient difference {:.2e} ({}), loss {loss_diff:.2e}",
        worst.0, worst.1
    );
    worst.0
}

#[test]
fn two_tower_matches_candle_without_padding() {
    let cfg = two_tower_tiny();
    let c = case(&cfg, &[9, 9, 9], 9, 0.0, 1);
    assert!(c.dropped.is_empty());
    check_two_tower(&cfg, &c, 10);
}

#[test]
fn two_tower_matches_candle_with_padding_dropped_rows_and_short_rows() {
    let cfg = two_tower_tiny();
    // Row 2 has a single concept, row 3 none; 3 of the 10 droppable rows lose their context.
    let c = case(&cfg, &[11, 6, 1, 0, 11], 11, 0.3, 2);
    assert_eq!(c.dropped.len(), 3);
    check_two_tower(&cfg, &c, 11);
}

#[test]
fn two_tower_matches_candle_without_biases() {
    let mut cfg = two_tower_tiny();
    cfg.bias = false;
    cfg.n_context_layers = 3;
    // An odd sinusoid width appends a zero column.
    cfg.timestep_freq_dim = 15;
    let c = case(&cfg, &[7, 4], 7, 0.3, 3);
    check_two_tower(&cfg, &c, 12);
}

#[test]
fn two_tower_matches_candle_at_the_small_preset() {
    // Real widths (D = 384, d = 256, head 64, FFN 1024, sinusoid 256): every kernel's
    // vector tail and the multi-threaded products run.
    let cfg = two_tower_small();
    let c = case(&cfg, &[9, 5], 9, 0.3, 5);
    check_two_tower(&cfg, &c, 15);
}

#[test]
fn two_tower_reuses_its_arena_across_batch_shapes() {
    // A larger batch first, then a smaller one: stale arena contents must not leak in.
    let cfg = two_tower_tiny();
    let (varmap, _) = random_model(&cfg, 16);
    let big = case(&cfg, &[12, 12, 7], 12, 0.3, 6);
    let small = case(&cfg, &[5, 3], 5, 0.3, 7);
    let mut warm = TwoTowerEngine::new(&cfg, &varmap).expect("engine");
    warm.loss_and_gradients(&big.batch()).expect("big step");
    let got = warm.loss_and_gradients(&small.batch()).expect("small step");
    let mut fresh = TwoTowerEngine::new(&cfg, &varmap).expect("engine");
    let want = fresh
        .loss_and_gradients(&small.batch())
        .expect("fresh step");
    assert_eq!(got, want);
    assert_eq!(warm.gradients(), fresh.gradients());
}

#[test]
fn two_tower_gradients_match_central_differences() {
    let cfg = two_tower_tiny();
    let (varmap, _) = random_model(&cfg, 13);
    let c = case(&cfg, &[8, 5], 8, 0.3, 4);
    let batch = c.batch();
    let engine = RefCell::new(TwoTowerEngine::new(&cfg, &varmap).expect("engine"));
    engine
        .borrow_mut()
        .loss_and_gradients(&batch)
        .expect("step");
    let gradients = engine.borrow().gradients().to_vec();
    let slots = engine.borrow().params().layout().slots().to_vec();
    let loss = || {
        let mut e = engine.borrow_mut();
        e.refresh().expect("refresh");
        e.loss(&batch).expect("loss").mean()
    };
    for name in [
        "encoder_frontend.pre_linear.weight",
        "context_encoder.layers.0.self_attn.q_proj.weight",
        "context_encoder.layers.1.ffn.gate_proj.weight",
        "denoiser.embed_time.fc1.weight",
        "denoiser.layers.0.modulator.fc.weight",
        "denoiser.layers.0.self_attn.v_proj.bias",
        "denoiser.layers.1.cross_attention.k_proj.weight",
        "denoiser.layers.1.cross_attention_layer_norm.weight",
        "denoiser.final_proj.fc.bias",
    ] {
        let slot = slots.iter().find(|s| s.name == name).expect("slot");
        let var = varmap.data().lock().expect("varmap")[name].clone();
        let grad: Vec<f64> = gradients[slot.range.clone()]
            .iter()
            .map(|&g| f64::from(g))
            .collect();
        let largest = lcm_gradcheck::assert_matches_central_differences(
            name,
            &var,
            &grad,
            [0, 3, slot.range.len() - 1],
            1e-2,
            |fd, g| 2e-3 + 2e-2 * fd.abs().max(g.abs()),
            &loss,
        );
        assert!(
            largest > 0.0,
            "{name}: the checked coordinates have no gradient"
        );
    }
}

#[test]
fn two_tower_rejects_a_model_it_does_not_know() {
    let cfg = two_tower_tiny();
    let (varmap, _) = random_model(&cfg, 14);
    let mut other = cfg.clone();
    other.n_denoiser_layers = 3;
    let err = TwoTowerEngine::new(&other, &varmap)
        .err()
        .expect("a layout mismatch is refused");
    assert!(err.to_string().contains("parameters"), "{err}");
}

#[test]
fn two_tower_rejects_mismatched_batches() {
    let cfg = two_tower_tiny();
    let (varmap, _) = random_model(&cfg, 17);
    let c = case(&cfg, &[4, 2], 4, 0.0, 8);
    let mut engine = TwoTowerEngine::new(&cfg, &varmap).expect("engine");
    let mut batch = c.batch();
    batch.timesteps = &c.timesteps[1..];
    assert!(engine.loss(&batch).is_err());
    let mut batch = c.batch();
    batch.target = &c.target[1..];
    assert!(engine.loss(&batch).is_err());
}
