//! SONAR's tokenizer: SentencePiece (the shared reader and encoder,
//! [`lcm_concept::sentencepiece`]) with the id layout fairseq2's NLLB tokenizer gives them.
//!
//! Reference behaviour (sentencepiece 0.2.0 as used by fairseq2n 0.5.2; see
//! `scripts/sonar/FIXTURES.md` §3):
//! - **Normalisation** (`normalizer.cc`): at each position the longest match in the
//!   precompiled charsmap (a darts-clone double array) is replaced by its target, user-defined
//!   symbols pass through untouched; with `remove_extra_whitespaces` leading spaces are
//!   dropped, runs of spaces collapse to one and trailing ones are removed; `add_dummy_prefix`
//!   prepends one space; `escape_whitespaces` writes spaces as `▁` (U+2581).
//! - **BPE** (`bpe_model.cc`): characters (user-defined symbols as frozen units) are merged
//!   greedily, always the adjacent pair whose concatenation is a piece with the highest score,
//!   the leftmost pair on ties; merges into UNUSED pieces are split back afterwards.
//! - **Unigram** (`unigram_model.cc`, `EncodeOptimized`): Viterbi over piece scores, a
//!   character no piece covers costs `min(normal scores) - 10`; user-defined pieces score
//!   `len · max_score - 0.1`.
//! - Either way, each run of consecutive unknown pieces becomes **one** `<unk>`
//!   (`sentencepiece_processor.cc`).
//! - **Ids** (fairseq2n `SentencePieceModel` with NLLB's control symbols): pad 0, then
//!   SentencePiece piece k → k + 1 (`<unk>` 1, `<s>` 2, `</s>` 3), then one `__lang__` tag per
//!   card language in card order, then `<MINED_DATA>`, `<MMT_BT_DATA>`, `<SMT_BT_DATA>`.
//!   Source side `[lang, pieces…, </s>]`, target prompt `[</s>, lang]`.
//! - **Decoding**: control ids vanish, `<unk>` is rendered as the model's unk surface
//!   (` ⁇ ` by default), `▁` becomes a space, and the `▁` that starts the text is dropped.
//!
//! Not supported (rejected at load with an error, so that nothing is silently wrong):
//! byte fallback, `treat_whitespace_as_suffix`, WORD/CHAR models, denormalisation rules.

use std::collections::HashMap;
use std::path::Path;

use lcm_concept::sentencepiece::{PieceType, SPACE_SYMBOL, SentencePiece};

use crate::incremental::SpecialIds;
use crate::{Result, SonarError};

/// The data tags fairseq2's NLLB tokenizer appends after the language tags.
const DATA_TAGS: [&str; 3] = ["<MINED_DATA>", "<MMT_BT_DATA>", "<SMT_BT_DATA>"];

/// The 202 languages of SONAR's text cards, in card order (the one table:
/// [`lcm_concept::lang::SONAR_LANGUAGES`]).
const SONAR_LANGUAGES: [&str; 202] = lcm_concept::lang::SONAR_LANGUAGES;

/// SentencePiece's `<unk>`/`<s>`/`</s>` must sit at 0/1/2 for SONAR's fixed special ids.
const REQUIRED_LAYOUT: [(&str, PieceType); 3] = [
    ("<unk>", PieceType::Unknown),
    ("<s>", PieceType::Control),
    ("</s>", PieceType::Control),
];

/// SentencePiece tokenizer with SONAR's id layout (see the module docs).
pub struct SonarTokenizer {
    spm: SentencePiece,
    languages: Vec<String>,
    lang_index: HashMap<String, u32>,
}

