//! `edgecut bench`: the cross-backend benchmark report.

use anyhow::{Context, Result};
use edgecut::bench::{self, BenchOptions};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Runs the benchmark and writes `report.md`, `report.json` and the plots into `out`.
pub fn bench(
    backends: &str,
    models: Vec<PathBuf>,
    quick: bool,
    out: &Path,
    as_json: bool,
) -> Result<()> {
    let selectors: Vec<String> = backends
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
    let options = BenchOptions::new(quick, selectors, models);
    let report = bench::run(&options, |m| bar.set_message(m.to_string()))?;
    bar.finish_and_clear();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(out.join("report.json"), &json)
        .with_context(|| format!("writing {}", out.join("report.json").display()))?;
    std::fs::write(out.join("report.md"), edgecut::report::markdown(&report))
        .with_context(|| format!("writing {}", out.join("report.md").display()))?;
    let plots = edgecut::report::plots(&report, out)?;
    if as_json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
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
            out.display(),
            plots.join(", ")
        );
    }
    Ok(())
}
