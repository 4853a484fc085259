//! Training batches: normalised concept sequences, a deterministic held-out split, and a
//! resumable, seeded batcher that packs sequences under a concept budget.
//!
//! # Sequences
//!
//! [`SplitDataset`] / [`SequenceDataset`] load documents into memory as f32 concept sequences in
//! the normalised space ([`RobustNormalizer::normalize_in_place`]). Every document is suffixed
//! with the concept of "End of text." (computed by the caller with the encoder and passed as
//! `eos`; it is normalised here too) and then wrapped at `max_seq_len` concepts.
//!
//! **Wrapping rule** — follows the LCM reference (facebookresearch/large_concept_model,
//! `DataLoadingConfig`): with its default `wrap_before_affixing = False` the suffix is added
//! *before* wrapping, so the EOS concept appears exactly once per document, at the document's
//! real end, and counts toward the wrap length. A 300-concept document therefore becomes
//! sequences of 128, 128 and 45 (= 44 concepts + EOS) concepts; a 127-concept document becomes a
//! single sequence of 128 (127 + EOS); a 128-concept document becomes 128 + 1 (the EOS alone).
//! Continuation chunks are not re-prefixed and carry no EOS. Unlike the reference's pre-training
//! recipe (`packing: true`) documents are never concatenated with each other: each sequence holds
//! concepts of one document only. Empty documents are skipped (they would be a lone EOS).
//!
//! # Split
//!
//! A document is held out when the FNV-1a 64 hash of its id (SplitMix64-finalised), read as a
//! fraction of `2^64`, is below `valid_fraction` ([`split_of`]). The split depends on nothing but the id, so it is the
//! same on every run and machine, and all sequences of a document land in the same split.
//!
//! # Batches
//!
//! [`Batcher`] plans each epoch from `(seed, epoch)` alone: a seeded shuffle of the sequences;
//! within consecutive windows of `sort_window` sequences a stable sort by length; greedy packing
//! of the resulting order (a batch closes when the next sequence would break the budget) so that
//! `batch_size × max_len_in_batch ≤ max_concepts` (padding counted); finally a shuffle of batch
//! order. Because a plan is a pure function of `(seed, epoch)`, [`Batcher::batches_from`] at a
//! [`BatchPosition`] yields exactly the batches an uninterrupted run yields from that point.

use std::path::Path;

use candle_core::{Device, Tensor};
use lcm_concept::normalizer::RobustNormalizer;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::pairs::{ConceptPair, PairStats};
use crate::store::{ConceptDocument, ConceptStore};

/// Wrap length of the reference's 1.6B recipes (`len_to_wrap_long_seq: 128`).
pub const DEFAULT_MAX_SEQ_LEN: usize = 128;
/// Text whose concept ends every document (the reference's default source suffix).
pub const EOS_TEXT: &str = "End of text.";
/// Default number of batches' worth of sequences sorted together to reduce padding.
pub const DEFAULT_SORT_WINDOW_BATCHES: usize = 100;

/// FNV-1a 64-bit hash: stable across runs, platforms and Rust versions.
pub use lcm_util::hash::fnv1a64;

/// Which side of the held-out split a document belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Valid,
}

/// Deterministic split of a document by its id: `Valid` when `h / 2^64 < valid_fraction` with
/// `h` the FNV-1a 64 hash of the id passed through the SplitMix64 finaliser (FNV alone spreads
/// similar ids such as `doc-1`, `doc-2`, … unevenly over its high bits).
pub fn split_of(id: &str, valid_fraction: f64) -> Split {
    let unit = mix(fnv1a64(id.as_bytes())) as f64 / 18_446_744_073_709_551_616.0;
    if unit < valid_fraction {
        Split::Valid
    } else {
        Split::Train
    }
}

/// One training sequence: at most `max_seq_len` normalised concepts of one document.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptSequence {
    pub doc_id: String,
    /// The document's source (the corpus it came from), what mixtures weigh.
    pub source: String,
    /// Index of this chunk within its document (0 for the first `max_seq_len` concepts).
    pub chunk: usize,
    /// Whether this is the document's last chunk, i.e. it ends with the EOS concept.
    pub ends_document: bool,
    /// Row-major `[len, dim]` normalised concepts.
    pub data: Vec<f32>,
    /// The first position whose target counts in the loss: 0 for documents, the prompt's
    /// length for a prompt → answer pair ([`SplitDataset::from_pairs`]).
    pub first_target: usize,
    len: usize,
}

