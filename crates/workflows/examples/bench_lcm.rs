//! Training and generation speed of the Base-LCM and Two-Tower LCM on random data; the Rust
//! half of `bench/train_lcm.sh`, whose PyTorch half is `bench/train_lcm.py`.
//!
//! ```text
//! cargo build --release -p lcm-workflows --example bench_lcm
//! RAYON_NUM_THREADS=2 target/release/examples/bench_lcm [--models base,two_tower]
//!     [--preset small|tiny] [--batch 32] [--seq 128] [--input-dim 384]
//!     [--warmup 2] [--steps 5] [--gen-context 16] [--gen-steps 40]
//!     [--gen-warmup 2] [--gen-repeat 10] [--clip 25] [--lr 4e-4] [--seed 0]
//!     [--no-train] [--no-generate] [--dump DIR] [--engine fused,candle]
//! ```
//!
//! Prints one JSON object per measurement on stdout (progress goes to stderr):
//! - `"task": "train"`: one step is forward, loss (`BaseLcm::loss` /
//!   `TwoTowerLcm::loss_sampled` with CFG dropout 0.15), backward, global grad-norm clipping
//!   and AdamW, exactly what `lcm_workflows::train` does per step, on one fixed seeded batch.
//!   `"engine"` says which code computed it: `fused` (`lcm-engine`, the trainer's default)
//!   or `candle` (autograd); `--engine` picks them (default: both, for both models).
//! - `"task": "generate"`: wall time for one generated concept after a prefilled prompt. For
//!   the Two-Tower model that is `S` guided DDIM steps (a conditional and an unconditional
//!   denoiser call each, `SamplingOptions::paper_two_tower_1_6b`) plus feeding the result
//!   back into the KV-cached contextualizer; for the Base-LCM one KV-cached decoder step.
//!   The Two-Tower model is measured twice from the same noise: `"engine": "candle"` (two
//!   `TwoTowerLcm::predict` calls per step) and `"engine": "fused"` (what `lcm generate`
//!   runs: `lcm_workflows::fused_generate::Generator`, the denoiser on the fused engine).
//!
//! Warm-up iterations are excluded; the median of the timed ones is reported.
//!
//! `--dump DIR` also writes each model's initial weights and a deterministic probe (inputs and
//! outputs of `forward`/`loss`/`predict`/a guided DDIM run) as safetensors, which
//! `bench/train_lcm.py --check DIR` replays through the PyTorch port: the two sides are then
//! known to compute the same function, not just to have the same parameter count.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_model::base_lcm::{BaseLcm, BaseLcmConfig};
use lcm_model::builder::ModelConfig;
use lcm_model::diffusion::{
    DdimSampler, NoiseSchedule, NoiseScheduleConfig, SamplingOptions, TimestepSpacing,
};
use lcm_model::generate::{DiffusionSampling, Lcm, LcmState};
use lcm_model::presets;
use lcm_model::two_tower::{TwoTowerConfig, TwoTowerLcm, standard_normal};
use lcm_train::{AdamW, AdamWConfig, TrainRng, default_decay_filter, new_rng};
use lcm_workflows::fused::{Engine, FusedLcm};
use lcm_workflows::fused_generate::Generator;
use serde_json::json;

/// CFG dropout of the paper's Two-Tower recipe (and the trainer's default).
const CFG_DROPOUT: f64 = 0.15;

#[derive(Debug, Clone)]
struct Args {
    base: bool,
    two_tower: bool,
    preset: String,
    batch: usize,
    seq: usize,
    input_dim: Option<usize>,
    warmup: usize,
    steps: usize,
    gen_context: usize,
    gen_steps: usize,
    gen_warmup: usize,
    gen_repeat: usize,
    clip: f64,
    lr: f64,
    seed: u64,
    train: bool,
    generate: bool,
    dump: Option<std::path::PathBuf>,
    engines: Vec<Engine>,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            base: true,
            two_tower: true,
            preset: "small".into(),
            batch: 32,
            seq: 128,
            input_dim: None,
            warmup: 2,
            steps: 5,
            gen_context: 16,
            gen_steps: 40,
            gen_warmup: 2,
            gen_repeat: 10,
            // The trainer's defaults (`TrainConfig::default`).
            clip: 25.0,
            lr: 4e-4,
            seed: 0,
            train: true,
            generate: true,
            dump: None,
            engines: vec![Engine::Fused, Engine::Candle],
        }
    }
}

