//! The SONAR pipeline types on the tiny random-weight fixtures: `SonarTextEncoder` gives the
//! reference's pooled embeddings from raw text, and `SonarTextDecoder` reproduces
//! `EmbeddingToTextModelPipeline.predict`'s texts (fixtures: `scripts/sonar/make_fixtures.py`).

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use lcm_concept::{ConceptDecoder, ConceptEncoder, DecodeConfig};
use lcm_sonar::pipeline::{SonarTextDecoder, SonarTextEncoder};
use lcm_sonar::tokenizer::SonarTokenizer;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn tokenizer() -> SonarTokenizer {
    let langs: Vec<String> = ["deu_Latn", "eng_Latn", "fra_Latn"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    SonarTokenizer::from_file(&fixtures().join("tiny_spm.model"), &langs).expect("tokenizer")
}

fn json() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("model_fixtures.json")).expect("json");
    serde_json::from_str(&text).expect("parse")
}

fn reference_embeddings() -> Tensor {
    let tensors =
        candle_core::safetensors::load(fixtures().join("model_fixtures.safetensors"), &Device::Cpu)
            .expect("fixture tensors");
    tensors["encoder.embeddings"]
        .to_dtype(DType::F32)
        .expect("f32")
}

#[test]
fn encoder_embeds_raw_text_like_the_reference() {
    let encoder =
        SonarTextEncoder::from_parts(&fixtures().join("encoder.pt"), tokenizer(), Some(4))
            .expect("encoder");
    let expected = reference_embeddings();
    let fixtures = json();
    for (i, sentence) in fixtures["sentences"]
        .as_array()
        .expect("sentences")
        .iter()
        .enumerate()
    {
        let text = sentence["text"].as_str().expect("text");
        let lang = sentence["lang"].as_str().expect("lang");
        let got = encoder.encode(&[text], Some(lang)).expect("encode");
        let want = expected.narrow(0, i, 1).expect("row");
        let diff = (got - want)
            .expect("sub")
            .abs()
            .expect("abs")
            .max_all()
            .expect("max")
            .to_scalar::<f32>()
            .expect("scalar");
        assert!(diff <= 1e-5, "sentence {i}: max |Δ| {diff}");
    }
}

#[test]
fn decoder_reproduces_the_reference_pipeline_texts() {
    let decoder = SonarTextDecoder::from_parts(
        &fixtures().join("decoder.safetensors"),
        tokenizer(),
        "tiny-encoder".to_string(),
        Some(4),
    )
    .expect("decoder");
    let embeddings = reference_embeddings();
    let fixtures = json();
    let results = fixtures["beam"]["results"].as_array().expect("results");
    let config = DecodeConfig {
        beam_size: 0,
        max_len: 0,
        ..DecodeConfig::default()
    };
    for (i, result) in results.iter().enumerate() {
        let lang = result["target_lang"].as_str().expect("lang");
        let row = embeddings.narrow(0, i, 1).expect("row");
        let decoded = decoder.decode(&row, Some(lang), &config).expect("decode");
        assert_eq!(
            decoded[0].text,
            result["text"].as_str().expect("text"),
            "row {i}"
        );
    }
    let nan = Tensor::full(f32::NAN, (1, 16), &Device::Cpu).expect("nan");
    assert!(decoder.decode(&nan, Some("eng_Latn"), &config).is_err());
}
