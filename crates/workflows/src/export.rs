//! A trained LCM as a Hugging Face–style folder (`lcm export`): the weights as they were
//! trained (`model.safetensors`), what rebuilds the model (`config.json`), the normaliser
//! its concepts are scaled with, and a model card (`README.md` with YAML front matter).
//! [`crate::load::load_model`] recognises such a folder, so `lcm generate --model DIR`,
//! `lcm eval DIR` and `lcm.LCM.load(DIR)` take it wherever they take a run directory.
//!
//! An export holds no optimiser state: it is for using and sharing a model, not for
//! resuming its training (that is what the run's checkpoints are for).

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use lcm_data::store::ConceptStore;
use lcm_train::checkpoint::{MODEL_FILE, NormalizerRef, RngState, TrainState, new_rng};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::evaluate::StoreEvaluation;
use crate::load::TrainedLcm;
use crate::train::{TrainConfig, normalizer_hash};
use crate::{Result, WorkflowError};

/// The `format` of the `config.json` this module writes; loaders refuse other values.
pub const EXPORT_FORMAT: &str = "lcm-export-1";
pub const EXPORT_CONFIG_FILE: &str = "config.json";
pub const EXPORT_NORMALIZER_FILE: &str = "normalizer.safetensors";
pub const MODEL_CARD_FILE: &str = "README.md";

/// `config.json` of an exported model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportConfig {
    /// Always `lcm`: what tells this folder from a run directory's `config.json`.
    pub library_name: String,
    /// [`EXPORT_FORMAT`].
    pub format: String,
    /// `base-lcm`, `one-tower` or `two-tower`.
    pub architecture: String,
    pub preset: String,
    /// `{kind, preset, config}` as checkpoints record it; rebuilds the model.
    pub model_config: Value,
    /// The sentence encoder's content id: the space of every concept the model reads.
    pub space_id: String,
    /// The encoder name to load that space with (`minilm`, `e5`, a folder or repo id), as
    /// given at export time.
    pub encoder: String,
    /// Concept dimension.
    pub dim: usize,
    /// Number of weights.
    pub parameters: u64,
    /// The normaliser file in this folder and its content hash.
    pub normalizer: ExportedNormalizer,
    /// Optimiser steps the weights were trained for.
    pub step: u64,
    /// The tool that trained the checkpoint and the one that exported it.
    pub trained_with: String,
    pub exported_with: String,
    /// The training configuration, when the checkpoint records it.
    #[serde(default)]
    pub train_config: Option<TrainConfig>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportedNormalizer {
    pub file: String,
    pub hash: String,
}

/// What the model card says beyond what the checkpoint records.
#[derive(Clone, Debug)]
pub struct CardInfo {
    /// Title of the card (default: the folder's name).
    pub name: Option<String>,
    /// SPDX id or `other` (front matter `license`).
    pub license: String,
    /// ISO 639 codes of the languages the model was trained on (front matter `language`).
    pub languages: Vec<String>,
    /// The store the model was trained on, summarised in the card.
    pub data: Option<DataSummary>,
    /// A held-out evaluation, shown as the card's table.
    pub evaluation: Option<StoreEvaluation>,
}

/// A concept store, as the card describes training data.
#[derive(Clone, Debug, Serialize)]
pub struct DataSummary {
    pub store: String,
    pub documents: usize,
    pub sentences: usize,
    pub encoder_id: String,
    pub segmenter: String,
}

impl DataSummary {
    pub fn of_store(path: &Path) -> Result<Self> {
        let store = ConceptStore::open(path)?;
        Ok(Self {
            store: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string()),
            documents: store.num_documents(),
            sentences: store.num_sentences(),
            encoder_id: store.meta.encoder_id.clone(),
            segmenter: store.meta.segmenter_version.clone(),
        })
    }
}

/// What [`export_model`] wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ExportSummary {
    pub out: PathBuf,
    pub architecture: String,
    pub preset: String,
    pub step: u64,
    pub parameters: u64,
    pub files: Vec<String>,
}

/// The languages a card declares when none are given: English for the English-only
/// MiniLM space, nothing claimed for other encoders (the user names them).
pub fn default_languages(space_id: &str) -> Vec<String> {
    if space_id.to_ascii_lowercase().contains("all-minilm") {
        vec!["en".into()]
    } else {
        Vec::new()
    }
}

