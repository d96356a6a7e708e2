//! `edgecut profile`: per-block times of a model on a backend, saved as a JSON profile.

use crate::{backend, load, BackendChoice};
use anyhow::{bail, Context, Result};
use edgecut::sched::profile::Profile;
use serde_json::json;
use std::path::Path;

pub struct Args<'a> {
    pub model: &'a Path,
    pub backend: BackendChoice,
    pub batches: &'a [usize],
    pub warmup: usize,
    pub runs: usize,
    pub slowdown: f64,
    pub from: Option<&'a Path>,
    pub out: Option<&'a Path>,
    pub json: bool,
}

pub fn profile(a: Args<'_>) -> Result<()> {
    let model = load(a.model)?;
    if !(a.slowdown.is_finite() && a.slowdown > 0.0) {
        bail!("--slowdown must be a positive factor, got {}", a.slowdown);
    }
    let measured = match a.from {
        Some(p) => {
            Profile::load(p, &model).with_context(|| format!("reading profile {}", p.display()))?
        }
        None => {
            let backend = backend(a.backend)?;
            Profile::measure(&model, &backend, a.batches, a.warmup, a.runs)
                .context("measuring the profile")?
        }
    };
    let p = measured.scaled(a.slowdown)?;
    if let Some(out) = a.out {
        p.save(out)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if a.json {
        let mut v = serde_json::to_value(&p)?;
        v["total_seconds"] = json!(p.block_seconds().iter().sum::<f64>());
        println!("{v}");
        return Ok(());
    }
    println!(
        "{} on {} ({}), slowdown {}, median of {} runs after {} warm-up",
        p.model, p.backend, p.adapter, p.slowdown, p.runs, p.warmup
    );
    print!("{:<14}", "block");
    p.batches
        .iter()
        .for_each(|b| print!("  {:>12}", format!("batch {b} ms")));
    println!();
    for b in &p.blocks {
        print!("{:<14}", b.name);
        b.seconds.iter().for_each(|s| print!("  {:>12.3}", s * 1e3));
        println!();
    }
    print!("{:<14}", "total");
    for j in 0..p.batches.len() {
        print!(
            "  {:>12.3}",
            p.blocks.iter().map(|b| b.seconds[j]).sum::<f64>() * 1e3
        );
    }
    println!();
    if let Some(out) = a.out {
        println!("saved {}", out.display());
    }
    Ok(())
}
