//! The `ConceptDecoder` interface: concept vectors in, one text per vector out.
//!
//! Implementations: the retrieval decoder (`lcm_data::retrieval::RetrievalDecoder`, exact
//! nearest neighbour over a bank of encoded sentences), SONAR's own decoder
//! (`lcm_sonar::pipeline::SonarTextDecoder`) and decoders of SONAR's architecture trained for
//! open encoders (`lcm_decoder::TrainedDecoder`).

use candle_core::Tensor;

use crate::error::Result;

/// Generation settings of a decoder. Retrieval ignores all of them; a generative (SONAR)
/// decoder uses beam search when `temperature == 0` and sampling otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeConfig {
    /// Beams of beam search (1 = greedy).
    pub beam_size: usize,
    /// Maximum tokens per decoded sentence.
    pub max_len: usize,
    /// Sampling temperature; 0 means deterministic (greedy / beam search).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens when sampling (0 = no limit).
    pub top_k: usize,
    /// Nucleus sampling mass (1.0 = no limit).
    pub top_p: f32,
    /// Seed of the sampler, for reproducible outputs.
    pub seed: u64,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            beam_size: 1,
            max_len: 256,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// One decoded concept.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub text: String,
    /// Decoder-specific confidence: cosine similarity of the retrieved sentence for retrieval,
    /// `None` where the decoder has none.
    pub score: Option<f32>,
}

/// Maps concept vectors (`[N, dim()]`, in the encoder's unnormalised space) back to text.
///
/// `id()` names the embedding space the decoder reads, and must equal the
/// [`ConceptEncoder::id`](crate::ConceptEncoder::id) of the encoder that produced the concepts.
pub trait ConceptDecoder: Send + Sync {
    /// Decodes each row of `concepts` (`[N, dim()]`), returning `N` results in row order.
    fn decode(
        &self,
        concepts: &Tensor,
        lang: Option<&str>,
        config: &DecodeConfig,
    ) -> Result<Vec<Decoded>>;
    /// Identifier of the embedding space (the encoder id).
    fn id(&self) -> &str;
    /// Dimension `D` of the concepts it decodes.
    fn dim(&self) -> usize;
}
