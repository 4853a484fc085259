//! `lcm plan`: plan the next K sentences toward a goal while staying outside guardrail
//! regions, with a trained LCM as the world model and the retrieval decoder's bank as the set
//! of sayable sentences. With `--cases` it scores the planner against unconstrained
//! generation and greedy retrieval on a file of cases.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use candle_core::{DType, Device, Tensor};
use lcm_concept::ConceptEncoder;
use lcm_concept::bert::BertEncoder;
use lcm_concept::normalizer::RobustNormalizer;
use lcm_concept::segment::segment;
use lcm_data::sentence_bank::RetrievalDecoder;
use lcm_model::generate::{DiffusionSampling, Lcm};
use lcm_plan::concept::{
    Candidate, Concept, ConceptBall, ConceptCost, ConceptError, ConceptNeighbours, ConceptPlan,
    ConceptPlanner, ConceptPlannerConfig, ConceptProposer, LinearClassifierGuardrail,
    LogisticConfig, RolloutScore, Summary, greedy_retrieval, score_rollout, train_logistic,
    unconstrained_rollout,
};
use lcm_plan::cost::Severity;
use lcm_train::new_rng;
use serde_json::{Value, json};

use super::EncoderArgs;
use super::generate::open_retrieval_decoder;
use super::trained::{SamplingArgs, Trained};

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
    #[arg(long, default_value_t = 4)]
    steps: usize,
    /// Model samples per partial plan (diffusion models) or nearest bank sentences to the
    /// prediction (Base-LCM), N.
    #[arg(long, default_value_t = 8)]
    candidates: usize,
    /// Bank sentences per diffusion sample: each sample is snapped to its nearest sentences.
    #[arg(long, default_value_t = 4)]
    neighbours: usize,
    /// Steer the planner's proposals toward the goal: each sample x is snapped from
    /// x/|x| + λ·goal instead of x (0 = the model's own samples). Unconstrained generation is
    /// never steered.
    #[arg(long, default_value_t = 0.0)]
    steer: f32,
    /// Where the planner's candidates come from: `lcm` (the model's samples, snapped to the
    /// bank) or `bank` (the bank sentences nearest the last concept, no model: an ablation
    /// that shows what the search and guardrails do with a different proposal set).
    #[arg(long, value_enum, default_value_t = ProposerKind::Lcm)]
    proposer: ProposerKind,
    /// Partial plans kept per step of the beam search.
    #[arg(long, default_value_t = 4)]
    beam: usize,
    /// Goal reached when a sentence's cosine with the goal is at least τ (a case's "tau"
    /// overrides it).
    #[arg(long, default_value_t = 0.5)]
    tau: f32,
    /// Cosine radius of the --avoid balls: a sentence with cos ≥ R to the topic is inside.
    #[arg(long, default_value_t = 0.45)]
    radius: f32,
    /// Weight of the coherence term (1 − cos between consecutive sentences) in the cost.
    #[arg(long, default_value_t = 0.0)]
    coherence_weight: f32,
    /// Bank neighbours the greedy-retrieval baseline chooses among at each step, M.
    #[arg(long, default_value_t = 16)]
    greedy_neighbours: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// With --cases: also write the markdown report here.
    #[arg(long, requires = "cases")]
    out: Option<PathBuf>,
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

/// The loaded pieces every case shares.
struct Setup<'a> {
    args: &'a Args,
    trained: Trained,
    encoder: BertEncoder,
    decoder: RetrievalDecoder,
    sampling: DiffusionSampling,
    classifier: Option<(LinearClassifierGuardrail, Severity)>,
}

/// One prompt / goal / guardrail problem.
struct Case {
    id: String,
    prompt: Vec<String>,
    goal: String,
    avoid: Vec<String>,
    tau: f32,
}

