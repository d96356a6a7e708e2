//! What `edgecut simulate` sets up around [`super::simulate`]: exit behaviour from measured
//! samples or calibrated probabilities, the policies by name (the one parser), one run per
//! policy, the latency-over-time plot and the JSON report.

use super::trace::Trace;
use super::{simulate, Arrivals, ExitSource, SimConfig, SimResult};
use crate::model::Model;
use crate::report::plot::{line_chart, PlotError, Series};
use crate::sched::cost::{Capacity, CostTable, ExitProbabilities, SampleExits};
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

/// The offered load against what the policies can sustain, at the trace's mean rate.
#[derive(Debug, Clone)]
pub struct Overload {
    /// Requests per second offered.
    pub offered: f64,
    /// Capacity of each option and of the best mix.
    pub capacity: Capacity,
    /// Label of the option with the highest capacity alone.
    pub best_option: String,
}

impl Overload {
    /// Whether the offered load exceeds every policy's capacity.
    pub fn overloaded(&self) -> bool {
        self.capacity.overloaded(self.offered)
    }

    /// The warning `edgecut simulate` prints when overloaded.
    pub fn warning(&self) -> Option<String> {
        self.overloaded().then(|| {
            format!(
                "warning: {:.3} requests/s offered exceed every policy's capacity at the trace's mean rate (best option alone: {} at {:.3}/s; best mix of options: {:.3}/s); queues grow with the run's length, so mean latencies depend on --requests",
                self.offered,
                self.best_option,
                self.capacity.options[self.capacity.best_option],
                self.capacity.mix
            )
        })
    }

    /// The `overload` object of `edgecut simulate --json`.
    pub fn to_json(&self) -> Value {
        json!({
            "offered_per_s": self.offered,
            "best_option": self.best_option,
            "best_option_per_s": self.capacity.options[self.capacity.best_option],
            "best_mix_per_s": self.capacity.mix,
            "overloaded": self.overloaded(),
        })
    }
}

/// The offered load of `cfg` against the capacity of `table`'s options at `trace`'s mean rate.
pub fn overload(table: &CostTable, trace: &Trace, cfg: &SimConfig) -> Overload {
    let offered = match cfg.arrivals {
        Arrivals::Periodic { rate } | Arrivals::Poisson { rate, .. } => rate,
    };
    let capacity = table.capacity(trace.mean_rate(), cfg.workers);
    Overload {
        offered,
        best_option: table.label(table.options[capacity.best_option].choice),
        capacity,
    }
}

/// The text table of `edgecut simulate`: one line per policy (mean, p95, MB sent, accuracy,
/// utilisation of device, uplink and server, cuts).
pub fn table_text(results: &[SimResult], table: &CostTable) -> String {
    let mut out = format!(
        "{:<24} {:>10} {:>10} {:>12} {:>9} {:>6} {:>6} {:>6}  cuts\n",
        "policy", "mean ms", "p95 ms", "MB sent", "accuracy", "device", "uplink", "server"
    );
    for r in results {
        let cuts: Vec<String> = r
            .cuts(table)
            .iter()
            .map(|(k, v)| format!("{k} {:.0}%", v * 100.0))
            .collect();
        let accuracy = r.accuracy.map_or_else(|| "-".into(), |x| format!("{x:.4}"));
        let u = r.utilisation;
        out.push_str(&format!(
            "{:<24} {:>10.2} {:>10.2} {:>12.3} {accuracy:>9} {:>5.0}% {:>5.0}% {:>5.0}%  {}\n",
            r.policy,
            r.mean() * 1e3,
            r.percentile(95.0) * 1e3,
            r.bytes as f64 / 1e6,
            u.device * 100.0,
            u.uplink * 100.0,
            u.server * 100.0,
            cuts.join(", ")
        ));
    }
    out
}
