//! The two engines of the decoder trainer: from one seed the fused engine and candle
//! autograd train the same loss curve and held-out loss, a fused run resumes bit-identically,
//! and a run may resume on the other engine.

mod common;

use common::{SENTENCES, tiny_config, write_documents, write_store};
use lcm_decoder::train::DecoderEngine;
use lcm_decoder::{DecoderStepMetrics, MODEL_FILE, TrainEvent, train_decoder};

/// A store of 8 documents of two sentences, half of them held out at `valid_fraction` 0.5.
fn store_with_held_out(dir: &std::path::Path) -> std::path::PathBuf {
    let documents: Vec<(String, Vec<String>)> = (0..SENTENCES.len())
        .map(|d| {
            let sentences = vec![SENTENCES[d].to_string(), format!("Document {d} ends here.")];
            (format!("doc-{d}"), sentences)
        })
        .collect();
    let borrowed: Vec<(&str, Vec<&str>)> = documents
        .iter()
        .map(|(id, s)| (id.as_str(), s.iter().map(String::as_str).collect()))
        .collect();
    let documents: Vec<(&str, &[&str])> =
        borrowed.iter().map(|(id, s)| (*id, s.as_slice())).collect();
    write_documents(dir, &documents)
}

fn metrics(path: &std::path::Path) -> Vec<DecoderStepMetrics> {
    std::fs::read_to_string(path.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn engines_train_alike() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_held_out(dir.path());
    let mut config = tiny_config(40);
    config.batch_size = 3;
    config.label_smoothing = 0.1;
    config.weight_decay = 0.01;
    config.valid_fraction = 0.5;
    config.valid_sentences = 16;
    config.eval_every = 20;
    let mut curves = Vec::new();
    for engine in [DecoderEngine::Fused, DecoderEngine::Candle] {
        config.engine = engine;
        let run = dir.path().join(engine.name());
        let mut steps = Vec::new();
        train_decoder(&config, &store, &run, false, &mut |e| {
            if let TrainEvent::Step(m) = e {
                steps.push(m.clone());
            }
        })
        .unwrap();
        assert_eq!(steps.len(), 40);
        assert!(steps.iter().all(|m| m.engine == engine.name()));
        // metrics.jsonl holds the steps (serde_json's parser may miss the last ulp).
        for (written, m) in metrics(&run).iter().zip(&steps) {
            assert_eq!((written.step, &written.engine), (m.step, &m.engine));
            assert!((written.loss - m.loss).abs() <= 1e-12 * m.loss.abs());
        }
        curves.push(steps);
    }
    let (fused, candle) = (&curves[0], &curves[1]);
    let mut worst = 0.0f64;
    for (f, c) in fused.iter().zip(candle) {
        for (name, a, b) in [
            ("loss", f.loss, c.loss),
            ("nll", f.nll, c.nll),
            ("grad_norm", f.grad_norm, c.grad_norm),
        ] {
            let rel = (a - b).abs() / b.abs();
            assert!(rel <= 1e-3, "step {}: {name} {a} vs candle {b}", f.step);
            worst = worst.max(rel);
        }
        assert_eq!(f.tokens, c.tokens, "same batches");
        match (f.valid_loss, c.valid_loss) {
            (Some(a), Some(b)) => {
                let rel = (a - b).abs() / b;
                assert!(rel <= 1e-3, "step {}: valid loss {a} vs {b}", f.step);
            }
            (None, None) => {}
            other => panic!("step {}: validation on one engine only: {other:?}", f.step),
        }
    }
    assert!(fused.iter().filter(|m| m.valid_loss.is_some()).count() >= 2);
    // The runs learnt something: the curves are not trivially flat.
    assert!(fused[39].loss < 0.8 * fused[0].loss, "{fused:?}");
    eprintln!("worst relative difference over 40 steps: {worst:.2e}");
}

#[test]
fn fused_resume_is_bit_identical_and_runs_resume_across_engines() {
    let dir = tempfile::tempdir().unwrap();
    let store = write_store(dir.path(), &SENTENCES);
    let mut config = tiny_config(12);
    config.batch_size = 3;
    config.label_smoothing = 0.1;
    config.engine = DecoderEngine::Fused;
    let straight = dir.path().join("straight");
    train_decoder(&config, &store, &straight, false, &mut |_| {}).unwrap();

    let split = dir.path().join("split");
    let mut first = config.clone();
    first.stop_at = Some(5);
    train_decoder(&first, &store, &split, false, &mut |_| {}).unwrap();
    train_decoder(&config, &store, &split, true, &mut |_| {}).unwrap();
    let a = std::fs::read(straight.join(MODEL_FILE)).unwrap();
    let b = std::fs::read(split.join(MODEL_FILE)).unwrap();
    assert!(a == b, "resumed weights differ from an uninterrupted run");
    let (m_straight, m_split) = (metrics(&straight), metrics(&split));
    assert_eq!(m_split.len(), 12);
    for (x, y) in m_straight.iter().zip(&m_split) {
        assert_eq!(x.tokens, y.tokens, "step {}", x.step);
        assert_eq!(y.engine, "fused");
    }

    // Started on candle, continued on the fused engine: allowed, and each step names its
    // engine.
    let mixed = dir.path().join("mixed");
    let mut on_candle = first.clone();
    on_candle.engine = DecoderEngine::Candle;
    train_decoder(&on_candle, &store, &mixed, false, &mut |_| {}).unwrap();
    let rest = train_decoder(&config, &store, &mixed, true, &mut |_| {}).unwrap();
    assert_eq!((rest.start_step, rest.final_step), (5, 12));
    let engines: Vec<String> = metrics(&mixed).into_iter().map(|m| m.engine).collect();
    assert_eq!(engines[..5], ["candle"; 5]);
    assert_eq!(engines[5..], ["fused"; 7]);
}

#[test]
fn configurations_without_an_engine_read_as_fused() {
    let mut value = serde_json::to_value(tiny_config(3)).unwrap();
    value.as_object_mut().unwrap().remove("engine");
    let config: lcm_decoder::DecoderTrainConfig = serde_json::from_value(value).unwrap();
    assert_eq!(config.engine, DecoderEngine::Fused);
    assert_eq!(
        DecoderEngine::parse("candle").unwrap(),
        DecoderEngine::Candle
    );
    assert!(DecoderEngine::parse("gpu").is_err());
}
