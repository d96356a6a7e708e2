//! `edgecut profile`: per-block times of a model on a backend, saved as a JSON profile.

use crate::{backend, load, BackendChoice};
use anyhow::{bail, Context, Result};
use edgecut::sched::profile::Profile;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ProfileArgs {
    /// Model directory or .onnx file.
    model: PathBuf,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// Batch sizes to time (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    batch: Vec<usize>,
    /// Untimed runs per block before timing.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed runs per block (the median is kept).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Multiply every time by F (emulates a device F times slower).
    #[arg(long, default_value_t = 1.0)]
    slowdown: f64,
    /// Scale an existing profile instead of measuring.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Save the profile JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print one JSON object (the profile).
    #[arg(long)]
    json: bool,
}

pub fn profile(a: ProfileArgs) -> Result<()> {
    let model = load(&a.model)?;
    if !(a.slowdown.is_finite() && a.slowdown > 0.0) {
        bail!("--slowdown must be a positive factor, got {}", a.slowdown);
    }
    let measured = match &a.from {
        Some(p) => {
            Profile::load(p, &model).with_context(|| format!("reading profile {}", p.display()))?
        }
        None => Profile::measure(&model, &backend(a.backend)?, &a.batch, a.warmup, a.runs)
            .context("measuring the profile")?,
    };
    let p = measured.scaled(a.slowdown)?;
    if let Some(out) = &a.out {
        p.save(out)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if a.json {
        let mut v = serde_json::to_value(&p)?;
        v["total_seconds"] = p.block_seconds().iter().sum::<f64>().into();
        println!("{v}");
        return Ok(());
    }
    println!(
        "{} on {} ({}), slowdown {}, median of {} runs after {} warm-up, {} clock",
        p.model, p.backend, p.adapter, p.slowdown, p.runs, p.warmup, p.clock
    );
    let header = p
        .batches
        .iter()
        .map(|b| format!("  {:>12}", format!("batch {b} ms")));
    println!("{:<14}{}", "block", header.collect::<String>());
    let total: Vec<f64> = (0..p.batches.len())
        .map(|j| p.blocks.iter().map(|b| b.seconds[j]).sum())
        .collect();
    let rows = p.blocks.iter().map(|b| (b.name.as_str(), &b.seconds));
    for (name, seconds) in rows.chain([("total", &total)]) {
        let cells = seconds.iter().map(|s| format!("  {:>12.3}", s * 1e3));
        println!("{name:<14}{}", cells.collect::<String>());
    }
    if let Some(out) = &a.out {
        println!("saved {}", out.display());
    }
    Ok(())
}
