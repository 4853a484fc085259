//! `lcm export`: the folder it writes holds the model card, config and weights a Hugging
//! Face user expects, and every command loads it like the run it came from — with the same
//! generations and the same evaluation — even after the folder has moved.

mod common;

use std::path::Path;

use common::{lcm, run_err, run_ok, tiny_bert, tiny_two_tower};
use serde_json::Value;

fn generate(home: &Path, model: &Path, store: &Path) -> Value {
    let printed = run_ok(
        lcm(home)
            .arg("generate")
            .arg("--model")
            .arg(model)
            .arg("--store")
            .arg(store)
            .arg("--encoder")
            .arg(tiny_bert())
            .args(["--max-sentences", "3", "--seed", "7", "--ddim-steps", "5"])
            .args(["--eos-threshold", "1.1", "--repetition-threshold", "1.1"])
            .arg("--json")
            .arg("The whale swam. The sea was calm."),
    );
    serde_json::from_str(&printed).expect("generate --json")
}

fn evaluate(home: &Path, model: &Path, store: &Path) -> Value {
    let printed = run_ok(
        lcm(home)
            .arg("eval")
            .arg(model)
            .arg("--store")
            .arg(store)
            .arg("--encoder")
            .arg(tiny_bert())
            .args(["--ddim-steps", "5", "--json"]),
    );
    serde_json::from_str(&printed).expect("eval --json")
}

#[test]
fn an_export_loads_back_like_its_run_and_carries_a_model_card() {
    let home = tempfile::tempdir().expect("tempdir");
    let (store, run) = tiny_two_tower(home.path());
    let out = home.path().join("exported");
    run_ok(
        lcm(home.path())
            .arg("export")
            .arg(&run)
            .arg("--out")
            .arg(&out)
            .arg("--store")
            .arg(&store)
            .arg("--encoder")
            .arg(tiny_bert())
            .args(["--license", "apache-2.0", "--language", "en,fr"])
            .args(["--ddim-steps", "5"]),
    );
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .expect("export folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "README.md",
            "config.json",
            "model.safetensors",
            "normalizer.safetensors"
        ]
    );

    let config: Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).expect("config"))
            .expect("config.json is JSON");
    assert_eq!(config["library_name"], "lcm");
    assert_eq!(config["architecture"], "two-tower");
    assert_eq!(config["step"], 3);
    assert!(config["parameters"].as_u64().expect("parameters") > 1000);

    let card = std::fs::read_to_string(out.join("README.md")).expect("card");
    let front = card
        .strip_prefix("---\n")
        .and_then(|rest| rest.split_once("\n---\n"))
        .map(|(front, _)| front)
        .expect("YAML front matter");
    for line in [
        "license: \"apache-2.0\"",
        "language:\n- \"en\"\n- \"fr\"",
        "library_name: lcm",
    ] {
        assert!(
            front.contains(line),
            "front matter lacks {line:?}:\n{front}"
        );
    }
    let evaluation = evaluate(home.path(), &run, &store);
    let label = evaluation["model"].as_str().expect("model label");
    assert!(
        card.contains(&format!("| {label} |")),
        "the card's table has no row for {label}:\n{card}"
    );
    assert!(card.contains("documents"), "{card}");

    // Same weights, same normaliser: the same continuation and the same metrics.
    assert_eq!(
        generate(home.path(), &out, &store),
        generate(home.path(), &run, &store)
    );
    let from_export = evaluate(home.path(), &out, &store);
    assert_eq!(from_export["rows"], evaluation["rows"]);

    // The folder carries its normaliser: moved away from the run and the store, it loads.
    let moved = home.path().join("elsewhere/model");
    std::fs::create_dir_all(moved.parent().expect("parent")).expect("mkdir");
    std::fs::rename(&out, &moved).expect("move the export");
    assert_eq!(
        generate(home.path(), &moved, &store),
        generate(home.path(), &run, &store)
    );
}

#[test]
fn export_refuses_to_overwrite_and_reports_a_foreign_format() {
    let home = tempfile::tempdir().expect("tempdir");
    let (store, run) = tiny_two_tower(home.path());
    let out = home.path().join("exported");
    std::fs::create_dir_all(&out).expect("mkdir");
    std::fs::write(out.join("keep.txt"), "mine").expect("write");
    let export = |force: bool| {
        let mut command = lcm(home.path());
        command
            .arg("export")
            .arg(&run)
            .arg("--out")
            .arg(&out)
            .arg("--encoder")
            .arg(tiny_bert());
        if force {
            command.arg("--force");
        }
        command
    };
    let error = run_err(&mut export(false));
    assert!(
        error.contains("not empty") && error.contains("--force"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).expect("untouched"),
        "mine"
    );

    run_ok(&mut export(true));
    assert!(!out.join("keep.txt").exists());
    let card = std::fs::read_to_string(out.join("README.md")).expect("card");
    assert!(card.contains("license: \"other\""), "{card}");
    assert!(card.contains("Not evaluated at export"), "{card}");

    // A config.json that says it is an lcm export of an unknown format is refused by name.
    let config_path = out.join("config.json");
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(&config_path).expect("config")).expect("json");
    config["format"] = Value::from("lcm-export-99");
    std::fs::write(&config_path, config.to_string()).expect("write");
    let error = run_err(
        lcm(home.path())
            .arg("generate")
            .arg("--model")
            .arg(&out)
            .arg("--store")
            .arg(&store)
            .arg("--encoder")
            .arg(tiny_bert())
            .arg("Hello there."),
    );
    assert!(
        error.contains("config.json") && error.contains("lcm-export-99"),
        "{error}"
    );
}
