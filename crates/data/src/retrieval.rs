//! The retrieval decoder: decodes a concept to the sentence of a [`SentenceBank`] with the
//! highest cosine similarity (exact search, blocked matrix products over the memory-mapped
//! unit vectors), optionally excluding sentences (e.g. a held-out split's).

use std::collections::HashSet;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use lcm_concept::{ConceptDecoder, ConceptError, DecodeConfig, Decoded};

use crate::error::{DataError, Result};
use crate::sentence_bank::{DEFAULT_BLOCK_ROWS, SentenceBank};

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Row of the bank.
    pub index: usize,
    pub text: String,
    /// Cosine similarity between the query and the bank sentence's vector.
    pub score: f32,
}

/// Decodes a concept to the bank sentence of highest cosine similarity (exact search).
#[derive(Debug)]
pub struct RetrievalDecoder {
    bank: SentenceBank,
    exclude: HashSet<String>,
    block_rows: usize,
    threads: usize,
}

/// Unit-normalises each `dim`-sized row of `queries`; refuses NaN/inf and zero rows.
fn normalise_queries(queries: &[f32], dim: usize) -> Result<Vec<f32>> {
    if !queries.len().is_multiple_of(dim) {
        return Err(DataError::Invalid(format!(
            "query buffer of {} values is not a multiple of dim {dim}",
            queries.len()
        )));
    }
    let mut out = queries.to_vec();
    for (i, row) in out.chunks_exact_mut(dim).enumerate() {
        if let Some(j) = row.iter().position(|v| !v.is_finite()) {
            return Err(DataError::Invalid(format!(
                "query {i} has a non-finite value ({}) at position {j}; cannot search with it",
                row[j]
            )));
        }
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm == 0.0 {
            return Err(DataError::Invalid(format!(
                "query {i} is the zero vector: it has no direction to compare by cosine"
            )));
        }
        row.iter_mut().for_each(|v| *v /= norm);
    }
    Ok(out)
}

/// Keeps the `k` best `(score, index)` pairs, best first; ties go to the lower index.
struct TopK {
    k: usize,
    items: Vec<(f32, usize)>,
}

impl TopK {
    fn worst(&self) -> Option<f32> {
        if self.items.len() < self.k {
            None
        } else {
            self.items.last().map(|item| item.0)
        }
    }
    fn admits(&self, score: f32) -> bool {
        self.k > 0 && self.worst().is_none_or(|w| score > w)
    }
    fn insert(&mut self, score: f32, index: usize) {
        // Candidates arrive in increasing index, so inserting after equal scores keeps the
        // lower index first.
        let at = self.items.partition_point(|item| item.0 >= score);
        self.items.insert(at, (score, index));
        self.items.truncate(self.k);
    }
}

impl RetrievalDecoder {
    pub fn new(bank: SentenceBank) -> Self {
        Self {
            bank,
            exclude: HashSet::new(),
            block_rows: DEFAULT_BLOCK_ROWS,
            threads: rayon::current_num_threads(),
        }
    }

    /// Opens the bank at `path`, refusing one built from another encoder.
    pub fn open(path: &Path, encoder_id: &str, dim: usize) -> Result<Self> {
        Ok(Self::new(SentenceBank::open_expecting(
            path, encoder_id, dim,
        )?))
    }

    /// Sentences never returned by [`ConceptDecoder::decode`] (e.g. the prompt's own, so
    /// generation does not decode back to its context).
    pub fn with_exclude<I, S>(mut self, sentences: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.exclude = sentences.into_iter().map(Into::into).collect();
        self
    }

    /// Bank rows per matrix product (at least 1).
    pub fn with_block_rows(mut self, rows: usize) -> Self {
        self.block_rows = rows.max(1);
        self
    }

