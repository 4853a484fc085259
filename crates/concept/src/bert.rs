//! BERT-family sentence encoder for sentence-transformers model folders (e.g. all-MiniLM-L6-v2,
//! multilingual-e5-small, XLM-RoBERTa models such as paraphrase-multilingual-mpnet-base-v2).
//!
//! The forward pass is written for inference on CPUs rather than composed from tensor ops:
//! weights live in contiguous f32 buffers, matrix products go straight to the `gemm` crate, and
//! the element-wise work is fused into a few row-wise kernels (see `bert/kernels.rs`). Sequences of a
//! batch are *packed* — concatenated without padding — because every op except attention is
//! per token; attention runs per sequence, so no mask is needed and no time is spent on pad
//! tokens. Output matches sentence-transformers (PyTorch) to ~1e-6.
//!
//! Folder contents read (the sentence-transformers layout):
//! - `config.json`: the BERT hyper-parameters ([`BertConfig`]); `model_type` `bert`, or
//!   `roberta` / `xlm-roberta`, whose positions start at `pad_token_id + 1` (RoBERTa's
//!   `padding_idx + 1`) and whose single token type is row 0 as well.
//! - `tokenizer.json`: a `tokenizers` tokenizer; its own truncation/padding settings are
//!   replaced by truncation to `max_seq_length` and no padding, as sentence-transformers does.
//!   Without it, `sentencepiece.bpe.model`: XLM-R's SentencePiece tokenizer ([`xlmr`]).
//! - `model.safetensors`: f32, f16 or bf16 weights, keys with or without a `bert.` /
//!   `roberta.` prefix.
//! - `config_sentence_transformers.json`: named prompts (E5's `query: ` / `passage: `) and the
//!   default one; the prompt used is prepended to every sentence and named in the encoder id.
//! - `modules.json`, `<pooling>/config.json`: pooling mode(s) and whether a `Normalize` follows.
//!   Without `modules.json` sentence-transformers uses mean pooling and no normalisation.
//! - `sentence_bert_config.json`, `tokenizer_config.json`: the maximum sequence length.

mod kernels;
pub mod xlmr;

use std::cmp::Reverse;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationParams, TruncationStrategy};

use crate::encoder::ConceptEncoder;
use crate::error::{ConceptError, Result};
use kernels::{Mat, MatMut};

/// How an encoder uses more than one thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threading {
    /// Each thread runs whole forward passes single-threaded: threads take whole batches when
    /// there are many, otherwise each batch is split into one packed part per thread. No synchronisation inside a forward pass; the faster mode on the
    /// 2-core machine this was measured on (bench/README.md).
    DataParallel,
    /// One forward pass per batch; matrix products, attention and row kernels are split
    /// across threads.
    IntraOp,
}

/// Run-time options of a [`BertEncoder`].
#[derive(Clone, Debug)]
pub struct EncoderOptions {
    /// Sentences per forward pass.
    pub batch_size: usize,
    /// Worker threads (a dedicated pool per encoder).
    pub threads: usize,
    /// Overrides the folder's maximum sequence length (tokens, including `[CLS]` and `[SEP]`).
    pub max_seq_length: Option<usize>,
    /// How the threads share the work.
    pub threading: Threading,
    /// Which of the folder's prompts (`config_sentence_transformers.json`) to prepend: `None`
    /// for its `default_prompt_name`, `Some("")` for none.
    pub prompt_name: Option<String>,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_seq_length: None,
            threading: Threading::DataParallel,
            prompt_name: None,
        }
    }
}

/// The hidden-layer activation named by `hidden_act`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact, erf-based GELU.
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
    Relu,
}

/// The parts of a HF BERT `config.json` the forward pass needs.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    /// Position id of a sequence's first token: 0 for BERT, `pad_token_id + 1` for the
    /// RoBERTa family (HF's `create_position_ids_from_input_ids`).
    pub position_offset: usize,
}

impl BertConfig {
    /// Parses and validates a `config.json` value; errors say what is wrong.
    pub fn from_json(v: &Value) -> std::result::Result<Self, String> {
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let roberta = match model_type {
            "bert" => false,
            "roberta" | "xlm-roberta" => true,
            _ => {
                return Err(format!(
                    "model_type is `{model_type}`, but only `bert`, `roberta` and \
                     `xlm-roberta` models are supported"
                ));
            }
        };
        if let Some(kind) = v.get("position_embedding_type").and_then(Value::as_str)
            && kind != "absolute"
        {
            return Err(format!(
                "position_embedding_type `{kind}` is not supported (only `absolute`)"
            ));
        }
        let uint = |key: &str| -> std::result::Result<usize, String> {
            match v.get(key).and_then(Value::as_u64) {
                Some(n) if n > 0 => usize::try_from(n).map_err(|_| format!("{key} is too large")),
                Some(_) => Err(format!("{key} must be positive")),
                None => Err(format!("missing or non-integer `{key}`")),
            }
        };
        let act = v
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu");
        let hidden_act = match act {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => {
                return Err(format!(
                    "hidden_act `{other}` is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu)"
                ));
            }
        };
        let layer_norm_eps = match v.get("layer_norm_eps") {
            None => 1e-12,
            Some(x) => match x.as_f64() {
                Some(e) if e.is_finite() && e >= 0.0 => e,
                _ => return Err("layer_norm_eps must be a non-negative number".to_string()),
            },
        };
        let type_vocab_size = match v.get("type_vocab_size") {
            None => 2,
            Some(_) => uint("type_vocab_size")?,
        };
        let mut cfg = Self {
            vocab_size: uint("vocab_size")?,
            hidden_size: uint("hidden_size")?,
            num_hidden_layers: uint("num_hidden_layers")?,
            num_attention_heads: uint("num_attention_heads")?,
            intermediate_size: uint("intermediate_size")?,
            hidden_act,
            layer_norm_eps,
            max_position_embeddings: uint("max_position_embeddings")?,
            type_vocab_size,
            position_offset: 0,
        };
        if roberta {
            let pad = match v.get("pad_token_id") {
                None | Some(Value::Null) => 1,
                Some(p) => p
                    .as_u64()
                    .and_then(|p| usize::try_from(p).ok())
                    .ok_or("pad_token_id must be a non-negative integer")?,
            };
            cfg.position_offset = pad + 1;
            if cfg.position_offset + 2 > cfg.max_position_embeddings {
                return Err(format!(
                    "max_position_embeddings {} leaves no positions after the RoBERTa offset \
                     {} (pad_token_id + 1)",
                    cfg.max_position_embeddings, cfg.position_offset
                ));
            }
        }
        if !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            ));
        }
        Ok(cfg)
    }

    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Tokens a sequence may hold: the position table less the RoBERTa offset.
    pub fn max_positions(&self) -> usize {
        self.max_position_embeddings - self.position_offset
    }
}

