//! Parity of XLM-RoBERTa-family encoders: the XLM-R SentencePiece tokenizer against the Python
//! `sentencepiece` package (exact ids), and the forward pass against PyTorch/transformers.
//!
//! Fixtures come from `scripts/e5/make_fixtures.py` (see fixtures/encoder/README.md):
//! - `tiny-xlmr/` + `tiny_xlmr_parity.json`: a random-weight `XLMRobertaModel` (positions from
//!   `pad_token_id + 1`, one token type) with a small SentencePiece model; always runs.
//! - `e5_q4_parity.json`: multilingual-e5-small-q4 (`bash scripts/fetch-models.sh e5`), 35
//!   sentences in 17 scripts. Skipped with a message when the folder is not installed, unless
//!   `LCM_REQUIRE_E5=1` (CI sets it), which turns the skip into a failure.

use std::path::{Path, PathBuf};

use lcm_concept::bert::xlmr::XlmrTokenizer;
use lcm_concept::bert::{BertEncoder, EncoderOptions};
use lcm_concept::{ConceptEncoder, ConceptError};
use serde_json::Value;
use sha2::{Digest, Sha256};

const TINY_TOL: f32 = 1e-5;
const E5_TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/encoder")
}

fn tiny_dir() -> PathBuf {
    fixtures().join("tiny-xlmr")
}

fn load_json(name: &str) -> Value {
    let path = fixtures().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

fn matrix(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn opts(prompt: Option<&str>) -> EncoderOptions {
    EncoderOptions {
        batch_size: 8,
        threads: 2,
        prompt_name: prompt.map(str::to_string),
        ..EncoderOptions::default()
    }
}

fn encode(enc: &dyn ConceptEncoder, sentences: &[String]) -> Vec<Vec<f32>> {
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let t = enc.encode(&refs, None).unwrap();
    t.to_vec2::<f32>().unwrap()
}

/// Largest absolute difference and the row it is in.
fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f32, usize) {
    assert_eq!(a.len(), b.len());
    let mut worst = (0.0f32, 0);
    for (i, (ra, rb)) in a.iter().zip(b).enumerate() {
        assert_eq!(ra.len(), rb.len(), "row {i} width");
        for (x, y) in ra.iter().zip(rb) {
            let d = (x - y).abs();
            if d.is_nan() || d > worst.0 {
                worst = (if d.is_nan() { f32::INFINITY } else { d }, i);
            }
        }
    }
    worst
}

/// Asserts token ids equal, naming the first sentence that differs.
fn assert_same_ids(got: &[Vec<u32>], want: &[Vec<u32>], sentences: &[String]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "token ids of sentence {i} {:?}", sentences[i]);
    }
}

#[test]
fn tiny_xlmr_matches_pytorch_and_sentencepiece() {
    let fx = load_json("tiny_xlmr_parity.json");
    let sentences = strings(&fx["sentences"]);
    let enc = BertEncoder::from_folder(tiny_dir(), &opts(None)).unwrap();
    // The folder's default prompt is used and named in the id.
    assert_eq!(enc.prompt(), "passage: ");
    assert!(enc.id().starts_with("tiny-xlmr@"), "{}", enc.id());
    assert!(enc.id().ends_with("+passage"), "{}", enc.id());
    assert_eq!(enc.config().position_offset, 2);
    assert_eq!(enc.max_seq_length(), 40);

    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    assert_same_ids(
        &enc.token_ids(&refs).unwrap(),
        &ids(&fx["input_ids"]),
        &sentences,
    );
    let (diff, row) = max_abs_diff(&encode(&enc, &sentences), &matrix(&fx["embeddings"]));
    println!("tiny-xlmr: max abs diff {diff:.2e} (sentence {row})");
    assert!(diff <= TINY_TOL, "sentence {row}: {diff}");
}

#[test]
fn tiny_xlmr_without_prompt_tokenises_like_sentencepiece() {
    let fx = load_json("tiny_xlmr_parity.json");
    let sentences = strings(&fx["sentences"]);
    let enc = BertEncoder::from_folder(tiny_dir(), &opts(Some(""))).unwrap();
    assert_eq!(enc.prompt(), "");
    assert!(!enc.id().contains('+'), "{}", enc.id());
    let want: Vec<Vec<u32>> = ids(&fx["pieces"])
        .into_iter()
        .map(|p| {
            let mut v = vec![0];
            v.extend(p.into_iter().take(38));
            v.push(2);
            v
        })
        .collect();
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    assert_same_ids(&enc.token_ids(&refs).unwrap(), &want, &sentences);
    // Truncation is reported as one token more than kept.
    let counts = enc.token_counts(&refs).unwrap().unwrap();
    for (i, p) in ids(&fx["pieces"]).iter().enumerate() {
        let expected = if p.len() > 38 { 41 } else { p.len() + 2 };
        assert_eq!(counts[i], expected, "sentence {i}");
    }
}