impl ConceptSequence {
    /// Number of concepts (EOS included when `ends_document`).
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Sizes of a set of sequences.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct DatasetStats {
    pub documents: usize,
    pub sequences: usize,
    /// Concepts in all sequences, EOS concepts included.
    pub concepts: usize,
    pub max_len: usize,
    pub mean_len: f64,
}

/// Normalised, EOS-suffixed, wrapped concept sequences held in memory.
#[derive(Debug, Clone)]
pub struct SequenceDataset {
    dim: usize,
    max_seq_len: usize,
    documents: usize,
    sequences: Vec<ConceptSequence>,
}

/// Settings of [`SplitDataset`] loading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DatasetConfig {
    /// Wrap length in concepts (EOS included); the reference uses 128.
    pub max_seq_len: usize,
    /// Fraction of documents (by id hash) held out for validation, in `[0, 1]`.
    pub valid_fraction: f64,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        Self {
            max_seq_len: DEFAULT_MAX_SEQ_LEN,
            valid_fraction: 0.01,
        }
    }
}

/// Refuses a document whose embedding values do not match its sentences at `dim`.
fn check_document(document: &ConceptDocument, dim: usize) -> Result<()> {
    if !document.embeddings.len().is_multiple_of(dim)
        || document.embeddings.len() / dim != document.sentences.len()
    {
        return Err(DataError::Invalid(format!(
            "document `{}` has {} sentences but {} embedding values (dim {dim})",
            document.id,
            document.sentences.len(),
            document.embeddings.len()
        )));
    }
    Ok(())
}

/// Normalises `eos`, checking it against the normaliser's dimension.
fn normalized_eos(normalizer: &RobustNormalizer, mut eos: Vec<f32>) -> Result<Vec<f32>> {
    if eos.len() != normalizer.dim() {
        return Err(DataError::Invalid(format!(
            "the EOS (\"{EOS_TEXT}\") concept has {} values but the normaliser's dimension is {}",
            eos.len(),
            normalizer.dim()
        )));
    }
    if eos.iter().any(|v| !v.is_finite()) {
        return Err(DataError::Invalid(format!(
            "the EOS (\"{EOS_TEXT}\") concept has a non-finite value"
        )));
    }
    normalizer.normalize_in_place(&mut eos)?;
    Ok(eos)
}

impl SequenceDataset {
    fn empty(dim: usize, max_seq_len: usize) -> Self {
        Self {
            dim,
            max_seq_len,
            documents: 0,
            sequences: Vec::new(),
        }
    }

    /// Loads all `documents` (no split): normalise, suffix with `eos`, wrap at `max_seq_len`.
    pub fn from_documents(
        documents: impl IntoIterator<Item = ConceptDocument>,
        normalizer: &RobustNormalizer,
        eos: Vec<f32>,
        max_seq_len: usize,
    ) -> Result<Self> {
        let config = DatasetConfig {
            max_seq_len,
            valid_fraction: 0.0,
        };
        let split =
            SplitDataset::from_documents(documents.into_iter().map(Ok), normalizer, eos, config)?;
        Ok(split.train)
    }

    /// Appends one document's sequences; `eos` is already normalised.
    fn push_document(
        &mut self,
        mut document: ConceptDocument,
        normalizer: &RobustNormalizer,
        eos: &[f32],
    ) -> Result<()> {
        let dim = self.dim;
        check_document(&document, dim)?;
        if document.embeddings.is_empty() {
            return Ok(());
        }
        normalizer.normalize_in_place(&mut document.embeddings)?;
        let mut values = document.embeddings;
        values.extend_from_slice(eos);
        let total = values.len() / dim;
        let chunks = total.div_ceil(self.max_seq_len);
        for (chunk, rows) in values.chunks(self.max_seq_len * dim).enumerate() {
            self.sequences.push(ConceptSequence {
                doc_id: document.id.clone(),
                source: document.source.clone(),
                chunk,
                ends_document: chunk + 1 == chunks,
                data: rows.to_vec(),
                first_target: 0,
                len: rows.len() / dim,
            });
        }
        self.documents += 1;
        Ok(())
    }

