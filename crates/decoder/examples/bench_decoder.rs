//! Training speed of the concept decoder (`lcm train-decoder`) on a fixed random batch; the
//! Rust half of `bench/train_decoder.sh`, whose PyTorch half is `bench/train_decoder.py`.
//!
//! ```text
//! cargo build --release -p lcm-decoder --example bench_decoder
//! RAYON_NUM_THREADS=2 target/release/examples/bench_decoder [--engine fused|candle]
//!     [--layers 4] [--dim 384] [--heads 6] [--ffn 1536] [--vocab 8192] [--max-seq-len 128]
//!     [--batch 64] [--seq 32] [--min-len 28] [--lr 1e-3] [--clip 1] [--weight-decay 0.01]
//!     [--label-smoothing 0.1] [--threads N] [--warmup 2] [--steps 5] [--seed 0]
//!     [--dump-weights DIR]
//! ```
//!
//! The model is the trainer's: an [`SonarDecoder`] built from `DecoderTrainConfig::default()`
//! (the shapes `lcm train-decoder` uses unless told otherwise; `--dim` is the encoder's
//! dimension, 384 for MiniLM), initialised as `train.rs` does. One timed step is exactly the
//! trainer's `DecoderTrainer::step` on the chosen engine, the batch assembled from token
//! pieces (`make_batch`), then:
//!
//! - `--engine fused` (the default, as in the trainer): `FusedDecoder::train_step`
//!   (`src/fused.rs`), the very function the trainer calls: refresh the engine replicas'
//!   weights, the label-smoothed token loss and its gradients on the fused engine, data
//!   parallel over the batch's sentences (one replica per thread, `LCM_ENGINE_REPLICAS`
//!   overrides the count; 1 = one engine whose products use every thread), the finiteness
//!   check, global grad-norm clipping and AdamW's flat step;
//! - `--engine candle`: `forward_train`, the token loss over the non-pad targets
//!   (`token_loss`), reading the loss, backward, global grad-norm clipping and AdamW
//!   (lcm-train's, weight decay on matrices), as the trainer's candle branch.
//!
//! `make_batch` and `token_loss` are private to the crate, so this example compiles
//! `src/batch.rs` itself (the `#[path]` module below): it runs the trainer's code, not a
//! copy of it. The learning rate is constant (the schedule only changes a scalar).
//!
//! The batch is fixed and seeded: `--batch` sentences whose decoder inputs (`[</s>]` prompt +
//! pieces) are `--min-len` to `--seq` tokens long, evenly spread, right-padded to `--seq`
//! (so the padded work and the token count are the same on both sides of the benchmark);
//! piece ids uniform over the non-special vocabulary; concepts random unit vectors (MiniLM's
//! embeddings are normalised). Tokens per step = non-pad target tokens (what the trainer's
//! `tokens_per_s` counts).
//!
//! Prints one JSON line (progress on stderr): steps/s, tokens/s, the median of `--steps` timed
//! steps after `--warmup`, losses, the parameter count, the fused engine's replica count,
//! nominal FLOPs and the peak RSS of the process (`VmHWM`).
//!
//! `--dump-weights DIR` measures nothing: it writes `DIR/weights.safetensors` (the VarMap,
//! fairseq2 key names) and `DIR/probe.safetensors` (the batch, the position table, the
//! logits of the first rows, the loss, every gradient, the grad norm, and the loss after one
//! clipped AdamW step), which `bench/train_decoder.py --check DIR` replays through the
//! PyTorch port. The dump is candle's whatever the engine (the fused engine's agreement with
//! candle autograd is `lcm-engine`'s and `lcm-decoder`'s tests).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_decoder::DecoderTrainConfig;
use lcm_decoder::fused::FusedDecoder;
use lcm_decoder::train::DecoderEngine as Engine;
use lcm_sonar::SpecialIds;
use lcm_sonar::model::{SonarDecoder, SonarDecoderConfig, sinusoidal_positions};
use lcm_train::{AdamW, AdamWConfig, TrainRng, default_decay_filter, new_rng};
use rand::Rng;
use serde_json::json;

