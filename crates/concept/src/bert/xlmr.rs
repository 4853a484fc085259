//! XLM-RoBERTa's tokenizer: a SentencePiece unigram model (`sentencepiece.bpe.model`, read by
//! [`crate::sentencepiece`]) with the id layout fairseq gave XLM-R and Hugging Face's
//! `XLMRobertaTokenizer` keeps: `<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3, then SentencePiece
//! id + 1 (SentencePiece's own `<unk>`, id 0, becomes 3), `<mask>` after the last piece.
//! A sentence is `[<s>, pieces…, </s>]`, truncated to the sequence limit by dropping pieces
//! from the end.

use std::path::{Path, PathBuf};

use crate::error::{ConceptError, Result};
use crate::sentencepiece::{PieceType, SPACE_SYMBOL, SentencePiece};

/// `<s>`, the first token of every sequence.
pub const BOS: u32 = 0;
/// `</s>`, the last token of every sequence.
pub const EOS: u32 = 2;
/// `<unk>`.
pub const UNK: u32 = 3;
/// SentencePiece id → model id shift (fairseq's `<pad>` in front of the pieces).
const OFFSET: u32 = 1;

/// SentencePiece's `<unk>`/`<s>`/`</s>` at ids 0/1/2: the layout the fixed ids above assume.
const REQUIRED_LAYOUT: [(&str, PieceType); 3] = [
    ("<unk>", PieceType::Unknown),
    ("<s>", PieceType::Control),
    ("</s>", PieceType::Control),
];

/// Bytes of text tokenised per kept piece before trying a longer prefix (see
/// [`XlmrTokenizer::encode`]).
const PREFIX_BYTES_PER_PIECE: usize = 64;

/// XLM-R's SentencePiece tokenizer with fairseq's ids (see the module docs).
pub struct XlmrTokenizer {
    spm: SentencePiece,
    path: PathBuf,
    /// Whether a prefix of a long text cut at a whitespace yields a prefix of the text's
    /// pieces: true when no piece holds `▁` after its first character (models trained with
    /// SentencePiece's default `split_by_whitespace`, XLM-R's included).
    prefix_exact: bool,
}

impl XlmrTokenizer {
    /// Reads `sentencepiece.bpe.model`; errors name the file and what is wrong with it.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bad = |reason: String| ConceptError::BadModelFolder {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path)
            .map_err(|e| bad(format!("cannot read the SentencePiece model: {e}")))?;
        let spm = SentencePiece::from_bytes(&bytes)
            .map_err(|e| bad(format!("not a usable SentencePiece model: {e}")))?;
        for (i, (text, kind)) in REQUIRED_LAYOUT.iter().enumerate() {
            if spm.piece(i as u32) != Some((text, *kind)) {
                return Err(bad(format!(
                    "XLM-R's id layout needs {text} at SentencePiece id {i}; this model has \
                     {:?} there (is it an XLM-RoBERTa sentencepiece.bpe.model?)",
                    spm.piece(i as u32).map(|p| p.0)
                )));
            }
        }
        let prefix_exact = (0..spm.num_pieces() as u32).all(|id| {
            spm.piece(id).is_none_or(|(text, _)| {
                let mut chars = text.chars();
                chars.next();
                !chars.as_str().contains(SPACE_SYMBOL)
            })
        });
        Ok(Self {
            spm,
            path: path.to_path_buf(),
            prefix_exact,
        })
    }

    /// The file the model was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Highest id [`XlmrTokenizer::encode`] can produce (the last piece's).
    pub fn max_id(&self) -> u32 {
        (self.spm.num_pieces() as u32 - 1) + OFFSET
    }

    /// The text of the piece with model id `id` (`None` for `<unk>` and unknown ids).
    pub fn piece_text(&self, id: u32) -> Option<&str> {
        if id == UNK {
            return None;
        }
        self.spm
            .piece(id.checked_sub(OFFSET)?)
            .map(|(text, _)| text)
    }

    /// Model ids of the pieces of `text`, without `<s>`/`</s>`.
    pub fn piece_ids(&self, text: &str) -> Vec<u32> {
        let unk = self.spm.unk_id();
        self.spm
            .encode(text)
            .into_iter()
            .map(|id| if id == unk { UNK } else { id + OFFSET })
            .collect()
    }

    /// `[<s>, pieces…, </s>]` of `text`, at most `max_len` ids (`max_len ≥ 2`), and whether
    /// truncation dropped pieces.
    ///
    /// A text far longer than the limit could keep is tokenised from a prefix cut before a
    /// whitespace: its pieces are then exactly the first pieces of the whole text (no piece
    /// spans a word boundary), so once the prefix has more pieces than are kept, the result
    /// equals tokenising everything; otherwise the prefix doubles.
    pub fn encode(&self, text: &str, max_len: usize) -> (Vec<u32>, bool) {
        let keep = max_len.saturating_sub(2);
        let mut budget = keep.max(1) * PREFIX_BYTES_PER_PIECE;
        let mut pieces = loop {
            let prefix = if self.prefix_exact {
                super::word_prefix(text, budget)
            } else {
                text
            };
            let pieces = self.piece_ids(prefix);
            if prefix.len() == text.len() || pieces.len() > keep {
                break pieces;
            }
            budget *= 2;
        };
        let truncated = pieces.len() > keep;
        pieces.truncate(keep);
        let mut ids = Vec::with_capacity(pieces.len() + 2);
        ids.push(BOS);
        ids.extend(pieces);
        ids.push(EOS);
        (ids, truncated)
    }
}

impl std::fmt::Debug for XlmrTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XlmrTokenizer")
            .field("path", &self.path)
            .field("spm", &self.spm)
            .finish()
    }
}