/// How token states become one sentence vector (sentence-transformers' `Pooling` modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
    Max,
    MeanSqrtLen,
    WeightedMean,
    LastToken,
}

impl Pooling {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "mean" => Self::Mean,
            "cls" => Self::Cls,
            "max" => Self::Max,
            "mean_sqrt_len_tokens" => Self::MeanSqrtLen,
            "weightedmean" => Self::WeightedMean,
            "lasttoken" => Self::LastToken,
            _ => return None,
        })
    }

    /// `out = pool(tokens)`; `tokens` is `[len, width]`, `len ≥ 1`.
    fn apply(self, tokens: &[f32], width: usize, out: &mut [f32]) {
        let len = tokens.len() / width;
        let rows = tokens.chunks_exact(width);
        match self {
            Self::Cls => out.copy_from_slice(&tokens[..width]),
            Self::LastToken => out.copy_from_slice(&tokens[(len - 1) * width..]),
            Self::Max => {
                out.fill(f32::NEG_INFINITY);
                for row in rows {
                    for (o, &v) in out.iter_mut().zip(row) {
                        *o = o.max(v);
                    }
                }
            }
            Self::Mean | Self::MeanSqrtLen => {
                out.fill(0.0);
                for row in rows {
                    kernels::add_assign(out, row);
                }
                let denom = if self == Self::Mean {
                    len as f32
                } else {
                    (len as f32).sqrt()
                };
                out.iter_mut().for_each(|o| *o /= denom);
            }
            Self::WeightedMean => {
                out.fill(0.0);
                for (i, row) in rows.enumerate() {
                    let w = (i + 1) as f32;
                    for (o, &v) in out.iter_mut().zip(row) {
                        *o += v * w;
                    }
                }
                let total = (len * (len + 1) / 2) as f32;
                out.iter_mut().for_each(|o| *o /= total);
            }
        }
    }
}

/// `y = x·w + b` with `w` stored `[d_in, d_out]` row-major (PyTorch's `[out, in]` transposed at
/// load time, so products read it contiguously).
struct Linear {
    w: Vec<f32>,
    b: Vec<f32>,
    d_in: usize,
    d_out: usize,
}

struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

struct Embeddings {
    /// `[vocab, H]`
    word: Vec<f32>,
    /// `[max_positions, H]`
    position: Vec<f32>,
    /// Row 0 of the token-type table: single sentences are all segment 0 (RoBERTa models have
    /// only that row).
    token_type: Vec<f32>,
    norm: LayerNorm,
}

struct Layer {
    /// Query, key and value projections side by side: `[H, 3H]`.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_norm: LayerNorm,
}

struct Bert {
    config: BertConfig,
    embeddings: Embeddings,
    layers: Vec<Layer>,
}

/// Activations of one packed batch, kept between batches to avoid re-allocating (and
/// page-faulting) megabytes per forward pass.
#[derive(Default)]
struct Workspace {
    /// `[T, H]` hidden states.
    h: Vec<f32>,
    /// `[T, 3H]`
    qkv: Vec<f32>,
    /// `[T, H]` attention output before its projection.
    ctx: Vec<f32>,
    /// `[T, I]`
    ffn: Vec<f32>,
    /// `[L, L]` attention scores of one head.
    scores: Vec<f32>,
}

/// Rows per task when a row-wise kernel is split across threads.
const ROWS_PER_TASK: usize = 32;

/// Applies `f` to `buf` (rows of `width`), split across threads when `threads > 1`.
fn for_rows(buf: &mut [f32], width: usize, threads: usize, f: impl Fn(&mut [f32]) + Sync) {
    if threads > 1 && buf.len() > width * ROWS_PER_TASK {
        buf.par_chunks_mut(width * ROWS_PER_TASK).for_each(&f);
    } else {
        f(buf);
    }
}

impl Bert {
    /// Runs the encoder on a packed batch: `ids` holds the sequences back to back, `lens` their
    /// lengths. Leaves the final token states `[T, H]` in `ws.h`.
    fn forward(&self, ids: &[u32], lens: &[usize], ws: &mut Workspace, threads: usize) {
        let cfg = &self.config;
        let (t, h, inter) = (ids.len(), cfg.hidden_size, cfg.intermediate_size);
        ws.h.resize(t * h, 0.0);
        ws.qkv.resize(t * 3 * h, 0.0);
        ws.ctx.resize(t * h, 0.0);
        ws.ffn.resize(t * inter, 0.0);

        // Embeddings: h[T, H] = LayerNorm(word[id] + token_type[0] + position[p]).
        let emb = &self.embeddings;
        let offset = cfg.position_offset;
        let mut row = 0;
        for &len in lens {
            for p in 0..len {
                let id = ids[row] as usize;
                let dst = &mut ws.h[row * h..(row + 1) * h];
                let word = &emb.word[id * h..(id + 1) * h];
                let pos = &emb.position[(p + offset) * h..(p + offset + 1) * h];
                for (((d, &w), &ty), &ps) in dst.iter_mut().zip(word).zip(&emb.token_type).zip(pos)
                {
                    *d = (w + ty) + ps;
                }
                row += 1;
            }
        }
        let norm = &emb.norm;
        for_rows(&mut ws.h, h, threads, |rows| {
            kernels::bias_layer_norm(rows, &[], &norm.gamma, &norm.beta, norm.eps)
        });

        for layer in &self.layers {
            // qkv[T, 3H] = h·Wqkv + bqkv
            for r in ws.qkv.chunks_exact_mut(3 * h) {
                r.copy_from_slice(&layer.qkv.b);
            }
            linear_into(&mut ws.qkv, &ws.h, t, &layer.qkv, true, threads);

            // ctx[T, H] = softmax(q·kᵀ/√d)·v for each sequence and head
            self.attention(&ws.qkv, &mut ws.ctx, lens, &mut ws.scores, threads);

            // h[T, H] = LayerNorm(h + ctx·Wo + bo)
            linear_into(&mut ws.h, &ws.ctx, t, &layer.attn_out, true, threads);
            let ln = &layer.attn_norm;
            let bias = &layer.attn_out.b;
            for_rows(&mut ws.h, h, threads, |rows| {
                kernels::bias_layer_norm(rows, bias, &ln.gamma, &ln.beta, ln.eps)
            });

            // ffn[T, I] = act(h·W1 + b1)
            linear_into(&mut ws.ffn, &ws.h, t, &layer.ffn_in, false, threads);
            let bias = &layer.ffn_in.b;
            let act = cfg.hidden_act;
            for_rows(&mut ws.ffn, inter, threads, |rows| match act {
                Activation::Gelu => kernels::bias_gelu_erf(rows, bias),
                Activation::GeluTanh => kernels::bias_gelu_tanh(rows, bias),
                Activation::Relu => kernels::bias_relu(rows, bias),
            });

            // h[T, H] = LayerNorm(h + ffn·W2 + b2)
            linear_into(&mut ws.h, &ws.ffn, t, &layer.ffn_out, true, threads);
            let ln = &layer.ffn_norm;
            let bias = &layer.ffn_out.b;
            for_rows(&mut ws.h, h, threads, |rows| {
                kernels::bias_layer_norm(rows, bias, &ln.gamma, &ln.beta, ln.eps)
            });
        }
    }

