//! Summarisation evaluation (`lcm eval-summarization`, the LCM paper's Table 10 set-up):
//! fine-tuned LCMs continue each held-out prompt (the document to summarise) with the
//! summary's concepts, the concepts are decoded, and every system — models and baselines —
//! is scored by the same code: ROUGE-L ([`lcm_eval::rouge`], `rouge-score`'s), OVL-3 and
//! REP-4 ([`lcm_eval::generation`]) and the length ratio.
//!
//! Data: two pair stores ([`lcm_data::pairs`]) in the models' embedding space, the
//! training pairs (what the models were fine-tuned on) and the held-out pairs. The reference
//! of a pair is its answer's sentences joined by a space; a system's output likewise.
//!
//! Systems:
//! - each model: the prompt's concepts (its last ones when it is longer than the model's
//!   context allows) continued under the stop rules (end-of-text, repetition, at most
//!   `max_sentences`), decoded by retrieval over the training summaries' sentences (the
//!   bank of the training answer store, built on first use) or by a trained decoder;
//! - `first-sentence`: the source's first sentence;
//! - `nearest-summary`: the summary of the training pair whose prompt's mean concept is
//!   nearest (cosine, raw space) to the held-out prompt's mean concept.
//!
//! Aggregates: ROUGE-L precision, recall and F are means over pairs; OVL-3 (output against
//! the source) and REP-4 are micro-averages over n-gram counts; the length ratio is the mean
//! of output words / reference words (`rouge-score` tokens).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use lcm_data::pairs::{ConceptPair, PairStore};
use lcm_eval::generation::{NgramShare, overlap, repetition};
use lcm_eval::rouge::{RougeScore, rouge_l_tokens, tokenize};
use serde::Serialize;

use crate::encoders::load_decoder;
use crate::generate::{ContinuationDecoder, StopRules, continue_prompt, decode_continuation};
use crate::load::{SamplingSettings, TrainedLcm};
use crate::store::BankNotice;
use crate::{Result, WorkflowError};

/// Settings of an evaluation.
#[derive(Clone, Debug)]
pub struct SummarizationConfig {
    /// Held-out pairs evaluated: the first ones of the held-out store (all when `None`).
    pub limit: Option<usize>,
    pub rules: StopRules,
    pub sampling: SamplingSettings,
    /// Seed of pair `i`'s sampling noise: `seed + i`.
    pub seed: u64,
    /// Examples (source, reference, every system's output) kept in the report.
    pub examples: usize,
}

impl Default for SummarizationConfig {
    fn default() -> Self {
        Self {
            limit: None,
            rules: StopRules {
                max_sentences: 2,
                ..StopRules::default()
            },
            sampling: SamplingSettings::default(),
            seed: 0,
            examples: 3,
        }
    }
}

/// One evaluation call.
pub struct SummarizationRequest<'a> {
    /// Fine-tuned models (run directories, checkpoints or export folders); may be empty
    /// (baselines only).
    pub models: &'a [PathBuf],
    /// Normaliser for every model (default: each model's recorded one, checked by hash).
    pub normalizer: Option<&'a Path>,
    /// Pair store of the training pairs.
    pub train_pairs: &'a Path,
    /// Pair store of the held-out pairs.
    pub test_pairs: &'a Path,
    /// Raw embedding of "End of text." in the space (the end-of-text stop rule).
    pub eos: Vec<f32>,
    /// A trained decoder folder (`lcm train-decoder --out`) and its beam; `None`: retrieval
    /// over the training summaries' sentences.
    pub decoder: Option<(PathBuf, usize)>,
    pub config: SummarizationConfig,
}

/// The scores of one system.
#[derive(Clone, Debug, Serialize)]
pub struct SystemScores {
    /// The model's label, or `first-sentence` / `nearest-summary`.
    pub system: String,
    /// `model` or `baseline`.
    pub kind: &'static str,
    pub pairs: usize,
    pub rouge_l_precision: f64,
    pub rouge_l_recall: f64,
    pub rouge_l: f64,
    /// Micro-averaged share of output word 3-grams found in the source.
    pub ovl3: f64,
    /// Micro-averaged share of repeated word 4-grams of the outputs.
    pub rep4: f64,
    /// Mean output words / reference words (pairs whose reference has a word).
    pub length_ratio: Option<f64>,
    /// Mean output words.
    pub mean_words: f64,
    /// Models: why each continuation ended (`end-of-text`, `repetition`, …).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub stops: BTreeMap<String, usize>,
}

/// One held-out pair with every system's output, for reading.
#[derive(Clone, Debug, Serialize)]
pub struct Example {
    pub id: String,
    pub source: String,
    pub reference: String,
    /// `(system, output)` in the order of [`SummarizationReport::systems`].
    pub outputs: Vec<(String, String)>,
}

