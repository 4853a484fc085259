//! `lcm eval-generation` end to end on the tiny fixtures: 3 held-out prompts, a Two-Tower
//! model under a 2-setting grid and a Base-LCM; the reported metrics are recomputed here
//! from the generated texts the JSON lists (an independent word / n-gram count), the
//! registers checked against the corpus sample's sources.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};

use common::{lcm, repo, run_err, run_ok, tiny_bert, tiny_store};
use serde_json::Value;

fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
        } else if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

fn grams(text: &str, n: usize) -> Vec<Vec<String>> {
    let w = words(text);
    if w.len() < n {
        return Vec::new();
    }
    (0..=w.len() - n).map(|i| w[i..i + n].to_vec()).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn eval_generation_reports_metrics_that_match_the_generated_texts() {
    let home = tempfile::tempdir().expect("tempdir");
    let store = tiny_store(home.path());
    let train = |kind: &str, out: &str| {
        let run = home.path().join(out);
        run_ok(
            lcm(home.path())
                .arg("train")
                .arg(&store)
                .args(["--model", kind, "--preset", "tiny", "--steps", "3"])
                .arg("--out")
                .arg(&run)
                .arg("--encoder")
                .arg(tiny_bert())
                .args(["--max-concepts", "64", "--valid-fraction", "0.5", "--quiet"]),
        );
        run
    };
    let two_tower = train("two-tower", "tt");
    let base = train("base", "base");
    let json_out = home.path().join("gen.json");
    let md_out = home.path().join("gen.md");
    let eval = |extra: &[&str]| {
        let mut command = lcm(home.path());
        command
            .arg("eval-generation")
            .arg(&two_tower)
            .arg(&base)
            .arg("--store")
            .arg(&store)
            .arg("--encoder")
            .arg(tiny_bert())
            .args(["--prompts", "3", "--prompt-sentences", "1"])
            .args(["--guidance", "1,3", "--steps", "2", "--max-sentences", "4"])
            .args(extra);
        command
    };
    let stdout = run_ok(
        eval(&["--loss-by-source", "--json-out"])
            .arg(&json_out)
            .arg("--out")
            .arg(&md_out),
    );
    let md = std::fs::read_to_string(&md_out).expect("markdown");
    assert_eq!(stdout, md);
    assert!(
        md.contains("| REP-4 % |") && md.contains("repeat-previous ℓ2"),
        "{md}"
    );

    let doc: Value =
        serde_json::from_slice(&std::fs::read(&json_out).expect("json")).expect("json");
    assert_eq!(doc["prompts"], 3);
    assert_eq!(doc["valid_fraction"], 0.5);
    let settings = doc["settings"].as_array().expect("settings");
    // Two-Tower: g ∈ {1, 3} × S ∈ {2}; Base-LCM: one setting without guidance or steps.
    assert_eq!(settings.len(), 3, "{settings:?}");
    assert_eq!(settings[0]["guidance_scale"], 1.0);
    assert_eq!(settings[1]["guidance_scale"], 3.0);
    assert_eq!(settings[1]["ddim_steps"], 2);
    assert!(settings[2]["guidance_scale"].is_null() && settings[2]["ddim_steps"].is_null());

    // The corpus sample: which source each sentence can come from.
    let corpus =
        std::fs::read_to_string(repo().join("fixtures/corpus/sample.jsonl")).expect("corpus");
    let documents: Vec<(String, String)> = corpus
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let d: Value = serde_json::from_str(l).expect("jsonl");
            (
                d["source"].as_str().expect("source").to_string(),
                d["text"].as_str().expect("text").to_string(),
            )
        })
        .collect();

    let mut prompt_ids: Option<Vec<String>> = None;
    for setting in settings {
        let generations = setting["generations"].as_array().expect("generations");
        assert_eq!(generations.len(), 3);
        assert_eq!(setting["prompts"], 3);
        // Every setting continues the same prompts.
        let ids: Vec<String> = generations
            .iter()
            .map(|g| g["id"].as_str().expect("id").to_string())
            .collect();
        assert_eq!(
            ids.iter().collect::<HashSet<_>>().len(),
            3,
            "three distinct prompts"
        );
        match &prompt_ids {
            Some(previous) => assert_eq!(previous, &ids),
            None => prompt_ids = Some(ids),
        }

        let (mut rep_hits, mut rep_total, mut ovl_hits, mut ovl_total) = (0, 0, 0, 0);
        let (mut sentences, mut rep_after_one, mut same) = (0usize, 0usize, 0usize);
        let mut stops: BTreeMap<String, usize> = BTreeMap::new();
        let mut registers: HashMap<String, usize> = HashMap::new();
        for g in generations {
            let generated: Vec<&str> = g["generated"]
                .as_array()
                .expect("generated")
                .iter()
                .map(|s| s.as_str().expect("text"))
                .collect();
            let prompt: Vec<&str> = g["prompt"]
                .as_array()
                .expect("prompt")
                .iter()
                .map(|s| s.as_str().expect("text"))
                .collect();
            assert_eq!(prompt.len(), 1);
            let text = generated.join(" ");
            let four = grams(&text, 4);
            let distinct: HashSet<&Vec<String>> = four.iter().collect();
            rep_hits += four.len() - distinct.len();
            rep_total += four.len();
            let prompt_grams: HashSet<Vec<String>> =
                grams(&prompt.join(" "), 3).into_iter().collect();
            let three = grams(&text, 3);
            ovl_hits += three.iter().filter(|t| prompt_grams.contains(*t)).count();
            ovl_total += three.len();
            let stop = g["stop"].as_str().expect("stop").to_string();
            if stop == "repetition" && generated.len() <= 1 {
                rep_after_one += 1;
            }
            *stops.entry(stop).or_insert(0) += 1;
            sentences += generated.len();
            let source = g["source"].as_str().expect("source");
            let regs = g["registers"].as_array().expect("registers");
            assert_eq!(regs.len(), generated.len());
            for (sentence, register) in generated.iter().zip(regs) {
                let register = register.as_str().expect("register");
                // Retrieval decoding: the sentence is the store's, from a document of that source.
                assert!(
                    documents
                        .iter()
                        .any(|(s, t)| s == register && t.contains(sentence)),
                    "`{sentence}` is not in a `{register}` document"
                );
                assert!(!prompt.contains(sentence), "a prompt sentence was returned");
                *registers.entry(register.to_string()).or_insert(0) += 1;
                if register == source {
                    same += 1;
                }
            }
            if let Some(c) = g["coherence"].as_f64() {
                assert!((-1.0..=1.0).contains(&c), "{c}");
            } else {
                assert!(generated.is_empty());
            }
        }
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        assert!(close(
            setting["rep4"].as_f64().expect("rep4"),
            ratio(rep_hits, rep_total)
        ));
        assert_eq!(setting["rep4_counts"]["four_grams"], rep_total);
        assert!(close(
            setting["ovl3"].as_f64().expect("ovl3"),
            ratio(ovl_hits, ovl_total)
        ));
        assert_eq!(setting["ovl3_counts"]["three_grams"], ovl_total);
        assert!(close(
            setting["mean_sentences"].as_f64().expect("mean"),
            sentences as f64 / 3.0
        ));
        assert!(close(
            setting["repetition_after_one"].as_f64().expect("rep"),
            rep_after_one as f64 / 3.0
        ));
        assert!(close(
            setting["same_register"].as_f64().expect("same"),
            ratio(same, sentences)
        ));
        for (stop, count) in &stops {
            assert!(close(
                setting["stops"][stop].as_f64().expect("stop share"),
                *count as f64 / 3.0
            ));
        }
        for (register, count) in &registers {
            assert!(close(
                setting["registers"][register].as_f64().expect("share"),
                ratio(*count, sentences)
            ));
        }
    }

    // Held-out ℓ2 per source: one row per source with held-out documents, finite.
    let losses = doc["loss_by_source"].as_array().expect("losses");
    assert_eq!(losses.len(), 2);
    for model in losses {
        let sources = model["sources"].as_array().expect("sources");
        assert!(!sources.is_empty());
        for s in sources {
            assert!(
                s["l2"].as_f64().expect("l2").is_finite() && s["l2"].as_f64().unwrap_or(-1.0) > 0.0
            );
        }
    }

    // The same command gives the same numbers (seeded prompts and noise).
    let again = run_ok(&mut eval(&[]));
    let table = md.split("\n\n").next().expect("generation table");
    assert_eq!(again, format!("{table}\n"));

    // Prompts drawn at a larger held-out fraction than a run's would include its training data.
    let error = run_err(&mut eval(&["--valid-fraction", "0.9"]));
    assert!(error.contains("--valid-fraction 0.5 or less"), "{error}");
}
