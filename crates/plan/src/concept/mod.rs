//! Planning in concept space: a trained LCM is the world model over sentences.
//!
//! A *concept* is a sentence embedding (`Vec<f32>`, compared by cosine). Given the concepts
//! of a prompt, a goal concept and guardrail regions, [`ConceptPlanner`] searches the next
//! `K` concepts that move toward the goal while every concept stays outside the hard
//! guardrail regions. The world model enters through [`ConceptProposer`]: it proposes
//! candidate next concepts for a context. Candidates are expected to be *realisable* — the
//! CLI snaps every sampled concept to the bank sentence its retrieval decoder would say — so
//! what the planner scores is exactly what will be said, and the guardrails are checked on
//! the sentences themselves rather than on a point between them.
//!
//! The guardrail vocabulary is [`crate::cost`]'s: a [`Guardrail`] reports a margin per
//! concept (positive = safe) and enters with [`Severity::Hard`] or [`Severity::Soft`]. Here a
//! margin `≤ 0` counts as a violation (boundary inclusive: a sentence exactly on the ball's
//! surface is as close to the forbidden topic as the radius allows, so it is refused).
//!
//! Besides the planner this module holds the two baselines it is measured against
//! ([`unconstrained_rollout`]: the model's own next concept each step; [`greedy_retrieval`]:
//! hop to the bank neighbour most similar to the goal) and the case metrics
//! ([`score_rollout`], [`Summary`]).
//!
//! Everything is plain Rust on `f32` slices so this crate stays free of tensor libraries.

use std::cmp::Ordering;

use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use crate::cost::{Guardrail, GuardrailTerm, Severity};
use crate::data::standard_normal;
use crate::wm_eval::wilson_interval;

/// A sentence embedding.
pub type Concept = Vec<f32>;

/// Errors of concept-space planning.
#[derive(Debug, thiserror::Error)]
pub enum ConceptError {
    #[error("{what} has {got} dimensions but the concepts have {expected}")]
    DimensionMismatch {
        what: String,
        expected: usize,
        got: usize,
    },
    #[error("invalid planner setting: {0}")]
    InvalidConfig(String),
    #[error("the context holds no concept; a plan continues a prompt of at least one sentence")]
    EmptyContext,
    #[error("{0} is the zero vector or not finite; it has no direction to compare by cosine")]
    Degenerate(String),
    #[error("logistic regression needs {0}")]
    Training(String),
    #[error("the proposer failed: {0}")]
    Proposer(Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T> = std::result::Result<T, ConceptError>;

/// Dot product of two equal-length slices.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Cosine similarity; 0 when either vector is zero (no direction, no similarity).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let na = dot(a, a).sqrt();
    let nb = dot(b, b).sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot(a, b) / (na * nb)
    }
}

/// `v / |v|`, refusing zero or non-finite vectors (`what` names the vector in the error).
pub fn unit(v: &[f32], what: &str) -> Result<Concept> {
    let norm = dot(v, v).sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return Err(ConceptError::Degenerate(what.to_string()));
    }
    Ok(v.iter().map(|x| x / norm).collect())
}

/// Whether a guardrail margin counts as a violation (boundary inclusive, see module docs).
pub fn violates(margin: f32) -> bool {
    // NaN cannot be trusted to be safe.
    margin.is_nan() || margin <= 0.0
}

/// A forbidden region: every concept whose cosine with `centre` reaches `threshold`.
/// Margin = `threshold − cos(c, centre)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptBall {
    pub name: String,
    /// Unit vector.
    pub centre: Concept,
    /// Cosine radius: `cos ≥ threshold` is inside.
    pub threshold: f32,
}

impl ConceptBall {
    pub fn new(name: impl Into<String>, centre: &[f32], threshold: f32) -> Result<Self> {
        let name = name.into();
        if !threshold.is_finite() {
            return Err(ConceptError::InvalidConfig(format!(
                "the radius of `{name}` must be a finite cosine, got {threshold}"
            )));
        }
        Ok(ConceptBall {
            centre: unit(centre, &format!("the centre of `{name}`"))?,
            name,
            threshold,
        })
    }
}

impl Guardrail<Concept> for ConceptBall {
    fn name(&self) -> &str {
        &self.name
    }

