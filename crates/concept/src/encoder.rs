//! The `ConceptEncoder` interface: sentences in, one vector ("concept") per sentence out.

use candle_core::Tensor;

use crate::error::Result;

/// Whether a sentence's tokens, as `(is the unknown token, token text)`, say nothing of it: at
/// least one unknown token, and no other token holding a letter or a digit (punctuation and
/// word-boundary marks such as `▁` or `##` do not count).
pub fn unknown_only<'a>(tokens: impl IntoIterator<Item = (bool, &'a str)>) -> bool {
    let mut unknown = false;
    for (is_unknown, text) in tokens {
        if is_unknown {
            unknown = true;
        } else if text.chars().any(char::is_alphanumeric) {
            return false;
        }
    }
    unknown
}

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
    /// script the vocabulary lacks, whose concept then carries nothing of the text):
    /// [`unknown_only`] of its tokens. `None` where the encoder cannot tell.
    fn unknown_only(&self, _sentences: &[&str]) -> Result<Option<Vec<bool>>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::unknown_only;

    #[test]
    fn unknown_only_ignores_punctuation_and_boundary_marks() {
        assert!(unknown_only([(true, "<unk>"), (false, "."), (false, "▁")]));
        assert!(!unknown_only([(true, "<unk>"), (false, "▁cat")]));
        assert!(!unknown_only([(false, "."), (false, "##")]));
        assert!(!unknown_only([]));
    }
}