    /// Appends one prompt → answer pair as `prompt ++ answer ++ eos` with the prompt masked
    /// out of the loss (see [`crate::pairs`]); `eos` is already normalised.
    fn push_pair(
        &mut self,
        pair: ConceptPair,
        normalizer: &RobustNormalizer,
        eos: &[f32],
        stats: &mut PairStats,
    ) -> Result<()> {
        let dim = self.dim;
        check_document(&pair.prompt, dim)?;
        check_document(&pair.answer, dim)?;
        let (prompt_len, answer_len) = (pair.prompt.len(), pair.answer.len());
        if prompt_len == 0 || answer_len == 0 {
            return Ok(());
        }
        // Answer + EOS, and at least one prompt concept to predict the answer from.
        if answer_len + 2 > self.max_seq_len {
            stats.skipped_too_long += 1;
            return Ok(());
        }
        let keep = prompt_len.min(self.max_seq_len - answer_len - 1);
        if keep < prompt_len {
            stats.truncated_prompts += 1;
        }
        let mut values = pair.prompt.embeddings[(prompt_len - keep) * dim..].to_vec();
        values.extend_from_slice(&pair.answer.embeddings);
        normalizer.normalize_in_place(&mut values)?;
        values.extend_from_slice(eos);
        self.sequences.push(ConceptSequence {
            doc_id: pair.id,
            source: pair.answer.source,
            chunk: 0,
            ends_document: true,
            len: values.len() / dim,
            data: values,
            first_target: keep,
        });
        self.documents += 1;
        Ok(())
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }
    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.sequences.len()
    }
    pub fn is_empty(&self) -> bool {
        self.sequences.is_empty()
    }
    pub fn sequences(&self) -> &[ConceptSequence] {
        &self.sequences
    }
    pub fn num_documents(&self) -> usize {
        self.documents
    }
    /// Concepts over all sequences, EOS concepts included.
    pub fn num_concepts(&self) -> usize {
        self.sequences.iter().map(|s| s.len).sum()
    }

    pub fn stats(&self) -> DatasetStats {
        let concepts = self.num_concepts();
        DatasetStats {
            documents: self.documents,
            sequences: self.sequences.len(),
            concepts,
            max_len: self.sequences.iter().map(|s| s.len).max().unwrap_or(0),
            mean_len: if self.sequences.is_empty() {
                0.0
            } else {
                concepts as f64 / self.sequences.len() as f64
            },
        }
    }
}

/// Train and held-out sequences of one corpus; no document is in both.
#[derive(Debug, Clone)]
pub struct SplitDataset {
    pub train: SequenceDataset,
    pub valid: SequenceDataset,
}

impl SplitDataset {
    /// Loads a concept store, refusing it unless it lives in the normaliser's space.
    pub fn from_store(
        store: &ConceptStore,
        normalizer: &RobustNormalizer,
        eos: Vec<f32>,
        config: DatasetConfig,
    ) -> Result<Self> {
        if store.meta.encoder_id != normalizer.encoder_id || store.meta.dim != normalizer.dim() {
            return Err(DataError::EncoderMismatch {
                path: store.root.clone(),
                expected: normalizer.encoder_id.clone(),
                expected_dim: normalizer.dim(),
                found: store.meta.encoder_id.clone(),
                found_dim: store.meta.dim,
            });
        }
        Self::from_documents(store.documents(), normalizer, eos, config)
    }

