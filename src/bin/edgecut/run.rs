//! `edgecut run`: the MNIST test split through the device client and a tail server.

use crate::{backend, live, load, BackendChoice};
use anyhow::{Context, Result};
use edgecut::data::{load_mnist, Split};
use edgecut::model::Model;
use edgecut::sched::policy::Decision;
use edgecut::split::client::{ClientConfig, DeviceClient};
use edgecut::split::live::run_dynamic;
use edgecut::split::runner::{run_policy, Policy};
use edgecut::split::shaping::Trace;
use edgecut::split::wire::Encoding;
use edgecut::stats::Summary;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `edgecut run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Model directory (the same model the server has).
    pub model: PathBuf,
    /// Server URL (http://host:port).
    #[arg(long)]
    pub server: String,
    /// Folder with the MNIST IDX files.
    #[arg(long, default_value = "models/data/mnist")]
    pub data: PathBuf,
    /// device, server, static:K (device runs blocks 0..K), dynamic (cut and encoding per
    /// request from live estimates) or dynamic-fp32|fp16|int8 (one split encoding).
    #[arg(long, default_value = "static:1")]
    pub policy: String,
    /// Dynamic: the device's per-block profile (default: measured at start-up).
    #[arg(long)]
    pub device_profile: Option<PathBuf>,
    /// Dynamic: the server's per-block profile (default: measured locally at start-up,
    /// corrected online by the compute times the server reports).
    #[arg(long)]
    pub server_profile: Option<PathBuf>,
    /// Emulate a device F times slower than this backend (waits after each local run; the
    /// measured device profile is scaled to match).
    #[arg(long, default_value_t = 1.0)]
    pub device_slowdown: f64,
    /// Dynamic: training samples the exit probabilities are calibrated on.
    #[arg(long, default_value_t = 1000)]
    pub calibration_samples: usize,
    /// Wire encoding of cut tensors: fp32, fp16 or int8.
    #[arg(long, default_value = "fp32")]
    pub encoding: String,
    /// An exit head answers when its confidence is strictly above T (1.0 never exits).
    #[arg(long, default_value_t = 0.9)]
    pub exit_threshold: f32,
    /// Shape the uplink to this trace (Pensieve `time Mbit/s` lines or Mahimahi).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Only the first N test samples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Per-request deadline for the server's answer (ms), then the device finishes.
    #[arg(long, default_value_t = 1000)]
    pub deadline_ms: u64,
    /// Bearer token for the server.
    #[arg(long)]
    pub token: Option<String>,
    /// Where the device runs.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: RunArgs) -> Result<()> {
    let dynamic = live::is_dynamic(&a.policy);
    let policy = if dynamic {
        live::encodings(&a.policy)?;
        None
    } else {
        Some(Policy::parse(&a.policy)?)
    };
    if !(a.device_slowdown.is_finite() && a.device_slowdown >= 1.0) {
        anyhow::bail!("--device-slowdown must be >= 1, got {}", a.device_slowdown);
    }
    let encoding = Encoding::parse(&a.encoding)?;
    if !(0.0..=1.0).contains(&a.exit_threshold) {
        anyhow::bail!(
            "--exit-threshold must be in [0, 1], got {}",
            a.exit_threshold
        );
    }
    let model = load(&a.model)?;
    let test = load_mnist(&a.data, Split::Test)?;
    let trace = a
        .trace
        .as_ref()
        .map(|p| Trace::load(p))
        .transpose()
        .context("reading --trace")?;
    let backend = backend(a.backend)?;
    let config = ClientConfig::new(a.server.clone())
        .with_encoding(encoding)
        .with_deadline(Duration::from_millis(a.deadline_ms))
        .with_token(a.token)
        .with_trace(trace.clone())
        .with_device_slowdown(a.device_slowdown);
    let mut client = DeviceClient::new(model.clone(), backend.clone(), config)?;
    let limit = a.limit.unwrap_or(test.len());
    let mut choices: BTreeMap<String, usize> = BTreeMap::new();
    let mut sched_json = serde_json::Value::Null;
    let s = match policy {
        Some(policy) => run_policy(
            &mut client,
            &test,
            policy,
            a.exit_threshold,
            limit,
            |_, _| {},
        )?,
        None => {
            let mut sched = live::scheduler(live::LiveArgs {
                model: &model,
                backend: &backend,
                data: &a.data,
                server_url: &a.server,
                policy: &a.policy,
                threshold: a.exit_threshold,
                device_profile: a.device_profile.clone(),
                server_profile: a.server_profile.clone(),
                device_slowdown: a.device_slowdown,
                calibration_samples: a.calibration_samples,
            })?;
            let s = run_dynamic(
                &mut client,
                &test,
                &mut sched,
                &a.policy,
                a.exit_threshold,
                limit,
                |_, d, _| {
                    let label = sched_label(&model, d);
                    *choices.entry(label).or_default() += 1;
                },
            )?;
            sched_json = live::scheduler_json(&sched);
            s
        }
    };
    if a.json {
        let mut j = s.to_json();
        if dynamic {
            j["choices"] = serde_json::to_value(&choices)?;
            j["scheduler"] = sched_json;
        }
        j["device_slowdown"] = a.device_slowdown.into();
        j["model"] = model.name().into();
        j["encoding"] = encoding.datatype().into();
        j["exit_threshold"] = a.exit_threshold.into();
        j["trace"] = a.trace.map(|p| p.display().to_string()).into();
        println!("{j}");
    } else {
        let Summary { mean, p50, p95, .. } = Summary::of(&s.latencies_ms);
        println!(
            "{} on {} via {} ({encoding}): {} samples, accuracy {:.2}%, exit rate {:.1}%, {} bytes sent, latency mean {mean:.2} / p50 {p50:.2} / p95 {p95:.2} ms, {} fallbacks, cuts {:?}",
            model.name(),
            a.server,
            s.policy,
            s.samples,
            s.accuracy * 100.0,
            s.exit_rate * 100.0,
            s.bytes_sent,
            s.fallbacks,
            s.cuts
        );
        if dynamic {
            println!("choices (cut/encoding: requests): {choices:?}");
        }
    }
    Ok(())
}

/// `device`, `server` or `<block>/<encoding>` of a decision.
pub fn sched_label(model: &Model, d: &Decision) -> String {
    match d.option.cut {
        edgecut::sched::Cut::Server => "server".into(),
        edgecut::sched::Cut::Device => "device".into(),
        edgecut::sched::Cut::After(k) => format!("{}/{}", model.blocks[k].name, d.option.encoding),
    }
}
