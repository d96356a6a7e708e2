//! Cross-backend benchmark report from the library API: every wgpu adapter plus the CPU
//! backend, the quick kernel suite and the fixture model's blocks, written as Markdown, JSON
//! and SVG plots. A starting point for custom reports (other models, other selectors).
//!
//! Run: `cargo run --release --example cross_backend_report -- [out-dir]`
//! Prints one summary line per backend and the paths it wrote (default `bench-report/`).

use edgecut::bench::{self, BenchOptions};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "bench-report".into()),
    );
    let options = BenchOptions::new(
        true,
        vec!["all".into()],
        vec![PathBuf::from("models/mnist-fixture")],
    );
    let report = bench::run(&options, |step| eprintln!("… {step}"))?;
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("report.md"), edgecut::report::markdown(&report))?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let plots = edgecut::report::plots(&report, &out)?;
    for b in &report.backends {
        println!(
            "{} ({}, {}): bandwidth {:.1} GB/s, dense {:.2} GFLOP/s, status {}",
            b.name, b.kind, b.driver, b.ceilings.bandwidth_gbs, b.ceilings.gflops, b.status
        );
        for s in edgecut::report::sparse_speedups(b) {
            println!(
                "  {} {} batch {} density {}: {:.2}x over dense",
                s.kernel, s.shape, s.batch, s.density, s.speedup
            );
        }
    }
    println!(
        "wrote {}/report.md, report.json, {}",
        out.display(),
        plots.join(", ")
    );
    Ok(())
}
