//! `lcm eval-multilingual` on the committed parallel sample
//! (`fixtures/corpus/parallel-sample.jsonl`: 2 Bible chapters in en-web, en-kjv, es-rv1909
//! and 12 Debian descriptions in 14 languages, made by `scripts/corpus/parallel.py sample`).
//!
//! The pipeline tests use the tiny random-weight XLM-R fixture (`fixtures/encoder/tiny-xlmr`),
//! so they check the plumbing, not the numbers. With multilingual-e5-small-q4 installed
//! (`bash scripts/fetch-models.sh e5`), the last test checks that translations are found
//! (skipped otherwise, unless `LCM_REQUIRE_E5=1`).

mod common;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use common::{lcm, repo, run_err, run_ok};
use serde_json::Value;

fn sample() -> PathBuf {
    repo().join("fixtures/corpus/parallel-sample.jsonl")
}

fn tiny_xlmr() -> PathBuf {
    repo().join("fixtures/encoder/tiny-xlmr")
}

fn records() -> Vec<Value> {
    std::fs::read_to_string(sample())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_parallel_sample_is_aligned_and_small() {
    let size = std::fs::metadata(sample()).unwrap().len();
    assert!(size <= 200 * 1024, "{size} bytes");
    let records = records();
    let mut ids = HashSet::new();
    let mut langs = BTreeSet::new();
    for r in &records {
        let id = r["id"].as_str().unwrap();
        let key = r["key"].as_str().unwrap();
        assert!(ids.insert(id.to_string()), "repeated id {id}");
        assert!(id.starts_with(&format!("{key}/")), "{id} is not KEY/SIDE");
        assert!(!r["text"].as_str().unwrap().is_empty(), "{id}");
        langs.insert(r["lang"].as_str().unwrap().to_string());
    }
    let want = [
        "cs", "da", "de", "en", "es", "fr", "it", "ja", "ko", "pl", "pt_BR", "ru", "uk", "zh_CN",
    ];
    assert_eq!(langs, want.iter().map(|s| s.to_string()).collect());
    // Every Debian key has its English text; every Bible verse is in all three versions.
    let sides_of = |key: &str| -> BTreeSet<String> {
        records
            .iter()
            .filter(|r| r["key"] == key)
            .map(|r| r["id"].as_str().unwrap()[key.len() + 1..].to_string())
            .collect()
    };
    for r in &records {
        let key = r["key"].as_str().unwrap();
        let sides = sides_of(key);
        if key.starts_with("bible/") {
            assert_eq!(sides.len(), 3, "{key}: {sides:?}");
        } else {
            assert!(sides.contains("en") && sides.len() >= 2, "{key}: {sides:?}");
            assert!(r["title"].as_str().is_some_and(|t| !t.is_empty()), "{key}");
        }
    }
}

fn run_tiny(home: &Path, out: &Path, extra: &[&str]) -> Value {
    let printed = run_ok(
        lcm(home)
            .arg("eval-multilingual")
            .arg(sample())
            .arg("--encoder")
            .arg(tiny_xlmr())
            .arg("--out")
            .arg(out)
            .args(["--preset", "tiny", "--steps", "3", "--max-concepts", "256"])
            .args([
                "--eval-docs",
                "5",
                "--mix-docs",
                "2",
                "--valid-fraction",
                "0.3",
            ])
            .args(["--min-sentences", "2", "--eos-threshold", "2"])
            .args(["--repetition-threshold", "2", "--threads", "2", "--json"])
            .args(extra),
    );
    let report: Value = serde_json::from_str(&printed).expect("JSON report");
    let on_disk: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report, on_disk);
    assert!(out.join("report.md").is_file());
    report
}

