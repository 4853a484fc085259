//! [`EvalReport`]: metrics per predictor, rendered as a markdown table.

use std::fmt;

use crate::error::Result;
use crate::metrics::{ConceptBatch, EvalOptions, Metrics, evaluate, mean_concept, repeat_previous};

pub const REPEAT_PREVIOUS: &str = "repeat previous concept";
pub const MEAN_CONCEPT: &str = "mean concept";

/// One row of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    pub predictor: String,
    pub metrics: Metrics,
}

/// Metrics of several predictors on the same batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalReport {
    pub rows: Vec<ReportRow>,
}

impl EvalReport {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, predictor: impl Into<String>, metrics: Metrics) {
        self.rows.push(ReportRow {
            predictor: predictor.into(),
            metrics,
        });
    }

    /// Evaluates `predictions` and appends them as `predictor`.
    pub fn add(
        &mut self,
        predictor: impl Into<String>,
        batch: &ConceptBatch,
        predictions: &[f32],
        options: &EvalOptions,
    ) -> Result<&Metrics> {
        let metrics = evaluate(batch, predictions, options)?;
        self.push(predictor, metrics);
        Ok(&self.rows.last().expect("just pushed").metrics)
    }

    /// Appends the two trivial baselines: "repeat previous concept" and "mean concept"
    /// (`training_mean`: the mean concept of the training set). Needs `first_position ≥ 1`.
    pub fn add_baselines(
        &mut self,
        batch: &ConceptBatch,
        training_mean: &[f32],
        options: &EvalOptions,
    ) -> Result<()> {
        self.add(REPEAT_PREVIOUS, batch, &repeat_previous(batch), options)?;
        self.add(
            MEAN_CONCEPT,
            batch,
            &mean_concept(batch, training_mean)?,
            options,
        )?;
        Ok(())
    }

    pub fn get(&self, predictor: &str) -> Option<&Metrics> {
        self.rows
            .iter()
            .find(|r| r.predictor == predictor)
            .map(|r| &r.metrics)
    }

    /// Markdown table: ℓ2 and PAR with 3 decimals, CA in percent with 1 decimal (as in the
    /// paper's Table 3), `—` where a metric is undefined.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from(
            "| predictor | ℓ2 | CA (%) | PAR | MI | positions |\n|---|---:|---:|---:|---:|---:|\n",
        );
        for row in &self.rows {
            let m = &row.metrics;
            let ca =
                m.ca.map_or_else(|| "—".to_string(), |v| format!("{:.1}", v * 100.0));
            let par = m.par.map_or_else(|| "—".to_string(), |v| format!("{v:.3}"));
            let mi = m.mi.map_or_else(|| "—".to_string(), |v| format!("{v:.3}"));
            out.push_str(&format!(
                "| {} | {:.3} | {ca} | {par} | {mi} | {} |\n",
                row.predictor.replace('|', "\\|"),
                m.l2,
                m.scored
            ));
        }
        out
    }
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_markdown())
    }
}
