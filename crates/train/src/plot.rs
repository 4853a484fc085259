//! Loss-curve plots from a training run's `metrics.jsonl` (`lcm plot`).
//!
//! The PNG has the training loss per step (thin line) with a moving average over it, the
//! validation loss where it was measured, and, below, the learning rate. The loss axis turns
//! logarithmic when the values span more than a factor of 10, so the early drop does not
//! flatten the rest of the curve.
//!
//! Text is rendered with an embedded font (DejaVu Sans Mono through `ab_glyph`): plotters'
//! default text path goes through font-kit and the system's fonts, which a clean CI machine
//! may not have, and then every label would fail to draw.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::fs;
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::register_font;
use serde::Deserialize;

use crate::{Result, TrainError, io_err};

/// Size of the PNG in pixels.
pub const PLOT_SIZE: (u32, u32) = (1000, 600);

/// Loss values spanning more than this factor get a logarithmic axis.
const LOG_SCALE_RATIO: f64 = 10.0;

/// What [`plot_metrics`] read and drew.
#[derive(Clone, Debug, PartialEq)]
pub struct PlotSummary {
    /// The PNG written.
    pub out: PathBuf,
    /// Steps with a finite training loss (the points of the training curve).
    pub train_points: usize,
    /// Steps with a finite validation loss.
    pub valid_points: usize,
    /// Loss, validation-loss and learning-rate values left out because they were NaN or
    /// infinite (`null` in the file: JSON has no NaN, so serde writes `null`).
    pub skipped_non_finite: usize,
    /// Lines that repeated an earlier step (a resumed run appends from its checkpoint);
    /// the later line wins.
    pub replaced_steps: usize,
    /// An unterminated last line that did not parse: the trainer was writing it when the
    /// file was read. Not an error, so a running job can be plotted.
    pub skipped_partial_last_line: bool,
    pub first_step: u64,
    pub last_step: u64,
    /// Training loss of the last plotted step.
    pub final_loss: f64,
    /// Lowest validation loss and its step.
    pub best_valid: Option<(u64, f64)>,
    /// Whether the loss axis is logarithmic.
    pub log_scale: bool,
}

/// One step's values as read from `metrics.jsonl`. Deliberately looser than
/// [`crate::StepMetrics`]: only `step` is required, so a file from an older or newer
/// trainer still plots, and non-finite numbers (`null`) are counted instead of rejected.
#[derive(Debug, Deserialize)]
struct MetricsLine {
    step: u64,
    #[serde(default)]
    loss: Option<f64>,
    #[serde(default)]
    lr: Option<f64>,
    #[serde(default)]
    valid_loss: Option<f64>,
}

/// The finite values of one step.
#[derive(Clone, Copy, Debug, Default)]
struct Point {
    loss: Option<f64>,
    lr: Option<f64>,
    valid_loss: Option<f64>,
}

/// A parsed metrics file, keyed by step.
struct Metrics {
    steps: BTreeMap<u64, Point>,
    skipped_non_finite: usize,
    replaced_steps: usize,
    skipped_partial_last_line: bool,
}

/// Reads `metrics.jsonl`. Blank lines are ignored; any other line that is not a JSON
/// object with a `step` is an error naming the file and the 1-based line number.
fn read_metrics(path: &Path) -> Result<Metrics> {
    let file = fs::File::open(path).map_err(io_err(path))?;
    let mut reader = BufReader::new(file);
    let mut metrics = Metrics {
        steps: BTreeMap::new(),
        skipped_non_finite: 0,
        replaced_steps: 0,
        skipped_partial_last_line: false,
    };
    let mut raw = String::new();
    let mut line_no = 0usize;
    let mut parsed_lines = 0usize;
    loop {
        raw.clear();
        let read = reader.read_line(&mut raw).map_err(io_err(path))?;
        if read == 0 {
            break;
        }
        line_no += 1;
        let text = raw.trim();
        if text.is_empty() {
            continue;
        }
        let parsed: MetricsLine = match serde_json::from_str(text) {
            Ok(parsed) => parsed,
            Err(error) => {
                // `read_line` keeps the newline; a last line without one is a write in
                // progress (the trainer appends and flushes whole lines), not corruption.
                let unterminated = !raw.ends_with('\n');
                if unterminated {
                    metrics.skipped_partial_last_line = true;
                    continue;
                }
                return Err(TrainError::MetricsLine {
                    path: path.to_path_buf(),
                    line: line_no,
                    reason: error.to_string(),
                });
            }
        };
        let mut keep = |value: Option<f64>| match value {
            Some(v) if v.is_finite() => Some(v),
            _ => {
                metrics.skipped_non_finite += 1;
                None
            }
        };
        // `null` for loss or lr means the trainer produced NaN/inf; absent valid_loss is the
        // normal non-eval step and is not counted.
        let point = Point {
            loss: keep(parsed.loss),
            lr: keep(parsed.lr),
            valid_loss: match parsed.valid_loss {
                None => None,
                some => keep(some),
            },
        };
        parsed_lines += 1;
        if metrics.steps.insert(parsed.step, point).is_some() {
            metrics.replaced_steps += 1;
        }
    }
    if parsed_lines == 0 {
        return Err(TrainError::Plot {
            path: path.to_path_buf(),
            reason: "contains no metrics (is the run still starting?)".into(),
        });
    }
    Ok(metrics)
}