const USAGE: &str = "usage: bench_lcm [--models base,two_tower] [--preset small|tiny] \
    [--batch N] [--seq N] [--input-dim N] [--warmup N] [--steps N] [--gen-context N] \
    [--gen-steps N] [--gen-warmup N] [--gen-repeat N] [--clip X] [--lr X] [--seed N] \
    [--no-train] [--no-generate] [--dump DIR] [--engine fused,candle]";

fn parse_args() -> Result<Args> {
    let mut out = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--models" => {
                let v = value()?;
                out.base = false;
                out.two_tower = false;
                for m in v.split(',') {
                    match m.trim() {
                        "base" => out.base = true,
                        "two_tower" => out.two_tower = true,
                        other => bail!("unknown model `{other}` (base, two_tower)"),
                    }
                }
            }
            "--preset" => out.preset = value()?,
            "--batch" => out.batch = positive(&flag, &value()?)?,
            "--seq" => out.seq = positive(&flag, &value()?)?,
            "--input-dim" => out.input_dim = Some(positive(&flag, &value()?)?),
            "--warmup" => out.warmup = number(&flag, &value()?)?,
            "--steps" => out.steps = positive(&flag, &value()?)?,
            "--gen-context" => out.gen_context = positive(&flag, &value()?)?,
            "--gen-steps" => out.gen_steps = positive(&flag, &value()?)?,
            "--gen-warmup" => out.gen_warmup = number(&flag, &value()?)?,
            "--gen-repeat" => out.gen_repeat = positive(&flag, &value()?)?,
            "--clip" => out.clip = float(&flag, &value()?)?,
            "--lr" => out.lr = float(&flag, &value()?)?,
            "--seed" => out.seed = number(&flag, &value()?)? as u64,
            "--no-train" => out.train = false,
            "--no-generate" => out.generate = false,
            "--dump" => out.dump = Some(value()?.into()),
            "--engine" => {
                out.engines = value()?
                    .split(',')
                    .map(|e| Ok(Engine::parse(e.trim())?))
                    .collect::<Result<_>>()?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    if out.seq < 2 {
        bail!("--seq must be at least 2 (the Base-LCM loss predicts position i+1 from i)");
    }
    Ok(out)
}

fn number(flag: &str, v: &str) -> Result<usize> {
    v.parse()
        .with_context(|| format!("{flag} needs a non-negative integer, got `{v}`"))
}

fn positive(flag: &str, v: &str) -> Result<usize> {
    match number(flag, v)? {
        0 => bail!("{flag} must be positive"),
        n => Ok(n),
    }
}

fn float(flag: &str, v: &str) -> Result<f64> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => bail!("{flag} needs a positive number, got `{v}`"),
    }
}

fn configs(args: &Args) -> Result<(BaseLcmConfig, TwoTowerConfig)> {
    let (mut base, mut tt) = match args.preset.as_str() {
        "small" => (presets::base_lcm_small(), presets::two_tower_small()),
        "tiny" => (presets::base_lcm_tiny(), presets::two_tower_tiny()),
        other => bail!("unknown preset `{other}` (small, tiny)"),
    };
    if let Some(d) = args.input_dim {
        base.input_dim = d;
        tt.input_dim = d;
    }
    // RoPE tables are built for `max_seq_len` positions; longer runs would be refused.
    let longest = args.seq.max(args.gen_context + 1);
    for (name, max) in [
        ("base", base.decoder.max_seq_len),
        ("two_tower", tt.max_seq_len),
    ] {
        if longest > max {
            bail!(
                "{name} preset `{}` supports {max} positions, asked for {longest}",
                args.preset
            );
        }
    }
    Ok((base, tt))
}

