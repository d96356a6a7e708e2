//! Cross-backend benchmark reports (`edgecut bench`): for every wgpu adapter plus the CPU
//! backend, two measured ceilings (memory bandwidth, arithmetic rate), the kernel suite with
//! GFLOP/s, GB/s and % of the matching ceiling, and per-block model times. Every kernel result is
//! checked against the CPU reference before it is timed; a backend that fails a check is marked
//! in the report instead of timed.

mod suite;

pub use suite::{
    conv1x1_case, conv_case, conv_geometry_case, dense_case, efficientnet_cases, fanin_case,
    kernel_suite, KernelCase,
};

use crate::engine::{run_steps_cpu, Backend, Plan};
use crate::gpu::{self, kernels, AdapterSummary, GpuContext};
use crate::model::Model;
use crate::sched::profile::{self, Clock, Timing};
use crate::sched::SchedError;
use rand::SeedableRng;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;

/// Errors of the benchmark driver.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BenchError {
    /// `--backends` named something that does not exist.
    #[error("unknown backend '{name}'; available: {available}")]
    UnknownBackend {
        /// The name asked for.
        name: String,
        /// What exists here.
        available: String,
    },
}

/// What to run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BenchOptions {
    /// Fewer sizes, batch 1 models and fewer repetitions (under two minutes on 2 cores).
    pub quick: bool,
    /// Backend selectors (`all`, `cpu`, a kind like `vulkan`, or an adapter-name substring).
    pub backends: Vec<String>,
    /// Model directories whose blocks are timed.
    pub models: Vec<PathBuf>,
}

impl BenchOptions {
    /// Options with the given mode, backends and models.
    pub fn new(quick: bool, backends: Vec<String>, models: Vec<PathBuf>) -> Self {
        Self {
            quick,
            backends,
            models,
        }
    }
}

/// The machine the report was taken on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Logical cores.
    pub cores: usize,
    /// Operating system and architecture.
    pub os: String,
}

/// Measured ceilings of one backend.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ceilings {
    /// Large copy: bytes read + written per second.
    pub bandwidth_gbs: f64,
    /// Best dense kernel at a large size.
    pub gflops: f64,
}

/// One kernel measurement.
#[derive(Debug, Clone, Serialize)]
pub struct KernelResult {
    /// Kernel name (`dense`, `fanin`, `conv2d`, ...).
    pub name: String,
    /// Problem shape.
    pub shape: String,
    /// Batch.
    pub batch: usize,
    /// Fraction of dense connections (fan-in), 1 otherwise.
    pub density: f64,
    /// Median time of one dispatch.
    pub median_ms: f64,
    /// Fastest and slowest repetition.
    pub spread_ms: [f64; 2],
    /// Arithmetic rate (2 FLOP per multiply-add).
    pub gflops: f64,
    /// Compulsory memory traffic per second.
    pub gbs: f64,
    /// Which ceiling bounds this kernel (`compute` or `memory`).
    pub bound: String,
    /// Percentage of the matching ceiling.
    pub pct_of_ceiling: f64,
    /// Whether the result matched the CPU reference (unchecked kernels are not timed).
    pub checked: bool,
    /// The dispatches that ran, with their tile variant (`conv1x1_c8`, `conv_shared_k3x3`), or
    /// `reference` on the CPU backend.
    pub dispatches: String,
}

/// Per-block times of one model on one backend.
#[derive(Debug, Clone, Serialize)]
pub struct ModelResult {
    /// Model name.
    pub name: String,
    /// Batch.
    pub batch: usize,
    /// The clock of every time of this model (GPU timestamps where the adapter has them).
    pub clock: Clock,
    /// Median time of the whole model as one plan.
    pub total_ms: f64,
    /// Per block (each block its own plan and submission).
    pub blocks: Vec<BlockTime>,
    /// The blocks taking the largest share of time, largest first.
    pub dominant: Vec<String>,
}

/// Median time of one block.
#[derive(Debug, Clone, Serialize)]
pub struct BlockTime {
    /// Block name.
    pub name: String,
    /// Median milliseconds.
    pub median_ms: f64,
}

/// Everything measured on one backend.
#[derive(Debug, Clone, Serialize)]
pub struct BackendReport {
    /// Adapter name (or `cpu`).
    pub name: String,
    /// `vulkan`, `gl`, `metal`, `dx12` or `cpu`.
    pub kind: String,
    /// Driver name and version.
    pub driver: String,
    /// How kernels were timed.
    pub timing: String,
    /// `ok`, or why the backend was not (fully) measured.
    pub status: String,
    /// Measured ceilings.
    pub ceilings: Ceilings,
    /// Kernel suite.
    pub kernels: Vec<KernelResult>,
    /// Model blocks.
    pub models: Vec<ModelResult>,
    /// Models that failed to load or run here.
    pub notes: Vec<String>,
}

