//! `edgecut bench`: the cross-backend benchmark report.

use anyhow::Result;
use edgecut::bench::{self, BenchOptions};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// `all`, or a comma-separated list of `cpu`, backend kinds (`vulkan`, `gl`, ...) or adapter-name substrings.
    #[arg(long, default_value = "all")]
    backends: String,
    /// Model directories whose blocks are timed.
    #[arg(long, value_delimiter = ',', default_values = ["models/mnist-fixture", "models/efficientnet-b0"])]
    models: Vec<PathBuf>,
    /// Smaller suite, batch-1 models, fewer repetitions (under two minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// Folder for report.md, report.json and the SVG plots.
    #[arg(long, default_value = "bench-report")]
    out: PathBuf,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark and writes `report.md`, `report.json` and the plots into `out`.
pub fn bench(a: BenchArgs) -> Result<()> {
    let selectors: Vec<String> = a
        .backends
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    // Fail on an unknown backend before spending any time.
    bench::targets(&selectors)?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let options = BenchOptions::new(a.quick, selectors, a.models);
    let report = bench::run(&options, |m| bar.set_message(m.to_string()))?;
    bar.finish_and_clear();
    let plots = edgecut::report::write(&report, &a.out)?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    for b in &report.backends {
        println!(
            "{} ({}): {}; bandwidth {:.1} GB/s, dense {:.2} GFLOP/s, {} kernels, {} model runs",
            b.name,
            b.kind,
            b.status,
            b.ceilings.bandwidth_gbs,
            b.ceilings.gflops,
            b.kernels.len(),
            b.models.len()
        );
    }
    println!(
        "wrote {}/report.md, report.json and {}",
        a.out.display(),
        plots.join(", ")
    );
    Ok(())
}
