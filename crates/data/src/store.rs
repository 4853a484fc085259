//! The Parquet concept store: documents as lists of sentences and their concept vectors.
//!
//! Columns follow the LCM reference's layout so its tooling can read our stores:
//!
//! | column               | Arrow type                                  |
//! |----------------------|---------------------------------------------|
//! | `id`                 | `utf8`                                      |
//! | `source`             | `utf8`                                      |
//! | `text_sentences`     | `list<utf8>`                                |
//! | `text_sentences_emb` | `list<fixed_size_list<float32 \| float16>[D]>` |
//!
//! Every file carries key-value metadata (encoder id, dimension, dtype, segmenter and tool
//! versions) so that a store can never silently mix embedding spaces.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float16Array, Float32Array, ListArray,
    RecordBatch, StringArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Float16Type, Float32Type, Schema, SchemaRef};
use half::f16;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result, io_error};

pub const ID_COLUMN: &str = "id";
pub const SOURCE_COLUMN: &str = "source";
pub const SENTENCES_COLUMN: &str = "text_sentences";
pub const EMBEDDINGS_COLUMN: &str = "text_sentences_emb";

pub const META_ENCODER: &str = "lcm.encoder_id";
pub const META_DIM: &str = "lcm.dim";
pub const META_DTYPE: &str = "lcm.dtype";
pub const META_SEGMENTER: &str = "lcm.segmenter_version";
pub const META_TOOL: &str = "lcm.tool_version";
pub const TOOL_VERSION: &str = concat!("lcm ", env!("CARGO_PKG_VERSION"));

/// Storage precision of the concept vectors; readers always return f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreDType {
    F32,
    F16,
}

impl StoreDType {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreDType::F32 => "f32",
            StoreDType::F16 => "f16",
        }
    }
    fn arrow(self) -> DataType {
        match self {
            StoreDType::F32 => DataType::Float32,
            StoreDType::F16 => DataType::Float16,
        }
    }
}

impl std::str::FromStr for StoreDType {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "float32" => Ok(StoreDType::F32),
            "f16" | "float16" => Ok(StoreDType::F16),
            other => Err(DataError::Invalid(format!(
                "unknown dtype `{other}`: use f32 or f16"
            ))),
        }
    }
}

/// What ties a store to its embedding space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreMeta {
    pub encoder_id: String,
    pub dim: usize,
    pub dtype: StoreDType,
    pub segmenter_version: String,
    pub tool_version: String,
}

impl StoreMeta {
    fn to_map(&self) -> HashMap<String, String> {
        HashMap::from([
            (META_ENCODER.to_string(), self.encoder_id.clone()),
            (META_DIM.to_string(), self.dim.to_string()),
            (META_DTYPE.to_string(), self.dtype.as_str().to_string()),
            (META_SEGMENTER.to_string(), self.segmenter_version.clone()),
            (META_TOOL.to_string(), self.tool_version.clone()),
        ])
    }

    fn from_map(map: &arrow::datatypes::Metadata, path: &Path) -> Result<Self> {
        let get = |key: &str| {
            map.get(key).cloned().ok_or_else(|| DataError::Schema {
                path: path.to_path_buf(),
                reason: format!(
                    "missing `{key}` metadata: not a concept store written by `lcm prepare`"
                ),
            })
        };
        let dim = get(META_DIM)?.parse().map_err(|_| DataError::Schema {
            path: path.to_path_buf(),
            reason: format!("`{META_DIM}` metadata is not a number"),
        })?;
        Ok(Self {
            encoder_id: get(META_ENCODER)?,
            dim,
            dtype: get(META_DTYPE)?.parse()?,
            segmenter_version: get(META_SEGMENTER)?,
            tool_version: get(META_TOOL)?,
        })
    }

    /// Refuses `other` unless it lives in the same embedding space.
    pub fn check_same_space(&self, other: &StoreMeta, other_path: &Path) -> Result<()> {
        if self.encoder_id != other.encoder_id || self.dim != other.dim {
            return Err(DataError::EncoderMismatch {
                path: other_path.to_path_buf(),
                expected: self.encoder_id.clone(),
                expected_dim: self.dim,
                found: other.encoder_id.clone(),
                found_dim: other.dim,
            });
        }
        Ok(())
    }

    pub fn schema(&self) -> SchemaRef {
        let vector = DataType::FixedSizeList(
            Arc::new(Field::new("item", self.dtype.arrow(), true)),
            self.dim as i32,
        );
        Arc::new(
            Schema::new(vec![
                Field::new(ID_COLUMN, DataType::Utf8, false),
                Field::new(SOURCE_COLUMN, DataType::Utf8, false),
                Field::new(
                    SENTENCES_COLUMN,
                    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                    false,
                ),
                Field::new(
                    EMBEDDINGS_COLUMN,
                    DataType::List(Arc::new(Field::new("item", vector, true))),
                    false,
                ),
            ])
            .with_metadata(self.to_map()),
        )
    }
}

