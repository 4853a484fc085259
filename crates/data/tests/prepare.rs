//! End-to-end behaviour of `prepare`, the concept store and bad input.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use candle_core::{Device, Tensor};
use lcm_concept::bert::{BertEncoder, EncoderOptions};
use lcm_concept::{ConceptEncoder, ConceptError};
use lcm_data::DataError;
use lcm_data::prepare::{NoProgress, PrepareOptions, prepare, shard_path};
use lcm_data::store::{ConceptDocument, ConceptStore, StoreDType, shard_paths};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sample_corpus() -> PathBuf {
    repo().join("fixtures/corpus/sample.jsonl")
}

fn tiny_encoder() -> BertEncoder {
    let options = EncoderOptions {
        threads: 2,
        ..EncoderOptions::default()
    };
    BertEncoder::from_folder(repo().join("fixtures/encoder/tiny-bert"), &options)
        .expect("tiny-bert fixture loads")
}

/// Cheap deterministic encoder for pipeline tests where the model itself is beside the point:
/// each sentence maps to a vector derived from its bytes. `poison` returns NaN for sentences
/// containing it, to exercise the non-finite guard.
struct HashEncoder {
    dim: usize,
    poison: Option<&'static str>,
}

impl ConceptEncoder for HashEncoder {
    fn encode(&self, sentences: &[&str], _lang: Option<&str>) -> lcm_concept::Result<Tensor> {
        let mut values = Vec::with_capacity(sentences.len() * self.dim);
        for sentence in sentences {
            let mut h = 0xcbf2_9ce4_8422_2325u64;
            for b in sentence.bytes() {
                h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
            }
            for j in 0..self.dim {
                let poisoned = self.poison.is_some_and(|p| sentence.contains(p));
                let v = if poisoned {
                    f32::NAN
                } else {
                    ((h.rotate_left(j as u32 * 7) % 2001) as f32 - 1000.0) / 1000.0
                };
                values.push(v);
            }
        }
        Tensor::from_vec(values, (sentences.len(), self.dim), &Device::Cpu)
            .map_err(ConceptError::from)
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn id(&self) -> &str {
        "hash-test-encoder"
    }
}

fn read_all(path: &Path) -> Vec<ConceptDocument> {
    ConceptStore::open(path)
        .expect("store opens")
        .documents()
        .collect::<Result<Vec<_>, _>>()
        .expect("documents read")
}

#[test]
fn prepares_the_sample_corpus_with_a_real_encoder() {
    let encoder = tiny_encoder();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("store");
    let mut options = PrepareOptions::new(vec![sample_corpus()], out.clone());
    options.shard_size = 5;
    let report = prepare(&encoder, &options, &NoProgress).expect("prepare");
    assert_eq!(report.documents, 16);
    assert_eq!(report.shards_written, 4);
    assert!(report.sentences > 300, "{report:?}");

    let store = ConceptStore::open(&out).expect("open");
    assert_eq!(store.meta.encoder_id, encoder.id());
    assert_eq!(store.meta.dim, encoder.dim());
    assert_eq!(store.num_documents(), 16);
    assert_eq!(store.num_sentences(), report.sentences);
    let documents = read_all(&out);
    assert_eq!(documents[0].id.split('/').next(), Some("sotu"));
    // Stored vectors are exactly what the encoder gives for the stored sentences.
    let doc = &documents[3];
    let refs: Vec<&str> = doc.sentences.iter().map(String::as_str).collect();
    let fresh = encoder
        .encode(&refs, None)
        .and_then(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?))
        .expect("encode");
    assert_eq!(fresh.len(), doc.embeddings.len());
    let max_diff = fresh
        .iter()
        .zip(&doc.embeddings)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max_diff < 1e-5, "max diff {max_diff}");
}

#[test]
fn f16_store_round_trips_within_half_precision() {
    let encoder = HashEncoder {
        dim: 16,
        poison: None,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("f32"), dir.path().join("f16"));
    let mut options = PrepareOptions::new(vec![sample_corpus()], a.clone());
    options.limit = Some(4);
    prepare(&encoder, &options, &NoProgress).expect("f32");
    options.out = b.clone();
    options.dtype = StoreDType::F16;
    prepare(&encoder, &options, &NoProgress).expect("f16");
    assert_eq!(
        ConceptStore::open(&b).expect("open").meta.dtype,
        StoreDType::F16
    );
    let (full, half) = (read_all(&a), read_all(&b));
    assert_eq!(full.len(), 4);
    for (x, y) in full.iter().zip(&half) {
        assert_eq!(x.sentences, y.sentences);
        for (p, q) in x.embeddings.iter().zip(&y.embeddings) {
            assert!((p - q).abs() <= 1e-3 * p.abs().max(1e-2), "{p} vs {q}");
        }
    }
}

