//! Checking downloaded SONAR files by loading them (`lcm models fetch sonar`): the
//! tokenizer must give SONAR's id layout and each checkpoint the published parameter
//! count. A checksum could not be pinned without the files, so the files are checked by
//! what they contain.

use std::path::Path;

use candle_core::Device;
use lcm_sonar::pipeline::{DEFAULT_LANG, SonarFile, SonarFiles};
use lcm_sonar::tokenizer::SonarTokenizer;
use lcm_sonar::weights::{CheckpointLayout, load_checkpoint};

use crate::{Result, WorkflowError};

/// Ids of SONAR's tokenizer: 256,000 pieces plus the language and control tokens.
pub const SONAR_VOCAB: usize = 256_206;

/// Loads the tokenizer in `dir`; returns its vocabulary size and the id of `eng_Latn`.
pub fn check_sonar_tokenizer(dir: &Path) -> Result<(usize, u32)> {
    let spm = dir.join(SonarFiles::TOKENIZER.name);
    let tokenizer = SonarTokenizer::from_file(&spm, &SonarTokenizer::sonar_languages())?;
    let vocab = tokenizer.vocab_size();
    if vocab != SONAR_VOCAB {
        return Err(WorkflowError::Refused(format!(
            "{}: gives {vocab} ids, SONAR's layout has 256,206; re-download it from {}",
            spm.display(),
            SonarFiles::TOKENIZER.url
        )));
    }
    Ok((vocab, tokenizer.lang_id(DEFAULT_LANG)?))
}

/// Loads the checkpoint `file` in `dir` and checks that it has `expected` parameters;
/// returns the count and the naming layout it was stored in.
pub fn check_sonar_checkpoint(
    dir: &Path,
    file: &SonarFile,
    expected: usize,
) -> Result<(usize, CheckpointLayout)> {
    let path = dir.join(file.name);
    let (tensors, layout) = load_checkpoint(&path, &Device::Cpu)?;
    // The decoder's output projection is tied to its embedding: count that storage once.
    let count: usize = tensors
        .iter()
        .filter(|(name, _)| name.as_str() != "final_proj.weight")
        .map(|(_, t)| t.elem_count())
        .sum();
    if count != expected {
        return Err(WorkflowError::Refused(format!(
            "{}: {count} parameters, the published checkpoint has {expected}; the file is \
             not the published one or is damaged — delete it and download it again from {}",
            path.display(),
            file.url
        )));
    }
    Ok((count, layout))
}
