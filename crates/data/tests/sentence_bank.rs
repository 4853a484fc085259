//! The sentence bank (build, open, integrity checks) and the retrieval decoder.

use lcm_util::vector::cosine_f32 as cosine;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use lcm_concept::bert::{BertEncoder, EncoderOptions};
use lcm_concept::{ConceptDecoder, ConceptEncoder, DecodeConfig};
use lcm_data::DataError;
use lcm_data::prepare::{NoProgress, PrepareOptions, prepare};
use lcm_data::retrieval::RetrievalDecoder;
use lcm_data::sentence_bank::{OFFSETS_FILE, SENTENCES_FILE, SentenceBank, VECTORS_FILE};
use lcm_data::store::{
    ConceptDocument, ConceptStore, StoreDType, StoreMeta, TOOL_VERSION, write_shard,
};

const ENCODER: &str = "synthetic-encoder";
const DIM: usize = 8;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Deterministic pseudo-random vector for `seed` (xorshift), values in [-1, 1).
fn vector(seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..DIM)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 20_000) as f32 / 10_000.0 - 1.0
        })
        .collect()
}

fn document(id: &str, sentences: &[(&str, u64)]) -> ConceptDocument {
    ConceptDocument {
        id: id.to_string(),
        source: "test".to_string(),
        sentences: sentences.iter().map(|(s, _)| s.to_string()).collect(),
        embeddings: sentences
            .iter()
            .flat_map(|(_, seed)| vector(*seed))
            .collect(),
    }
}

fn meta() -> StoreMeta {
    StoreMeta {
        encoder_id: ENCODER.to_string(),
        dim: DIM,
        dtype: StoreDType::F32,
        segmenter_version: "test".to_string(),
        tool_version: TOOL_VERSION.to_string(),
    }
}

/// A store of two documents; "The cat sat." appears in both (with the same vector).
fn synthetic_store(dir: &Path) -> ConceptStore {
    let store = dir.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let documents = [
        document(
            "a",
            &[
                ("The cat sat.", 1),
                ("It was warm.", 2),
                ("Then it left.", 3),
            ],
        ),
        document(
            "b",
            &[
                ("Rain fell.", 4),
                ("The cat sat.", 1),
                ("Everyone went home.", 5),
            ],
        ),
    ];
    write_shard(&store.join("shard-00000.parquet"), &meta(), &documents).unwrap();
    ConceptStore::open(&store).unwrap()
}

fn built_bank(dir: &Path) -> SentenceBank {
    let store = synthetic_store(dir);
    let out = dir.join("bank");
    let report = SentenceBank::build(&store, &out).unwrap();
    assert_eq!(report.sentences_read, 6);
    assert_eq!(report.unique, 5);
    assert_eq!(report.duplicates, 1);
    SentenceBank::open_expecting(&out, ENCODER, DIM).unwrap()
}

#[test]
fn dedups_and_normalises() {
    let dir = tempfile::tempdir().unwrap();
    let bank = built_bank(dir.path());
    assert_eq!(bank.len(), 5);
    let sentences: Vec<&str> = (0..bank.len()).map(|i| bank.sentence(i).unwrap()).collect();
    assert_eq!(
        sentences,
        [
            "The cat sat.",
            "It was warm.",
            "Then it left.",
            "Rain fell.",
            "Everyone went home."
        ]
    );
    for i in 0..bank.len() {
        let norm: f32 = bank.vector(i).iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "row {i} has norm {norm}");
    }
    // Same direction as the stored (unnormalised) vector.
    assert!((cosine(bank.vector(3), &vector(4)) - 1.0).abs() < 1e-5);
    // No temporary folder left behind.
    assert!(!dir.path().join("bank.tmp").exists());
}

