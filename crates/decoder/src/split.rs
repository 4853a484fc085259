//! The sentences a decoder is trained and evaluated on, read from a concept store and
//! split like the LCM trainer's held-out split (shared with `lcm eval`): a document is held
//! out when [`split_of`]`(id, valid_fraction)` says so, and every sentence of a held-out
//! document is removed from the training sentences (also where it occurs in a training
//! document), so round-trip evaluation never sees a sentence the decoder was trained on.

use std::collections::HashSet;
use std::path::Path;

use lcm_data::batch::{Split, split_of};
use lcm_data::store::ConceptStore;

use crate::error::{DecoderError, Result};

/// Sentences of a store with their vectors, split like the LCM trainer's held-out split.
pub struct SentenceSplit {
    pub encoder_id: String,
    pub dim: usize,
    /// Distinct training sentences (none of them occurs in a held-out document).
    pub train_texts: Vec<String>,
    /// `train_texts.len() × dim`.
    pub train_vectors: Vec<f32>,
    /// Distinct sentences of held-out documents, in store order.
    pub valid_texts: Vec<String>,
    pub valid_vectors: Vec<f32>,
    /// Sentences dropped: empty, or a repeat of one already kept.
    pub skipped_empty: usize,
    pub duplicates: usize,
    /// Training-document sentences dropped because a held-out document has them.
    pub removed_held_out: usize,
}

impl SentenceSplit {
    /// Reads every sentence of the store at `store_path` into memory.
    pub fn load(store_path: &Path, valid_fraction: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&valid_fraction) {
            return Err(DecoderError::input(format!(
                "the validation fraction must be in [0, 1), got {valid_fraction}"
            )));
        }
        let store = ConceptStore::open(store_path)
            .map_err(|e| DecoderError::file(store_path, format!("cannot open the store: {e}")))?;
        let dim = store.meta.dim;
        let mut train: Vec<(String, Vec<f32>)> = Vec::new();
        let mut split = Self {
            encoder_id: store.meta.encoder_id.clone(),
            dim,
            train_texts: Vec::new(),
            train_vectors: Vec::new(),
            valid_texts: Vec::new(),
            valid_vectors: Vec::new(),
            skipped_empty: 0,
            duplicates: 0,
            removed_held_out: 0,
        };
        let mut seen_valid: HashSet<String> = HashSet::new();
        let mut seen_train: HashSet<String> = HashSet::new();
        for document in store.documents() {
            let document =
                document.map_err(|e| DecoderError::file(store_path, format!("reading: {e}")))?;
            if document.embeddings.len() != document.sentences.len() * dim {
                return Err(DecoderError::file(
                    store_path,
                    format!(
                        "document `{}` has {} sentences but {} vector values (dim {dim})",
                        document.id,
                        document.sentences.len(),
                        document.embeddings.len()
                    ),
                ));
            }
            let held_out = split_of(&document.id, valid_fraction) == Split::Valid;
            for (sentence, vector) in document
                .sentences
                .iter()
                .zip(document.embeddings.chunks_exact(dim))
            {
                if sentence.trim().is_empty() {
                    split.skipped_empty += 1;
                    continue;
                }
                if vector.iter().any(|v| !v.is_finite()) {
                    return Err(DecoderError::file(
                        store_path,
                        format!(
                            "document `{}`: sentence {sentence:?} has a non-finite vector; \
                             re-run `lcm prepare` on that document",
                            document.id
                        ),
                    ));
                }
                let (seen, kept_texts) = if held_out {
                    (&mut seen_valid, None)
                } else {
                    (&mut seen_train, Some(()))
                };
                if !seen.insert(sentence.clone()) {
                    split.duplicates += 1;
                    continue;
                }
                match kept_texts {
                    None => {
                        split.valid_texts.push(sentence.clone());
                        split.valid_vectors.extend_from_slice(vector);
                    }
                    Some(()) => train.push((sentence.clone(), vector.to_vec())),
                }
            }
        }
        for (text, vector) in train {
            if seen_valid.contains(&text) {
                split.removed_held_out += 1;
                continue;
            }
            split.train_texts.push(text);
            split.train_vectors.extend_from_slice(&vector);
        }
        Ok(split)
    }

    /// Vector `i` of the held-out sentences.
    pub fn valid_vector(&self, i: usize) -> &[f32] {
        &self.valid_vectors[i * self.dim..(i + 1) * self.dim]
    }
}