/// Seeded initialisation as the trainer does it, then the parameter count, checked against
/// the configuration's analytic count.
fn init_and_count(varmap: &VarMap, seed: u64, name: &str, analytic: usize) -> Result<usize> {
    lcm_train::run::seeded_init(varmap, seed)?;
    let params = num_parameters(varmap);
    if params != analytic {
        bail!("{name}: VarMap holds {params} parameters, the analytic count is {analytic}");
    }
    Ok(params)
}

/// The trainer's optimiser: AdamW with the project defaults and weight decay on matrices.
fn optimizer(varmap: &VarMap, lr: f64) -> Result<AdamW> {
    Ok(AdamW::from_varmap(
        varmap,
        AdamWConfig {
            lr,
            ..AdamWConfig::default()
        },
        default_decay_filter,
    )?)
}

fn num_parameters(varmap: &VarMap) -> usize {
    varmap.all_vars().iter().map(|v| v.elem_count()).sum()
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

/// Times `warmup + steps` calls of `step`, returning the timed durations in seconds and the
/// values `step` returned (losses, for a sanity check against PyTorch).
fn time_steps<F>(
    warmup: usize,
    steps: usize,
    label: &str,
    mut step: F,
) -> Result<(Vec<f64>, Vec<f64>)>
where
    F: FnMut() -> Result<f64>,
{
    let mut times = Vec::with_capacity(steps);
    let mut values = Vec::with_capacity(warmup + steps);
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        let v = step()?;
        let dt = t0.elapsed().as_secs_f64();
        values.push(v);
        let phase = if i < warmup { "warm-up" } else { "timed" };
        eprintln!(
            "[lcm] {label} {phase} {}: {:.1} ms (value {v:.4})",
            i + 1,
            dt * 1e3
        );
        if i >= warmup {
            times.push(dt);
        }
    }
    Ok((times, values))
}

/// One optimiser step with the trainer's sequence: mean loss, backward, clip, AdamW.
fn optimiser_step(
    opt: &mut AdamW,
    loss: lcm_model::base_lcm::SummedLoss,
    clip: f64,
) -> Result<f64> {
    let mean = loss.mean()?;
    // Read the loss like the trainer does (it checks it is finite before stepping).
    let value = mean.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if !value.is_finite() {
        bail!("non-finite loss {value}");
    }
    let mut grads = mean.backward()?;
    opt.clip_grad_norm(&mut grads, clip)?;
    opt.step(&grads)?;
    Ok(value)
}

/// Peak resident memory of this process so far (`VmHWM`), in MB; `None` off Linux.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Nominal matrix-product FLOPs of one Base-LCM training step: forward plus the input and
/// weight gradients of every product (3× the forward), attention over the full `T × T`
/// square (the causal half is not discounted, as PyTorch's SDPA computes it too).
fn base_step_flops(cfg: &BaseLcmConfig, batch: usize, seq: usize) -> f64 {
    let dec = &cfg.decoder;
    let (t, dd, d, f) = (seq - 1, cfg.input_dim, dec.d_model, dec.ffn_inner_dim);
    let n = (batch * t) as f64;
    let layer = 2.0 * n * (d * 3 * d + d * d + d * 2 * f + f * d) as f64
        + 2.0 * 2.0 * (batch * t * t * d) as f64;
    let forward = 2.0 * n * (2 * dd * d) as f64 + dec.n_layers as f64 * layer;
    3.0 * forward
}