    fn margin(&self, z: &Concept) -> f32 {
        self.threshold - cosine(z, &self.centre)
    }
}

/// A half-space guardrail: `w·c + b > 0` is forbidden. Margin = `−(w·c + b)`, the negated
/// logit, so a classifier trained by [`train_logistic`] to call forbidden examples positive
/// keeps the margin convention (positive = safe) and its margin 0 is probability ½.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearClassifierGuardrail {
    pub name: String,
    pub weights: Vec<f32>,
    pub bias: f32,
}

impl LinearClassifierGuardrail {
    /// The logit `w·c + b` (positive: forbidden).
    pub fn logit(&self, c: &[f32]) -> f32 {
        dot(&self.weights, c) + self.bias
    }

    /// The classifier's probability that `c` is forbidden.
    pub fn probability(&self, c: &[f32]) -> f32 {
        sigmoid(self.logit(c))
    }
}

impl Guardrail<Concept> for LinearClassifierGuardrail {
    fn name(&self) -> &str {
        &self.name
    }

    fn margin(&self, z: &Concept) -> f32 {
        if z.len() != self.weights.len() {
            // A concept of another space cannot be judged; refuse it rather than call it safe.
            return f32::NEG_INFINITY;
        }
        -self.logit(z)
    }
}

fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Settings of [`train_logistic`].
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticConfig {
    /// Full-batch gradient steps.
    pub epochs: usize,
    pub learning_rate: f32,
    /// L2 penalty `λ/2 · |w|²` (the bias is not penalised).
    pub l2: f32,
    /// Weight each class by `n / (2 · n_class)`, so a handful of forbidden examples among
    /// many allowed ones still moves the boundary.
    pub balanced: bool,
    /// Seed of the small random initial weights.
    pub seed: u64,
}

impl Default for LogisticConfig {
    /// Sizes for unit-norm sentence embeddings: their logits are small at first, so a large
    /// step size converges in a few hundred full-batch steps; λ = 1e-3 keeps a separable set
    /// from driving the weights to infinity.
    fn default() -> Self {
        LogisticConfig {
            epochs: 500,
            learning_rate: 2.0,
            l2: 1e-3,
            balanced: true,
            seed: 0,
        }
    }
}

/// Logistic regression by full-batch gradient descent on the (class-weighted) mean
/// cross-entropy plus `λ/2·|w|²`. `labels[i]` is true for a forbidden example. Deterministic
/// given `config.seed`.
pub fn train_logistic(
    name: impl Into<String>,
    examples: &[Concept],
    labels: &[bool],
    config: &LogisticConfig,
) -> Result<LinearClassifierGuardrail> {
    if examples.len() != labels.len() {
        return Err(ConceptError::Training(format!(
            "one label per example ({} examples, {} labels)",
            examples.len(),
            labels.len()
        )));
    }
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(ConceptError::Training(format!(
            "examples of both classes ({positives} forbidden, {negatives} allowed)"
        )));
    }
    let dim = examples[0].len();
    if dim == 0 {
        return Err(ConceptError::Training("non-empty vectors".into()));
    }
    for (i, e) in examples.iter().enumerate() {
        if e.len() != dim {
            return Err(ConceptError::DimensionMismatch {
                what: format!("training example {i}"),
                expected: dim,
                got: e.len(),
            });
        }
        if e.iter().any(|v| !v.is_finite()) {
            return Err(ConceptError::Training(format!(
                "finite values (example {i} is not)"
            )));
        }
    }
    if config.epochs == 0
        || !(config.learning_rate.is_finite() && config.learning_rate > 0.0)
        || !(config.l2.is_finite() && config.l2 >= 0.0)
    {
        return Err(ConceptError::InvalidConfig(format!(
            "logistic regression needs epochs > 0, learning rate > 0 and l2 ≥ 0, got {config:?}"
        )));
    }
    let n = examples.len() as f32;
    let (w_pos, w_neg) = if config.balanced {
        (n / (2.0 * positives as f32), n / (2.0 * negatives as f32))
    } else {
        (1.0, 1.0)
    };
    let mut rng = ChaCha12Rng::seed_from_u64(config.seed);
    let mut w: Vec<f32> = (0..dim)
        .map(|_| 0.01 * standard_normal(&mut rng) as f32)
        .collect();
    let mut b = 0.0f32;
    let mut grad = vec![0f32; dim];
    for _ in 0..config.epochs {
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut grad_b = 0.0;
        for (x, &y) in examples.iter().zip(labels) {
            let p = sigmoid(dot(&w, x) + b);
            let (target, weight) = if y { (1.0, w_pos) } else { (0.0, w_neg) };
            let err = weight * (p - target) / n;
            for (g, xi) in grad.iter_mut().zip(x) {
                *g += err * xi;
            }
            grad_b += err;
        }
        for (wi, g) in w.iter_mut().zip(&grad) {
            *wi -= config.learning_rate * (g + config.l2 * *wi);
        }
        b -= config.learning_rate * grad_b;
    }
    Ok(LinearClassifierGuardrail {
        name: name.into(),
        weights: w,
        bias: b,
    })
}