/// The trainer's batch assembly and token loss, compiled from the crate's own source. The two
/// modules after it give `batch.rs` the `crate::error` and `crate::tokenizer` paths it uses.
#[allow(dead_code)] // `epoch_plan` (the order of an epoch) is not needed here
#[path = "../src/batch.rs"]
mod batch;

mod error {
    pub use lcm_decoder::error::{DecoderError, Result};
}

mod tokenizer {
    pub use lcm_decoder::tokenizer::PROMPT;
}

use batch::{make_batch, token_loss};
use tokenizer::PROMPT;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, Clone)]
struct Args {
    engine: Engine,
    layers: usize,
    dim: usize,
    heads: usize,
    ffn: usize,
    vocab: usize,
    max_seq_len: usize,
    batch: usize,
    /// Padded width of the decoder input (prompt + pieces) = the longest row.
    seq: usize,
    /// Shortest decoder input; `None`: `seq − seq/8`.
    min_len: Option<usize>,
    lr: f64,
    clip: f64,
    weight_decay: f64,
    label_smoothing: f64,
    threads: Option<usize>,
    warmup: usize,
    steps: usize,
    seed: u64,
    dump: Option<PathBuf>,
}

impl Default for Args {
    fn default() -> Self {
        // The trainer's defaults; `dim: None` there means "the encoder's", MiniLM's 384.
        let c = DecoderTrainConfig::default();
        Self {
            engine: c.engine,
            layers: c.layers,
            dim: c.dim.unwrap_or(384),
            heads: c.heads,
            ffn: c.ffn,
            vocab: c.vocab_size,
            max_seq_len: c.max_seq_len,
            batch: c.batch_size,
            seq: 32,
            min_len: None,
            lr: c.lr,
            clip: c.clip,
            weight_decay: c.weight_decay,
            label_smoothing: c.label_smoothing,
            threads: None,
            warmup: 2,
            steps: 5,
            seed: c.seed,
            dump: None,
        }
    }
}

const USAGE: &str = "usage: bench_decoder [--engine fused|candle] [--layers N] [--dim N] \
    [--heads N] [--ffn N] [--vocab N] [--max-seq-len N] [--batch N] [--seq N] [--min-len N] \
    [--lr X] [--clip X] [--weight-decay X] [--label-smoothing X] [--threads N] [--warmup N] \
    [--steps N] [--seed N] [--dump-weights DIR]";

fn parse_args() -> Result<Args> {
    let mut out = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--engine" => out.engine = Engine::parse(&value()?)?,
            "--layers" => out.layers = positive(&flag, &value()?)?,
            "--dim" => out.dim = positive(&flag, &value()?)?,
            "--heads" => out.heads = positive(&flag, &value()?)?,
            "--ffn" => out.ffn = positive(&flag, &value()?)?,
            "--vocab" => out.vocab = positive(&flag, &value()?)?,
            "--max-seq-len" => out.max_seq_len = positive(&flag, &value()?)?,
            "--batch" => out.batch = positive(&flag, &value()?)?,
            "--seq" => out.seq = positive(&flag, &value()?)?,
            "--min-len" => out.min_len = Some(positive(&flag, &value()?)?),
            "--lr" => out.lr = float(&flag, &value()?)?,
            "--clip" => out.clip = float(&flag, &value()?)?,
            "--weight-decay" => out.weight_decay = non_negative(&flag, &value()?)?,
            "--label-smoothing" => out.label_smoothing = non_negative(&flag, &value()?)?,
            "--threads" => out.threads = Some(positive(&flag, &value()?)?),
            "--warmup" => out.warmup = number(&flag, &value()?)?,
            "--steps" => out.steps = positive(&flag, &value()?)?,
            "--seed" => out.seed = number(&flag, &value()?)? as u64,
            "--dump-weights" => out.dump = Some(value()?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}").into()),
        }
    }
    if out.seq < 2 || out.seq > out.max_seq_len {
        return Err(format!(
            "--seq must be in 2..={} (--max-seq-len), got {}",
            out.max_seq_len, out.seq
        )
        .into());
    }
    if out.min_len() < 2 || out.min_len() > out.seq {
        return Err(format!("--min-len must be in 2..={} (--seq)", out.seq).into());
    }
    if out.vocab <= SPECIAL_IDS {
        return Err(format!("--vocab must exceed the {SPECIAL_IDS} special ids").into());
    }
    if out.label_smoothing >= 1.0 {
        return Err("--label-smoothing must be below 1".into());
    }
    Ok(out)
}