#[test]
fn decoding_a_stored_vector_returns_its_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let decoder = RetrievalDecoder::new(built_bank(dir.path()));
    assert_eq!(decoder.id(), ENCODER);
    assert_eq!(decoder.dim(), DIM);
    // Unnormalised concepts, as a model would produce them.
    let seeds = [3u64, 1, 5];
    let flat: Vec<f32> = seeds
        .iter()
        .flat_map(|s| vector(*s).into_iter().map(|v| v * 3.5))
        .collect();
    let concepts = Tensor::from_vec(flat, (3, DIM), &Device::Cpu).unwrap();
    let decoded = decoder
        .decode(&concepts, None, &DecodeConfig::default())
        .unwrap();
    let texts: Vec<&str> = decoded.iter().map(|d| d.text.as_str()).collect();
    assert_eq!(
        texts,
        ["Then it left.", "The cat sat.", "Everyone went home."]
    );
    for d in &decoded {
        let score = d.score.unwrap();
        assert!((score - 1.0).abs() < 1e-5, "cosine {score}");
    }
}

#[test]
fn exclusion_skips_the_prompt_sentences() {
    let dir = tempfile::tempdir().unwrap();
    let decoder = RetrievalDecoder::new(built_bank(dir.path())).with_exclude(["Rain fell."]);
    let concepts = Tensor::from_vec(vector(4), (1, DIM), &Device::Cpu).unwrap();
    let decoded = decoder
        .decode(&concepts, None, &DecodeConfig::default())
        .unwrap();
    assert_ne!(decoded[0].text, "Rain fell.");
    // It is the second-best match.
    let top = decoder.top_k(&vector(4), 2).unwrap();
    assert_eq!(top[0].text, "Rain fell.");
    assert_eq!(decoded[0].text, top[1].text);
    assert_eq!(decoded[0].score, Some(top[1].score));

    let all: Vec<String> = (0..decoder.bank().len())
        .map(|i| decoder.bank().sentence(i).unwrap().to_string())
        .collect();
    let decoder = RetrievalDecoder::new(SentenceBank::open(&dir.path().join("bank")).unwrap())
        .with_exclude(all);
    let err = decoder
        .decode(&concepts, None, &DecodeConfig::default())
        .unwrap_err();
    assert!(err.to_string().contains("excluded"), "{err}");
}

#[test]
fn blocked_search_equals_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    // A larger bank: 103 distinct sentences, so blocks of 7 leave a ragged last block.
    let documents: Vec<ConceptDocument> = (0..103u64)
        .map(|i| {
            let text = format!("Sentence number {i}.");
            document(&format!("d{i}"), &[(text.as_str(), 100 + i)])
        })
        .collect();
    let out = dir.path().join("bank");
    SentenceBank::build_from_documents(documents.into_iter().map(Ok), ENCODER, DIM, "test", &out)
        .unwrap();
    let bank_path = out.clone();
    let queries: Vec<f32> = (0..5u64).flat_map(|i| vector(7_000 + i)).collect();
    let blocked = RetrievalDecoder::new(SentenceBank::open(&bank_path).unwrap())
        .with_block_rows(7)
        .with_threads(1);
    let single = RetrievalDecoder::new(SentenceBank::open(&bank_path).unwrap());
    let k = 10;
    let a = blocked.search(&queries, k, &HashSet::new()).unwrap();
    let b = single.search(&queries, k, &HashSet::new()).unwrap();
    let bank = single.bank();
    for (q, (hits_a, hits_b)) in a.iter().zip(&b).enumerate() {
        let query = &queries[q * DIM..][..DIM];
        let mut brute: Vec<(f32, usize)> = (0..bank.len())
            .map(|i| (cosine(query, bank.vector(i)), i))
            .collect();
        brute.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        assert_eq!(hits_a.len(), k);
        for (rank, ((hit_a, hit_b), (score, index))) in
            hits_a.iter().zip(hits_b).zip(&brute).enumerate()
        {
            assert_eq!(hit_a.index, *index, "query {q} rank {rank}");
            assert_eq!(hit_b.index, *index, "query {q} rank {rank}");
            assert!((hit_a.score - score).abs() < 1e-5);
            assert_eq!(hit_a.text, bank.sentence(*index).unwrap());
        }
    }
    // top_k is the single-query form of the same search.
    let top = blocked.top_k(&queries[..DIM], 3).unwrap();
    assert_eq!(top, a[0][..3]);
}

