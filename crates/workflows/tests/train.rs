//! The LCM trainer end to end on a tiny synthetic store: loss, cadence, exact resume,
//! refusals, time budget, then loading the model and evaluating it.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use lcm_concept::normalizer::RobustNormalizer;
use lcm_data::store::{ConceptDocument, StoreDType, StoreMeta, write_shard};
use lcm_model::builder::ModelKind;
use lcm_workflows::fused::Engine;
use lcm_workflows::train::{METRICS_FILE, StepMetrics, TrainConfig, train};
use rand::{Rng, SeedableRng};

const DIM: usize = 16;
const ENCODER: &str = "synthetic-encoder";

/// Documents following a smooth, learnable trajectory: concept `k` of document `i` is a
/// rotation of a per-document phase, so the next concept is predictable from the last.
fn write_store(dir: &Path) -> RobustNormalizer {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let docs: Vec<ConceptDocument> = (0..40)
        .map(|i| {
            let len = rng.random_range(4..=12);
            let phase: f32 = rng.random_range(0.0..std::f32::consts::TAU);
            let embeddings = (0..len)
                .flat_map(|k| {
                    (0..DIM).map(move |j| {
                        let a = phase + 0.4 * k as f32 + j as f32 * 0.7;
                        if j % 2 == 0 { a.sin() } else { a.cos() }
                    })
                })
                .collect();
            ConceptDocument {
                id: format!("doc-{i}"),
                source: "synthetic".into(),
                sentences: (0..len).map(|k| format!("sentence {k}")).collect(),
                embeddings,
            }
        })
        .collect();
    let meta = StoreMeta {
        encoder_id: ENCODER.into(),
        dim: DIM,
        dtype: StoreDType::F32,
        segmenter_version: "test".into(),
        tool_version: "test".into(),
    };
    std::fs::create_dir_all(dir).unwrap();
    write_shard(&dir.join("shard-00000.parquet"), &meta, &docs).unwrap();
    let all: Vec<f32> = docs.iter().flat_map(|d| d.embeddings.clone()).collect();
    RobustNormalizer::fit(&all, DIM, ENCODER).unwrap()
}

fn eos() -> Vec<f32> {
    vec![0.5; DIM]
}

fn config(model: ModelKind, steps: u64) -> TrainConfig {
    TrainConfig {
        model,
        preset: "tiny".into(),
        steps,
        max_concepts: 64,
        lr: 3e-3,
        warmup_steps: 2,
        final_lr_scale: 0.1,
        eval_every: 5,
        checkpoint_every: 3,
        keep_last: 2,
        seed: 11,
        valid_fraction: 0.1,
        ..TrainConfig::default()
    }
}

fn weights(out: &Path) -> Vec<(String, Vec<f32>)> {
    let dir = out.join("checkpoints");
    let latest = std::fs::read_to_string(dir.join("latest")).unwrap();
    let path = dir.join(latest.trim()).join("model.safetensors");
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let mut named: Vec<(String, Vec<f32>)> = tensors
        .into_iter()
        .map(|(k, t)| {
            let v = t
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (k, v)
        })
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
fn base_lcm_loss_decreases_and_metrics_have_one_line_per_step() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let normalizer = write_store(&store);
    let out = tmp.path().join("run");
    let mut seen = Vec::new();
    let summary = train(
        &config(ModelKind::Base, 30),
        &store,
        &normalizer,
        eos(),
        &out,
        false,
        &mut |m| seen.push(m.step),
    )
    .unwrap();
    assert_eq!(summary.final_step, 30);
    assert_eq!(seen, (1..=30).collect::<Vec<_>>());
    let metrics = read_metrics(&out);
    assert_eq!(metrics.len(), 30);
    assert_eq!(
        metrics.iter().map(|m| m.step).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<_>>()
    );
    assert!(metrics.iter().all(|m| m.loss.is_finite() && m.concepts > 0));
    let evals: Vec<u64> = metrics
        .iter()
        .filter(|m| m.valid_loss.is_some())
        .map(|m| m.step)
        .collect();
    assert_eq!(evals, [5, 10, 15, 20, 25, 30]);
    let first: f64 = metrics[..5].iter().map(|m| m.loss).sum::<f64>() / 5.0;
    let last: f64 = metrics[25..].iter().map(|m| m.loss).sum::<f64>() / 5.0;
    assert!(
        last < 0.7 * first,
        "loss did not decrease: {first} -> {last}"
    );
    let v0 = metrics[4].valid_loss.unwrap();
    let v1 = metrics[29].valid_loss.unwrap();
    assert!(v1 < v0, "validation loss did not decrease: {v0} -> {v1}");
}