#[test]
fn reads_text_folders_and_parquet_text_columns() {
    let encoder = HashEncoder {
        dim: 8,
        poison: None,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("txt-store");
    let options = PrepareOptions::new(vec![repo().join("fixtures/corpus/sample-txt")], out.clone());
    let report = prepare(&encoder, &options, &NoProgress).expect("text folder");
    assert_eq!(report.documents, 3);
    let ids: Vec<String> = read_all(&out).into_iter().map(|d| d.id).collect();
    assert!(ids.iter().any(|id| id.starts_with("mobydick")), "{ids:?}");

    // A Parquet file with a `body` column and no id column.
    let input = dir.path().join("docs.parquet");
    let schema = Arc::new(Schema::new(vec![Field::new("body", DataType::Utf8, true)]));
    let texts = StringArray::from(vec![
        Some("First document. It has two sentences."),
        None,
        Some("Second document here. Short. Still fine."),
    ]);
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(texts)]).expect("batch");
    let file = std::fs::File::create(&input).expect("create");
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");

    let out = dir.path().join("pq-store");
    let mut options = PrepareOptions::new(vec![input.clone()], out.clone());
    let error = prepare(&encoder, &options, &NoProgress).expect_err("no `text` column");
    assert!(error.to_string().contains("--text-field"), "{error}");
    options.reader.text_field = "body".into();
    let report = prepare(&encoder, &options, &NoProgress).expect("parquet input");
    assert_eq!(report.documents, 2);
    assert_eq!(report.read.empty_documents, 1);
    let documents = read_all(&out);
    assert_eq!(documents[0].id, "docs/0");
    assert_eq!(documents[1].id, "docs/2");
    assert_eq!(documents[0].sentences.len(), 2);
}

#[test]
fn invalid_utf8_and_bad_lines_are_skipped_and_counted_or_fail_in_strict_mode() {
    let encoder = HashEncoder {
        dim: 8,
        poison: None,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("mixed.jsonl");
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"{\"id\": \"a\", \"text\": \"Good line one. With two sentences.\"}\n");
    bytes.extend_from_slice(b"{\"id\": \"b\", \"text\": \"Broken \xff\xfe bytes.\"}\n");
    bytes.extend_from_slice(b"this is not json\n");
    bytes.extend_from_slice(b"{\"id\": \"c\", \"text\": \"   \"}\n");
    bytes.extend_from_slice(b"{\"id\": \"d\", \"title\": \"no text field\"}\n");
    bytes.extend_from_slice(b"\n{\"id\": \"e\", \"text\": \"Last good one.\"}\n");
    std::fs::write(&input, &bytes).expect("write");

    let out = dir.path().join("store");
    let mut options = PrepareOptions::new(vec![input.clone()], out.clone());
    let report = prepare(&encoder, &options, &NoProgress).expect("lenient");
    assert_eq!(report.documents, 2);
    assert_eq!(report.read.invalid_utf8_lines, 1);
    assert_eq!(report.read.invalid_json_lines, 1);
    assert_eq!(report.read.empty_documents, 1);
    assert_eq!(report.read.missing_text, 1);
    let ids: Vec<String> = read_all(&out).into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["a", "e"]);

    options.out = dir.path().join("strict");
    options.reader.strict = true;
    let error = prepare(&encoder, &options, &NoProgress).expect_err("strict");
    let message = error.to_string();
    assert!(
        message.contains("mixed.jsonl: line 2") && message.contains("UTF-8"),
        "{message}"
    );
    assert!(shard_paths(&options.out).expect("list").is_empty());
}

/// A Parquet file with an `id` and a `text` column.
fn write_parquet(path: &Path, ids: &[Option<&str>], texts: &[&str]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("text", DataType::Utf8, false),
    ]));
    let columns: Vec<arrow::array::ArrayRef> = vec![
        Arc::new(StringArray::from(ids.to_vec())),
        Arc::new(StringArray::from(texts.to_vec())),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).expect("batch");
    let file = std::fs::File::create(path).expect("create");
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
}

