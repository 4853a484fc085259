//! ROUGE-L against Google's `rouge-score` 0.1.2 on `fixtures/eval/rouge_l.json`
//! (regenerate with `python3 scripts/fixtures/rouge_fixture.py`).

use lcm_eval::rouge::{ROUGE_SCORE_VERSION, rouge_l, tokenize};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/eval/rouge_l.json"
    );
    let text = std::fs::read_to_string(path).expect("fixtures/eval/rouge_l.json is committed");
    serde_json::from_str(&text).expect("fixture is JSON")
}

#[test]
fn rouge_l_matches_rouge_score() {
    let fx = fixture();
    assert_eq!(fx["rouge_score_version"], ROUGE_SCORE_VERSION);
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut nontrivial = 0;
    for case in cases {
        let reference = case["reference"].as_str().unwrap();
        let hypothesis = case["hypothesis"].as_str().unwrap();
        let tokens = |k: &str| -> Vec<String> {
            case[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            tokenize(reference),
            tokens("reference_tokens"),
            "{reference:?}"
        );
        assert_eq!(
            tokenize(hypothesis),
            tokens("hypothesis_tokens"),
            "{hypothesis:?}"
        );
        let s = rouge_l(reference, hypothesis);
        for (name, ours) in [
            ("precision", s.precision),
            ("recall", s.recall),
            ("fmeasure", s.fmeasure),
        ] {
            let want = case[name].as_f64().unwrap();
            assert!(
                (ours - want).abs() <= 1e-6,
                "{name} of ({reference:?}, {hypothesis:?}): ours {ours}, rouge-score {want}"
            );
        }
        if s.fmeasure > 0.0 && s.fmeasure < 1.0 {
            nontrivial += 1;
        }
    }
    assert!(
        nontrivial >= 10,
        "fixture has only {nontrivial} partial matches"
    );
}
