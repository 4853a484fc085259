use std::fs;
use std::path::Path;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use lcm_train::checkpoint::TOOL_VERSION;
use lcm_train::{
    AdamW, AdamWConfig, CheckpointManager, DataPosition, LrSchedule, NormalizerRef, RngState,
    TrainError, TrainRng, TrainState, default_decay_filter, new_rng,
};
use rand::Rng;

const ENCODER: &str = "sonar-test-0123abcd";
const N_DATA: usize = 64;
const BATCH: usize = 8;

struct Mlp {
    varmap: VarMap,
    l1: Linear,
    l2: Linear,
}

impl Mlp {
    /// candle's own initialisers draw from an unseeded RNG, so weights are
    /// overwritten from a seeded one to make runs comparable.
    fn new(hidden: usize, init_seed: u64) -> Self {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let l1 = candle_nn::linear(4, hidden, vb.pp("l1")).unwrap();
        let l2 = candle_nn::linear(hidden, 1, vb.pp("l2")).unwrap();
        let mut rng = new_rng(init_seed);
        let mut vars: Vec<_> = varmap.data().lock().unwrap().clone().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, var) in vars {
            let vals: Vec<f32> = (0..var.elem_count())
                .map(|_| rng.random_range(-0.5f32..0.5))
                .collect();
            var.set(&Tensor::from_vec(vals, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
        Self { varmap, l1, l2 }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.l2
            .forward(&self.l1.forward(x).unwrap().tanh().unwrap())
            .unwrap()
    }

    fn weights(&self) -> Vec<(String, Vec<u32>)> {
        let mut v: Vec<_> = self
            .varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let vals: Vec<f32> = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
                (k.clone(), vals.iter().map(|x| x.to_bits()).collect())
            })
            .collect();
        v.sort();
        v
    }
}

fn dataset() -> (Vec<f32>, Vec<f32>) {
    let mut rng = new_rng(1234);
    let x: Vec<f32> = (0..N_DATA * 4)
        .map(|_| rng.random_range(-1f32..1.0))
        .collect();
    let y = x
        .chunks(4)
        .map(|r| (r[0] - 2.0 * r[1]).sin() + r[2] * r[3])
        .collect();
    (x, y)
}

fn optimizer(m: &Mlp) -> AdamW {
    AdamW::from_varmap(&m.varmap, AdamWConfig::default(), default_decay_filter).unwrap()
}

fn schedule() -> LrSchedule {
    LrSchedule::Cosine {
        lr: 3e-2,
        start_lr: 0.0,
        warmup_steps: 5,
        max_steps: 20,
        final_lr_scale: 0.1,
    }
}

fn train(m: &Mlp, opt: &mut AdamW, rng: &mut TrainRng, data: &(Vec<f32>, Vec<f32>), n: usize) {
    let sched = schedule();
    for _ in 0..n {
        let idx: Vec<usize> = (0..BATCH).map(|_| rng.random_range(0..N_DATA)).collect();
        let xb: Vec<f32> = idx
            .iter()
            .flat_map(|&i| data.0[i * 4..i * 4 + 4].to_vec())
            .collect();
        let yb: Vec<f32> = idx.iter().map(|&i| data.1[i]).collect();
        let xb = Tensor::from_vec(xb, (BATCH, 4), &Device::Cpu).unwrap();
        let yb = Tensor::from_vec(yb, (BATCH, 1), &Device::Cpu).unwrap();
        let pred = m.forward(&xb);
        let loss = (pred - yb)
            .unwrap()
            .sqr()
            .unwrap()
            .mean(D::Minus1)
            .unwrap()
            .mean_all()
            .unwrap();
        let mut grads = loss.backward().unwrap();
        // Small max_norm so clipping actually engages in some steps.
        opt.clip_grad_norm(&mut grads, 0.5).unwrap();
        opt.set_lr(sched.lr_at(opt.step_count()));
        opt.step(&grads).unwrap();
    }
}

fn state(step: u64, rng: &TrainRng) -> TrainState {
    TrainState {
        step,
        rng: RngState::capture(rng),
        data: DataPosition {
            epoch: 0,
            batch_index: step,
        },
        space_id: ENCODER.into(),
        normalizer: Some(NormalizerRef {
            path: "normalizer.safetensors".into(),
            hash: "deadbeef".into(),
        }),
        tool_version: TOOL_VERSION.into(),
        model_config: serde_json::json!({"hidden": 16}),
        extra: serde_json::Value::Null,
    }
}