/// Nominal matrix-product FLOPs of one Two-Tower training step, counted as for
/// [`base_step_flops`]: the contextualizer over all `T` positions, the denoiser's
/// modulation, value/output (identity self-attention), query, packed key/value over the
/// `T + 1` keys, cross-attention over the `T × (T + 1)` rectangle and SwiGLU per layer, the
/// timestep MLP and the in/out projections.
fn two_tower_step_flops(cfg: &TwoTowerConfig, batch: usize, seq: usize) -> f64 {
    let (t, dd, d, f, phi) = (
        seq,
        cfg.input_dim,
        cfg.d_model,
        cfg.ffn_inner_dim,
        cfg.timestep_freq_dim,
    );
    let n = (batch * t) as f64;
    let nk = (batch * (t + 1)) as f64;
    let context_layer = 2.0 * n * (d * 3 * d + d * d + d * 2 * f + f * d) as f64
        + 2.0 * 2.0 * (batch * t * t * d) as f64;
    let denoiser_layer = 2.0 * n * (9 * d * d + 2 * d * d + 2 * d * d + 3 * d * f) as f64
        + 2.0 * nk * (2 * d * d) as f64
        + 2.0 * 2.0 * (batch * t * (t + 1) * d) as f64;
    let forward = 2.0 * n * (3 * dd * d + phi * d + d * d) as f64
        + cfg.n_context_layers as f64 * context_layer
        + cfg.n_denoiser_layers as f64 * denoiser_layer;
    3.0 * forward
}

fn train_report(
    model: &str,
    engine: Engine,
    args: &Args,
    params: usize,
    times: &[f64],
    losses: &[f64],
    flops_per_step: Option<f64>,
) -> serde_json::Value {
    let med = median(times);
    let concepts = args.batch * args.seq;
    json!({
        "framework": "lcm",
        "task": "train",
        "model": model,
        "engine": engine.name(),
        "params": params,
        "batch": args.batch,
        "seq": args.seq,
        "concepts_per_step": concepts,
        "warmup": args.warmup,
        "steps": times.len(),
        "step_s": times,
        "median_step_s": med,
        "steps_per_s": 1.0 / med,
        "concepts_per_s": concepts as f64 / med,
        "first_loss": losses.first(),
        "last_loss": losses.last(),
        "flops_per_step": flops_per_step,
        "peak_rss_mb": peak_rss_mb(),
    })
}

fn gen_report(
    model: &str,
    args: &Args,
    params: usize,
    times: &[f64],
    extra: serde_json::Value,
) -> serde_json::Value {
    let med = median(times);
    let mut v = json!({
        "framework": "lcm",
        "task": "generate",
        "model": model,
        "params": params,
        "context": args.gen_context,
        "warmup": args.gen_warmup,
        "repeat": times.len(),
        "sentence_s": times,
        "median_ms_per_sentence": med * 1e3,
        "peak_rss_mb": peak_rss_mb(),
    });
    if let (Some(obj), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
        obj.extend(e);
    }
    v
}

/// Fixed `[B, T, D]` batch of standard-normal "concepts" and an all-real `[B, T]` mask (the
/// trainer always passes a mask, so the benchmark does too).
fn random_batch(
    args: &Args,
    dim: usize,
    rng: &mut TrainRng,
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    let x = standard_normal(&[args.batch, args.seq, dim], rng, DType::F32, dev)?;
    let mask = Tensor::ones((args.batch, args.seq), DType::F32, dev)?;
    Ok((x, mask))
}

