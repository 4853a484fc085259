//! Prompt → answer pairs for instruction fine-tuning (`lcm finetune`) and summarisation
//! evaluation (`lcm eval-summarization`).
//!
//! # Layout
//!
//! A pair store is a directory with two ordinary concept stores made by `lcm prepare` from
//! the same JSONL of `{"id", "prompt", "answer"}` lines:
//!
//! ```text
//! PAIRS/prompt/   lcm prepare pairs.jsonl --text-field prompt --out PAIRS/prompt
//! PAIRS/answer/   lcm prepare pairs.jsonl --text-field answer --out PAIRS/answer
//! ```
//!
//! Both must live in one embedding space (refused otherwise, naming the store). A pair is a
//! prompt document and the answer document with the same id; ids present on one side only
//! (an empty prompt or answer is skipped by `prepare`) are counted in [`PairStats`].
//!
//! # Sequences
//!
//! [`SplitDataset::from_pairs`](crate::batch::SplitDataset::from_pairs) turns a pair into one
//! training sequence `prompt ++ answer ++ EOS` whose `first_target` is the prompt's length:
//! the loss counts only the answer's concepts and the end-of-text concept (the same "End of
//! text." concept that closes every pre-training document and stops `lcm generate`). A
//! sequence longer than the wrap length keeps the prompt's last concepts; a pair whose
//! answer and EOS alone leave no room for one prompt concept is skipped and counted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::store::{ConceptDocument, ConceptStore, StoreMeta};

/// The prompt store's folder inside a pair store.
pub const PROMPT_DIR: &str = "prompt";
/// The answer store's folder inside a pair store.
pub const ANSWER_DIR: &str = "answer";

/// One prompt → answer pair of concept documents.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptPair {
    pub id: String,
    pub prompt: ConceptDocument,
    pub answer: ConceptDocument,
}

/// How a pair store joined, and what building sequences from it left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairStats {
    /// Pairs with both sides.
    pub pairs: usize,
    /// Prompt documents with no answer of the same id.
    pub prompts_without_answer: usize,
    /// Answer documents with no prompt of the same id.
    pub answers_without_prompt: usize,
    /// Pairs whose prompt was cut to its last concepts to fit the wrap length.
    pub truncated_prompts: usize,
    /// Pairs left out: answer and EOS longer than the wrap length allows.
    pub skipped_too_long: usize,
}

/// The two stores of a pair store.
#[derive(Debug, Clone)]
pub struct PairStore {
    pub root: PathBuf,
    pub prompt: ConceptStore,
    pub answer: ConceptStore,
}

impl PairStore {
    /// Opens `root/prompt` and `root/answer`, refusing stores of different spaces.
    pub fn open(root: &Path) -> Result<Self> {
        let side = |name: &str, field: &str| -> Result<ConceptStore> {
            let path = root.join(name);
            if !path.exists() {
                return Err(DataError::Invalid(format!(
                    "{} is not a pair store: {} is missing; make it with `lcm prepare \
                     PAIRS.jsonl --text-field {field} --out {}` (a JSONL of {{\"id\", \
                     \"prompt\", \"answer\"}} lines)",
                    root.display(),
                    path.display(),
                    path.display()
                )));
            }
            ConceptStore::open(&path)
        };
        let prompt = side(PROMPT_DIR, "prompt")?;
        let answer = side(ANSWER_DIR, "answer")?;
        prompt.meta.check_same_space(&answer.meta, &answer.root)?;
        Ok(Self {
            root: root.to_path_buf(),
            prompt,
            answer,
        })
    }

    /// The embedding space of both stores.
    pub fn meta(&self) -> &StoreMeta {
        &self.prompt.meta
    }

    /// Every pair, in the prompt store's order, and the join's counts.
    pub fn pairs(&self) -> Result<(Vec<ConceptPair>, PairStats)> {
        let mut answers: HashMap<String, ConceptDocument> = HashMap::new();
        for doc in self.answer.documents() {
            let doc = doc?;
            answers.insert(doc.id.clone(), doc);
        }
        let mut stats = PairStats::default();
        let mut pairs = Vec::new();
        for prompt in self.prompt.documents() {
            let prompt = prompt?;
            match answers.remove(&prompt.id) {
                Some(answer) => pairs.push(ConceptPair {
                    id: prompt.id.clone(),
                    prompt,
                    answer,
                }),
                None => stats.prompts_without_answer += 1,
            }
        }
        stats.answers_without_prompt = answers.len();
        stats.pairs = pairs.len();
        if pairs.is_empty() {
            return Err(DataError::Invalid(format!(
                "the pair store {} holds no pair: no prompt id has an answer of the same id",
                self.root.display()
            )));
        }
        Ok((pairs, stats))
    }
}
