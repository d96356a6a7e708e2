//! SVG line charts and heatmaps for simulation and study reports.

use plotters::prelude::*;
use std::path::Path;
use thiserror::Error;

/// Errors writing a plot.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PlotError {
    /// Only `.svg` output is supported (no bitmap backend, to keep the build free of system fonts).
    #[error("cannot plot to {0}: only .svg files are supported")]
    Format(String),
    /// Drawing failed (I/O or a degenerate range).
    #[error("plotting {path}: {reason}")]
    Draw {
        /// The file.
        path: String,
        /// Backend message.
        reason: String,
    },
    /// Nothing to plot.
    #[error("plot {0} has no data")]
    Empty(String),
}

/// A named series of `(x, y)` points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Points in x order.
    pub points: Vec<(f64, f64)>,
}

/// Series colours (shared by every chart of the reports).
pub(crate) const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn check_svg(path: &Path) -> Result<(), PlotError> {
    if path.extension().and_then(|e| e.to_str()) != Some("svg") {
        return Err(PlotError::Format(path.display().to_string()));
    }
    Ok(())
}

/// Writes a line chart (log-scaled x when `log_x`).
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_x: bool,
) -> Result<(), PlotError> {
    check_svg(path)?;
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        if y.is_finite() {
            y1 = y1.max(y);
        }
    }
    if !x0.is_finite() || x1 <= x0 {
        return Err(PlotError::Empty(path.display().to_string()));
    }
    let err = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let y_range = 0.0..(y1 * 1.08).max(1e-9);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .draw()
                .map_err(|e| err(&e))?;
            for (i, s) in series.iter().enumerate() {
                let c = COLORS[i % COLORS.len()];
                chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                    .map_err(|e| err(&e))?
                    .label(s.name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|e| err(&e))?;
        }};
    }
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    if log_x {
        draw!(builder
            .build_cartesian_2d((x0..x1).log_scale(), y_range)
            .map_err(|e| err(&e))?);
    } else {
        draw!(builder
            .build_cartesian_2d(x0..x1, y_range)
            .map_err(|e| err(&e))?);
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Writes a heatmap: `values[row][col]`, rows labelled bottom to top, columns left to right;
/// each cell shows its value (formatted with `fmt`), coloured from blue (low) to red (high).
#[allow(clippy::too_many_arguments)] // a heatmap needs its labels, axes, values and cell format
pub fn heatmap(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    cols: &[String],
    rows: &[String],
    values: &[Vec<f64>],
    fmt: &dyn Fn(f64) -> String,
) -> Result<(), PlotError> {
    check_svg(path)?;
    if cols.is_empty() || rows.is_empty() {
        return Err(PlotError::Empty(path.display().to_string()));
    }
    let err = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let (lo, hi) = values
        .iter()
        .flatten()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let root = SVGBackend::new(
        path,
        (60 * cols.len() as u32 + 200, 40 * rows.len() as u32 + 140),
    )
    .into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(0..cols.len(), 0..rows.len())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_labels(cols.len())
        .y_labels(rows.len())
        .x_label_formatter(&|i| cols.get(*i).cloned().unwrap_or_default())
        .y_label_formatter(&|i| rows.get(*i).cloned().unwrap_or_default())
        .draw()
        .map_err(|e| err(&e))?;
    for (r, row) in values.iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            let t = if v.is_finite() { (v - lo) / span } else { 0.0 };
            let color = RGBColor((40.0 + 215.0 * t) as u8, 80, (255.0 - 215.0 * t) as u8);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(c, r), (c + 1, r + 1)],
                    color.filled(),
                )))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    fmt(v),
                    (c, r),
                    ("sans-serif", 12).into_font().color(&WHITE),
                )))
                .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
