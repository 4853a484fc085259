//! Round-trip evaluation of a trained decoder next to the retrieval baseline, on the
//! held-out sentences of the store it was trained on: decode each held-out concept `x`,
//! then score the text against the reference sentence (corpus BLEU, mean sentence BLEU,
//! exact match; sacreBLEU's definitions, `lcm_eval::bleu`) and re-encode it
//! (`cos(encode(decode(x)), x)`, an empty text scoring 0).
//!
//! The held-out split is the one the decoder was trained with ([`DecoderMeta::valid_fraction`]),
//! so no evaluated sentence was trained on. A retrieval baseline must not have them as
//! candidates either, or it would return the reference itself: the caller builds it
//! excluding [`HeldOutSample::held_out`].
//!
//! [`DecoderMeta::valid_fraction`]: crate::inference::DecoderMeta::valid_fraction

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use lcm_concept::{ConceptDecoder, ConceptEncoder, DecodeConfig, Decoded};
use lcm_data::store::ConceptStore;
use serde::Serialize;

use crate::error::{DecoderError, Result};
use crate::inference::TrainedDecoder;
use crate::split::SentenceSplit;

/// Name of the retrieval baseline in the report.
pub const RETRIEVAL_LABEL: &str = "retrieval (held-out sentences excluded)";
/// Concepts per decode call (the progress granularity).
const DECODE_CHUNK: usize = 16;
/// Sentences per encoder call when re-encoding the decoded texts.
const ENCODE_CHUNK: usize = 64;
/// Examples in the report (fewer when fewer sentences are evaluated).
const EXAMPLES: usize = 5;

/// Settings of a round trip.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundTripConfig {
    /// Held-out sentences evaluated, evenly spread over the held-out split.
    pub limit: usize,
    /// Beams of the trained decoder's search (1: greedy; 0 is taken as 1).
    pub beam: usize,
    /// Most tokens per decoded sentence.
    pub max_len: usize,
}

impl RoundTripConfig {
    /// The generation settings both decoders are called with.
    pub fn decode_config(&self) -> DecodeConfig {
        DecodeConfig {
            beam_size: self.beam.max(1),
            max_len: self.max_len,
            ..DecodeConfig::default()
        }
    }
}

/// The held-out sentences of a store that a round trip evaluates.
#[derive(Clone, Debug)]
pub struct HeldOutSample {
    /// The store, as given.
    pub store: String,
    pub encoder_id: String,
    pub dim: usize,
    /// The decoder's held-out fraction.
    pub valid_fraction: f64,
    /// Every distinct held-out sentence: what a retrieval baseline must exclude.
    pub held_out: Vec<String>,
    /// The evaluated sentences, `held_out[i · total / n]` for `i < n`.
    pub references: Vec<String>,
    /// Their stored concepts, `references.len() × dim`.
    pub vectors: Vec<f32>,
}

impl HeldOutSample {
    /// Up to `limit` held-out sentences of the store at `store`, split as `decoder` was
    /// trained; refuses a store of another embedding space before reading its sentences.
    pub fn load(decoder: &TrainedDecoder, store: &Path, limit: usize) -> Result<Self> {
        if limit == 0 {
            return Err(DecoderError::input(
                "a round trip needs at least one sentence (limit 0)",
            ));
        }
        let opened = ConceptStore::open(store)
            .map_err(|e| DecoderError::file(store, format!("cannot open the store: {e}")))?;
        decoder.check_space(&opened.meta.encoder_id, opened.meta.dim)?;
        drop(opened);
        Self::load_split(store, decoder.meta().valid_fraction, limit)
    }

    /// Up to `limit` held-out sentences of the store at `store` at the held-out fraction
    /// `valid_fraction`: for a decoder that was not trained on the store (SONAR's), the
    /// split `lcm train` and `lcm eval` use.
    pub fn load_split(store: &Path, valid_fraction: f64, limit: usize) -> Result<Self> {
        if limit == 0 {
            return Err(DecoderError::input(
                "a round trip needs at least one sentence (limit 0)",
            ));
        }
        let split = SentenceSplit::load(store, valid_fraction)?;
        if split.valid_texts.is_empty() {
            return Err(DecoderError::file(
                store,
                format!("has no held-out sentence at validation fraction {valid_fraction}"),
            ));
        }
        let total = split.valid_texts.len();
        let n = limit.min(total);
        let picked: Vec<usize> = (0..n).map(|i| i * total / n).collect();
        let references = picked
            .iter()
            .map(|&i| split.valid_texts[i].clone())
            .collect();
        let mut vectors = Vec::with_capacity(n * split.dim);
        for &i in &picked {
            vectors.extend_from_slice(split.valid_vector(i));
        }
        Ok(Self {
            store: store.display().to_string(),
            encoder_id: split.encoder_id,
            dim: split.dim,
            valid_fraction,
            held_out: split.valid_texts,
            references,
            vectors,
        })
    }