/// Writes `trained` into the folder `out` as an export, `encoder` being the name its space
/// loads with. The folder is assembled next to `out` and renamed into place, so an
/// interrupted export leaves no half-written model; an existing non-empty `out` is
/// refused unless `overwrite`, and then replaced only once the new folder is complete.
pub fn export_model(
    trained: &TrainedLcm,
    encoder: &str,
    out: &Path,
    card: &CardInfo,
    overwrite: bool,
) -> Result<ExportSummary> {
    let occupied = fs::read_dir(out)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if occupied && !overwrite {
        return Err(WorkflowError::Refused(format!(
            "{} exists and is not empty; choose another --out or pass --force to replace it",
            out.display()
        )));
    }
    if out.exists() && !out.is_dir() {
        return Err(WorkflowError::Refused(format!(
            "{} exists and is not a folder",
            out.display()
        )));
    }
    let weights = trained.loaded.checkpoint.join(MODEL_FILE);
    let parameters = count_parameters(&weights)?;
    let loaded = &trained.loaded;
    let config = ExportConfig {
        library_name: "lcm".into(),
        format: EXPORT_FORMAT.into(),
        architecture: loaded.kind.name().to_string(),
        preset: loaded.preset.clone(),
        model_config: loaded.state.model_config.clone(),
        space_id: trained.encoder_id().to_string(),
        encoder: encoder.to_string(),
        dim: trained.normalizer.dim(),
        parameters,
        normalizer: ExportedNormalizer {
            file: EXPORT_NORMALIZER_FILE.into(),
            hash: normalizer_hash(&trained.normalizer),
        },
        step: loaded.state.step,
        trained_with: loaded.state.tool_version.clone(),
        exported_with: concat!("lcm ", env!("CARGO_PKG_VERSION")).into(),
        train_config: loaded.train_config.clone(),
    };

    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_error(&parent))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| WorkflowError::Refused(format!("{} names no folder", out.display())))?;
    let staging = parent.join(format!(".{name}.export-tmp"));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
    }
    fs::create_dir_all(&staging).map_err(io_error(&staging))?;

    let target = staging.join(MODEL_FILE);
    fs::copy(&weights, &target).map_err(io_error(&weights))?;
    trained
        .normalizer
        .save(&staging.join(EXPORT_NORMALIZER_FILE))?;
    let config_text = serde_json::to_vec_pretty(&config)
        .map_err(|e| WorkflowError::Config(format!("serialising {EXPORT_CONFIG_FILE}: {e}")))?;
    write_synced(&staging.join(EXPORT_CONFIG_FILE), &config_text)?;
    let title = card.name.clone().unwrap_or_else(|| name.clone());
    write_synced(
        &staging.join(MODEL_CARD_FILE),
        model_card(&title, &config, card).as_bytes(),
    )?;
    for file in [MODEL_FILE, EXPORT_NORMALIZER_FILE] {
        let path = staging.join(file);
        fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(io_error(&path))?;
    }

    // Replace: the old folder is moved aside first, so `out` is at every moment either
    // the old export or the new one.
    let previous = parent.join(format!(".{name}.export-old"));
    if out.exists() {
        if previous.exists() {
            fs::remove_dir_all(&previous).map_err(io_error(&previous))?;
        }
        fs::rename(out, &previous).map_err(io_error(out))?;
    }
    fs::rename(&staging, out).map_err(io_error(out))?;
    if previous.exists() {
        fs::remove_dir_all(&previous).map_err(io_error(&previous))?;
    }
    Ok(ExportSummary {
        out: out.to_path_buf(),
        architecture: config.architecture,
        preset: config.preset,
        step: config.step,
        parameters,
        files: [
            MODEL_FILE,
            EXPORT_CONFIG_FILE,
            EXPORT_NORMALIZER_FILE,
            MODEL_CARD_FILE,
        ]
        .map(String::from)
        .to_vec(),
    })
}

/// The export configuration of `dir`, or `None` when `dir` is no export (a run directory
/// has a `config.json` too, without `library_name: lcm`). A `config.json` that claims to
/// be an export but cannot be read is an error naming the file.
pub fn read_export_config(dir: &Path) -> Result<Option<ExportConfig>> {
    let path = dir.join(EXPORT_CONFIG_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = fs::read(&path).map_err(io_error(&path))?;
    let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(None);
    };
    if value.get("library_name").and_then(Value::as_str) != Some("lcm") {
        return Ok(None);
    }
    let format = value.get("format").and_then(Value::as_str).unwrap_or("");
    if format != EXPORT_FORMAT {
        return Err(WorkflowError::Refused(format!(
            "{} is an lcm export of format `{format}`, which this version does not read \
             (it reads `{EXPORT_FORMAT}`); export the model again with this version",
            path.display()
        )));
    }
    let config: ExportConfig = serde_json::from_value(value).map_err(|e| {
        WorkflowError::Refused(format!(
            "{} is not a valid lcm export configuration: {e}",
            path.display()
        ))
    })?;
    Ok(Some(config))
}

