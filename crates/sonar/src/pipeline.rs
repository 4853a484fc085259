//! SONAR as a concept encoder and decoder: tokenizer + model + generation behind the
//! project's [`ConceptEncoder`] / [`ConceptDecoder`] traits, with the settings of
//! sonar-space's `TextToEmbeddingModelPipeline` and `EmbeddingToTextModelPipeline`.
//!
//! A SONAR folder holds the official files under their published names (see
//! [`SonarFiles`]); `lcm models fetch sonar` says where they come from. They are
//! CC-BY-NC-4.0 and never bundled.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use lcm_concept::{ConceptDecoder, ConceptEncoder, DecodeConfig, Decoded};
use sha2::{Digest, Sha256};

use crate::error::{Result, SonarError};
use crate::generate::{BeamSearchConfig, best_hypotheses};
use crate::model::{SonarDecoder, SonarEncoder};
use crate::tokenizer::SonarTokenizer;
use crate::weights::{load_decoder, load_encoder};

/// Language used when the caller gives none.
pub const DEFAULT_LANG: &str = "eng_Latn";

/// One published SONAR file: name in the folder, where it is published, what it is.
#[derive(Debug, Clone, Copy)]
pub struct SonarFile {
    pub name: &'static str,
    pub url: &'static str,
    pub what: &'static str,
}

/// The files of the text encoder and decoder, as published by Meta (SONAR README, model cards
/// `text_sonar_basic_encoder.yaml` / `text_sonar_basic_decoder.yaml`).
pub struct SonarFiles;

impl SonarFiles {
    pub const ENCODER: SonarFile = SonarFile {
        name: "sonar_text_encoder.pt",
        url: "https://dl.fbaipublicfiles.com/SONAR/sonar_text_encoder.pt",
        what: "text encoder, 766,091,264 parameters (fairseq2 layout)",
    };
    pub const DECODER: SonarFile = SonarFile {
        name: "sonar_text_decoder.pt",
        url: "https://dl.fbaipublicfiles.com/SONAR/sonar_text_decoder.pt",
        what: "text decoder, 866,902,016 parameters (fairseq2 layout)",
    };
    pub const TOKENIZER: SonarFile = SonarFile {
        name: "sentencepiece.source.256000.model",
        url: "https://dl.fbaipublicfiles.com/SONAR/sentencepiece.source.256000.model",
        what: "SentencePiece model, 256,000 pieces",
    };
    pub const ALL: [SonarFile; 3] = [Self::ENCODER, Self::DECODER, Self::TOKENIZER];
}

/// Optional file of a SONAR folder for checkpoints other than the published ones (retrained
/// or tiny test models): `{"num_heads": 4, "languages": ["eng_Latn", "fra_Latn"]}`. Heads
/// cannot be read from a checkpoint (default `model_dim / 64`); `languages` are the
/// tokenizer's language tags in id order (default: the card's 202).
pub const FOLDER_CONFIG: &str = "lcm-sonar.json";

/// What [`FOLDER_CONFIG`] holds.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FolderConfig {
    num_heads: Option<usize>,
    languages: Option<Vec<String>>,
}

fn folder_config(dir: &Path) -> Result<FolderConfig> {
    let path = dir.join(FOLDER_CONFIG);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| SonarError::file(&path, format!("invalid {FOLDER_CONFIG}: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FolderConfig::default()),
        Err(e) => Err(SonarError::file(&path, e.to_string())),
    }
}

/// The folder's tokenizer, with the languages its config names.
fn folder_tokenizer(dir: &Path, config: &FolderConfig) -> Result<SonarTokenizer> {
    let spm = require(dir, SonarFiles::TOKENIZER)?;
    let languages = config
        .languages
        .clone()
        .unwrap_or_else(SonarTokenizer::sonar_languages);
    SonarTokenizer::from_file(&spm, &languages)
}

/// Whether `dir` holds a SONAR text encoder (its checkpoint under the published name).
pub fn is_sonar_dir(dir: &Path) -> bool {
    dir.join(SonarFiles::ENCODER.name).is_file()
}

/// Parameter counts of the published checkpoints (reference notes), used to check a download.
pub const ENCODER_PARAMETERS: usize = 766_091_264;
pub const DECODER_PARAMETERS: usize = 866_902_016;

/// The default SONAR folder: `$LCM_HOME/models/sonar`.
pub fn default_sonar_dir() -> PathBuf {
    lcm_concept::resolve::lcm_home()
        .join("models")
        .join("sonar")
}

fn require(dir: &Path, file: SonarFile) -> Result<PathBuf> {
    let path = dir.join(file.name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(SonarError::file(
            &path,
            format!(
                "missing ({}). Run `lcm models fetch sonar --download` (needs internet), or put \
                 the file there from {}",
                file.what, file.url
            ),
        ))
    }
}

/// A short content id of a large checkpoint: sha256 of its size, first and last MiB. Hashing
/// all 3 GB would take seconds on every start; size + both ends tell the published
/// checkpoints (and any retrained one) apart.
pub fn checkpoint_fingerprint(path: &Path) -> Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    const CHUNK: u64 = 1 << 20;
    let mut file = std::fs::File::open(path).map_err(|e| SonarError::file(path, e.to_string()))?;
    let len = file.metadata()?.len();
    let mut hasher = Sha256::new();
    hasher.update(len.to_le_bytes());
    let mut buf = vec![0u8; CHUNK.min(len) as usize];
    file.read_exact(&mut buf)?;
    hasher.update(&buf);
    if len > CHUNK {
        file.seek(SeekFrom::Start(len - CHUNK.min(len)))?;
        file.read_exact(&mut buf)?;
        hasher.update(&buf);
    }
    let digest = hasher.finalize();
    Ok(digest.iter().take(6).map(|b| format!("{b:02x}")).collect())
}