    /// Loads documents (e.g. [`ConceptStore::documents`]) and splits them by id hash.
    pub fn from_documents(
        documents: impl IntoIterator<Item = Result<ConceptDocument>>,
        normalizer: &RobustNormalizer,
        eos: Vec<f32>,
        config: DatasetConfig,
    ) -> Result<Self> {
        if config.max_seq_len == 0 {
            return Err(DataError::Invalid("max_seq_len must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&config.valid_fraction) {
            return Err(DataError::Invalid(format!(
                "valid_fraction {} is not in [0, 1]",
                config.valid_fraction
            )));
        }
        let eos = normalized_eos(normalizer, eos)?;
        let dim = normalizer.dim();
        let mut train = SequenceDataset::empty(dim, config.max_seq_len);
        let mut valid = SequenceDataset::empty(dim, config.max_seq_len);
        for document in documents {
            let document = document?;
            let target = match split_of(&document.id, config.valid_fraction) {
                Split::Train => &mut train,
                Split::Valid => &mut valid,
            };
            target.push_document(document, normalizer, &eos)?;
        }
        Ok(Self { train, valid })
    }

    /// Loads prompt → answer pairs ([`crate::pairs`]) split by pair id: one sequence
    /// `prompt ++ answer ++ EOS` per pair whose loss starts at the first answer concept.
    /// Truncated and skipped pairs are counted in `stats`.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = ConceptPair>,
        normalizer: &RobustNormalizer,
        eos: Vec<f32>,
        config: DatasetConfig,
        stats: &mut PairStats,
    ) -> Result<Self> {
        if config.max_seq_len < 3 {
            return Err(DataError::Invalid(format!(
                "max_seq_len {} is too short for a prompt, an answer and the end-of-text \
                 concept (at least 3)",
                config.max_seq_len
            )));
        }
        if !(0.0..=1.0).contains(&config.valid_fraction) {
            return Err(DataError::Invalid(format!(
                "valid_fraction {} is not in [0, 1]",
                config.valid_fraction
            )));
        }
        let eos = normalized_eos(normalizer, eos)?;
        let dim = normalizer.dim();
        let mut train = SequenceDataset::empty(dim, config.max_seq_len);
        let mut valid = SequenceDataset::empty(dim, config.max_seq_len);
        for pair in pairs {
            let target = match split_of(&pair.id, config.valid_fraction) {
                Split::Train => &mut train,
                Split::Valid => &mut valid,
            };
            target.push_pair(pair, normalizer, &eos, stats)?;
        }
        Ok(Self { train, valid })
    }

    pub fn get(&self, split: Split) -> &SequenceDataset {
        match split {
            Split::Train => &self.train,
            Split::Valid => &self.valid,
        }
    }
}

/// Where a batch stream stands: batch `index` of the plan of `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct BatchPosition {
    pub epoch: u64,
    pub index: usize,
}

/// Settings of a [`Batcher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatcherConfig {
    /// Budget per batch, padding counted: `batch_size × max_len_in_batch ≤ max_concepts`.
    pub max_concepts: usize,
    pub seed: u64,
    /// Sequences sorted by length together; `None`: [`DEFAULT_SORT_WINDOW_BATCHES`] batches'
    /// worth (`max_concepts / max_seq_len` sequences per batch). `Some(1)` disables sorting
    /// (greedy packing in shuffled order).
    pub sort_window: Option<usize>,
}

impl BatcherConfig {
    pub fn new(max_concepts: usize, seed: u64) -> Self {
        Self {
            max_concepts,
            seed,
            sort_window: None,
        }
    }
}

/// One padded training batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, Tmax, D]` f32 normalised concepts; padding rows are zero.
    pub x: Tensor,
    /// `[B, Tmax]` f32: 1 for a real concept, 0 for padding.
    pub mask: Tensor,
    /// `[B, Tmax]` f32: 1 where the target at that position counts in the loss — real and
    /// at or after the row's `first_target` (equal to `mask` outside fine-tuning).
    pub loss_mask: Tensor,
    /// Per row, the first position whose target counts (0 outside fine-tuning).
    pub first_target: Vec<usize>,
    /// Real length of each row.
    pub lengths: Vec<usize>,
    pub doc_ids: Vec<String>,
    /// Whether each row ends its document (its last concept is the EOS).
    pub ends_document: Vec<bool>,
    /// Where this batch is in the stream.
    pub position: BatchPosition,
    /// Where the stream continues after this batch (save it to resume).
    pub next: BatchPosition,
}

impl Batch {
    pub fn size(&self) -> usize {
        self.lengths.len()
    }
    pub fn max_len(&self) -> usize {
        self.lengths.iter().copied().max().unwrap_or(0)
    }
    /// Real (unpadded) concepts in the batch.
    pub fn num_concepts(&self) -> usize {
        self.lengths.iter().sum()
    }
    /// `B × Tmax`: concepts including padding.
    pub fn padded_concepts(&self) -> usize {
        self.size() * self.max_len()
    }
}

/// Packing statistics of one epoch's plan.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct PackingStats {
    pub batches: usize,
    pub sequences: usize,
    pub concepts: usize,
    /// `Σ B × Tmax` over batches.
    pub padded_concepts: usize,
    /// Share of padded slots that are padding: `1 − concepts / padded_concepts`.
    pub padding_ratio: f64,
    pub mean_concepts_per_batch: f64,
}

