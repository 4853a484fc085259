//! The decoder's tokenizer: a byte-level BPE learnt on the training sentences, with
//! SONAR's special-token ids (pad 0, unk 1, `<s>` 2, `</s>` 3) and prompt.
//!
//! There is no language tag: the decoder prompt is `[</s>]` ([`PROMPT`]), so a training
//! sequence is `[</s>, pieces…, </s>]`, fed as `[</s>, pieces…]` and predicting
//! `[pieces…, </s>]`.

use std::path::Path;

use lcm_sonar::SpecialIds;
use rayon::prelude::*;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, NormalizerWrapper, PostProcessorWrapper, TokenizerImpl};

use crate::error::{DecoderError, Result};

/// Special tokens at ids 0..4, SONAR's layout.
pub const SPECIAL_TOKENS: [&str; 4] = ["<pad>", "<unk>", "<s>", "</s>"];
/// Decoder prompt: `</s>` alone (SONAR puts a language tag after it; an open encoder has none).
pub const PROMPT: [u32; 1] = [SpecialIds::SONAR.eos];

/// Byte-level BPE with SONAR's special-token ids. Any text round-trips: every byte is in
/// the base alphabet, and no normaliser or prefix space alters it.
pub struct DecoderTokenizer {
    inner: tokenizers::Tokenizer,
}

impl DecoderTokenizer {
    /// Learns a byte-level BPE of at most `vocab_size` tokens (specials included) on
    /// `sentences`.
    pub fn train<S: AsRef<str> + Send + Sync>(sentences: &[S], vocab_size: usize) -> Result<Self> {
        let base = ByteLevel::alphabet().len() + SPECIAL_TOKENS.len();
        if vocab_size < base {
            return Err(DecoderError::input(format!(
                "vocabulary size {vocab_size} is below the {base} tokens of the byte alphabet \
                 and specials; pass a larger --vocab"
            )));
        }
        if sentences.is_empty() {
            return Err(DecoderError::input(
                "no sentences to train the tokenizer on",
            ));
        }
        let mut tk: TokenizerImpl<
            BPE,
            NormalizerWrapper,
            ByteLevel,
            PostProcessorWrapper,
            ByteLevel,
        > = TokenizerImpl::new(BPE::default());
        tk.with_pre_tokenizer(Some(ByteLevel::new(false, false, true)));
        tk.with_decoder(Some(ByteLevel::new(false, false, true)));
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(
                SPECIAL_TOKENS
                    .iter()
                    .map(|t| AddedToken::from(*t, true))
                    .collect(),
            )
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        tk.train(&mut trainer, sentences.iter().map(|s| s.as_ref()))
            .map_err(DecoderError::tokenizer)?;
        // The trainer also registers the specials as *added* tokens, which would turn a
        // literal "</s>" in a sentence into the special id; they stay plain vocabulary
        // entries (ids 0..4) only, so every text round-trips.
        let json = tokenizers::Tokenizer::from(tk)
            .to_string(false)
            .map_err(DecoderError::tokenizer)?;
        let mut value: serde_json::Value =
            serde_json::from_str(&json).map_err(DecoderError::tokenizer)?;
        value["added_tokens"] = serde_json::Value::Array(Vec::new());
        let inner: tokenizers::Tokenizer =
            value.to_string().parse().map_err(DecoderError::tokenizer)?;
        let tokenizer = Self { inner };
        tokenizer.check_specials(Path::new("<trained>"))?;
        Ok(tokenizer)
    }

    /// Opens a `tokenizer.json` written by [`Self::save`].
    pub fn open(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| DecoderError::file(path, format!("not a tokenizer: {e}")))?;
        let tokenizer = Self { inner };
        tokenizer.check_specials(path)?;
        Ok(tokenizer)
    }

    fn check_specials(&self, path: &Path) -> Result<()> {
        for (id, token) in SPECIAL_TOKENS.iter().enumerate() {
            if self.inner.token_to_id(token) != Some(id as u32) {
                return Err(DecoderError::file(
                    path,
                    format!("special token {token} is not id {id} (SONAR's layout)"),
                ));
            }
        }
        Ok(())
    }

    /// Writes the tokenizer atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self
            .inner
            .to_string(false)
            .map_err(DecoderError::tokenizer)?;
        Ok(lcm_util::fs::write_atomic(path, json.as_bytes())?)
    }

    /// Size of the vocabulary (specials included).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token pieces of `text` (no specials).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(DecoderError::tokenizer)?
            .get_ids()
            .to_vec())
    }

    /// Token pieces of each text, truncated to `max_pieces`, tokenised in parallel.
    /// Returns the pieces and the number of truncated texts.
    pub fn encode_all(
        &self,
        texts: &[String],
        max_pieces: usize,
    ) -> Result<(Vec<Vec<u32>>, usize)> {
        let mut pieces: Vec<Vec<u32>> = texts
            .par_iter()
            .map(|t| self.encode(t))
            .collect::<Result<_>>()?;
        let mut truncated = 0;
        for p in &mut pieces {
            if p.len() > max_pieces {
                p.truncate(max_pieces);
                truncated += 1;
            }
        }
        Ok((pieces, truncated))
    }

    /// Text of `ids`; special tokens (ids below 4) are dropped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let pieces: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| id as usize >= SPECIAL_TOKENS.len())
            .collect();
        self.inner
            .decode(&pieces, false)
            .map_err(DecoderError::tokenizer)
    }
}
