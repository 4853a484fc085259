//! Any encoder on every command, and `--lang`: SONAR through the CLI on a tiny random-weight
//! SONAR folder built here from `crates/sonar/tests/fixtures` (`encode`, `prepare`, `train`
//! and `generate` with SONAR's decoder in a chosen language), `--lang fr` mapped to
//! `fra_Latn`, unknown codes refused with close matches, a language the encoder does not
//! cover warned about once, the store/encoder mismatch refused, sentences the tokenizer
//! maps entirely to unknown tokens counted, and mixed-language JSON lines encoded per
//! document in their tagged (or, with `--detect-lang`, guessed) language.

mod common;

use std::path::{Path, PathBuf};

use common::{lcm, repo, run_err, run_ok, tiny_bert, tiny_store};

fn sonar_fixtures() -> PathBuf {
    repo().join("crates/sonar/tests/fixtures")
}

/// `home/models/sonar`: the tiny encoder, decoder and SentencePiece model under SONAR's
/// published names, with `lcm-sonar.json` giving the heads and the 3 languages the fixtures
/// were made with (scripts/sonar/make_fixtures.py). About 340 kB, copied, never committed.
fn sonar_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("models/sonar");
    std::fs::create_dir_all(&dir).unwrap();
    for (from, to) in [
        ("encoder.pt", "sonar_text_encoder.pt"),
        ("decoder.pt", "sonar_text_decoder.pt"),
        ("tiny_spm.model", "sentencepiece.source.256000.model"),
    ] {
        std::fs::copy(sonar_fixtures().join(from), dir.join(to)).unwrap();
    }
    std::fs::write(
        dir.join("lcm-sonar.json"),
        r#"{"num_heads": 4, "languages": ["deu_Latn", "eng_Latn", "fra_Latn"]}"#,
    )
    .unwrap();
    home
}

/// The embeddings `lcm encode` prints as JSON lines.
fn embeddings(printed: &str) -> Vec<Vec<f64>> {
    printed
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            v["embedding"]
                .as_array()
                .expect("embedding")
                .iter()
                .map(|x| x.as_f64().expect("number"))
                .collect()
        })
        .collect()
}

const FRENCH: &str = "Le chat dort sur le canapé.";

#[test]
fn encode_with_sonar_maps_iso_codes_to_sonar_languages() {
    let home = sonar_home();
    let encode = |lang: &str| {
        embeddings(&run_ok(
            lcm(home.path())
                .args(["encode", "--encoder", "sonar", "--lang", lang])
                .arg(FRENCH),
        ))
    };
    let fr = encode("fr");
    assert_eq!(fr.len(), 1);
    assert_eq!(fr[0].len(), 16, "the tiny SONAR encoder's dimension");
    // `fr` is `fra_Latn`: SONAR's language tag is part of the input, so the vector is the
    // same as with the full code and differs from German's.
    assert_eq!(fr, encode("fra_Latn"));
    assert_ne!(fr, encode("de"));
    // A folder holding SONAR's files is SONAR too.
    let folder = home.path().join("models/sonar");
    let by_folder = embeddings(&run_ok(
        lcm(home.path())
            .arg("encode")
            .arg("--encoder")
            .arg(&folder)
            .args(["--lang", "fr", FRENCH]),
    ));
    assert_eq!(fr, by_folder);
}

#[test]
fn unknown_language_codes_are_refused_with_close_matches() {
    let home = tempfile::tempdir().unwrap();
    for command in ["encode", "segment"] {
        let mut lcm = lcm(home.path());
        lcm.args([command, "--lang", "fre_Latn"]);
        if command == "encode" {
            lcm.arg("--encoder").arg(tiny_bert()).arg(FRENCH);
        }
        let stderr = run_err(&mut lcm);
        assert!(
            stderr.contains("unknown language code `fre_Latn`") && stderr.contains("fra_Latn"),
            "{command}: {stderr}"
        );
    }
}

#[test]
fn a_language_the_encoder_does_not_cover_is_warned_about_once() {
    let home = tempfile::tempdir().unwrap();
    let output = lcm(home.path())
        .arg("encode")
        .arg("--encoder")
        .arg(tiny_bert())
        .args(["--lang", "fr", FRENCH, "Il pleut."])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.matches("warning: ").count(),
        1,
        "one warning for two sentences: {stderr}"
    );
    assert!(
        stderr.contains("covers English only, not fra_Latn (fr)"),
        "{stderr}"
    );
}

