//! Concept decoders of SONAR's decoder architecture trained for any sentence encoder (e.g.
//! MiniLM): a byte-level BPE tokenizer learnt on the training sentences, a
//! [`SonarDecoder`] whose cross-attention memory is the concept itself (length 1, model
//! dimension = the encoder's dimension, exactly as SONAR conditions on its 1024-d vectors),
//! trained with teacher forcing on the sentences of a concept store, and
//! [`TrainedDecoder`], the resulting [`ConceptDecoder`].
//!
//! Token layout (SONAR's): pad 0, unk 1, `<s>` 2, `</s>` 3. There is no language tag: the
//! decoder prompt is `[</s>]` ([`PROMPT`]), so a training sequence is
//! `[</s>, pieces…, </s>]`, fed as `[</s>, pieces…]` and predicting `[pieces…, </s>]`.
//! Sentences longer than `max_seq_len − 1` pieces are truncated for training (the decoder
//! then never learns to end them; the count is logged).
//!
//! A run folder holds:
//!
//! ```text
//! decoder.json        DecoderMeta: architecture, encoder id, tokenizer, split, step
//! tokenizer.json      the byte-level BPE (HF `tokenizers` format)
//! model.safetensors   the weights under fairseq2 key names (newest finished call)
//! metrics.jsonl       one line per optimiser step (valid_loss on validation steps)
//! loss.png            written by the caller (lcm-train's plot)
//! checkpoints/        lcm-train CheckpointManager (step-N/, latest): exact resume
//! ```
//!
//! The held-out split is the LCM trainer's: a document is held out when
//! [`split_of`]`(id, valid_fraction)` says so; every sentence of a held-out document is
//! removed from the training sentences (also where it occurs in a training document), so
//! round-trip evaluation never sees a sentence the decoder was trained on.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_concept::{ConceptDecoder, DecodeConfig, Decoded};
use lcm_data::batch::{Split, split_of};
use lcm_data::store::ConceptStore;
use lcm_train::checkpoint::TOOL_VERSION;
use lcm_train::{
    AdamW, AdamWConfig, CheckpointManager, DataPosition, LrSchedule, RngState, TrainRng,
    TrainState, default_decay_filter, new_rng,
};
use rand::Rng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, NormalizerWrapper, PostProcessorWrapper, TokenizerImpl};

use crate::error::{Result, SonarError};
use crate::generate::{BeamSearchConfig, best_hypotheses};
use crate::incremental::SpecialIds;
use crate::model::{DecoderConfig, SonarDecoder};

/// `decoder.json`.
pub const META_FILE: &str = "decoder.json";
/// The tokenizer inside a run folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Final weights inside a run folder.
pub const MODEL_FILE: &str = "model.safetensors";
/// Training log inside a run folder.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// Checkpoint folder inside a run folder.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// Format tag of `decoder.json`.
pub const FORMAT: &str = "lcm-trained-decoder-1";
/// Special tokens at ids 0..4, SONAR's layout.
pub const SPECIAL_TOKENS: [&str; 4] = ["<pad>", "<unk>", "<s>", "</s>"];
/// Decoder prompt: `</s>` alone (SONAR puts a language tag after it; an open encoder has none).
pub const PROMPT: [u32; 1] = [SpecialIds::SONAR.eos];
/// Mixed into the seed for the per-epoch batch plan (never shared with other draws).
const PLAN_SALT: u64 = 0x0dec_0de5_0000_0001;
/// ChaCha stream of the weight initialisation.
const INIT_STREAM: u64 = 1;

fn tok_err(e: impl std::fmt::Display) -> SonarError {
    SonarError::Tokenizer(e.to_string())
}

fn config_err(message: impl Into<String>) -> SonarError {
    SonarError::Input(message.into())
}

fn train_err(e: lcm_train::TrainError) -> SonarError {
    SonarError::Generation(format!("training: {e}"))
}

/// Writes `bytes` to `path` through `path.tmp`, fsynced, then renamed.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    {
        let mut f = fs::File::create(&tmp).map_err(|e| SonarError::file(&tmp, e.to_string()))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| SonarError::file(&tmp, e.to_string()))?;
    }
    fs::rename(&tmp, path).map_err(|e| SonarError::file(path, e.to_string()))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

// ---------------------------------------------------------------------------------------
// Tokenizer

/// Byte-level BPE with SONAR's special-token ids. Any text round-trips: every byte is in
/// the base alphabet, and no normaliser or prefix space alters it.
pub struct DecoderTokenizer {
    inner: tokenizers::Tokenizer,
}

