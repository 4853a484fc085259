//! Continuing a prompt concept by concept with a trained LCM, and turning the continuation
//! back into text.
//!
//! The loop ([`continue_prompt`]) works in the model's normalised space and applies the
//! stop rules in the encoder's raw space ([`StopRules`]): it stops when the next concept
//! is close to the end-of-text concept, when it repeats the previous one, when enough
//! sentences were generated, or when the model's context is full. The continuation is then
//! decoded ([`decode_continuation`]) by retrieval over a sentence bank or by a trained
//! decoder ([`ContinuationDecoder`]).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use lcm_concept::segment::segment;
use lcm_concept::{ConceptDecoder, ConceptEncoder, DecodeConfig, Decoded};
use lcm_data::RetrievalDecoder;
use lcm_model::generate::{DiffusionSampling, row_cosines};
use lcm_train::checkpoint::new_rng;
use serde_json::{Value, json};

use crate::encoders::AnyDecoder;
use crate::fused_generate::Generator;
use crate::load::TrainedLcm;
use crate::store::{BankNotice, retrieval_decoder};
use crate::{Result, WorkflowError};

/// When a continuation ends (besides a full context).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StopRules {
    /// Most sentences generated.
    pub max_sentences: usize,
    /// Stop when the next concept's cosine with the end-of-text concept reaches this.
    pub eos_threshold: f32,
    /// Stop when the next concept's cosine with the previous one reaches this.
    pub repetition_threshold: f32,
}

impl Default for StopRules {
    fn default() -> Self {
        Self {
            max_sentences: 8,
            eos_threshold: 0.9,
            repetition_threshold: 0.9,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    EndOfText,
    Repetition,
    MaxSentences,
    ContextFull,
}

impl Stop {
    /// The name in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Stop::EndOfText => "end-of-text",
            Stop::Repetition => "repetition",
            Stop::MaxSentences => "max-sentences",
            Stop::ContextFull => "context-full",
        }
    }

    /// A sentence for people.
    pub fn describe(self) -> &'static str {
        match self {
            Stop::EndOfText => "the model predicted the end-of-text concept",
            Stop::Repetition => "the model repeated its previous concept",
            Stop::MaxSentences => "--max-sentences reached",
            Stop::ContextFull => "the model's context is full",
        }
    }
}

/// The sentences of a prompt text, refusing a prompt without any.
pub fn prompt_sentences(text: &str) -> Result<Vec<String>> {
    let prompt = segment(text);
    if prompt.is_empty() {
        return Err(WorkflowError::Refused(
            "the prompt holds no sentence; pass some text (argument, --prompt-file or stdin)"
                .into(),
        ));
    }
    Ok(prompt)
}

/// The raw concepts `[N, D]` of the prompt's sentences.
pub fn encode_prompt(encoder: &dyn ConceptEncoder, prompt: &[String]) -> Result<Tensor> {
    encode_prompt_in(encoder, prompt, None)
}

/// [`encode_prompt`] with the prompt's language (a SONAR code; SONAR's encoder needs it).
pub fn encode_prompt_in(
    encoder: &dyn ConceptEncoder,
    prompt: &[String],
    lang: Option<&str>,
) -> Result<Tensor> {
    let refs: Vec<&str> = prompt.iter().map(String::as_str).collect();
    Ok(encoder.encode(&refs, lang)?.to_dtype(DType::F32)?)
}

/// The generated concepts (raw space, one `[D]` tensor each) and why generation stopped.
#[derive(Debug)]
pub struct Continuation {
    pub concepts: Vec<Tensor>,
    pub stop: Stop,
}

