//! Concept-space planning with a trained LCM as the world model (`lcm plan`): the parts of
//! it that need the LCM stack. The planner, the baselines, case files, classifier files and
//! the reports are generic and live in [`lcm_plan::concept`]; this file supplies the
//! proposers they search over and solves one case end to end:
//!
//! - [`LcmProposer`]: the LCM's samples (diffusion models) or prediction (Base-LCM), each
//!   snapped to its nearest sentences of the retrieval decoder's bank, so the planner scores
//!   exactly the sentences that will be said;
//! - [`BankProposer`] (the `--proposer bank` ablation) and [`BankNeighbours`] (greedy
//!   retrieval's neighbourhood): the bank sentences nearest a concept;
//! - [`Planning::solve`]: encode a case, build its cost (hard `--avoid` balls, the
//!   classifier), and compare the planner with unconstrained generation and greedy
//!   retrieval through [`lcm_plan::concept::compare_methods`].
//!
//! The proposers take the model's pieces (`&Lcm`, `&RobustNormalizer`, `&DiffusionSampling`,
//! `&RetrievalDecoder`), not a loader's wrapper, so any entry point can build them.

use std::collections::HashSet;

use candle_core::{DType, Device, Tensor};
use lcm_concept::ConceptEncoder;
use lcm_concept::normalizer::RobustNormalizer;
use lcm_data::retrieval::RetrievalDecoder;
use lcm_model::generate::{DiffusionSampling, Lcm};
use lcm_plan::concept::report::ReportContext;
use lcm_plan::concept::{
    Candidate, CaseResult, ClassifierFile, ClassifierFileError, Concept, ConceptBall, ConceptCost,
    ConceptNeighbours, ConceptPlanError, ConceptPlanner, ConceptPlannerConfig, ConceptProposer,
    LinearClassifierGuardrail, Methods, compare_methods, cosine,
};
use lcm_plan::cost::Severity;
use lcm_train::new_rng;
use serde_json::{Value, json};

pub use lcm_plan::concept::Case;

/// Errors of concept-space planning with an LCM.
#[derive(Debug, thiserror::Error)]
pub enum PlanningError {
    #[error(transparent)]
    Plan(#[from] ConceptPlanError),
    #[error(transparent)]
    Classifier(#[from] ClassifierFileError),
    #[error(transparent)]
    Concept(#[from] lcm_concept::ConceptError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Invalid(String),
    /// A failure while solving the case named.
    #[error("planning case `{case}`")]
    Case {
        case: String,
        #[source]
        source: Box<PlanningError>,
    },
}

pub type Result<T, E = PlanningError> = std::result::Result<T, E>;

/// Where the planner's candidates come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposerKind {
    /// The model's samples, snapped to the bank.
    Lcm,
    /// The bank sentences nearest the last concept, no model (an ablation).
    Bank,
}

impl ProposerKind {
    /// The name used in the settings JSON.
    pub fn name(self) -> &'static str {
        match self {
            ProposerKind::Lcm => "lcm",
            ProposerKind::Bank => "bank",
        }
    }
}

/// The planning settings (`lcm plan`'s flags).
#[derive(Clone, Debug, PartialEq)]
pub struct PlanOptions {
    /// Sentences planned, K.
    pub steps: usize,
    /// Partial plans kept per step of the beam search.
    pub beam: usize,
    /// Model samples per partial plan (diffusion) or bank sentences nearest the
    /// prediction (Base-LCM), N.
    pub candidates: usize,
    /// Bank sentences per diffusion sample.
    pub neighbours: usize,
    /// λ steering the planner's proposals toward the goal (0: the model's own samples).
    pub steer: f32,
    pub proposer: ProposerKind,
    /// Default goal cosine τ (a case's own `tau` overrides it).
    pub tau: f32,
    /// Cosine radius of the `--avoid` balls.
    pub radius: f32,
    pub coherence_weight: f32,
    /// Bank neighbours greedy retrieval chooses among, M.
    pub greedy_neighbours: usize,
    /// Seed of the planner and of the sampling noise.
    pub seed: u64,
}

/// `lcm plan`'s defaults, which the server's `/plan` shares.
impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            steps: 4,
            beam: 4,
            candidates: 8,
            neighbours: 4,
            steer: 0.0,
            proposer: ProposerKind::Lcm,
            tau: 0.5,
            radius: 0.45,
            coherence_weight: 0.0,
            greedy_neighbours: 16,
            seed: 0,
        }
    }
}