#[test]
fn refuses_a_bank_from_another_encoder() {
    let dir = tempfile::tempdir().unwrap();
    built_bank(dir.path());
    let path = dir.path().join("bank");
    let err = SentenceBank::open_expecting(&path, "other-encoder", DIM).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(ENCODER) && message.contains("other-encoder"),
        "{message}"
    );
    let err = RetrievalDecoder::open(&path, ENCODER, DIM + 1).unwrap_err();
    assert!(err.to_string().contains("dim"), "{err}");
}

#[test]
fn truncated_files_are_named() {
    for name in [VECTORS_FILE, OFFSETS_FILE, SENTENCES_FILE] {
        let dir = tempfile::tempdir().unwrap();
        built_bank(dir.path());
        let path = dir.path().join("bank");
        let file = path.join(name);
        let len = std::fs::metadata(&file).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let err = SentenceBank::open(&path).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, DataError::Schema { .. }) && message.contains(name),
            "{name}: {message}"
        );
        assert!(message.contains("truncated"), "{message}");
    }
}

#[test]
fn refuses_bad_queries_and_existing_output() {
    let dir = tempfile::tempdir().unwrap();
    let decoder = RetrievalDecoder::new(built_bank(dir.path()));
    let mut query = vector(1);
    query[2] = f32::NAN;
    let err = decoder.top_k(&query, 1).unwrap_err();
    assert!(err.to_string().contains("non-finite"), "{err}");
    let concepts = Tensor::from_vec(query, (1, DIM), &Device::Cpu).unwrap();
    assert!(
        decoder
            .decode(&concepts, None, &DecodeConfig::default())
            .is_err()
    );
    assert!(decoder.top_k(&[0.0; DIM], 1).is_err());
    assert!(decoder.top_k(&[1.0; DIM + 1], 1).is_err());
    let wrong = Tensor::zeros((1, DIM + 1), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(
        decoder
            .decode(&wrong, None, &DecodeConfig::default())
            .is_err()
    );

    let store = ConceptStore::open(&dir.path().join("store")).unwrap();
    let err = SentenceBank::build(&store, &dir.path().join("bank")).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    let err = SentenceBank::open(&dir.path().join("store")).unwrap_err();
    assert!(err.to_string().contains("not a sentence bank"), "{err}");
}

#[test]
fn decodes_the_sample_corpus_with_the_tiny_bert_fixture() {
    let options = EncoderOptions {
        threads: 2,
        ..EncoderOptions::default()
    };
    let encoder = BertEncoder::from_folder(repo().join("fixtures/encoder/tiny-bert"), &options)
        .expect("tiny-bert fixture loads");
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let options = PrepareOptions::new(
        vec![repo().join("fixtures/corpus/sample.jsonl")],
        store_dir.clone(),
    );
    prepare(&encoder, &options, &NoProgress).unwrap();
    let store = ConceptStore::open(&store_dir).unwrap();
    let out = dir.path().join("bank");
    let report = SentenceBank::build(&store, &out).unwrap();
    assert_eq!(report.sentences_read, store.num_sentences());
    assert_eq!(
        report.unique + report.duplicates + report.zero_vectors,
        report.sentences_read
    );

    let decoder = RetrievalDecoder::open(&out, encoder.id(), encoder.dim()).unwrap();
    let picks: Vec<&str> = (0..decoder.bank().len())
        .step_by(3)
        .map(|i| decoder.bank().sentence(i).unwrap())
        .collect();
    let concepts = encoder.encode(&picks, None).unwrap();
    let decoded = decoder
        .decode(&concepts, None, &DecodeConfig::default())
        .unwrap();
    for (pick, d) in picks.iter().zip(&decoded) {
        let score = d.score.unwrap();
        assert!(score > 0.999, "{pick:?} → {:?} ({score})", d.text);
        // Distinct sentences could in principle share a vector; then the score still is ≈ 1.
        if d.text != *pick {
            let again = encoder.encode(&[d.text.as_str()], None).unwrap();
            let a = again.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = encoder
                .encode(&[pick], None)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!(cosine(&a, &b) > 0.999);
        }
    }
}