impl ExportConfig {
    /// The training state a checkpoint would hold, for the loader: the normaliser is the
    /// one in `dir` (wherever the folder has moved), the RNG a fixed placeholder (an export
    /// is not resumable).
    pub(crate) fn as_state(&self, dir: &Path) -> TrainState {
        let normalizer = std::path::absolute(dir.join(&self.normalizer.file))
            .unwrap_or_else(|_| dir.join(&self.normalizer.file));
        TrainState {
            step: self.step,
            rng: RngState::capture(&new_rng(0)),
            data: Default::default(),
            space_id: self.space_id.clone(),
            normalizer: Some(NormalizerRef {
                path: normalizer.display().to_string(),
                hash: self.normalizer.hash.clone(),
            }),
            tool_version: self.trained_with.clone(),
            model_config: self.model_config.clone(),
            extra: serde_json::json!({ "config": self.train_config }),
        }
    }
}

/// Number of weights in a safetensors file, read from its header only.
fn count_parameters(path: &Path) -> Result<u64> {
    let bad = |reason: String| {
        WorkflowError::Refused(format!(
            "{} is not a readable safetensors file ({reason})",
            path.display()
        ))
    };
    let mut file = fs::File::open(path).map_err(io_error(path))?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length)
        .map_err(|e| bad(format!("header: {e}")))?;
    let length = u64::from_le_bytes(length);
    if length > 100 << 20 {
        return Err(bad(format!("header of {length} bytes")));
    }
    let mut header = vec![0u8; length as usize];
    file.read_exact(&mut header)
        .map_err(|e| bad(format!("header: {e}")))?;
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    Ok(header
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .map(|(_, tensor)| {
            tensor["shape"]
                .as_array()
                .map(|dims| dims.iter().filter_map(Value::as_u64).product::<u64>())
                .unwrap_or(0)
        })
        .sum())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = fs::File::create(path).map_err(io_error(path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error(path))
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> WorkflowError + '_ {
    move |source| WorkflowError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A YAML string: JSON's quoting is valid YAML.
fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// The model card: YAML front matter as the Hugging Face hub reads it, then what the model
/// is, how to use it, what it was trained on and how it evaluates.
fn model_card(title: &str, config: &ExportConfig, card: &CardInfo) -> String {
    let mut text = String::from("---\n");
    let _ = writeln!(text, "license: {}", yaml_string(&card.license));
    if !card.languages.is_empty() {
        text.push_str("language:\n");
        for language in &card.languages {
            let _ = writeln!(text, "- {}", yaml_string(language));
        }
    }
    text.push_str("library_name: lcm\n");
    text.push_str("pipeline_tag: text-generation\n");
    text.push_str("tags:\n- large-concept-model\n- sentence-embeddings\n");
    let _ = writeln!(text, "- {}", yaml_string(&config.architecture));
    let _ = writeln!(text, "concept_encoder: {}", yaml_string(&config.space_id));
    text.push_str("---\n\n");

    let _ = writeln!(text, "# {title}\n");
    let _ = writeln!(
        text,
        "A {} Large Concept Model (preset `{}`, {} parameters) that predicts the next \
         sentence embedding (\"concept\") of a text in the {}-dimensional space of the \
         sentence encoder `{}`. Text goes in as sentences encoded by that encoder; \
         generated concepts come out as text through a decoder (retrieval over a sentence \
         bank, or a trained concept decoder).\n",
        config.architecture,
        config.preset,
        human_count(config.parameters),
        config.dim,
        config.space_id
    );

    text.push_str("## Use\n\n```sh\n");
    let _ = writeln!(
        text,
        "lcm generate --model THIS_FOLDER --encoder {} --store STORE \"The prompt.\"",
        config.encoder
    );
    text.push_str("```\n\n```python\nimport lcm\n");
    let _ = writeln!(
        text,
        "model = lcm.LCM.load(\"THIS_FOLDER\", store=\"STORE\")\nfor sentence, similarity in \
         model.generate(\"The prompt.\", max_sentences=4, seed=0):\n    print(sentence)"
    );
    text.push_str("```\n\n");
    text.push_str(
        "`STORE` is a concept store (`lcm prepare`) whose sentences the retrieval decoder \
         returns; pass `--decoder DIR` instead for a trained decoder of the same space.\n\n",
    );

    text.push_str("## Model\n\n| | |\n|---|---|\n");
    let _ = writeln!(text, "| Architecture | {} |", config.architecture);
    let _ = writeln!(text, "| Preset | {} |", config.preset);
    let _ = writeln!(text, "| Parameters | {} |", config.parameters);
    let _ = writeln!(text, "| Concept encoder | `{}` |", config.space_id);
    let _ = writeln!(text, "| Concept dimension | {} |", config.dim);
    let _ = writeln!(text, "| Training steps | {} |", config.step);
    if let Some(train) = &config.train_config {
        let _ = writeln!(
            text,
            "| Concepts seen (at most) | {} ({} steps × {} concepts per batch, padding \
             included) |",
            config.step.saturating_mul(train.max_concepts as u64),
            config.step,
            train.max_concepts
        );
        let _ = writeln!(
            text,
            "| Optimiser | AdamW, peak LR {}, {} warm-up steps, cosine to {}×, clip {} |",
            train.lr, train.warmup_steps, train.final_lr_scale, train.clip
        );
        let _ = writeln!(text, "| Seed | {} |", train.seed);
        let _ = writeln!(
            text,
            "| Held-out fraction | {} (by document id) |",
            train.valid_fraction
        );
    }
    let _ = writeln!(text, "| Trained with | {} |", config.trained_with);
    text.push('\n');

    text.push_str("## Training data\n\n");
    match &card.data {
        Some(data) => {
            let _ = writeln!(
                text,
                "The concept store `{}`: {} documents, {} sentences, segmented by `{}` and \
                 encoded by `{}`. The held-out documents (the fraction above) were never \
                 trained on.\n",
                data.store, data.documents, data.sentences, data.segmenter, data.encoder_id
            );
        }
        None => text.push_str(
            "Not recorded: the export was made without `--store`, so this card does not \
             describe the training documents.\n\n",
        ),
    }

    text.push_str("## Evaluation\n\n");
    match &card.evaluation {
        Some(evaluation) => {
            let _ = writeln!(
                text,
                "Teacher-forced next-concept prediction on {} held-out sequence(s) ({} \
                 concepts, held-out fraction {}), next to the trivial baselines. ℓ2: mean \
                 distance to the true next concept (lower is better); CA: contrastive \
                 accuracy, how often the prediction is closer to the true next concept than \
                 to the other held-out concepts (higher is better); PAR: paraphrasing \
                 ratio, the prediction's closest cosine to the context over the true next \
                 concept's (above 1: the model paraphrases its context).\n",
                evaluation.outcome.sequences,
                evaluation.outcome.concepts,
                evaluation.valid_fraction
            );
            text.push_str(&evaluation.to_markdown());
            text.push('\n');
        }
        None => text.push_str(
            "Not evaluated at export (pass `--store` to `lcm export` to add the held-out \
             table).\n\n",
        ),
    }

    text.push_str(
        "## Limitations\n\nA research model: it continues text in the register of its \
         training documents, only in the languages its encoder and data cover, and its \
         output is only as good as the decoder that turns concepts back into text \
         (retrieval can only return sentences it holds).\n",
    );
    text
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_strings_are_quoted_and_escaped() {
        assert_eq!(yaml_string("apache-2.0"), "\"apache-2.0\"");
        assert_eq!(yaml_string("a\"b: c"), "\"a\\\"b: c\"");
    }

    #[test]
    fn default_languages_claim_english_only_for_minilm() {
        assert_eq!(
            default_languages("sentence-transformers/all-MiniLM-L6-v2@abc"),
            vec!["en".to_string()]
        );
        assert!(default_languages("multilingual-e5-small-q4@abc").is_empty());
    }

    #[test]
    fn parameters_are_counted_from_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let a = vec![0u8; 4 * 6];
        let b = vec![0u8; 4 * 5];
        let views = [
            (
                "a",
                safetensors::tensor::TensorView::new(
                    safetensors::tensor::Dtype::F32,
                    vec![2, 3],
                    &a,
                )
                .unwrap(),
            ),
            (
                "b",
                safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::F32, vec![5], &b)
                    .unwrap(),
            ),
        ];
        safetensors::serialize_to_file(views, None, &path).unwrap();
        assert_eq!(count_parameters(&path).unwrap(), 11);
        fs::write(&path, [1u8, 2, 3]).unwrap();
        let error = count_parameters(&path).unwrap_err().to_string();
        assert!(error.contains("w.safetensors"), "{error}");
    }
}
