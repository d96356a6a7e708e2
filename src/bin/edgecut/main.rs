//! The `edgecut` command line: model info, evaluation, fixtures and adapters.
//! Exit codes are decided here: 0 success, 1 error (message on stderr), 2 usage.

mod bench;
mod classify;
mod demo;
mod eval;
mod export;
mod import;
mod infer;
mod info;
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
    /// Worker threads of the CPU backend (default: all cores); applies to every command that
    /// runs a model on the CPU.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum BackendChoice {
    /// The GPU if an adapter exists, else the CPU (says so).
    Auto,
    /// A wgpu adapter (fails without one).
    Gpu,
    /// The CPU backend (fast kernels, `--threads` workers).
    Cpu,
}

#[derive(Subcommand)]
enum Command {
    /// Blocks, shapes, parameters, MACs, natural bottlenecks and cut candidates of a model.
    Info {
        /// Model directory (model.json + weights.safetensors) or .onnx file.
        model: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Import an ONNX file into the native format (model.json + weights.safetensors).
    Import(import::ImportArgs),
    /// Export standard ONNX: head.onnx + tail.onnx of a split, the whole model, or a Triton
    /// model repository with the tail after every cut candidate in every encoding.
    Export(export::ExportArgs),
    /// Run a model on a batch-first NumPy array and write its output (optionally split).
    Infer(infer::InferArgs),
    /// Accuracy and exit rate of a model on the MNIST test split.
    Eval(eval::EvalArgs),
    /// Write the untrained LeNet-style fixture model (seeded) to a directory.
    Init {
        /// Output directory.
        out: PathBuf,
        /// Weight seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Benchmark kernels and model blocks on every adapter plus the CPU backend.
    Bench(bench::BenchArgs),
    /// Serve models (full and tail requests) over KServe v2 / Open Inference Protocol REST.
    Serve(serve::ServeArgs),
    /// Classify the MNIST test split on this device, splitting with a server.
    Run(run::RunArgs),
    /// Train a spec (JSON) on MNIST and write a model directory (model.json + weights).
    Train(train::TrainArgs),
    /// Sparse-vs-dense results of the shipped MNIST models (accuracy, size, MACs, measured GPU
    /// time, early exits, training throughput); writes docs/sparsity-results.md and an SVG plot.
    ReportSparsity(report_sparsity::ReportArgs),
    /// The main demo: the pretrained EfficientNet-Lite0 on the shipped photos, in-process
    /// server, a real 3G trace, a device emulated from a published profile, every policy.
    Demo {
        /// Run the MNIST early-exit demo instead.
        #[arg(long)]
        mnist: bool,
        /// Each photo is sent this many times per policy.
        #[arg(long, default_value_t = 2)]
        repeat: usize,
        /// Policies (comma-separated; default: device, server, each cut candidate in fp32 and
        /// int8, dynamic).
        #[arg(long, value_delimiter = ',')]
        policies: Vec<String>,
        /// Test digits per policy (--mnist).
        #[arg(long, default_value_t = 200)]
        limit: usize,
        /// Exit threshold.
        #[arg(long, default_value_t = 0.9)]
        exit_threshold: f32,
        /// Model directory (default: models/efficientnet-lite0; with --mnist
        /// models/mnist-lenet-ee, else models/mnist-fixture).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Emulate a device F times slower than this backend (waits after each local run;
        /// --mnist).
        #[arg(long, default_value_t = 4.0)]
        device_slowdown: f64,
        /// Where to run (the photo demo's default `auto` is the CPU backend: lavapipe is too
        /// slow for EfficientNet-Lite0 in a demo).
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Accuracy effect of each wire encoding (FP32, FP16, INT8) at every cut.
    Wire(wire::WireArgs),
    /// Per-block times of a model (each block in its own submission, GPU timestamps where the
    /// adapter has them), saved as a JSON profile.
    Profile(profile::ProfileArgs),
    /// Trace-driven simulation of a request stream under scheduling policies.
    Simulate(simulate::SimulateArgs),
    /// The dynamic-split-computing study: rate/load sweeps and real-trace replays, tables and plots.
    Study(study::StudyArgs),
    /// Top-k classes of images (JPEG/PNG), preprocessed as the model was trained.
    Classify(classify::ClassifyArgs),
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
    if let Some(threads) = cli.threads {
        edgecut::cpu::set_threads(threads)?;
    }
    match cli.command {
        Command::Info { model, json } => info::info(&model, json),
        Command::Eval(args) => eval::eval(args),
        Command::Import(args) => import::import(args),
        Command::Export(args) => export::export(args),
        Command::Infer(args) => infer::infer(args),
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
        Command::Bench(args) => bench::bench(args),
        Command::Serve(args) => serve::serve(args),
        Command::Run(args) => run::run(args),
        Command::Demo {
            mnist: true,
            limit,
            exit_threshold,
            model,
            device_slowdown,
            backend,
            json,
            ..
        } => demo::demo(limit, exit_threshold, backend, model, device_slowdown, json),
        Command::Demo {
            repeat,
            policies,
            model,
            backend,
            json,
            ..
        } => demo::photos(repeat, policies, backend, model, json),
        Command::Wire(args) => wire::wire(args),
        Command::Profile(args) => profile::profile(args),
        Command::Simulate(args) => simulate::simulate(args),
        Command::Study(args) => study::study(args),
        Command::Train(args) => train::train(args),
        Command::Classify(args) => classify::classify(args),
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

/// Loads a model directory or .onnx file with context for the error message.
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
