//! `edgecut study`: the dynamic-split-computing study (Bakhtiarnia et al. 2022) on measured
//! profiles: a data-rate x server-load sweep of the cost model for FP32, FP16 and INT8 split
//! tensors, replays of the real traces through the simulator, and the rate estimators' prediction
//! error on those traces. Writes Markdown tables, a JSON summary and SVG plots to `--out`.

use crate::load;
use crate::simulate::profiles;
use anyhow::{bail, Context, Result};
use edgecut::report::plot::{heatmap, line_chart, Series};
use edgecut::sched::cost::{CostTable, ExitProbabilities};
use edgecut::sched::estimate::{evaluate, RateMethod};
use edgecut::sched::policy::{self, Policy};
use edgecut::sched::{Cut, Encoding, Estimates};
use edgecut::sim::trace::Trace;
use edgecut::sim::{simulate, Arrivals, ExitSource, ServerLoad, SimConfig};
use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct StudyArgs {
    /// Model directory.
    #[arg(default_value = "models/efficientnet-b0")]
    model: PathBuf,
    /// Device profile (default: <model>/profiles/device.json).
    #[arg(long)]
    device_profile: Option<PathBuf>,
    /// Server profile (default: <model>/profiles/server.json); its batch sizes are the load levels.
    #[arg(long)]
    server_profile: Option<PathBuf>,
    /// Folder of real traces (norway-hsdpa-3g/, mahimahi-lte/, 5g-mobility/), read in place.
    #[arg(long)]
    traces: PathBuf,
    /// Output folder for tables and plots.
    #[arg(long, default_value = "docs/study")]
    out: PathBuf,
    /// Round-trip time, milliseconds.
    #[arg(long, default_value_t = 20.0)]
    rtt_ms: f64,
    /// Server queueing delays swept, milliseconds (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,500,2000")]
    queue_ms: Vec<f64>,
    /// Server shares swept: the server is time-shared by N requests, so its block times are N x the profile's.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    share: Vec<f64>,
    /// Requests per replayed trace.
    #[arg(long, default_value_t = 400)]
    requests: usize,
    /// Print one JSON object (the summary) instead of the tables.
    #[arg(long)]
    json: bool,
}

const RATES_HEAT: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 127.0];

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

