//! Concept encoders and decoders by name: the one place that turns what a user names
//! (`minilm`, `e5`, `sonar`, an HF repo id, a folder) or what a store or checkpoint records
//! (an encoder id) into a loaded model. The `lcm` commands, and through them every entry
//! point, call [`load_encoder`] / [`load_encoder_for`] and [`load_decoder`].
//!
//! Also here: the language a command was given ([`resolve_language`], the table is
//! [`lcm_concept::lang`]), the warning for a language the encoder was not trained on
//! ([`AnyEncoder::language_warning`]) and the count of sentences the tokenizer maps entirely
//! to unknown tokens ([`UnknownTally`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::Tensor;
use lcm_concept::bert::{BertEncoder, EncoderOptions};
use lcm_concept::lang::{self, LanguageCoverage};
use lcm_concept::resolve::{SearchRoots, find_by_model_name, resolve_model};
use lcm_concept::{ConceptDecoder, ConceptEncoder, DecodeConfig, Decoded};
use lcm_decoder::TrainedDecoder;
use lcm_sonar::pipeline::{SonarTextDecoder, SonarTextEncoder, default_sonar_dir, is_sonar_dir};

use crate::{Result, WorkflowError};

/// The name that selects SONAR (from `$LCM_HOME/models/sonar`).
pub const SONAR: &str = "sonar";
/// The model name in SONAR encoder ids (`sonar-text-encoder@<fingerprint>`).
const SONAR_ID_NAME: &str = "sonar-text-encoder";

/// Largest vocabulary of an English WordPiece BERT (bert-base-uncased, all-MiniLM-L6-v2:
/// 30,522); multilingual WordPiece vocabularies are four times larger.
const ENGLISH_WORDPIECE_VOCAB: usize = 31_000;
/// XLM-R's vocabulary (a `tokenizer.json` export of it has no `sentencepiece.bpe.model`).
const XLMR_VOCAB: usize = 250_002;

/// Any concept encoder the project loads by name.
pub enum AnyEncoder {
    /// A sentence-transformers BERT / XLM-R folder (`minilm`, `e5`, HF repo ids).
    Bert(Box<BertEncoder>),
    /// SONAR's text encoder.
    Sonar {
        encoder: Box<SonarTextEncoder>,
        folder: PathBuf,
    },
}

impl AnyEncoder {
    /// The folder the model was loaded from.
    pub fn folder(&self) -> &Path {
        match self {
            Self::Bert(b) => b.folder(),
            Self::Sonar { folder, .. } => folder,
        }
    }

    /// Which languages the encoder was trained on: SONAR's 202; XLM-R's ~100 for XLM-R-family
    /// folders; English for English WordPiece models (all-MiniLM-L6-v2); unknown otherwise.
    pub fn coverage(&self) -> LanguageCoverage {
        match self {
            Self::Sonar { .. } => LanguageCoverage::Sonar,
            Self::Bert(b) if b.is_xlmr() || b.config().vocab_size == XLMR_VOCAB => {
                LanguageCoverage::Xlmr
            }
            Self::Bert(b) if b.config().vocab_size <= ENGLISH_WORDPIECE_VOCAB => {
                LanguageCoverage::English
            }
            Self::Bert(_) => LanguageCoverage::Unknown,
        }
    }

    /// A warning naming `lang` (a SONAR code) when the encoder was not trained on it.
    pub fn language_warning(&self, lang: &str) -> Option<String> {
        let coverage = self.coverage();
        if coverage.covers(lang) {
            return None;
        }
        let iso = lang::iso_639_1(lang).map_or(String::new(), |iso| format!(" ({iso})"));
        Some(format!(
            "the encoder `{}` covers {}, not {lang}{iso}: its concepts of {lang} text may \
             not mean what the text says{}",
            self.id(),
            coverage.describe(),
            match coverage {
                LanguageCoverage::English => "; use --encoder e5 or --encoder sonar",
                LanguageCoverage::Xlmr => "; --encoder sonar covers 202 languages",
                _ => "",
            }
        ))
    }