    /// Self-attention of every sequence of the packed batch, heads side by side in `ctx[T, H]`.
    fn attention(
        &self,
        qkv: &[f32],
        ctx: &mut [f32],
        lens: &[usize],
        scores: &mut Vec<f32>,
        threads: usize,
    ) {
        let h = self.config.hidden_size;
        // Each sequence owns a disjoint block of ctx rows, so they can run in parallel.
        let mut parts = Vec::with_capacity(lens.len());
        let mut rest = ctx;
        let mut start = 0;
        for &len in lens {
            let (mine, tail) = rest.split_at_mut(len * h);
            parts.push((&qkv[start * 3 * h..(start + len) * 3 * h], mine, len));
            rest = tail;
            start += len;
        }
        if threads > 1 && parts.len() > 1 {
            parts
                .into_par_iter()
                .for_each_init(Vec::new, |scores, (qkv, ctx, len)| {
                    self.attend(qkv, ctx, len, scores)
                });
        } else {
            for (qkv, ctx, len) in parts {
                self.attend(qkv, ctx, len, scores);
            }
        }
    }

    /// One sequence: `qkv` is `[L, 3H]`, `ctx` is `[L, H]`.
    fn attend(&self, qkv: &[f32], ctx: &mut [f32], len: usize, scores: &mut Vec<f32>) {
        if len == 0 {
            return;
        }
        let h = self.config.hidden_size;
        let d = self.config.head_dim();
        let scale = 1.0 / (d as f32).sqrt();
        scores.resize(len * len, 0.0);
        for head in 0..self.config.num_attention_heads {
            let q = Mat::block(qkv, 3 * h, len, head * d, d);
            let k = Mat::block(qkv, 3 * h, len, h + head * d, d);
            let v = Mat::block(qkv, 3 * h, len, 2 * h + head * d, d);
            // scores[L, L] = q·kᵀ, then softmax(scores/√d) row by row
            kernels::matmul(MatMut::dense(scores, len, len), q, k.t(), false, 1);
            kernels::scaled_softmax(scores, len, scale);
            // ctx[:, head] = scores·v
            let out = MatMut::block(ctx, h, len, head * d, d);
            kernels::matmul(out, Mat::dense(scores, len, len), v, false, 1);
        }
    }
}

/// `dst[T, d_out] (+)= x[T, d_in]·w`; the bias is the caller's business (it is fused into the
/// next kernel or pre-filled into `dst`).
fn linear_into(dst: &mut [f32], x: &[f32], t: usize, l: &Linear, accumulate: bool, threads: usize) {
    kernels::matmul(
        MatMut::dense(&mut dst[..t * l.d_out], t, l.d_out),
        Mat::dense(&x[..t * l.d_in], t, l.d_in),
        Mat::dense(&l.w, l.d_in, l.d_out),
        accumulate,
        threads,
    );
}

/// One sentence's token ids after truncation.
struct Tokens {
    ids: Vec<u32>,
    /// Whether truncation dropped tokens.
    truncated: bool,
}

/// How a folder's text becomes token ids.
enum TextTokenizer {
    /// `tokenizer.json` through the `tokenizers` crate (boxed: it is large).
    Json(Box<Tokenizer>),
    /// XLM-R's `sentencepiece.bpe.model` through [`crate::sentencepiece`].
    Xlmr(Box<xlmr::XlmrTokenizer>),
}

/// A sentence encoder for any sentence-transformers BERT folder.
pub struct BertEncoder {
    id: String,
    folder: PathBuf,
    bert: Bert,
    tokenizer: TextTokenizer,
    /// Prepended to every sentence (E5's `passage: `); empty for none.
    prompt: String,
    pooling: Vec<Pooling>,
    normalize: bool,
    max_seq_length: usize,
    batch_size: usize,
    threads: usize,
    threading: Threading,
    pool: rayon::ThreadPool,
    workspaces: Mutex<Vec<Workspace>>,
}

fn bad(folder: &Path, reason: impl Into<String>) -> ConceptError {
    ConceptError::BadModelFolder {
        path: folder.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads `folder/rel` as JSON; `Ok(None)` when the file does not exist.
fn read_json(folder: &Path, rel: &str) -> Result<Option<Value>> {
    let path = folder.join(rel);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(folder, format!("cannot read {rel}: {e}"))),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| bad(folder, format!("{rel} is not valid JSON: {e}")))
}

/// What `modules.json` (and the files it points to) say about the pipeline after the BERT.
struct Pipeline {
    pooling: Vec<Pooling>,
    normalize: bool,
    /// sentence-transformers reads `sentence_bert_config.json` only for folders with modules.json.
    has_modules: bool,
    /// Pooling's `include_prompt` (default true): whether the prompt's tokens are pooled.
    include_prompt: bool,
}

fn read_pipeline(folder: &Path, hidden: usize) -> Result<Pipeline> {
    let Some(modules) = read_json(folder, "modules.json")? else {
        return Ok(Pipeline {
            pooling: vec![Pooling::Mean],
            normalize: false,
            has_modules: false,
            include_prompt: true,
        });
    };
    let modules = modules
        .as_array()
        .ok_or_else(|| bad(folder, "modules.json must be a JSON array of modules"))?;
    let mut pooling = None;
    let mut normalize = false;
    let mut include_prompt = true;
    for (i, m) in modules.iter().enumerate() {
        let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
        let path = m.get("path").and_then(Value::as_str).unwrap_or("");
        match ty.rsplit('.').next().unwrap_or("") {
            "Transformer" if i == 0 && path.is_empty() => {}
            "Transformer" if i == 0 => {
                return Err(bad(
                    folder,
                    format!(
                        "modules.json puts the Transformer in `{path}/`; only folders with the \
                         BERT files (config.json, tokenizer.json, model.safetensors) at the top \
                         level are supported"
                    ),
                ));
            }
            "Pooling" if i > 0 && pooling.is_none() => {
                pooling = Some(read_pooling(folder, path, hidden)?);
                let rel = if path.is_empty() {
                    "config.json".to_string()
                } else {
                    format!("{path}/config.json")
                };
                include_prompt = read_json(folder, &rel)?
                    .and_then(|c| c.get("include_prompt").and_then(Value::as_bool))
                    .unwrap_or(true);
            }
            "Normalize" if pooling.is_some() => normalize = true,
            "Dropout" => {}
            _ => {
                return Err(bad(
                    folder,
                    format!(
                        "modules.json entry {i} (`{ty}`) is not supported; expected \
                         Transformer, Pooling, then optionally Normalize"
                    ),
                ));
            }
        }
    }
    let pooling = pooling.ok_or_else(|| {
        bad(
            folder,
            "modules.json has no Pooling module after the Transformer",
        )
    })?;
    Ok(Pipeline {
        pooling,
        normalize,
        has_modules: true,
        include_prompt,
    })
}

