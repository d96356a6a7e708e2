//! The main job, behind `edgecut demo`: a tail server in-process on loopback, the device
//! client's uplink shaped to a real 3G trace, and every policy of the one parser (device, server,
//! each cut candidate in fp32 and int8, dynamic) run side by side through the one request loop
//! ([`super::runner::run_inputs`]). [`run_photos`] runs the pretrained EfficientNet-Lite0 on the
//! shipped photos with the device emulated from a published profile (spread over the blocks by
//! MACs, [`crate::sched::profile::published`]); [`run`] the MNIST early-exit model (`edgecut demo --mnist`).

use super::client::{ClientConfig, ClientError, DeviceClient};
use super::live::{prepare, LiveError, LiveSetup};
use super::runner::{run as run_live, run_inputs, RunSummary};
use super::server::{Server, ServerConfig, ServerError};
use crate::data::{load_mnist, DataError, Split};
use crate::engine::{Backend, Plan};
use crate::model::Model;
use crate::sim::trace::Trace;
use crate::tensor::Tensor;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
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

/// The first `rel` found in `start` or one of its ancestors, as a path relative to `start`
/// (`rel`, `../rel`, ...): callers pass the current directory, so the path works as is and
/// reads in the output as a user would type it.
pub fn find_up(start: &Path, rel: &str) -> Option<PathBuf> {
    let depth = start.ancestors().position(|a| a.join(rel).exists())?;
    let mut path: PathBuf = std::iter::repeat_n("..", depth).collect();
    path.push(rel);
    Some(path)
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

/// What the photo demo runs: a pretrained image classifier on photos.
#[derive(Debug, Clone)]
pub struct PhotoDemoConfig {
    /// The photos, in order.
    pub photos: Vec<PathBuf>,
    /// Each photo is sent this many times per policy (the dynamic policy learns from answers).
    pub repeat: usize,
    /// Policies to run (empty: [`policies`] of the model).
    pub policies: Vec<String>,
    /// The emulated device: per-block seconds and what they come from.
    pub device: Option<(Vec<f64>, String)>,
    /// The uplink trace and its description.
    pub trace: (Trace, String),
    /// Deadline of one remote request.
    pub deadline: Duration,
}

/// One policy's run of the photo demo: the summary and the top-1 label of each photo (first
/// pass).
#[derive(Debug, Clone)]
pub struct PhotoRun {
    /// The run.
    pub summary: RunSummary,
    /// Top-1 label of each photo.
    pub top1: Vec<String>,
    /// Request order of the choices, labelled.
    pub choices: Vec<String>,
}

/// Errors of the photo demo beyond [`DemoError`].
fn photo_error(e: crate::preprocess::PreprocessError) -> DemoError {
    DemoError::Client(ClientError::Input(e.to_string()))
}

/// Runs every policy on the photos against an in-process server on loopback, the device
/// emulated as `cfg.device` says; `say` gets the set-up lines as they happen. Returns the runs
/// and the `edgecut demo --json` object.
pub fn run_photos(
    model: &Arc<Model>,
    model_dir: &Path,
    backend: &Backend,
    cfg: &PhotoDemoConfig,
    say: impl Fn(String),
) -> Result<(Vec<PhotoRun>, Value), DemoError> {
    let pre = model.manifest.preprocess.clone().ok_or_else(|| {
        DemoError::Client(ClientError::Input(format!(
            "model '{}' carries no preprocessing; import it with --mean/--std",
            model.name()
        )))
    })?;
    let labels = match &pre.labels {
        Some(name) => Some(
            crate::preprocess::read_labels(&model_dir.join(name), model.classes())
                .map_err(photo_error)?,
        ),
        None => None,
    };
    let shape = model.input_shape().to_vec();
    let mut inputs = Vec::new();
    for p in &cfg.photos {
        let mut s = vec![1];
        s.extend_from_slice(&shape);
        let x = Tensor::new(s, pre.load(p, &shape).map_err(photo_error)?)
            .map_err(|e| DemoError::Client(ClientError::Input(e.to_string())))?;
        inputs.push(x);
    }
    let (trace, trace_name) = &cfg.trace;
    let server = Server::start(
        vec![model.clone()],
        backend.clone(),
        ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))),
    )?;
    say(format!(
        "model {} ({}); {} photos x {} (--repeat)",
        model_dir.display(),
        model.name(),
        cfg.photos.len(),
        cfg.repeat
    ));
    say(format!(
        "server {} in-process; device and server share {}",
        server.url(),
        backend.adapter()
    ));
    // The local speed of the whole model, for the comparison with the emulated device.
    let whole =
        Plan::compile(model, 0..model.blocks.len(), backend, 1).map_err(ClientError::from)?;
    let mut local = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        whole.run(&inputs[0]).map_err(ClientError::from)?;
        local = local.min(t.elapsed().as_secs_f64());
    }
    match &cfg.device {
        Some((blocks, what)) => {
            let target: f64 = blocks.iter().sum();
            say(format!(
                "device emulated as {what}: {:.1} ms per image, spread over the blocks by MACs",
                target * 1e3
            ));
            if local > target {
                say(format!("note: this machine runs the whole model in {:.1} ms, slower than the emulated device; the device runs at this machine's speed", local * 1e3));
            } else {
                say(format!("this machine runs the whole model in {:.1} ms; the device waits after each head to match the profile", local * 1e3));
            }
        }
        None => say(format!(
            "device: this machine ({:.1} ms per image); no published device profile found",
            local * 1e3
        )),
    }
    say(format!(
        "uplink shaped to {trace_name} (mean {:.2} Mbit/s)",
        trace.mean_rate() * 8e-6
    ));
    let setup = LiveSetup {
        device_block_s: cfg.device.as_ref().map(|(b, _)| b.clone()),
        ..LiveSetup::new(model_dir)
    };
    let names = if cfg.policies.is_empty() {
        policies(model)
    } else {
        cfg.policies.clone()
    };
    let n = inputs.len() * cfg.repeat.max(1);
    let (mut runs, mut rows) = (Vec::new(), Vec::new());
    for name in names {
        let config = ClientConfig::new(server.url())
            .with_deadline(cfg.deadline)
            .with_trace(Some(trace.clone()))
            .with_device_profile(setup.device_block_s.clone());
        let mut client = DeviceClient::new(model.clone(), backend.clone(), config)?;
        let (mut policy, mut feedback) = prepare(&name, model, backend, &server.url(), &setup)?;
        let table = feedback.table().clone();
        let mut classes = vec![0u32; inputs.len()];
        let mut choices = Vec::with_capacity(n);
        let summary = run_inputs(
            &mut client,
            n,
            |i| Ok(inputs[i % inputs.len()].clone()),
            |_| u32::MAX,
            policy.as_mut(),
            &mut feedback,
            1.0,
            |i, _, o| {
                if i < classes.len() {
                    classes[i] = o.class;
                }
                choices.push(table.label(o.choice));
            },
        )?;
        let top1: Vec<String> = classes
            .iter()
            .map(|&c| {
                labels
                    .as_ref()
                    .and_then(|l| l.get(c as usize).cloned())
                    .unwrap_or_else(|| c.to_string())
            })
            .collect();
        let mut j = summary.to_json();
        if let Some(o) = j.as_object_mut() {
            o.remove("accuracy");
            o.remove("exit_rate");
        }
        j["top1"] = json!(top1);
        j["choices"] = json!(choices);
        rows.push(j);
        runs.push(PhotoRun {
            summary,
            top1,
            choices,
        });
    }
    server.shutdown();
    let photos: Vec<String> = cfg
        .photos
        .iter()
        .map(|p| {
            p.file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
        })
        .collect();
    let json = json!({
        "model": model.name(),
        "model_dir": model_dir.display().to_string(),
        "photos": photos,
        "repeat": cfg.repeat,
        "trace": trace_name,
        "trace_mean_mbps": trace.mean_rate() * 8e-6,
        "device": cfg.device.as_ref().map(|(b, what)| json!({"profile": what, "whole_ms": b.iter().sum::<f64>() * 1e3})),
        "local_whole_ms": local * 1e3,
        "adapter": backend.adapter(),
        "policies": rows,
    });
    Ok((runs, json))
}

/// The text table of the photo demo: one line per policy with the top-1 label of each photo.
pub fn photo_table(runs: &[PhotoRun], photos: &[PathBuf]) -> String {
    let names: Vec<String> = photos
        .iter()
        .map(|p| {
            p.file_stem()
                .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
        })
        .collect();
    let mut out = format!("{:<32}", "policy");
    for n in &names {
        out.push_str(&format!(" {:<16}", truncate(n, 16)));
    }
    out.push_str(&format!(
        " {:>9} {:>9} {:>9}  cuts\n",
        "bytes", "mean ms", "p95 ms"
    ));
    for r in runs {
        let s = &r.summary;
        let l = crate::stats::Summary::of(&s.latencies_ms);
        out.push_str(&format!("{:<32}", s.policy));
        for t in &r.top1 {
            out.push_str(&format!(" {:<16}", truncate(t, 16)));
        }
        let cuts: Vec<String> = s.cuts.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        out.push_str(&format!(
            " {:>9} {:>9.1} {:>9.1}  {}\n",
            s.bytes_sent,
            l.mean,
            l.p95,
            cuts.join(", ")
        ));
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(['~']).collect()
    }
}
