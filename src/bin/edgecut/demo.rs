//! `edgecut demo`: the pretrained EfficientNet-Lite0 on the shipped photos (or, with `--mnist`,
//! the shipped MNIST early-exit model), a tail server in-process on loopback, the device
//! client's uplink shaped to a real 3G trace, and every policy side by side
//! ([`edgecut::split::demo`]).

use crate::{backend, load, BackendChoice};
use anyhow::{Context, Result};
use edgecut::sched::profile::published;
use edgecut::split::demo::{
    find_up, photo_table, pick_trace, run, run_photos, DemoConfig, PhotoDemoConfig,
};
use std::path::PathBuf;
use std::time::Duration;

/// The published device the photo demo emulates: a Pixel 4's GPU running EfficientNet-Lite0.
const DEVICE_MODEL: &str = "efficientnet-lite0";
const DEVICE_HARDWARE: &str = "Pixel 4";
const DEVICE_KIND: &str = "device-gpu";

pub fn photos(
    repeat: usize,
    policies: Vec<String>,
    choice: BackendChoice,
    model: Option<PathBuf>,
    as_json: bool,
) -> Result<()> {
    let cwd = std::env::current_dir()?;
    let dir = match model {
        Some(m) => m,
        None => find_up(&cwd, "models/efficientnet-lite0")
            .context("models/efficientnet-lite0 not found above the current directory")?,
    };
    let say = |s: String| {
        if as_json {
            eprintln!("{s}")
        } else {
            println!("{s}")
        }
    };
    let images = find_up(&cwd, "models/data/images")
        .context("models/data/images not found above the current directory")?;
    let photos = edgecut::preprocess::photos_in(&images)?;
    let model = load(&dir)?;
    let device = match find_up(&cwd, "shared/data/profiles/published.csv") {
        Some(csv) => {
            let rows = published::read_csv(&csv)?;
            let sel = published::Selection {
                hardware: DEVICE_HARDWARE.into(),
                kind: Some(DEVICE_KIND.into()),
                precision: Some("fp32".into()),
            };
            let picked = published::select(&rows, DEVICE_MODEL, &sel)?;
            let names: Vec<String> = model.blocks.iter().map(|b| b.name.clone()).collect();
            let macs: Vec<usize> = model.blocks.iter().map(|b| b.stats.macs).collect();
            let (seconds, _) = published::block_seconds(DEVICE_MODEL, &names, &macs, &picked)?;
            let r = picked
                .iter()
                .find(|r| r.stage == published::WHOLE)
                .or(picked.first())
                .context("published.csv has no figure for the emulated device")?;
            let what = format!(
                "{} {} ({} {} ms, {})",
                r.hardware, r.kind, DEVICE_MODEL, r.ms, r.source
            );
            Some((seconds, what))
        }
        None => None,
    };
    let backend = match choice {
        BackendChoice::Auto => {
            say("backend: the CPU backend for device and server (lavapipe is too slow for this model in a demo; --backend gpu to use it)".into());
            backend(BackendChoice::Cpu)?
        }
        c => backend(c)?,
    };
    let cfg = PhotoDemoConfig {
        photos: photos.clone(),
        repeat,
        policies,
        device,
        trace: pick_trace(&cwd),
        deadline: Duration::from_secs(60),
    };
    let (runs, json) = run_photos(&model, &dir, &backend, &cfg, say)?;
    if as_json {
        println!("{json}");
        return Ok(());
    }
    print!("\n{}", photo_table(&runs, &photos));
    println!("\nstatic:<block> runs the blocks up to and including <block> on the device and the rest on the server; top-1 of each photo's first request.");
    Ok(())
}

pub fn demo(
    limit: usize,
    threshold: f32,
    choice: BackendChoice,
    model: Option<PathBuf>,
    device_slowdown: f64,
    as_json: bool,
) -> Result<()> {
    let cwd = std::env::current_dir()?;
    let dir = match model {
        Some(m) => m,
        None => ["models/mnist-lenet-ee", "models/mnist-fixture"]
            .iter()
            .find_map(|m| find_up(&cwd, m))
            .context("neither models/mnist-lenet-ee nor models/mnist-fixture found above the current directory")?,
    };
    let cfg = DemoConfig {
        limit,
        threshold,
        device_slowdown,
        data: find_up(&cwd, "models/data/mnist")
            .context("models/data/mnist not found above the current directory")?,
        trace: pick_trace(&cwd),
    };
    let say = |s: String| {
        if as_json {
            eprintln!("{s}")
        } else {
            println!("{s}")
        }
    };
    let report = run(&load(&dir)?, &dir, &backend(choice)?, &cfg, say)?;
    if as_json {
        println!("{}", report.json);
        return Ok(());
    }
    print!("\n{}", report.table());
    println!("\nstatic:<block> runs the blocks up to and including <block> on the device and the rest on the server; exits answer on the device when confident.");
    Ok(())
}