/// Continues the prompt whose raw concepts are `prompt_raw` (`[N, D]`, see
/// [`encode_prompt`]) under `rules`; `eos` is the raw end-of-text embedding and `seed`
/// seeds the diffusion noise (the same seed gives the same continuation).
pub fn continue_prompt(
    trained: &TrainedLcm,
    prompt_raw: &Tensor,
    eos: &[f32],
    rules: &StopRules,
    sampling: &DiffusionSampling,
    seed: u64,
) -> Result<Continuation> {
    let model = trained.model();
    let normalizer = &trained.normalizer;
    let prompt_len = prompt_raw.dim(0)?;
    if prompt_len > model.max_seq_len() {
        return Err(WorkflowError::Refused(format!(
            "the prompt has {prompt_len} sentences but the model's context holds {}; shorten it",
            model.max_seq_len()
        )));
    }
    if prompt_len == model.max_seq_len() && rules.max_sentences > 0 {
        return Err(WorkflowError::Refused(format!(
            "the prompt's {prompt_len} sentences fill the model's whole context ({}), so no \
             sentence can follow; shorten it by at least one sentence",
            model.max_seq_len()
        )));
    }
    let eos = Tensor::new(eos, &Device::Cpu)?;
    let mut state = model.new_state();
    // [N, D] raw → [1, N, D] normalised prefix.
    model.extend(&mut state, &normalizer.normalize(prompt_raw)?.unsqueeze(0)?)?;

    let mut rng = new_rng(seed);
    // A Two-Tower model's denoiser runs on the fused engine (candle for the others).
    let mut generator = Generator::new(model);
    let mut previous = prompt_raw.get(prompt_len - 1)?;
    let mut concepts: Vec<Tensor> = Vec::new();
    let mut stop = Stop::MaxSentences;
    while concepts.len() < rules.max_sentences {
        if state.len() >= model.max_seq_len() {
            stop = Stop::ContextFull;
            break;
        }
        let next = generator.next_concept(&state, sampling, 1, &mut rng)?;
        // [D], raw space: where the stop rules and the decoder work.
        let raw = normalizer.denormalize(&next)?.flatten_all()?;
        let pair = Tensor::stack(&[&eos, &previous], 0)?;
        let cos = row_cosines(&pair, &raw)?;
        if cos[0] >= rules.eos_threshold {
            stop = Stop::EndOfText;
            break;
        }
        if cos[1] >= rules.repetition_threshold {
            stop = Stop::Repetition;
            break;
        }
        model.extend(&mut state, &next)?;
        previous = raw.clone();
        concepts.push(raw);
    }
    Ok(Continuation { concepts, stop })
}

/// The decoder a continuation is turned into text with.
pub enum ContinuationDecoder {
    /// Nearest sentence of a bank.
    Retrieval(Box<RetrievalDecoder>),
    /// A decoder trained for the model's encoder (`lcm train-decoder`), searching with
    /// `beam` beams; `root` is its run folder.
    Trained {
        decoder: Box<dyn ConceptDecoder>,
        root: PathBuf,
        beam: usize,
    },
    /// SONAR's decoder (`--decoder sonar`), decoding into the language asked for with `beam`
    /// beams; `root` is its folder.
    Sonar {
        decoder: Box<dyn ConceptDecoder>,
        root: PathBuf,
        beam: usize,
    },
}

impl ContinuationDecoder {
    /// A generative decoder (trained or SONAR's, from `root`) searching with `beam` beams.
    pub fn generative(decoder: AnyDecoder, root: PathBuf, beam: usize) -> Self {
        match decoder {
            AnyDecoder::Sonar(decoder) => ContinuationDecoder::Sonar {
                decoder,
                root,
                beam,
            },
            AnyDecoder::Trained(decoder) => ContinuationDecoder::Trained {
                decoder,
                root,
                beam,
            },
        }
    }

