/// Errors of the evaluation layer: inputs whose shapes or values make a metric meaningless.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("shape error: {0}")]
    Shape(String),
    #[error("non-finite value: {0}")]
    NonFinite(String),
    #[error("{0}")]
    Invalid(String),
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;
