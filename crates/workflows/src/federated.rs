//! One site's half of federated training (DiLoCo; FedAvg as its special case): the site
//! receives the global model as a safetensors file, runs `H` inner AdamW steps on its own
//! concept store and hands back its local weights. The outer step, the aggregation across
//! sites and the transport belong to the Flower app in `federated/` (Python); this module
//! owns the learning.
//!
//! - [`init_global`] writes the first global model: the seeded initialisation of the
//!   training configuration, exactly what `lcm train` with the same seed starts from.
//! - [`fed_step`] runs one round at a site. The site's **state directory** is an ordinary
//!   run directory of the trainer ([`crate::train`]): the AdamW moments, the RNG stream
//!   position, the data position and the step count persist there in its checkpoints, so a
//!   round continues exactly where the site's last round stopped, only with the weights
//!   replaced by the global ones (see [`lcm_train::run::run_from`]). With one site, outer
//!   learning rate 1 and no momentum, `R` rounds of `H` steps therefore equal `R·H` steps of
//!   local training (the equivalence test proves it).
//! - A round is **atomic and resumable**: `federated.json` in the state directory records
//!   which global file (by content hash) the round started from and the step it ends at,
//!   before any step is taken. A round interrupted before its checkpoint reruns from the
//!   previous checkpoint; one interrupted after it re-emits the finished weights without
//!   training again.
//!
//! Every global file names its space: the encoder id of the stores it was trained on, the
//! normaliser's content hash, the model configuration and the training configuration (the
//! federation's inner settings). A site whose store or normaliser differs is refused before
//! anything is written, as are weights that are non-finite, missing, extra or misshapen.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_concept::normalizer::RobustNormalizer;
use lcm_data::store::ConceptStore;
use lcm_model::builder::{ModelConfig, build_model};
use lcm_train::checkpoint::{CheckpointManager, MODEL_FILE};
use lcm_train::run::{CHECKPOINT_DIR, METRICS_FILE, seeded_init};
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::train::{StepMetrics, TrainConfig, normalizer_hash, train_from};
use crate::{Result, WorkflowError};

/// The format tag of a global (or local) model file.
pub const FORMAT: &str = "lcm-federated/1";
/// Metadata keys of a global model file (safetensors metadata, all strings).
pub const META_FORMAT: &str = "lcm.format";
pub const META_ENCODER_ID: &str = "lcm.encoder_id";
pub const META_NORMALIZER_HASH: &str = "lcm.normalizer_hash";
pub const META_MODEL_CONFIG: &str = "lcm.model_config";
pub const META_TRAIN_CONFIG: &str = "lcm.train_config";
/// The round ledger of a state directory.
pub const LEDGER_FILE: &str = "federated.json";

/// Tensors by name: (shape, values), in name order.
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// What a global model file says about the space it lives in.
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalSpace {
    pub encoder_id: String,
    pub normalizer_hash: String,
    /// `{kind, preset, config}` as checkpoints record it.
    pub model_config: serde_json::Value,
    /// The federation's inner training settings (`steps` is the length of the inner
    /// learning-rate schedule over all rounds).
    pub train_config: TrainConfig,
}

impl GlobalSpace {
    fn metadata(&self) -> Result<HashMap<String, String>> {
        let train = serde_json::to_string(&self.train_config)
            .map_err(|e| WorkflowError::Config(format!("serialising the configuration: {e}")))?;
        Ok(HashMap::from([
            (META_FORMAT.to_string(), FORMAT.to_string()),
            (META_ENCODER_ID.to_string(), self.encoder_id.clone()),
            (
                META_NORMALIZER_HASH.to_string(),
                self.normalizer_hash.clone(),
            ),
            (META_MODEL_CONFIG.to_string(), self.model_config.to_string()),
            (META_TRAIN_CONFIG.to_string(), train),
        ]))
    }
}

/// A global model file read and checked: its space and its tensors by name.
#[derive(Clone, Debug)]
pub struct GlobalModel {
    pub space: GlobalSpace,
    /// Name → (shape, values), in name order.
    pub tensors: Tensors,
    /// FNV-1a of the file's bytes: which global a round started from.
    pub content_hash: String,
}

fn refused(path: &Path, why: impl std::fmt::Display) -> WorkflowError {
    WorkflowError::Refused(format!("global model {}: {why}", path.display()))
}

