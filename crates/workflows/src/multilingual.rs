//! Multilingual evaluation on a parallel corpus (`scripts/corpus/parallel.sh`: Bible verses
//! en/es, Debian package descriptions in 14 languages), what `lcm eval-multilingual` runs:
//!
//! - **cross-lingual retrieval** ([`cross_lingual_retrieval`]): for each pair of sides of a
//!   family (a side is one language or one translation: `en`, `fr`, `en-web`, `es-rv1909`),
//!   accuracy@1 of finding a unit's translation among all candidates by cosine, and the
//!   xsim error rate (LASER's margin criterion, [`retrieval_scores`]), both directions;
//!   each side is encoded in its language (SONAR needs it; e5 and MiniLM ignore it);
//! - **zero-shot next-concept prediction** ([`zero_shot`]): a Base-LCM trained only on the
//!   pivot language's (English) documents, scored teacher-forced (ℓ2, CA, PAR next to the
//!   trivial baselines, `lcm_eval`) on held-out documents of every other side, next to its
//!   score on the English originals of exactly those documents; and the same model trained
//!   with a few documents of every other side added;
//! - **generation across languages** ([`generate_across`]): a held-out French or German
//!   document's first sentences continued by the English-only model and decoded by the
//!   retrieval decoder over that language's sentences.
//!
//! A document's id is its alignment key (the Debian md5, the Bible chapter) in every
//! language, so the held-out split (by id hash, [`split_of`]) holds the same content in all
//! of them and none of it is trained on in any language.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use lcm_concept::ConceptEncoder;
use lcm_concept::normalizer::RobustNormalizer;
use lcm_concept::segment::segment;
use lcm_data::batch::{DatasetConfig, SequenceDataset, Split, SplitDataset, split_of};
use lcm_data::prepare::{NoProgress, PrepareOptions, prepare, shard_path};
use lcm_data::store::{ConceptDocument, ConceptStore, write_shard};
use lcm_eval::report::{MEAN_CONCEPT, REPEAT_PREVIOUS};
use lcm_model::generate::DiffusionSampling;
use lcm_util::hash::fnv1a64;
use serde::{Deserialize, Serialize};

use crate::evaluate::{EvalConfig, evaluate_model, training_mean};
use crate::generate::StopRules;
use crate::load::{TrainedLcm, eos_embedding};
use crate::session::{DecoderChoice, GenerationSession};
use crate::store::StoreLayout;
use crate::train::{TrainConfig, train};
use crate::{Result, WorkflowError};

/// One line of a parallel corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParallelRecord {
    /// Unique: `KEY/SIDE` (`debian/<md5>/fr`, `bible/Genesis/1/1/en-web`).
    pub id: String,
    /// Alignment key: records with the same key translate each other.
    pub key: String,
    pub lang: String,
    #[serde(default)]
    pub source: String,
    pub text: String,
    /// A one-line summary (Debian's short description): the retrieval unit when present.
    #[serde(default)]
    pub title: Option<String>,
    /// The document a unit belongs to (a Bible chapter for a verse).
    #[serde(default)]
    pub doc: Option<String>,
}

impl ParallelRecord {
    /// The family: the key up to its first `/` (`debian`, `bible`); keys align only
    /// within a family.
    pub fn family(&self) -> &str {
        self.key.split('/').next().unwrap_or_default()
    }

    /// The side: the id after `KEY/` (`fr`, `en-web`), else the language.
    pub fn side(&self) -> &str {
        self.id
            .strip_prefix(self.key.as_str())
            .and_then(|s| s.strip_prefix('/'))
            .filter(|s| !s.is_empty())
            .unwrap_or(&self.lang)
    }

    /// The retrieval unit: the title when there is one, else the text.
    pub fn unit(&self) -> &str {
        self.title
            .as_deref()
            .filter(|t| !t.is_empty())
            .unwrap_or(&self.text)
    }
}

/// One side of a family: a language or one translation in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Side {
    pub family: String,
    pub name: String,
    pub lang: String,
}

impl Side {
    /// `family-name`: the side's store and file names.
    pub fn label(&self) -> String {
        format!("{}-{}", self.family, self.name)
    }
}

/// A parallel corpus held in memory.
#[derive(Debug, Clone)]
pub struct ParallelCorpus {
    records: Vec<ParallelRecord>,
}

impl ParallelCorpus {
    /// Reads JSONL files of [`ParallelRecord`]s; a malformed line or a repeated id is
    /// refused with its file and line.
    pub fn read(paths: &[PathBuf]) -> Result<Self> {
        let mut records = Vec::new();
        let mut seen: HashMap<String, (PathBuf, usize)> = HashMap::new();
        for path in paths {
            let file = std::fs::File::open(path).map_err(|source| WorkflowError::Io {
                path: path.clone(),
                source,
            })?;
            for (n, line) in BufReader::new(file).lines().enumerate() {
                let line = line.map_err(|source| WorkflowError::Io {
                    path: path.clone(),
                    source,
                })?;
                if line.trim().is_empty() {
                    continue;
                }
                let record: ParallelRecord = serde_json::from_str(&line).map_err(|e| {
                    WorkflowError::Refused(format!(
                        "{}:{}: not a parallel-corpus record ({e}); each line needs `id`, \
                         `key`, `lang` and `text` (scripts/corpus/parallel.sh writes them)",
                        path.display(),
                        n + 1
                    ))
                })?;
                if let Some((p, l)) = seen.get(&record.id) {
                    return Err(WorkflowError::Refused(format!(
                        "{}:{}: id `{}` repeats {}:{}",
                        path.display(),
                        n + 1,
                        record.id,
                        p.display(),
                        l
                    )));
                }
                seen.insert(record.id.clone(), (path.clone(), n + 1));
                records.push(record);
            }
        }
        Self::from_records(records)
    }

