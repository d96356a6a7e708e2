//! `edgecut study`: the dynamic-split-computing study ([`edgecut::sim::study`]) on measured
//! profiles, or with `--pairs` on realistic device/server pairs
//! ([`edgecut::sim::study::pairs`]); writes Markdown tables, a JSON summary and SVG plots to `--out`.

use crate::load;
use anyhow::{bail, Context, Result};
use edgecut::sim::profiles;
use edgecut::sim::study::pairs::{default_pairs, run_pairs, Pair, PairsConfig};
use edgecut::sim::study::{run, StudyConfig};
use edgecut::split::demo::find_up;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct StudyArgs {
    /// Model directory or .onnx file (not used with --pairs).
    #[arg(default_value = "models/efficientnet-b0")]
    model: PathBuf,
    /// Run the study on the realistic device/server pairs (profiles in <models>/<model>/profiles/).
    #[arg(long)]
    pairs: bool,
    /// With --pairs: the folder holding the models of the pairs.
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// Device profile (default: <model>/profiles/device.json).
    #[arg(long)]
    device_profile: Option<PathBuf>,
    /// Server profile (default: <model>/profiles/server.json); its batch sizes are the load levels.
    #[arg(long)]
    server_profile: Option<PathBuf>,
    /// Folder of real traces (norway-hsdpa-3g/, mahimahi-lte/, 5g-mobility/), read in place
    /// (default: shared/data/traces found in the current folder or above it).
    #[arg(long)]
    traces: Option<PathBuf>,
    /// Output folder for tables and plots (default: docs/study, with --pairs docs/study/pairs).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Round-trip time, milliseconds.
    #[arg(long, default_value_t = 20.0)]
    rtt_ms: f64,
    /// Server queueing delays swept, milliseconds (comma-separated; default 0,500,2000, with
    /// --pairs 0,5,10,20,50,100,200,500).
    #[arg(long, value_delimiter = ',')]
    queue_ms: Option<Vec<f64>>,
    /// Server shares swept: the server is time-shared by N requests, so its block times are N x the profile's.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    share: Vec<f64>,
    /// With --pairs: the largest server batch of the load sweep (batches 1..=B).
    #[arg(long, default_value_t = 62)]
    max_batch: usize,
    /// With --pairs: the fraction of requests the what-if early exit answers.
    #[arg(long, default_value_t = 0.3)]
    exit_rate: f64,
    /// With --pairs: requests per second of the trace replays.
    #[arg(long, default_value_t = 1.0)]
    trace_rate: f64,
    /// Requests per replayed trace (default 400, with --pairs 200; 0 with --pairs: no replays).
    #[arg(long)]
    requests: Option<usize>,
    /// Print one JSON object (the summary) instead of the tables.
    #[arg(long)]
    json: bool,
}

pub fn study(a: StudyArgs) -> Result<()> {
    let traces = a.traces.clone().or_else(|| {
        let cwd = std::env::current_dir().ok()?;
        find_up(&cwd, "shared/data/traces")
    });
    if a.pairs {
        return study_pairs(a, traces.as_deref());
    }
    let Some(traces) = traces else {
        bail!("no real traces found: give --traces <dir> (norway-hsdpa-3g/, mahimahi-lte/, 5g-mobility/)");
    };
    let model = load(&a.model)?;
    let (device, server) = profiles(
        &a.model,
        &model,
        a.device_profile.as_deref(),
        a.server_profile.as_deref(),
    )?;
    let cfg = StudyConfig {
        rtt_ms: a.rtt_ms,
        queue_ms: a.queue_ms.unwrap_or_else(|| vec![0.0, 500.0, 2000.0]),
        share: a.share,
        requests: a.requests.unwrap_or(400),
    };
    let out = a.out.unwrap_or_else(|| PathBuf::from("docs/study"));
    let study = run(&model, &device, &server, &traces, &cfg, &out)?;
    if a.json {
        println!("{}", serde_json::to_string(&study)?);
    } else {
        print!("{}", study.markdown);
        println!("wrote {}", out.display());
    }
    Ok(())
}

fn study_pairs(a: StudyArgs, traces: Option<&Path>) -> Result<()> {
    let pairs: Vec<Pair> = default_pairs()
        .iter()
        .map(|s| {
            Pair::load(&a.models, s)
                .with_context(|| format!("loading pair '{}' from {}", s.name, a.models.display()))
        })
        .collect::<Result<_>>()?;
    let defaults = PairsConfig::default();
    let cfg = PairsConfig {
        rtt_ms: a.rtt_ms,
        queue_ms: a.queue_ms.unwrap_or_else(|| defaults.queue_ms.clone()),
        max_batch: a.max_batch,
        exit_rate: a.exit_rate,
        requests: a.requests.unwrap_or(defaults.requests),
        trace_rate: a.trace_rate,
        ..defaults
    };
    if traces.is_none() && cfg.requests > 0 {
        eprintln!("note: no real traces found (give --traces <dir>): sweeps only, no replays");
    }
    let out = a.out.unwrap_or_else(|| PathBuf::from("docs/study/pairs"));
    let study = run_pairs(&pairs, traces, &cfg, &out)?;
    if a.json {
        println!("{}", serde_json::to_string(&study)?);
    } else {
        print!("{}", study.markdown);
        println!("wrote {}", out.display());
    }
    Ok(())
}