/// The goal: reach a concept whose cosine with `goal` is at least `tau`, as early as possible,
/// optionally keeping consecutive concepts coherent.
///
/// The objective of a path `c_1..c_T` after the prompt's last concept `c_0` is
/// `terminal · (1 − cos(g, c_T)) + stage · mean_t (1 − cos(g, c_t))
///  + coherence · mean_t (1 − cos(c_{t−1}, c_t))`.
pub struct ConceptCost {
    /// Unit vector.
    pub goal: Concept,
    pub tau: f32,
    pub terminal_weight: f32,
    /// Rewards being near the goal early (the reach metric counts any step).
    pub stage_weight: f32,
    pub coherence_weight: f32,
    pub guardrails: Vec<GuardrailTerm<Concept>>,
}

/// What [`ConceptCost::evaluate`] says about one path.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptEvaluation {
    /// The objective (see [`ConceptCost`]).
    pub objective: f32,
    /// `Σ weight · Σ_t max(0, −margin_t)` over the soft guardrails.
    pub soft_penalty: f32,
    /// Hard guardrails: `Σ_t max(0, −margin_t)` plus one per violating concept, so a
    /// concept exactly on a boundary still counts against the path.
    pub hard_violation: f32,
    /// Per guardrail, the minimum margin over the path (`+∞` for an empty path).
    pub min_margins: Vec<f32>,
    /// No hard guardrail is violated anywhere on the path.
    pub feasible: bool,
    /// `cos(goal, c_t)` per step.
    pub goal_cosines: Vec<f32>,
    /// First step (0-based) whose goal cosine reaches τ.
    pub reached_at: Option<usize>,
}

impl ConceptEvaluation {
    /// Objective plus soft penalties; NaN ranks last.
    pub fn total(&self) -> f32 {
        let t = self.objective + self.soft_penalty;
        if t.is_nan() { f32::INFINITY } else { t }
    }
}

impl ConceptCost {
    /// A goal with `terminal_weight = 1`, `stage_weight = 0.1` (as [`crate::cost::Cost`]),
    /// no coherence term and no guardrails.
    pub fn new(goal: &[f32], tau: f32) -> Result<Self> {
        if !(tau.is_finite() && (-1.0..=1.0).contains(&tau)) {
            return Err(ConceptError::InvalidConfig(format!(
                "τ is a cosine in [−1, 1], got {tau}"
            )));
        }
        Ok(ConceptCost {
            goal: unit(goal, "the goal concept")?,
            tau,
            terminal_weight: 1.0,
            stage_weight: 0.1,
            coherence_weight: 0.0,
            guardrails: Vec::new(),
        })
    }

    pub fn with_coherence(mut self, weight: f32) -> Self {
        self.coherence_weight = weight;
        self
    }

    /// Adds a guardrail (builder style).
    pub fn with_guardrail(
        mut self,
        guardrail: impl Guardrail<Concept> + 'static,
        severity: Severity,
    ) -> Self {
        self.guardrails.push(GuardrailTerm {
            guardrail: Box::new(guardrail),
            severity,
        });
        self
    }

    pub fn dim(&self) -> usize {
        self.goal.len()
    }

    pub fn guardrail_names(&self) -> Vec<String> {
        self.guardrails
            .iter()
            .map(|g| g.guardrail.name().to_string())
            .collect()
    }