impl DecoderTokenizer {
    /// Learns a byte-level BPE of at most `vocab_size` tokens (specials included) on
    /// `sentences`.
    pub fn train<S: AsRef<str> + Send + Sync>(sentences: &[S], vocab_size: usize) -> Result<Self> {
        let base = ByteLevel::alphabet().len() + SPECIAL_TOKENS.len();
        if vocab_size < base {
            return Err(config_err(format!(
                "vocabulary size {vocab_size} is below the {base} tokens of the byte alphabet \
                 and specials; pass a larger --vocab"
            )));
        }
        if sentences.is_empty() {
            return Err(config_err("no sentences to train the tokenizer on"));
        }
        let mut tk: TokenizerImpl<
            BPE,
            NormalizerWrapper,
            ByteLevel,
            PostProcessorWrapper,
            ByteLevel,
        > = TokenizerImpl::new(BPE::default());
        tk.with_pre_tokenizer(Some(ByteLevel::new(false, false, true)));
        tk.with_decoder(Some(ByteLevel::new(false, false, true)));
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(
                SPECIAL_TOKENS
                    .iter()
                    .map(|t| AddedToken::from(*t, true))
                    .collect(),
            )
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        tk.train(&mut trainer, sentences.iter().map(|s| s.as_ref()))
            .map_err(tok_err)?;
        // The trainer also registers the specials as *added* tokens, which would turn a
        // literal "</s>" in a sentence into the special id; they stay plain vocabulary
        // entries (ids 0..4) only, so every text round-trips.
        let json = tokenizers::Tokenizer::from(tk)
            .to_string(false)
            .map_err(tok_err)?;
        let mut value: serde_json::Value = serde_json::from_str(&json).map_err(tok_err)?;
        value["added_tokens"] = serde_json::Value::Array(Vec::new());
        let inner: tokenizers::Tokenizer = value.to_string().parse().map_err(tok_err)?;
        let tokenizer = Self { inner };
        tokenizer.check_specials(Path::new("<trained>"))?;
        Ok(tokenizer)
    }

    /// Opens a `tokenizer.json` written by [`Self::save`].
    pub fn open(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| SonarError::file(path, format!("not a tokenizer: {e}")))?;
        let tokenizer = Self { inner };
        tokenizer.check_specials(path)?;
        Ok(tokenizer)
    }

    fn check_specials(&self, path: &Path) -> Result<()> {
        for (id, token) in SPECIAL_TOKENS.iter().enumerate() {
            if self.inner.token_to_id(token) != Some(id as u32) {
                return Err(SonarError::file(
                    path,
                    format!("special token {token} is not id {id} (SONAR's layout)"),
                ));
            }
        }
        Ok(())
    }

    /// Writes the tokenizer atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self.inner.to_string(false).map_err(tok_err)?;
        write_atomic(path, json.as_bytes())
    }

    /// Size of the vocabulary (specials included).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token pieces of `text` (no specials).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    /// Text of `ids`; special tokens (ids below 4) are dropped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let pieces: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| id as usize >= SPECIAL_TOKENS.len())
            .collect();
        self.inner.decode(&pieces, false).map_err(tok_err)
    }
}

// ---------------------------------------------------------------------------------------
// Data

/// Sentences of a store with their vectors, split like the LCM trainer's held-out split.
pub struct SentenceSplit {
    pub encoder_id: String,
    pub dim: usize,
    /// Distinct training sentences (none of them occurs in a held-out document).
    pub train_texts: Vec<String>,
    /// `train_texts.len() × dim`.
    pub train_vectors: Vec<f32>,
    /// Distinct sentences of held-out documents, in store order.
    pub valid_texts: Vec<String>,
    pub valid_vectors: Vec<f32>,
    /// Sentences dropped: empty, or a repeat of one already kept.
    pub skipped_empty: usize,
    pub duplicates: usize,
    /// Training-document sentences dropped because a held-out document has them.
    pub removed_held_out: usize,
}

impl SentenceSplit {
    /// Reads every sentence of the store at `store_path` into memory.
    pub fn load(store_path: &Path, valid_fraction: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&valid_fraction) {
            return Err(config_err(format!(
                "the validation fraction must be in [0, 1), got {valid_fraction}"
            )));
        }
        let store = ConceptStore::open(store_path)
            .map_err(|e| SonarError::file(store_path, format!("cannot open the store: {e}")))?;
        let dim = store.meta.dim;
        let mut train: Vec<(String, Vec<f32>)> = Vec::new();
        let mut split = Self {
            encoder_id: store.meta.encoder_id.clone(),
            dim,
            train_texts: Vec::new(),
            train_vectors: Vec::new(),
            valid_texts: Vec::new(),
            valid_vectors: Vec::new(),
            skipped_empty: 0,
            duplicates: 0,
            removed_held_out: 0,
        };
        let mut seen_valid: HashSet<String> = HashSet::new();
        let mut seen_train: HashSet<String> = HashSet::new();
        for document in store.documents() {
            let document =
                document.map_err(|e| SonarError::file(store_path, format!("reading: {e}")))?;
            if document.embeddings.len() != document.sentences.len() * dim {
                return Err(SonarError::file(
                    store_path,
                    format!(
                        "document `{}` has {} sentences but {} vector values (dim {dim})",
                        document.id,
                        document.sentences.len(),
                        document.embeddings.len()
                    ),
                ));
            }
            let held_out = split_of(&document.id, valid_fraction) == Split::Valid;
            for (sentence, vector) in document
                .sentences
                .iter()
                .zip(document.embeddings.chunks_exact(dim))
            {
                if sentence.trim().is_empty() {
                    split.skipped_empty += 1;
                    continue;
                }
                if vector.iter().any(|v| !v.is_finite()) {
                    return Err(SonarError::file(
                        store_path,
                        format!(
                            "document `{}`: sentence {sentence:?} has a non-finite vector; \
                             re-run `lcm prepare` on that document",
                            document.id
                        ),
                    ));
                }
                let (seen, kept_texts) = if held_out {
                    (&mut seen_valid, None)
                } else {
                    (&mut seen_train, Some(()))
                };
                if !seen.insert(sentence.clone()) {
                    split.duplicates += 1;
                    continue;
                }
                match kept_texts {
                    None => {
                        split.valid_texts.push(sentence.clone());
                        split.valid_vectors.extend_from_slice(vector);
                    }
                    Some(()) => train.push((sentence.clone(), vector.to_vec())),
                }
            }
        }
        for (text, vector) in train {
            if seen_valid.contains(&text) {
                split.removed_held_out += 1;
                continue;
            }
            split.train_texts.push(text);
            split.train_vectors.extend_from_slice(&vector);
        }
        Ok(split)
    }

    /// Vector `i` of the held-out sentences.
    pub fn valid_vector(&self, i: usize) -> &[f32] {
        &self.valid_vectors[i * self.dim..(i + 1) * self.dim]
    }
}