/// Ids below this are `<pad> <unk> <s> </s>`; pieces are drawn above.
const SPECIAL_IDS: usize = 4;

impl Args {
    fn min_len(&self) -> usize {
        self.min_len.unwrap_or(self.seq - self.seq / 8)
    }

    /// The decoder of these shapes, as `train.rs`'s `model_config` builds it.
    fn model_config(&self) -> Result<SonarDecoderConfig> {
        if !self.dim.is_multiple_of(self.heads) {
            return Err(format!(
                "--dim {} is not divisible by {} heads",
                self.dim, self.heads
            )
            .into());
        }
        Ok(SonarDecoderConfig {
            vocab_size: self.vocab,
            model_dim: self.dim,
            num_layers: self.layers,
            num_heads: self.heads,
            ffn_inner_dim: self.ffn,
            max_seq_len: self.max_seq_len,
            pad_idx: SpecialIds::SONAR.pad as usize,
        })
    }

    /// Decoder-input length (prompt + pieces) of row `i`: evenly spread from `seq` (row 0)
    /// down to `min_len` (the last row). `bench/train_decoder.py` uses the same rule.
    fn row_len(&self, i: usize) -> usize {
        let span = self.seq - self.min_len();
        if self.batch == 1 {
            return self.seq;
        }
        self.seq - (i * span + (self.batch - 1) / 2) / (self.batch - 1)
    }
}

fn number(flag: &str, v: &str) -> Result<usize> {
    v.parse()
        .map_err(|_| format!("{flag} needs a non-negative integer, got `{v}`").into())
}

fn positive(flag: &str, v: &str) -> Result<usize> {
    match number(flag, v)? {
        0 => Err(format!("{flag} must be positive").into()),
        n => Ok(n),
    }
}

fn float(flag: &str, v: &str) -> Result<f64> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("{flag} needs a positive number, got `{v}`").into()),
    }
}

fn non_negative(flag: &str, v: &str) -> Result<f64> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("{flag} needs a non-negative number, got `{v}`").into()),
    }
}

/// The trainer's initialisation (`train.rs`'s `init_weights`, private there): matrices and
/// the embedding `N(0, 1/fan_in)`, layer-norm gains 1, biases 0, variables in name order on
/// the training loop's initialisation stream.
fn init_weights(varmap: &VarMap, seed: u64) -> Result<()> {
    lcm_train::run::reinit_vars(varmap, seed, |name, var, rng| {
        let fresh = match *var.dims() {
            [rows, fan_in] => {
                let std = 1.0 / (fan_in as f64).sqrt();
                let values: Vec<f32> = (0..rows * fan_in)
                    .map(|_| (lcm_util::random::standard_normal(rng) * std) as f32)
                    .collect();
                Tensor::from_vec(values, (rows, fan_in), var.device())?
            }
            [n] if name.ends_with("weight") => Tensor::ones(n, DType::F32, var.device())?,
            _ => return Ok(None),
        };
        Ok(Some(fresh))
    })?;
    Ok(())
}

/// The fixed batch: token pieces per sentence (the trainer's `train_pieces`) and the concepts
/// (`train_vectors`, row-major `[N, D]`).
struct RandomData {
    pieces: Vec<Vec<u32>>,
    vectors: Vec<f32>,
}