fn io_error(path: &Path, source: std::io::Error) -> WorkflowError {
    WorkflowError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl GlobalModel {
    /// Reads a global model file; refuses a file without the federated metadata, with a
    /// tensor that is not f32 or holds a NaN or an infinity.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| refused(path, format!("not a safetensors file ({e})")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |key: &str| {
            meta.get(key).cloned().ok_or_else(|| {
                refused(
                    path,
                    format!("lacks `{key}`; write global models with `lcm fed-init`"),
                )
            })
        };
        let format = get(META_FORMAT)?;
        if format != FORMAT {
            return Err(refused(
                path,
                format!("format `{format}`, this lcm reads `{FORMAT}`"),
            ));
        }
        let model_config = serde_json::from_str(&get(META_MODEL_CONFIG)?)
            .map_err(|e| refused(path, format!("`{META_MODEL_CONFIG}` is not JSON: {e}")))?;
        let train_config = serde_json::from_str(&get(META_TRAIN_CONFIG)?)
            .map_err(|e| refused(path, format!("`{META_TRAIN_CONFIG}`: {e}")))?;
        let space = GlobalSpace {
            encoder_id: get(META_ENCODER_ID)?,
            normalizer_hash: get(META_NORMALIZER_HASH)?,
            model_config,
            train_config,
        };
        let file = SafeTensors::deserialize(&bytes)
            .map_err(|e| refused(path, format!("not a safetensors file ({e})")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(refused(
                    path,
                    format!("tensor `{name}` is {:?}, expected F32", view.dtype()),
                ));
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
                return Err(refused(
                    path,
                    format!("tensor `{name}` holds a non-finite value ({bad})"),
                ));
            }
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        Ok(Self {
            space,
            tensors,
            content_hash: format!("fnv1a64:{:016x}", lcm_util::hash::fnv1a64(&bytes)),
        })
    }

    /// Writes the model (its tensors with its space's metadata) atomically: what the
    /// server's outer step and tests write back.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_model(path, &self.space, &self.tensors)
    }

    /// Refuses a model whose tensors differ from the model its configuration builds (a
    /// missing, extra or misshapen tensor), naming the first difference.
    fn check_shapes(&self, expected: &BTreeMap<String, Vec<usize>>, path: &Path) -> Result<()> {
        for (name, shape) in expected {
            match self.tensors.get(name) {
                None => return Err(refused(path, format!("tensor `{name}` is missing"))),
                Some((found, _)) if found != shape => {
                    return Err(refused(
                        path,
                        format!("tensor `{name}` has shape {found:?}, the model expects {shape:?}"),
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = self.tensors.keys().find(|k| !expected.contains_key(*k)) {
            return Err(refused(
                path,
                format!("tensor `{extra}` is not part of the model"),
            ));
        }
        Ok(())
    }
}

/// Writes `tensors` with the space's metadata to `path` atomically.
fn write_model(path: &Path, space: &GlobalSpace, tensors: &Tensors) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, (shape, values))| {
            let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), shape.clone(), data)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|view| (name.clone(), view))
                .map_err(|e| WorkflowError::Config(format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let serialised = safetensors::serialize(views, Some(space.metadata()?))
        .map_err(|e| WorkflowError::Config(format!("serialising {}: {e}", path.display())))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    }
    lcm_util::fs::write_atomic(path, &serialised).map_err(|e| io_error(&e.path, e.source))
}

/// The model a training configuration builds on a store of dimension `dim`, with its
/// variables (randomly initialised by candle).
fn build(config: &TrainConfig, dim: usize) -> Result<(ModelConfig, serde_json::Value, VarMap)> {
    let model_cfg = ModelConfig::resolve(config.model, &config.preset, dim)?;
    let json = model_cfg.to_json(config.model, &config.preset)?;
    let varmap = VarMap::new();
    build_model(
        &model_cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    Ok((model_cfg, json, varmap))
}

fn var_values(varmap: &VarMap) -> Result<Tensors> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| WorkflowError::Config("variable map lock poisoned".into()))?;
    data.iter()
        .map(|(name, var)| {
            let values = var
                .as_tensor()
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            Ok((name.clone(), (var.dims().to_vec(), values)))
        })
        .collect()
}

/// What [`init_global`] wrote.
#[derive(Clone, Debug, Serialize)]
pub struct InitReport {
    pub path: PathBuf,
    pub encoder_id: String,
    pub normalizer_hash: String,
    pub num_parameters: usize,
}

