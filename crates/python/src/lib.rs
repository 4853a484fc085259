//! The `lcm` Python package: sentence segmentation, concept encoders and trained LCMs, each
//! call a call of the library API the `lcm` command uses, with the GIL released while Rust
//! works. Library errors become `lcm.LcmError` carrying the whole message chain; a wrong
//! argument type is Python's own `TypeError`.

use std::path::PathBuf;
use std::sync::Arc;

use lcm_concept::ConceptEncoder;
use lcm_concept::bert::EncoderOptions;
use lcm_concept::segment::{Segmenter, SegmenterConfig};
use lcm_workflows::encode::encode_sentences;
use lcm_workflows::encoders::{
    AnyEncoder, Recorded, load_encoder, load_encoder_for, resolve_language,
};
use lcm_workflows::evaluate::{EvalConfig, HeldOut};
use lcm_workflows::generate::{ContinuationDecoder, StopRules};
use lcm_workflows::load::checkpoint_space_id;
use lcm_workflows::session::{DecoderChoice, GenerationSession};
use lcm_workflows::store::{ConceptStore as Store, StoreDocuments, StoreMeta};
use lcm_workflows::vectors::{decode_vectors, next_concepts, open_decoder};
use lcm_workflows::{SamplingSettings, eos_embedding};
use numpy::{AllowTypeChange, PyArray1, PyArrayLike2, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::prelude::*;

create_exception!(_lcm, LcmError, PyException, "An error of the lcm library.");

/// The error with every cause, as the CLI prints it (`a: b: c`).
fn library_error(error: &(dyn std::error::Error + 'static)) -> PyErr {
    LcmError::new_err(lcm_workflows::error_message(error))
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

/// A concept encoder (`minilm`, `e5`, `sonar`, an HF repo id, a sentence-transformers
/// folder or a folder of SONAR's files), with sentence-transformers' `encode` keywords.
#[pyclass(frozen, module = "lcm")]
struct Encoder {
    inner: Arc<AnyEncoder>,
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
        let options = EncoderOptions {
            batch_size: batch_size.max(1),
            threads: threads.max(1),
            ..EncoderOptions::default()
        };
        let encoder = py.detach(move || load_encoder(&name, &options));
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
            .detach(move || {
                let lang = resolve_language(lang.as_deref())?;
                encode_sentences(encoder.as_ref(), &sentences, lang)
            })
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
    /// Loads `run` (a `lcm train --out` directory, its checkpoints/ or a step, or an `lcm
    /// export` folder) with the encoder of its space (the one it records unless `encoder`
    /// names it) and a decoder: retrieval over `store`'s (or `bank`'s) sentences,
    /// or a trained `decoder` with `beam` beams.
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (run, store=None, bank=None, decoder=None, beam=5, encoder=None, normalizer=None))]
    fn load(
        py: Python<'_>,
        run: PathBuf,
        store: Option<PathBuf>,
        bank: Option<PathBuf>,
        decoder: Option<PathBuf>,
        beam: usize,
        encoder: Option<PathBuf>,
        normalizer: Option<PathBuf>,
    ) -> PyResult<Self> {
        if store.is_none() && bank.is_none() && decoder.is_none() {
            return Err(LcmError::new_err(
                "LCM.load needs a decoder: pass store=, bank= or decoder=",
            ));
        }
        let session = py
            .detach(move || {
                let requested = encoder.map(|e| e.to_string_lossy().into_owned());
                let what = format!("the model {}", run.display());
                let recorded = Recorded {
                    id: &checkpoint_space_id(&run)?,
                    what: &what,
                };
                let encoder = load_encoder_for(
                    requested.as_deref(),
                    Some(recorded),
                    &EncoderOptions::default(),
                )?;
                let name = requested.unwrap_or_else(|| encoder.id().to_string());
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
        let settings = sampling_settings(guidance_scale, ddim_steps);
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

    /// The model's next concept after each context: `contexts` is one float array
    /// `(n, dim)` of raw concepts (as `Encoder.encode` returns them) → `(dim,)`, or a list
    /// of them → `(len, dim)`. Each context's diffusion noise is seeded by `seed` alone, so
    /// a row does not depend on the other contexts; it is the first concept `generate`
    /// produces for the same prompt and seed.
    #[pyo3(signature = (contexts, seed=0, guidance_scale=None, ddim_steps=None))]
    fn next_concepts<'py>(
        &self,
        py: Python<'py>,
        contexts: &Bound<'py, PyAny>,
        seed: u64,
        guidance_scale: Option<f64>,
        ddim_steps: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let dim = self.session.trained().model().input_dim();
        let (contexts, single) = match contexts.extract::<PyArrayLike2<'py, f32, AllowTypeChange>>()
        {
            Ok(one) => (vec![matrix(&one, dim, "context")?], true),
            Err(_) => {
                let list = contexts
                    .extract::<Vec<PyArrayLike2<'py, f32, AllowTypeChange>>>()
                    .map_err(|_| {
                        PyTypeError::new_err(
                            "contexts must be a 2-D float array (n, dim) or a list of them",
                        )
                    })?;
                let rows = list
                    .iter()
                    .map(|c| matrix(c, dim, "context"))
                    .collect::<PyResult<Vec<_>>>()?;
                (rows, false)
            }
        };
        let settings = sampling_settings(guidance_scale, ddim_steps);
        let session = self.session.clone();
        let count = contexts.len();
        let predicted = py
            .detach(move || {
                let sampling = settings.diffusion()?;
                next_concepts(session.trained(), &contexts, &sampling, seed)
            })
            .map_err(|e| library_error(&e))?;
        let array = PyArray1::from_vec(py, predicted);
        if single {
            return Ok(array.into_any());
        }
        Ok(array.reshape([count, dim])?.into_any())
    }

    /// Teacher-forced evaluation on the held-out split of `store` (the one the model was
    /// trained on) next to the trivial baselines: the dict `lcm eval --json` prints.
    #[pyo3(signature = (store, max_concepts=8192, valid_fraction=None, seed=0, guidance_scale=None, ddim_steps=None))]
    #[allow(clippy::too_many_arguments)]
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        store: PathBuf,
        max_concepts: usize,
        valid_fraction: Option<f64>,
        seed: u64,
        guidance_scale: Option<f64>,
        ddim_steps: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let settings = sampling_settings(guidance_scale, ddim_steps);
        let session = self.session.clone();
        let report = py
            .detach(move || {
                let trained = session.trained();
                let held_out = HeldOut::open(trained, &store, valid_fraction)?;
                let config = EvalConfig {
                    max_concepts,
                    batch_concepts: 4096,
                    sampling: settings.diffusion()?,
                    seed,
                };
                let eos = eos_embedding(session.encoder())?;
                let evaluation =
                    held_out.evaluate(trained, &trained.loaded.checkpoint, eos, &config)?;
                Ok::<_, lcm_workflows::WorkflowError>(evaluation.to_json().to_string())
            })
            .map_err(|e| library_error(&e))?;
        py.import("json")?.call_method1("loads", (report,))
    }

    fn __repr__(&self) -> String {
        format!("LCM({})", self.session.trained().label())
    }
}

/// Diffusion sampling: the paper's defaults with the keywords given.
fn sampling_settings(guidance_scale: Option<f64>, ddim_steps: Option<usize>) -> SamplingSettings {
    SamplingSettings::default().with_overrides(guidance_scale, ddim_steps)
}

/// A 2-D float array with `dim` columns as row-major numbers; `what` names it in errors.
fn matrix(
    array: &PyArrayLike2<'_, f32, AllowTypeChange>,
    dim: usize,
    what: &str,
) -> PyResult<Vec<f32>> {
    let shape = array.shape();
    if shape[1] != dim {
        return Err(LcmError::new_err(format!(
            "{what} has shape ({}, {}), but the model's concepts have {dim} dimensions",
            shape[0], shape[1]
        )));
    }
    Ok(array.as_array().iter().copied().collect())
}

/// A concept store (`lcm prepare --out`): its metadata, documents and vectors.
#[pyclass(frozen, module = "lcm")]
struct ConceptStore {
    path: PathBuf,
    meta: StoreMeta,
    shards: Vec<PathBuf>,
    documents: usize,
    sentences: usize,
}

#[pymethods]
impl ConceptStore {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let opened = py
            .detach(|| {
                let store = Store::open(&path)?;
                let shards = StoreDocuments::open(&path)?.shards().to_vec();
                Ok::<_, lcm_workflows::WorkflowError>((store, shards))
            })
            .map_err(|e| library_error(&e))?;
        let (store, shards) = opened;
        Ok(Self {
            documents: store.num_documents(),
            sentences: store.num_sentences(),
            meta: store.meta.clone(),
            path,
            shards,
        })
    }

    /// The store's metadata: encoder id, dimension, dtype, segmenter and tool versions.
    #[getter]
    fn meta(&self) -> std::collections::BTreeMap<&'static str, String> {
        std::collections::BTreeMap::from([
            ("encoder_id", self.meta.encoder_id.clone()),
            ("dim", self.meta.dim.to_string()),
            ("dtype", self.meta.dtype.as_str().to_string()),
            ("segmenter_version", self.meta.segmenter_version.clone()),
            ("tool_version", self.meta.tool_version.clone()),
        ])
    }

    #[getter]
    fn dim(&self) -> usize {
        self.meta.dim
    }

    #[getter]
    fn encoder_id(&self) -> String {
        self.meta.encoder_id.clone()
    }

    /// Number of sentences (concepts) in all documents.
    #[getter]
    fn num_sentences(&self) -> usize {
        self.sentences
    }

    /// The Parquet shard files, in order (for `pyarrow.parquet.read_table`).
    #[getter]
    fn shards(&self) -> Vec<PathBuf> {
        self.shards.clone()
    }

    fn __len__(&self) -> usize {
        self.documents
    }

    /// Documents in store order, each a dict: `id`, `source`, `sentences` (list of str) and
    /// `concepts` (float32 array `(len(sentences), dim)`).
    fn __iter__(&self, py: Python<'_>) -> PyResult<Documents> {
        let path = self.path.clone();
        let documents = py
            .detach(move || StoreDocuments::open(&path))
            .map_err(|e| library_error(&e))?;
        Ok(Documents {
            dim: self.meta.dim,
            inner: std::sync::Mutex::new(documents),
        })
    }

    /// The store as a `pyarrow.Table` (columns as in the Parquet shards), read by pyarrow
    /// itself; needs the `pyarrow` package.
    fn to_pyarrow<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let parquet = py.import("pyarrow.parquet").map_err(|_| {
            LcmError::new_err("ConceptStore.to_pyarrow needs pyarrow: pip install pyarrow")
        })?;
        let paths: Vec<String> = self
            .shards
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let tables = paths
            .iter()
            .map(|p| parquet.call_method1("read_table", (p,)))
            .collect::<PyResult<Vec<_>>>()?;
        py.import("pyarrow")?
            .call_method1("concat_tables", (tables,))
    }

    /// Every concept of the store, float32 `(num_sentences, dim)`, documents in order.
    fn concepts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let path = self.path.clone();
        let values = py
            .detach(move || {
                let mut values = Vec::new();
                for document in StoreDocuments::open(&path)? {
                    values.extend(document?.embeddings);
                }
                Ok::<_, lcm_workflows::WorkflowError>(values)
            })
            .map_err(|e| library_error(&e))?;
        let rows = values.len() / self.meta.dim.max(1);
        Ok(PyArray1::from_vec(py, values)
            .reshape([rows, self.meta.dim])?
            .into_any())
    }

    fn __repr__(&self) -> String {
        format!(
            "ConceptStore({:?}, documents={}, sentences={}, encoder_id={:?})",
            self.path.display().to_string(),
            self.documents,
            self.sentences,
            self.meta.encoder_id
        )
    }
}