pub fn run(args: Args) -> Result<()> {
    if args.steps == 0 || args.candidates == 0 || args.neighbours == 0 || args.beam == 0 {
        bail!("--steps, --candidates, --neighbours and --beam must all be at least 1");
    }
    if !(args.steer.is_finite() && args.steer >= 0.0) {
        bail!("--steer must be a finite λ ≥ 0, got {}", args.steer);
    }
    check_cosine("--tau", args.tau)?;
    check_cosine("--radius", args.radius)?;
    // Read the cases or the prompt before loading anything, so a typo fails fast.
    let cases = match &args.cases {
        Some(path) => read_cases(path, args.tau)?,
        None => {
            let prompt = segment(args.prompt.as_deref().unwrap_or_default());
            if prompt.is_empty() {
                bail!("the prompt holds no sentence; pass some text to continue");
            }
            let goal = args.goal.clone().unwrap_or_default();
            if goal.trim().is_empty() {
                bail!("--goal is empty; pass the sentence or topic the plan should reach");
            }
            vec![Case {
                id: "prompt".into(),
                prompt,
                goal,
                avoid: args.avoid.clone(),
                tau: args.tau,
            }]
        }
    };
    let trained = Trained::load(&args.model, args.normalizer.as_deref())?;
    let encoder = trained.encoder(&args.encoder)?;
    let sampling = args.sampling.sampling()?;
    let decoder = open_retrieval_decoder(
        args.bank.as_deref(),
        args.store.as_deref(),
        trained.encoder_id(),
        encoder.dim(),
    )?;
    let classifier = match &args.classifier {
        Some(path) => Some(load_classifier(path, &encoder)?),
        None => None,
    };
    let ctx = Setup {
        args: &args,
        trained,
        encoder,
        decoder,
        sampling,
        classifier,
    };
    match &args.cases {
        Some(path) => run_cases(&ctx, path, &cases),
        None => run_single(&ctx, &cases[0]),
    }
}

fn check_cosine(flag: &str, v: f32) -> Result<()> {
    if !(v.is_finite() && (-1.0..=1.0).contains(&v)) {
        bail!("{flag} is a cosine in [−1, 1], got {v}");
    }
    Ok(())
}

/// Encodes texts as whole units (a goal or topic is one concept even if it has two
/// sentences), returning one vector per text.
fn encode(encoder: &BertEncoder, texts: &[&str]) -> Result<Vec<Concept>> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    Ok(encoder
        .encode(texts, None)?
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?)
}

/// The classifier file: explicit weights, or labelled sentences to train on.
fn load_classifier(
    path: &Path,
    encoder: &BertEncoder,
) -> Result<(LinearClassifierGuardrail, Severity)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the classifier {}", path.display()))?;
    let doc: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not JSON; write {{\"name\", \"weights\", \"bias\"}} or {{\"name\", \
             \"forbidden\": [...], \"allowed\": [...]}}",
            path.display()
        )
    })?;
    let bad = |what: &str| anyhow!("{}: {what}", path.display());
    let name = doc["name"].as_str().unwrap_or("classifier").to_string();
    let severity = match doc["severity"].as_str() {
        None | Some("hard") => Severity::Hard,
        Some("soft") => Severity::Soft {
            weight: doc["weight"].as_f64().unwrap_or(1.0) as f32,
        },
        Some(other) => return Err(bad(&format!("severity `{other}` is not hard or soft"))),
    };
    let strings = |key: &str| -> Result<Vec<String>> {
        doc[key]
            .as_array()
            .ok_or_else(|| bad(&format!("`{key}` must be an array of sentences")))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(&format!("`{key}` holds a non-string")))
            })
            .collect()
    };
    let classifier = if let Some(weights) = doc["weights"].as_array() {
        let weights: Vec<f32> = weights
            .iter()
            .map(|w| w.as_f64().map(|w| w as f32))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("`weights` must be an array of numbers"))?;
        if weights.len() != encoder.dim() {
            return Err(bad(&format!(
                "{} weights, but the encoder's concepts have {} dimensions",
                weights.len(),
                encoder.dim()
            )));
        }
        let bias = doc["bias"]
            .as_f64()
            .ok_or_else(|| bad("`bias` must be a number"))? as f32;
        LinearClassifierGuardrail {
            name,
            weights,
            bias,
        }
    } else {
        let forbidden = strings("forbidden")?;
        let allowed = strings("allowed")?;
        let texts: Vec<&str> = forbidden
            .iter()
            .chain(&allowed)
            .map(String::as_str)
            .collect();
        let examples = encode(encoder, &texts)?;
        let labels: Vec<bool> = (0..texts.len()).map(|i| i < forbidden.len()).collect();
        let classifier = train_logistic(name, &examples, &labels, &LogisticConfig::default())
            .map_err(|e| bad(&e.to_string()))?;
        let correct = examples
            .iter()
            .zip(&labels)
            .filter(|(x, y)| (classifier.logit(x) > 0.0) == **y)
            .count();
        tracing::info!(
            "classifier `{}`: {correct}/{} training sentences on the right side",
            classifier.name,
            examples.len()
        );
        classifier
    };
    Ok((classifier, severity))
}

