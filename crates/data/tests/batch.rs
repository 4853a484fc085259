use std::collections::{HashMap, HashSet};

use candle_core::Device;
use lcm_concept::normalizer::RobustNormalizer;
use lcm_data::batch::{
    Batch, BatchPosition, Batcher, BatcherConfig, DatasetConfig, SequenceDataset, SourceMixture,
    Split, SplitDataset, fnv1a64, load_split, split_of,
};
use lcm_data::store::{ConceptDocument, StoreDType, StoreMeta, write_shard};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIM: usize = 4;

fn normalizer() -> RobustNormalizer {
    RobustNormalizer {
        center: vec![0.5, -1.0, 2.0, 0.0],
        scale: vec![2.0, 0.5, 4.0, 1.0],
        encoder_id: "test-encoder".into(),
        fitted_on: 1,
    }
}

fn eos() -> Vec<f32> {
    vec![9.0, 9.5, 10.0, 10.5]
}

fn normalized(x: &[f32]) -> Vec<f32> {
    let n = normalizer();
    x.chunks(DIM)
        .flat_map(|row| {
            row.iter()
                .zip(&n.center)
                .zip(&n.scale)
                .map(|((v, c), s)| (v - c) / s)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A document whose concept `k` is `[k, k + 0.25, -k, id_tag]`.
fn document(id: &str, len: usize) -> ConceptDocument {
    let tag = (fnv1a64(id.as_bytes()) % 1000) as f32;
    ConceptDocument {
        id: id.to_string(),
        source: "synthetic".into(),
        sentences: (0..len).map(|k| format!("sentence {k}")).collect(),
        embeddings: (0..len)
            .flat_map(|k| [k as f32, k as f32 + 0.25, -(k as f32), tag])
            .collect(),
    }
}

fn random_documents(count: usize, seed: u64) -> Vec<ConceptDocument> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|i| document(&format!("doc-{i}"), rng.random_range(1..=300)))
        .collect()
}

fn dataset(docs: Vec<ConceptDocument>) -> SequenceDataset {
    SequenceDataset::from_documents(docs, &normalizer(), eos(), 128).unwrap()
}

fn batcher(docs: Vec<ConceptDocument>, max_concepts: usize, seed: u64) -> Batcher {
    Batcher::new(
        dataset(docs),
        BatcherConfig {
            max_concepts,
            seed,
            sort_window: Some(64),
        },
        Device::Cpu,
    )
    .unwrap()
}

#[test]
fn wraps_at_128_with_eos_only_at_document_end() {
    let doc = document("long", 300);
    let data = dataset(vec![doc.clone()]);
    let lens: Vec<usize> = data.sequences().iter().map(|s| s.len()).collect();
    assert_eq!(lens, vec![128, 128, 45]);
    let chunks: Vec<usize> = data.sequences().iter().map(|s| s.chunk).collect();
    assert_eq!(chunks, vec![0, 1, 2]);
    let ends: Vec<bool> = data.sequences().iter().map(|s| s.ends_document).collect();
    assert_eq!(ends, vec![false, false, true]);

    // Concatenated sequences = normalised document followed by the normalised EOS, once.
    let all: Vec<f32> = data
        .sequences()
        .iter()
        .flat_map(|s| s.data.clone())
        .collect();
    let mut expected = normalized(&doc.embeddings);
    let eos_norm = normalized(&eos());
    expected.extend_from_slice(&eos_norm);
    assert_eq!(all.len(), expected.len());
    for (a, b) in all.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    let eos_rows = all
        .chunks(DIM)
        .filter(|r| *r == eos_norm.as_slice())
        .count();
    assert_eq!(eos_rows, 1);
    assert_eq!(data.num_concepts(), 301);
    assert_eq!(data.num_documents(), 1);

    // Boundary cases: 127 + EOS fills one sequence; 128 + EOS spills the EOS alone.
    let lens = |n: usize| -> Vec<usize> {
        dataset(vec![document("d", n)])
            .sequences()
            .iter()
            .map(|s| s.len())
            .collect()
    };
    assert_eq!(lens(127), vec![128]);
    assert_eq!(lens(128), vec![128, 1]);
    assert_eq!(lens(1), vec![2]);
    assert_eq!(lens(256), vec![128, 128, 1]);
    // Empty documents are skipped.
    assert!(lens(0).is_empty());
}

#[test]
fn normalisation_matches_manual_formula() {
    let doc = document("n", 3);
    let data = dataset(vec![doc.clone()]);
    let seq = &data.sequences()[0];
    let n = normalizer();
    for row in 0..3 {
        for j in 0..DIM {
            let raw = doc.embeddings[row * DIM + j];
            let want = (raw - n.center[j]) / n.scale[j];
            assert!((seq.data[row * DIM + j] - want).abs() < 1e-6);
        }
    }
    for j in 0..DIM {
        let want = (eos()[j] - n.center[j]) / n.scale[j];
        assert!((seq.data[3 * DIM + j] - want).abs() < 1e-6);
    }
}

#[test]
fn rejects_bad_inputs() {
    let n = normalizer();
    assert!(
        SequenceDataset::from_documents(vec![document("a", 2)], &n, vec![1.0; 3], 128).is_err()
    );
    let mut bad = document("b", 2);
    bad.embeddings.pop();
    assert!(SequenceDataset::from_documents(vec![bad], &n, eos(), 128).is_err());
    assert!(SequenceDataset::from_documents(vec![document("c", 2)], &n, eos(), 0).is_err());
    // A budget below the longest sequence could never be batched.
    let data = dataset(vec![document("d", 300)]);
    assert!(Batcher::new(data, BatcherConfig::new(100, 0), Device::Cpu).is_err());
}

#[test]
fn split_is_deterministic_disjoint_and_near_fraction() {
    let docs = random_documents(2000, 7);
    let config = DatasetConfig {
        max_seq_len: 128,
        valid_fraction: 0.1,
    };
    let load = || {
        SplitDataset::from_documents(
            docs.clone().into_iter().map(Ok),
            &normalizer(),
            eos(),
            config,
        )
        .unwrap()
    };
    let a = load();
    let b = load();
    let ids = |d: &SequenceDataset| -> Vec<(String, usize)> {
        d.sequences()
            .iter()
            .map(|s| (s.doc_id.clone(), s.chunk))
            .collect()
    };
    assert_eq!(ids(&a.train), ids(&b.train));
    assert_eq!(ids(&a.valid), ids(&b.valid));

    let train_docs: HashSet<String> = a
        .train
        .sequences()
        .iter()
        .map(|s| s.doc_id.clone())
        .collect();
    let valid_docs: HashSet<String> = a
        .valid
        .sequences()
        .iter()
        .map(|s| s.doc_id.clone())
        .collect();
    assert!(train_docs.is_disjoint(&valid_docs));
    assert_eq!(train_docs.len() + valid_docs.len(), 2000);
    assert_eq!(a.train.num_documents(), train_docs.len());
    assert_eq!(a.valid.num_documents(), valid_docs.len());
    assert!(
        (150..=250).contains(&valid_docs.len()),
        "{} held out of 2000 at 10%",
        valid_docs.len()
    );
    for id in &valid_docs {
        assert_eq!(split_of(id, 0.1), Split::Valid);
    }
    // All concepts (+ one EOS per document) are accounted for.
    let total: usize = docs.iter().map(|d| d.len() + 1).sum();
    assert_eq!(a.train.num_concepts() + a.valid.num_concepts(), total);
    let stats = a.train.stats();
    assert_eq!(stats.sequences, a.train.len());
    assert!(stats.max_len <= 128);

    // Edge fractions.
    assert_eq!(split_of("x", 0.0), Split::Train);
    assert_eq!(split_of("x", 1.0), Split::Valid);
    // FNV-1a 64 reference values.
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
}

/// Checks budget, masks, lengths, padding and contents of one batch; returns its sequence keys.
fn check_batch(batch: &Batch, data: &SequenceDataset, max_concepts: usize) -> Vec<(String, usize)> {
    let index: HashMap<(String, usize), usize> = data
        .sequences()
        .iter()
        .enumerate()
        .map(|(i, s)| ((s.doc_id.clone(), s.chunk), i))
        .collect();
    let (b, t, d) = batch.x.dims3().unwrap();
    assert_eq!(d, DIM);
    assert_eq!(b, batch.size());
    assert_eq!(t, batch.max_len());
    assert!(b * t <= max_concepts, "{b} x {t} > {max_concepts}");
    assert_eq!(batch.padded_concepts(), b * t);
    assert_eq!(batch.mask.dims2().unwrap(), (b, t));
    let x = batch.x.to_vec3::<f32>().unwrap();
    let mask = batch.mask.to_vec2::<f32>().unwrap();
    let mut keys = Vec::new();
    for row in 0..b {
        let len = batch.lengths[row];
        for (pos, m) in mask[row].iter().enumerate() {
            assert_eq!(*m, if pos < len { 1.0 } else { 0.0 });
        }
        for pad in &x[row][len..] {
            assert!(pad.iter().all(|v| *v == 0.0));
        }
        // Identify the sequence by document and content.
        let candidates: Vec<usize> = index
            .iter()
            .filter(|((id, _), _)| *id == batch.doc_ids[row])
            .map(|(_, &i)| i)
            .filter(|&i| data.sequences()[i].len() == len)
            .filter(|&i| {
                let flat: Vec<f32> = x[row][..len].iter().flatten().copied().collect();
                flat == data.sequences()[i].data
            })
            .collect();
        assert_eq!(candidates.len(), 1);
        let seq = &data.sequences()[candidates[0]];
        assert_eq!(batch.ends_document[row], seq.ends_document);
        keys.push((seq.doc_id.clone(), seq.chunk));
    }
    assert_eq!(batch.num_concepts(), batch.lengths.iter().sum::<usize>());
    keys
}

#[test]
fn packing_respects_budget_and_covers_every_sequence_once() {
    let max_concepts = 512;
    let b = batcher(random_documents(120, 3), max_concepts, 42);
    let data = b.dataset().clone();
    for epoch in 0..3 {
        let mut seen = Vec::new();
        let mut count = 0;
        for batch in b.epoch(epoch) {
            let batch = batch.unwrap();
            assert_eq!(
                batch.position,
                BatchPosition {
                    epoch,
                    index: count
                }
            );
            seen.extend(check_batch(&batch, &data, max_concepts));
            count += 1;
        }
        assert_eq!(count, b.num_batches(epoch));
        let unique: HashSet<_> = seen.iter().cloned().collect();
        assert_eq!(seen.len(), data.len(), "epoch {epoch}");
        assert_eq!(unique.len(), data.len());
        let stats = b.epoch_stats(epoch);
        assert_eq!(stats.sequences, data.len());
        assert_eq!(stats.concepts, data.num_concepts());
        assert!(stats.padded_concepts >= stats.concepts);
        assert!((0.0..1.0).contains(&stats.padding_ratio));
    }
    // Sorting within windows keeps padding low compared with unsorted packing.
    let unsorted = Batcher::new(
        data.clone(),
        BatcherConfig {
            max_concepts,
            seed: 42,
            sort_window: Some(1),
        },
        Device::Cpu,
    )
    .unwrap();
    assert!(b.epoch_stats(0).padding_ratio < unsorted.epoch_stats(0).padding_ratio);
}

fn summary(batch: &Batch) -> (BatchPosition, Vec<String>, Vec<usize>, Vec<f32>) {
    (
        batch.position,
        batch.doc_ids.clone(),
        batch.lengths.clone(),
        batch.x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    )
}

#[test]
fn same_seed_same_batches_and_epochs_differ() {
    let docs = random_documents(60, 5);
    let a = batcher(docs.clone(), 512, 11);
    let b = batcher(docs.clone(), 512, 11);
    let c = batcher(docs, 512, 12);
    assert_eq!(a.plan(0), b.plan(0));
    assert_eq!(a.plan(3), b.plan(3));
    let sa: Vec<_> = a.epoch(0).map(|x| summary(&x.unwrap())).collect();
    let sb: Vec<_> = b.epoch(0).map(|x| summary(&x.unwrap())).collect();
    assert_eq!(sa, sb);
    assert_ne!(a.plan(0), a.plan(1));
    assert_ne!(a.plan(0), c.plan(0));
}

#[test]
fn resume_from_position_equals_uninterrupted_stream() {
    let b = batcher(random_documents(40, 9), 384, 2024);
    let epoch0 = b.num_batches(0);
    let epoch1 = b.num_batches(1);
    assert!(epoch1 > 3);
    let total = epoch0 + epoch1 + b.num_batches(2) + 2;
    let stream: Vec<Batch> = b.batches().take(total).map(|x| x.unwrap()).collect();
    // The stream is infinite over epochs and positions chain.
    assert_eq!(stream.last().unwrap().position.epoch, 3);
    for pair in stream.windows(2) {
        assert_eq!(pair[0].next, pair[1].position);
    }
    let start = BatchPosition { epoch: 1, index: 3 };
    let offset = epoch0 + 3;
    assert_eq!(stream[offset].position, start);
    let resumed: Vec<_> = b
        .batches_from(start)
        .take(total - offset)
        .map(|x| summary(&x.unwrap()))
        .collect();
    let expected: Vec<_> = stream[offset..].iter().map(summary).collect();
    assert_eq!(resumed, expected);

    // Resuming at a batch's `next` continues seamlessly, also across an epoch boundary.
    let last_of_epoch0 = &stream[epoch0 - 1];
    assert_eq!(last_of_epoch0.next, BatchPosition { epoch: 1, index: 0 });
    let first = b.batches_from(last_of_epoch0.next).next().unwrap().unwrap();
    assert_eq!(summary(&first), summary(&stream[epoch0]));
}

#[test]
fn loads_a_store_and_refuses_another_space() {
    let dir = tempfile::tempdir().unwrap();
    let docs = random_documents(30, 1);
    let meta = StoreMeta {
        encoder_id: "test-encoder".into(),
        dim: DIM,
        dtype: StoreDType::F32,
        segmenter_version: "test".into(),
        tool_version: "test".into(),
    };
    write_shard(&dir.path().join("part-0.parquet"), &meta, &docs).unwrap();
    let config = DatasetConfig {
        max_seq_len: 128,
        valid_fraction: 0.2,
    };
    let from_store = load_split(dir.path(), &normalizer(), eos(), config).unwrap();
    let direct =
        SplitDataset::from_documents(docs.into_iter().map(Ok), &normalizer(), eos(), config)
            .unwrap();
    for split in [Split::Train, Split::Valid] {
        assert_eq!(
            from_store.get(split).sequences(),
            direct.get(split).sequences()
        );
    }
    let mut other = normalizer();
    other.encoder_id = "another-encoder".into();
    assert!(load_split(dir.path(), &other, eos(), config).is_err());
}

/// `count` documents of `source`, each short enough to be one sequence.
fn sourced(source: &str, count: usize) -> Vec<ConceptDocument> {
    (0..count)
        .map(|i| ConceptDocument {
            source: source.into(),
            ..document(&format!("{source}-{i}"), 3 + i % 5)
        })
        .collect()
}

/// Sequences per source in the plan of `epoch`.
fn drawn(batcher: &Batcher, epoch: u64) -> HashMap<String, usize> {
    let sources: Vec<&str> = batcher
        .dataset()
        .sequences()
        .iter()
        .map(|s| s.source.as_str())
        .collect();
    let mut counts = HashMap::new();
    for batch in batcher.plan(epoch) {
        for i in batch {
            *counts.entry(sources[i].to_string()).or_default() += 1;
        }
    }
    counts
}

#[test]
fn a_mixture_draws_each_epoch_by_source_weight() {
    // 30 Bible documents drown 6 of Austen and 4 of Brown in the store's own proportions.
    let docs: Vec<_> = [
        sourced("web", 30),
        sourced("austen", 6),
        sourced("brown", 4),
    ]
    .concat();
    let plain = batcher(docs.clone(), 64, 3);
    assert_eq!(drawn(&plain, 0)["web"], 30);

    let equal = SourceMixture::parse("web=1, austen=1, brown=1").unwrap();
    let mixed = batcher(docs.clone(), 64, 3).with_mixture(&equal).unwrap();
    for epoch in 0..3 {
        let counts = drawn(&mixed, epoch);
        // 40 sequences an epoch, a third each (largest remainder: 14 + 13 + 13).
        assert_eq!(counts.values().sum::<usize>(), 40);
        for source in ["web", "austen", "brown"] {
            assert!((13..=14).contains(&counts[source]), "{counts:?}");
        }
    }
    // A pure function of (seed, epoch): resuming mid-epoch sees the same plan.
    assert_eq!(mixed.plan(1), mixed.plan(1));
    assert_ne!(mixed.plan(1), mixed.plan(2));
    // Upsampled sources are repeated whole passes first: every Brown document appears.
    let brown: HashSet<usize> = mixed
        .plan(0)
        .into_iter()
        .flatten()
        .filter(|&i| mixed.dataset().sequences()[i].source == "brown")
        .collect();
    assert_eq!(brown.len(), 4);

    let no_bible = SourceMixture::parse("web=0,*=1").unwrap();
    let counts = drawn(
        &batcher(docs.clone(), 64, 3)
            .with_mixture(&no_bible)
            .unwrap(),
        0,
    );
    assert_eq!(
        (counts.get("web"), counts["austen"] + counts["brown"]),
        (None, 40)
    );

    let error = |text: &str| {
        batcher(docs.clone(), 64, 3)
            .with_mixture(&SourceMixture::parse(text).unwrap())
            .unwrap_err()
            .to_string()
    };
    assert!(error("web=1,austen=1").contains("`brown`"));
    assert!(error("web=1,*=1,poetry=2").contains("`poetry`"));
    assert!(error("*=0").contains("weight 0"));
    for bad in ["web", "web=x", "web=-1", "web=1,web=2", ""] {
        assert!(SourceMixture::parse(bad).is_err(), "{bad:?} parsed");
    }
    assert_eq!(equal.to_string(), "austen=1,brown=1,web=1");
}
