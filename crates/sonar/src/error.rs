use std::path::PathBuf;

/// Errors of the SONAR port. Messages name the file involved and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum SonarError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("weights: {0}")]
    Weights(String),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("generation: {0}")]
    Generation(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl SonarError {
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::File {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, SonarError>;
