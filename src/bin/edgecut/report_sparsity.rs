//! `edgecut report-sparsity`: the sparse-vs-dense results table (accuracy, parameters, nonzero
//! weights, MACs, bytes on disk, measured GPU inference time with the kernels used), the early-
//! exit table and plot of `mnist-lenet-ee`, and training throughput; writes `docs/sparsity-results.md`
//! and `docs/sparsity-exits.svg`.

use crate::{backend, BackendChoice};
use anyhow::{Context, Result};
use edgecut::data::{load_mnist, Split};
use edgecut::engine::{Answer, Backend, Plan};
use edgecut::model::{Model, Op};
use edgecut::train::{train, TrainOptions, TrainSpec};
use plotters::prelude::*;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Dense/sparse pairs, side by side.
const PAIRS: [(&str, &str); 2] = [
    ("mnist-mlp-dense-small", "mnist-mlp-sparse"),
    ("mnist-mlp-dense", "mnist-mlp-sparse-4x"),
];
const LENET: &str = "mnist-lenet-ee";
const THRESHOLDS: [f32; 8] = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99];

/// Median wall seconds of one `plan.run` and median device seconds (GPU timestamps, when the
/// adapter has them) for each plan, runs interleaved (plan 0, plan 1, plan 0, …) after
/// warm-up, so that drift on a shared machine hits every plan alike.
fn time_plans(
    plans: &[Plan],
    x: &edgecut::tensor::Tensor,
    reps: usize,
) -> Result<Vec<(f64, Option<f64>)>> {
    for p in plans {
        for _ in 0..3 {
            p.run(x)?;
        }
    }
    let mut wall = vec![Vec::with_capacity(reps); plans.len()];
    let mut device = vec![Vec::with_capacity(reps); plans.len()];
    for _ in 0..reps {
        for (i, p) in plans.iter().enumerate() {
            let s = Instant::now();
            let out = p.run(x)?;
            wall[i].push(s.elapsed().as_secs_f64());
            device[i].extend(out.device_seconds);
        }
    }
    let median = |v: Vec<f64>| Some(edgecut::stats::median(&v)).filter(|m| !m.is_nan());
    Ok(wall
        .into_iter()
        .zip(device)
        .map(|(w, d)| (edgecut::stats::median(&w), median(d)))
        .collect())
}

