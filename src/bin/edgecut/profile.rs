//! `edgecut profile`: per-block times of a model on a backend, saved as a JSON profile; or a
//! profile derived from published figures, another model's profile, or a batch-scaling curve.

use crate::{backend, load, BackendChoice};
use anyhow::{bail, Context, Result};
use edgecut::sched::profile::published::{
    from_published, mac_scaled, read_csv, with_batch_curve, BatchCurve, Selection,
};
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
    /// With --from: that profile is of this other model; carry it over by the ratio of MACs.
    #[arg(long, requires = "from")]
    mac_scaled_from: Option<PathBuf>,
    /// Build the profile from published per-stage figures (CSV: model, hardware, kind,
    /// framework, precision, batch, stage, ms, source) instead of measuring.
    #[arg(long, requires = "hardware", conflicts_with = "from")]
    published: Option<PathBuf>,
    /// With --published: the hardware (case-insensitive substring; several matches are listed).
    #[arg(long)]
    hardware: Option<String>,
    /// With --published: the kind (device-cpu, device-gpu, server-gpu).
    #[arg(long)]
    kind: Option<String>,
    /// With --published: the precision (fp32, fp16).
    #[arg(long)]
    precision: Option<String>,
    /// Derive batch sizes 1..=--max-batch from the batch-1 times and this profile's measured
    /// whole-model batch curve t(b)/t(1) (any model).
    #[arg(long)]
    batch_curve: Option<PathBuf>,
    /// Largest batch size derived with --batch-curve.
    #[arg(long, default_value_t = 62)]
    max_batch: usize,
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
    let measured = match (&a.published, &a.from, &a.mac_scaled_from) {
        (Some(csv), _, _) => {
            let rows = read_csv(csv)?;
            let sel = Selection {
                hardware: a.hardware.clone().unwrap_or_default(),
                kind: a.kind.clone(),
                precision: a.precision.clone(),
            };
            let name = csv.file_name().map_or_else(
                || "published figures".to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            from_published(&model, &rows, &sel, &name)?
        }
        (None, Some(p), Some(other)) => {
            let other_model = load(other)?;
            let p = Profile::load(p, &other_model)
                .with_context(|| format!("reading profile {}", p.display()))?;
            mac_scaled(&p, &other_model, &model)?
        }
        (None, Some(p), None) => {
            Profile::load(p, &model).with_context(|| format!("reading profile {}", p.display()))?
        }
        (None, None, _) => {
            Profile::measure(&model, &backend(a.backend)?, &a.batch, a.warmup, a.runs)
                .context("measuring the profile")?
        }
    };
    let measured = match &a.batch_curve {
        Some(c) => {
            let curve_profile =
                Profile::read(c).with_context(|| format!("reading profile {}", c.display()))?;
            let curve = BatchCurve::from_profile(&curve_profile)?;
            let from = format!(
                "{} on {} ({})",
                curve_profile.model, curve_profile.backend, curve_profile.adapter
            );
            with_batch_curve(&measured, &curve, a.max_batch, &from)?
        }
        None => measured,
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
    if let Some(s) = &p.source {
        println!("source: {s}");
    }
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
