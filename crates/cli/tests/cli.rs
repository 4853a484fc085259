//! The `lcm` binary end to end: commands, error messages, and surviving SIGKILL.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{lcm, repo, run_err, run_ok, tiny_bert, tiny_store, tiny_two_tower};

#[test]
fn segment_reads_stdin_and_prints_one_sentence_per_line() {
    let home = tempfile::tempdir().expect("tempdir");
    let mut child = lcm(home.path())
        .arg("segment")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(
            "Mr. Smith paid $3.50 for it. Then he left!\n\n今日は晴れです。明日は雨です。"
                .as_bytes(),
        )
        .expect("write");
    let output = child.wait_with_output().expect("wait");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "Mr. Smith paid $3.50 for it.",
            "Then he left!",
            "今日は晴れです。",
            "明日は雨です。"
        ]
    );
}

#[test]
fn segment_names_the_line_of_invalid_utf8() {
    let home = tempfile::tempdir().expect("tempdir");
    let file = home.path().join("latin1.txt");
    std::fs::write(&file, b"ok line\ncaf\xe9 au lait\n").expect("write");
    let stderr = run_err(lcm(home.path()).arg("segment").arg(&file));
    assert!(
        stderr.contains("latin1.txt: line 2: invalid UTF-8"),
        "{stderr}"
    );
}

#[test]
fn encode_writes_npy_and_safetensors() {
    let home = tempfile::tempdir().expect("tempdir");
    let npy = home.path().join("e.npy");
    run_ok(
        lcm(home.path())
            .args(["encode", "--encoder"])
            .arg(tiny_bert())
            .args(["One sentence.", "Another sentence.", "A third."])
            .arg("--out")
            .arg(&npy),
    );
    let bytes = std::fs::read(&npy).expect("npy");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8_lossy(&bytes[10..10 + header_len]);
    assert!(header.contains("'shape': (3, 32)"), "{header}");

    let json = run_ok(
        lcm(home.path())
            .args(["encode", "--encoder"])
            .arg(tiny_bert())
            .arg("One sentence."),
    );
    let value: serde_json::Value = serde_json::from_str(json.trim()).expect("json line");
    let from_json: Vec<f32> = value["embedding"]
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_f64().expect("number") as f32)
        .collect();
    let first_npy: Vec<f32> = bytes[10 + header_len..10 + header_len + 32 * 4]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(from_json, first_npy);

    let st = home.path().join("e.safetensors");
    run_ok(
        lcm(home.path())
            .args(["encode", "--encoder"])
            .arg(tiny_bert())
            .args(["Hello.", "--out"])
            .arg(&st),
    );
    let report = run_ok(lcm(home.path()).arg("inspect").arg(&st));
    assert!(
        report.contains("embeddings") && report.contains("[1, 32]"),
        "{report}"
    );
    assert!(report.contains("tiny-bert@"), "{report}");
}

#[test]
fn missing_and_broken_models_say_how_to_fix_them() {
    let home = tempfile::tempdir().expect("tempdir");
    let stderr = run_err(lcm(home.path()).args(["encode", "--encoder", "minilm", "Hi."]));
    assert!(
        stderr.contains("bash scripts/fetch-models.sh minilm"),
        "{stderr}"
    );

    let broken = home.path().join("broken-model");
    std::fs::create_dir(&broken).expect("mkdir");
    std::fs::write(broken.join("config.json"), "{\"model_type\": \"bert\"}").expect("write");
    let stderr = run_err(
        lcm(home.path())
            .args(["encode", "--encoder"])
            .arg(&broken)
            .arg("Hi."),
    );
    assert!(stderr.contains("broken-model"), "{stderr}");
}

