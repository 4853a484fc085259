//! Atomic, resumable checkpoints.
//!
//! Layout under the manager's directory:
//!
//! ```text
//! step-00000010/model.safetensors      every VarMap variable, by name
//! step-00000010/optimizer.safetensors  `{name}.exp_avg`, `{name}.exp_avg_sq`, metadata step
//! step-00000010/state.json             TrainState
//! latest                               "step-00000010"
//! ```
//!
//! A checkpoint is written into `step-N.tmp/`, every file fsynced, then the
//! directory is renamed: a reader sees either no `step-N/` or a complete one.
//! A `.tmp` directory is what a kill mid-save leaves behind and is never loaded.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;
use rand_chacha::ChaCha12Rng;
use rand_chacha::rand_core::SeedableRng;
use safetensors::tensor::{Dtype, SafeTensors, TensorView, View};
use serde::{Deserialize, Serialize};

use crate::optim::{AdamW, ParamState, host_f32};
use crate::{Result, TrainError, io_err};

pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";
pub const LATEST_FILE: &str = "latest";
/// Written into every checkpoint so a run can tell which code produced it.
pub const TOOL_VERSION: &str = concat!("lcm-train ", env!("CARGO_PKG_VERSION"));

/// The trainer's RNG. Same algorithm as `rand::rngs::StdRng` (ChaCha12), but
/// its stream position can be read and restored in O(1), which `StdRng` hides.
pub type TrainRng = ChaCha12Rng;

pub fn new_rng(seed: u64) -> TrainRng {
    TrainRng::seed_from_u64(seed)
}

/// Exact RNG position: key, stream and word position of the ChaCha generator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// 32-byte ChaCha key, hex.
    pub key: String,
    pub stream: u64,
    /// u128 as a decimal string: JSON numbers beyond 2^53 are not portable.
    pub word_pos: String,
}

impl RngState {
    pub fn capture(rng: &TrainRng) -> Self {
        let key = rng.get_seed().iter().map(|b| format!("{b:02x}")).collect();
        Self {
            key,
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    pub fn restore(&self) -> Result<TrainRng> {
        let bad = |what: &str| TrainError::Config(format!("invalid rng state: {what}"));
        if self.key.len() != 64 || !self.key.is_ascii() {
            return Err(bad("key must be 64 hex digits"));
        }
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = u8::from_str_radix(&self.key[2 * i..2 * i + 2], 16).map_err(|_| bad("key"))?;
        }
        let pos: u128 = self.word_pos.parse().map_err(|_| bad("word_pos"))?;
        let mut rng = TrainRng::from_seed(seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(pos);
        Ok(rng)
    }
}

/// Where the data loader is, so a resumed run sees the same batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    pub epoch: u64,
    pub batch_index: u64,
}

/// The embedding normaliser the model was trained with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NormalizerRef {
    pub path: String,
    pub hash: String,
}

/// `state.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub step: u64,
    pub rng: RngState,
    pub data: DataPosition,
    /// Id of the space the model lives in: a sentence encoder's content id for LCMs and
    /// concept decoders, a world's id for world models. (Read from `encoder_id` in
    /// checkpoints written before the field was renamed.)
    #[serde(alias = "encoder_id")]
    pub space_id: String,
    #[serde(default)]
    pub normalizer: Option<NormalizerRef>,
    pub tool_version: String,
    /// Free-form model configuration (architecture hyper-parameters).
    #[serde(default)]
    pub model_config: serde_json::Value,
    /// Anything else the trainer wants back on resume.
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// Manages `step-N/` checkpoints in one directory.
#[derive(Clone, Debug)]
pub struct CheckpointManager {
    dir: PathBuf,
    /// Number of newest checkpoints kept after each save; 0 keeps all.
    keep_last: usize,
}

