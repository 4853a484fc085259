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
//! The guardrail vocabulary is [`crate::cost`]'s: a [`crate::cost::Guardrail`] reports a margin per
//! concept (positive = safe) and enters with [`crate::cost::Severity::Hard`] or
//! [`crate::cost::Severity::Soft`]. Here a margin `≤ 0` counts as a violation
//! ([`crate::cost::Boundary::Inclusive`]: a sentence exactly on the ball's surface is as
//! close to the forbidden topic as the radius allows, so it is refused).
//!
//! Besides the planner this module holds the two baselines it is measured against
//! ([`unconstrained_rollout`]: the model's own next concept each step; [`greedy_retrieval`]:
//! hop to the bank neighbour most similar to the goal) and the case metrics
//! ([`score_rollout`], [`Summary`]).
//!
//! Everything is plain Rust on `f32` slices, and nothing here knows the LCM: the
//! proposers backed by a model and a sentence bank live in `lcm-workflows`.
//!
//! Files: `cost.rs` (goal, balls, evaluation), `classifier.rs` (linear guardrails, logistic
//! regression, classifier files), `planner.rs` (beam search, proposer traits),
//! `baselines.rs`, `metrics.rs` (per-case scores, summaries), `cases.rs` (case files),
//! `compare.rs` (the three methods on one case), `report.rs` (JSON, markdown, text).

mod baselines;
mod cases;
mod classifier;
mod compare;
mod cost;
mod metrics;
mod planner;
pub mod report;

pub use baselines::{greedy_retrieval, unconstrained_rollout};
pub use cases::{Case, CaseFileError, is_cosine, read_cases};
pub use classifier::{
    ClassifierFile, ClassifierFileError, ClassifierSource, ClassifierSpec,
    LinearClassifierGuardrail, LogisticConfig, train_logistic,
};
pub use compare::{CaseResult, Methods, Outcome, compare_methods};
pub use cost::{ConceptBall, ConceptCost, ConceptEvaluation, violates};
pub use metrics::{RolloutScore, Summary, score_rollout};
pub use planner::{
    Candidate, ConceptNeighbours, ConceptPlan, ConceptPlanner, ConceptPlannerConfig,
    ConceptProposer, derive_seed,
};

/// Dot product and cosine in `f32` (the planner's scores are pinned, so they accumulate in
/// `f32` as they always did).
pub use lcm_util::vector::{cosine_f32 as cosine, dot};

/// A sentence embedding.
pub type Concept = Vec<f32>;

/// Errors of concept-space planning.
#[derive(Debug, thiserror::Error)]
pub enum ConceptPlanError {
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

pub type Result<T> = std::result::Result<T, ConceptPlanError>;
/// `v / |v|`, refusing zero or non-finite vectors (`what` names the vector in the error).
pub fn unit(v: &[f32], what: &str) -> Result<Concept> {
    let norm = dot(v, v).sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return Err(ConceptPlanError::Degenerate(what.to_string()));
    }
    Ok(v.iter().map(|x| x / norm).collect())
}
