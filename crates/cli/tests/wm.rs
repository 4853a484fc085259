//! `lcm wm train` and `lcm wm eval` end to end on a tiny run.

use std::path::Path;
use std::process::{Command, Output};

fn lcm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lcm"))
        .args(args)
        .output()
        .expect("lcm runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "lcm failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn train(run: &Path, steps: &str, resume: bool) -> Output {
    let mut args = vec![
        "wm",
        "train",
        "--obs",
        "state",
        "--out",
        run.to_str().unwrap(),
        "--steps",
        steps,
        "--trajectories",
        "12",
        "--batch-size",
        "16",
        "--eval-every",
        "10",
        "--checkpoint-every",
        "10",
        "--quiet",
    ];
    if resume {
        args.push("--resume");
    }
    lcm(&args)
}

#[test]
fn wm_train_resume_and_eval() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let summary: serde_json::Value = serde_json::from_str(&ok(&train(&run, "20", false))).unwrap();
    assert_eq!(summary["final_step"], 20);
    assert!(run.join("loss.png").is_file());
    assert!(run.join("config.json").is_file());
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 20);
    assert!(metrics.lines().last().unwrap().contains("effective_rank"));

    // Training into a used directory without --resume is refused, naming the fix.
    let refused = train(&run, "20", false);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));

    // Eval: the oracle, the learned model with two planners, and the random policy.
    let plots = dir.path().join("plots");
    let report = dir.path().join("report.md");
    let table = ok(&lcm(&[
        "wm",
        "eval",
        run.to_str().unwrap(),
        "--agents",
        "oracle-cem,jepa-cem,jepa-constrained-cem,random",
        "--hazards",
        "--episodes",
        "2",
        "--horizon",
        "4",
        "--population",
        "16",
        "--iterations",
        "2",
        "--oracle-horizon",
        "4",
        "--oracle-population",
        "16",
        "--oracle-iterations",
        "2",
        "--plots",
        plots.to_str().unwrap(),
        "--plot-episodes",
        "2",
        "--out",
        report.to_str().unwrap(),
    ]));
    for row in [
        "oracle + CEM",
        "JEPA + CEM",
        "JEPA + constrained CEM",
        "random policy",
    ] {
        assert!(table.contains(&format!("| {row} |")), "{table}");
    }
    assert!(plots.join("hazards-oracle-cem.png").is_file());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for r in rows {
        assert_eq!(r["episodes"], 2);
        let lo = r["success_ci95"][0].as_f64().unwrap();
        let hi = r["success_ci95"][1].as_f64().unwrap();
        assert!(
            lo <= r["success_rate"].as_f64().unwrap() && r["success_rate"].as_f64().unwrap() <= hi
        );
    }

    // JEPA agents without a model: a clear error.
    let missing = lcm(&["wm", "eval", "--agents", "jepa-cem", "--episodes", "1"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("lcm wm train --out"));
    // A directory that is not a run: named.
    let bad = lcm(&[
        "wm",
        "eval",
        dir.path().to_str().unwrap(),
        "--agents",
        "jepa-cem",
        "--episodes",
        "1",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a world-model run"));

    // Resume to 30 steps continues from step 20.
    let resumed: serde_json::Value = serde_json::from_str(&ok(&train(&run, "30", true))).unwrap();
    assert_eq!(resumed["start_step"], 20);
    assert_eq!(resumed["final_step"], 30);
}
