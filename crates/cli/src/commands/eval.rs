//! `lcm eval`: flags → [`lcm_workflows::evaluate::HeldOut`] → the table or JSON.

use std::path::PathBuf;

use anyhow::{Context, Result};
use lcm_workflows::evaluate::{EvalConfig, HeldOut};
use lcm_workflows::{TrainedLcm, eos_embedding};

use super::EncoderArgs;
use super::trained::{SamplingArgs, load_encoder};
use crate::output::write_atomic;

#[derive(clap::Args)]
pub struct Args {
    /// Trained model: a `lcm train --out` directory, its checkpoints/ or a step directory.
    model: PathBuf,
    /// Concept store the model was trained on; its held-out split is evaluated.
    #[arg(long)]
    store: PathBuf,
    /// Normaliser (default: the one recorded in the checkpoint).
    #[arg(long)]
    normalizer: Option<PathBuf>,
    /// Held-out fraction (default: the one the model was trained with, so that the
    /// evaluated documents were never trained on).
    #[arg(long)]
    valid_fraction: Option<f64>,
    /// Held-out concepts evaluated (CA compares each prediction with all of them).
    #[arg(long, default_value_t = 8192)]
    max_concepts: usize,
    /// Concepts per forward pass, padding included.
    #[arg(long, default_value_t = 4096)]
    batch_concepts: usize,
    /// Also write the table (markdown) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON instead of a markdown table.
    #[arg(long)]
    json: bool,
    /// Add the InfoNCE mutual-information proxy (`lcm_eval::metrics`, the paper's MI
    /// measured in concept space) to each `--json` row; the markdown table always has it.
    #[arg(long)]
    mi: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    encoder: EncoderArgs,
}

pub fn run(args: Args) -> Result<()> {
    let trained = TrainedLcm::load(&args.model, args.normalizer.as_deref())?;
    let held_out = HeldOut::open(&trained, &args.store, args.valid_fraction)?;
    let encoder = load_encoder(&trained, &args.encoder)?;
    let eos = eos_embedding(&encoder)?;
    drop(encoder);
    let config = EvalConfig {
        max_concepts: args.max_concepts,
        batch_concepts: args.batch_concepts,
        sampling: args.sampling.sampling()?,
        seed: args.sampling.seed,
    };
    let evaluation = held_out.evaluate(&trained, &args.model, eos, &config)?;

    let table = evaluation.to_markdown();
    if args.json {
        let json = evaluation.to_json_with(args.mi);
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        let outcome = &evaluation.outcome;
        println!(
            "Teacher-forced evaluation of {} on {} held-out sequences ({} concepts, \
             held-out fraction {}) in {:.1}s:\n",
            evaluation.label,
            outcome.sequences,
            outcome.concepts,
            evaluation.valid_fraction,
            outcome.seconds
        );
        print!("{table}");
    }
    if let Some(out) = &args.out {
        write_atomic(out, table.as_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