/// Seeded, resumable batcher over a [`SequenceDataset`].
#[derive(Debug, Clone)]
pub struct Batcher {
    dataset: SequenceDataset,
    config: BatcherConfig,
    device: Device,
    /// With a mixture: the sequences of each weighted source and its share of an epoch.
    mixture: Option<Vec<SourceDraw>>,
}

/// One source of a mixture: its sequences and the number an epoch draws from them.
#[derive(Debug, Clone)]
struct SourceDraw {
    sequences: Vec<usize>,
    per_epoch: usize,
}

/// Sampling weights by document source (`source=weight`, the reference's data-card
/// weights): an epoch holds as many sequences as the dataset, each source's share
/// proportional to its weight — small sources repeated, large ones subsampled, a source of
/// weight 0 left out. `*` weighs every source not named.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceMixture {
    pub weights: std::collections::BTreeMap<String, f64>,
}

impl SourceMixture {
    /// Parses `web=0.2,brown=1,*=0.5`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut weights = std::collections::BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (source, weight) = part.split_once('=').ok_or_else(|| {
                DataError::Invalid(format!(
                    "mixture entry `{part}` is not SOURCE=WEIGHT (e.g. `web=0.2,brown=1,*=0.5`)"
                ))
            })?;
            let weight: f64 = weight.trim().parse().map_err(|_| {
                DataError::Invalid(format!(
                    "mixture weight `{weight}` of `{source}` is not a number"
                ))
            })?;
            if !(weight.is_finite() && weight >= 0.0) {
                return Err(DataError::Invalid(format!(
                    "mixture weight of `{source}` must be a finite number ≥ 0, got {weight}"
                )));
            }
            if weights.insert(source.trim().to_string(), weight).is_some() {
                return Err(DataError::Invalid(format!(
                    "mixture names `{source}` twice"
                )));
            }
        }
        if weights.is_empty() {
            return Err(DataError::Invalid("the mixture names no source".into()));
        }
        Ok(Self { weights })
    }

    /// The weight of `source`: its own, else `*`'s.
    fn weight(&self, source: &str) -> Option<f64> {
        self.weights
            .get(source)
            .or_else(|| self.weights.get("*"))
            .copied()
    }
}

