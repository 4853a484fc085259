//! A trained decoder as a [`ConceptDecoder`]: the run folder's `decoder.json`
//! ([`DecoderMeta`]), its tokenizer and final weights, loaded as plain tensors, and decoding
//! by beam search or sampling through the SONAR port's search.

use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use lcm_concept::{ConceptDecoder, DecodeConfig, Decoded};
use lcm_sonar::SpecialIds;
use lcm_sonar::generate::{BeamSearchConfig, best_hypotheses};
use lcm_sonar::model::{SonarDecoder, SonarDecoderConfig};
use serde::{Deserialize, Serialize};

use crate::error::{DecoderError, Result};
use crate::tokenizer::DecoderTokenizer;
use crate::train::DecoderTrainConfig;

/// `decoder.json`.
pub const META_FILE: &str = "decoder.json";
/// The tokenizer inside a run folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Final weights inside a run folder.
pub const MODEL_FILE: &str = "model.safetensors";
/// Format tag of `decoder.json`.
pub const FORMAT: &str = "lcm-trained-decoder-1";

/// Rows decoded per search call.
const DECODE_CHUNK: usize = 32;

/// A decoder trained by [`crate::train_decoder`], as a [`ConceptDecoder`]: beam search when
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
            return Err(DecoderError::file(
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
            return Err(DecoderError::file(
                &path,
                "missing; training has not finished a call yet (run `lcm train-decoder \
                 --resume` to write it)",
            ));
        }
        let device = Device::Cpu;
        let tensors = candle_core::safetensors::load(&path, &device)
            .map_err(|e| DecoderError::file(&path, format!("cannot read weights: {e}")))?;
        let model = SonarDecoder::new(
            &meta.config,
            VarBuilder::from_tensors(tensors, DType::F32, &device),
        )
        .map_err(|e| DecoderError::file(&path, format!("weights do not fit the config: {e}")))?;
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
            return Err(DecoderError::file(
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
            |e: DecoderError| lcm_concept::ConceptError::Invalid(format!("trained decoder: {e}"));
        let concepts = concepts.to_dtype(DType::F32)?;
        let (n, d) = concepts.dims2().map_err(|_| {
            to_concept(DecoderError::input(format!(
                "concepts must be [N, {}], got {:?}",
                self.meta.dim,
                concepts.dims()
            )))
        })?;
        if d != self.meta.dim {
            return Err(to_concept(DecoderError::input(format!(
                "the decoder reads {}-d concepts of `{}`, got {d}-d ones",
                self.meta.dim, self.meta.encoder_id
            ))));
        }
        let values = concepts.flatten_all()?.to_vec1::<f32>()?;
        if let Some(bad) = values
            .chunks_exact(d)
            .position(|r| r.iter().any(|v| !v.is_finite()))
        {
            return Err(to_concept(DecoderError::input(format!(
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

/// `decoder.json`: what [`TrainedDecoder::open`] needs besides the weights and tokenizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecoderMeta {
    pub format: String,
    /// Content id of the encoder whose space the decoder reads.
    pub encoder_id: String,
    /// Dimension of the concepts.
    pub dim: usize,
    pub config: SonarDecoderConfig,
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
            DecoderError::file(
                &path,
                format!("{e}; is this a `lcm train-decoder --out` folder?"),
            )
        })?;
        let meta: Self = serde_json::from_slice(&bytes)
            .map_err(|e| DecoderError::file(&path, format!("invalid decoder metadata: {e}")))?;
        if meta.format != FORMAT {
            return Err(DecoderError::file(
                &path,
                format!("format `{}`, expected `{FORMAT}`", meta.format),
            ));
        }
        Ok(meta)
    }

    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| DecoderError::input(format!("serialising decoder metadata: {e}")))?;
        Ok(lcm_util::fs::write_atomic(&dir.join(META_FILE), &json)?)
    }
}
