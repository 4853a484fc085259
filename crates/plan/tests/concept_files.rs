//! Case files and classifier files parse into typed structs with errors naming the file and
//! line; the guardrail tally's two boundary conventions.

use lcm_plan::concept::{ClassifierFile, ClassifierSource, read_cases};
use lcm_plan::cost::{Boundary, Guardrail, GuardrailTally, GuardrailTerm, Severity};

fn sentences(text: &str) -> Vec<String> {
    text.split_inclusive('.')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn case_files_parse_with_defaults_and_name_the_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"id": 7, "prompt": "A. B.", "goal": "C.", "avoid": ["d"], "tau": 0.4}"#,
            "\n\n",
            r#"{"prompt": "E.", "goal": "F."}"#,
            "\n"
        ),
    )
    .unwrap();
    let cases = read_cases(&path, 0.5, &sentences).unwrap();
    assert_eq!(cases.len(), 2);
    assert_eq!(cases[0].id, "7");
    assert_eq!(cases[0].prompt, ["A.", "B."]);
    assert_eq!(cases[0].avoid, ["d"]);
    assert_eq!(cases[0].tau, 0.4);
    assert_eq!(cases[1].id, "line-3");
    assert!(cases[1].avoid.is_empty());
    assert_eq!(cases[1].tau, 0.5);

    let cases_err = |text: &str| {
        std::fs::write(&path, text).unwrap();
        read_cases(&path, 0.5, &sentences).unwrap_err().to_string()
    };
    let err = cases_err("{\"prompt\": \"A.\", \"goal\": \"B.\"}\n{\"goal\": \"B.\"}\n");
    assert!(err.contains("cases.jsonl:2:"), "{err}");
    assert!(err.contains("`prompt` must be a non-empty string"), "{err}");
    let err = cases_err("{\"id\": 1, \"prompt\": \"A.\", \"goal\": \"B.\", \"tau\": 2}\n");
    assert!(
        err.contains(":1:") && err.contains("`tau` is a cosine"),
        "{err}"
    );
    let err = cases_err(
        "{\"id\": 1, \"prompt\": \"A.\", \"goal\": \"B.\"}\n{\"id\": 1, \"prompt\": \"A.\", \"goal\": \"B.\"}\n",
    );
    assert!(
        err.contains(":2:") && err.contains("duplicate id `1`"),
        "{err}"
    );
    let err = cases_err("not json\n");
    assert!(
        err.contains(":1:") && err.contains("one JSON object per line"),
        "{err}"
    );
    assert!(cases_err("\n\n").contains("holds no case"));
}

#[test]
fn classifier_files_parse_weights_or_examples() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("classifier.json");
    std::fs::write(&path, r#"{"name": "war", "weights": [1, 0], "bias": -0.5}"#).unwrap();
    let spec = ClassifierFile::read(&path, 2).unwrap();
    assert_eq!(spec.name, "war");
    assert_eq!(spec.severity, Severity::Hard);
    let (guardrail, _) = spec.guardrail(&[]).unwrap();
    assert_eq!(guardrail.weights, [1.0, 0.0]);
    assert_eq!(guardrail.bias, -0.5);
    let err = ClassifierFile::read(&path, 3).unwrap_err().to_string();
    assert!(
        err.contains("classifier.json") && err.contains("3 dimensions"),
        "{err}"
    );

    std::fs::write(
        &path,
        r#"{"forbidden": ["x"], "allowed": ["y", "z"], "severity": "soft", "weight": 2}"#,
    )
    .unwrap();
    let spec = ClassifierFile::read(&path, 2).unwrap();
    assert_eq!(spec.name, "classifier");
    assert_eq!(spec.severity, Severity::Soft { weight: 2.0 });
    assert_eq!(spec.source.sentences(), ["x", "y", "z"]);
    assert!(matches!(spec.source, ClassifierSource::Examples { .. }));
    let examples = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![-1.0, 0.5]];
    let (guardrail, correct) = spec.guardrail(&examples).unwrap();
    assert_eq!(correct, 3);
    assert!(guardrail.margin(&vec![1.0, 0.0]) < 0.0);

    std::fs::write(
        &path,
        r#"{"severity": "maybe", "weights": [1, 0], "bias": 0}"#,
    )
    .unwrap();
    let err = ClassifierFile::read(&path, 2).unwrap_err().to_string();
    assert!(err.contains("severity `maybe`"), "{err}");
}

struct Margin(f32);
impl Guardrail<f32> for Margin {
    fn name(&self) -> &str {
        "m"
    }
    fn margin(&self, z: &f32) -> f32 {
        z - self.0
    }
}

#[test]
fn the_tally_counts_a_boundary_point_only_under_the_inclusive_convention() {
    let terms = vec![
        GuardrailTerm {
            guardrail: Box::new(Margin(0.0)) as Box<dyn Guardrail<f32>>,
            severity: Severity::Hard,
        },
        GuardrailTerm {
            guardrail: Box::new(Margin(1.0)),
            severity: Severity::Soft { weight: 2.0 },
        },
    ];
    let path = [0.0f32, 0.5, 2.0];
    let exclusive = GuardrailTally::over(&terms, &path, Boundary::Exclusive);
    assert!(exclusive.feasible);
    assert_eq!(exclusive.hard_violation, 0.0);
    // Soft: margins −1, −0.5, 1 → 2 · 1.5.
    assert_eq!(exclusive.soft_penalty, 3.0);
    assert_eq!(exclusive.min_margins, [0.0, -1.0]);
    let inclusive = GuardrailTally::over(&terms, &path, Boundary::Inclusive);
    assert!(!inclusive.feasible);
    assert_eq!(inclusive.hard_violation, 1.0);
    assert_eq!(inclusive.soft_penalty, 3.0);
    // NaN violates under both conventions.
    let nan = GuardrailTally::over(&terms[..1], &[f32::NAN], Boundary::Exclusive);
    assert!(!nan.feasible && nan.min_margins[0] == f32::NEG_INFINITY);
}
