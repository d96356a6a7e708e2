//! The dynamic-split study of Bakhtiarnia et al. (2022) on realistic device/server pairs, from
//! published profiles (`models/<m>/profiles/`, see their README) and edgecut's own CPU backend.
//!
//! The paper's sweep, faithfully: data rate 1..=127 MB/s in 1 MB/s steps, server load = the
//! server's batch of 1..=B concurrent requests (the request waits for its whole batch, so the
//! server's block times are the batch-`b` times of its profile), FP32 split tensors and 8-bit
//! pixels for server-only. Also our queue-delay load model (batch 1 behind a queueing delay Q),
//! and as extensions FP16 and INT8 split tensors and a what-if early exit. For each pair and
//! variant: the share of scenarios where a split beats both device-only and server-only, gain
//! heatmaps (rate x load) and latency-vs-rate plots; then every policy against Oracle on the real
//! traces. [`run_pairs`] returns the typed [`PairsStudy`] and writes everything to one folder.

use super::{replay_group, trace_groups, trace_policies, StudyError, TraceRow};
use crate::model::Model;
use crate::report::plot::{heatmap, line_chart, Series};
use crate::sched::cost::{CostTable, ExitProbabilities};
use crate::sched::profile::Profile;
use crate::sched::{Cut, Encoding, Estimates};
use crate::sim::{Arrivals, ServerLoad, SimConfig};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

/// Data rates of the sweep, MB/s (the paper's 1..=127 in 1 MB/s steps).
pub const RATES: std::ops::RangeInclusive<usize> = 1..=127;

/// Columns (MB/s) of the gain heatmaps; the shares use every rate of [`RATES`].
pub const HEAT_RATES: [usize; 14] = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 127];

/// Batch rows of the gain heatmaps (those up to the sweep's largest batch).
pub const HEAT_BATCHES: [usize; 7] = [1, 2, 4, 8, 16, 32, 62];

/// Targets of the real-trace replays: Dynamic's mean at most this times Oracle's ...
pub const TARGET_VS_ORACLE: f64 = 1.05;
/// ... and at most this times the best static policy's.
pub const TARGET_VS_STATIC: f64 = 1.02;

/// A device/server pair of the study: names of a model folder and of two of its profiles.
#[derive(Debug, Clone, PartialEq)]
pub struct PairSpec {
    /// Label in the reports.
    pub name: String,
    /// Model folder name under the models root.
    pub model: String,
    /// Device profile file in `<model>/profiles/`.
    pub device: String,
    /// Server profile file in `<model>/profiles/` (with batch sizes 1..=B).
    pub server: String,
}

/// The pairs of the study (the paper's A03s → T4 and Pixel 4 → A10G on MobileNetV2, CPUs → T4
/// on EfficientNet-B0, and edgecut's own CPU backend → T4).
pub fn default_pairs() -> Vec<PairSpec> {
    [
        ("A03s GPU -> T4", "mobilenet-v2", "a03s-gpu.json", "t4.json"),
        (
            "Pixel 4 GPU -> A10G",
            "mobilenet-v2",
            "pixel4-gpu.json",
            "a10g.json",
        ),
        (
            "2-vCPU Xeon -> T4",
            "efficientnet-b0",
            "xeon-2vcpu.json",
            "t4.json",
        ),
        (
            "Graviton 1 vCPU -> T4",
            "efficientnet-b0",
            "graviton-1vcpu.json",
            "t4.json",
        ),
        (
            "edgecut CPU -> T4",
            "efficientnet-b0",
            "cpu.json",
            "t4.json",
        ),
    ]
    .into_iter()
    .map(|(n, m, d, s)| PairSpec {
        name: n.into(),
        model: m.into(),
        device: d.into(),
        server: s.into(),
    })
    .collect()
}

/// A loaded pair.
#[derive(Debug, Clone)]
pub struct Pair {
    /// Label.
    pub name: String,
    /// The model.
    pub model: Arc<Model>,
    /// Device profile (its smallest batch is used).
    pub device: Profile,
    /// Server profile (batch sizes are the load levels).
    pub server: Profile,
}