/// The LCM as a proposer: diffusion models draw N samples per context (one batch for the
/// whole beam) and snap each to its nearest bank sentences; Base-LCM, deterministic, offers
/// the N bank sentences nearest its prediction. Candidates are bank rows, so the planner
/// scores the very sentences that will be said.
struct LcmProposer<'a> {
    model: &'a Lcm,
    normalizer: &'a RobustNormalizer,
    sampling: &'a DiffusionSampling,
    decoder: &'a RetrievalDecoder,
    exclude: &'a HashSet<String>,
    neighbours: usize,
    /// Unit goal and λ of `--steer` (none: unsteered).
    steer: Option<(&'a [f32], f32)>,
}

fn proposer_err(e: impl Into<anyhow::Error>) -> ConceptError {
    ConceptError::Proposer(e.into().into())
}

impl LcmProposer<'_> {
    /// `[rows, D]` raw next concepts for contexts of equal length, `copies` samples each.
    fn predict(&self, contexts: &[&[Concept]], copies: usize, seed: u64) -> Result<Vec<f32>> {
        let t = contexts[0].len();
        let dim = self.model.input_dim();
        if t > self.model.max_seq_len() {
            bail!(
                "a context of {t} sentences exceeds the model's {}; plan fewer --steps or \
                 shorten the prompt",
                self.model.max_seq_len()
            );
        }
        let mut flat = Vec::with_capacity(contexts.len() * copies * t * dim);
        for context in contexts {
            for _ in 0..copies {
                for c in context.iter() {
                    flat.extend_from_slice(c);
                }
            }
        }
        let rows = contexts.len() * copies;
        let x = Tensor::from_vec(flat, (rows, t, dim), &Device::Cpu)?;
        let mut state = self.model.new_state();
        self.model
            .extend(&mut state, &self.normalizer.normalize(&x)?)?;
        let mut rng = new_rng(seed);
        let next = self
            .model
            .next_concept(&state, self.sampling, rows, &mut rng)?;
        Ok(self
            .normalizer
            .denormalize(&next)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    fn candidates(&self, index: usize) -> Candidate {
        Candidate {
            key: index,
            concept: self.decoder.bank().vector(index).to_vec(),
        }
    }
}

impl ConceptProposer for LcmProposer<'_> {
    fn propose(
        &mut self,
        contexts: &[&[Concept]],
        n: usize,
        seed: u64,
    ) -> lcm_plan::concept::Result<Vec<Vec<Candidate>>> {
        if contexts.is_empty() {
            return Ok(Vec::new());
        }
        if contexts.iter().any(|c| c.len() != contexts[0].len()) {
            // One batch needs one length; the planner never mixes them, so split if asked.
            return contexts
                .iter()
                .map(|c| Ok(self.propose(&[*c], n, seed)?.remove(0)))
                .collect();
        }
        let diffusion = self.model.is_diffusion();
        let copies = if diffusion { n } else { 1 };
        let per_query = if diffusion { self.neighbours } else { n };
        let mut queries = self.predict(contexts, copies, seed).map_err(proposer_err)?;
        if let Some((goal, lambda)) = self.steer {
            for q in queries.chunks_exact_mut(goal.len()) {
                let norm = q
                    .iter()
                    .map(|v| v * v)
                    .sum::<f32>()
                    .sqrt()
                    .max(f32::MIN_POSITIVE);
                for (v, g) in q.iter_mut().zip(goal) {
                    *v = *v / norm + lambda * g;
                }
            }
        }
        let hits = self
            .decoder
            .search(&queries, per_query, self.exclude)
            .map_err(proposer_err)?;
        Ok(hits
            .chunks(copies)
            .map(|samples| {
                // Every sample's best sentence before any sample's second best, so the
                // first candidate is the model's own continuation.
                let mut seen = HashSet::new();
                let mut out = Vec::new();
                for rank in 0..per_query {
                    for sample in samples {
                        if let Some(hit) = sample.get(rank)
                            && seen.insert(hit.index)
                        {
                            out.push(self.candidates(hit.index));
                        }
                    }
                }
                out
            })
            .collect())
    }
}