impl PlanOptions {
    /// Refuses settings that cannot plan (the messages name the flags).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(PlanningError::Invalid(m));
        if self.steps == 0 || self.candidates == 0 || self.neighbours == 0 || self.beam == 0 {
            return bad(
                "--steps, --candidates, --neighbours and --beam must all be at least 1".into(),
            );
        }
        if !(self.steer.is_finite() && self.steer >= 0.0) {
            return bad(format!(
                "--steer must be a finite λ ≥ 0, got {}",
                self.steer
            ));
        }
        for (flag, v) in [("--tau", self.tau), ("--radius", self.radius)] {
            if !lcm_plan::concept::is_cosine(v) {
                return bad(format!("{flag} is a cosine in [−1, 1], got {v}"));
            }
        }
        Ok(())
    }
}

/// Encodes texts as whole units (a goal or topic is one concept even if it has two
/// sentences), returning one vector per text.
pub fn encode(encoder: &dyn ConceptEncoder, texts: &[&str]) -> Result<Vec<Concept>> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    Ok(encoder
        .encode(texts, None)?
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?)
}

/// The classifier file at `path` as a guardrail: explicit weights, or labelled sentences
/// encoded by `encoder` and trained on by logistic regression.
pub fn load_classifier(
    path: &std::path::Path,
    encoder: &dyn ConceptEncoder,
) -> Result<(LinearClassifierGuardrail, Severity)> {
    let spec = ClassifierFile::read(path, encoder.dim())?;
    let examples = encode(encoder, &spec.source.sentences())?;
    let (classifier, correct) = spec.guardrail(&examples).map_err(|e| ClassifierFileError {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if !examples.is_empty() {
        tracing::info!(
            "classifier `{}`: {correct}/{} training sentences on the right side",
            classifier.name,
            examples.len()
        );
    }
    Ok((classifier, spec.severity))
}

fn proposer_err(e: impl std::error::Error + Send + Sync + 'static) -> ConceptPlanError {
    ConceptPlanError::Proposer(Box::new(e))
}

/// The bank row `index` as a candidate.
fn bank_candidate(decoder: &RetrievalDecoder, index: usize) -> Candidate {
    Candidate {
        key: index,
        concept: decoder.bank().vector(index).to_vec(),
    }
}

/// The LCM as a proposer: diffusion models draw N samples per context (one batch for the
/// whole beam) and snap each to its nearest bank sentences; Base-LCM, deterministic, offers
/// the N bank sentences nearest its prediction. Candidates are bank rows, so the planner
/// scores the very sentences that will be said.
pub struct LcmProposer<'a> {
    pub model: &'a Lcm,
    pub normalizer: &'a RobustNormalizer,
    pub sampling: &'a DiffusionSampling,
    pub decoder: &'a RetrievalDecoder,
    /// Sentences never proposed (the prompt, goal and forbidden texts).
    pub exclude: &'a HashSet<String>,
    /// Bank sentences per diffusion sample.
    pub neighbours: usize,
    /// Unit goal and λ of `--steer` (none: unsteered).
    pub steer: Option<(&'a [f32], f32)>,
}

impl LcmProposer<'_> {
    /// `[rows, D]` raw next concepts for contexts of equal length, `copies` samples each.
    fn predict(&self, contexts: &[&[Concept]], copies: usize, seed: u64) -> Result<Vec<f32>> {
        let t = contexts[0].len();
        let dim = self.model.input_dim();
        if t > self.model.max_seq_len() {
            return Err(PlanningError::Invalid(format!(
                "a context of {t} sentences exceeds the model's {}; plan fewer --steps or \
                 shorten the prompt",
                self.model.max_seq_len()
            )));
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
                            out.push(bank_candidate(self.decoder, hit.index));
                        }
                    }
                }
                out
            })
            .collect())
    }
}

/// The bank as the greedy baseline's neighbourhood.
pub struct BankNeighbours<'a> {
    pub decoder: &'a RetrievalDecoder,
    pub exclude: &'a HashSet<String>,
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
            .map(|h| bank_candidate(self.decoder, h.index))
            .collect())
    }
}

