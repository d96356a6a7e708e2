//! Reports: what the `edgecut` commands measure, as typed `Serialize` structs whose field names
//! are the commands' JSON keys, with their Markdown tables and SVG plots. The benchmark's tables
//! and plots (this file), model facts ([`info`]), accuracy ([`eval`]), wire encodings ([`wire`]),
//! the sparse-vs-dense report ([`sparsity`]), and the line charts and heatmaps of simulations and
//! studies ([`plot`]).

pub mod eval;
pub mod info;
pub mod plot;
pub mod sparsity;
pub mod wire;

use crate::bench::Report;
use plot::COLORS;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;
use thiserror::Error;

/// Errors writing a report.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReportError {
    /// A file could not be written.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Arguments that leave nothing to measure.
    #[error("{0}")]
    Invalid(String),
    /// A model failed to load.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// A plan failed to compile or run.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// A split tensor failed to decode.
    #[error(transparent)]
    Encoding(#[from] crate::encoding::EncodingError),
    /// A tensor of the wrong shape.
    #[error(transparent)]
    Tensor(#[from] crate::tensor::TensorError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    /// A plot failed to draw.
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
}

/// Writes a benchmark report into `dir` (created if needed): `report.json`, `report.md` and the
/// plots of [`plots`]; returns the plots' file names.
pub fn write(r: &Report, dir: &Path) -> Result<Vec<String>, ReportError> {
    let file = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| err(&path)(e.to_string()))
    };
    std::fs::create_dir_all(dir).map_err(|e| err(dir)(e.to_string()))?;
    let json = serde_json::to_string_pretty(r).map_err(|e| err(dir)(e.to_string()))?;
    file("report.json", json)?;
    file("report.md", markdown(r))?;
    plots(r, dir)
}

fn num(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "—".into()
    }
}

/// One sparse-over-dense comparison: speedup = dense time / fan-in time for the same shape
/// and batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseSpeedup {
    /// `fanin` (independent rows) or `fanin_grouped` (rows shared by groups of outputs).
    pub kernel: String,
    /// `inputs x outputs`.
    pub shape: String,
    /// Batch size.
    pub batch: usize,
    /// Fraction of the dense connections present.
    pub density: f64,
    /// Dense time / fan-in time.
    pub speedup: f64,
}

/// The sparse-over-dense speedups of a backend.
pub fn sparse_speedups(b: &crate::bench::BackendReport) -> Vec<SparseSpeedup> {
    let mut out = Vec::new();
    for f in b
        .kernels
        .iter()
        .filter(|k| k.name.starts_with("fanin") && k.checked)
    {
        if let Some(d) = b
            .kernels
            .iter()
            .find(|k| k.name == "dense" && k.shape == f.shape && k.batch == f.batch && k.checked)
        {
            out.push(SparseSpeedup {
                kernel: f.name.clone(),
                shape: f.shape.clone(),
                batch: f.batch,
                density: f.density,
                speedup: d.median_ms / f.median_ms,
            });
        }
    }
    out
}