fn read_pooling(folder: &Path, dir: &str, hidden: usize) -> Result<Vec<Pooling>> {
    let rel = if dir.is_empty() {
        "config.json".to_string()
    } else {
        format!("{dir}/config.json")
    };
    let cfg = read_json(folder, &rel)?.ok_or_else(|| {
        bad(
            folder,
            format!("{rel} (the pooling config named in modules.json) is missing"),
        )
    })?;
    for key in ["embedding_dimension", "word_embedding_dimension"] {
        if let Some(d) = cfg.get(key).and_then(Value::as_u64)
            && d as usize != hidden
        {
            return Err(bad(
                folder,
                format!("{rel}: {key} is {d} but config.json's hidden_size is {hidden}"),
            ));
        }
    }
    let names: Vec<String> = match cfg.get("pooling_mode") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| bad(folder, format!("{rel}: pooling_mode must hold strings")))?,
        Some(_) => {
            return Err(bad(
                folder,
                format!("{rel}: pooling_mode must be a string or a list"),
            ));
        }
        // Older sentence-transformers wrote one boolean per mode, concatenated in this order.
        None => [
            ("pooling_mode_cls_token", "cls"),
            ("pooling_mode_max_tokens", "max"),
            ("pooling_mode_mean_tokens", "mean"),
            ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
            ("pooling_mode_weightedmean_tokens", "weightedmean"),
            ("pooling_mode_lasttoken", "lasttoken"),
        ]
        .into_iter()
        .filter(|(key, _)| cfg.get(key).and_then(Value::as_bool) == Some(true))
        .map(|(_, name)| name.to_string())
        .collect(),
    };
    if names.is_empty() {
        return Err(bad(folder, format!("{rel} enables no pooling mode")));
    }
    names
        .iter()
        .map(|n| {
            Pooling::from_name(n).ok_or_else(|| {
                bad(
                    folder,
                    format!(
                        "{rel}: pooling mode `{n}` is not supported \
                         (mean, cls, max, mean_sqrt_len_tokens, weightedmean, lasttoken)"
                    ),
                )
            })
        })
        .collect()
}

/// The folder's tokenizer: `tokenizer.json` when present (truncating to `max_seq_length`,
/// no padding), else XLM-R's `sentencepiece.bpe.model`.
fn load_tokenizer(folder: &Path, cfg: &BertConfig, max_seq_length: usize) -> Result<TextTokenizer> {
    let json_path = folder.join("tokenizer.json");
    let spm_path = folder.join("sentencepiece.bpe.model");
    let (tokenizer, max_id, file) = if json_path.is_file() {
        let mut tokenizer = Tokenizer::from_file(&json_path)
            .map_err(|e| bad(folder, format!("tokenizer.json cannot be loaded: {e}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                ..Default::default()
            }))
            .map_err(|e| {
                bad(
                    folder,
                    format!("tokenizer.json: cannot truncate to {max_seq_length}: {e}"),
                )
            })?;
        tokenizer.with_padding(None);
        let max_id = tokenizer.get_vocab(true).into_values().max().unwrap_or(0);
        (
            TextTokenizer::Json(Box::new(tokenizer)),
            max_id,
            "tokenizer.json",
        )
    } else if spm_path.is_file() {
        let tokenizer = xlmr::XlmrTokenizer::from_file(&spm_path)?;
        let max_id = tokenizer.max_id();
        (
            TextTokenizer::Xlmr(Box::new(tokenizer)),
            max_id,
            "sentencepiece.bpe.model",
        )
    } else {
        return Err(bad(
            folder,
            "no tokenizer: expected tokenizer.json (a fast tokenizer) or sentencepiece.bpe.model \
             (XLM-R's SentencePiece model)",
        ));
    };
    if max_id as usize >= cfg.vocab_size {
        return Err(bad(
            folder,
            format!(
                "{file} has token id {max_id}, beyond config.json's vocab_size {}",
                cfg.vocab_size
            ),
        ));
    }
    Ok(tokenizer)
}