/// Trains `net` for `warmup + steps` steps on one fixed random batch with each engine in
/// `args.engines`, every engine from the same initial weights, a fresh optimiser and the
/// same diffusion randomness, and prints one report per engine.
#[allow(clippy::too_many_arguments)]
fn bench_training(
    args: &Args,
    name: &str,
    net: &Lcm,
    config: &ModelConfig,
    varmap: &VarMap,
    params: usize,
    flops_per_step: f64,
    data_rng: &mut TrainRng,
) -> Result<()> {
    let dim = match config {
        ModelConfig::Base(c) => c.input_dim,
        ModelConfig::TwoTower(c) => c.input_dim,
        ModelConfig::OneTower(c) => c.input_dim,
    };
    let (x, mask) = random_batch(args, dim, data_rng, &Device::Cpu)?;
    let lengths = vec![args.seq; args.batch];
    // Re-running the seeded init would not restore the weights: it skips constant tensors,
    // which the norm gains no longer are after the first engine trained them.
    let initial: Vec<(candle_core::Var, Tensor)> = varmap
        .all_vars()
        .into_iter()
        .map(|v| {
            let t = v.as_tensor().copy()?;
            Ok((v, t))
        })
        .collect::<Result<_>>()?;
    for &engine in &args.engines {
        for (var, t) in &initial {
            var.set(t)?;
        }
        let mut opt = optimizer(varmap, args.lr)?;
        // Timesteps, noise and CFG rows are drawn inside the step, as in the trainer.
        let mut rng = new_rng(args.seed.wrapping_add(2));
        let label = format!("{name} train ({})", engine.name());
        let (times, losses) = match engine {
            Engine::Candle => time_steps(args.warmup, args.steps, &label, || {
                let loss = match net {
                    Lcm::Base(m) => m.loss(&x, Some(&mask))?,
                    Lcm::TwoTower(m, s) => {
                        m.loss_sampled(&x, Some(&mask), s, CFG_DROPOUT, &mut rng)?
                    }
                    Lcm::OneTower(m, s) => {
                        m.loss_sampled(&x, Some(&mask), s, CFG_DROPOUT, &mut rng)?
                    }
                };
                optimiser_step(&mut opt, loss, args.clip)
            })?,
            Engine::Fused => {
                let mut fused = FusedLcm::new(net, config, varmap)?
                    .map_err(|why| anyhow::anyhow!("{name}: {why}"))?;
                time_steps(args.warmup, args.steps, &label, || {
                    // The trainer's sequence: loss, finiteness check, clip, AdamW.
                    let loss = fused
                        .loss_and_gradients(&x, &lengths, CFG_DROPOUT, &mut rng)?
                        .mean();
                    if !loss.is_finite() {
                        bail!("non-finite loss {loss}");
                    }
                    fused.step(&mut opt, args.clip)?;
                    Ok(loss)
                })?
            }
        };
        println!(
            "{}",
            train_report(
                name,
                engine,
                args,
                params,
                &times,
                &losses,
                Some(flops_per_step)
            )
        );
    }
    Ok(())
}

fn bench_base(args: &Args, cfg: &BaseLcmConfig, dev: &Device) -> Result<()> {
    let name = format!("base_lcm_{}", args.preset);
    let varmap = VarMap::new();
    let model = BaseLcm::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, dev))?;
    let params = init_and_count(&varmap, args.seed, &name, cfg.num_parameters())?;
    let mut data_rng = new_rng(args.seed.wrapping_add(1));

    if args.train {
        let net = Lcm::Base(model.clone());
        let flops = base_step_flops(cfg, args.batch, args.seq);
        let config = ModelConfig::Base(cfg.clone());
        bench_training(
            args,
            &name,
            &net,
            &config,
            &varmap,
            params,
            flops,
            &mut data_rng,
        )?;
    }

    if args.generate {
        let prompt = standard_normal(
            &[1, args.gen_context, cfg.input_dim],
            &mut data_rng,
            DType::F32,
            dev,
        )?;
        let mut cache = model.new_cache();
        // Prefill (not timed): the prompt's keys and values go into the cache.
        let prefill = model.forward(&prompt, Some(&mut cache))?;
        let last = prefill.narrow(1, args.gen_context - 1, 1)?;
        let (times, _) = time_steps(
            args.gen_warmup,
            args.gen_repeat,
            &format!("{name} generate"),
            || {
                // Each repetition starts from the same prefilled cache (cheap: tensors are
                // reference-counted), so every timed step attends to the same context length.
                let mut c = cache.clone();
                let next = model.forward(&last, Some(&mut c))?;
                Ok(next.sqr()?.mean_all()?.to_scalar::<f32>()? as f64)
            },
        )?;
        println!(
            "{}",
            gen_report(
                &name,
                args,
                params,
                &times,
                json!({ "what": "one KV-cached decoder step" })
            )
        );
    }
    Ok(())
}