/// The documents of a [`ConceptStore`], read shard by shard.
#[pyclass(module = "lcm")]
struct Documents {
    dim: usize,
    // A Parquet reader is not `Sync`, which a Python object must be; only `__next__`
    // (holding `&mut self`) touches it.
    inner: std::sync::Mutex<StoreDocuments>,
}

#[pymethods]
impl Documents {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let documents = self
            .inner
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(next) = py.detach(|| documents.next()) else {
            return Ok(None);
        };
        let document = next.map_err(|e| library_error(&e))?;
        let rows = document.sentences.len();
        let dict = pyo3::types::PyDict::new(py);
        dict.set_item("id", document.id)?;
        dict.set_item("source", document.source)?;
        dict.set_item("sentences", document.sentences)?;
        dict.set_item(
            "concepts",
            PyArray1::from_vec(py, document.embeddings).reshape([rows, self.dim])?,
        )?;
        Ok(Some(dict.into_any()))
    }
}

/// A concept decoder on its own: retrieval over a store's (or a bank's) sentences, a decoder
/// trained with `lcm train-decoder`, or SONAR's.
#[pyclass(frozen, module = "lcm")]
struct Decoder {
    inner: Arc<ContinuationDecoder>,
}

#[pymethods]
impl Decoder {
    /// `store=` or `bank=` for retrieval (the nearest sentence by cosine), or `model=` a
    /// trained decoder's folder, `sonar` or a folder of SONAR's files, with `beam` beams.
    #[new]
    #[pyo3(signature = (store=None, bank=None, model=None, beam=5))]
    fn new(
        py: Python<'_>,
        store: Option<PathBuf>,
        bank: Option<PathBuf>,
        model: Option<PathBuf>,
        beam: usize,
    ) -> PyResult<Self> {
        if [&store, &bank, &model]
            .iter()
            .filter(|c| c.is_some())
            .count()
            != 1
        {
            return Err(LcmError::new_err(
                "Decoder needs exactly one of store=, bank= or model=",
            ));
        }
        let choice = DecoderChoice {
            bank,
            store,
            trained: model.map(|dir| (dir, beam)),
        };
        let decoder = py
            .detach(move || open_decoder(&choice, &mut |_| {}))
            .map_err(|e| library_error(&e))?;
        Ok(Self {
            inner: Arc::new(decoder),
        })
    }