impl Pair {
    /// Loads the model and both profiles of `spec` from `models/<model>/`.
    pub fn load(models: &Path, spec: &PairSpec) -> Result<Self, StudyError> {
        let dir = models.join(&spec.model);
        let model = Arc::new(Model::load(&dir)?);
        let profiles = dir.join("profiles");
        Ok(Self {
            name: spec.name.clone(),
            device: Profile::load(profiles.join(&spec.device), &model)?,
            server: Profile::load(profiles.join(&spec.server), &model)?,
            model,
        })
    }
}

/// Settings of the pair study.
#[derive(Debug, Clone)]
pub struct PairsConfig {
    /// Round-trip time, ms.
    pub rtt_ms: f64,
    /// Queueing delays of the queue-delay load model, ms.
    pub queue_ms: Vec<f64>,
    /// Largest server batch (load levels 1..=this, each present in the server profile).
    pub max_batch: usize,
    /// Fraction of requests the what-if early exit answers.
    pub exit_rate: f64,
    /// Requests per replayed trace file (0: no replays).
    pub requests: usize,
    /// Periodic request rate of the replays, requests per second.
    pub trace_rate: f64,
    /// Round-trip times (ms) of the RTT-sensitivity table.
    pub rtt_sensitivity_ms: Vec<f64>,
}

impl Default for PairsConfig {
    fn default() -> Self {
        Self {
            rtt_ms: 20.0,
            queue_ms: vec![0.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0],
            max_batch: 62,
            exit_rate: 0.3,
            requests: 200,
            trace_rate: 1.0,
            rtt_sensitivity_ms: vec![0.0, 5.0, 20.0, 50.0],
        }
    }
}

/// One variant of the sweep: which split tensors the splits send, and whether the exit exists.
#[derive(Debug, Clone, Copy)]
struct Variant {
    name: &'static str,
    encoding: Encoding,
    exit: bool,
}

const VARIANTS: [Variant; 4] = [
    Variant {
        name: "fp32",
        encoding: Encoding::Fp32,
        exit: false,
    },
    Variant {
        name: "fp16",
        encoding: Encoding::Fp16,
        exit: false,
    },
    Variant {
        name: "int8",
        encoding: Encoding::Int8,
        exit: false,
    },
    Variant {
        name: "int8+exit",
        encoding: Encoding::Int8,
        exit: true,
    },
];

/// The sweep's result for one variant of one pair.
#[derive(Debug, Clone, Serialize)]
pub struct VariantResult {
    /// Scenarios of the paper's load model (batches x rates).
    pub batch_scenarios: usize,
    /// Fraction of them where a split beats device-only and server-only.
    pub batch_split_wins: f64,
    /// Scenarios of the queue-delay load model (queue delays x rates).
    pub queue_scenarios: usize,
    /// Fraction of them where a split wins.
    pub queue_split_wins: f64,
    /// Mean gain of the best split over the better end where a split wins (both load models).
    pub mean_gain_when_split_wins: f64,
    /// Rates (MB/s) where a split wins at batch 1 with no queue, as ranges (`"3-17"`).
    pub band_at_batch_1: Vec<String>,
    /// Split wins per split label, over both load models.
    pub winning_splits: BTreeMap<String, usize>,
    /// The batch-load share at other round-trip times (ms → share), the RTT being the term
    /// that separates every remote option from device-only.
    pub batch_split_wins_by_rtt_ms: BTreeMap<String, f64>,
}

/// One pair's policies on one group of real traces.
#[derive(Debug, Clone, Serialize)]
pub struct TraceSummary {
    /// Per policy.
    pub policies: BTreeMap<String, TraceRow>,
    /// The static policy (device, server or one split) with the least mean latency.
    pub best_static: String,
    /// Dynamic's mean over Oracle's.
    pub dynamic_over_oracle: f64,
    /// Dynamic's mean over the best static policy's.
    pub dynamic_over_best_static: f64,
}