fn bench_two_tower(args: &Args, cfg: &TwoTowerConfig, dev: &Device) -> Result<()> {
    let name = format!("two_tower_{}", args.preset);
    let varmap = VarMap::new();
    let model = TwoTowerLcm::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, dev))?;
    let params = init_and_count(&varmap, args.seed, &name, cfg.num_parameters())?;
    let schedule = NoiseSchedule::new(NoiseScheduleConfig::default())?;
    let mut data_rng = new_rng(args.seed.wrapping_add(1));

    if args.train {
        let net = Lcm::TwoTower(model.clone(), schedule.clone());
        let flops = two_tower_step_flops(cfg, args.batch, args.seq);
        let config = ModelConfig::TwoTower(cfg.clone());
        bench_training(
            args,
            &name,
            &net,
            &config,
            &varmap,
            params,
            flops,
            &mut data_rng,
        )?;
    }

    if args.generate {
        let sampler =
            DdimSampler::new(schedule.clone(), args.gen_steps, TimestepSpacing::Trailing)?;
        let opts = SamplingOptions::paper_two_tower_1_6b();
        let prompt = standard_normal(
            &[1, args.gen_context, cfg.input_dim],
            &mut data_rng,
            DType::F32,
            dev,
        )?;
        let mut state = model.new_context_state();
        // Prefill (not timed).
        model.extend_context(&prompt, &mut state)?;
        let mut rng = new_rng(args.seed.wrapping_add(3));
        let mut denoiser_calls = 0usize;
        let (times, candle_values) = time_steps(
            args.gen_warmup,
            args.gen_repeat,
            &format!("{name} generate"),
            || {
                let randn = standard_normal(&[1, 1, cfg.input_dim], &mut rng, DType::F32, dev)?;
                let mut st = state.clone();
                let context = st.context.clone();
                let latents = sampler.initial_latents(&randn, &opts)?;
                let mut calls = 0usize;
                let x0 = sampler.denoise_guided(latents, &opts, |lat: &Tensor, t: usize| {
                    calls += 2;
                    let cond = model.predict(lat, t, context.as_ref())?;
                    let uncond = model.predict(lat, t, None)?;
                    Ok((cond, uncond))
                })?;
                // The generated concept joins the context, as the next sentence would need.
                model.extend_context(&x0, &mut st)?;
                denoiser_calls = calls;
                Ok(x0.sqr()?.mean_all()?.to_scalar::<f32>()? as f64)
            },
        )?;
        println!(
            "{}",
            gen_report(
                &name,
                args,
                params,
                &times,
                json!({
                    "engine": "candle",
                    "what": "guided DDIM (cond + uncond per step) + contextualizer step",
                    "ddim_steps": sampler.timesteps().len(),
                    "denoiser_calls": denoiser_calls,
                    "guidance_scale": opts.guidance_scale,
                    "guidance_rescale": opts.guidance_rescale,
                }),
            )
        );

        // The same work through what `lcm generate` runs: `Generator` with the denoiser on
        // the fused engine (cond and uncond rows in one call per step, the keys' K|V
        // projected once per sentence), the contextualizer step on candle. Same noise.
        let lcm = Lcm::TwoTower(model.clone(), schedule.clone());
        let sampling = DiffusionSampling {
            steps: args.gen_steps,
            spacing: TimestepSpacing::Trailing,
            options: opts,
        };
        let mut generator = Generator::new(&lcm);
        if !generator.is_fused() {
            bail!("the fused engine refused the Two-Tower model");
        }
        let prefilled = LcmState::TwoTower(state);
        let mut rng = new_rng(args.seed.wrapping_add(3));
        let (times, fused_values) = time_steps(
            args.gen_warmup,
            args.gen_repeat,
            &format!("{name} generate (fused)"),
            || {
                let mut st = prefilled.clone();
                let x0 = generator.next_concept(&st, &sampling, 1, &mut rng)?;
                // The generated concept joins the context, as the next sentence would need.
                lcm.extend(&mut st, &x0)?;
                Ok(x0.sqr()?.mean_all()?.to_scalar::<f32>()? as f64)
            },
        )?;
        // Same noise sentence by sentence: the mean squares of the generated concepts agree.
        for (i, (a, b)) in fused_values.iter().zip(&candle_values).enumerate() {
            if (a - b).abs() > 1e-4 * b.abs().max(1e-6) {
                bail!("sentence {i}: fused generation gives mean square {a}, candle {b}");
            }
        }
        println!(
            "{}",
            gen_report(
                &name,
                args,
                params,
                &times,
                json!({
                    "engine": "fused",
                    "what": "guided DDIM (cond + uncond per step) + contextualizer step",
                    "ddim_steps": sampler.timesteps().len(),
                    "denoiser_calls": denoiser_calls,
                    "guidance_scale": opts.guidance_scale,
                    "guidance_rescale": opts.guidance_rescale,
                }),
            )
        );
    }
    Ok(())
}

