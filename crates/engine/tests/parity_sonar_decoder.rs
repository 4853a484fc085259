//! The fused SONAR-architecture decoder against candle autograd (the reference): on tiny
//! random decoders and padded batches of unequal lengths, the label-smoothed token loss of
//! the decoder trainer and every parameter gradient agree to a relative 1e-5 (max-abs
//! difference over max-abs reference, per tensor); the parameters autograd leaves without
//! gradient are exactly those the engine reports; a few coordinates agree with central
//! differences of the engine's own loss.

mod common;

use common::relative_difference;

use std::cell::RefCell;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_engine::SonarDecoderEngine;
use lcm_engine::sonar_decoder::TokenBatch;
use lcm_sonar::model::{SonarDecoder, SonarDecoderConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PAD: u32 = 0;

fn config(vocab: usize, dim: usize, heads: usize, ffn: usize) -> SonarDecoderConfig {
    SonarDecoderConfig {
        vocab_size: vocab,
        model_dim: dim,
        num_layers: 2,
        num_heads: heads,
        ffn_inner_dim: ffn,
        max_seq_len: 24,
        pad_idx: PAD as usize,
    }
}

/// A decoder whose every parameter (norm gains and biases included) holds seeded random
/// values, so that no gradient is trivially zero or one.
fn random_model(cfg: &SonarDecoderConfig, seed: u64) -> (VarMap, SonarDecoder) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = SonarDecoder::new(cfg, vb).expect("model");
    common::randomize(&varmap, seed, 1.5);
    (varmap, model)
}

/// A teacher-forcing batch as `make_batch` lays it out: `[</s>, pieces…]` as input,
/// `[pieces…, </s>]` as target, right-padded with the pad id; sentence `i` has
/// `lengths[i]` input positions.
struct Case {
    batch: usize,
    time: usize,
    conditioning: Vec<f32>,
    prev: Vec<u32>,
    target: Vec<u32>,
}

fn case(cfg: &SonarDecoderConfig, lengths: &[usize], seed: u64) -> Case {
    let mut rng = StdRng::seed_from_u64(seed);
    let time = lengths.iter().copied().max().unwrap_or(1);
    let v = cfg.vocab_size as u32;
    let (mut prev, mut target) = (Vec::new(), Vec::new());
    for &len in lengths {
        let mut seq = vec![3u32];
        seq.extend((0..len - 1).map(|_| rng.random_range(4..v)));
        seq.push(3);
        let mut p = seq[..len].to_vec();
        let mut t = seq[1..].to_vec();
        p.resize(time, PAD);
        t.resize(time, PAD);
        prev.extend(p);
        target.extend(t);
    }
    let conditioning = (0..lengths.len() * cfg.model_dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Case {
        batch: lengths.len(),
        time,
        conditioning,
        prev,
        target,
    }
}

impl Case {
    fn tokens(&self, smoothing: f64) -> TokenBatch<'_> {
        TokenBatch {
            conditioning: &self.conditioning,
            prev_ids: &self.prev,
            target_ids: &self.target,
            batch: self.batch,
            time: self.time,
            pad: PAD,
            label_smoothing: smoothing,
        }
    }
}

/// The decoder trainer's objective (`lcm_decoder::batch::token_loss`) in candle ops: the
/// mean over non-pad targets of `(1 − ε)·nll + ε·(−mean log_softmax)`.
fn reference_loss(logits: &Tensor, target: &[u32], smoothing: f64) -> Tensor {
    let (n, t, v) = logits.dims3().expect("dims");
    let (keep, gold): (Vec<u32>, Vec<u32>) = target
        .iter()
        .enumerate()
        .filter(|&(_, &g)| g != PAD)
        .map(|(i, &g)| (i as u32, g))
        .unzip();
    let rows = logits
        .reshape((n * t, v))
        .and_then(|l| l.index_select(&Tensor::new(keep, &Device::Cpu)?, 0))
        .expect("rows");
    let lsm = candle_nn::ops::log_softmax(&rows, D::Minus1).expect("log_softmax");
    let nll = lsm
        .gather(
            &Tensor::new(gold, &Device::Cpu)
                .and_then(|g| g.unsqueeze(1))
                .expect("gold"),
            1,
        )
        .and_then(|x| x.squeeze(1))
        .and_then(|x| x.neg())
        .expect("nll");
    let objective = if smoothing > 0.0 {
        let smooth = lsm.mean(1).and_then(|x| x.neg()).expect("smooth");
        ((&nll * (1.0 - smoothing)).expect("a") + (smooth * smoothing).expect("b")).expect("sum")
    } else {
        nll
    };
    objective.mean_all().expect("mean")
}

