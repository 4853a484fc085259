//! `lcm eval-multilingual`: flags → [`lcm_workflows::multilingual`] (cross-lingual
//! retrieval, zero-shot next-concept prediction, generation decoded from another
//! language's sentences) → markdown tables or JSON.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use lcm_concept::ConceptEncoder;
use lcm_model::builder::ModelKind;
use lcm_workflows::evaluate::EvalConfig;
use lcm_workflows::generate::StopRules;
use lcm_workflows::multilingual::{
    MultilingualReport, ParallelCorpus, RetrievalConfig, ZeroShotConfig, cross_lingual_retrieval,
    generate_across, zero_shot,
};
use lcm_workflows::train::TrainConfig;

use super::EncoderArgs;
use crate::output::write_atomic;

#[derive(clap::Args)]
pub struct Args {
    /// Parallel corpus: JSONL files of `{"id", "key", "lang", "text"}` records (optional
    /// `title`, `doc`), as `scripts/corpus/parallel.sh` writes them.
    #[arg(required = true)]
    corpus: Vec<PathBuf>,
    /// Working directory: documents, concept stores, the two training runs, report.md and
    /// report.json.
    #[arg(long, short)]
    out: PathBuf,
    /// What to run (comma-separated): retrieval, zero-shot, generation (generation needs
    /// zero-shot's model).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "retrieval,zero-shot,generation"
    )]
    tasks: Vec<String>,
    /// The language the model is trained on and retrieval pivots on.
    #[arg(long, default_value = "en")]
    pivot: String,
    /// Aligned units per retrieval pair (the candidates each unit is retrieved among).
    #[arg(long, default_value_t = 1000)]
    retrieval_units: usize,
    /// Retrieval between every pair of sides, not only with the pivot.
    #[arg(long)]
    all_pairs: bool,
    /// Families of the zero-shot experiment (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    families: Vec<String>,
    /// Held-out fraction by document id (the same documents in every language).
    #[arg(long, default_value_t = 0.2)]
    valid_fraction: f64,
    /// Most pivot-language training sentences per family.
    #[arg(long, default_value_t = 12_000)]
    train_sentences: usize,
    /// Most held-out documents scored per side.
    #[arg(long, default_value_t = 150)]
    eval_docs: usize,
    /// Training documents of every other side added for the comparison model (0: none).
    #[arg(long, default_value_t = 50)]
    mix_docs: usize,
    /// Documents with fewer sentences are left out.
    #[arg(long, default_value_t = 3)]
    min_sentences: usize,
    /// Model preset (Base-LCM).
    #[arg(long, default_value = "small")]
    preset: String,
    #[arg(long, default_value_t = 600)]
    steps: u64,
    /// Batch budget in concepts, padding included.
    #[arg(long, default_value_t = 1024)]
    max_concepts: usize,
    #[arg(long, default_value_t = 4e-4)]
    lr: f64,
    #[arg(long, default_value_t = 50)]
    warmup_steps: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Languages whose prompts are continued (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "fr,de")]
    generate_langs: Vec<String>,
    /// Prompt sentences taken from a held-out document.
    #[arg(long, default_value_t = 3)]
    prompt_sentences: usize,
    /// Most sentences generated per prompt.
    #[arg(long, default_value_t = 3)]
    max_sentences: usize,
    /// Generation stops when the next concept's cosine with the end-of-text concept
    /// reaches this (above 1: never).
    #[arg(long, default_value_t = 0.9)]
    eos_threshold: f32,
    /// Generation stops when the next concept's cosine with the previous one reaches this
    /// (above 1: never).
    #[arg(long, default_value_t = 0.9)]
    repetition_threshold: f32,
    /// Print the report as JSON instead of markdown.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    encoder: EncoderArgs,
}

pub fn run(args: Args) -> Result<()> {
    let started = std::time::Instant::now();
    for task in &args.tasks {
        if !["retrieval", "zero-shot", "generation"].contains(&task.as_str()) {
            bail!("unknown task `{task}`; pass retrieval, zero-shot and/or generation");
        }
    }
    let wants = |t: &str| args.tasks.iter().any(|x| x == t);
    if wants("generation") && !wants("zero-shot") {
        bail!("generation continues prompts with the zero-shot task's model; add zero-shot");
    }
    let corpus = ParallelCorpus::read(&args.corpus)?;
    let encoder: Arc<dyn ConceptEncoder> = Arc::new(args.encoder.load()?);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut progress = |m: &str| eprintln!("eval-multilingual: {m}");

    let retrieval = if wants("retrieval") {
        let config = RetrievalConfig {
            max_units: args.retrieval_units,
            all_pairs: args.all_pairs,
            pivot_lang: args.pivot.clone(),
            ..RetrievalConfig::default()
        };
        cross_lingual_retrieval(&corpus, encoder.as_ref(), &config, &mut progress)?
    } else {
        Vec::new()
    };
    let zero = if wants("zero-shot") {
        let config = ZeroShotConfig {
            pivot_lang: args.pivot.clone(),
            valid_fraction: args.valid_fraction,
            train_sentences: args.train_sentences,
            eval_docs: args.eval_docs,
            mix_docs: args.mix_docs,
            min_sentences: args.min_sentences,
            families: args.families.clone(),
            train: TrainConfig {
                model: ModelKind::Base,
                preset: args.preset.clone(),
                steps: args.steps,
                max_concepts: args.max_concepts,
                lr: args.lr,
                warmup_steps: args.warmup_steps.min(args.steps.saturating_sub(1)),
                eval_every: 0,
                checkpoint_every: 0,
                keep_last: 1,
                seed: args.seed,
                ..TrainConfig::default()
            },
            eval: EvalConfig::default(),
        };
        Some(zero_shot(
            &corpus,
            encoder.as_ref(),
            &config,
            &args.out,
            &mut progress,
        )?)
    } else {
        None
    };
    let generation = match (&zero, wants("generation")) {
        (Some(z), true) => generate_across(
            z,
            &z.run,
            encoder.clone(),
            &args.generate_langs,
            args.prompt_sentences,
            &StopRules {
                max_sentences: args.max_sentences,
                eos_threshold: args.eos_threshold,
                repetition_threshold: args.repetition_threshold,
            },
        )?,
        _ => Vec::new(),
    };
    let report = MultilingualReport {
        encoder: encoder.id().to_string(),
        retrieval,
        zero_shot: zero,
        generation,
        seconds: started.elapsed().as_secs_f64(),
    };
    let markdown = report.to_markdown();
    let json = serde_json::to_string_pretty(&report)?;
    write_atomic(&args.out.join("report.md"), markdown.as_bytes())
        .with_context(|| format!("writing {}", args.out.join("report.md").display()))?;
    write_atomic(&args.out.join("report.json"), json.as_bytes())
        .with_context(|| format!("writing {}", args.out.join("report.json").display()))?;
    if args.json {
        println!("{json}");
    } else {
        print!("{markdown}");
        println!(
            "({:.0} s; report.md and report.json in {})",
            report.seconds,
            args.out.display()
        );
    }
    Ok(())
}