/// One pair's results.
#[derive(Debug, Clone, Serialize)]
pub struct PairResult {
    /// Model name.
    pub model: String,
    /// Device profile: hardware and source.
    pub device: String,
    /// Server profile: hardware and source.
    pub server: String,
    /// Device-only latency, ms.
    pub device_ms: f64,
    /// Server compute at batch 1, ms.
    pub server_ms: f64,
    /// Per variant (`fp32`, `fp16`, `int8`, `int8+exit`).
    pub variants: BTreeMap<String, VariantResult>,
    /// Per trace group.
    pub traces: BTreeMap<String, TraceSummary>,
}

/// The study's results (`pairs.json`).
#[derive(Debug, Clone, Serialize)]
pub struct PairsStudy {
    /// Per pair label.
    pub pairs: BTreeMap<String, PairResult>,
    /// The report in Markdown (`README.md` of the output folder).
    #[serde(skip)]
    pub markdown: String,
}

/// A load level: label, server per-block seconds, queueing delay (ms).
struct Level {
    label: String,
    server: Vec<f64>,
    queue_ms: f64,
    batch: bool,
}

fn levels(pair: &Pair, cfg: &PairsConfig) -> Result<Vec<Level>, StudyError> {
    let mut out = Vec::new();
    for b in 1..=cfg.max_batch {
        let server = pair.server.block_seconds_at(b).ok_or_else(|| {
            StudyError::Invalid(format!(
                "server profile of '{}' ({}) has no batch {b} (batches {:?}); derive one with `edgecut profile --batch-curve`",
                pair.name, pair.server.adapter, pair.server.batches
            ))
        })?;
        out.push(Level {
            label: format!("batch {b}"),
            server,
            queue_ms: 0.0,
            batch: true,
        });
    }
    let one = pair.server.block_seconds();
    for &q in &cfg.queue_ms {
        if !(q.is_finite() && q >= 0.0) {
            return Err(StudyError::Invalid(format!(
                "queue delay {q} ms must be >= 0"
            )));
        }
        out.push(Level {
            label: format!("queue {q} ms"),
            server: one.clone(),
            queue_ms: q,
            batch: false,
        });
    }
    Ok(out)
}

/// The what-if exit: after the middle cut candidate, answering `rate` of the requests (its head's
/// compute neglected).
fn what_if_exit(model: &Model, rate: f64) -> ExitProbabilities {
    let c = model.cut_candidates();
    match c.get(c.len() / 2) {
        Some(&k) => ExitProbabilities {
            after_block: vec![k],
            first: vec![rate],
            accuracy: None,
        },
        None => ExitProbabilities::none(model),
    }
}

/// Least expected latency of (ends, best split, its option index) in `t` for split tensors `enc`.
fn ends_and_split(t: &CostTable, enc: Encoding, est: &Estimates) -> (f64, f64, usize) {
    let n = t.options.len();
    let ends = t.options[0]
        .expected(est)
        .min(t.options[n - 1].expected(est));
    let (mut split, mut at) = (f64::INFINITY, 0);
    for (i, o) in t.options.iter().enumerate() {
        if matches!(o.choice.cut, Cut::After(_)) && o.choice.encoding == enc {
            let v = o.expected(est);
            if v < split {
                (split, at) = (v, i);
            }
        }
    }
    (ends, split, at)
}

/// `[3, 4, 5, 9]` → `["3-5", "9"]`.
fn ranges(v: &[usize]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            v[i].to_string()
        } else {
            format!("{}-{}", v[i], v[j])
        });
        i = j + 1;
    }
    out
}