/// Trains 10 steps and checkpoints; returns the manager.
fn run_and_save(dir: &Path, steps: &[u64]) -> (Mlp, AdamW, TrainRng) {
    let data = dataset();
    let m = Mlp::new(16, 7);
    let mut opt = optimizer(&m);
    let mut rng = new_rng(42);
    let mgr = CheckpointManager::new(dir, 0);
    let mut done = 0;
    for &s in steps {
        train(&m, &mut opt, &mut rng, &data, (s - done) as usize);
        done = s;
        mgr.save(&m.varmap, &opt, &state(s, &rng)).unwrap();
    }
    (m, opt, rng)
}

#[test]
fn resume_is_bit_identical() {
    let data = dataset();
    let straight = Mlp::new(16, 7);
    let mut opt = optimizer(&straight);
    let mut rng = new_rng(42);
    train(&straight, &mut opt, &mut rng, &data, 20);

    let dir = tempfile::tempdir().unwrap();
    drop(run_and_save(dir.path(), &[10]));

    // Fresh process state: different init, fresh optimiser, no RNG.
    let resumed = Mlp::new(16, 99);
    let mut opt2 = optimizer(&resumed);
    let mgr = CheckpointManager::new(dir.path(), 3);
    let st = mgr
        .load_latest(&resumed.varmap, Some(&mut opt2), ENCODER)
        .unwrap()
        .expect("a checkpoint");
    assert_eq!(st.step, 10);
    assert_eq!(st.data.batch_index, 10);
    assert_eq!(st.model_config["hidden"], 16);
    assert_eq!(opt2.step_count(), 10);
    let mut rng2 = st.rng.restore().unwrap();
    train(&resumed, &mut opt2, &mut rng2, &data, 10);

    assert_eq!(straight.weights(), resumed.weights());
    assert_eq!(rng.random::<u64>(), rng2.random::<u64>());
    let a: Vec<_> = opt.param_states().cloned().collect();
    let b: Vec<_> = opt2.param_states().cloned().collect();
    assert_eq!(a, b);
}

#[test]
fn rng_state_roundtrips_through_json() {
    let mut rng = new_rng(5);
    for _ in 0..37 {
        rng.random::<u32>();
    }
    let st = RngState::capture(&rng);
    let json = serde_json::to_string(&st).unwrap();
    let mut back = serde_json::from_str::<RngState>(&json)
        .unwrap()
        .restore()
        .unwrap();
    let a: Vec<u64> = (0..10).map(|_| rng.random()).collect();
    let b: Vec<u64> = (0..10).map(|_| back.random()).collect();
    assert_eq!(a, b);
}

#[test]
fn layout_latest_pointer_and_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mlp::new(4, 1);
    let opt = optimizer(&m);
    let rng = new_rng(0);
    let mgr = CheckpointManager::new(dir.path(), 2);
    for s in 1..=4 {
        mgr.save(&m.varmap, &opt, &state(s, &rng)).unwrap();
    }
    assert_eq!(mgr.steps().unwrap(), vec![3, 4]);
    let p = dir.path().join("step-00000004");
    for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
        assert!(p.join(f).is_file(), "{f}");
    }
    assert_eq!(
        fs::read_to_string(dir.path().join("latest"))
            .unwrap()
            .trim(),
        "step-00000004"
    );
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");

    let m2 = Mlp::new(4, 2);
    let st = mgr.load(3, &m2.varmap, None, ENCODER).unwrap();
    assert_eq!(st.step, 3);
    assert_eq!(m2.weights(), m.weights());
    assert!(matches!(
        mgr.load(1, &m2.varmap, None, ENCODER),
        Err(TrainError::NoSuchStep { step: 1, .. })
    ));
}

#[test]
fn empty_dir_has_no_latest() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mlp::new(4, 1);
    let mgr = CheckpointManager::new(dir.path().join("not-yet"), 2);
    assert!(mgr.load_latest(&m.varmap, None, ENCODER).unwrap().is_none());
}

