//! `lcm train --mix`: the source weights are recorded in the run's configuration, checked on
//! resume like every other setting, and a source the store lacks is refused by name.

mod common;

use common::{lcm, run_err, run_ok, tiny_bert, tiny_store};

#[test]
fn train_records_its_mixture_and_refuses_unknown_sources() {
    let home = tempfile::tempdir().expect("tempdir");
    let store = tiny_store(home.path());
    let run = home.path().join("run");
    let train = |mix: &str, steps: &str, extra: &[&str]| {
        let mut command = lcm(home.path());
        command
            .arg("train")
            .arg(&store)
            .args(["--model", "base", "--preset", "tiny", "--steps", steps])
            .arg("--out")
            .arg(&run)
            .arg("--encoder")
            .arg(tiny_bert())
            .args([
                "--max-concepts",
                "256",
                "--valid-fraction",
                "0.2",
                "--quiet",
            ])
            .args(["--mix", mix])
            .args(extra);
        command
    };
    run_ok(&mut train("mobydick=3,*=1", "4", &["--stop-at", "2"]));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).expect("config"))
            .expect("json");
    assert_eq!(config["mixture"]["weights"]["mobydick"], 3.0);
    assert_eq!(config["mixture"]["weights"]["*"], 1.0);

    // Another mixture is another run: resuming with it is refused.
    let error = run_err(&mut train("mobydick=1,*=1", "4", &["--resume"]));
    assert!(error.contains("mixture"), "{error}");
    run_ok(&mut train("mobydick=3,*=1", "4", &["--resume"]));

    let error = run_err(&mut train("poetry=1,*=1", "2", &[]));
    assert!(
        error.contains("`poetry`") && error.contains("mobydick"),
        "{error}"
    );
    let error = run_err(&mut train("mobydick=abc", "2", &[]));
    assert!(error.contains("not a number"), "{error}");
}
