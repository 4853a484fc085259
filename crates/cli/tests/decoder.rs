//! `lcm train-decoder` → `lcm eval-decoder` → `lcm generate --decoder` on the tiny store
//! (committed corpus sample, tiny encoder): a few steps, so this checks the wiring, files
//! and outputs, not quality (crates/decoder/tests/decoder.rs proves the decoder learns).

mod common;

use common::{lcm, run_err, run_ok, tiny_bert, tiny_two_tower};

#[test]
fn train_eval_and_generate_with_a_trained_decoder() {
    let home = tempfile::tempdir().expect("tempdir");
    let (store, model) = tiny_two_tower(home.path());
    let run = home.path().join("decoder");
    let train = |extra: &[&str]| {
        let mut command = lcm(home.path());
        command
            .arg("train-decoder")
            .arg("--data")
            .arg(&store)
            .arg("--out")
            .arg(&run)
            .arg("--encoder")
            .arg(tiny_bert())
            .args([
                "--layers",
                "1",
                "--heads",
                "2",
                "--ffn",
                "32",
                "--vocab",
                "300",
                "--batch-size",
                "16",
                "--steps",
                "4",
                "--valid-fraction",
                "0.2",
                "--valid-sentences",
                "16",
                "--threads",
                "1",
                "--quiet",
            ])
            .args(extra);
        command
    };
    let out = run_ok(&mut train(&["--stop-at", "2"]));
    assert!(out.contains("steps 0 → 2 of 4"), "{out}");
    for file in [
        "decoder.json",
        "tokenizer.json",
        "model.safetensors",
        "metrics.jsonl",
        "loss.png",
        "config.json",
    ] {
        assert!(run.join(file).exists(), "{file} missing");
    }
    // Starting over an existing run is refused; --resume continues it.
    let err = run_err(&mut train(&[]));
    assert!(err.contains("--resume"), "{err}");
    let out = run_ok(&mut train(&["--resume"]));
    assert!(out.contains("steps 2 → 4 of 4"), "{out}");
    // Changed settings are refused on resume.
    let err = run_err(&mut train(&["--resume", "--lr", "0.5"]));
    assert!(err.contains("other settings"), "{err}");

    let json = home.path().join("eval.json");
    let out = run_ok(
        lcm(home.path())
            .arg("eval-decoder")
            .arg("--decoder")
            .arg(&run)
            .arg("--data")
            .arg(&store)
            .arg("--encoder")
            .arg(tiny_bert())
            .args(["--limit", "6", "--beam", "2", "--max-len", "12", "--quiet"])
            .arg("--json")
            .arg(&json),
    );
    assert!(out.contains("| decoder | corpus BLEU"), "{out}");
    assert!(
        out.contains("retrieval (held-out sentences excluded)"),
        "{out}"
    );
    assert!(out.contains("Examples:"), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("JSON");
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    for r in results {
        let cos = r["round_trip_cosine"].as_f64().expect("cosine");
        assert!((-1.0..=1.0).contains(&cos), "{r}");
        // The held-out sentences are not candidates: retrieval cannot be exact.
        if r["decoder"].as_str().unwrap_or("").starts_with("retrieval") {
            assert_eq!(r["exact_match"].as_f64(), Some(0.0), "{r}");
        }
    }

    let out = run_ok(
        lcm(home.path())
            .arg("generate")
            .arg("--model")
            .arg(&model)
            .arg("--decoder")
            .arg(&run)
            .arg("--encoder")
            .arg(tiny_bert())
            .args([
                "--ddim-steps",
                "2",
                "--max-sentences",
                "2",
                "--beam",
                "1",
                "--json",
            ])
            .arg("It was a bright cold day in April. The clocks were striking thirteen."),
    );
    let out: serde_json::Value = serde_json::from_str(&out).expect("generate JSON");
    assert_eq!(out["decoder"], "trained");
    assert!(out["generated"].as_array().expect("generated").len() <= 2);

    // A decoder refuses a store of another encoder space (here: a missing store names
    // itself; the space check is unit-tested in lcm-decoder).
    let err = run_err(
        lcm(home.path())
            .arg("eval-decoder")
            .arg("--decoder")
            .arg(&run)
            .arg("--data")
            .arg(home.path().join("nope"))
            .arg("--encoder")
            .arg(tiny_bert()),
    );
    assert!(err.contains("nope"), "{err}");
}