pub fn study(a: StudyArgs) -> Result<()> {
    let model = load(&a.model)?;
    let (device, server) = profiles(
        &a.model,
        &model,
        a.device_profile.as_deref(),
        a.server_profile.as_deref(),
    )?;
    if !a.traces.is_dir() {
        bail!("--traces {} is not a folder of traces", a.traces.display());
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let none = ExitProbabilities::none(&model);
    let base = CostTable::new(&model, &device, &server, &none)?;
    let mut md = String::new();
    let mut summary = Map::new();
    writeln!(
        md,
        "Model `{}`; device profile: {} x{} (`{}`), server profile: {} x{}; RTT {} ms.\n",
        model.name(),
        device.adapter,
        device.slowdown,
        device.backend,
        server.adapter,
        server.slowdown,
        a.rtt_ms
    )?;
    writeln!(
        md,
        "Device-only {:.0} ms, server-only compute {:.0} ms (batch {}).\n",
        base.device_block_s.iter().sum::<f64>() * 1e3,
        base.server_block_s.iter().sum::<f64>() * 1e3,
        server.batches.iter().min().copied().unwrap_or(1)
    )?;

    // --- 1. Sweep: rates 1..=127 MB/s x load levels (server batch x queue) ---
    let mut loads: Vec<(String, CostTable, f64)> = Vec::new();
    for &n in &a.share {
        if !(n.is_finite() && n >= 1.0) {
            bail!("--share {n}: a server shared by N >= 1 requests");
        }
        let s = base.server_block_s.iter().map(|x| x * n).collect();
        let t = CostTable::from_times(&model, base.device_block_s.clone(), s, &none)?;
        for &q in &a.queue_ms {
            loads.push((format!("shared by {n}, queue {q} ms"), t.clone(), q));
        }
    }
    writeln!(md, "## Sweep: data rate 1-127 MB/s x server load\n")?;
    writeln!(md, "Server load: the server is time-shared by N requests (its block times are N x the profile's, N in {:?}) and the request waits Q in its queue (Q in {:?} ms). {} load levels x 127 rates = {} scenarios per encoding.\n", a.share, a.queue_ms, loads.len(), loads.len() * 127)?;
    writeln!(md, "| split tensors | scenarios where a split beats device-only and server-only | best split's mean gain over the better of the two there |")?;
    writeln!(md, "|---|---|---|")?;
    let mut sweep_json = Map::new();
    let mut gain_tables: Vec<(Encoding, Vec<String>, Vec<Vec<f64>>)> = Vec::new();
    for enc in Encoding::ALL {
        let allowed = |o: &edgecut::sched::cost::OptionCost| match o.choice.cut {
            Cut::After(_) => o.choice.encoding == enc,
            _ => true,
        };
        let (mut wins, mut total, mut gain_sum) = (0usize, 0usize, 0.0);
        for (_, t, q) in &loads {
            for r in 1..=127 {
                let est = Estimates::from_mb_ms(r as f64, a.rtt_ms, *q);
                let dev = t.options.last().expect("device").expected(&est);
                let srv = t.options[0].expected(&est);
                let split = t
                    .options
                    .iter()
                    .filter(|o| matches!(o.choice.cut, Cut::After(_)) && allowed(o))
                    .map(|o| o.expected(&est))
                    .fold(f64::INFINITY, f64::min);
                total += 1;
                if split < dev.min(srv) {
                    wins += 1;
                    gain_sum += (dev.min(srv) - split) / dev.min(srv);
                }
            }
        }
        let frac = wins as f64 / total as f64;
        let g = if wins > 0 {
            gain_sum / wins as f64
        } else {
            0.0
        };
        writeln!(
            md,
            "| {enc} | {} ({wins} of {total}) | {} |",
            pct(frac),
            pct(g)
        )?;

        // (b) gains per static option: rows options, columns rates (mean over loads); plus a table.
        let opts: Vec<usize> = base
            .options
            .iter()
            .enumerate()
            .filter(|(_, o)| allowed(o))
            .map(|(i, _)| i)
            .collect();
        let labels: Vec<String> = opts
            .iter()
            .map(|&i| base.label(base.options[i].choice))
            .collect();
        let mut gains = vec![vec![0.0; RATES_HEAT.len()]; opts.len()];
        for (ri, &r) in RATES_HEAT.iter().enumerate() {
            for (_, t, q) in &loads {
                let est = Estimates::from_mb_ms(r, a.rtt_ms, *q);
                let dynamic = opts
                    .iter()
                    .map(|&i| t.options[i].expected(&est))
                    .fold(f64::INFINITY, f64::min);
                for (oi, &i) in opts.iter().enumerate() {
                    let s = t.options[i].expected(&est);
                    gains[oi][ri] += (s - dynamic) / s / loads.len() as f64;
                }
            }
        }
        let cols: Vec<String> = RATES_HEAT.iter().map(|r| format!("{r}")).collect();
        heatmap(
            &a.out.join(format!("gain-{enc}.svg")),
            &format!(
                "gain of dynamic over each static option ({enc} split tensors), mean over loads"
            ),
            "data rate (MB/s)",
            "static option",
            &cols,
            &labels,
            &gains,
            &|v| format!("{:.0}%", 100.0 * v),
        )?;
        // Per-option heatmaps over (rate, load) for this encoding.
        let load_labels: Vec<String> = loads.iter().map(|(l, _, _)| l.clone()).collect();
        for (oi, &i) in opts.iter().enumerate() {
            let mut m = vec![vec![0.0; RATES_HEAT.len()]; loads.len()];
            for (li, (_, t, q)) in loads.iter().enumerate() {
                for (ri, &r) in RATES_HEAT.iter().enumerate() {
                    let est = Estimates::from_mb_ms(r, a.rtt_ms, *q);
                    let dynamic = opts
                        .iter()
                        .map(|&j| t.options[j].expected(&est))
                        .fold(f64::INFINITY, f64::min);
                    let s = t.options[i].expected(&est);
                    m[li][ri] = (s - dynamic) / s;
                }
            }
            let name = labels[oi].replace(':', "-");
            heatmap(
                &a.out.join(format!("gain-{enc}-{name}.svg")),
                &format!(
                    "(T_static - T_dynamic) / T_static for {} ({enc})",
                    labels[oi]
                ),
                "data rate (MB/s)",
                "server load",
                &cols,
                &load_labels,
                &m,
                &|v| format!("{:.0}%", 100.0 * v),
            )?;
        }
        // (c) latency vs rate per option, idle server.
        let (_, t0, q0) = &loads[0];
        let mut series: Vec<Series> = opts
            .iter()
            .zip(&labels)
            .map(|(&i, l)| Series {
                name: l.clone(),
                points: (1..=127)
                    .map(|r| {
                        (
                            r as f64,
                            t0.options[i].expected(&Estimates::from_mb_ms(r as f64, a.rtt_ms, *q0))
                                * 1e3,
                        )
                    })
                    .collect(),
            })
            .collect();
        series.push(Series {
            name: "dynamic".into(),
            points: (1..=127)
                .map(|r| {
                    let est = Estimates::from_mb_ms(r as f64, a.rtt_ms, *q0);
                    (
                        r as f64,
                        opts.iter()
                            .map(|&i| t0.options[i].expected(&est))
                            .fold(f64::INFINITY, f64::min)
                            * 1e3,
                    )
                })
                .collect(),
        });
        line_chart(
            &a.out.join(format!("latency-vs-rate-{enc}.svg")),
            &format!(
                "expected latency vs data rate, {enc} split tensors, {}",
                loads[0].0
            ),
            "data rate (MB/s, log)",
            "latency (ms)",
            &series,
            true,
        )?;
        let mut gj = Map::new();
        for (oi, l) in labels.iter().enumerate() {
            gj.insert(l.clone(), json!(gains[oi]));
        }
        sweep_json.insert(enc.to_string(), json!({"split_wins": frac, "scenarios": total, "mean_gain_when_split_wins": g, "gain_by_rate": gj, "rates": RATES_HEAT}));
        gain_tables.push((enc, labels, gains));
    }
    writeln!(md)?;
    {
        for (enc, labels, gains) in &gain_tables {
            writeln!(md, "Gain `(T_static - T_dynamic) / T_static` per static option, {enc} split tensors (mean over the load levels; plot `gain-{enc}.svg`, per-load heatmaps `gain-{enc}-<option>.svg`):\n")?;
            write!(md, "| option |")?;
            RATES_HEAT.iter().for_each(|r| {
                let _ = write!(md, " {r} MB/s |");
            });
            writeln!(md)?;
            writeln!(md, "|---|{}", "---|".repeat(RATES_HEAT.len()))?;
            for (l, row) in labels.iter().zip(gains) {
                write!(md, "| {l} |")?;
                row.iter().for_each(|v| {
                    let _ = write!(md, " {} |", pct(*v));
                });
                writeln!(md)?;
            }
            writeln!(md)?;
        }
    }
    summary.insert("sweep".into(), Value::Object(sweep_json));

    // --- 2. Real traces ---
    let groups = trace_groups(&a.traces)?;
    let device_total: f64 = base.device_block_s.iter().sum();
    // One request per 1.25 device-only times, so that every policy, device-only included, keeps up.
    let rate = 1.0 / (1.25 * device_total);
    let mut names = vec!["device".to_string(), "server".to_string()];
    for &k in &base.candidates {
        for e in ["fp32", "int8"] {
            names.push(format!("static:{}:{e}", base.block_names[k]));
        }
    }
    names.extend(["dynamic-fp32", "dynamic", "oracle"].map(String::from));
    writeln!(md, "## Real traces\n")?;
    writeln!(md, "Periodic requests every {:.2} s (1.25 x device-only time), {} per trace file (traces loop), idle server (not shared, no queue), RTT {} ms; rate estimator harmonic mean of 5; dynamic policies probe with 16 kB when the uplink was not measured for 1 s. Latency over all requests of the group (ms).\n", 1.0 / rate, a.requests, a.rtt_ms)?;
    let mut trace_json = Map::new();
    let cfg = SimConfig {
        requests: a.requests,
        arrivals: Arrivals::Periodic { rate },
        rtt_s: a.rtt_ms * 1e-3,
        workers: 1,
        load: ServerLoad::Constant(0.0),
        ..SimConfig::default()
    };
    for (group, traces) in &groups {
        let mean_mbit =
            traces.iter().map(|t| t.mean_rate()).sum::<f64>() / traces.len() as f64 * 8e-6;
        writeln!(
            md,
            "### {group} ({} trace(s), mean {:.2} Mbit/s)\n",
            traces.len(),
            mean_mbit
        )?;
        writeln!(
            md,
            "| policy | mean ms | p95 ms | vs oracle (mean) | MB sent per request | cuts |"
        )?;
        writeln!(md, "|---|---|---|---|---|---|")?;
        let mut rows = Vec::new();
        let mut cdf = Vec::new();
        for name in &names {
            let mut lat = Vec::new();
            let mut bytes = 0u64;
            let mut cuts: std::collections::BTreeMap<String, f64> = Default::default();
            for tr in traces {
                let mut p: Box<dyn Policy> = policy::parse(name, &base, None)?;
                let r = simulate(&base, tr, p.as_mut(), &cfg, &ExitSource::None);
                bytes += r.bytes;
                for (k, v) in r.cuts(&base) {
                    *cuts.entry(k).or_default() += v / traces.len() as f64;
                }
                lat.extend(r.latencies);
            }
            let mean = lat.iter().sum::<f64>() / lat.len() as f64;
            let p95 = edgecut::stats::percentile(&lat, 95.0);
            rows.push((
                name.clone(),
                mean,
                p95,
                bytes as f64 / lat.len() as f64,
                cuts,
            ));
            let mut s = lat.clone();
            s.sort_by(f64::total_cmp);
            let step = (s.len() / 200).max(1);
            cdf.push(Series {
                name: name.clone(),
                points: s
                    .iter()
                    .enumerate()
                    .step_by(step)
                    .map(|(i, &v)| (v * 1e3, (i + 1) as f64 / s.len() as f64))
                    .collect(),
            });
        }
        let oracle = rows
            .iter()
            .find(|r| r.0 == "oracle")
            .map(|r| r.1)
            .unwrap_or(f64::NAN);
        let mut gj = Map::new();
        for (name, mean, p95, b, cuts) in &rows {
            let c: Vec<String> = cuts
                .iter()
                .filter(|(_, v)| **v >= 0.005)
                .map(|(k, v)| format!("{k} {:.0}%", v * 100.0))
                .collect();
            writeln!(
                md,
                "| {name} | {:.0} | {:.0} | {:+.1}% | {:.3} | {} |",
                mean * 1e3,
                p95 * 1e3,
                (mean / oracle - 1.0) * 100.0,
                b / 1e6,
                c.join(", ")
            )?;
            gj.insert(name.clone(), json!({"mean_ms": mean * 1e3, "p95_ms": p95 * 1e3, "bytes_per_request": b, "cuts": cuts}));
        }
        writeln!(md)?;
        let slug = group
            .split_whitespace()
            .next()
            .unwrap_or("trace")
            .to_lowercase();
        cdf.retain(|s| {
            s.name == "device"
                || s.name == "server"
                || s.name.starts_with("dynamic")
                || s.name == "oracle"
                || s.name.ends_with("int8")
        });
        let cdf_file = format!("cdf-{slug}.svg");
        line_chart(
            &a.out.join(&cdf_file),
            &format!("latency CDF, {group}"),
            "latency (ms)",
            "fraction of requests",
            &cdf,
            false,
        )?;
        writeln!(md, "Plot: `{cdf_file}`.\n")?;
        trace_json.insert(group.clone(), Value::Object(gj));
    }
    summary.insert("traces".into(), Value::Object(trace_json));

    // --- 3. Rate estimators on the real traces ---
    let methods = [
        RateMethod::Last,
        RateMethod::Ewma {
            alpha: 0.1,
            clip: 4.0,
        },
        RateMethod::Ewma {
            alpha: 0.3,
            clip: 4.0,
        },
        RateMethod::Ewma {
            alpha: 0.6,
            clip: 4.0,
        },
        RateMethod::Ewma {
            alpha: 0.3,
            clip: f64::INFINITY,
        },
        RateMethod::Harmonic { window: 3 },
        RateMethod::Harmonic { window: 5 },
        RateMethod::Harmonic { window: 10 },
        RateMethod::Harmonic { window: 20 },
    ];
    writeln!(md, "## Rate estimators on the real traces\n")?;
    writeln!(md, "One 50 kB transfer per second over each trace (one loop); each transfer's duration is predicted from the estimate built from the earlier ones. Mean / median absolute percentage error of the predicted duration, and the fraction of transfers taking more than twice as long as predicted.\n")?;
    write!(md, "| estimator |")?;
    groups.iter().for_each(|(g, _)| {
        let _ = write!(md, " {g}: MAPE / median / >2x |");
    });
    writeln!(md)?;
    writeln!(md, "|---|{}", "---|".repeat(groups.len()))?;
    let mut est_json = Map::new();
    for m in methods {
        write!(md, "| {} |", m.name())?;
        let mut mj = Map::new();
        for (g, traces) in &groups {
            let mut transfers_all = Vec::new();
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
                transfers_all.extend(transfers);
            }
            write!(
                md,
                " {:.1}% / {:.1}% / {:.1}% |",
                100.0 * mape / n,
                100.0 * med / n,
                100.0 * under / n
            )?;
            mj.insert(
                g.clone(),
                json!({"mape": mape / n, "median_ape": med / n, "under_50": under / n}),
            );
        }
        writeln!(md)?;
        est_json.insert(m.name(), Value::Object(mj));
    }
    writeln!(md)?;
    summary.insert("estimators".into(), Value::Object(est_json));

    std::fs::write(a.out.join("tables.md"), &md)
        .with_context(|| format!("writing {}", a.out.join("tables.md").display()))?;
    let summary = Value::Object(summary);
    std::fs::write(
        a.out.join("study.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    if a.json {
        println!("{summary}");
    } else {
        print!("{md}");
        println!("wrote {}", a.out.display());
    }
    Ok(())
}

/// The real trace groups: 3G (every Norway file), LTE uplink, 5G driving (each carrier) and walking.
fn trace_groups(dir: &Path) -> Result<Vec<(String, Vec<Trace>)>> {
    let mut g = Vec::new();
    let g3 = dir.join("norway-hsdpa-3g");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&g3)
        .with_context(|| format!("reading {}", g3.display()))?
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
    g.push(("3G Norway HSDPA".to_string(), t3));
    g.push((
        "LTE Verizon uplink".to_string(),
        vec![Trace::mahimahi(
            &dir.join("mahimahi-lte/Verizon-LTE-short.up"),
        )?],
    ));
    let mut drive = Vec::new();
    for f in ["car-driving-trace-1.csv", "car-driving-trace-2.csv"] {
        for c in [
            "Sprint_throughput_mbps",
            "TMobile_throughput_mbps",
            "Verizon_throughput_mbps",
        ] {
            drive.push(Trace::csv(&dir.join("5g-mobility").join(f), Some(c))?);
        }
    }
    g.push(("5G driving".to_string(), drive));
    g.push((
        "5G walking".to_string(),
        vec![Trace::csv(
            &dir.join("5g-mobility/walking-trace.csv"),
            None,
        )?],
    ));
    Ok(g)
}