/// The prompt to prepend, from `config_sentence_transformers.json`: `(name, text)`; `asked`
/// is `None` for the folder's `default_prompt_name`, `Some("")` for none.
fn read_prompt(folder: &Path, asked: Option<&str>) -> Result<(String, String)> {
    const FILE: &str = "config_sentence_transformers.json";
    let cfg = read_json(folder, FILE)?;
    let prompts = cfg.as_ref().and_then(|c| c.get("prompts"));
    let name = match asked {
        Some(name) => name.to_string(),
        None => match cfg.as_ref().and_then(|c| c.get("default_prompt_name")) {
            None | Some(Value::Null) => return Ok((String::new(), String::new())),
            Some(Value::String(name)) => name.clone(),
            Some(_) => {
                return Err(bad(
                    folder,
                    format!("{FILE}: default_prompt_name must be a string"),
                ));
            }
        },
    };
    if name.is_empty() {
        return Ok((name, String::new()));
    }
    match prompts.and_then(|p| p.get(&name)) {
        Some(Value::String(text)) => Ok((name, text.clone())),
        Some(_) => Err(bad(
            folder,
            format!("{FILE}: prompt `{name}` must be a string"),
        )),
        None => {
            let known: Vec<&str> = prompts
                .and_then(Value::as_object)
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            Err(bad(
                folder,
                format!(
                    "no prompt named `{name}` in {FILE} (it has: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ))
        }
    }
}

/// The sequence limit sentence-transformers would use for this folder.
fn folder_max_seq_length(folder: &Path, cfg: &BertConfig, has_modules: bool) -> Result<usize> {
    let positions = cfg.max_positions();
    if has_modules
        && let Some(sb) = read_json(folder, "sentence_bert_config.json")?
        && let Some(v) = sb.get("max_seq_length").filter(|v| !v.is_null())
    {
        let n = v.as_u64().ok_or_else(|| {
            bad(
                folder,
                "sentence_bert_config.json: max_seq_length must be an integer",
            )
        })? as usize;
        if n > positions {
            // PyTorch would index past the position table; use what the model can do.
            tracing::warn!(
                "{}: sentence_bert_config.json max_seq_length {n} exceeds the model's {positions} \
                 positions; using {positions}",
                folder.display()
            );
            return Ok(positions);
        }
        return Ok(n);
    }
    let tokenizer_limit = read_json(folder, "tokenizer_config.json")?
        .and_then(|t| t.get("model_max_length").and_then(Value::as_f64))
        .filter(|n| *n >= 1.0)
        .map_or(usize::MAX, |n| n.min(usize::MAX as f64) as usize);
    Ok(tokenizer_limit.min(positions))
}

/// Converts a safetensors tensor to f32, checking its shape and that every value is finite.
fn tensor_f32(
    st: &SafeTensors<'_>,
    folder: &Path,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>> {
    let view = st
        .tensor(name)
        .map_err(|_| bad(folder, format!("model.safetensors has no tensor `{name}`")))?;
    if view.shape() != shape {
        return Err(bad(
            folder,
            format!(
                "model.safetensors: tensor `{name}` has shape {:?}, expected {shape:?} from config.json",
                view.shape()
            ),
        ));
    }
    let bytes = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(bad(
                folder,
                format!(
                    "model.safetensors: tensor `{name}` has dtype {other:?}; expected F32, F16 or BF16"
                ),
            ));
        }
    };
    if values.iter().any(|v| !v.is_finite()) {
        return Err(bad(
            folder,
            format!("model.safetensors: tensor `{name}` contains NaN or infinite values"),
        ));
    }
    Ok(values)
}

/// Loads BERT weights under `prefix` (`""` or `"bert."`).
struct WeightLoader<'a> {
    st: SafeTensors<'a>,
    folder: &'a Path,
    prefix: &'static str,
}

impl WeightLoader<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        tensor_f32(
            &self.st,
            self.folder,
            &format!("{}{name}", self.prefix),
            shape,
        )
    }

    /// PyTorch `Linear(d_in, d_out)` at `name`, transposed to `[d_in, d_out]`.
    fn linear(&self, name: &str, d_in: usize, d_out: usize) -> Result<Linear> {
        let w = self.get(&format!("{name}.weight"), &[d_out, d_in])?;
        let b = self.get(&format!("{name}.bias"), &[d_out])?;
        Ok(Linear {
            w: transpose(&w, d_out, d_in),
            b,
            d_in,
            d_out,
        })
    }

    fn layer_norm(&self, name: &str, width: usize, eps: f64) -> Result<LayerNorm> {
        // Checkpoints converted from TensorFlow name the parameters gamma/beta.
        let has = |suffix: &str| {
            self.st
                .tensor(&format!("{}{name}.{suffix}", self.prefix))
                .is_ok()
        };
        let (g, b) = if !has("weight") && has("gamma") {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(LayerNorm {
            gamma: self.get(&format!("{name}.{g}"), &[width])?,
            beta: self.get(&format!("{name}.{b}"), &[width])?,
            eps: eps as f32,
        })
    }
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = m[r * cols + c];
        }
    }
    out
}

fn load_bert(folder: &Path, bytes: &[u8], cfg: &BertConfig) -> Result<Bert> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        bad(
            folder,
            format!("model.safetensors is not a valid safetensors file: {e}"),
        )
    })?;
    let probe = "embeddings.word_embeddings.weight";
    let Some(prefix) = ["", "bert.", "roberta."]
        .into_iter()
        .find(|p| st.tensor(&format!("{p}{probe}")).is_ok())
    else {
        return Err(bad(
            folder,
            format!(
                "model.safetensors has no `{probe}` (with or without a `bert.` or `roberta.` \
                 prefix); is it a BERT or RoBERTa model?"
            ),
        ));
    };
    let w = WeightLoader { st, folder, prefix };
    let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);

    let token_types = w.get(
        "embeddings.token_type_embeddings.weight",
        &[cfg.type_vocab_size, h],
    )?;
    let embeddings = Embeddings {
        word: w.get(probe, &[cfg.vocab_size, h])?,
        position: w.get(
            "embeddings.position_embeddings.weight",
            &[cfg.max_position_embeddings, h],
        )?,
        token_type: token_types[..h].to_vec(),
        norm: w.layer_norm("embeddings.LayerNorm", h, eps)?,
    };

    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for l in 0..cfg.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        let q = w.linear(&format!("{p}.attention.self.query"), h, h)?;
        let k = w.linear(&format!("{p}.attention.self.key"), h, h)?;
        let v = w.linear(&format!("{p}.attention.self.value"), h, h)?;
        // Interleave the three [H, H] matrices row by row into one [H, 3H].
        let mut qkv_w = Vec::with_capacity(3 * h * h);
        for r in 0..h {
            for m in [&q, &k, &v] {
                qkv_w.extend_from_slice(&m.w[r * h..(r + 1) * h]);
            }
        }
        let qkv_b = [q.b, k.b, v.b].concat();
        layers.push(Layer {
            qkv: Linear {
                w: qkv_w,
                b: qkv_b,
                d_in: h,
                d_out: 3 * h,
            },
            attn_out: w.linear(&format!("{p}.attention.output.dense"), h, h)?,
            attn_norm: w.layer_norm(&format!("{p}.attention.output.LayerNorm"), h, eps)?,
            ffn_in: w.linear(&format!("{p}.intermediate.dense"), h, i)?,
            ffn_out: w.linear(&format!("{p}.output.dense"), i, h)?,
            ffn_norm: w.layer_norm(&format!("{p}.output.LayerNorm"), h, eps)?,
        });
    }
    Ok(Bert {
        config: cfg.clone(),
        embeddings,
        layers,
    })
}

impl BertEncoder {
    /// Resolves `name_or_path` (see [`crate::resolve::resolve_model`]) and loads it.
    pub fn load(name_or_path: &str, opts: &EncoderOptions) -> Result<Self> {
        Self::from_folder(crate::resolve::resolve_model(name_or_path)?, opts)
    }

