//! `edgecut train`: trains a spec on MNIST and writes a model directory.

use crate::{backend, BackendChoice};
use anyhow::{bail, Context, Result};
use edgecut::data::{load_mnist, Split};
use edgecut::train::{train as run_training, Progress, TrainOptions, TrainSpec};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Training spec (architecture, sparsity, exits, optimizer, schedule).
    spec: PathBuf,
    /// Output model directory (written to a temporary folder, then renamed).
    #[arg(long)]
    out: PathBuf,
    /// Folder with the MNIST IDX files (plain or .gz).
    #[arg(long, default_value = "models/data/mnist")]
    data: PathBuf,
    /// Where to train.
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu)]
    backend: BackendChoice,
    /// Overrides the spec's epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Overrides the spec's seed (weights, patterns, data order).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this many optimizer steps (short runs).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Print one JSON object (the final summary).
    #[arg(long)]
    json: bool,
}

pub fn train(args: TrainArgs) -> Result<()> {
    let spec = TrainSpec::load(&args.spec)?;
    // Validate the architecture before reading data or touching a GPU.
    spec.build(args.seed.unwrap_or(spec.seed))
        .with_context(|| format!("building the model of {}", args.spec.display()))?;
    if args.out.join("model.json").exists() || args.out.join("weights.safetensors").exists() {
        // Overwriting a shipped model is allowed, but say so.
        eprintln!("note: replacing the model in {}", args.out.display());
    } else if args.out.exists() && !args.out.is_dir() {
        bail!("--out {} exists and is not a directory", args.out.display());
    }
    let train_set = load_mnist(&args.data, Split::Train)?;
    let test_set = load_mnist(&args.data, Split::Test)?;
    let backend = backend(args.backend)?;
    let mut opts = TrainOptions::new();
    (opts.epochs, opts.seed, opts.max_steps) = (args.epochs, args.seed, args.max_steps);
    let command = format!(
        "edgecut {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let bar = ProgressBar::new(0);
    if args.json {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    let mut on_progress = |p: Progress| match p {
        Progress::Step {
            epoch,
            step,
            steps,
            loss,
        } => {
            if step == 1 {
                bar.reset();
                bar.set_length(steps as u64);
                bar.set_prefix(epoch.to_string());
            }
            bar.set_position(step as u64);
            if step % 10 == 0 || step == steps {
                bar.set_message(format!("loss {loss:.4}"));
            }
        }
        Progress::Epoch(r) => {
            let test = r
                .test_accuracy
                .map(|a| format!(", test accuracy {:.2}%", a * 100.0))
                .unwrap_or_default();
            let line = format!(
                "epoch {}: loss {:.4}, train accuracy {:.2}%{test}, {:.0} samples/s",
                r.epoch,
                r.loss,
                r.train_accuracy * 100.0,
                r.samples_per_sec
            );
            if !args.json && bar.is_hidden() {
                // No terminal (a log file): the bar is not drawn, so print the line itself.
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        }
        _ => {}
    };
    let (model, summary) = run_training(
        &spec,
        &train_set,
        &test_set,
        &backend,
        &opts,
        &command,
        &mut on_progress,
    )?;
    bar.finish_and_clear();
    model
        .save(&args.out)
        .with_context(|| format!("writing the model to {}", args.out.display()))?;
    if args.json {
        let mut v = serde_json::to_value(&summary)?;
        v["out"] = serde_json::json!(args.out.display().to_string());
        println!("{v}");
    } else {
        let exits: Vec<String> = (summary.exit_accuracy.iter())
            .map(|(k, v)| format!("{k} {:.2}%", v * 100.0))
            .collect();
        let exits = Some(exits.join(", ")).filter(|e| !e.is_empty());
        println!(
            "{}: test accuracy {:.2}% ({} test samples){}; {} epochs, {} steps, {:.0} samples/s on {} ({}); wrote {}",
            summary.model,
            summary.test_accuracy * 100.0,
            summary.test_samples,
            exits.map(|e| format!(", exits: {e}")).unwrap_or_default(),
            summary.epochs,
            summary.steps,
            summary.samples_per_sec,
            summary.backend,
            summary.adapter,
            args.out.display()
        );
    }
    Ok(())
}
