//! Round-trip evaluation (`lcm_decoder::roundtrip`) with stand-ins whose scores are known:
//! an encoder that maps each store sentence to its stored vector, and an "oracle" decoder
//! that returns the reference, which must score BLEU 100, exact match 1 and cosine 1.

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use common::{DIM, ENCODER, SENTENCES, tiny_config, write_documents};
use lcm_concept::{ConceptDecoder, ConceptEncoder, DecodeConfig, Decoded};
use lcm_decoder::roundtrip::{self, HeldOutSample, RETRIEVAL_LABEL, RoundTripConfig};
use lcm_decoder::{SentenceSplit, TrainedDecoder, train_decoder};

/// Encodes a known sentence to its stored vector, anything else to a fixed direction.
struct LookupEncoder {
    vectors: HashMap<String, Vec<f32>>,
    id: String,
}

impl ConceptEncoder for LookupEncoder {
    fn encode(&self, sentences: &[&str], _lang: Option<&str>) -> lcm_concept::Result<Tensor> {
        let mut values: Vec<f32> = Vec::new();
        for s in sentences {
            let fallback: Vec<f32> = (0..DIM).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect();
            values.extend(self.vectors.get(*s).unwrap_or(&fallback));
        }
        Ok(Tensor::from_vec(
            values,
            (sentences.len(), DIM),
            &Device::Cpu,
        )?)
    }
    fn dim(&self) -> usize {
        DIM
    }
    fn id(&self) -> &str {
        &self.id
    }
}

/// Decodes each concept to the sentence whose stored vector it is.
struct OracleDecoder {
    sentences: Vec<(Vec<f32>, String)>,
}

impl ConceptDecoder for OracleDecoder {
    fn decode(
        &self,
        concepts: &Tensor,
        _lang: Option<&str>,
        _config: &DecodeConfig,
    ) -> lcm_concept::Result<Vec<Decoded>> {
        let rows = concepts.to_vec2::<f32>()?;
        Ok(rows
            .iter()
            .map(|row| Decoded {
                text: self
                    .sentences
                    .iter()
                    .find(|(v, _)| v == row)
                    .map_or(String::new(), |(_, s)| s.clone()),
                score: None,
            })
            .collect())
    }
    fn id(&self) -> &str {
        ENCODER
    }
    fn dim(&self) -> usize {
        DIM
    }
}

#[test]
fn an_oracle_scores_perfectly_and_the_report_has_the_cli_format() {
    let dir = tempfile::tempdir().unwrap();
    let documents: Vec<(String, Vec<String>)> = (0..8)
        .map(|d| {
            let sentences = vec![SENTENCES[d].to_string(), format!("Document {d} ends here.")];
            (format!("doc-{d}"), sentences)
        })
        .collect();
    let borrowed: Vec<(String, Vec<&str>)> = documents
        .iter()
        .map(|(id, s)| (id.clone(), s.iter().map(String::as_str).collect()))
        .collect();
    let documents: Vec<(&str, &[&str])> = borrowed
        .iter()
        .map(|(id, s)| (id.as_str(), s.as_slice()))
        .collect();
    let store = write_documents(dir.path(), &documents);
    let mut config = tiny_config(2);
    config.valid_fraction = 0.5;
    let run = dir.path().join("run");
    train_decoder(&config, &store, &run, false, &mut |_| {}).unwrap();
    let decoder = TrainedDecoder::open(&run).unwrap();

    let sample = HeldOutSample::load(&decoder, &store, 3).unwrap();
    let split = SentenceSplit::load(&store, 0.5).unwrap();
    assert!(!split.valid_texts.is_empty(), "no document held out");
    assert_eq!(sample.held_out, split.valid_texts);
    assert_eq!(sample.len(), 3.min(split.valid_texts.len()));
    // No evaluated sentence was trained on.
    for r in &sample.references {
        assert!(!split.train_texts.contains(r), "{r} was trained on");
    }

    let vectors: HashMap<String, Vec<f32>> = split
        .valid_texts
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), split.valid_vector(i).to_vec()))
        .collect();
    let encoder = LookupEncoder {
        vectors: vectors.clone(),
        id: ENCODER.to_string(),
    };
    let oracle = OracleDecoder {
        sentences: vectors.into_iter().map(|(t, v)| (v, t)).collect(),
    };
    let rt = RoundTripConfig {
        limit: 3,
        beam: 0,
        max_len: 8,
    };
    let mut seen = Vec::new();
    let report = roundtrip::evaluate(&sample, &decoder, &oracle, &encoder, &rt, &mut |p| {
        seen.push((p.decoder.to_string(), p.done, p.total))
    })
    .unwrap();
    let n = sample.len();
    assert_eq!(
        seen,
        vec![
            ("trained decoder".to_string(), 0, n),
            ("trained decoder".to_string(), n, n),
            ("retrieval decoder".to_string(), 0, n),
            ("retrieval decoder".to_string(), n, n),
        ]
    );
    assert_eq!(report.beam, 1, "beam 0 is greedy");
    assert_eq!(report.evaluated, n);
    assert_eq!(report.held_out_sentences, split.valid_texts.len());
    assert_eq!(report.encoder_id, ENCODER);
    assert_eq!(report.decoder, run.display().to_string());
    assert_eq!(
        report.trained().decoder,
        format!("trained ({} step 2)", run.display())
    );
    let oracle_scores = report.retrieval();
    assert_eq!(oracle_scores.decoder, RETRIEVAL_LABEL);
    assert_eq!(oracle_scores.exact_match, 1.0);
    assert!(
        (oracle_scores.corpus_bleu - 100.0).abs() < 1e-9,
        "{oracle_scores:?}"
    );
    assert!(
        (oracle_scores.round_trip_cosine - 1.0).abs() < 1e-6,
        "{oracle_scores:?}"
    );
    assert_eq!(report.examples.len(), n.min(5));
    for e in &report.examples {
        assert_eq!(e.retrieval, e.reference);
    }

    // The JSON file is what `lcm eval-decoder --json` has always written: the keys of a
    // serde_json::Value, pretty-printed.
    let path = dir.path().join("eval.json");
    report.write_json(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(text, serde_json::to_string_pretty(&value).unwrap());
    let keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "store",
        "decoder",
        "encoder_id",
        "held_out_sentences",
        "evaluated",
        "valid_fraction",
        "beam",
        "results",
        "examples",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    assert_eq!(value["results"].as_array().unwrap().len(), 2);

    // An encoder of another space is refused; so is a limit of 0.
    let other = LookupEncoder {
        vectors: HashMap::new(),
        id: "other@000000000000".into(),
    };
    let err = roundtrip::evaluate(&sample, &decoder, &oracle, &other, &rt, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("pass the store's encoder"), "{err}");
    assert!(HeldOutSample::load(&decoder, &store, 0).is_err());
}
