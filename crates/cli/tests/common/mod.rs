//! Helpers shared by the CLI integration tests: an isolated model home, the committed corpus
//! sample and tiny encoder, and running `lcm` expecting success or failure.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn tiny_bert() -> PathBuf {
    repo().join("fixtures/encoder/tiny-bert")
}

/// `lcm` with an isolated, empty model home so no test depends on what this machine has.
pub fn lcm(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lcm"));
    command
        .env("LCM_HOME", home)
        .env("HF_HOME", home.join("hf"))
        .env("HF_HUB_CACHE", home.join("hf/hub"))
        .env("HF_HUB_OFFLINE", "1")
        // The fused engine splits a batch over one replica per thread, so the numbers a
        // run computes depend on the thread count: fixed here so that pinned outputs
        // (tests/pinned.rs) do not depend on the host's cores.
        .env("RAYON_NUM_THREADS", "2")
        .env_remove("RUST_LOG");
    command
}

pub fn run_ok(command: &mut Command) -> String {
    let output = command.output().expect("spawn lcm");
    assert!(
        output.status.success(),
        "lcm failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 stdout")
}

pub fn run_err(command: &mut Command) -> String {
    let output = command.output().expect("spawn lcm");
    assert!(!output.status.success(), "lcm unexpectedly succeeded");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Prepare the committed sample with the tiny encoder and fit its normaliser.
pub fn tiny_store(home: &Path) -> PathBuf {
    let store = home.join("store");
    run_ok(
        lcm(home)
            .arg("prepare")
            .arg(repo().join("fixtures/corpus/sample.jsonl"))
            .arg("--out")
            .arg(&store)
            .arg("--encoder")
            .arg(tiny_bert())
            .args(["--quiet", "--threads", "1"]),
    );
    run_ok(
        lcm(home)
            .arg("fit-normalizer")
            .arg(&store)
            .arg("--out")
            .arg(store.join("normalizer.safetensors")),
    );
    store
}

/// [`tiny_store`] plus a tiny Two-Tower model trained on it for 3 steps in `home/run`.
pub fn tiny_two_tower(home: &Path) -> (PathBuf, PathBuf) {
    let store = tiny_store(home);
    let run = home.join("run");
    run_ok(
        lcm(home)
            .arg("train")
            .arg(&store)
            .args(["--model", "two-tower", "--preset", "tiny", "--steps", "3"])
            .arg("--out")
            .arg(&run)
            .arg("--encoder")
            .arg(tiny_bert())
            .args(["--max-concepts", "64", "--valid-fraction", "0.2", "--quiet"]),
    );
    (store, run)
}
