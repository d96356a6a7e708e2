//! `edgecut run`: the MNIST test split through the device client and a tail server.

use crate::{backend, load, BackendChoice};
use anyhow::{bail, Context, Result};
use edgecut::data::{load_mnist, Split};
use edgecut::sim::trace::Trace;
use edgecut::split::client::{ClientConfig, DeviceClient};
use edgecut::split::kserve::{resolve_token, TOKEN_ENV};
use edgecut::split::live::{prepare, LiveSetup};
use edgecut::split::runner::run as run_live;
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `edgecut run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Model directory or .onnx file (the same model the server has).
    pub model: PathBuf,
    /// Server URL (http://host:port).
    #[arg(long)]
    pub server: String,
    /// Folder with the MNIST IDX files.
    #[arg(long, default_value = "models/data/mnist")]
    pub data: PathBuf,
    /// device, server, static:<block name or index>[:fp32|fp16|int8] (cut AFTER that block),
    /// dynamic or dynamic-fp32|fp16|int8 (cut and encoding per request from live estimates).
    #[arg(long, default_value = "static:0:fp32")]
    pub policy: String,
    /// Removed: the encoding is part of the policy (`--policy static:<block>:<enc>`).
    #[arg(long, hide = true)]
    pub encoding: Option<String>,
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
    /// An exit head answers when its confidence is strictly above T (1.0 never exits).
    #[arg(long, default_value_t = 0.9)]
    pub exit_threshold: f32,
    /// Shape the uplink to this trace: a file (Pensieve, Mahimahi or 5G CSV), or `const:R`,
    /// `steps:R1,R2@DWELL`, `markov:HIGH,LOW@DWELL[:SEED]` (as `edgecut simulate --trace`).
    #[arg(long)]
    pub trace: Option<String>,
    /// CSV column of a 5G trace (default: the first throughput column).
    #[arg(long)]
    pub column: Option<String>,
    /// Only the first N test samples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Per-request deadline for the server's answer (ms), then the device finishes.
    #[arg(long, default_value_t = 1000)]
    pub deadline_ms: u64,
    /// Circuit breaker: after N consecutive server failures the device answers alone for a
    /// back-off period (doubling while probes fail, at most 60 s); 0 turns it off.
    #[arg(long, default_value_t = 3)]
    pub breaker_failures: u32,
    /// The breaker's first back-off period (ms).
    #[arg(long, default_value_t = 5000)]
    pub breaker_backoff_ms: u64,
    /// Bearer token for the server; visible in `ps`, so prefer --token-file or EDGECUT_TOKEN.
    #[arg(long)]
    pub token: Option<String>,
    /// Read the token from this file (its trailing newline trimmed; an empty file is an error).
    #[arg(long, conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Where the device runs.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Least time between two polls of the server's statistics (the load signal), ms; 0 polls
    /// after every answer.
    #[arg(long, default_value_t = 200)]
    pub stats_interval_ms: u64,
    /// With --json: add every sample's predicted class (`predictions`).
    #[arg(long)]
    pub predictions: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: RunArgs) -> Result<()> {
    if let Some(e) = &a.encoding {
        bail!("--encoding is gone: the encoding is part of the policy now, say --policy static:<block>:{e} (or dynamic-{e})");
    }
    let token = resolve_token(
        a.token,
        a.token_file.as_deref(),
        std::env::var(TOKEN_ENV).ok(),
    )?;
    let model = load(&a.model)?;
    let trace = a
        .trace
        .as_deref()
        .map(|t| Trace::from_spec(t, a.column.as_deref()))
        .transpose()
        .context("reading --trace")?;
    let backend = backend(a.backend)?;
    let setup = LiveSetup {
        device_profile: a.device_profile,
        server_profile: a.server_profile,
        device_slowdown: a.device_slowdown,
        calibration_samples: a.calibration_samples,
        threshold: a.exit_threshold,
        ..LiveSetup::new(&a.data)
    };
    let (mut policy, mut feedback) = prepare(&a.policy, &model, &backend, &a.server, &setup)?;
    let test = load_mnist(&a.data, Split::Test)?;
    let config = ClientConfig::new(a.server.clone())
        .with_deadline(Duration::from_millis(a.deadline_ms))
        .with_token(token)
        .with_trace(trace.clone())
        .with_device_slowdown(a.device_slowdown)
        .with_stats_interval(Duration::from_millis(a.stats_interval_ms))
        .with_breaker(
            a.breaker_failures,
            Duration::from_millis(a.breaker_backoff_ms),
        );
    let mut client = DeviceClient::new(model.clone(), backend, config)?;
    let limit = a.limit.unwrap_or(test.len());
    let s = run_live(
        &mut client,
        &test,
        policy.as_mut(),
        &mut feedback,
        a.exit_threshold,
        limit,
        |_, _, _| {},
    )?;
    if a.json {
        let mut j = s.to_json();
        if policy.adaptive() {
            j["choices"] = serde_json::to_value(&s.cuts)?;
            j["scheduler"] = feedback.to_json();
        }
        j["server_load"] = feedback.load_json();
        // Asked before the run (cached): no request when the server was reachable then.
        j["server_kind"] = client
            .server_kind()
            .ok()
            .map(|k| k.name().to_string())
            .into();
        // Why server-only went to a repository as FP32 rather than 8-bit pixels, if it did.
        j["server_only_fp32"] = client.fp32_server_only().into();
        if a.predictions {
            j["predictions"] = serde_json::to_value(&s.predictions)?;
        }
        j["device_slowdown"] = a.device_slowdown.into();
        j["model"] = model.name().into();
        j["exit_threshold"] = a.exit_threshold.into();
        j["trace"] = trace.map(|t| t.name).into();
        println!("{j}");
    } else {
        println!("{}", s.text(model.name(), &a.server));
    }
    Ok(())
}
