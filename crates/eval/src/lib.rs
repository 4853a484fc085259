//! Evaluation of Large Concept Models.
//!
//! - [`metrics`]: teacher-forced pre-training metrics of the LCM paper (ℓ2, contrastive
//!   accuracy, paraphrasing ratio) over a [`ConceptBatch`] of documents, and the two trivial
//!   baseline predictors ("repeat previous concept", "mean concept").
//! - [`bleu`]: sacreBLEU-compatible corpus and sentence BLEU (13a tokenisation).
//! - [`report`]: [`EvalReport`], one row of metrics per predictor, rendered as markdown.
//! - [`generation`]: REP-4, OVL-3 and coherence of generated text and concepts.
//! - [`rouge`]: ROUGE-L and length ratio of summaries.

pub mod bleu;
pub mod error;
pub mod generation;
pub mod metrics;
pub mod report;
pub mod rouge;

pub use error::{EvalError, Result};
pub use metrics::{ConceptBatch, EvalOptions, Metrics, evaluate};
pub use report::EvalReport;
