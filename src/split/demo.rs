//! The main job on the shipped model, behind `edgecut demo`: a tail server in-process on
//! loopback, the device client's uplink shaped to a 3G trace, and every policy of the one
//! parser (device, server, each cut candidate in fp32 and int8, dynamic) run side by side
//! through [`super::runner::run`].

use super::client::{ClientConfig, ClientError, DeviceClient};
use super::live::{prepare, LiveError, LiveSetup};
use super::runner::{run as run_live, RunSummary};
use super::server::{Server, ServerConfig, ServerError};
use crate::data::{load_mnist, DataError, Split};
use crate::engine::Backend;
use crate::model::Model;
use crate::sim::trace::Trace;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Errors of the demo.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DemoError {
    /// The in-process server did not start.
    #[error("starting the in-process server: {0}")]
    Server(#[from] ServerError),
    /// Setting up a policy.
    #[error(transparent)]
    Live(#[from] LiveError),
    /// A run failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The MNIST data.
    #[error(transparent)]
    Data(#[from] DataError),
}

/// The first `rel` found in `start` or one of its ancestors.
pub fn find_up(start: &Path, rel: &str) -> Option<PathBuf> {
    start.ancestors().map(|a| a.join(rel)).find(|p| p.exists())
}

/// The 3G trace to replay: `shared/data/traces/norway-hsdpa-3g/norway_bus_1` (a bus ride: a
/// moderate, varying 3G uplink; else the first Norway file) above `start`, else
/// [`Trace::synthetic_3g`]. Returns the trace and where it came from.
pub fn pick_trace(start: &Path) -> (Trace, String) {
    let file = find_up(start, "shared/data/traces/norway-hsdpa-3g").and_then(|dir| {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("norway_"))
            })
            .collect();
        files.sort();
        let preferred = files.iter().find(|p| p.ends_with("norway_bus_1")).cloned();
        preferred.or_else(|| files.first().cloned())
    });
    match file.as_deref().map(|f| (f, Trace::load(f, None))) {
        Some((f, Ok(t))) => (t, f.display().to_string()),
        _ => {
            let t = Trace::synthetic_3g();
            let name = t.name.clone();
            (t, name)
        }
    }
}

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Test digits per policy.
    pub limit: usize,
    /// Exit threshold.
    pub threshold: f32,
    /// The emulated device slowdown (>= 1).
    pub device_slowdown: f64,
    /// The MNIST folder.
    pub data: PathBuf,
    /// The uplink trace and its description.
    pub trace: (Trace, String),
}

/// Every policy's run: the summaries and the `edgecut demo --json` object.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// One summary per policy, in run order.
    pub runs: Vec<RunSummary>,
    /// The JSON object of `edgecut demo --json`.
    pub json: Value,
}

/// The policies of the demo for `model`.
pub fn policies(model: &Model) -> Vec<String> {
    let mut names = vec!["device".to_string(), "server".to_string()];
    for c in model.cut_candidates() {
        let block = &model.blocks[c].name;
        names.push(format!("static:{block}:fp32"));
        names.push(format!("static:{block}:int8"));
    }
    names.push("dynamic".into());
    names
}

/// Runs every policy of [`policies`] against an in-process server on loopback; `say` gets the
/// set-up lines as they happen.
pub fn run(
    model: &Arc<Model>,
    model_dir: &Path,
    backend: &Backend,
    cfg: &DemoConfig,
    say: impl Fn(String),
) -> Result<DemoReport, DemoError> {
    let test = load_mnist(&cfg.data, Split::Test)?;
    let (trace, trace_name) = &cfg.trace;
    let server = Server::start(
        vec![model.clone()],
        backend.clone(),
        ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))),
    )?;
    let n = cfg.limit.min(test.len());
    let untrained = model.seeded || model.name() == "mnist-fixture";
    say(format!(
        "model {} ({}){}",
        model_dir.display(),
        model.name(),
        if untrained {
            " — the untrained fixture: accuracy is chance level"
        } else {
            ""
        }
    ));
    say(format!(
        "server {} in-process; device and server share {}",
        server.url(),
        backend.adapter()
    ));
    say(format!(
        "device emulated {}x slower than the server (--device-slowdown): it waits {}x each local run",
        cfg.device_slowdown,
        cfg.device_slowdown - 1.0
    ));
    say(format!(
        "uplink shaped to {trace_name} (mean {:.2} Mbit/s); first {n} test digits (--limit), exit threshold {}",
        trace.mean_rate() * 8e-6,
        cfg.threshold
    ));
    let setup = LiveSetup {
        device_slowdown: cfg.device_slowdown,
        threshold: cfg.threshold,
        ..LiveSetup::new(&cfg.data)
    };
    let (mut runs, mut rows) = (Vec::new(), Vec::new());
    for name in policies(model) {
        let config = ClientConfig::new(server.url())
            .with_deadline(Duration::from_secs(1))
            .with_trace(Some(trace.clone()))
            .with_device_slowdown(cfg.device_slowdown);
        let mut client = DeviceClient::new(model.clone(), backend.clone(), config)?;
        let (mut policy, mut feedback) = prepare(&name, model, backend, &server.url(), &setup)?;
        let s = run_live(
            &mut client,
            &test,
            policy.as_mut(),
            &mut feedback,
            cfg.threshold,
            n,
            |_, _, _| {},
        )?;
        let mut j = s.to_json();
        if policy.adaptive() {
            j["choices"] = json!(s.cuts);
        }
        rows.push(j);
        runs.push(s);
    }
    server.shutdown();
    let json = json!({
        "model": model.name(),
        "model_dir": model_dir.display().to_string(),
        "trace": trace_name,
        "trace_mean_mbps": trace.mean_rate() * 8e-6,
        "device_slowdown": cfg.device_slowdown,
        "samples": n,
        "exit_threshold": cfg.threshold,
        "adapter": backend.adapter(),
        "policies": rows,
    });
    Ok(DemoReport { runs, json })
}

impl DemoReport {
    /// The text table of `edgecut demo`: one line per policy.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<22} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}  cuts\n",
            "policy", "accuracy", "exits", "bytes", "mean ms", "p95 ms", "fallbacks"
        );
        for s in &self.runs {
            let l = crate::stats::Summary::of(&s.latencies_ms);
            out.push_str(&format!(
                "{:<22} {:>8.1}% {:>6.1}% {:>9} {:>9.2} {:>9.2} {:>9}  {:?}\n",
                s.policy,
                s.accuracy * 100.0,
                s.exit_rate * 100.0,
                s.bytes_sent,
                l.mean,
                l.p95,
                s.fallbacks,
                s.cuts
            ));
        }
        out
    }
}
