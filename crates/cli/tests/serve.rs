//! `lcm serve` as users start it: a trained tiny Two-Tower behind POST /generate answers
//! exactly what `lcm generate --json` prints for the same prompt and seed; SIGTERM stops
//! the server cleanly.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};

use common::{lcm, run_ok, tiny_bert, tiny_two_tower};
use serde_json::{Value, json};

/// One HTTP/1.1 request over a fresh connection; the status and the JSON body.
fn request(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let (_, payload) = response.split_once("\r\n\r\n").expect("headers end");
    (
        status,
        serde_json::from_str(payload).unwrap_or(Value::String(payload.into())),
    )
}

/// The document without its wall-clock fields (`ms`), which differ between any two runs.
fn without_timings(mut value: Value) -> Value {
    match &mut value {
        Value::Object(map) => {
            map.remove("ms");
            for v in map.values_mut() {
                *v = without_timings(v.take());
            }
        }
        Value::Array(items) => {
            for v in items.iter_mut() {
                *v = without_timings(v.take());
            }
        }
        _ => {}
    }
    value
}

/// Kills the server if the test fails before stopping it, so that no orphan keeps the test
/// harness's output pipe open.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the "listening on http://ADDR" line the server prints once it accepts connections.
fn listening_address(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("line");
    line.trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string()
}

#[test]
fn serve_generates_what_the_cli_generates_and_stops_on_sigterm() {
    let home = tempfile::tempdir().expect("tempdir");
    let (store, run) = tiny_two_tower(home.path());
    let prompt = "The whale swam. The sea was calm.";
    let printed = run_ok(
        lcm(home.path())
            .arg("generate")
            .arg("--model")
            .arg(&run)
            .arg("--store")
            .arg(&store)
            .arg("--encoder")
            .arg(tiny_bert())
            .args([
                "--max-sentences",
                "3",
                "--seed",
                "7",
                "--ddim-steps",
                "5",
                "--json",
                // No stop rule: a 3-step model's concepts would stop at once.
                "--eos-threshold",
                "1.1",
                "--repetition-threshold",
                "1.1",
                prompt,
            ]),
    );
    let cli: Value = serde_json::from_str(&printed).expect("json");
    let goal = "The ship sank in the storm.";
    let avoid = "Whales are mammals.";
    let planned = run_ok(
        lcm(home.path())
            .arg("plan")
            .arg("--model")
            .arg(&run)
            .arg("--store")
            .arg(&store)
            .arg("--encoder")
            .arg(tiny_bert())
            .args(["--goal", goal, "--avoid", avoid])
            .args(["--steps", "2", "--candidates", "3", "--seed", "5"])
            .args(["--ddim-steps", "5", "--json", prompt]),
    );
    let cli_plan: Value = serde_json::from_str(&planned).expect("plan json");

    let server = lcm(home.path())
        .arg("serve")
        .args(["--port", "0", "--ddim-steps", "5"])
        .arg("--model")
        .arg(&run)
        .arg("--store")
        .arg(&store)
        .arg("--encoder")
        .arg(tiny_bert())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn lcm serve");
    let mut server = KillOnDrop(server);
    let addr = listening_address(&mut server.0);

    let (status, served) = request(
        &addr,
        "POST",
        "/generate",
        Some(&json!({
            "prompt": prompt,
            "max_sentences": 3,
            "seed": 7,
            "eos_threshold": 1.1,
            "repetition_threshold": 1.1
        })),
    );
    assert_eq!(status, 200, "{served}");
    assert_eq!(
        served["generated"].as_array().map(Vec::len),
        Some(3),
        "{served}"
    );
    assert_eq!(served["generated"], cli["generated"], "{served}\n{cli}");
    assert_eq!(served["stop"], cli["stop"]);
    assert_eq!(served["prompt"], cli["prompt"]);
    let (status, info) = request(&addr, "GET", "/info", None);
    assert_eq!(status, 200);
    assert!(
        info["lcm_model"]
            .as_str()
            .is_some_and(|m| m.contains("two-tower")),
        "{info}"
    );
    let (status, refused) = request(
        &addr,
        "POST",
        "/generate",
        Some(&json!({ "prompt": prompt, "max_sentences": 1000 })),
    );
    assert_eq!(status, 413, "{refused}");

    // `/plan` answers what `lcm plan --json` prints for the same case and settings.
    let (status, served_plan) = request(
        &addr,
        "POST",
        "/plan",
        Some(&json!({
            "prompt": prompt, "goal": goal, "avoid": [avoid],
            "steps": 2, "candidates": 3, "seed": 5
        })),
    );
    assert_eq!(status, 200, "{served_plan}");
    assert_eq!(
        without_timings(served_plan.clone()),
        without_timings(cli_plan)
    );
    assert!(
        served_plan["planner"].is_object() && served_plan["greedy_retrieval"].is_object(),
        "{served_plan}"
    );
    let (status, refused) = request(
        &addr,
        "POST",
        "/plan",
        Some(&json!({ "prompt": prompt, "goal": "  " })),
    );
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("goal")),
        "{refused}"
    );
    let (status, refused) = request(
        &addr,
        "POST",
        "/plan",
        Some(&json!({ "prompt": prompt, "goal": goal, "candidates": 100000 })),
    );
    assert_eq!(status, 413, "{refused}");

    let terminated = std::process::Command::new("kill")
        .arg(server.0.id().to_string())
        .status()
        .expect("kill");
    assert!(terminated.success());
    let exit = server.0.wait().expect("wait");
    assert!(exit.success(), "lcm serve exited with {exit}");
    let _ = std::io::stdout().flush();
}