    /// Sentences evaluated.
    pub fn len(&self) -> usize {
        self.references.len()
    }

    pub fn is_empty(&self) -> bool {
        self.references.is_empty()
    }
}

/// Progress of [`evaluate`]: `done` of `total` concepts decoded by `decoder`.
#[derive(Clone, Copy, Debug)]
pub struct DecodingProgress<'a> {
    /// "trained decoder" or "retrieval decoder".
    pub decoder: &'a str,
    pub done: usize,
    pub total: usize,
}

/// Round-trip scores of one decoder.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecoderScores {
    pub decoder: String,
    pub corpus_bleu: f64,
    pub mean_sentence_bleu: f64,
    /// Fraction of decoded texts equal to their reference.
    pub exact_match: f64,
    /// Mean `cos(encode(decode(x)), x)`.
    pub round_trip_cosine: f64,
    /// Decoding time.
    pub seconds: f64,
}

/// One evaluated sentence and both decodings of its concept.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Example {
    pub reference: String,
    pub trained: String,
    pub retrieval: String,
}

/// What `lcm eval-decoder` prints and writes (`--json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoundTripReport {
    pub store: String,
    /// The decoder's run folder, as given.
    pub decoder: String,
    pub encoder_id: String,
    pub held_out_sentences: usize,
    pub evaluated: usize,
    pub valid_fraction: f64,
    pub beam: usize,
    /// The trained decoder's scores, then the retrieval baseline's.
    pub results: Vec<DecoderScores>,
    /// Up to five sentences spread over the evaluated ones.
    pub examples: Vec<Example>,
}

impl RoundTripReport {
    pub fn trained(&self) -> &DecoderScores {
        &self.results[0]
    }

    pub fn retrieval(&self) -> &DecoderScores {
        &self.results[1]
    }

    /// The report as pretty JSON, keys ordered as a `serde_json::Value` orders them (the
    /// format `lcm eval-decoder --json` has always written).
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let serialise = |e: serde_json::Error| DecoderError::input(format!("serialising: {e}"));
        let value = serde_json::to_value(self).map_err(serialise)?;
        serde_json::to_vec_pretty(&value).map_err(serialise)
    }

    /// Writes [`Self::to_json`] to `path` atomically.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        Ok(lcm_util::fs::write_atomic(path, &self.to_json()?)?)
    }
}

/// The generative decoder a round trip evaluates: a trained decoder
/// ([`Generative::trained`]) or another one, such as SONAR's.
pub struct Generative<'a> {
    pub decoder: &'a dyn ConceptDecoder,
    /// How the results name it (`trained (runs/dec step 2000)`).
    pub label: String,
    /// How progress names it (`trained decoder`).
    pub kind: &'static str,
    /// Its folder, as given.
    pub path: String,
    /// The language it decodes into, for decoders that take one (SONAR).
    pub lang: Option<&'a str>,
}

impl<'a> Generative<'a> {
    pub fn trained(decoder: &'a TrainedDecoder) -> Self {
        Self {
            decoder,
            label: format!(
                "trained ({} step {})",
                decoder.root().display(),
                decoder.meta().step
            ),
            kind: "trained decoder",
            path: decoder.root().display().to_string(),
            lang: None,
        }
    }
}

