//! Teacher-forced pre-training metrics of the LCM paper (§2.4 / §3.1, Table 3).
//!
//! A [`ConceptBatch`] holds the gold concepts `x` of several documents, concatenated row-major
//! (`[rows, dim]`, documents one after another, lengths given). Predictions are a buffer of the
//! same shape: row `i` is the model's prediction `x̂` of gold row `i`, made from the gold
//! concepts before it in its document (teacher forcing). All vectors live in the encoder's
//! *unnormalised* embedding space (denormalise model outputs first).
//!
//! Positions are indices `n` within a document. A position is *scored* when
//! `n >= EvalOptions::first_position` (default 1: the first concept of a document has no
//! context to be predicted from, and the "repeat previous" baseline has no prediction there).
//! Prediction rows of unscored positions are ignored and may hold anything, NaN included.
//!
//! Definitions implemented, for a scored position with gold `x_n`, prediction `x̂_n`:
//!
//! - **ℓ2** = mean over scored positions of `‖x̂_n − x_n‖₂` (the norm, not its square).
//! - **CA** (contrastive accuracy). The paper: "the ratio of embeddings in a batch that are
//!   further away (in terms of ℓ2) from the predicted embedding x̂ than the ground truth x (for
//!   each n, we exclude x_n and its two neighboring ground truth embeddings from the
//!   comparison)". Here: the candidate set `C_n` is every gold row of the batch (every document,
//!   every position, scored or not) except `x_n` itself and, in the same document only,
//!   `x_{n−1}` and `x_{n+1}` where they exist. Then
//!   `CA_n = |{x_j ∈ C_n : ‖x_j − x̂_n‖ > ‖x_n − x̂_n‖}| / |C_n|` (strictly farther; a tie counts
//!   as not farther), and CA is the mean of `CA_n` over scored positions with non-empty `C_n`.
//!   A perfect predictor (`x̂_n = x_n`) gets CA = 1 whenever no candidate equals `x_n`.
//! - **PAR** (paraphrasing ratio) at position `n ≥ 1`:
//!   `PAR_n = max_{m<n} cos(x̂_n, x_m) / max_{m<n} cos(x_n, x_m)`, the maxima over the gold
//!   concepts before `n` in the same document. PAR is the mean of `PAR_n` over scored positions
//!   with `n ≥ 1` (position 0 has no context: skipped) whose denominator is positive (a
//!   non-positive denominator makes the ratio meaningless: skipped). The cosine of a zero vector
//!   with anything is taken as 0. PAR > 1 means the prediction is closer to the context than the
//!   real next sentence is, i.e. the model paraphrases its context.
//! - **MI** (mutual information between a prediction and its context). The paper computes
//!   the pointwise mutual information of the *decoded* text with its context under GPT-2,
//!   which is not available offline. The proxy here stays in concept space: the InfoNCE
//!   lower bound (van den Oord et al., 2018) of `I(x̂; context)` with a cosine critic. Let
//!   `c_m` be the mean of the gold concepts before scored position `m` (its context) and
//!   `s_nm = cos(x̂_n, c_m) / τ` with `τ = MI_TEMPERATURE`; over the `N` scored positions with
//!   `n ≥ 1`, `MI = log N + (1/N) Σ_n log softmax_m(s_n·)[n]`, in nats, bounded above by
//!   `log N`. It asks how well the context can be told from the prediction among the batch's
//!   other contexts: a constant predictor (the mean concept) gets ≤ 0, one that copies its
//!   context the most. Like PAR it must be read next to ℓ2 and CA.

use candle_core::{DType, Device, Tensor};
use lcm_util::vector::{cosine, squared_distance};

use crate::error::{EvalError, Result};

/// Gold concepts of a batch of documents, row-major `[rows, dim]`, documents concatenated.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptBatch {
    dim: usize,
    values: Vec<f32>,
    lengths: Vec<usize>,
    /// Row of the first concept of each document.
    starts: Vec<usize>,
}

/// Where a gold row sits: its document and its position in that document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowPosition {
    pub row: usize,
    pub document: usize,
    pub position: usize,
}