#[test]
fn prompts_change_vectors_and_ids_and_unknown_ones_are_refused() {
    let passage = BertEncoder::from_folder(tiny_dir(), &opts(None)).unwrap();
    let query = BertEncoder::from_folder(tiny_dir(), &opts(Some("query"))).unwrap();
    assert!(query.id().ends_with("+query"), "{}", query.id());
    assert_ne!(passage.id(), query.id());
    let s = vec!["Le chat est assis sur le tapis.".to_string()];
    let (diff, _) = max_abs_diff(&encode(&passage, &s), &encode(&query, &s));
    assert!(diff > 1e-3, "the prompt must reach the model ({diff})");

    let err = BertEncoder::from_folder(tiny_dir(), &opts(Some("title")))
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, ConceptError::BadModelFolder { .. }), "{msg}");
    assert!(msg.contains("`title`") && msg.contains("passage"), "{msg}");
    assert!(msg.contains("config_sentence_transformers.json"), "{msg}");
}

#[test]
fn huge_text_is_tokenised_from_a_prefix_exactly() {
    let tok = XlmrTokenizer::from_file(&tiny_dir().join("sentencepiece.bpe.model")).unwrap();
    let fx = load_json("tiny_xlmr_parity.json");
    let sentences = strings(&fx["sentences"]);
    // ~100 kB of mixed scripts: far beyond the prefix the tokenizer starts from.
    let huge = sentences.join("  ").repeat(40);
    let whole = tok.piece_ids(&huge);
    for max_len in [2, 3, 40, 512, 4000] {
        let (got, truncated) = tok.encode(&huge, max_len);
        let keep = max_len - 2;
        assert!(truncated);
        assert_eq!(got[0], 0);
        assert_eq!(got[got.len() - 1], 2);
        assert_eq!(&got[1..got.len() - 1], &whole[..keep], "max_len {max_len}");
    }
}

#[test]
fn folder_without_tokenizer_names_both_files() {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(tiny_dir()).unwrap() {
        let entry = entry.unwrap();
        // Top-level files only, less modules.json (a plain HF folder) and the tokenizer.
        let name = entry.file_name();
        if entry.file_type().unwrap().is_file()
            && name != "sentencepiece.bpe.model"
            && name != "modules.json"
        {
            std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
        }
    }
    let msg = BertEncoder::from_folder(tmp.path(), &opts(None))
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("tokenizer.json") && msg.contains("sentencepiece.bpe.model"),
        "{msg}"
    );
    // A SentencePiece model that is not XLM-R's layout is refused, naming the file.
    std::fs::write(tmp.path().join("sentencepiece.bpe.model"), b"\x0a\x00").unwrap();
    let msg = BertEncoder::from_folder(tmp.path(), &opts(None))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("sentencepiece.bpe.model"), "{msg}");
}

/// The installed e5 folder, or `None` (with the reason printed) when the test is skipped.
fn e5_folder() -> Option<PathBuf> {
    match lcm_concept::resolve::resolve_model("e5") {
        Ok(folder) => Some(folder),
        Err(e) => {
            if std::env::var("LCM_REQUIRE_E5").is_ok_and(|v| v == "1") {
                panic!("LCM_REQUIRE_E5=1 but the e5 model is not installed: {e}");
            }
            eprintln!(
                "SKIPPED: multilingual-e5-small-q4 is not installed \
                 (run `bash scripts/fetch-models.sh e5`): {e}"
            );
            None
        }
    }
}

#[test]
fn e5_q4_matches_pytorch_and_sentencepiece() {
    let Some(folder) = e5_folder() else {
        return;
    };
    let fx = load_json("e5_q4_parity.json");
    let bytes = std::fs::read(folder.join("model.safetensors")).unwrap();
    let sha: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    drop(bytes);
    assert_eq!(
        sha,
        fx["model_safetensors_sha256"].as_str().unwrap(),
        "{} is not the model the fixture was made from; reinstall it with \
         `bash scripts/fetch-models.sh e5`",
        folder.display()
    );
    let sentences = strings(&fx["sentences"]);
    let enc = BertEncoder::from_folder(&folder, &opts(None)).unwrap();
    assert!(
        enc.id()
            .starts_with(&format!("multilingual-e5-small-q4@{}", &sha[..12])),
        "{}",
        enc.id()
    );
    assert!(enc.id().ends_with("+passage"), "{}", enc.id());
    assert_eq!(enc.dim(), 384);

    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    assert_same_ids(
        &enc.token_ids(&refs).unwrap(),
        &ids(&fx["input_ids"]),
        &sentences,
    );
    let tok = XlmrTokenizer::from_file(&folder.join("sentencepiece.bpe.model")).unwrap();
    let pieces: Vec<Vec<u32>> = refs.iter().map(|s| tok.piece_ids(s)).collect();
    assert_same_ids(&pieces, &ids(&fx["pieces"]), &sentences);

    let (diff, row) = max_abs_diff(&encode(&enc, &sentences), &matrix(&fx["embeddings"]));
    println!(
        "multilingual-e5-small-q4: {} sentences, max abs diff {diff:.2e} (sentence {row})",
        sentences.len()
    );
    assert!(
        diff <= E5_TOL,
        "sentence {row} {:?}: {diff}",
        sentences[row]
    );
}
