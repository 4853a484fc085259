//! The layout of a concept store on disk, beyond its shards: where its normaliser and its
//! sentence bank live, and building the bank the first time a command needs it.
//!
//! ```text
//! STORE/                   a directory of shards (or STORE.parquet, one shard: the files
//!   shard-NNNNN.parquet    below then sit next to it)
//!   normalizer.safetensors written by `lcm fit-normalizer`, read by training
//!   sentence-bank/         the retrieval decoder's bank, built on first use
//! ```

use std::path::{Path, PathBuf};

use lcm_data::RetrievalDecoder;
use lcm_data::sentence_bank::{BankReport, SentenceBank};
pub use lcm_data::store::{ConceptDocument, ConceptStore, StoreMeta};
use lcm_data::store::{DocumentIter, StoreFile, shard_paths};

use crate::{Result, WorkflowError};

/// File name of a store's normaliser.
pub const NORMALIZER_FILE: &str = "normalizer.safetensors";
/// Folder name of a store's sentence bank.
pub const BANK_DIR: &str = "sentence-bank";

/// What [`StoreLayout::open_or_build_bank`] reports while it builds a bank, so that an
/// entry point can tell its user why the first call takes longer.
#[derive(Debug)]
pub enum BankNotice<'a> {
    /// The bank is missing and is being built from the store.
    Building { bank: &'a Path, store: &'a Path },
    /// The bank was built.
    Built(&'a BankReport),
}

/// The paths of a concept store's companion files.
#[derive(Clone, Debug)]
pub struct StoreLayout {
    store: PathBuf,
}

impl StoreLayout {
    /// The layout of the store at `store` (a directory of shards or one `.parquet` file).
    pub fn new(store: impl Into<PathBuf>) -> Self {
        Self {
            store: store.into(),
        }
    }

    pub fn store(&self) -> &Path {
        &self.store
    }

    /// `STORE/normalizer.safetensors` (next to the file for a one-file store).
    pub fn normalizer(&self) -> PathBuf {
        self.companion(NORMALIZER_FILE)
    }

    /// `STORE/sentence-bank` (next to the file for a one-file store).
    pub fn bank(&self) -> PathBuf {
        self.companion(BANK_DIR)
    }

    /// The bank's path, after building it from the store's sentences if it does not exist
    /// yet (once: later calls find it).
    pub fn open_or_build_bank(&self, notify: &mut dyn FnMut(BankNotice<'_>)) -> Result<PathBuf> {
        let path = self.bank();
        if !path.exists() {
            let opened = ConceptStore::open(&self.store)?;
            notify(BankNotice::Building {
                bank: &path,
                store: &self.store,
            });
            let report =
                SentenceBank::build(&opened, &path).map_err(|source| WorkflowError::Bank {
                    action: "building",
                    path: path.clone(),
                    source: Box::new(source),
                })?;
            notify(BankNotice::Built(&report));
        }
        Ok(path)
    }

    fn companion(&self, name: &str) -> PathBuf {
        if self.store.is_dir() {
            self.store.join(name)
        } else {
            self.store.with_file_name(name)
        }
    }
}

/// The retrieval decoder over `bank`, else over the bank of `store` (built when missing), in
/// whatever embedding space it holds: for decoding vectors with no model to check them
/// against (Python's `lcm.Decoder`).
pub fn retrieval_decoder_of(
    bank: Option<&Path>,
    store: Option<&Path>,
    notify: &mut dyn FnMut(BankNotice<'_>),
) -> Result<RetrievalDecoder> {
    let (encoder_id, dim) = match (bank, store) {
        (Some(bank), _) => {
            let opened = SentenceBank::open(bank).map_err(|source| WorkflowError::Bank {
                action: "opening the sentence bank",
                path: bank.to_path_buf(),
                source: Box::new(source),
            })?;
            (opened.encoder_id().to_string(), opened.dim())
        }
        (None, Some(store)) => {
            let opened = ConceptStore::open(store)?;
            (opened.meta.encoder_id.clone(), opened.meta.dim)
        }
        (None, None) => {
            return Err(WorkflowError::Refused(
                "pass a store or a bank for the retrieval decoder".into(),
            ));
        }
    };
    retrieval_decoder(bank, store, &encoder_id, dim, notify)
}

/// The retrieval decoder over `bank`, else over the bank of `store` (built when missing),
/// refusing a bank of another embedding space than `encoder_id` / `dim`.
pub fn retrieval_decoder(
    bank: Option<&Path>,
    store: Option<&Path>,
    encoder_id: &str,
    dim: usize,
    notify: &mut dyn FnMut(BankNotice<'_>),
) -> Result<RetrievalDecoder> {
    let path = match (bank, store) {
        (Some(bank), _) => bank.to_path_buf(),
        (None, Some(store)) => StoreLayout::new(store).open_or_build_bank(notify)?,
        (None, None) => {
            return Err(WorkflowError::Refused(
                "pass --store STORE or --bank BANK for the retrieval decoder".into(),
            ));
        }
    };
    RetrievalDecoder::open(&path, encoder_id, dim).map_err(|source| WorkflowError::Bank {
        action: "opening the sentence bank",
        path,
        source: Box::new(source),
    })
}

/// The documents of a store read shard by shard, owning what it reads (a `ConceptStore`'s
/// own iterator borrows the store): what a binding hands out as a Python iterator.
pub struct StoreDocuments {
    shards: Vec<PathBuf>,
    next_shard: usize,
    current: Option<DocumentIter>,
}

impl StoreDocuments {
    /// The documents of the store at `path`, in store order.
    pub fn open(path: &Path) -> Result<Self> {
        ConceptStore::open(path)?;
        Ok(Self {
            shards: shard_paths(path)?,
            next_shard: 0,
            current: None,
        })
    }

    /// The Parquet shard files, in order.
    pub fn shards(&self) -> &[PathBuf] {
        &self.shards
    }
}

impl Iterator for StoreDocuments {
    type Item = Result<ConceptDocument>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(document) = self.current.as_mut().and_then(Iterator::next) {
                return Some(document.map_err(WorkflowError::from));
            }
            let path = self.shards.get(self.next_shard)?.clone();
            self.next_shard += 1;
            match StoreFile::open(&path).and_then(|file| file.documents()) {
                Ok(documents) => self.current = Some(documents),
                Err(e) => return Some(Err(e.into())),
            }
        }
    }
}