/// The `--proposer bank` ablation: the bank sentences nearest each context's last concept.
pub struct BankProposer<'a> {
    pub decoder: &'a RetrievalDecoder,
    pub exclude: &'a HashSet<String>,
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
            let last = context.last().ok_or(ConceptPlanError::EmptyContext)?;
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
                    .map(|h| bank_candidate(self.decoder, h.index))
                    // The last concept's own sentence is not a next sentence.
                    .filter(|c| cosine(&c.concept, last) < 0.999_999)
                    .take(n)
                    .collect()
            })
            .collect())
    }
}

/// The one case of a prompt (split into sentences), a goal and topics to avoid: what `lcm
/// plan PROMPT --goal …` and the server's `/plan` solve.
pub fn prompt_case(prompt: &str, goal: &str, avoid: Vec<String>, tau: f32) -> Result<Case> {
    let prompt = lcm_concept::segment::segment(prompt);
    if prompt.is_empty() {
        return Err(PlanningError::Invalid(
            "the prompt holds no sentence; pass some text to continue".into(),
        ));
    }
    if goal.trim().is_empty() {
        return Err(PlanningError::Invalid(
            "the goal is empty; pass the sentence or topic the plan should reach".into(),
        ));
    }
    if let Some(i) = avoid.iter().position(|a| a.trim().is_empty()) {
        return Err(PlanningError::Invalid(format!(
            "avoid topic {i} is empty; pass the sentences or topics to stay away from"
        )));
    }
    Ok(Case {
        id: "prompt".into(),
        prompt,
        goal: goal.to_string(),
        avoid,
        tau,
    })
}

/// Plans `case` with the model, encoder and retrieval bank a generation session holds (no
/// classifier): the document `lcm plan --json` prints for the same case and settings.
pub fn plan_in_session(
    session: &crate::session::GenerationSession,
    case: &Case,
    options: PlanOptions,
    sampling: &DiffusionSampling,
) -> Result<Value> {
    options.validate()?;
    let crate::generate::ContinuationDecoder::Retrieval(decoder) = session.decoder() else {
        return Err(PlanningError::Invalid(
            "planning says sentences of a retrieval bank: load the model with a store or a \
             bank, not a generative decoder"
                .into(),
        ));
    };
    let trained = session.trained();
    let planning = Planning {
        model: trained.model(),
        normalizer: &trained.normalizer,
        sampling,
        decoder,
        encoder: session.encoder(),
        classifier: None,
        options,
    };
    let result = planning.solve(case)?;
    let sentence = |c: &Candidate| planning.sentence(c);
    Ok(planning
        .report(trained.label(), &sentence)
        .single_json(case, &result))
}

/// Everything every case of a run shares: the model's pieces, the bank, the encoder, the
/// optional classifier and the settings.
pub struct Planning<'a> {
    pub model: &'a Lcm,
    pub normalizer: &'a RobustNormalizer,
    pub sampling: &'a DiffusionSampling,
    pub decoder: &'a RetrievalDecoder,
    pub encoder: &'a dyn ConceptEncoder,
    pub classifier: Option<(LinearClassifierGuardrail, Severity)>,
    pub options: PlanOptions,
}