#[test]
fn eval_multilingual_runs_retrieval_zero_shot_and_generation() {
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("ml");
    let report = run_tiny(home.path(), &out, &[]);
    assert!(
        report["encoder"]
            .as_str()
            .unwrap()
            .starts_with("tiny-xlmr@")
    );

    // Retrieval: every side against its family's pivot, over all aligned units.
    let pairs = report["retrieval"].as_array().unwrap();
    assert_eq!(pairs.len(), 2 + 13, "{pairs:#?}");
    for p in pairs {
        let want = if p["family"] == "bible" { 21 } else { 12 };
        assert_eq!(p["candidates"], want, "{p}");
        assert!(p["a"] == "en" || p["a"] == "en-web", "{p}");
        for field in [
            "acc_forward",
            "acc_backward",
            "xsim_forward",
            "xsim_backward",
        ] {
            let v = p[field].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{field} {v}");
        }
    }

    // Zero-shot: a row per side with held-out documents, the English originals' score
    // for every non-pivot side, the comparison model and the baselines.
    let zero = &report["zero_shot"];
    let rows = zero["rows"].as_array().unwrap();
    let sides: BTreeSet<&str> = rows.iter().map(|r| r["side"].as_str().unwrap()).collect();
    for side in ["en", "fr", "de", "ja", "zh_CN"] {
        assert!(sides.contains(side), "{sides:?}");
    }
    for r in rows {
        let pivot = r["side"] == "en" || r["side"] == "en-web";
        assert_eq!(r["model_on_pivot"].is_null(), pivot, "{r}");
        assert!(r["model"]["l2"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["mixed"]["l2"].as_f64().is_some(), "{r}");
        assert!(r["repeat_previous"]["l2"].as_f64().is_some(), "{r}");
        assert!(r["mean_concept"]["l2"].as_f64().is_some(), "{r}");
    }
    assert!(zero["mixed_extra_documents"].as_u64().unwrap() > 0);
    // The KJV is English like the pivot WEB: scored, never mixed into the comparison model's
    // training, so its store holds its held-out chapters only.
    let kjv = rows
        .iter()
        .find(|r| r["side"] == "en-kjv")
        .expect("an en-kjv row");
    let kjv_docs = std::fs::read_to_string(out.join("docs/bible-en-kjv.jsonl")).unwrap();
    assert_eq!(
        kjv_docs.lines().count() as u64,
        kjv["documents"].as_u64().unwrap()
    );
    // The English-only model never saw a non-English document; the comparison did.
    let docs = |name: &str| -> Vec<String> {
        let text = std::fs::read_to_string(out.join("docs").join(format!("{name}.jsonl"))).unwrap();
        text.lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert!(!docs("debian-en").is_empty());
    assert!(!docs("debian-fr").is_empty());
    // Each side's documents are prepared in its language (SONAR encodes by it; the segmenter
    // picks its abbreviation rules by it).
    for (name, lang) in [
        ("debian-fr", "fr"),
        ("debian-zh_CN", "zh_CN"),
        ("bible-es-rv1909", "es"),
    ] {
        let text = std::fs::read_to_string(out.join("docs").join(format!("{name}.jsonl"))).unwrap();
        for line in text.lines() {
            assert_eq!(
                serde_json::from_str::<Value>(line).unwrap()["lang"],
                lang,
                "{name}: {line}"
            );
        }
    }
    // Generation: a French and a German prompt, continued and decoded from sentences of
    // that language only.
    let generation = report["generation"].as_array().unwrap();
    let langs: Vec<&str> = generation
        .iter()
        .map(|g| g["lang"].as_str().unwrap())
        .collect();
    assert_eq!(langs, ["fr", "de"]);
    for g in generation {
        let lang = g["lang"].as_str().unwrap();
        let bank_texts: String = records()
            .iter()
            .filter(|r| r["lang"] == lang && r["key"].as_str().unwrap().starts_with("debian/"))
            .map(|r| {
                format!(
                    "{} {}",
                    r["title"].as_str().unwrap(),
                    r["text"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        let generated = g["generated"].as_array().unwrap();
        assert_eq!(generated.len(), 3, "{g}");
        let prompt: Vec<&str> = g["prompt"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert_eq!(prompt.len(), 3, "{g}");
        for item in generated {
            let text = item[0].as_str().unwrap();
            assert!(bank_texts.contains(text), "{text} is not a {lang} sentence");
            assert!(!prompt.contains(&text), "{text} repeats the prompt");
        }
    }
}

#[test]
fn eval_multilingual_refuses_bad_input() {
    let home = tempfile::tempdir().unwrap();
    let bad = home.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"id\": \"x/en\", \"text\": \"no key\"}\n").unwrap();
    let err = run_err(
        lcm(home.path())
            .arg("eval-multilingual")
            .arg(&bad)
            .arg("--encoder")
            .arg(tiny_xlmr())
            .arg("--out")
            .arg(home.path().join("o")),
    );
    assert!(err.contains("bad.jsonl:1") && err.contains("key"), "{err}");
    let err = run_err(
        lcm(home.path())
            .arg("eval-multilingual")
            .arg(sample())
            .args(["--tasks", "generation", "--encoder"])
            .arg(tiny_xlmr())
            .arg("--out")
            .arg(home.path().join("o")),
    );
    assert!(err.contains("zero-shot"), "{err}");
}

fn installed_e5() -> Option<PathBuf> {
    let home = std::env::var_os("LCM_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".lcm")));
    let folder = home.map(|h| h.join("models").join("multilingual-e5-small-q4"));
    match folder {
        Some(f) if f.join("model.safetensors").is_file() => Some(f),
        _ => {
            if std::env::var("LCM_REQUIRE_E5").is_ok_and(|v| v == "1") {
                panic!("LCM_REQUIRE_E5=1 but multilingual-e5-small-q4 is not installed");
            }
            eprintln!("SKIPPED: multilingual-e5-small-q4 is not installed");
            None
        }
    }
}

#[test]
fn e5_finds_translations_in_the_sample() {
    let Some(model) = installed_e5() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("ml");
    let printed = run_ok(
        lcm(home.path())
            .arg("eval-multilingual")
            .arg(sample())
            .arg("--encoder")
            .arg(&model)
            .arg("--out")
            .arg(&out)
            .args(["--tasks", "retrieval", "--threads", "2", "--json"]),
    );
    let report: Value = serde_json::from_str(&printed).unwrap();
    for p in report["retrieval"].as_array().unwrap() {
        // 12 Debian summaries / 21 verses: a real multilingual encoder finds nearly all.
        let acc = p["acc_forward"].as_f64().unwrap();
        assert!(acc >= 0.75, "{p}");
    }
}

/// `home/models/sonar`: the tiny random-weight SONAR encoder, decoder and SentencePiece model
/// of `crates/sonar/tests/fixtures` under SONAR's published names (as `tests/sonar.rs` builds
/// it), made for deu_Latn, eng_Latn and fra_Latn.
fn sonar_home() -> tempfile::TempDir {
    let fixtures = repo().join("crates/sonar/tests/fixtures");
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("models/sonar");
    std::fs::create_dir_all(&dir).unwrap();
    for (from, to) in [
        ("encoder.pt", "sonar_text_encoder.pt"),
        ("decoder.pt", "sonar_text_decoder.pt"),
        ("tiny_spm.model", "sentencepiece.source.256000.model"),
    ] {
        std::fs::copy(fixtures.join(from), dir.join(to)).unwrap();
    }
    std::fs::write(
        dir.join("lcm-sonar.json"),
        r#"{"num_heads": 4, "languages": ["deu_Latn", "eng_Latn", "fra_Latn"]}"#,
    )
    .unwrap();
    home
}

#[test]
fn retrieval_runs_with_the_tiny_sonar() {
    let home = sonar_home();
    // The Debian en/fr/de part of the sample (the languages the tiny SONAR was made with).
    let corpus = home.path().join("en-fr-de.jsonl");
    let lines: Vec<String> = records()
        .into_iter()
        .filter(|r| {
            r["source"] == "debian-ddtp"
                && ["en", "fr", "de"].contains(&r["lang"].as_str().unwrap())
        })
        .map(|r| r.to_string())
        .collect();
    std::fs::write(&corpus, lines.join("\n") + "\n").unwrap();
    let out = home.path().join("ml");
    let printed = run_ok(
        lcm(home.path())
            .arg("eval-multilingual")
            .arg(&corpus)
            .args([
                "--encoder",
                "sonar",
                "--tasks",
                "retrieval",
                "--json",
                "--out",
            ])
            .arg(&out),
    );
    let report: Value = serde_json::from_str(&printed).unwrap();
    assert!(
        report["encoder"].as_str().unwrap().starts_with("sonar"),
        "{report}"
    );
    let pairs: Vec<(String, String, u64)> = report["retrieval"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["a"].as_str().unwrap().to_string(),
                p["b"].as_str().unwrap().to_string(),
                p["candidates"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("en".into(), "fr".into(), 12),
            ("en".into(), "de".into(), 12)
        ]
    );
}