impl CheckpointManager {
    pub fn new(dir: impl Into<PathBuf>, keep_last: usize) -> Self {
        Self {
            dir: dir.into(),
            keep_last,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn step_dir(&self, step: u64) -> PathBuf {
        self.dir.join(step_dir_name(step))
    }

    /// Write checkpoint `state.step` atomically, update `latest`, prune.
    pub fn save(&self, varmap: &VarMap, opt: &AdamW, state: &TrainState) -> Result<PathBuf> {
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        self.remove_stale_tmp()?;
        let name = step_dir_name(state.step);
        let tmp = self.dir.join(format!("{name}.tmp"));
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;

        let mut model_meta = HashMap::new();
        model_meta.insert("step".to_string(), state.step.to_string());
        let model: Vec<(String, LazyTensor)> = sorted_vars(varmap)?
            .into_iter()
            .map(|(n, v)| LazyTensor::new(v.as_tensor().clone()).map(|t| (n, t)))
            .collect::<Result<_>>()?;
        write_safetensors(&tmp.join(MODEL_FILE), model, model_meta)?;

        let mut opt_meta = HashMap::new();
        opt_meta.insert("step".to_string(), opt.step_count().to_string());
        let param_steps: HashMap<&str, u64> = opt
            .param_states()
            .map(|s| (s.name.as_str(), s.step))
            .collect();
        opt_meta.insert(
            "param_steps".to_string(),
            serde_json::to_string(&param_steps).expect("map of u64 serialises"),
        );
        opt_meta.insert(
            "config".to_string(),
            serde_json::to_string(opt.config()).expect("config serialises"),
        );
        let mut moments = Vec::new();
        for s in opt.param_states() {
            moments.push((
                format!("{}.exp_avg", s.name),
                SliceF32::new(&s.exp_avg, &s.shape),
            ));
            moments.push((
                format!("{}.exp_avg_sq", s.name),
                SliceF32::new(&s.exp_avg_sq, &s.shape),
            ));
        }
        write_safetensors(&tmp.join(OPTIMIZER_FILE), moments, opt_meta)?;

        let json = serde_json::to_vec_pretty(state).expect("TrainState serialises");
        write_synced(&tmp.join(STATE_FILE), &json)?;
        sync_dir(&tmp)?;

        let dst = self.dir.join(&name);
        if dst.exists() {
            // Re-saving a step (e.g. after a rollback) replaces it; the window in
            // which neither exists only loses this step, never an older one.
            fs::remove_dir_all(&dst).map_err(io_err(&dst))?;
        }
        fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
        sync_dir(&self.dir)?;

        let latest_tmp = self.dir.join(format!("{LATEST_FILE}.tmp"));
        write_synced(&latest_tmp, format!("{name}\n").as_bytes())?;
        let latest = self.dir.join(LATEST_FILE);
        fs::rename(&latest_tmp, &latest).map_err(io_err(&latest))?;
        sync_dir(&self.dir)?;
        tracing::info!(path = %dst.display(), step = state.step, "saved checkpoint");

        self.prune(Some(state.step))?;
        Ok(dst)
    }

    /// Steps of complete checkpoints (renamed `step-N/` directories), ascending.
    pub fn steps(&self) -> Result<Vec<u64>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.dir)(e)),
        };
        let mut steps = Vec::new();
        for entry in rd {
            let entry = entry.map_err(io_err(&self.dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Some(step) = parse_step_dir_name(&name)
                && entry.path().is_dir()
            {
                steps.push(step);
            }
        }
        steps.sort_unstable();
        Ok(steps)
    }

    /// Load the newest complete checkpoint, or `Ok(None)` if there is none.
    ///
    /// The newest `step-N/` directory wins even if `latest` is older: a kill
    /// between the directory rename and the pointer update leaves exactly that
    /// state, and the directory is complete. A corrupt newest checkpoint is an
    /// error rather than a silent fall-back, so progress is never lost unnoticed.
    pub fn load_latest(
        &self,
        varmap: &VarMap,
        opt: Option<&mut AdamW>,
        expected_space: &str,
    ) -> Result<Option<TrainState>> {
        let Some(&step) = self.steps()?.last() else {
            return Ok(None);
        };
        if let Ok(p) = fs::read_to_string(self.dir.join(LATEST_FILE))
            && p.trim() != step_dir_name(step)
        {
            tracing::warn!(
                latest = p.trim(),
                newest = step,
                "`latest` lags; using newest"
            );
        }
        self.load(step, varmap, opt, expected_space).map(Some)
    }

    pub fn load(
        &self,
        step: u64,
        varmap: &VarMap,
        opt: Option<&mut AdamW>,
        expected_space: &str,
    ) -> Result<TrainState> {
        let path = self.step_dir(step);
        if !path.is_dir() {
            return Err(TrainError::NoSuchStep {
                dir: self.dir.clone(),
                step,
            });
        }
        load_checkpoint(&path, varmap, opt, expected_space)
    }

    /// Keep the `keep_last` newest checkpoints (never removing `protect`).
    pub fn prune(&self, protect: Option<u64>) -> Result<()> {
        if self.keep_last == 0 {
            return Ok(());
        }
        let steps = self.steps()?;
        let n_drop = steps.len().saturating_sub(self.keep_last);
        for &step in steps.iter().take(n_drop) {
            if Some(step) == protect {
                continue;
            }
            let p = self.step_dir(step);
            fs::remove_dir_all(&p).map_err(io_err(&p))?;
            tracing::debug!(path = %p.display(), "pruned checkpoint");
        }
        Ok(())
    }

    /// A single trainer owns the directory, so any `.tmp` is from a killed save.
    fn remove_stale_tmp(&self) -> Result<()> {
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(base) = name.strip_suffix(".tmp")
                && parse_step_dir_name(base).is_some()
            {
                let p = entry.path();
                tracing::warn!(path = %p.display(), "removing incomplete checkpoint");
                fs::remove_dir_all(&p).map_err(io_err(&p))?;
            }
        }
        Ok(())
    }
}