/// The checkpoint's embedding rows and the tokenizer's ids must be the same vocabulary.
fn check_vocab(weights: &Path, what: &str, rows: usize, tokenizer: &SonarTokenizer) -> Result<()> {
    if tokenizer.vocab_size() == rows {
        return Ok(());
    }
    Err(SonarError::file(
        weights,
        format!(
            "the {what} has {rows} embedding rows but the tokenizer gives {} ids; use the \
             SentencePiece model published with this checkpoint",
            tokenizer.vocab_size()
        ),
    ))
}

/// SONAR's text encoder behind [`ConceptEncoder`] (`TextToEmbeddingModelPipeline` semantics:
/// `[lang, pieces…, </s>]`, truncated to the encoder's 514 positions, mean pooling).
pub struct SonarTextEncoder {
    model: SonarEncoder,
    tokenizer: SonarTokenizer,
    id: String,
    batch_size: usize,
}

impl SonarTextEncoder {
    /// Loads `sonar_text_encoder.pt` and the SentencePiece model from a SONAR folder.
    /// A [`FOLDER_CONFIG`] file, if present, gives the heads and languages.
    pub fn open(dir: &Path) -> Result<Self> {
        let weights = require(dir, SonarFiles::ENCODER)?;
        let config = folder_config(dir)?;
        let tokenizer = folder_tokenizer(dir, &config)?;
        Self::from_parts(&weights, tokenizer, config.num_heads)
    }

    /// Loads any SONAR-layout encoder checkpoint (`.pt` or `.safetensors`) with a tokenizer;
    /// `num_heads` defaults to `model_dim / 64`.
    pub fn from_parts(
        weights: &Path,
        tokenizer: SonarTokenizer,
        num_heads: Option<usize>,
    ) -> Result<Self> {
        let model = load_encoder(weights, num_heads, &Device::Cpu)?;
        check_vocab(weights, "encoder", model.config().vocab_size, &tokenizer)?;
        let id = format!("sonar-text-encoder@{}", checkpoint_fingerprint(weights)?);
        Ok(Self {
            model,
            tokenizer,
            id,
            batch_size: 16,
        })
    }

    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    pub fn tokenizer(&self) -> &SonarTokenizer {
        &self.tokenizer
    }

    /// Token ids as the pipeline feeds them: `[lang, pieces…, </s>]`, cut to `max_seq_len`.
    pub fn token_ids(&self, sentence: &str, lang: &str) -> Result<Vec<u32>> {
        let mut ids = self.tokenizer.encode_source(sentence, lang)?;
        // sonar-space truncates to the first max_seq_len ids, dropping the final </s>.
        ids.truncate(self.model.config().max_seq_len);
        Ok(ids)
    }
}

impl ConceptEncoder for SonarTextEncoder {
    fn encode(&self, sentences: &[&str], lang: Option<&str>) -> lcm_concept::Result<Tensor> {
        let lang = lang.unwrap_or(DEFAULT_LANG);
        let mut rows = Vec::with_capacity(sentences.len());
        for chunk in sentences.chunks(self.batch_size) {
            let ids = chunk
                .iter()
                .map(|s| self.token_ids(s, lang))
                .collect::<Result<Vec<_>>>()
                .map_err(to_concept_error)?;
            rows.push(self.model.encode(&ids).map_err(to_concept_error)?);
        }
        if rows.is_empty() {
            return Ok(Tensor::zeros((0, self.dim()), DType::F32, &Device::Cpu)?);
        }
        Ok(Tensor::cat(&rows, 0)?)
    }

