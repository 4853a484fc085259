//! Upstream reference values with the real SONAR weights (SONAR's
//! `tests/integration_tests/test_text_sonar.py`, same sentences, same tolerances 1e-4):
//! the encoder's cosine matrix and the French decode through the pipeline. The logits check
//! of the same upstream test is `real_weights_decoder_logits` in `tests/model.rs`.
//!
//! Needs the published files (CC-BY-NC-4.0, not in the repository):
//! `lcm models fetch sonar --download`, then
//! `SONAR_DIR=~/.lcm/models/sonar cargo test --release -p lcm-sonar --test real_weights -- --ignored`
//! (SONAR_DIR defaults to `$LCM_HOME/models/sonar`).

use std::path::PathBuf;

use candle_core::{D, Tensor};
use lcm_concept::{ConceptEncoder, DecodeConfig};
use lcm_sonar::pipeline::{SonarTextDecoder, SonarTextEncoder, default_sonar_dir};

const ENG: [&str; 2] = ["Hello, my name is Paul", "I'm working as a teacher"];
const FRA: [&str; 2] = [
    "Bonjour, mon nom est Paul",
    "Je travaille comme professeur.",
];

fn sonar_dir() -> PathBuf {
    std::env::var_os("SONAR_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(default_sonar_dir)
}

fn normalized(x: &Tensor) -> Tensor {
    let norm = x
        .sqr()
        .unwrap()
        .sum_keepdim(D::Minus1)
        .unwrap()
        .sqrt()
        .unwrap();
    x.broadcast_div(&norm).unwrap()
}

fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= 1e-4 + 1e-4 * e.abs(),
            "{what}[{i}]: {a} vs reference {e} (all: {actual:?})"
        );
    }
}

#[test]
#[ignore = "needs the real SONAR weights (lcm models fetch sonar --download)"]
fn encoder_cosines_match_upstream() {
    let encoder = SonarTextEncoder::open(&sonar_dir()).expect("SONAR encoder");
    let eng = normalized(&encoder.encode(&ENG, Some("eng_Latn")).unwrap());
    let fra = normalized(&encoder.encode(&FRA, Some("fra_Latn")).unwrap());
    let sim = eng
        .matmul(&fra.t().unwrap())
        .unwrap()
        .flatten_all()
        .unwrap();
    assert_close(
        &sim.to_vec1::<f32>().unwrap(),
        &[0.9367, 0.3658, 0.3787, 0.8596],
        "cosine",
    );
}

#[test]
#[ignore = "needs the real SONAR weights (lcm models fetch sonar --download)"]
fn english_vectors_decode_to_upstream_french() {
    let dir = sonar_dir();
    let encoder = SonarTextEncoder::open(&dir).expect("SONAR encoder");
    let decoder = SonarTextDecoder::open(&dir).expect("SONAR decoder");
    let emb = encoder.encode(&ENG, Some("eng_Latn")).unwrap();
    let config = DecodeConfig {
        beam_size: 5,
        max_len: 0,
        ..DecodeConfig::default()
    };
    let texts: Vec<String> = decoder
        .decode_texts(&emb, "fra_Latn", &config)
        .unwrap()
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(texts, FRA);
}
