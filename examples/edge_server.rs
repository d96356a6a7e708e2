//! A headless tail server: serves one or more models over KServe v2 until killed.
//!
//! Run: `cargo run --example edge_server -- models/mnist-fixture --addr 127.0.0.1:8000`
//! Flags: `--addr A`, `--token T`, `--workers N`, `--max-batch N`, `--max-delay-us U`.
//! Prints one line (`listening on http://...`) once it accepts connections.

use edgecut::engine::Backend;
use edgecut::model::Model;
use edgecut::split::server::{Server, ServerConfig};
use std::sync::Arc;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut models, mut addr, mut token) = (Vec::new(), "127.0.0.1:8000".to_string(), None);
    let (mut workers, mut max_batch, mut delay_us) = (1usize, 32usize, 500u64);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--addr" => addr = value()?,
            "--token" => token = Some(value()?),
            "--workers" => workers = value()?.parse()?,
            "--max-batch" => max_batch = value()?.parse()?,
            "--max-delay-us" => delay_us = value()?.parse()?,
            dir => models.push(Arc::new(Model::load(dir)?)),
        }
    }
    if models.is_empty() {
        return Err("usage: edge_server <model-dir>... [--addr A] [--token T] [--workers N] [--max-batch N] [--max-delay-us U]".into());
    }
    let config = ServerConfig::new(addr.parse()?)
        .with_token(token)
        .with_batching(workers, max_batch, Duration::from_micros(delay_us));
    let server = Server::start(models, Backend::gpu_or_cpu(), config)?;
    println!("listening on {}", server.url());
    server.wait();
    Ok(())
}
