//! Data layer: corpus readers, the Parquet concept store, and the `prepare` pipeline.
//!
//! - [`reader`]: JSONL / plain-text folder / Parquet-with-text-column input, streamed.
//! - [`store`]: the concept store's schema, atomic shard writer and validating reader.
//! - [`prepare`]: text → sentences → concepts → shards, resumable.
//! - [`sample`]: seeded reservoir sampling of concept vectors (normaliser fitting).
//! - [`inspect`]: schema, metadata and summary statistics of stores and artifacts.

pub mod error;
pub mod inspect;
pub mod prepare;
pub mod reader;
pub mod sample;
pub mod store;

pub use error::{DataError, Result};