fn straight_vs_resumed(model: ModelKind, engine: Engine) {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let normalizer = write_store(&store);

    let config = |model, steps| TrainConfig {
        engine,
        ..config(model, steps)
    };
    let straight = tmp.path().join("straight");
    train(
        &config(model, 12),
        &store,
        &normalizer,
        eos(),
        &straight,
        false,
        &mut |_| {},
    )
    .unwrap();

    let resumed = tmp.path().join("resumed");
    // Interrupted after step 6 of the same 12-step schedule, then resumed.
    let mut half = config(model, 12);
    half.stop_at = Some(6);
    train(
        &half,
        &store,
        &normalizer,
        eos(),
        &resumed,
        false,
        &mut |_| {},
    )
    .unwrap();
    let summary = train(
        &config(model, 12),
        &store,
        &normalizer,
        eos(),
        &resumed,
        true,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!((summary.start_step, summary.final_step), (6, 12));

    let a = read_metrics(&straight);
    let b = read_metrics(&resumed);
    let (wa, wb) = (weights(&straight), weights(&resumed));
    assert!(wa == wb, "{model:?}: weights differ");
    assert_eq!(b.len(), 12);
    let expected_engine = engine.name();
    assert!(a.iter().chain(&b).all(|m| m.engine == expected_engine));
    // Steps after the resume see the same batches and draws (losses identical).
    for (x, y) in a.iter().zip(&b).skip(6) {
        assert_eq!((x.step, x.loss.to_bits()), (y.step, y.loss.to_bits()));
    }
}

#[test]
fn resume_is_bit_identical_base() {
    straight_vs_resumed(ModelKind::Base, Engine::Fused);
}

#[test]
fn resume_is_bit_identical_base_on_candle() {
    straight_vs_resumed(ModelKind::Base, Engine::Candle);
}

#[test]
fn resume_is_bit_identical_two_tower() {
    straight_vs_resumed(ModelKind::TwoTower, Engine::Fused);
}

#[test]
fn resume_is_bit_identical_two_tower_on_candle() {
    straight_vs_resumed(ModelKind::TwoTower, Engine::Candle);
}

#[test]
fn resume_is_bit_identical_one_tower() {
    straight_vs_resumed(ModelKind::OneTower, Engine::Fused);
}

/// Largest |a − b| over max |b|.
fn relative_difference(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (&x, &y)| m.max(f64::from(x - y).abs()));
    diff / scale.max(1e-12)
}

#[test]
fn fused_and_candle_engines_train_the_same_base_lcm() {
    engines_train_alike(ModelKind::Base);
}

#[test]
fn fused_and_candle_engines_train_the_same_two_tower() {
    engines_train_alike(ModelKind::TwoTower);
}

#[test]
fn fused_and_candle_engines_train_the_same_one_tower() {
    engines_train_alike(ModelKind::OneTower);
}

