//! `edgecut study`: the dynamic-split-computing study ([`edgecut::sim::study`]) on measured
//! profiles; writes Markdown tables, a JSON summary and SVG plots to `--out`.

use crate::load;
use anyhow::Result;
use edgecut::sim::profiles;
use edgecut::sim::study::{run, StudyConfig};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct StudyArgs {
    /// Model directory or .onnx file.
    #[arg(default_value = "models/efficientnet-b0")]
    model: PathBuf,
    /// Device profile (default: <model>/profiles/device.json).
    #[arg(long)]
    device_profile: Option<PathBuf>,
    /// Server profile (default: <model>/profiles/server.json); its batch sizes are the load levels.
    #[arg(long)]
    server_profile: Option<PathBuf>,
    /// Folder of real traces (norway-hsdpa-3g/, mahimahi-lte/, 5g-mobility/), read in place.
    #[arg(long)]
    traces: PathBuf,
    /// Output folder for tables and plots.
    #[arg(long, default_value = "docs/study")]
    out: PathBuf,
    /// Round-trip time, milliseconds.
    #[arg(long, default_value_t = 20.0)]
    rtt_ms: f64,
    /// Server queueing delays swept, milliseconds (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,500,2000")]
    queue_ms: Vec<f64>,
    /// Server shares swept: the server is time-shared by N requests, so its block times are N x the profile's.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    share: Vec<f64>,
    /// Requests per replayed trace.
    #[arg(long, default_value_t = 400)]
    requests: usize,
    /// Print one JSON object (the summary) instead of the tables.
    #[arg(long)]
    json: bool,
}

pub fn study(a: StudyArgs) -> Result<()> {
    let model = load(&a.model)?;
    let (device, server) = profiles(
        &a.model,
        &model,
        a.device_profile.as_deref(),
        a.server_profile.as_deref(),
    )?;
    let cfg = StudyConfig {
        rtt_ms: a.rtt_ms,
        queue_ms: a.queue_ms,
        share: a.share,
        requests: a.requests,
    };
    let study = run(&model, &device, &server, &a.traces, &cfg, &a.out)?;
    if a.json {
        println!("{}", serde_json::to_string(&study)?);
    } else {
        print!("{}", study.markdown);
        println!("wrote {}", a.out.display());
    }
    Ok(())
}
