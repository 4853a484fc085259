//! Parity and robustness of the BERT sentence encoder.
//!
//! Fixtures come from `scripts/make_encoder_fixtures.py` (see fixtures/encoder/README.md):
//! sentence-transformers embeddings of the same sentences, for the tiny random BERT in the repo
//! and for all-MiniLM-L6-v2 (fetched by `bash scripts/fetch-models.sh minilm`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lcm_concept::bert::{BertEncoder, EncoderOptions, Threading};
use lcm_concept::{ConceptEncoder, ConceptError};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

const TINY_TOL: f32 = 1e-5;
const MINILM_TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/encoder")
}

fn tiny_dir() -> PathBuf {
    fixtures().join("tiny-bert")
}

struct Parity {
    sentences: Vec<String>,
    embeddings: Vec<Vec<f32>>,
    json: Value,
}

fn load_parity(name: &str) -> Parity {
    let path = fixtures().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: Value = serde_json::from_str(&text).unwrap();
    let sentences = json["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let embeddings = matrix(&json["embeddings"]);
    Parity {
        sentences,
        embeddings,
        json,
    }
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

fn opts(batch_size: usize) -> EncoderOptions {
    EncoderOptions {
        batch_size,
        ..Default::default()
    }
}

fn encode(enc: &dyn ConceptEncoder, sentences: &[String]) -> Vec<Vec<f32>> {
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let t = enc.encode(&refs, None).unwrap();
    assert_eq!(t.dims(), &[sentences.len(), enc.dim()]);
    t.to_vec2::<f32>().unwrap()
}

/// Largest |a − b| over all entries, and the row where it occurs.
fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f32, usize) {
    assert_eq!(a.len(), b.len(), "row count");
    let mut worst = (0.0f32, 0);
    for (i, (ra, rb)) in a.iter().zip(b).enumerate() {
        assert_eq!(ra.len(), rb.len(), "row {i} width");
        for (x, y) in ra.iter().zip(rb) {
            let d = (x - y).abs();
            if d > worst.0 || d.is_nan() {
                worst = (d, i);
            }
        }
    }
    worst
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// A copy of tiny-bert in a temp dir, named `tiny-bert` so ids stay comparable.
fn tiny_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny-bert");
    copy_dir(&tiny_dir(), &dir);
    (tmp, dir)
}

/// Applies an edit recorded by make_encoder_fixtures.py (`apply_edits` there).
fn apply_edits(dir: &Path, edits: &Value) {
    for rel in edits["delete"].as_array().into_iter().flatten() {
        std::fs::remove_file(dir.join(rel.as_str().unwrap())).unwrap();
    }
    for (rel, content) in edits["json"].as_object().into_iter().flatten() {
        std::fs::write(
            dir.join(rel),
            serde_json::to_string_pretty(content).unwrap(),
        )
        .unwrap();
    }
    if let Some(changes) = edits["config"].as_object() {
        let path = dir.join("config.json");
        let mut cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (k, v) in changes {
            cfg[k] = v.clone();
        }
        std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    }
}

/// Rewrites `dir/model.safetensors`, mapping each (name, dtype, shape, f32 values).
fn rewrite_weights(
    dir: &Path,
    f: impl Fn(&str, Vec<usize>, Vec<f32>) -> Option<(String, Dtype, Vec<usize>, Vec<u8>)>,
) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), Dtype::F32);
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some((n, dt, shape, data)) = f(&name, view.shape().to_vec(), values) {
            out.insert(n, (dt, shape, data));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = out
        .iter()
        .map(|(n, (dt, shape, data))| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    let serialized = safetensors::serialize(views, None).unwrap();
    std::fs::write(&path, serialized).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn assert_bad_folder(err: ConceptError, needle: &str) {
    let msg = err.to_string();
    assert!(
        matches!(err, ConceptError::BadModelFolder { .. }),
        "expected BadModelFolder, got: {msg}"
    );
    assert!(
        msg.contains(needle),
        "error should mention `{needle}`: {msg}"
    );
}

#[test]
fn tiny_bert_matches_sentence_transformers() {
    let p = load_parity("tiny_parity.json");
    let enc = BertEncoder::from_folder(tiny_dir(), &opts(4)).unwrap();
    assert_eq!(enc.dim(), p.json["dim"].as_u64().unwrap() as usize);
    assert_eq!(
        enc.max_seq_length(),
        p.json["max_seq_length"].as_u64().unwrap() as usize
    );
    let sha = p.json["model_sha256"].as_str().unwrap();
    assert_eq!(enc.id(), format!("tiny-bert@{}", &sha[..12]));
    let got = encode(&enc, &p.sentences);
    let (d, row) = max_abs_diff(&got, &p.embeddings);
    eprintln!("tiny-bert parity: max abs diff {d:.3e} (row {row})");
    assert!(
        d <= TINY_TOL,
        "max abs diff {d} at row {row} ({:?})",
        p.sentences[row]
    );
}

#[test]
fn tiny_bert_folder_variants_match_sentence_transformers() {
    let p = load_parity("tiny_parity.json");
    for variant in p.json["variants"].as_array().unwrap() {
        let name = variant["name"].as_str().unwrap();
        let (_tmp, dir) = tiny_copy();
        apply_edits(&dir, &variant["edits"]);
        let enc =
            BertEncoder::from_folder(&dir, &opts(4)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            enc.max_seq_length(),
            variant["max_seq_length"].as_u64().unwrap() as usize,
            "{name}"
        );
        let want = matrix(&variant["embeddings"]);
        let got = encode(&enc, &p.sentences);
        let (d, row) = max_abs_diff(&got, &want);
        eprintln!("tiny-bert variant {name}: max abs diff {d:.3e}");
        assert!(d <= TINY_TOL, "{name}: max abs diff {d} at row {row}");
    }
}

#[test]
fn half_precision_and_prefixed_weights_load_identically() {
    // The fixture's weights are bf16 values inside f16's normal range, so both conversions
    // are exact and the outputs must be bit-for-bit those of the f32 file.
    let p = load_parity("tiny_parity.json");
    let base = encode(
        &BertEncoder::from_folder(tiny_dir(), &opts(8)).unwrap(),
        &p.sentences,
    );
    for (label, dtype) in [
        ("f16", Dtype::F16),
        ("bf16", Dtype::BF16),
        ("bert. prefix", Dtype::F32),
    ] {
        let (_tmp, dir) = tiny_copy();
        rewrite_weights(&dir, |name, shape, values| {
            let data = match dtype {
                Dtype::F16 => values
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
                Dtype::BF16 => values
                    .iter()
                    .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                    .collect(),
                _ => f32_bytes(&values),
            };
            let name = if dtype == Dtype::F32 {
                format!("bert.{name}")
            } else {
                name.to_string()
            };
            Some((name, dtype, shape, data))
        });
        let enc =
            BertEncoder::from_folder(&dir, &opts(8)).unwrap_or_else(|e| panic!("{label}: {e}"));
        let (d, _) = max_abs_diff(&encode(&enc, &p.sentences), &base);
        assert_eq!(d, 0.0, "{label}");
    }
}

#[test]
fn order_batch_size_and_threading_do_not_change_rows() {
    let p = load_parity("tiny_parity.json");
    let base = encode(
        &BertEncoder::from_folder(tiny_dir(), &opts(4)).unwrap(),
        &p.sentences,
    );

    // A fixed permutation (reversed, then every third moved to the front).
    let n = p.sentences.len();
    let mut perm: Vec<usize> = (0..n).rev().collect();
    perm.sort_by_key(|i| i % 3 != 0);
    let shuffled: Vec<String> = perm.iter().map(|&i| p.sentences[i].clone()).collect();
    let enc = BertEncoder::from_folder(tiny_dir(), &opts(4)).unwrap();
    let got = encode(&enc, &shuffled);
    let unshuffled: Vec<Vec<f32>> = {
        let mut rows = vec![Vec::new(); n];
        for (k, &i) in perm.iter().enumerate() {
            rows[i] = got[k].clone();
        }
        rows
    };
    assert!(max_abs_diff(&unshuffled, &base).0 <= 1e-6, "shuffled input");

    for batch_size in [1, 3, 7, 64] {
        for threading in [Threading::DataParallel, Threading::IntraOp] {
            for threads in [1, 2] {
                let o = EncoderOptions {
                    batch_size,
                    threads,
                    threading,
                    ..EncoderOptions::default()
                };
                let enc = BertEncoder::from_folder(tiny_dir(), &o).unwrap();
                let (d, _) = max_abs_diff(&encode(&enc, &p.sentences), &base);
                assert!(
                    d <= 1e-6,
                    "batch {batch_size} {threading:?} x{threads}: {d}"
                );
            }
        }
    }

    // Encoding one sentence at a time equals encoding it within a batch.
    let single = encode(&enc, &p.sentences[..1]);
    assert!(max_abs_diff(&single, &base[..1]).0 <= 1e-6);
}

#[test]
fn empty_input_and_empty_strings() {
    let enc = BertEncoder::from_folder(tiny_dir(), &opts(4)).unwrap();
    let t = enc.encode(&[], None).unwrap();
    assert_eq!(t.dims(), &[0, enc.dim()]);
    // "" tokenises to [CLS] [SEP] and still yields a finite unit vector.
    let rows = encode(&enc, &[String::new(), " ".to_string()]);
    for r in &rows {
        let norm: f32 = r.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
    assert_eq!(enc.token_lengths(&[""]).unwrap(), vec![2]);
}

#[test]
fn tokenizer_without_special_tokens_pools_empty_input_to_zeros() {
    let (_t, dir) = tiny_copy();
    let path = dir.join("tokenizer.json");
    let mut tok: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tok["post_processor"] = Value::Null;
    std::fs::write(&path, serde_json::to_string(&tok).unwrap()).unwrap();
    let enc = BertEncoder::from_folder(&dir, &opts(4)).unwrap();
    let lens = enc.token_lengths(&["", "hello"]).unwrap();
    assert_eq!(lens[0], 0);
    assert!(lens[1] > 0);
    let rows = encode(&enc, &[String::new(), "hello".to_string()]);
    assert!(rows[0].iter().all(|&v| v == 0.0));
    assert!(rows[1].iter().any(|&v| v != 0.0));
}

#[test]
fn max_seq_length_override_truncates() {
    let o = EncoderOptions {
        max_seq_length: Some(8),
        ..opts(4)
    };
    let enc = BertEncoder::from_folder(tiny_dir(), &o).unwrap();
    assert_eq!(enc.max_seq_length(), 8);
    let long = "word ".repeat(50);
    assert_eq!(enc.token_lengths(&[long.as_str()]).unwrap(), vec![8]);
    let too_long = EncoderOptions {
        max_seq_length: Some(10_000),
        ..opts(4)
    };
    let err = BertEncoder::from_folder(tiny_dir(), &too_long)
        .err()
        .unwrap();
    assert!(err.to_string().contains("max_position_embeddings"), "{err}");
}

#[test]
fn bad_folders_name_the_file_and_problem() {
    let o = opts(4);

    let err = BertEncoder::from_folder("/nonexistent/model", &o)
        .err()
        .unwrap();
    assert_bad_folder(err, "not a directory");

    let (_t, dir) = tiny_copy();
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    assert_bad_folder(
        BertEncoder::from_folder(&dir, &o).err().unwrap(),
        "tokenizer.json",
    );

    let (_t, dir) = tiny_copy();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    assert_bad_folder(
        BertEncoder::from_folder(&dir, &o).err().unwrap(),
        "model.safetensors",
    );

    let (_t, dir) = tiny_copy();
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert_bad_folder(
        BertEncoder::from_folder(&dir, &o).err().unwrap(),
        "config.json",
    );

    let (_t, dir) = tiny_copy();
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    assert_bad_folder(
        BertEncoder::from_folder(&dir, &o).err().unwrap(),
        "config.json",
    );

    let (_t, dir) = tiny_copy();
    apply_edits(&dir, &serde_json::json!({"config": {"model_type": "t5"}}));
    assert_bad_folder(
        BertEncoder::from_folder(&dir, &o).err().unwrap(),
        "model_type is `t5`",
    );

    let (_t, dir) = tiny_copy();
    apply_edits(
        &dir,
        &serde_json::json!({"config": {"hidden_act": "swish"}}),
    );
    assert_bad_folder(
        BertEncoder::from_folder(&dir, &o).err().unwrap(),
        "hidden_act `swish`",
    );

    // A config that disagrees with the weights.
    let (_t, dir) = tiny_copy();
    apply_edits(
        &dir,
        &serde_json::json!({"config": {"intermediate_size": 48}}),
    );
    assert_bad_folder(
        BertEncoder::from_folder(&dir, &o).err().unwrap(),
        "encoder.layer.0.intermediate.dense.weight` has shape [64, 32], expected [48, 32]",
    );

    // A weight file with a wrongly shaped tensor.
    let (_t, dir) = tiny_copy();
    rewrite_weights(&dir, |name, shape, values| {
        if name == "encoder.layer.1.attention.self.key.weight" {
            Some((
                name.to_string(),
                Dtype::F32,
                vec![16, 64],
                f32_bytes(&values),
            ))
        } else {
            Some((name.to_string(), Dtype::F32, shape, f32_bytes(&values)))
        }
    });
    assert_bad_folder(
        BertEncoder::from_folder(&dir, &o).err().unwrap(),
        "`encoder.layer.1.attention.self.key.weight` has shape [16, 64]",
    );

    // A missing tensor.
    let (_t, dir) = tiny_copy();
    rewrite_weights(&dir, |name, shape, values| {
        (name != "encoder.layer.1.output.dense.bias")
            .then(|| (name.to_string(), Dtype::F32, shape, f32_bytes(&values)))
    });
    assert_bad_folder(
        BertEncoder::from_folder(&dir, &o).err().unwrap(),
        "no tensor `encoder.layer.1.output.dense.bias`",
    );

    // NaN in the weights.
    let (_t, dir) = tiny_copy();
    rewrite_weights(&dir, |name, shape, mut values| {
        if name == "encoder.layer.0.output.LayerNorm.weight" {
            values[3] = f32::NAN;
        }
        Some((name.to_string(), Dtype::F32, shape, f32_bytes(&values)))
    });
    assert_bad_folder(BertEncoder::from_folder(&dir, &o).err().unwrap(), "NaN");

    let (_t, dir) = tiny_copy();
    std::fs::write(dir.join("model.safetensors"), b"garbage").unwrap();
    assert_bad_folder(
        BertEncoder::from_folder(&dir, &o).err().unwrap(),
        "model.safetensors",
    );

    let (_t, dir) = tiny_copy();
    apply_edits(
        &dir,
        &serde_json::json!({"json": {"1_Pooling/config.json": {"pooling_mode": "median"}}}),
    );
    assert_bad_folder(
        BertEncoder::from_folder(&dir, &o).err().unwrap(),
        "1_Pooling/config.json",
    );

    let (_t, dir) = tiny_copy();
    apply_edits(
        &dir,
        &serde_json::json!({"json": {"modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
        ]}}),
    );
    assert_bad_folder(BertEncoder::from_folder(&dir, &o).err().unwrap(), "Dense");

    // Old sentence-transformers layout with the BERT files in a subfolder.
    let (_t, dir) = tiny_copy();
    apply_edits(
        &dir,
        &serde_json::json!({"json": {"modules.json": [
            {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
        ]}}),
    );
    assert_bad_folder(
        BertEncoder::from_folder(&dir, &o).err().unwrap(),
        "0_Transformer",
    );

    // A tokenizer whose ids exceed the embedding table.
    let (_t, dir) = tiny_copy();
    apply_edits(&dir, &serde_json::json!({"config": {"vocab_size": 100}}));
    assert_bad_folder(
        BertEncoder::from_folder(&dir, &o).err().unwrap(),
        "vocab_size",
    );
}

/// all-MiniLM-L6-v2 against sentence-transformers. Needs the model: CI runs
/// `bash scripts/fetch-models.sh minilm` first, and so should you.
#[test]
fn minilm_matches_sentence_transformers() {
    let folder = match lcm_concept::resolve::resolve_model("minilm") {
        Ok(f) => f,
        Err(e) => panic!(
            "all-MiniLM-L6-v2 is needed for this test; run `bash scripts/fetch-models.sh minilm`.\n{e}"
        ),
    };
    let p = load_parity("minilm_parity.json");
    let batch_size = p.json["batch_size"].as_u64().unwrap() as usize;
    let enc = BertEncoder::from_folder(&folder, &opts(batch_size)).unwrap();
    let sha = p.json["model_sha256"].as_str().unwrap();
    assert_eq!(
        enc.id(),
        format!("all-MiniLM-L6-v2@{}", &sha[..12]),
        "the installed model differs from the one the fixture was made with; \
         re-run `bash scripts/fetch-models.sh minilm`"
    );
    assert_eq!(enc.dim(), 384);
    assert_eq!(
        enc.max_seq_length(),
        p.json["max_seq_length"].as_u64().unwrap() as usize
    );

    let got = encode(&enc, &p.sentences);
    let (d, row) = max_abs_diff(&got, &p.embeddings);
    eprintln!("all-MiniLM-L6-v2 parity: max abs diff {d:.3e} (row {row})");
    assert!(
        d <= MINILM_TOL,
        "max abs diff {d} at row {row} ({:?})",
        p.sentences[row]
    );

    // Batch size and order do not matter beyond float noise.
    let enc1 = BertEncoder::from_folder(&folder, &opts(1)).unwrap();
    let reversed: Vec<String> = p.sentences.iter().rev().cloned().collect();
    let mut got1 = encode(&enc1, &reversed);
    got1.reverse();
    let (d1, _) = max_abs_diff(&got1, &got);
    assert!(d1 <= 1e-5, "batch 1, reversed: {d1}");
}

/// Texts far beyond any truncation, some built to defeat the first prefix: a long run of
/// whitespace, a huge word, CJK without spaces, tabs and newlines between words.
fn huge_texts() -> Vec<String> {
    let words = [
        "The",
        "café's",
        "naïve",
        "co-operation,",
        "3.14",
        "中文字",
        "(quoted)",
        "don't",
        "ÉLAN",
        "x",
        "supercalifragilistic",
        "—",
        "a.b.c.",
        "\t",
        "\n",
        "  ",
    ];
    let mut varied = String::new();
    let mut i = 7usize;
    while varied.len() < 300_000 {
        i = i.wrapping_mul(2_654_435_761).wrapping_add(12_345) % 1_000_003;
        varied.push_str(words[i % words.len()]);
        varied.push(if i.is_multiple_of(5) { '\u{3000}' } else { ' ' });
    }
    vec![
        varied.clone(),
        format!("{}{}", " ".repeat(200_000), varied),
        format!("{} {}", "y".repeat(100_000), varied),
        "漢字".repeat(50_000),
        format!("{}{}", "\n\t ".repeat(30_000), "word ".repeat(40_000)),
    ]
}

#[test]
fn a_huge_sentence_is_tokenised_exactly_as_the_whole_text() {
    let tokenizer_path = tiny_dir().join("tokenizer.json");
    for max_seq_length in [Some(8), None] {
        let options = EncoderOptions {
            max_seq_length,
            ..opts(4)
        };
        let enc = BertEncoder::from_folder(tiny_dir(), &options).unwrap();
        let mut reference = tokenizers::Tokenizer::from_file(&tokenizer_path).unwrap();
        reference
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: enc.max_seq_length(),
                ..Default::default()
            }))
            .unwrap();
        let texts = huge_texts();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let ours = enc.token_ids(&refs).unwrap();
        for (i, text) in texts.iter().enumerate() {
            let whole = reference.encode_fast(text.as_str(), true).unwrap();
            assert_eq!(
                ours[i],
                whole.get_ids(),
                "text {i}, max_seq_length {max_seq_length:?}"
            );
        }
    }
}

#[test]
fn token_counts_say_which_sentences_get_truncated() {
    let options = EncoderOptions {
        max_seq_length: Some(8),
        ..opts(4)
    };
    let enc = BertEncoder::from_folder(tiny_dir(), &options).unwrap();
    assert_eq!(enc.max_tokens(), Some(8));
    // [CLS] + words + [SEP]: 6 words fill the 8 tokens exactly, 7 overflow.
    let fits = "word ".repeat(6);
    let over = "word ".repeat(7);
    let huge = "word ".repeat(100_000);
    let counts = enc
        .token_counts(&["", fits.as_str(), over.as_str(), huge.as_str()])
        .unwrap()
        .unwrap();
    assert_eq!(counts, vec![2, 8, 9, 9]);
}