/// The bank as the greedy baseline's neighbourhood.
struct BankNeighbours<'a> {
    decoder: &'a RetrievalDecoder,
    exclude: &'a HashSet<String>,
}

impl ConceptNeighbours for BankNeighbours<'_> {
    fn nearest(&mut self, query: &[f32], m: usize) -> lcm_plan::concept::Result<Vec<Candidate>> {
        let mut hits = self
            .decoder
            .search(query, m, self.exclude)
            .map_err(proposer_err)?;
        Ok(hits
            .pop()
            .unwrap_or_default()
            .into_iter()
            .map(|h| Candidate {
                key: h.index,
                concept: self.decoder.bank().vector(h.index).to_vec(),
            })
            .collect())
    }
}

/// The `--proposer bank` ablation: the bank sentences nearest each context's last concept.
struct BankProposer<'a> {
    decoder: &'a RetrievalDecoder,
    exclude: &'a HashSet<String>,
}

impl ConceptProposer for BankProposer<'_> {
    fn propose(
        &mut self,
        contexts: &[&[Concept]],
        n: usize,
        _seed: u64,
    ) -> lcm_plan::concept::Result<Vec<Vec<Candidate>>> {
        let mut queries = Vec::new();
        for context in contexts {
            let last = context.last().ok_or(ConceptError::EmptyContext)?;
            queries.extend_from_slice(last);
        }
        let hits = self
            .decoder
            .search(&queries, n + 1, self.exclude)
            .map_err(proposer_err)?;
        Ok(hits
            .into_iter()
            .zip(contexts)
            .map(|(hits, context)| {
                let last = &context[context.len() - 1];
                hits.into_iter()
                    .map(|h| Candidate {
                        key: h.index,
                        concept: self.decoder.bank().vector(h.index).to_vec(),
                    })
                    // The last concept's own sentence is not a next sentence.
                    .filter(|c| lcm_plan::concept::cosine(&c.concept, last) < 0.999_999)
                    .take(n)
                    .collect()
            })
            .collect())
    }
}

/// What one method produced for one case.
struct Outcome {
    steps: Vec<Candidate>,
    score: RolloutScore,
    millis: f64,
}

/// The three methods on one case.
struct CaseResult {
    plan: ConceptPlan,
    planner: Outcome,
    unconstrained: Outcome,
    greedy: Outcome,
    cost: ConceptCost,
}

