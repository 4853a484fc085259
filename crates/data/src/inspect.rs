//! `inspect`: what is in a concept store, a Parquet file or a safetensors artifact.

use std::fmt;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use safetensors::SafeTensors;

use crate::error::{DataError, Result, io_error};
use crate::prepare::STATE_FILE;
use crate::store::ConceptStore;

/// A report as titled sections of key/value lines; rendered as text or JSON.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub sections: Vec<(String, Vec<(String, String)>)>,
}

impl Report {
    fn section(&mut self, title: &str) -> &mut Vec<(String, String)> {
        self.sections.push((title.to_string(), Vec::new()));
        let last = self.sections.len() - 1;
        &mut self.sections[last].1
    }

    /// Value of `key` in section `title`, for callers and tests.
    pub fn get(&self, title: &str, key: &str) -> Option<&str> {
        self.sections
            .iter()
            .find(|(t, _)| t == title)
            .and_then(|(_, lines)| lines.iter().find(|(k, _)| k == key))
            .map(|(_, v)| v.as_str())
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut root = serde_json::Map::new();
        for (title, lines) in &self.sections {
            let mut section = serde_json::Map::new();
            for (key, value) in lines {
                section.insert(key.clone(), serde_json::Value::String(value.clone()));
            }
            root.insert(title.clone(), serde_json::Value::Object(section));
        }
        serde_json::Value::Object(root)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (title, lines) in &self.sections {
            writeln!(f, "{title}")?;
            let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (key, value) in lines {
                writeln!(f, "  {key:width$}  {value}")?;
            }
        }
        Ok(())
    }
}

fn push(lines: &mut Vec<(String, String)>, key: &str, value: impl ToString) {
    lines.push((key.to_string(), value.to_string()));
}

