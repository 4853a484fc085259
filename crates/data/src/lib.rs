//! Data layer: corpus readers, the Parquet concept store, and the `prepare` pipeline.
//!
//! - [`reader`]: JSONL / plain-text folder / Parquet-with-text-column input, streamed.
//! - [`store`]: the concept store's schema, atomic shard writer and validating reader.
//! - [`prepare`]: text → sentences → concepts → shards, resumable.
//! - [`batch`]: normalised, wrapped concept sequences, held-out split, resumable packed batches.
//! - [`pairs`]: prompt → answer pair stores (two stores by id) for fine-tuning and summaries.
//! - [`sample`]: seeded reservoir sampling of concept vectors (normaliser fitting).
//! - [`sentence_bank`]: deduplicated sentences + normalised vectors, memory-mapped.
//! - [`retrieval`]: the retrieval decoder (nearest bank sentence by cosine).
//! - [`inspect`]: schema, metadata and summary statistics of stores and artifacts.

pub mod batch;
pub mod error;
pub mod inspect;
pub mod pairs;
pub mod prepare;
pub mod reader;
pub mod retrieval;
pub mod sample;
pub mod sentence_bank;
pub mod store;

pub use error::{DataError, Result};
pub use retrieval::RetrievalDecoder;