#[test]
fn sentences_of_unknown_tokens_only_are_counted() {
    let home = tempfile::tempdir().unwrap();
    // The tiny BERT's 3,000-piece English vocabulary has no Thai.
    let output = lcm(home.path())
        .arg("encode")
        .arg("--encoder")
        .arg(tiny_bert())
        .args(["สวัสดีครับ", "ภาษาไทย", "The cat sleeps."])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("2 sentences became only unknown tokens"),
        "{stderr}"
    );
    assert_eq!(
        embeddings(&String::from_utf8_lossy(&output.stdout)).len(),
        3
    );
    // The XLM-R tokenizer: the tiny model's pieces cover the 17 scripts it was made from, not
    // Cherokee or Gothic; punctuation beside an unknown run does not count as text.
    let output = lcm(home.path())
        .arg("encode")
        .arg("--encoder")
        .arg(repo().join("fixtures/encoder/tiny-xlmr"))
        .args(["ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ.", "𐌰𐌱𐌲", "The cat sleeps."])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("2 sentences became only unknown tokens"),
        "{stderr}"
    );
}

#[test]
fn a_store_refuses_an_encoder_of_another_space() {
    let home = sonar_home();
    let store = tiny_store(home.path());
    let stderr = run_err(
        lcm(home.path())
            .arg("train")
            .arg(&store)
            .args(["--model", "base", "--preset", "tiny", "--steps", "1"])
            .args(["--encoder", "sonar", "--out"])
            .arg(home.path().join("run")),
    );
    assert!(
        stderr.contains("holds `tiny-bert@")
            && stderr.contains("--encoder `sonar` produces `sonar-text-encoder@")
            && stderr.contains("leave out --encoder"),
        "{stderr}"
    );
}

