//! `lcm plan` end to end on a tiny store and a tiny Two-Tower model: one prompt, a case file,
//! and the errors a user meets. The setup is `tests/common`'s (isolated model home, committed
//! corpus sample, tiny encoder).

mod common;

use std::path::Path;
use std::process::Command;

use common::{lcm, run_err, run_ok, tiny_bert, tiny_two_tower};
use serde_json::Value;

fn plan(home: &Path, store: &Path, run: &Path) -> Command {
    let mut command = lcm(home);
    command
        .arg("plan")
        .arg("--model")
        .arg(run)
        .arg("--store")
        .arg(store)
        .arg("--encoder")
        .arg(tiny_bert())
        .args([
            "--ddim-steps",
            "3",
            "--steps",
            "3",
            "--candidates",
            "3",
            "--neighbours",
            "2",
            "--beam",
            "2",
        ]);
    command
}

/// Every planned sentence of a `planner` JSON object, with the hard-guardrail invariant
/// checked: when a feasible plan was found, no sentence of the returned plan is inside a
/// guardrail region, whatever the planner's own `feasible` flag says.
fn check_planner(planner: &Value, steps: usize) {
    let detail = &planner["plan"];
    let feasible = detail["feasible"].as_bool().expect("feasible");
    let feasible_plans = detail["feasible_plans"].as_u64().expect("feasible_plans");
    assert!(detail["candidates"].as_u64().expect("candidates") > 0);
    let sentences = planner["sentences"].as_array().expect("sentences");
    assert_eq!(sentences.len(), steps, "{planner}");
    assert_eq!(
        detail["anticipated"].as_array().expect("anticipated").len(),
        steps
    );
    let inside = sentences.iter().any(|s| {
        s["margins"]
            .as_object()
            .expect("margins")
            .values()
            .any(|m| m.as_f64().expect("margin") <= 0.0)
    });
    if feasible_plans > 0 {
        assert!(
            feasible,
            "a feasible plan existed but none returned: {planner}"
        );
        assert!(!inside, "the returned plan enters a guardrail: {planner}");
        assert_eq!(planner["violating_steps"].as_u64(), Some(0));
    } else {
        assert!(!feasible);
    }
    for s in sentences {
        assert!(!s["text"].as_str().expect("text").is_empty());
        let cos = s["goal_cosine"].as_f64().expect("goal cosine");
        assert!((-1.0..=1.0001).contains(&cos), "{s}");
    }
}

