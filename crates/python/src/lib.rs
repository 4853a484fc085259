//! The `lcm` Python package: sentence segmentation, concept encoders and trained LCMs, each
//! call a call of the library API the `lcm` command uses, with the GIL released while Rust
//! works. Library errors become `lcm.LcmError` carrying the whole message chain; a wrong
//! argument type is Python's own `TypeError`.

use std::path::PathBuf;
use std::sync::Arc;

use lcm_concept::ConceptEncoder;
use lcm_concept::bert::{BertEncoder, EncoderOptions};
use lcm_concept::resolve::resolve_model;
use lcm_concept::segment::{Segmenter, SegmenterConfig};
use lcm_workflows::SamplingSettings;
use lcm_workflows::encode::encode_sentences;
use lcm_workflows::generate::StopRules;
use lcm_workflows::session::{DecoderChoice, GenerationSession};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::prelude::*;

create_exception!(_lcm, LcmError, PyException, "An error of the lcm library.");

/// The error with every cause, as the CLI prints it (`a: b: c`).
fn library_error(error: &(dyn std::error::Error + 'static)) -> PyErr {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    LcmError::new_err(message)
}

/// Sentences of `text`: the plain split of `lcm segment`, or with `max_chars` the stores'
/// re-split of long sentences (256 in `lcm prepare`).
#[pyfunction]
#[pyo3(signature = (text, lang=None, max_chars=None))]
fn segment(
    py: Python<'_>,
    text: String,
    lang: Option<String>,
    max_chars: Option<usize>,
) -> Vec<String> {
    let config = SegmenterConfig {
        max_chars: max_chars.unwrap_or(0),
        lang,
        ..SegmenterConfig::default()
    };
    py.detach(move || Segmenter::new(config).segment(&text))
}

/// A sentence encoder (`minilm`, `e5`, an HF repo id or a sentence-transformers folder),
/// with sentence-transformers' `encode` keywords.
#[pyclass(frozen, module = "lcm")]
struct Encoder {
    inner: Arc<BertEncoder>,
}

#[pymethods]
impl Encoder {
    #[new]
    #[pyo3(signature = (model="minilm".into(), batch_size=32, threads=None))]
    fn new(
        py: Python<'_>,
        model: PathBuf,
        batch_size: usize,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let name = model.to_string_lossy().into_owned();
        let threads =
            threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let encoder = py.detach(move || {
            let folder = resolve_model(&name)?;
            let options = EncoderOptions {
                batch_size: batch_size.max(1),
                threads: threads.max(1),
                ..EncoderOptions::default()
            };
            BertEncoder::from_folder(&folder, &options)
        });
        Ok(Self {
            inner: Arc::new(encoder.map_err(|e| library_error(&e))?),
        })
    }

    /// Dimension of the concepts.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// The embedding space's id, as stores and checkpoints record it.
    #[getter]
    fn id(&self) -> String {
        self.inner.id().to_string()
    }

    /// float32 concepts, shape `(n, dim)` for a list of sentences and `(dim,)` for one
    /// string. `batch_size` is fixed when the encoder is created (rows do not depend on it);
    /// the keyword is accepted here for sentence-transformers compatibility, as is
    /// `show_progress_bar` (no bar is drawn).
    #[pyo3(signature = (sentences, batch_size=None, normalize_embeddings=false, show_progress_bar=false, lang=None))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        sentences: &Bound<'py, PyAny>,
        batch_size: Option<usize>,
        normalize_embeddings: bool,
        show_progress_bar: bool,
        lang: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = (batch_size, show_progress_bar);
        let (sentences, single) = match sentences.extract::<String>() {
            Ok(one) => (vec![one], true),
            Err(_) => (
                sentences.extract::<Vec<String>>().map_err(|_| {
                    PyTypeError::new_err("sentences must be a str or a list of str")
                })?,
                false,
            ),
        };
        let encoder = self.inner.clone();
        let mut embeddings = py
            .detach(move || encode_sentences(encoder.as_ref(), &sentences, lang.as_deref()))
            .map_err(|e| library_error(&e))?;
        if normalize_embeddings {
            embeddings.l2_normalize();
        }
        let (rows, cols) = (embeddings.rows, embeddings.cols);
        let array = PyArray1::from_vec(py, embeddings.values);
        if single {
            return Ok(array.into_any());
        }
        Ok(array.reshape([rows, cols])?.into_any())
    }

    fn __repr__(&self) -> String {
        format!(
            "Encoder(id={:?}, dim={})",
            self.inner.id(),
            self.inner.dim()
        )
    }
}

