//! `lcm export`: flags → [`lcm_workflows::export::export_model`] (with, given `--store`, the
//! held-out evaluation of [`lcm_workflows::evaluate::HeldOut`] for the card) → a summary.

use std::path::PathBuf;

use anyhow::Result;
use lcm_workflows::encoders::encoder_spec_for_id;
use lcm_workflows::evaluate::{EvalConfig, HeldOut};
use lcm_workflows::export::{CardInfo, DataSummary, default_languages, export_model};
use lcm_workflows::{TrainedLcm, eos_embedding};

use super::EncoderArgs;
use super::trained::{SamplingArgs, load_encoder};

#[derive(clap::Args)]
pub struct Args {
    /// Trained model: a `lcm train --out` directory, its checkpoints/ or a step directory.
    model: PathBuf,
    /// Folder to write (refused when it exists and is not empty, unless --force).
    #[arg(long)]
    out: PathBuf,
    /// The concept store the model was trained on: summarised in the card, and its
    /// held-out split evaluated into the card's table.
    #[arg(long)]
    store: Option<PathBuf>,
    /// Describe the store in the card but skip the evaluation.
    #[arg(long, requires = "store")]
    no_eval: bool,
    /// Held-out concepts evaluated for the card.
    #[arg(long, default_value_t = 8192)]
    max_concepts: usize,
    /// Title of the model card (default: the folder's name).
    #[arg(long)]
    name: Option<String>,
    /// License of the weights, as an SPDX id (the card's `license`); `other` when the
    /// training data's terms are not settled.
    #[arg(long, default_value = "other")]
    license: String,
    /// Languages the model was trained on, ISO 639 codes (repeat or comma-separate);
    /// default `en` for MiniLM models, none claimed for other encoders.
    #[arg(long, value_delimiter = ',')]
    language: Vec<String>,
    /// Normaliser (default: the one recorded in the checkpoint).
    #[arg(long)]
    normalizer: Option<PathBuf>,
    /// Replace an existing export at --out.
    #[arg(long)]
    force: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    encoder: EncoderArgs,
}

pub fn run(args: Args) -> Result<()> {
    let trained = TrainedLcm::load(&args.model, args.normalizer.as_deref())?;
    let data = args
        .store
        .as_deref()
        .map(DataSummary::of_store)
        .transpose()?;
    let evaluation = match (&args.store, args.no_eval) {
        (Some(store), false) => {
            let held_out = HeldOut::open(&trained, store, None)?;
            let encoder = load_encoder(&trained, &args.encoder)?;
            let eos = eos_embedding(&encoder)?;
            drop(encoder);
            let config = EvalConfig {
                max_concepts: args.max_concepts,
                batch_concepts: 4096,
                sampling: args.sampling.sampling()?,
                seed: args.sampling.seed,
            };
            Some(held_out.evaluate(&trained, &args.model, eos, &config)?)
        }
        _ => None,
    };
    let languages = if args.language.is_empty() {
        default_languages(trained.encoder_id())
    } else {
        args.language.clone()
    };
    let card = CardInfo {
        name: args.name.clone(),
        license: args.license.clone(),
        languages,
        data,
        evaluation,
    };
    // The name the space loads with, never a local path: the folder is made to be shared.
    let (encoder_name, _) = encoder_spec_for_id(trained.encoder_id());
    let summary = export_model(&trained, &encoder_name, &args.out, &card, args.force)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "Exported {} {} (step {}, {} parameters) to {}: {}",
            summary.architecture,
            summary.preset,
            summary.step,
            summary.parameters,
            summary.out.display(),
            summary.files.join(", ")
        );
    }
    Ok(())
}