    fn inner(&self) -> &dyn ConceptEncoder {
        match self {
            Self::Bert(b) => b.as_ref(),
            Self::Sonar { encoder, .. } => encoder.as_ref(),
        }
    }
}

impl ConceptEncoder for AnyEncoder {
    fn encode(&self, sentences: &[&str], lang: Option<&str>) -> lcm_concept::Result<Tensor> {
        self.inner().encode(sentences, lang)
    }

    fn dim(&self) -> usize {
        self.inner().dim()
    }

    fn id(&self) -> &str {
        self.inner().id()
    }

    fn max_tokens(&self) -> Option<usize> {
        self.inner().max_tokens()
    }

    fn token_counts(&self, sentences: &[&str]) -> lcm_concept::Result<Option<Vec<usize>>> {
        self.inner().token_counts(sentences)
    }

    fn unknown_only(&self, sentences: &[&str]) -> lcm_concept::Result<Option<Vec<bool>>> {
        self.inner().unknown_only(sentences)
    }
}

/// Where `spec` points: SONAR's folder for `sonar` or a folder holding SONAR's files, else
/// the BERT folder [`resolve_model`] finds.
fn encoder_folder(spec: &str) -> Result<(PathBuf, bool)> {
    if spec.eq_ignore_ascii_case(SONAR) {
        return Ok((default_sonar_dir(), true));
    }
    let path = Path::new(spec);
    if path.is_dir() && is_sonar_dir(path) {
        return Ok((path.to_path_buf(), true));
    }
    Ok((resolve_model(spec)?, false))
}

/// Loads the concept encoder `spec` names: `minilm`, `e5`, `sonar` (`$LCM_HOME/models/sonar`),
/// an HF repo id, a sentence-transformers folder or a folder holding SONAR's files.
/// `options` apply to BERT-family encoders (SONAR takes only the batch size). A failure
/// once the folder is found reads "loading encoder from FOLDER: …".
pub fn load_encoder(spec: &str, options: &EncoderOptions) -> Result<AnyEncoder> {
    let (folder, sonar) = encoder_folder(spec)?;
    load_from(folder, sonar, options)
}

/// Loads the SONAR (`sonar`) or BERT-family encoder in `folder`.
fn load_from(folder: PathBuf, sonar: bool, options: &EncoderOptions) -> Result<AnyEncoder> {
    let loaded = if sonar {
        SonarTextEncoder::open(&folder)
            .map(|e| AnyEncoder::Sonar {
                encoder: Box::new(e.with_batch_size(options.batch_size)),
                folder: folder.clone(),
            })
            .map_err(WorkflowError::from)
    } else {
        BertEncoder::from_folder(&folder, options)
            .map(|b| AnyEncoder::Bert(Box::new(b)))
            .map_err(WorkflowError::from)
    };
    loaded.map_err(|source| WorkflowError::LoadEncoder {
        path: folder,
        source: Box::new(source),
    })
}

/// The name that loads the encoder of an encoder id, and the prompt the id records:
/// `all-MiniLM-L6-v2@…` → `all-MiniLM-L6-v2`, `multilingual-e5-small-q4@…+passage` →
/// (`multilingual-e5-small-q4`, `passage`), `sonar-text-encoder@…` → `sonar`.
pub fn encoder_spec_for_id(id: &str) -> (String, Option<String>) {
    let (name, rest) = id.split_once('@').unwrap_or((id, ""));
    let prompt = rest.split_once('+').map(|(_, p)| p.to_string());
    if name == SONAR_ID_NAME {
        return (SONAR.to_string(), None);
    }
    (name.to_string(), prompt)
}