/// French documents of four sentences each.
fn french_corpus(path: &Path) {
    let sentences = [
        "Le chat dort sur le canapé.",
        "Il pleut depuis ce matin.",
        "Les enfants jouent dans le jardin.",
        "Nous partons demain pour Lyon.",
        "La soupe est encore chaude.",
        "Le train arrive à midi.",
        "Elle lit un livre ancien.",
        "Le marché ouvre tôt le samedi.",
    ];
    let lines: Vec<String> = (0..12)
        .map(|d| {
            let text: Vec<&str> = (0..4).map(|i| sentences[(d + 3 * i) % 8]).collect();
            serde_json::json!({ "id": format!("doc-{d}"), "text": text.join(" ") }).to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn sonar_prepare_train_and_generate_decode_into_the_language_asked_for() {
    let home = sonar_home();
    let corpus = home.path().join("fr.jsonl");
    french_corpus(&corpus);
    let store = home.path().join("store");
    run_ok(
        lcm(home.path())
            .arg("prepare")
            .arg(&corpus)
            .arg("--out")
            .arg(&store)
            .args(["--encoder", "sonar", "--lang", "fr", "--quiet"]),
    );
    let report = run_ok(lcm(home.path()).arg("inspect").arg(&store));
    assert!(report.contains("sonar-text-encoder@"), "{report}");
    run_ok(
        lcm(home.path())
            .arg("fit-normalizer")
            .arg(&store)
            .arg("--out")
            .arg(store.join("normalizer.safetensors")),
    );
    // No --encoder from here on: the store, then the model, records it.
    let run = home.path().join("run");
    run_ok(
        lcm(home.path())
            .arg("train")
            .arg(&store)
            .args(["--model", "base", "--preset", "tiny", "--steps", "2"])
            .args(["--max-concepts", "16", "--out"])
            .arg(&run),
    );
    let generate = |target: &str| {
        let printed = run_ok(
            lcm(home.path())
                .args(["generate", "--model"])
                .arg(&run)
                .args(["--decoder", "sonar", "--beam", "1", "--lang", "fr"])
                .args(["--target-lang", target, "--max-sentences", "2"])
                .args([
                    "--eos-threshold",
                    "2",
                    "--repetition-threshold",
                    "2",
                    "--json",
                ])
                .arg("Le chat dort sur le canapé. Il pleut depuis ce matin."),
        );
        let doc: serde_json::Value = serde_json::from_str(&printed).expect("JSON");
        assert_eq!(doc["decoder"], "sonar", "{printed}");
        let texts: Vec<String> = doc["generated"]
            .as_array()
            .expect("generated")
            .iter()
            .map(|g| g["text"].as_str().expect("text").to_string())
            .collect();
        assert_eq!(texts.len(), 2, "{printed}");
        texts
    };
    // The target language is the decoder prompt's language tag: the same concepts decode
    // differently into French and German.
    assert_ne!(generate("fr"), generate("de"));
    // The round trip of SONAR's decoder on the store's held-out sentences, next to retrieval.
    let printed = run_ok(
        lcm(home.path())
            .args(["eval-decoder", "--decoder", "sonar", "--data"])
            .arg(&store)
            .args([
                "--limit",
                "3",
                "--beam",
                "1",
                "--max-len",
                "8",
                "--lang",
                "fr",
            ])
            .args(["--valid-fraction", "0.3", "--quiet"]),
    );
    assert!(
        printed.contains("| sonar (") && printed.contains("SONAR decoder: greedy"),
        "{printed}"
    );
    // A model trained on SONAR concepts refuses another space's encoder.
    let stderr = run_err(
        lcm(home.path())
            .args(["generate", "--model"])
            .arg(&run)
            .arg("--encoder")
            .arg(tiny_bert())
            .args(["--decoder", "sonar", "Un chat."]),
    );
    assert!(stderr.contains("holds `sonar-text-encoder@"), "{stderr}");
}

#[test]
fn prepare_encodes_each_document_in_its_tagged_or_detected_language() {
    let home = sonar_home();
    let corpus = home.path().join("mixed.jsonl");
    let guessed = "Le chien est dans le jardin et la maison est grande.";
    let lines = [
        serde_json::json!({"id": "fr", "lang": "fr", "text": FRENCH}),
        serde_json::json!({"id": "de", "lang": "deu_Latn", "text": "Die Katze schläft."}),
        serde_json::json!({"id": "guess", "text": guessed}),
        serde_json::json!({"id": "none", "text": "Dog sleeps."}),
    ];
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&corpus, text.join("\n") + "\n").unwrap();
    let store = home.path().join("store");
    let printed = run_ok(
        lcm(home.path())
            .arg("prepare")
            .arg(&corpus)
            .arg("--out")
            .arg(&store)
            .args(["--encoder", "sonar", "--detect-lang", "--quiet"]),
    );
    // Tagged `fr` and `deu_Latn`, one French document guessed, one left without a language
    // (too short to tell; SONAR then reads it as its default, eng_Latn).
    assert!(
        printed.contains("languages (documents): - 1, deu_Latn 1, fra_Latn 2 (1 guessed"),
        "{printed}"
    );
    // Each stored vector is the sentence encoded in its document's language.
    let opened = lcm_data::store::ConceptStore::open(&store).expect("store");
    let documents: Vec<_> = opened
        .documents()
        .collect::<Result<_, _>>()
        .expect("documents");
    for (id, sentence, lang) in [("fr", FRENCH, "fr"), ("guess", guessed, "fra_Latn")] {
        let stored = documents.iter().find(|d| d.id == id).expect("document");
        let want = embeddings(&run_ok(
            lcm(home.path())
                .args(["encode", "--encoder", "sonar", "--lang", lang])
                .arg(sentence),
        ));
        let got = &stored.embeddings[..16];
        let diff = got
            .iter()
            .zip(&want[0])
            .map(|(a, b)| (f64::from(*a) - b).abs())
            .fold(0.0, f64::max);
        assert!(diff < 1e-6, "{id}: max |Δ| {diff}");
    }
}

#[test]
fn generate_reports_prompt_sentences_of_unknown_tokens_only() {
    let home = tempfile::tempdir().unwrap();
    let (store, run) = common::tiny_two_tower(home.path());
    let output = lcm(home.path())
        .args(["generate", "--model"])
        .arg(&run)
        .arg("--store")
        .arg(&store)
        .arg("--encoder")
        .arg(tiny_bert())
        .args(["--max-sentences", "1", "--ddim-steps", "2"])
        .arg("สวัสดีครับ. The farmers plant wheat in spring.")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 sentence became only unknown tokens"),
        "{stderr}"
    );
}

/// Copies the directory `from` into `to` (files and subfolders).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn the_recorded_encoder_of_an_hf_repo_is_found_again_without_encoder() {
    let home = tempfile::tempdir().unwrap();
    // An HF cache holding `org/tiny-bert`, as a download leaves it.
    let repo_dir = home.path().join("hf/hub/models--org--tiny-bert");
    copy_dir(&tiny_bert(), &repo_dir.join("snapshots/abc123"));
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), "abc123").unwrap();
    let store = home.path().join("store");
    run_ok(
        lcm(home.path())
            .arg("prepare")
            .arg(repo().join("fixtures/corpus/sample.jsonl"))
            .arg("--out")
            .arg(&store)
            .args(["--encoder", "org/tiny-bert", "--quiet", "--limit", "20"]),
    );
    run_ok(
        lcm(home.path())
            .arg("fit-normalizer")
            .arg(&store)
            .arg("--out")
            .arg(store.join("normalizer.safetensors")),
    );
    // The store records `tiny-bert@…`: train finds the cached repo by that name.
    run_ok(
        lcm(home.path())
            .arg("train")
            .arg(&store)
            .args(["--model", "base", "--preset", "tiny", "--steps", "1"])
            .args([
                "--max-concepts",
                "64",
                "--valid-fraction",
                "0.2",
                "--quiet",
                "--out",
            ])
            .arg(home.path().join("run")),
    );
}
