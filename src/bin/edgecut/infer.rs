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
    /// With `--repeat`: also report where the time goes, seconds per run for each kind of op
    /// (CPU backend: `conv2d 1x1`, `depthwise 3x3 s2`, `mul broadcast`, ...; GPU: each kernel
    /// and tile, every dispatch submitted and waited for on its own, so the run times
    /// include that profiling).
    #[arg(long, requires = "repeat")]
    op_times: bool,
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
    let running = || format!("running {}", a.model.display());
    // With --repeat the whole model is compiled once: it computes the output (unsplit) and
    // is then timed.
    let plan = (a.repeat > 0)
        .then(|| {
            edgecut::engine::Plan::compile(&model, 0..model.blocks.len(), &backend, input.batch())
        })
        .transpose()
        .with_context(running)?;
    let out = match (&plan, cut) {
        (Some(plan), None) => plan.run(&input).with_context(running)?.output,
        _ => edgecut::engine::infer(&model, &backend, &input, cut).with_context(running)?,
    };
    edgecut::npy::write(&a.out, &out)?;
    let mut runs = Vec::with_capacity(a.repeat);
    let mut op_times = edgecut::engine::OpTimes::default();
    if let Some(plan) = plan {
        // Warm-up (the output run above already was one when there is no cut).
        if cut.is_some() {
            plan.run(&input)?;
        }
        for _ in 0..a.repeat {
            let t = std::time::Instant::now();
            if a.op_times {
                plan.run_profiled(&input, &mut op_times)?;
            } else {
                plan.run(&input)?;
            }
            runs.push(t.elapsed().as_secs_f64());
        }
    }
    // Per run, not summed over the runs.
    for t in op_times.0.values_mut() {
        t.calls /= a.repeat.max(1);
        t.seconds /= a.repeat.max(1) as f64;
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
            "op_seconds": a.op_times.then_some(&op_times.0),
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
    if a.op_times {
        let mut kinds: Vec<_> = op_times.0.iter().collect();
        kinds.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
        let total = op_times.total_seconds().max(f64::MIN_POSITIVE);
        eprintln!(
            "{:<24} {:>6} {:>10} {:>6}",
            "op kind", "calls", "ms/run", "share"
        );
        for (kind, t) in kinds {
            eprintln!(
                "{kind:<24} {:>6} {:>10.3} {:>5.1}%",
                t.calls,
                t.seconds * 1e3,
                100.0 * t.seconds / total
            );
        }
    }
    eprintln!(
        "wrote {:?} to {} ({} backend)",
        out.shape(),
        a.out.display(),
        backend.name()
    );
    Ok(())
}