/// 50 steps from one seed on each engine, and a run that switches engines halfway, give the
/// same loss curve, gradient norms, validation losses and final weights.
fn engines_train_alike(model: ModelKind) {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let normalizer = write_store(&store);
    let run = |engine, name: &str, stop_at, resume| {
        let out = tmp.path().join(name);
        let cfg = TrainConfig {
            engine,
            stop_at,
            ..config(model, 50)
        };
        train(&cfg, &store, &normalizer, eos(), &out, resume, &mut |_| {}).unwrap();
        out
    };
    let fused = run(Engine::Fused, "fused", None, false);
    let candle = run(Engine::Candle, "candle", None, false);
    // A run may switch engines on resume: both compute the same step.
    run(Engine::Fused, "switched", Some(25), false);
    let switched = run(Engine::Candle, "switched", None, true);

    let (mf, mc, ms) = (
        read_metrics(&fused),
        read_metrics(&candle),
        read_metrics(&switched),
    );
    assert_eq!((mf.len(), mc.len(), ms.len()), (50, 50, 50));
    assert!(mf.iter().all(|m| m.engine == "fused"));
    assert!(mc.iter().all(|m| m.engine == "candle"));
    assert_eq!(ms[24].engine, "fused");
    assert_eq!(ms[25].engine, "candle");
    let mut worst = 0.0f64;
    for ((f, c), s) in mf.iter().zip(&mc).zip(&ms) {
        assert_eq!(f.concepts, c.concepts, "step {}: other batches", f.step);
        for other in [c, s] {
            let rel = (f.loss - other.loss).abs() / other.loss.abs();
            assert!(
                rel < 1e-3,
                "{model:?} step {}: loss {} vs {}",
                f.step,
                f.loss,
                other.loss
            );
            worst = worst.max(rel);
            let g = (f.grad_norm - other.grad_norm).abs() / other.grad_norm;
            assert!(
                g < 1e-2,
                "{model:?} step {}: grad norm {} vs {}",
                f.step,
                f.grad_norm,
                other.grad_norm
            );
            match (f.valid_loss, other.valid_loss) {
                (Some(a), Some(b)) => assert!((a - b).abs() / b < 1e-3, "step {}", f.step),
                (a, b) => assert_eq!(a.is_some(), b.is_some()),
            }
        }
    }
    eprintln!("{model:?}: worst relative loss difference over 50 steps: {worst:.2e}");
    // The training did something (so agreeing curves are not flat lines).
    let mean = |m: &[StepMetrics]| m.iter().map(|m| m.loss).sum::<f64>() / m.len() as f64;
    let (first, last) = (mean(&mf[..10]), mean(&mf[40..]));
    assert!(last < 0.8 * first, "{model:?}: loss {first} -> {last}");
    for ((name, wf), (_, wc)) in weights(&fused).iter().zip(&weights(&candle)) {
        let rel = relative_difference(wf, wc);
        assert!(
            rel < 1e-3,
            "{model:?} {name}: fused and candle weights differ by {rel:.2e}"
        );
    }
}

#[test]
fn one_tower_trains_and_resume_refuses_another_encoder() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let normalizer = write_store(&store);
    let out = tmp.path().join("run");
    let s = train(
        &config(ModelKind::OneTower, 3),
        &store,
        &normalizer,
        eos(),
        &out,
        false,
        &mut |_| {},
    )
    .unwrap();
    assert!(s.last_loss.unwrap().is_finite());
    // A fresh run refuses to overwrite checkpoints.
    let err = train(
        &config(ModelKind::OneTower, 3),
        &store,
        &normalizer,
        eos(),
        &out,
        false,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("resume"), "{err}");

    // Same run directory, store from another encoder: refused.
    let other = tmp.path().join("other");
    let meta_dir = other.clone();
    std::fs::create_dir_all(&meta_dir).unwrap();
    let docs = vec![ConceptDocument {
        id: "x".into(),
        source: "s".into(),
        sentences: vec!["a".into(), "b".into()],
        embeddings: vec![0.1; 2 * DIM],
    }];
    let meta = StoreMeta {
        encoder_id: "another-encoder".into(),
        dim: DIM,
        dtype: StoreDType::F32,
        segmenter_version: "test".into(),
        tool_version: "test".into(),
    };
    write_shard(&other.join("shard-00000.parquet"), &meta, &docs).unwrap();
    let mut other_norm = normalizer.clone();
    other_norm.encoder_id = "another-encoder".into();
    let mut cfg = config(ModelKind::OneTower, 6);
    cfg.valid_fraction = 0.0;
    let err = train(&cfg, &other, &other_norm, eos(), &out, true, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("encoder"), "{err}");
}

