//! The one training loop (`lcm_train::run`) on a toy trainer: least squares on seeded data,
//! with random mini-batches drawn from the run's RNG and a data position, so that every part
//! of the resume policy is visible in the weights.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarBuilder, VarMap};
use lcm_train::checkpoint::DataPosition;
use lcm_train::run::{
    Cadence, Identity, RunSpec, Step, Trainer, run, seeded_init, settings_without_budget,
};
use lcm_train::{AdamW, AdamWConfig, LrSchedule, TrainError, default_decay_filter};
use rand::Rng;
use serde::Serialize;

const DIM: usize = 3;

#[derive(Clone, Serialize)]
struct ToyConfig {
    lr: f64,
    batch: usize,
    steps: u64,
    stop_at: Option<u64>,
    eval_every: u64,
}

#[derive(Serialize)]
struct ToyMetrics {
    step: u64,
    loss: f64,
    lr: f64,
    valid_loss: Option<f64>,
}

struct Toy {
    w: candle_core::Var,
    batch: usize,
    position: DataPosition,
    validations: usize,
}

/// `y = x · [1, −2, 0.5]` for `x` drawn from the step's RNG.
fn batch(rng: &mut impl Rng, n: usize) -> (Tensor, Tensor) {
    let x: Vec<f32> = (0..n * DIM)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    let y: Vec<f32> = x
        .chunks(DIM)
        .map(|r| r[0] - 2.0 * r[1] + 0.5 * r[2])
        .collect();
    (
        Tensor::from_vec(x, (n, DIM), &Device::Cpu).unwrap(),
        Tensor::from_vec(y, (n, 1), &Device::Cpu).unwrap(),
    )
}

impl Trainer for Toy {
    type Metrics = ToyMetrics;
    type Error = TrainError;

    fn step(&mut self, step: Step<'_>) -> Result<Option<ToyMetrics>, TrainError> {
        self.position.batch_index += 1;
        let (x, y) = batch(step.rng, self.batch);
        let loss = (x.matmul(self.w.as_tensor())? - y)?.sqr()?.mean_all()?;
        let grads = loss.backward()?;
        step.opt.step(&grads)?;
        Ok(Some(ToyMetrics {
            step: step.index + 1,
            loss: f64::from(loss.to_scalar::<f32>()?),
            lr: step.lr,
            valid_loss: None,
        }))
    }

    fn validate(&mut self, metrics: &mut ToyMetrics) -> Result<(), TrainError> {
        self.validations += 1;
        metrics.valid_loss = Some(metrics.loss);
        Ok(())
    }

    fn data_position(&self) -> DataPosition {
        self.position
    }

    fn seek(&mut self, position: DataPosition) -> Result<(), TrainError> {
        self.position = position;
        Ok(())
    }
}

#[derive(Debug)]
struct Outcome {
    weights: Vec<f32>,
    final_step: u64,
    validations: usize,
}

fn train(dir: &Path, config: &ToyConfig, resume: bool) -> Result<Outcome, TrainError> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    vb.get_with_hints(
        (DIM, 1),
        "w",
        Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        },
    )?;
    seeded_init(&varmap, 5)?;
    let w = varmap.all_vars().pop().expect("one variable");
    let mut opt = AdamW::from_varmap(
        &varmap,
        AdamWConfig {
            lr: config.lr,
            ..AdamWConfig::default()
        },
        default_decay_filter,
    )?;
    let mut toy = Toy {
        w,
        batch: config.batch,
        position: DataPosition::default(),
        validations: 0,
    };
    let spec = RunSpec {
        dir,
        resume,
        seed: 9,
        cadence: Cadence {
            steps: config.steps,
            stop_at: config.stop_at,
            max_seconds: None,
            eval_every: config.eval_every,
            checkpoint_every: 2,
            keep_last: 2,
        },
        schedule: LrSchedule::Constant {
            lr: config.lr,
            start_lr: config.lr,
            warmup_steps: 0,
        },
        identity: Identity {
            space_id: "toy-space".into(),
            model_config: serde_json::json!({ "dim": DIM }),
            settings: settings_without_budget(config, &[])?,
            config: serde_json::to_value(config).expect("config"),
            normalizer: None,
        },
        started: Instant::now(),
        plot_title: "toy".into(),
    };
    let summary = run(spec, &varmap, &mut opt, &mut toy, &mut |_| {})?;
    let weights = toy.w.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    Ok(Outcome {
        weights,
        final_step: summary.final_step,
        validations: toy.validations,
    })
}

fn config(steps: u64, stop_at: Option<u64>) -> ToyConfig {
    ToyConfig {
        lr: 0.05,
        batch: 8,
        steps,
        stop_at,
        eval_every: 3,
    }
}

