//! Concept space: text ⇄ sentences ⇄ concept vectors.
//!
//! - [`segment`]: multilingual sentence segmentation with the LCM reference's length cap.
//! - [`encoder`]: the [`ConceptEncoder`] trait; [`bert`] implements it for sentence-transformers folders.
//! - [`resolve`]: finding a model by name or path (explicit path, `$LCM_HOME/models`, HF cache, hub).
//! - [`normalizer`]: the robust per-dimension scaler the LCM trains in.
//! - [`lang`]: language codes (SONAR's, ISO 639-1 short forms) and which encoders cover which.
//! - [`sentencepiece`]: SentencePiece models (XLM-R's tokenizer here, SONAR's in `lcm-sonar`).

pub mod bert;
pub mod decoder;
pub mod encoder;
pub mod error;
pub mod lang;
pub mod normalizer;
pub mod resolve;
pub mod segment;
pub mod sentencepiece;

pub use decoder::{ConceptDecoder, DecodeConfig, Decoded};
pub use encoder::ConceptEncoder;
pub use error::{ConceptError, Result};
