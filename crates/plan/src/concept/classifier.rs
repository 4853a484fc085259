//! Linear guardrails on concepts: a half-space classifier, its training by logistic
//! regression, and the classifier file (`lcm plan --classifier`) parsed into typed structs.

use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use lcm_util::random::standard_normal;

use super::{Concept, ConceptPlanError, Result, dot};
use crate::cost::Guardrail;

/// A half-space guardrail: `w·c + b > 0` is forbidden. Margin = `−(w·c + b)`, the negated
/// logit, so a classifier trained by [`train_logistic`] to call forbidden examples positive
/// keeps the margin convention (positive = safe) and its margin 0 is probability ½.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearClassifierGuardrail {
    pub name: String,
    pub weights: Vec<f32>,
    pub bias: f32,
}

impl LinearClassifierGuardrail {
    /// The logit `w·c + b` (positive: forbidden).
    pub fn logit(&self, c: &[f32]) -> f32 {
        dot(&self.weights, c) + self.bias
    }

    /// The classifier's probability that `c` is forbidden.
    pub fn probability(&self, c: &[f32]) -> f32 {
        sigmoid(self.logit(c))
    }
}

impl Guardrail<Concept> for LinearClassifierGuardrail {
    fn name(&self) -> &str {
        &self.name
    }

    fn margin(&self, z: &Concept) -> f32 {
        if z.len() != self.weights.len() {
            // A concept of another space cannot be judged; refuse it rather than call it safe.
            return f32::NEG_INFINITY;
        }
        -self.logit(z)
    }
}

fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Settings of [`train_logistic`].
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticConfig {
    /// Full-batch gradient steps.
    pub epochs: usize,
    pub learning_rate: f32,
    /// L2 penalty `λ/2 · |w|²` (the bias is not penalised).
    pub l2: f32,
    /// Weight each class by `n / (2 · n_class)`, so a handful of forbidden examples among
    /// many allowed ones still moves the boundary.
    pub balanced: bool,
    /// Seed of the small random initial weights.
    pub seed: u64,
}

impl Default for LogisticConfig {
    /// Sizes for unit-norm sentence embeddings: their logits are small at first, so a large
    /// step size converges in a few hundred full-batch steps; λ = 1e-3 keeps a separable set
    /// from driving the weights to infinity.
    fn default() -> Self {
        LogisticConfig {
            epochs: 500,
            learning_rate: 2.0,
            l2: 1e-3,
            balanced: true,
            seed: 0,
        }
    }
}

/// Logistic regression by full-batch gradient descent on the (class-weighted) mean
/// cross-entropy plus `λ/2·|w|²`. `labels[i]` is true for a forbidden example. Deterministic
/// given `config.seed`.
pub fn train_logistic(
    name: impl Into<String>,
    examples: &[Concept],
    labels: &[bool],
    config: &LogisticConfig,
) -> Result<LinearClassifierGuardrail> {
    if examples.len() != labels.len() {
        return Err(ConceptPlanError::Training(format!(
            "one label per example ({} examples, {} labels)",
            examples.len(),
            labels.len()
        )));
    }
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(ConceptPlanError::Training(format!(
            "examples of both classes ({positives} forbidden, {negatives} allowed)"
        )));
    }
    let dim = examples[0].len();
    if dim == 0 {
        return Err(ConceptPlanError::Training("non-empty vectors".into()));
    }
    for (i, e) in examples.iter().enumerate() {
        if e.len() != dim {
            return Err(ConceptPlanError::DimensionMismatch {
                what: format!("training example {i}"),
                expected: dim,
                got: e.len(),
            });
        }
        if e.iter().any(|v| !v.is_finite()) {
            return Err(ConceptPlanError::Training(format!(
                "finite values (example {i} is not)"
            )));
        }
    }
    if config.epochs == 0
        || !(config.learning_rate.is_finite() && config.learning_rate > 0.0)
        || !(config.l2.is_finite() && config.l2 >= 0.0)
    {
        return Err(ConceptPlanError::InvalidConfig(format!(
            "logistic regression needs epochs > 0, learning rate > 0 and l2 ≥ 0, got {config:?}"
        )));
    }
    let n = examples.len() as f32;
    let (w_pos, w_neg) = if config.balanced {
        (n / (2.0 * positives as f32), n / (2.0 * negatives as f32))
    } else {
        (1.0, 1.0)
    };
    let mut rng = ChaCha12Rng::seed_from_u64(config.seed);
    let mut w: Vec<f32> = (0..dim)
        .map(|_| 0.01 * standard_normal(&mut rng) as f32)
        .collect();
    let mut b = 0.0f32;
    let mut grad = vec![0f32; dim];
    for _ in 0..config.epochs {
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut grad_b = 0.0;
        for (x, &y) in examples.iter().zip(labels) {
            let p = sigmoid(dot(&w, x) + b);
            let (target, weight) = if y { (1.0, w_pos) } else { (0.0, w_neg) };
            let err = weight * (p - target) / n;
            for (g, xi) in grad.iter_mut().zip(x) {
                *g += err * xi;
            }
            grad_b += err;
        }
        for (wi, g) in w.iter_mut().zip(&grad) {
            *wi -= config.learning_rate * (g + config.l2 * *wi);
        }
        b -= config.learning_rate * grad_b;
    }
    Ok(LinearClassifierGuardrail {
        name: name.into(),
        weights: w,
        bias: b,
    })
}