    pub fn from_records(records: Vec<ParallelRecord>) -> Result<Self> {
        if records.is_empty() {
            return Err(WorkflowError::Refused(
                "the parallel corpus has no records".into(),
            ));
        }
        Ok(Self { records })
    }

    pub fn records(&self) -> &[ParallelRecord] {
        &self.records
    }

    /// The families, each with its sides, in order of first appearance.
    pub fn families(&self) -> Vec<(String, Vec<Side>)> {
        let mut out: Vec<(String, Vec<Side>)> = Vec::new();
        for r in &self.records {
            let family = r.family();
            let index = match out.iter().position(|(f, _)| f == family) {
                Some(i) => i,
                None => {
                    out.push((family.to_string(), Vec::new()));
                    out.len() - 1
                }
            };
            let sides = &mut out[index].1;
            if !sides.iter().any(|s| s.name == r.side()) {
                sides.push(Side {
                    family: family.to_string(),
                    name: r.side().to_string(),
                    lang: r.lang.clone(),
                });
            }
        }
        out
    }

    fn side_records<'a>(&'a self, side: &'a Side) -> impl Iterator<Item = &'a ParallelRecord> {
        self.records
            .iter()
            .filter(move |r| r.family() == side.family && r.side() == side.name)
    }
}

/// The pivot of a family: its first side in `lang`, else its first side.
fn pivot<'a>(sides: &'a [Side], lang: &str) -> Option<&'a Side> {
    sides.iter().find(|s| s.lang == lang).or(sides.first())
}

/// A stable pseudo-random order of keys (FNV-1a of the key).
fn hash_order(key: &str) -> (u64, String) {
    (fnv1a64(key.as_bytes()), key.to_string())
}

// ----------------------------------------------------------------------------------------
// cross-lingual retrieval
// ----------------------------------------------------------------------------------------

/// Settings of [`cross_lingual_retrieval`].
#[derive(Debug, Clone, Serialize)]
pub struct RetrievalConfig {
    /// Most aligned units per pair (the candidates), picked in a fixed pseudo-random order
    /// of their keys.
    pub max_units: usize,
    /// Every pair of sides of a family; otherwise every side with the family's pivot.
    pub all_pairs: bool,
    /// Neighbours in the margin of the xsim error rate (LASER uses 4).
    pub margin_k: usize,
    /// The pivot language.
    pub pivot_lang: String,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self {
            max_units: 1000,
            all_pairs: false,
            margin_k: 4,
            pivot_lang: "en".into(),
        }
    }
}

/// Accuracy@1 by cosine and the xsim (margin) error rate of one aligned set, both ways.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RetrievalScores {
    /// Source units whose nearest target by cosine is their translation.
    pub acc_forward: f64,
    pub acc_backward: f64,
    /// Source units whose best target by the ratio margin is not their translation.
    pub xsim_forward: f64,
    pub xsim_backward: f64,
}

/// One pair's result.
#[derive(Debug, Clone, Serialize)]
pub struct PairScore {
    pub family: String,
    /// Source side (forward direction: `a` → `b`).
    pub a: String,
    pub b: String,
    pub candidates: usize,
    #[serde(flatten)]
    pub scores: RetrievalScores,
}

/// Unit-normalised copy of row-major `[n, dim]` vectors (zero rows stay zero).
fn unit_rows(values: &[f32], dim: usize) -> Vec<f32> {
    let mut out = values.to_vec();
    for row in out.chunks_exact_mut(dim) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    out
}

/// Cosine matrix `[n, m]` of two sets of row vectors.
fn cosine_matrix(a: &[f32], b: &[f32], dim: usize) -> Result<Vec<Vec<f32>>> {
    let n = a.len() / dim;
    let m = b.len() / dim;
    let a = Tensor::from_vec(unit_rows(a, dim), (n, dim), &Device::Cpu)?;
    let b = Tensor::from_vec(unit_rows(b, dim), (m, dim), &Device::Cpu)?;
    Ok(a.matmul(&b.t()?)?.to_vec2::<f32>()?)
}

/// Mean of the `k` largest values of `row`.
fn top_k_mean(row: &[f32], k: usize) -> f32 {
    let mut sorted = row.to_vec();
    sorted.sort_by(|x, y| y.total_cmp(x));
    let k = k.clamp(1, sorted.len().max(1));
    sorted.iter().take(k).sum::<f32>() / k as f32
}

/// Index of the largest value (the first on ties).
fn argmax(values: impl Iterator<Item = f32>) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

/// Scores one aligned set: row `i` of `source` (`[n, dim]`) translates row `i` of
/// `target`. Accuracy@1 by cosine; the xsim error rate with LASER's ratio margin
/// `cos(x, y) / ((mean top-k cos(x, ·) + mean top-k cos(·, y)) / 2)`.
pub fn retrieval_scores(
    source: &[f32],
    target: &[f32],
    dim: usize,
    k: usize,
) -> Result<RetrievalScores> {
    if dim == 0 || source.len() != target.len() || !source.len().is_multiple_of(dim) {
        return Err(WorkflowError::Config(format!(
            "retrieval needs two aligned [n, {dim}] sets; got {} and {} values",
            source.len(),
            target.len()
        )));
    }
    let n = source.len() / dim;
    if n == 0 {
        return Err(WorkflowError::Config("retrieval on an empty set".into()));
    }
    let sim = cosine_matrix(source, target, dim)?;
    let transposed: Vec<Vec<f32>> = (0..n)
        .map(|j| (0..n).map(|i| sim[i][j]).collect())
        .collect();
    let knn_source: Vec<f32> = sim.iter().map(|row| top_k_mean(row, k)).collect();
    let knn_target: Vec<f32> = transposed.iter().map(|row| top_k_mean(row, k)).collect();
    let accuracy = |rows: &[Vec<f32>]| {
        rows.iter()
            .enumerate()
            .filter(|(i, row)| argmax(row.iter().copied()) == *i)
            .count() as f64
            / n as f64
    };
    let xsim = |rows: &[Vec<f32>], own: &[f32], other: &[f32]| {
        rows.iter()
            .enumerate()
            .filter(|(i, row)| {
                let best = argmax(
                    row.iter()
                        .zip(other)
                        .map(|(c, o)| c / ((own[*i] + o) / 2.0).max(1e-6)),
                );
                best != *i
            })
            .count() as f64
            / n as f64
    };
    Ok(RetrievalScores {
        acc_forward: accuracy(&sim),
        acc_backward: accuracy(&transposed),
        xsim_forward: xsim(&sim, &knn_source, &knn_target),
        xsim_backward: xsim(&transposed, &knn_target, &knn_source),
    })
}

