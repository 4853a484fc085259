use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use lcm_data::batch::{DEFAULT_MAX_SEQ_LEN, DatasetConfig, SplitDataset};
use lcm_data::store::ConceptStore;
use lcm_train::evaluate::{EvalConfig, evaluate_model, training_mean};

use super::EncoderArgs;
use super::trained::{SamplingArgs, Trained, eos_embedding};
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
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    encoder: EncoderArgs,
}

pub fn run(args: Args) -> Result<()> {
    let trained = Trained::load(&args.model, args.normalizer.as_deref())?;
    let store = ConceptStore::open(&args.store)?;
    if store.meta.encoder_id != trained.encoder_id() {
        bail!(
            "{} holds `{}` concepts but the model was trained on `{}`",
            args.store.display(),
            store.meta.encoder_id,
            trained.encoder_id()
        );
    }
    let train_config = trained.loaded.train_config.clone();
    let valid_fraction = args
        .valid_fraction
        .or(train_config.as_ref().map(|c| c.valid_fraction))
        .context("the checkpoint does not record its validation fraction; pass --valid-fraction")?;
    let max_seq_len = train_config
        .as_ref()
        .and_then(|c| c.max_seq_len)
        .unwrap_or(DEFAULT_MAX_SEQ_LEN)
        .min(trained.loaded.model.max_seq_len());
    let encoder = trained.encoder(&args.encoder)?;
    let eos = eos_embedding(&encoder)?;
    drop(encoder);

    let split = SplitDataset::from_store(
        &store,
        &trained.normalizer,
        eos,
        DatasetConfig {
            max_seq_len,
            valid_fraction,
        },
    )?;
    let mean = training_mean(&split.train, &trained.normalizer)?;
    let config = EvalConfig {
        max_concepts: args.max_concepts,
        batch_concepts: args.batch_concepts,
        sampling: args.sampling.sampling()?,
        seed: args.sampling.seed,
    };
    let label = trained.label();
    let outcome = evaluate_model(
        &trained.loaded.model,
        &label,
        &split.valid,
        &trained.normalizer,
        &mean,
        &config,
    )
    .with_context(|| format!("evaluating {}", args.model.display()))?;

    let table = outcome.report.to_markdown();
    if args.json {
        let rows: Vec<_> = outcome
            .report
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "predictor": r.predictor,
                    "l2": r.metrics.l2,
                    "ca": r.metrics.ca,
                    "par": r.metrics.par,
                    "positions": r.metrics.scored,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "model": label,
            "checkpoint": trained.loaded.checkpoint.display().to_string(),
            "held_out_sequences": outcome.sequences,
            "held_out_concepts": outcome.concepts,
            "valid_fraction": valid_fraction,
            "sampling": config.sampling,
            "seconds": outcome.seconds,
            "rows": rows,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "Teacher-forced evaluation of {label} on {} held-out sequences ({} concepts, \
             held-out fraction {valid_fraction}) in {:.1}s:\n",
            outcome.sequences, outcome.concepts, outcome.seconds
        );
        print!("{table}");
    }
    if let Some(out) = &args.out {
        write_atomic(out, table.as_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