impl ConceptBatch {
    /// `values`: `sum(lengths) × dim` finite values; `lengths`: concepts per document.
    pub fn new(values: Vec<f32>, lengths: Vec<usize>, dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(EvalError::Shape(
                "concept dimension must be positive".into(),
            ));
        }
        let rows: usize = lengths.iter().sum();
        if values.len() != rows * dim {
            return Err(EvalError::Shape(format!(
                "{} values for {} documents of {rows} concepts in total × dim {dim} (expected {})",
                values.len(),
                lengths.len(),
                rows * dim
            )));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(EvalError::NonFinite(format!(
                "gold concept row {} holds {}",
                i / dim,
                values[i]
            )));
        }
        let mut starts = Vec::with_capacity(lengths.len());
        let mut start = 0;
        for length in &lengths {
            starts.push(start);
            start += length;
        }
        Ok(Self {
            dim,
            values,
            lengths,
            starts,
        })
    }

    /// One row-major `[n_i, dim]` slice per document.
    pub fn from_documents(documents: &[&[f32]], dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(EvalError::Shape(
                "concept dimension must be positive".into(),
            ));
        }
        let mut lengths = Vec::with_capacity(documents.len());
        let mut values = Vec::new();
        for (d, doc) in documents.iter().enumerate() {
            if !doc.len().is_multiple_of(dim) {
                return Err(EvalError::Shape(format!(
                    "document {d} has {} values, not a multiple of dim {dim}",
                    doc.len()
                )));
            }
            lengths.push(doc.len() / dim);
            values.extend_from_slice(doc);
        }
        Self::new(values, lengths, dim)
    }

    /// One `[n_i, dim]` tensor per document (any float dtype, any device).
    pub fn from_tensors(documents: &[Tensor]) -> Result<Self> {
        let mut dim = None;
        let mut lengths = Vec::with_capacity(documents.len());
        let mut values = Vec::new();
        for (d, doc) in documents.iter().enumerate() {
            let (n, doc_dim) = doc.dims2()?;
            if *dim.get_or_insert(doc_dim) != doc_dim {
                return Err(EvalError::Shape(format!(
                    "document {d} has dim {doc_dim}, the first one {}",
                    dim.unwrap_or_default()
                )));
            }
            lengths.push(n);
            values.extend(tensor_values(doc)?);
        }
        let dim = dim.ok_or_else(|| EvalError::Shape("no documents".into()))?;
        Self::new(values, lengths, dim)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Concepts in the batch (all documents).
    pub fn rows(&self) -> usize {
        self.values.len() / self.dim
    }
    pub fn num_documents(&self) -> usize {
        self.lengths.len()
    }
    pub fn lengths(&self) -> &[usize] {
        &self.lengths
    }
    /// All gold concepts, row-major `[rows, dim]`.
    pub fn values(&self) -> &[f32] {
        &self.values
    }
    pub fn row(&self, row: usize) -> &[f32] {
        &self.values[row * self.dim..][..self.dim]
    }

    /// Every row with its document and position, in row order.
    pub fn positions(&self) -> impl Iterator<Item = RowPosition> + '_ {
        self.lengths.iter().zip(&self.starts).enumerate().flat_map(
            |(document, (&length, &start))| {
                (0..length).map(move |position| RowPosition {
                    row: start + position,
                    document,
                    position,
                })
            },
        )
    }
}

/// The values of a tensor as f32, row-major.
pub fn tensor_values(tensor: &Tensor) -> Result<Vec<f32>> {
    Ok(tensor
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// Which positions are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalOptions {
    /// Positions `n < first_position` of each document are not scored.
    pub first_position: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { first_position: 1 }
    }
}

/// Metrics of one predictor over one batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    /// Mean ‖x̂_n − x_n‖ over scored positions.
    pub l2: f64,
    /// Contrastive accuracy in [0, 1]; `None` when no scored position has a candidate.
    pub ca: Option<f64>,
    /// Paraphrasing ratio; `None` when no scored position has a context with positive cosine.
    pub par: Option<f64>,
    /// InfoNCE mutual-information proxy in nats; `None` when no scored position has a context.
    pub mi: Option<f64>,
    /// Scored positions (those in ℓ2).
    pub scored: usize,
    /// Positions averaged in CA.
    pub ca_scored: usize,
    /// Positions averaged in PAR.
    pub par_scored: usize,
}

/// Checks the prediction buffer's shape and that every scored row is finite.
fn check_predictions(
    batch: &ConceptBatch,
    predictions: &[f32],
    options: &EvalOptions,
) -> Result<usize> {
    if predictions.len() != batch.values.len() {
        return Err(EvalError::Shape(format!(
            "{} prediction values for {} gold concepts × dim {} (expected {}); predictions are one row per gold row",
            predictions.len(),
            batch.rows(),
            batch.dim,
            batch.values.len()
        )));
    }
    let mut scored = 0;
    for p in batch.positions() {
        if p.position < options.first_position {
            continue;
        }
        scored += 1;
        let row = &predictions[p.row * batch.dim..][..batch.dim];
        if let Some(v) = row.iter().find(|v| !v.is_finite()) {
            return Err(EvalError::NonFinite(format!(
                "prediction for document {} position {} holds {v}",
                p.document, p.position
            )));
        }
    }
    if scored == 0 {
        return Err(EvalError::Invalid(format!(
            "no scored positions: every document is shorter than first_position + 1 = {}",
            options.first_position + 1
        )));
    }
    Ok(scored)
}