/// A full report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// Quick mode?
    pub quick: bool,
    /// One entry per backend.
    pub backends: Vec<BackendReport>,
}

/// A backend the benchmark can run on.
#[derive(Debug, Clone)]
pub enum Target {
    /// The plain-Rust reference.
    Cpu,
    /// A wgpu adapter.
    Adapter(AdapterSummary),
}

impl Target {
    fn label(&self) -> String {
        match self {
            Target::Cpu => "cpu".into(),
            Target::Adapter(a) => format!("{}:{}", a.backend, a.name),
        }
    }
}

/// The adapters on this machine plus the CPU backend, filtered by `selectors`.
pub fn targets(selectors: &[String]) -> Result<Vec<Target>, BenchError> {
    let mut all: Vec<Target> = gpu::list_adapters()
        .into_iter()
        .map(Target::Adapter)
        .collect();
    all.push(Target::Cpu);
    if selectors.is_empty() || selectors.iter().any(|s| s == "all") {
        return Ok(all);
    }
    let mut out = Vec::new();
    for s in selectors {
        let s_low = s.to_lowercase();
        let matched: Vec<&Target> = all
            .iter()
            .filter(|t| match t {
                Target::Cpu => s_low == "cpu",
                Target::Adapter(a) => {
                    a.backend.to_lowercase() == s_low || a.name.to_lowercase().contains(&s_low)
                }
            })
            .collect();
        if matched.is_empty() {
            return Err(BenchError::UnknownBackend {
                name: s.clone(),
                available: all.iter().map(Target::label).collect::<Vec<_>>().join(", "),
            });
        }
        out.extend(matched.into_iter().cloned());
    }
    Ok(out)
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
    }
}

/// Median and range of timings.
fn median_spread(v: Vec<f64>) -> (f64, [f64; 2]) {
    let s = crate::stats::Summary::of(&v);
    (s.p50, [s.min, s.max])
}

/// Tolerance of the pre-timing check (the kernel tests use tighter, per-kernel ones).
const CHECK_TOLERANCE: f32 = 1e-3;

fn matches(got: &[f32], want: &[f32]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(g, w)| (g - w).abs() <= CHECK_TOLERANCE * (1.0 + w.abs()))
}

/// Runs the benchmark on every selected backend; `progress` is told what runs next.
pub fn run(options: &BenchOptions, mut progress: impl FnMut(&str)) -> Result<Report, BenchError> {
    let mut backends = Vec::new();
    let reps = if options.quick { 5 } else { 11 };
    let cases = kernel_suite(options.quick);
    let models: Vec<(PathBuf, Result<Arc<Model>, String>)> = options
        .models
        .iter()
        .map(|p| {
            (
                p.clone(),
                Model::load(p).map(Arc::new).map_err(|e| e.to_string()),
            )
        })
        .collect();
    let all = gpu::list_adapters_raw();
    for target in targets(&options.backends)? {
        progress(&format!("backend {}", target.label()));
        let report = match &target {
            Target::Cpu => bench_cpu(&cases, &models, reps, options.quick, &mut progress),
            Target::Adapter(summary) => {
                let adapter = all.iter().find(|a| {
                    let s = AdapterSummary::from(&a.get_info());
                    s.name == summary.name && s.backend == summary.backend
                });
                match adapter.map(|a| GpuContext::from_adapter(a.clone())) {
                    Some(Ok(ctx)) => bench_gpu(
                        Arc::new(ctx),
                        &cases,
                        &models,
                        reps,
                        options.quick,
                        &mut progress,
                    ),
                    Some(Err(e)) => failed(summary, format!("could not open a device: {e}")),
                    None => failed(summary, "adapter disappeared".into()),
                }
            }
        };
        backends.push(report);
    }
    Ok(Report {
        machine: machine(),
        quick: options.quick,
        backends,
    })
}

fn failed(s: &AdapterSummary, status: String) -> BackendReport {
    BackendReport {
        name: s.name.clone(),
        kind: s.backend.clone(),
        driver: s.driver.clone(),
        timing: "none".into(),
        status,
        ceilings: Ceilings::default(),
        kernels: Vec::new(),
        models: Vec::new(),
        notes: Vec::new(),
    }
}

fn result(
    case: &KernelCase,
    times: Vec<f64>,
    ceilings: &Ceilings,
    dispatches: String,
) -> KernelResult {
    let (m, spread) = median_spread(times);
    let gflops = case.flops as f64 / m / 1e9;
    let gbs = case.bytes as f64 / m / 1e9;
    let pct = if case.memory_bound {
        100.0 * gbs / ceilings.bandwidth_gbs.max(f64::MIN_POSITIVE)
    } else {
        100.0 * gflops / ceilings.gflops.max(f64::MIN_POSITIVE)
    };
    KernelResult {
        name: case.name.clone(),
        shape: case.shape.clone(),
        batch: case.batch,
        density: case.density,
        median_ms: m * 1e3,
        spread_ms: [spread[0] * 1e3, spread[1] * 1e3],
        gflops,
        gbs,
        bound: if case.memory_bound {
            "memory"
        } else {
            "compute"
        }
        .into(),
        pct_of_ceiling: pct,
        checked: true,
        dispatches,
    }
}