/// Writes the first global model for training `config` on stores in the space of the
/// store at `store` with `normalizer`: the seeded initialisation `lcm train` starts from.
pub fn init_global(
    config: &TrainConfig,
    store: &Path,
    normalizer: &RobustNormalizer,
    out: &Path,
) -> Result<InitReport> {
    let opened = ConceptStore::open(store)?;
    if normalizer.encoder_id != opened.meta.encoder_id {
        return Err(WorkflowError::Refused(format!(
            "the normaliser was fitted on `{}` concepts, the store holds `{}` ones",
            normalizer.encoder_id, opened.meta.encoder_id
        )));
    }
    let (_, model_config, varmap) = build(config, opened.meta.dim)?;
    seeded_init(&varmap, config.seed)?;
    let space = GlobalSpace {
        encoder_id: opened.meta.encoder_id,
        normalizer_hash: normalizer_hash(normalizer),
        model_config,
        train_config: TrainConfig {
            normalizer_path: None,
            ..config.clone()
        },
    };
    let tensors = var_values(&varmap)?;
    write_model(out, &space, &tensors)?;
    Ok(InitReport {
        path: out.to_path_buf(),
        encoder_id: space.encoder_id,
        normalizer_hash: space.normalizer_hash,
        num_parameters: tensors.values().map(|(_, v)| v.len()).sum(),
    })
}

/// One round at a site.
pub struct FedStepRequest<'a> {
    /// The global model file of this round.
    pub global: &'a Path,
    /// The site's concept store.
    pub store: &'a Path,
    /// The federation's normaliser (its hash must be the global model's).
    pub normalizer: &'a RobustNormalizer,
    /// Where the normaliser was read from (recorded in the site's checkpoints).
    pub normalizer_path: &'a Path,
    /// The raw end-of-text embedding of the store's encoder.
    pub eos: Vec<f32>,
    /// The site's persistent state: a run directory of the trainer.
    pub state_dir: &'a Path,
    /// Inner steps this round (H).
    pub steps: u64,
    /// The federation's round number: a rerun of the same round with the same global
    /// replays its result, the same global sent in another round is trained on again.
    pub round: u64,
    /// Where the local weights go.
    pub out: &'a Path,
}

/// What a round did, printed as one JSON line by `lcm fed-step`. Numbers only: nothing of
/// the site's data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FedStepReport {
    /// Concepts predicted this round, the loss terms its steps averaged over (the weight of
    /// this site's update).
    pub examples: u64,
    /// Mean training loss of the round's steps.
    pub loss: f64,
    /// Validation loss on the site's held-out split after the round, if it has one.
    pub valid_loss: Option<f64>,
    /// Wall time of the call.
    pub seconds: f64,
    /// The site's inner step count before and after the round.
    pub from_step: u64,
    pub to_step: u64,
    /// True when the round had already finished (an interrupted call re-run): the
    /// weights were re-emitted from the site's checkpoint without training again.
    pub replayed: bool,
}

/// The round ledger: which global a round started from and where it ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Ledger {
    global: String,
    #[serde(default)]
    round: u64,
    from_step: u64,
    to_step: u64,
}