impl SonarTokenizer {
    /// Reads a SentencePiece ModelProto (`.model` file). `languages` in card order give the
    /// language tags' ids (vocab pieces + 1 ..), followed by the 3 data tags.
    pub fn from_file(path: &Path, languages: &[String]) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            SonarError::file(path, format!("cannot read the SentencePiece model: {e}"))
        })?;
        Self::build(&bytes, languages).map_err(|message| {
            SonarError::file(path, format!("not a usable SentencePiece model: {message}"))
        })
    }

    /// [`SonarTokenizer::from_file`] on the bytes of a `.model` file.
    pub fn from_bytes(bytes: &[u8], languages: &[String]) -> Result<Self> {
        Self::build(bytes, languages).map_err(|message| {
            SonarError::Tokenizer(format!("not a usable SentencePiece model: {message}"))
        })
    }

    /// The 202 languages of the real SONAR card, in card order (eng_Latn is index 46 → id
    /// 256047 with the 256000-piece model).
    pub fn sonar_languages() -> Vec<String> {
        SONAR_LANGUAGES.iter().map(|s| s.to_string()).collect()
    }

    fn build(bytes: &[u8], languages: &[String]) -> std::result::Result<Self, String> {
        let spm = SentencePiece::from_bytes(bytes)?;
        for (i, (text, kind)) in REQUIRED_LAYOUT.iter().enumerate() {
            if spm.piece(i as u32) != Some((text, *kind)) {
                return Err(format!(
                    "SONAR's id layout needs {text} at SentencePiece id {i} (the NLLB layout)"
                ));
            }
        }
        let first_lang = spm.num_pieces() as u32 + 1;
        let mut lang_index = HashMap::new();
        for (i, lang) in languages.iter().enumerate() {
            if lang_index
                .insert(lang.clone(), first_lang + i as u32)
                .is_some()
            {
                return Err(format!("language {lang} is listed twice"));
            }
        }
        Ok(Self {
            spm,
            languages: languages.to_vec(),
            lang_index,
        })
    }

    /// pad + SentencePiece pieces + language tags + 3 data tags.
    pub fn vocab_size(&self) -> usize {
        1 + self.spm.num_pieces() + self.languages.len() + DATA_TAGS.len()
    }

    /// Number of SentencePiece pieces (SONAR ids `1..=num_pieces`).
    pub fn num_pieces(&self) -> usize {
        self.spm.num_pieces()
    }

    /// `SpecialIds::SONAR`: pad 0, unk 1, `<s>` 2, `</s>` 3 (checked at load).
    pub fn special_ids(&self) -> SpecialIds {
        SpecialIds::SONAR
    }

    /// The languages given at load, in id order.
    pub fn languages(&self) -> &[String] {
        &self.languages
    }

    /// SONAR id of the `__lang__` tag.
    pub fn lang_id(&self, lang: &str) -> Result<u32> {
        self.lang_index.get(lang).copied().ok_or_else(|| {
            let examples: Vec<&str> = self.languages.iter().take(5).map(String::as_str).collect();
            SonarError::Input(format!(
                "unknown language {lang:?}: this tokenizer knows {} languages ({}{}); codes \
                 look like eng_Latn",
                self.languages.len(),
                examples.join(", "),
                if self.languages.len() > examples.len() {
                    ", …"
                } else {
                    ""
                }
            ))
        })
    }

    /// SONAR ids of the data tags `<MINED_DATA>`, `<MMT_BT_DATA>`, `<SMT_BT_DATA>`.
    pub fn data_tag_ids(&self) -> [u32; 3] {
        let first = (1 + self.spm.num_pieces() + self.languages.len()) as u32;
        [first, first + 1, first + 2]
    }

    /// Encoder input (fairseq2 mode `source`): `[lang, pieces…, </s>]`.
    pub fn encode_source(&self, text: &str, lang: &str) -> Result<Vec<u32>> {
        let lang = self.lang_id(lang)?;
        let pieces = self.encode_pieces(text);
        let mut ids = Vec::with_capacity(pieces.len() + 2);
        ids.push(lang);
        ids.extend(pieces);
        ids.push(SpecialIds::SONAR.eos);
        Ok(ids)
    }

    /// Decoder prompt (fairseq2 mode `target` prefix): `[</s>, lang]`.
    pub fn decoder_prompt(&self, lang: &str) -> Result<Vec<u32>> {
        Ok(vec![SpecialIds::SONAR.eos, self.lang_id(lang)?])
    }

    /// Teacher-forced decoder sequence: `[</s>, lang, pieces…, </s>]`.
    pub fn encode_target(&self, text: &str, lang: &str) -> Result<Vec<u32>> {
        let mut ids = self.decoder_prompt(lang)?;
        ids.extend(self.encode_pieces(text));
        ids.push(SpecialIds::SONAR.eos);
        Ok(ids)
    }

    /// The normalised text SentencePiece segments (spaces as `▁`).
    pub fn normalize(&self, text: &str) -> String {
        self.spm.normalize(text)
    }

    /// SONAR ids (SentencePiece id + 1) of the pieces of `text`, without tags.
    pub fn encode_pieces(&self, text: &str) -> Vec<u32> {
        self.encode_spm(text).into_iter().map(|id| id + 1).collect()
    }

    /// SentencePiece ids of `text` (`SentencePieceProcessor::EncodeAsIds`).
    pub fn encode_spm(&self, text: &str) -> Vec<u32> {
        self.spm.encode(text)
    }

    /// Text of SONAR ids. Control ids (pad, `<s>`, `</s>`, language and data tags) vanish,
    /// `<unk>` becomes the unk surface (` ⁇ `), `▁` a space, and the text's leading `▁` is
    /// dropped. Ids past the vocabulary are rendered like `<unk>`.
    pub fn decode(&self, ids: &[u32]) -> String {
        let strip_leading = self.spm.strips_leading_space();
        let mut out = String::new();
        for &id in ids {
            let (text, kind) = match id.checked_sub(1).map(|k| self.spm.piece(k)) {
                // pad
                None => continue,
                Some(Some(p)) => p,
                Some(None) => {
                    if (id as usize) >= self.vocab_size() {
                        out.push_str(self.spm.unk_surface());
                    }
                    continue;
                }
            };
            match kind {
                PieceType::Control => {}
                PieceType::Unknown => out.push_str(self.spm.unk_surface()),
                _ => {
                    let mut text = text;
                    // SentencePiece drops the ▁ of a piece while nothing has been written yet.
                    if strip_leading && out.is_empty() {
                        text = text.strip_prefix(SPACE_SYMBOL).unwrap_or(text);
                    }
                    out.push_str(&text.replace(SPACE_SYMBOL, " "));
                }
            }
        }
        out
    }

    /// SentencePiece piece text of a SONAR id (`__lang__` and data tags included).
    pub fn id_to_piece(&self, id: u32) -> Option<String> {
        let id = id as usize;
        if id == 0 {
            return Some("<pad>".into());
        }
        if let Some((text, _)) = self.spm.piece((id - 1) as u32) {
            return Some(text.to_string());
        }
        let k = id - 1 - self.spm.num_pieces();
        if let Some(lang) = self.languages.get(k) {
            return Some(format!("__{lang}__"));
        }
        DATA_TAGS
            .get(k - self.languages.len())
            .map(|s| s.to_string())
    }
}

impl std::fmt::Debug for SonarTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SonarTokenizer")
            .field("spm", &self.spm)
            .field("languages", &self.languages.len())
            .finish()
    }
}
