//! Building the live scheduler of `edgecut run --policy dynamic` and `edgecut demo`: profiles
//! (measured at start-up or read from files), exit probabilities calibrated on the training
//! split, and an estimator primed with the measured RTT.

use anyhow::{bail, Context, Result};
use edgecut::data::{load_mnist, Split};
use edgecut::engine::Backend;
use edgecut::model::Model;
use edgecut::sched::estimate::Estimator;
use edgecut::sched::profile::Profile;
use edgecut::sched::Encoding;
use edgecut::split::live::{calibrate_exits, ping_rtt, LiveScheduler};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How to set up the live scheduler.
pub struct LiveArgs<'a> {
    pub model: &'a Arc<Model>,
    pub backend: &'a Backend,
    pub data: &'a Path,
    pub server_url: &'a str,
    pub policy: &'a str,
    pub threshold: f32,
    pub device_profile: Option<PathBuf>,
    pub server_profile: Option<PathBuf>,
    pub device_slowdown: f64,
    pub calibration_samples: usize,
}

/// Whether `name` is a dynamic policy (`dynamic`, `dynamic-fp32|fp16|int8`).
pub fn is_dynamic(name: &str) -> bool {
    name == "dynamic" || name.starts_with("dynamic-")
}

/// The split encodings a dynamic policy name allows.
pub fn encodings(name: &str) -> Result<Vec<Encoding>> {
    match name.strip_prefix("dynamic-") {
        None if name == "dynamic" => Ok(Encoding::SPLIT.to_vec()),
        Some(e) => Ok(vec![Encoding::parse(e).with_context(|| {
            format!("unknown policy '{name}' (expected dynamic, dynamic-fp32, dynamic-fp16 or dynamic-int8)")
        })?]),
        None => bail!("unknown policy '{name}'"),
    }
}

/// Measures (or reads) the profiles, calibrates the exits and primes the estimator.
pub fn scheduler(a: LiveArgs<'_>) -> Result<LiveScheduler> {
    let encs = encodings(a.policy)?;
    if !(a.device_slowdown.is_finite() && a.device_slowdown >= 1.0) {
        bail!("--device-slowdown must be >= 1, got {}", a.device_slowdown);
    }
    let measure = || {
        Profile::measure(a.model, a.backend, &[1], 2, 5)
            .context("measuring the per-block profile at start-up")
    };
    let measured = match (&a.device_profile, &a.server_profile) {
        (Some(_), Some(_)) => None,
        _ => Some(measure()?),
    };
    let device = match &a.device_profile {
        Some(p) => Profile::load(p, a.model).context("reading --device-profile")?,
        None => measured
            .clone()
            .context("measured above")?
            .scaled(a.device_slowdown)?,
    };
    // The server's profile is measured locally (on this backend) unless given; the server's
    // reported compute times correct it online.
    let server = match &a.server_profile {
        Some(p) => Profile::load(p, a.model).context("reading --server-profile")?,
        None => measured.context("measured above")?,
    };
    let train = load_mnist(a.data, Split::Train)?;
    let exits = calibrate_exits(
        a.model,
        a.backend,
        &train,
        a.calibration_samples,
        a.threshold,
    )
    .context("calibrating the exit probabilities on the training split")?;
    let mut estimator = Estimator::default();
    if let Some(rtt) = ping_rtt(a.server_url, 3, Duration::from_secs(1)) {
        estimator.observe_rtt(rtt.as_secs_f64());
    }
    Ok(LiveScheduler::new(
        a.model.clone(),
        device,
        server,
        exits,
        &encs,
        estimator,
    )?)
}

/// What the scheduler ended with: estimates, exit probabilities and per-block times (ms).
pub fn scheduler_json(s: &LiveScheduler) -> serde_json::Value {
    let e = s.estimator.estimates();
    let t = s.table();
    let ms = |v: &[f64]| v.iter().map(|x| x * 1e3).collect::<Vec<_>>();
    serde_json::json!({
        "rate_mbps": e.rate_bytes_per_s * 8e-6,
        "rtt_ms": e.rtt_s * 1e3,
        "queue_ms": e.queue_s * 1e3,
        "exit_first": t.exits.first,
        "exit_after_block": t.exits.after_block,
        "device_block_ms": ms(&t.device_block_s),
        "server_block_ms": ms(&t.server_block_s),
    })
}
