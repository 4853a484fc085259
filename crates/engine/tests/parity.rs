//! The fused engine against candle autograd (the reference) on the `tiny` presets: the
//! loss and every parameter gradient agree to a relative 1e-5 (max-abs difference over
//! max-abs reference, per tensor), and a few coordinates agree with central differences
//! of the engine's own loss.

mod common;

use common::{relative_difference, uniform};

use std::cell::RefCell;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_engine::BaseLcmEngine;
use lcm_engine::base_lcm::ConceptBatch;
use lcm_model::base_lcm::{BaseLcm, BaseLcmConfig, padding_mask_from_lengths};
use lcm_model::presets::base_lcm_tiny;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// A model whose every parameter (norm gains and biases included) holds seeded random
/// values, so that no gradient is trivially zero or one.
fn random_model(cfg: &BaseLcmConfig, seed: u64) -> (VarMap, BaseLcm) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = BaseLcm::new(cfg, vb).expect("model");
    common::randomize(&varmap, seed, 1.0);
    (varmap, model)
}

struct Case {
    batch: usize,
    time: usize,
    lengths: Vec<usize>,
    x: Vec<f32>,
}

fn case(cfg: &BaseLcmConfig, lengths: &[usize], time: usize, seed: u64) -> Case {
    let mut rng = StdRng::seed_from_u64(seed);
    let dd = cfg.input_dim;
    let mut x = uniform(&mut rng, lengths.len() * time * dd, 1.5);
    // Padding rows are zero, as the batcher writes them.
    for (b, &len) in lengths.iter().enumerate() {
        x[(b * time + len) * dd..(b + 1) * time * dd].fill(0.0);
    }
    Case {
        batch: lengths.len(),
        time,
        lengths: lengths.to_vec(),
        x,
    }
}

fn check_base_lcm(cfg: &BaseLcmConfig, c: &Case, seed: u64) {
    let (varmap, model) = random_model(cfg, seed);
    let x =
        Tensor::from_vec(c.x.clone(), (c.batch, c.time, cfg.input_dim), &Device::Cpu).expect("x");
    let mask =
        padding_mask_from_lengths(&c.lengths, c.time, DType::F32, &Device::Cpu).expect("mask");
    let reference = model.loss(&x, Some(&mask)).expect("candle loss");
    let mean = reference.mean().expect("mean");
    let grads = mean.backward().expect("backward");
    let want_loss = f64::from(mean.to_scalar::<f32>().expect("scalar"));

    let mut engine = BaseLcmEngine::new(cfg, &varmap).expect("engine binds");
    let batch = ConceptBatch {
        x: &c.x,
        batch: c.batch,
        time: c.time,
        lengths: &c.lengths,
        first_target: &[],
    };
    let got = engine.loss_and_gradients(&batch).expect("engine step");
    assert_eq!(got.count, reference.count, "prediction count");
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
        let want: Vec<f32> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("candle gives no gradient for {}", slot.name))
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .expect("grad values");
        let got = &engine.gradients()[slot.range.clone()];
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
        "worst relative gradient difference {:.2e} ({})",
        worst.0, worst.1
    );
}

#[test]
fn base_lcm_matches_candle_without_padding() {
    let cfg = base_lcm_tiny();
    let c = case(&cfg, &[9, 9, 9], 9, 1);
    check_base_lcm(&cfg, &c, 10);
}

#[test]
fn base_lcm_matches_candle_with_padding_and_a_one_concept_row() {
    let cfg = base_lcm_tiny();
    // Row 2 has a single concept (nothing to predict), row 3 is empty.
    let c = case(&cfg, &[11, 6, 1, 0, 11], 11, 2);
    check_base_lcm(&cfg, &c, 11);
}

#[test]
fn base_lcm_matches_candle_without_biases() {
    let mut cfg = base_lcm_tiny();
    cfg.proj_bias = false;
    cfg.decoder.bias = false;
    cfg.decoder.n_layers = 3;
    let c = case(&cfg, &[7, 4], 7, 3);
    check_base_lcm(&cfg, &c, 12);
}

#[test]
fn base_lcm_matches_candle_at_the_longest_sequence() {
    // 63 predicting positions (the tiny preset's longest), padding ending early and late.
    let cfg = base_lcm_tiny();
    let c = case(&cfg, &[64, 40, 20], 64, 4);
    check_base_lcm(&cfg, &c, 13);
}

#[test]
fn base_lcm_matches_candle_at_the_small_preset() {
    // Real widths (D = 384, d = 256, head 64, FFN 1024): every kernel's vector tail and
    // the multi-threaded products run, which the tiny preset's widths do not reach.
    let cfg = lcm_model::presets::base_lcm_small();
    let c = case(&cfg, &[17, 9], 17, 5);
    check_base_lcm(&cfg, &c, 15);
}

#[test]
fn base_lcm_gradients_match_central_differences() {
    let cfg = base_lcm_tiny();
    let (varmap, _) = random_model(&cfg, 13);
    let c = case(&cfg, &[8, 5], 8, 4);
    let batch = ConceptBatch {
        x: &c.x,
        batch: c.batch,
        time: c.time,
        lengths: &c.lengths,
        first_target: &[],
    };
    let engine = RefCell::new(BaseLcmEngine::new(&cfg, &varmap).expect("engine"));
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
        "frontend.pre_linear.weight",
        "lcm.layers.0.self_attn.q_proj.weight",
        "lcm.layers.0.self_attn.k_proj.bias",
        "lcm.layers.1.ffn.gate_proj.weight",
        "lcm.layers.1.ffn_layer_norm.weight",
        "lcm.layer_norm.weight",
        "postnet.fc.bias",
    ] {
        let slot = slots.iter().find(|s| s.name == name).expect("slot");
        let var = varmap.data().lock().expect("varmap")[name].clone();
        let grad: Vec<f64> = gradients[slot.range.clone()]
            .iter()
            .map(|&g| f64::from(g))
            .collect();
        lcm_gradcheck::assert_matches_central_differences(
            name,
            &var,
            &grad,
            [0, 3, slot.range.len() - 1],
            1e-2,
            |fd, g| 2e-3 + 2e-2 * fd.abs().max(g.abs()),
            &loss,
        );
    }
}

#[test]
fn base_lcm_rejects_a_model_it_does_not_know() {
    let cfg = base_lcm_tiny();
    let (varmap, _) = random_model(&cfg, 14);
    let mut other = cfg.clone();
    other.decoder.n_layers = 3;
    let err = BaseLcmEngine::new(&other, &varmap)
        .err()
        .expect("a layout mismatch is refused");
    assert!(err.to_string().contains("parameters"), "{err}");
}
