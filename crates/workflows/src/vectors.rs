//! Concepts given as vectors rather than text, in the raw concept space: the model's next
//! concept for contexts ([`next_concepts`], Python's `LCM.next_concepts`) and any decoder
//! opened on its own to turn vectors into text ([`open_decoder`], [`decode_vectors`],
//! Python's `lcm.Decoder`).

use candle_core::{Device, Tensor};
use lcm_concept::Decoded;
use lcm_model::generate::DiffusionSampling;
use lcm_train::checkpoint::new_rng;

use crate::encoders::load_decoder_in_own_space;
use crate::fused_generate::Generator;
use crate::generate::{ContinuationDecoder, decode_continuation};
use crate::load::TrainedLcm;
use crate::session::DecoderChoice;
use crate::store::{BankNotice, retrieval_decoder_of};
use crate::{Result, WorkflowError};

/// The next concept after each context, raw space, row-major `[contexts, D]`. A context is
/// `[n, D]` raw (unnormalised) concepts, row-major, `1 ≤ n < max_seq_len`. Each context's
/// diffusion noise is drawn from its own generator seeded by `seed`, so a context's
/// prediction does not depend on the others passed with it, and equals the first concept
/// `continue_prompt` generates for the same prompt and seed.
pub fn next_concepts(
    trained: &TrainedLcm,
    contexts: &[Vec<f32>],
    sampling: &DiffusionSampling,
    seed: u64,
) -> Result<Vec<f32>> {
    let model = trained.model();
    let dim = model.input_dim();
    let mut generator = Generator::new(model);
    let mut out = Vec::with_capacity(contexts.len() * dim);
    for (index, context) in contexts.iter().enumerate() {
        let refuse = |why: String| WorkflowError::Refused(format!("context {index}: {why}"));
        if context.is_empty() || context.len() % dim != 0 {
            return Err(refuse(format!(
                "{} numbers are not a whole number of {dim}-dimensional concepts (at least \
                 one); pass an array of shape (n, {dim})",
                context.len()
            )));
        }
        if let Some(position) = context.iter().position(|v| !v.is_finite()) {
            return Err(refuse(format!(
                "value {position} (concept {}) is not finite",
                position / dim
            )));
        }
        let rows = context.len() / dim;
        if rows >= model.max_seq_len() {
            return Err(refuse(format!(
                "{rows} concepts fill the model's context of {}, so none can follow; pass at \
                 most {}",
                model.max_seq_len(),
                model.max_seq_len() - 1
            )));
        }
        let raw = Tensor::from_slice(context, (rows, dim), &Device::Cpu)?;
        let mut state = model.new_state();
        // [n, D] raw → [1, n, D] normalised prefix.
        model.extend(
            &mut state,
            &trained.normalizer.normalize(&raw)?.unsqueeze(0)?,
        )?;
        let mut rng = new_rng(seed);
        let next = generator.next_concept(&state, sampling, 1, &mut rng)?;
        let next = trained.normalizer.denormalize(&next)?.flatten_all()?;
        out.extend(next.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// The decoder `choice` names, in the space it was made for (no model to check it against):
/// retrieval over a bank or a store's bank, a trained decoder (`lcm train-decoder --out`) or
/// SONAR's (`sonar`, a SONAR folder), which decodes into the language asked for.
pub fn open_decoder(
    choice: &DecoderChoice,
    notify: &mut dyn FnMut(BankNotice<'_>),
) -> Result<ContinuationDecoder> {
    match &choice.trained {
        Some((spec, beam)) => {
            let (decoder, root) = load_decoder_in_own_space(spec)?;
            Ok(ContinuationDecoder::generative(decoder, root, *beam))
        }
        None => Ok(ContinuationDecoder::Retrieval(Box::new(
            retrieval_decoder_of(choice.bank.as_deref(), choice.store.as_deref(), notify)?,
        ))),
    }
}

/// Decodes `rows` (row-major `[n, dim]` raw concepts) with `decoder`; a generated text has no
/// score (retrieval's is the bank sentence's cosine). `what` names the input in errors.
pub fn decode_vectors(
    decoder: &ContinuationDecoder,
    rows: &[f32],
    dim: usize,
    lang: Option<&str>,
    what: &str,
) -> Result<Vec<Decoded>> {
    let expected = decoder_dim(decoder);
    if dim != expected {
        return Err(WorkflowError::Refused(format!(
            "{what}: vectors of {dim} dimensions, but the decoder reads {expected}"
        )));
    }
    if let Some(position) = rows.iter().position(|v| !v.is_finite()) {
        return Err(WorkflowError::Refused(format!(
            "{what}: value {position} (row {}) is not finite",
            position / dim.max(1)
        )));
    }
    let concepts = (0..rows.len() / dim.max(1))
        .map(|i| Tensor::from_slice(&rows[i * dim..(i + 1) * dim], dim, &Device::Cpu))
        .collect::<candle_core::Result<Vec<_>>>()?;
    decode_continuation(decoder, &concepts, None, lang)
}

fn decoder_dim(decoder: &ContinuationDecoder) -> usize {
    match decoder {
        ContinuationDecoder::Retrieval(d) => d.bank().dim(),
        ContinuationDecoder::Trained { decoder, .. }
        | ContinuationDecoder::Sonar { decoder, .. } => decoder.dim(),
    }
}