#[test]
fn a_repeated_document_id_is_reported_with_both_places_or_refused_in_strict_mode() {
    let encoder = HashEncoder {
        dim: 8,
        poison: None,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let first = dir.path().join("first.jsonl");
    std::fs::write(
        &first,
        "{\"id\": \"a\", \"text\": \"One.\"}\n{\"id\": \"b\", \"text\": \"Two.\"}\n\n{\"id\": \"a\", \"text\": \"Three.\"}\n",
    )
    .expect("write");
    // Across files and formats: a Parquet row with the id of a JSONL line.
    let second = dir.path().join("second.parquet");
    write_parquet(&second, &[Some("b")], &["Four."]);

    let out = dir.path().join("store");
    let mut options = PrepareOptions::new(vec![first.clone(), second.clone()], out.clone());
    let report = prepare(&encoder, &options, &NoProgress).expect("lenient keeps both");
    assert_eq!(report.read.duplicate_ids, 2);
    let ids: Vec<String> = read_all(&out).into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["a", "b", "a", "b"]);

    options.out = dir.path().join("strict");
    options.reader.strict = true;
    let message = prepare(&encoder, &options, &NoProgress)
        .expect_err("strict refuses")
        .to_string();
    let (line_1, line_4) = (
        format!("{}:1", first.display()),
        format!("{}:4", first.display()),
    );
    assert!(
        message.contains("`a`") && message.contains(&line_1) && message.contains(&line_4),
        "{message}"
    );
    assert!(shard_paths(&options.out).expect("list").is_empty());

    // The Parquet duplicate is named by its row when it is the first one met.
    std::fs::write(&first, "{\"id\": \"b\", \"text\": \"One.\"}\n").expect("write");
    options.out = dir.path().join("strict-parquet");
    let message = prepare(&encoder, &options, &NoProgress)
        .expect_err("strict refuses")
        .to_string();
    assert!(
        message.contains(&format!("{} row 0", second.display())),
        "{message}"
    );
}

/// Peak resident memory of this process in KiB (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_ten_megabyte_single_line_document_is_bounded() {
    let encoder = HashEncoder {
        dim: 4,
        poison: None,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("huge.jsonl");
    let sentence = "This sentence repeats many times without any line break at all. ";
    let text = sentence.repeat(10 * 1024 * 1024 / sentence.len());
    let line = serde_json::json!({"id": "huge", "text": text}).to_string();
    std::fs::write(&input, format!("{line}\n")).expect("write");
    let before = peak_rss_kib();

    let out = dir.path().join("store");
    let mut options = PrepareOptions::new(vec![input], out.clone());
    options.max_sentences_per_row = 50_000;
    let report = prepare(&encoder, &options, &NoProgress).expect("prepare");
    let expected = 10 * 1024 * 1024 / sentence.len();
    assert_eq!(report.sentences, expected);
    // The document is stored as several bounded rows, in order.
    assert_eq!(report.rows, expected.div_ceil(50_000));
    let store = ConceptStore::open(&out).expect("open");
    let first = store.documents().next().expect("row").expect("ok");
    assert_eq!(first.id, "huge#1");
    assert_eq!(first.sentences.len(), 50_000);
    if let (Some(before), Some(after)) = (before, peak_rss_kib()) {
        // Text (10 MB) + sentences + a few copies in flight; far from unbounded growth.
        assert!(
            after.saturating_sub(before) < 400 * 1024,
            "peak RSS grew by {} KiB",
            after - before
        );
    }
}

