//! The dynamic-split-computing study (Bakhtiarnia et al. 2022) on measured profiles, behind
//! `edgecut study`: a data-rate x server-load sweep of the cost model for FP32, FP16 and INT8
//! split tensors, replays of the real traces through the simulator, and the rate estimators'
//! prediction error on those traces. [`run`] returns the typed [`Study`] (its JSON is
//! `study.json`) and writes Markdown tables and SVG plots to a folder. [`pairs`] runs the study
//! on realistic device/server pairs from published profiles.

pub mod pairs;

use super::trace::{Trace, TraceError};
use super::{simulate, Arrivals, ExitSource, ServerLoad, SimConfig};
use crate::model::Model;
use crate::report::plot::{heatmap, line_chart, PlotError, Series};
use crate::sched::cost::{CostTable, ExitProbabilities, OptionCost};
use crate::sched::estimate::{evaluate, RateMethod};
use crate::sched::policy;
use crate::sched::profile::Profile;
use crate::sched::{Cut, Encoding, Estimates, SchedError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Data rates (MB/s) of the gain heatmaps.
pub const RATES_HEAT: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 127.0];

/// Errors of the study.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StudyError {
    /// Profiles, tables or policies.
    #[error(transparent)]
    Sched(#[from] SchedError),
    /// A trace file.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// A plot.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// Reading the trace folder or writing the output.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A setting out of range.
    #[error("{0}")]
    Invalid(String),
    /// A model of a pair.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
}

/// What the study sweeps and replays.
#[derive(Debug, Clone)]
pub struct StudyConfig {
    /// Round-trip time, milliseconds.
    pub rtt_ms: f64,
    /// Server queueing delays swept, milliseconds.
    pub queue_ms: Vec<f64>,
    /// Server shares swept: a server time-shared by N requests has N x the profile's block times.
    pub share: Vec<f64>,
    /// Requests per replayed trace.
    pub requests: usize,
}

/// The sweep's result for one split-tensor encoding.
#[derive(Debug, Clone, Serialize)]
pub struct SweepResult {
    /// Per option label: `(T_static - T_dynamic) / T_static` at each of `rates`, mean over loads.
    pub gain_by_rate: BTreeMap<String, Vec<f64>>,
    /// Mean gain of the best split over the better end where a split wins.
    pub mean_gain_when_split_wins: f64,
    /// The rates (MB/s).
    pub rates: Vec<f64>,
    /// Scenarios (load levels x 127 rates).
    pub scenarios: usize,
    /// Fraction of scenarios where a split beats device-only and server-only.
    pub split_wins: f64,
}

/// One policy over one group of real traces.
#[derive(Debug, Clone, Serialize)]
pub struct TraceRow {
    /// Bytes sent per request.
    pub bytes_per_request: f64,
    /// Fraction of requests per choice label.
    pub cuts: BTreeMap<String, f64>,
    /// Mean latency, ms.
    pub mean_ms: f64,
    /// 95th-percentile latency, ms.
    pub p95_ms: f64,
}

/// A rate estimator's prediction error over one group of traces.
#[derive(Debug, Clone, Serialize)]
pub struct EstimatorError {
    /// Mean absolute percentage error of the predicted transfer time.
    pub mape: f64,
    /// Median absolute percentage error.
    pub median_ape: f64,
    /// Fraction of transfers taking more than twice as long as predicted.
    pub under_50: f64,
}

