//! `edgecut serve`: the KServe v2 tail server, in the foreground until killed.

use crate::{backend, load, BackendChoice};
use anyhow::{Context, Result};
use edgecut::split::kserve::{resolve_token, TOKEN_ENV};
use edgecut::split::server::{Server, ServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `edgecut serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Model directories.
    #[arg(required = true)]
    pub models: Vec<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub addr: SocketAddr,
    /// Require `Authorization: Bearer T` (all routes but /v2/health/*); visible in `ps`, so
    /// prefer --token-file or EDGECUT_TOKEN.
    #[arg(long)]
    pub token: Option<String>,
    /// Read the token from this file (its trailing newline trimmed; an empty file is an error).
    #[arg(long, conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// GPU worker threads.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Most samples per GPU dispatch and per request (1 turns dynamic batching off).
    #[arg(long, default_value_t = 32)]
    pub max_batch: usize,
    /// How long a request waits for others of the same cut to share its dispatch (µs).
    #[arg(long, default_value_t = 500)]
    pub max_delay_us: u64,
    /// Connections served at once; more are answered at once (health 200, the rest 503) and
    /// closed. Keep it below the process's open-file limit (`ulimit -n`).
    #[arg(long, default_value_t = 512)]
    pub max_connections: usize,
    /// Seconds a request body may take to arrive after its headers (then 408).
    #[arg(long, default_value_t = 10.0)]
    pub body_timeout: f64,
    /// Largest body without binary tensors (JSON tensors parse into many times their size).
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub max_json_bytes: usize,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
}

pub fn serve(a: ServeArgs) -> Result<()> {
    // First, so a bad token source fails before seconds of model loading.
    let token = resolve_token(
        a.token,
        a.token_file.as_deref(),
        std::env::var(TOKEN_ENV).ok(),
    )?;
    let models = a
        .models
        .iter()
        .map(|m| load(m))
        .collect::<Result<Vec<_>>>()?;
    let backend = backend(a.backend)?;
    if !(a.body_timeout.is_finite() && a.body_timeout > 0.0) {
        anyhow::bail!("--body-timeout must be a positive number of seconds");
    }
    let mut config = ServerConfig::new(a.addr).with_token(token).with_batching(
        a.workers,
        a.max_batch,
        Duration::from_micros(a.max_delay_us),
    );
    config.max_connections = a.max_connections;
    config.body_timeout = Duration::from_secs_f64(a.body_timeout);
    config.max_json_bytes = a.max_json_bytes;
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
