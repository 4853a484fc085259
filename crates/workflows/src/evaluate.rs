//! Teacher-forced evaluation of a trained LCM on held-out sequences: the paper's
//! pre-training metrics (ℓ2, CA, PAR; see `lcm_eval::metrics`) next to the two trivial
//! baselines every model must beat. [`HeldOut`] picks the held-out split of a store the
//! way the model was trained (same fraction, same wrap length, so that no evaluated
//! document was trained on); [`evaluate_model`] scores any set of sequences.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use lcm_concept::normalizer::RobustNormalizer;
use lcm_data::batch::{
    ConceptSequence, DEFAULT_MAX_SEQ_LEN, DatasetConfig, SequenceDataset, SplitDataset,
};
use lcm_data::store::ConceptStore;
use lcm_eval::metrics::{ConceptBatch, EvalOptions};
use lcm_eval::report::EvalReport;
use lcm_model::generate::{DiffusionSampling, Lcm};
use lcm_train::checkpoint::new_rng;
use serde_json::{Value, json};

use crate::load::TrainedLcm;
use crate::{Result, WorkflowError};

/// What to evaluate on and how.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// Stop adding held-out sequences once this many concepts are selected (CA compares
    /// every prediction with every gold concept, so its cost grows quadratically).
    pub max_concepts: usize,
    /// Concepts per model forward pass, padding included.
    pub batch_concepts: usize,
    pub sampling: DiffusionSampling,
    /// Seed of the diffusion models' initial noise.
    pub seed: u64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            max_concepts: 8192,
            batch_concepts: 4096,
            sampling: DiffusionSampling::default(),
            seed: 0,
        }
    }
}

/// Result of [`evaluate_model`].
#[derive(Debug, Clone)]
pub struct EvalOutcome {
    pub report: EvalReport,
    pub sequences: usize,
    pub concepts: usize,
    pub seconds: f64,
}

/// Mean of all concepts of `train` in the encoder's raw space (the normaliser is affine,
/// so this is the denormalised mean of the normalised data).
pub fn training_mean(train: &SequenceDataset, normalizer: &RobustNormalizer) -> Result<Vec<f32>> {
    let dim = train.dim();
    let mut sum = vec![0f64; dim];
    let mut count = 0usize;
    for seq in train.sequences() {
        for row in seq.data.chunks_exact(dim) {
            sum.iter_mut().zip(row).for_each(|(s, v)| *s += *v as f64);
            count += 1;
        }
    }
    if count == 0 {
        return Err(WorkflowError::Config(
            "the training split is empty: no mean concept".into(),
        ));
    }
    let mut mean: Vec<f32> = sum.iter().map(|s| (s / count as f64) as f32).collect();
    normalizer.denormalize_in_place(&mut mean)?;
    Ok(mean)
}