    /// Threads of the matrix product (1 = single-threaded).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    pub fn bank(&self) -> &SentenceBank {
        &self.bank
    }

    pub fn exclude(&self) -> &HashSet<String> {
        &self.exclude
    }

    /// The `k` bank sentences closest to `query` (`dim()` values) by cosine, best first.
    /// Ignores the decoder's exclusion set.
    pub fn top_k(&self, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        if query.len() != self.bank.dim() {
            return Err(DataError::Invalid(format!(
                "query has {} values but the bank's dim is {}",
                query.len(),
                self.bank.dim()
            )));
        }
        let mut hits = self.search(query, k, &HashSet::new())?;
        Ok(hits.pop().unwrap_or_default())
    }

    /// For each row of `queries` (row-major `[n, dim()]`), the `k` closest bank sentences not
    /// in `exclude`, best first. Scores the bank `block_rows` rows at a time with one matrix
    /// product `[block, dim] × [dim, n]` per block.
    pub fn search(
        &self,
        queries: &[f32],
        k: usize,
        exclude: &HashSet<String>,
    ) -> Result<Vec<Vec<Hit>>> {
        let dim = self.bank.dim();
        let queries = normalise_queries(queries, dim)?;
        let n = queries.len() / dim;
        let mut best: Vec<TopK> = (0..n)
            .map(|_| TopK {
                k,
                items: Vec::with_capacity(k.min(64) + 1),
            })
            .collect();
        if n == 0 || k == 0 {
            return Ok(best.into_iter().map(|_| Vec::new()).collect());
        }
        let vectors = self.bank.vectors();
        let mut scores = vec![0f32; self.block_rows.min(self.bank.len()) * n];
        let mut start = 0;
        while start < self.bank.len() {
            let rows = self.block_rows.min(self.bank.len() - start);
            let block = &vectors[start * dim..(start + rows) * dim];
            let dst = &mut scores[..rows * n];
            let parallelism = if self.threads > 1 && rows * n * dim >= 1 << 16 {
                gemm::Parallelism::Rayon(self.threads)
            } else {
                gemm::Parallelism::None
            };
            // SAFETY: dst is [rows, n] row-major (col stride 1, row stride n); lhs is the block,
            // [rows, dim] row-major; rhs is queriesᵀ, [dim, n], read from the row-major [n, dim]
            // query buffer (element (d, j) at j·dim + d: col stride dim, row stride 1). All
            // three slices have exactly those sizes and dst does not alias the inputs.
            unsafe {
                gemm::gemm(
                    rows,
                    n,
                    dim,
                    dst.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    block.as_ptr(),
                    1,
                    dim as isize,
                    queries.as_ptr(),
                    dim as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
            for r in 0..rows {
                let index = start + r;
                for (j, top) in best.iter_mut().enumerate() {
                    let score = dst[r * n + j];
                    if top.admits(score)
                        && (exclude.is_empty() || !exclude.contains(self.bank.sentence(index)?))
                    {
                        top.insert(score, index);
                    }
                }
            }
            start += rows;
        }
        best.into_iter()
            .map(|top| {
                top.items
                    .into_iter()
                    .map(|(score, index)| {
                        Ok(Hit {
                            index,
                            text: self.bank.sentence(index)?.to_string(),
                            score,
                        })
                    })
                    .collect()
            })
            .collect()
    }
}

impl ConceptDecoder for RetrievalDecoder {
    fn decode(
        &self,
        concepts: &Tensor,
        _lang: Option<&str>,
        _config: &DecodeConfig,
    ) -> lcm_concept::Result<Vec<Decoded>> {
        self.decode_excluding(concepts, &self.exclude)
    }

    fn id(&self) -> &str {
        self.bank.encoder_id()
    }

    fn dim(&self) -> usize {
        self.bank.dim()
    }
}

impl RetrievalDecoder {
    /// The nearest bank sentence of each row of `concepts` (`[n, dim]`) that is not in
    /// `exclude` — a per-call exclusion, for a decoder shared by many requests.
    pub fn decode_excluding(
        &self,
        concepts: &Tensor,
        exclude: &HashSet<String>,
    ) -> lcm_concept::Result<Vec<Decoded>> {
        let (n, dim) = concepts.dims2()?;
        if dim != self.bank.dim() {
            return Err(ConceptError::DimensionMismatch {
                expected: self.bank.dim(),
                got: dim,
                context: format!(
                    "concepts decoded with the bank {}",
                    self.bank.root().display()
                ),
            });
        }
        let flat = concepts
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let hits = self
            .search(&flat, 1, exclude)
            .map_err(|e| ConceptError::Invalid(e.to_string()))?;
        debug_assert_eq!(hits.len(), n);
        hits.into_iter()
            .enumerate()
            .map(|(i, mut hits)| match hits.pop() {
                Some(hit) => Ok(Decoded {
                    text: hit.text,
                    score: Some(hit.score),
                }),
                None => Err(ConceptError::Invalid(format!(
                    "concept {i}: every sentence of the bank {} is excluded",
                    self.bank.root().display()
                ))),
            })
            .collect()
    }
}
