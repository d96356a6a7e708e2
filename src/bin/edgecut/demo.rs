//! `edgecut demo`: the shipped MNIST early-exit model, a tail server in-process on loopback, the
//! device client's uplink shaped to a real 3G trace, and every policy side by side
//! ([`edgecut::split::demo`]).

use crate::{backend, load, BackendChoice};
use anyhow::{Context, Result};
use edgecut::split::demo::{find_up, pick_trace, run, DemoConfig};
use std::path::PathBuf;

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
