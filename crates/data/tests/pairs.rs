//! Prompt → answer pairs: joining a pair store by id, the `prompt ++ answer ++ EOS` sequences
//! with their first target, truncation and skipping at the wrap length, and the batch's loss
//! mask.

use candle_core::Device;
use lcm_concept::normalizer::RobustNormalizer;
use lcm_data::batch::{Batcher, BatcherConfig, DatasetConfig, SplitDataset};
use lcm_data::pairs::{ANSWER_DIR, PROMPT_DIR, PairStats, PairStore};
use lcm_data::store::{ConceptDocument, StoreDType, StoreMeta, write_shard};

const DIM: usize = 4;

fn doc(id: &str, n: usize, base: f32) -> ConceptDocument {
    ConceptDocument {
        id: id.into(),
        source: "test".into(),
        sentences: (0..n).map(|k| format!("{id} sentence {k}")).collect(),
        embeddings: (0..n * DIM).map(|i| base + i as f32).collect(),
    }
}

fn meta(encoder: &str) -> StoreMeta {
    StoreMeta {
        encoder_id: encoder.into(),
        dim: DIM,
        dtype: StoreDType::F32,
        segmenter_version: "test".into(),
        tool_version: "test".into(),
    }
}

fn identity() -> RobustNormalizer {
    let mut n = RobustNormalizer::fit(&[0.0; DIM * 4], DIM, "enc").unwrap();
    n.center = vec![0.0; DIM];
    n.scale = vec![1.0; DIM];
    n
}

#[test]
fn pairs_join_by_id_and_mask_the_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let prompts = vec![
        doc("a", 2, 0.0),
        doc("b", 6, 100.0),
        doc("c", 1, 200.0),
        doc("lonely", 2, 0.0),
    ];
    let answers = vec![
        doc("c", 7, 300.0),
        doc("a", 1, 400.0),
        doc("b", 2, 500.0),
        doc("orphan", 1, 0.0),
    ];
    for (dir, docs) in [(PROMPT_DIR, &prompts), (ANSWER_DIR, &answers)] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        write_shard(
            &root.join(dir).join("shard-00000.parquet"),
            &meta("enc"),
            docs,
        )
        .unwrap();
    }
    let store = PairStore::open(root).unwrap();
    let (pairs, mut stats) = store.pairs().unwrap();
    assert_eq!(
        pairs.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!(
        (stats.prompts_without_answer, stats.answers_without_prompt),
        (1, 1)
    );

    // Wrap length 6: a = 2 + 1 + EOS = 4 fits; b = 6 + 2 + EOS is cut to its last 3 prompt
    // concepts; c's answer (7) + EOS + one prompt concept cannot fit: skipped.
    let eos = vec![-1.0; DIM];
    let config = DatasetConfig {
        max_seq_len: 6,
        valid_fraction: 0.0,
    };
    let split =
        SplitDataset::from_pairs(pairs, &identity(), eos.clone(), config, &mut stats).unwrap();
    assert_eq!(
        stats,
        PairStats {
            pairs: 3,
            prompts_without_answer: 1,
            answers_without_prompt: 1,
            truncated_prompts: 1,
            skipped_too_long: 1
        }
    );
    let seqs = split.train.sequences();
    assert_eq!(seqs.len(), 2);
    let (a, b) = (&seqs[0], &seqs[1]);
    assert_eq!((a.len(), a.first_target, a.ends_document), (4, 2, true));
    assert_eq!((b.len(), b.first_target), (6, 3));
    // b keeps prompt concepts 3..6 (values from 100 + 3·DIM), then its answer, then EOS.
    assert_eq!(b.data[0], 100.0 + (3 * DIM) as f32);
    assert_eq!(b.data[3 * DIM], 500.0);
    assert_eq!(&b.data[5 * DIM..], eos.as_slice());

    let batcher = Batcher::new(split.train, BatcherConfig::new(64, 0), Device::Cpu).unwrap();
    let batch = batcher
        .make_batch(&[0, 1], Default::default(), Default::default())
        .unwrap();
    assert_eq!(batch.first_target, [2, 3]);
    let mask = batch.mask.to_vec2::<f32>().unwrap();
    let loss_mask = batch.loss_mask.to_vec2::<f32>().unwrap();
    assert_eq!(mask[0], [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
    assert_eq!(loss_mask[0], [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    assert_eq!(loss_mask[1], [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);

    // A store of another space on one side is refused.
    std::fs::remove_file(root.join(ANSWER_DIR).join("shard-00000.parquet")).unwrap();
    write_shard(
        &root.join(ANSWER_DIR).join("shard-00000.parquet"),
        &meta("other"),
        &answers,
    )
    .unwrap();
    let err = PairStore::open(root).unwrap_err().to_string();
    assert!(err.contains("other"), "{err}");
}