    /// Loads a sentence-transformers BERT folder.
    pub fn from_folder(folder: impl AsRef<Path>, opts: &EncoderOptions) -> Result<Self> {
        let folder = folder.as_ref();
        if !folder.is_dir() {
            return Err(bad(folder, "not a directory"));
        }
        if opts.batch_size == 0 || opts.threads == 0 {
            return Err(ConceptError::Invalid(format!(
                "encoder options: batch_size ({}) and threads ({}) must be at least 1",
                opts.batch_size, opts.threads
            )));
        }
        let config_json = read_json(folder, "config.json")?
            .ok_or_else(|| bad(folder, "config.json is missing"))?;
        let cfg = BertConfig::from_json(&config_json)
            .map_err(|e| bad(folder, format!("config.json: {e}")))?;
        let pipeline = read_pipeline(folder, cfg.hidden_size)?;

        let max_seq_length = match opts.max_seq_length {
            Some(n) if n < 2 || n > cfg.max_positions() => {
                return Err(ConceptError::Invalid(format!(
                    "max_seq_length {n} must be between 2 (room for [CLS] and [SEP]) and the \
                     model's {} positions (max_position_embeddings {} less the position offset \
                     {})",
                    cfg.max_positions(),
                    cfg.max_position_embeddings,
                    cfg.position_offset
                )));
            }
            Some(n) => n,
            None => folder_max_seq_length(folder, &cfg, pipeline.has_modules)?,
        };
        if max_seq_length < 2 {
            return Err(bad(
                folder,
                format!(
                    "maximum sequence length {max_seq_length} leaves no room for [CLS] and [SEP]"
                ),
            ));
        }

        let tokenizer = load_tokenizer(folder, &cfg, max_seq_length)?;
        let (prompt_name, prompt) = read_prompt(folder, opts.prompt_name.as_deref())?;
        if !prompt.is_empty() && !pipeline.include_prompt {
            return Err(bad(
                folder,
                "the pooling config excludes the prompt's tokens (include_prompt: false), which \
                 is not supported",
            ));
        }

        let weights_path = folder.join("model.safetensors");
        let bytes = std::fs::read(&weights_path).map_err(|e| {
            bad(
                folder,
                format!(
                    "cannot read model.safetensors: {e} (PyTorch .bin weights are not supported)"
                ),
            )
        })?;
        let digest = Sha256::digest(&bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let bert = load_bert(folder, &bytes, &cfg)?;
        drop(bytes);

        let name = crate::resolve::model_name_for_folder(folder);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads)
            .thread_name(|i| format!("lcm-bert-{i}"))
            .build()
            .map_err(|e| {
                ConceptError::Invalid(format!(
                    "cannot start {} encoder threads: {e}",
                    opts.threads
                ))
            })?;
        let mut id = format!("{name}@{}", &hex[..12]);
        if !prompt.is_empty() {
            // The prompt changes every vector: stores made with and without it must not mix.
            id = format!("{id}+{prompt_name}");
        }
        Ok(Self {
            id,
            folder: folder.to_path_buf(),
            bert,
            tokenizer,
            prompt,
            pooling: pipeline.pooling,
            normalize: pipeline.normalize,
            max_seq_length,
            batch_size: opts.batch_size,
            threads: opts.threads,
            threading: opts.threading,
            pool,
            workspaces: Mutex::new(Vec::new()),
        })
    }

    /// The BERT hyper-parameters.
    pub fn config(&self) -> &BertConfig {
        &self.bert.config
    }

    /// Tokens per sentence after truncation, including `[CLS]` and `[SEP]`.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// The folder the model was loaded from.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// Token ids (after truncation, with special tokens) of `sentences`, as the encoder will
    /// see them.
    pub fn token_ids(&self, sentences: &[&str]) -> Result<Vec<Vec<u32>>> {
        Ok(self
            .tokenize(sentences)?
            .into_iter()
            .map(|t| t.ids)
            .collect())
    }

    /// Token counts (after truncation) of `sentences`, as the encoder will see them.
    pub fn token_lengths(&self, sentences: &[&str]) -> Result<Vec<usize>> {
        Ok(self
            .tokenize(sentences)?
            .iter()
            .map(|t| t.ids.len())
            .collect())
    }

    /// Whether the text goes through XLM-R's SentencePiece tokenizer (an XLM-R-family model:
    /// multilingual-e5, paraphrase-multilingual-*).
    pub fn is_xlmr(&self) -> bool {
        matches!(self.tokenizer, TextTokenizer::Xlmr(_))
    }

    /// The prompt prepended to every sentence (empty for none).
    pub fn prompt(&self) -> &str {
        &self.prompt
    }

    /// Truncated token ids of `sentences`, the prompt prepended.
    fn tokenize(&self, sentences: &[&str]) -> Result<Vec<Tokens>> {
        let prompted: Vec<String>;
        let texts: Vec<&str> = if self.prompt.is_empty() {
            sentences.to_vec()
        } else {
            prompted = sentences
                .iter()
                .map(|s| format!("{}{s}", self.prompt))
                .collect();
            prompted.iter().map(String::as_str).collect()
        };
        match &self.tokenizer {
            TextTokenizer::Json(_) => Ok(self
                .tokenize_json(&texts)?
                .into_iter()
                .map(|e| Tokens {
                    truncated: !e.get_overflowing().is_empty(),
                    ids: e.get_ids().to_vec(),
                })
                .collect()),
            TextTokenizer::Xlmr(tok) => Ok(self.pool.install(|| {
                texts
                    .par_iter()
                    .map(|t| {
                        let (ids, truncated) = tok.encode(t, self.max_seq_length);
                        Tokens { ids, truncated }
                    })
                    .collect()
            })),
        }
    }

    /// Truncated encodings of `sentences`. A sentence far longer than the truncation could
    /// ever keep is tokenised from a prefix ending at a word boundary (the tokenizer would
    /// otherwise build every token of, say, a 20 MB line before truncating: gigabytes); the
    /// prefix is accepted only when its kept tokens end before the prefix's last whitespace, so
    /// the result equals tokenising the whole sentence; otherwise the prefix doubles.
    fn tokenize_json(&self, sentences: &[&str]) -> Result<Vec<tokenizers::Encoding>> {
        let budget = self.max_seq_length * PREFIX_BYTES_PER_TOKEN;
        let firsts: Vec<&str> = sentences.iter().map(|s| word_prefix(s, budget)).collect();
        let mut encodings = self.encode_batch(firsts.clone())?;
        for (i, encoding) in encodings.iter_mut().enumerate() {
            let (sentence, mut prefix) = (sentences[i], firsts[i]);
            let mut budget = budget;
            while prefix.len() < sentence.len() && !self.prefix_decides(encoding, prefix) {
                budget *= 2;
                prefix = word_prefix(sentence, budget);
                *encoding = self
                    .encode_batch(vec![prefix])?
                    .pop()
                    .ok_or_else(|| ConceptError::Tokenizer("no encoding returned".into()))?;
            }
        }
        Ok(encodings)
    }

