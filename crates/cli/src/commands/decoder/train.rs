//! `lcm train-decoder`: flags → [`lcm_decoder::train_decoder`] → a progress bar and the
//! summary. The training loop writes the run folder (loss.png included).

use std::path::PathBuf;

use anyhow::{Context, Result};
use lcm_data::store::ConceptStore;
use lcm_decoder::train::DecoderEngine;
use lcm_decoder::{DecoderTrainConfig, METRICS_FILE, PLOT_FILE, TrainEvent, train_decoder};

use crate::commands::EncoderArgs;
use crate::progress::Progress;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Concept store whose sentences (and vectors) the decoder learns from.
    #[arg(long)]
    data: PathBuf,
    /// Run folder: decoder.json, tokenizer.json, model.safetensors, metrics.jsonl (and
    /// TensorBoard events.out.tfevents.*), loss.png, checkpoints/.
    #[arg(long, short)]
    out: PathBuf,
    /// Encoder of the store (`minilm`, `e5`, `sonar`, an HF repo id or a folder); checked
    /// against the store's encoder id. Default: the one the store records.
    #[arg(long)]
    encoder: Option<String>,
    /// Decoder layers.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Model dimension (default and only choice: the encoder's dimension).
    #[arg(long)]
    dim: Option<usize>,
    #[arg(long, default_value_t = 6)]
    heads: usize,
    /// Feed-forward inner dimension.
    #[arg(long, default_value_t = 1536)]
    ffn: usize,
    /// Byte-level BPE vocabulary size (4 specials included).
    #[arg(long, default_value_t = 8192)]
    vocab: usize,
    /// Longest token sequence; longer training sentences are truncated.
    #[arg(long, default_value_t = 128)]
    max_seq_len: usize,
    /// Sentences per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Linear warm-up steps (default: 5% of --steps, at most 1000).
    #[arg(long)]
    warmup_steps: Option<u64>,
    /// Final learning rate as a fraction of --lr.
    #[arg(long, default_value_t = 0.05)]
    final_lr_scale: f64,
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Gradient-norm clipping threshold.
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    #[arg(long, default_value_t = 0.1)]
    label_smoothing: f64,
    /// Total optimiser steps (the cosine schedule spans them).
    #[arg(long, default_value_t = 2000)]
    steps: u64,
    /// Wall-clock budget in minutes, counted from the start (data loading and tokenizer
    /// included): the step that spends it is validated and checkpointed, then training stops.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Stop (with a checkpoint) after this step although the schedule spans --steps.
    #[arg(long)]
    stop_at: Option<u64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue from the newest checkpoint in --out (same settings required).
    #[arg(long)]
    resume: bool,
    /// Fraction of documents held out (the same split as `lcm train` / `lcm eval`).
    #[arg(long, default_value_t = 0.01)]
    valid_fraction: f64,
    /// Held-out sentences scored by the validation loss.
    #[arg(long, default_value_t = 512)]
    valid_sentences: usize,
    /// Validation every N steps (0: only at the end).
    #[arg(long, default_value_t = 100)]
    eval_every: u64,
    /// Checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 200)]
    checkpoint_every: u64,
    /// Newest checkpoints kept (0: all).
    #[arg(long, default_value_t = 2)]
    keep_last: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// What computes the steps: `fused` (the fused engine) or `candle` (autograd).
    #[arg(long, default_value = "fused")]
    engine: String,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn train(args: TrainArgs) -> Result<()> {
    let encoder_args = EncoderArgs {
        encoder: args.encoder.clone(),
        batch_size: 32,
        threads: args.threads,
    };
    // Loads the encoder only to check that the store lives in its space.
    let store = ConceptStore::open(&args.data)
        .with_context(|| format!("opening the concept store {}", args.data.display()))?;
    let what = format!("the store {}", args.data.display());
    let encoder = encoder_args.load_for(&store.meta.encoder_id, &what)?;
    drop(encoder);
    drop(store);
    let config = DecoderTrainConfig {
        layers: args.layers,
        dim: args.dim,
        heads: args.heads,
        ffn: args.ffn,
        vocab_size: args.vocab,
        max_seq_len: args.max_seq_len,
        batch_size: args.batch_size,
        lr: args.lr,
        warmup_steps: args
            .warmup_steps
            .unwrap_or((args.steps / 20).clamp(1, 1000)),
        final_lr_scale: args.final_lr_scale,
        weight_decay: args.weight_decay,
        clip: args.clip,
        label_smoothing: args.label_smoothing,
        steps: args.steps,
        seed: args.seed,
        valid_fraction: args.valid_fraction,
        valid_sentences: args.valid_sentences,
        eval_every: args.eval_every,
        checkpoint_every: args.checkpoint_every,
        keep_last: args.keep_last,
        max_seconds: args.max_minutes.map(|m| m * 60.0),
        stop_at: args.stop_at,
        engine: DecoderEngine::parse(&args.engine)?,
    };
    let bar = Progress::new(0, "steps", args.quiet);
    let mut last_valid: Option<f64> = None;
    let mut progress = |event: TrainEvent<'_>| match event {
        TrainEvent::Phase(what) => {
            tracing::info!("{what}");
            bar.set_message(format!("{what}…"));
        }
        TrainEvent::Start { start, total } => {
            bar.set_length(total);
            bar.start_at(start);
        }
        TrainEvent::Step(m) => {
            if m.valid_loss.is_some() {
                last_valid = m.valid_loss;
                tracing::info!(
                    step = m.step,
                    loss = m.loss,
                    valid_loss = m.valid_loss,
                    "validation"
                );
            }
            let valid = last_valid.map_or(String::new(), |v| format!(" valid {v:.3}"));
            bar.update(
                m.step,
                format!(
                    "loss {:.3}{valid} lr {:.1e} {:.0} tok/s ({})",
                    m.loss, m.lr, m.tokens_per_s, m.engine
                ),
            );
        }
    };
    let summary = train_decoder(&config, &args.data, &args.out, args.resume, &mut progress)
        .with_context(|| format!("training the decoder into {}", args.out.display()))?;
    bar.finish();
    let metrics = args.out.join(METRICS_FILE);
    let png = args.out.join(PLOT_FILE);
    let steps_run = summary.final_step - summary.start_step;
    println!(
        "steps {} → {} of {} in {:.1} min ({:.1} min training, {:.2} steps/s, {:.0} tokens/s); \
         {} parameters, vocab {}",
        summary.start_step,
        summary.final_step,
        config.steps,
        summary.seconds / 60.0,
        summary.train_seconds / 60.0,
        steps_run as f64 / summary.train_seconds.max(1e-9),
        summary.tokens as f64 / summary.train_seconds.max(1e-9),
        summary.num_parameters,
        summary.vocab_size
    );
    println!(
        "{} training sentences ({} truncated to {} tokens), validation on {} held-out sentences",
        summary.train_sentences, summary.truncated, config.max_seq_len, summary.valid_sentences
    );
    if let Some(l) = summary.last_loss {
        print!("last training loss {l:.4}");
        if let Some(v) = summary.last_valid_loss {
            print!(
                ", held-out cross-entropy {v:.4} (perplexity {:.1})",
                v.exp()
            );
        }
        println!();
    }
    println!(
        "decoder: {} (metrics {}, plot {})",
        summary.model.display(),
        metrics.display(),
        png.display()
    );
    if summary.final_step < config.steps {
        println!(
            "stopped before step {}; continue with the same command and --resume",
            config.steps
        );
    }
    Ok(())
}