/// Probe shapes: small enough to dump, long enough for masks and caches to matter.
const PROBE_BATCH: usize = 2;
const PROBE_SEQ: usize = 8;

/// Every variable random, including the zero-initialised AdaLN modulators (with them at zero
/// every denoiser layer is the identity and a parity check would not see its sub-blocks) and
/// the norm gains (`1 + N(0, 0.1²)`, so a swapped gain shows).
fn probe_init(varmap: &VarMap, seed: u64) -> Result<()> {
    let mut rng = new_rng(seed);
    let mut named: Vec<_> = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("VarMap lock poisoned"))?;
        data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    named.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, var) in named {
        let z = standard_normal(var.dims(), &mut rng, DType::F32, var.device())?;
        let fresh = match var.dims() {
            [_, fan_in] => (z / (*fan_in as f64).sqrt())?,
            _ if name.contains("norm") => (z * 0.1)?.affine(1.0, 1.0)?,
            _ => (z * 0.02)?,
        };
        var.set(&fresh)?;
    }
    Ok(())
}

fn scalar(v: f64, dev: &Device) -> Result<Tensor> {
    Ok(Tensor::new(&[v as f32], dev)?)
}

fn save(dir: &std::path::Path, file: &str, tensors: Vec<(&str, Tensor)>) -> Result<()> {
    let map: std::collections::HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let path = dir.join(file);
    candle_core::safetensors::save(&map, &path)
        .with_context(|| format!("writing {}", path.display()))
}

/// Weights + probe for the Base-LCM: full forward, loss, and a KV-cached last step.
fn dump_base(args: &Args, cfg: &BaseLcmConfig, dir: &std::path::Path, dev: &Device) -> Result<()> {
    let name = format!("base_lcm_{}", args.preset);
    let varmap = VarMap::new();
    let model = BaseLcm::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, dev))?;
    probe_init(&varmap, args.seed.wrapping_add(10))?;
    varmap.save(dir.join(format!("{name}.safetensors")))?;
    let mut rng = new_rng(args.seed.wrapping_add(11));
    let x = standard_normal(
        &[PROBE_BATCH, PROBE_SEQ, cfg.input_dim],
        &mut rng,
        DType::F32,
        dev,
    )?;
    let forward = model.forward(&x, None)?;
    let loss = model.loss(&x, None)?;
    let mut cache = model.new_cache();
    model.forward(&x.narrow(1, 0, PROBE_SEQ - 1)?, Some(&mut cache))?;
    let incremental = model.forward(&x.narrow(1, PROBE_SEQ - 1, 1)?, Some(&mut cache))?;
    save(
        dir,
        &format!("{name}_probe.safetensors"),
        vec![
            ("x", x),
            ("forward", forward),
            ("loss_sum", loss.sum.reshape(1)?),
            ("incremental", incremental),
        ],
    )?;
    eprintln!("[lcm] dumped {name} weights and probe to {}", dir.display());
    Ok(())
}