fn slug(name: &str) -> String {
    let s: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn describe(p: &Profile) -> String {
    match &p.source {
        Some(s) => format!("{} ({s})", p.adapter),
        None => p.adapter.clone(),
    }
}

/// Where splits win over every load level and rate, at one RTT.
#[derive(Default)]
struct Wins {
    batch_wins: usize,
    batch_total: usize,
    queue_wins: usize,
    queue_total: usize,
    gain_sum: f64,
    band: Vec<usize>,
    winning: BTreeMap<String, usize>,
}

impl Wins {
    fn batch_share(&self) -> f64 {
        self.batch_wins as f64 / self.batch_total.max(1) as f64
    }
}

fn count_wins(levels: &[Level], tables: &[CostTable], enc: Encoding, rtt_ms: f64) -> Wins {
    let mut w = Wins::default();
    for (li, (l, t)) in levels.iter().zip(tables).enumerate() {
        for r in RATES {
            let est = Estimates::from_mb_ms(r as f64, rtt_ms, l.queue_ms);
            let (ends, split, at) = ends_and_split(t, enc, &est);
            let wins = split < ends;
            if l.batch {
                w.batch_total += 1;
                w.batch_wins += usize::from(wins);
            } else {
                w.queue_total += 1;
                w.queue_wins += usize::from(wins);
            }
            if wins {
                w.gain_sum += (ends - split) / ends;
                *w.winning.entry(t.label(t.options[at].choice)).or_default() += 1;
                if li == 0 {
                    w.band.push(r);
                }
            }
        }
    }
    w
}

/// Sweeps one pair: every variant's shares, heatmaps and latency plots.
fn sweep_pair(
    pair: &Pair,
    cfg: &PairsConfig,
    dir: &Path,
) -> Result<BTreeMap<String, VariantResult>, StudyError> {
    let model = &pair.model;
    let device = pair.device.block_seconds();
    let levels = levels(pair, cfg)?;
    let mut out = BTreeMap::new();
    for v in VARIANTS {
        let exits = if v.exit {
            what_if_exit(model, cfg.exit_rate)
        } else {
            ExitProbabilities::none(model)
        };
        let tables: Vec<CostTable> = levels
            .iter()
            .map(|l| CostTable::from_times(model, device.clone(), l.server.clone(), &exits))
            .collect::<Result<_, _>>()?;
        let c = count_wins(&levels, &tables, v.encoding, cfg.rtt_ms);
        let mut rtt_shares = BTreeMap::new();
        for &rtt in &cfg.rtt_sensitivity_ms {
            let k = count_wins(&levels, &tables, v.encoding, rtt);
            rtt_shares.insert(format!("{rtt}"), k.batch_share());
        }
        // Heatmap: gain of the dynamic choice over the better end, rows = load levels shown.
        let shown: Vec<usize> = levels
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                !l.batch || HEAT_BATCHES.iter().any(|b| l.label == format!("batch {b}"))
            })
            .map(|(i, _)| i)
            .collect();
        // At the study's RTT, and without one (where the paper's trade-off shows most).
        for (rtt, suffix) in [(cfg.rtt_ms, ""), (0.0, "-rtt0")] {
            if suffix == "-rtt0" && cfg.rtt_ms == 0.0 {
                continue;
            }
            let values: Vec<Vec<f64>> = shown
                .iter()
                .map(|&i| {
                    HEAT_RATES
                        .iter()
                        .map(|&r| {
                            let est = Estimates::from_mb_ms(r as f64, rtt, levels[i].queue_ms);
                            let (ends, split, _) = ends_and_split(&tables[i], v.encoding, &est);
                            ((ends - split) / ends).max(0.0)
                        })
                        .collect()
                })
                .collect();
            heatmap(
                &dir.join(format!("gain-{}{suffix}.svg", v.name.replace('+', "-"))),
                &format!(
                    "{}: gain of the best split over the better end ({}, RTT {rtt} ms)",
                    pair.name, v.name
                ),
                "data rate (MB/s)",
                "server load",
                &HEAT_RATES.map(|r| r.to_string()),
                &shown
                    .iter()
                    .map(|&i| levels[i].label.clone())
                    .collect::<Vec<_>>(),
                &values,
                &|x| format!("{:.0}%", 100.0 * x),
            )?;
        }
        let wins = c.batch_wins + c.queue_wins;
        out.insert(
            v.name.to_string(),
            VariantResult {
                batch_scenarios: c.batch_total,
                batch_split_wins: c.batch_share(),
                queue_scenarios: c.queue_total,
                queue_split_wins: c.queue_wins as f64 / c.queue_total.max(1) as f64,
                mean_gain_when_split_wins: if wins > 0 {
                    c.gain_sum / wins as f64
                } else {
                    0.0
                },
                band_at_batch_1: ranges(&c.band),
                winning_splits: c.winning,
                batch_split_wins_by_rtt_ms: rtt_shares,
            },
        );
    }
    // Latency vs rate at batch 1 and at the largest heatmap batch within the sweep.
    let none = ExitProbabilities::none(model);
    let big = HEAT_BATCHES
        .iter()
        .copied()
        .filter(|&b| b <= cfg.max_batch && b <= 16)
        .max()
        .unwrap_or(1);
    for b in [1, big] {
        let t = CostTable::from_times(model, device.clone(), levels[b - 1].server.clone(), &none)?;
        let n = t.options.len();
        let line = |name: &str, f: &dyn Fn(&Estimates) -> f64| Series {
            name: name.to_string(),
            points: RATES
                .map(|r| {
                    let est = Estimates::from_mb_ms(r as f64, cfg.rtt_ms, 0.0);
                    (r as f64, f(&est) * 1e3)
                })
                .collect(),
        };
        let series = vec![
            line("device-only", &|e| t.options[n - 1].expected(e)),
            line("server-only (uint8 input)", &|e| t.options[0].expected(e)),
            line("best split, fp32", &|e| {
                ends_and_split(&t, Encoding::Fp32, e).1
            }),
            line("best split, int8", &|e| {
                ends_and_split(&t, Encoding::Int8, e).1
            }),
        ];
        line_chart(
            &dir.join(format!("latency-batch{b}.svg")),
            &format!(
                "{}: expected latency vs data rate, server batch {b}",
                pair.name
            ),
            "data rate (MB/s, log)",
            "latency (ms)",
            &series,
            true,
        )?;
    }
    Ok(out)
}