#[test]
fn tmp_dir_from_a_kill_is_ignored_and_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let (m, opt, rng) = run_and_save(dir.path(), &[2]);
    let tmp = dir.path().join("step-00000009.tmp");
    fs::create_dir(&tmp).unwrap();
    fs::write(tmp.join("model.safetensors"), b"half a fi").unwrap();

    let mgr = CheckpointManager::new(dir.path(), 0);
    let fresh = Mlp::new(16, 3);
    let st = mgr
        .load_latest(&fresh.varmap, None, ENCODER)
        .unwrap()
        .unwrap();
    assert_eq!(st.step, 2);
    assert_eq!(fresh.weights(), m.weights());

    mgr.save(&m.varmap, &opt, &state(3, &rng)).unwrap();
    assert!(!tmp.exists());
}

#[test]
fn truncated_model_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    drop(run_and_save(dir.path(), &[1, 2]));
    let f = dir.path().join("step-00000002/model.safetensors");
    let bytes = fs::read(&f).unwrap();
    fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();

    let m = Mlp::new(16, 3);
    let before = m.weights();
    let mgr = CheckpointManager::new(dir.path(), 0);
    let err = mgr.load_latest(&m.varmap, None, ENCODER).unwrap_err();
    assert!(matches!(err, TrainError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("step-00000002") && msg.contains("model.safetensors"),
        "{msg}"
    );
    // Nothing was half-applied.
    assert_eq!(m.weights(), before);
    // The older, intact checkpoint can still be chosen explicitly.
    mgr.load(1, &m.varmap, None, ENCODER).unwrap();
    // The message's advice holds: without the broken step, the newest is the previous one.
    assert!(msg.contains("Delete that step directory"), "{msg}");
    fs::remove_dir_all(dir.path().join("step-00000002")).unwrap();
    let state = mgr.load_latest(&m.varmap, None, ENCODER).unwrap().unwrap();
    assert_eq!(state.step, 1);
}

#[test]
fn truncated_optimizer_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    drop(run_and_save(dir.path(), &[1]));
    let f = dir.path().join("step-00000001/optimizer.safetensors");
    let bytes = fs::read(&f).unwrap();
    fs::write(&f, &bytes[..bytes.len() - 3]).unwrap();
    let m = Mlp::new(16, 3);
    let before = m.weights();
    let mut opt = optimizer(&m);
    let mgr = CheckpointManager::new(dir.path(), 0);
    let msg = mgr
        .load_latest(&m.varmap, Some(&mut opt), ENCODER)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("optimizer.safetensors"), "{msg}");
    assert_eq!(m.weights(), before);
    assert_eq!(opt.step_count(), 0);
    // Weights alone (evaluation) still load.
    mgr.load_latest(&m.varmap, None, ENCODER).unwrap().unwrap();
}

#[test]
fn missing_state_json_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    drop(run_and_save(dir.path(), &[1]));
    fs::remove_file(dir.path().join("step-00000001/state.json")).unwrap();
    let m = Mlp::new(16, 3);
    let mgr = CheckpointManager::new(dir.path(), 0);
    let msg = mgr
        .load_latest(&m.varmap, None, ENCODER)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("step-00000001") && msg.contains("state.json"),
        "{msg}"
    );
}

#[test]
fn other_encoder_space_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(run_and_save(dir.path(), &[1]));
    let m = Mlp::new(16, 3);
    let mgr = CheckpointManager::new(dir.path(), 0);
    let err = mgr
        .load_latest(&m.varmap, None, "minilm-l6-ffff")
        .unwrap_err();
    assert!(matches!(err, TrainError::SpaceMismatch { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "expected space minilm-l6-ffff, checkpoint has {ENCODER}; train in that space or pass the matching store"
        )),
        "{msg}"
    );
}

#[test]
fn shape_mismatch_and_missing_tensor_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    drop(run_and_save(dir.path(), &[1]));
    let mgr = CheckpointManager::new(dir.path(), 0);

    let wider = Mlp::new(32, 3);
    let msg = mgr
        .load_latest(&wider.varmap, None, ENCODER)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("step-00000001") && msg.contains("`l1.bias`"),
        "{msg}"
    );
    assert!(msg.contains("[16]") && msg.contains("[32]"), "{msg}");

    let extra = Mlp::new(16, 3);
    extra
        .varmap
        .get(
            (2, 2),
            "head.weight",
            candle_nn::Init::Const(0.0),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
    let msg = mgr
        .load_latest(&extra.varmap, None, ENCODER)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("`head.weight` is missing"), "{msg}");
}