    /// Per guardrail, the margin of one concept.
    pub fn margins(&self, c: &Concept) -> Vec<f32> {
        self.guardrails
            .iter()
            .map(|g| g.guardrail.margin(c))
            .collect()
    }

    /// Evaluates `path` (the future concepts) after the prompt's last concept `previous`.
    pub fn evaluate(&self, previous: &[f32], path: &[Concept]) -> ConceptEvaluation {
        let goal_cosines: Vec<f32> = path.iter().map(|c| cosine(c, &self.goal)).collect();
        let reached_at = goal_cosines.iter().position(|&c| c >= self.tau);
        let objective = match goal_cosines.last() {
            None => 0.0,
            Some(&last) => {
                let t = path.len() as f32;
                let stage = goal_cosines.iter().map(|c| 1.0 - c).sum::<f32>() / t;
                let mut coherence = 0.0;
                if self.coherence_weight != 0.0 {
                    let mut prev = previous;
                    for c in path {
                        coherence += 1.0 - cosine(prev, c);
                        prev = c;
                    }
                    coherence /= t;
                }
                self.terminal_weight * (1.0 - last)
                    + self.stage_weight * stage
                    + self.coherence_weight * coherence
            }
        };
        let mut soft_penalty = 0.0;
        let mut hard_violation = 0.0;
        let mut feasible = true;
        let mut min_margins = Vec::with_capacity(self.guardrails.len());
        for term in &self.guardrails {
            let mut min_m = f32::INFINITY;
            let mut amount = 0.0;
            let mut count = 0usize;
            for c in path {
                let m = term.guardrail.margin(c);
                let m = if m.is_nan() { f32::NEG_INFINITY } else { m };
                min_m = min_m.min(m);
                if violates(m) {
                    amount += (-m).max(0.0);
                    count += 1;
                }
            }
            match term.severity {
                Severity::Hard => {
                    if count > 0 {
                        feasible = false;
                    }
                    hard_violation += amount + count as f32;
                }
                Severity::Soft { weight } => soft_penalty += weight * amount,
            }
            min_margins.push(min_m);
        }
        ConceptEvaluation {
            objective,
            soft_penalty,
            hard_violation,
            min_margins,
            feasible,
            goal_cosines,
            reached_at,
        }
    }
}

/// A candidate next concept with the proposer's identifier for it (the CLI: the bank row of
/// the sentence it will say). The planner never puts two candidates with the same key into
/// one plan, so a plan does not repeat a sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub key: usize,
    pub concept: Concept,
}

/// The world model as the planner sees it: candidate next concepts for a context.
pub trait ConceptProposer {
    /// For each context (all of the same length, each starting with the prompt), up to `n`
    /// candidates for the next concept, the model's most likely continuation first. The
    /// same `seed` must give the same candidates.
    fn propose(
        &mut self,
        contexts: &[&[Concept]],
        n: usize,
        seed: u64,
    ) -> Result<Vec<Vec<Candidate>>>;
}

/// Nearest neighbours in the space of sayable concepts (the CLI: the sentence bank).
pub trait ConceptNeighbours {
    /// The `m` candidates closest to `query` by cosine, closest first.
    fn nearest(&mut self, query: &[f32], m: usize) -> Result<Vec<Candidate>>;
}

/// Settings of [`ConceptPlanner`].
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptPlannerConfig {
    /// Future concepts planned, `K`.
    pub steps: usize,
    /// Partial plans kept per depth.
    pub beam_width: usize,
    /// Candidates requested from the proposer per partial plan.
    pub candidates: usize,
    pub seed: u64,
}

impl Default for ConceptPlannerConfig {
    fn default() -> Self {
        ConceptPlannerConfig {
            steps: 4,
            beam_width: 4,
            candidates: 16,
            seed: 0,
        }
    }
}

/// A planner's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptPlan {
    /// The planned concepts (proposer candidates, so realisable).
    pub steps: Vec<Candidate>,
    /// `cos(goal, c_t)` per step.
    pub goal_cosines: Vec<f32>,
    /// The anticipation: the objective the plan would have if it stopped after step `t`.
    pub anticipated: Vec<f32>,
    /// Objective plus soft penalties of the whole plan.
    pub objective: f32,
    /// Per guardrail, the minimum margin over the plan.
    pub margins: Vec<(String, f32)>,
    /// No hard guardrail is violated by any planned concept.
    pub feasible: bool,
    /// First step (0-based) whose goal cosine reaches τ.
    pub reached_at: Option<usize>,
    /// Candidate expansions scored (all depths) and how many of them were feasible.
    pub candidates: usize,
    pub feasible_candidates: usize,
    /// Complete `K`-step plans scored and how many were feasible.
    pub complete_plans: usize,
    pub feasible_plans: usize,
}

