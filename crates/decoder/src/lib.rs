//! Concept decoders of SONAR's decoder architecture trained for any sentence encoder (e.g.
//! MiniLM), so that concepts of an open encoder can be turned back into text:
//!
//! - [`tokenizer`]: the byte-level BPE learnt on the training sentences, with SONAR's
//!   special ids and the `[</s>]` prompt;
//! - [`split`]: the sentences of a concept store, held out like `lcm train` / `lcm eval`;
//! - [`train`]: the decoder trainer on the one training loop ([`train_decoder`]);
//! - [`fused`]: its fused step, the decoder on the fused engine data parallel over a
//!   batch's sentences ([`fused::FusedDecoder`]);
//! - [`inference`]: the trained decoder as a [`lcm_concept::ConceptDecoder`]
//!   ([`TrainedDecoder`]) and the run folder's `decoder.json` ([`DecoderMeta`]);
//! - [`roundtrip`]: round-trip evaluation (BLEU, exact match, `cos(encode(decode(x)), x)`)
//!   next to the retrieval decoder;
//! - `batch` (private): teacher-forcing batches, the token loss, the epoch plan.
//!
//! A run folder holds:
//!
//! ```text
//! decoder.json        DecoderMeta: architecture, encoder id, tokenizer, split, step
//! tokenizer.json      the byte-level BPE (HF `tokenizers` format)
//! model.safetensors   the weights under fairseq2 key names (newest finished call)
//! config.json         the full training configuration (the training loop's)
//! metrics.jsonl       one line per optimiser step (valid_loss on validation steps)
//! events.out.tfevents.*  the same numbers as TensorBoard scalars (one file per call)
//! loss.png            the loss curves, plotted at the end of each call
//! checkpoints/        step-N/ with weights, AdamW moments, RNG and data position
//! ```
//!
//! The model itself is the SONAR port's [`lcm_sonar::model::SonarDecoder`]; this crate
//! adds what training for an open encoder needs. Its steps run on the fused engine
//! (`lcm_engine::SonarDecoderEngine`, data parallel in [`fused`]) by default, candle
//! autograd on request; it uses no LCM model itself (the engine crate hosts the LCMs'
//! engines too), and no workflow or planner.

mod batch;
pub mod error;
pub mod fused;
pub mod inference;
pub mod roundtrip;
pub mod split;
pub mod tokenizer;
pub mod train;

pub use error::{DecoderError, Result};
pub use inference::{
    DecoderMeta, FORMAT, META_FILE, MODEL_FILE, TOKENIZER_FILE, TokenizerInfo, TrainedDecoder,
};
pub use lcm_train::run::{CHECKPOINT_DIR, CONFIG_FILE, METRICS_FILE, PLOT_FILE};
pub use roundtrip::{HeldOutSample, RoundTripConfig, RoundTripReport};
pub use split::SentenceSplit;
pub use tokenizer::{DecoderTokenizer, PROMPT, SPECIAL_TOKENS};
pub use train::{
    DecoderStepMetrics, DecoderTrainConfig, DecoderTrainSummary, TrainEvent, train_decoder,
};
