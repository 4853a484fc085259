//! `lcm models fetch sonar`: offline behaviour (what is missing and where it comes from, and
//! files that are present but not SONAR's are refused with their path).

mod common;

use common::{lcm, run_err};

#[test]
fn missing_sonar_files_are_listed_with_their_urls() {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("sonar");
    let output = lcm(home.path())
        .args(["models", "fetch", "sonar", "--dir"])
        .arg(&dir)
        .output()
        .expect("spawn lcm");
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for name in [
        "sonar_text_encoder.pt",
        "sonar_text_decoder.pt",
        "sentencepiece.source.256000.model",
    ] {
        assert!(
            stdout.contains(&format!("https://dl.fbaipublicfiles.com/SONAR/{name}")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("CC-BY-NC-4.0"), "{stdout}");
    assert!(stderr.contains("3 SONAR file(s) missing"), "{stderr}");
    assert!(!dir.exists(), "nothing is created without --download");
}

#[test]
fn files_that_are_not_sonar_are_refused_naming_the_file() {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("sonar");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for name in [
        "sonar_text_encoder.pt",
        "sonar_text_decoder.pt",
        "sentencepiece.source.256000.model",
    ] {
        std::fs::write(dir.join(name), b"not a model").expect("write");
    }
    let stderr = run_err(
        lcm(home.path())
            .args(["models", "fetch", "sonar", "--dir"])
            .arg(&dir),
    );
    assert!(
        stderr.contains("sentencepiece.source.256000.model"),
        "{stderr}"
    );
}

#[test]
fn unknown_model_names_point_to_the_right_fetcher() {
    let home = tempfile::tempdir().expect("tempdir");
    let stderr = run_err(lcm(home.path()).args(["models", "fetch", "minilm"]));
    assert!(
        stderr.contains("scripts/fetch-models.sh minilm"),
        "{stderr}"
    );
}
