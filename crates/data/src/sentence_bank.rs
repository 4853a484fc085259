//! The sentence bank: every distinct sentence of a concept store with its L2-normalised
//! vector, on disk and memory-mapped. The decoder that searches it is
//! [`crate::retrieval::RetrievalDecoder`].
//!
//! A bank is a folder:
//!
//! | file           | content                                                               |
//! |----------------|-----------------------------------------------------------------------|
//! | `bank.json`    | [`BankMeta`]: format, encoder id, dimension, sentence count            |
//! | `vectors.f32`  | `count × dim` f32, little-endian, row-major, each row of unit L2 norm |
//! | `offsets.u64`  | `count + 1` u64 little-endian byte offsets into `sentences.txt`        |
//! | `sentences.txt`| the sentences' UTF-8 bytes, concatenated                               |
//!
//! It is written into `<out>.tmp` and renamed into place once complete, so a bank folder is
//! whole or absent. Opening one maps the three data files and checks their sizes against
//! `bank.json`; nothing is read into memory until it is searched.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result, io_error};
use crate::store::{ConceptDocument, ConceptStore};

pub const META_FILE: &str = "bank.json";
pub const VECTORS_FILE: &str = "vectors.f32";
pub const OFFSETS_FILE: &str = "offsets.u64";
pub const SENTENCES_FILE: &str = "sentences.txt";
pub const BANK_FORMAT: &str = "lcm-sentence-bank-1";

/// Bank rows scored per matrix product by default (4096 × 1024 f32 = 16 MiB per block).
pub const DEFAULT_BLOCK_ROWS: usize = 4096;

/// Contents of `bank.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankMeta {
    pub format: String,
    pub encoder_id: String,
    pub dim: usize,
    /// Number of (distinct) sentences.
    pub count: usize,
    /// Where the sentences came from (the store's path), for humans.
    pub source: String,
}

/// What [`SentenceBank::build`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankReport {
    pub path: PathBuf,
    /// Sentences read from the store, duplicates included.
    pub sentences_read: usize,
    /// Distinct sentences written.
    pub unique: usize,
    /// Repeated sentences skipped (the first occurrence's vector is kept).
    pub duplicates: usize,
    /// Sentences skipped because their vector is all zeros (no direction to normalise).
    pub zero_vectors: usize,
}

/// A bank folder, opened memory-mapped.
#[derive(Debug)]
pub struct SentenceBank {
    root: PathBuf,
    meta: BankMeta,
    vectors: Mmap,
    offsets: Mmap,
    text: Mmap,
}

