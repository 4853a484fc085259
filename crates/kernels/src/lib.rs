//! CPU kernels shared by the BERT encoder's inference path and the training engine: run-time
//! dispatched SIMD helpers ([`simd`], [`multiversion!`]) and a strided, accumulating GEMM
//! wrapper ([`matmul()`]) over the `gemm` crate, and strided 2-D convolutions on it ([`conv`]).
//!
//! Everything here works on flat `f32` slices; no tensor library is involved, so the hot paths
//! built on it allocate nothing and are checked against candle by their users' tests.

pub mod conv;
pub mod matmul;
pub mod simd;

pub use matmul::{Mat, MatMut, Scalar, matmul};