    fn dim(&self) -> usize {
        self.model.config().model_dim
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn unknown_only(&self, sentences: &[&str]) -> lcm_concept::Result<Option<Vec<bool>>> {
        let unk = self.tokenizer.special_ids().unk;
        Ok(Some(
            sentences
                .iter()
                .map(|s| {
                    let pieces: Vec<(bool, String)> = self
                        .tokenizer
                        .encode_pieces(s)
                        .into_iter()
                        .map(|id| {
                            (
                                id == unk,
                                self.tokenizer.id_to_piece(id).unwrap_or_default(),
                            )
                        })
                        .collect();
                    lcm_concept::encoder::unknown_only(pieces.iter().map(|(u, t)| (*u, t.as_str())))
                })
                .collect(),
        ))
    }
}

/// SONAR's text decoder behind [`ConceptDecoder`] (`EmbeddingToTextModelPipeline`
/// semantics: prompt `[</s>, lang]`, beam 5, max_gen_len = dim + 128, capped by the decoder's
/// 512 positions). `id()` is the id of the encoder whose space it reads.
pub struct SonarTextDecoder {
    model: SonarDecoder,
    tokenizer: SonarTokenizer,
    encoder_id: String,
}

impl SonarTextDecoder {
    /// Loads `sonar_text_decoder.pt` and the SentencePiece model from a SONAR folder; the
    /// space id is that of the folder's encoder checkpoint.
    /// A [`FOLDER_CONFIG`] file, if present, gives the heads and languages.
    pub fn open(dir: &Path) -> Result<Self> {
        let weights = require(dir, SonarFiles::DECODER)?;
        let encoder = require(dir, SonarFiles::ENCODER)?;
        let config = folder_config(dir)?;
        let tokenizer = folder_tokenizer(dir, &config)?;
        let encoder_id = format!("sonar-text-encoder@{}", checkpoint_fingerprint(&encoder)?);
        Self::from_parts(&weights, tokenizer, encoder_id, config.num_heads)
    }

    pub fn from_parts(
        weights: &Path,
        tokenizer: SonarTokenizer,
        encoder_id: String,
        num_heads: Option<usize>,
    ) -> Result<Self> {
        let model = load_decoder(weights, num_heads, &Device::Cpu)?;
        check_vocab(weights, "decoder", model.config().vocab_size, &tokenizer)?;
        Ok(Self {
            model,
            tokenizer,
            encoder_id,
        })
    }

    pub fn model(&self) -> &SonarDecoder {
        &self.model
    }

    pub fn tokenizer(&self) -> &SonarTokenizer {
        &self.tokenizer
    }

    /// Decodes `[N, D]` vectors into `lang`; `config.beam_size` 0 means the pipeline's 5.
    pub fn decode_texts(
        &self,
        concepts: &Tensor,
        lang: &str,
        config: &DecodeConfig,
    ) -> Result<Vec<(String, f32)>> {
        let (n, dim) = concepts.dims2()?;
        if dim != self.model.config().model_dim {
            return Err(SonarError::Input(format!(
                "concepts have {dim} dimensions, the SONAR decoder reads {}",
                self.model.config().model_dim
            )));
        }
        let concepts = concepts.to_dtype(DType::F32)?;
        let values = concepts.flatten_all()?.to_vec1::<f32>()?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(SonarError::Input(
                "concepts contain NaN or infinite values".to_string(),
            ));
        }
        let prompt = self.tokenizer.decoder_prompt(lang)?;
        let mut search =
            BeamSearchConfig::sonar_pipeline(dim, self.model.config().max_seq_len, prompt.len());
        // DecodeConfig.max_len bounds generated tokens further when the caller asks for less.
        if config.max_len > 0 && config.max_len < search.max_gen_len {
            search.max_gen_len = config.max_len;
            search.max_seq_len = search.max_seq_len.min(prompt.len() + config.max_len);
        }
        if config.beam_size > 0 {
            search.beam_size = config.beam_size;
        }
        let hyps = best_hypotheses(
            &self.model,
            &concepts,
            &prompt,
            self.tokenizer.special_ids(),
            &search,
            config,
        )?;
        debug_assert_eq!(hyps.len(), n);
        Ok(hyps
            .into_iter()
            .map(|h| (self.tokenizer.decode(&h.ids), h.score))
            .collect())
    }
}

fn to_concept_error(e: SonarError) -> lcm_concept::ConceptError {
    lcm_concept::ConceptError::Invalid(e.to_string())
}

impl ConceptDecoder for SonarTextDecoder {
    fn decode(
        &self,
        concepts: &Tensor,
        lang: Option<&str>,
        config: &DecodeConfig,
    ) -> lcm_concept::Result<Vec<Decoded>> {
        let texts = self
            .decode_texts(concepts, lang.unwrap_or(DEFAULT_LANG), config)
            .map_err(to_concept_error)?;
        Ok(texts
            .into_iter()
            .map(|(text, score)| Decoded {
                text,
                score: Some(score),
            })
            .collect())
    }

    fn id(&self) -> &str {
        &self.encoder_id
    }

    fn dim(&self) -> usize {
        self.model.config().model_dim
    }
}
