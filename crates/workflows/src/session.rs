//! A trained LCM held ready to continue prompts: the model with its normaliser, the
//! encoder of its space, the end-of-text concept and the decoder, loaded once. `lcm
//! generate` makes one per run; `lcm serve` and the Python package keep one for every
//! request. Each call excludes the prompt's own sentences from retrieval by itself, so one
//! session serves any number of prompts.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Tensor;
use lcm_concept::{ConceptEncoder, Decoded};
use lcm_model::generate::DiffusionSampling;

use crate::Result;
use crate::encoders::load_decoder;
use crate::generate::{
    ContinuationDecoder, Stop, StopRules, continue_prompt, decode_continuation, encode_prompt_in,
    prompt_sentences,
};
use crate::load::{TrainedLcm, eos_embedding};
use crate::store::BankNotice;

/// Which decoder turns generated concepts into text.
#[derive(Clone, Debug, Default)]
pub struct DecoderChoice {
    /// A sentence bank folder for the retrieval decoder.
    pub bank: Option<PathBuf>,
    /// A concept store whose bank (built on first use) the retrieval decoder searches.
    pub store: Option<PathBuf>,
    /// A generative decoder instead of retrieval, with its beams: a `lcm train-decoder
    /// --out` folder, `sonar` or a folder holding SONAR's files
    /// ([`crate::encoders::load_decoder`]).
    pub trained: Option<(PathBuf, usize)>,
}

/// One prompt's continuation, decoded.
#[derive(Clone, Debug)]
pub struct Generation {
    /// The prompt as split into sentences.
    pub prompt: Vec<String>,
    /// Generated sentences with their similarity to the generated concept.
    pub sentences: Vec<Decoded>,
    pub stop: Stop,
}

/// A [`Generation`] with the concepts behind it (raw encoder space).
#[derive(Clone, Debug)]
pub struct TracedGeneration {
    pub generation: Generation,
    /// The last prompt sentence's concept.
    pub prompt_last: Vec<f32>,
    /// The generated concepts, one per generated sentence.
    pub concepts: Vec<Vec<f32>>,
}

pub struct GenerationSession {
    trained: TrainedLcm,
    encoder: Arc<dyn ConceptEncoder>,
    eos: Vec<f32>,
    decoder: ContinuationDecoder,
    /// The prompts' language and the one SONAR decodes into (SONAR codes).
    source_lang: Option<String>,
    target_lang: Option<String>,
}

impl GenerationSession {
    /// Loads the model at `model` (with `normalizer`, else the recorded one), checks that
    /// `encoder` is its space (`requested`: the name the user gave, for the message) and
    /// opens the decoder.
    pub fn open(
        model: &Path,
        normalizer: Option<&Path>,
        encoder: Arc<dyn ConceptEncoder>,
        requested: &str,
        decoder: &DecoderChoice,
        notify: &mut dyn FnMut(BankNotice<'_>),
    ) -> Result<Self> {
        let trained = TrainedLcm::load(model, normalizer)?;
        trained.check_encoder(encoder.as_ref(), requested)?;
        let eos = eos_embedding(encoder.as_ref())?;
        let decoder = match &decoder.trained {
            Some((dir, beam)) => {
                let (decoder, root) = load_decoder(dir, trained.encoder_id(), encoder.dim())?;
                ContinuationDecoder::generative(decoder, root, *beam)
            }
            None => ContinuationDecoder::retrieval(
                decoder.bank.as_deref(),
                decoder.store.as_deref(),
                trained.encoder_id(),
                encoder.dim(),
                None,
                notify,
            )?,
        };
        Ok(Self {
            trained,
            encoder,
            eos,
            decoder,
            source_lang: None,
            target_lang: None,
        })
    }

    /// Sets the prompts' language (`source`, given to the encoder) and the language SONAR
    /// decodes into (`target`, default `source`); SONAR codes ([`crate::encoders::resolve_language`]).
    pub fn with_languages(mut self, source: Option<&str>, target: Option<&str>) -> Self {
        self.source_lang = source.map(str::to_string);
        self.target_lang = target.or(source).map(str::to_string);
        self
    }

    pub fn trained(&self) -> &TrainedLcm {
        &self.trained
    }

    pub fn decoder(&self) -> &ContinuationDecoder {
        &self.decoder
    }

    pub fn encoder(&self) -> &dyn ConceptEncoder {
        self.encoder.as_ref()
    }

    /// Continues `prompt_text` (split into sentences) under `rules`, the diffusion noise
    /// seeded by `seed`; retrieval never returns a sentence of the prompt unless
    /// `allow_prompt_sentences`.
    pub fn generate(
        &self,
        prompt_text: &str,
        rules: &StopRules,
        sampling: &DiffusionSampling,
        seed: u64,
        allow_prompt_sentences: bool,
    ) -> Result<Generation> {
        let prompt = prompt_sentences(prompt_text)?;
        Ok(self
            .generate_traced(prompt, rules, sampling, seed, allow_prompt_sentences)?
            .generation)
    }

    /// [`Self::generate`] on a prompt already split into sentences (no re-segmentation),
    /// keeping the concepts: what `lcm eval-generation` scores.
    pub fn generate_traced(
        &self,
        prompt: Vec<String>,
        rules: &StopRules,
        sampling: &DiffusionSampling,
        seed: u64,
        allow_prompt_sentences: bool,
    ) -> Result<TracedGeneration> {
        if prompt.is_empty() {
            return Err(crate::WorkflowError::Refused(
                "the prompt holds no sentence; pass at least one".into(),
            ));
        }
        let prompt_raw =
            encode_prompt_in(self.encoder.as_ref(), &prompt, self.source_lang.as_deref())?;
        let continuation =
            continue_prompt(&self.trained, &prompt_raw, &self.eos, rules, sampling, seed)?;
        let sentences = self.decode(&continuation.concepts, &prompt, allow_prompt_sentences)?;
        let prompt_last = prompt_raw.get(prompt.len() - 1)?.to_vec1::<f32>()?;
        let concepts = continuation
            .concepts
            .iter()
            .map(|c| c.to_vec1::<f32>())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(TracedGeneration {
            generation: Generation {
                prompt,
                sentences,
                stop: continuation.stop,
            },
            prompt_last,
            concepts,
        })
    }

    fn decode(
        &self,
        concepts: &[Tensor],
        prompt: &[String],
        allow_prompt_sentences: bool,
    ) -> Result<Vec<Decoded>> {
        match &self.decoder {
            ContinuationDecoder::Retrieval(retrieval) if !concepts.is_empty() => {
                let mut exclude: HashSet<String> = retrieval.exclude().clone();
                if !allow_prompt_sentences {
                    exclude.extend(prompt.iter().cloned());
                }
                Ok(retrieval.decode_excluding(&Tensor::stack(concepts, 0)?, &exclude)?)
            }
            _ => decode_continuation(
                &self.decoder,
                concepts,
                Some(self.encoder.as_ref()),
                self.target_lang.as_deref(),
            ),
        }
    }
}