/// Inspects `path`: a store directory, a Parquet file, or a safetensors file.
pub fn inspect(path: &Path) -> Result<Report> {
    if !path.exists() {
        return Err(DataError::Invalid(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if path.is_dir() || extension == "parquet" {
        match ConceptStore::open(path) {
            Ok(store) => inspect_store(path, &store),
            Err(DataError::Schema { .. }) if path.is_file() => inspect_plain_parquet(path),
            Err(e) => Err(e),
        }
    } else if extension == "safetensors" {
        inspect_safetensors(path)
    } else {
        Err(DataError::Invalid(format!(
            "{}: don't know how to inspect this; give a concept store directory, a .parquet or a .safetensors file",
            path.display()
        )))
    }
}

#[derive(Default)]
struct Running {
    count: usize,
    sum: f64,
    min: f64,
    max: f64,
}

impl Running {
    fn add(&mut self, v: f64) {
        if self.count == 0 {
            self.min = v;
            self.max = v;
        }
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
    fn describe(&self) -> String {
        if self.count == 0 {
            return "n/a".into();
        }
        format!(
            "min {:.4}  mean {:.4}  max {:.4}",
            self.min,
            self.sum / self.count as f64,
            self.max
        )
    }
}

fn inspect_store(path: &Path, store: &ConceptStore) -> Result<Report> {
    let mut report = Report::default();
    let dim = store.meta.dim;
    {
        let lines = report.section("store");
        push(lines, "path", path.display());
        push(lines, "files", store.files.len());
        push(lines, "encoder", &store.meta.encoder_id);
        push(lines, "dim", dim);
        push(lines, "dtype", store.meta.dtype.as_str());
        push(lines, "segmenter", &store.meta.segmenter_version);
        push(lines, "written by", &store.meta.tool_version);
        push(lines, "documents", store.num_documents());
        push(lines, "sentences", store.num_sentences());
        if path.is_dir() {
            let state = path.join(STATE_FILE);
            let status = match std::fs::read_to_string(&state) {
                Ok(text) if text.contains("\"complete\": true") => "complete",
                Ok(_) => "incomplete (re-run the same `lcm prepare` to resume)",
                Err(_) => "no prepare state file",
            };
            push(lines, "prepare", status);
        }
    }
    if let Some(first) = store.files.first() {
        let builder = std::fs::File::open(&first.path).ok().and_then(|f| {
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).ok()
        });
        if let Some(builder) = builder {
            let columns = report.section("columns");
            for field in builder.schema().fields() {
                push(columns, field.name(), field.data_type());
            }
        }
    }
    let mut per_document = Running::default();
    let mut characters = Running::default();
    let mut norms = Running::default();
    let mut sums = vec![0f64; dim];
    let mut squares = vec![0f64; dim];
    let mut vectors = 0usize;
    for document in store.documents() {
        let document = document?;
        per_document.add(document.len() as f64);
        for sentence in &document.sentences {
            characters.add(sentence.chars().count() as f64);
        }
        for vector in document.embeddings.chunks_exact(dim) {
            let mut norm = 0f64;
            for (j, &v) in vector.iter().enumerate() {
                let v = v as f64;
                norm += v * v;
                sums[j] += v;
                squares[j] += v * v;
            }
            norms.add(norm.sqrt());
            vectors += 1;
        }
    }
    let lines = report.section("statistics");
    push(lines, "sentences per document", per_document.describe());
    push(lines, "characters per sentence", characters.describe());
    push(lines, "vector L2 norm", norms.describe());
    if vectors > 0 {
        let n = vectors as f64;
        let mut means = Running::default();
        let mut stds = Running::default();
        for j in 0..dim {
            let mean = sums[j] / n;
            means.add(mean);
            stds.add((squares[j] / n - mean * mean).max(0.0).sqrt());
        }
        push(lines, "per-dimension mean", means.describe());
        push(lines, "per-dimension std", stds.describe());
    }
    push(
        lines,
        "non-finite values",
        "0 (every vector is checked on read)",
    );
    Ok(report)
}

fn inspect_plain_parquet(path: &Path) -> Result<Report> {
    let file = std::fs::File::open(path).map_err(io_error(path))?;
    let reader = SerializedFileReader::new(file).map_err(|e| DataError::BadParquet {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let metadata = reader.metadata();
    let mut report = Report::default();
    let lines = report.section("parquet");
    push(lines, "path", path.display());
    push(lines, "rows", metadata.file_metadata().num_rows());
    push(lines, "row groups", metadata.num_row_groups());
    push(lines, "note", "not a concept store (no lcm metadata)");
    let schema = report.section("columns");
    for column in metadata.file_metadata().schema_descr().columns() {
        push(
            schema,
            &column.path().string(),
            format!("{}", column.physical_type()),
        );
    }
    Ok(report)
}

fn inspect_safetensors(path: &Path) -> Result<Report> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    let bad = |e: safetensors::SafeTensorError| {
        DataError::Invalid(format!(
            "{} is not a valid safetensors file ({e})",
            path.display()
        ))
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(bad)?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(bad)?;
    let mut report = Report::default();
    let lines = report.section("safetensors");
    push(lines, "path", path.display());
    push(lines, "bytes", bytes.len());
    push(lines, "tensors", tensors.len());
    let mut metadata: Vec<(String, String)> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    metadata.sort();
    let section = report.section("metadata");
    section.extend(metadata);
    let mut names = tensors.names();
    names.sort();
    let mut listing = Vec::new();
    for name in names {
        let view = tensors.tensor(name).map_err(bad)?;
        let mut description = format!("{:?} {:?}", view.dtype(), view.shape());
        if view.dtype() == safetensors::Dtype::F32 {
            let mut stats = Running::default();
            for chunk in view.data().chunks_exact(4) {
                stats.add(f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as f64);
            }
            description.push_str(&format!("  {}", stats.describe()));
        }
        listing.push((name.to_string(), description));
    }
    report.section("tensors").extend(listing);
    Ok(report)
}
