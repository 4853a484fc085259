//! Summarisation evaluation on tiny synthetic pair stores: the baselines' numbers by hand,
//! a fine-tuned model's row recomputed from its outputs, and the space refusal.

use std::path::{Path, PathBuf};

use lcm_concept::normalizer::RobustNormalizer;
use lcm_data::pairs::{ANSWER_DIR, PROMPT_DIR};
use lcm_data::store::{ConceptDocument, StoreDType, StoreMeta, write_shard};
use lcm_eval::rouge::{length_ratio, rouge_l};
use lcm_model::builder::ModelKind;
use lcm_workflows::finetune::{FinetuneRequest, finetune};
use lcm_workflows::summarization::{
    SummarizationConfig, SummarizationRequest, evaluate_summarization,
};
use lcm_workflows::train::TrainConfig;

const DIM: usize = 8;
const ENCODER: &str = "synthetic-encoder";

/// A unit-ish vector pointing mostly along axis `axis`, with a small per-row wobble.
fn vector(axis: usize, wobble: usize) -> Vec<f32> {
    (0..DIM)
        .map(|j| {
            if j == axis % DIM {
                1.0
            } else {
                0.05 * ((j + wobble) % 3) as f32
            }
        })
        .collect()
}

fn doc(id: &str, sentences: &[&str], axis: usize) -> ConceptDocument {
    ConceptDocument {
        id: id.into(),
        source: "test".into(),
        sentences: sentences.iter().map(|s| s.to_string()).collect(),
        embeddings: (0..sentences.len())
            .flat_map(|k| vector(axis + k, k))
            .collect(),
    }
}

fn write_pairs(dir: &Path, encoder: &str, pairs: &[(ConceptDocument, ConceptDocument)]) {
    let meta = StoreMeta {
        encoder_id: encoder.into(),
        dim: DIM,
        dtype: StoreDType::F32,
        segmenter_version: "test".into(),
        tool_version: "test".into(),
    };
    for (side, pick) in [(PROMPT_DIR, 0), (ANSWER_DIR, 1)] {
        let docs: Vec<ConceptDocument> = pairs
            .iter()
            .map(|(p, a)| if pick == 0 { p.clone() } else { a.clone() })
            .collect();
        std::fs::create_dir_all(dir.join(side)).unwrap();
        write_shard(&dir.join(side).join("shard-00000.parquet"), &meta, &docs).unwrap();
    }
}

/// Three training pairs whose prompts point along axes 0, 3 and 6.
fn train_pairs() -> Vec<(ConceptDocument, ConceptDocument)> {
    vec![
        (
            doc("t0", &["Cats purr.", "They sleep a lot."], 0),
            doc("t0", &["A note on cats"], 1),
        ),
        (
            doc("t1", &["Dogs bark.", "They guard houses."], 3),
            doc("t1", &["All about dogs"], 4),
        ),
        (
            doc("t2", &["Birds sing.", "They fly south."], 6),
            doc("t2", &["Birds in winter"], 7),
        ),
    ]
}

/// Two held-out pairs: the first near training pair t1, the second near t2.
fn test_pairs() -> Vec<(ConceptDocument, ConceptDocument)> {
    vec![
        (
            doc("h0", &["The cat sat on the mat.", "It was warm."], 3),
            doc("h0", &["the cat on a mat"], 0),
        ),
        (
            doc(
                "h1",
                &["Dogs bark loudly at night.", "Neighbours complain."],
                6,
            ),
            doc("h1", &["Dogs bark at night"], 0),
        ),
    ]
}

fn request<'a>(
    models: &'a [PathBuf],
    train: &'a Path,
    test: &'a Path,
    examples: usize,
) -> SummarizationRequest<'a> {
    SummarizationRequest {
        models,
        normalizer: None,
        train_pairs: train,
        test_pairs: test,
        eos: vec![0.3; DIM],
        decoder: None,
        config: SummarizationConfig {
            examples,
            ..SummarizationConfig::default()
        },
    }
}

