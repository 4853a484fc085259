//! The `ConceptEncoder` interface: sentences in, one vector ("concept") per sentence out.

use candle_core::Tensor;

use crate::error::Result;

/// A frozen sentence encoder that maps sentences to fixed-size concept vectors.
///
/// `id()` is written into every artifact an encoder produces (Parquet stores, normalisers,
/// checkpoints) so that vectors from different spaces are never mixed.
pub trait ConceptEncoder: Send + Sync {
    /// Encodes `sentences` into a `[N, dim()]` f32 tensor on the CPU, row `i` for sentence `i`.
    /// `lang` is a language hint (e.g. `eng_Latn`); encoders that ignore language accept any value.
    fn encode(&self, sentences: &[&str], lang: Option<&str>) -> Result<Tensor>;
    /// Dimension `D` of the concept vectors.
    fn dim(&self) -> usize;
    /// Stable identifier of the embedding space, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    fn id(&self) -> &str;
    /// Most tokens of a sentence the encoder reads (longer ones are truncated), if it has a
    /// limit.
    fn max_tokens(&self) -> Option<usize> {
        None
    }
    /// Tokens of each sentence where the encoder can count them, counted up to
    /// `max_tokens() + 1`: a count above `max_tokens()` means the sentence gets truncated.
    /// What servers budget batches by and refuse over-long inputs with.
    fn token_counts(&self, _sentences: &[&str]) -> Result<Option<Vec<usize>>> {
        Ok(None)
    }
    /// For each sentence, whether the tokenizer maps all of it to unknown tokens (text in a
    /// script the vocabulary lacks, whose concept then carries nothing of the text); empty
    /// sentences are not. `None` where the encoder cannot tell.
    fn unknown_only(&self, _sentences: &[&str]) -> Result<Option<Vec<bool>>> {
        Ok(None)
    }
}
