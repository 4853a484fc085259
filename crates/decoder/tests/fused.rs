//! The decoder trainer's data-parallel fused step ([`FusedDecoder`]): splitting a batch's
//! sentences over engine replicas gives the same loss, NLL, token count and gradient as one
//! engine over the whole batch.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_decoder::fused::FusedDecoder;
use lcm_engine::sonar_decoder::{TokenBatch, TokenLoss};
use lcm_sonar::model::{SonarDecoder, SonarDecoderConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PAD: u32 = 0;
const EOS: u32 = 3;

fn config() -> SonarDecoderConfig {
    SonarDecoderConfig {
        vocab_size: 53,
        model_dim: 16,
        num_layers: 2,
        num_heads: 2,
        ffn_inner_dim: 24,
        max_seq_len: 16,
        pad_idx: PAD as usize,
    }
}

/// Every parameter (norm gains and biases included) seeded random, so that no gradient is
/// trivially zero.
fn random_varmap(cfg: &SonarDecoderConfig) -> VarMap {
    let varmap = VarMap::new();
    SonarDecoder::new(
        cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let mut named: Vec<_> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rng = StdRng::seed_from_u64(11);
    for (name, var) in named {
        let fan_in = *var.dims().last().unwrap_or(&1) as f32;
        let a = 1.5 / fan_in.sqrt();
        let mut values: Vec<f32> = (0..var.elem_count())
            .map(|_| rng.random_range(-a..a))
            .collect();
        if name.contains("layer_norm.weight") {
            values.iter_mut().for_each(|v| *v += 1.0);
        }
        var.set(&Tensor::from_vec(values, var.dims(), &Device::Cpu).unwrap())
            .unwrap();
    }
    varmap
}

/// A teacher-forcing batch laid out as the trainer's `make_batch`: `[</s>, pieces…]` in,
/// `[pieces…, </s>]` out, right-padded; sentence `i` scores `lengths[i]` targets (0: a row
/// of padding only, so that with one sentence per replica one share scores nothing).
struct Case {
    time: usize,
    conditioning: Vec<f32>,
    prev: Vec<u32>,
    target: Vec<u32>,
    lengths: Vec<usize>,
}

fn case(cfg: &SonarDecoderConfig, lengths: &[usize]) -> Case {
    let mut rng = StdRng::seed_from_u64(5);
    let time = lengths.iter().copied().max().unwrap_or(0).max(1);
    let v = cfg.vocab_size as u32;
    let (mut prev, mut target) = (Vec::new(), Vec::new());
    for &len in lengths {
        let mut seq = vec![EOS];
        seq.extend((0..len.saturating_sub(1)).map(|_| rng.random_range(4..v)));
        seq.push(EOS);
        let mut p = seq[..len].to_vec();
        let mut t = if len == 0 {
            Vec::new()
        } else {
            seq[1..].to_vec()
        };
        p.resize(time, PAD);
        t.resize(time, PAD);
        prev.extend(p);
        target.extend(t);
    }
    let conditioning = (0..lengths.len() * cfg.model_dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Case {
        time,
        conditioning,
        prev,
        target,
        lengths: lengths.to_vec(),
    }
}

impl Case {
    fn batch(&self) -> TokenBatch<'_> {
        TokenBatch {
            conditioning: &self.conditioning,
            prev_ids: &self.prev,
            target_ids: &self.target,
            batch: self.lengths.len(),
            time: self.time,
            pad: PAD,
            label_smoothing: 0.1,
        }
    }
}

/// Loss, held-out loss (no gradients) and flat gradient of one batch with `replicas`.
fn run(case: &Case, replicas: usize) -> (TokenLoss, TokenLoss, Vec<f32>) {
    let cfg = config();
    let varmap = random_varmap(&cfg);
    let mut fused = FusedDecoder::with_replicas(&cfg, &varmap, replicas).unwrap();
    assert_eq!(fused.replicas(), replicas);
    fused.refresh().unwrap();
    let loss = fused.loss_and_gradients(&case.batch()).unwrap();
    let gradients = fused.gradients().to_vec();
    let held_out = fused.loss(&case.batch()).unwrap();
    (loss, held_out, gradients)
}

fn close(a: f64, b: f64) -> bool {
    ((a - b) / b).abs() <= 1e-6
}

#[test]
fn shares_agree_with_one_engine() {
    let cfg = config();
    // Unequal lengths, one sentence without any scored target: the shares of 2, 3 and 6
    // replicas hold 12/16, 10/11/7 and 9/1/2/9/7/0 scored tokens.
    let case = case(&cfg, &[9, 1, 2, 9, 7, 0]);
    let (loss, held_out, whole) = run(&case, 1);
    assert_eq!(loss.count, 28);
    assert_eq!(held_out, loss, "loss without gradients");
    let scale = whole.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0);
    for replicas in [2, 3, 6] {
        let (shared, shared_held_out, shares) = run(&case, replicas);
        assert_eq!(shared.count, loss.count, "× {replicas}: scored tokens");
        assert!(
            close(shared.sum, loss.sum) && close(shared.mean(), loss.mean()),
            "× {replicas}: loss {} vs {}",
            shared.mean(),
            loss.mean()
        );
        assert!(
            close(shared.nll_sum, loss.nll_sum),
            "× {replicas}: nll {} vs {}",
            shared.nll_sum,
            loss.nll_sum
        );
        assert!(
            close(shared_held_out.nll_sum, held_out.nll_sum),
            "× {replicas}: held-out nll {} vs {}",
            shared_held_out.nll_sum,
            held_out.nll_sum
        );
        let worst = whole
            .iter()
            .zip(&shares)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-5 * scale,
            "× {replicas}: gradients differ by {worst} (max |g| {scale})"
        );
        eprintln!("× {replicas}: worst gradient difference {worst:.2e} (max |g| {scale:.2e})");
    }
}

#[test]
fn batches_without_targets_or_of_the_wrong_shape_are_refused() {
    let cfg = config();
    let varmap = random_varmap(&cfg);
    let mut fused = FusedDecoder::with_replicas(&cfg, &varmap, 2).unwrap();
    fused.refresh().unwrap();
    let empty = case(&cfg, &[0, 0, 0]);
    // All rows padding: `time` 1, nothing scored in any share.
    let err = fused.loss_and_gradients(&empty.batch()).unwrap_err();
    assert!(err.to_string().contains("without target tokens"), "{err}");
    let good = case(&cfg, &[3, 2]);
    let mut short = good.batch();
    short.prev_ids = &good.prev[1..];
    let err = fused.loss(&short).unwrap_err();
    assert!(err.to_string().contains("input"), "{err}");
}