#[test]
fn baselines_score_as_computed_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let (train_dir, test) = (tmp.path().join("train"), tmp.path().join("test"));
    let train = train_dir.as_path();
    write_pairs(train, ENCODER, &train_pairs());
    write_pairs(&test, ENCODER, &test_pairs());
    let report = evaluate_summarization(
        &request(&[], train, &test, 2),
        &mut |_| {},
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(
        (report.train_pairs, report.test_pairs, report.evaluated),
        (3, 2, 2)
    );
    let first = report
        .systems
        .iter()
        .find(|s| s.system == "first-sentence")
        .unwrap();
    // "The cat sat on the mat." vs "the cat on a mat": LCS the·cat·on·mat = 4 of 6 and 5
    // tokens, F = 2·(4/6)(4/5)/(4/6 + 4/5) = 8/11. "Dogs bark loudly at night." vs "Dogs
    // bark at night": LCS 4 of 5 and 4, F = 2·0.8·1/1.8 = 8/9.
    let by_hand = (8.0 / 11.0 + 8.0 / 9.0) / 2.0;
    assert!(
        (first.rouge_l - by_hand).abs() < 1e-12,
        "{} vs {by_hand}",
        first.rouge_l
    );
    assert!((first.rouge_l_precision - (4.0 / 6.0 + 4.0 / 5.0) / 2.0).abs() < 1e-12);
    assert!((first.rouge_l_recall - (4.0 / 5.0 + 1.0) / 2.0).abs() < 1e-12);
    // 6/5 and 5/4 words; every 3-gram comes from the source; nothing repeats.
    assert!((first.length_ratio.unwrap() - (1.2 + 1.25) / 2.0).abs() < 1e-12);
    assert_eq!(first.ovl3, 1.0);
    assert_eq!(first.rep4, 0.0);
    assert_eq!(first.mean_words, 5.5);

    // The nearest training prompts (by mean concept) are t1 and t2.
    let nearest = report
        .systems
        .iter()
        .find(|s| s.system == "nearest-summary")
        .unwrap();
    let outputs: Vec<&str> = report
        .examples
        .iter()
        .map(|e| {
            e.outputs
                .iter()
                .find(|(s, _)| s == "nearest-summary")
                .unwrap()
                .1
                .as_str()
        })
        .collect();
    assert_eq!(outputs, ["All about dogs", "Birds in winter"]);
    let f = (rouge_l("the cat on a mat", "All about dogs").fmeasure
        + rouge_l("Dogs bark at night", "Birds in winter").fmeasure)
        / 2.0;
    assert_eq!(nearest.rouge_l, f);
    assert_eq!(f, 0.0);
    let md = report.markdown();
    assert!(md.contains("| first-sentence | 80.81 |"), "{md}");
    assert!(md.contains("| nearest-summary | 0.00 |"), "{md}");

    // Held-out pairs in another space are refused.
    let foreign = tmp.path().join("foreign");
    write_pairs(&foreign, "other-encoder", &test_pairs());
    let err = evaluate_summarization(
        &request(&[], train, &foreign, 2),
        &mut |_| {},
        &mut |_, _, _| {},
    )
    .expect_err("foreign space");
    assert!(err.to_string().contains("other-encoder"), "{err}");
}

#[test]
fn a_finetuned_model_is_scored_from_its_decoded_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let (train_dir, test) = (tmp.path().join("train"), tmp.path().join("test"));
    let train = train_dir.as_path();
    let mut pairs = train_pairs();
    for i in 0..12 {
        let id = format!("x{i}");
        pairs.push((
            doc(&id, &["Some text.", "More text.", "Even more."], i),
            doc(&id, &["A summary"], i + 3),
        ));
    }
    write_pairs(train, ENCODER, &pairs);
    write_pairs(&test, ENCODER, &test_pairs());
    // Pre-train on the prompts, fine-tune on the pairs.
    let prompts = train.join(PROMPT_DIR);
    let all: Vec<f32> = pairs
        .iter()
        .flat_map(|(p, _)| p.embeddings.clone())
        .collect();
    let normalizer = RobustNormalizer::fit(&all, DIM, ENCODER).unwrap();
    let norm_path = tmp.path().join("normalizer.safetensors");
    normalizer.save(&norm_path).unwrap();
    let pre = tmp.path().join("pre");
    let config = TrainConfig {
        model: ModelKind::Base,
        preset: "tiny".into(),
        steps: 2,
        max_concepts: 32,
        warmup_steps: 1,
        eval_every: 0,
        checkpoint_every: 0,
        valid_fraction: 0.0,
        normalizer_path: Some(norm_path.display().to_string()),
        ..TrainConfig::default()
    };
    lcm_workflows::train::train(
        &config,
        &prompts,
        &normalizer,
        vec![0.3; DIM],
        &pre,
        false,
        &mut |_| {},
    )
    .unwrap();
    let ft = tmp.path().join("ft");
    finetune(
        FinetuneRequest {
            from: &pre,
            pairs: train,
            out_dir: &ft,
            normalizer: None,
            eos: vec![0.3; DIM],
            config: TrainConfig {
                steps: 2,
                max_concepts: 32,
                warmup_steps: 1,
                eval_every: 0,
                checkpoint_every: 0,
                valid_fraction: 0.0,
                ..TrainConfig::default()
            },
            resume: false,
        },
        &mut |_| {},
    )
    .unwrap();

    let models = [ft.clone()];
    let report = evaluate_summarization(
        &request(&models, train, &test, 2),
        &mut |_| {},
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(report.systems.len(), 3);
    let model = &report.systems[0];
    assert_eq!(model.kind, "model");
    assert_eq!(model.pairs, 2);
    assert_eq!(model.stops.values().sum::<usize>(), 2);
    // The same metric code on the decoded outputs the report shows.
    let (mut f, mut ratio, mut n) = (0.0, 0.0, 0.0);
    for e in &report.examples {
        let output = &e.outputs[0].1;
        // Retrieval decodes into training summaries only.
        for sentence in [output.as_str()].iter().filter(|s| !s.is_empty()) {
            assert!(
                pairs
                    .iter()
                    .any(|(_, a)| sentence.contains(a.sentences[0].as_str())),
                "{sentence:?} is no training summary"
            );
        }
        f += rouge_l(&e.reference, output).fmeasure;
        ratio += length_ratio(&e.reference, output).unwrap();
        n += 1.0;
    }
    assert!((model.rouge_l - f / n).abs() < 1e-12);
    assert!((model.length_ratio.unwrap() - ratio / n).abs() < 1e-12);
}