fn unchecked(case: &KernelCase) -> KernelResult {
    KernelResult {
        name: case.name.clone(),
        shape: case.shape.clone(),
        batch: case.batch,
        density: case.density,
        median_ms: f64::NAN,
        spread_ms: [f64::NAN; 2],
        gflops: f64::NAN,
        gbs: f64::NAN,
        bound: if case.memory_bound {
            "memory"
        } else {
            "compute"
        }
        .into(),
        pct_of_ceiling: f64::NAN,
        checked: false,
        dispatches: String::new(),
    }
}

fn time_models(
    backend: &Backend,
    models: &[(PathBuf, Result<Arc<Model>, String>)],
    reps: usize,
    quick: bool,
    notes: &mut Vec<String>,
    progress: &mut impl FnMut(&str),
) -> Vec<ModelResult> {
    let mut out = Vec::new();
    let reps = reps.min(5);
    for (path, model) in models {
        let model = match model {
            Ok(m) => m,
            Err(e) => {
                notes.push(format!("{}: skipped, failed to load: {e}", path.display()));
                continue;
            }
        };
        let batches: &[usize] = if quick { &[1] } else { &[1, 64] };
        for &batch in batches {
            progress(&format!("model {} batch {batch}", model.name()));
            match time_model(backend, model, batch, reps) {
                Ok(r) => out.push(r),
                Err(e) => notes.push(format!("{} batch {batch}: {e}", model.name())),
            }
        }
    }
    out
}

/// Whole-model and per-block times from the one block profiler ([`crate::sched::profile`]).
fn time_model(
    backend: &Backend,
    model: &Arc<Model>,
    batch: usize,
    reps: usize,
) -> Result<ModelResult, SchedError> {
    let whole = Plan::compile(model, 0..model.blocks.len(), backend, batch).map_err(|source| {
        SchedError::Engine {
            block: "whole model".into(),
            source,
        }
    })?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let input = profile::random_input(&mut rng, batch, model.input_shape());
    let total =
        profile::time_plans(&[&whole], &input, 1, reps).map_err(|source| SchedError::Engine {
            block: "whole model".into(),
            source,
        })?;
    let per_block = profile::time_blocks(model, backend, &[batch], 1, reps)?;
    let clock = Clock::common(total.iter().chain(per_block.iter().flatten()));
    let ms = |t: &Timing| t.seconds_by(clock) * 1e3;
    let blocks: Vec<BlockTime> = model
        .blocks
        .iter()
        .zip(&per_block)
        .map(|(b, t)| BlockTime {
            name: b.name.clone(),
            median_ms: t.first().map_or(f64::NAN, ms),
        })
        .collect();
    let mut order: Vec<&BlockTime> = blocks.iter().collect();
    order.sort_by(|a, b| b.median_ms.total_cmp(&a.median_ms));
    let dominant = order.iter().take(3).map(|b| b.name.clone()).collect();
    Ok(ModelResult {
        name: model.name().into(),
        batch,
        clock,
        total_ms: total.first().map_or(f64::NAN, ms),
        blocks,
        dominant,
    })
}

