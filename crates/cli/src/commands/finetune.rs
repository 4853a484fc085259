//! `lcm finetune`: flags → [`lcm_workflows::finetune::finetune`] → one summary line, with a
//! progress bar meanwhile.

use std::path::PathBuf;

use anyhow::{Context, Result};
use lcm_workflows::eos_embedding;
use lcm_workflows::finetune::{FinetuneRequest, finetune, finetune_space};
use lcm_workflows::fused::Engine;
use lcm_workflows::train::TrainConfig;

use super::EncoderArgs;
use crate::progress::Progress;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum EngineArg {
    Fused,
    Candle,
}

#[derive(clap::Args)]
pub struct Args {
    /// Pair store: PAIRS/prompt and PAIRS/answer, both made by `lcm prepare` from one JSONL of
    /// {"id", "prompt", "answer"} lines (`--text-field prompt` / `--text-field answer`).
    pairs: PathBuf,
    /// The pre-trained model: a run directory (lcm train --out), its checkpoints/ or one
    /// step directory. Kind, preset, wrap length and CFG dropout are taken from it.
    #[arg(long)]
    from: PathBuf,
    /// Total optimiser steps (with --resume: the step to continue up to).
    #[arg(long)]
    steps: u64,
    /// Run directory (the layout of `lcm train --out`).
    #[arg(long, short)]
    out: PathBuf,
    /// Normaliser (default: the one the pre-trained run recorded; checked by hash).
    #[arg(long)]
    normalizer: Option<PathBuf>,
    /// Continue from the newest checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-4)]
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
    /// Fraction of pairs (by id hash) held out for the validation loss.
    #[arg(long, default_value_t = 0.01)]
    valid_fraction: f64,
    /// Stop (with a checkpoint) after this step; continue later with --resume.
    #[arg(long)]
    stop_at: Option<u64>,
    /// Wall-clock budget: stop (validated and checkpointed) once it is spent.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Training engine: `fused` or `candle` (autograd, the reference).
    #[arg(long, value_enum, default_value = "fused")]
    engine: EngineArg,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    encoder: EncoderArgs,
}

pub fn run(args: Args) -> Result<()> {
    // The space's encoder embeds the end-of-text concept that closes every answer.
    let space = finetune_space(&args.from, &args.pairs)?;
    let what = format!("the model {}", args.from.display());
    let encoder = args.encoder.load_for(&space, &what)?;
    let eos = eos_embedding(&encoder)?;
    drop(encoder);

    let config = TrainConfig {
        steps: args.steps,
        max_concepts: args.max_concepts,
        lr: args.lr,
        warmup_steps: args.warmup_steps.unwrap_or((args.steps / 20).min(1000)),
        eval_every: args.eval_every,
        checkpoint_every: args.checkpoint_every,
        keep_last: args.keep_last,
        seed: args.seed,
        valid_fraction: args.valid_fraction,
        stop_at: args.stop_at,
        max_seconds: args.max_minutes.map(|m| m * 60.0),
        engine: match args.engine {
            EngineArg::Fused => Engine::Fused,
            EngineArg::Candle => Engine::Candle,
        },
        ..TrainConfig::default()
    };
    let bar = Progress::new(args.steps, "steps", args.quiet);
    let mut first = true;
    let summary = finetune(
        FinetuneRequest {
            from: &args.from,
            pairs: &args.pairs,
            out_dir: &args.out,
            normalizer: args.normalizer.as_deref(),
            eos,
            config,
            resume: args.resume,
        },
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
    .with_context(|| format!("fine-tuning into {}", args.out.display()))?;
    bar.finish();

    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    let t = &summary.train;
    println!(
        "fine-tuned {} (step {}) on {} pairs ({} prompts cut to fit, {} pairs too long): \
         steps {}→{}, loss {}, valid loss {}, {} concepts in {:.1}s; checkpoint {}; metrics {}",
        summary.from_checkpoint.display(),
        summary.from_step,
        summary.pairs.pairs,
        summary.pairs.truncated_prompts,
        summary.pairs.skipped_too_long,
        t.start_step,
        t.final_step,
        fmt(t.last_loss),
        fmt(t.last_valid_loss),
        t.concepts,
        t.seconds,
        t.checkpoint
            .as_ref()
            .map_or("-".to_string(), |p| p.display().to_string()),
        t.metrics.display()
    );
    Ok(())
}
