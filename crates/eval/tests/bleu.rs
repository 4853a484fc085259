//! BLEU parity with sacreBLEU 2.5.1 on `crates/sonar/tests/fixtures/sacrebleu.json` (made by
//! `scripts/sonar/make_fixtures.py`; floats there are rounded to 9 significant digits, so each
//! computed float is rounded the same way and must then be equal).

use lcm_eval::bleu::{BleuScore, corpus_bleu, sentence_bleu, tokenize_13a, try_corpus_bleu};
use serde_json::Value;

fn fixture() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sonar/tests/fixtures/sacrebleu.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture readable"))
        .expect("fixture is JSON")
}

/// Python's `float(f"{x:.9g}")`, the fixture's rounding.
fn r9(x: f64) -> f64 {
    format!("{x:.8e}").parse().expect("float")
}

fn usizes(v: &Value) -> [usize; 4] {
    let a: Vec<usize> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    [a[0], a[1], a[2], a[3]]
}

fn check(got: &BleuScore, want: &Value, what: &str) {
    assert_eq!(got.counts, usizes(&want["counts"]), "{what}: counts");
    assert_eq!(got.totals, usizes(&want["totals"]), "{what}: totals");
    assert_eq!(
        got.sys_len as u64,
        want["sys_len"].as_u64().unwrap(),
        "{what}: sys_len"
    );
    assert_eq!(
        got.ref_len as u64,
        want["ref_len"].as_u64().unwrap(),
        "{what}: ref_len"
    );
    assert_eq!(
        r9(got.score),
        want["score"].as_f64().unwrap(),
        "{what}: score {}",
        got.score
    );
    assert_eq!(
        r9(got.bp),
        want["bp"].as_f64().unwrap(),
        "{what}: bp {}",
        got.bp
    );
    for (n, p) in want["precisions"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            r9(got.precisions[n]),
            p.as_f64().unwrap(),
            "{what}: precision {n}"
        );
    }
}

fn pairs(f: &Value) -> Vec<(String, String)> {
    f["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["hyp"].as_str().unwrap().to_string(),
                s["ref"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn tokenize_13a_matches() {
    let f = fixture();
    let cases = f["tokenize_13a"].as_array().unwrap();
    assert_eq!(cases.len(), 44);
    for c in cases {
        let text = c["text"].as_str().unwrap();
        // The fixture tokenises `text.rstrip()`, as BLEU does.
        assert_eq!(
            tokenize_13a(text.trim_end()),
            c["tokens"].as_str().unwrap(),
            "{text:?}"
        );
    }
}

#[test]
fn tokenize_13a_edge_cases() {
    // Expected values from sacrebleu 2.5.1's Tokenizer13a.
    assert_eq!(
        tokenize_13a("a &amp; b &lt;c&gt; &quot;d&quot;"),
        "a & b < c > \" d \""
    );
    assert_eq!(tokenize_13a("x<skipped>y"), "xy");
    assert_eq!(tokenize_13a("end-\nline\nnext"), "endline next");
    assert_eq!(
        tokenize_13a("3-4 a-b 1.5, x.y ..."),
        "3 - 4 a-b 1.5 , x . y . . ."
    );
    assert_eq!(tokenize_13a(""), "");
}

#[test]
fn corpus_matches_sacrebleu() {
    let f = fixture();
    let pairs = pairs(&f);
    assert_eq!(pairs.len(), 22);
    let hyps: Vec<&str> = pairs.iter().map(|p| p.0.as_str()).collect();
    let refs: Vec<&str> = pairs.iter().map(|p| p.1.as_str()).collect();
    let got = corpus_bleu(&hyps, &refs);
    let want = &f["corpus"];
    check(&got, want, "corpus");
    assert_eq!(got.format(), want["formatted"].as_str().unwrap());
    assert_eq!(got.to_string(), want["formatted"].as_str().unwrap());
    assert_eq!(
        BleuScore::signature(false),
        want["signature"].as_str().unwrap()
    );
    assert_eq!(
        BleuScore::signature(true),
        f["sentence_settings"]["signature"].as_str().unwrap()
    );
    assert!(try_corpus_bleu(&hyps, &refs[1..]).is_err());
    assert_eq!(try_corpus_bleu(&hyps, &refs).unwrap(), got);
}

#[test]
fn sentences_match_sacrebleu() {
    let f = fixture();
    let sentences = f["sentences"].as_array().unwrap();
    for s in sentences {
        let (hyp, reference) = (s["hyp"].as_str().unwrap(), s["ref"].as_str().unwrap());
        check(
            &sentence_bleu(hyp, reference),
            s,
            &format!("{hyp:?} vs {reference:?}"),
        );
    }
}

#[test]
fn degenerate_inputs() {
    let empty = corpus_bleu(&[], &[]);
    assert_eq!(empty.score, 0.0);
    assert_eq!(empty.ratio(), 0.0);
    let s = sentence_bleu("", "");
    assert_eq!((s.score, s.bp, s.sys_len, s.ref_len), (0.0, 1.0, 0, 0));
    // exp(ln 100) in f64, as in Python.
    assert_eq!(
        sentence_bleu("same words here", "same words here").score,
        100.000_000_000_000_04
    );
}

/// Full-precision cross-check on many more pairs: run
/// `SACREBLEU_CROSSCHECK=cases.json cargo test -p lcm-eval --test bleu -- --ignored` with
/// `cases.json` = `{"pairs": [[hyp, ref], …], "tokens": [[line, tokens], …],
/// "corpus": {score, bp, counts, totals, precisions}, "sentences": [{…}, …]}` written by
/// sacrebleu (unrounded floats).
#[test]
#[ignore = "needs a cases file made with sacrebleu"]
fn crosscheck_with_sacrebleu_cases() {
    let Ok(path) = std::env::var("SACREBLEU_CROSSCHECK") else {
        return;
    };
    let c: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let close = |a: f64, b: &Value, what: &str| {
        let b = b.as_f64().unwrap();
        assert!((a - b).abs() <= 1e-9, "{what}: {a} vs {b}");
    };
    let full = |got: &BleuScore, want: &Value, what: &str| {
        assert_eq!(got.counts, usizes(&want["counts"]), "{what}");
        assert_eq!(got.totals, usizes(&want["totals"]), "{what}");
        close(got.score, &want["score"], what);
        close(got.bp, &want["bp"], what);
        for n in 0..4 {
            close(got.precisions[n], &want["precisions"][n], what);
        }
    };
    for t in c["tokens"].as_array().unwrap() {
        assert_eq!(
            tokenize_13a(t[0].as_str().unwrap()),
            t[1].as_str().unwrap(),
            "{}",
            t[0]
        );
    }
    let pairs: Vec<(&str, &str)> = c["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap(), p[1].as_str().unwrap()))
        .collect();
    for (p, want) in pairs.iter().zip(c["sentences"].as_array().unwrap()) {
        full(&sentence_bleu(p.0, p.1), want, &format!("{p:?}"));
    }
    let hyps: Vec<&str> = pairs.iter().map(|p| p.0).collect();
    let refs: Vec<&str> = pairs.iter().map(|p| p.1).collect();
    full(&corpus_bleu(&hyps, &refs), &c["corpus"], "corpus");
    eprintln!(
        "{} pairs and {} lines match",
        pairs.len(),
        c["tokens"].as_array().unwrap().len()
    );
}
