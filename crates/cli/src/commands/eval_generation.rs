//! `lcm eval-generation`: flags → one [`GenerationSession`] per run →
//! [`lcm_workflows::generation_eval`] (held-out prompts, the sampling grid, REP-4, OVL-3,
//! coherence, stop reasons, registers; held-out ℓ2 per source) → tables or JSON.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use lcm_concept::ConceptEncoder;
use lcm_workflows::eos_embedding;
use lcm_workflows::evaluate::EvalConfig;
use lcm_workflows::generate::StopRules;
use lcm_workflows::generation_eval::{
    GenerationEvalConfig, evaluate_generation, generation_markdown, held_out_l2_by_source,
    held_out_prompts, source_loss_markdown, trained_valid_fraction,
};
use lcm_workflows::load::{SamplingSettings, checkpoint_space_id};
use lcm_workflows::session::{DecoderChoice, GenerationSession};
use serde_json::json;

use super::EncoderArgs;
use crate::output::{bank_notice, write_atomic};

#[derive(clap::Args)]
pub struct Args {
    /// Trained models (`lcm train --out` directories, checkpoints/ or step directories).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Concept store the prompts are drawn from (its held-out documents) and whose
    /// sentences make the retrieval decoder's bank and give each sentence's register.
    #[arg(long)]
    store: PathBuf,
    /// A sentence bank folder instead of STORE/sentence-bank.
    #[arg(long)]
    bank: Option<PathBuf>,
    /// Held-out prompts (first sentences of held-out documents).
    #[arg(long, default_value_t = 100)]
    prompts: usize,
    /// Sentences of each prompt.
    #[arg(long, default_value_t = 2)]
    prompt_sentences: usize,
    /// Held-out fraction the prompts are drawn from (default: the smallest the runs were
    /// trained with, so that no run trained on a prompt).
    #[arg(long)]
    valid_fraction: Option<f64>,
    /// Guidance scales of the grid (diffusion models; comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    guidance: Vec<f64>,
    /// DDIM steps of the grid (diffusion models; comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10,40")]
    steps: Vec<usize>,
    /// Guidance rescale factor.
    #[arg(long, default_value_t = 0.7)]
    guidance_rescale: f64,
    /// Scale of the initial Gaussian noise.
    #[arg(long, default_value_t = 0.6)]
    initial_noise_scale: f64,
    /// Seed of the prompt draw; prompt i is sampled with seed + i.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Most sentences generated per prompt.
    #[arg(long, default_value_t = 8)]
    max_sentences: usize,
    /// Stop when the generated concept's cosine with "End of text." reaches this.
    #[arg(long, default_value_t = 0.9)]
    eos_threshold: f32,
    /// Stop when the generated concept's cosine with the previous one reaches this.
    #[arg(long, default_value_t = 0.9)]
    repetition_threshold: f32,
    /// Also score each run teacher-forced on the held-out split, per source (ℓ2).
    #[arg(long)]
    loss_by_source: bool,
    /// Held-out concepts per source for --loss-by-source.
    #[arg(long, default_value_t = 4096)]
    max_concepts: usize,
    /// Write the tables (markdown) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the full JSON (every generation included) to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Print the JSON summary instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    encoder: EncoderArgs,
}

pub fn run(args: Args) -> Result<()> {
    let choice = DecoderChoice {
        bank: args.bank.clone(),
        store: Some(args.store.clone()),
        trained: None,
    };
    let mut sessions = Vec::with_capacity(args.runs.len());
    for run in &args.runs {
        let what = format!("the model {}", run.display());
        let encoder = args.encoder.load_for(&checkpoint_space_id(run)?, &what)?;
        let encoder: Arc<dyn ConceptEncoder> = Arc::new(encoder);
        let session = GenerationSession::open(
            run,
            None,
            encoder,
            args.encoder.name(),
            &choice,
            &mut bank_notice,
        )
        .with_context(|| format!("opening {}", run.display()))?;
        sessions.push(session);
    }
    let valid_fraction = match args.valid_fraction {
        Some(f) => f,
        None => sessions
            .iter()
            .filter_map(|s| trained_valid_fraction(s.trained()))
            .fold(f64::INFINITY, f64::min),
    };
    anyhow::ensure!(
        valid_fraction.is_finite(),
        "no run records its validation fraction; pass --valid-fraction"
    );
    let prompts = held_out_prompts(
        &args.store,
        valid_fraction,
        args.prompts,
        args.prompt_sentences,
        args.seed,
    )?;
    eprintln!(
        "{} prompts of {} sentences from {} held-out documents (fraction {valid_fraction}) of {}",
        prompts.prompts.len(),
        args.prompt_sentences,
        prompts.candidates,
        args.store.display()
    );
    let config = GenerationEvalConfig {
        guidance: args.guidance.clone(),
        steps: args.steps.clone(),
        sampling: SamplingSettings {
            guidance_rescale: args.guidance_rescale,
            initial_noise_scale: args.initial_noise_scale,
            seed: args.seed,
            ..SamplingSettings::default()
        },
        rules: StopRules {
            max_sentences: args.max_sentences,
            eos_threshold: args.eos_threshold,
            repetition_threshold: args.repetition_threshold,
        },
    };
    let mut reports = Vec::new();
    let mut losses = Vec::new();
    for (run, session) in args.runs.iter().zip(&sessions) {
        let started = std::time::Instant::now();
        reports.extend(evaluate_generation(
            session,
            run,
            &prompts,
            &config,
            &mut |r| {
                eprintln!(
                    "{} g={:?} S={:?}: done ({:.0}s so far)",
                    r.model,
                    r.guidance,
                    r.ddim_steps,
                    started.elapsed().as_secs_f64()
                )
            },
        )?);
        if args.loss_by_source {
            let trained = session.trained();
            let eos = eos_embedding(session.encoder())?;
            let eval = EvalConfig {
                max_concepts: args.max_concepts,
                seed: args.seed,
                ..EvalConfig::default()
            };
            let by_source = held_out_l2_by_source(trained, &args.store, eos, &eval)?;
            losses.push((trained.label(), run.clone(), by_source));
        }
    }

    let mut tables = generation_markdown(&reports);
    for (label, _, by_source) in &losses {
        tables.push('\n');
        tables.push_str(&source_loss_markdown(label, by_source));
    }
    let summary = |with_generations: bool| {
        json!({
            "store": args.store.display().to_string(),
            "valid_fraction": valid_fraction,
            "prompt_sentences": args.prompt_sentences,
            "prompts": prompts.prompts.len(),
            "held_out_candidates": prompts.candidates,
            "prompt_sources": prompts.prompts.iter().fold(
                std::collections::BTreeMap::<&str, usize>::new(),
                |mut m, p| { *m.entry(p.source.as_str()).or_insert(0) += 1; m }),
            "rules": {
                "max_sentences": args.max_sentences,
                "eos_threshold": args.eos_threshold,
                "repetition_threshold": args.repetition_threshold,
            },
            "seed": args.seed,
            "settings": reports.iter().map(|r| r.to_json(with_generations)).collect::<Vec<_>>(),
            "loss_by_source": losses.iter().map(|(label, run, l)| json!({
                "model": label, "run": run.display().to_string(), "sources": l,
            })).collect::<Vec<_>>(),
        })
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary(false))?);
    } else {
        print!("{tables}");
    }
    if let Some(out) = &args.out {
        write_atomic(out, tables.as_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if let Some(out) = &args.json_out {
        let text = serde_json::to_string_pretty(&summary(true))?;
        write_atomic(out, text.as_bytes()).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