    fn encode_batch(&self, sentences: Vec<&str>) -> Result<Vec<tokenizers::Encoding>> {
        let TextTokenizer::Json(tokenizer) = &self.tokenizer else {
            return Err(ConceptError::Tokenizer(
                "encode_batch is for tokenizer.json folders".into(),
            ));
        };
        self.pool.install(|| {
            tokenizer
                .encode_batch_fast(sentences, true)
                .map_err(|e| ConceptError::Tokenizer(format!("{}: {e}", self.folder.display())))
        })
    }

    /// Whether the tokens kept from `prefix` are those the whole sentence would keep: the
    /// truncation is full and a whitespace lies between the last kept token and the cut.
    fn prefix_decides(&self, encoding: &tokenizers::Encoding, prefix: &str) -> bool {
        if encoding.len() < self.max_seq_length {
            return false;
        }
        let kept_end = encoding
            .get_offsets()
            .iter()
            .map(|&(_, end)| end)
            .max()
            .unwrap_or(0);
        prefix
            .get(kept_end..)
            .is_some_and(|rest| rest.contains(char::is_whitespace))
    }

    fn tokenizer_path(&self) -> PathBuf {
        match &self.tokenizer {
            TextTokenizer::Json(_) => self.folder.join("tokenizer.json"),
            TextTokenizer::Xlmr(t) => t.path().to_path_buf(),
        }
    }

    fn data_parallel(&self) -> bool {
        self.threading == Threading::DataParallel && self.threads > 1
    }