impl std::fmt::Display for SourceMixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .weights
            .iter()
            .map(|(s, w)| format!("{s}={w}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// SplitMix64 finaliser, to derive well-spread per-epoch seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Batcher {
    /// Refuses a budget smaller than the longest sequence (it could never be batched).
    pub fn new(dataset: SequenceDataset, config: BatcherConfig, device: Device) -> Result<Self> {
        let longest = dataset.stats().max_len;
        if config.max_concepts == 0 || config.max_concepts < longest {
            return Err(DataError::Invalid(format!(
                "max_concepts {} is smaller than the longest sequence ({longest} concepts); raise it to at least max_seq_len ({})",
                config.max_concepts, dataset.max_seq_len
            )));
        }
        if config.sort_window == Some(0) {
            return Err(DataError::Invalid("sort_window must be at least 1".into()));
        }
        Ok(Self {
            dataset,
            config,
            device,
            mixture: None,
        })
    }

    /// Draws each epoch by `mixture`'s source weights. Refused: a source of the data the
    /// mixture does not weigh (and no `*`), a named source the data lacks, all weights 0.
    pub fn with_mixture(mut self, mixture: &SourceMixture) -> Result<Self> {
        let mut by_source: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
        for (i, sequence) in self.dataset.sequences.iter().enumerate() {
            by_source
                .entry(sequence.source.as_str())
                .or_default()
                .push(i);
        }
        let present: Vec<&str> = by_source.keys().copied().collect();
        if let Some(missing) = mixture
            .weights
            .keys()
            .find(|s| *s != "*" && !by_source.contains_key(s.as_str()))
        {
            return Err(DataError::Invalid(format!(
                "the mixture weighs source `{missing}`, which the training data lacks (its \
                 sources: {})",
                present.join(", ")
            )));
        }
        let mut weighted = Vec::new();
        for (source, sequences) in by_source {
            let weight = mixture.weight(source).ok_or_else(|| {
                DataError::Invalid(format!(
                    "the mixture gives source `{source}` no weight; name it or add `*=WEIGHT` \
                     (the data's sources: {})",
                    present.join(", ")
                ))
            })?;
            weighted.push((weight, sequences));
        }
        let total: f64 = weighted.iter().map(|(w, _)| w).sum();
        if total <= 0.0 {
            return Err(DataError::Invalid(
                "every source of the mixture has weight 0".into(),
            ));
        }
        // Largest remainders: the shares add up to exactly one epoch's sequences.
        let epoch = self.dataset.len();
        let exact: Vec<f64> = weighted
            .iter()
            .map(|(w, _)| w / total * epoch as f64)
            .collect();
        let mut counts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
        let mut by_remainder: Vec<usize> = (0..exact.len()).collect();
        by_remainder.sort_by(|&a, &b| {
            (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor()))
        });
        let short = epoch.saturating_sub(counts.iter().sum());
        for &i in by_remainder
            .iter()
            .filter(|&&i| weighted[i].0 > 0.0)
            .take(short)
        {
            counts[i] += 1;
        }
        self.mixture = Some(
            weighted
                .into_iter()
                .zip(counts)
                .map(|((_, sequences), per_epoch)| SourceDraw {
                    sequences,
                    per_epoch,
                })
                .collect(),
        );
        Ok(self)
    }

    /// Sequences per source in an epoch of the mixture (`None` without one), by source.
    pub fn mixture_counts(&self) -> Option<Vec<(String, usize)>> {
        self.mixture.as_ref().map(|draws| {
            draws
                .iter()
                .map(|d| {
                    let source = d
                        .sequences
                        .first()
                        .map(|&i| self.dataset.sequences[i].source.clone())
                        .unwrap_or_default();
                    (source, d.per_epoch)
                })
                .collect()
        })
    }

    pub fn dataset(&self) -> &SequenceDataset {
        &self.dataset
    }
    pub fn config(&self) -> &BatcherConfig {
        &self.config
    }

    fn sort_window(&self) -> usize {
        self.config.sort_window.unwrap_or_else(|| {
            let per_batch = (self.config.max_concepts / self.dataset.max_seq_len.max(1)).max(1);
            per_batch * DEFAULT_SORT_WINDOW_BATCHES
        })
    }

    /// The plan of `epoch`: sequence indices of each batch, in stream order. A pure function of
    /// `(seed, epoch)` and the dataset.
    pub fn plan(&self, epoch: u64) -> Vec<Vec<usize>> {
        let mut rng = StdRng::seed_from_u64(mix(self.config.seed ^ mix(epoch)));
        let mut order: Vec<usize> = match &self.mixture {
            None => (0..self.dataset.len()).collect(),
            Some(draws) => draws
                .iter()
                .flat_map(|draw| {
                    // Whole shuffled passes over the source, then a random part of one more.
                    let mut picked = Vec::with_capacity(draw.per_epoch);
                    while picked.len() < draw.per_epoch {
                        let mut pass = draw.sequences.clone();
                        pass.shuffle(&mut rng);
                        let take = (draw.per_epoch - picked.len()).min(pass.len());
                        picked.extend_from_slice(&pass[..take]);
                    }
                    picked
                })
                .collect(),
        };
        order.shuffle(&mut rng);
        let lens: Vec<usize> = self.dataset.sequences.iter().map(|s| s.len).collect();
        for window in order.chunks_mut(self.sort_window()) {
            window.sort_by_key(|&i| lens[i]);
        }
        let mut batches = Vec::new();
        let mut current: Vec<usize> = Vec::new();
        let mut current_max = 0;
        for &i in &order {
            let new_max = current_max.max(lens[i]);
            if !current.is_empty() && (current.len() + 1) * new_max > self.config.max_concepts {
                batches.push(std::mem::take(&mut current));
                current_max = lens[i];
            } else {
                current_max = new_max;
            }
            current.push(i);
        }
        if !current.is_empty() {
            batches.push(current);
        }
        batches.shuffle(&mut rng);
        batches
    }

    /// Number of batches in `epoch`.
    pub fn num_batches(&self, epoch: u64) -> usize {
        self.plan(epoch).len()
    }

    /// Packing statistics of `epoch`'s plan.
    pub fn epoch_stats(&self, epoch: u64) -> PackingStats {
        let plan = self.plan(epoch);
        let mut stats = PackingStats {
            batches: plan.len(),
            ..Default::default()
        };
        for batch in &plan {
            let lens = batch.iter().map(|&i| self.dataset.sequences[i].len);
            stats.sequences += batch.len();
            stats.concepts += lens.clone().sum::<usize>();
            stats.padded_concepts += batch.len() * lens.max().unwrap_or(0);
        }
        if stats.padded_concepts > 0 {
            stats.padding_ratio = 1.0 - stats.concepts as f64 / stats.padded_concepts as f64;
        }
        if stats.batches > 0 {
            stats.mean_concepts_per_batch = stats.concepts as f64 / stats.batches as f64;
        }
        stats
    }

    /// Builds the padded batch of the given sequence indices.
    pub fn make_batch(
        &self,
        indices: &[usize],
        position: BatchPosition,
        next: BatchPosition,
    ) -> Result<Batch> {
        let dim = self.dataset.dim;
        let sequences: Vec<&ConceptSequence> = indices
            .iter()
            .map(|&i| &self.dataset.sequences[i])
            .collect();
        let b = sequences.len();
        let t = sequences.iter().map(|s| s.len).max().unwrap_or(0);
        let mut x = vec![0f32; b * t * dim];
        let mut mask = vec![0f32; b * t];
        let mut loss_mask = vec![0f32; b * t];
        for (row, seq) in sequences.iter().enumerate() {
            x[row * t * dim..row * t * dim + seq.data.len()].copy_from_slice(&seq.data);
            mask[row * t..row * t + seq.len].fill(1.0);
            loss_mask[row * t + seq.first_target.min(seq.len)..row * t + seq.len].fill(1.0);
        }
        Ok(Batch {
            x: Tensor::from_vec(x, (b, t, dim), &self.device)?,
            mask: Tensor::from_vec(mask, (b, t), &self.device)?,
            loss_mask: Tensor::from_vec(loss_mask, (b, t), &self.device)?,
            first_target: sequences.iter().map(|s| s.first_target).collect(),
            lengths: sequences.iter().map(|s| s.len).collect(),
            doc_ids: sequences.iter().map(|s| s.doc_id.clone()).collect(),
            ends_document: sequences.iter().map(|s| s.ends_document).collect(),
            position,
            next,
        })
    }

    /// Infinite stream over epochs starting at epoch 0.
    pub fn batches(&self) -> BatchIter<'_> {
        self.batches_from(BatchPosition::default())
    }

    /// Infinite stream starting at `position`: the same batches an uninterrupted run from
    /// epoch 0 yields from there on. An `index` past the end of its epoch continues with the
    /// next epoch. Yields nothing when the dataset is empty.
    pub fn batches_from(&self, position: BatchPosition) -> BatchIter<'_> {
        BatchIter {
            batcher: self,
            plan: self.plan(position.epoch),
            position,
            single_epoch: false,
        }
    }

    /// The batches of one epoch only.
    pub fn epoch(&self, epoch: u64) -> BatchIter<'_> {
        BatchIter {
            batcher: self,
            plan: self.plan(epoch),
            position: BatchPosition { epoch, index: 0 },
            single_epoch: true,
        }
    }
}

