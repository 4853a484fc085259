//! `lcm plan`: plan the next K sentences toward a goal while staying outside guardrail
//! regions, with a trained LCM as the world model and the retrieval decoder's bank as the set
//! of sayable sentences. With `--cases` it scores the planner against unconstrained
//! generation and greedy retrieval on a file of cases. Flags → `lcm_workflows::planning` /
//! `lcm_plan::concept` → printing.

use std::path::PathBuf;

use anyhow::{Context, Result};
use lcm_concept::ConceptEncoder;
use lcm_concept::segment::segment;
use lcm_plan::concept::report::{ReportContext, summaries};
use lcm_plan::concept::{Candidate, Case, read_cases};
use lcm_workflows::TrainedLcm;
use lcm_workflows::planning::{
    PlanOptions, Planning, ProposerKind as Proposer, load_classifier, prompt_case,
};
use lcm_workflows::store::retrieval_decoder;

use super::trained::{SamplingArgs, load_encoder};
use super::{EncoderArgs, LangArgs};
use crate::output::bank_notice;
use lcm_workflows::encoders::InLanguage;

#[derive(clap::Args)]
pub struct Args {
    /// Trained model: a `lcm train --out` directory, its checkpoints/ or a step directory.
    #[arg(long)]
    model: PathBuf,
    /// Prompt text (split into sentences).
    #[arg(conflicts_with = "cases", required_unless_present = "cases")]
    prompt: Option<String>,
    /// Goal: a sentence or a topic the plan should reach.
    #[arg(long, conflicts_with = "cases", required_unless_present = "cases")]
    goal: Option<String>,
    /// A topic or sentence to stay away from (a hard ball of cosine radius --radius around
    /// its concept); repeat for several.
    #[arg(long, conflicts_with = "cases")]
    avoid: Vec<String>,
    /// A linear guardrail: JSON `{"name", "weights": [...], "bias"}` or labelled sentences
    /// `{"name", "forbidden": [...], "allowed": [...]}` (trained here by logistic
    /// regression); optional `"severity": "hard" | "soft"` and `"weight"`.
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// JSON-lines file of cases `{"id", "prompt", "goal", "avoid": [...], "tau"?}`: compare
    /// the planner with unconstrained generation and greedy retrieval.
    #[arg(long)]
    cases: Option<PathBuf>,
    /// Concept store whose sentence bank (STORE/sentence-bank, built once) holds the
    /// sentences a plan may say.
    #[arg(long, required_unless_present = "bank")]
    store: Option<PathBuf>,
    /// A sentence bank folder (instead of STORE/sentence-bank).
    #[arg(long)]
    bank: Option<PathBuf>,
    /// Normaliser (default: the one recorded in the checkpoint).
    #[arg(long)]
    normalizer: Option<PathBuf>,
    /// Sentences planned, K.
    #[arg(long, default_value_t = PlanOptions::default().steps)]
    steps: usize,
    /// Model samples per partial plan (diffusion models) or nearest bank sentences to the
    /// prediction (Base-LCM), N.
    #[arg(long, default_value_t = PlanOptions::default().candidates)]
    candidates: usize,
    /// Bank sentences per diffusion sample: each sample is snapped to its nearest sentences.
    #[arg(long, default_value_t = PlanOptions::default().neighbours)]
    neighbours: usize,
    /// Steer the planner's proposals toward the goal: each sample x is snapped from
    /// x/|x| + λ·goal instead of x (0 = the model's own samples). Unconstrained generation is
    /// never steered.
    #[arg(long, default_value_t = PlanOptions::default().steer)]
    steer: f32,
    /// Where the planner's candidates come from: `lcm` (the model's samples, snapped to the
    /// bank) or `bank` (the bank sentences nearest the last concept, no model: an ablation
    /// that shows what the search and guardrails do with a different proposal set).
    #[arg(long, value_enum, default_value_t = ProposerKind::Lcm)]
    proposer: ProposerKind,
    /// Partial plans kept per step of the beam search.
    #[arg(long, default_value_t = PlanOptions::default().beam)]
    beam: usize,
    /// Goal reached when a sentence's cosine with the goal is at least τ (a case's "tau"
    /// overrides it).
    #[arg(long, default_value_t = PlanOptions::default().tau)]
    tau: f32,
    /// Cosine radius of the --avoid balls: a sentence with cos ≥ R to the topic is inside.
    #[arg(long, default_value_t = PlanOptions::default().radius)]
    radius: f32,
    /// Weight of the coherence term (1 − cos between consecutive sentences) in the cost.
    #[arg(long, default_value_t = PlanOptions::default().coherence_weight)]
    coherence_weight: f32,
    /// Bank neighbours the greedy-retrieval baseline chooses among at each step, M.
    #[arg(long, default_value_t = PlanOptions::default().greedy_neighbours)]
    greedy_neighbours: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// With --cases: also write the markdown report here.
    #[arg(long, requires = "cases")]
    out: Option<PathBuf>,
    #[command(flatten)]
    lang: LangArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    encoder: EncoderArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
enum ProposerKind {
    Lcm,
    Bank,
}

impl Args {
    fn options(&self) -> PlanOptions {
        PlanOptions {
            steps: self.steps,
            beam: self.beam,
            candidates: self.candidates,
            neighbours: self.neighbours,
            steer: self.steer,
            proposer: match self.proposer {
                ProposerKind::Lcm => Proposer::Lcm,
                ProposerKind::Bank => Proposer::Bank,
            },
            tau: self.tau,
            radius: self.radius,
            coherence_weight: self.coherence_weight,
            greedy_neighbours: self.greedy_neighbours,
            seed: self.sampling.seed,
        }
    }