/// Compares loss and gradients with candle; returns the worst relative gradient difference.
fn check(
    cfg: &SonarDecoderConfig,
    c: &Case,
    smoothing: f64,
    seed: u64,
    logit_rows: Option<usize>,
) -> f64 {
    let (varmap, model) = random_model(cfg, seed);
    let cond = Tensor::from_vec(
        c.conditioning.clone(),
        (c.batch, cfg.model_dim),
        &Device::Cpu,
    )
    .expect("cond");
    let prev = Tensor::from_vec(c.prev.clone(), (c.batch, c.time), &Device::Cpu).expect("ids");
    let logits = model.forward_train(&cond, &prev).expect("candle forward");
    let loss = reference_loss(&logits, &c.target, smoothing);
    let grads = loss.backward().expect("backward");
    let want_loss = f64::from(loss.to_scalar::<f32>().expect("scalar"));

    let mut engine = SonarDecoderEngine::new(cfg, &varmap).expect("engine binds");
    if let Some(rows) = logit_rows {
        engine.set_logit_rows(rows);
    }
    let got = engine
        .loss_and_gradients(&c.tokens(smoothing))
        .expect("engine step");
    assert_eq!(
        got.count,
        c.target.iter().filter(|&&g| g != PAD).count(),
        "scored tokens"
    );
    let loss_diff = (got.mean() - want_loss).abs() / want_loss.abs();
    assert!(
        loss_diff <= 1e-5,
        "loss {} vs candle {want_loss} (relative {loss_diff:.2e})",
        got.mean()
    );
    // The loss alone agrees with the loss of the gradient pass.
    let alone = engine.loss(&c.tokens(smoothing)).expect("loss");
    assert_eq!(alone, got);

    let mut worst = (0.0f64, String::new());
    let mut without = Vec::new();
    for slot in engine.params().layout().slots() {
        let var = engine
            .params()
            .vars()
            .find(|(n, _)| *n == slot.name)
            .map(|(_, v)| v.clone())
            .expect("var");
        let got = &engine.gradients()[slot.range.clone()];
        let Some(want) = grads.get(var.as_tensor()) else {
            assert!(
                !engine.has_gradient(&slot.name),
                "candle gives no gradient for {}, the engine claims one",
                slot.name
            );
            assert!(engine.gradient(&slot.name).is_none());
            assert!(got.iter().all(|&g| g == 0.0), "{} is not zero", slot.name);
            without.push(slot.name.clone());
            continue;
        };
        assert!(
            engine.has_gradient(&slot.name),
            "candle has a gradient for {}, the engine says there is none",
            slot.name
        );
        let want: Vec<f32> = want
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .expect("grad values");
        if slot.name.ends_with(".self_attn.k_proj.bias") {
            // Without RoPE the key bias adds `q·b_k` to a whole row of scores, which the
            // softmax ignores: its exact gradient is 0, and both sides hold rounding noise.
            // Both must be noise against the query bias's gradient.
            let q_bias = slot.name.replace("k_proj", "q_proj");
            let var = engine
                .params()
                .vars()
                .find(|(n, _)| *n == q_bias)
                .map(|(_, v)| v.clone())
                .expect("q bias");
            let scale = grads
                .get(var.as_tensor())
                .map(|g| g.abs().and_then(|a| a.max_all()?.to_scalar::<f32>()))
                .expect("q bias gradient")
                .expect("its largest value");
            let largest = got.iter().chain(&want).fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(
                largest <= 1e-5 * scale,
                "{}: {largest:.2e} is not rounding noise against {scale:.2e}",
                slot.name
            );
            continue;
        }
        assert!(
            want.iter().any(|&g| g != 0.0),
            "candle's gradient of {} is all zero: the case tests nothing",
            slot.name
        );
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
    // Per layer: the cross-attention layer norm (2), q and k projections (4).
    assert_eq!(
        without.len(),
        6 * cfg.num_layers,
        "parameters without gradient: {without:?}"
    );
    assert!(without.iter().all(|n| n.contains("encoder_decoder_attn")));
    eprintln!(
        "loss relative difference {loss_diff:.2e}; worst relative gradient difference {:.2e} ({})",
        worst.0, worst.1
    );
    worst.0
}

#[test]
fn sonar_decoder_matches_candle_without_smoothing() {
    let cfg = config(61, 32, 4, 64);
    let c = case(&cfg, &[7, 3, 5], 1);
    check(&cfg, &c, 0.0, 10, None);
}

#[test]
fn sonar_decoder_matches_candle_with_smoothing_and_logit_chunks() {
    // Ragged widths (d 36, head 9, FFN 50, V 83: every kernel's vector tail runs) and 4
    // scored rows per logit chunk (several chunks, the last one partial).
    let cfg = config(83, 36, 4, 50);
    let c = case(&cfg, &[9, 2, 6, 1], 2);
    check(&cfg, &c, 0.1, 11, Some(4));
}

#[test]
fn sonar_decoder_matches_candle_at_wider_sizes() {
    // d 64, V 300, sentences up to 20 tokens, a repeated prompt id in every row (the
    // embedding scatter-add accumulates).
    let cfg = config(300, 64, 4, 128);
    let c = case(&cfg, &[20, 13, 17, 4, 20], 3);
    check(&cfg, &c, 0.1, 12, None);
}

#[test]
fn sonar_decoder_gradients_match_central_differences() {
    let cfg = config(53, 32, 4, 48);
    let (varmap, _) = random_model(&cfg, 13);
    let c = case(&cfg, &[6, 4], 4);
    let batch = c.tokens(0.1);
    let engine = RefCell::new(SonarDecoderEngine::new(&cfg, &varmap).expect("engine"));
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
        "decoder_frontend.embed.weight",
        "decoder.layers.0.self_attn_layer_norm.bias",
        "decoder.layers.0.self_attn.k_proj.weight",
        "decoder.layers.0.encoder_decoder_attn.v_proj.weight",
        "decoder.layers.1.encoder_decoder_attn.output_proj.bias",
        "decoder.layers.1.ffn.inner_proj.weight",
        "decoder.layers.1.ffn_layer_norm.weight",
        "decoder.layer_norm.bias",
    ] {
        let slot = slots.iter().find(|s| s.name == name).expect("slot");
        let var = varmap.data().lock().expect("varmap")[name].clone();
        let grad: Vec<f64> = gradients[slot.range.clone()]
            .iter()
            .map(|&g| f64::from(g))
            .collect();
        // The embedding rows of the prompt id (3) and of an id that may not occur.
        let d = cfg.model_dim;
        let indices = if name.starts_with("decoder_frontend") {
            vec![3 * d, 3 * d + 5, 40 * d + 1]
        } else {
            vec![0, 3, slot.range.len() - 1]
        };
        lcm_gradcheck::assert_matches_central_differences(
            name,
            &var,
            &grad,
            indices,
            1e-2,
            |fd, g| 2e-3 + 2e-2 * fd.abs().max(g.abs()),
            &loss,
        );
    }
}

#[test]
fn sonar_decoder_refuses_bad_input() {
    let cfg = config(40, 32, 4, 48);
    let (varmap, _) = random_model(&cfg, 14);
    let mut engine = SonarDecoderEngine::new(&cfg, &varmap).expect("engine");
    let c = case(&cfg, &[5, 3], 5);
    let mut bad = c.tokens(0.0);
    let ids: Vec<u32> = c.prev.iter().map(|&i| i.max(1) * 1000).collect();
    bad.prev_ids = &ids;
    assert!(engine.loss(&bad).is_err(), "ids outside the vocabulary");
    let pads = vec![PAD; c.target.len()];
    let mut empty = c.tokens(0.0);
    empty.target_ids = &pads;
    assert!(engine.loss(&empty).is_err(), "nothing to score");
    let mut short = c.tokens(0.0);
    short.conditioning = &c.conditioning[1..];
    assert!(
        engine.loss(&short).is_err(),
        "conditioning of the wrong size"
    );

    let mut other = cfg.clone();
    other.num_layers = 3;
    let err = SonarDecoderEngine::new(&other, &varmap)
        .err()
        .expect("a layout mismatch is refused");
    assert!(err.to_string().contains("parameters"), "{err}");
}
