//! `edgecut serve`: the KServe v2 tail server, in the foreground until killed.

use crate::{backend, load, BackendChoice};
use anyhow::{Context, Result};
use edgecut::split::server::{Server, ServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `edgecut serve`.
pub struct ServeArgs {
    pub models: Vec<PathBuf>,
    pub addr: SocketAddr,
    pub token: Option<String>,
    pub workers: usize,
    pub max_batch: usize,
    pub max_delay_us: u64,
    pub backend: BackendChoice,
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let models = a
        .models
        .iter()
        .map(|m| load(m))
        .collect::<Result<Vec<_>>>()?;
    let backend = backend(a.backend)?;
    let config = ServerConfig::new(a.addr).with_token(a.token).with_batching(
        a.workers,
        a.max_batch,
        Duration::from_micros(a.max_delay_us),
    );
    let names: Vec<String> = models
        .iter()
        .map(|m| format!("{} ({})", m.name(), &m.hash[..12]))
        .collect();
    let adapter = backend.adapter();
    let server = Server::start(models, backend, config).context("starting the server")?;
    // One line on stdout once listening, so scripts can wait for it.
    println!(
        "edgecut serving {} on {} ({adapter})",
        names.join(", "),
        server.url()
    );
    server.wait();
    Ok(())
}