/// Token pieces of each sentence, truncated to `max_pieces`, tokenised in parallel.
/// Returns the pieces and the number of truncated sentences.
fn tokenize_all(
    tokenizer: &DecoderTokenizer,
    texts: &[String],
    max_pieces: usize,
) -> Result<(Vec<Vec<u32>>, usize)> {
    let mut pieces: Vec<Vec<u32>> = texts
        .par_iter()
        .map(|t| tokenizer.encode(t))
        .collect::<Result<_>>()?;
    let mut truncated = 0;
    for p in &mut pieces {
        if p.len() > max_pieces {
            p.truncate(max_pieces);
            truncated += 1;
        }
    }
    Ok((pieces, truncated))
}

// ---------------------------------------------------------------------------------------
// Configuration and metadata

/// Hyper-parameters of [`train_decoder`]. Everything except the time budget, the logging
/// cadence and the stopping point must match on resume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecoderTrainConfig {
    pub layers: usize,
    /// Model dimension; `None`: the encoder's dimension (the concept is the memory as is).
    pub dim: Option<usize>,
    pub heads: usize,
    pub ffn: usize,
    /// BPE vocabulary size (specials included).
    pub vocab_size: usize,
    /// Longest token sequence (prompt + pieces); longer sentences are truncated.
    pub max_seq_len: usize,
    /// Sentences per batch.
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    /// Final learning rate as a fraction of `lr`.
    pub final_lr_scale: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip.
    pub clip: f64,
    pub label_smoothing: f64,
    /// Total optimiser steps (the cosine schedule spans them).
    pub steps: u64,
    pub seed: u64,
    /// Documents held out (by id hash, as `lcm train`).
    pub valid_fraction: f64,
    /// Held-out sentences scored by the periodic validation loss.
    pub valid_sentences: usize,
    /// Validation every N steps (0: only at the end).
    #[serde(skip)]
    pub eval_every: u64,
    /// Checkpoint every N steps (0: only at the end).
    #[serde(skip)]
    pub checkpoint_every: u64,
    #[serde(skip)]
    pub keep_last: usize,
    /// Wall-clock budget in seconds (the step that spends it is validated and checkpointed).
    #[serde(skip)]
    pub max_seconds: Option<f64>,
    /// Stop after this step (with a checkpoint) although the schedule spans `steps`.
    #[serde(skip)]
    pub stop_at: Option<u64>,
}

impl Default for DecoderTrainConfig {
    fn default() -> Self {
        Self {
            layers: 4,
            dim: None,
            heads: 6,
            ffn: 1536,
            vocab_size: 8192,
            max_seq_len: 128,
            batch_size: 64,
            lr: 1e-3,
            warmup_steps: 200,
            final_lr_scale: 0.05,
            weight_decay: 0.01,
            clip: 1.0,
            label_smoothing: 0.1,
            steps: 2000,
            seed: 0,
            valid_fraction: 0.01,
            valid_sentences: 512,
            eval_every: 100,
            checkpoint_every: 200,
            keep_last: 2,
            max_seconds: None,
            stop_at: None,
        }
    }
}

impl DecoderTrainConfig {
    fn validate(&self) -> Result<()> {
        let positive = [
            ("layers", self.layers),
            ("heads", self.heads),
            ("ffn", self.ffn),
            ("batch size", self.batch_size),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(config_err(format!("{name} must be at least 1")));
            }
        }
        if self.steps == 0 {
            return Err(config_err("steps must be at least 1"));
        }
        if self.max_seq_len < 2 {
            return Err(config_err("max_seq_len must be at least 2 (prompt + </s>)"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(config_err(format!("lr must be positive, got {}", self.lr)));
        }
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return Err(config_err(format!(
                "clip must be positive, got {}",
                self.clip
            )));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(config_err(format!(
                "label smoothing must be in [0, 1), got {}",
                self.label_smoothing
            )));
        }
        if let Some(s) = self.max_seconds
            && !(s.is_finite() && s > 0.0)
        {
            return Err(config_err(format!(
                "the time budget must be positive, got {s}"
            )));
        }
        Ok(())
    }

    fn schedule(&self) -> Result<LrSchedule> {
        let s = LrSchedule::Cosine {
            lr: self.lr,
            start_lr: 0.0,
            warmup_steps: self.warmup_steps.min(self.steps - 1),
            max_steps: self.steps,
            final_lr_scale: self.final_lr_scale,
        };
        s.validate().map_err(train_err)?;
        Ok(s)
    }
}

