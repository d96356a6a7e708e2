//! `edgecut simulate`: a trace-driven simulation of a request stream under scheduling policies.

use crate::{backend, load, BackendChoice};
use anyhow::{bail, Result};
use edgecut::data::{load_mnist, Split};
use edgecut::sched::cost::{CostTable, SampleExits};
use edgecut::sched::estimate::RateMethod;
use edgecut::sim::trace::Trace;
use edgecut::sim::{self, experiment, ServerLoad, SimConfig};
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Model directory or .onnx file.
    model: PathBuf,
    /// Uplink trace: a file (Pensieve, Mahimahi or 5G CSV), or `const:R`, `steps:R1,R2@DWELL`,
    /// `markov:HIGH,LOW@DWELL[:SEED]` (rates in MB/s, or append `Mbit`).
    #[arg(long)]
    trace: String,
    /// CSV column of a 5G trace (default: the first throughput column).
    #[arg(long)]
    column: Option<String>,
    /// Device profile (default: <model>/profiles/device.json).
    #[arg(long)]
    device_profile: Option<PathBuf>,
    /// Server profile (default: <model>/profiles/server.json).
    #[arg(long)]
    server_profile: Option<PathBuf>,
    /// Background queueing delay at the server: `MS`, `steps:MS1,MS2@DWELL_S`, `file:PATH`.
    #[arg(long, default_value = "0")]
    server_load: String,
    /// Server workers.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Requests per second.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// Poisson arrivals (seeded) instead of periodic.
    #[arg(long)]
    poisson: bool,
    /// Seed for Poisson arrivals and calibrated exits.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Requests to simulate.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Round-trip time, milliseconds.
    #[arg(long, default_value_t = 20.0)]
    rtt_ms: f64,
    /// Policies (comma-separated): device, server, static:<block>[:fp32|fp16|int8], dynamic,
    /// dynamic-<enc>, oracle, oracle-<enc>. Default: device, server, every candidate (fp32),
    /// dynamic, oracle.
    #[arg(long, value_delimiter = ',')]
    policies: Vec<String>,
    /// Rate estimator of dynamic policies: harmonic<N>, ewma<ALPHA>, last.
    #[arg(long, default_value = "harmonic5")]
    estimator: String,
    /// Minimum expected accuracy for dynamic/oracle choices (when accuracy is known).
    #[arg(long)]
    accuracy_floor: Option<f64>,
    /// Exit confidences from running the model on the MNIST test split in this folder.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Test samples to run for exit confidences.
    #[arg(long, default_value_t = 2000)]
    samples: usize,
    /// Calibrated exit probabilities instead (one per exit, in block order, comma-separated).
    #[arg(long, value_delimiter = ',')]
    exit_probs: Vec<f64>,
    /// An exit answers when its confidence is strictly above T.
    #[arg(long, default_value_t = 0.9)]
    exit_threshold: f32,
    /// Backend for computing exit confidences.
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu)]
    backend: BackendChoice,
    /// Write a latency-over-time plot (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn simulate(a: SimulateArgs) -> Result<()> {
    let poisson = a.poisson.then_some(a.seed);
    let cfg = SimConfig {
        load: ServerLoad::parse(&a.server_load)?,
        rate_method: RateMethod::parse(&a.estimator)?,
        ..SimConfig::stream(a.requests, a.rate, poisson, a.rtt_ms, a.workers)?
    };
    let model = load(&a.model)?;
    let (device, server) = sim::profiles(
        &a.model,
        &model,
        a.device_profile.as_deref(),
        a.server_profile.as_deref(),
    )?;
    let trace = Trace::from_spec(&a.trace, a.column.as_deref())?;
    let samples = match &a.data {
        Some(_) if model.exits.is_empty() => bail!(
            "--data gives exit confidences, but model '{}' has no exits",
            model.name()
        ),
        Some(dir) => Some(SampleExits::measure(
            &model,
            &backend(a.backend)?,
            &load_mnist(dir, Split::Test)?,
            a.samples,
        )?),
        None => None,
    };
    let (probs, source) =
        experiment::exits(&model, samples, &a.exit_probs, a.exit_threshold, a.seed)?;
    let table = CostTable::new(&model, &device, &server, &probs)?;
    let results =
        experiment::run_policies(&table, &trace, &a.policies, a.accuracy_floor, &cfg, &source)?;
    if let Some(path) = &a.plot {
        experiment::latency_plot(
            path,
            &format!("{} on {}", model.name(), trace.name),
            &results,
        )?;
    }
    let mbit = trace.mean_rate() * 8e-6;
    let overload = experiment::overload(&table, &trace, &cfg);
    if let Some(w) = overload.warning() {
        eprintln!("{w}");
    }
    if a.json {
        let policies = experiment::policies_json(&results, &table);
        println!(
            "{}",
            json!({"model": model.name(), "trace": trace.name, "trace_mean_mbit_s": mbit, "requests": a.requests, "rate": a.rate, "rtt_ms": a.rtt_ms, "server_load": a.server_load, "device_profile": device.adapter, "server_profile": server.adapter, "overload": overload.to_json(), "policies": policies})
        );
        return Ok(());
    }
    println!(
        "{} on trace {} (mean {mbit:.2} Mbit/s), {} requests at {}/s, RTT {} ms, server load {}",
        model.name(),
        trace.name,
        a.requests,
        a.rate,
        a.rtt_ms,
        a.server_load
    );
    print!("{}", experiment::table_text(&results, &table));
    println!("device, uplink, server: the share of the run each was busy (utilisation).");
    Ok(())
}
