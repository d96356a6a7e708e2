//! `edgecut demo`: the shipped MNIST early-exit model, a tail server in-process on loopback, the
//! device client's uplink shaped to a real 3G trace, and every policy side by side.

use crate::run::sched_label;
use crate::{backend, live, load, BackendChoice};
use anyhow::{Context, Result};
use edgecut::data::{load_mnist, Split};
use edgecut::split::client::{ClientConfig, DeviceClient};
use edgecut::split::live::run_dynamic;
use edgecut::split::runner::{run_policy, Policy};
use edgecut::split::server::{Server, ServerConfig};
use edgecut::split::shaping::Trace;
use edgecut::split::wire::Encoding;
use edgecut::stats::Summary;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The first `rel` found in the current directory or one of its ancestors.
fn find_up(rel: &str) -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors().map(|a| a.join(rel)).find(|p| p.exists())
}

/// The 3G trace to replay: a file of `shared/data/traces/norway-hsdpa-3g` above the current
/// directory, else a built-in synthetic one.
fn pick_trace() -> (Trace, String) {
    let file = find_up("shared/data/traces/norway-hsdpa-3g").and_then(|dir| {
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
        // A bus ride: a moderate, varying 3G uplink.
        let preferred = files.iter().find(|p| p.ends_with("norway_bus_1")).cloned();
        preferred.or_else(|| files.first().cloned())
    });
    match file.as_deref().map(|f| (f, Trace::load(f))) {
        Some((f, Ok(t))) => (t, f.display().to_string()),
        _ => (
            Trace::synthetic_3g(),
            "built-in synthetic 3G (0.4/2.0 Mbit/s alternating every 5 s)".into(),
        ),
    }
}

pub fn demo(
    limit: usize,
    threshold: f32,
    choice: BackendChoice,
    model: Option<PathBuf>,
    device_slowdown: f64,
    as_json: bool,
) -> Result<()> {
    if !(device_slowdown.is_finite() && device_slowdown >= 1.0) {
        anyhow::bail!("--device-slowdown must be >= 1, got {device_slowdown}");
    }
    let dir = match model {
        Some(m) => m,
        None => ["models/mnist-lenet-ee", "models/mnist-fixture"]
            .iter()
            .find_map(|m| find_up(m))
            .context("neither models/mnist-lenet-ee nor models/mnist-fixture found above the current directory")?,
    };
    let model = load(&dir)?;
    let data = find_up("models/data/mnist")
        .context("models/data/mnist not found above the current directory")?;
    let test = load_mnist(&data, Split::Test)?;
    let (trace, trace_name) = pick_trace();
    let backend = backend(choice)?;
    let server = Server::start(
        vec![model.clone()],
        backend.clone(),
        ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))),
    )?;
    let n = limit.min(test.len());
    let say = |s: String| {
        if as_json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };
    say(format!(
        "model {} ({}){}",
        dir.display(),
        model.name(),
        if model.seeded || model.name() == "mnist-fixture" {
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
        "device emulated {device_slowdown}x slower than the server (--device-slowdown): it waits {}x each local run",
        device_slowdown - 1.0
    ));
    say(format!(
        "uplink shaped to {trace_name} (mean {:.2} Mbit/s); first {n} test digits (--limit), exit threshold {threshold}",
        trace.mean_mbps()
    ));
    let mut runs: Vec<(Option<Policy>, Encoding)> = vec![
        (Some(Policy::Device), Encoding::Fp32),
        (Some(Policy::Server), Encoding::Fp32),
        (Some(Policy::Server), Encoding::Int8),
    ];
    for c in model.cut_candidates() {
        runs.push((Some(Policy::Static(c + 1)), Encoding::Fp32));
        runs.push((Some(Policy::Static(c + 1)), Encoding::Int8));
    }
    runs.push((None, Encoding::Fp32));
    let mut rows = Vec::new();
    let mut choices: BTreeMap<String, usize> = BTreeMap::new();
    for (policy, encoding) in runs {
        let config = ClientConfig::new(server.url())
            .with_encoding(encoding)
            .with_deadline(Duration::from_secs(1))
            .with_trace(Some(trace.clone()))
            .with_device_slowdown(device_slowdown);
        let mut client = DeviceClient::new(model.clone(), backend.clone(), config)?;
        let (s, enc) = match policy {
            Some(policy) => (
                run_policy(&mut client, &test, policy, threshold, n, |_, _| {})?,
                encoding.datatype(),
            ),
            None => {
                let mut sched = live::scheduler(live::LiveArgs {
                    model: &model,
                    backend: &backend,
                    data: &data,
                    server_url: &server.url(),
                    policy: "dynamic",
                    threshold,
                    device_profile: None,
                    server_profile: None,
                    device_slowdown,
                    calibration_samples: 1000,
                })?;
                let s = run_dynamic(
                    &mut client,
                    &test,
                    &mut sched,
                    "dynamic",
                    threshold,
                    n,
                    |_, d, _| *choices.entry(sched_label(&model, d)).or_default() += 1,
                )?;
                (s, "any")
            }
        };
        let mut j = s.to_json();
        j["encoding"] = enc.into();
        if s.policy == "dynamic" {
            j["choices"] = serde_json::to_value(&choices)?;
        }
        rows.push((s, j));
    }
    if as_json {
        let policies: Vec<_> = rows.into_iter().map(|r| r.1).collect();
        println!(
            "{}",
            json!({
                "model": model.name(),
                "model_dir": dir.display().to_string(),
                "trace": trace_name,
                "trace_mean_mbps": trace.mean_mbps(),
                "device_slowdown": device_slowdown,
                "samples": n,
                "exit_threshold": threshold,
                "adapter": backend.adapter(),
                "policies": policies,
            })
        );
        return Ok(());
    }
    println!(
        "\n{:<10} {:<5} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "policy", "enc", "accuracy", "exits", "bytes", "mean ms", "p95 ms", "fallbacks"
    );
    for (s, j) in &rows {
        let Summary { mean, p95, .. } = Summary::of(&s.latencies_ms);
        println!(
            "{:<10} {:<5} {:>8.1}% {:>6.1}% {:>9} {:>9.2} {:>9.2} {:>9}",
            s.policy,
            j["encoding"].as_str().unwrap_or(""),
            s.accuracy * 100.0,
            s.exit_rate * 100.0,
            s.bytes_sent,
            mean,
            p95,
            s.fallbacks
        );
    }
    println!("\ndynamic chose (cut/encoding: requests): {choices:?}");
    println!("\nstatic:K runs blocks 0..K on the device and the rest on the server; exits answer on the device when confident.");
    server.shutdown();
    Ok(())
}
