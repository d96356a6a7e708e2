//! The sparse-vs-dense report (`edgecut report-sparsity`): for the shipped MNIST models, accuracy,
//! parameters, nonzero weights, MACs, bytes on disk, GPU inference time (wall and device clocks of
//! the one block profiler, against each sparse model's dense twin) with the kernels used, training
//! throughput, and the early-exit table and plot of `mnist-lenet-ee`. Rows are typed; their field
//! names are the command's JSON keys.

use super::plot::{line_chart, Series};
use super::ReportError;
use crate::data::Dataset;
use crate::engine::{evaluate, Answer, Backend, Evaluation, Plan};
use crate::model::{Model, Op};
use crate::sched::profile::time_plans;
use crate::train::{train, TrainOptions, TrainSpec};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

/// Dense/sparse pairs, side by side.
pub const PAIRS: [(&str, &str); 2] = [
    ("mnist-mlp-dense-small", "mnist-mlp-sparse"),
    ("mnist-mlp-dense", "mnist-mlp-sparse-4x"),
];
/// The early-exit model.
pub const LENET: &str = "mnist-lenet-ee";
/// Exit thresholds of the early-exit table.
pub const THRESHOLDS: [f32; 8] = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99];
/// Untimed runs of each plan before timing.
const WARMUP: usize = 3;

/// One model's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRow {
    /// Model name (its folder under the models directory).
    pub model: String,
    /// Final-classifier accuracy on the test split (CPU backend).
    pub test_accuracy: f64,
    /// Trainable parameters.
    pub params: usize,
    /// Structurally present weights.
    pub nonzero_weights: usize,
    /// Multiply-accumulates.
    pub macs: usize,
    /// `weights.safetensors` plus `model.json`.
    pub bytes_on_disk: u64,
    /// Median wall milliseconds of `Plan::run` on the GPU, batch 1.
    pub gpu_ms_batch1: f64,
    /// The same at batch 256.
    pub gpu_ms_batch256: f64,
    /// Layer kernels dispatched at batch 1.
    pub kernels_batch1: String,
    /// Layer kernels dispatched at batch 256.
    pub kernels_batch256: String,
    /// Wall milliseconds of the dense twin (fan-in layers run dense), batch 1.
    pub dense_twin_gpu_ms_batch1: Option<f64>,
    /// The same at batch 256.
    pub dense_twin_gpu_ms_batch256: Option<f64>,
    /// Median device milliseconds (GPU timestamps), batch 1, when the adapter has them.
    pub device_ms_batch1: Option<f64>,
    /// The same at batch 256.
    pub device_ms_batch256: Option<f64>,
    /// Device milliseconds of the dense twin, batch 1.
    pub dense_twin_device_ms_batch1: Option<f64>,
    /// The same at batch 256.
    pub dense_twin_device_ms_batch256: Option<f64>,
    /// Training samples per second on the CPU (40 steps of the model's own spec).
    pub train_samples_per_sec_cpu: f64,
    /// The same on the GPU.
    pub train_samples_per_sec_gpu: f64,
}

/// `mnist-lenet-ee` at one exit threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExitRow {
    /// Confidence threshold.
    pub threshold: f64,
    /// Fraction answered by the exit head.
    pub exit_rate: f64,
    /// Fraction answered correctly overall.
    pub accuracy: f64,
    /// Fraction of exited samples answered correctly (`NaN`, JSON `null`, when none exit).
    pub exit_accuracy: f64,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SparsityReport {
    /// The GPU adapter timed.
    pub adapter: String,
    /// Timed runs per measurement (medians reported).
    pub reps: usize,
    /// One row per model, pairs first, then the early-exit model.
    pub models: Vec<ModelRow>,
    /// The early-exit table.
    pub lenet_exits: Vec<ExitRow>,
}

/// The layer and layout kernels a plan dispatches (exit statistics and pools left out).
fn kernels_used(plan: &Plan) -> String {
    let mut unique: Vec<String> = Vec::new();
    for label in plan.kernel_labels() {
        let Some(k) = label.rsplit('.').next() else {
            continue;
        };
        let layer = ["dense", "fanin", "conv", "to_feature_major"]
            .iter()
            .any(|p| k.starts_with(p));
        if layer && !unique.iter().any(|u| u == k) {
            unique.push(k.to_string());
        }
    }
    unique.join(", ")
}

