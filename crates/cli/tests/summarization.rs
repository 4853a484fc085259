//! `lcm finetune` and `lcm eval-summarization` end to end on the committed summarisation
//! sample (`fixtures/corpus/summarisation-sample/`) with the tiny encoder: pair stores made by
//! `lcm prepare --text-field`, a tiny Base-LCM pre-trained, fine-tuned (and resumed), loaded
//! by `lcm generate`, and scored next to the baselines.

mod common;

use std::path::{Path, PathBuf};

use common::{lcm, repo, run_err, run_ok, tiny_bert, tiny_store};

/// `lcm prepare` of the sample's `split.jsonl` into `home/pairs-split/{prompt,answer}`.
fn pair_store(home: &Path, split: &str) -> PathBuf {
    let pairs = home.join(format!("pairs-{split}"));
    let input = repo().join(format!(
        "fixtures/corpus/summarisation-sample/{split}.jsonl"
    ));
    for field in ["prompt", "answer"] {
        run_ok(
            lcm(home)
                .arg("prepare")
                .arg(&input)
                .args(["--text-field", field, "--out"])
                .arg(pairs.join(field))
                .arg("--encoder")
                .arg(tiny_bert())
                .args(["--quiet", "--threads", "1"]),
        );
    }
    pairs
}

#[test]
fn finetune_then_eval_summarization_on_the_sample() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let store = tiny_store(home);
    let (train, test) = (pair_store(home, "train"), pair_store(home, "test"));
    let run = home.join("run");
    run_ok(
        lcm(home)
            .arg("train")
            .arg(&store)
            .args([
                "--model", "base", "--preset", "tiny", "--steps", "2", "--quiet",
            ])
            .arg("--out")
            .arg(&run)
            .arg("--encoder")
            .arg(tiny_bert()),
    );
    let ft = home.join("ft");
    let finetune = |steps: &str, resume: bool| {
        let mut command = lcm(home);
        command
            .arg("finetune")
            .arg(&train)
            .arg("--from")
            .arg(&run)
            .args([
                "--steps",
                "4",
                "--stop-at",
                steps,
                "--checkpoint-every",
                "2",
            ])
            .args(["--eval-every", "2", "--valid-fraction", "0.2", "--quiet"])
            .arg("--out")
            .arg(&ft)
            .arg("--encoder")
            .arg(tiny_bert());
        if resume {
            command.arg("--resume");
        }
        run_ok(&mut command)
    };
    let first = finetune("2", false);
    assert!(first.contains("on 50 pairs"), "{first}");
    assert!(first.contains("steps 0→2"), "{first}");
    let resumed = finetune("4", true);
    assert!(resumed.contains("steps 2→4"), "{resumed}");

    // The fine-tuned run is an ordinary run: `lcm generate` continues a prompt with it.
    let generated = run_ok(
        lcm(home)
            .args(["generate", "--model"])
            .arg(&ft)
            .arg("--store")
            .arg(train.join("answer"))
            .args(["--max-sentences", "1", "--json", "Akonadi stores mail."])
            .arg("--encoder")
            .arg(tiny_bert()),
    );
    assert!(generated.contains("\"generated\""), "{generated}");

    let out = run_ok(
        lcm(home)
            .args(["eval-summarization", "--model"])
            .arg(&ft)
            .arg("--train-pairs")
            .arg(&train)
            .arg("--test-pairs")
            .arg(&test)
            .args(["--limit", "6", "--examples", "6", "--json"])
            .arg("--encoder")
            .arg(tiny_bert()),
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["train_pairs"], 50);
    assert_eq!(report["test_pairs"], 15);
    assert_eq!(report["evaluated"], 6);
    let systems = report["systems"].as_array().unwrap();
    let names: Vec<&str> = systems
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["model", "baseline", "baseline"]);
    for s in systems {
        assert_eq!(s["pairs"], 6);
        for key in ["rouge_l", "ovl3", "rep4"] {
            let v = s[key].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{key} {v}");
        }
    }
    // The first-sentence baseline copies the source's first sentence: every 3-gram is in
    // the source, and it overlaps the reference somewhere in the sample.
    assert_eq!(systems[1]["system"], "first-sentence");
    assert_eq!(systems[1]["ovl3"], 1.0);
    assert!(systems[1]["rouge_l"].as_f64().unwrap() > 0.0);
    for e in report["examples"].as_array().unwrap() {
        let source = e["source"].as_str().unwrap();
        let first = e["outputs"][1][1].as_str().unwrap();
        assert!(
            source.starts_with(first),
            "{first:?} does not start {source:?}"
        );
    }

    // Pairs in another space than the model's are refused.
    let err = run_err(
        lcm(home)
            .arg("finetune")
            .arg(&store)
            .arg("--from")
            .arg(&run)
            .args(["--steps", "1", "--quiet"])
            .arg("--out")
            .arg(home.join("bad"))
            .arg("--encoder")
            .arg(tiny_bert()),
    );
    assert!(err.contains("is not a pair store"), "{err}");
}
