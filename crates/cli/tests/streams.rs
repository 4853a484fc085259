//! How `lcm` behaves in pipes and CI logs: progress as plain lines when standard error is not
//! a terminal, and `encode` streaming input of any size in bounded batches.

mod common;

use common::{lcm, run_ok, tiny_bert, tiny_store};

fn run_stderr(command: &mut std::process::Command) -> String {
    let output = command.output().expect("spawn lcm");
    assert!(
        output.status.success(),
        "lcm failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn progress_is_printed_as_lines_when_stderr_is_not_a_terminal() {
    let home = tempfile::tempdir().expect("tempdir");
    let store = home.path().join("store");
    let prepare = |quiet: bool, out: &std::path::Path| {
        let mut command = lcm(home.path());
        command
            .env("LCM_PROGRESS_SECONDS", "0")
            .arg("prepare")
            .arg(common::repo().join("fixtures/corpus/sample.jsonl"))
            .arg("--out")
            .arg(out)
            .arg("--encoder")
            .arg(tiny_bert())
            .args(["--threads", "1"]);
        if quiet {
            command.arg("--quiet");
        }
        run_stderr(&mut command)
    };
    let stderr = prepare(false, &store);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(" docs")).collect();
    assert!(lines.len() >= 2, "{stderr}");
    let last = lines.last().copied().unwrap_or_default();
    assert!(
        last.starts_with("[0:00:") && last.contains(" (100%)") && last.contains("sentences"),
        "{stderr}"
    );
    let quiet = prepare(true, &home.path().join("quiet-store"));
    assert!(!quiet.contains(" docs"), "{quiet}");

    let store = tiny_store(home.path());
    let stderr = run_stderr(
        lcm(home.path())
            .env("LCM_PROGRESS_SECONDS", "0")
            .arg("train")
            .arg(&store)
            .args(["--model", "base", "--preset", "tiny", "--steps", "3"])
            .arg("--out")
            .arg(home.path().join("run"))
            .arg("--encoder")
            .arg(tiny_bert())
            .args(["--max-concepts", "64", "--valid-fraction", "0.2"]),
    );
    for step in 1..=3 {
        assert!(
            stderr.contains(&format!("] {step}/3 steps (")),
            "step {step}: {stderr}"
        );
    }
    assert!(stderr.contains("concepts/s"), "{stderr}");
}

#[test]
fn encode_streams_many_lines_in_batches_in_order() {
    let home = tempfile::tempdir().expect("tempdir");
    let input = home.path().join("many.txt");
    let lines: Vec<String> = (0..5000).map(|i| format!("Sentence number {i}.")).collect();
    std::fs::write(&input, lines.join("\r\n") + "\n").expect("write");
    let npy = home.path().join("many.npy");
    run_ok(
        lcm(home.path())
            .args(["encode", "--encoder"])
            .arg(tiny_bert())
            .arg("--file")
            .arg(&input)
            .arg("--out")
            .arg(&npy),
    );
    let bytes = std::fs::read(&npy).expect("npy");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8_lossy(&bytes[10..10 + header_len]);
    assert!(header.contains("'shape': (5000, 32)"), "{header}");
    let row = |i: usize| -> Vec<f32> {
        let start = 10 + header_len + i * 32 * 4;
        bytes[start..start + 32 * 4]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    // A row of the second batch is the concept of its own line, encoded alone.
    for i in [0, 4097, 4999] {
        let json = run_ok(
            lcm(home.path())
                .args(["encode", "--encoder"])
                .arg(tiny_bert())
                .arg(&lines[i]),
        );
        let value: serde_json::Value = serde_json::from_str(json.trim()).expect("json");
        let alone: Vec<f32> = value["embedding"]
            .as_array()
            .expect("array")
            .iter()
            .map(|v| v.as_f64().expect("number") as f32)
            .collect();
        let gathered = row(i);
        let diff = alone
            .iter()
            .zip(&gathered)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "row {i}: {diff}");
    }

    // JSON lines keep input order across batches, with the text of each line.
    let stdout = run_ok(
        lcm(home.path())
            .args(["encode", "--encoder"])
            .arg(tiny_bert())
            .arg("--file")
            .arg(&input),
    );
    let texts: Vec<String> = stdout
        .lines()
        .map(|l| {
            let value: serde_json::Value = serde_json::from_str(l).expect("json line");
            value["text"].as_str().expect("text").to_string()
        })
        .collect();
    assert_eq!(texts, lines);
}

#[test]
fn encode_names_the_line_of_invalid_utf8_and_refuses_empty_input() {
    let home = tempfile::tempdir().expect("tempdir");
    let file = home.path().join("latin1.txt");
    std::fs::write(&file, b"ok line\ncaf\xe9 au lait\n").expect("write");
    let stderr = common::run_err(
        lcm(home.path())
            .args(["encode", "--encoder"])
            .arg(tiny_bert())
            .arg("--file")
            .arg(&file),
    );
    assert!(
        stderr.contains("latin1.txt: line 2: invalid UTF-8"),
        "{stderr}"
    );
    let empty = home.path().join("empty.txt");
    std::fs::write(&empty, b"").expect("write");
    let out = home.path().join("empty.npy");
    let stderr = common::run_err(
        lcm(home.path())
            .args(["encode", "--encoder"])
            .arg(tiny_bert())
            .arg("--file")
            .arg(&empty)
            .arg("--out")
            .arg(&out),
    );
    assert!(stderr.contains("no sentences to encode"), "{stderr}");
    assert!(!out.exists());
}
