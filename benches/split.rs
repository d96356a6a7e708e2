//! Split runtime benchmarks over loopback (one JSON object on stdout):
//! - `overhead_us`: per-request latency of a split beyond head + tail compute (latency minus the
//!   device's head time minus the server's reported compute time: encoding, HTTP on loopback,
//!   queueing, decoding), p50/p95, cut after block 1 (FP32), batching delay 0; the head plan
//!   encodes the split tensor in its last dispatch and the tail plan decodes it in its first,
//!   so since then the head and server times include them;
//! - `by_encoding`: the same overhead and end-to-end latency for FP32, FP16 and INT8;
//! - `throughput_rps`: full-model requests per second from 16 concurrent device clients with
//!   dynamic batching (max batch 32, delay 500 µs) and without (max batch 1).
//!
//! Run: `cargo bench --bench split` (or `--profile dev` for a quick number).
//! Env: `SPLIT_BENCH_REQUESTS` (default 400), `SPLIT_BENCH_MODEL` (default models/mnist-fixture).

use edgecut::data::{load_mnist, Split};
use edgecut::encoding::Encoding;
use edgecut::engine::Backend;
use edgecut::model::Model;
use edgecut::sched::{Choice, Cut};
use edgecut::split::client::{AnsweredBy, ClientConfig, DeviceClient};
use edgecut::split::server::{Server, ServerConfig};
use edgecut::stats::Summary;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let requests: usize = std::env::var("SPLIT_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let dir = std::env::var("SPLIT_BENCH_MODEL").unwrap_or_else(|_| "models/mnist-fixture".into());
    let model = Arc::new(Model::load(root.join(&dir))?);
    let test = load_mnist(&root.join("models/data/mnist"), Split::Test)?;
    let backend = Backend::gpu_or_cpu();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let sample = |i: usize| test.batch(i % test.len()..i % test.len() + 1, model.input_shape());

    // Overhead of one split request beyond compute, per encoding.
    let server = Server::start(
        vec![model.clone()],
        backend.clone(),
        ServerConfig::new(loopback).with_batching(1, 32, Duration::ZERO),
    )?;
    let mut by_encoding = serde_json::Map::new();
    for encoding in Encoding::ALL {
        let mut client = DeviceClient::new(
            model.clone(),
            backend.clone(),
            ClientConfig::new(server.url()),
        )?;
        let after_first = Choice::after(0, encoding);
        client.prepare(after_first)?;
        let mut overhead = Vec::new();
        let mut latency = Vec::new();
        for i in 0..requests + 20 {
            let x = sample(i).ok_or("sample shape")?;
            let o = client.classify(&x, after_first, 1.0)?;
            if o.by != AnsweredBy::Server {
                return Err(
                    format!("request {i} was not answered by the server: {:?}", o.by).into(),
                );
            }
            let (_, compute_us) = o.server_us.ok_or("no server timing")?;
            if i >= 20 {
                let l = o.latency.as_secs_f64() * 1e6;
                latency.push(l);
                overhead.push(l - o.head.as_secs_f64() * 1e6 - compute_us as f64);
            }
        }
        let (o, l) = (Summary::of(&overhead), Summary::of(&latency));
        by_encoding.insert(
            encoding.to_string(),
            serde_json::json!({
                "overhead_us": {"mean": o.mean, "p50": o.p50, "p95": o.p95},
                "latency_us": {"mean": l.mean, "p50": l.p50, "p95": l.p95},
            }),
        );
    }
    server.shutdown();
    let fp32 = by_encoding
        .get("fp32")
        .cloned()
        .ok_or("no fp32 measurement")?;

    // Throughput with 16 concurrent clients.
    let mut throughput = serde_json::Map::new();
    for (name, max_batch, delay) in [
        ("batching", 32, Duration::from_micros(500)),
        ("no_batching", 1, Duration::ZERO),
    ] {
        let server = Server::start(
            vec![model.clone()],
            backend.clone(),
            ServerConfig::new(loopback).with_batching(1, max_batch, delay),
        )?;
        let per_client = (requests / 16).max(4);
        let start = Instant::now();
        let handles: Vec<_> = (0..16)
            .map(|c| {
                let (model, backend, url) = (model.clone(), backend.clone(), server.url());
                let xs: Vec<_> = (0..per_client)
                    .filter_map(|i| sample(c * per_client + i))
                    .collect();
                std::thread::spawn(move || -> Result<usize, String> {
                    let mut client = DeviceClient::new(model, backend, ClientConfig::new(url))
                        .map_err(|e| e.to_string())?;
                    let mut ok = 0;
                    for x in &xs {
                        let o = client
                            .classify(
                                x,
                                Choice {
                                    cut: Cut::Server,
                                    encoding: Encoding::Fp32,
                                },
                                1.0,
                            )
                            .map_err(|e| e.to_string())?;
                        ok += (o.by == AnsweredBy::Server) as usize;
                    }
                    Ok(ok)
                })
            })
            .collect();
        let mut answered = 0;
        for h in handles {
            answered += h.join().map_err(|_| "client thread panicked")??;
        }
        let secs = start.elapsed().as_secs_f64();
        throughput.insert(
            name.into(),
            serde_json::json!({
                "requests_per_s": answered as f64 / secs,
                "server_answered": answered,
                "requests": 16 * per_client,
                "max_batch": max_batch,
                "max_delay_us": delay.as_micros() as u64,
            }),
        );
        server.shutdown();
    }
    println!(
        "{}",
        serde_json::json!({
            "model": model.name(),
            "adapter": backend.adapter(),
            "requests": requests,
            "cut": 1,
            "overhead_us": fp32["overhead_us"],
            "latency_us": fp32["latency_us"],
            "by_encoding": by_encoding,
            "throughput_rps": throughput,
        })
    );
    Ok(())
}