fn bench_cpu(
    cases: &[KernelCase],
    models: &[(PathBuf, Result<Arc<Model>, String>)],
    reps: usize,
    quick: bool,
    progress: &mut impl FnMut(&str),
) -> BackendReport {
    progress("cpu ceilings");
    let n = if quick { 8 << 20 } else { 32 << 20 };
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let mut copies = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        dst.copy_from_slice(&src);
        copies.push(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    let bandwidth_gbs = (2 * n * 4) as f64 / median_spread(copies).0 / 1e9;
    let mut ceilings = Ceilings {
        bandwidth_gbs,
        gflops: 0.0,
    };
    let ceiling_case = suite::dense_ceiling_case(true);
    let mut t = Vec::new();
    for _ in 0..3 {
        let s = Instant::now();
        std::hint::black_box(run_steps_cpu(
            std::slice::from_ref(&ceiling_case.step),
            ceiling_case.input.clone(),
            ceiling_case.batch,
        ));
        t.push(s.elapsed().as_secs_f64());
    }
    ceilings.gflops = ceiling_case.flops as f64 / median_spread(t).0 / 1e9;
    let mut kernels_out = Vec::new();
    for case in cases {
        progress(&format!("cpu {} {} b{}", case.name, case.shape, case.batch));
        let mut times = Vec::new();
        for _ in 0..reps.min(5) {
            let s = Instant::now();
            std::hint::black_box(case.run_cpu());
            times.push(s.elapsed().as_secs_f64());
        }
        kernels_out.push(result(case, times, &ceilings, "reference".into()));
    }
    let mut notes = Vec::new();
    let models = time_models(&Backend::Cpu, models, reps, quick, &mut notes, progress);
    BackendReport {
        name: "cpu (fast kernels)".into(),
        kind: "cpu".into(),
        driver: format!(
            "rustc, {} threads: {}",
            std::env::consts::ARCH,
            crate::cpu::threads()
        ),
        timing: "wall-clock".into(),
        status: "ok".into(),
        ceilings,
        kernels: kernels_out,
        models,
        notes,
    }
}

fn bench_gpu(
    ctx: Arc<GpuContext>,
    cases: &[KernelCase],
    models: &[(PathBuf, Result<Arc<Model>, String>)],
    reps: usize,
    quick: bool,
    progress: &mut impl FnMut(&str),
) -> BackendReport {
    let s = ctx.summary();
    let mut report = failed(&s, "ok".into());
    let mut used_timestamps = false;
    progress(&format!("{} ceilings", s.backend));
    // Memory bandwidth: a large vec4 copy.
    let len4 = if quick { 2 << 20 } else { 8 << 20 };
    let bandwidth = (|| -> Result<f64, gpu::GpuError> {
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let x = gpu::storage(&ctx, "bandwidth.src", (len4 * 16) as u64)?;
        let y = gpu::storage(&ctx, "bandwidth.dst", (len4 * 16) as u64)?;
        let k = kernels::copy(&ctx, len4, &x, &y)?;
        let p = kernels::PreparedStep::from_kernel(k, y, 0, vec![x]);
        p.time(&ctx, 1)?;
        let mut t = Vec::new();
        for _ in 0..reps {
            let (secs, ts) = p.time(&ctx, 1)?;
            used_timestamps |= ts;
            t.push(secs);
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(gpu::GpuError::Failed {
                context: "bandwidth copy".into(),
                reason: e.to_string(),
            });
        }
        Ok((2 * len4 * 16) as f64 / median_spread(t).0 / 1e9)
    })();
    match bandwidth {
        Ok(b) => report.ceilings.bandwidth_gbs = b,
        Err(e) => {
            report.status = format!("failed: bandwidth kernel: {e}");
            return report;
        }
    }
    let ceiling_case = suite::dense_ceiling_case(quick);
    let mut measure = |case: &KernelCase| -> Result<Option<(Vec<f64>, String)>, gpu::GpuError> {
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let p = case.prepare(&ctx)?;
        let dispatches = p
            .labels()
            .iter()
            .map(|l| l.rsplit('.').next().unwrap_or(l))
            .collect::<Vec<_>>()
            .join(" + ");
        let ok = matches(&p.run(&ctx)?, &case.reference());
        let mut t = Vec::new();
        if ok {
            p.time(&ctx, 1)?;
            for _ in 0..reps {
                let (secs, ts) = p.time(&ctx, 1)?;
                used_timestamps |= ts;
                t.push(secs);
            }
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(gpu::GpuError::Failed {
                context: format!("{} {}", case.name, case.shape),
                reason: e.to_string(),
            });
        }
        Ok(ok.then_some((t, dispatches)))
    };
    match measure(&ceiling_case) {
        Ok(Some((t, _))) => {
            report.ceilings.gflops = ceiling_case.flops as f64 / median_spread(t).0 / 1e9
        }
        Ok(None) => {
            report.status = "failed: the dense kernel disagrees with the CPU reference".into();
            return report;
        }
        Err(e) => {
            report.status = format!("failed: {e}");
            return report;
        }
    }
    for case in cases {
        progress(&format!(
            "{} {} {} b{}",
            s.backend, case.name, case.shape, case.batch
        ));
        match measure(case) {
            Ok(Some((t, d))) => report.kernels.push(result(case, t, &report.ceilings, d)),
            Ok(None) => {
                report.status = format!(
                    "failed: {} {} batch {} disagrees with the CPU reference",
                    case.name, case.shape, case.batch
                );
                report.kernels.push(unchecked(case));
            }
            Err(e) => {
                report
                    .notes
                    .push(format!("{} {}: {e}", case.name, case.shape));
                report.kernels.push(unchecked(case));
            }
        }
    }
    report.timing = if used_timestamps {
        "gpu timestamps (TIMESTAMP_QUERY); models by their own clock".into()
    } else {
        "wall-clock around submit-and-wait".into()
    };
    if report.status == "ok" {
        let backend = Backend::Gpu(ctx.clone());
        report.models = time_models(&backend, models, reps, quick, &mut report.notes, progress);
    }
    report
}