    /// The retrieval decoder over `bank`, else over the bank of `store` (built on first
    /// use), for concepts of `encoder_id` / `dim`; it never returns a sentence of
    /// `exclude` (the prompt's, unless the caller allows them).
    pub fn retrieval(
        bank: Option<&Path>,
        store: Option<&Path>,
        encoder_id: &str,
        dim: usize,
        exclude: Option<&[String]>,
        notify: &mut dyn FnMut(BankNotice<'_>),
    ) -> Result<Self> {
        let decoder = retrieval_decoder(bank, store, encoder_id, dim, notify)?;
        Ok(ContinuationDecoder::Retrieval(Box::new(match exclude {
            Some(sentences) => decoder.with_exclude(sentences.iter().cloned()),
            None => decoder,
        })))
    }

    /// `"retrieval"`, `"trained"` or `"sonar"`.
    pub fn kind(&self) -> &'static str {
        match self {
            ContinuationDecoder::Retrieval(_) => "retrieval",
            ContinuationDecoder::Trained { .. } => "trained",
            ContinuationDecoder::Sonar { .. } => "sonar",
        }
    }

    /// The bank folder or the trained decoder's run folder.
    pub fn path(&self) -> &Path {
        match self {
            ContinuationDecoder::Retrieval(d) => d.bank().root(),
            ContinuationDecoder::Trained { root, .. } | ContinuationDecoder::Sonar { root, .. } => {
                root
            }
        }
    }

    /// Whether [`decode_continuation`] re-encodes the decoded text to score it (a trained
    /// decoder has no similarity of its own; retrieval has the bank's cosine).
    pub fn rescores(&self) -> bool {
        !matches!(self, ContinuationDecoder::Retrieval(_))
    }
}

/// Decodes the generated concepts. The score of a retrieved sentence is its cosine with
/// the concept; a generated text (trained or SONAR decoder) is scored by the round-trip
/// cosine cos(encode(text), concept) with `encoder` (no score without one, or for empty
/// text). `lang` is the language SONAR decodes into (and the text is re-encoded in).
pub fn decode_continuation(
    decoder: &ContinuationDecoder,
    concepts: &[Tensor],
    encoder: Option<&dyn ConceptEncoder>,
    lang: Option<&str>,
) -> Result<Vec<Decoded>> {
    if concepts.is_empty() {
        return Ok(Vec::new());
    }
    let stacked = Tensor::stack(concepts, 0)?;
    match decoder {
        ContinuationDecoder::Retrieval(d) => {
            Ok(d.decode(&stacked, None, &DecodeConfig::default())?)
        }
        ContinuationDecoder::Trained { decoder, beam, .. }
        | ContinuationDecoder::Sonar { decoder, beam, .. } => {
            let config = DecodeConfig {
                beam_size: (*beam).max(1),
                ..DecodeConfig::default()
            };
            let mut decoded = decoder.decode(&stacked, lang, &config)?;
            for (d, concept) in decoded.iter_mut().zip(concepts) {
                d.score = match encoder {
                    Some(encoder) if !d.text.trim().is_empty() => {
                        let e = encoder.encode(&[d.text.as_str()], lang)?;
                        Some(row_cosines(&e.to_dtype(DType::F32)?, concept)?[0])
                    }
                    _ => None,
                };
            }
            Ok(decoded)
        }
    }
}

/// A decoded continuation as `lcm generate --json` prints it.
pub fn continuation_json(
    label: &str,
    prompt: &[String],
    decoded: &[Decoded],
    stop: Stop,
    decoder: &ContinuationDecoder,
    sampling: &DiffusionSampling,
    seed: u64,
) -> Value {
    let sentences: Vec<Value> = decoded
        .iter()
        .map(|d| json!({ "text": d.text, "similarity": d.score }))
        .collect();
    let mut doc = json!({
        "model": label,
        "prompt": prompt,
        "generated": sentences,
        "stop": stop.name(),
        "decoder": decoder.kind(),
        "sampling": sampling,
        "seed": seed,
    });
    // "bank" for the retrieval decoder, the folder of a trained or SONAR one.
    let key = match decoder {
        ContinuationDecoder::Retrieval(_) => "bank",
        ContinuationDecoder::Trained { .. } | ContinuationDecoder::Sonar { .. } => "decoder_path",
    };
    doc[key] = decoder.path().display().to_string().into();
    doc
}