#[test]
fn a_spent_time_budget_stops_with_a_validated_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let normalizer = write_store(&store);
    let out = tmp.path().join("run");
    let cfg = TrainConfig {
        max_seconds: Some(1e-9),
        ..config(ModelKind::Base, 30)
    };
    let summary = train(&cfg, &store, &normalizer, eos(), &out, false, &mut |_| {}).unwrap();
    assert_eq!(summary.final_step, 1);
    assert!(summary.last_valid_loss.is_some());
    assert!(
        summary
            .checkpoint
            .as_ref()
            .is_some_and(|c| c.ends_with("step-00000001"))
    );
    let bad = TrainConfig {
        max_seconds: Some(f64::NAN),
        ..config(ModelKind::Base, 30)
    };
    let err = train(&bad, &store, &normalizer, eos(), &out, true, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("max_seconds"), "{err}");
}

#[test]
fn a_trained_model_loads_detached_and_beats_the_mean_baseline() {
    use lcm_data::batch::{DatasetConfig, SplitDataset};
    use lcm_data::store::ConceptStore;
    use lcm_model::generate::Lcm;
    use lcm_workflows::evaluate::{EvalConfig, evaluate_model, training_mean};

    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let normalizer = write_store(&store);
    let out = tmp.path().join("run");
    let cfg = config(ModelKind::Base, 30);
    train(&cfg, &store, &normalizer, eos(), &out, false, &mut |_| {}).unwrap();

    let err = lcm_workflows::load_model(&out, Some("another-encoder")).unwrap_err();
    assert!(err.to_string().contains("another-encoder"), "{err}");
    let loaded = lcm_workflows::load_model(&out, Some(ENCODER)).unwrap();
    assert_eq!(loaded.state.step, 30);
    assert_eq!(loaded.preset, "tiny");
    let Lcm::Base(model) = &loaded.model else {
        panic!("expected a Base-LCM, got {}", loaded.model.kind_name())
    };
    // Weights must not be trainable variables: ops on those record a backward graph.
    assert!(!model.postnet.weight().is_variable());
    assert_eq!(
        loaded.train_config.as_ref().map(|c| c.valid_fraction),
        Some(cfg.valid_fraction)
    );

    let opened = ConceptStore::open(&store).unwrap();
    let split = SplitDataset::from_store(
        &opened,
        &normalizer,
        eos(),
        DatasetConfig {
            max_seq_len: 64,
            valid_fraction: 0.3,
        },
    )
    .unwrap();
    let mean = training_mean(&split.train, &normalizer).unwrap();
    let outcome = evaluate_model(
        &loaded.model,
        "base",
        &split.valid,
        &normalizer,
        &mean,
        &EvalConfig::default(),
    )
    .unwrap();
    let model_l2 = outcome.report.get("base").unwrap().l2;
    let mean_l2 = outcome.report.get("mean concept").unwrap().l2;
    assert!(
        model_l2 < mean_l2,
        "trained model {model_l2} vs mean baseline {mean_l2}\n{}",
        outcome.report
    );
    assert_eq!(outcome.concepts, split.valid.num_concepts());

    // Budgets that cannot mean what they say are refused, naming the flag's value.
    for (max_concepts, batch_concepts) in [(0, 4096), (1, 4096), (64, 0)] {
        let config = EvalConfig {
            max_concepts,
            batch_concepts,
            ..EvalConfig::default()
        };
        let err = evaluate_model(
            &loaded.model,
            "base",
            &split.valid,
            &normalizer,
            &mean,
            &config,
        )
        .err()
        .unwrap_or_else(|| panic!("max {max_concepts} / batch {batch_concepts} accepted"));
        let text = err.to_string();
        let named = if batch_concepts == 0 {
            "batch concepts 0".to_string()
        } else {
            format!("max concepts {max_concepts} evaluates nothing")
        };
        assert!(text.contains(&named), "{text}");
    }
}