/// Runs one round at a site: checks the global model against the site's store and
/// normaliser, trains `steps` inner steps from it with the site's optimiser state and
/// writes the local weights (with the global's metadata) to `out`.
pub fn fed_step(request: &FedStepRequest<'_>) -> Result<FedStepReport> {
    let started = Instant::now();
    let global = GlobalModel::read(request.global)?;
    let space = &global.space;
    let store = ConceptStore::open(request.store)?;
    if store.meta.encoder_id != space.encoder_id {
        return Err(WorkflowError::Refused(format!(
            "the global model lives in the space of encoder `{}`, this site's store {} was \
             encoded with `{}`; re-encode the site's corpus with the federation's encoder",
            space.encoder_id,
            request.store.display(),
            store.meta.encoder_id
        )));
    }
    let site_hash = normalizer_hash(request.normalizer);
    if site_hash != space.normalizer_hash {
        return Err(WorkflowError::Refused(format!(
            "the global model was trained with normaliser {}, this site passed {} ({}); use \
             the federation's normaliser",
            space.normalizer_hash,
            site_hash,
            request.normalizer_path.display()
        )));
    }
    let (_, model_json, varmap) = build(&space.train_config, store.meta.dim)?;
    if model_json != space.model_config {
        return Err(WorkflowError::Refused(format!(
            "the global model's configuration {} differs from the one its training settings \
             build on this site's {}-dimensional store ({model_json})",
            space.model_config, store.meta.dim
        )));
    }
    let expected: BTreeMap<String, Vec<usize>> = var_values(&varmap)?
        .into_iter()
        .map(|(name, (shape, _))| (name, shape))
        .collect();
    drop(varmap);
    global.check_shapes(&expected, request.global)?;
    if request.steps == 0 {
        return Err(WorkflowError::Config("steps must be > 0".into()));
    }

    let checkpoints = CheckpointManager::new(request.state_dir.join(CHECKPOINT_DIR), 0);
    let current = checkpoints.steps()?.last().copied().unwrap_or(0);
    let ledger_path = request.state_dir.join(LEDGER_FILE);
    let ledger = read_ledger(&ledger_path)?;
    let replay = ledger.as_ref().filter(|l| {
        l.global == global.content_hash
            && l.round == request.round
            && l.to_step == current
            && current > 0
    });
    let (from_step, to_step, replayed) = match replay {
        Some(l) => (l.from_step, l.to_step, true),
        None => {
            let total = space.train_config.steps;
            if current >= total {
                return Err(WorkflowError::Refused(format!(
                    "the site's state {} is at step {current}, the end of the federation's \
                     {total}-step schedule; start a new federation with a longer --total-steps",
                    request.state_dir.display()
                )));
            }
            let to = (current + request.steps).min(total);
            let entry = Ledger {
                global: global.content_hash.clone(),
                round: request.round,
                from_step: current,
                to_step: to,
            };
            std::fs::create_dir_all(request.state_dir)
                .map_err(|e| io_error(request.state_dir, e))?;
            let text = serde_json::to_vec_pretty(&entry)
                .map_err(|e| WorkflowError::Config(format!("serialising the ledger: {e}")))?;
            lcm_util::fs::write_atomic(&ledger_path, &text)
                .map_err(|e| io_error(&e.path, e.source))?;
            train_round(request, &global, current, to)?;
            (current, to, false)
        }
    };

    let local = checkpoints.step_dir(to_step).join(MODEL_FILE);
    let tensors = read_checkpoint_weights(&local)?;
    write_model(request.out, space, &tensors)?;
    let metrics = round_metrics(&request.state_dir.join(METRICS_FILE), from_step, to_step)?;
    let steps = metrics.len().max(1) as f64;
    Ok(FedStepReport {
        // Loss terms, so that averaging by examples averages the sites' gradients as one
        // batch of their union would (concepts in metrics written before they were counted).
        examples: metrics
            .iter()
            .map(|m| if m.predictions > 0 { m.predictions } else { m.concepts } as u64)
            .sum(),
        loss: metrics.iter().map(|m| m.loss).sum::<f64>() / steps,
        valid_loss: metrics.iter().rev().find_map(|m| m.valid_loss),
        seconds: started.elapsed().as_secs_f64(),
        from_step,
        to_step,
        replayed,
    })
}

/// Trains the site from step `from` to `to`, the weights replaced by the global ones.
fn train_round(
    request: &FedStepRequest<'_>,
    global: &GlobalModel,
    from: u64,
    to: u64,
) -> Result<()> {
    let config = TrainConfig {
        stop_at: Some(to),
        eval_every: 0,
        checkpoint_every: 0,
        keep_last: 2,
        max_seconds: None,
        normalizer_path: Some(request.normalizer_path.display().to_string()),
        ..global.space.train_config.clone()
    };
    let mut start = |varmap: &VarMap| -> Result<()> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| WorkflowError::Config("variable map lock poisoned".into()))?;
        for (name, var) in data.iter() {
            let (shape, values) = global
                .tensors
                .get(name)
                .ok_or_else(|| refused(request.global, format!("tensor `{name}` is missing")))?;
            var.set(&Tensor::from_vec(
                values.clone(),
                shape.as_slice(),
                &Device::Cpu,
            )?)?;
        }
        Ok(())
    };
    train_from(
        &config,
        request.store,
        request.normalizer,
        request.eos.clone(),
        request.state_dir,
        from > 0,
        &mut |_| {},
        &mut start,
    )?;
    Ok(())
}

fn read_ledger(path: &Path) -> Result<Option<Ledger>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            WorkflowError::Config(format!(
                "{} is not a round ledger ({e}); delete it to rerun the round",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

fn read_checkpoint_weights(path: &Path) -> Result<Tensors> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
    tensors
        .into_iter()
        .map(|(name, t)| {
            let shape = t.dims().to_vec();
            let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            Ok((name, (shape, values)))
        })
        .collect()
}

/// The metrics lines of the steps `(from, to]`.
fn round_metrics(path: &Path, from: u64, to: u64) -> Result<Vec<StepMetrics>> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<StepMetrics>(line).ok())
        .filter(|m| m.step > from && m.step <= to)
        .collect())
}