fn prediction<'a>(batch: &ConceptBatch, predictions: &'a [f32], row: usize) -> &'a [f32] {
    &predictions[row * batch.dim..][..batch.dim]
}

fn l2_sum(batch: &ConceptBatch, predictions: &[f32], options: &EvalOptions) -> (f64, usize) {
    batch
        .positions()
        .filter(|p| p.position >= options.first_position)
        .fold((0.0, 0), |(sum, count), p| {
            let d = squared_distance(prediction(batch, predictions, p.row), batch.row(p.row));
            (sum + d.sqrt(), count + 1)
        })
}

fn ca_sum(batch: &ConceptBatch, predictions: &[f32], options: &EvalOptions) -> (f64, usize) {
    let mut sum = 0.0;
    let mut count = 0;
    for p in batch.positions() {
        if p.position < options.first_position {
            continue;
        }
        let x_hat = prediction(batch, predictions, p.row);
        let gold = squared_distance(x_hat, batch.row(p.row));
        // Same-document neighbours x_{n−1}, x_{n+1} (rows adjacent to p.row in this document).
        let length = batch.lengths[p.document];
        let previous = (p.position > 0).then(|| p.row - 1);
        let next = (p.position + 1 < length).then(|| p.row + 1);
        let (mut farther, mut candidates) = (0usize, 0usize);
        for j in 0..batch.rows() {
            if j == p.row || Some(j) == previous || Some(j) == next {
                continue;
            }
            candidates += 1;
            if squared_distance(x_hat, batch.row(j)) > gold {
                farther += 1;
            }
        }
        if candidates > 0 {
            sum += farther as f64 / candidates as f64;
            count += 1;
        }
    }
    (sum, count)
}

fn par_sum(batch: &ConceptBatch, predictions: &[f32], options: &EvalOptions) -> (f64, usize) {
    let mut sum = 0.0;
    let mut count = 0;
    for p in batch.positions() {
        if p.position < options.first_position.max(1) {
            continue;
        }
        let x_hat = prediction(batch, predictions, p.row);
        let gold = batch.row(p.row);
        let context = p.row - p.position..p.row;
        let numerator = context
            .clone()
            .map(|m| cosine(x_hat, batch.row(m)))
            .fold(f64::NEG_INFINITY, f64::max);
        let denominator = context
            .map(|m| cosine(gold, batch.row(m)))
            .fold(f64::NEG_INFINITY, f64::max);
        if denominator > 0.0 {
            sum += numerator / denominator;
            count += 1;
        }
    }
    (sum, count)
}

/// Temperature `τ` of the cosine critic in the MI proxy (see the module docs).
pub const MI_TEMPERATURE: f64 = 0.1;

fn unit(v: impl Iterator<Item = f64>) -> Vec<f64> {
    let v: Vec<f64> = v.collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.into_iter().map(|x| x / norm).collect()
    } else {
        v
    }
}

fn mi_estimate(batch: &ConceptBatch, predictions: &[f32], options: &EvalOptions) -> Option<f64> {
    let mut x_hats: Vec<Vec<f64>> = Vec::new();
    let mut contexts: Vec<Vec<f64>> = Vec::new();
    // Σ of the gold concepts before the current position of the current document (the mean's
    // direction: the critic is a cosine, so the sum serves as well as the mean).
    let mut context = vec![0.0f64; batch.dim];
    for p in batch.positions() {
        if p.position == 0 {
            context.fill(0.0);
        }
        if p.position >= options.first_position.max(1) {
            let x_hat = prediction(batch, predictions, p.row);
            x_hats.push(unit(x_hat.iter().map(|&v| v as f64)));
            contexts.push(unit(context.iter().copied()));
        }
        for (c, &v) in context.iter_mut().zip(batch.row(p.row)) {
            *c += v as f64;
        }
    }
    let n = x_hats.len();
    if n == 0 {
        return None;
    }
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let sum: f64 = x_hats
        .iter()
        .enumerate()
        .map(|(i, x_hat)| {
            let scores: Vec<f64> = contexts
                .iter()
                .map(|c| dot(x_hat, c) / MI_TEMPERATURE)
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let log_sum = max + scores.iter().map(|s| (s - max).exp()).sum::<f64>().ln();
            scores[i] - log_sum
        })
        .sum();
    Some((n as f64).ln() + sum / n as f64)
}

