//! The `edgecut` command line: model info, evaluation, fixtures and adapters.
//! Exit codes are decided here: 0 success, 1 error (message on stderr), 2 usage.

mod bench;
mod demo;
mod eval;
mod info;
mod live;
mod profile;
mod report_sparsity;
mod run;
mod serve;
mod simulate;
mod study;
mod train;
mod wire;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use edgecut::engine::Backend;
use edgecut::gpu::{list_adapters, GpuContext};
use edgecut::model::Model;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "edgecut",
    version,
    about = "Split DNN inference between an edge device and a server on any GPU (wgpu), with predefined sparsity and early exits"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum BackendChoice {
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
    /// Benchmark kernels and model blocks on every adapter plus the CPU backend.
    Bench {
        /// `all`, or a comma-separated list of `cpu`, backend kinds (`vulkan`, `gl`, ...) or adapter-name substrings.
        #[arg(long, default_value = "all")]
        backends: String,
        /// Model directories whose blocks are timed.
        #[arg(long, value_delimiter = ',', default_values = ["models/mnist-fixture", "models/efficientnet-b0"])]
        models: Vec<PathBuf>,
        /// Smaller suite, batch-1 models, fewer repetitions (under two minutes on 2 cores).
        #[arg(long)]
        quick: bool,
        /// Folder for report.md, report.json and the SVG plots.
        #[arg(long, default_value = "bench-report")]
        out: PathBuf,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Serve models (full and tail requests) over KServe v2 / Open Inference Protocol REST.
    Serve(serve::ServeArgs),
    /// Classify the MNIST test split on this device, splitting with a server.
    Run(run::RunArgs),
    /// Train a spec (JSON) on MNIST and write a model directory (model.json + weights).
    Train {
        /// Training spec (architecture, sparsity, exits, optimizer, schedule).
        spec: PathBuf,
        /// Output model directory (written to a temporary folder, then renamed).
        #[arg(long)]
        out: PathBuf,
        /// Folder with the MNIST IDX files (plain or .gz).
        #[arg(long, default_value = "models/data/mnist")]
        data: PathBuf,
        /// Where to train.
        #[arg(long, value_enum, default_value_t = BackendChoice::Cpu)]
        backend: BackendChoice,
        /// Overrides the spec's epochs.
        #[arg(long)]
        epochs: Option<usize>,
        /// Overrides the spec's seed (weights, patterns, data order).
        #[arg(long)]
        seed: Option<u64>,
        /// Stop after this many optimizer steps (short runs).
        #[arg(long)]
        max_steps: Option<usize>,
        /// Print one JSON object (the final summary).
        #[arg(long)]
        json: bool,
    },
    /// Sparse-vs-dense results of the shipped MNIST models (accuracy, size, MACs, measured GPU
    /// time, early exits, training throughput); writes docs/sparsity-results.md and an SVG plot.
    ReportSparsity(report_sparsity::ReportArgs),
    /// The main demo: shipped MNIST model, in-process server, a 3G trace, every policy.
    Demo {
        /// Test digits per policy.
        #[arg(long, default_value_t = 200)]
        limit: usize,
        /// Exit threshold.
        #[arg(long, default_value_t = 0.9)]
        exit_threshold: f32,
        /// Model directory (default: models/mnist-lenet-ee, else models/mnist-fixture).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Emulate a device F times slower than this backend (waits after each local run).
        #[arg(long, default_value_t = 4.0)]
        device_slowdown: f64,
        /// Where to run.
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Accuracy effect of each wire encoding (FP32, FP16, INT8) at every cut.
    Wire {
        /// Model directory.
        model: PathBuf,
        /// Folder with the MNIST IDX files.
        #[arg(long, default_value = "models/data/mnist")]
        data: PathBuf,
        /// Only the first N test samples.
        #[arg(long)]
        limit: Option<usize>,
        /// Where to run (the codec runs quant.wgsl on a GPU).
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Per-block times of a model (each block in its own submission), saved as a JSON profile.
    Profile {
        /// Model directory.
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
    },
    /// Trace-driven simulation of a request stream under scheduling policies.
    Simulate(simulate::SimulateArgs),
    /// The dynamic-split-computing study: rate/load sweeps and real-trace replays, tables and plots.
    Study(study::StudyArgs),
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
        Command::Info { model, json } => info::info(&model, json),
        Command::Eval {
            model,
            data,
            backend,
            exit_threshold,
            batch,
            limit,
            json,
        } => eval::eval(&model, &data, backend, exit_threshold, batch, limit, json),
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
        Command::Bench {
            backends,
            models,
            quick,
            out,
            json,
        } => bench::bench(&backends, models, quick, &out, json),
        Command::Serve(args) => serve::serve(args),
        Command::Run(args) => run::run(args),
        Command::Demo {
            limit,
            exit_threshold,
            model,
            device_slowdown,
            backend,
            json,
        } => demo::demo(limit, exit_threshold, backend, model, device_slowdown, json),
        Command::Wire {
            model,
            data,
            limit,
            backend,
            json,
        } => wire::wire(&model, &data, backend, limit, json),
        Command::Profile {
            model,
            backend,
            batch,
            warmup,
            runs,
            slowdown,
            from,
            out,
            json,
        } => profile::profile(profile::Args {
            model: &model,
            backend,
            batches: &batch,
            warmup,
            runs,
            slowdown,
            from: from.as_deref(),
            out: out.as_deref(),
            json,
        }),
        Command::Simulate(args) => simulate::simulate(args),
        Command::Study(args) => study::study(args),
        Command::Train {
            spec,
            out,
            data,
            backend,
            epochs,
            seed,
            max_steps,
            json,
        } => train::train(train::TrainArgs {
            spec: &spec,
            out: &out,
            data: &data,
            backend,
            epochs,
            seed,
            max_steps,
            json,
        }),
        Command::ReportSparsity(args) => report_sparsity::report(args),
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

/// Loads a model directory with context for the error message.
pub(crate) fn load(model: &Path) -> Result<Arc<Model>> {
    Ok(Arc::new(Model::load(model).with_context(|| {
        format!("loading model {}", model.display())
    })?))
}

/// Resolves `--backend` to a backend, saying so when `auto` falls back to the CPU.
pub(crate) fn backend(choice: BackendChoice) -> Result<Backend> {
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