/// Feasible-first beam search over `K` future concepts.
///
/// At each depth every partial plan in the beam asks the proposer for `N` candidates (one
/// batched call for the whole beam); each extension is scored by [`ConceptCost::evaluate`]
/// and the best `B` are kept, ranked feasible-first: feasible paths by total cost, then
/// infeasible ones by hard violation and cost. Infeasibility is permanent along a path
/// (a violating sentence cannot be unsaid), so ranking feasible paths first keeps every
/// feasible branch alive while there is room, and the returned plan is the best feasible
/// complete plan whenever one was scored. With none, the least-violating plan is returned
/// with `feasible = false`.
pub struct ConceptPlanner {
    pub config: ConceptPlannerConfig,
}

struct Node {
    steps: Vec<Candidate>,
    eval: ConceptEvaluation,
}

/// Feasible before infeasible; then cost (feasible) or violation, then cost (infeasible).
fn rank(a: &ConceptEvaluation, b: &ConceptEvaluation) -> Ordering {
    crate::cost::feasible_first_order(
        (a.feasible, a.hard_violation, a.total()),
        (b.feasible, b.hard_violation, b.total()),
    )
}

/// A seed per (planner seed, depth): SplitMix64 of their combination, so the proposer's
/// noise differs between depths but is reproducible.
pub fn derive_seed(seed: u64, salt: u64) -> u64 {
    let mut z = seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn check_context(prompt: &[Concept], dim: usize) -> Result<()> {
    if prompt.is_empty() {
        return Err(ConceptError::EmptyContext);
    }
    for (i, c) in prompt.iter().enumerate() {
        if c.len() != dim {
            return Err(ConceptError::DimensionMismatch {
                what: format!("prompt concept {i}"),
                expected: dim,
                got: c.len(),
            });
        }
    }
    Ok(())
}

impl ConceptPlanner {
    pub fn new(config: ConceptPlannerConfig) -> Result<Self> {
        let c = &config;
        if c.steps == 0 || c.beam_width == 0 || c.candidates == 0 {
            return Err(ConceptError::InvalidConfig(format!(
                "steps, beam width and candidates must all be at least 1, got {c:?}"
            )));
        }
        Ok(ConceptPlanner { config })
    }

    /// Plans `K` concepts after `prompt` (its concepts, oldest first).
    pub fn plan<P: ConceptProposer + ?Sized>(
        &self,
        proposer: &mut P,
        prompt: &[Concept],
        cost: &ConceptCost,
    ) -> Result<ConceptPlan> {
        check_context(prompt, cost.dim())?;
        let previous = &prompt[prompt.len() - 1];
        let mut beam: Vec<Node> = vec![Node {
            steps: Vec::new(),
            eval: cost.evaluate(previous, &[]),
        }];
        let (mut candidates, mut feasible_candidates) = (0usize, 0usize);
        let (mut complete_plans, mut feasible_plans) = (0usize, 0usize);
        for depth in 0..self.config.steps {
            let contexts: Vec<Vec<Concept>> = beam
                .iter()
                .map(|node| {
                    prompt
                        .iter()
                        .cloned()
                        .chain(node.steps.iter().map(|s| s.concept.clone()))
                        .collect()
                })
                .collect();
            let refs: Vec<&[Concept]> = contexts.iter().map(Vec::as_slice).collect();
            let proposals = proposer.propose(
                &refs,
                self.config.candidates,
                derive_seed(self.config.seed, depth as u64),
            )?;
            if proposals.len() != beam.len() {
                return Err(ConceptError::Proposer(
                    format!(
                        "{} candidate lists for {} contexts",
                        proposals.len(),
                        beam.len()
                    )
                    .into(),
                ));
            }
            let mut next: Vec<Node> = Vec::new();
            for (node, proposed) in beam.iter().zip(proposals) {
                for candidate in proposed {
                    if candidate.concept.len() != cost.dim() {
                        return Err(ConceptError::DimensionMismatch {
                            what: "a proposed concept".into(),
                            expected: cost.dim(),
                            got: candidate.concept.len(),
                        });
                    }
                    if node.steps.iter().any(|s| s.key == candidate.key) {
                        continue;
                    }
                    let mut steps = node.steps.clone();
                    steps.push(candidate);
                    let path: Vec<Concept> = steps.iter().map(|s| s.concept.clone()).collect();
                    let eval = cost.evaluate(previous, &path);
                    candidates += 1;
                    feasible_candidates += usize::from(eval.feasible);
                    next.push(Node { steps, eval });
                }
            }
            if next.is_empty() {
                // The proposer had nothing new to say; keep the longest plan found so far.
                break;
            }
            next.sort_by(|a, b| rank(&a.eval, &b.eval));
            if depth + 1 == self.config.steps {
                complete_plans = next.len();
                feasible_plans = next.iter().filter(|n| n.eval.feasible).count();
            }
            // Same sentences in another order make the same plan twice; keep one.
            let mut kept: Vec<Node> = Vec::with_capacity(self.config.beam_width);
            for node in next {
                if kept.len() == self.config.beam_width {
                    break;
                }
                let mut keys: Vec<usize> = node.steps.iter().map(|s| s.key).collect();
                keys.sort_unstable();
                let duplicate = kept.iter().any(|k| {
                    let mut other: Vec<usize> = k.steps.iter().map(|s| s.key).collect();
                    other.sort_unstable();
                    other == keys
                });
                if !duplicate {
                    kept.push(node);
                }
            }
            beam = kept;
        }
        let best = beam
            .into_iter()
            .min_by(|a, b| rank(&a.eval, &b.eval))
            .ok_or_else(|| ConceptError::Proposer("empty beam".into()))?;
        let anticipated = (1..=best.steps.len())
            .map(|t| {
                let path: Vec<Concept> =
                    best.steps[..t].iter().map(|s| s.concept.clone()).collect();
                cost.evaluate(previous, &path).total()
            })
            .collect();
        Ok(ConceptPlan {
            goal_cosines: best.eval.goal_cosines.clone(),
            anticipated,
            objective: best.eval.total(),
            margins: cost
                .guardrail_names()
                .into_iter()
                .zip(best.eval.min_margins.iter().copied())
                .collect(),
            feasible: best.eval.feasible,
            reached_at: best.eval.reached_at,
            steps: best.steps,
            candidates,
            feasible_candidates,
            complete_plans,
            feasible_plans,
        })
    }
}

/// Baseline: the model's own continuation, `steps` times, blind to goal and guardrails. Each
/// step takes the proposer's first candidate (its most likely continuation) that the rollout
/// has not said yet, falling back to the first one.
pub fn unconstrained_rollout<P: ConceptProposer + ?Sized>(
    proposer: &mut P,
    prompt: &[Concept],
    steps: usize,
    seed: u64,
) -> Result<Vec<Candidate>> {
    let dim = prompt.first().map_or(0, Vec::len);
    check_context(prompt, dim)?;
    let mut context: Vec<Concept> = prompt.to_vec();
    let mut out: Vec<Candidate> = Vec::with_capacity(steps);
    for depth in 0..steps {
        let mut proposed = proposer.propose(&[&context], 1, derive_seed(seed, depth as u64))?;
        let Some(list) = proposed.pop().filter(|l| !l.is_empty()) else {
            break;
        };
        let pick = list
            .iter()
            .find(|c| out.iter().all(|o| o.key != c.key))
            .unwrap_or(&list[0])
            .clone();
        context.push(pick.concept.clone());
        out.push(pick);
    }
    Ok(out)
}

/// Baseline: retrieval hill-climbing. Each step, among the `m` nearest neighbours of the
/// current concept (not yet visited), go to the one most similar to the goal. Blind to the
/// guardrails and to the model.
pub fn greedy_retrieval<N: ConceptNeighbours + ?Sized>(
    neighbours: &mut N,
    start: &[f32],
    goal: &[f32],
    steps: usize,
    m: usize,
) -> Result<Vec<Candidate>> {
    let mut current: Concept = start.to_vec();
    let mut out: Vec<Candidate> = Vec::with_capacity(steps);
    for _ in 0..steps {
        // One extra neighbour per visited concept, so visited ones never crowd out all M.
        let hits = neighbours.nearest(&current, m + out.len() + 1)?;
        let mut best: Option<(f32, Candidate)> = None;
        let fresh = hits.into_iter().filter(|h| {
            out.iter().all(|o| o.key != h.key) && cosine(&h.concept, &current) < 0.999_999
        });
        for hit in fresh.take(m) {
            let score = cosine(&hit.concept, goal);
            // Strictly better only: on a tie the closer neighbour (listed first) wins.
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, hit));
            }
        }
        let Some((_, best)) = best else {
            break;
        };
        current = best.concept.clone();
        out.push(best);
    }
    Ok(out)
}