/// Load one checkpoint directory into `varmap` (and `opt`). Everything is
/// validated before any variable changes, so a failed load leaves the model as it was.
pub fn load_checkpoint(
    path: &Path,
    varmap: &VarMap,
    opt: Option<&mut AdamW>,
    expected_space: &str,
) -> Result<TrainState> {
    let corrupt = |reason: String| TrainError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let state_path = path.join(STATE_FILE);
    let state_bytes =
        fs::read(&state_path).map_err(|e| corrupt(format!("cannot read {STATE_FILE}: {e}")))?;
    let state: TrainState = serde_json::from_slice(&state_bytes)
        .map_err(|e| corrupt(format!("invalid {STATE_FILE}: {e}")))?;
    if state.space_id != expected_space {
        return Err(TrainError::SpaceMismatch {
            path: path.to_path_buf(),
            expected: expected_space.to_string(),
            found: state.space_id,
        });
    }

    let updates = read_weights(path, varmap)?;

    if let Some(opt) = opt {
        let opt_path = path.join(OPTIMIZER_FILE);
        let bytes = fs::read(&opt_path)
            .map_err(|e| corrupt(format!("cannot read {OPTIMIZER_FILE}: {e}")))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| corrupt(format!("invalid {OPTIMIZER_FILE}: {e}")))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| corrupt(format!("invalid {OPTIMIZER_FILE}: {e}")))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        let step: u64 = meta
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt(format!("{OPTIMIZER_FILE} lacks a `step` entry")))?;
        let param_steps: HashMap<String, u64> = meta
            .get("param_steps")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| corrupt(format!("{OPTIMIZER_FILE} lacks `param_steps`")))?;
        let opt_err = |name: &str, problem: String| TrainError::Tensor {
            path: opt_path.clone(),
            name: name.to_string(),
            problem,
        };
        let mut states = Vec::new();
        for s in opt.param_states() {
            let read = |suffix: &str| -> Result<Vec<f32>> {
                let key = format!("{}.{suffix}", s.name);
                let v = st
                    .tensor(&key)
                    .map_err(|_| opt_err(&key, "is missing".into()))?;
                if v.shape() != s.shape.as_slice() || v.dtype() != Dtype::F32 {
                    return Err(opt_err(
                        &key,
                        format!(
                            "is {:?} {:?}, expected F32 {:?}",
                            v.dtype(),
                            v.shape(),
                            s.shape
                        ),
                    ));
                }
                Ok(le_f32(v.data()))
            };
            let exp_avg = read("exp_avg")?;
            let exp_avg_sq = read("exp_avg_sq")?;
            let pstep = *param_steps
                .get(&s.name)
                .ok_or_else(|| opt_err(&s.name, "has no step in metadata".into()))?;
            states.push(ParamState {
                name: s.name.clone(),
                shape: s.shape.clone(),
                step: pstep,
                exp_avg,
                exp_avg_sq,
            });
        }
        opt.import_state(step, states)?;
    }

    for (var, t) in updates {
        var.set(&t)?;
    }
    tracing::info!(path = %path.display(), step = state.step, "loaded checkpoint");
    Ok(state)
}

/// Loads only the weights of `dir/model.safetensors` into `varmap` (an exported model, which
/// has no optimiser state nor `state.json`), validated before any variable changes.
pub fn load_weights(dir: &Path, varmap: &VarMap) -> Result<()> {
    for (var, t) in read_weights(dir, varmap)? {
        var.set(&t)?;
    }
    Ok(())
}