fn mean((sum, count): (f64, usize)) -> Option<f64> {
    (count > 0).then(|| sum / count as f64)
}

/// ℓ2 = mean ‖x̂_n − x_n‖ over scored positions (see the module docs).
pub fn l2(batch: &ConceptBatch, predictions: &[f32], options: &EvalOptions) -> Result<f64> {
    check_predictions(batch, predictions, options)?;
    Ok(mean(l2_sum(batch, predictions, options)).unwrap_or_default())
}

/// Contrastive accuracy (see the module docs); `None` when no position has candidates.
pub fn contrastive_accuracy(
    batch: &ConceptBatch,
    predictions: &[f32],
    options: &EvalOptions,
) -> Result<Option<f64>> {
    check_predictions(batch, predictions, options)?;
    Ok(mean(ca_sum(batch, predictions, options)))
}

/// Paraphrasing ratio (see the module docs); `None` when no position qualifies.
pub fn paraphrasing_ratio(
    batch: &ConceptBatch,
    predictions: &[f32],
    options: &EvalOptions,
) -> Result<Option<f64>> {
    check_predictions(batch, predictions, options)?;
    Ok(mean(par_sum(batch, predictions, options)))
}

/// The InfoNCE mutual-information proxy (see the module docs); `None` when no scored
/// position has a context.
pub fn mutual_information(
    batch: &ConceptBatch,
    predictions: &[f32],
    options: &EvalOptions,
) -> Result<Option<f64>> {
    check_predictions(batch, predictions, options)?;
    Ok(mi_estimate(batch, predictions, options))
}

/// All metrics of `predictions` (row-major, one row per gold row of `batch`).
pub fn evaluate(
    batch: &ConceptBatch,
    predictions: &[f32],
    options: &EvalOptions,
) -> Result<Metrics> {
    let scored = check_predictions(batch, predictions, options)?;
    let l2 = l2_sum(batch, predictions, options);
    let ca = ca_sum(batch, predictions, options);
    let par = par_sum(batch, predictions, options);
    let mi = mi_estimate(batch, predictions, options);
    Ok(Metrics {
        l2: l2.0 / scored as f64,
        ca: mean(ca),
        par: mean(par),
        mi,
        scored,
        ca_scored: ca.1,
        par_scored: par.1,
    })
}

/// [`evaluate`] with the predictions as a `[rows, dim]` tensor.
pub fn evaluate_tensor(
    batch: &ConceptBatch,
    predictions: &Tensor,
    options: &EvalOptions,
) -> Result<Metrics> {
    let (rows, dim) = predictions.dims2()?;
    if rows != batch.rows() || dim != batch.dim() {
        return Err(EvalError::Shape(format!(
            "predictions are [{rows}, {dim}] but the batch is [{}, {}]",
            batch.rows(),
            batch.dim()
        )));
    }
    evaluate(batch, &tensor_values(predictions)?, options)
}

/// Baseline "repeat previous concept": `x̂_n = x_{n−1}` within each document. Position 0 has
/// no previous concept and gets NaN, so it must not be scored (`first_position ≥ 1`).
pub fn repeat_previous(batch: &ConceptBatch) -> Vec<f32> {
    let mut out = vec![f32::NAN; batch.values.len()];
    for p in batch.positions().filter(|p| p.position > 0) {
        out[p.row * batch.dim..][..batch.dim].copy_from_slice(batch.row(p.row - 1));
    }
    out
}

/// Baseline "mean concept": `x̂_n = mean` (the mean concept of the training set) everywhere.
pub fn mean_concept(batch: &ConceptBatch, mean: &[f32]) -> Result<Vec<f32>> {
    if mean.len() != batch.dim {
        return Err(EvalError::Shape(format!(
            "mean concept has {} values but the batch's dim is {}",
            mean.len(),
            batch.dim
        )));
    }
    if mean.iter().any(|v| !v.is_finite()) {
        return Err(EvalError::NonFinite("mean concept".into()));
    }
    Ok(mean.repeat(batch.rows()))
}

/// Per-dimension mean of row-major `[rows, dim]` concepts (e.g. a training sample), in f64.
pub fn training_mean(values: &[f32], dim: usize) -> Result<Vec<f32>> {
    if dim == 0 || values.is_empty() || !values.len().is_multiple_of(dim) {
        return Err(EvalError::Shape(format!(
            "{} values do not form a non-empty [rows, {dim}] matrix",
            values.len()
        )));
    }
    let mut sum = vec![0f64; dim];
    for row in values.chunks_exact(dim) {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += *v as f64;
        }
    }
    let rows = (values.len() / dim) as f64;
    Ok(sum.into_iter().map(|s| (s / rows) as f32).collect())
}