    /// `"retrieval"`, `"trained"` or `"sonar"`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    /// Text for each row of `vectors` (float array `(n, dim)`, raw concepts), SONAR's in the
    /// language `lang` (SONAR or ISO 639-1 code, default English); with `with_scores`,
    /// `(text, score)` pairs (retrieval's cosine; None for generated text).
    #[pyo3(signature = (vectors, lang=None, with_scores=false))]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        vectors: PyArrayLike2<'py, f32, AllowTypeChange>,
        lang: Option<String>,
        with_scores: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let dim = vectors.shape()[1];
        let rows: Vec<f32> = vectors.as_array().iter().copied().collect();
        let decoder = self.inner.clone();
        let decoded = py
            .detach(move || {
                let lang = resolve_language(lang.as_deref())?;
                decode_vectors(&decoder, &rows, dim, lang, "vectors")
            })
            .map_err(|e| library_error(&e))?;
        if with_scores {
            let pairs: Vec<(String, Option<f32>)> =
                decoded.into_iter().map(|d| (d.text, d.score)).collect();
            return Ok(pairs.into_pyobject(py)?.into_any());
        }
        let texts: Vec<String> = decoded.into_iter().map(|d| d.text).collect();
        Ok(texts.into_pyobject(py)?.into_any())
    }

    fn __repr__(&self) -> String {
        format!(
            "Decoder(kind={:?}, path={:?})",
            self.inner.kind(),
            self.inner.path().display().to_string()
        )
    }
}

#[pymodule]
fn _lcm(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(segment, m)?)?;
    m.add_class::<Encoder>()?;
    m.add_class::<Lcm>()?;
    m.add_class::<ConceptStore>()?;
    m.add_class::<Documents>()?;
    m.add_class::<Decoder>()?;
    m.add("LcmError", m.py().get_type::<LcmError>())?;
    Ok(())
}