fn metrics_steps(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn interrupted_and_resumed_equals_straight_and_logs_each_step_once() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = train(&tmp.path().join("a"), &config(7, None), false).unwrap();
    assert_eq!(straight.final_step, 7);
    // Validation at steps 3, 6 and the last one.
    assert_eq!(straight.validations, 3);

    let dir = tmp.path().join("b");
    let first = train(&dir, &config(7, Some(4)), false).unwrap();
    assert_eq!(first.final_step, 4);
    assert_ne!(first.weights, straight.weights);
    let resumed = train(&dir, &config(7, None), true).unwrap();
    assert_eq!(resumed.final_step, 7);
    assert_eq!(
        resumed.weights, straight.weights,
        "bit-identical after resume"
    );
    assert_eq!(metrics_steps(&dir), (1..=7).collect::<Vec<_>>());
    assert!(dir.join("config.json").is_file());
    assert!(dir.join("loss.png").is_file());
    // keep_last = 2 of the checkpoints at 2, 4, 6 and 7.
    let mut kept: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("step-"))
        .collect();
    kept.sort();
    assert_eq!(kept, ["step-00000006", "step-00000007"]);
}

#[test]
fn the_resume_policy_refuses_what_it_must_and_names_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");

    let err = train(&dir, &config(4, None), true).unwrap_err().to_string();
    assert!(
        err.contains("nothing to resume") && err.contains("without --resume"),
        "{err}"
    );

    train(&dir, &config(4, Some(2)), false).unwrap();
    let err = train(&dir, &config(4, None), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("already holds checkpoints") && err.contains("--resume"),
        "{err}"
    );

    let mut other = config(4, None);
    other.batch = 16;
    let err = train(&dir, &other, true).unwrap_err().to_string();
    assert!(
        err.contains("batch: 8 → 16"),
        "the refusal names the setting: {err}"
    );

    // Budgets may change: a longer schedule resumes.
    let longer = train(&dir, &config(6, None), true).unwrap();
    assert_eq!(longer.final_step, 6);
    assert_eq!(metrics_steps(&dir), (1..=6).collect::<Vec<_>>());
}

/// Every scalar event of the run's event files, as (step, tag, value), in file order.
fn event_scalars(dir: &Path) -> Vec<(i64, String, f32)> {
    lcm_train::tensorboard::event_files(dir)
        .unwrap()
        .iter()
        .flat_map(|file| lcm_train::tensorboard::read_events(file).unwrap())
        .flat_map(|e| {
            e.scalars
                .into_iter()
                .map(move |(tag, value)| (e.step, tag, value))
        })
        .collect()
}

#[test]
fn event_files_mirror_metrics_and_a_resume_after_a_kill_logs_each_step_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    train(&dir, &config(7, Some(5)), false).unwrap();
    // Killed after step 5 but before its checkpoint: step 5 is in metrics.jsonl and in the
    // event file, and the resume starts from step 4.
    std::fs::remove_dir_all(dir.join("checkpoints/step-00000005")).unwrap();
    let first = lcm_train::tensorboard::event_files(&dir).unwrap();
    assert_eq!(first.len(), 1);
    let before = lcm_train::tensorboard::read_events(&first[0]).unwrap();
    assert_eq!(
        before.len(),
        1 + 5,
        "file_version record, then one event per step"
    );
    assert_eq!(before[0].file_version.as_deref(), Some("brain.Event:2"));

    train(&dir, &config(7, None), true).unwrap();
    let files = lcm_train::tensorboard::event_files(&dir).unwrap();
    assert_eq!(files.len(), 2, "a resumed run appends a new file");
    assert_eq!(files[0], first[0], "the first file is kept, cut back");
    let steps: Vec<i64> = lcm_train::tensorboard::read_events(&files[0])
        .unwrap()
        .iter()
        .map(|e| e.step)
        .collect();
    assert_eq!(steps, [0, 1, 2, 3, 4]);
    let resumed = lcm_train::tensorboard::read_events(&files[1]).unwrap();
    assert!(resumed[1].session_start && resumed[1].step == 5);

    // Each step's scalars once, equal (as f32) to its metrics.jsonl line.
    let scalars = event_scalars(&dir);
    let metrics: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut expected = Vec::new();
    for line in &metrics {
        let step = line["step"].as_i64().unwrap();
        expected.push((
            step,
            "train/loss".to_string(),
            line["loss"].as_f64().unwrap() as f32,
        ));
        expected.push((
            step,
            "optim/lr".to_string(),
            line["lr"].as_f64().unwrap() as f32,
        ));
        if let Some(v) = line["valid_loss"].as_f64() {
            expected.push((step, "valid/loss".to_string(), v as f32));
        }
    }
    let sort = |mut v: Vec<(i64, String, f32)>| {
        v.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        v
    };
    assert_eq!(sort(scalars.clone()), sort(expected));
    let valid_steps: Vec<i64> = scalars
        .iter()
        .filter(|(_, tag, _)| tag == "valid/loss")
        .map(|(s, _, _)| *s)
        .collect();
    // The killed run validated its last step, 5; the resumed run's step 5 is not a
    // validation step, so the orphaned value is gone.
    assert_eq!(valid_steps, [3, 6, 7]);
}
