//! One site's federated round (`lcm fed-step`) on a tiny synthetic store: the equivalence
//! with local training (one site, outer learning rate 1, no momentum), the refusals of bad
//! global models and of sites in another space, and the resumable round.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lcm_concept::normalizer::RobustNormalizer;
use lcm_data::store::{ConceptDocument, StoreDType, StoreMeta, write_shard};
use lcm_model::builder::ModelKind;
use lcm_workflows::federated::{
    FedStepReport, FedStepRequest, GlobalModel, LEDGER_FILE, fed_step, init_global,
};
use lcm_workflows::train::{StepMetrics, TrainConfig, UpdateRule, train};
use rand::{Rng, SeedableRng};

const DIM: usize = 16;
const ENCODER: &str = "synthetic-encoder";

/// A document of `len` concepts on a smooth, learnable trajectory starting at `phase`.
fn trajectory_document(id: &str, len: usize, phase: f32) -> ConceptDocument {
    ConceptDocument {
        id: id.into(),
        source: "synthetic".into(),
        sentences: (0..len).map(|k| format!("sentence {k}")).collect(),
        embeddings: (0..len)
            .flat_map(|k| {
                (0..DIM).map(move |j| {
                    let a = phase + 0.4 * k as f32 + j as f32 * 0.7;
                    if j % 2 == 0 { a.sin() } else { a.cos() }
                })
            })
            .collect(),
    }
}

/// Documents on a smooth, learnable trajectory (as in `tests/train.rs`), encoded by
/// `encoder`, with the normaliser fitted on them.
fn write_store(dir: &Path, encoder: &str, seed: u64) -> RobustNormalizer {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let docs: Vec<ConceptDocument> = (0..40)
        .map(|i| {
            let len = rng.random_range(4..=12);
            let phase: f32 = rng.random_range(0.0..std::f32::consts::TAU);
            trajectory_document(&format!("doc-{i}"), len, phase)
        })
        .collect();
    let meta = StoreMeta {
        encoder_id: encoder.into(),
        dim: DIM,
        dtype: StoreDType::F32,
        segmenter_version: "test".into(),
        tool_version: "test".into(),
    };
    std::fs::create_dir_all(dir).unwrap();
    write_shard(&dir.join("shard-00000.parquet"), &meta, &docs).unwrap();
    let all: Vec<f32> = docs.iter().flat_map(|d| d.embeddings.clone()).collect();
    RobustNormalizer::fit(&all, DIM, encoder).unwrap()
}

fn eos() -> Vec<f32> {
    vec![0.5; DIM]
}

fn config(steps: u64) -> TrainConfig {
    TrainConfig {
        model: ModelKind::Base,
        preset: "tiny".into(),
        steps,
        max_concepts: 64,
        lr: 3e-3,
        warmup_steps: 2,
        final_lr_scale: 0.1,
        eval_every: 0,
        checkpoint_every: 0,
        keep_last: 2,
        seed: 11,
        valid_fraction: 0.1,
        ..TrainConfig::default()
    }
}

struct Site {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    store: PathBuf,
    normalizer: RobustNormalizer,
}

fn site() -> Site {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let store = root.join("store");
    let normalizer = write_store(&store, ENCODER, 7);
    Site {
        _tmp: tmp,
        root,
        store,
        normalizer,
    }
}

impl Site {
    fn step(&self, global: &Path, steps: u64, round: u64, out: &Path) -> FedStepReport {
        self.try_step(global, &self.store, steps, round, out)
            .unwrap()
    }

    fn try_step(
        &self,
        global: &Path,
        store: &Path,
        steps: u64,
        round: u64,
        out: &Path,
    ) -> lcm_workflows::Result<FedStepReport> {
        fed_step(&FedStepRequest {
            global,
            store,
            normalizer: &self.normalizer,
            normalizer_path: Path::new("normalizer.safetensors"),
            eos: eos(),
            state_dir: &self.root.join("state"),
            steps,
            round,
            out,
        })
    }
}

fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    GlobalModel::read(path)
        .unwrap()
        .tensors
        .into_iter()
        .map(|(k, (_, v))| (k, v))
        .collect()
}

