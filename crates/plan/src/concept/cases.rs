//! Case files of `lcm plan --cases`: one JSON object per line,
//! `{"id", "prompt", "goal", "avoid": [...], "tau"?}`, parsed into typed [`Case`]s. Errors
//! name the file, the line and the fix.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One prompt / goal / guardrail problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// The case's `id` (a number is kept as written), or `line-N` without one.
    pub id: String,
    /// The prompt's sentences.
    pub prompt: Vec<String>,
    /// The sentence or topic to reach.
    pub goal: String,
    /// Topics to stay away from (each a hard ball around its concept).
    pub avoid: Vec<String>,
    /// Goal reached at cosine ≥ τ.
    pub tau: f32,
}

/// A case file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaseFileError {
    #[error(
        "cannot read the case file {}; pass a JSON-lines file of {{\"id\", \"prompt\", \
         \"goal\", \"avoid\": [...]}}: {source}",
        path.display()
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{} holds no case", path.display())]
    Empty { path: PathBuf },
}

/// The `id` of a case line: text or a number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CaseId {
    Text(String),
    Number(serde_json::Number),
}

/// One line as written (every field optional, so a missing one gets its own message).
#[derive(Debug, Deserialize)]
struct CaseLine {
    #[serde(default)]
    id: Option<CaseId>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    goal: Option<String>,
    #[serde(default)]
    avoid: Option<Vec<String>>,
    #[serde(default)]
    tau: Option<f64>,
}

/// Whether `v` is a cosine, the only meaningful τ or radius.
pub fn is_cosine(v: f32) -> bool {
    v.is_finite() && (-1.0..=1.0).contains(&v)
}

/// Reads the case file at `path`; `segment` splits a prompt into sentences, `default_tau`
/// applies where a case gives no `tau`. Blank lines are skipped; ids must be unique.
pub fn read_cases(
    path: &Path,
    default_tau: f32,
    segment: &dyn Fn(&str) -> Vec<String>,
) -> Result<Vec<Case>, CaseFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| CaseFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut cases = Vec::new();
    let mut ids = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| CaseFileError::Line {
            path: path.to_path_buf(),
            line: n,
            message,
        };
        let doc: CaseLine = serde_json::from_str(line).map_err(|e| {
            bad(format!(
                "not a case object ({e}); write one JSON object per line: {{\"id\", \
                 \"prompt\", \"goal\", \"avoid\": [...], \"tau\"?}}"
            ))
        })?;
        let non_empty = |key: &str, value: Option<String>| match value {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(bad(format!("`{key}` must be a non-empty string"))),
        };
        let id = match doc.id {
            None => format!("line-{n}"),
            Some(CaseId::Text(s)) => s,
            Some(CaseId::Number(x)) => x.to_string(),
        };
        if !ids.insert(id.clone()) {
            return Err(bad(format!("duplicate id `{id}`; give every case its own")));
        }
        let prompt = segment(&non_empty("prompt", doc.prompt)?);
        if prompt.is_empty() {
            return Err(bad("`prompt` holds no sentence".into()));
        }
        let goal = non_empty("goal", doc.goal)?;
        let avoid = doc.avoid.unwrap_or_default();
        if avoid.iter().any(|s| s.trim().is_empty()) {
            return Err(bad("`avoid` must hold non-empty strings".into()));
        }
        let tau = match doc.tau {
            None => default_tau,
            Some(v) => {
                let tau = v as f32;
                if !is_cosine(tau) {
                    return Err(bad(format!("`tau` is a cosine in [−1, 1], got {tau}")));
                }
                tau
            }
        };
        cases.push(Case {
            id,
            prompt,
            goal,
            avoid,
            tau,
        });
    }
    if cases.is_empty() {
        return Err(CaseFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(cases)
}
