//! Corpus readers: JSONL files, folders of plain-text files and Parquet files with a text
//! column, streamed one document at a time so memory stays bounded by the largest document.
//!
//! Bad input never aborts silently and never aborts a long job by default: a line that is not
//! valid UTF-8 or not valid JSON is skipped, counted and logged with its file and line number
//! (`strict` turns that into an error instead); empty documents are skipped and counted. A
//! document id seen before is reported with both places it occurs (`strict` refuses it), since
//! everything downstream — the held-out split, `lcm inspect`, resumable shards — names
//! documents by id.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde::Serialize;

use crate::error::{DataError, Result, io_error};

/// One input document before segmentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub id: String,
    pub source: String,
    pub text: String,
    /// The document's language tag as written in the input (JSON lines: the
    /// [`ReaderOptions::lang_field`] field), if it has one.
    pub lang: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// JSON field / Parquet column holding the text.
    pub text_field: String,
    /// JSON field / Parquet column holding the document id (generated when absent).
    pub id_field: String,
    /// Fail on the first malformed line instead of skipping it.
    pub strict: bool,
    /// JSON field holding a document's language tag (`fr`, `fra_Latn`, `pt_BR`).
    pub lang_field: String,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        Self {
            text_field: "text".into(),
            id_field: "id".into(),
            strict: false,
            lang_field: "lang".into(),
        }
    }
}

/// What was skipped while reading, reported at the end of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReadStats {
    pub documents: usize,
    pub invalid_utf8_lines: usize,
    pub invalid_json_lines: usize,
    pub missing_text: usize,
    pub empty_documents: usize,
    /// Documents whose id an earlier document already had.
    pub duplicate_ids: usize,
}

/// Where a document came from: an input file and, for JSONL and Parquet, its line or row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    file: usize,
    /// 1-based JSONL line, 0-based Parquet row; `None` for a whole text file.
    position: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Jsonl,
    Text,
    Parquet,
}

fn format_of(path: &Path) -> Option<Format> {
    match path.extension()?.to_str()? {
        "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
        "txt" | "text" | "md" => Some(Format::Text),
        "parquet" => Some(Format::Parquet),
        _ => None,
    }
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io_error(path))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .map_err(io_error(path))?;
        entries.sort();
        for entry in entries {
            if entry.is_dir() || format_of(&entry).is_some() {
                collect_files(&entry, out)?;
            }
        }
        Ok(())
    } else if path.is_file() {
        if format_of(path).is_none() {
            return Err(DataError::Invalid(format!(
                "{}: unknown input format; use .jsonl (one {{\"text\": ...}} object per line), .txt or .parquet",
                path.display()
            )));
        }
        out.push(path.to_path_buf());
        Ok(())
    } else {
        Err(DataError::Invalid(format!(
            "input {} does not exist",
            path.display()
        )))
    }
}

/// The input files `inputs` expand to (directories are walked recursively in sorted order).
pub fn input_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        collect_files(input, &mut files)?;
    }
    Ok(files)
}

enum Current {
    Jsonl {
        path: PathBuf,
        reader: BufReader<File>,
        line: usize,
        stem: String,
    },
    Parquet {
        path: PathBuf,
        reader: ParquetRecordBatchReader,
        /// Decoded rows of the current record batch with their row numbers.
        pending: std::vec::IntoIter<(usize, Document)>,
        row: usize,
        stem: String,
    },
}