fn checkpoint_tensors(run: &Path) -> BTreeMap<String, Vec<f32>> {
    let dir = run.join("checkpoints");
    let latest = std::fs::read_to_string(dir.join("latest")).unwrap();
    let path = dir.join(latest.trim()).join("model.safetensors");
    candle_core::safetensors::load(&path, &candle_core::Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

/// The outer step with learning rate 1 and no momentum, as the server computes it in f32:
/// `global − 1·(global − local)`.
fn fedavg_one_site(global: &Path, local: &Path, out: &Path) {
    let mut g = GlobalModel::read(global).unwrap();
    let l = tensors(local);
    for (name, (_, values)) in g.tensors.iter_mut() {
        for (v, x) in values.iter_mut().zip(&l[name]) {
            let pseudo_gradient = *v - *x;
            *v -= 1.0f32 * pseudo_gradient;
        }
    }
    g.write(out).unwrap();
}

fn max_relative_difference(a: &BTreeMap<String, Vec<f32>>, b: &BTreeMap<String, Vec<f32>>) -> f64 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (name, x) in a {
        for (p, q) in x.iter().zip(&b[name]) {
            diff = diff.max((*p as f64 - *q as f64).abs());
            norm = norm.max((*p as f64).abs());
        }
    }
    diff / norm.max(1e-12)
}

#[test]
fn one_site_with_outer_lr_1_and_no_momentum_equals_local_training() {
    let (rounds, h) = (4u64, 3u64);
    let site = site();
    let local_run = site.root.join("local");
    train(
        &config(rounds * h),
        &site.store,
        &site.normalizer,
        eos(),
        &local_run,
        false,
        &mut |_| {},
    )
    .unwrap();
    let local_metrics: Vec<StepMetrics> = std::fs::read_to_string(local_run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let mut global = site.root.join("global-0.safetensors");
    init_global(&config(rounds * h), &site.store, &site.normalizer, &global).unwrap();
    let mut examples = 0;
    for round in 1..=rounds {
        let local = site.root.join(format!("local-{round}.safetensors"));
        let report = site.step(&global, h, round, &local);
        assert_eq!(
            (report.from_step, report.to_step, report.replayed),
            ((round - 1) * h, round * h, false)
        );
        // The round's mean loss is the mean of the same steps of local training.
        let expected: f64 = local_metrics[((round - 1) * h) as usize..(round * h) as usize]
            .iter()
            .map(|m| m.loss)
            .sum::<f64>()
            / h as f64;
        assert!(
            (report.loss - expected).abs() <= 1e-4 * expected.abs(),
            "round {round}: loss {} vs local {expected}",
            report.loss
        );
        examples += report.examples;
        let next = site.root.join(format!("global-{round}.safetensors"));
        fedavg_one_site(&global, &local, &next);
        global = next;
    }
    let predictions: u64 = local_metrics.iter().map(|m| m.predictions as u64).sum();
    assert_eq!(examples, predictions);
    // One loss term per concept but each sequence's first.
    let concepts: u64 = local_metrics.iter().map(|m| m.concepts as u64).sum();
    assert!(
        predictions > 0 && predictions < concepts,
        "{predictions} of {concepts}"
    );
    let difference = max_relative_difference(&tensors(&global), &checkpoint_tensors(&local_run));
    assert!(
        difference < 1e-5,
        "federated and local weights differ by {difference:e}"
    );
    // Not trivially equal: the model moved away from its initialisation.
    let moved = max_relative_difference(
        &tensors(&site.root.join("global-0.safetensors")),
        &tensors(&global),
    );
    assert!(moved > 1e-3, "training changed nothing ({moved:e})");
}

/// Writes a copy of `global` with `edit` applied to its tensors.
fn edited(global: &Path, out: &Path, edit: impl FnOnce(&mut GlobalModel)) -> PathBuf {
    let mut model = GlobalModel::read(global).unwrap();
    edit(&mut model);
    model.write(out).unwrap();
    out.to_path_buf()
}

fn refusal(site: &Site, global: &Path, store: &Path) -> String {
    let out = site.root.join("refused.safetensors");
    let error = site
        .try_step(global, store, 2, 1, &out)
        .expect_err("the round should be refused");
    assert!(!out.exists(), "a refused round wrote {}", out.display());
    assert!(
        !site.root.join("state").join(LEDGER_FILE).exists(),
        "a refused round started"
    );
    error.to_string()
}

#[test]
fn bad_global_models_and_foreign_sites_are_refused_before_anything_is_written() {
    let site = site();
    let global = site.root.join("global.safetensors");
    init_global(&config(10), &site.store, &site.normalizer, &global).unwrap();
    let first = |m: &mut GlobalModel| m.tensors.keys().next().unwrap().clone();

    let nan = edited(&global, &site.root.join("nan.safetensors"), |m| {
        let name = first(m);
        m.tensors.get_mut(&name).unwrap().1[0] = f32::NAN;
    });
    let message = refusal(&site, &nan, &site.store);
    assert!(message.contains("non-finite"), "{message}");

    let misshapen = edited(&global, &site.root.join("shape.safetensors"), |m| {
        let name = first(m);
        let (shape, values) = m.tensors.get_mut(&name).unwrap();
        values.push(0.0);
        *shape = vec![values.len()];
    });
    let message = refusal(&site, &misshapen, &site.store);
    assert!(message.contains("has shape"), "{message}");

    let missing = edited(&global, &site.root.join("missing.safetensors"), |m| {
        let name = first(m);
        m.tensors.remove(&name);
    });
    let message = refusal(&site, &missing, &site.store);
    assert!(message.contains("is missing"), "{message}");

    let other_normalizer = edited(&global, &site.root.join("norm.safetensors"), |m| {
        m.space.normalizer_hash = "fnv1a64:0000000000000000".into();
    });
    let message = refusal(&site, &other_normalizer, &site.store);
    assert!(message.contains("normaliser"), "{message}");

    // A site whose store was encoded by another encoder.
    let foreign_store = site.root.join("foreign");
    write_store(&foreign_store, "another-encoder@0123456789ab", 7);
    let message = refusal(&site, &global, &foreign_store);
    assert!(
        message.contains("another-encoder@0123456789ab") && message.contains(ENCODER),
        "{message}"
    );

    // A file that is not a global model at all.
    let plain = site.root.join("plain.safetensors");
    std::fs::write(&plain, b"not a model").unwrap();
    let message = refusal(&site, &plain, &site.store);
    assert!(message.contains("not a safetensors file"), "{message}");

    // The untouched global model is accepted.
    let out = site.root.join("ok.safetensors");
    site.step(&global, 2, 1, &out);
    assert!(out.exists());
}

#[test]
fn an_interrupted_round_reruns_or_replays_to_the_same_weights() {
    let site = site();
    let global = site.root.join("global.safetensors");
    init_global(&config(10), &site.store, &site.normalizer, &global).unwrap();
    let out1 = site.root.join("local-1.safetensors");
    site.step(&global, 2, 1, &out1);
    let out2 = site.root.join("local-2.safetensors");
    let straight = site.step(&out1, 2, 2, &out2);
    // Compared by tensors: the metadata's order in the file is not fixed.
    let straight_weights = tensors(&out2);
    assert_eq!((straight.from_step, straight.to_step), (2, 4));

    // Killed after the round's checkpoint, before its output reached the server: the
    // rerun replays the finished round without training again.
    std::fs::remove_file(&out2).unwrap();
    let replayed = site.step(&out1, 2, 2, &out2);
    assert!(replayed.replayed);
    assert_eq!(
        (replayed.from_step, replayed.to_step, replayed.examples),
        (2, 4, straight.examples)
    );
    assert!(
        tensors(&out2) == straight_weights,
        "the rerun changed the weights"
    );

    // Killed before the round's checkpoint: the rerun trains from the previous one and
    // reaches bit-identical weights.
    let checkpoints = site.root.join("state").join("checkpoints");
    std::fs::remove_dir_all(checkpoints.join("step-00000004")).unwrap();
    std::fs::remove_file(&out2).unwrap();
    let rerun = site.step(&out1, 2, 2, &out2);
    assert!(!rerun.replayed);
    assert_eq!((rerun.from_step, rerun.to_step), (2, 4));
    assert!(
        tensors(&out2) == straight_weights,
        "the rerun changed the weights"
    );

    // The same global sent again in a later round is trained on, not replayed.
    let out3 = site.root.join("local-3.safetensors");
    let again = site.step(&out1, 2, 3, &out3);
    assert!(!again.replayed);
    assert_eq!((again.from_step, again.to_step), (4, 6));
    assert!(
        tensors(&out3) != straight_weights,
        "a new round trained nothing"
    );
}

/// A site holding exactly `docs` (id, length, phase), each a [`trajectory_document`], so
/// that a batch of the whole store is one step.
fn write_documents(dir: &Path, docs: &[(&str, usize, f32)]) {
    let documents: Vec<ConceptDocument> = docs
        .iter()
        .map(|&(id, len, phase)| trajectory_document(id, len, phase))
        .collect();
    let meta = StoreMeta {
        encoder_id: ENCODER.into(),
        dim: DIM,
        dtype: StoreDType::F32,
        segmenter_version: "test".into(),
        tool_version: "test".into(),
    };
    std::fs::create_dir_all(dir).unwrap();
    write_shard(&dir.join("shard-00000.parquet"), &meta, &documents).unwrap();
}

#[test]
fn fedavg_of_two_sites_taking_one_sgd_step_each_is_synchronous_sgd_on_their_union() {
    // Each site's whole store is one batch, the union's is both: one FedAvg round of H = 1
    // is then exactly one data-parallel SGD step on the union, if updates are weighted by
    // their loss terms (sites of unequal length make the weighting matter).
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (a, b) = (("site-a/doc", 5, 0.3), ("site-b/doc", 11, 2.1));
    write_documents(&root.join("a"), &[a]);
    write_documents(&root.join("b"), &[b]);
    write_documents(&root.join("union"), &[a, b]);
    let normalizer = write_store(&root.join("fit"), ENCODER, 7);
    let rounds = 4u64;
    let config = TrainConfig {
        max_concepts: 256,
        warmup_steps: 0,
        final_lr_scale: 1.0,
        lr: 0.05,
        clip: 1e9,
        valid_fraction: 0.0,
        optimizer: UpdateRule::Sgd,
        ..config(rounds)
    };
    let union_run = root.join("union-run");
    train(
        &config,
        &root.join("union"),
        &normalizer,
        eos(),
        &union_run,
        false,
        &mut |_| {},
    )
    .unwrap();

    let mut global = root.join("global-0.safetensors");
    init_global(&config, &root.join("a"), &normalizer, &global).unwrap();
    for round in 1..=rounds {
        let mut locals = Vec::new();
        for name in ["a", "b"] {
            let local = root.join(format!("local-{name}-{round}.safetensors"));
            let report = fed_step(&FedStepRequest {
                global: &global,
                store: &root.join(name),
                normalizer: &normalizer,
                normalizer_path: Path::new("normalizer.safetensors"),
                eos: eos(),
                state_dir: &root.join(format!("state-{name}")),
                steps: 1,
                round,
                out: &local,
            })
            .unwrap();
            locals.push((tensors(&local), report.examples as f64));
        }
        // The documents plus their end-of-text concepts, less each sequence's first.
        assert_eq!(
            locals.iter().map(|(_, e)| *e).collect::<Vec<_>>(),
            [5.0, 11.0]
        );
        let total: f64 = locals.iter().map(|(_, e)| e).sum();
        let mut next = GlobalModel::read(&global).unwrap();
        for (name, (_, values)) in next.tensors.iter_mut() {
            for (i, v) in values.iter_mut().enumerate() {
                *v = locals
                    .iter()
                    .map(|(t, e)| t[name][i] as f64 * e / total)
                    .sum::<f64>() as f32;
            }
        }
        global = root.join(format!("global-{round}.safetensors"));
        next.write(&global).unwrap();
    }
    let difference = max_relative_difference(&tensors(&global), &checkpoint_tensors(&union_run));
    assert!(
        difference < 1e-5,
        "FedAvg and synchronous SGD differ by {difference:e}"
    );
    // Weighted by concepts (6 and 12) instead of loss terms, the two differ by 2.2e-2; with
    // AdamW instead of SGD, by 0.24 (both checked when this test was written).
    let moved = max_relative_difference(
        &tensors(&root.join("global-0.safetensors")),
        &tensors(&global),
    );
    assert!(moved > 1e-3, "training changed nothing ({moved:e})");
}