/// `(shape, conv1x1 GFLOP/s, dense GFLOP/s)` for every checked 1x1 convolution case with a
/// checked dense twin at the same GEMM shape.
pub fn conv_vs_dense(b: &crate::bench::BackendReport) -> Vec<(String, f64, f64)> {
    b.kernels
        .iter()
        .filter(|k| k.name == "conv1x1" && k.checked)
        .filter_map(|c| {
            b.kernels
                .iter()
                .find(|d| d.name == "dense_gemm" && d.shape == c.shape && d.checked)
                .map(|d| (c.shape.clone(), c.gflops, d.gflops))
        })
        .collect()
}

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# edgecut bench report\n");
    let _ = writeln!(
        s,
        "Machine: {} ({} logical cores, {}). Mode: {}.\n",
        r.machine.cpu,
        r.machine.cores,
        r.machine.os,
        if r.quick { "quick" } else { "full" }
    );
    let _ = writeln!(
        s,
        "| backend | kind | driver | timing | status | bandwidth GB/s | dense GFLOP/s |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---:|---:|");
    for b in &r.backends {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            b.name,
            b.kind,
            b.driver,
            b.timing,
            b.status,
            num(b.ceilings.bandwidth_gbs, 1),
            num(b.ceilings.gflops, 2)
        );
    }
    for b in &r.backends {
        if b.kernels.is_empty() && b.models.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n## {} ({})\n", b.name, b.kind);
        let _ = writeln!(s, "| kernel | shape | batch | density | median ms | spread ms | GFLOP/s | GB/s | % of ceiling | checked | dispatches |");
        let _ = writeln!(s, "|---|---|---:|---:|---:|---|---:|---:|---:|---|---|");
        for k in &b.kernels {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {}–{} | {} | {} | {} ({}) | {} | {} |",
                k.name,
                k.shape,
                k.batch,
                num(k.density * 100.0, 0) + "%",
                num(k.median_ms, 3),
                num(k.spread_ms[0], 3),
                num(k.spread_ms[1], 3),
                num(k.gflops, 2),
                num(k.gbs, 2),
                num(k.pct_of_ceiling, 1),
                k.bound,
                if k.checked { "yes" } else { "FAILED" },
                k.dispatches
            );
        }
        let gemm = conv_vs_dense(b);
        if !gemm.is_empty() {
            let _ = writeln!(
                s,
                "\n1x1 convolution vs the dense kernel at the same GEMM shape (target: ≥ 50%).\n"
            );
            let _ = writeln!(
                s,
                "| shape | conv1x1 GFLOP/s | dense GFLOP/s | ratio |\n|---|---:|---:|---:|"
            );
            for (shape, conv, dense) in gemm {
                let _ = writeln!(
                    s,
                    "| {shape} | {} | {} | {}% |",
                    num(conv, 2),
                    num(dense, 2),
                    num(100.0 * conv / dense, 0)
                );
            }
        }
        let speedups = sparse_speedups(b);
        if !speedups.is_empty() {
            let _ = writeln!(s, "\nSparse (fan-in) vs dense, same shape and batch. Target: fan-in time ≤ 1.25 × density × dense time, i.e. speedup ≥ 1/(1.25·density).\n");
            let _ = writeln!(
                s,
                "| kernel | shape | batch | density | speedup | ideal 1/density | target | met |"
            );
            let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---|");
            for SparseSpeedup {
                kernel,
                shape,
                batch,
                density,
                speedup: sp,
            } in speedups
            {
                let target = 1.0 / (1.25 * density);
                let _ = writeln!(
                    s,
                    "| {kernel} | {shape} | {batch} | {}% | {} | {} | {} | {} |",
                    num(density * 100.0, 0),
                    num(sp, 2),
                    num(1.0 / density, 1),
                    num(target, 2),
                    if sp >= target { "yes" } else { "no" }
                );
            }
        }
        for m in &b.models {
            let _ = writeln!(
                s,
                "\n**{}**, batch {}: {} ms as one plan ({} clock); dominant blocks: {}.\n",
                m.name,
                m.batch,
                num(m.total_ms, 2),
                m.clock,
                m.dominant.join(", ")
            );
            let _ = writeln!(s, "| block | median ms |\n|---|---:|");
            for bl in &m.blocks {
                let _ = writeln!(s, "| {} | {} |", bl.name, num(bl.median_ms, 3));
            }
        }
        for n in &b.notes {
            let _ = writeln!(s, "\nNote: {n}");
        }
    }
    s
}

fn err(path: &Path) -> impl Fn(String) -> ReportError + '_ {
    move |reason| ReportError::Write {
        path: path.display().to_string(),
        reason,
    }
}

/// Grouped bars: one group per label, one bar per series. Log-free linear axis.
fn bars(
    path: &Path,
    title: &str,
    y_label: &str,
    labels: &[String],
    series: &[(String, Vec<f64>)],
) -> Result<(), ReportError> {
    let e = err(path);
    let width = (160 + 40 * labels.len() * series.len().max(1)).clamp(640, 2400) as u32;
    let root = SVGBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let n = labels.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(120)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n as f64, 0f64..max)
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            labels.get(i).cloned().unwrap_or_default()
        })
        .x_label_style(
            ("sans-serif", 11)
                .into_font()
                .transform(FontTransform::Rotate90),
        )
        .y_desc(y_label)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    let k = series.len().max(1) as f64;
    for (si, (name, values)) in series.iter().enumerate() {
        let color = COLORS[si % COLORS.len()];
        chart
            .draw_series(
                values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(i, v)| {
                        let x0 = i as f64 + 0.1 + 0.8 * si as f64 / k;
                        Rectangle::new([(x0, 0.0), (x0 + 0.8 / k, *v)], color.filled())
                    }),
            )
            .map_err(|x| e(x.to_string()))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