/// One document of a store: its sentences and their concepts, row-major `[sentences, dim]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptDocument {
    pub id: String,
    pub source: String,
    pub sentences: Vec<String>,
    pub embeddings: Vec<f32>,
}

impl ConceptDocument {
    pub fn len(&self) -> usize {
        self.sentences.len()
    }
    pub fn is_empty(&self) -> bool {
        self.sentences.is_empty()
    }
}

fn record_batch(meta: &StoreMeta, documents: &[ConceptDocument]) -> Result<RecordBatch> {
    let schema = meta.schema();
    let mut lengths = Vec::with_capacity(documents.len());
    for doc in documents {
        if doc.embeddings.len() != doc.sentences.len() * meta.dim {
            return Err(DataError::Invalid(format!(
                "document `{}` has {} sentences but {} embedding values (dim {})",
                doc.id,
                doc.sentences.len(),
                doc.embeddings.len(),
                meta.dim
            )));
        }
        if let Some(position) = doc.embeddings.iter().position(|v| !v.is_finite()) {
            return Err(DataError::Invalid(format!(
                "document `{}`: sentence {} has a non-finite embedding value ({}); refusing to store it",
                doc.id,
                position / meta.dim,
                doc.embeddings[position]
            )));
        }
        lengths.push(doc.sentences.len());
    }
    let ids = StringArray::from_iter_values(documents.iter().map(|d| d.id.as_str()));
    let sources = StringArray::from_iter_values(documents.iter().map(|d| d.source.as_str()));
    let offsets = OffsetBuffer::<i32>::from_lengths(lengths);
    let sentence_values = StringArray::from_iter_values(
        documents
            .iter()
            .flat_map(|d| d.sentences.iter().map(String::as_str)),
    );
    let sentences = ListArray::try_new(
        Arc::new(Field::new("item", DataType::Utf8, true)),
        offsets.clone(),
        Arc::new(sentence_values),
        None,
    )
    .map_err(|e| DataError::Invalid(e.to_string()))?;
    let flat = documents.iter().flat_map(|d| d.embeddings.iter().copied());
    let scalars: ArrayRef = match meta.dtype {
        StoreDType::F32 => Arc::new(Float32Array::from_iter_values(flat)),
        StoreDType::F16 => Arc::new(Float16Array::from_iter_values(flat.map(f16::from_f32))),
    };
    let vectors = FixedSizeListArray::try_new(
        Arc::new(Field::new("item", meta.dtype.arrow(), true)),
        meta.dim as i32,
        scalars,
        None,
    )
    .map_err(|e| DataError::Invalid(e.to_string()))?;
    let vector_type = vectors.data_type().clone();
    let embeddings = ListArray::try_new(
        Arc::new(Field::new("item", vector_type, true)),
        offsets,
        Arc::new(vectors),
        None,
    )
    .map_err(|e| DataError::Invalid(e.to_string()))?;
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(ids),
            Arc::new(sources),
            Arc::new(sentences),
            Arc::new(embeddings),
        ],
    )
    .map_err(|e| DataError::Invalid(e.to_string()))
}

/// Path of the temporary file a shard is written to before it is renamed into place.
pub use lcm_util::fs::temporary_path;

/// Writes `documents` as one Parquet file at `path`, atomically: data goes to `path.tmp`, is
/// flushed to disk, then renamed, so a reader (or a resumed run) sees a whole file or none.
pub fn write_shard(path: &Path, meta: &StoreMeta, documents: &[ConceptDocument]) -> Result<()> {
    let batch = record_batch(meta, documents)?;
    let temporary = temporary_path(path);
    let file = File::create(&temporary).map_err(io_error(&temporary))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).map_err(|e| DataError::Invalid(format!("zstd level: {e}")))?,
        ))
        .set_max_row_group_row_count(Some(256))
        // Also as plain Parquet key-value metadata, for readers that ignore the Arrow schema.
        .set_key_value_metadata(Some(
            meta.to_map()
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_iter()
                .map(|(k, v)| parquet::file::metadata::KeyValue::new(k, v))
                .collect(),
        ))
        .build();
    let parquet_error = |e: parquet::errors::ParquetError| DataError::BadParquet {
        path: temporary.clone(),
        reason: e.to_string(),
    };
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), Some(properties)).map_err(parquet_error)?;
    writer.write(&batch).map_err(parquet_error)?;
    let mut file = writer.into_inner().map_err(parquet_error)?;
    file.flush().map_err(io_error(&temporary))?;
    file.sync_all().map_err(io_error(&temporary))?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(io_error(path))?;
    Ok(())
}

