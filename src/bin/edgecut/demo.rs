//! `edgecut demo`: the pretrained EfficientNet-Lite0 on the shipped photos (or, with `--mnist`,
//! the shipped MNIST early-exit model), a tail server in-process on loopback, the device
//! client's uplink shaped to a real 3G trace, and every policy side by side
//! ([`edgecut::split::demo`]).

use crate::{backend, load, BackendChoice};
use anyhow::{Context, Result};
use edgecut::split::demo::{
    find_up, photo_table, pick_trace, published_whole, run, run_photos, spread_by_macs, DemoConfig,
    PhotoDemoConfig,
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
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&images)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    photos.sort();
    if photos.is_empty() {
        anyhow::bail!("no photos (.jpg, .png) in {}", images.display());
    }
    let model = load(&dir)?;
    let device = match find_up(&cwd, "shared/data/profiles/published.csv") {
        Some(csv) => {
            let text = std::fs::read_to_string(&csv)?;
            published_whole(&text, DEVICE_MODEL, DEVICE_HARDWARE, DEVICE_KIND).map(|d| {
                let what = format!(
                    "{} ({} {} ms, {})",
                    d.hardware, DEVICE_MODEL, d.whole_ms, d.source
                );
                (spread_by_macs(&model, d.whole_ms * 1e-3), what)
            })
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
