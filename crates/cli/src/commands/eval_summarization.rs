//! `lcm eval-summarization`: flags → [`lcm_workflows::summarization::evaluate_summarization`]
//! → a markdown table (or JSON).

use std::path::PathBuf;

use anyhow::{Context, Result};
use lcm_data::pairs::PairStore;
use lcm_workflows::eos_embedding;
use lcm_workflows::generate::StopRules;
use lcm_workflows::summarization::{
    SummarizationConfig, SummarizationRequest, evaluate_summarization,
};

use super::EncoderArgs;
use super::trained::SamplingArgs;
use crate::output::bank_notice;

#[derive(clap::Args)]
pub struct Args {
    /// Fine-tuned model (`lcm finetune --out`); repeat for several. None: baselines only.
    #[arg(long = "model")]
    models: Vec<PathBuf>,
    /// Pair store of the training pairs (the retrieval decoder's bank of summaries and the
    /// nearest-summary baseline's candidates).
    #[arg(long)]
    train_pairs: PathBuf,
    /// Pair store of the held-out pairs.
    #[arg(long)]
    test_pairs: PathBuf,
    /// Evaluate the first N held-out pairs only.
    #[arg(long)]
    limit: Option<usize>,
    /// Normaliser for the models (default: each model's recorded one).
    #[arg(long)]
    normalizer: Option<PathBuf>,
    /// A trained decoder (`lcm train-decoder --out`) instead of retrieval over the training
    /// summaries' sentences.
    #[arg(long)]
    decoder: Option<PathBuf>,
    /// Beams of the trained decoder's search.
    #[arg(long, default_value_t = 5, requires = "decoder")]
    beam: usize,
    /// Most summary sentences generated.
    #[arg(long, default_value_t = 2)]
    max_sentences: usize,
    /// Stop when the generated concept's cosine with "End of text." reaches this.
    #[arg(long, default_value_t = 0.9)]
    eos_threshold: f32,
    /// Stop when the generated concept's cosine with the previous one reaches this.
    #[arg(long, default_value_t = 0.9)]
    repetition_threshold: f32,
    /// Held-out examples printed with every system's output.
    #[arg(long, default_value_t = 3)]
    examples: usize,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    encoder: EncoderArgs,
}

pub fn run(args: Args) -> Result<()> {
    // The pairs' encoder embeds the end-of-text concept of the stop rule.
    let space = PairStore::open(&args.train_pairs)?
        .meta()
        .encoder_id
        .clone();
    let what = format!("the pairs {}", args.train_pairs.display());
    let encoder = args.encoder.load_for(&space, &what)?;
    let eos = eos_embedding(&encoder)?;
    drop(encoder);
    let request = SummarizationRequest {
        models: &args.models,
        normalizer: args.normalizer.as_deref(),
        train_pairs: &args.train_pairs,
        test_pairs: &args.test_pairs,
        eos,
        decoder: args.decoder.clone().map(|d| (d, args.beam)),
        config: SummarizationConfig {
            limit: args.limit,
            rules: StopRules {
                max_sentences: args.max_sentences,
                eos_threshold: args.eos_threshold,
                repetition_threshold: args.repetition_threshold,
            },
            sampling: args.sampling.settings(),
            seed: args.sampling.seed,
            examples: args.examples,
        },
    };
    let report = evaluate_summarization(&request, &mut bank_notice, &mut |system, done, all| {
        if done == all || done % 50 == 0 {
            eprintln!("{system}: {done}/{all} summaries");
        }
    })
    .with_context(|| format!("evaluating on {}", args.test_pairs.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print!("{}", report.markdown());
    for e in &report.examples {
        println!(
            "\n{}\n  source:    {}\n  reference: {}",
            e.id, e.source, e.reference
        );
        for (system, output) in &e.outputs {
            println!("  {system}: {output}");
        }
    }
    Ok(())
}