    /// Groups sentence indices (sorted longest first) into forward passes.
    ///
    /// Batches of `batch_size`; in data-parallel mode with few batches, each batch is further
    /// split into one part per thread (balanced by tokens) so that no thread idles. With many
    /// batches, whole batches make larger matrix products, and the longest-first order keeps
    /// the last (shortest) batches from leaving one thread alone for long.
    fn work_units(&self, order: &[usize], ids: &[&[u32]]) -> Vec<Vec<usize>> {
        let batches = order.chunks(self.batch_size);
        if !self.data_parallel() || batches.len() >= WHOLE_BATCHES_PER_THREAD * self.threads {
            return batches.map(<[usize]>::to_vec).collect();
        }
        batches
            .flat_map(|batch| {
                let lens: Vec<usize> = batch.iter().map(|&i| ids[i].len()).collect();
                split_by_tokens(&lens, self.threads)
                    .into_iter()
                    .map(|r| batch[r].to_vec())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn run_part(&self, seqs: &[&[u32]], out: &mut [f32], ws: &mut Workspace, threads: usize) {
        let ids: Vec<u32> = seqs.iter().flat_map(|s| s.iter().copied()).collect();
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        self.bert.forward(&ids, &lens, ws, threads);
        let h = self.bert.config.hidden_size;
        let mut start = 0;
        for (&len, row) in lens.iter().zip(out.chunks_exact_mut(self.dim())) {
            if len == 0 {
                // Only tokenizers without [CLS]/[SEP] get here (for ""); sentence-transformers
                // pools such an all-padding row to zeros.
                row.fill(0.0);
                continue;
            }
            let tokens = &ws.h[start * h..(start + len) * h];
            for (mode, o) in self.pooling.iter().zip(row.chunks_exact_mut(h)) {
                mode.apply(tokens, h, o);
            }
            if self.normalize {
                // F.normalize: x / max(‖x‖₂, 1e-12)
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                row.iter_mut().for_each(|v| *v /= norm);
            }
            start += len;
        }
    }

    /// Guards the forward pass's table lookups against a tokenizer that misbehaves at run time
    /// (load-time checks cover the vocabulary, but ids and lengths come from user text).
    fn check_tokens(&self, ids: &[&[u32]], base: usize) -> Result<()> {
        let vocab = self.bert.config.vocab_size;
        for (i, seq) in ids.iter().enumerate() {
            if seq.len() > self.max_seq_length {
                return Err(ConceptError::Tokenizer(format!(
                    "sentence {} has {} tokens after truncation to {} ({})",
                    base + i,
                    seq.len(),
                    self.max_seq_length,
                    self.tokenizer_path().display()
                )));
            }
            if let Some(&id) = seq.iter().find(|&&id| id as usize >= vocab) {
                return Err(ConceptError::Tokenizer(format!(
                    "sentence {} has token id {id} beyond vocab_size {vocab} ({})",
                    base + i,
                    self.tokenizer_path().display()
                )));
            }
        }
        Ok(())
    }

    fn take_workspace(&self) -> Workspace {
        self.workspaces
            .lock()
            .map(|mut w| w.pop())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn return_workspace(&self, ws: Workspace) {
        if let Ok(mut w) = self.workspaces.lock() {
            w.push(ws);
        }
    }
}

/// Splits sequences (by their lengths) into at most `parts` contiguous ranges of similar token
/// counts.
fn split_by_tokens(lens: &[usize], parts: usize) -> Vec<std::ops::Range<usize>> {
    let total: usize = lens.iter().sum();
    let mut ranges = Vec::with_capacity(parts);
    let mut start = 0;
    let mut acc = 0;
    for (i, len) in lens.iter().enumerate() {
        acc += len;
        let boundary = total * (ranges.len() + 1) / parts;
        if acc >= boundary && ranges.len() + 1 < parts {
            ranges.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < lens.len() {
        ranges.push(start..lens.len());
    }
    ranges
}

/// First prefix tokenised of a very long sentence, in bytes per token kept: far more than any
/// tokenizer's tokens need, so the first prefix nearly always decides.
const PREFIX_BYTES_PER_TOKEN: usize = 64;

/// `text` cut before the last whitespace at or below `budget` bytes; all of `text` when it is
/// within the budget or has no whitespace there (a single huge word is one unknown token).
fn word_prefix(text: &str, budget: usize) -> &str {
    if text.len() <= budget {
        return text;
    }
    let mut end = budget;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    match text[..end].rfind(char::is_whitespace) {
        Some(cut) if cut > 0 => &text[..cut],
        _ => text,
    }
}

/// Below this many batches per thread, batches are split across threads (see `work_units`).
const WHOLE_BATCHES_PER_THREAD: usize = 4;

/// Sentences tokenised at once: bounds the memory of `Encoding`s for very long inputs while
/// leaving plenty to sort by length within.
const TOKENIZE_CHUNK: usize = 8192;

impl ConceptEncoder for BertEncoder {
    fn encode(&self, sentences: &[&str], _lang: Option<&str>) -> Result<Tensor> {
        let n = sentences.len();
        let dim = self.dim();
        if n == 0 {
            return Ok(Tensor::zeros((0, dim), DType::F32, &Device::Cpu)?);
        }
        let mut out = vec![0.0f32; n * dim];
        for (chunk_idx, chunk) in sentences.chunks(TOKENIZE_CHUNK).enumerate() {
            let base = chunk_idx * TOKENIZE_CHUNK;
            let tokens = self.tokenize(chunk)?;
            let ids: Vec<&[u32]> = tokens.iter().map(|t| t.ids.as_slice()).collect();
            self.check_tokens(&ids, base)?;
            // Longest first, like sentence-transformers; stable, so ties keep input order.
            let mut order: Vec<usize> = (0..ids.len()).collect();
            order.sort_by_key(|&i| Reverse(ids[i].len()));
            let units = self.work_units(&order, &ids);
            let run = |unit: &Vec<usize>, threads: usize| -> Vec<f32> {
                let seqs: Vec<&[u32]> = unit.iter().map(|&i| ids[i]).collect();
                let mut pooled = vec![0.0f32; unit.len() * dim];
                let mut ws = self.take_workspace();
                self.run_part(&seqs, &mut pooled, &mut ws, threads);
                self.return_workspace(ws);
                pooled
            };
            let pooled: Vec<Vec<f32>> = self.pool.install(|| {
                if self.data_parallel() {
                    units.par_iter().map(|u| run(u, 1)).collect()
                } else {
                    units.iter().map(|u| run(u, self.threads)).collect()
                }
            });
            for (unit, rows) in units.iter().zip(&pooled) {
                for (&i, row) in unit.iter().zip(rows.chunks_exact(dim)) {
                    out[(base + i) * dim..(base + i + 1) * dim].copy_from_slice(row);
                }
            }
        }
        if let Some(bad_row) = out
            .chunks_exact(dim)
            .position(|r| r.iter().any(|v| !v.is_finite()))
        {
            return Err(ConceptError::InvalidEmbedding(format!(
                "sentence {bad_row} encoded to NaN/inf with {} ({})",
                self.id,
                self.folder.display()
            )));
        }
        Ok(Tensor::from_vec(out, (n, dim), &Device::Cpu)?)
    }

    fn dim(&self) -> usize {
        self.bert.config.hidden_size * self.pooling.len()
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn max_tokens(&self) -> Option<usize> {
        Some(self.max_seq_length)
    }

    fn token_counts(&self, sentences: &[&str]) -> Result<Option<Vec<usize>>> {
        let tokens = self.tokenize(sentences)?;
        Ok(Some(
            tokens
                .iter()
                .map(|t| t.ids.len() + usize::from(t.truncated))
                .collect(),
        ))
    }

    fn unknown_only(&self, sentences: &[&str]) -> Result<Option<Vec<bool>>> {
        // The sentence alone, without the prompt (whose tokens are always known).
        match &self.tokenizer {
            TextTokenizer::Json(tokenizer) => {
                let Some(unk) = ["[UNK]", "<unk>"]
                    .iter()
                    .find_map(|t| tokenizer.token_to_id(t))
                else {
                    return Ok(None);
                };
                let encodings = self.pool.install(|| {
                    tokenizer
                        .encode_batch_fast(sentences.to_vec(), false)
                        .map_err(|e| {
                            ConceptError::Tokenizer(format!("{}: {e}", self.folder.display()))
                        })
                })?;
                Ok(Some(
                    encodings
                        .iter()
                        .map(|e| {
                            crate::encoder::unknown_only(
                                e.get_ids()
                                    .iter()
                                    .zip(e.get_tokens())
                                    .map(|(&id, t)| (id == unk, t.as_str())),
                            )
                        })
                        .collect(),
                ))
            }
            TextTokenizer::Xlmr(tok) => Ok(Some(
                sentences
                    .iter()
                    .map(|s| {
                        crate::encoder::unknown_only(
                            tok.piece_ids(s)
                                .into_iter()
                                .map(|id| (id == xlmr::UNK, tok.piece_text(id).unwrap_or(""))),
                        )
                    })
                    .collect(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_balances_tokens() {
        assert_eq!(split_by_tokens(&[10, 6, 4], 2), vec![0..1, 1..3]);
        assert_eq!(split_by_tokens(&[10], 2), vec![0..1]);
        assert_eq!(split_by_tokens(&[5, 5, 5, 5], 3), vec![0..2, 2..3, 3..4]);
        assert_eq!(
            split_by_tokens(&[], 2),
            Vec::<std::ops::Range<usize>>::new()
        );
    }

    #[test]
    fn transpose_roundtrip() {
        let m: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let t = transpose(&m, 2, 3);
        assert_eq!(t, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(transpose(&t, 3, 2), m);
    }

    #[test]
    fn pooling_modes() {
        let tokens = [1.0f32, -2.0, 3.0, 4.0, 5.0, 0.0];
        let mut out = [0.0f32; 2];
        Pooling::Mean.apply(&tokens, 2, &mut out);
        assert_eq!(out, [3.0, 2.0 / 3.0]);
        Pooling::Max.apply(&tokens, 2, &mut out);
        assert_eq!(out, [5.0, 4.0]);
        Pooling::Cls.apply(&tokens, 2, &mut out);
        assert_eq!(out, [1.0, -2.0]);
        Pooling::LastToken.apply(&tokens, 2, &mut out);
        assert_eq!(out, [5.0, 0.0]);
        Pooling::WeightedMean.apply(&tokens, 2, &mut out);
        assert_eq!(out, [(1.0 + 6.0 + 15.0) / 6.0, (-2.0 + 8.0) / 6.0]);
    }

    #[test]
    fn config_rejects_other_models() {
        let v: Value = serde_json::json!({"model_type": "t5", "hidden_size": 8});
        assert!(BertConfig::from_json(&v).unwrap_err().contains("`t5`"));
        let v: Value = serde_json::json!({
            "model_type": "bert", "vocab_size": 10, "hidden_size": 10, "num_hidden_layers": 1,
            "num_attention_heads": 3, "intermediate_size": 4, "max_position_embeddings": 8
        });
        assert!(BertConfig::from_json(&v).unwrap_err().contains("multiple"));
    }

    #[test]
    fn roberta_positions_start_after_the_padding_index() {
        let mut v: Value = serde_json::json!({
            "model_type": "xlm-roberta", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 4, "max_position_embeddings": 514,
            "type_vocab_size": 1, "pad_token_id": 1
        });
        let cfg = BertConfig::from_json(&v).unwrap();
        assert_eq!((cfg.position_offset, cfg.max_positions()), (2, 512));
        v["model_type"] = "bert".into();
        let cfg = BertConfig::from_json(&v).unwrap();
        assert_eq!((cfg.position_offset, cfg.max_positions()), (0, 514));
        v["model_type"] = "roberta".into();
        v["max_position_embeddings"] = 3.into();
        assert!(
            BertConfig::from_json(&v)
                .unwrap_err()
                .contains("no positions")
        );
    }
}
