//! `edgecut infer`: a model on a batch-first NumPy array, optionally split at a block.

use crate::{backend, load, BackendChoice};
use anyhow::{anyhow, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct InferArgs {
    /// Model directory or .onnx file.
    model: PathBuf,
    /// Input array [batch, ...] (.npy; float32, or float64/uint8 converted).
    #[arg(long)]
    input: PathBuf,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// Run the head up to and including this block, then the tail, as a split does.
    #[arg(long)]
    cut: Option<String>,
    /// Output array (.npy, float32).
    #[arg(long)]
    out: PathBuf,
    /// Also time N more runs of the whole model (compiled once; input upload and output
    /// readback in every run) after one warm-up, and report them.
    #[arg(long, default_value_t = 0)]
    repeat: usize,
    /// Print one JSON object (with `--repeat`: every run's seconds).
    #[arg(long)]
    json: bool,
}

pub fn infer(a: InferArgs) -> Result<()> {
    let model = load(&a.model)?;
    let input = edgecut::npy::read(&a.input)?;
    if input.shape()[1..] != *model.input_shape() {
        return Err(anyhow!(
            "{}: shape {:?} does not fit the model input [batch, {}]",
            a.input.display(),
            input.shape(),
            model
                .input_shape()
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let cut = a
        .cut
        .as_deref()
        .map(|name| {
            model.block_index(name).ok_or_else(|| {
                let names: Vec<&str> = model.blocks.iter().map(|b| b.name.as_str()).collect();
                anyhow!("no block '{name}'; blocks: {}", names.join(", "))
            })
        })
        .transpose()?;
    let backend = backend(a.backend)?;
    let out = edgecut::engine::infer(&model, &backend, &input, cut)
        .with_context(|| format!("running {}", a.model.display()))?;
    edgecut::npy::write(&a.out, &out)?;
    let mut runs = Vec::with_capacity(a.repeat);
    if a.repeat > 0 {
        let plan =
            edgecut::engine::Plan::compile(&model, 0..model.blocks.len(), &backend, input.batch())?;
        plan.run(&input)?;
        for _ in 0..a.repeat {
            let t = std::time::Instant::now();
            plan.run(&input)?;
            runs.push(t.elapsed().as_secs_f64());
        }
    }
    if a.json {
        let report = serde_json::json!({
            "model": model.name(),
            "backend": backend.name(),
            "adapter": backend.adapter(),
            "threads": edgecut::cpu::threads(),
            "output_shape": out.shape(),
            "run_seconds": runs,
            "median_ms": (!runs.is_empty()).then(|| edgecut::stats::median(&runs) * 1e3),
        });
        println!("{report}");
        return Ok(());
    }
    if !runs.is_empty() {
        eprintln!(
            "{} runs: median {:.3} ms",
            runs.len(),
            edgecut::stats::median(&runs) * 1e3
        );
    }
    eprintln!(
        "wrote {:?} to {} ({} backend)",
        out.shape(),
        a.out.display(),
        backend.name()
    );
    Ok(())
}