/// How one realised continuation fared.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutScore {
    /// Concepts realised.
    pub steps: usize,
    pub reached_at: Option<usize>,
    /// Highest goal cosine over the continuation (`−∞` when empty).
    pub best_goal_cosine: f32,
    /// Steps inside any guardrail region (hard or soft).
    pub violating_steps: usize,
    /// Mean cosine between consecutive concepts, the prompt's last one included
    /// (NaN when empty).
    pub coherence: f32,
}

/// Scores a realised continuation `path` of a prompt ending in `previous`.
pub fn score_rollout(cost: &ConceptCost, previous: &[f32], path: &[Concept]) -> RolloutScore {
    let eval = cost.evaluate(previous, path);
    let violating_steps = path
        .iter()
        .filter(|c| cost.margins(c).into_iter().any(violates))
        .count();
    let mut prev = previous;
    let mut sum = 0.0;
    for c in path {
        sum += cosine(prev, c);
        prev = c;
    }
    RolloutScore {
        steps: path.len(),
        reached_at: eval.reached_at,
        best_goal_cosine: eval
            .goal_cosines
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max),
        violating_steps,
        coherence: if path.is_empty() {
            f32::NAN
        } else {
            sum / path.len() as f32
        },
    }
}

/// Metrics of one method over a set of cases.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub cases: usize,
    /// Share of cases whose continuation reaches the goal (cos ≥ τ) within its steps.
    pub goal_reach_rate: f64,
    pub goal_reach_ci: (f64, f64),
    /// Share of cases with any concept inside a guardrail region.
    pub violation_rate: f64,
    /// Share of realised concepts inside a guardrail region.
    pub step_violation_rate: f64,
    /// Mean over cases of [`RolloutScore::coherence`] (cases without concepts skipped).
    pub coherence: f64,
    /// Mean over cases of the best goal cosine.
    pub mean_best_goal_cosine: f64,
    /// Share of cases that reach the goal with no concept inside a guardrail region.
    pub reach_and_safe_rate: f64,
}