    /// The case file's cases, or the one case of the prompt flags.
    fn cases(&self) -> Result<Vec<Case>> {
        if let Some(path) = &self.cases {
            return Ok(read_cases(path, self.tau, &segment)?);
        }
        Ok(vec![prompt_case(
            self.prompt.as_deref().unwrap_or_default(),
            self.goal.as_deref().unwrap_or_default(),
            self.avoid.clone(),
            self.tau,
        )?])
    }
}

pub fn run(args: Args) -> Result<()> {
    let options = args.options();
    options.validate()?;
    // Read the cases or the prompt before loading anything, so a typo fails fast.
    let cases = args.cases()?;
    let trained = TrainedLcm::load(&args.model, args.normalizer.as_deref())?;
    let loaded = load_encoder(&trained, &args.encoder)?;
    let lang = args.lang.resolve(Some(&loaded))?;
    // Prompts, goals and guardrail sentences are all encoded in --lang.
    let encoder = InLanguage {
        inner: &loaded,
        lang,
    };
    let sampling = args.sampling.sampling()?;
    let decoder = retrieval_decoder(
        args.bank.as_deref(),
        args.store.as_deref(),
        trained.encoder_id(),
        encoder.dim(),
        &mut bank_notice,
    )?;
    let classifier = match &args.classifier {
        Some(path) => Some(load_classifier(path, &encoder)?),
        None => None,
    };
    let planning = Planning {
        model: trained.model(),
        normalizer: &trained.normalizer,
        sampling: &sampling,
        decoder: &decoder,
        encoder: &encoder,
        classifier,
        options,
    };
    let sentence = |c: &Candidate| planning.sentence(c);
    let report = planning.report(trained.label(), &sentence);
    match &args.cases {
        Some(path) => run_cases(&args, &planning, &report, path, &cases),
        None => {
            let case = &cases[0];
            let result = planning.solve(case)?;
            if args.json {
                let doc = report.single_json(case, &result);
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", report.single_text(case, &result));
            }
            Ok(())
        }
    }
}

fn run_cases(
    args: &Args,
    planning: &Planning,
    report: &ReportContext,
    path: &std::path::Path,
    cases: &[Case],
) -> Result<()> {
    let mut results = Vec::with_capacity(cases.len());
    for (i, case) in cases.iter().enumerate() {
        let result = planning.solve(case)?;
        tracing::info!(
            "case {}/{} `{}`: planner reached {:?} feasible {}",
            i + 1,
            cases.len(),
            case.id,
            result.planner.score.reached_at,
            result.plan.feasible
        );
        results.push(result);
    }
    let summaries = summaries(&results);
    let markdown = report.markdown(path, cases, &results, &summaries);
    if let Some(out) = &args.out {
        std::fs::write(out, &markdown)
            .with_context(|| format!("cannot write the report to {}", out.display()))?;
    }
    if args.json {
        let doc = report.cases_json(path, cases, &results, &summaries);
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{markdown}");
    }
    Ok(())
}