/// Weights + probe for the Two-Tower LCM: contextualizer (full and KV-cached), the training
/// loss with fixed timesteps/noise/CFG rows, both `predict` branches, and a guided DDIM run.
fn dump_two_tower(
    args: &Args,
    cfg: &TwoTowerConfig,
    dir: &std::path::Path,
    dev: &Device,
) -> Result<()> {
    let name = format!("two_tower_{}", args.preset);
    let varmap = VarMap::new();
    let model = TwoTowerLcm::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, dev))?;
    probe_init(&varmap, args.seed.wrapping_add(20))?;
    varmap.save(dir.join(format!("{name}.safetensors")))?;
    let schedule = NoiseSchedule::new(NoiseScheduleConfig::default())?;
    let mut rng = new_rng(args.seed.wrapping_add(21));
    let (b, t, dd) = (PROBE_BATCH, PROBE_SEQ, cfg.input_dim);
    let x = standard_normal(&[b, t, dd], &mut rng, DType::F32, dev)?;
    let noise = standard_normal(&[b, t, dd], &mut rng, DType::F32, dev)?;
    let timesteps: Vec<usize> = (0..b * t).map(|i| (i * 137 + 11) % 1000).collect();
    let dropped = [2usize, 5];
    let context = model.encode(&x, None)?;
    let loss = model.loss(&x, None, &schedule, &timesteps, &noise, &dropped)?;
    let mut state = model.new_context_state();
    model.extend_context(&x.narrow(1, 0, 5)?, &mut state)?;
    model.extend_context(&x.narrow(1, 5, t - 5)?, &mut state)?;
    let incremental = state.context.clone().context("empty context state")?;
    let noisy = noise.narrow(1, 0, 1)?;
    let cond = model.predict(&noisy, 500, Some(&context))?;
    let uncond = model.predict(&noisy, 500, None)?;
    let sampler = DdimSampler::new(schedule.clone(), args.gen_steps, TimestepSpacing::Trailing)?;
    let opts = SamplingOptions::paper_two_tower_1_6b();
    let randn = standard_normal(&[b, 1, dd], &mut rng, DType::F32, dev)?;
    let ddim = sampler.denoise_guided(
        sampler.initial_latents(&randn, &opts)?,
        &opts,
        |lat: &Tensor, step: usize| {
            Ok((
                model.predict(lat, step, Some(&context))?,
                model.predict(lat, step, None)?,
            ))
        },
    )?;
    let as_f32 = |v: Vec<usize>| -> Result<Tensor> {
        let n = v.len();
        Ok(Tensor::from_vec(
            v.into_iter().map(|u| u as f32).collect::<Vec<_>>(),
            n,
            dev,
        )?)
    };
    save(
        dir,
        &format!("{name}_probe.safetensors"),
        vec![
            ("x", x),
            ("noise", noise),
            ("timesteps", as_f32(timesteps)?),
            ("dropped", as_f32(dropped.to_vec())?),
            ("context", context),
            ("context_incremental", incremental),
            ("loss_sum", loss.sum.reshape(1)?),
            ("predict_t", scalar(500.0, dev)?),
            ("predict_cond", cond),
            ("predict_uncond", uncond),
            ("ddim_randn", randn),
            ("ddim_steps", scalar(args.gen_steps as f64, dev)?),
            ("ddim_x0", ddim),
        ],
    )?;
    eprintln!("[lcm] dumped {name} weights and probe to {}", dir.display());
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    // What `lcm train`, `eval` and `generate` do at start-up; LCM_BENCH_DEFAULT_MALLOC=1
    // measures glibc's defaults instead.
    let tuned = std::env::var_os("LCM_BENCH_DEFAULT_MALLOC").is_none()
        && lcm_train::memory::retain_freed_memory();
    eprintln!("[lcm] allocator keeps freed memory: {tuned}");
    let dev = Device::Cpu;
    let (base, tt) = configs(&args)?;
    eprintln!(
        "[lcm] candle threads {} (RAYON_NUM_THREADS={})",
        candle_core::utils::get_num_threads(),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into())
    );
    if let Some(dir) = &args.dump {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        if args.base {
            dump_base(&args, &base, dir, &dev)?;
        }
        if args.two_tower {
            dump_two_tower(&args, &tt, dir, &dev)?;
        }
    }
    if args.base {
        bench_base(&args, &base, &dev)?;
    }
    if args.two_tower {
        bench_two_tower(&args, &tt, &dev)?;
    }
    Ok(())
}