/// Streams documents from a list of input files.
pub struct DocumentReader {
    options: ReaderOptions,
    files: std::vec::IntoIter<PathBuf>,
    /// Common root used to make ids of plain-text files relative.
    roots: Vec<PathBuf>,
    current: Option<Current>,
    pub stats: ReadStats,
    /// Every input file opened so far, indexed by `Location::file`.
    opened: Vec<PathBuf>,
    /// Where the document returned last by `next_raw` came from.
    last_location: Location,
    /// First place each document id was seen.
    seen_ids: HashMap<String, Location>,
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn json_id(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl DocumentReader {
    pub fn open(inputs: &[PathBuf], options: ReaderOptions) -> Result<Self> {
        let files = input_files(inputs)?;
        if files.is_empty() {
            return Err(DataError::Invalid(format!(
                "no .jsonl, .txt or .parquet files found in {}",
                inputs
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(Self {
            options,
            files: files.into_iter(),
            roots: inputs.to_vec(),
            current: None,
            stats: ReadStats::default(),
            opened: Vec::new(),
            last_location: Location {
                file: 0,
                position: None,
            },
            seen_ids: HashMap::new(),
        })
    }

    fn describe(&self, location: Location) -> String {
        let path = self
            .opened
            .get(location.file)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        match location.position {
            None => path,
            Some(row) if self.is_parquet(location.file) => format!("{path} row {row}"),
            Some(line) => format!("{path}:{line}"),
        }
    }

    fn is_parquet(&self, file: usize) -> bool {
        self.opened
            .get(file)
            .is_some_and(|p| format_of(p) == Some(Format::Parquet))
    }

    /// Records the id of a document about to be returned; a repeated id is warned about with
    /// both places (or refused under `strict`), and the document is kept.
    fn check_duplicate_id(&mut self, id: &str) -> Result<()> {
        let here = self.last_location;
        let Some(&first) = self.seen_ids.get(id) else {
            self.seen_ids.insert(id.to_string(), here);
            return Ok(());
        };
        self.stats.duplicate_ids += 1;
        let (first, second) = (self.describe(first), self.describe(here));
        if self.options.strict {
            return Err(DataError::DuplicateId {
                id: id.to_string(),
                first,
                second,
            });
        }
        tracing::warn!(
            "duplicate document id `{id}`: first at {first}, again at {second}; both kept (--strict refuses duplicates)"
        );
        Ok(())
    }

    fn skip_or_fail(&mut self, path: &Path, line: usize, reason: String) -> Result<()> {
        if self.options.strict {
            return Err(DataError::BadLine {
                path: path.to_path_buf(),
                line,
                reason,
            });
        }
        tracing::warn!("{}:{line}: {reason}; skipped", path.display());
        Ok(())
    }

    fn relative_id(&self, path: &Path) -> String {
        for root in &self.roots {
            if let Ok(relative) = path.strip_prefix(root)
                && !relative.as_os_str().is_empty()
            {
                return relative.with_extension("").to_string_lossy().into_owned();
            }
        }
        stem(path)
    }

    /// Reads a whole plain-text file as one document, skipping lines that are not UTF-8.
    fn read_text_file(&mut self, path: &Path) -> Result<Option<Document>> {
        self.last_location = Location {
            file: self.opened.len() - 1,
            position: None,
        };
        let mut reader = BufReader::new(File::open(path).map_err(io_error(path))?);
        let mut text = String::new();
        let mut buffer = Vec::new();
        let mut line = 0usize;
        loop {
            buffer.clear();
            let n = reader
                .read_until(b'\n', &mut buffer)
                .map_err(io_error(path))?;
            if n == 0 {
                break;
            }
            line += 1;
            match std::str::from_utf8(&buffer) {
                Ok(s) => text.push_str(s),
                Err(e) => {
                    self.stats.invalid_utf8_lines += 1;
                    self.skip_or_fail(path, line, format!("invalid UTF-8 ({e})"))?;
                }
            }
        }
        Ok(Some(Document {
            id: self.relative_id(path),
            source: "text".into(),
            text,
            lang: None,
        }))
    }

    fn open_parquet(&self, path: &Path) -> Result<Current> {
        let file = File::open(path).map_err(io_error(path))?;
        let bad = |reason: String| DataError::BadParquet {
            path: path.to_path_buf(),
            reason,
        };
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(e.to_string()))?;
        let schema = builder.schema();
        match schema.field_with_name(&self.options.text_field) {
            Ok(field)
                if matches!(
                    field.data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) => {}
            Ok(field) => {
                return Err(DataError::Schema {
                    path: path.to_path_buf(),
                    reason: format!(
                        "column `{}` is {}, not a string column",
                        self.options.text_field,
                        field.data_type()
                    ),
                });
            }
            Err(_) => {
                return Err(DataError::Schema {
                    path: path.to_path_buf(),
                    reason: format!(
                        "no text column `{}` (columns: {}); pick one with --text-field",
                        self.options.text_field,
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        let reader = builder
            .with_batch_size(256)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Current::Parquet {
            path: path.to_path_buf(),
            reader,
            pending: Vec::new().into_iter(),
            row: 0,
            stem: stem(path),
        })
    }

    fn parquet_batch(
        &self,
        path: &Path,
        batch: &arrow::array::RecordBatch,
        first_row: usize,
        stem: &str,
    ) -> Result<Vec<(usize, Document)>> {
        let texts = arrow::compute::cast(
            batch
                .column_by_name(&self.options.text_field)
                .ok_or_else(|| DataError::Schema {
                    path: path.to_path_buf(),
                    reason: format!("no column `{}`", self.options.text_field),
                })?,
            &DataType::Utf8,
        )
        .map_err(|e| DataError::BadParquet {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let texts = texts.as_string::<i32>();
        let ids = match batch.column_by_name(&self.options.id_field) {
            Some(column) => Some(arrow::compute::cast(column, &DataType::Utf8).map_err(|e| {
                DataError::BadParquet {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }
            })?),
            None => None,
        };
        let ids = ids.as_ref().map(|a| a.as_string::<i32>());
        let mut documents = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let text = if texts.is_null(row) {
                String::new()
            } else {
                texts.value(row).to_string()
            };
            let id = match ids {
                Some(ids) if !ids.is_null(row) => ids.value(row).to_string(),
                _ => format!("{stem}/{}", first_row + row),
            };
            documents.push((
                first_row + row,
                Document {
                    id,
                    source: stem.to_string(),
                    text,
                    lang: None,
                },
            ));
        }
        Ok(documents)
    }

    /// The next raw document (possibly empty), or `None` at the end of all inputs.
    fn next_raw(&mut self) -> Result<Option<Document>> {
        loop {
            match self.current.take() {
                None => {
                    let Some(path) = self.files.next() else {
                        return Ok(None);
                    };
                    self.opened.push(path.clone());
                    match format_of(&path) {
                        Some(Format::Text) => return self.read_text_file(&path),
                        Some(Format::Jsonl) => {
                            let file = File::open(&path).map_err(io_error(&path))?;
                            self.current = Some(Current::Jsonl {
                                stem: stem(&path),
                                path,
                                reader: BufReader::with_capacity(1 << 20, file),
                                line: 0,
                            });
                        }
                        Some(Format::Parquet) => self.current = Some(self.open_parquet(&path)?),
                        None => {}
                    }
                }
                Some(Current::Jsonl {
                    path,
                    mut reader,
                    mut line,
                    stem,
                }) => {
                    let mut buffer = Vec::new();
                    let n = reader
                        .read_until(b'\n', &mut buffer)
                        .map_err(io_error(&path))?;
                    if n == 0 {
                        continue;
                    }
                    line += 1;
                    self.last_location = Location {
                        file: self.opened.len() - 1,
                        position: Some(line),
                    };
                    let parsed = self.parse_json_line(&path, line, &stem, &buffer);
                    self.current = Some(Current::Jsonl {
                        path,
                        reader,
                        line,
                        stem,
                    });
                    if let Some(document) = parsed? {
                        return Ok(Some(document));
                    }
                }
                Some(Current::Parquet {
                    path,
                    mut reader,
                    mut pending,
                    mut row,
                    stem,
                }) => {
                    if let Some((row, document)) = pending.next() {
                        self.last_location = Location {
                            file: self.opened.len() - 1,
                            position: Some(row),
                        };
                        self.current = Some(Current::Parquet {
                            path,
                            reader,
                            pending,
                            row,
                            stem,
                        });
                        return Ok(Some(document));
                    }
                    match reader.next() {
                        None => continue,
                        Some(Err(e)) => {
                            return Err(DataError::BadParquet {
                                path,
                                reason: e.to_string(),
                            });
                        }
                        Some(Ok(batch)) => {
                            let documents = self.parquet_batch(&path, &batch, row, &stem)?;
                            row += batch.num_rows();
                            self.current = Some(Current::Parquet {
                                path,
                                reader,
                                pending: documents.into_iter(),
                                row,
                                stem,
                            });
                        }
                    }
                }
            }
        }
    }

    fn parse_json_line(
        &mut self,
        path: &Path,
        line: usize,
        stem: &str,
        bytes: &[u8],
    ) -> Result<Option<Document>> {
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                self.stats.invalid_utf8_lines += 1;
                self.skip_or_fail(path, line, format!("invalid UTF-8 ({e})"))?;
                return Ok(None);
            }
        };
        if text.trim().is_empty() {
            return Ok(None);
        }
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(e) => {
                self.stats.invalid_json_lines += 1;
                self.skip_or_fail(path, line, format!("invalid JSON ({e})"))?;
                return Ok(None);
            }
        };
        let Some(body) = value.get(&self.options.text_field).and_then(|v| v.as_str()) else {
            self.stats.missing_text += 1;
            let field = self.options.text_field.clone();
            self.skip_or_fail(
                path,
                line,
                format!("no string field `{field}` (choose another with --text-field)"),
            )?;
            return Ok(None);
        };
        Ok(Some(Document {
            id: value
                .get(&self.options.id_field)
                .and_then(json_id)
                .unwrap_or_else(|| format!("{stem}/{line}")),
            source: value
                .get("source")
                .and_then(|v| v.as_str())
                .unwrap_or(stem)
                .to_string(),
            text: body.to_string(),
            lang: value
                .get(&self.options.lang_field)
                .and_then(|v| v.as_str())
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        }))
    }
}

impl Iterator for DocumentReader {
    type Item = Result<Document>;

    /// Non-empty documents only; empty ones are counted in `stats.empty_documents`.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_raw() {
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
                Ok(Some(document)) => {
                    if document.text.trim().is_empty() {
                        self.stats.empty_documents += 1;
                        tracing::debug!("document `{}` is empty; skipped", document.id);
                        continue;
                    }
                    if let Err(e) = self.check_duplicate_id(&document.id) {
                        return Some(Err(e));
                    }
                    self.stats.documents += 1;
                    return Some(Ok(document));
                }
            }
        }
    }
}