/// Decodes the concepts of `sample` with `trained` and with `retrieval` (which must exclude
/// `sample.held_out`), and scores both against the references; `encoder` (the store's)
/// re-encodes the decoded texts.
pub fn evaluate(
    sample: &HeldOutSample,
    trained: &TrainedDecoder,
    retrieval: &dyn ConceptDecoder,
    encoder: &dyn ConceptEncoder,
    config: &RoundTripConfig,
    progress: &mut dyn FnMut(DecodingProgress<'_>),
) -> Result<RoundTripReport> {
    let generative = Generative::trained(trained);
    evaluate_with(sample, &generative, retrieval, encoder, config, progress)
}

/// [`evaluate`] for any generative decoder.
pub fn evaluate_with(
    sample: &HeldOutSample,
    generative: &Generative<'_>,
    retrieval: &dyn ConceptDecoder,
    encoder: &dyn ConceptEncoder,
    config: &RoundTripConfig,
    progress: &mut dyn FnMut(DecodingProgress<'_>),
) -> Result<RoundTripReport> {
    if encoder.id() != sample.encoder_id {
        return Err(DecoderError::input(format!(
            "{} holds `{}` concepts but the encoder is `{}`; pass the store's encoder",
            sample.store,
            sample.encoder_id,
            encoder.id()
        )));
    }
    let n = sample.len();
    let decode = config.decode_config();
    let concepts = Tensor::from_vec(sample.vectors.clone(), (n, sample.dim), &Device::Cpu)?;
    let (trained_out, trained_s) = decode_all(
        generative.kind,
        generative.decoder,
        &concepts,
        &decode,
        generative.lang,
        progress,
    )?;
    let (retrieval_out, retrieval_s) = decode_all(
        "retrieval decoder",
        retrieval,
        &concepts,
        &decode,
        None,
        progress,
    )?;

    let results = vec![
        score(sample, encoder, &generative.label, &trained_out, trained_s)?,
        score(
            sample,
            encoder,
            RETRIEVAL_LABEL,
            &retrieval_out,
            retrieval_s,
        )?,
    ];
    let shown = EXAMPLES.min(n);
    let examples = (0..shown)
        .map(|i| i * n / shown)
        .map(|i| Example {
            reference: sample.references[i].clone(),
            trained: trained_out[i].text.clone(),
            retrieval: retrieval_out[i].text.clone(),
        })
        .collect();
    Ok(RoundTripReport {
        store: sample.store.clone(),
        decoder: generative.path.clone(),
        encoder_id: sample.encoder_id.clone(),
        held_out_sentences: sample.held_out.len(),
        evaluated: n,
        valid_fraction: sample.valid_fraction,
        beam: decode.beam_size,
        results,
        examples,
    })
}

/// Every row of `concepts` decoded by `decoder`, and the seconds it took.
fn decode_all(
    name: &str,
    decoder: &dyn ConceptDecoder,
    concepts: &Tensor,
    config: &DecodeConfig,
    lang: Option<&str>,
    progress: &mut dyn FnMut(DecodingProgress<'_>),
) -> Result<(Vec<Decoded>, f64)> {
    let t0 = Instant::now();
    let n = concepts.dim(0)?;
    let report = |done| DecodingProgress {
        decoder: name,
        done,
        total: n,
    };
    progress(report(0));
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(DECODE_CHUNK) {
        let len = DECODE_CHUNK.min(n - start);
        out.extend(decoder.decode(&concepts.narrow(0, start, len)?, lang, config)?);
        progress(report(start + len));
    }
    Ok((out, t0.elapsed().as_secs_f64()))
}

/// The scores of one decoder's texts against the sample's references.
fn score(
    sample: &HeldOutSample,
    encoder: &dyn ConceptEncoder,
    name: &str,
    decoded: &[Decoded],
    seconds: f64,
) -> Result<DecoderScores> {
    let n = sample.len() as f64;
    let hyps: Vec<&str> = decoded.iter().map(|d| d.text.as_str()).collect();
    let refs: Vec<&str> = sample.references.iter().map(String::as_str).collect();
    let corpus = lcm_eval::bleu::try_corpus_bleu(&hyps, &refs)?.score;
    let mut sentence_sum = 0.0;
    for (h, r) in hyps.iter().zip(&refs) {
        sentence_sum += lcm_eval::bleu::sentence_bleu(h, r).score;
    }
    let exact = hyps.iter().zip(&refs).filter(|(h, r)| h == r).count();
    let cosines = round_trip_cosines(encoder, &hyps, &sample.vectors, sample.dim)?;
    Ok(DecoderScores {
        decoder: name.to_string(),
        corpus_bleu: corpus,
        mean_sentence_bleu: sentence_sum / n,
        exact_match: exact as f64 / n,
        round_trip_cosine: cosines.iter().sum::<f64>() / n,
        seconds,
    })
}

/// `cos(encode(hyp), x)` per sentence; an empty hypothesis scores 0 (there is nothing to
/// encode, and no text is no round trip).
fn round_trip_cosines(
    encoder: &dyn ConceptEncoder,
    hyps: &[&str],
    x: &[f32],
    dim: usize,
) -> Result<Vec<f64>> {
    let mut out = vec![0.0; hyps.len()];
    let nonempty: Vec<usize> = (0..hyps.len())
        .filter(|&i| !hyps[i].trim().is_empty())
        .collect();
    for chunk in nonempty.chunks(ENCODE_CHUNK) {
        let texts: Vec<&str> = chunk.iter().map(|&i| hyps[i]).collect();
        let encoded = encoder
            .encode(&texts, None)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        for (&i, e) in chunk.iter().zip(encoded) {
            out[i] = lcm_util::vector::cosine(&e, &x[i * dim..(i + 1) * dim]);
        }
    }
    Ok(out)
}