/// Replays every policy of one pair over the real trace groups.
fn replay_pair(
    pair: &Pair,
    groups: &[(String, Vec<crate::sim::trace::Trace>)],
    cfg: &PairsConfig,
) -> Result<BTreeMap<String, TraceSummary>, StudyError> {
    let base = CostTable::new(
        &pair.model,
        &pair.device,
        &pair.server,
        &ExitProbabilities::none(&pair.model),
    )?;
    let sim = SimConfig {
        requests: cfg.requests,
        arrivals: Arrivals::Periodic {
            rate: cfg.trace_rate,
        },
        rtt_s: cfg.rtt_ms * 1e-3,
        workers: 1,
        load: ServerLoad::Constant(0.0),
        ..SimConfig::default()
    };
    let names = trace_policies(&base);
    let mut out = BTreeMap::new();
    for (group, traces) in groups {
        let mut policies = BTreeMap::new();
        for name in &names {
            let (row, _) = replay_group(&base, name, traces, &sim)?;
            policies.insert(name.clone(), row);
        }
        let mean = |n: &str| policies.get(n).map_or(f64::NAN, |r: &TraceRow| r.mean_ms);
        let best_static = names
            .iter()
            .filter(|n| *n == "device" || *n == "server" || n.starts_with("static:"))
            .min_by(|a, b| mean(a).total_cmp(&mean(b)))
            .cloned()
            .unwrap_or_default();
        out.insert(
            group.clone(),
            TraceSummary {
                dynamic_over_oracle: mean("dynamic") / mean("oracle"),
                dynamic_over_best_static: mean("dynamic") / mean(&best_static),
                best_static,
                policies,
            },
        );
    }
    Ok(out)
}