fn solve(ctx: &Setup, case: &Case) -> Result<CaseResult> {
    let args = ctx.args;
    let prompt_refs: Vec<&str> = case.prompt.iter().map(String::as_str).collect();
    let prompt = encode(&ctx.encoder, &prompt_refs)?;
    let goal = encode(&ctx.encoder, &[case.goal.as_str()])?.remove(0);
    let avoid_refs: Vec<&str> = case.avoid.iter().map(String::as_str).collect();
    let avoid = encode(&ctx.encoder, &avoid_refs)?;
    let mut cost = ConceptCost::new(&goal, case.tau)?.with_coherence(args.coherence_weight);
    for (text, centre) in case.avoid.iter().zip(&avoid) {
        cost = cost.with_guardrail(
            ConceptBall::new(format!("avoid: {text}"), centre, args.radius)?,
            Severity::Hard,
        );
    }
    if let Some((classifier, severity)) = &ctx.classifier {
        cost = cost.with_guardrail(classifier.clone(), *severity);
    }
    // Saying the prompt back, or the goal / forbidden text verbatim, would be cheating.
    let exclude: HashSet<String> = case
        .prompt
        .iter()
        .chain(std::iter::once(&case.goal))
        .chain(&case.avoid)
        .cloned()
        .collect();
    let mut proposer = LcmProposer {
        model: &ctx.trained.loaded.model,
        normalizer: &ctx.trained.normalizer,
        sampling: &ctx.sampling,
        decoder: &ctx.decoder,
        exclude: &exclude,
        neighbours: args.neighbours,
        steer: (args.steer != 0.0).then_some((cost.goal.as_slice(), args.steer)),
    };
    let last = &prompt[prompt.len() - 1];
    let seed = args.sampling.seed;
    let realised =
        |steps: &[Candidate]| -> Vec<Concept> { steps.iter().map(|s| s.concept.clone()).collect() };

    let started = Instant::now();
    let planner = ConceptPlanner::new(ConceptPlannerConfig {
        steps: args.steps,
        beam_width: args.beam,
        candidates: args.candidates,
        seed,
    })?;
    let plan = match args.proposer {
        ProposerKind::Lcm => planner.plan(&mut proposer, &prompt, &cost),
        ProposerKind::Bank => planner.plan(
            &mut BankProposer {
                decoder: &ctx.decoder,
                exclude: &exclude,
            },
            &prompt,
            &cost,
        ),
    }
    .with_context(|| format!("planning case `{}`", case.id))?;
    let planner_out = Outcome {
        score: score_rollout(&cost, last, &realised(&plan.steps)),
        steps: plan.steps.clone(),
        millis: started.elapsed().as_secs_f64() * 1e3,
    };

    let started = Instant::now();
    proposer.steer = None;
    let steps = unconstrained_rollout(&mut proposer, &prompt, args.steps, seed)?;
    let unconstrained = Outcome {
        score: score_rollout(&cost, last, &realised(&steps)),
        steps,
        millis: started.elapsed().as_secs_f64() * 1e3,
    };

    let started = Instant::now();
    let mut bank = BankNeighbours {
        decoder: &ctx.decoder,
        exclude: &exclude,
    };
    let steps = greedy_retrieval(&mut bank, last, &goal, args.steps, args.greedy_neighbours)?;
    let greedy = Outcome {
        score: score_rollout(&cost, last, &realised(&steps)),
        steps,
        millis: started.elapsed().as_secs_f64() * 1e3,
    };
    Ok(CaseResult {
        plan,
        planner: planner_out,
        unconstrained,
        greedy,
        cost,
    })
}

fn sentence(ctx: &Setup, c: &Candidate) -> String {
    ctx.decoder
        .bank()
        .sentence(c.key)
        .map(str::to_string)
        .unwrap_or_else(|e| format!("<unreadable bank row {}: {e}>", c.key))
}

/// A method's continuation as JSON: each sentence with its goal cosine and margins.
fn steps_json(ctx: &Setup, cost: &ConceptCost, outcome: &Outcome) -> Value {
    let names = cost.guardrail_names();
    let sentences: Vec<Value> = outcome
        .steps
        .iter()
        .map(|s| {
            let margins: serde_json::Map<String, Value> = names
                .iter()
                .cloned()
                .zip(cost.margins(&s.concept).into_iter().map(|m| json!(m)))
                .collect();
            json!({
                "text": sentence(ctx, s),
                "goal_cosine": lcm_plan::concept::cosine(&s.concept, &cost.goal),
                "margins": margins,
            })
        })
        .collect();
    json!({
        "sentences": sentences,
        "reached_at": outcome.score.reached_at.map(|i| i + 1),
        "best_goal_cosine": finite(outcome.score.best_goal_cosine),
        "violating_steps": outcome.score.violating_steps,
        "coherence": finite(outcome.score.coherence),
        "ms": outcome.millis,
    })
}

fn finite(v: f32) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

fn plan_json(plan: &ConceptPlan) -> Value {
    json!({
        "feasible": plan.feasible,
        "objective": plan.objective,
        "anticipated": plan.anticipated,
        "min_margins": plan.margins.iter().map(|(n, m)| json!({"guardrail": n, "margin": finite(*m)})).collect::<Vec<_>>(),
        "candidates": plan.candidates,
        "feasible_candidates": plan.feasible_candidates,
        "complete_plans": plan.complete_plans,
        "feasible_plans": plan.feasible_plans,
    })
}

fn settings_json(ctx: &Setup) -> Value {
    let a = ctx.args;
    json!({
        "steps": a.steps,
        "beam": a.beam,
        "candidates": a.candidates,
        "neighbours": a.neighbours,
        "steer": a.steer,
        "proposer": format!("{:?}", a.proposer).to_lowercase(),
        "tau": a.tau,
        "radius": a.radius,
        "coherence_weight": a.coherence_weight,
        "greedy_neighbours": a.greedy_neighbours,
        "seed": a.sampling.seed,
        "sampling": ctx.sampling,
        "bank_sentences": ctx.decoder.bank().len(),
        "classifier": ctx.classifier.as_ref().map(|(c, _)| c.name.clone()),
    })
}