/// The encoder an artifact records: its id and what the artifact is, for messages
/// (`"the store data/store"`, `"the model runs/tiny"`).
#[derive(Clone, Copy, Debug)]
pub struct Recorded<'a> {
    pub id: &'a str,
    pub what: &'a str,
}

/// The encoder of a command: `requested` (`--encoder`) when given, else the one `recorded`
/// names, else `minilm`. With both, an encoder of another space than the recorded one is
/// refused, naming both and the fix; a recorded encoder that cannot be found by its name
/// asks for `--encoder`.
pub fn load_encoder_for(
    requested: Option<&str>,
    recorded: Option<Recorded<'_>>,
    options: &EncoderOptions,
) -> Result<AnyEncoder> {
    let Some(recorded) = recorded else {
        return load_encoder(requested.unwrap_or("minilm"), options);
    };
    if let Some(requested) = requested {
        let encoder = load_encoder(requested, options)?;
        if encoder.id() != recorded.id {
            return Err(WorkflowError::Refused(format!(
                "{} holds `{}` concepts but --encoder `{requested}` produces `{}`: leave out \
                 --encoder to use the recorded encoder, or pass the encoder (folder) that made \
                 them; to work in `{requested}`'s space, re-run `lcm prepare --encoder \
                 {requested}` (and train again)",
                recorded.what,
                recorded.id,
                encoder.id()
            )));
        }
        return Ok(encoder);
    }
    let (spec, prompt_name) = encoder_spec_for_id(recorded.id);
    // An id without a prompt was made without one (not with the folder's default).
    let options = EncoderOptions {
        prompt_name: Some(prompt_name.unwrap_or_default()),
        ..options.clone()
    };
    // By its name, else (a store made from an HF repo id records the repo's basename) the
    // folder of that name in $LCM_HOME/models or the HF cache.
    let encoder = load_encoder(&spec, &options).or_else(|e| {
        let refused = |e: WorkflowError| {
            WorkflowError::Refused(format!(
                "{} records the encoder `{}`, which cannot be loaded by the name `{spec}` \
                 ({e}); pass its folder with --encoder",
                recorded.what, recorded.id
            ))
        };
        match find_by_model_name(&spec, &SearchRoots::from_env()) {
            Some(folder) => {
                let sonar = is_sonar_dir(&folder);
                load_from(folder, sonar, &options).map_err(refused)
            }
            None => Err(refused(e)),
        }
    })?;
    if encoder.id() != recorded.id {
        return Err(WorkflowError::Refused(format!(
            "{} records the encoder `{}` but `{spec}` loads `{}` (other weights under the same \
             name); pass the folder of the encoder that made it with --encoder",
            recorded.what,
            recorded.id,
            encoder.id()
        )));
    }
    Ok(encoder)
}

/// The SONAR code of a `--lang` value (`fr` → `fra_Latn`); unknown codes fail listing the
/// closest known ones.
pub fn resolve_language(code: Option<&str>) -> Result<Option<&'static str>> {
    code.map(|c| lang::resolve(c).map_err(WorkflowError::from))
        .transpose()
}

/// An encoder that encodes in a fixed language whatever its callers pass: for library code
/// that encodes without a language hint (planning's goals and guardrails).
pub struct InLanguage<'a> {
    pub inner: &'a dyn ConceptEncoder,
    pub lang: Option<&'a str>,
}

impl ConceptEncoder for InLanguage<'_> {
    fn encode(&self, sentences: &[&str], lang: Option<&str>) -> lcm_concept::Result<Tensor> {
        self.inner.encode(sentences, lang.or(self.lang))
    }

    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn id(&self) -> &str {
        self.inner.id()
    }

    fn max_tokens(&self) -> Option<usize> {
        self.inner.max_tokens()
    }

    fn token_counts(&self, sentences: &[&str]) -> lcm_concept::Result<Option<Vec<usize>>> {
        self.inner.token_counts(sentences)
    }

    fn unknown_only(&self, sentences: &[&str]) -> lcm_concept::Result<Option<Vec<bool>>> {
        self.inner.unknown_only(sentences)
    }
}

