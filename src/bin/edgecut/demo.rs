//! `edgecut demo`: the shipped MNIST early-exit model, a tail server in-process on loopback, the
//! device client's uplink shaped to a real 3G trace, and every policy side by side.

use crate::{backend, load, BackendChoice};
use anyhow::{Context, Result};
use edgecut::data::{load_mnist, Split};
use edgecut::split::client::{ClientConfig, DeviceClient};
use edgecut::split::runner::{run_policy, summary_stats, Policy};
use edgecut::split::server::{Server, ServerConfig};
use edgecut::split::shaping::Trace;
use edgecut::split::wire::Encoding;
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
    as_json: bool,
) -> Result<()> {
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
        "uplink shaped to {trace_name} (mean {:.2} Mbit/s); first {n} test digits (--limit), exit threshold {threshold}",
        trace.mean_mbps()
    ));
    let mut runs: Vec<(Policy, Encoding)> = vec![
        (Policy::Device, Encoding::Fp32),
        (Policy::Server, Encoding::Fp32),
        (Policy::Server, Encoding::Int8),
    ];
    for c in model.cut_candidates() {
        runs.push((Policy::Static(c + 1), Encoding::Fp32));
        runs.push((Policy::Static(c + 1), Encoding::Int8));
    }
    let mut rows = Vec::new();
    for (policy, encoding) in runs {
        let config = ClientConfig::new(server.url())
            .with_encoding(encoding)
            .with_deadline(Duration::from_secs(1))
            .with_trace(Some(trace.clone()));
        let mut client = DeviceClient::new(model.clone(), backend.clone(), config)?;
        let s = run_policy(&mut client, &test, policy, threshold, n, |_, _| {})?;
        let mut j = s.to_json();
        j["encoding"] = encoding.datatype().into();
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
        let (mean, _, p95) = summary_stats(&s.latencies_ms);
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
    println!("\nstatic:K runs blocks 0..K on the device and the rest on the server; exits answer on the device when confident.");
    server.shutdown();
    Ok(())
}