fn random_data(args: &Args, rng: &mut TrainRng) -> RandomData {
    let pieces = (0..args.batch)
        .map(|i| {
            // input = [prompt, pieces…]: row_len − |prompt| pieces.
            (0..args.row_len(i) - PROMPT.len())
                .map(|_| rng.random_range(SPECIAL_IDS as u32..args.vocab as u32))
                .collect()
        })
        .collect();
    let mut vectors = Vec::with_capacity(args.batch * args.dim);
    for _ in 0..args.batch {
        let v: Vec<f64> = (0..args.dim)
            .map(|_| lcm_util::random::standard_normal(rng))
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        vectors.extend(v.iter().map(|x| (x / norm) as f32));
    }
    RandomData { pieces, vectors }
}

/// What one step returns.
struct StepOut {
    loss: f64,
    grad_norm: f64,
    tokens: usize,
}

/// The trainer's step on candle (`DecoderTrainer::step` in `train.rs`, without its
/// bookkeeping): batch, forward, token loss, finiteness check, backward, clip, AdamW.
fn candle_step(
    model: &SonarDecoder,
    opt: &mut AdamW,
    data: &RandomData,
    args: &Args,
    device: &Device,
) -> Result<StepOut> {
    let rows: Vec<usize> = (0..args.batch).collect();
    let batch = make_batch(&rows, &data.pieces, &data.vectors, args.dim, device)?;
    let logits = model.forward_train(&batch.conditioning, &batch.input)?;
    let (loss, _nll_sum, _count) = token_loss(
        &logits,
        &batch.target,
        SpecialIds::SONAR.pad,
        args.label_smoothing,
    )?;
    let loss_value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if !loss_value.is_finite() {
        return Err(format!("non-finite loss {loss_value}").into());
    }
    let mut grads = loss.backward()?;
    let grad_norm = opt.clip_grad_norm(&mut grads, args.clip)?;
    opt.step(&grads)?;
    Ok(StepOut {
        loss: loss_value,
        grad_norm,
        tokens: batch.tokens,
    })
}

/// The trainer's step on the fused engine (`DecoderTrainer::step`'s fused branch, without
/// its bookkeeping): batch, then `FusedDecoder::train_step` (refresh, data-parallel loss and
/// gradients, finiteness check, clip, AdamW).
fn fused_step(
    fused: &mut FusedDecoder,
    opt: &mut AdamW,
    data: &RandomData,
    args: &Args,
    device: &Device,
    step: u64,
) -> Result<StepOut> {
    let rows: Vec<usize> = (0..args.batch).collect();
    let batch = make_batch(&rows, &data.pieces, &data.vectors, args.dim, device)?;
    let out = fused.train_step(
        opt,
        &batch.for_engine(args.label_smoothing),
        args.clip,
        step,
    )?;
    Ok(StepOut {
        loss: out.loss.mean(),
        grad_norm: out.grad_norm,
        tokens: batch.tokens,
    })
}

/// Peak resident memory of this process so far (`VmHWM`), in MB; `None` off Linux.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if !n.is_multiple_of(2) {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Nominal matrix-product FLOPs of one training step: forward plus the input and weight
/// gradients of every product (3× the forward) over all `N × T` padded positions (both
/// frameworks compute them), attention over the full `T × T` square, the tied output
/// projection, and the per-sentence cross-attention value/output projections.
fn step_flops(args: &Args) -> f64 {
    let (n, t) = (args.batch as f64, args.seq as f64);
    let (d, f, v) = (args.dim as f64, args.ffn as f64, args.vocab as f64);
    let rows = n * t;
    let layer = 2.0 * rows * (4.0 * d * d + 2.0 * d * f)
        + 2.0 * 2.0 * n * t * t * d
        + 2.0 * n * 2.0 * d * d;
    let forward = args.layers as f64 * layer + 2.0 * rows * d * v;
    3.0 * forward
}

fn num_parameters(varmap: &VarMap) -> usize {
    varmap.all_vars().iter().map(|v| v.elem_count()).sum()
}