impl Planning<'_> {
    /// The three methods on one case.
    pub fn solve(&self, case: &Case) -> Result<CaseResult> {
        self.solve_inner(case)
            .map_err(|source| PlanningError::Case {
                case: case.id.clone(),
                source: Box::new(source),
            })
    }

    fn solve_inner(&self, case: &Case) -> Result<CaseResult> {
        let o = &self.options;
        let prompt_refs: Vec<&str> = case.prompt.iter().map(String::as_str).collect();
        let prompt = encode(self.encoder, &prompt_refs)?;
        let goal = encode(self.encoder, &[case.goal.as_str()])?
            .pop()
            .ok_or_else(|| PlanningError::Invalid("the encoder returned no goal".into()))?;
        let avoid_refs: Vec<&str> = case.avoid.iter().map(String::as_str).collect();
        let avoid = encode(self.encoder, &avoid_refs)?;
        let mut cost = ConceptCost::new(&goal, case.tau)?.with_coherence(o.coherence_weight);
        for (text, centre) in case.avoid.iter().zip(&avoid) {
            cost = cost.with_guardrail(
                ConceptBall::new(format!("avoid: {text}"), centre, o.radius)?,
                Severity::Hard,
            );
        }
        if let Some((classifier, severity)) = &self.classifier {
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
        let unit_goal = cost.goal.clone();
        let lcm = |steer| LcmProposer {
            model: self.model,
            normalizer: self.normalizer,
            sampling: self.sampling,
            decoder: self.decoder,
            exclude: &exclude,
            neighbours: o.neighbours,
            steer,
        };
        let mut steered = lcm((o.steer != 0.0).then_some((unit_goal.as_slice(), o.steer)));
        let mut bank_proposer = BankProposer {
            decoder: self.decoder,
            exclude: &exclude,
        };
        let proposer: &mut dyn ConceptProposer = match o.proposer {
            ProposerKind::Lcm => &mut steered,
            ProposerKind::Bank => &mut bank_proposer,
        };
        let planner = ConceptPlanner::new(ConceptPlannerConfig {
            steps: o.steps,
            beam_width: o.beam,
            candidates: o.candidates,
            seed: o.seed,
        })?;
        // Unconstrained generation is never steered.
        let mut continuation = lcm(None);
        let mut neighbours = BankNeighbours {
            decoder: self.decoder,
            exclude: &exclude,
        };
        let methods = Methods {
            planner: &planner,
            proposer,
            continuation: &mut continuation,
            neighbours: &mut neighbours,
            greedy_neighbours: o.greedy_neighbours,
        };
        Ok(compare_methods(methods, &prompt, &goal, cost, o.seed)?)
    }

    /// The sentence a candidate (a bank row) says.
    pub fn sentence(&self, c: &Candidate) -> String {
        self.decoder
            .bank()
            .sentence(c.key)
            .map(str::to_string)
            .unwrap_or_else(|e| format!("<unreadable bank row {}: {e}>", c.key))
    }

    /// The method names of the reports.
    pub fn methods(&self) -> [&'static str; 3] {
        let planner = match self.options.proposer {
            ProposerKind::Lcm => "planner",
            ProposerKind::Bank => "planner (bank proposals, no model)",
        };
        [planner, "unconstrained generation", "greedy retrieval"]
    }

    /// The settings object of the JSON documents.
    pub fn settings_json(&self) -> Value {
        let o = &self.options;
        json!({
            "steps": o.steps,
            "beam": o.beam,
            "candidates": o.candidates,
            "neighbours": o.neighbours,
            "steer": o.steer,
            "proposer": o.proposer.name(),
            "tau": o.tau,
            "radius": o.radius,
            "coherence_weight": o.coherence_weight,
            "greedy_neighbours": o.greedy_neighbours,
            "seed": o.seed,
            "sampling": self.sampling,
            "bank_sentences": self.decoder.bank().len(),
            "classifier": self.classifier.as_ref().map(|(c, _)| c.name.clone()),
        })
    }

    /// Where the planner's candidates come from, in words (the markdown report's intro).
    fn proposals(&self) -> String {
        let o = &self.options;
        let steered = if o.steer == 0.0 {
            String::new()
        } else {
            format!(
                " (planner proposals steered toward the goal, λ = {})",
                o.steer
            )
        };
        if o.proposer == ProposerKind::Bank {
            "bank sentences nearest the last concept (no model)".to_string()
        } else if self.model.is_diffusion() {
            format!(
                "samples ({} DDIM steps, guidance {}) snapped to {} bank sentences each{steered}",
                self.sampling.steps, self.sampling.options.guidance_scale, o.neighbours
            )
        } else {
            format!("bank sentences nearest the prediction{steered}")
        }
    }

    /// What the reports say about this run; `model` is the model's label and `sentence`
    /// looks candidates up (pass `&|c| planning.sentence(c)`).
    pub fn report<'s>(
        &self,
        model: String,
        sentence: &'s dyn Fn(&Candidate) -> String,
    ) -> ReportContext<'s> {
        let o = &self.options;
        ReportContext {
            model,
            settings: self.settings_json(),
            methods: self.methods(),
            proposals: self.proposals(),
            steps: o.steps,
            beam: o.beam,
            candidates: o.candidates,
            radius: o.radius,
            greedy_neighbours: o.greedy_neighbours,
            bank_sentences: self.decoder.bank().len(),
            seed: o.seed,
            sentence,
        }
    }
}
