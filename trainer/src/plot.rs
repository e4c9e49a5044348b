//! Loss and accuracy curves as PNG (plotters). Labels need a TrueType
//! font: the first found of `BYTEEDIT_FONT` and the usual system paths;
//! without one the curves are drawn unlabelled, and the run says so.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::run::{EvalMetrics, StepMetrics};

const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Registers the first font found as plotters' `sans-serif`, once.
fn font_available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let candidates = std::env::var_os("BYTEEDIT_FONT")
            .map(PathBuf::from)
            .into_iter()
            .chain(FONTS.iter().map(PathBuf::from));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        tracing::warn!(
            "no TrueType font found (set BYTEEDIT_FONT): plots are drawn without labels"
        );
        false
    })
}

/// A curve: its legend, its points and its colour.
pub(crate) type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

/// One chart of `series` (name, points, colour) into `path`.
pub(crate) fn chart(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), String> {
    let points: Vec<&(f64, f64)> = series.iter().flat_map(|s| s.1.iter()).collect();
    if points.is_empty() {
        return Ok(());
    }
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let (mut y_min, mut y_max) = points
        .iter()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !y_min.is_finite() {
        return Ok(());
    }
    if y_max - y_min < 1e-9 {
        y_min -= 0.5;
        y_max += 0.5;
    }
    let labels = font_available();
    let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(16);
    if labels {
        builder
            .caption(title, ("sans-serif", 24))
            .x_label_area_size(40)
            .y_label_area_size(60);
    }
    let mut chart = builder
        .build_cartesian_2d(0f64..x_max, y_min..y_max)
        .map_err(|e| e.to_string())?;
    let mut mesh = chart.configure_mesh();
    if labels {
        mesh.x_desc("step").y_desc(y_label);
    } else {
        mesh.disable_x_mesh()
            .disable_y_mesh()
            .x_labels(0)
            .y_labels(0);
    }
    mesh.draw().map_err(|e| e.to_string())?;
    for (name, values, colour) in series {
        let drawn = chart
            .draw_series(LineSeries::new(
                values.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        if labels {
            let colour = *colour;
            drawn.label(*name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        }
    }
    if labels {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

/// `loss.png` (training and held-out loss) and `accuracy.png` (held-out
/// pairwise accuracy; `auc.png`, per-pixel AUC, for R_γ) in `out`. A plot that cannot be drawn is logged,
/// never fatal: the model is what the run is for.
pub fn curves(out: &Path, steps: &[StepMetrics], evals: &[EvalMetrics]) {
    let train: Vec<(f64, f64)> = steps.iter().map(|m| (m.step as f64, m.loss)).collect();
    let held: Vec<(f64, f64)> = evals
        .iter()
        .map(|m| (m.step as f64, m.held_out_loss))
        .collect();
    let accuracy: Vec<(f64, f64)> = evals.iter().map(|m| (m.step as f64, m.score())).collect();
    let metric = if evals.iter().any(|m| m.held_out_auc.is_some()) {
        ("auc.png", "held-out per-pixel AUC", "AUC")
    } else {
        ("accuracy.png", "held-out pairwise accuracy", "accuracy")
    };
    let plots = [
        (
            out.join("loss.png"),
            chart(
                &out.join("loss.png"),
                "preference loss",
                "loss",
                &[("training", train, BLUE), ("held out", held, RED)],
            ),
        ),
        (
            out.join(metric.0),
            chart(
                &out.join(metric.0),
                metric.1,
                metric.2,
                &[("held out", accuracy, RED)],
            ),
        ),
    ];
    for (path, result) in plots {
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "could not draw the plot");
        }
    }
}