/// A generative concept decoder loaded by name: a decoder trained by `lcm train-decoder`,
/// or SONAR's.
pub enum AnyDecoder {
    Trained(Box<TrainedDecoder>),
    Sonar(Box<SonarTextDecoder>),
}

impl AnyDecoder {
    /// `"trained"` or `"sonar"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Trained(_) => "trained",
            Self::Sonar(_) => "sonar",
        }
    }

    /// Whether it decodes into a language chosen per call (SONAR).
    pub fn takes_language(&self) -> bool {
        matches!(self, Self::Sonar(_))
    }
}

impl ConceptDecoder for AnyDecoder {
    fn decode(
        &self,
        concepts: &Tensor,
        lang: Option<&str>,
        config: &DecodeConfig,
    ) -> lcm_concept::Result<Vec<Decoded>> {
        match self {
            Self::Trained(d) => d.decode(concepts, lang, config),
            Self::Sonar(d) => d.decode(concepts, lang, config),
        }
    }

    fn id(&self) -> &str {
        match self {
            Self::Trained(d) => d.id(),
            Self::Sonar(d) => ConceptDecoder::id(d.as_ref()),
        }
    }

    fn dim(&self) -> usize {
        match self {
            Self::Trained(d) => d.dim(),
            Self::Sonar(d) => ConceptDecoder::dim(d.as_ref()),
        }
    }
}

/// Loads the decoder `spec` names for concepts of `encoder_id` / `dim`: `sonar`
/// (`$LCM_HOME/models/sonar`), a folder holding SONAR's files, or a `lcm train-decoder --out`
/// folder. A decoder of another space is refused. Returns it with its folder.
pub fn load_decoder(spec: &Path, encoder_id: &str, dim: usize) -> Result<(AnyDecoder, PathBuf)> {
    open_decoder_spec(spec, Some((encoder_id, dim)))
}

/// [`load_decoder`] in whatever space the decoder was made for: decoding vectors with no
/// model to check them against (Python's `lcm.Decoder`).
pub fn load_decoder_in_own_space(spec: &Path) -> Result<(AnyDecoder, PathBuf)> {
    open_decoder_spec(spec, None)
}

fn open_decoder_spec(
    spec: &Path,
    expected: Option<(&str, usize)>,
) -> Result<(AnyDecoder, PathBuf)> {
    let sonar_dir = if spec.as_os_str().eq_ignore_ascii_case(SONAR) && !spec.is_dir() {
        Some(default_sonar_dir())
    } else if spec.is_dir() && is_sonar_dir(spec) {
        Some(spec.to_path_buf())
    } else {
        None
    };
    let Some(folder) = sonar_dir else {
        let opened = match expected {
            Some((encoder_id, dim)) => TrainedDecoder::open_expecting(spec, encoder_id, dim),
            None => TrainedDecoder::open(spec),
        }
        .map_err(|e| {
            WorkflowError::Refused(format!("opening the decoder {}: {e}", spec.display()))
        })?;
        let root = opened.root().to_path_buf();
        return Ok((AnyDecoder::Trained(Box::new(opened)), root));
    };
    let decoder = SonarTextDecoder::open(&folder).map_err(|e| WorkflowError::LoadDecoder {
        path: folder.clone(),
        source: Box::new(e.into()),
    })?;
    let space = ConceptDecoder::id(&decoder);
    if let Some((encoder_id, dim)) = expected
        && (space != encoder_id || ConceptDecoder::dim(&decoder) != dim)
    {
        return Err(WorkflowError::Refused(format!(
            "the SONAR decoder in {} reads `{space}` concepts ({} dimensions), not the model's \
             `{encoder_id}` ({dim}); SONAR decodes only concepts of its own encoder",
            folder.display(),
            ConceptDecoder::dim(&decoder)
        )));
    }
    Ok((AnyDecoder::Sonar(Box::new(decoder)), folder))
}