/// Trailing moving average over `window` points; the first points average what exists.
fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let window = window.max(1);
    let mut sum = 0.0;
    points
        .iter()
        .enumerate()
        .map(|(i, &(x, y))| {
            sum += y;
            if i >= window {
                sum -= points[i - window].1;
            }
            (x, sum / (i + 1).min(window) as f64)
        })
        .collect()
}

/// Registers the embedded font under the family names plotters asks for (titles, axis
/// labels and legends use "sans-serif" by default). Once per process: the registry is global.
fn ensure_font() -> std::result::Result<(), String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        let bytes: &'static [u8] = dejavu::sans_mono::regular();
        ["sans-serif", "serif", "monospace"]
            .iter()
            .all(|family| register_font(family, FontStyle::Normal, bytes).is_ok())
    });
    if ok {
        Ok(())
    } else {
        Err("the embedded font could not be loaded".into())
    }
}

fn draw_err(error: impl Display) -> String {
    error.to_string()
}

/// Padded value range for a linear axis; a flat series still gets a visible band.
fn linear_range(lo: f64, hi: f64) -> Range<f64> {
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * 0.05
    } else {
        lo.abs().max(1.0) * 0.05
    };
    (lo - pad)..(hi + pad)
}

/// X range over the steps; a single step is widened so the axis has a width.
fn step_range(first: u64, last: u64) -> Range<f64> {
    let (lo, hi) = (first as f64, last as f64);
    if hi > lo {
        lo..hi
    } else {
        (lo - 1.0)..(hi + 1.0)
    }
}

struct Series {
    train: Vec<(f64, f64)>,
    smooth: Option<(usize, Vec<(f64, f64)>)>,
    valid: Vec<(f64, f64)>,
    lr: Vec<(f64, f64)>,
}

/// Draws the loss panel on `area`; generic over the y coordinate so one body serves the
/// linear and the logarithmic axis.
fn draw_loss_panel<Y>(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    x: Range<f64>,
    y: Y,
    series: &Series,
    x_labels: bool,
) -> std::result::Result<(), String>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(10)
        .x_label_area_size(if x_labels { 40 } else { 10 })
        .y_label_area_size(80)
        .build_cartesian_2d(x, y)
        .map_err(draw_err)?;
    let mut mesh = chart.configure_mesh();
    mesh.y_desc("loss")
        .light_line_style(BLACK.mix(0.05))
        .label_style(("sans-serif", 13));
    if x_labels {
        mesh.x_desc("step");
    } else {
        mesh.x_labels(0);
    }
    mesh.draw().map_err(draw_err)?;

    let train_colour = RGBColor(110, 160, 220);
    chart
        .draw_series(LineSeries::new(
            series.train.iter().copied(),
            train_colour.stroke_width(1),
        ))
        .map_err(draw_err)?
        .label("train loss")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], train_colour));

    if let Some((window, smooth)) = &series.smooth {
        let smooth_colour = RGBColor(20, 60, 160);
        chart
            .draw_series(LineSeries::new(
                smooth.iter().copied(),
                smooth_colour.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(format!("train loss, mean of {window}"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], smooth_colour.stroke_width(2))
            });
    }

    if !series.valid.is_empty() {
        let valid_colour = RGBColor(220, 90, 20);
        chart
            .draw_series(LineSeries::new(
                series.valid.iter().copied(),
                valid_colour.stroke_width(2),
            ))
            .map_err(draw_err)?;
        chart
            .draw_series(
                series
                    .valid
                    .iter()
                    .map(|&point| Circle::new(point, 3, valid_colour.filled())),
            )
            .map_err(draw_err)?
            .label("valid loss")
            .legend(move |(x, y)| Circle::new((x + 10, y), 3, valid_colour.filled()));
    }

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

fn draw_lr_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    x: Range<f64>,
    lr: &[(f64, f64)],
) -> std::result::Result<(), String> {
    let hi = lr.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let lo = lr
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .min(0.0);
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(x, linear_range(lo, hi))
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("learning rate")
        .y_labels(4)
        .y_label_formatter(&|v| format!("{v:.1e}"))
        .light_line_style(BLACK.mix(0.05))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(draw_err)?;
    chart
        .draw_series(LineSeries::new(
            lr.iter().copied(),
            RGBColor(40, 140, 60).stroke_width(2),
        ))
        .map_err(draw_err)?;
    Ok(())
}

