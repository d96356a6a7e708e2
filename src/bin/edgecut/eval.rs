//! `edgecut eval`: accuracy and exit rate on the MNIST test split.

use crate::{backend, load, BackendChoice};
use anyhow::{bail, Context, Result};
use edgecut::data::{load_mnist, Split};
use edgecut::engine::{evaluate, Plan};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

#[allow(clippy::too_many_arguments)] // mirrors the command's flags
pub fn eval(
    path: &Path,
    data: &Path,
    choice: BackendChoice,
    threshold: f32,
    batch: usize,
    limit: Option<usize>,
    as_json: bool,
) -> Result<()> {
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    if !(0.0..=1.0).contains(&threshold) {
        bail!("--exit-threshold must be in [0, 1], got {threshold}");
    }
    let model = load(path)?;
    let test = load_mnist(data, Split::Test)?;
    let n = limit.unwrap_or(test.len()).min(test.len());
    if n == 0 {
        bail!(
            "no test samples to evaluate in {} (--limit 0?)",
            data.display()
        );
    }
    let backend = backend(choice)?;
    let plan = Plan::compile(&model, 0..model.blocks.len(), &backend, batch.min(n.max(1)))
        .context("compiling the model")?;
    let start = Instant::now();
    let result = evaluate(&plan, &test, n).context("evaluating")?;
    let secs = start.elapsed().as_secs_f64();
    let accuracy = result.accuracy(threshold);
    let exit_rate = result.exit_rate(threshold);
    let per_exit = result.exit_counts(threshold, model.exits.len());
    if as_json {
        let exits: serde_json::Map<String, serde_json::Value> = model
            .exits
            .iter()
            .zip(&per_exit)
            .map(|(e, c)| (e.name.clone(), json!(c)))
            .collect();
        println!(
            "{}",
            json!({
                "model": model.name(),
                "samples": n,
                "accuracy": accuracy,
                "backend": backend.name(),
                "adapter": backend.adapter(),
                "exit_threshold": threshold,
                "exit_rate": exit_rate,
                "exits": exits,
                "seconds": secs,
            })
        );
    } else {
        if model.seeded {
            println!("note: '{}' has untrained seeded weights", model.name());
        }
        println!(
            "{}: {n} samples, accuracy {:.2}%, exit rate {:.1}% (threshold {threshold}), {} on {}, {:.2} s",
            model.name(),
            accuracy * 100.0,
            exit_rate * 100.0,
            backend.name(),
            backend.adapter(),
            secs
        );
    }
    Ok(())
}
