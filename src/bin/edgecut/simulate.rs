//! `edgecut simulate`: a trace-driven simulation of a request stream under scheduling policies.

use crate::{backend, load, BackendChoice};
use anyhow::{bail, Context, Result};
use edgecut::data::{load_mnist, Split};
use edgecut::model::Model;
use edgecut::report::plot::{line_chart, Series};
use edgecut::sched::cost::{CostTable, ExitProbabilities, SampleExits};
use edgecut::sched::estimate::RateMethod;
use edgecut::sched::policy;
use edgecut::sched::profile::Profile;
use edgecut::sim::trace::Trace;
use edgecut::sim::{
    profile_for, simulate as run_sim, Arrivals, ExitSource, ServerLoad, SimConfig, SimResult,
};
use serde_json::{json, Map};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Model directory.
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

/// The device and server profiles: given, or the model's defaults.
pub fn profiles(
    dir: &Path,
    model: &Model,
    device: Option<&Path>,
    server: Option<&Path>,
) -> Result<(Profile, Profile)> {
    let read = |given, default: &str| {
        profile_for(dir, model, given, default).with_context(|| {
            format!("reading the {default} profile (measure one with `edgecut profile`)")
        })
    };
    Ok((read(device, "device.json")?, read(server, "server.json")?))
}

pub fn simulate(a: SimulateArgs) -> Result<()> {
    if !(a.rate.is_finite() && a.rate > 0.0) {
        bail!(
            "--rate must be a positive number of requests per second, got {}",
            a.rate
        );
    }
    if !(a.rtt_ms.is_finite() && a.rtt_ms >= 0.0) {
        bail!("--rtt-ms must be >= 0, got {}", a.rtt_ms);
    }
    if a.workers == 0 || a.requests == 0 {
        bail!("--workers and --requests must be at least 1");
    }
    let model = load(&a.model)?;
    let (device, server) = profiles(
        &a.model,
        &model,
        a.device_profile.as_deref(),
        a.server_profile.as_deref(),
    )?;
    let trace = Trace::from_spec(&a.trace, a.column.as_deref())?;
    let load_spec = ServerLoad::parse(&a.server_load)?;
    let (exit_probs, source) = if let Some(dir) = &a.data {
        if model.exits.is_empty() {
            bail!(
                "--data gives exit confidences, but model '{}' has no exits",
                model.name()
            );
        }
        let test = load_mnist(dir, Split::Test)?;
        let s = SampleExits::measure(&model, &backend(a.backend)?, &test, a.samples)?;
        (
            ExitProbabilities::from_samples(&model, &s, a.exit_threshold),
            ExitSource::Samples {
                samples: s,
                threshold: a.exit_threshold,
            },
        )
    } else if !a.exit_probs.is_empty() {
        let p = ExitProbabilities::calibrated(&model, a.exit_probs.clone())?;
        let first = p.first.clone();
        (
            p,
            ExitSource::Calibrated {
                first,
                seed: a.seed,
            },
        )
    } else {
        (ExitProbabilities::none(&model), ExitSource::None)
    };
    let table = CostTable::new(&model, &device, &server, &exit_probs)?;
    let names = if a.policies.is_empty() {
        policy::default_names(&table)
    } else {
        a.policies.clone()
    };
    let mut policies = names
        .iter()
        .map(|n| policy::parse(n.trim(), &table, a.accuracy_floor))
        .collect::<Result<Vec<_>, _>>()?;
    let cfg = SimConfig {
        requests: a.requests,
        arrivals: if a.poisson {
            Arrivals::Poisson {
                rate: a.rate,
                seed: a.seed,
            }
        } else {
            Arrivals::Periodic { rate: a.rate }
        },
        rtt_s: a.rtt_ms * 1e-3,
        workers: a.workers,
        load: load_spec,
        rate_method: RateMethod::parse(&a.estimator)?,
        ..SimConfig::default()
    };
    let results: Vec<SimResult> = policies
        .iter_mut()
        .map(|p| run_sim(&table, &trace, p.as_mut(), &cfg, &source))
        .collect();
    if let Some(path) = &a.plot {
        // Rolling mean latency over time (window of 20 requests) per policy.
        let series: Vec<Series> = results
            .iter()
            .map(|r| Series {
                name: r.policy.clone(),
                points: (0..r.latencies.len())
                    .step_by(5)
                    .map(|i| {
                        let lo = i.saturating_sub(19);
                        let w = &r.latencies[lo..=i];
                        (r.arrivals[i], w.iter().sum::<f64>() / w.len() as f64 * 1e3)
                    })
                    .collect(),
            })
            .collect();
        line_chart(
            path,
            &format!("{} on {}", model.name(), trace.name),
            "time (s)",
            "latency, rolling mean of 20 (ms)",
            &series,
            false,
        )?;
    }
    if a.json {
        let mut pol = Map::new();
        for r in &results {
            pol.insert(r.policy.clone(), r.to_json(&table));
        }
        println!(
            "{}",
            json!({
                "model": model.name(),
                "trace": trace.name,
                "trace_mean_mbit_s": trace.mean_rate() * 8e-6,
                "requests": a.requests,
                "rate": a.rate,
                "rtt_ms": a.rtt_ms,
                "server_load": a.server_load,
                "device_profile": device.adapter,
                "server_profile": server.adapter,
                "policies": pol,
            })
        );
        return Ok(());
    }
    println!(
        "{} on trace {} (mean {:.2} Mbit/s), {} requests at {}/s, RTT {} ms, server load {}",
        model.name(),
        trace.name,
        trace.mean_rate() * 8e-6,
        a.requests,
        a.rate,
        a.rtt_ms,
        a.server_load
    );
    println!(
        "{:<24} {:>10} {:>10} {:>12} {:>9}  cuts",
        "policy", "mean ms", "p95 ms", "MB sent", "accuracy"
    );
    for r in &results {
        let cuts: Vec<String> = r
            .cuts(&table)
            .iter()
            .map(|(k, v)| format!("{k} {:.0}%", v * 100.0))
            .collect();
        println!(
            "{:<24} {:>10.2} {:>10.2} {:>12.3} {:>9}  {}",
            r.policy,
            r.mean() * 1e3,
            r.percentile(95.0) * 1e3,
            r.bytes as f64 / 1e6,
            r.accuracy
                .map(|x| format!("{:.4}", x))
                .unwrap_or_else(|| "-".into()),
            cuts.join(", ")
        );
    }
    Ok(())
}
