//! `prepare`: corpus in → sharded Parquet concept store out.
//!
//! The document stream is deterministic, so shard `k` always holds input documents
//! `[k·shard_size, (k+1)·shard_size)`. That makes the job resumable without a journal: a re-run
//! with the same settings skips every shard that already exists (after checking its footer),
//! and because shards are written to a temporary name and renamed, a killed run leaves either
//! a whole shard or none — never a truncated or duplicated one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::DType;
use lcm_concept::ConceptEncoder;
use lcm_concept::segment::{SEGMENTER_VERSION, Segmenter, SegmenterConfig};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result, io_error};
use crate::reader::{Document, DocumentReader, ReadStats, ReaderOptions, input_files};
use crate::store::{ConceptDocument, StoreDType, StoreFile, StoreMeta, TOOL_VERSION, write_shard};

pub const STATE_FILE: &str = "_prepare.json";
const STATE_FORMAT: &str = "lcm-prepare-1";

#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    /// Input documents per shard.
    pub shard_size: usize,
    /// Stop after this many input documents.
    pub limit: Option<usize>,
    pub dtype: StoreDType,
    pub reader: ReaderOptions,
    pub segmenter: SegmenterConfig,
    /// Documents with more sentences are stored as several rows (`id#1`, `id#2`, …) so a
    /// single enormous document cannot make one row (and the writer's buffers) unbounded.
    pub max_sentences_per_row: usize,
    /// Sentences handed to the encoder per call: large enough to sort by length and keep
    /// both cores busy, small enough for a lively progress bar.
    pub encode_chunk: usize,
    /// Guess the language of documents without a language tag from their text
    /// ([`lcm_concept::lang::detect`]) instead of giving them `segmenter.lang`.
    pub detect_lang: bool,
}

impl PrepareOptions {
    pub fn new(inputs: Vec<PathBuf>, out: PathBuf) -> Self {
        Self {
            inputs,
            out,
            shard_size: 1000,
            limit: None,
            dtype: StoreDType::F32,
            reader: ReaderOptions::default(),
            segmenter: SegmenterConfig::default(),
            max_sentences_per_row: 4096,
            encode_chunk: 1024,
            detect_lang: false,
        }
    }
}

/// Callbacks for progress display; all methods have empty defaults.
pub trait PrepareProgress: Sync {
    fn start(&self, _estimated_documents: Option<u64>) {}
    fn sentences_encoded(&self, _sentences: u64) {}
    fn documents_done(&self, _documents: u64, _sentences: u64) {}
    fn shard_done(&self, _index: usize, _path: &Path, _resumed: bool) {}
}