/// Renders the loss curve of `metrics_jsonl` to `out_png` (PNG, [`PLOT_SIZE`]).
///
/// The PNG is written to a temporary file next to `out_png` and renamed over it, so a
/// viewer (or a later `lcm plot` of the same run) never sees half an image.
pub fn plot_metrics(metrics_jsonl: &Path, out_png: &Path, title: &str) -> Result<PlotSummary> {
    let metrics = read_metrics(metrics_jsonl)?;
    let plot_err = |reason: String| TrainError::Plot {
        path: out_png.to_path_buf(),
        reason,
    };

    let mut series = Series {
        train: Vec::new(),
        smooth: None,
        valid: Vec::new(),
        lr: Vec::new(),
    };
    for (&step, point) in &metrics.steps {
        let x = step as f64;
        if let Some(loss) = point.loss {
            series.train.push((x, loss));
        }
        if let Some(valid) = point.valid_loss {
            series.valid.push((x, valid));
        }
        if let Some(lr) = point.lr {
            series.lr.push((x, lr));
        }
    }
    if series.train.is_empty() {
        return Err(TrainError::Plot {
            path: metrics_jsonl.to_path_buf(),
            reason: format!(
                "no finite training loss to plot ({} non-finite values skipped)",
                metrics.skipped_non_finite
            ),
        });
    }
    // A window of ~1/25 of the run smooths step noise without lagging the trend much;
    // under 10 points there is nothing to smooth.
    if series.train.len() >= 10 {
        let window = (series.train.len() / 25).clamp(5, 500);
        series.smooth = Some((window, moving_average(&series.train, window)));
    }

    // Ranges come from the plotted points only; NaN/inf were filtered on read.
    let first_step = metrics.steps.keys().next().copied().unwrap_or(0);
    let last_step = metrics.steps.keys().next_back().copied().unwrap_or(0);
    let x = step_range(first_step, last_step);
    let losses = series.train.iter().chain(&series.valid).map(|p| p.1);
    let (lo, hi) = losses.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let log_scale = lo > 0.0 && hi / lo > LOG_SCALE_RATIO;

    ensure_font().map_err(plot_err)?;
    let tmp = temp_path(out_png);
    let drawn = (|| -> std::result::Result<(), String> {
        let root = BitMapBackend::new(&tmp, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let (loss_area, lr_area) = if series.lr.is_empty() {
            (root.clone(), None)
        } else {
            let (top, bottom) = root.split_vertically(PLOT_SIZE.1 * 7 / 10);
            (top, Some(bottom))
        };
        let x_labels = lr_area.is_none();
        if log_scale {
            // A little headroom in log space so the extremes do not sit on the frame.
            let y = (lo / 1.1..hi * 1.1).log_scale();
            draw_loss_panel(&loss_area, title, x.clone(), y, &series, x_labels)?;
        } else {
            let y = linear_range(lo, hi);
            draw_loss_panel(&loss_area, title, x.clone(), y, &series, x_labels)?;
        }
        if let Some(lr_area) = lr_area {
            draw_lr_panel(&lr_area, x.clone(), &series.lr)?;
        }
        root.present().map_err(draw_err)?;
        Ok(())
    })();
    if let Err(reason) = drawn {
        let _ = fs::remove_file(&tmp);
        return Err(plot_err(reason));
    }
    if let Err(source) = fs::rename(&tmp, out_png) {
        let _ = fs::remove_file(&tmp);
        return Err(TrainError::Io {
            path: out_png.to_path_buf(),
            source,
        });
    }

    let final_loss = series.train.last().map_or(f64::NAN, |p| p.1);
    let best_valid = series
        .valid
        .iter()
        .copied()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(step, loss)| (step as u64, loss));
    Ok(PlotSummary {
        out: out_png.to_path_buf(),
        train_points: series.train.len(),
        valid_points: series.valid.len(),
        skipped_non_finite: metrics.skipped_non_finite,
        replaced_steps: metrics.replaced_steps,
        skipped_partial_last_line: metrics.skipped_partial_last_line,
        first_step,
        last_step,
        final_loss,
        best_valid,
        log_scale,
    })
}

/// Temporary sibling of `out`: same directory (so the rename is atomic), hidden, unique
/// per process, and still ending in `.png` because the bitmap backend picks the image
/// format from the extension.
fn temp_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plot".into());
    out.with_file_name(format!(".{name}.{}.tmp.png", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_average_is_trailing_and_starts_partial() {
        let points: Vec<(f64, f64)> = (0..5).map(|i| (i as f64, i as f64)).collect();
        let smooth = moving_average(&points, 2);
        let ys: Vec<f64> = smooth.iter().map(|p| p.1).collect();
        assert_eq!(ys, vec![0.0, 0.5, 1.5, 2.5, 3.5]);
    }

    #[test]
    fn temp_path_stays_in_the_directory_and_keeps_png() {
        let tmp = temp_path(Path::new("/a/b/loss.png"));
        assert_eq!(tmp.parent(), Some(Path::new("/a/b")));
        assert!(tmp.to_string_lossy().ends_with(".tmp.png"));
    }
}