/// Runs the study on `pairs`, replaying the real traces in `traces` when given, and writes
/// `README.md`, `pairs.json` and one folder of plots per pair to `out`.
pub fn run_pairs(
    pairs: &[Pair],
    traces: Option<&Path>,
    cfg: &PairsConfig,
    out: &Path,
) -> Result<PairsStudy, StudyError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StudyError::Io { path, source }
    };
    if cfg.max_batch == 0 || !(cfg.exit_rate >= 0.0 && cfg.exit_rate <= 1.0) {
        return Err(StudyError::Invalid(format!(
            "--max-batch {} must be >= 1 and --exit-rate {} in [0, 1]",
            cfg.max_batch, cfg.exit_rate
        )));
    }
    if !(cfg.rtt_ms.is_finite() && cfg.rtt_ms >= 0.0 && cfg.trace_rate > 0.0) {
        return Err(StudyError::Invalid(format!(
            "--rtt-ms {} must be >= 0 and --trace-rate {} > 0",
            cfg.rtt_ms, cfg.trace_rate
        )));
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let groups = match traces {
        Some(t) if cfg.requests > 0 => trace_groups(t)?,
        _ => Vec::new(),
    };
    let mut results = BTreeMap::new();
    for pair in pairs {
        let dir = out.join(slug(&pair.name));
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let variants = sweep_pair(pair, cfg, &dir)?;
        let traces = replay_pair(pair, &groups, cfg)?;
        results.insert(
            pair.name.clone(),
            PairResult {
                model: pair.model.name().to_string(),
                device: describe(&pair.device),
                server: describe(&pair.server),
                device_ms: pair.device.block_seconds().iter().sum::<f64>() * 1e3,
                server_ms: pair.server.block_seconds().iter().sum::<f64>() * 1e3,
                variants,
                traces,
            },
        );
    }
    let markdown = report(pairs, &results, cfg, !groups.is_empty());
    let study = PairsStudy {
        pairs: results,
        markdown,
    };
    let md = out.join("README.md");
    std::fs::write(&md, &study.markdown).map_err(io(&md))?;
    let json = out.join("pairs.json");
    let text =
        serde_json::to_string_pretty(&study).map_err(|e| StudyError::Invalid(e.to_string()))?;
    std::fs::write(&json, text + "\n").map_err(io(&json))?;
    Ok(study)
}