#[test]
fn a_diverging_run_says_what_to_try() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let normalizer = write_store(&store);
    let out = tmp.path().join("run");
    for engine in [Engine::Fused, Engine::Candle] {
        let cfg = TrainConfig {
            lr: 1e30,
            warmup_steps: 0,
            engine,
            ..config(ModelKind::Base, 6)
        };
        let err = train(&cfg, &store, &normalizer, eos(), &out, false, &mut |_| {})
            .err()
            .unwrap_or_else(|| panic!("{engine:?}: a learning rate of 1e30 trained"));
        let text = err.to_string();
        assert!(
            text.contains("non-finite loss") && text.contains("lower --lr (this run: 1e30)"),
            "{engine:?}: {text}"
        );
        std::fs::remove_dir_all(&out).ok();
    }
}

#[test]
fn resuming_as_another_model_names_both() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let normalizer = write_store(&store);
    let out = tmp.path().join("run");
    let cfg = config(ModelKind::Base, 3);
    train(&cfg, &store, &normalizer, eos(), &out, false, &mut |_| {}).unwrap();
    let other = TrainConfig {
        model: ModelKind::TwoTower,
        ..config(ModelKind::Base, 6)
    };
    let err = train(&other, &store, &normalizer, eos(), &out, true, &mut |_| {}).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("was trained as base/tiny; you asked for two-tower/tiny"),
        "{text}"
    );
}

#[test]
fn a_prompt_that_fills_the_context_is_refused_with_the_reason() {
    use lcm_model::generate::DiffusionSampling;
    use lcm_workflows::generate::{StopRules, continue_prompt};
    use lcm_workflows::load::TrainedLcm;

    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let normalizer = write_store(&store);
    let out = tmp.path().join("run");
    train(
        &config(ModelKind::Base, 3),
        &store,
        &normalizer,
        eos(),
        &out,
        false,
        &mut |_| {},
    )
    .unwrap();
    let trained = TrainedLcm {
        loaded: lcm_workflows::load_model(&out, None).unwrap(),
        normalizer,
    };
    let context = trained.model().max_seq_len();
    let eos = eos();
    let prompt = |n: usize| {
        let values: Vec<f32> = (0..n * eos.len()).map(|i| (i % 7) as f32 * 0.1).collect();
        Tensor::from_vec(values, (n, eos.len()), &Device::Cpu).unwrap()
    };
    let run = |n: usize| {
        continue_prompt(
            &trained,
            &prompt(n),
            &eos,
            &StopRules::default(),
            &DiffusionSampling::default(),
            1,
        )
    };
    let Err(err) = run(context) else {
        panic!("a full context generated nothing but succeeded");
    };
    assert!(
        err.to_string().contains("fill the model's whole context"),
        "{err}"
    );
    // One sentence shorter leaves room for exactly one.
    let continuation = run(context - 1).unwrap();
    assert_eq!(continuation.concepts.len(), 1);
}

#[test]
fn a_run_finds_its_normaliser_from_anywhere_and_after_moving_with_its_store() {
    use lcm_workflows::load::TrainedLcm;

    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    let store = project.join("store");
    let normalizer = write_store(&store);
    normalizer
        .save(&store.join("normalizer.safetensors"))
        .unwrap();
    let out = project.join("runs/tt");
    // Recorded as typed in the project directory: relative to a directory that loading
    // never sees (the tests run in the crate's directory).
    let cfg = TrainConfig {
        normalizer_path: Some("store/normalizer.safetensors".into()),
        ..config(ModelKind::Base, 3)
    };
    train(&cfg, &store, &normalizer, eos(), &out, false, &mut |_| {}).unwrap();
    assert!(!Path::new("store/normalizer.safetensors").exists());

    let loaded = TrainedLcm::load(&out, None).unwrap();
    assert_eq!(loaded.normalizer, normalizer);
    let moved = tmp.path().join("moved");
    std::fs::rename(&project, &moved).unwrap();
    let loaded = TrainedLcm::load(&moved.join("runs/tt"), None).unwrap();
    assert_eq!(loaded.normalizer, normalizer);
}
