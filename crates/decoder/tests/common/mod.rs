//! Fixtures shared by the decoder tests: a tiny concept store with seeded random unit
//! vectors, and the smallest training configuration that still learns.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use lcm_data::store::{ConceptDocument, StoreDType, StoreMeta, write_shard};
use lcm_decoder::DecoderTrainConfig;
use lcm_decoder::train::DecoderEngine;
use rand::{Rng, SeedableRng};

pub const ENCODER: &str = "test-encoder@000000000000";
pub const DIM: usize = 16;

pub const SENTENCES: [&str; 8] = [
    "The cat sat on the mat.",
    "Rust is a systems language!",
    "Où est la gare, s'il vous plaît ?",
    "Numbers: 3.14, 42 and 1e-9.",
    "UPPER and lower Case.",
    "Ellipses… and “quotes”.",
    "日本語の文です。",
    "Emoji 🙂 at the end",
];

/// A store of one document holding `sentences` with random unit vectors (fixed seed).
pub fn write_store(dir: &Path, sentences: &[&str]) -> PathBuf {
    write_documents(dir, &[("doc-0", sentences)])
}

/// A store of `documents` (id, sentences), vectors drawn in order from one seeded stream.
pub fn write_documents(dir: &Path, documents: &[(&str, &[&str])]) -> PathBuf {
    let store = dir.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let docs: Vec<ConceptDocument> = documents
        .iter()
        .map(|(id, sentences)| {
            let mut embeddings = Vec::new();
            for _ in sentences.iter() {
                let v: Vec<f32> = (0..DIM).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                embeddings.extend(v.iter().map(|x| x / norm));
            }
            ConceptDocument {
                id: id.to_string(),
                source: "test".into(),
                sentences: sentences.iter().map(|s| s.to_string()).collect(),
                embeddings,
            }
        })
        .collect();
    let meta = StoreMeta {
        encoder_id: ENCODER.to_string(),
        dim: DIM,
        dtype: StoreDType::F32,
        segmenter_version: "test".into(),
        tool_version: "test".into(),
    };
    write_shard(&store.join("shard-00000.parquet"), &meta, &docs).unwrap();
    store
}

pub fn tiny_config(steps: u64) -> DecoderTrainConfig {
    DecoderTrainConfig {
        layers: 1,
        dim: None,
        heads: 2,
        ffn: 64,
        vocab_size: 300,
        max_seq_len: 64,
        batch_size: 8,
        lr: 1e-2,
        warmup_steps: 10,
        final_lr_scale: 0.1,
        weight_decay: 0.0,
        clip: 1.0,
        label_smoothing: 0.0,
        steps,
        seed: 3,
        valid_fraction: 0.0,
        valid_sentences: 0,
        eval_every: 0,
        checkpoint_every: 0,
        keep_last: 0,
        max_seconds: None,
        stop_at: None,
        engine: DecoderEngine::default(),
    }
}