/// The study's results (`study.json`; fields in alphabetical order, as the JSON always had them).
#[derive(Debug, Clone, Serialize)]
pub struct Study {
    /// Per estimator name, per trace group.
    pub estimators: BTreeMap<String, BTreeMap<String, EstimatorError>>,
    /// The tables in Markdown (`tables.md`).
    #[serde(skip)]
    pub markdown: String,
    /// Per split-tensor encoding.
    pub sweep: BTreeMap<String, SweepResult>,
    /// Per trace group, per policy.
    pub traces: BTreeMap<String, BTreeMap<String, TraceRow>>,
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// Runs the study of `model` with its device and server profiles over the real traces in
/// `traces` (`norway-hsdpa-3g/`, `mahimahi-lte/`, `5g-mobility/`), writing `tables.md`,
/// `study.json` and the plots to `out`.
pub fn run(
    model: &Model,
    device: &Profile,
    server: &Profile,
    traces: &Path,
    cfg: &StudyConfig,
    out: &Path,
) -> Result<Study, StudyError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StudyError::Io { path, source }
    };
    if !traces.is_dir() {
        return Err(StudyError::Invalid(format!(
            "--traces {} is not a folder of traces",
            traces.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let base = CostTable::new(model, device, server, &ExitProbabilities::none(model))?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Model `{}`; device profile: {} x{} (`{}`), server profile: {} x{}; RTT {} ms.\n",
        model.name(),
        device.adapter,
        device.slowdown,
        device.backend,
        server.adapter,
        server.slowdown,
        cfg.rtt_ms
    );
    let _ = writeln!(
        md,
        "Device-only {:.0} ms, server-only compute {:.0} ms (batch {}).\n",
        base.device_block_s.iter().sum::<f64>() * 1e3,
        base.server_block_s.iter().sum::<f64>() * 1e3,
        server.batches.iter().min().copied().unwrap_or(1)
    );
    let loads = load_levels(model, &base, cfg)?;
    let sweep = sweep(&base, &loads, cfg, out, &mut md)?;
    let groups = trace_groups(traces)?;
    let traces = replay(&base, &groups, cfg, out, &mut md)?;
    let estimators = estimator_errors(&groups, &mut md);
    let study = Study {
        sweep,
        traces,
        estimators,
        markdown: md,
    };
    let tables = out.join("tables.md");
    std::fs::write(&tables, &study.markdown).map_err(io(&tables))?;
    let json = out.join("study.json");
    let text =
        serde_json::to_string_pretty(&study).map_err(|e| StudyError::Invalid(e.to_string()))?;
    std::fs::write(&json, text + "\n").map_err(io(&json))?;
    Ok(study)
}

/// One server load level: its label, its table and its queueing delay (ms).
type Load = (String, CostTable, f64);

fn load_levels(
    model: &Model,
    base: &CostTable,
    cfg: &StudyConfig,
) -> Result<Vec<Load>, StudyError> {
    let none = ExitProbabilities::none(model);
    let mut loads = Vec::new();
    for &n in &cfg.share {
        if !(n.is_finite() && n >= 1.0) {
            return Err(StudyError::Invalid(format!(
                "--share {n}: a server shared by N >= 1 requests"
            )));
        }
        let s = base.server_block_s.iter().map(|x| x * n).collect();
        let t = CostTable::from_times(model, base.device_block_s.clone(), s, &none)?;
        for &q in &cfg.queue_ms {
            loads.push((format!("shared by {n}, queue {q} ms"), t.clone(), q));
        }
    }
    if loads.is_empty() {
        return Err(StudyError::Invalid(
            "no load levels: give --share and --queue-ms".into(),
        ));
    }
    Ok(loads)
}

/// Options of `table` a dynamic policy restricted to split tensors in `enc` may choose.
fn allowed(o: &OptionCost, enc: Encoding) -> bool {
    match o.choice.cut {
        Cut::After(_) => o.choice.encoding == enc,
        _ => true,
    }
}

/// The least expected latency over `opts` of `t` under `est`.
fn best(t: &CostTable, opts: &[usize], est: &Estimates) -> f64 {
    opts.iter()
        .map(|&i| t.options[i].expected(est))
        .fold(f64::INFINITY, f64::min)
}

/// Where a split beats both ends, over every load and rate 1..=127 MB/s: (wins, total, gain sum).
fn split_wins(loads: &[Load], enc: Encoding, rtt_ms: f64) -> (usize, usize, f64) {
    let (mut wins, mut total, mut gain_sum) = (0usize, 0usize, 0.0);
    for (_, t, q) in loads {
        for r in 1..=127 {
            let est = Estimates::from_mb_ms(r as f64, rtt_ms, *q);
            let ends = t.options[t.options.len() - 1]
                .expected(&est)
                .min(t.options[0].expected(&est));
            let split = t
                .options
                .iter()
                .filter(|o| matches!(o.choice.cut, Cut::After(_)) && allowed(o, enc))
                .map(|o| o.expected(&est))
                .fold(f64::INFINITY, f64::min);
            total += 1;
            if split < ends {
                wins += 1;
                gain_sum += (ends - split) / ends;
            }
        }
    }
    (wins, total, gain_sum)
}

fn sweep(
    base: &CostTable,
    loads: &[Load],
    cfg: &StudyConfig,
    out: &Path,
    md: &mut String,
) -> Result<BTreeMap<String, SweepResult>, StudyError> {
    let _ = writeln!(md, "## Sweep: data rate 1-127 MB/s x server load\n");
    let _ = writeln!(md, "Server load: the server is time-shared by N requests (its block times are N x the profile's, N in {:?}) and the request waits Q in its queue (Q in {:?} ms). {} load levels x 127 rates = {} scenarios per encoding.\n", cfg.share, cfg.queue_ms, loads.len(), loads.len() * 127);
    let _ = writeln!(md, "| split tensors | scenarios where a split beats device-only and server-only | best split's mean gain over the better of the two there |");
    let _ = writeln!(md, "|---|---|---|");
    let mut results = BTreeMap::new();
    let mut tables = String::new();
    for enc in Encoding::ALL {
        let (wins, total, gain_sum) = split_wins(loads, enc, cfg.rtt_ms);
        let frac = wins as f64 / total as f64;
        let g = if wins > 0 {
            gain_sum / wins as f64
        } else {
            0.0
        };
        let _ = writeln!(
            md,
            "| {enc} | {} ({wins} of {total}) | {} |",
            pct(frac),
            pct(g)
        );
        let opts: Vec<usize> = (0..base.options.len())
            .filter(|&i| allowed(&base.options[i], enc))
            .collect();
        let labels: Vec<String> = opts
            .iter()
            .map(|&i| base.label(base.options[i].choice))
            .collect();
        let mut gains = vec![vec![0.0; RATES_HEAT.len()]; opts.len()];
        for (ri, &r) in RATES_HEAT.iter().enumerate() {
            for (_, t, q) in loads {
                let est = Estimates::from_mb_ms(r, cfg.rtt_ms, *q);
                let dynamic = best(t, &opts, &est);
                for (oi, &i) in opts.iter().enumerate() {
                    let s = t.options[i].expected(&est);
                    gains[oi][ri] += (s - dynamic) / s / loads.len() as f64;
                }
            }
        }
        sweep_plots(loads, enc, &opts, &labels, &gains, cfg.rtt_ms, out)?;
        gain_table(&mut tables, enc, &labels, &gains);
        results.insert(
            enc.to_string(),
            SweepResult {
                split_wins: frac,
                scenarios: total,
                mean_gain_when_split_wins: g,
                gain_by_rate: labels.iter().cloned().zip(gains).collect(),
                rates: RATES_HEAT.to_vec(),
            },
        );
    }
    let _ = writeln!(md);
    md.push_str(&tables);
    Ok(results)
}

fn gain_table(md: &mut String, enc: Encoding, labels: &[String], gains: &[Vec<f64>]) {
    let _ = writeln!(md, "Gain `(T_static - T_dynamic) / T_static` per static option, {enc} split tensors (mean over the load levels; plot `gain-{enc}.svg`, per-load heatmaps `gain-{enc}-<option>.svg`):\n");
    let _ = write!(md, "| option |");
    for r in RATES_HEAT {
        let _ = write!(md, " {r} MB/s |");
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "|---|{}", "---|".repeat(RATES_HEAT.len()));
    for (l, row) in labels.iter().zip(gains) {
        let _ = write!(md, "| {l} |");
        for v in row {
            let _ = write!(md, " {} |", pct(*v));
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md);
}

/// The gain heatmaps (mean over loads, and per option over rate x load) and latency vs rate.
fn sweep_plots(
    loads: &[Load],
    enc: Encoding,
    opts: &[usize],
    labels: &[String],
    gains: &[Vec<f64>],
    rtt_ms: f64,
    out: &Path,
) -> Result<(), StudyError> {
    let cols: Vec<String> = RATES_HEAT.iter().map(|r| format!("{r}")).collect();
    let percent = |v: f64| format!("{:.0}%", 100.0 * v);
    heatmap(
        &out.join(format!("gain-{enc}.svg")),
        &format!("gain of dynamic over each static option ({enc} split tensors), mean over loads"),
        "data rate (MB/s)",
        "static option",
        &cols,
        labels,
        gains,
        &percent,
    )?;
    let load_labels: Vec<String> = loads.iter().map(|(l, _, _)| l.clone()).collect();
    for (oi, &i) in opts.iter().enumerate() {
        let m: Vec<Vec<f64>> = loads
            .iter()
            .map(|(_, t, q)| {
                RATES_HEAT
                    .iter()
                    .map(|&r| {
                        let est = Estimates::from_mb_ms(r, rtt_ms, *q);
                        let s = t.options[i].expected(&est);
                        (s - best(t, opts, &est)) / s
                    })
                    .collect()
            })
            .collect();
        let name = labels[oi].replace(':', "-");
        heatmap(
            &out.join(format!("gain-{enc}-{name}.svg")),
            &format!(
                "(T_static - T_dynamic) / T_static for {} ({enc})",
                labels[oi]
            ),
            "data rate (MB/s)",
            "server load",
            &cols,
            &load_labels,
            &m,
            &percent,
        )?;
    }
    // Latency vs rate per option and for dynamic, at the first load level.
    let (l0, t0, q0) = &loads[0];
    let at = |r: usize| Estimates::from_mb_ms(r as f64, rtt_ms, *q0);
    let mut series: Vec<Series> = opts
        .iter()
        .zip(labels)
        .map(|(&i, l)| Series {
            name: l.clone(),
            points: (1..=127)
                .map(|r| (r as f64, t0.options[i].expected(&at(r)) * 1e3))
                .collect(),
        })
        .collect();
    series.push(Series {
        name: "dynamic".into(),
        points: (1..=127)
            .map(|r| (r as f64, best(t0, opts, &at(r)) * 1e3))
            .collect(),
    });
    line_chart(
        &out.join(format!("latency-vs-rate-{enc}.svg")),
        &format!("expected latency vs data rate, {enc} split tensors, {l0}"),
        "data rate (MB/s, log)",
        "latency (ms)",
        &series,
        true,
    )?;
    Ok(())
}

/// The policies replayed on the real traces.
fn trace_policies(base: &CostTable) -> Vec<String> {
    let mut names = vec!["device".to_string(), "server".to_string()];
    for &k in &base.candidates {
        for e in ["fp32", "int8"] {
            names.push(format!("static:{}:{e}", base.block_names[k]));
        }
    }
    names.extend(["dynamic-fp32", "dynamic", "oracle"].map(String::from));
    names
}

/// One policy over every trace of a group: its row and its latency CDF.
fn replay_group(
    base: &CostTable,
    name: &str,
    traces: &[Trace],
    cfg: &SimConfig,
) -> Result<(TraceRow, Series), StudyError> {
    let (mut lat, mut bytes) = (Vec::new(), 0u64);
    let mut cuts: BTreeMap<String, f64> = BTreeMap::new();
    let mut canonical = name.to_string();
    for tr in traces {
        let mut p = policy::parse(name, base, None)?;
        canonical = p.name().to_string();
        let r = simulate(base, tr, p.as_mut(), cfg, &ExitSource::None);
        bytes += r.bytes;
        for (k, v) in r.cuts(base) {
            *cuts.entry(k).or_default() += v / traces.len() as f64;
        }
        lat.extend(r.latencies);
    }
    let mean = crate::stats::mean(&lat);
    let p95 = crate::stats::percentile(&lat, 95.0);
    let mut s = lat.clone();
    s.sort_by(f64::total_cmp);
    let step = (s.len() / 200).max(1);
    let cdf = Series {
        name: canonical,
        points: s
            .iter()
            .enumerate()
            .step_by(step)
            .map(|(i, &v)| (v * 1e3, (i + 1) as f64 / s.len() as f64))
            .collect(),
    };
    let row = TraceRow {
        mean_ms: mean * 1e3,
        p95_ms: p95 * 1e3,
        bytes_per_request: bytes as f64 / lat.len().max(1) as f64,
        cuts,
    };
    Ok((row, cdf))
}

fn replay(
    base: &CostTable,
    groups: &[(String, Vec<Trace>)],
    cfg: &StudyConfig,
    out: &Path,
    md: &mut String,
) -> Result<BTreeMap<String, BTreeMap<String, TraceRow>>, StudyError> {
    let device_total: f64 = base.device_block_s.iter().sum();
    // One request per 1.25 device-only times, so that every policy, device-only included, keeps up.
    let rate = 1.0 / (1.25 * device_total);
    let names = trace_policies(base);
    let _ = writeln!(md, "## Real traces\n");
    let _ = writeln!(md, "Periodic requests every {:.2} s (1.25 x device-only time), {} per trace file (traces loop), idle server (not shared, no queue), RTT {} ms; rate estimator harmonic mean of 5; dynamic policies probe with 4 kB when the uplink was not measured for 1 s and a rate 100 times higher or lower could change their choice by more than the probe takes. Latency over all requests of the group (ms).\n", 1.0 / rate, cfg.requests, cfg.rtt_ms);
    let sim = SimConfig {
        requests: cfg.requests,
        arrivals: Arrivals::Periodic { rate },
        rtt_s: cfg.rtt_ms * 1e-3,
        workers: 1,
        load: ServerLoad::Constant(0.0),
        ..SimConfig::default()
    };
    let mut all = BTreeMap::new();
    for (group, traces) in groups {
        let mean_mbit =
            traces.iter().map(|t| t.mean_rate()).sum::<f64>() / traces.len() as f64 * 8e-6;
        let _ = writeln!(
            md,
            "### {group} ({} trace(s), mean {mean_mbit:.2} Mbit/s)\n",
            traces.len()
        );
        let _ = writeln!(
            md,
            "| policy | mean ms | p95 ms | vs oracle (mean) | MB sent per request | cuts |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        let mut rows = Vec::new();
        let mut cdf = Vec::new();
        for name in &names {
            let (row, series) = replay_group(base, name, traces, &sim)?;
            rows.push((series.name.clone(), row));
            cdf.push(series);
        }
        let oracle = rows
            .iter()
            .find(|r| r.0 == "oracle")
            .map_or(f64::NAN, |r| r.1.mean_ms);
        for (name, r) in &rows {
            let c: Vec<String> = r
                .cuts
                .iter()
                .filter(|(_, v)| **v >= 0.005)
                .map(|(k, v)| format!("{k} {:.0}%", v * 100.0))
                .collect();
            let _ = writeln!(
                md,
                "| {name} | {:.0} | {:.0} | {:+.1}% | {:.3} | {} |",
                r.mean_ms,
                r.p95_ms,
                (r.mean_ms / oracle - 1.0) * 100.0,
                r.bytes_per_request / 1e6,
                c.join(", ")
            );
        }
        let _ = writeln!(md);
        let slug = group
            .split_whitespace()
            .next()
            .unwrap_or("trace")
            .to_lowercase();
        cdf.retain(|s| {
            ["device", "server", "oracle"].contains(&s.name.as_str())
                || s.name.starts_with("dynamic")
                || s.name.ends_with("int8")
        });
        let cdf_file = format!("cdf-{slug}.svg");
        line_chart(
            &out.join(&cdf_file),
            &format!("latency CDF, {group}"),
            "latency (ms)",
            "fraction of requests",
            &cdf,
            false,
        )?;
        let _ = writeln!(md, "Plot: `{cdf_file}`.\n");
        all.insert(group.clone(), rows.into_iter().collect());
    }
    Ok(all)
}

/// The estimators compared.
fn methods() -> [RateMethod; 9] {
    let ewma = |alpha, clip| RateMethod::Ewma { alpha, clip };
    [
        RateMethod::Last,
        ewma(0.1, 4.0),
        ewma(0.3, 4.0),
        ewma(0.6, 4.0),
        ewma(0.3, f64::INFINITY),
        RateMethod::Harmonic { window: 3 },
        RateMethod::Harmonic { window: 5 },
        RateMethod::Harmonic { window: 10 },
        RateMethod::Harmonic { window: 20 },
    ]
}

fn estimator_errors(
    groups: &[(String, Vec<Trace>)],
    md: &mut String,
) -> BTreeMap<String, BTreeMap<String, EstimatorError>> {
    let _ = writeln!(md, "## Rate estimators on the real traces\n");
    let _ = writeln!(md, "One 50 kB transfer per second over each trace (one loop); each transfer's duration is predicted from the estimate built from the earlier ones. Mean / median absolute percentage error of the predicted duration, and the fraction of transfers taking more than twice as long as predicted.\n");
    let _ = write!(md, "| estimator |");
    for (g, _) in groups {
        let _ = write!(md, " {g}: MAPE / median / >2x |");
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "|---|{}", "---|".repeat(groups.len()));
    let mut all = BTreeMap::new();
    for m in methods() {
        let _ = write!(md, "| {} |", m.name());
        let mut per = BTreeMap::new();
        for (g, traces) in groups {
            let (mut mape, mut med, mut under, mut n) = (0.0, 0.0, 0.0, 0.0);
            for tr in traces {
                let transfers: Vec<(u64, f64)> = (0..tr.period().floor() as usize)
                    .map(|s| (50_000u64, tr.transfer_end(s as f64, 50_000.0) - s as f64))
                    .collect();
                let e = evaluate(m, &transfers);
                let w = e.samples as f64;
                mape += e.mape * w;
                med += e.median_ape * w;
                under += e.under_50 * w;
                n += w;
            }
            let e = EstimatorError {
                mape: mape / n,
                median_ape: med / n,
                under_50: under / n,
            };
            let _ = write!(
                md,
                " {} / {} / {} |",
                pct(e.mape),
                pct(e.median_ape),
                pct(e.under_50)
            );
            per.insert(g.clone(), e);
        }
        let _ = writeln!(md);
        all.insert(m.name(), per);
    }
    let _ = writeln!(md);
    all
}

/// The real trace groups: 3G (every Norway file), LTE uplink, 5G driving (each carrier) and walking.
pub fn trace_groups(dir: &Path) -> Result<Vec<(String, Vec<Trace>)>, StudyError> {
    let g3 = dir.join("norway-hsdpa-3g");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&g3)
        .map_err(|source| StudyError::Io {
            path: g3.clone(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("norway_"))
        })
        .collect();
    files.sort();
    let t3: Vec<Trace> = files
        .iter()
        .map(|p| Trace::pensieve(p))
        .collect::<Result<_, _>>()?;
    let mut drive = Vec::new();
    for f in ["car-driving-trace-1.csv", "car-driving-trace-2.csv"] {
        for c in ["Sprint", "TMobile", "Verizon"] {
            let column = format!("{c}_throughput_mbps");
            drive.push(Trace::csv(&dir.join("5g-mobility").join(f), Some(&column))?);
        }
    }
    Ok(vec![
        ("3G Norway HSDPA".to_string(), t3),
        (
            "LTE Verizon uplink".to_string(),
            vec![Trace::mahimahi(
                &dir.join("mahimahi-lte/Verizon-LTE-short.up"),
            )?],
        ),
        ("5G driving".to_string(), drive),
        (
            "5G walking".to_string(),
            vec![Trace::csv(
                &dir.join("5g-mobility/walking-trace.csv"),
                None,
            )?],
        ),
    ])
}