/// Every variable of `varmap` read from `dir/model.safetensors`, checked by name and shape;
/// nothing is changed yet.
fn read_weights(path: &Path, varmap: &VarMap) -> Result<Vec<(Var, Tensor)>> {
    let corrupt = |reason: String| TrainError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let model_bytes = fs::read(path.join(MODEL_FILE))
        .map_err(|e| corrupt(format!("cannot read {MODEL_FILE}: {e}")))?;
    let model = SafeTensors::deserialize(&model_bytes)
        .map_err(|e| corrupt(format!("invalid {MODEL_FILE}: {e}")))?;
    let tensor_err = |name: &str, problem: String| TrainError::Tensor {
        path: path.join(MODEL_FILE),
        name: name.to_string(),
        problem,
    };
    let vars = sorted_vars(varmap)?;
    let mut updates: Vec<(Var, Tensor)> = Vec::with_capacity(vars.len());
    for (name, var) in &vars {
        let view = model
            .tensor(name)
            .map_err(|_| tensor_err(name, "is missing".into()))?;
        if view.shape() != var.dims() {
            return Err(tensor_err(
                name,
                format!(
                    "has shape {:?}, model expects {:?}",
                    view.shape(),
                    var.dims()
                ),
            ));
        }
        let t =
            view_to_tensor(&view, var.as_tensor()).map_err(|problem| tensor_err(name, problem))?;
        updates.push((var.clone(), t));
    }
    let known: std::collections::HashSet<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    for name in model.names() {
        if !known.contains(name) {
            tracing::warn!(checkpoint = %path.display(), tensor = name, "tensor not in model; ignored");
        }
    }

    Ok(updates)
}

fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

fn parse_step_dir_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?;
    if digits.len() < 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn sorted_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| TrainError::Config("VarMap mutex poisoned".into()))?;
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

fn le_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn view_to_tensor(view: &TensorView<'_>, like: &Tensor) -> std::result::Result<Tensor, String> {
    let data = view.data();
    let t = match view.dtype() {
        Dtype::F32 => Tensor::from_vec(le_f32(data), view.shape(), like.device()),
        Dtype::F64 => {
            let v: Vec<f64> = data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")))
                .collect();
            Tensor::from_vec(v, view.shape(), like.device())
        }
        other => return Err(format!("has unsupported dtype {other:?}")),
    };
    t.and_then(|t| t.to_dtype(like.dtype()))
        .map_err(|e| format!("cannot be converted: {e}"))
}

/// A model tensor converted to bytes only when the writer reaches it, so
/// saving never holds a second full copy of the model in memory.
struct LazyTensor {
    tensor: Tensor,
    dtype: Dtype,
}

impl LazyTensor {
    fn new(tensor: Tensor) -> Result<Self> {
        // f16/bf16 widen to f32 losslessly; f64 stays f64 so nothing is rounded.
        let dtype = match tensor.dtype() {
            DType::F64 => Dtype::F64,
            DType::F32 | DType::F16 | DType::BF16 => Dtype::F32,
            other => {
                return Err(TrainError::Config(format!(
                    "cannot checkpoint a {other:?} variable"
                )));
            }
        };
        Ok(Self { tensor, dtype })
    }
}

impl View for LazyTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        self.tensor.dims()
    }
    fn data(&self) -> Cow<'_, [u8]> {
        // View::data cannot fail; the conversions below only fail on a
        // device error, which would also have failed the training step.
        let bytes = if self.dtype == Dtype::F64 {
            self.tensor
                .flatten_all()
                .and_then(|t| t.to_vec1::<f64>())
                .expect("read f64 variable")
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect()
        } else {
            host_f32(&self.tensor)
                .expect("read f32 variable")
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect()
        };
        Cow::Owned(bytes)
    }
    fn data_len(&self) -> usize {
        self.tensor.elem_count() * self.dtype.bitsize() / 8
    }
}

struct SliceF32<'a> {
    data: &'a [f32],
    shape: &'a [usize],
}

impl<'a> SliceF32<'a> {
    fn new(data: &'a [f32], shape: &'a [usize]) -> Self {
        Self { data, shape }
    }
}

impl View for SliceF32<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.data.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

fn write_safetensors<V: View>(
    path: &Path,
    tensors: Vec<(String, V)>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    safetensors::serialize_to_file(tensors, Some(metadata), path).map_err(|e| TrainError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    // serialize_to_file does not fsync; an fsync on a fresh handle flushes the same inode.
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// Makes renames and new entries in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err(dir))
}