/// How a classifier file enters the cost.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierSpec {
    pub name: String,
    pub severity: crate::cost::Severity,
    pub source: ClassifierSource,
}

/// Where a classifier's weights come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassifierSource {
    /// Given explicitly (checked against the concept dimension).
    Weights { weights: Vec<f32>, bias: f32 },
    /// Labelled sentences to encode and train on by [`train_logistic`].
    Examples {
        forbidden: Vec<String>,
        allowed: Vec<String>,
    },
}

/// The classifier file of `lcm plan --classifier`, as written: explicit weights
/// `{"name", "weights": [...], "bias"}` or labelled sentences `{"name", "forbidden": [...],
/// "allowed": [...]}`, with optional `"severity": "hard" | "soft"` and `"weight"`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct ClassifierFile {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub severity: Option<String>,
    /// Weight of a soft classifier (default 1).
    #[serde(default)]
    pub weight: Option<f64>,
    #[serde(default)]
    pub weights: Option<Vec<f64>>,
    #[serde(default)]
    pub bias: Option<f64>,
    #[serde(default)]
    pub forbidden: Option<Vec<String>>,
    #[serde(default)]
    pub allowed: Option<Vec<String>>,
}

/// A classifier file that cannot be used; the message names the file and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ClassifierFileError {
    pub path: std::path::PathBuf,
    pub message: String,
}

impl ClassifierFile {
    /// Reads and checks the file at `path` for concepts of `dim` dimensions.
    pub fn read(
        path: &std::path::Path,
        dim: usize,
    ) -> std::result::Result<ClassifierSpec, ClassifierFileError> {
        let bad = |message: String| ClassifierFileError {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(format!("cannot read the classifier: {e}")))?;
        let file: ClassifierFile = serde_json::from_str(&text).map_err(|e| {
            bad(format!(
                "not a classifier ({e}); write {{\"name\", \"weights\", \"bias\"}} or \
                 {{\"name\", \"forbidden\": [...], \"allowed\": [...]}}"
            ))
        })?;
        file.into_spec(dim).map_err(bad)
    }

    /// Checks the file's fields for concepts of `dim` dimensions (the message says what is
    /// wrong).
    pub fn into_spec(self, dim: usize) -> std::result::Result<ClassifierSpec, String> {
        let severity = match self.severity.as_deref() {
            None | Some("hard") => crate::cost::Severity::Hard,
            Some("soft") => crate::cost::Severity::Soft {
                weight: self.weight.unwrap_or(1.0) as f32,
            },
            Some(other) => return Err(format!("severity `{other}` is not hard or soft")),
        };
        let source = if let Some(weights) = self.weights {
            if weights.len() != dim {
                return Err(format!(
                    "{} weights, but the encoder's concepts have {dim} dimensions",
                    weights.len()
                ));
            }
            let bias = self.bias.ok_or("`bias` must be a number")?;
            ClassifierSource::Weights {
                weights: weights.into_iter().map(|w| w as f32).collect(),
                bias: bias as f32,
            }
        } else {
            let (Some(forbidden), Some(allowed)) = (self.forbidden, self.allowed) else {
                return Err(
                    "give `weights` and `bias`, or `forbidden` and `allowed` as arrays of \
                     sentences"
                        .into(),
                );
            };
            ClassifierSource::Examples { forbidden, allowed }
        };
        Ok(ClassifierSpec {
            name: self.name.unwrap_or_else(|| "classifier".into()),
            severity,
            source,
        })
    }
}

impl ClassifierSpec {
    /// The guardrail: the given weights, or logistic regression (default settings) on the
    /// concepts of the labelled sentences, `examples` in the order forbidden then allowed
    /// (as [`ClassifierSource::Examples`] lists them). Returns it with the number of
    /// training sentences it puts on the right side.
    pub fn guardrail(&self, examples: &[Concept]) -> Result<(LinearClassifierGuardrail, usize)> {
        match &self.source {
            ClassifierSource::Weights { weights, bias } => Ok((
                LinearClassifierGuardrail {
                    name: self.name.clone(),
                    weights: weights.clone(),
                    bias: *bias,
                },
                0,
            )),
            ClassifierSource::Examples { forbidden, .. } => {
                let labels: Vec<bool> = (0..examples.len()).map(|i| i < forbidden.len()).collect();
                let classifier = train_logistic(
                    self.name.clone(),
                    examples,
                    &labels,
                    &LogisticConfig::default(),
                )?;
                let correct = examples
                    .iter()
                    .zip(&labels)
                    .filter(|(x, y)| (classifier.logit(x) > 0.0) == **y)
                    .count();
                Ok((classifier, correct))
            }
        }
    }
}

impl ClassifierSource {
    /// The sentences to encode for training (forbidden first), none for explicit weights.
    pub fn sentences(&self) -> Vec<&str> {
        match self {
            ClassifierSource::Weights { .. } => Vec::new(),
            ClassifierSource::Examples { forbidden, allowed } => forbidden
                .iter()
                .chain(allowed)
                .map(String::as_str)
                .collect(),
        }
    }
}