/// A single Parquet file of a store, opened and checked.
#[derive(Debug, Clone)]
pub struct StoreFile {
    pub path: PathBuf,
    pub meta: StoreMeta,
    pub documents: usize,
    pub sentences: usize,
}

fn open_builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).map_err(io_error(path))?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| DataError::BadParquet {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn check_schema(path: &Path, schema: &Schema, meta: &StoreMeta) -> Result<()> {
    let schema_error = |reason: String| DataError::Schema {
        path: path.to_path_buf(),
        reason,
    };
    for column in [ID_COLUMN, SENTENCES_COLUMN, EMBEDDINGS_COLUMN] {
        if schema.field_with_name(column).is_err() {
            return Err(schema_error(format!("missing column `{column}`")));
        }
    }
    let embedding_type = schema
        .field_with_name(EMBEDDINGS_COLUMN)
        .map_err(|e| schema_error(e.to_string()))?
        .data_type();
    let DataType::List(item) = embedding_type else {
        return Err(schema_error(format!(
            "`{EMBEDDINGS_COLUMN}` must be list<fixed_size_list<float>>, found {embedding_type}"
        )));
    };
    let DataType::FixedSizeList(scalar, size) = item.data_type() else {
        return Err(schema_error(format!(
            "`{EMBEDDINGS_COLUMN}` must be list<fixed_size_list<float>>, found {embedding_type}"
        )));
    };
    if *size as usize != meta.dim {
        return Err(schema_error(format!(
            "vectors have dimension {size} but the file's metadata says {}",
            meta.dim
        )));
    }
    if scalar.data_type() != &meta.dtype.arrow() {
        return Err(schema_error(format!(
            "vectors are {} but the file's metadata says {}",
            scalar.data_type(),
            meta.dtype.as_str()
        )));
    }
    Ok(())
}

impl StoreFile {
    /// Reads and validates the footer (metadata, schema, counts) without reading the data.
    pub fn open(path: &Path) -> Result<Self> {
        let builder = open_builder(path)?;
        let schema = builder.schema().clone();
        let meta = StoreMeta::from_map(schema.metadata(), path)?;
        check_schema(path, &schema, &meta)?;
        let documents = builder.metadata().file_metadata().num_rows() as usize;
        // Sentence counts are the lengths of the `text_sentences` lists: read only that column.
        let mask =
            parquet::arrow::ProjectionMask::columns(builder.parquet_schema(), [SENTENCES_COLUMN]);
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(|e| DataError::BadParquet {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let mut sentences = 0usize;
        for batch in reader {
            let batch = batch.map_err(|e| DataError::BadParquet {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            let list = batch.column(0).as_list::<i32>();
            let offsets = list.value_offsets();
            sentences += (offsets[offsets.len() - 1] - offsets[0]) as usize;
        }
        Ok(Self {
            path: path.to_path_buf(),
            meta,
            documents,
            sentences,
        })
    }

    pub fn documents(&self) -> Result<DocumentIter> {
        let reader = open_builder(&self.path)?
            .with_batch_size(64)
            .build()
            .map_err(|e| DataError::BadParquet {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        Ok(DocumentIter {
            path: self.path.clone(),
            dim: self.meta.dim,
            reader,
            pending: Vec::new().into_iter(),
        })
    }
}

/// Streams the documents of one file, a batch of rows at a time.
pub struct DocumentIter {
    path: PathBuf,
    dim: usize,
    reader: ParquetRecordBatchReader,
    pending: std::vec::IntoIter<ConceptDocument>,
}

impl DocumentIter {
    fn decode(&self, batch: &RecordBatch) -> Result<Vec<ConceptDocument>> {
        let schema_error = |reason: String| DataError::Schema {
            path: self.path.clone(),
            reason,
        };
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| schema_error(format!("missing column `{name}`")))
        };
        let ids = column(ID_COLUMN)?
            .as_string_opt::<i32>()
            .ok_or_else(|| schema_error("`id` is not utf8".into()))?;
        let sources = batch
            .column_by_name(SOURCE_COLUMN)
            .and_then(|c| c.as_string_opt::<i32>().cloned());
        let sentences = column(SENTENCES_COLUMN)?
            .as_list_opt::<i32>()
            .ok_or_else(|| schema_error("`text_sentences` is not a list".into()))?;
        let embeddings = column(EMBEDDINGS_COLUMN)?
            .as_list_opt::<i32>()
            .ok_or_else(|| schema_error("`text_sentences_emb` is not a list".into()))?;
        let vectors = embeddings
            .values()
            .as_fixed_size_list_opt()
            .ok_or_else(|| schema_error("vectors are not fixed_size_list".into()))?;
        let scalars = vectors.values();
        let values: Vec<f32> = if let Some(f) = scalars.as_primitive_opt::<Float32Type>() {
            f.values().to_vec()
        } else if let Some(h) = scalars.as_primitive_opt::<Float16Type>() {
            h.values().iter().map(|v| v.to_f32()).collect()
        } else {
            return Err(schema_error(format!(
                "vector values are {}, expected float32 or float16",
                scalars.data_type()
            )));
        };
        let vector_base = vectors.offset();
        let mut documents = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let sentence_list = sentences.value(row);
            let sentence_list = sentence_list
                .as_string_opt::<i32>()
                .ok_or_else(|| schema_error("`text_sentences` items are not utf8".into()))?;
            let texts: Vec<String> = (0..sentence_list.len())
                .map(|i| sentence_list.value(i).to_string())
                .collect();
            let offsets = embeddings.value_offsets();
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            if end - start != texts.len() {
                return Err(schema_error(format!(
                    "row {row} (`{}`): {} sentences but {} vectors",
                    ids.value(row),
                    texts.len(),
                    end - start
                )));
            }
            let first = (vector_base + start) * self.dim;
            let last = (vector_base + end) * self.dim;
            let row_values = values.get(first..last).ok_or_else(|| {
                schema_error(format!(
                    "row {row}: vector values out of range (corrupt file?)"
                ))
            })?;
            if let Some(bad) = row_values.iter().position(|v| !v.is_finite()) {
                return Err(DataError::NonFinite {
                    path: self.path.clone(),
                    reason: format!(
                        "row {row} (`{}`), sentence {}: non-finite embedding value {}",
                        ids.value(row),
                        bad / self.dim,
                        row_values[bad]
                    ),
                });
            }
            documents.push(ConceptDocument {
                id: ids.value(row).to_string(),
                source: sources
                    .as_ref()
                    .map(|s| s.value(row).to_string())
                    .unwrap_or_default(),
                sentences: texts,
                embeddings: row_values.to_vec(),
            });
        }
        Ok(documents)
    }
}

impl Iterator for DocumentIter {
    type Item = Result<ConceptDocument>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(doc) = self.pending.next() {
                return Some(Ok(doc));
            }
            let batch = match self.reader.next()? {
                Ok(batch) => batch,
                Err(e) => {
                    return Some(Err(DataError::BadParquet {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    }));
                }
            };
            match self.decode(&batch) {
                Ok(docs) => self.pending = docs.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// A concept store: one Parquet file or a directory of shards, all in one embedding space.
#[derive(Debug, Clone)]
pub struct ConceptStore {
    pub root: PathBuf,
    pub meta: StoreMeta,
    pub files: Vec<StoreFile>,
}

/// Parquet files directly under `dir` (sorted), ignoring temporary files of interrupted writes.
pub fn shard_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if path.extension().is_some_and(|e| e == "parquet") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

impl ConceptStore {
    pub fn open(path: &Path) -> Result<Self> {
        let paths = if path.is_dir() {
            shard_paths(path)?
        } else if path.exists() {
            vec![path.to_path_buf()]
        } else {
            return Err(DataError::Invalid(format!(
                "concept store {} does not exist; create one with `lcm prepare INPUT --out {}`",
                path.display(),
                path.display()
            )));
        };
        if paths.is_empty() {
            return Err(DataError::Invalid(format!(
                "{} holds no .parquet shards; create them with `lcm prepare INPUT --out {}`",
                path.display(),
                path.display()
            )));
        }
        let mut files = Vec::with_capacity(paths.len());
        for p in &paths {
            files.push(StoreFile::open(p)?);
        }
        let meta = files[0].meta.clone();
        for file in &files[1..] {
            meta.check_same_space(&file.meta, &file.path)?;
        }
        Ok(Self {
            root: path.to_path_buf(),
            meta,
            files,
        })
    }

    /// Opens the store and refuses it unless its vectors come from `encoder_id`.
    pub fn open_expecting(path: &Path, encoder_id: &str, dim: usize) -> Result<Self> {
        let store = Self::open(path)?;
        let expected = StoreMeta {
            encoder_id: encoder_id.to_string(),
            dim,
            ..store.meta.clone()
        };
        expected.check_same_space(&store.meta, path)?;
        Ok(store)
    }

    pub fn num_documents(&self) -> usize {
        self.files.iter().map(|f| f.documents).sum()
    }

    pub fn num_sentences(&self) -> usize {
        self.files.iter().map(|f| f.sentences).sum()
    }

    /// All documents of all shards, in shard order.
    pub fn documents(&self) -> impl Iterator<Item = Result<ConceptDocument>> + '_ {
        self.files.iter().flat_map(|file| {
            let iter: Box<dyn Iterator<Item = Result<ConceptDocument>>> = match file.documents() {
                Ok(iter) => Box::new(iter),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
            iter
        })
    }
}