/// `decoder.json`: what [`TrainedDecoder::open`] needs besides the weights and tokenizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecoderMeta {
    pub format: String,
    /// Content id of the encoder whose space the decoder reads.
    pub encoder_id: String,
    /// Dimension of the concepts.
    pub dim: usize,
    pub config: DecoderConfig,
    /// Token ids fed before the first generated piece.
    pub prompt: Vec<u32>,
    pub tokenizer: TokenizerInfo,
    /// Held-out split used for training (eval-decoder evaluates on the same).
    pub valid_fraction: f64,
    /// Store trained on (for humans).
    pub store: String,
    /// Optimiser step of `model.safetensors`.
    pub step: u64,
    pub train_sentences: usize,
    pub train: DecoderTrainConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenizerInfo {
    pub file: String,
    pub kind: String,
    pub vocab_size: usize,
    pub special_tokens: Vec<String>,
}

impl DecoderMeta {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(META_FILE);
        let bytes = fs::read(&path).map_err(|e| {
            SonarError::file(
                &path,
                format!("{e}; is this a `lcm train-decoder --out` folder?"),
            )
        })?;
        let meta: Self = serde_json::from_slice(&bytes)
            .map_err(|e| SonarError::file(&path, format!("invalid decoder metadata: {e}")))?;
        if meta.format != FORMAT {
            return Err(SonarError::file(
                &path,
                format!("format `{}`, expected `{FORMAT}`", meta.format),
            ));
        }
        Ok(meta)
    }

    fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| config_err(format!("serialising decoder metadata: {e}")))?;
        write_atomic(&dir.join(META_FILE), &json)
    }
}

// ---------------------------------------------------------------------------------------
// Training

/// One optimiser step, as written to `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecoderStepMetrics {
    pub step: u64,
    /// Training objective (label-smoothed cross-entropy per target token).
    pub loss: f64,
    /// Cross-entropy without smoothing on the batch.
    pub nll: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Target tokens in the batch.
    pub tokens: usize,
    pub tokens_per_s: f64,
    pub seconds: f64,
    /// Mean held-out cross-entropy per token (no smoothing), on validation steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_loss: Option<f64>,
}

/// What one call of [`train_decoder`] did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecoderTrainSummary {
    pub start_step: u64,
    pub final_step: u64,
    pub last_loss: Option<f64>,
    pub last_valid_loss: Option<f64>,
    pub tokens: u64,
    pub seconds: f64,
    pub train_seconds: f64,
    pub num_parameters: usize,
    pub train_sentences: usize,
    pub valid_sentences: usize,
    pub truncated: usize,
    pub vocab_size: usize,
    pub model: PathBuf,
}