fn run_single(ctx: &Setup, case: &Case) -> Result<()> {
    let result = solve(ctx, case)?;
    let cost = &result.cost;
    if ctx.args.json {
        let mut planner = steps_json(ctx, cost, &result.planner);
        planner["plan"] = plan_json(&result.plan);
        let doc = json!({
            "model": ctx.trained.label(),
            "prompt": case.prompt,
            "goal": case.goal,
            "avoid": case.avoid,
            "settings": settings_json(ctx),
            "planner": planner,
            "unconstrained": steps_json(ctx, cost, &result.unconstrained),
            "greedy_retrieval": steps_json(ctx, cost, &result.greedy),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let plan = &result.plan;
    println!("Prompt ({} sentences):", case.prompt.len());
    for s in &case.prompt {
        println!("  {s}");
    }
    println!("Goal (reached at cos ≥ {}): {}", case.tau, case.goal);
    for name in cost.guardrail_names() {
        println!("Guardrail: {name}");
    }
    let status = match (plan.feasible, plan.reached_at) {
        (true, Some(t)) => format!("feasible, goal reached at step {}", t + 1),
        (true, None) => "feasible, goal not reached".to_string(),
        (false, _) => "INFEASIBLE: every plan found enters a hard guardrail region; this is \
                       the least-violating one"
            .to_string(),
    };
    println!(
        "\nPlan by {} ({} steps, beam {}, {} candidates per step): {status}",
        ctx.trained.label(),
        ctx.args.steps,
        ctx.args.beam,
        ctx.args.candidates
    );
    for (t, step) in plan.steps.iter().enumerate() {
        let margins: Vec<String> = cost
            .margins(&step.concept)
            .iter()
            .map(|m| format!("{m:+.3}"))
            .collect();
        println!(
            "  {:>2}. [goal {:.3} | anticipated cost {:.3} | margins {}] {}",
            t + 1,
            plan.goal_cosines[t],
            plan.anticipated[t],
            if margins.is_empty() {
                "—".to_string()
            } else {
                margins.join(" ")
            },
            sentence(ctx, step)
        );
    }
    for (name, m) in &plan.margins {
        println!("Minimum margin of `{name}`: {m:+.3}");
    }
    println!(
        "Feasible candidates {}/{}; feasible complete plans {}/{}.",
        plan.feasible_candidates, plan.candidates, plan.feasible_plans, plan.complete_plans
    );
    for (label, outcome) in [
        ("Unconstrained generation", &result.unconstrained),
        ("Greedy retrieval", &result.greedy),
    ] {
        println!("\n{label}:");
        for (t, step) in outcome.steps.iter().enumerate() {
            let inside = cost
                .margins(&step.concept)
                .into_iter()
                .any(lcm_plan::concept::violates);
            println!(
                "  {:>2}. [goal {:.3}{}] {}",
                t + 1,
                lcm_plan::concept::cosine(&step.concept, &cost.goal),
                if inside { " | INSIDE a guardrail" } else { "" },
                sentence(ctx, step)
            );
        }
    }
    Ok(())
}

/// Reads the case file; errors name the file, the line and the fix.
fn read_cases(path: &Path, default_tau: f32) -> Result<Vec<Case>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the case file {}; pass a JSON-lines file of {{\"id\", \"prompt\", \
             \"goal\", \"avoid\": [...]}}",
            path.display()
        )
    })?;
    let mut cases = Vec::new();
    let mut ids = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: String| anyhow!("{}:{n}: {what}", path.display());
        let doc: Value = serde_json::from_str(line)
            .map_err(|e| bad(format!("not a JSON object ({e}); write one case per line")))?;
        let text_field = |key: &str| -> Result<String> {
            match doc.get(key).and_then(Value::as_str) {
                Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
                _ => Err(bad(format!("`{key}` must be a non-empty string"))),
            }
        };
        let id = match doc.get("id") {
            None => format!("line-{n}"),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(x)) => x.to_string(),
            Some(_) => return Err(bad("`id` must be a string or number".into())),
        };
        if !ids.insert(id.clone()) {
            return Err(bad(format!("duplicate id `{id}`; give every case its own")));
        }
        let prompt = segment(&text_field("prompt")?);
        if prompt.is_empty() {
            return Err(bad("`prompt` holds no sentence".into()));
        }
        let goal = text_field("goal")?;
        let avoid = match doc.get("avoid") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v.as_str() {
                    Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
                    _ => Err(bad("`avoid` must hold non-empty strings".into())),
                })
                .collect::<Result<_>>()?,
            Some(_) => return Err(bad("`avoid` must be an array of strings".into())),
        };
        let tau = match doc.get("tau") {
            None | Some(Value::Null) => default_tau,
            Some(v) => {
                let tau = v
                    .as_f64()
                    .ok_or_else(|| bad("`tau` must be a number".into()))?
                    as f32;
                check_cosine("`tau`", tau).map_err(|e| bad(e.to_string()))?;
                tau
            }
        };
        cases.push(Case {
            id,
            prompt,
            goal,
            avoid,
            tau,
        });
    }
    if cases.is_empty() {
        bail!("{} holds no case", path.display());
    }
    Ok(cases)
}

