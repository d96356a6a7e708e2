//! `edgecut demo`: the shipped MNIST early-exit model, a tail server in-process on loopback, the
//! device client's uplink shaped to a real 3G trace, and every policy side by side.

use crate::{backend, load, BackendChoice};
use anyhow::{Context, Result};
use edgecut::data::{load_mnist, Split};
use edgecut::sim::trace::Trace;
use edgecut::split::client::{ClientConfig, DeviceClient};
use edgecut::split::live::{prepare, LiveSetup};
use edgecut::split::runner::run as run_live;
use edgecut::split::server::{Server, ServerConfig};
use edgecut::stats::Summary;
use serde_json::json;
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
    match file.as_deref().map(|f| (f, Trace::load(f, None))) {
        Some((f, Ok(t))) => (t, f.display().to_string()),
        _ => {
            let t = Trace::synthetic_3g();
            let name = t.name.clone();
            (t, name)
        }
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
        trace.mean_rate() * 8e-6
    ));
    let mut names = vec!["device".to_string(), "server".to_string()];
    for c in model.cut_candidates() {
        let block = &model.blocks[c].name;
        names.push(format!("static:{block}:fp32"));
        names.push(format!("static:{block}:int8"));
    }
    names.push("dynamic".into());
    let setup = LiveSetup {
        device_slowdown,
        threshold,
        ..LiveSetup::new(&data)
    };
    let mut rows = Vec::new();
    for name in &names {
        let config = ClientConfig::new(server.url())
            .with_deadline(Duration::from_secs(1))
            .with_trace(Some(trace.clone()))
            .with_device_slowdown(device_slowdown);
        let mut client = DeviceClient::new(model.clone(), backend.clone(), config)?;
        let (mut policy, mut feedback) = prepare(name, &model, &backend, &server.url(), &setup)?;
        let s = run_live(
            &mut client,
            &test,
            policy.as_mut(),
            &mut feedback,
            threshold,
            n,
            |_, _, _| {},
        )?;
        let mut j = s.to_json();
        if policy.adaptive() {
            j["choices"] = serde_json::to_value(&s.cuts)?;
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
                "trace_mean_mbps": trace.mean_rate() * 8e-6,
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
        "\n{:<22} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}  cuts",
        "policy", "accuracy", "exits", "bytes", "mean ms", "p95 ms", "fallbacks"
    );
    for (s, _) in &rows {
        let Summary { mean, p95, .. } = Summary::of(&s.latencies_ms);
        println!(
            "{:<22} {:>8.1}% {:>6.1}% {:>9} {:>9.2} {:>9.2} {:>9}  {:?}",
            s.policy,
            s.accuracy * 100.0,
            s.exit_rate * 100.0,
            s.bytes_sent,
            mean,
            p95,
            s.fallbacks,
            s.cuts
        );
    }
    println!("\nstatic:<block> runs the blocks up to and including <block> on the device and the rest on the server; exits answer on the device when confident.");
    server.shutdown();
    Ok(())
}