pub struct NoProgress;
impl PrepareProgress for NoProgress {}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PrepareReport {
    pub documents: usize,
    pub rows: usize,
    pub sentences: usize,
    pub shards_written: usize,
    pub shards_resumed: usize,
    pub documents_without_sentences: usize,
    pub read: ReadStatsReport,
    pub seconds: f64,
    /// Documents segmented and encoded in each language (SONAR codes; `-` for none given).
    #[serde(default)]
    pub languages: BTreeMap<String, usize>,
    /// Documents whose language was guessed from their text (`detect_lang`).
    #[serde(default)]
    pub detected_languages: usize,
    /// Documents whose language tag no table knows (given the default language instead).
    #[serde(default)]
    pub unknown_language_tags: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReadStatsReport {
    pub invalid_utf8_lines: usize,
    pub invalid_json_lines: usize,
    pub missing_text: usize,
    pub empty_documents: usize,
    /// Absent from reports written before duplicate ids were counted.
    #[serde(default)]
    pub duplicate_ids: usize,
}

impl From<&ReadStats> for ReadStatsReport {
    fn from(s: &ReadStats) -> Self {
        Self {
            invalid_utf8_lines: s.invalid_utf8_lines,
            invalid_json_lines: s.invalid_json_lines,
            missing_text: s.missing_text,
            empty_documents: s.empty_documents,
            duplicate_ids: s.duplicate_ids,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct InputFingerprint {
    path: String,
    bytes: u64,
}

/// Everything that decides the content of the shards; a resumed run must match it exactly.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct PrepareSettings {
    format: String,
    store: StoreMeta,
    segmenter: SegmenterConfig,
    shard_size: usize,
    limit: Option<usize>,
    max_sentences_per_row: usize,
    text_field: String,
    id_field: String,
    #[serde(default = "default_lang_field")]
    lang_field: String,
    #[serde(default)]
    detect_lang: bool,
    inputs: Vec<InputFingerprint>,
}

/// The language field of settings written before documents could carry one.
fn default_lang_field() -> String {
    ReaderOptions::default().lang_field
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PrepareState {
    settings: PrepareSettings,
    complete: bool,
    report: Option<PrepareReport>,
}

fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| DataError::Invalid(format!("cannot serialise {}: {e}", path.display())))?;
    lcm_util::fs::write_atomic(path, text.as_bytes()).map_err(|e| io_error(&e.path)(e.source))
}

pub fn shard_path(out: &Path, index: usize) -> PathBuf {
    out.join(format!("shard-{index:05}.parquet"))
}

/// A cheap upper bound on the number of documents, for the progress bar's ETA.
fn estimate_documents(files: &[PathBuf]) -> Option<u64> {
    let mut total = 0u64;
    for file in files {
        match file.extension().and_then(|e| e.to_str()) {
            Some("parquet") => {
                let handle = std::fs::File::open(file).ok()?;
                let reader = parquet::file::reader::SerializedFileReader::new(handle).ok()?;
                use parquet::file::reader::FileReader;
                total += reader.metadata().file_metadata().num_rows() as u64;
            }
            Some("jsonl" | "ndjson" | "json") => {
                use std::io::Read;
                let mut handle = std::fs::File::open(file).ok()?;
                let mut buffer = vec![0u8; 1 << 20];
                loop {
                    let n = handle.read(&mut buffer).ok()?;
                    if n == 0 {
                        break;
                    }
                    total += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64;
                }
            }
            _ => total += 1,
        }
    }
    Some(total)
}

/// One stored row before encoding: id, source, sentences and the language they are in.
type Row = (String, String, Vec<String>, Option<String>);

/// The language each document is segmented and encoded in: its tag (as a SONAR code), else
/// with `detect` a guess from its text, else `default`. Counted into `report`.
fn document_languages(
    documents: &[Document],
    default: Option<&str>,
    detect: bool,
    report: &mut PrepareReport,
) -> Vec<Option<String>> {
    let default = default.map(|d| lcm_concept::lang::resolve(d).map_or(d, |code| code));
    documents
        .iter()
        .map(|d| {
            let tagged = d.lang.as_deref().and_then(|tag| {
                let code = lcm_concept::lang::resolve(tag).ok();
                if code.is_none() {
                    report.unknown_language_tags += 1;
                }
                code
            });
            let detected = if tagged.is_none() && detect {
                lcm_concept::lang::detect(&d.text)
            } else {
                None
            };
            report.detected_languages += usize::from(detected.is_some());
            let lang = tagged.or(detected).or(default).map(str::to_string);
            *report
                .languages
                .entry(lang.clone().unwrap_or_else(|| "-".into()))
                .or_default() += 1;
            lang
        })
        .collect()
}

/// Splits each document into sentences (in parallel, with the segmenter of its language)
/// and cuts over-long ones into rows.
fn segment_documents(
    config: &SegmenterConfig,
    documents: &[Document],
    languages: &[Option<String>],
    max_sentences_per_row: usize,
) -> Vec<Row> {
    let mut segmenters: HashMap<Option<String>, Segmenter> = HashMap::new();
    for lang in languages {
        segmenters.entry(lang.clone()).or_insert_with(|| {
            Segmenter::new(SegmenterConfig {
                lang: lang.clone(),
                ..config.clone()
            })
        });
    }
    let segmented: Vec<Vec<String>> = documents
        .par_iter()
        .zip(languages)
        .map(|(d, lang)| segmenters[lang].segment(&d.text))
        .collect();
    let mut rows = Vec::new();
    for ((document, sentences), lang) in documents.iter().zip(segmented).zip(languages) {
        if sentences.len() <= max_sentences_per_row {
            rows.push((
                document.id.clone(),
                document.source.clone(),
                sentences,
                lang.clone(),
            ));
        } else {
            for (part, chunk) in sentences.chunks(max_sentences_per_row).enumerate() {
                rows.push((
                    format!("{}#{}", document.id, part + 1),
                    document.source.clone(),
                    chunk.to_vec(),
                    lang.clone(),
                ));
            }
        }
    }
    rows
}

/// Encodes every row's sentences, in batches of one language each.
fn encode_rows(
    encoder: &dyn ConceptEncoder,
    rows: Vec<Row>,
    chunk: usize,
    progress: &dyn PrepareProgress,
) -> Result<Vec<ConceptDocument>> {
    let dim = encoder.dim();
    // Sentence order within each language; rows are put back together afterwards.
    let mut by_lang: BTreeMap<Option<&str>, Vec<(usize, &str)>> = BTreeMap::new();
    let mut index = 0usize;
    for (_, _, sentences, lang) in &rows {
        for s in sentences {
            by_lang
                .entry(lang.as_deref())
                .or_default()
                .push((index, s.as_str()));
            index += 1;
        }
    }
    let mut values: Vec<f32> = vec![0.0; index * dim];
    for (lang, sentences) in &by_lang {
        for batch in sentences.chunks(chunk.max(1)) {
            let texts: Vec<&str> = batch.iter().map(|(_, s)| *s).collect();
            let flat = encode_batch(encoder, &texts, *lang, dim)?;
            for ((i, _), row) in batch.iter().zip(flat.chunks_exact(dim)) {
                values[i * dim..(i + 1) * dim].copy_from_slice(row);
            }
            progress.sentences_encoded(batch.len() as u64);
        }
    }
    let mut offset = 0;
    Ok(rows
        .into_iter()
        .map(|(id, source, sentences, _)| {
            let end = offset + sentences.len() * dim;
            let embeddings = values[offset..end].to_vec();
            offset = end;
            ConceptDocument {
                id,
                source,
                sentences,
                embeddings,
            }
        })
        .collect())
}

/// The checked, flat f32 concepts of `batch` in `lang`.
fn encode_batch(
    encoder: &dyn ConceptEncoder,
    batch: &[&str],
    lang: Option<&str>,
    dim: usize,
) -> Result<Vec<f32>> {
    let embeddings = encoder.encode(batch, lang)?;
    let (n, d) = embeddings.dims2()?;
    if n != batch.len() || d != dim {
        return Err(DataError::Invalid(format!(
            "encoder `{}` returned [{n}, {d}] for {} sentences of dimension {dim}",
            encoder.id(),
            batch.len()
        )));
    }
    let flat = embeddings
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    if let Some(bad) = flat.iter().position(|v| !v.is_finite()) {
        return Err(DataError::Invalid(format!(
            "encoder `{}` produced a non-finite value for sentence {:?}; the model weights may be corrupt — re-fetch the model",
            encoder.id(),
            batch[bad / dim]
        )));
    }
    Ok(flat)
}

/// Runs the whole job. Re-running with the same settings resumes; different settings on an
/// existing output directory are refused rather than mixed.
pub fn prepare(
    encoder: &dyn ConceptEncoder,
    options: &PrepareOptions,
    progress: &dyn PrepareProgress,
) -> Result<PrepareReport> {
    let started = Instant::now();
    if options.shard_size == 0 || options.max_sentences_per_row == 0 {
        return Err(DataError::Invalid(
            "--shard-size and max sentences per row must be positive".into(),
        ));
    }
    let files = input_files(&options.inputs)?;
    let mut inputs = Vec::with_capacity(files.len());
    for file in &files {
        let bytes = std::fs::metadata(file).map_err(io_error(file))?.len();
        inputs.push(InputFingerprint {
            path: file.display().to_string(),
            bytes,
        });
    }
    let store = StoreMeta {
        encoder_id: encoder.id().to_string(),
        dim: encoder.dim(),
        dtype: options.dtype,
        segmenter_version: SEGMENTER_VERSION.to_string(),
        tool_version: TOOL_VERSION.to_string(),
    };
    let settings = PrepareSettings {
        format: STATE_FORMAT.into(),
        store: store.clone(),
        segmenter: options.segmenter.clone(),
        shard_size: options.shard_size,
        limit: options.limit,
        max_sentences_per_row: options.max_sentences_per_row,
        text_field: options.reader.text_field.clone(),
        id_field: options.reader.id_field.clone(),
        lang_field: options.reader.lang_field.clone(),
        detect_lang: options.detect_lang,
        inputs,
    };
    let out = &options.out;
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    let state_path = out.join(STATE_FILE);
    check_existing_output(out, &state_path, &settings)?;
    let mut reader = DocumentReader::open(&options.inputs, options.reader.clone())?;
    write_json_atomic(
        &state_path,
        &PrepareState {
            settings: settings.clone(),
            complete: false,
            report: None,
        },
    )?;

    let estimate = estimate_documents(&files).map(|n| match options.limit {
        Some(limit) => n.min(limit as u64),
        None => n,
    });
    progress.start(estimate);

    let mut report = PrepareReport::default();
    let lang = options.segmenter.lang.as_deref();
    let mut shard_index = 0usize;
    loop {
        let remaining = options
            .limit
            .map(|limit| limit.saturating_sub(report.documents));
        let take = remaining.map_or(options.shard_size, |r| r.min(options.shard_size));
        if take == 0 {
            break;
        }
        let documents = (&mut reader).take(take).collect::<Result<Vec<_>>>()?;
        if documents.is_empty() {
            break;
        }
        report.documents += documents.len();
        let path = shard_path(out, shard_index);
        if path.exists() {
            let existing = StoreFile::open(&path)?;
            store.check_same_space(&existing.meta, &path)?;
            report.rows += existing.documents;
            report.sentences += existing.sentences;
            report.shards_resumed += 1;
            progress.documents_done(documents.len() as u64, existing.sentences as u64);
            progress.shard_done(shard_index, &path, true);
        } else {
            let languages = document_languages(&documents, lang, options.detect_lang, &mut report);
            let rows = segment_documents(
                &options.segmenter,
                &documents,
                &languages,
                options.max_sentences_per_row,
            );
            let (rows, empty): (Vec<_>, Vec<_>) =
                rows.into_iter().partition(|(_, _, s, _)| !s.is_empty());
            report.documents_without_sentences += empty.len();
            let encoded = encode_rows(encoder, rows, options.encode_chunk, progress)?;
            let sentences: usize = encoded.iter().map(ConceptDocument::len).sum();
            write_shard(&path, &store, &encoded)?;
            report.rows += encoded.len();
            report.sentences += sentences;
            report.shards_written += 1;
            progress.documents_done(documents.len() as u64, sentences as u64);
            progress.shard_done(shard_index, &path, false);
        }
        shard_index += 1;
    }
    report.read = ReadStatsReport::from(&reader.stats);
    report.seconds = started.elapsed().as_secs_f64();
    write_json_atomic(
        &state_path,
        &PrepareState {
            settings,
            complete: true,
            report: Some(report.clone()),
        },
    )?;
    Ok(report)
}

/// Refuses an output directory that holds another job's shards.
fn check_existing_output(out: &Path, state_path: &Path, settings: &PrepareSettings) -> Result<()> {
    if state_path.exists() {
        let text = std::fs::read_to_string(state_path).map_err(io_error(state_path))?;
        let state: PrepareState = serde_json::from_str(&text).map_err(|e| {
            DataError::Invalid(format!(
                "{} is unreadable ({e}); it records an earlier `lcm prepare` — remove {} or choose another --out",
                state_path.display(),
                out.display()
            ))
        })?;
        if state.settings.store.encoder_id != settings.store.encoder_id
            || state.settings.store.dim != settings.store.dim
        {
            return Err(DataError::EncoderMismatch {
                path: out.to_path_buf(),
                expected: settings.store.encoder_id.clone(),
                expected_dim: settings.store.dim,
                found: state.settings.store.encoder_id,
                found_dim: state.settings.store.dim,
            });
        }
        // With no shard written yet there is nothing to mix: the new settings simply win.
        if state.settings != *settings && !crate::store::shard_paths(out)?.is_empty() {
            let mut left = serde_json::to_value(&state.settings).unwrap_or_default();
            let right = serde_json::to_value(settings).unwrap_or_default();
            let mut changed = Vec::new();
            if let (Some(l), Some(r)) = (left.as_object_mut(), right.as_object()) {
                for (key, value) in r {
                    if l.get(key) != Some(value) {
                        changed.push(key.clone());
                    }
                }
            }
            return Err(DataError::Invalid(format!(
                "{} holds shards of a `lcm prepare` run with different settings ({}); resume with the same settings, or write to a new --out",
                out.display(),
                changed.join(", ")
            )));
        }
        return Ok(());
    }
    // Shards without a state file: name the foreign space if there is one, refuse either way.
    if let Some(path) = crate::store::shard_paths(out)?.first() {
        let existing = StoreFile::open(path)?;
        settings.store.check_same_space(&existing.meta, path)?;
        return Err(DataError::Invalid(format!(
            "{} already holds Parquet shards not written by this job (no {STATE_FILE}); write to a new --out",
            out.display()
        )));
    }
    Ok(())
}