/// Encodes `texts` in chunks (the encoder batches inside), row-major `[n, dim]`, in
/// `lang` (a SONAR code; encoders without language input ignore it).
fn encode_all(
    encoder: &dyn ConceptEncoder,
    texts: &[&str],
    lang: Option<&str>,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(texts.len() * encoder.dim());
    for chunk in texts.chunks(512) {
        let t = encoder.encode(chunk, lang)?;
        out.extend(t.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// Cross-lingual retrieval over every family of `corpus` (see the module documentation).
pub fn cross_lingual_retrieval(
    corpus: &ParallelCorpus,
    encoder: &dyn ConceptEncoder,
    config: &RetrievalConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<PairScore>> {
    let dim = encoder.dim();
    let mut out = Vec::new();
    for (family, sides) in corpus.families() {
        let Some(pivot) = pivot(&sides, &config.pivot_lang) else {
            continue;
        };
        let mut pairs = Vec::new();
        for (i, a) in sides.iter().enumerate() {
            for b in &sides[i + 1..] {
                if config.all_pairs || a == pivot || b == pivot {
                    let (a, b) = if b == pivot { (b, a) } else { (a, b) };
                    pairs.push((a.clone(), b.clone()));
                }
            }
        }
        let units: HashMap<&str, HashMap<&str, &str>> = sides
            .iter()
            .map(|s| {
                let map = corpus
                    .side_records(s)
                    .map(|r| (r.key.as_str(), r.unit()))
                    .collect();
                (s.name.as_str(), map)
            })
            .collect();
        // Keys of each pair; then every (side, key) needed, encoded once.
        let mut pair_keys = Vec::new();
        let mut needed: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (a, b) in &pairs {
            let (ua, ub) = (&units[a.name.as_str()], &units[b.name.as_str()]);
            let mut keys: Vec<&str> = ua.keys().filter(|k| ub.contains_key(*k)).copied().collect();
            keys.sort_by_cached_key(|k| hash_order(k));
            keys.truncate(config.max_units);
            for side in [a, b] {
                needed
                    .entry(side.name.as_str())
                    .or_default()
                    .extend(keys.iter().copied());
            }
            pair_keys.push(keys);
        }
        let mut vectors: HashMap<(&str, &str), Vec<f32>> = HashMap::new();
        for (side, keys) in &needed {
            progress(&format!(
                "retrieval: encoding {} units of {family}-{side}",
                keys.len()
            ));
            let keys: Vec<&str> = keys.iter().copied().collect();
            let texts: Vec<&str> = keys.iter().map(|k| units[side][k]).collect();
            let lang = sides
                .iter()
                .find(|s| s.name == *side)
                .map(|s| s.lang.as_str())
                .unwrap_or_default();
            // The side's language as a SONAR code (`pt_BR` → `por_Latn`): SONAR reads it, the
            // BERT-family encoders ignore it. An unknown tag encodes in the default language.
            let code = lcm_concept::lang::resolve(lang).ok();
            if code.is_none() {
                progress(&format!(
                    "retrieval: language `{lang}` of {family}-{side} is unknown; encoding it \
                     in the encoder's default language"
                ));
            }
            let encoded = encode_all(encoder, &texts, code)?;
            for (k, row) in keys.iter().zip(encoded.chunks_exact(dim)) {
                vectors.insert((*side, *k), row.to_vec());
            }
        }
        for ((a, b), keys) in pairs.iter().zip(pair_keys) {
            if keys.is_empty() {
                continue;
            }
            let gather = |side: &str| -> Vec<f32> {
                keys.iter()
                    .flat_map(|k| vectors[&(side, *k)].iter().copied())
                    .collect()
            };
            let scores = retrieval_scores(
                &gather(a.name.as_str()),
                &gather(b.name.as_str()),
                dim,
                config.margin_k,
            )?;
            out.push(PairScore {
                family: family.clone(),
                a: a.name.clone(),
                b: b.name.clone(),
                candidates: keys.len(),
                scores,
            });
        }
    }
    Ok(out)
}

// ----------------------------------------------------------------------------------------
// documents and stores
// ----------------------------------------------------------------------------------------

/// One document of a side: its id is the alignment key (Debian) or the chapter (Bible).
#[derive(Debug, Clone)]
struct SideDocument {
    id: String,
    text: String,
    sentences: usize,
}

/// The documents of a side, in corpus order: one per record (title first, as its own
/// paragraph), or one per `doc` for records that name one (their texts as paragraphs).
fn side_documents(corpus: &ParallelCorpus, side: &Side) -> Vec<SideDocument> {
    let mut order: Vec<String> = Vec::new();
    let mut texts: HashMap<String, Vec<String>> = HashMap::new();
    for r in corpus.side_records(side) {
        let (id, paragraph) = match &r.doc {
            Some(doc) => (doc.clone(), r.text.clone()),
            None => {
                let mut t = r.title.clone().unwrap_or_default();
                if !r.text.is_empty() {
                    if !t.is_empty() {
                        t.push_str("\n\n");
                    }
                    t.push_str(&r.text);
                }
                (r.key.clone(), t)
            }
        };
        if paragraph.is_empty() {
            continue;
        }
        let entry = texts.entry(id.clone()).or_insert_with(|| {
            order.push(id.clone());
            Vec::new()
        });
        entry.push(paragraph);
    }
    order
        .into_iter()
        .map(|id| {
            let text = texts.remove(&id).unwrap_or_default().join("\n\n");
            let sentences = text.split("\n\n").map(|p| segment(p).len()).sum();
            SideDocument {
                id,
                text,
                sentences,
            }
        })
        .collect()
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> WorkflowError + '_ {
    move |source| WorkflowError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `docs` as `{"id", "lang", "text"}` JSONL and prepares them into the store `out`
/// (resumed when it exists with the same settings). `lang` is the side's tag (`fr`, `pt_BR`):
/// `prepare` segments each document with that language's rules and encodes it in that
/// language (SONAR reads it; e5 and MiniLM have no language input).
fn prepare_store(
    encoder: &dyn ConceptEncoder,
    docs: &[&SideDocument],
    lang: &str,
    jsonl: &Path,
    out: &Path,
) -> Result<usize> {
    let mut text = String::new();
    for d in docs {
        let record = serde_json::json!({"id": d.id, "lang": lang, "text": d.text});
        text.push_str(&record.to_string());
        text.push('\n');
    }
    // Unchanged input: keep the file, so that prepare resumes instead of refusing.
    let unchanged = std::fs::read_to_string(jsonl).is_ok_and(|old| old == text);
    if !unchanged {
        if out.exists() {
            std::fs::remove_dir_all(out).map_err(io_error(out))?;
        }
        lcm_util::fs::write_atomic(jsonl, text.as_bytes()).map_err(|e| WorkflowError::Io {
            path: e.path,
            source: e.source,
        })?;
    }
    let mut options = PrepareOptions::new(vec![jsonl.to_path_buf()], out.to_path_buf());
    options.shard_size = 500;
    let report = prepare(encoder, &options, &NoProgress)?;
    Ok(report.sentences)
}

/// Writes `documents` as a store at `out` (shards of 500), in the space of `like`.
fn write_store(like: &ConceptStore, documents: &[ConceptDocument], out: &Path) -> Result<()> {
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(io_error(out))?;
    }
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    for (i, chunk) in documents.chunks(500).enumerate() {
        write_shard(&shard_path(out, i), &like.meta, chunk)?;
    }
    Ok(())
}

fn store_documents(path: &Path) -> Result<Vec<ConceptDocument>> {
    let store = ConceptStore::open(path)?;
    Ok(store
        .documents()
        .collect::<std::result::Result<Vec<_>, _>>()?)
}

// ----------------------------------------------------------------------------------------
// zero-shot next-concept prediction
// ----------------------------------------------------------------------------------------

/// Settings of [`zero_shot`].
#[derive(Debug, Clone)]
pub struct ZeroShotConfig {
    /// The language the model is trained on.
    pub pivot_lang: String,
    /// Held-out fraction by document id (the same documents in every language).
    pub valid_fraction: f64,
    /// Most training sentences per family of the pivot language (documents added in a
    /// fixed pseudo-random order until the budget is reached).
    pub train_sentences: usize,
    /// Most held-out documents evaluated per side.
    pub eval_docs: usize,
    /// Training documents of every side in another language than the pivot added for the
    /// comparison model (0: no comparison model).
    pub mix_docs: usize,
    /// Documents with fewer sentences are left out.
    pub min_sentences: usize,
    /// Families used (empty: all).
    pub families: Vec<String>,
    pub train: TrainConfig,
    pub eval: EvalConfig,
}

impl Default for ZeroShotConfig {
    fn default() -> Self {
        Self {
            pivot_lang: "en".into(),
            valid_fraction: 0.2,
            train_sentences: 12_000,
            eval_docs: 150,
            mix_docs: 50,
            min_sentences: 3,
            families: Vec::new(),
            train: TrainConfig::default(),
            eval: EvalConfig::default(),
        }
    }
}

/// Metrics of one predictor (ℓ2, CA, PAR).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scores {
    pub l2: f64,
    pub ca: Option<f64>,
    pub par: Option<f64>,
}

impl From<&lcm_eval::metrics::Metrics> for Scores {
    fn from(m: &lcm_eval::metrics::Metrics) -> Self {
        Self {
            l2: m.l2,
            ca: m.ca,
            par: m.par,
        }
    }
}

/// One side's row of the zero-shot table.
#[derive(Debug, Clone, Serialize)]
pub struct ZeroShotRow {
    pub family: String,
    pub side: String,
    pub lang: String,
    /// Held-out documents and concepts scored (EOS included, position 0 not scored).
    pub documents: usize,
    pub concepts: usize,
    /// The pivot-only model on this side's held-out documents.
    pub model: Scores,
    /// The pivot-only model on the pivot-language originals of the same documents
    /// (absent for the pivot itself).
    pub model_on_pivot: Option<Scores>,
    /// The model trained with a few documents of every side added.
    pub mixed: Option<Scores>,
    pub repeat_previous: Scores,
    pub mean_concept: Scores,
}

/// What [`zero_shot`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct ZeroShotReport {
    pub rows: Vec<ZeroShotRow>,
    pub pivot_train_documents: usize,
    pub pivot_train_sentences: usize,
    pub mixed_extra_documents: usize,
    pub model: String,
    pub mixed_model: Option<String>,
    /// The run directories of the two models.
    pub run: PathBuf,
    pub mixed_run: Option<PathBuf>,
    /// Stores of each side (`family-side` → path), for generation.
    pub stores: BTreeMap<String, PathBuf>,
    pub normalizer: PathBuf,
    pub train_seconds: f64,
}

/// Which documents of a side are used.
struct SidePlan {
    side: Side,
    docs: Vec<SideDocument>,
    /// Indices into `docs`.
    train: Vec<usize>,
    held_out: Vec<usize>,
}

/// Trains the pivot-only model (and the mixed one) under `out` and scores both on every
/// side's held-out documents (see the module documentation).
pub fn zero_shot(
    corpus: &ParallelCorpus,
    encoder: &dyn ConceptEncoder,
    config: &ZeroShotConfig,
    out: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<ZeroShotReport> {
    let vf = config.valid_fraction;
    if !(vf > 0.0 && vf < 1.0) {
        return Err(WorkflowError::Config(format!(
            "the held-out fraction must be in (0, 1), got {vf}"
        )));
    }
    let docs_dir = out.join("docs");
    let stores_dir = out.join("stores");
    std::fs::create_dir_all(&docs_dir).map_err(io_error(&docs_dir))?;
    std::fs::create_dir_all(&stores_dir).map_err(io_error(&stores_dir))?;

    // Plan: which documents of each side are trained on, held out, mixed in.
    let mut plans: Vec<(SidePlan, bool)> = Vec::new();
    for (family, sides) in corpus.families() {
        if !config.families.is_empty() && !config.families.contains(&family) {
            continue;
        }
        let Some(pivot) = pivot(&sides, &config.pivot_lang).cloned() else {
            continue;
        };
        if pivot.lang != config.pivot_lang {
            continue; // a family without the pivot language has nothing to compare with
        }
        let mut pivot_held: BTreeSet<String> = BTreeSet::new();
        let mut others = Vec::new();
        for side in sides.iter().filter(|s| **s != pivot) {
            let mut docs = side_documents(corpus, side);
            docs.retain(|d| d.sentences >= config.min_sentences);
            let mut order: Vec<usize> = (0..docs.len()).collect();
            order.sort_by_cached_key(|&i| hash_order(&docs[i].id));
            let held_out: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&i| split_of(&docs[i].id, vf) == Split::Valid)
                .take(config.eval_docs)
                .collect();
            // Another version in the pivot language (the KJV next to the WEB) is scored
            // but never mixed in: the comparison model adds other languages only.
            let mix = if side.lang == config.pivot_lang {
                0
            } else {
                config.mix_docs
            };
            let train: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&i| {
                    split_of(&docs[i].id, vf) == Split::Train
                        && split_of(&mixed_id(side, &docs[i].id), vf) == Split::Train
                })
                .take(mix)
                .collect();
            pivot_held.extend(held_out.iter().map(|&i| docs[i].id.clone()));
            others.push(SidePlan {
                side: side.clone(),
                docs,
                train,
                held_out,
            });
        }
        let mut docs = side_documents(corpus, &pivot);
        // The originals of held-out documents stay, however short, for the paired score.
        docs.retain(|d| d.sentences >= config.min_sentences || pivot_held.contains(&d.id));
        let mut order: Vec<usize> = (0..docs.len()).collect();
        order.sort_by_cached_key(|&i| hash_order(&docs[i].id));
        let mut train = Vec::new();
        let mut budget = 0usize;
        for &i in &order {
            if budget >= config.train_sentences {
                break;
            }
            if split_of(&docs[i].id, vf) == Split::Train
                && docs[i].sentences >= config.min_sentences
            {
                budget += docs[i].sentences;
                train.push(i);
            }
        }
        let held_out: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| split_of(&docs[i].id, vf) == Split::Valid)
            .filter(|&i| pivot_held.contains(&docs[i].id) || pivot_held.is_empty())
            .take(if pivot_held.is_empty() {
                config.eval_docs
            } else {
                usize::MAX
            })
            .collect();
        plans.push((
            SidePlan {
                side: pivot,
                docs,
                train,
                held_out,
            },
            true,
        ));
        plans.extend(others.into_iter().map(|p| (p, false)));
    }
    if !plans
        .iter()
        .any(|(p, is_pivot)| *is_pivot && !p.train.is_empty())
    {
        return Err(WorkflowError::Refused(format!(
            "no training document in `{}` with at least {} sentences: the corpus needs \
             documents of the pivot language",
            config.pivot_lang, config.min_sentences
        )));
    }

    // Stores: one per side (training, held-out and mixed-in documents), encoded once.
    let mut stores = BTreeMap::new();
    let mut pivot_train_sentences = 0;
    for (plan, is_pivot) in &plans {
        let label = plan.side.label();
        let mut chosen: Vec<&SideDocument> = plan
            .train
            .iter()
            .chain(&plan.held_out)
            .map(|&i| &plan.docs[i])
            .collect();
        chosen.sort_by(|a, b| a.id.cmp(&b.id));
        chosen.dedup_by(|a, b| a.id == b.id);
        if chosen.is_empty() {
            continue;
        }
        let sentences: usize = chosen.iter().map(|d| d.sentences).sum();
        progress(&format!(
            "zero-shot: preparing {label} ({} documents, ~{sentences} sentences)",
            chosen.len()
        ));
        let store = stores_dir.join(&label);
        prepare_store(
            encoder,
            &chosen,
            &plan.side.lang,
            &docs_dir.join(format!("{label}.jsonl")),
            &store,
        )?;
        if *is_pivot {
            pivot_train_sentences += plan
                .train
                .iter()
                .map(|&i| plan.docs[i].sentences)
                .sum::<usize>();
        }
        stores.insert(label, store);
    }

    // The training stores: the pivot sides' documents; plus the mixed-in ones.
    let mut pivot_docs = Vec::new();
    let mut mixed_extra = Vec::new();
    let mut like = None;
    for (plan, is_pivot) in &plans {
        let Some(path) = stores.get(&plan.side.label()) else {
            continue;
        };
        let store = ConceptStore::open(path)?;
        let train_ids: HashSet<&str> = plan
            .train
            .iter()
            .map(|&i| plan.docs[i].id.as_str())
            .collect();
        for mut doc in store_documents(path)? {
            if *is_pivot {
                pivot_docs.push(doc); // held-out ones are excluded by the split itself
            } else if train_ids.contains(doc.id.as_str()) {
                doc.id = mixed_id(&plan.side, &doc.id);
                mixed_extra.push(doc);
            }
        }
        like.get_or_insert(store);
    }
    let like = like.ok_or_else(|| WorkflowError::Refused("no store was prepared".into()))?;
    let pivot_store = stores_dir.join(format!("train-{}", config.pivot_lang));
    write_store(&like, &pivot_docs, &pivot_store)?;
    let normalizer_path = StoreLayout::new(&pivot_store).normalizer();
    let normalizer = lcm_data::sample::fit_normalizer(
        &ConceptStore::open(&pivot_store)?,
        1_000_000,
        config.train.seed,
    )?;
    normalizer.save(&normalizer_path)?;
    let eos = eos_embedding(encoder)?;

    let started = std::time::Instant::now();
    let run = out.join("runs").join(format!("{}-only", config.pivot_lang));
    progress(&format!(
        "zero-shot: training {} {} on {} {} documents ({pivot_train_sentences} sentences) for {} steps",
        config.train.model.name(),
        config.train.preset,
        pivot_docs.len(),
        config.pivot_lang,
        config.train.steps
    ));
    train_run(
        config,
        &pivot_store,
        &normalizer,
        &normalizer_path,
        &eos,
        &run,
    )?;
    let mixed_run = if config.mix_docs > 0 && !mixed_extra.is_empty() {
        let mut all = pivot_docs.clone();
        all.extend(mixed_extra.iter().cloned());
        let mixed_store = stores_dir.join("train-mixed");
        write_store(&like, &all, &mixed_store)?;
        let run = out.join("runs").join("mixed");
        progress(&format!(
            "zero-shot: training the comparison model with {} documents of the other sides added",
            mixed_extra.len()
        ));
        train_run(
            config,
            &mixed_store,
            &normalizer,
            &normalizer_path,
            &eos,
            &run,
        )?;
        Some(run)
    } else {
        None
    };
    let train_seconds = started.elapsed().as_secs_f64();

    // Evaluation.
    let trained = TrainedLcm::load(&run, Some(&normalizer_path))?;
    let mixed = mixed_run
        .as_ref()
        .map(|r| TrainedLcm::load(r, Some(&normalizer_path)))
        .transpose()?;
    let max_seq_len = config
        .train
        .max_seq_len
        .unwrap_or(lcm_data::batch::DEFAULT_MAX_SEQ_LEN)
        .min(trained.model().max_seq_len());
    let split = SplitDataset::from_store(
        &ConceptStore::open(&pivot_store)?,
        &normalizer,
        eos.clone(),
        DatasetConfig {
            max_seq_len,
            valid_fraction: vf,
        },
    )?;
    let mean = training_mean(&split.train, &normalizer)?;
    let label = trained.label();
    let mut rows = Vec::new();
    let mut pivot_by_family: HashMap<String, Vec<ConceptDocument>> = HashMap::new();
    for (plan, is_pivot) in &plans {
        if *is_pivot && let Some(path) = stores.get(&plan.side.label()) {
            pivot_by_family.insert(plan.side.family.clone(), store_documents(path)?);
        }
    }
    for (plan, is_pivot) in &plans {
        let Some(path) = stores.get(&plan.side.label()) else {
            continue;
        };
        let held: HashSet<&str> = plan
            .held_out
            .iter()
            .map(|&i| plan.docs[i].id.as_str())
            .collect();
        let docs: Vec<ConceptDocument> = store_documents(path)?
            .into_iter()
            .filter(|d| held.contains(d.id.as_str()))
            .collect();
        if docs.is_empty() {
            progress(&format!(
                "zero-shot: {} has no held-out document; left out",
                plan.side.label()
            ));
            continue;
        }
        let ids: HashSet<String> = docs.iter().map(|d| d.id.clone()).collect();
        let dataset = SequenceDataset::from_documents(docs, &normalizer, eos.clone(), max_seq_len)?;
        progress(&format!(
            "zero-shot: scoring {} ({} documents)",
            plan.side.label(),
            dataset.num_documents()
        ));
        let outcome = evaluate_model(
            trained.model(),
            &label,
            &dataset,
            &normalizer,
            &mean,
            &config.eval,
        )?;
        let report = &outcome.report;
        let get = |name: &str| -> Result<Scores> {
            report
                .get(name)
                .map(Scores::from)
                .ok_or_else(|| WorkflowError::Config(format!("the report has no `{name}` row")))
        };
        let model_on_pivot = if *is_pivot {
            None
        } else {
            let originals: Vec<ConceptDocument> = pivot_by_family
                .get(&plan.side.family)
                .map(|d| d.iter().filter(|d| ids.contains(&d.id)).cloned().collect())
                .unwrap_or_default();
            if originals.is_empty() {
                None
            } else {
                let ds = SequenceDataset::from_documents(
                    originals,
                    &normalizer,
                    eos.clone(),
                    max_seq_len,
                )?;
                let o = evaluate_model(
                    trained.model(),
                    &label,
                    &ds,
                    &normalizer,
                    &mean,
                    &config.eval,
                )?;
                o.report.get(&label).map(Scores::from)
            }
        };
        let mixed_scores = match &mixed {
            Some(m) => {
                let o = evaluate_model(
                    m.model(),
                    "mixed",
                    &dataset,
                    &normalizer,
                    &mean,
                    &config.eval,
                )?;
                o.report.get("mixed").map(Scores::from)
            }
            None => None,
        };
        rows.push(ZeroShotRow {
            family: plan.side.family.clone(),
            side: plan.side.name.clone(),
            lang: plan.side.lang.clone(),
            documents: outcome.sequences,
            concepts: outcome.concepts,
            model: get(&label)?,
            model_on_pivot,
            mixed: mixed_scores,
            repeat_previous: get(REPEAT_PREVIOUS)?,
            mean_concept: get(MEAN_CONCEPT)?,
        });
    }
    let pivot_train_documents = plans
        .iter()
        .filter(|(_, p)| *p)
        .map(|(p, _)| p.train.len())
        .sum();
    Ok(ZeroShotReport {
        rows,
        pivot_train_documents,
        pivot_train_sentences,
        mixed_extra_documents: mixed_extra.len(),
        model: label,
        mixed_model: mixed.as_ref().map(|m| m.label()),
        run,
        mixed_run,
        stores,
        normalizer: normalizer_path,
        train_seconds,
    })
}

