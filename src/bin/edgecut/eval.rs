//! `edgecut eval`: accuracy and exit rate on the MNIST test split.

use crate::{backend, load, BackendChoice};
use anyhow::{Context, Result};
use edgecut::data::{load_mnist, Split};
use edgecut::report::eval::eval_model;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Model directory or .onnx file.
    model: PathBuf,
    /// Folder with the MNIST IDX files (plain or .gz).
    #[arg(long, default_value = "models/data/mnist")]
    data: PathBuf,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// An exit head answers when its softmax confidence is strictly above T (1.0 never exits).
    #[arg(long, default_value_t = 1.0)]
    exit_threshold: f32,
    /// Samples per batch.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Evaluate only the first N test samples.
    #[arg(long)]
    limit: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn eval(a: EvalArgs) -> Result<()> {
    let model = load(&a.model)?;
    let test = load_mnist(&a.data, Split::Test)?;
    let backend = backend(a.backend)?;
    let r = eval_model(
        &model,
        &backend,
        &test,
        a.exit_threshold,
        a.batch,
        a.limit.unwrap_or(usize::MAX),
    )
    .context("evaluating")?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    if model.seeded {
        println!("note: '{}' has untrained seeded weights", r.model);
    }
    println!(
        "{}: {} samples, accuracy {:.2}%, exit rate {:.1}% (threshold {}), {} on {}, {:.2} s",
        r.model,
        r.samples,
        r.accuracy * 100.0,
        r.exit_rate * 100.0,
        r.exit_threshold,
        r.backend,
        r.adapter,
        r.seconds
    );
    Ok(())
}