#[test]
fn non_finite_embeddings_are_refused_and_nothing_is_written() {
    let encoder = HashEncoder {
        dim: 8,
        poison: Some("whale"),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("docs.jsonl");
    std::fs::write(
        &input,
        "{\"id\": \"ok\", \"text\": \"A calm sea. Nothing here.\"}\n{\"id\": \"bad\", \"text\": \"Call me Ishmael. I saw a whale.\"}\n",
    )
    .expect("write");
    let out = dir.path().join("store");
    let mut options = PrepareOptions::new(vec![input], out.clone());
    options.shard_size = 1;
    let error = prepare(&encoder, &options, &NoProgress).expect_err("NaN");
    let message = error.to_string();
    assert!(
        message.contains("non-finite") && message.contains("whale"),
        "{message}"
    );
    // The first shard is complete and valid; the failing one does not exist.
    assert!(shard_path(&out, 0).exists());
    assert!(!shard_path(&out, 1).exists());
    assert_eq!(read_all(&out).len(), 1);
}

#[test]
fn stores_never_mix_encoders_or_dimensions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("store");
    let mut options = PrepareOptions::new(vec![sample_corpus()], out.clone());
    options.limit = Some(2);
    let first = HashEncoder {
        dim: 8,
        poison: None,
    };
    prepare(&first, &options, &NoProgress).expect("first");
    let other = HashEncoder {
        dim: 12,
        poison: None,
    };
    let error = prepare(&other, &options, &NoProgress).expect_err("mixed");
    assert!(
        matches!(error, DataError::EncoderMismatch { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("new --out"), "{error}");

    // Two stores of different dimension in one directory are refused when opened together.
    let other_out = dir.path().join("other");
    options.out = other_out.clone();
    prepare(&other, &options, &NoProgress).expect("other");
    let mixed = dir.path().join("mixed");
    std::fs::create_dir(&mixed).expect("mkdir");
    std::fs::copy(shard_path(&out, 0), mixed.join("a.parquet")).expect("copy");
    std::fs::copy(shard_path(&other_out, 0), mixed.join("b.parquet")).expect("copy");
    let error = ConceptStore::open(&mixed).expect_err("mixed dims");
    assert!(error.to_string().contains("b.parquet"), "{error}");
    // And a store is refused when a caller expects another space.
    let error = ConceptStore::open_expecting(&out, "hash-test-encoder", 12).expect_err("dim");
    assert!(matches!(error, DataError::EncoderMismatch { .. }));
}

#[test]
fn truncated_shards_are_reported_with_the_fix() {
    let encoder = HashEncoder {
        dim: 8,
        poison: None,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("store");
    let mut options = PrepareOptions::new(vec![sample_corpus()], out.clone());
    options.shard_size = 4;
    prepare(&encoder, &options, &NoProgress).expect("prepare");
    let victim = shard_path(&out, 1);
    let bytes = std::fs::read(&victim).expect("read");
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).expect("truncate");
    let error = ConceptStore::open(&out).expect_err("truncated");
    let message = error.to_string();
    assert!(message.contains("shard-00001.parquet"), "{message}");
    assert!(message.contains("delete it and re-run"), "{message}");
    // Following the advice restores the store to exactly what it was.
    std::fs::remove_file(&victim).expect("rm");
    let report = prepare(&encoder, &options, &NoProgress).expect("resume");
    assert_eq!((report.shards_written, report.shards_resumed), (1, 3));
}

#[test]
fn resuming_skips_finished_shards_and_matches_a_clean_run() {
    let encoder = HashEncoder {
        dim: 8,
        poison: None,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let clean = dir.path().join("clean");
    let mut options = PrepareOptions::new(vec![sample_corpus()], clean.clone());
    options.shard_size = 3;
    prepare(&encoder, &options, &NoProgress).expect("clean");

    let resumed = dir.path().join("resumed");
    options.out = resumed.clone();
    options.limit = Some(7);
    prepare(&encoder, &options, &NoProgress).expect("limited run");
    options.limit = None;
    let error = prepare(&encoder, &options, &NoProgress).expect_err("settings differ");
    assert!(error.to_string().contains("limit"), "{error}");
    std::fs::remove_dir_all(&resumed).expect("rm");
    // Simulate a kill: a clean run's first shards, a stray temporary file, a state file saying
    // the job is incomplete.
    options.limit = None;
    prepare(&encoder, &options, &NoProgress).expect("full");
    for index in [2, 4, 5] {
        std::fs::remove_file(shard_path(&resumed, index)).expect("rm");
    }
    std::fs::write(resumed.join("shard-00002.parquet.tmp"), b"half-written").expect("tmp");
    let report = prepare(&encoder, &options, &NoProgress).expect("resume");
    assert_eq!(report.shards_written, 3);
    assert_eq!(report.shards_resumed, 3);
    assert!(!resumed.join("shard-00002.parquet.tmp").exists());
    assert_eq!(read_all(&clean), read_all(&resumed));
}

#[test]
fn normaliser_fit_on_a_store_is_seeded_and_in_its_space() {
    let encoder = HashEncoder {
        dim: 8,
        poison: None,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("store");
    let options = PrepareOptions::new(vec![sample_corpus()], out.clone());
    prepare(&encoder, &options, &NoProgress).expect("prepare");
    let store = ConceptStore::open(&out).expect("open");
    let a = lcm_data::sample::fit_normalizer(&store, 100, 7).expect("fit");
    let b = lcm_data::sample::fit_normalizer(&store, 100, 7).expect("fit");
    let c = lcm_data::sample::fit_normalizer(&store, 100, 8).expect("fit");
    assert_eq!(a, b);
    assert_ne!(a.center, c.center);
    assert_eq!(a.fitted_on, 100);
    assert_eq!(a.encoder_id, "hash-test-encoder");
    let all = lcm_data::sample::fit_normalizer(&store, usize::MAX, 0).expect("fit all");
    assert_eq!(all.fitted_on, store.num_sentences());

    let report = lcm_data::inspect::inspect(&out).expect("inspect");
    assert_eq!(
        report.get("store", "sentences"),
        Some(store.num_sentences().to_string().as_str())
    );
    assert_eq!(report.get("store", "prepare"), Some("complete"));
    let path = dir.path().join("norm.safetensors");
    a.save(&path).expect("save");
    let report = lcm_data::inspect::inspect(&path).expect("inspect normaliser");
    assert_eq!(
        report.get("metadata", "encoder_id"),
        Some("hash-test-encoder")
    );
}
