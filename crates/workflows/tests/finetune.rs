//! Instruction fine-tuning: the prompt mask in both engines (loss equal to a hand sum over
//! answer positions, fused equal to candle), then `finetune` end to end on a tiny pair
//! store — every model kind on both engines, exact resume, the refusals, loading the result.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_concept::normalizer::RobustNormalizer;
use lcm_data::pairs::{ANSWER_DIR, PROMPT_DIR};
use lcm_data::store::{ConceptDocument, StoreDType, StoreMeta, write_shard};
use lcm_model::builder::{ModelConfig, ModelKind, build_model};
use lcm_model::generate::Lcm;
use lcm_train::new_rng;
use lcm_train::run::seeded_init;
use lcm_workflows::finetune::{FinetuneRequest, finetune};
use lcm_workflows::fused::{Engine, FusedLcm};
use lcm_workflows::train::{METRICS_FILE, StepMetrics, TrainConfig, train};
use lcm_workflows::{TrainedLcm, WorkflowError};

const DIM: usize = 16;
const ENCODER: &str = "synthetic-encoder";

/// `[B, T]` loss mask: 1 on positions `first[b]..lengths[b]`.
fn loss_mask(lengths: &[usize], first: &[usize], t: usize) -> Tensor {
    let data: Vec<f32> = lengths
        .iter()
        .zip(first)
        .flat_map(|(&len, &f)| (0..t).map(move |p| if p >= f && p < len { 1.0 } else { 0.0 }))
        .collect();
    Tensor::from_vec(data, (lengths.len(), t), &Device::Cpu).unwrap()
}

struct Case {
    net: Lcm,
    fused: FusedLcm,
    x: Tensor,
    lengths: Vec<usize>,
    first: Vec<usize>,
}