/// Evaluates `model` (named `label` in the report) on the first sequences of `valid` (up
/// to `config.max_concepts` concepts), plus the "repeat previous" and "mean concept"
/// baselines (`training_mean` in raw space). Metrics are computed in the encoder's raw
/// space; position 0 of each sequence is not scored.
pub fn evaluate_model(
    model: &Lcm,
    label: &str,
    valid: &SequenceDataset,
    normalizer: &RobustNormalizer,
    training_mean: &[f32],
    config: &EvalConfig,
) -> Result<EvalOutcome> {
    if config.max_concepts < 2 {
        return Err(WorkflowError::Config(format!(
            "max concepts {} evaluates nothing: a prediction needs a sequence of at least 2 \
             concepts; pass 2 or more (the default is {})",
            config.max_concepts,
            EvalConfig::default().max_concepts
        )));
    }
    if config.batch_concepts == 0 {
        return Err(WorkflowError::Config(
            "batch concepts 0 holds no concept per forward pass; pass 1 or more".into(),
        ));
    }
    let started = std::time::Instant::now();
    let dim = valid.dim();
    if dim != model.input_dim() {
        return Err(WorkflowError::Config(format!(
            "the model reads {}-d concepts but the held-out data is {dim}-d",
            model.input_dim()
        )));
    }
    let mut selected: Vec<&ConceptSequence> = Vec::new();
    let mut concepts = 0usize;
    for seq in valid.sequences().iter().filter(|s| s.len() >= 2) {
        if concepts + seq.len() > config.max_concepts && !selected.is_empty() {
            break;
        }
        concepts += seq.len();
        selected.push(seq);
    }
    if selected.is_empty() {
        return Err(WorkflowError::Config(
            "no held-out sequence of at least 2 concepts to evaluate on; raise the \
             validation fraction or use a larger store"
                .into(),
        ));
    }

    let mut rng = new_rng(config.seed);
    let mut predictions: Vec<f32> = Vec::with_capacity(concepts * dim);
    for group in batches(&selected, config.batch_concepts) {
        let max_len = group.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut x = vec![0f32; group.len() * max_len * dim];
        for (i, seq) in group.iter().enumerate() {
            x[i * max_len * dim..][..seq.data.len()].copy_from_slice(&seq.data);
        }
        let x = Tensor::from_vec(x, (group.len(), max_len, dim), &Device::Cpu)?;
        // [B, T − 1, D]: row n predicts position n + 1.
        let pred = model.predict_teacher_forced(&x, &config.sampling, &mut rng)?;
        let pred = normalizer
            .denormalize(&pred.to_dtype(DType::F32)?)?
            .to_vec3::<f32>()?;
        for (seq, rows) in group.iter().zip(pred) {
            // Position 0 has no prediction and is not scored.
            predictions.extend(std::iter::repeat_n(f32::NAN, dim));
            for row in rows.iter().take(seq.len() - 1) {
                predictions.extend_from_slice(row);
            }
        }
    }

    let mut gold = Vec::with_capacity(concepts * dim);
    for seq in &selected {
        gold.extend_from_slice(&seq.data);
    }
    normalizer.denormalize_in_place(&mut gold)?;
    let lengths = selected.iter().map(|s| s.len()).collect();
    let batch = ConceptBatch::new(gold, lengths, dim)?;
    let options = EvalOptions::default();
    let mut report = EvalReport::new();
    report.add(label, &batch, &predictions, &options)?;
    report.add_baselines(&batch, training_mean, &options)?;
    Ok(EvalOutcome {
        report,
        sequences: selected.len(),
        concepts,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The held-out split of a store, chosen for a trained model.
pub struct HeldOut {
    store: ConceptStore,
    /// The held-out fraction used: the requested one, else the model's.
    pub valid_fraction: f64,
    max_seq_len: usize,
}

impl HeldOut {
    /// Opens `store` for evaluating `trained`: it must hold concepts of the model's
    /// encoder; the held-out fraction is `valid_fraction`, else the one the model was
    /// trained with, and sequences are wrapped at the model's training length.
    pub fn open(trained: &TrainedLcm, store: &Path, valid_fraction: Option<f64>) -> Result<Self> {
        let opened = ConceptStore::open(store)?;
        if opened.meta.encoder_id != trained.encoder_id() {
            return Err(WorkflowError::Refused(format!(
                "{} holds `{}` concepts but the model was trained on `{}`",
                store.display(),
                opened.meta.encoder_id,
                trained.encoder_id()
            )));
        }
        let train_config = trained.loaded.train_config.as_ref();
        let valid_fraction = valid_fraction
            .or(train_config.map(|c| c.valid_fraction))
            .ok_or_else(|| {
                WorkflowError::Refused(
                    "the checkpoint does not record its validation fraction; pass \
                     --valid-fraction"
                        .into(),
                )
            })?;
        let max_seq_len = train_config
            .and_then(|c| c.max_seq_len)
            .unwrap_or(DEFAULT_MAX_SEQ_LEN)
            .min(trained.model().max_seq_len());
        Ok(Self {
            store: opened,
            valid_fraction,
            max_seq_len,
        })
    }

    /// Evaluates `trained` on the held-out split (its documents normalised and closed with
    /// `eos`, the raw end-of-text embedding) next to the baselines, the mean concept being
    /// the training split's. `model_path` names the model in errors.
    pub fn evaluate(
        &self,
        trained: &TrainedLcm,
        model_path: &Path,
        eos: Vec<f32>,
        config: &EvalConfig,
    ) -> Result<StoreEvaluation> {
        let split = SplitDataset::from_store(
            &self.store,
            &trained.normalizer,
            eos,
            DatasetConfig {
                max_seq_len: self.max_seq_len,
                valid_fraction: self.valid_fraction,
            },
        )?;
        let mean = training_mean(&split.train, &trained.normalizer)?;
        let label = trained.label();
        let outcome = evaluate_model(
            trained.model(),
            &label,
            &split.valid,
            &trained.normalizer,
            &mean,
            config,
        )
        .map_err(|source| WorkflowError::Evaluating {
            path: model_path.to_path_buf(),
            source: Box::new(source),
        })?;
        Ok(StoreEvaluation {
            label,
            checkpoint: trained.loaded.checkpoint.clone(),
            valid_fraction: self.valid_fraction,
            sampling: config.sampling,
            outcome,
        })
    }
}

/// What [`HeldOut::evaluate`] found, with what it was run on.
#[derive(Debug, Clone)]
pub struct StoreEvaluation {
    /// The model's label (kind, preset, step), its row in the report.
    pub label: String,
    pub checkpoint: PathBuf,
    pub valid_fraction: f64,
    pub sampling: DiffusionSampling,
    pub outcome: EvalOutcome,
}

impl StoreEvaluation {
    /// The report as `lcm eval --json` prints it.
    pub fn to_json(&self) -> Value {
        self.to_json_with(false)
    }

    /// [`Self::to_json`], each row with the MI proxy as `"mi"` when `mi` is set (`lcm eval
    /// --json --mi`; off by default so that the pinned JSON of earlier versions holds).
    pub fn to_json_with(&self, mi: bool) -> Value {
        let rows: Vec<Value> = self
            .outcome
            .report
            .rows
            .iter()
            .map(|r| {
                let mut row = json!({
                    "predictor": r.predictor,
                    "l2": r.metrics.l2,
                    "ca": r.metrics.ca,
                    "par": r.metrics.par,
                    "positions": r.metrics.scored,
                });
                if mi {
                    row["mi"] = json!(r.metrics.mi);
                }
                row
            })
            .collect();
        json!({
            "model": self.label,
            "checkpoint": self.checkpoint.display().to_string(),
            "held_out_sequences": self.outcome.sequences,
            "held_out_concepts": self.outcome.concepts,
            "valid_fraction": self.valid_fraction,
            "sampling": self.sampling,
            "seconds": self.outcome.seconds,
            "rows": rows,
        })
    }

    /// The markdown table of the report.
    pub fn to_markdown(&self) -> String {
        self.outcome.report.to_markdown()
    }
}

/// Consecutive groups whose padded size (`count × longest`) stays within `budget`.
fn batches<'a>(sequences: &[&'a ConceptSequence], budget: usize) -> Vec<Vec<&'a ConceptSequence>> {
    let mut out: Vec<Vec<&ConceptSequence>> = Vec::new();
    let mut current: Vec<&ConceptSequence> = Vec::new();
    let mut longest = 0;
    for &seq in sequences {
        let grown = longest.max(seq.len());
        if !current.is_empty() && (current.len() + 1) * grown > budget {
            out.push(std::mem::take(&mut current));
            longest = 0;
        }
        longest = longest.max(seq.len());
        current.push(seq);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}
