//! Memory of encoding a single 20 MB line: the tokenizer must not build every token of a
//! sentence that truncation will cut to a few hundred (that took 2 GB before). Alone in its
//! own test binary so that the process's peak resident memory is this test's.

use std::path::Path;

use lcm_concept::ConceptEncoder;
use lcm_concept::bert::{BertEncoder, EncoderOptions};

/// Peak resident memory of this process in KiB (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_twenty_megabyte_line_encodes_in_bounded_memory() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/encoder/tiny-bert");
    let encoder = BertEncoder::from_folder(folder, &EncoderOptions::default()).expect("tiny-bert");
    let sentence = "This sentence repeats many times without any line break at all. ";
    let line = sentence.repeat(20 * 1024 * 1024 / sentence.len());
    let short = sentence.repeat(64);
    let before = peak_rss_kib();
    let concepts = encoder
        .encode(&[line.as_str(), short.as_str()], None)
        .expect("encode")
        .to_vec2::<f32>()
        .expect("rows");
    // Truncation keeps the same leading tokens of both, hence the same concept.
    assert_eq!(concepts[0], concepts[1]);
    if let (Some(before), Some(after)) = (before, peak_rss_kib()) {
        let grown_mib = after.saturating_sub(before) / 1024;
        eprintln!("peak RSS grew by {grown_mib} MiB encoding a 20 MB line");
        assert!(grown_mib < 200, "peak RSS grew by {grown_mib} MiB");
    }
}