/// The id of a mixed-in document (unique next to the pivot's own).
fn mixed_id(side: &Side, id: &str) -> String {
    format!("{}:{id}", side.name)
}

fn train_run(
    config: &ZeroShotConfig,
    store: &Path,
    normalizer: &RobustNormalizer,
    normalizer_path: &Path,
    eos: &[f32],
    run: &Path,
) -> Result<()> {
    let mut train_config = config.train.clone();
    train_config.valid_fraction = config.valid_fraction;
    train_config.normalizer_path = Some(normalizer_path.display().to_string());
    if run.exists() {
        std::fs::remove_dir_all(run).map_err(io_error(run))?;
    }
    train(
        &train_config,
        store,
        normalizer,
        eos.to_vec(),
        run,
        false,
        &mut |_| {},
    )?;
    Ok(())
}

// ----------------------------------------------------------------------------------------
// generation across languages
// ----------------------------------------------------------------------------------------

/// One continued prompt.
#[derive(Debug, Clone, Serialize)]
pub struct CrossLingualGeneration {
    pub lang: String,
    /// The store whose sentences the retrieval decoder searched.
    pub bank_store: PathBuf,
    /// The held-out document the prompt comes from.
    pub document: String,
    pub prompt: Vec<String>,
    /// Decoded sentences with their cosine to the generated concept.
    pub generated: Vec<(String, Option<f32>)>,
    /// The document's own next sentences.
    pub reference: Vec<String>,
    pub stop: String,
}

