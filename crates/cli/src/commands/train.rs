//! `lcm train`: flags → [`lcm_workflows::train()`] (which also draws `loss.png`) → one
//! summary line, with a progress bar meanwhile.

use std::path::PathBuf;

use anyhow::{Context, Result};
use lcm_data::batch::SourceMixture;
use lcm_model::builder::ModelKind;
use lcm_workflows::eos_embedding;
use lcm_workflows::fused::Engine;
use lcm_workflows::train::{TrainConfig, TrainingInputs, UpdateRule, train};

use super::EncoderArgs;
use crate::progress::Progress;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Model {
    Base,
    TwoTower,
    OneTower,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum EngineArg {
    Fused,
    Candle,
}

/// `--optimizer`: the update rule of the inner steps.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum OptimizerArg {
    /// AdamW with PyTorch's update order (the LCM recipe).
    Adamw,
    /// Plain SGD (`w ← w − lr·g`), the reference federated averaging is checked against.
    Sgd,
}

impl OptimizerArg {
    pub fn rule(self) -> UpdateRule {
        match self {
            OptimizerArg::Adamw => UpdateRule::AdamW,
            OptimizerArg::Sgd => UpdateRule::Sgd,
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Concept store (directory of shards or one .parquet file).
    store: PathBuf,
    /// Architecture.
    #[arg(long, value_enum, default_value = "base")]
    model: Model,
    /// Model size: tiny, small, 1.6b (7b for two-tower). The input dimension is the store's.
    #[arg(long, default_value = "small")]
    preset: String,
    /// Total optimiser steps (with --resume: the step to continue up to).
    #[arg(long)]
    steps: u64,
    /// Run directory: config.json, metrics.jsonl (and TensorBoard events.out.tfevents.*),
    /// checkpoints/ and loss.png.
    #[arg(long, short)]
    out: PathBuf,
    /// Normaliser (default: STORE/normalizer.safetensors).
    #[arg(long)]
    normalizer: Option<PathBuf>,
    /// Continue from the newest checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// Peak learning rate.
    #[arg(long, default_value_t = 4e-4)]
    lr: f64,
    /// Linear warm-up steps (default: 5% of --steps, at most 1000).
    #[arg(long)]
    warmup_steps: Option<u64>,
    /// Concepts per batch, padding included.
    #[arg(long, default_value_t = 4096)]
    max_concepts: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Validation every N steps (0: only at the end).
    #[arg(long, default_value_t = 100)]
    eval_every: u64,
    /// Checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
    /// Newest checkpoints kept (0: all).
    #[arg(long, default_value_t = 3)]
    keep_last: usize,
    /// Fraction of documents held out for validation.
    #[arg(long, default_value_t = 0.01)]
    valid_fraction: f64,
    /// Stop (with a checkpoint) after this step although the LR schedule spans --steps;
    /// continue later with --resume.
    #[arg(long)]
    stop_at: Option<u64>,
    /// Wall-clock budget: stop (validated and checkpointed) once it is spent.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Training engine: `fused` (hand-written forward/backward over flat buffers, for
    /// Base-LCM, Two-Tower and One-Tower) or `candle` (autograd, the reference).
    #[arg(long, value_enum, default_value = "fused")]
    engine: EngineArg,
    /// Sampling weights by document source, `SOURCE=WEIGHT,…` (`*` for every source not
    /// named): each epoch draws the sources in these proportions, repeating small ones and
    /// subsampling large ones (default: the store's own proportions).
    #[arg(long, value_parser = parse_mixture)]
    mix: Option<SourceMixture>,
    /// Update rule: `adamw` or plain `sgd`.
    #[arg(long, value_enum, default_value = "adamw")]
    optimizer: OptimizerArg,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    encoder: EncoderArgs,
}

fn parse_mixture(text: &str) -> std::result::Result<SourceMixture, String> {
    SourceMixture::parse(text).map_err(|e| e.to_string())
}

pub fn run(args: Args) -> Result<()> {
    let inputs = TrainingInputs::open(&args.store, args.normalizer.as_deref())?;
    let what = format!("the store {}", args.store.display());
    let encoder = args.encoder.load_for(&inputs.encoder_id, &what)?;
    inputs.check_encoder(&encoder)?;
    let eos = eos_embedding(&encoder)?;
    drop(encoder);

    let model = match args.model {
        Model::Base => ModelKind::Base,
        Model::TwoTower => ModelKind::TwoTower,
        Model::OneTower => ModelKind::OneTower,
    };
    let config = TrainConfig {
        model,
        preset: args.preset.clone(),
        steps: args.steps,
        max_concepts: args.max_concepts,
        lr: args.lr,
        warmup_steps: args.warmup_steps.unwrap_or((args.steps / 20).min(1000)),
        eval_every: args.eval_every,
        checkpoint_every: args.checkpoint_every,
        keep_last: args.keep_last,
        seed: args.seed,
        valid_fraction: args.valid_fraction,
        normalizer_path: Some(inputs.normalizer_path.display().to_string()),
        stop_at: args.stop_at,
        max_seconds: args.max_minutes.map(|m| m * 60.0),
        engine: match args.engine {
            EngineArg::Fused => Engine::Fused,
            EngineArg::Candle => Engine::Candle,
        },
        optimizer: args.optimizer.rule(),
        mixture: args.mix.clone(),
        ..TrainConfig::default()
    };

    let bar = Progress::new(args.steps, "steps", args.quiet);
    let mut first = true;
    let summary = train(
        &config,
        &args.store,
        &inputs.normalizer,
        eos,
        &args.out,
        args.resume,
        &mut |m| {
            if first {
                bar.start_at(m.step.saturating_sub(1));
                first = false;
            }
            let valid = m
                .valid_loss
                .map(|v| format!("  valid {v:.4}"))
                .unwrap_or_default();
            bar.update(
                m.step,
                format!(
                    "loss {:.4}{valid}  {:.0} concepts/s ({})",
                    m.loss, m.concepts_per_s, m.engine
                ),
            );
        },
    )
    .with_context(|| format!("training into {}", args.out.display()))?;
    bar.finish();

    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    println!(
        "{} {} ({} parameters): steps {}→{}, loss {}, valid loss {}, {} concepts in {:.1}s; \
         checkpoint {}; metrics {} (plot: loss.png)",
        model.name(),
        args.preset,
        summary.num_parameters,
        summary.start_step,
        summary.final_step,
        fmt(summary.last_loss),
        fmt(summary.last_valid_loss),
        summary.concepts,
        summary.seconds,
        summary
            .checkpoint
            .as_ref()
            .map_or("-".to_string(), |p| p.display().to_string()),
        summary.metrics.display()
    );
    Ok(())
}
