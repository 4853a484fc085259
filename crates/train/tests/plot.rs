//! `plot_metrics`: renders a PNG from a metrics.jsonl and names the problem when it cannot.

use std::fs;
use std::path::Path;

use lcm_train::TrainError;
use lcm_train::plot::{PLOT_SIZE, plot_metrics};

/// A run of `steps` steps whose loss decays over two decades (so the axis goes
/// logarithmic), with validation every 10 steps and a warmup-then-decay learning rate.
fn write_metrics(path: &Path, steps: u64) {
    let mut text = String::new();
    for step in 1..=steps {
        let t = step as f64 / steps as f64;
        let loss = 5.0 * (-4.0 * t).exp() + 0.02 * ((step * 7919) % 13) as f64 / 13.0;
        let lr = 1e-3 * (step as f64 / 10.0).min(1.0) * (1.0 - 0.9 * t);
        let valid = if step % 10 == 0 {
            format!(",\"valid_loss\":{}", loss * 1.1)
        } else {
            String::new()
        };
        text.push_str(&format!(
            "{{\"step\":{step},\"loss\":{loss},\"lr\":{lr},\"grad_norm\":1.0,\
             \"concepts\":512,\"concepts_per_s\":1000.0{valid}}}\n"
        ));
    }
    fs::write(path, text).expect("write fixture");
}

/// Width and height from the IHDR chunk, after checking the PNG signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 24, "PNG too short");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk is not IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

/// Number of distinct RGB colours in the decoded image.
fn distinct_colours(path: &Path) -> usize {
    let decoder = png::Decoder::new(fs::File::open(path).expect("open png"));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("png frame");
    let channels = info.color_type.samples();
    let mut colours: Vec<&[u8]> = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|px| &px[..channels.min(3)])
        .collect();
    colours.sort_unstable();
    colours.dedup();
    colours.len()
}

#[test]
fn plots_a_run_with_validation_and_lr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = dir.path().join("metrics.jsonl");
    write_metrics(&metrics, 200);
    let out = dir.path().join("loss.png");

    let summary = plot_metrics(&metrics, &out, "test run").expect("plot");
    assert_eq!(summary.train_points, 200);
    assert_eq!(summary.valid_points, 20);
    assert_eq!((summary.first_step, summary.last_step), (1, 200));
    assert!(summary.log_scale, "loss spans >10x, axis should be log");
    assert_eq!(summary.skipped_non_finite, 0);

    let bytes = fs::read(&out).expect("png written");
    assert_eq!(png_size(&bytes), PLOT_SIZE);
    // Lines, points, legend and anti-aliased text give many colours; a blank canvas one.
    let colours = distinct_colours(&out);
    assert!(colours > 10, "only {colours} distinct colours");
    // Atomic write: nothing but the fixture and the PNG remains in the directory.
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["loss.png", "metrics.jsonl"]);
}

#[test]
fn skips_non_finite_values_and_keeps_the_latest_duplicate_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = dir.path().join("metrics.jsonl");
    // serde_json writes NaN/inf as null; step 2 repeats after a resume; the last line is
    // half-written (no newline).
    fs::write(
        &metrics,
        "{\"step\":1,\"loss\":2.0,\"lr\":0.001}\n\
         {\"step\":2,\"loss\":null,\"lr\":0.001}\n\
         \n\
         {\"step\":3,\"loss\":1.5,\"lr\":null,\"valid_loss\":1.6}\n\
         {\"step\":2,\"loss\":1.8,\"lr\":0.001}\n\
         {\"step\":4,\"lo",
    )
    .expect("write fixture");
    let out = dir.path().join("loss.png");
    let summary = plot_metrics(&metrics, &out, "nan").expect("plot");
    assert_eq!(summary.skipped_non_finite, 2);
    assert_eq!(summary.replaced_steps, 1);
    assert!(summary.skipped_partial_last_line);
    assert_eq!(
        summary.train_points, 3,
        "step 2 plotted from its later line"
    );
    assert!(!summary.log_scale);
    assert_eq!(summary.best_valid, Some((3, 1.6)));
    assert_eq!(png_size(&fs::read(&out).expect("png")), PLOT_SIZE);
}

#[test]
fn missing_file_names_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = dir.path().join("nope").join("metrics.jsonl");
    let error = plot_metrics(&metrics, &dir.path().join("loss.png"), "t").unwrap_err();
    assert!(matches!(error, TrainError::Io { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&metrics.display().to_string()),
        "{error}"
    );
}

#[test]
fn malformed_line_names_file_and_line_number() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = dir.path().join("metrics.jsonl");
    fs::write(
        &metrics,
        "{\"step\":1,\"loss\":2.0}\n{\"step\":2,\"loss\":1.9}\nnot json\n{\"step\":4,\"loss\":1.7}\n",
    )
    .expect("write fixture");
    let out = dir.path().join("loss.png");
    let error = plot_metrics(&metrics, &out, "t").unwrap_err();
    match &error {
        TrainError::MetricsLine { path, line, .. } => {
            assert_eq!(path, &metrics);
            assert_eq!(*line, 3);
        }
        other => panic!("expected MetricsLine, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("metrics.jsonl"), "{message}");
    assert!(!out.exists(), "no PNG on error");
}

#[test]
fn empty_metrics_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = dir.path().join("metrics.jsonl");
    fs::write(&metrics, "\n\n").expect("write fixture");
    let error = plot_metrics(&metrics, &dir.path().join("loss.png"), "t").unwrap_err();
    assert!(error.to_string().contains("no metrics"), "{error}");

    // Only non-finite losses: nothing to draw either, and the count is reported.
    fs::write(&metrics, "{\"step\":1,\"loss\":null,\"lr\":0.001}\n").expect("write fixture");
    let error = plot_metrics(&metrics, &dir.path().join("loss.png"), "t").unwrap_err();
    assert!(error.to_string().contains("1 non-finite"), "{error}");
}