/// The layer and layout kernels a plan dispatches (exit statistics and pools left out).
fn kernels_used(plan: &Plan) -> String {
    let names: Vec<String> = plan
        .kernel_labels()
        .iter()
        .filter_map(|l| l.rsplit('.').next().map(str::to_string))
        .filter(|k| {
            ["dense", "fanin", "conv", "to_feature_major"]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .collect();
    let mut unique: Vec<String> = Vec::new();
    for n in names {
        if !unique.contains(&n) {
            unique.push(n);
        }
    }
    unique.join(", ")
}

/// The same function with every fan-in layer stored and run dense: the dense twin of a sparse
/// model, for timing (None when the model has no fan-in layer).
fn dense_twin(model: &Model) -> Option<Model> {
    let mut twin = model.clone();
    let mut changed = false;
    let steps = twin
        .blocks
        .iter_mut()
        .flat_map(|b| b.steps.iter_mut())
        .chain(twin.exits.iter_mut().flat_map(|e| e.steps.iter_mut()));
    for step in steps {
        if let Op::FanIn(f) = &step.op {
            step.op = Op::Dense(f.to_dense());
            changed = true;
        }
    }
    changed.then_some(twin)
}

/// GPU time of a model (and of its dense twin, timed interleaved with it) at one batch size.
struct Timing {
    ms: f64,
    device_ms: Option<f64>,
    kernels: String,
    twin_ms: Option<f64>,
    twin_device_ms: Option<f64>,
}

/// Median `Plan::run` milliseconds at batch 1 and 256, with the kernels used at each.
fn time_model(
    model: &Arc<Model>,
    twin: Option<Arc<Model>>,
    gpu: &Backend,
    test: &edgecut::data::Dataset,
    reps: usize,
) -> Result<Vec<Timing>> {
    [1usize, 256]
        .into_iter()
        .map(|n| {
            let mut plans = vec![Plan::compile(model, 0..model.blocks.len(), gpu, n)?];
            if let Some(t) = &twin {
                plans.push(Plan::compile(t, 0..t.blocks.len(), gpu, n)?);
            }
            let x = test
                .batch(0..n, model.input_shape())
                .context("test images fit the model input")?;
            let t = time_plans(&plans, &x, reps)?;
            let ms = |s: f64| s * 1e3;
            Ok(Timing {
                ms: ms(t[0].0),
                device_ms: t[0].1.map(ms),
                kernels: kernels_used(&plans[0]),
                twin_ms: t.get(1).map(|t| ms(t.0)),
                twin_device_ms: t.get(1).and_then(|t| t.1).map(ms),
            })
        })
        .collect()
}

/// Training samples per second over 40 optimizer steps of the model's own spec.
fn train_throughput(
    dir: &Path,
    train_set: &edgecut::data::Dataset,
    test: &edgecut::data::Dataset,
    backend: &Backend,
) -> Result<f64> {
    let spec = TrainSpec::load(&dir.join("spec.json"))?;
    let mut opts = TrainOptions::new();
    opts.max_steps = Some(40);
    opts.epochs = Some(1);
    opts.eval_every_epoch = false;
    let (_, summary) = train(
        &spec,
        train_set,
        test,
        backend,
        &opts,
        "report",
        &mut |_| {},
    )?;
    Ok(summary.samples_per_sec)
}

/// Flags of `edgecut report-sparsity`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// Folder holding the shipped models.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Folder with the MNIST IDX files.
    #[arg(long, default_value = "models/data/mnist")]
    pub data: PathBuf,
    /// Where to write the Markdown table and the SVG plot.
    #[arg(long, default_value = "docs")]
    pub out: PathBuf,
    /// README whose results section (between the `sparsity-results` markers) is replaced by the
    /// tables; left alone when it has no markers or does not exist.
    #[arg(long, default_value = "README.md")]
    pub readme: PathBuf,
    /// Timed runs per measurement (the median is reported; batch-1 wall times spread widely
    /// on a shared machine, hence many).
    #[arg(long, default_value_t = 100)]
    pub reps: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

const BEGIN: &str = "<!-- sparsity-results:begin -->";
const END: &str = "<!-- sparsity-results:end -->";

/// Replaces the README section between the markers with `md` and the plot; says what it did.
fn update_readme(readme: &Path, md: &str, plot: &Path) -> Result<String> {
    let Ok(text) = std::fs::read_to_string(readme) else {
        return Ok(format!(
            "{} not found; README not updated",
            readme.display()
        ));
    };
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        return Ok(format!(
            "{} has no {BEGIN} … {END} markers; README not updated",
            readme.display()
        ));
    };
    anyhow::ensure!(b < e, "{}: {END} comes before {BEGIN}", readme.display());
    let body = format!(
        "{BEGIN}\n{md}\n![mnist-lenet-ee early exit vs threshold]({})\n",
        plot.display()
    );
    let updated = format!("{}{body}{}", &text[..b], &text[e..]);
    std::fs::write(readme, updated).with_context(|| format!("writing {}", readme.display()))?;
    Ok(format!(
        "updated the results section of {}",
        readme.display()
    ))
}

pub fn report(args: ReportArgs) -> Result<()> {
    let ReportArgs {
        models,
        data,
        out,
        readme,
        reps,
        json: as_json,
    } = args;
    let (models, data, out, reps) = (models.as_path(), data.as_path(), out.as_path(), reps.max(1));
    let test = load_mnist(data, Split::Test)?;
    let train_set = load_mnist(data, Split::Train)?;
    let gpu = backend(BackendChoice::Gpu).context("the report measures GPU inference time")?;
    let mut rows = Vec::new();
    let names: Vec<&str> = PAIRS
        .iter()
        .flat_map(|(a, b)| [*a, *b])
        .chain([LENET])
        .collect();
    for name in &names {
        let dir = models.join(name);
        let model = Arc::new(Model::load(&dir).with_context(|| format!("loading {name}"))?);
        let cpu = edgecut::train::evaluate(&model, &test, &Backend::Cpu)?.0;
        let totals = model.totals();
        let bytes = std::fs::metadata(dir.join("weights.safetensors"))?.len()
            + std::fs::metadata(dir.join("model.json"))?.len();
        let t = time_model(&model, dense_twin(&model).map(Arc::new), &gpu, &test, reps)?;
        let cpu_train = train_throughput(&dir, &train_set, &test, &Backend::Cpu)?;
        let gpu_train = train_throughput(&dir, &train_set, &test, &gpu)?;
        rows.push(json!({
            "model": name,
            "test_accuracy": cpu,
            "params": totals.params,
            "nonzero_weights": totals.nonzero_weights,
            "macs": totals.macs,
            "bytes_on_disk": bytes,
            "gpu_ms_batch1": t[0].ms,
            "gpu_ms_batch256": t[1].ms,
            "kernels_batch1": t[0].kernels,
            "kernels_batch256": t[1].kernels,
            "dense_twin_gpu_ms_batch1": t[0].twin_ms,
            "dense_twin_gpu_ms_batch256": t[1].twin_ms,
            "device_ms_batch1": t[0].device_ms,
            "device_ms_batch256": t[1].device_ms,
            "dense_twin_device_ms_batch1": t[0].twin_device_ms,
            "dense_twin_device_ms_batch256": t[1].twin_device_ms,
            "train_samples_per_sec_cpu": cpu_train,
            "train_samples_per_sec_gpu": gpu_train,
        }));
    }
    // Early exits of the LeNet model.
    let lenet = Arc::new(Model::load(models.join(LENET))?);
    let plan = Plan::compile(&lenet, 0..lenet.blocks.len(), &Backend::Cpu, 500)?;
    let mut outs = Vec::new();
    for lo in (0..test.len()).step_by(500) {
        let hi = (lo + 500).min(test.len());
        let x = test
            .batch(lo..hi, lenet.input_shape())
            .context("test images fit the model input")?;
        outs.push((lo, plan.run(&x)?));
    }
    let mut exits = Vec::new();
    for t in THRESHOLDS {
        let (mut exited, mut correct, mut exit_correct) = (0usize, 0usize, 0usize);
        for (lo, o) in &outs {
            for (i, a) in o.answers(t).into_iter().enumerate() {
                let ok = a.class() == Some(test.labels[lo + i] as u32);
                correct += ok as usize;
                if matches!(a, Answer::Exit { .. }) {
                    exited += 1;
                    exit_correct += ok as usize;
                }
            }
        }
        let n = test.len() as f64;
        exits.push(json!({
            "threshold": (t as f64 * 100.0).round() / 100.0,
            "exit_rate": exited as f64 / n,
            "accuracy": correct as f64 / n,
            "exit_accuracy": if exited > 0 { exit_correct as f64 / exited as f64 } else { f64::NAN },
        }));
    }
    let md = markdown(&rows, &exits, &gpu, reps);
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("sparsity-results.md"), &md)?;
    plot(&exits, &out.join("sparsity-exits.svg"))?;
    let readme_note = update_readme(&readme, &md, &out.join("sparsity-exits.svg"))?;
    if as_json {
        println!(
            "{}",
            json!({"adapter": gpu.adapter(), "models": rows, "lenet_exits": exits,
                   "markdown": out.join("sparsity-results.md").display().to_string(),
                   "readme": readme_note})
        );
    } else {
        print!("{md}");
        eprintln!("{readme_note}");
    }
    Ok(())
}