/// Writes the weights and a probe for `bench/train_decoder.py --check`.
fn dump(
    dir: &Path,
    model: &SonarDecoder,
    varmap: &VarMap,
    opt: &mut AdamW,
    data: &RandomData,
    args: &Args,
    device: &Device,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    varmap.save(dir.join("weights.safetensors"))?;
    let rows: Vec<usize> = (0..args.batch).collect();
    let batch = make_batch(&rows, &data.pieces, &data.vectors, args.dim, device)?;
    let (n, t) = batch.input.dims2()?;
    let logits = model.forward_train(&batch.conditioning, &batch.input)?;
    let (loss, nll_sum, count) = token_loss(
        &logits,
        &batch.target,
        SpecialIds::SONAR.pad,
        args.label_smoothing,
    )?;
    let mut grads = loss.backward()?;
    let mut probe: HashMap<String, Tensor> = HashMap::new();
    for (name, var) in varmap.data().lock().map_err(|_| "VarMap poisoned")?.iter() {
        if let Some(g) = grads.get(var.as_tensor()) {
            probe.insert(format!("grad.{name}"), g.copy()?);
        }
    }
    let grad_norm = opt.clip_grad_norm(&mut grads, args.clip)?;
    opt.step(&grads)?;
    drop(grads);
    // The loss of the same batch after one clipped AdamW step: checks clip and update.
    let logits_after = model.forward_train(&batch.conditioning, &batch.input)?;
    let (loss_after, _, _) = token_loss(
        &logits_after,
        &batch.target,
        SpecialIds::SONAR.pad,
        args.label_smoothing,
    )?;
    let scalar = |x: f64| Tensor::new(&[x], device);
    let shown = n.min(4);
    probe.insert("input".into(), batch.input.to_dtype(DType::I64)?);
    probe.insert(
        "target".into(),
        Tensor::from_vec(batch.target.clone(), (n, t), device)?.to_dtype(DType::I64)?,
    );
    probe.insert("conditioning".into(), batch.conditioning.clone());
    probe.insert(
        "positions".into(),
        sinusoidal_positions(
            args.max_seq_len,
            args.dim,
            SpecialIds::SONAR.pad as usize,
            DType::F32,
            device,
        )?,
    );
    probe.insert("logits_head".into(), logits.narrow(0, 0, shown)?.copy()?);
    probe.insert(
        "loss".into(),
        scalar(loss.to_dtype(DType::F64)?.to_scalar()?)?,
    );
    probe.insert("nll_sum".into(), scalar(nll_sum)?);
    probe.insert("count".into(), scalar(count as f64)?);
    probe.insert("tokens".into(), scalar(batch.tokens as f64)?);
    probe.insert("grad_norm".into(), scalar(grad_norm)?);
    probe.insert(
        "loss_after_step".into(),
        scalar(loss_after.to_dtype(DType::F64)?.to_scalar()?)?,
    );
    let hyper = [
        ("lr", args.lr),
        ("clip", args.clip),
        ("weight_decay", args.weight_decay),
        ("label_smoothing", args.label_smoothing),
        ("layers", args.layers as f64),
        ("heads", args.heads as f64),
        ("ffn", args.ffn as f64),
        ("max_seq_len", args.max_seq_len as f64),
    ];
    for (k, v) in hyper {
        probe.insert(format!("config.{k}"), scalar(v)?);
    }
    candle_core::safetensors::save(&probe, dir.join("probe.safetensors"))?;
    eprintln!(
        "[lcm] wrote {} and {} (loss {:.6}, grad norm {grad_norm:.6}, loss after one step {:.6})",
        dir.join("weights.safetensors").display(),
        dir.join("probe.safetensors").display(),
        loss.to_dtype(DType::F64)?.to_scalar::<f64>()?,
        loss_after.to_dtype(DType::F64)?.to_scalar::<f64>()?,
    );
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    if let Some(n) = args.threads {
        match std::env::var("RAYON_NUM_THREADS") {
            Ok(v) if v != n.to_string() => {
                return Err(format!("--threads {n} contradicts RAYON_NUM_THREADS={v}").into());
            }
            Ok(_) => {}
            // SAFETY: no other thread exists yet (nothing has started rayon or candle); candle
            // reads this variable to size its matrix products' parallelism.
            Err(_) => unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) },
        }
    }
    let device = Device::Cpu;
    let cfg = args.model_config()?;
    let varmap = VarMap::new();
    let model = SonarDecoder::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    init_weights(&varmap, args.seed)?;
    let params = num_parameters(&varmap);
    let mut opt = AdamW::from_varmap(
        &varmap,
        AdamWConfig {
            lr: args.lr,
            weight_decay: args.weight_decay,
            ..AdamWConfig::default()
        },
        default_decay_filter,
    )?;
    let data = random_data(&args, &mut new_rng(args.seed.wrapping_add(1)));

    if let Some(dir) = &args.dump {
        return dump(dir, &model, &varmap, &mut opt, &data, &args, &device);
    }
    // Bound once, as the trainer binds it; no fallback to candle: a refusal is an error.
    let mut fused = match args.engine {
        Engine::Fused => Some(FusedDecoder::new(&cfg, &varmap)?),
        Engine::Candle => None,
    };
    let replicas = fused.as_ref().map(FusedDecoder::replicas);

    let threads = rayon::current_num_threads();
    eprintln!(
        "[lcm] decoder {} layers, d {}, {} heads, FFN {}, vocab {}: {params} parameters; \
         batch {} x {} (inputs {}..={} tokens); engine {}{}, {threads} threads",
        args.layers,
        args.dim,
        args.heads,
        args.ffn,
        args.vocab,
        args.batch,
        args.seq,
        args.min_len(),
        args.seq,
        args.engine.name(),
        replicas.map_or(String::new(), |n| format!(" ({n} replicas)")),
    );
    let mut times = Vec::with_capacity(args.steps);
    let mut losses = Vec::with_capacity(args.warmup + args.steps);
    let mut grad_norms = Vec::with_capacity(args.warmup + args.steps);
    let mut tokens = 0;
    for i in 0..args.warmup + args.steps {
        let t0 = Instant::now();
        let out = match fused.as_mut() {
            None => candle_step(&model, &mut opt, &data, &args, &device)?,
            Some(fused) => fused_step(fused, &mut opt, &data, &args, &device, i as u64 + 1)?,
        };
        let dt = t0.elapsed().as_secs_f64();
        let phase = if i < args.warmup { "warm-up" } else { "timed" };
        eprintln!(
            "[lcm] train {phase} {}: {:.1} ms (loss {:.4}, grad norm {:.3})",
            i + 1,
            dt * 1e3,
            out.loss,
            out.grad_norm
        );
        losses.push(out.loss);
        grad_norms.push(out.grad_norm);
        tokens = out.tokens;
        if i >= args.warmup {
            times.push(dt);
        }
    }
    let med = median(&times);
    let flops = step_flops(&args);
    let report = json!({
        "framework": "lcm",
        "task": "train",
        "model": "sonar_decoder",
        "engine": args.engine.name(),
        "replicas": replicas,
        "params": params,
        "layers": args.layers,
        "dim": args.dim,
        "heads": args.heads,
        "ffn": args.ffn,
        "vocab": args.vocab,
        "batch": args.batch,
        "seq": args.seq,
        "min_len": args.min_len(),
        "tokens_per_step": tokens,
        "padded_positions": args.batch * args.seq,
        "threads": threads,
        "warmup": args.warmup,
        "steps": times.len(),
        "step_s": times,
        "median_step_s": med,
        "steps_per_s": 1.0 / med,
        "tokens_per_s": tokens as f64 / med,
        "first_loss": losses.first(),
        "last_loss": losses.last(),
        "first_grad_norm": grad_norms.first(),
        "flops_per_step": flops,
        "peak_rss_mb": peak_rss_mb(),
    });
    println!("{report}");
    Ok(())
}