/// What [`evaluate_summarization`] measured.
#[derive(Clone, Debug, Serialize)]
pub struct SummarizationReport {
    pub train_pairs: usize,
    pub test_pairs: usize,
    pub evaluated: usize,
    /// `retrieval` (over the training summaries' sentences) or the decoder's folder.
    pub decoder: String,
    pub max_sentences: usize,
    pub systems: Vec<SystemScores>,
    pub examples: Vec<Example>,
}

impl SummarizationReport {
    /// The scores as a markdown table (percentages, as the paper reports them).
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "Summarisation: {} held-out pairs (of {}), {} training pairs; decoder: {}\n\n\
             | system | ROUGE-L | OVL-3 | REP-4 | length ratio | words | stops |\n\
             |---|---:|---:|---:|---:|---:|---|\n",
            self.evaluated, self.test_pairs, self.train_pairs, self.decoder
        );
        for s in &self.systems {
            let stops: Vec<String> = s.stops.iter().map(|(k, v)| format!("{k} {v}")).collect();
            out.push_str(&format!(
                "| {} | {:.2} | {:.2} | {:.2} | {} | {:.1} | {} |\n",
                s.system,
                100.0 * s.rouge_l,
                100.0 * s.ovl3,
                100.0 * s.rep4,
                s.length_ratio.map_or("-".into(), |r| format!("{r:.2}")),
                s.mean_words,
                if stops.is_empty() {
                    "-".into()
                } else {
                    stops.join(", ")
                }
            ));
        }
        out
    }
}

/// Scores the outputs of one system against the references, the sources given for OVL-3.
pub fn score_system(
    system: &str,
    kind: &'static str,
    outputs: &[String],
    references: &[String],
    sources: &[String],
) -> SystemScores {
    let (mut p, mut r, mut f) = (0.0, 0.0, 0.0);
    let (mut ratio_sum, mut ratio_n, mut words) = (0.0, 0usize, 0usize);
    let (mut ovl, mut rep) = (NgramShare::default(), NgramShare::default());
    for ((output, reference), source) in outputs.iter().zip(references).zip(sources) {
        let (ot, rt) = (tokenize(output), tokenize(reference));
        let RougeScore {
            precision,
            recall,
            fmeasure,
        } = rouge_l_tokens(&rt, &ot);
        p += precision;
        r += recall;
        f += fmeasure;
        words += ot.len();
        if !rt.is_empty() {
            ratio_sum += ot.len() as f64 / rt.len() as f64;
            ratio_n += 1;
        }
        ovl += overlap(output, source, 3);
        rep += repetition(output, 4);
    }
    let n = outputs.len().max(1) as f64;
    SystemScores {
        system: system.to_string(),
        kind,
        pairs: outputs.len(),
        rouge_l_precision: p / n,
        rouge_l_recall: r / n,
        rouge_l: f / n,
        ovl3: ovl.ratio(),
        rep4: rep.ratio(),
        length_ratio: (ratio_n > 0).then(|| ratio_sum / ratio_n as f64),
        mean_words: words as f64 / n,
        stops: BTreeMap::new(),
    }
}

/// The text of a document: its sentences joined by a space.
fn text(sentences: &[String]) -> String {
    sentences.join(" ")
}

/// The unit-length mean of a document's concepts (`None` for an empty or zero document).
fn mean_direction(embeddings: &[f32], dim: usize) -> Option<Vec<f32>> {
    let rows = embeddings.len() / dim.max(1);
    if rows == 0 {
        return None;
    }
    let mut mean = vec![0f32; dim];
    for row in embeddings.chunks_exact(dim) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt();
    (norm > 0.0).then(|| mean.iter().map(|v| v / norm).collect())
}

/// For each held-out pair, the summary of the training pair whose prompt's mean concept is
/// nearest by cosine (ties: the first training pair).
pub fn nearest_summaries(train: &[ConceptPair], test: &[ConceptPair], dim: usize) -> Vec<String> {
    let keys: Vec<(Vec<f32>, usize)> = train
        .iter()
        .enumerate()
        .filter_map(|(i, p)| mean_direction(&p.prompt.embeddings, dim).map(|m| (m, i)))
        .collect();
    test.iter()
        .map(|pair| {
            let Some(q) = mean_direction(&pair.prompt.embeddings, dim) else {
                return String::new();
            };
            let mut best: Option<(f32, usize)> = None;
            for (k, i) in &keys {
                let cos: f32 = k.iter().zip(&q).map(|(a, b)| a * b).sum();
                if best.is_none_or(|(c, _)| cos > c) {
                    best = Some((cos, *i));
                }
            }
            best.map_or(String::new(), |(_, i)| text(&train[i].answer.sentences))
        })
        .collect()
}