fn shard_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn prepare_killed_with_sigkill_resumes_without_corrupt_or_duplicate_shards() {
    let home = tempfile::tempdir().expect("tempdir");
    let corpus = repo().join("fixtures/corpus/sample.jsonl");
    let prepare = |out: &Path| {
        let mut command = lcm(home.path());
        command
            .arg("prepare")
            .arg(&corpus)
            .arg("--out")
            .arg(out)
            .arg("--encoder")
            .arg(tiny_bert())
            .args(["--shard-size", "1", "--quiet", "--threads", "1"]);
        command
    };
    let clean = home.path().join("clean");
    run_ok(&mut prepare(&clean));

    let killed = home.path().join("killed");
    let mut child = prepare(&killed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(120);
    while shard_count(&killed) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let survived = shard_count(&killed);
    assert!(
        survived >= 3,
        "the run should have written shards before the kill"
    );
    assert!(survived < 16, "the run finished before it could be killed");

    let summary = run_ok(&mut prepare(&killed));
    assert!(summary.contains("kept from an earlier run"), "{summary}");
    let a = run_ok(lcm(home.path()).args(["inspect", "--json"]).arg(&clean));
    let b = run_ok(lcm(home.path()).args(["inspect", "--json"]).arg(&killed));
    let (a, b): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&a).expect("json"),
        serde_json::from_str(&b).expect("json"),
    );
    assert_eq!(a["store"]["documents"], "16");
    assert_eq!(a["store"]["sentences"], b["store"]["sentences"]);
    assert_eq!(a["statistics"], b["statistics"]);
    for entry in std::fs::read_dir(&killed)
        .expect("list")
        .filter_map(Result::ok)
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".tmp"),
            "temporary file left behind: {name}"
        );
    }
    // Byte-identical shards: nothing was duplicated, truncated or reordered.
    for index in 0..16 {
        let name = format!("shard-{index:05}.parquet");
        let x = std::fs::read(clean.join(&name)).expect("clean shard");
        let y = std::fs::read(killed.join(&name)).expect("resumed shard");
        assert!(
            x == y,
            "{name} differs between the clean and the resumed run"
        );
    }
}

#[test]
fn fit_normalizer_and_inspect_work_on_a_prepared_store() {
    let home = tempfile::tempdir().expect("tempdir");
    let store = home.path().join("store");
    run_ok(
        lcm(home.path())
            .arg("prepare")
            .arg(repo().join("fixtures/corpus/sample-txt"))
            .arg("--out")
            .arg(&store)
            .arg("--encoder")
            .arg(tiny_bert())
            .arg("--quiet"),
    );
    let norm = home.path().join("norm.safetensors");
    let printed = run_ok(
        lcm(home.path())
            .arg("fit-normalizer")
            .arg(&store)
            .arg("--out")
            .arg(&norm),
    );
    assert!(printed.contains("dim 32"), "{printed}");
    let report = run_ok(lcm(home.path()).arg("inspect").arg(&store));
    assert!(
        report.contains("documents") && report.contains("3"),
        "{report}"
    );
    let report = run_ok(lcm(home.path()).arg("inspect").arg(&norm));
    assert!(report.contains("gaussian_robust"), "{report}");
}

#[test]
fn train_tiny_base_lcm_then_resume() {
    let home = tempfile::tempdir().expect("tempdir");
    let store = tiny_store(home.path());
    let out = home.path().join("run");
    let train = |steps: &str, resume: bool| {
        let mut command = lcm(home.path());
        command
            .arg("train")
            .arg(&store)
            .args(["--model", "base", "--preset", "tiny", "--steps", steps])
            .arg("--out")
            .arg(&out)
            .arg("--encoder")
            .arg(tiny_bert())
            .args([
                "--max-concepts",
                "64",
                "--eval-every",
                "2",
                "--checkpoint-every",
                "2",
                "--valid-fraction",
                "0.2",
                "--quiet",
            ]);
        if resume {
            command.arg("--resume");
        }
        run_ok(&mut command)
    };
    let printed = train("4", false);
    assert!(printed.contains("steps 0→4"), "{printed}");
    let printed = train("7", true);
    assert!(printed.contains("steps 4→7"), "{printed}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics");
    assert_eq!(metrics.lines().count(), 7, "{metrics}");
    assert!(
        out.join("checkpoints/step-00000007/model.safetensors")
            .exists()
    );
    // TensorBoard event files beside metrics.jsonl: one per invocation, the second opening
    // with a restart marker; one scalar event per step, with the same numbers.
    let files = lcm_train::tensorboard::event_files(&out).expect("event files");
    assert_eq!(files.len(), 2, "{files:?}");
    let events: Vec<_> = files
        .iter()
        .flat_map(|f| lcm_train::tensorboard::read_events(f).expect("readable records"))
        .collect();
    assert_eq!(
        events.len(),
        1 + 4 + 1 + 1 + 3,
        "file versions, START, steps"
    );
    let steps: Vec<_> = events
        .iter()
        .filter(|e| !e.scalars.is_empty())
        .map(|e| e.step)
        .collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6, 7]);
    assert!(events.iter().any(|e| e.session_start && e.step == 5));
    for (event, line) in events
        .iter()
        .filter(|e| !e.scalars.is_empty())
        .zip(metrics.lines())
    {
        let line: serde_json::Value = serde_json::from_str(line).expect("json");
        let get = |tag: &str| {
            event
                .scalars
                .iter()
                .find(|(t, _)| t == tag)
                .map(|(_, v)| *v)
        };
        for (tag, field) in [
            ("train/loss", "loss"),
            ("optim/lr", "lr"),
            ("optim/grad_norm", "grad_norm"),
            ("batch/concepts", "concepts"),
            ("throughput/concepts_per_s", "concepts_per_s"),
            ("valid/loss", "valid_loss"),
        ] {
            assert_eq!(
                get(tag),
                line[field].as_f64().map(|v| v as f32),
                "{tag} at step {}",
                event.step
            );
        }
    }
}