/// Continues, for each language of `langs`, the first `prompt_sentences` sentences of
/// the first held-out document (of the first family holding that language) that has
/// `prompt_sentences + 1` or more, with the model at `run` under `rules`, decoding through the
/// retrieval decoder over that side's store (built bank; the prompt's own sentences
/// excluded).
pub fn generate_across(
    report: &ZeroShotReport,
    run: &Path,
    encoder: Arc<dyn ConceptEncoder>,
    langs: &[String],
    prompt_sentences: usize,
    rules: &StopRules,
) -> Result<Vec<CrossLingualGeneration>> {
    let mut out = Vec::new();
    for lang in langs {
        let Some(row) = report.rows.iter().find(|r| &r.lang == lang) else {
            return Err(WorkflowError::Refused(format!(
                "no held-out documents in `{lang}` to prompt with; the corpus's languages \
                 are {}",
                report
                    .rows
                    .iter()
                    .map(|r| r.lang.as_str())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let label = format!("{}-{}", row.family, row.side);
        let store = report
            .stores
            .get(&label)
            .ok_or_else(|| WorkflowError::Refused(format!("no store for {label}")))?;
        let docs = store_documents(store)?;
        let vf = report_valid_fraction(run)?;
        let Some(doc) = docs
            .iter()
            .filter(|d| split_of(&d.id, vf) == Split::Valid)
            .find(|d| d.sentences.len() > prompt_sentences)
        else {
            continue;
        };
        let session = GenerationSession::open(
            run,
            Some(&report.normalizer),
            encoder.clone(),
            encoder.id(),
            &DecoderChoice {
                store: Some(store.clone()),
                ..DecoderChoice::default()
            },
            &mut |_| {},
        )?;
        // One paragraph per sentence: the segmenter gives them back as they are.
        let prompt = doc.sentences[..prompt_sentences].join("\n\n");
        let generation =
            session.generate(&prompt, rules, &DiffusionSampling::default(), 0, false)?;
        out.push(CrossLingualGeneration {
            lang: lang.clone(),
            bank_store: store.clone(),
            document: doc.id.clone(),
            prompt: generation.prompt,
            generated: generation
                .sentences
                .into_iter()
                .map(|d| (d.text, d.score))
                .collect(),
            reference: doc.sentences[prompt_sentences..]
                .iter()
                .take(rules.max_sentences)
                .cloned()
                .collect(),
            stop: generation.stop.name().to_string(),
        });
    }
    Ok(out)
}

/// The held-out fraction a run was trained with.
fn report_valid_fraction(run: &Path) -> Result<f64> {
    let trained = TrainedLcm::load(run, None)?;
    trained
        .loaded
        .train_config
        .as_ref()
        .map(|c| c.valid_fraction)
        .ok_or_else(|| {
            WorkflowError::Refused(format!("{} records no held-out fraction", run.display()))
        })
}

// ----------------------------------------------------------------------------------------
// report
// ----------------------------------------------------------------------------------------

/// Everything `lcm eval-multilingual` measured.
#[derive(Debug, Clone, Serialize)]
pub struct MultilingualReport {
    pub encoder: String,
    pub retrieval: Vec<PairScore>,
    pub zero_shot: Option<ZeroShotReport>,
    pub generation: Vec<CrossLingualGeneration>,
    pub seconds: f64,
}

fn pct(v: f64) -> String {
    format!("{:.1}", 100.0 * v)
}

fn opt(v: Option<f64>, percent: bool) -> String {
    match v {
        Some(v) if percent => pct(v),
        Some(v) => format!("{v:.3}"),
        None => "—".into(),
    }
}

impl MultilingualReport {
    /// The report as markdown tables.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        if !self.retrieval.is_empty() {
            s.push_str(&format!(
                "### Cross-lingual retrieval (`{}`)\n\n| family | a | b | candidates | acc@1 a→b % | acc@1 b→a % | xsim err a→b % | xsim err b→a % |\n|---|---|---|---:|---:|---:|---:|---:|\n",
                self.encoder
            ));
            for p in &self.retrieval {
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    p.family,
                    p.a,
                    p.b,
                    p.candidates,
                    pct(p.scores.acc_forward),
                    pct(p.scores.acc_backward),
                    pct(p.scores.xsim_forward),
                    pct(p.scores.xsim_backward)
                ));
            }
            s.push('\n');
        }
        if let Some(z) = &self.zero_shot {
            s.push_str(&format!(
                "### Zero-shot next-concept prediction\n\nModel `{}` trained on {} documents \
                 ({} sentences) of the pivot language only; comparison model `{}` with {} \
                 documents of the other sides added. Teacher-forced on each side's held-out \
                 documents (the same documents in every language); \"on EN\" is the first \
                 model on the English originals of exactly those documents.\n\n",
                z.model,
                z.pivot_train_documents,
                z.pivot_train_sentences,
                z.mixed_model.as_deref().unwrap_or("—"),
                z.mixed_extra_documents
            ));
            type Metric = fn(&Scores) -> Option<f64>;
            let metrics: [(&str, Metric, bool); 3] = [
                ("ℓ2 (lower is better)", |s| Some(s.l2), false),
                ("CA % (higher is better)", |s| s.ca, true),
                ("PAR (higher is better)", |s| s.par, false),
            ];
            for (name, f, percent) in metrics {
                s.push_str(&format!(
                    "{name}:\n\n| family | side | docs | concepts | EN-only model | EN-only on EN | mixed model | repeat previous | mean concept |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
                ));
                for r in &z.rows {
                    s.push_str(&format!(
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                        r.family,
                        r.side,
                        r.documents,
                        r.concepts,
                        opt(f(&r.model), percent),
                        opt(r.model_on_pivot.as_ref().and_then(f), percent),
                        opt(r.mixed.as_ref().and_then(f), percent),
                        opt(f(&r.repeat_previous), percent),
                        opt(f(&r.mean_concept), percent)
                    ));
                }
                s.push('\n');
            }
        }
        for g in &self.generation {
            s.push_str(&format!(
                "### Generation in `{}` (document {}, decoded from {})\n\nPrompt:\n",
                g.lang,
                g.document,
                g.bank_store.display()
            ));
            for p in &g.prompt {
                s.push_str(&format!("> {p}\n"));
            }
            s.push_str("\nGenerated (cosine to the generated concept):\n\n");
            for (t, score) in &g.generated {
                s.push_str(&format!(
                    "1. {t} ({})\n",
                    score.map_or("—".into(), |v| format!("{v:.3}"))
                ));
            }
            s.push_str(&format!(
                "\nStopped: {}. The document's own continuation:\n\n",
                g.stop
            ));
            for t in &g.reference {
                s.push_str(&format!("1. {t}\n"));
            }
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_sets_retrieve_perfectly() {
        let v = [1.0, 0.0, 0.0, 1.0, 0.7, 0.7];
        let s = retrieval_scores(&v, &v, 2, 1).unwrap();
        assert_eq!((s.acc_forward, s.acc_backward), (1.0, 1.0));
        assert_eq!((s.xsim_forward, s.xsim_backward), (0.0, 0.0));
    }

    #[test]
    fn swapped_rows_are_errors() {
        let a = [1.0, 0.0, 0.0, 1.0, -1.0, 0.1];
        // rows 0 and 1 of the target swapped: only row 2 finds its translation.
        let b = [0.0, 1.0, 1.0, 0.0, -1.0, 0.1];
        let s = retrieval_scores(&a, &b, 2, 1).unwrap();
        assert!((s.acc_forward - 1.0 / 3.0).abs() < 1e-9, "{s:?}");
        assert!((s.acc_backward - 1.0 / 3.0).abs() < 1e-9, "{s:?}");
        assert!((s.xsim_forward - 2.0 / 3.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn margin_corrects_a_hub() {
        // Target 0 is a hub, close to every source: by cosine, source 1 picks it; the
        // margin discounts it.
        let source = [1.0, 0.0, 0.8, 0.6];
        let target = [0.9, 0.44, 0.6, 0.8];
        let s = retrieval_scores(&source, &target, 2, 2).unwrap();
        assert_eq!(s.acc_forward, 0.5, "{s:?}");
        assert_eq!(s.xsim_forward, 0.0, "{s:?}");
    }

    #[test]
    fn sides_and_families_come_from_ids_and_keys() {
        let r = ParallelRecord {
            id: "bible/Genesis/1/1/en-web".into(),
            key: "bible/Genesis/1/1".into(),
            lang: "en".into(),
            source: "bible-web".into(),
            text: "In the beginning.".into(),
            title: None,
            doc: Some("bible/Genesis/1".into()),
        };
        assert_eq!(
            (r.family(), r.side(), r.unit()),
            ("bible", "en-web", "In the beginning.")
        );
    }
}