impl Summary {
    pub fn from_scores(scores: &[RolloutScore]) -> Summary {
        let n = scores.len();
        let reached = scores.iter().filter(|s| s.reached_at.is_some()).count();
        let violating = scores.iter().filter(|s| s.violating_steps > 0).count();
        let safe_reach = scores
            .iter()
            .filter(|s| s.reached_at.is_some() && s.violating_steps == 0)
            .count();
        let steps: usize = scores.iter().map(|s| s.steps).sum();
        let bad_steps: usize = scores.iter().map(|s| s.violating_steps).sum();
        let coherent: Vec<f64> = scores
            .iter()
            .filter(|s| s.coherence.is_finite())
            .map(|s| s.coherence as f64)
            .collect();
        let best: Vec<f64> = scores
            .iter()
            .filter(|s| s.best_goal_cosine.is_finite())
            .map(|s| s.best_goal_cosine as f64)
            .collect();
        let mean = |v: &[f64]| {
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let rate = |k: usize, of: usize| if of == 0 { 0.0 } else { k as f64 / of as f64 };
        Summary {
            cases: n,
            goal_reach_rate: rate(reached, n),
            goal_reach_ci: wilson_interval(reached, n),
            violation_rate: rate(violating, n),
            step_violation_rate: rate(bad_steps, steps),
            coherence: mean(&coherent),
            mean_best_goal_cosine: mean(&best),
            reach_and_safe_rate: rate(safe_reach, n),
        }
    }
}