/// The same function with every fan-in layer stored and run dense: the dense twin of a sparse
/// model, for timing (None when the model has no fan-in layer).
pub fn dense_twin(model: &Model) -> Option<Model> {
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

/// GPU times of a model and its dense twin at one batch size, in milliseconds.
struct Timed {
    wall: f64,
    device: Option<f64>,
    kernels: String,
    twin_wall: Option<f64>,
    twin_device: Option<f64>,
}

/// Times `model` (and its dense twin, interleaved with it) at batch 1 and 256 with the profiler.
fn time_model(
    model: &Arc<Model>,
    gpu: &Backend,
    test: &Dataset,
    reps: usize,
) -> Result<[Timed; 2], ReportError> {
    let twin = dense_twin(model).map(Arc::new);
    let at = |n: usize| -> Result<Timed, ReportError> {
        let mut plans = vec![Plan::compile(model, 0..model.blocks.len(), gpu, n)?];
        if let Some(t) = &twin {
            plans.push(Plan::compile(t, 0..t.blocks.len(), gpu, n)?);
        }
        let x = test
            .batch(0..n, model.input_shape())
            .ok_or_else(|| ReportError::Invalid("test images do not fit the model input".into()))?;
        let t = time_plans(&plans.iter().collect::<Vec<_>>(), &x, WARMUP, reps)?;
        let ms = |s: f64| s * 1e3;
        Ok(Timed {
            wall: ms(t[0].wall_seconds),
            device: t[0].device_seconds.map(ms),
            kernels: kernels_used(&plans[0]),
            twin_wall: t.get(1).map(|t| ms(t.wall_seconds)),
            twin_device: t.get(1).and_then(|t| t.device_seconds).map(ms),
        })
    };
    Ok([at(1)?, at(256)?])
}

/// Training samples per second over 40 optimizer steps of the model's own spec.
fn train_throughput(
    dir: &Path,
    train_set: &Dataset,
    test: &Dataset,
    backend: &Backend,
) -> Result<f64, ReportError> {
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

/// The early-exit table of an evaluation.
pub fn exit_rows(result: &Evaluation, thresholds: &[f32]) -> Vec<ExitRow> {
    thresholds
        .iter()
        .map(|&t| {
            let (mut exited, mut exit_correct) = (0usize, 0usize);
            for (s, a) in result.samples.iter().zip(result.answers(t)) {
                if matches!(a, Answer::Exit { .. }) {
                    exited += 1;
                    exit_correct += usize::from(a.class() == Some(s.label));
                }
            }
            ExitRow {
                threshold: (f64::from(t) * 100.0).round() / 100.0,
                exit_rate: result.exit_rate(t),
                accuracy: result.accuracy(t),
                exit_accuracy: exit_correct as f64 / exited as f64,
            }
        })
        .collect()
}

fn file_len(path: &Path) -> Result<u64, ReportError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| ReportError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// Measures the report for the models under `models` on the `gpu` backend (accuracies and the
/// exit table on the CPU backend); `reps` timed runs per measurement.
pub fn measure(
    models: &Path,
    train_set: &Dataset,
    test: &Dataset,
    gpu: &Backend,
    reps: usize,
) -> Result<SparsityReport, ReportError> {
    let reps = reps.max(1);
    let names = PAIRS.iter().flat_map(|(a, b)| [*a, *b]).chain([LENET]);
    let mut rows = Vec::new();
    let mut lenet_exits = Vec::new();
    for name in names {
        let dir = models.join(name);
        let model = Arc::new(Model::load(&dir)?);
        let plan = Plan::compile(&model, 0..model.blocks.len(), &Backend::Cpu, 500)?;
        let result = evaluate(&plan, test, test.len())?;
        if name == LENET {
            lenet_exits = exit_rows(&result, &THRESHOLDS);
        }
        let totals = model.totals();
        let [b1, b256] = time_model(&model, gpu, test, reps)?;
        rows.push(ModelRow {
            model: name.to_string(),
            test_accuracy: result.accuracy(1.0),
            params: totals.params,
            nonzero_weights: totals.nonzero_weights,
            macs: totals.macs,
            bytes_on_disk: file_len(&dir.join("weights.safetensors"))?
                + file_len(&dir.join("model.json"))?,
            gpu_ms_batch1: b1.wall,
            gpu_ms_batch256: b256.wall,
            kernels_batch1: b1.kernels,
            kernels_batch256: b256.kernels,
            dense_twin_gpu_ms_batch1: b1.twin_wall,
            dense_twin_gpu_ms_batch256: b256.twin_wall,
            device_ms_batch1: b1.device,
            device_ms_batch256: b256.device,
            dense_twin_device_ms_batch1: b1.twin_device,
            dense_twin_device_ms_batch256: b256.twin_device,
            train_samples_per_sec_cpu: train_throughput(&dir, train_set, test, &Backend::Cpu)?,
            train_samples_per_sec_gpu: train_throughput(&dir, train_set, test, gpu)?,
        });
    }
    Ok(SparsityReport {
        adapter: gpu.adapter(),
        reps,
        models: rows,
        lenet_exits,
    })
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_string(), |t| format!("{t:.3}"))
}

fn speedup(twin: Option<f64>, own: Option<f64>) -> String {
    match (twin, own) {
        (Some(t), Some(m)) => format!("{:.2}x", t / m),
        _ => "—".to_string(),
    }
}

impl SparsityReport {
    /// The report as Markdown: the model table, the wall and device time tables and the exit table.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "<!-- generated by `edgecut report-sparsity`; do not edit by hand -->\n\nGPU: {} (medians of {} runs after warm-up; wall and device time, see below).\n",
            self.adapter, self.reps
        );
        let _ = writeln!(s, "| model | test accuracy | params | nonzero weights | MACs | bytes on disk | training samples/s, CPU | training samples/s, GPU |");
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for r in &self.models {
            let _ = writeln!(
                s,
                "| {} | {:.2}% | {} | {} | {} | {} | {:.0} | {:.0} |",
                r.model,
                r.test_accuracy * 100.0,
                r.params,
                r.nonzero_weights,
                r.macs,
                r.bytes_on_disk,
                r.train_samples_per_sec_cpu,
                r.train_samples_per_sec_gpu,
            );
        }
        let _ = writeln!(
            s,
            "\nInference time on the GPU. The dense twin is the same model with every fan-in layer stored and run dense (same function, same shapes), timed in the same run with their runs interleaved; speedup = dense twin time / sparse time. Wall time is what a caller of `Plan::run` waits (upload, dispatches, readback); device time is the dispatches alone, from GPU timestamps around the plan's compute pass.\n"
        );
        for what in ["Wall", "Device"] {
            let _ = writeln!(
                s,
                "| model | {what} ms, batch 1 | {what} ms, batch 256 | kernels, batch 1 | kernels, batch 256 | dense twin ms, batch 1 | dense twin ms, batch 256 | speedup, batch 1 | speedup, batch 256 |\n|---|---:|---:|---|---|---:|---:|---:|---:|"
            );
            for r in &self.models {
                let [own1, own256, twin1, twin256] = if what == "Wall" {
                    [
                        Some(r.gpu_ms_batch1),
                        Some(r.gpu_ms_batch256),
                        r.dense_twin_gpu_ms_batch1,
                        r.dense_twin_gpu_ms_batch256,
                    ]
                } else {
                    [
                        r.device_ms_batch1,
                        r.device_ms_batch256,
                        r.dense_twin_device_ms_batch1,
                        r.dense_twin_device_ms_batch256,
                    ]
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.model,
                    cell(own1),
                    cell(own256),
                    r.kernels_batch1,
                    r.kernels_batch256,
                    cell(twin1),
                    cell(twin256),
                    speedup(twin1, own1),
                    speedup(twin256, own256),
                );
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(
            s,
            "`{LENET}` early exit (exit head after block `conv1`; a sample exits when its softmax confidence is above the threshold):\n\n| threshold | exit rate | overall accuracy | accuracy of exited samples |\n|---:|---:|---:|---:|"
        );
        for e in &self.lenet_exits {
            let _ = writeln!(
                s,
                "| {:.2} | {:.1}% | {:.2}% | {:.2}% |",
                e.threshold,
                e.exit_rate * 100.0,
                e.accuracy * 100.0,
                e.exit_accuracy * 100.0,
            );
        }
        s
    }

    /// Writes the early-exit plot (exit rate and overall accuracy against the threshold) as SVG.
    pub fn plot_exits(&self, path: &Path) -> Result<(), ReportError> {
        let series = |name: &str, y: fn(&ExitRow) -> f64| Series {
            name: name.to_string(),
            points: self
                .lenet_exits
                .iter()
                .map(|e| (e.threshold, y(e)))
                .collect(),
        };
        line_chart(
            path,
            &format!("{LENET}: early exit vs threshold"),
            "confidence threshold",
            "fraction",
            &[
                series("exit rate", |e| e.exit_rate),
                series("overall accuracy", |e| e.accuracy),
            ],
            false,
        )?;
        Ok(())
    }
}

const BEGIN: &str = "<!-- sparsity-results:begin -->";
const END: &str = "<!-- sparsity-results:end -->";

/// Replaces the README section between the `sparsity-results` markers with `md` and the plot;
/// says what it did (a README without markers, or none at all, is left alone).
pub fn update_readme(readme: &Path, md: &str, plot: &Path) -> Result<String, ReportError> {
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
    let write_error = |reason: String| ReportError::Write {
        path: readme.display().to_string(),
        reason,
    };
    if b > e {
        return Err(write_error(format!("{END} comes before {BEGIN}")));
    }
    let body = format!(
        "{BEGIN}\n{md}\n![mnist-lenet-ee early exit vs threshold]({})\n",
        plot.display()
    );
    let updated = format!("{}{body}{}", &text[..b], &text[e..]);
    std::fs::write(readme, updated).map_err(|e| write_error(e.to_string()))?;
    Ok(format!(
        "updated the results section of {}",
        readme.display()
    ))
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

#[cfg(test)]
mod typed_tests {
    use super::*;
    use crate::cpu::ExitStat;
    use crate::engine::SampleResult;

    fn sample(label: u32, exit: (f32, u32), last: u32) -> SampleResult {
        let stat = |confidence, argmax| ExitStat {
            confidence,
            entropy: 0.0,
            argmax,
        };
        SampleResult {
            label,
            logits: vec![0.0; 10],
            final_stat: stat(0.9, last),
            exits: vec![stat(exit.0, exit.1)],
        }
    }

    #[test]
    fn exit_rows_count_exits_and_their_accuracy_per_threshold() {
        let result = Evaluation {
            exit_order: vec![0],
            samples: vec![
                sample(1, (0.95, 1), 1), // exits at 0.9, right
                sample(2, (0.92, 3), 2), // exits wrongly up to 0.9; right at the end
                sample(4, (0.40, 4), 5), // never exits, wrong at the end
                sample(6, (0.60, 6), 6), // exits at 0.5 only
            ],
        };
        let rows = exit_rows(&result, &[0.5, 0.9, 0.99]);
        assert_eq!(rows[0].threshold, 0.5);
        assert_eq!((rows[0].exit_rate, rows[0].accuracy), (0.75, 0.5));
        assert!((rows[0].exit_accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            (rows[1].exit_rate, rows[1].accuracy, rows[1].exit_accuracy),
            (0.5, 0.5, 0.5)
        );
        assert_eq!(rows[2].exit_rate, 0.0);
        assert!(rows[2].exit_accuracy.is_nan());
        let json = serde_json::to_value(&rows[2]).expect("serialises");
        assert!(json["exit_accuracy"].is_null(), "NaN is written as null");
    }

    #[test]
    fn markdown_has_a_row_per_model_in_every_table_and_the_json_keys_stay() {
        let row = ModelRow {
            model: "m".into(),
            test_accuracy: 0.98,
            params: 10,
            nonzero_weights: 5,
            macs: 7,
            bytes_on_disk: 100,
            gpu_ms_batch1: 0.5,
            gpu_ms_batch256: 2.0,
            kernels_batch1: "fanin".into(),
            kernels_batch256: "fanin".into(),
            dense_twin_gpu_ms_batch1: Some(1.0),
            dense_twin_gpu_ms_batch256: Some(8.0),
            device_ms_batch1: None,
            device_ms_batch256: None,
            dense_twin_device_ms_batch1: None,
            dense_twin_device_ms_batch256: None,
            train_samples_per_sec_cpu: 1000.0,
            train_samples_per_sec_gpu: 2000.0,
        };
        let report = SparsityReport {
            adapter: "test adapter".into(),
            reps: 3,
            models: vec![row],
            lenet_exits: Vec::new(),
        };
        let md = report.markdown();
        assert!(md.contains("GPU: test adapter (medians of 3 runs"), "{md}");
        assert!(
            md.contains("| m | 98.00% | 10 | 5 | 7 | 100 | 1000 | 2000 |"),
            "{md}"
        );
        assert!(
            md.contains("| m | 0.500 | 2.000 | fanin | fanin | 1.000 | 8.000 | 2.00x | 4.00x |")
        );
        assert!(
            md.contains("| m | — | — | fanin | fanin | — | — | — | — |"),
            "{md}"
        );
        let json = serde_json::to_value(&report).expect("serialises");
        for key in [
            "gpu_ms_batch1",
            "dense_twin_device_ms_batch256",
            "kernels_batch256",
        ] {
            assert!(json["models"][0].get(key).is_some(), "missing {key}");
        }
    }
}
