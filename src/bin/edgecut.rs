//! The `edgecut` command line: model info, evaluation, fixtures and adapters.
//! Exit codes are decided here: 0 success, 1 error (message on stderr), 2 usage.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use edgecut::data::{load_mnist, Split};
use edgecut::engine::{Answer, Backend, Plan};
use edgecut::gpu::{list_adapters, GpuContext};
use edgecut::model::Model;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "edgecut", version, about = "Split DNN inference between an edge device and a server on any GPU (wgpu), with predefined sparsity and early exits")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum BackendChoice {
    /// The GPU if an adapter exists, else the CPU (says so).
    Auto,
    /// A wgpu adapter (fails without one).
    Gpu,
    /// The plain-Rust reference.
    Cpu,
}

#[derive(Subcommand)]
enum Command {
    /// Blocks, shapes, parameters, MACs, natural bottlenecks and cut candidates of a model.
    Info {
        /// Model directory (model.json + weights.safetensors).
        model: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Accuracy and exit rate of a model on the MNIST test split.
    Eval {
        /// Model directory.
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
    },
    /// Write the untrained LeNet-style fixture model (seeded) to a directory.
    Init {
        /// Output directory.
        out: PathBuf,
        /// Weight seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// List the wgpu adapters on this machine.
    Adapters {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info { model, json } => info(&model, json),
        Command::Eval {
            model,
            data,
            backend,
            exit_threshold,
            batch,
            limit,
            json,
        } => eval(&model, &data, backend, exit_threshold, batch, limit, json),
        Command::Init { out, seed } => {
            let model = edgecut::fixture::lenet(seed)?;
            model
                .save(&out)
                .with_context(|| format!("writing the fixture to {}", out.display()))?;
            println!(
                "wrote untrained fixture '{}' (seed {seed}) to {}",
                model.name(),
                out.display()
            );
            Ok(())
        }
        Command::Adapters { json } => {
            let adapters = list_adapters();
            if json {
                let list: Vec<_> = adapters
                    .iter()
                    .map(|a| json!({"name": a.name, "backend": a.backend, "device_type": a.device_type, "driver": a.driver}))
                    .collect();
                println!("{}", json!({ "adapters": list }));
            } else if adapters.is_empty() {
                println!("no wgpu adapters found (edgecut will use the CPU backend)");
            } else {
                adapters.iter().for_each(|a| println!("{a}"));
            }
            Ok(())
        }
    }
}

fn load(model: &Path) -> Result<Arc<Model>> {
    Ok(Arc::new(Model::load(model).with_context(|| {
        format!("loading model {}", model.display())
    })?))
}

fn info(path: &Path, as_json: bool) -> Result<()> {
    let model = load(path)?;
    let totals = model.totals();
    let candidates = model.cut_candidates();
    let input = model.input_elems();
    let blocks: Vec<_> = model
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            json!({
                "name": b.name,
                "output_shape": b.output_shape,
                "output_elems": b.output_elems(),
                "output_ratio": b.output_elems() as f64 / input as f64,
                "bytes": b.output_elems() * 4,
                "macs": b.stats.macs,
                "params": b.stats.params,
                "nonzero_weights": b.stats.nonzero_weights,
                "natural_bottleneck": model.is_natural_bottleneck(i),
                "cut_candidate": candidates.contains(&i),
            })
        })
        .collect();
    let exits: Vec<_> = model
        .exits
        .iter()
        .map(|e| json!({"name": e.name, "after_block": model.blocks[e.after_block].name, "macs": e.stats.macs, "params": e.stats.params}))
        .collect();
    if as_json {
        let out = json!({
            "name": model.name(),
            "hash": model.hash,
            "seeded": model.seeded,
            "input": model.input_shape(),
            "classes": model.classes(),
            "params": totals.params,
            "nonzero_weights": totals.nonzero_weights,
            "macs": totals.macs,
            "blocks": blocks,
            "exits": exits,
            "cut_candidates": candidates.iter().map(|&i| &model.blocks[i].name).collect::<Vec<_>>(),
        });
        println!("{out}");
        return Ok(());
    }
    println!("{}  (hash {})", model.name(), &model.hash[..16]);
    if model.seeded {
        println!("weights: drawn from the manifest's seed (untrained)");
    }
    println!(
        "input {:?} ({} elements), {} classes; {} params, {} nonzero weights, {:.3} G MACs",
        model.input_shape(),
        input,
        model.classes(),
        totals.params,
        totals.nonzero_weights,
        totals.macs as f64 / 1e9
    );
    println!(
        "{:<12} {:>16} {:>10} {:>7} {:>12} {:>10} {:>10}  cut",
        "block", "output", "elements", "ratio", "MACs", "params", "nonzero"
    );
    for (i, b) in model.blocks.iter().enumerate() {
        let mark = if candidates.contains(&i) {
            "candidate"
        } else if model.is_natural_bottleneck(i) {
            "bottleneck"
        } else {
            ""
        };
        println!(
            "{:<12} {:>16} {:>10} {:>7.4} {:>12} {:>10} {:>10}  {mark}",
            b.name,
            format!("{:?}", b.output_shape),
            b.output_elems(),
            b.output_elems() as f64 / input as f64,
            b.stats.macs,
            b.stats.params,
            b.stats.nonzero_weights
        );
    }
    for e in &model.exits {
        println!(
            "exit '{}' after {} ({} MACs)",
            e.name, model.blocks[e.after_block].name, e.stats.macs
        );
    }
    Ok(())
}

fn backend(choice: BackendChoice) -> Result<Backend> {
    Ok(match choice {
        BackendChoice::Cpu => Backend::Cpu,
        BackendChoice::Gpu => Backend::Gpu(Arc::new(GpuContext::new()?)),
        BackendChoice::Auto => match GpuContext::new() {
            Ok(ctx) => Backend::Gpu(Arc::new(ctx)),
            Err(e) => {
                eprintln!("note: no GPU adapter, running on the CPU backend ({e})");
                Backend::Cpu
            }
        },
    })
}

#[allow(clippy::too_many_arguments)] // mirrors the command's flags
fn eval(
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
    let backend = backend(choice)?;
    let plan = Plan::compile(&model, 0..model.blocks.len(), &backend, batch.min(n.max(1)))
        .context("compiling the model")?;
    let start = Instant::now();
    let (mut correct, mut exited) = (0usize, 0usize);
    let mut per_exit = vec![0usize; model.exits.len()];
    for lo in (0..n).step_by(plan.capacity()) {
        let hi = (lo + plan.capacity()).min(n);
        let x = test.batch(lo..hi, model.input_shape()).with_context(|| {
            format!(
                "MNIST images have {} values per sample but the model expects input {:?}",
                test.images.sample_len(),
                model.input_shape()
            )
        })?;
        let out = plan.run(&x)?;
        for (i, a) in out.answers(threshold).into_iter().enumerate() {
            if let Answer::Exit { exit, .. } = a {
                exited += 1;
                per_exit[exit] += 1;
            }
            if a.class() == Some(test.labels[lo + i] as u32) {
                correct += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let accuracy = correct as f64 / n.max(1) as f64;
    let exit_rate = exited as f64 / n.max(1) as f64;
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