fn schema_error(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Schema {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

struct BankWriter {
    dir: PathBuf,
    vectors: BufWriter<File>,
    offsets: BufWriter<File>,
    text: BufWriter<File>,
    text_len: u64,
}

impl BankWriter {
    fn create(dir: &Path) -> Result<Self> {
        let open = |name: &str| -> Result<BufWriter<File>> {
            let path = dir.join(name);
            Ok(BufWriter::new(
                File::create(&path).map_err(io_error(&path))?,
            ))
        };
        let mut writer = Self {
            dir: dir.to_path_buf(),
            vectors: open(VECTORS_FILE)?,
            offsets: open(OFFSETS_FILE)?,
            text: open(SENTENCES_FILE)?,
            text_len: 0,
        };
        let path = dir.join(OFFSETS_FILE);
        writer
            .offsets
            .write_all(&0u64.to_le_bytes())
            .map_err(io_error(&path))?;
        Ok(writer)
    }

    fn push(&mut self, sentence: &str, unit: &[f32]) -> Result<()> {
        let vectors = self.dir.join(VECTORS_FILE);
        for v in unit {
            self.vectors
                .write_all(&v.to_le_bytes())
                .map_err(io_error(&vectors))?;
        }
        let text = self.dir.join(SENTENCES_FILE);
        self.text
            .write_all(sentence.as_bytes())
            .map_err(io_error(&text))?;
        self.text_len += sentence.len() as u64;
        let offsets = self.dir.join(OFFSETS_FILE);
        self.offsets
            .write_all(&self.text_len.to_le_bytes())
            .map_err(io_error(&offsets))?;
        Ok(())
    }

    fn finish(self) -> Result<()> {
        for (writer, name) in [
            (self.vectors, VECTORS_FILE),
            (self.offsets, OFFSETS_FILE),
            (self.text, SENTENCES_FILE),
        ] {
            let path = self.dir.join(name);
            let file = writer.into_inner().map_err(|e| DataError::Io {
                path: path.clone(),
                source: e.into_error(),
            })?;
            file.sync_all().map_err(io_error(&path))?;
        }
        Ok(())
    }
}

impl SentenceBank {
    /// Builds a bank at `out` from every sentence of `store` (see [`Self::build_from_documents`]).
    pub fn build(store: &ConceptStore, out: &Path) -> Result<BankReport> {
        Self::build_from_documents(
            store.documents(),
            &store.meta.encoder_id,
            store.meta.dim,
            &store.root.display().to_string(),
            out,
        )
    }

    /// Builds a bank at `out` from `documents` (vectors of encoder `encoder_id`, dimension
    /// `dim`): exact-duplicate sentences are kept once (first occurrence), vectors are
    /// L2-normalised, all-zero vectors are skipped. Written to `<out>.tmp`, then renamed; an
    /// existing `out` is refused rather than overwritten.
    pub fn build_from_documents<I>(
        documents: I,
        encoder_id: &str,
        dim: usize,
        source: &str,
        out: &Path,
    ) -> Result<BankReport>
    where
        I: IntoIterator<Item = Result<ConceptDocument>>,
    {
        if dim == 0 {
            return Err(DataError::Invalid("a sentence bank needs dim > 0".into()));
        }
        if out.exists() {
            return Err(DataError::Invalid(format!(
                "{} already exists; delete it or choose another output folder for the sentence bank",
                out.display()
            )));
        }
        let tmp = lcm_util::fs::temporary_path(out);
        if tmp.exists() {
            // Leftover of an interrupted build: never a complete bank, safe to discard.
            std::fs::remove_dir_all(&tmp).map_err(io_error(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io_error(&tmp))?;
        let mut writer = BankWriter::create(&tmp)?;
        let mut seen: HashSet<String> = HashSet::new();
        let mut report = BankReport {
            path: out.to_path_buf(),
            sentences_read: 0,
            unique: 0,
            duplicates: 0,
            zero_vectors: 0,
        };
        let mut unit = vec![0f32; dim];
        for document in documents {
            let document = document?;
            if document.embeddings.len() != document.sentences.len() * dim {
                return Err(DataError::Invalid(format!(
                    "document `{}` has {} sentences but {} embedding values (dim {dim})",
                    document.id,
                    document.sentences.len(),
                    document.embeddings.len()
                )));
            }
            for (sentence, vector) in document
                .sentences
                .iter()
                .zip(document.embeddings.chunks_exact(dim))
            {
                report.sentences_read += 1;
                if seen.contains(sentence.as_str()) {
                    report.duplicates += 1;
                    continue;
                }
                if vector.iter().any(|v| !v.is_finite()) {
                    return Err(DataError::NonFinite {
                        path: out.to_path_buf(),
                        reason: format!(
                            "document `{}`: sentence {sentence:?} has a non-finite vector",
                            document.id
                        ),
                    });
                }
                let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
                if norm == 0.0 {
                    report.zero_vectors += 1;
                    continue;
                }
                for (u, v) in unit.iter_mut().zip(vector) {
                    *u = v / norm;
                }
                writer.push(sentence, &unit)?;
                seen.insert(sentence.clone());
                report.unique += 1;
            }
        }
        writer.finish()?;
        if report.unique == 0 {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(DataError::Invalid(format!(
                "no sentences with a non-zero vector in {source}; a sentence bank cannot be empty"
            )));
        }
        let meta = BankMeta {
            format: BANK_FORMAT.to_string(),
            encoder_id: encoder_id.to_string(),
            dim,
            count: report.unique,
            source: source.to_string(),
        };
        let meta_path = tmp.join(META_FILE);
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| DataError::Invalid(format!("bank metadata: {e}")))?;
        let mut file = File::create(&meta_path).map_err(io_error(&meta_path))?;
        file.write_all(&json).map_err(io_error(&meta_path))?;
        file.sync_all().map_err(io_error(&meta_path))?;
        std::fs::rename(&tmp, out).map_err(io_error(out))?;
        Ok(report)
    }

    /// Opens a bank folder, checking its metadata and that every data file has the size it
    /// implies (a truncated file is named in the error).
    pub fn open(path: &Path) -> Result<Self> {
        if cfg!(target_endian = "big") {
            return Err(DataError::Invalid(
                "sentence banks are little-endian and are memory-mapped as is; big-endian hosts are not supported".into(),
            ));
        }
        let meta_path = path.join(META_FILE);
        if !meta_path.is_file() {
            return Err(DataError::Invalid(format!(
                "{} is not a sentence bank (no {META_FILE}); build one with `SentenceBank::build` from a concept store",
                path.display()
            )));
        }
        let bytes = std::fs::read(&meta_path).map_err(io_error(&meta_path))?;
        let meta: BankMeta = serde_json::from_slice(&bytes)
            .map_err(|e| schema_error(&meta_path, format!("invalid bank metadata: {e}")))?;
        if meta.format != BANK_FORMAT {
            return Err(schema_error(
                &meta_path,
                format!(
                    "unknown bank format `{}` (this build reads `{BANK_FORMAT}`)",
                    meta.format
                ),
            ));
        }
        if meta.dim == 0 || meta.count == 0 {
            return Err(schema_error(&meta_path, "bank has dim 0 or no sentences"));
        }
        let map = |name: &str, expected: Option<u64>| -> Result<Mmap> {
            let file_path = path.join(name);
            let file = File::open(&file_path).map_err(io_error(&file_path))?;
            let len = file.metadata().map_err(io_error(&file_path))?.len();
            if let Some(expected) = expected
                && len != expected
            {
                return Err(schema_error(
                    &file_path,
                    format!(
                        "{} bytes but {META_FILE} ({} sentences × dim {}) implies {expected}: the file is truncated or from another bank; rebuild the bank",
                        len, meta.count, meta.dim
                    ),
                ));
            }
            // SAFETY: the bank's files are written once (into a temporary folder renamed into
            // place) and never modified afterwards; mapping them read-only is sound as long as
            // no one edits them behind our back, as for any memory-mapped artifact.
            unsafe { Mmap::map(&file) }.map_err(io_error(&file_path))
        };
        let vectors = map(VECTORS_FILE, Some((meta.count * meta.dim * 4) as u64))?;
        let offsets = map(OFFSETS_FILE, Some(((meta.count + 1) * 8) as u64))?;
        let text = map(SENTENCES_FILE, None)?;
        let bank = Self {
            root: path.to_path_buf(),
            meta,
            vectors,
            offsets,
            text,
        };
        let last = bank.offset(bank.meta.count);
        if last != bank.text.len() as u64 {
            return Err(schema_error(
                &path.join(SENTENCES_FILE),
                format!(
                    "{} bytes but {OFFSETS_FILE} ends at {last}: the file is truncated or from another bank; rebuild the bank",
                    bank.text.len()
                ),
            ));
        }
        // The cast in `vectors()` needs 4-byte alignment; page-aligned maps always have it.
        if bank
            .vectors
            .as_ptr()
            .align_offset(std::mem::align_of::<f32>())
            != 0
        {
            return Err(DataError::Invalid(
                "memory map of vectors.f32 is not f32-aligned".into(),
            ));
        }
        Ok(bank)
    }

    /// Opens the bank and refuses it unless it was built from vectors of `encoder_id` / `dim`.
    pub fn open_expecting(path: &Path, encoder_id: &str, dim: usize) -> Result<Self> {
        let bank = Self::open(path)?;
        if bank.meta.encoder_id != encoder_id || bank.meta.dim != dim {
            return Err(schema_error(
                &path.join(META_FILE),
                format!(
                    "sentence bank was built from encoder `{}` (dim {}) but the concepts to decode come from `{encoder_id}` (dim {dim}); nearest neighbours across embedding spaces are meaningless: build a bank from a store of the same encoder",
                    bank.meta.encoder_id, bank.meta.dim
                ),
            ));
        }
        Ok(bank)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn meta(&self) -> &BankMeta {
        &self.meta
    }
    pub fn encoder_id(&self) -> &str {
        &self.meta.encoder_id
    }
    pub fn dim(&self) -> usize {
        self.meta.dim
    }
    pub fn len(&self) -> usize {
        self.meta.count
    }
    pub fn is_empty(&self) -> bool {
        self.meta.count == 0
    }

    /// All unit vectors, row-major `[len(), dim()]`.
    pub fn vectors(&self) -> &[f32] {
        // SAFETY: `open` checked the map is f32-aligned and holds exactly count·dim·4 bytes;
        // every bit pattern is a valid f32; the host is little-endian like the file.
        unsafe {
            std::slice::from_raw_parts(
                self.vectors.as_ptr().cast::<f32>(),
                self.meta.count * self.meta.dim,
            )
        }
    }

    /// Unit vector of sentence `index`.
    pub fn vector(&self, index: usize) -> &[f32] {
        &self.vectors()[index * self.meta.dim..][..self.meta.dim]
    }

    fn offset(&self, index: usize) -> u64 {
        let bytes: [u8; 8] = self.offsets[index * 8..][..8]
            .try_into()
            .expect("8-byte slice");
        u64::from_le_bytes(bytes)
    }

    /// Sentence `index` (`index < len()`).
    pub fn sentence(&self, index: usize) -> Result<&str> {
        if index >= self.meta.count {
            return Err(DataError::Invalid(format!(
                "sentence index {index} out of range (bank of {})",
                self.meta.count
            )));
        }
        let (start, end) = (self.offset(index), self.offset(index + 1));
        let path = self.root.join(SENTENCES_FILE);
        if start > end || end > self.text.len() as u64 {
            return Err(schema_error(
                &self.root.join(OFFSETS_FILE),
                format!("corrupt offsets for sentence {index}: {start}..{end}"),
            ));
        }
        std::str::from_utf8(&self.text[start as usize..end as usize])
            .map_err(|e| schema_error(&path, format!("sentence {index} is not valid UTF-8: {e}")))
    }
}
