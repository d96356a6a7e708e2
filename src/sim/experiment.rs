//! What `edgecut simulate` sets up around [`super::simulate`]: exit behaviour from measured
//! samples or calibrated probabilities, the policies by name (the one parser), one run per
//! policy, the latency-over-time plot and the JSON report.

use super::trace::Trace;
use super::{simulate, ExitSource, SimConfig, SimResult};
use crate::model::Model;
use crate::report::plot::{line_chart, PlotError, Series};
use crate::sched::cost::{CostTable, ExitProbabilities, SampleExits};
use crate::sched::policy;
use crate::sched::SchedError;
use serde_json::{json, Map, Value};
use std::path::Path;

/// The exit probabilities of the cost table and the simulator's exit source: measured per-sample
/// confidences when given, else calibrated probabilities `first` (seeded) when not empty, else
/// no exit.
pub fn exits(
    model: &Model,
    samples: Option<Vec<SampleExits>>,
    first: &[f64],
    threshold: f32,
    seed: u64,
) -> Result<(ExitProbabilities, ExitSource), SchedError> {
    if let Some(samples) = samples {
        let p = ExitProbabilities::from_samples(model, &samples, threshold);
        return Ok((p, ExitSource::Samples { samples, threshold }));
    }
    if first.is_empty() {
        return Ok((ExitProbabilities::none(model), ExitSource::None));
    }
    let p = ExitProbabilities::calibrated(model, first.to_vec())?;
    let first = p.first.clone();
    Ok((p, ExitSource::Calibrated { first, seed }))
}

/// Simulates every policy in `names` (the default list of [`policy::default_names`] when empty).
pub fn run_policies(
    table: &CostTable,
    trace: &Trace,
    names: &[String],
    accuracy_floor: Option<f64>,
    cfg: &SimConfig,
    exits: &ExitSource,
) -> Result<Vec<SimResult>, SchedError> {
    let names = if names.is_empty() {
        policy::default_names(table)
    } else {
        names.to_vec()
    };
    names
        .iter()
        .map(|n| {
            let mut p = policy::parse(n.trim(), table, accuracy_floor)?;
            Ok(simulate(table, trace, p.as_mut(), cfg, exits))
        })
        .collect()
}

/// Writes the rolling mean latency over time (window of 20 requests) of every policy as SVG.
pub fn latency_plot(path: &Path, title: &str, results: &[SimResult]) -> Result<(), PlotError> {
    let series: Vec<Series> = results
        .iter()
        .map(|r| Series {
            name: r.policy.clone(),
            points: (0..r.latencies.len())
                .step_by(5)
                .map(|i| {
                    let w = &r.latencies[i.saturating_sub(19)..=i];
                    (r.arrivals[i], crate::stats::mean(w) * 1e3)
                })
                .collect(),
        })
        .collect();
    line_chart(
        path,
        title,
        "time (s)",
        "latency, rolling mean of 20 (ms)",
        &series,
        false,
    )
}

/// The `policies` object of `edgecut simulate --json`: policy name -> [`SimResult::to_json`].
pub fn policies_json(results: &[SimResult], table: &CostTable) -> Value {
    let m: Map<String, Value> = results
        .iter()
        .map(|r| (r.policy.clone(), r.to_json(table)))
        .collect();
    json!(m)
}

/// The text table of `edgecut simulate`: one line per policy (mean, p95, MB sent, accuracy, cuts).
pub fn table_text(results: &[SimResult], table: &CostTable) -> String {
    let mut out = format!(
        "{:<24} {:>10} {:>10} {:>12} {:>9}  cuts\n",
        "policy", "mean ms", "p95 ms", "MB sent", "accuracy"
    );
    for r in results {
        let cuts: Vec<String> = r
            .cuts(table)
            .iter()
            .map(|(k, v)| format!("{k} {:.0}%", v * 100.0))
            .collect();
        let accuracy = r.accuracy.map_or_else(|| "-".into(), |x| format!("{x:.4}"));
        out.push_str(&format!(
            "{:<24} {:>10.2} {:>10.2} {:>12.3} {accuracy:>9}  {}\n",
            r.policy,
            r.mean() * 1e3,
            r.percentile(95.0) * 1e3,
            r.bytes as f64 / 1e6,
            cuts.join(", ")
        ));
    }
    out
}