fn case(kind: ModelKind) -> Case {
    let config = ModelConfig::resolve(kind, "tiny", DIM).unwrap();
    let varmap = VarMap::new();
    let net = build_model(
        &config,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    seeded_init(&varmap, 5).unwrap();
    let fused = FusedLcm::with_replicas(&net, &config, &varmap, 2)
        .unwrap()
        .unwrap();
    let (b, t) = (4, 9);
    let lengths = vec![9, 6, 9, 4];
    let first = vec![3, 2, 0, 1];
    let mut rng = new_rng(3);
    let mut x: Vec<f32> = lcm_util::random::standard_normals(&mut rng, b * t * DIM)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    for (bi, &len) in lengths.iter().enumerate() {
        x[(bi * t + len) * DIM..(bi + 1) * t * DIM].fill(0.0);
    }
    let x = Tensor::from_vec(x, (b, t, DIM), &Device::Cpu).unwrap();
    Case {
        net,
        fused,
        x,
        lengths,
        first,
    }
}

#[test]
fn base_lcm_masked_loss_is_the_sum_over_answer_positions() {
    let mut c = case(ModelKind::Base);
    let Lcm::Base(model) = &c.net else {
        unreachable!()
    };
    // By hand: prediction p−1 → target p, only for targets at or after the first target.
    let pred = model.forward(&c.x, None).unwrap();
    let pred = pred.to_vec3::<f32>().unwrap();
    let x = c.x.to_vec3::<f32>().unwrap();
    let (mut sum, mut count) = (0.0f64, 0usize);
    let mut all = 0.0f64;
    for (bi, (&len, &first)) in c.lengths.iter().zip(&c.first).enumerate() {
        for p in 1..len {
            let e: f64 = (0..DIM)
                .map(|j| f64::from(pred[bi][p - 1][j] - x[bi][p][j]).powi(2))
                .sum();
            all += e;
            if p >= first {
                sum += e;
                count += 1;
            }
        }
    }
    assert!(
        all > sum * 1.05,
        "the prompt positions carry loss: {all} vs {sum}"
    );
    let fused = c
        .fused
        .masked_loss(&c.x, &c.lengths, &c.first, 0.0, &mut new_rng(1))
        .unwrap();
    assert_eq!(fused.count as usize, count);
    assert!(
        (fused.sum - sum).abs() <= 1e-4 * sum,
        "{} vs {sum}",
        fused.sum
    );
    let mask = loss_mask(&c.lengths, &c.first, 9);
    let candle = model.loss(&c.x, Some(&mask)).unwrap();
    assert_eq!(candle.count as usize, count);
    let candle_sum = candle.sum.to_scalar::<f32>().unwrap() as f64;
    assert!(
        (candle_sum - sum).abs() <= 1e-4 * sum,
        "{candle_sum} vs {sum}"
    );
}

/// The fused engine's masked loss equals the candle model's loss under the batch's loss
/// mask, with the same diffusion draws.
fn fused_matches_candle(kind: ModelKind) {
    let mut c = case(kind);
    let mask = loss_mask(&c.lengths, &c.first, 9);
    let fused = c
        .fused
        .masked_loss(&c.x, &c.lengths, &c.first, 0.3, &mut new_rng(8))
        .unwrap();
    let mut rng = new_rng(8);
    let candle = match &c.net {
        Lcm::Base(m) => m.loss(&c.x, Some(&mask)).unwrap(),
        Lcm::TwoTower(m, s) => m.loss_sampled(&c.x, Some(&mask), s, 0.3, &mut rng).unwrap(),
        Lcm::OneTower(m, s) => m.loss_sampled(&c.x, Some(&mask), s, 0.3, &mut rng).unwrap(),
    };
    let candle_sum = candle.sum.to_scalar::<f32>().unwrap() as f64;
    assert_eq!(fused.count, candle.count, "{kind:?}");
    assert!(
        (fused.sum - candle_sum).abs() <= 1e-4 * candle_sum.abs(),
        "{kind:?}: fused {} vs candle {candle_sum}",
        fused.sum
    );
    // Unmasked, the same batch counts more targets.
    let unmasked = c
        .fused
        .loss(&c.x, &c.lengths, 0.3, &mut new_rng(8))
        .unwrap();
    assert!(unmasked.count > fused.count, "{kind:?}");
}

#[test]
fn fused_masked_loss_matches_candle_for_every_kind() {
    for kind in [ModelKind::Base, ModelKind::TwoTower, ModelKind::OneTower] {
        fused_matches_candle(kind);
    }
}

/// Concept `k` of trajectory `i`: a rotation of a per-trajectory phase (predictable).
fn concept(i: usize, k: usize) -> Vec<f32> {
    let phase = i as f32 * 0.9;
    (0..DIM)
        .map(|j| {
            let a = phase + 0.4 * k as f32 + j as f32 * 0.7;
            if j % 2 == 0 { a.sin() } else { a.cos() }
        })
        .collect()
}

fn doc(id: String, i: usize, ks: std::ops::Range<usize>) -> ConceptDocument {
    ConceptDocument {
        id,
        source: "synthetic".into(),
        sentences: ks.clone().map(|k| format!("sentence {i}.{k}")).collect(),
        embeddings: ks.flat_map(|k| concept(i, k)).collect(),
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

/// A pre-training store of whole trajectories (with its normaliser saved beside it) and a
/// pair store: prompt = a trajectory's first concepts, answer = the next 2 or 3.
fn write_data(root: &Path, pairs_encoder: &str) -> (PathBuf, PathBuf, RobustNormalizer) {
    let store = root.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let docs: Vec<ConceptDocument> = (0..30).map(|i| doc(format!("doc-{i}"), i, 0..8)).collect();
    write_shard(&store.join("shard-00000.parquet"), &meta(ENCODER), &docs).unwrap();
    let all: Vec<f32> = docs.iter().flat_map(|d| d.embeddings.clone()).collect();
    let normalizer = RobustNormalizer::fit(&all, DIM, ENCODER).unwrap();
    normalizer
        .save(&store.join("normalizer.safetensors"))
        .unwrap();

    let pairs = root.join("pairs");
    let (mut prompts, mut answers) = (Vec::new(), Vec::new());
    for i in 0..24 {
        let p = 2 + i % 4;
        let a = 2 + i % 2;
        prompts.push(doc(format!("pair-{i}"), 100 + i, 0..p));
        answers.push(doc(format!("pair-{i}"), 100 + i, p..p + a));
    }
    // One prompt without an answer.
    prompts.push(doc("orphan".into(), 7, 0..3));
    for (dir, docs) in [(PROMPT_DIR, &prompts), (ANSWER_DIR, &answers)] {
        std::fs::create_dir_all(pairs.join(dir)).unwrap();
        write_shard(
            &pairs.join(dir).join("shard-00000.parquet"),
            &meta(pairs_encoder),
            docs,
        )
        .unwrap();
    }
    (store, pairs, normalizer)
}

fn pretrain_config(model: ModelKind) -> TrainConfig {
    TrainConfig {
        model,
        preset: "tiny".into(),
        steps: 4,
        max_concepts: 64,
        lr: 3e-3,
        warmup_steps: 1,
        eval_every: 0,
        checkpoint_every: 0,
        keep_last: 1,
        seed: 2,
        valid_fraction: 0.0,
        ..TrainConfig::default()
    }
}

fn pretrain(root: &Path, store: &Path, normalizer: &RobustNormalizer, model: ModelKind) -> PathBuf {
    let run = root.join(format!("pre-{}", model.name()));
    let config = TrainConfig {
        normalizer_path: Some(store.join("normalizer.safetensors").display().to_string()),
        ..pretrain_config(model)
    };
    train(
        &config,
        store,
        normalizer,
        vec![0.5; DIM],
        &run,
        false,
        &mut |_| {},
    )
    .unwrap();
    run
}

fn ft_config(steps: u64, engine: Engine) -> TrainConfig {
    TrainConfig {
        steps,
        max_concepts: 48,
        lr: 1e-3,
        warmup_steps: 1,
        eval_every: 3,
        checkpoint_every: 3,
        keep_last: 0,
        seed: 9,
        valid_fraction: 0.2,
        engine,
        // Taken from the pre-trained run instead:
        model: ModelKind::OneTower,
        preset: "small".into(),
        ..TrainConfig::default()
    }
}

fn run_finetune(
    from: &Path,
    pairs: &Path,
    out: &Path,
    config: TrainConfig,
    resume: bool,
) -> lcm_workflows::Result<lcm_workflows::finetune::FinetuneSummary> {
    finetune(
        FinetuneRequest {
            from,
            pairs,
            out_dir: out,
            normalizer: None,
            eos: vec![0.5; DIM],
            config,
            resume,
        },
        &mut |_| {},
    )
}

/// The weights of a run's newest checkpoint.
fn checkpoint_weights(run: &Path) -> Vec<(String, Vec<f32>)> {
    let dir = run.join("checkpoints");
    let latest = std::fs::read_to_string(dir.join("latest")).unwrap();
    let path = dir.join(latest.trim()).join("model.safetensors");
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let mut named: Vec<(String, Vec<f32>)> = tensors
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

fn read_metrics(out: &Path) -> Vec<StepMetrics> {
    std::fs::read_to_string(out.join(METRICS_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn finetune_runs_for_every_kind_on_both_engines_and_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, pairs, normalizer) = write_data(tmp.path(), ENCODER);
    for model in [ModelKind::Base, ModelKind::TwoTower, ModelKind::OneTower] {
        let pre = pretrain(tmp.path(), &store, &normalizer, model);
        let pre_weights = checkpoint_weights(&pre);
        for engine in [Engine::Fused, Engine::Candle] {
            let out = tmp
                .path()
                .join(format!("ft-{}-{}", model.name(), engine.name()));
            let summary = run_finetune(&pre, &pairs, &out, ft_config(3, engine), false)
                .unwrap_or_else(|e| panic!("{model:?} {engine:?}: {e}"));
            assert_eq!(summary.train.start_step, 0);
            assert_eq!(summary.train.final_step, 3);
            assert_eq!(summary.from_step, 4);
            assert_eq!(summary.pairs.pairs, 24);
            assert_eq!(summary.pairs.prompts_without_answer, 1);
            let metrics = read_metrics(&out);
            assert_eq!(metrics.len(), 3);
            for m in &metrics {
                assert!(m.loss.is_finite(), "{model:?} {engine:?}");
                // Only answer concepts and the EOS are predicted: fewer predictions than
                // concepts (Base-LCM would otherwise predict all but one per sequence).
                assert!(m.predictions < m.concepts, "{model:?} {engine:?}: {m:?}");
            }
            assert!(metrics[2].valid_loss.is_some());
            // The run loads as any trained model, of the pre-trained kind and preset.
            let loaded = TrainedLcm::load(&out, None).unwrap();
            assert_eq!(loaded.loaded.kind, model);
            assert_eq!(loaded.loaded.preset, "tiny");
            let recorded = loaded.loaded.train_config.unwrap();
            assert_eq!(recorded.finetune.unwrap().step, 4);
            // It started from the pre-trained weights and moved away from them.
            let ft_weights = checkpoint_weights(&out);
            assert_eq!(ft_weights.len(), pre_weights.len());
            let moved: f32 = ft_weights
                .iter()
                .zip(&pre_weights)
                .flat_map(|(a, b)| a.1.iter().zip(&b.1).map(|(x, y)| (x - y).abs()))
                .fold(0.0, f32::max);
            assert!(
                moved > 0.0 && moved < 0.05,
                "{model:?} {engine:?}: moved {moved}"
            );
        }
    }
}

#[test]
fn finetune_resumes_exactly_and_refuses_mismatches() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, pairs, normalizer) = write_data(tmp.path(), ENCODER);
    let pre = pretrain(tmp.path(), &store, &normalizer, ModelKind::Base);

    let straight = tmp.path().join("straight");
    run_finetune(&pre, &pairs, &straight, ft_config(6, Engine::Fused), false).unwrap();
    let split = tmp.path().join("split");
    let first = TrainConfig {
        stop_at: Some(3),
        ..ft_config(6, Engine::Fused)
    };
    run_finetune(&pre, &pairs, &split, first, false).unwrap();
    let resumed = run_finetune(&pre, &pairs, &split, ft_config(6, Engine::Fused), true).unwrap();
    assert_eq!(resumed.train.start_step, 3);
    assert_eq!(resumed.train.final_step, 6);
    assert_eq!(
        checkpoint_weights(&straight),
        checkpoint_weights(&split),
        "a resumed fine-tuning differs from a straight one"
    );
    let (a, b) = (read_metrics(&straight), read_metrics(&split));
    assert_eq!(
        a.iter().map(|m| m.loss).collect::<Vec<_>>(),
        b.iter().map(|m| m.loss).collect::<Vec<_>>()
    );

    // A fresh run into a directory with checkpoints is refused (the loop's policy).
    assert!(run_finetune(&pre, &pairs, &straight, ft_config(6, Engine::Fused), false).is_err());
    // Resuming from another pre-trained checkpoint is refused.
    let other = tmp.path().join("other-pre");
    let config = TrainConfig {
        seed: 77,
        normalizer_path: Some(store.join("normalizer.safetensors").display().to_string()),
        ..pretrain_config(ModelKind::Base)
    };
    train(
        &config,
        &store,
        &normalizer,
        vec![0.5; DIM],
        &other,
        false,
        &mut |_| {},
    )
    .unwrap();
    let err = run_finetune(&other, &pairs, &split, ft_config(9, Engine::Fused), true)
        .expect_err("resumed from another checkpoint");
    assert!(err.to_string().contains("finetune"), "{err}");

    // Pairs in another embedding space are refused, naming the store.
    let foreign = tempfile::tempdir().unwrap();
    let (_, foreign_pairs, _) = write_data(foreign.path(), "other-encoder");
    let err = run_finetune(
        &pre,
        &foreign_pairs,
        &tmp.path().join("x"),
        ft_config(2, Engine::Fused),
        false,
    )
    .expect_err("foreign pairs");
    assert!(matches!(err, WorkflowError::Refused(_)), "{err}");
    assert!(err.to_string().contains("other-encoder"), "{err}");
    // A directory that is not a pair store says how to make one.
    let err = run_finetune(
        &pre,
        &store,
        &tmp.path().join("y"),
        ft_config(2, Engine::Fused),
        false,
    )
    .expect_err("not a pair store");
    assert!(err.to_string().contains("--text-field prompt"), "{err}");
}
