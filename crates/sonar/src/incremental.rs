//! The contract between a token decoder and the search algorithms that drive it
//! (beam search, greedy, sampling in [`crate::generate`]).

use candle_core::Tensor;

use crate::error::Result;

/// Token ids that generation treats specially (the **tokenizer's** vocabulary info, which is
/// what fairseq2's generator receives from sonar-space: pad 0, unk 1, eos 3 for SONAR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub pad: u32,
    pub unk: u32,
    pub bos: u32,
    pub eos: u32,
}

impl SpecialIds {
    /// SONAR's layout: pad 0, unk 1, `<s>` 2, `</s>` 3.
    pub const SONAR: SpecialIds = SpecialIds {
        pad: 0,
        unk: 1,
        bos: 2,
        eos: 3,
    };
}

/// An autoregressive decoder conditioned on one vector per sentence, decoded step by step
/// with a cache. Rows of the state are hypotheses; search algorithms add, drop and reorder
/// them through [`IncrementalDecoder::reorder`].
pub trait IncrementalDecoder {
    /// Per-row cache: conditioning memory and self-attention keys/values so far.
    type State;

    /// Vocabulary size `V` of the logits.
    fn vocab_size(&self) -> usize;

    /// Starts decoding `N` rows from conditioning vectors `[N, D]` (no tokens fed yet).
    fn start(&self, conditioning: &Tensor) -> Result<Self::State>;

    /// Feeds `tokens` (`[B, T]`, the next `T` positions of every row, `B` = current rows)
    /// and returns the float32 logits `[B, V]` of the **last** fed position.
    fn step(&self, state: &mut Self::State, tokens: &Tensor) -> Result<Tensor>;

    /// [`IncrementalDecoder::step`] writing the logits row-major (`[B·V]`) into `logits`,
    /// whose allocation the search reuses from step to step. The default copies `step`'s
    /// tensor; a decoder that can write its output projection in place overrides it.
    fn step_into(
        &self,
        state: &mut Self::State,
        tokens: &Tensor,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let t = self.step(state, tokens)?;
        *logits = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(())
    }

    /// Keeps row `rows[i]` of the old state as row `i` of the new one (`rows` is a u32
    /// tensor `[B']`; rows may repeat, e.g. to expand a prompt into beams).
    fn reorder(&self, state: &mut Self::State, rows: &Tensor) -> Result<()>;
}
