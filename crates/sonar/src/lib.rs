//! SONAR in Rust: Meta's 200-language sentence encoder and decoder (fairseq2 models of
//! sonar-space 0.5), its SentencePiece tokenizer with SONAR's id layout, fairseq2's beam
//! search, and the `ConceptEncoder` / `ConceptDecoder` pipelines over a SONAR folder.
//! Decoders of the same architecture trained for open encoders live in `lcm-decoder`; this
//! crate is a port and depends on no trainer.
//!
//! Parity with the reference is tested against fixtures made by
//! `scripts/sonar/make_fixtures.py` (see `scripts/sonar/FIXTURES.md`).

pub mod error;
pub mod incremental;

pub use error::{Result, SonarError};
pub use incremental::{IncrementalDecoder, SpecialIds};
pub mod generate;
pub mod model;
pub mod pipeline;
pub mod tokenizer;
pub mod weights;