fn report(
    pairs: &[Pair],
    results: &BTreeMap<String, PairResult>,
    cfg: &PairsConfig,
    replayed: bool,
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Dynamic split computing on realistic device/server pairs\n"
    );
    let _ = writeln!(md, "Generated by `edgecut study --pairs` (see the main README); every profile names its source (`models/<model>/profiles/README.md`). RTT {} ms. Server-only sends the input as 8-bit pixels; splits send the tensor at a cut candidate (the model's natural bottlenecks).\n", cfg.rtt_ms);
    let _ = writeln!(md, "Load models: **batch** (the paper's): the request is served in a batch of b = 1..={} concurrent requests, so the server's block times are its profile's batch-b times; **queue** (ours): batch 1 behind a queueing delay Q in {:?} ms. Each scenario is one load level at one data rate, 1..=127 MB/s in 1 MB/s steps.\n", cfg.max_batch, cfg.queue_ms);
    let _ = writeln!(md, "Variants: `fp32` (the paper's setting), `fp16` and `int8` split tensors, and `int8+exit`: a what-if early exit after the middle cut candidate that answers {:.0}% of requests on the device (its head's compute neglected; the models here have no trained exits).\n", cfg.exit_rate * 100.0);
    let _ = writeln!(md, "## Pairs\n");
    let _ = writeln!(
        md,
        "| pair | model | device-only ms | server ms (batch 1) | device profile | server profile |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for p in pairs {
        if let Some(r) = results.get(&p.name) {
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} | {:.2} | {} | {} |",
                p.name, r.model, r.device_ms, r.server_ms, r.device, r.server
            );
        }
    }
    let _ = writeln!(
        md,
        "\n## Share of scenarios where a split beats device-only and server-only\n"
    );
    let _ = writeln!(md, "Batch load (the paper's) / queue load (ours); in brackets the data rates (MB/s) where a split wins at batch 1 with no queue.\n");
    let _ = write!(md, "| pair |");
    for v in VARIANTS {
        let _ = write!(md, " {} |", v.name);
    }
    let _ = writeln!(md, " mean gain where a split wins (fp32) |");
    let _ = writeln!(md, "|---|{}---|", "---|".repeat(VARIANTS.len()));
    for p in pairs {
        let Some(r) = results.get(&p.name) else {
            continue;
        };
        let _ = write!(md, "| {} |", p.name);
        for v in VARIANTS {
            if let Some(x) = r.variants.get(v.name) {
                let band = if x.band_at_batch_1.is_empty() {
                    "none".to_string()
                } else {
                    x.band_at_batch_1.join(", ")
                };
                let _ = write!(
                    md,
                    " {} / {} [{band}] |",
                    pct(x.batch_split_wins),
                    pct(x.queue_split_wins)
                );
            }
        }
        let g = r
            .variants
            .get("fp32")
            .map_or(0.0, |x| x.mean_gain_when_split_wins);
        let _ = writeln!(md, " {} |", pct(g));
    }
    let _ = writeln!(md, "\nThe same share (batch load) at other round-trip times: the RTT is paid by every remote option, server-only included, so it decides how often a split beats device-only.\n");
    let _ = write!(md, "| pair | variant |");
    for r in &cfg.rtt_sensitivity_ms {
        let _ = write!(md, " RTT {r} ms |");
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "|---|---|{}",
        "---|".repeat(cfg.rtt_sensitivity_ms.len())
    );
    for p in pairs {
        let Some(r) = results.get(&p.name) else {
            continue;
        };
        for v in ["fp32", "int8"] {
            let Some(x) = r.variants.get(v) else {
                continue;
            };
            let _ = write!(md, "| {} | {v} |", p.name);
            for rtt in &cfg.rtt_sensitivity_ms {
                let share = x.batch_split_wins_by_rtt_ms.get(&format!("{rtt}"));
                let _ = write!(md, " {} |", share.map_or("-".into(), |s| pct(*s)));
            }
            let _ = writeln!(md);
        }
    }
    let _ = writeln!(md, "\nPlots per pair in `<pair>/`: `gain-<variant>.svg` (gain of the best split over the better end, rate x load; `gain-<variant>-rtt0.svg` without the round trip), `latency-batch1.svg` and `latency-batch16.svg` (expected latency vs data rate).\n");
    if !replayed {
        return md;
    }
    let _ = writeln!(md, "## Real traces: every policy against Oracle\n");
    let _ = writeln!(md, "Periodic requests at {} per second, {} per trace file (traces loop), idle server, RTT {} ms, the simulator's default rate estimator, probing and outage rule (a remote request whose upload stalls past the time a local run would take runs on the device; `docs/scheduling.md`). Oracle is clairvoyant per request: it knows the whole trace and picks the option whose request is truly answered first; it is greedy (blind to what a request does to the next ones), which at one request per second makes it a lower bound in practice. Targets: Dynamic's mean <= {TARGET_VS_ORACLE}x Oracle's and <= {TARGET_VS_STATIC}x the best static policy's. Means and p95 in ms.\n", cfg.trace_rate, cfg.requests, cfg.rtt_ms);
    let _ = writeln!(md, "| pair | traces | dynamic mean / p95 | oracle mean / p95 | best static: mean / p95 | dynamic / oracle | dynamic / best static | targets |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for p in pairs {
        let Some(r) = results.get(&p.name) else {
            continue;
        };
        for (g, s) in &r.traces {
            let row = |n: &str| {
                s.policies.get(n).map_or("-".to_string(), |x| {
                    format!("{:.1} / {:.1}", x.mean_ms, x.p95_ms)
                })
            };
            let met = |x: f64, t: f64| if x <= t { "met" } else { "not met" };
            let _ = writeln!(
                md,
                "| {} | {g} | {} | {} | {}: {} | {:.3} | {:.3} | {} / {} |",
                p.name,
                row("dynamic"),
                row("oracle"),
                s.best_static,
                row(&s.best_static),
                s.dynamic_over_oracle,
                s.dynamic_over_best_static,
                met(s.dynamic_over_oracle, TARGET_VS_ORACLE),
                met(s.dynamic_over_best_static, TARGET_VS_STATIC)
            );
        }
    }
    let _ = writeln!(md, "\nEvery policy's mean, p95, bytes and cuts per trace group: `pairs.json` (`pairs.<pair>.traces.<group>.policies`).");
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_join_consecutive_rates() {
        assert_eq!(ranges(&[3, 4, 5, 9, 11, 12]), ["3-5", "9", "11-12"]);
        assert!(ranges(&[]).is_empty());
    }

    /// A profile of `model` with every block taking `ms` at batch 1 and `b` times that at batch b.
    fn linear_profile(model: &Model, ms: f64, batches: usize) -> Profile {
        Profile {
            format: crate::sched::profile::PROFILE_FORMAT,
            model: model.name().to_string(),
            hash: model.hash.clone(),
            backend: "test".into(),
            adapter: "test".into(),
            batches: (1..=batches).collect(),
            slowdown: 1.0,
            warmup: 0,
            runs: 0,
            clock: crate::sched::profile::Clock::Wall,
            blocks: model
                .blocks
                .iter()
                .map(|b| crate::sched::profile::BlockTime {
                    name: b.name.clone(),
                    seconds: (1..=batches).map(|k| ms * 1e-3 * k as f64).collect(),
                })
                .collect(),
            observed_runs: 0,
            source: None,
        }
    }

    #[test]
    fn a_small_pair_study_writes_its_report_and_bounded_shares() {
        let model = Arc::new(crate::fixture::lenet(1).expect("fixture builds"));
        let pair = Pair {
            name: "slow device -> fast server".into(),
            device: linear_profile(&model, 20.0, 1),
            server: linear_profile(&model, 0.5, 4),
            model,
        };
        let out = std::env::temp_dir().join(format!("edgecut-pairs-{}", std::process::id()));
        let cfg = PairsConfig {
            max_batch: 4,
            queue_ms: vec![0.0, 100.0],
            requests: 0,
            ..PairsConfig::default()
        };
        let study = run_pairs(std::slice::from_ref(&pair), None, &cfg, &out).expect("runs");
        let r = &study.pairs[&pair.name];
        assert_eq!(r.variants.len(), VARIANTS.len());
        for v in r.variants.values() {
            assert_eq!(v.batch_scenarios, 4 * 127);
            assert_eq!(v.queue_scenarios, 2 * 127);
            assert!((0.0..=1.0).contains(&v.batch_split_wins));
            assert!((0.0..=1.0).contains(&v.queue_split_wins));
        }
        assert!(study.markdown.contains("slow device -> fast server"));
        for f in [
            "README.md",
            "pairs.json",
            "slow-device-fast-server/gain-fp32.svg",
        ] {
            assert!(out.join(f).is_file(), "{f}");
        }
        let _ = std::fs::remove_dir_all(&out);
        // A server profile without the swept batch sizes is refused, naming the fix.
        let cfg = PairsConfig {
            max_batch: 8,
            ..cfg
        };
        let e = run_pairs(std::slice::from_ref(&pair), None, &cfg, &out).unwrap_err();
        assert!(e.to_string().contains("--batch-curve"), "{e}");
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn the_committed_pairs_load_with_batch_profiles_and_name_their_sources() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        for spec in default_pairs() {
            let p = Pair::load(&models, &spec).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
            assert!(p.device.source.is_some(), "{}: device source", spec.name);
            assert!(p.server.source.is_some(), "{}: server source", spec.name);
            let cfg = PairsConfig::default();
            assert!(
                (1..=cfg.max_batch).all(|b| p.server.block_seconds_at(b).is_some()),
                "{}: server batches {:?}",
                spec.name,
                p.server.batches
            );
        }
    }

    #[test]
    fn slugs_are_plain_folder_names() {
        assert_eq!(slug("A03s GPU -> T4"), "a03s-gpu-t4");
        assert_eq!(slug("edgecut CPU -> T4"), "edgecut-cpu-t4");
    }
}