#[test]
fn plan_one_prompt_and_a_case_file_on_a_tiny_model() {
    let home = tempfile::tempdir().expect("tempdir");
    let (store, run) = tiny_two_tower(home.path());
    let prompt = "The ministers were expelled from power. Negotiations were suspended.";

    // A generous radius leaves room for feasible plans: the invariant must then hold.
    let out = run_ok(
        plan(home.path(), &store, &run)
            .args(["--goal", "A treaty of peace was signed.", "--avoid", "war"])
            .args(["--radius", "0.95", "--tau", "0.5", "--json"])
            .arg(prompt),
    );
    let doc: Value = serde_json::from_str(&out).expect("plan JSON");
    assert_eq!(doc["prompt"].as_array().expect("prompt").len(), 2);
    check_planner(&doc["planner"], 3);
    // The radius leaves feasible plans, so the invariant above was really exercised.
    assert!(
        doc["planner"]["plan"]["feasible_plans"]
            .as_u64()
            .expect("count")
            > 0
    );
    assert_eq!(doc["planner"]["plan"]["feasible"], true);
    let margins = doc["planner"]["plan"]["min_margins"]
        .as_array()
        .expect("min margins");
    assert_eq!(margins.len(), 1);
    assert_eq!(margins[0]["guardrail"], "avoid: war");
    assert!(
        doc["unconstrained"]["sentences"]
            .as_array()
            .expect("u")
            .len()
            <= 3
    );
    assert!(
        doc["greedy_retrieval"]["sentences"]
            .as_array()
            .expect("g")
            .len()
            <= 3
    );

    // A radius of −1 puts every sentence inside the ball: the plan must say so.
    let out = run_ok(
        plan(home.path(), &store, &run)
            .args(["--goal", "A treaty of peace was signed.", "--avoid", "war"])
            .args(["--radius=-1", "--json"])
            .arg(prompt),
    );
    let doc: Value = serde_json::from_str(&out).expect("plan JSON");
    assert_eq!(doc["planner"]["plan"]["feasible"], false);
    assert_eq!(doc["planner"]["plan"]["feasible_plans"], 0);

    // The text form names the plan and the baselines.
    let text = run_ok(
        plan(home.path(), &store, &run)
            .args(["--goal", "A treaty of peace was signed.", "--avoid", "war"])
            .args(["--radius", "0.95"])
            .arg(prompt),
    );
    for needle in [
        "Plan by two-tower tiny",
        "Unconstrained generation:",
        "Greedy retrieval:",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }

    let cases = home.path().join("cases.jsonl");
    std::fs::write(
        &cases,
        concat!(
            r#"{"id": "peace", "prompt": "The ministers were expelled from power.", "goal": "A treaty was signed.", "avoid": ["war"]}"#,
            "\n\n",
            r#"{"id": "trade", "prompt": "Commerce has grown. Our ships visit every port.", "goal": "Trade with Spain increased.", "avoid": ["piracy", "taxes"], "tau": 0.4}"#,
            "\n"
        ),
    )
    .expect("write cases");
    let report = home.path().join("report.md");
    let out = run_ok(
        plan(home.path(), &store, &run)
            .arg("--cases")
            .arg(&cases)
            .args(["--radius", "0.95", "--json", "--out"])
            .arg(&report),
    );
    let doc: Value = serde_json::from_str(&out).expect("cases JSON");
    let methods: Vec<&str> = doc["summary"]
        .as_array()
        .expect("summary")
        .iter()
        .map(|m| m["method"].as_str().expect("method"))
        .collect();
    assert_eq!(
        methods,
        ["planner", "unconstrained generation", "greedy retrieval"]
    );
    for m in doc["summary"].as_array().expect("summary") {
        assert_eq!(m["cases"], 2);
        for key in ["goal_reach_rate", "violation_rate", "step_violation_rate"] {
            let v = m[key].as_f64().expect(key);
            assert!((0.0..=1.0).contains(&v), "{key} {v}");
        }
        assert!(m["coherence"].as_f64().expect("coherence").abs() <= 1.0001);
        assert!(m["ms_per_case"].as_f64().expect("ms") >= 0.0);
    }
    let per_case = doc["cases"].as_array().expect("cases");
    assert_eq!(per_case.len(), 2);
    assert_eq!(per_case[1]["tau"].as_f64(), Some(0.4f32 as f64));
    for case in per_case {
        check_planner(&case["planner"], 3);
    }
    let md = std::fs::read_to_string(&report).expect("report written");
    assert!(md.contains("| method | goal reach (95% CI)"), "{md}");
    assert!(md.contains("| planner |") && md.contains("| greedy retrieval |"));
    assert!(md.contains("| peace |") && md.contains("| trade |"));

    // Errors name the file, the line and the fix.
    std::fs::write(
        &cases,
        "{\"id\": \"ok\", \"prompt\": \"A.\", \"goal\": \"B.\"}\n{\"id\": \"bad\", \"goal\": \"B.\"}\n",
    )
    .expect("write cases");
    let err = run_err(plan(home.path(), &store, &run).arg("--cases").arg(&cases));
    assert!(err.contains("cases.jsonl:2:"), "{err}");
    assert!(err.contains("`prompt` must be a non-empty string"), "{err}");
    let err = run_err(
        plan(home.path(), &store, &run)
            .args(["--goal", "Peace."])
            .arg("   "),
    );
    assert!(err.contains("holds no sentence"), "{err}");
    let err = run_err(
        lcm(home.path())
            .arg("plan")
            .arg("--model")
            .arg(home.path().join("nowhere"))
            .arg("--store")
            .arg(&store)
            .args(["--goal", "Peace.", "War is over."]),
    );
    assert!(err.contains("no checkpoint at"), "{err}");
}