/// A trained LCM with its encoder and decoder, loaded once (`LCM.load`).
#[pyclass(frozen, module = "lcm", name = "LCM")]
struct Lcm {
    session: Arc<GenerationSession>,
}

#[pymethods]
impl Lcm {
    /// Loads `run` (a `lcm train --out` directory, its checkpoints/ or a step) with the
    /// encoder of its space and a decoder: retrieval over `store`'s (or `bank`'s) sentences,
    /// or a trained `decoder` with `beam` beams.
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (run, store=None, bank=None, decoder=None, beam=5, encoder="minilm".into(), normalizer=None))]
    fn load(
        py: Python<'_>,
        run: PathBuf,
        store: Option<PathBuf>,
        bank: Option<PathBuf>,
        decoder: Option<PathBuf>,
        beam: usize,
        encoder: PathBuf,
        normalizer: Option<PathBuf>,
    ) -> PyResult<Self> {
        if store.is_none() && bank.is_none() && decoder.is_none() {
            return Err(LcmError::new_err(
                "LCM.load needs a decoder: pass store=, bank= or decoder=",
            ));
        }
        let session = py
            .detach(move || {
                let name = encoder.to_string_lossy().into_owned();
                let folder = resolve_model(&name).map_err(lcm_workflows::WorkflowError::from)?;
                let encoder = BertEncoder::from_folder(&folder, &EncoderOptions::default())?;
                let choice = DecoderChoice {
                    bank,
                    store,
                    trained: decoder.map(|dir| (dir, beam)),
                };
                GenerationSession::open(
                    &run,
                    normalizer.as_deref(),
                    Arc::new(encoder),
                    &name,
                    &choice,
                    &mut |_| {},
                )
            })
            .map_err(|e| library_error(&e))?;
        Ok(Self {
            session: Arc::new(session),
        })
    }

    /// Kind, preset and training step of the model.
    #[getter]
    fn label(&self) -> String {
        self.session.trained().label()
    }

    /// The embedding space the model was trained in.
    #[getter]
    fn encoder_id(&self) -> String {
        self.session.trained().encoder_id().to_string()
    }

    /// Continues `prompt` concept by concept and decodes it: `(sentence, similarity)` pairs,
    /// the same as `lcm generate --json` for the same seed and settings.
    #[pyo3(signature = (prompt, max_sentences=8, seed=0, guidance_scale=None, ddim_steps=None, eos_threshold=0.9, repetition_threshold=0.9, allow_prompt_sentences=false))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: String,
        max_sentences: usize,
        seed: u64,
        guidance_scale: Option<f64>,
        ddim_steps: Option<usize>,
        eos_threshold: f32,
        repetition_threshold: f32,
        allow_prompt_sentences: bool,
    ) -> PyResult<Vec<(String, Option<f32>)>> {
        let mut settings = SamplingSettings::default();
        if let Some(g) = guidance_scale {
            settings.guidance_scale = g;
        }
        if let Some(steps) = ddim_steps {
            settings.ddim_steps = steps;
        }
        let rules = StopRules {
            max_sentences,
            eos_threshold,
            repetition_threshold,
        };
        let session = self.session.clone();
        let generation = py
            .detach(move || {
                let sampling = settings.diffusion()?;
                session.generate(&prompt, &rules, &sampling, seed, allow_prompt_sentences)
            })
            .map_err(|e| library_error(&e))?;
        Ok(generation
            .sentences
            .into_iter()
            .map(|d| (d.text, d.score))
            .collect())
    }

    fn __repr__(&self) -> String {
        format!("LCM({})", self.session.trained().label())
    }
}

#[pymodule]
fn _lcm(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(segment, m)?)?;
    m.add_class::<Encoder>()?;
    m.add_class::<Lcm>()?;
    m.add("LcmError", m.py().get_type::<LcmError>())?;
    Ok(())
}