/// Iterator of [`Batch`]es; see [`Batcher::batches_from`] and [`Batcher::epoch`].
pub struct BatchIter<'a> {
    batcher: &'a Batcher,
    plan: Vec<Vec<usize>>,
    position: BatchPosition,
    single_epoch: bool,
}

impl BatchIter<'_> {
    /// Where the next batch will come from.
    pub fn position(&self) -> BatchPosition {
        self.position
    }
}

impl Iterator for BatchIter<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.batcher.dataset.is_empty() {
            return None;
        }
        if self.position.index >= self.plan.len() {
            if self.single_epoch {
                return None;
            }
            self.position = BatchPosition {
                epoch: self.position.epoch + 1,
                index: 0,
            };
            self.plan = self.batcher.plan(self.position.epoch);
        }
        let position = self.position;
        let next = BatchPosition {
            epoch: position.epoch,
            index: position.index + 1,
        };
        let next = if next.index >= self.plan.len() {
            BatchPosition {
                epoch: position.epoch + 1,
                index: 0,
            }
        } else {
            next
        };
        let batch = self
            .batcher
            .make_batch(&self.plan[position.index], position, next);
        self.position.index += 1;
        Some(batch)
    }
}

/// Convenience: opens `path` as a store and loads it split (see [`SplitDataset::from_store`]).
pub fn load_split(
    path: &Path,
    normalizer: &RobustNormalizer,
    eos: Vec<f32>,
    config: DatasetConfig,
) -> Result<SplitDataset> {
    let store = ConceptStore::open(path)?;
    SplitDataset::from_store(&store, normalizer, eos, config)
}
