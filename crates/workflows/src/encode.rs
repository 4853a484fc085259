//! Encoding sentences into plain rows of numbers, for entry points that write them out
//! (JSON lines, `.npy`, `.safetensors`) and should not handle tensors themselves.

use candle_core::DType;
use lcm_concept::ConceptEncoder;

use crate::Result;

/// `rows × cols` row-major f32 concepts, row `i` for sentence `i`.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    pub values: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

impl Embeddings {
    /// The concept of each sentence, in order.
    pub fn rows(&self) -> std::slice::ChunksExact<'_, f32> {
        self.values.chunks_exact(self.cols.max(1))
    }

    /// Scales every row to unit length (`F.normalize`: x / max(‖x‖₂, 1e-12)), as
    /// `normalize` / `normalize_embeddings` ask of the server and the Python package.
    pub fn l2_normalize(&mut self) {
        for row in self.values.chunks_exact_mut(self.cols.max(1)) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
}

/// Encodes `sentences` with `encoder` (`lang`: the encoder's language hint).
pub fn encode_sentences(
    encoder: &dyn ConceptEncoder,
    sentences: &[String],
    lang: Option<&str>,
) -> Result<Embeddings> {
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let embeddings = encoder.encode(&refs, lang)?;
    let (rows, cols) = embeddings.dims2()?;
    let values = embeddings
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(Embeddings { values, rows, cols })
}

/// Sentences encoded `batch_size` at a time as they arrive, so that encoding a stream of any
/// length keeps memory bounded by one batch (`lcm encode` on a huge file).
pub struct BatchEncoder<'a> {
    encoder: &'a dyn ConceptEncoder,
    lang: Option<&'a str>,
    batch_size: usize,
    pending: Vec<String>,
}

impl<'a> BatchEncoder<'a> {
    pub fn new(encoder: &'a dyn ConceptEncoder, lang: Option<&'a str>, batch_size: usize) -> Self {
        Self {
            encoder,
            lang,
            batch_size: batch_size.max(1),
            pending: Vec::new(),
        }
    }

    /// Queues `sentence`; once `batch_size` are waiting, returns them with their concepts.
    pub fn push(&mut self, sentence: String) -> Result<Option<(Vec<String>, Embeddings)>> {
        self.pending.push(sentence);
        if self.pending.len() < self.batch_size {
            return Ok(None);
        }
        self.flush()
    }

    /// The sentences still waiting, with their concepts (`None` when none are).
    pub fn flush(&mut self) -> Result<Option<(Vec<String>, Embeddings)>> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let sentences = std::mem::take(&mut self.pending);
        let embeddings = encode_sentences(self.encoder, &sentences, self.lang)?;
        Ok(Some((sentences, embeddings)))
    }
}
