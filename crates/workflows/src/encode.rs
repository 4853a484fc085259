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
