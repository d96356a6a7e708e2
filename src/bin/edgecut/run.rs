//! `edgecut run`: the MNIST test split through the device client and a tail server.

use crate::{backend, load, BackendChoice};
use anyhow::{Context, Result};
use edgecut::data::{load_mnist, Split};
use edgecut::split::client::{ClientConfig, DeviceClient};
use edgecut::split::runner::{run_policy, summary_stats, Policy};
use edgecut::split::shaping::Trace;
use edgecut::split::wire::Encoding;
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `edgecut run`.
pub struct RunArgs {
    pub model: PathBuf,
    pub server: String,
    pub data: PathBuf,
    pub policy: String,
    pub encoding: String,
    pub exit_threshold: f32,
    pub trace: Option<PathBuf>,
    pub limit: Option<usize>,
    pub deadline_ms: u64,
    pub token: Option<String>,
    pub backend: BackendChoice,
    pub json: bool,
}

pub fn run(a: RunArgs) -> Result<()> {
    let policy = Policy::parse(&a.policy)?;
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
        .with_trace(trace.clone());
    let mut client = DeviceClient::new(model.clone(), backend, config)?;
    let limit = a.limit.unwrap_or(test.len());
    let s = run_policy(
        &mut client,
        &test,
        policy,
        a.exit_threshold,
        limit,
        |_, _| {},
    )?;
    if a.json {
        let mut j = s.to_json();
        j["model"] = model.name().into();
        j["encoding"] = encoding.datatype().into();
        j["exit_threshold"] = a.exit_threshold.into();
        j["trace"] = a.trace.map(|p| p.display().to_string()).into();
        println!("{j}");
    } else {
        let (mean, p50, p95) = summary_stats(&s.latencies_ms);
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
    }
    Ok(())
}