#[test]
fn train_eval_generate_and_plot_a_tiny_two_tower() {
    let home = tempfile::tempdir().expect("tempdir");
    let (store, run) = tiny_two_tower(home.path());
    // `lcm train` draws its own loss curve.
    let drawn = std::fs::read(run.join("loss.png")).expect("lcm train wrote loss.png");
    assert!(drawn.starts_with(b"\x89PNG\r\n\x1a\n"));

    let eval_json = || {
        let printed = run_ok(
            lcm(home.path())
                .arg("eval")
                .arg(&run)
                .arg("--store")
                .arg(&store)
                .arg("--encoder")
                .arg(tiny_bert())
                .args(["--ddim-steps", "3", "--max-concepts", "200", "--json"]),
        );
        serde_json::from_str::<serde_json::Value>(&printed).expect("eval JSON")
    };
    let report = eval_json();
    let rows = report["rows"].as_array().expect("rows");
    let names: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["predictor"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "two-tower tiny (step 3)",
            "repeat previous concept",
            "mean concept"
        ]
    );
    for row in rows {
        let l2 = row["l2"].as_f64().expect("l2");
        assert!(l2.is_finite() && l2 > 0.0, "{row}");
        assert!(row["positions"].as_u64().expect("positions") > 0);
    }
    // Same seed, same numbers: the diffusion noise is seeded.
    assert_eq!(eval_json()["rows"], report["rows"]);

    let generate = |prompt: &str| {
        let mut command = lcm(home.path());
        command
            .arg("generate")
            .arg("--model")
            .arg(&run)
            .arg("--store")
            .arg(&store)
            .arg("--encoder")
            .arg(tiny_bert())
            .args(["--ddim-steps", "3", "--max-sentences", "3", "--json"])
            .arg(prompt);
        command
    };
    let out = run_ok(&mut generate(
        "It was a bright cold day in April. The clocks were striking thirteen.",
    ));
    let out: serde_json::Value = serde_json::from_str(&out).expect("generate JSON");
    assert_eq!(out["prompt"].as_array().expect("prompt").len(), 2);
    let generated = out["generated"].as_array().expect("generated");
    assert!(generated.len() <= 3);
    for g in generated {
        assert!(!g["text"].as_str().expect("text").is_empty());
        let sim = g["similarity"].as_f64().expect("similarity");
        assert!((-1.0..=1.0).contains(&sim), "{g}");
    }
    let stop = out["stop"].as_str().expect("stop");
    assert!(
        ["end-of-text", "repetition", "max-sentences"].contains(&stop),
        "{stop}"
    );
    assert!(store.join("sentence-bank/bank.json").exists());

    let err = run_err(&mut generate("   "));
    assert!(err.contains("holds no sentence"), "{err}");
    let err = run_err(
        lcm(home.path())
            .arg("eval")
            .arg(home.path().join("nowhere"))
            .arg("--store")
            .arg(&store),
    );
    assert!(err.contains("no checkpoint at"), "{err}");

    let png = run.join("loss.png");
    run_ok(
        lcm(home.path())
            .arg("plot")
            .arg(run.join("metrics.jsonl"))
            .arg("--out")
            .arg(&png),
    );
    let bytes = std::fs::read(&png).expect("png");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
}