fn markdown(rows: &[Value], exits: &[Value], gpu: &Backend, reps: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<!-- generated by `edgecut report-sparsity`; do not edit by hand -->\n\nGPU: {} (medians of {reps} runs after warm-up; wall and device time, see below).\n",
        gpu.adapter()
    );
    let _ = writeln!(s, "| model | test accuracy | params | nonzero weights | MACs | bytes on disk | training samples/s, CPU | training samples/s, GPU |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let f = |r: &Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {:.2}% | {} | {} | {} | {} | {:.0} | {:.0} |",
            r["model"].as_str().unwrap_or(""),
            f(r, "test_accuracy") * 100.0,
            r["params"],
            r["nonzero_weights"],
            r["macs"],
            r["bytes_on_disk"],
            f(r, "train_samples_per_sec_cpu"),
            f(r, "train_samples_per_sec_gpu"),
        );
    }
    let _ = writeln!(
        s,
        "\nInference time on the GPU. The dense twin is the same model with every fan-in layer stored and run dense (same function, same shapes), timed in the same run with their runs interleaved; speedup = dense twin time / sparse time. Wall time is what a caller of `Plan::run` waits (upload, dispatches, readback); device time is the dispatches alone, from GPU timestamps around the plan's compute pass.\n"
    );
    for (what, key) in [("Wall", "gpu_ms"), ("Device", "device_ms")] {
        let twin_key = format!("dense_twin_{key}");
        let _ = writeln!(
            s,
            "| model | {what} ms, batch 1 | {what} ms, batch 256 | kernels, batch 1 | kernels, batch 256 | dense twin ms, batch 1 | dense twin ms, batch 256 | speedup, batch 1 | speedup, batch 256 |\n|---|---:|---:|---|---|---:|---:|---:|---:|"
        );
        for r in rows {
            let cell = |k: &str| match r[k].as_f64() {
                Some(t) => format!("{t:.3}"),
                None => "—".to_string(),
            };
            let speedup = |b: &str| match (
                r[format!("{twin_key}_{b}")].as_f64(),
                r[format!("{key}_{b}")].as_f64(),
            ) {
                (Some(t), Some(m)) => format!("{:.2}x", t / m),
                _ => "—".to_string(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r["model"].as_str().unwrap_or(""),
                cell(&format!("{key}_batch1")),
                cell(&format!("{key}_batch256")),
                r["kernels_batch1"].as_str().unwrap_or(""),
                r["kernels_batch256"].as_str().unwrap_or(""),
                cell(&format!("{twin_key}_batch1")),
                cell(&format!("{twin_key}_batch256")),
                speedup("batch1"),
                speedup("batch256"),
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "`{LENET}` early exit (exit head after block `conv1`; a sample exits when its softmax confidence is above the threshold):\n\n| threshold | exit rate | overall accuracy | accuracy of exited samples |\n|---:|---:|---:|---:|"
    );
    for e in exits {
        let _ = writeln!(
            s,
            "| {:.2} | {:.1}% | {:.2}% | {:.2}% |",
            e["threshold"].as_f64().unwrap_or(0.0),
            e["exit_rate"].as_f64().unwrap_or(0.0) * 100.0,
            e["accuracy"].as_f64().unwrap_or(0.0) * 100.0,
            e["exit_accuracy"].as_f64().unwrap_or(f64::NAN) * 100.0,
        );
    }
    s
}

fn plot(exits: &[Value], path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (640, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{LENET}: early exit vs threshold"),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d(0.5f32..1.0f32, 0.0f32..1.0f32)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("confidence threshold")
        .y_desc("fraction")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let series = |key: &str| -> Vec<(f32, f32)> {
        exits
            .iter()
            .map(|e| {
                (
                    e["threshold"].as_f64().unwrap_or(0.0) as f32,
                    e[key].as_f64().unwrap_or(0.0) as f32,
                )
            })
            .collect()
    };
    chart
        .draw_series(LineSeries::new(series("exit_rate"), &BLUE))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .label("exit rate")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(series("accuracy"), &RED))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .label("overall accuracy")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_section_between_markers_is_replaced_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("edgecut-readme-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let readme = dir.join("README.md");
        std::fs::write(
            &readme,
            format!("# T\nbefore\n{BEGIN}\nold table\n{END}\nafter\n"),
        )
        .unwrap();
        let note = update_readme(&readme, "| new |", Path::new("docs/x.svg")).unwrap();
        assert!(note.starts_with("updated"), "{note}");
        let text = std::fs::read_to_string(&readme).unwrap();
        assert_eq!(
            text,
            format!("# T\nbefore\n{BEGIN}\n| new |\n![mnist-lenet-ee early exit vs threshold](docs/x.svg)\n{END}\nafter\n")
        );
        std::fs::write(&readme, "no markers\n").unwrap();
        let note = update_readme(&readme, "| new |", Path::new("x.svg")).unwrap();
        assert!(note.contains("no"), "{note}");
        assert_eq!(std::fs::read_to_string(&readme).unwrap(), "no markers\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