/// An encoder that counts the sentences its tokenizer maps entirely to unknown tokens
/// (a script the vocabulary lacks) while encoding them: they are encoded, then reported.
pub struct UnknownTally<'a> {
    inner: &'a dyn ConceptEncoder,
    count: AtomicUsize,
    examples: Mutex<Vec<String>>,
}

/// Sentences quoted in the report.
const EXAMPLES: usize = 3;

impl<'a> UnknownTally<'a> {
    pub fn new(inner: &'a dyn ConceptEncoder) -> Self {
        Self {
            inner,
            count: AtomicUsize::new(0),
            examples: Mutex::new(Vec::new()),
        }
    }

    /// Counts the sentences of `sentences` made of unknown tokens only, without encoding
    /// them (text that another component encodes, such as a generation prompt).
    pub fn check(&self, sentences: &[&str]) -> Result<()> {
        self.tally(sentences)?;
        Ok(())
    }

    fn tally(&self, sentences: &[&str]) -> lcm_concept::Result<()> {
        if let Some(flags) = self.inner.unknown_only(sentences)? {
            let unknown: Vec<&str> = sentences
                .iter()
                .zip(flags)
                .filter_map(|(s, f)| f.then_some(*s))
                .collect();
            if !unknown.is_empty() {
                self.count.fetch_add(unknown.len(), Ordering::Relaxed);
                if let Ok(mut examples) = self.examples.lock() {
                    for s in unknown {
                        if examples.len() < EXAMPLES {
                            examples.push(s.chars().take(60).collect());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Sentences counted so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// What to tell the user, when any sentence was all unknown tokens.
    pub fn report(&self) -> Option<String> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let examples = self
            .examples
            .lock()
            .map(|e| e.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>())
            .unwrap_or_default();
        Some(format!(
            "{count} sentence{} became only unknown tokens for the tokenizer of `{}` (e.g. {}): \
             their concepts carry nothing of their text; use an encoder whose vocabulary covers \
             their script (--encoder e5 or sonar)",
            if count == 1 { "" } else { "s" },
            self.inner.id(),
            examples.join(", ")
        ))
    }
}

impl ConceptEncoder for UnknownTally<'_> {
    fn encode(&self, sentences: &[&str], lang: Option<&str>) -> lcm_concept::Result<Tensor> {
        self.tally(sentences)?;
        self.inner.encode(sentences, lang)
    }

    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn id(&self) -> &str {
        self.inner.id()
    }

    fn max_tokens(&self) -> Option<usize> {
        self.inner.max_tokens()
    }

    fn token_counts(&self, sentences: &[&str]) -> lcm_concept::Result<Option<Vec<usize>>> {
        self.inner.token_counts(sentences)
    }

    fn unknown_only(&self, sentences: &[&str]) -> lcm_concept::Result<Option<Vec<bool>>> {
        self.inner.unknown_only(sentences)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_encoder() {
        assert_eq!(
            encoder_spec_for_id("all-MiniLM-L6-v2@0123456789ab"),
            ("all-MiniLM-L6-v2".to_string(), None)
        );
        assert_eq!(
            encoder_spec_for_id("multilingual-e5-small-q4@0123456789ab+passage"),
            (
                "multilingual-e5-small-q4".to_string(),
                Some("passage".to_string())
            )
        );
        assert_eq!(
            encoder_spec_for_id("sonar-text-encoder@0123456789ab"),
            ("sonar".to_string(), None)
        );
    }

    #[test]
    fn languages_resolve_or_list_matches() {
        assert_eq!(resolve_language(Some("fr")).unwrap(), Some("fra_Latn"));
        assert_eq!(resolve_language(None).unwrap(), None);
        let e = resolve_language(Some("fre_Latn")).unwrap_err().to_string();
        assert!(e.contains("fra_Latn"), "{e}");
    }
}
