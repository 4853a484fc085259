//! `--encoder e5` end to end: `lcm prepare` on the committed multilingual sample
//! (`fixtures/corpus/multilingual-sample.jsonl`, 10 languages), then fit-normalizer, a tiny
//! train and `lcm generate` in that space, and `lcm encode` of translations.
//!
//! Needs multilingual-e5-small-q4 (`bash scripts/fetch-models.sh e5`) in `$LCM_HOME/models`
//! (default `~/.lcm/models`); skipped with a message when it is absent, unless
//! `LCM_REQUIRE_E5=1` (CI sets it), which makes the absence a failure.

mod common;

use std::path::{Path, PathBuf};

use common::{lcm, repo, run_ok};

const E5_FOLDER: &str = "multilingual-e5-small-q4";

fn installed_e5() -> Option<PathBuf> {
    let home = std::env::var_os("LCM_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".lcm")));
    let folder = home.map(|h| h.join("models").join(E5_FOLDER));
    match folder {
        Some(f) if f.join("model.safetensors").is_file() => Some(f),
        other => {
            let msg = format!(
                "multilingual-e5-small-q4 is not installed at {} (run `bash scripts/fetch-models.sh e5`)",
                other.map_or("$LCM_HOME/models".into(), |f| f.display().to_string())
            );
            if std::env::var("LCM_REQUIRE_E5").is_ok_and(|v| v == "1") {
                panic!("LCM_REQUIRE_E5=1 but {msg}");
            }
            eprintln!("SKIPPED: {msg}");
            None
        }
    }
}

/// An isolated home whose models folder holds (a link to) the installed e5 model, so that
/// `--encoder e5` resolves through the alias as it does for users.
fn home_with_e5(model: &Path) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("tempdir");
    let models = home.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(model, models.join(E5_FOLDER)).unwrap();
    home
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn prepare_with_e5_encodes_the_multilingual_sample() {
    let Some(model) = installed_e5() else {
        return;
    };
    let home = home_with_e5(&model);
    let store = home.path().join("store");
    run_ok(
        lcm(home.path())
            .arg("prepare")
            .arg(repo().join("fixtures/corpus/multilingual-sample.jsonl"))
            .arg("--out")
            .arg(&store)
            .args(["--encoder", "e5", "--quiet", "--threads", "2"]),
    );
    let report = run_ok(lcm(home.path()).arg("inspect").arg(&store));
    let field = |name: &str| {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no `{name}` in:\n{report}"))
    };
    let encoder = field("encoder");
    assert!(
        encoder.starts_with("multilingual-e5-small-q4@") && encoder.ends_with("+passage"),
        "{report}"
    );
    assert_eq!(field("dim"), "384", "{report}");
    assert_eq!(field("documents"), "10", "{report}");
    // 10 documents of 5 sentences each; Chinese and Japanese end sentences with 。
    assert_eq!(field("sentences"), "50", "{report}");

    // The rest of the pipeline runs in the e5 space: normaliser, a 3-step tiny Two-Tower,
    // generation decoded by retrieval over the sample's sentences (any language).
    run_ok(
        lcm(home.path())
            .arg("fit-normalizer")
            .arg(&store)
            .arg("--out")
            .arg(store.join("normalizer.safetensors")),
    );
    let run = home.path().join("run");
    run_ok(
        lcm(home.path())
            .arg("train")
            .arg(&store)
            .args(["--model", "two-tower", "--preset", "tiny", "--steps", "3"])
            .args(["--max-concepts", "16", "--encoder", "e5", "--out"])
            .arg(&run),
    );
    let printed = run_ok(
        lcm(home.path())
            .args(["generate", "--model"])
            .arg(&run)
            .arg("--store")
            .arg(&store)
            .args(["--encoder", "e5", "--max-sentences", "2", "--seed", "1"])
            .arg("La rivière monte chaque printemps. Les paysans conduisent leurs bêtes."),
    );
    let continuation: Vec<&str> = printed
        .lines()
        .filter(|l| l.trim_start().starts_with(['1', '2']))
        .collect();
    assert_eq!(continuation.len(), 2, "{printed}");
}

#[test]
fn e5_puts_translations_next_to_each_other() {
    let Some(model) = installed_e5() else {
        return;
    };
    let home = home_with_e5(&model);
    let sentences = [
        "The river rises every spring.",
        "La rivière monte chaque printemps.",
        "每年春天河水都会上涨。",
        "Река поднимается каждую весну.",
        "The invoice must be paid within thirty days.",
        "La facture doit être payée sous trente jours.",
    ];
    let out = run_ok(
        lcm(home.path())
            .args(["encode", "--encoder", "e5", "--threads", "2"])
            .args(sentences),
    );
    let vectors: Vec<Vec<f64>> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(vectors.len(), sentences.len());
    assert!(vectors.iter().all(|v| v.len() == 384));
    // E5's cosines are compressed into roughly [0.7, 1], so the test compares ranks: each
    // translation of the river sentence is closer to the English one than both invoice
    // sentences are, and the French river sentence is closer to the English river sentence
    // than to the French invoice sentence (meaning beats language).
    let c = |i: usize, j: usize| cosine(&vectors[i], &vectors[j]);
    let unrelated = c(0, 4).max(c(0, 5));
    for (i, sentence) in sentences.iter().enumerate().take(4).skip(1) {
        assert!(
            c(0, i) > unrelated,
            "{sentence:?}: cosine {:.3} with its translation, {unrelated:.3} with an unrelated \
             sentence",
            c(0, i)
        );
    }
    assert!(c(1, 0) > c(1, 5), "{:.3} vs {:.3}", c(1, 0), c(1, 5));
    assert!(c(4, 5) > c(4, 1), "{:.3} vs {:.3}", c(4, 5), c(4, 1));
}