/// A system's name, kind, one output per held-out pair, and (models) its stop reasons.
type SystemOutputs = (String, &'static str, Vec<String>, BTreeMap<String, usize>);

/// Runs the evaluation; `notify` hears about a sentence bank being built, `progress` gets
/// `(system, pairs done, pairs)` while a model generates.
pub fn evaluate_summarization(
    request: &SummarizationRequest<'_>,
    notify: &mut dyn FnMut(BankNotice<'_>),
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<SummarizationReport> {
    let config = &request.config;
    let train_store = PairStore::open(request.train_pairs)?;
    let test_store = PairStore::open(request.test_pairs)?;
    train_store
        .meta()
        .check_same_space(test_store.meta(), request.test_pairs)?;
    let (space, dim) = (
        train_store.meta().encoder_id.clone(),
        train_store.meta().dim,
    );
    let (train, _) = train_store.pairs()?;
    let (mut test, _) = test_store.pairs()?;
    let test_pairs = test.len();
    if let Some(limit) = config.limit {
        test.truncate(limit);
    }
    let sources: Vec<String> = test.iter().map(|p| text(&p.prompt.sentences)).collect();
    let references: Vec<String> = test.iter().map(|p| text(&p.answer.sentences)).collect();
    let mut outputs: Vec<SystemOutputs> = Vec::new();

    if !request.models.is_empty() {
        let decoder = match &request.decoder {
            Some((dir, beam)) => {
                let (decoder, root) = load_decoder(dir, &space, dim)?;
                ContinuationDecoder::generative(decoder, root, *beam)
            }
            None => {
                let answers = request.train_pairs.join(lcm_data::pairs::ANSWER_DIR);
                ContinuationDecoder::retrieval(None, Some(&answers), &space, dim, None, notify)?
            }
        };
        let sampling = config.sampling.diffusion()?;
        for path in request.models {
            let trained = TrainedLcm::load(path, request.normalizer)?;
            if trained.encoder_id() != space {
                return Err(WorkflowError::Refused(format!(
                    "the model {} was trained on `{}` concepts but the pairs {} hold `{space}`",
                    path.display(),
                    trained.encoder_id(),
                    request.train_pairs.display()
                )));
            }
            let label = format!("{} ({})", trained.label(), path.display());
            let max_seq_len = trained.model().max_seq_len();
            // Room for the summary: the prompt's last concepts when it is too long.
            let keep = max_seq_len
                .saturating_sub(config.rules.max_sentences)
                .min(max_seq_len.saturating_sub(1))
                .max(1);
            let mut texts = Vec::with_capacity(test.len());
            let mut stops = BTreeMap::new();
            for (i, pair) in test.iter().enumerate() {
                let rows = pair.prompt.len();
                let start = rows.saturating_sub(keep);
                let prompt = Tensor::from_slice(
                    &pair.prompt.embeddings[start * dim..],
                    (rows - start, dim),
                    &Device::Cpu,
                )?;
                let continuation = continue_prompt(
                    &trained,
                    &prompt,
                    &request.eos,
                    &config.rules,
                    &sampling,
                    config.seed.wrapping_add(i as u64),
                )?;
                *stops
                    .entry(continuation.stop.name().to_string())
                    .or_insert(0) += 1;
                let decoded = decode_continuation(&decoder, &continuation.concepts, None, None)?;
                let sentences: Vec<String> = decoded.into_iter().map(|d| d.text).collect();
                texts.push(text(&sentences));
                progress(&label, i + 1, test.len());
            }
            outputs.push((label, "model", texts, stops));
        }
    }
    let first: Vec<String> = test
        .iter()
        .map(|p| p.prompt.sentences.first().cloned().unwrap_or_default())
        .collect();
    outputs.push(("first-sentence".into(), "baseline", first, BTreeMap::new()));
    let nearest = nearest_summaries(&train, &test, dim);
    outputs.push((
        "nearest-summary".into(),
        "baseline",
        nearest,
        BTreeMap::new(),
    ));

    let systems = outputs
        .iter()
        .map(|(name, kind, texts, stops)| SystemScores {
            stops: stops.clone(),
            ..score_system(name, kind, texts, &references, &sources)
        })
        .collect();
    let examples = (0..config.examples.min(test.len()))
        .map(|i| Example {
            id: test[i].id.clone(),
            source: sources[i].clone(),
            reference: references[i].clone(),
            outputs: outputs
                .iter()
                .map(|(name, _, texts, _)| (name.clone(), texts[i].clone()))
                .collect(),
        })
        .collect();
    Ok(SummarizationReport {
        train_pairs: train.len(),
        test_pairs,
        evaluated: test.len(),
        decoder: match &request.decoder {
            Some((dir, _)) => dir.display().to_string(),
            None => "retrieval over the training summaries".into(),
        },
        max_sentences: config.rules.max_sentences,
        systems,
        examples,
    })
}