fn methods(args: &Args) -> [&'static str; 3] {
    let planner = match args.proposer {
        ProposerKind::Lcm => "planner",
        ProposerKind::Bank => "planner (bank proposals, no model)",
    };
    [planner, "unconstrained generation", "greedy retrieval"]
}

fn run_cases(ctx: &Setup, path: &Path, cases: &[Case]) -> Result<()> {
    let mut results = Vec::with_capacity(cases.len());
    for (i, case) in cases.iter().enumerate() {
        let result = solve(ctx, case)?;
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
    let outcomes = |m: usize| -> Vec<&Outcome> {
        results
            .iter()
            .map(|r| match m {
                0 => &r.planner,
                1 => &r.unconstrained,
                _ => &r.greedy,
            })
            .collect()
    };
    let summaries: Vec<(Summary, f64)> = (0..3)
        .map(|m| {
            let o = outcomes(m);
            let scores: Vec<RolloutScore> = o.iter().map(|o| o.score.clone()).collect();
            let ms = o.iter().map(|o| o.millis).sum::<f64>() / o.len() as f64;
            (Summary::from_scores(&scores), ms)
        })
        .collect();
    let infeasible = results.iter().filter(|r| !r.plan.feasible).count();
    let report = markdown(ctx, path, cases, &results, &summaries, infeasible);
    if let Some(out) = &ctx.args.out {
        std::fs::write(out, &report)
            .with_context(|| format!("cannot write the report to {}", out.display()))?;
    }
    if !ctx.args.json {
        print!("{report}");
        return Ok(());
    }
    let summary: Vec<Value> = methods(ctx.args)
        .iter()
        .zip(&summaries)
        .map(|(name, (s, ms))| {
            json!({
                "method": name,
                "cases": s.cases,
                "goal_reach_rate": s.goal_reach_rate,
                "goal_reach_ci95": [s.goal_reach_ci.0, s.goal_reach_ci.1],
                "reach_and_safe_rate": s.reach_and_safe_rate,
                "violation_rate": s.violation_rate,
                "step_violation_rate": s.step_violation_rate,
                "coherence": s.coherence,
                "mean_best_goal_cosine": s.mean_best_goal_cosine,
                "ms_per_case": ms,
            })
        })
        .collect();
    let per_case: Vec<Value> = cases
        .iter()
        .zip(&results)
        .map(|(case, r)| {
            let mut planner = steps_json(ctx, &r.cost, &r.planner);
            planner["plan"] = plan_json(&r.plan);
            json!({
                "id": case.id,
                "prompt": case.prompt,
                "goal": case.goal,
                "avoid": case.avoid,
                "tau": case.tau,
                "planner": planner,
                "unconstrained": steps_json(ctx, &r.cost, &r.unconstrained),
                "greedy_retrieval": steps_json(ctx, &r.cost, &r.greedy),
            })
        })
        .collect();
    let doc = json!({
        "model": ctx.trained.label(),
        "cases_file": path.display().to_string(),
        "settings": settings_json(ctx),
        "planner_infeasible_cases": infeasible,
        "summary": summary,
        "cases": per_case,
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

fn steered(lambda: f32) -> String {
    if lambda == 0.0 {
        String::new()
    } else {
        format!(" (planner proposals steered toward the goal, λ = {lambda})")
    }
}

fn markdown(
    ctx: &Setup,
    path: &Path,
    cases: &[Case],
    results: &[CaseResult],
    summaries: &[(Summary, f64)],
    infeasible: usize,
) -> String {
    let a = ctx.args;
    let mut s = String::new();
    let _ = writeln!(s, "# Concept-space planning: {}\n", ctx.trained.label());
    let taus: HashSet<String> = cases.iter().map(|c| format!("{}", c.tau)).collect();
    let mut taus: Vec<String> = taus.into_iter().collect();
    taus.sort();
    let _ = writeln!(
        s,
        "{} cases from `{}`; K = {} sentences; goal reached at cos ≥ τ = {}; --avoid balls \
         of cosine radius {} (hard); beam {} × {} {}; greedy retrieval among M = {} \
         neighbours; {} bank sentences; seed {}.\n",
        cases.len(),
        path.display(),
        a.steps,
        taus.join(" / "),
        a.radius,
        a.beam,
        a.candidates,
        if a.proposer == ProposerKind::Bank {
            "bank sentences nearest the last concept (no model)".to_string()
        } else if ctx.trained.loaded.model.is_diffusion() {
            format!(
                "samples ({} DDIM steps, guidance {}) snapped to {} bank sentences each{}",
                ctx.sampling.steps,
                ctx.sampling.options.guidance_scale,
                a.neighbours,
                steered(a.steer)
            )
        } else {
            format!("bank sentences nearest the prediction{}", steered(a.steer))
        },
        a.greedy_neighbours,
        ctx.decoder.bank().len(),
        a.sampling.seed
    );
    let _ = writeln!(
        s,
        "| method | goal reach (95% CI) | reach & safe | violation rate (cases) | violation \
         rate (sentences) | coherence | mean best goal cos | ms / case |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for (name, (m, ms)) in methods(a).iter().zip(summaries) {
        let _ = writeln!(
            s,
            "| {name} | {:.2} ({:.2}–{:.2}) | {:.2} | {:.2} | {:.3} | {:.3} | {:.3} | {:.0} |",
            m.goal_reach_rate,
            m.goal_reach_ci.0,
            m.goal_reach_ci.1,
            m.reach_and_safe_rate,
            m.violation_rate,
            m.step_violation_rate,
            m.coherence,
            m.mean_best_goal_cosine,
            ms
        );
    }
    let (cand, feas): (usize, usize) = results.iter().fold((0, 0), |(c, f), r| {
        (c + r.plan.candidates, f + r.plan.feasible_candidates)
    });
    let _ = writeln!(
        s,
        "\nPlanner: {infeasible} of {} cases had no feasible plan (returned flagged \
         infeasible); {feas} of {cand} scored candidate extensions were feasible.\n",
        cases.len()
    );
    let _ = writeln!(
        s,
        "Coherence: mean cosine between consecutive sentences, the prompt's last included. \
         Violation: a sentence inside any --avoid ball (cos ≥ radius) or classifier region.\n"
    );
    let _ = writeln!(
        s,
        "## Per case\n\nReach: step at which the goal was reached (— = not within K); \
         viol: sentences inside a guardrail region; best: highest goal cosine.\n"
    );
    let _ = writeln!(
        s,
        "| id | planner reach | viol | best | feasible | unconstrained reach | viol | best | \
         greedy reach | viol | best |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    let reach = |o: &Outcome| {
        o.score
            .reached_at
            .map_or("—".to_string(), |t| (t + 1).to_string())
    };
    for (case, r) in cases.iter().zip(results) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} | {} | {} | {} | {:.2} | {} | {} | {:.2} |",
            case.id,
            reach(&r.planner),
            r.planner.score.violating_steps,
            r.planner.score.best_goal_cosine,
            if r.plan.feasible { "yes" } else { "no" },
            reach(&r.unconstrained),
            r.unconstrained.score.violating_steps,
            r.unconstrained.score.best_goal_cosine,
            reach(&r.greedy),
            r.greedy.score.violating_steps,
            r.greedy.score.best_goal_cosine,
        );
    }
    s
}