/// Writes `kernels_gflops.svg`, `model_blocks.svg` and `sparse_speedup.svg` into `dir`.
pub fn plots(r: &Report, dir: &Path) -> Result<Vec<String>, ReportError> {
    let mut written = Vec::new();
    // GFLOP/s per kernel per backend (compute kernels only).
    let mut labels: Vec<String> = Vec::new();
    for b in &r.backends {
        for k in b.kernels.iter().filter(|k| k.gflops > 0.0 || !k.checked) {
            let l = format!(
                "{} {} b{} {:.0}%",
                k.name,
                k.shape,
                k.batch,
                k.density * 100.0
            );
            if !labels.contains(&l)
                && k.name != "maxpool"
                && k.name != "global_avgpool"
                && k.name != "exit_head"
            {
                labels.push(l);
            }
        }
    }
    let series: Vec<(String, Vec<f64>)> = r
        .backends
        .iter()
        .filter(|b| !b.kernels.is_empty())
        .map(|b| {
            let v = labels
                .iter()
                .map(|l| {
                    b.kernels
                        .iter()
                        .find(|k| {
                            &format!(
                                "{} {} b{} {:.0}%",
                                k.name,
                                k.shape,
                                k.batch,
                                k.density * 100.0
                            ) == l
                        })
                        .map_or(f64::NAN, |k| k.gflops)
                })
                .collect();
            (format!("{} ({})", b.name, b.kind), v)
        })
        .collect();
    let p = dir.join("kernels_gflops.svg");
    bars(
        &p,
        "GFLOP/s per kernel and backend",
        "GFLOP/s",
        &labels,
        &series,
    )?;
    written.push(p.display().to_string());

    // Per-block time per model per backend (batch 1 of the first model).
    if let Some(first) = r.backends.iter().flat_map(|b| b.models.first()).next() {
        let labels: Vec<String> = first.blocks.iter().map(|b| b.name.clone()).collect();
        let series: Vec<(String, Vec<f64>)> = r
            .backends
            .iter()
            .filter_map(|b| {
                b.models
                    .iter()
                    .find(|m| m.name == first.name && m.batch == first.batch)
                    .map(|m| {
                        (
                            format!("{} ({})", b.name, b.kind),
                            m.blocks.iter().map(|x| x.median_ms).collect(),
                        )
                    })
            })
            .collect();
        let p = dir.join("model_blocks.svg");
        bars(
            &p,
            &format!("{} per-block time, batch {}", first.name, first.batch),
            "ms",
            &labels,
            &series,
        )?;
        written.push(p.display().to_string());
    }

    // Sparse speedup vs density with the ideal 1/density line.
    let p = dir.join("sparse_speedup.svg");
    let mut series = vec![plot::Series {
        name: "ideal 1/density".into(),
        points: (5..=100)
            .map(|d| (d as f64 / 100.0, 100.0 / d as f64))
            .collect(),
    }];
    for b in &r.backends {
        let sp = sparse_speedups(b);
        let mut keys: Vec<(String, String, usize)> = sp
            .iter()
            .map(|s| (s.kernel.clone(), s.shape.clone(), s.batch))
            .collect();
        keys.sort();
        keys.dedup();
        for (kernel, shape, batch) in keys {
            let mut points: Vec<(f64, f64)> = sp
                .iter()
                .filter(|s| s.kernel == kernel && s.shape == shape && s.batch == batch)
                .map(|s| (s.density, s.speedup))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            series.push(plot::Series {
                name: format!("{} {kernel} {shape} b{batch}", b.kind),
                points,
            });
        }
    }
    plot::line_chart(
        &p,
        "fan-in speedup over dense vs density",
        "density",
        "dense time / fan-in time",
        &series,
        false,
    )
    .map_err(|e| err(&p)(e.to_string()))?;
    written.push(p.display().to_string());
    Ok(written)
}