/// Events [`train_decoder`] reports besides steps.
pub enum TrainEvent<'a> {
    /// A phase of preparation began (loading, tokenizer, tokenising).
    Phase(&'a str),
    /// Training starts at `start` of `total` steps.
    Start {
        start: u64,
        total: u64,
    },
    Step(&'a DecoderStepMetrics),
}

/// The model config for `config` and the concepts' dimension.
fn model_config(config: &DecoderTrainConfig, dim: usize, vocab: usize) -> Result<DecoderConfig> {
    let model_dim = config.dim.unwrap_or(dim);
    if model_dim != dim {
        return Err(config_err(format!(
            "the model dimension ({model_dim}) must equal the encoder's ({dim}): the concept \
             is the decoder's cross-attention memory as is"
        )));
    }
    if !model_dim.is_multiple_of(config.heads) {
        return Err(config_err(format!(
            "the model dimension {model_dim} is not divisible by {} heads",
            config.heads
        )));
    }
    Ok(DecoderConfig {
        vocab_size: vocab,
        model_dim,
        num_layers: config.layers,
        num_heads: config.heads,
        ffn_inner_dim: config.ffn,
        max_seq_len: config.max_seq_len,
        pad_idx: SpecialIds::SONAR.pad as usize,
    })
}

/// A batch: conditioning `[N, D]`, decoder input `[N, T]` and target `[N, T]` (u32, pad 0).
struct TokenBatch {
    conditioning: Tensor,
    input: Tensor,
    target: Vec<u32>,
    tokens: usize,
}

fn make_batch(
    rows: &[usize],
    pieces: &[Vec<u32>],
    vectors: &[f32],
    dim: usize,
    device: &Device,
) -> Result<TokenBatch> {
    let special = SpecialIds::SONAR;
    let t = rows
        .iter()
        .map(|&r| pieces[r].len() + PROMPT.len())
        .max()
        .unwrap_or(1);
    let n = rows.len();
    let mut input = vec![special.pad; n * t];
    let mut target = vec![special.pad; n * t];
    let mut cond = Vec::with_capacity(n * dim);
    let mut tokens = 0;
    for (i, &r) in rows.iter().enumerate() {
        // sequence = [prompt.., pieces.., </s>]; input = seq[..-1], target = seq[1..]
        let mut seq: Vec<u32> = PROMPT.to_vec();
        seq.extend_from_slice(&pieces[r]);
        seq.push(special.eos);
        let len = seq.len() - 1;
        input[i * t..i * t + len].copy_from_slice(&seq[..len]);
        // Targets of prompt positions beyond the first are not scored (PROMPT has one).
        target[i * t..i * t + len].copy_from_slice(&seq[1..]);
        for p in target[i * t..i * t + PROMPT.len() - 1].iter_mut() {
            *p = special.pad;
        }
        tokens += len + 1 - PROMPT.len();
        cond.extend_from_slice(&vectors[r * dim..(r + 1) * dim]);
    }
    Ok(TokenBatch {
        conditioning: Tensor::from_vec(cond, (n, dim), device)?,
        input: Tensor::from_vec(input, (n, t), device)?,
        target,
        tokens,
    })
}

/// Label-smoothed cross-entropy over the non-pad targets: returns the mean objective
/// (differentiable) and the summed unsmoothed NLL with its token count.
fn token_loss(
    logits: &Tensor,
    target: &[u32],
    pad: u32,
    smoothing: f64,
) -> Result<(Tensor, f64, usize)> {
    let (n, t, v) = logits.dims3()?;
    if target.len() != n * t {
        return Err(SonarError::Generation(format!(
            "logits {n}×{t} do not match {} targets",
            target.len()
        )));
    }
    let (keep, gold): (Vec<u32>, Vec<u32>) = target
        .iter()
        .enumerate()
        .filter(|&(_, &g)| g != pad)
        .map(|(i, &g)| (i as u32, g))
        .unzip();
    if keep.is_empty() {
        return Err(SonarError::Generation(
            "a batch without target tokens".into(),
        ));
    }
    let count = keep.len();
    let device = logits.device();
    let rows = logits
        .reshape((n * t, v))?
        .index_select(&Tensor::new(keep, device)?, 0)?
        .to_dtype(DType::F32)?;
    let lsm = candle_nn::ops::log_softmax(&rows, D::Minus1)?;
    let nll = lsm
        .gather(&Tensor::new(gold, device)?.unsqueeze(1)?, 1)?
        .squeeze(1)?
        .neg()?;
    let objective = if smoothing > 0.0 {
        let smooth = lsm.mean(1)?.neg()?;
        ((&nll * (1.0 - smoothing))? + (smooth * smoothing)?)?
    } else {
        nll.clone()
    };
    let nll_sum = nll.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Ok((objective.mean_all()?, nll_sum, count))
}

/// Batches of epoch `epoch`: a seeded shuffle, length-sorted within windows of 50 batches
/// (little padding), then a shuffle of the batches. A function of `(seed, epoch)` alone.
fn epoch_plan(lengths: &[usize], batch_size: usize, seed: u64, epoch: u64) -> Vec<Vec<usize>> {
    let mut rng = new_rng(seed ^ PLAN_SALT);
    rng.set_stream(epoch);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for window in order.chunks(batch_size * 50) {
        let mut window = window.to_vec();
        window.sort_by_key(|&i| (lengths[i], i));
        batches.extend(window.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

/// Mean unsmoothed cross-entropy per token over the held-out examples.
fn validation_loss(
    model: &SonarDecoder,
    pieces: &[Vec<u32>],
    vectors: &[f32],
    dim: usize,
    batch_size: usize,
    device: &Device,
) -> Result<Option<f64>> {
    let (mut sum, mut count) = (0.0, 0usize);
    let rows: Vec<usize> = (0..pieces.len()).collect();
    for chunk in rows.chunks(batch_size) {
        let batch = make_batch(chunk, pieces, vectors, dim, device)?;
        let logits = model.forward_train(&batch.conditioning, &batch.input)?;
        let (_, nll, n) = token_loss(&logits.detach(), &batch.target, SpecialIds::SONAR.pad, 0.0)?;
        sum += nll;
        count += n;
    }
    Ok((count > 0).then(|| sum / count as f64))
}

/// Seeded initialisation (the var builder creates every variable as zeros): matrices and
/// the embedding `N(0, 1/fan_in)` (fan_in = second dimension; the embedding gets
/// fairseq2's `model_dim^-0.5`), layer-norm gains 1, biases 0. Variables in name order, on
/// their own ChaCha stream.
fn init_weights(varmap: &VarMap, seed: u64) -> Result<()> {
    let mut rng = new_rng(seed);
    rng.set_stream(INIT_STREAM);
    let mut named: Vec<_> = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| config_err("variable map lock poisoned"))?;
        data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    named.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, var) in named {
        let dims = var.dims().to_vec();
        let fresh = match dims.as_slice() {
            [rows, fan_in] => {
                let std = 1.0 / (*fan_in as f64).sqrt();
                let values: Vec<f32> = (0..rows * fan_in)
                    .map(|_| (standard_normal(&mut rng) * std) as f32)
                    .collect();
                Tensor::from_vec(values, (*rows, *fan_in), var.device())?
            }
            [n] if name.ends_with("weight") => Tensor::ones(*n, DType::F32, var.device())?,
            _ => continue,
        };
        var.set(&fresh.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// One standard normal draw (Box–Muller).
fn standard_normal(rng: &mut TrainRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn save_weights(varmap: &VarMap, path: &Path) -> Result<()> {
    let tmp = tmp_path(path);
    varmap
        .save(&tmp)
        .map_err(|e| SonarError::file(&tmp, format!("writing weights: {e}")))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| SonarError::file(&tmp, e.to_string()))?;
    fs::rename(&tmp, path).map_err(|e| SonarError::file(path, e.to_string()))
}

/// Trains (or with `resume`, continues) a decoder on the sentences of the store at
/// `store_path` into `out_dir`. `progress` sees the phases and every step.
pub fn train_decoder(
    config: &DecoderTrainConfig,
    store_path: &Path,
    out_dir: &Path,
    resume: bool,
    progress: &mut dyn FnMut(TrainEvent<'_>),
) -> Result<DecoderTrainSummary> {
    let started = Instant::now();
    config.validate()?;
    let device = Device::Cpu;
    let special = SpecialIds::SONAR;

    progress(TrainEvent::Phase("reading the store"));
    let data = SentenceSplit::load(store_path, config.valid_fraction)?;
    if data.train_texts.is_empty() {
        return Err(SonarError::file(
            store_path,
            "no training sentences (all empty or held out); use a larger store or a smaller \
             --valid-fraction",
        ));
    }
    tracing::info!(
        train = data.train_texts.len(),
        held_out = data.valid_texts.len(),
        duplicates = data.duplicates,
        removed_held_out = data.removed_held_out,
        empty = data.skipped_empty,
        "sentences loaded"
    );
    fs::create_dir_all(out_dir).map_err(|e| SonarError::file(out_dir, e.to_string()))?;
    let ckpt = CheckpointManager::new(out_dir.join(CHECKPOINT_DIR), config.keep_last);
    let has_checkpoints = !ckpt.steps().map_err(train_err)?.is_empty();
    let tokenizer_path = out_dir.join(TOKENIZER_FILE);
    let tokenizer = if resume {
        if !has_checkpoints {
            return Err(SonarError::file(
                ckpt.dir(),
                "nothing to resume: no checkpoint; run without --resume",
            ));
        }
        DecoderTokenizer::open(&tokenizer_path)?
    } else {
        if has_checkpoints {
            return Err(SonarError::file(
                ckpt.dir(),
                "already holds checkpoints; pass --resume or choose another output folder",
            ));
        }
        progress(TrainEvent::Phase("training the tokenizer"));
        let t = DecoderTokenizer::train(&data.train_texts, config.vocab_size)?;
        t.save(&tokenizer_path)?;
        t
    };
    let vocab = tokenizer.vocab_size();
    let model_cfg = model_config(config, data.dim, vocab)?;

    progress(TrainEvent::Phase("tokenising"));
    let max_pieces = config.max_seq_len - PROMPT.len();
    let (train_pieces, truncated) = tokenize_all(&tokenizer, &data.train_texts, max_pieces)?;
    let n_valid = data.valid_texts.len().min(config.valid_sentences);
    let (valid_pieces, _) = tokenize_all(&tokenizer, &data.valid_texts[..n_valid], max_pieces)?;
    if truncated > 0 {
        tracing::warn!(
            truncated,
            max_seq_len = config.max_seq_len,
            "training sentences longer than max_seq_len were truncated"
        );
    }
    let lengths: Vec<usize> = train_pieces.iter().map(Vec::len).collect();

    let varmap = VarMap::new();
    let model = SonarDecoder::new(
        &model_cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )?;
    init_weights(&varmap, config.seed)?;
    let num_parameters: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    let mut opt = AdamW::from_varmap(
        &varmap,
        AdamWConfig {
            lr: config.lr,
            weight_decay: config.weight_decay,
            ..AdamWConfig::default()
        },
        default_decay_filter,
    )
    .map_err(train_err)?;
    let schedule = config.schedule()?;
    let model_json = serde_json::to_value(&model_cfg)
        .map_err(|e| config_err(format!("serialising the model config: {e}")))?;
    let settings = serde_json::json!({ "train_config": config, "vocab_size": vocab });

    let metrics_path = out_dir.join(METRICS_FILE);
    let mut rng: TrainRng = new_rng(config.seed);
    let mut position = DataPosition::default();
    let mut step = 0u64;
    if resume {
        let state = ckpt
            .load_latest(&varmap, Some(&mut opt), &data.encoder_id)
            .map_err(train_err)?
            .ok_or_else(|| SonarError::file(ckpt.dir(), "nothing to resume"))?;
        if state.model_config != model_json {
            return Err(config_err(format!(
                "the checkpoint's model ({}) differs from the requested one ({model_json}); \
                 resume with the original settings",
                state.model_config
            )));
        }
        if state.extra != settings {
            return Err(config_err(format!(
                "the checkpoint was trained with other settings ({}), not ({settings}); \
                 resume with the original settings",
                state.extra
            )));
        }
        rng = state.rng.restore().map_err(train_err)?;
        position = state.data;
        step = state.step;
        lcm_train::trainer::truncate_metrics(&metrics_path, step).map_err(train_err)?;
    } else {
        write_atomic(&metrics_path, b"")?;
    }
    let start_step = step;
    let mut meta = DecoderMeta {
        format: FORMAT.to_string(),
        encoder_id: data.encoder_id.clone(),
        dim: data.dim,
        config: model_cfg.clone(),
        prompt: PROMPT.to_vec(),
        tokenizer: TokenizerInfo {
            file: TOKENIZER_FILE.to_string(),
            kind: "byte-level BPE".to_string(),
            vocab_size: vocab,
            special_tokens: SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect(),
        },
        valid_fraction: config.valid_fraction,
        store: store_path.display().to_string(),
        step,
        train_sentences: data.train_texts.len(),
        train: config.clone(),
    };
    let mut metrics_file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&metrics_path)
        .map_err(|e| SonarError::file(&metrics_path, e.to_string()))?;
    let save = |step: u64, position: DataPosition, rng: &TrainRng, opt: &AdamW| {
        let state = TrainState {
            step,
            rng: RngState::capture(rng),
            data: position,
            encoder_id: data.encoder_id.clone(),
            normalizer: None,
            tool_version: TOOL_VERSION.to_string(),
            model_config: model_json.clone(),
            extra: settings.clone(),
        };
        ckpt.save(&varmap, opt, &state).map_err(train_err)
    };

    let last_step = config.stop_at.unwrap_or(config.steps).min(config.steps);
    progress(TrainEvent::Start {
        start: step,
        total: last_step,
    });
    let train_started = Instant::now();
    let (mut last_loss, mut last_valid_loss, mut tokens_total) = (None, None, 0u64);
    let mut plan = epoch_plan(&lengths, config.batch_size, config.seed, position.epoch);
    while step < last_step {
        if position.batch_index as usize >= plan.len() {
            position = DataPosition {
                epoch: position.epoch + 1,
                batch_index: 0,
            };
            plan = epoch_plan(&lengths, config.batch_size, config.seed, position.epoch);
        }
        let t0 = Instant::now();
        let rows = &plan[position.batch_index as usize];
        position.batch_index += 1;
        let batch = make_batch(rows, &train_pieces, &data.train_vectors, data.dim, &device)?;
        let logits = model.forward_train(&batch.conditioning, &batch.input)?;
        let (loss, nll_sum, count) =
            token_loss(&logits, &batch.target, special.pad, config.label_smoothing)?;
        let loss_value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !loss_value.is_finite() {
            return Err(SonarError::Generation(format!(
                "non-finite loss {loss_value} at step {}; lower --lr",
                step + 1
            )));
        }
        let t_forward = t0.elapsed().as_secs_f64();
        let mut grads = loss.backward()?;
        let t_backward = t0.elapsed().as_secs_f64();
        let grad_norm = opt
            .clip_grad_norm(&mut grads, config.clip)
            .map_err(train_err)?;
        let lr = schedule.lr_at(step);
        opt.set_lr(lr);
        opt.step(&grads).map_err(train_err)?;
        drop(grads);
        tracing::debug!(
            step = step + 1,
            forward_s = t_forward,
            backward_s = t_backward - t_forward,
            optimizer_s = t0.elapsed().as_secs_f64() - t_backward,
            "step timing"
        );
        step += 1;
        tokens_total += batch.tokens as u64;
        let elapsed = t0.elapsed().as_secs_f64().max(1e-9);

        let out_of_time = config
            .max_seconds
            .is_some_and(|limit| started.elapsed().as_secs_f64() >= limit);
        let final_step = step == last_step || out_of_time;
        let eval_now =
            final_step || (config.eval_every > 0 && step.is_multiple_of(config.eval_every));
        let valid_loss = if eval_now && !valid_pieces.is_empty() {
            validation_loss(
                &model,
                &valid_pieces,
                &data.valid_vectors,
                data.dim,
                config.batch_size,
                &device,
            )?
        } else {
            None
        };
        if valid_loss.is_some() {
            last_valid_loss = valid_loss;
        }
        last_loss = Some(loss_value);
        let metrics = DecoderStepMetrics {
            step,
            loss: loss_value,
            nll: nll_sum / count as f64,
            lr,
            grad_norm,
            tokens: batch.tokens,
            tokens_per_s: batch.tokens as f64 / elapsed,
            seconds: elapsed,
            valid_loss,
        };
        let line = serde_json::to_string(&metrics)
            .map_err(|e| config_err(format!("serialising metrics: {e}")))?;
        writeln!(metrics_file, "{line}")
            .and_then(|_| metrics_file.flush())
            .map_err(|e| SonarError::file(&metrics_path, e.to_string()))?;
        progress(TrainEvent::Step(&metrics));
        if final_step
            || (config.checkpoint_every > 0 && step.is_multiple_of(config.checkpoint_every))
        {
            save(step, position, &rng, &opt)?;
        }
        if out_of_time {
            tracing::info!(step, "time budget spent; stopped with a checkpoint");
            break;
        }
    }

    let model_path = out_dir.join(MODEL_FILE);
    if step > start_step || !model_path.exists() {
        save_weights(&varmap, &model_path)?;
    }
    meta.step = step;
    meta.write(out_dir)?;
    Ok(DecoderTrainSummary {
        start_step,
        final_step: step,
        last_loss,
        last_valid_loss,
        tokens: tokens_total,
        seconds: started.elapsed().as_secs_f64(),
        train_seconds: train_started.elapsed().as_secs_f64(),
        num_parameters,
        train_sentences: data.train_texts.len(),
        valid_sentences: n_valid,
        truncated,
        vocab_size: vocab,
        model: model_path,
    })
}

// ---------------------------------------------------------------------------------------
// Inference

/// Rows decoded per search call.
const DECODE_CHUNK: usize = 32;

/// A decoder trained by [`train_decoder`], as a [`ConceptDecoder`]: beam search when
/// `temperature == 0` (`beam_size` beams), sampling otherwise.
pub struct TrainedDecoder {
    meta: DecoderMeta,
    tokenizer: DecoderTokenizer,
    model: SonarDecoder,
    root: PathBuf,
}

impl TrainedDecoder {
    /// Opens a run folder (`decoder.json`, `tokenizer.json`, `model.safetensors`). The
    /// weights are plain tensors: decoding records no backward graph.
    pub fn open(dir: &Path) -> Result<Self> {
        let meta = DecoderMeta::read(dir)?;
        let tokenizer = DecoderTokenizer::open(&dir.join(&meta.tokenizer.file))?;
        if tokenizer.vocab_size() != meta.config.vocab_size {
            return Err(SonarError::file(
                dir.join(&meta.tokenizer.file),
                format!(
                    "has {} tokens but the decoder expects {}",
                    tokenizer.vocab_size(),
                    meta.config.vocab_size
                ),
            ));
        }
        let path = dir.join(MODEL_FILE);
        if !path.exists() {
            return Err(SonarError::file(
                &path,
                "missing; training has not finished a call yet (run `lcm train-decoder \
                 --resume` to write it)",
            ));
        }
        let device = Device::Cpu;
        let tensors = candle_core::safetensors::load(&path, &device)
            .map_err(|e| SonarError::file(&path, format!("cannot read weights: {e}")))?;
        let model = SonarDecoder::new(
            &meta.config,
            VarBuilder::from_tensors(tensors, DType::F32, &device),
        )
        .map_err(|e| SonarError::file(&path, format!("weights do not fit the config: {e}")))?;
        Ok(Self {
            meta,
            tokenizer,
            model,
            root: dir.to_path_buf(),
        })
    }

    /// Opens `dir` and refuses a decoder of another embedding space than `encoder_id`.
    pub fn open_expecting(dir: &Path, encoder_id: &str, dim: usize) -> Result<Self> {
        let decoder = Self::open(dir)?;
        decoder.check_space(encoder_id, dim)?;
        Ok(decoder)
    }

    /// Fails unless concepts of encoder `encoder_id` (dimension `dim`) are this decoder's.
    pub fn check_space(&self, encoder_id: &str, dim: usize) -> Result<()> {
        if encoder_id != self.meta.encoder_id || dim != self.meta.dim {
            return Err(SonarError::file(
                self.root.join(META_FILE),
                format!(
                    "the decoder was trained for `{}` concepts ({}-d) but these come from \
                     `{encoder_id}` ({dim}-d); train a decoder on a store of that encoder",
                    self.meta.encoder_id, self.meta.dim
                ),
            ));
        }
        Ok(())
    }

    pub fn meta(&self) -> &DecoderMeta {
        &self.meta
    }

    pub fn tokenizer(&self) -> &DecoderTokenizer {
        &self.tokenizer
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn decode_rows(&self, cond: &Tensor, config: &DecodeConfig) -> Result<Vec<Decoded>> {
        let prompt_len = self.meta.prompt.len();
        let decoder_max = self.meta.config.max_seq_len;
        let max_gen_len = config
            .max_len
            .min(decoder_max.saturating_sub(prompt_len))
            .max(1);
        let max_seq_len = decoder_max.min(prompt_len + max_gen_len);
        let search = BeamSearchConfig {
            beam_size: config.beam_size.max(1),
            min_gen_len: 1,
            max_gen_len,
            max_seq_len,
            len_penalty: 1.0,
            unk_penalty: 0.0,
            normalize_scores: true,
        };
        let best = best_hypotheses(
            &self.model,
            cond,
            &self.meta.prompt,
            SpecialIds::SONAR,
            &search,
            config,
        )?;
        best.into_iter()
            .map(|h| {
                Ok(Decoded {
                    text: self.tokenizer.decode(&h.ids)?,
                    score: Some(h.score),
                })
            })
            .collect()
    }
}

impl ConceptDecoder for TrainedDecoder {
    fn decode(
        &self,
        concepts: &Tensor,
        _lang: Option<&str>,
        config: &DecodeConfig,
    ) -> lcm_concept::error::Result<Vec<Decoded>> {
        let to_concept =
            |e: SonarError| lcm_concept::ConceptError::Invalid(format!("trained decoder: {e}"));
        let concepts = concepts.to_dtype(DType::F32)?;
        let (n, d) = concepts.dims2().map_err(|_| {
            to_concept(config_err(format!(
                "concepts must be [N, {}], got {:?}",
                self.meta.dim,
                concepts.dims()
            )))
        })?;
        if d != self.meta.dim {
            return Err(to_concept(config_err(format!(
                "the decoder reads {}-d concepts of `{}`, got {d}-d ones",
                self.meta.dim, self.meta.encoder_id
            ))));
        }
        let values = concepts.flatten_all()?.to_vec1::<f32>()?;
        if let Some(bad) = values
            .chunks_exact(d)
            .position(|r| r.iter().any(|v| !v.is_finite()))
        {
            return Err(to_concept(config_err(format!(
                "concept {bad} has a non-finite value"
            ))));
        }
        let mut out = Vec::with_capacity(n);
        let mut start = 0;
        while start < n {
            let len = DECODE_CHUNK.min(n - start);
            let chunk = concepts.narrow(0, start, len)?;
            out.extend(self.decode_rows(&chunk, config).map_err(to_concept)?);
            start += len;
        }
        Ok(out)
    }

    fn id(&self) -> &str {
        &self.meta.encoder_id
    }

    fn dim(&self) -> usize {
        self.meta.dim
    }
}
