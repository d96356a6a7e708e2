//! Trace-driven discrete-event simulation of split inference: a request stream (periodic or
//! Poisson) through device compute (one request at a time), an uplink that follows a bandwidth
//! [`trace::Trace`] (bytes cross in order at the time-varying rate, plus half the RTT each way), a
//! server with `K` workers behind a background queueing delay, and early exits on the device
//! (per-sample confidences measured on real data, or calibrated probabilities).
//!
//! Policies see only what a real device would: estimates built from transfers and server reports
//! that have completed before the decision. Adaptive policies send a small probe when they have
//! not measured the uplink for a while (its bytes count and it occupies the link). [`Oracle`]
//! decisions get the true remote time of each option from the same simulated link and server.
//!
//! [`Oracle`]: crate::sched::policy::Oracle

pub mod experiment;
pub mod study;
pub mod trace;

use crate::sched::cost::{CostTable, OptionCost, SampleExits};
use crate::sched::estimate::{Estimator, RateMethod};
use crate::sched::policy::{Context, Policy};
use crate::sched::profile::Profile;
use crate::sched::{Cut, Estimates};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::{Path, PathBuf};
use trace::{Trace, TraceError};

/// Background queueing delay at the server over time (seconds).
#[derive(Debug, Clone, PartialEq)]
pub enum ServerLoad {
    /// The same delay always.
    Constant(f64),
    /// Cycles through delays, `dwell` seconds each.
    Steps {
        /// Delays, seconds.
        delays: Vec<f64>,
        /// Seconds per step.
        dwell: f64,
    },
    /// Piecewise constant from `(time, delay)` points (seconds), looping.
    Points(Vec<(f64, f64)>),
}

impl ServerLoad {
    /// Parses `MS` or `const:MS`, `steps:MS1,MS2,...@DWELL_S`, or `file:PATH` (lines
    /// `time_seconds queue_ms`, like a Pensieve trace).
    pub fn parse(spec: &str) -> Result<Self, TraceError> {
        let bad = |reason: String| TraceError::Invalid {
            what: format!("server load '{spec}'"),
            reason,
        };
        let ms = |s: &str| -> Result<f64, TraceError> {
            let v: f64 = s
                .trim()
                .trim_end_matches("ms")
                .parse()
                .map_err(|_| bad(format!("'{s}' is not a number of milliseconds")))?;
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(format!("{v} ms must be >= 0")));
            }
            Ok(v * 1e-3)
        };
        if let Some(rest) = spec.strip_prefix("steps:") {
            let (d, dwell) = rest
                .split_once('@')
                .ok_or_else(|| bad("expected steps:MS1,MS2@DWELL".into()))?;
            let delays = d.split(',').map(ms).collect::<Result<Vec<_>, _>>()?;
            let dwell: f64 = dwell
                .parse()
                .map_err(|_| bad(format!("dwell '{dwell}' is not seconds")))?;
            if dwell.is_nan() || dwell <= 0.0 {
                return Err(bad("dwell must be positive".into()));
            }
            return Ok(ServerLoad::Steps { delays, dwell });
        }
        if let Some(path) = spec.strip_prefix("file:") {
            let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io {
                path: Path::new(path).to_path_buf(),
                source,
            })?;
            let mut pts: Vec<(f64, f64)> = Vec::new();
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let f: Vec<&str> = line.split_whitespace().collect();
                let perr = |reason: String| TraceError::Parse {
                    path: path.into(),
                    line: i + 1,
                    reason,
                };
                if f.len() != 2 {
                    return Err(perr(format!("expected 'time_s queue_ms', got '{line}'")));
                }
                let t: f64 = f[0]
                    .parse()
                    .map_err(|_| perr(format!("time '{}' is not a number", f[0])))?;
                let q = ms(f[1]).map_err(|e| perr(e.to_string()))?;
                if pts.last().is_some_and(|&(p, _)| t <= p) {
                    return Err(perr(format!("time {t} does not increase")));
                }
                pts.push((t, q));
            }
            if pts.is_empty() {
                return Err(TraceError::Empty(path.into()));
            }
            return Ok(ServerLoad::Points(pts));
        }
        Ok(ServerLoad::Constant(ms(spec
            .strip_prefix("const:")
            .unwrap_or(spec))?))
    }

    /// Delay at time `t`.
    pub fn delay_at(&self, t: f64) -> f64 {
        match self {
            ServerLoad::Constant(d) => *d,
            ServerLoad::Steps { delays, dwell } => {
                delays[((t / dwell).floor() as usize) % delays.len()]
            }
            ServerLoad::Points(p) => {
                let last = p[p.len() - 1].0;
                let span = last + (last - p[0].0).max(1.0) / p.len() as f64;
                let u = if t > last {
                    p[0].0 + (t - p[0].0).rem_euclid(span - p[0].0)
                } else {
                    t
                };
                let i = p.partition_point(|&(s, _)| s <= u).saturating_sub(1);
                p[i].1
            }
        }
    }
}

/// When requests arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrivals {
    /// One every `1 / rate` seconds.
    Periodic {
        /// Requests per second.
        rate: f64,
    },
    /// Poisson with `rate` requests per second (seeded).
    Poisson {
        /// Requests per second.
        rate: f64,
        /// Seed.
        seed: u64,
    },
}

/// Where each sample's exit behaviour comes from.
#[derive(Debug, Clone)]
pub enum ExitSource {
    /// No exit answers.
    None,
    /// Measured per-sample confidences (cycled through), with the threshold.
    Samples {
        /// The samples.
        samples: Vec<SampleExits>,
        /// Confidence strictly above it answers.
        threshold: f32,
    },
    /// Exit `j` (in `after_block` order) answers first with probability `first[j]` (seeded).
    Calibrated {
        /// Probabilities.
        first: Vec<f64>,
        /// Seed.
        seed: u64,
    },
}

impl ExitSource {
    /// Request `r`'s first answering exit among the first `enabled` (in `after_block` order),
    /// and whether its answer is right (`None` when correctness is unknown).
    fn sample(
        &self,
        r: usize,
        enabled: usize,
        rng: &mut rand_chacha::ChaCha8Rng,
    ) -> (Option<usize>, Option<bool>) {
        match self {
            ExitSource::None => (None, None),
            ExitSource::Samples { samples, threshold } => {
                let s = &samples[r % samples.len()];
                (
                    s.first_exit(*threshold, enabled),
                    Some(s.correct(*threshold, enabled)),
                )
            }
            ExitSource::Calibrated { first, .. } => {
                let u: f64 = rng.random();
                let mut acc = 0.0;
                let e = first.iter().take(enabled).position(|p| {
                    acc += p;
                    u < acc
                });
                (e, None)
            }
        }
    }
}

/// Simulation settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Requests to simulate.
    pub requests: usize,
    /// Arrival process.
    pub arrivals: Arrivals,
    /// Round-trip time, seconds.
    pub rtt_s: f64,
    /// Server workers.
    pub workers: usize,
    /// Background queueing delay at the server.
    pub load: ServerLoad,
    /// Rate estimator of adaptive policies.
    pub rate_method: RateMethod,
    /// An adaptive policy probes the uplink when its last measurement is older than this (seconds).
    pub probe_interval_s: f64,
    /// Probe size, bytes.
    pub probe_bytes: u64,
    /// Time offset into the trace where the stream starts (seconds).
    pub start_s: f64,
}

impl SimConfig {
    /// `requests` requests at `rate` per second (Poisson with `poisson_seed`, else periodic),
    /// `rtt_ms` round trip, `workers` server workers; the rest default. Checks the ranges.
    pub fn stream(
        requests: usize,
        rate: f64,
        poisson_seed: Option<u64>,
        rtt_ms: f64,
        workers: usize,
    ) -> Result<Self, crate::sched::SchedError> {
        let bad = |what: &str, reason: String| crate::sched::SchedError::Invalid {
            what: what.into(),
            reason,
        };
        if !(rate.is_finite() && rate > 0.0) {
            return Err(bad(
                "--rate",
                format!("{rate}: must be a positive number of requests per second"),
            ));
        }
        if !(rtt_ms.is_finite() && rtt_ms >= 0.0) {
            return Err(bad("--rtt-ms", format!("{rtt_ms}: must be >= 0")));
        }
        if workers == 0 || requests == 0 {
            return Err(bad("--workers and --requests", "must be at least 1".into()));
        }
        Ok(Self {
            requests,
            arrivals: match poisson_seed {
                Some(seed) => Arrivals::Poisson { rate, seed },
                None => Arrivals::Periodic { rate },
            },
            rtt_s: rtt_ms * 1e-3,
            workers,
            ..Self::default()
        })
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            requests: 1000,
            arrivals: Arrivals::Periodic { rate: 2.0 },
            rtt_s: 0.02,
            workers: 1,
            load: ServerLoad::Constant(0.0),
            rate_method: RateMethod::DEFAULT,
            probe_interval_s: 1.0,
            probe_bytes: 16_000,
            start_s: 0.0,
        }
    }
}

/// What one policy did over a simulated stream.
#[derive(Debug, Clone)]
pub struct SimResult {
    /// Policy name.
    pub policy: String,
    /// Per-request latency, seconds, in arrival order.
    pub latencies: Vec<f64>,
    /// Per-request arrival time, seconds.
    pub arrivals: Vec<f64>,
    /// Per-request option index into the table.
    pub options: Vec<usize>,
    /// Bytes sent (requests and probes).
    pub bytes: u64,
    /// Bytes of probes alone.
    pub probe_bytes: u64,
    /// Fraction answered correctly, when per-sample correctness is known.
    pub accuracy: Option<f64>,
    /// Fraction answered by a device exit.
    pub exit_rate: f64,
}

impl SimResult {
    /// Mean latency, seconds.
    pub fn mean(&self) -> f64 {
        crate::stats::mean(&self.latencies)
    }

    /// Latency percentile `q` in 0..=100 ([`crate::stats::percentile`]), seconds.
    pub fn percentile(&self, q: f64) -> f64 {
        crate::stats::percentile(&self.latencies, q)
    }

    /// The JSON of `edgecut simulate --json` for this policy (`mean_ms`, `p50_ms`, `p95_ms`,
    /// `bytes`, `probe_bytes`, `accuracy`, `exit_rate`, `cuts`).
    pub fn to_json(&self, table: &CostTable) -> serde_json::Value {
        serde_json::json!({
            "mean_ms": self.mean() * 1e3,
            "p50_ms": self.percentile(50.0) * 1e3,
            "p95_ms": self.percentile(95.0) * 1e3,
            "bytes": self.bytes,
            "probe_bytes": self.probe_bytes,
            "accuracy": self.accuracy,
            "exit_rate": self.exit_rate,
            "cuts": self.cuts(table),
        })
    }

    /// Fraction of requests per choice label ([`crate::sched::Choice::label`]).
    pub fn cuts(&self, table: &CostTable) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        let n = self.options.len().max(1) as f64;
        for &i in &self.options {
            *m.entry(table.label(table.options[i].choice)).or_insert(0.0) += 1.0 / n;
        }
        m
    }
}

/// The profile at `given`, else the model's default `<model_dir>/profiles/<default>` (for an
/// `.onnx` file `<file>`, `<file stem>-profiles/<default>` beside it).
pub fn profile_for(
    model_dir: &Path,
    model: &crate::model::Model,
    given: Option<&Path>,
    default: &str,
) -> Result<Profile, crate::sched::SchedError> {
    let path = given
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_profiles_dir(model_dir).join(default));
    Profile::load(&path, model)
}

/// Where a model's default profiles live: `<dir>/profiles` for a model directory,
/// `<stem>-profiles` beside an `.onnx` file.
pub fn default_profiles_dir(model: &Path) -> PathBuf {
    if model.is_file() {
        let stem = model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        model.with_file_name(format!("{stem}-profiles"))
    } else {
        model.join("profiles")
    }
}

/// The device and server profiles: each given, or the model's default
/// (`<model_dir>/profiles/device.json`, `server.json`).
pub fn profiles(
    model_dir: &Path,
    model: &crate::model::Model,
    device: Option<&Path>,
    server: Option<&Path>,
) -> Result<(Profile, Profile), crate::sched::SchedError> {
    Ok((
        profile_for(model_dir, model, device, "device.json")?,
        profile_for(model_dir, model, server, "server.json")?,
    ))
}

/// An observation that becomes visible to the device at `at` (ns, for ordering).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    at_ns: u64,
    kind: u8,
    bytes: u64,
    value_ns: u64,
}

const TRANSFER: u8 = 0;
const RTT: u8 = 1;
const QUEUE: u8 = 2;

fn ns(s: f64) -> u64 {
    (s.max(0.0) * 1e9).round() as u64
}

/// Feeds the estimator every observation visible at `now_ns`, in order; returns the time
/// (seconds) of the last transfer among them, if any.
fn observe_until(
    pending: &mut BinaryHeap<Reverse<Pending>>,
    now_ns: u64,
    est: &mut Estimator,
) -> Option<f64> {
    let mut last_transfer = None;
    while pending.peek().is_some_and(|Reverse(p)| p.at_ns <= now_ns) {
        let Some(Reverse(p)) = pending.pop() else {
            break;
        };
        match p.kind {
            TRANSFER => {
                est.observe_transfer(p.bytes, p.value_ns as f64 * 1e-9);
                last_transfer = Some(p.at_ns as f64 * 1e-9);
            }
            RTT => est.observe_rtt(p.value_ns as f64 * 1e-9),
            _ => est.observe_queue_us(p.value_ns / 1000),
        }
    }
    last_transfer
}

/// Simulates `cfg.requests` requests under `policy` over `trace`.
pub fn simulate(
    table: &CostTable,
    trace: &Trace,
    policy: &mut dyn Policy,
    cfg: &SimConfig,
    exits: &ExitSource,
) -> SimResult {
    let n_blocks = table.blocks;
    let mut prefix = vec![0.0; n_blocks + 1];
    for i in 0..n_blocks {
        prefix[i + 1] = prefix[i] + table.device_block_s[i];
    }
    let mut arrival_rng = rand_chacha::ChaCha8Rng::seed_from_u64(match cfg.arrivals {
        Arrivals::Poisson { seed, .. } => seed,
        _ => 0,
    });
    let mut exit_rng = rand_chacha::ChaCha8Rng::seed_from_u64(match exits {
        ExitSource::Calibrated { seed, .. } => *seed,
        _ => 0,
    });
    let adaptive = policy.adaptive();
    let mut est = Estimator::new(
        cfg.rate_method,
        Estimates {
            rate_bytes_per_s: trace.mean_rate(),
            rtt_s: cfg.rtt_s,
            queue_s: 0.0,
        },
    );
    let mut pending: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut last_rate_obs = f64::NEG_INFINITY;
    let mut workers = vec![cfg.start_s; cfg.workers.max(1)];
    let (mut device_free, mut uplink_free) = (cfg.start_s, cfg.start_s);
    let mut t_arr = cfg.start_s;
    let mut out = SimResult {
        policy: policy.name().to_string(),
        latencies: Vec::with_capacity(cfg.requests),
        arrivals: Vec::with_capacity(cfg.requests),
        options: Vec::with_capacity(cfg.requests),
        bytes: 0,
        probe_bytes: 0,
        accuracy: None,
        exit_rate: 0.0,
    };
    let (mut correct, mut known, mut exited) = (0usize, true, 0usize);
    let half = cfg.rtt_s / 2.0;
    for r in 0..cfg.requests {
        if r > 0 {
            t_arr += match cfg.arrivals {
                Arrivals::Periodic { rate } => 1.0 / rate,
                Arrivals::Poisson { rate, .. } => Exp::new(rate)
                    .map(|e| e.sample(&mut arrival_rng))
                    .unwrap_or(1.0),
            };
        }
        let start = t_arr.max(device_free);
        // Observations completed before this decision.
        if let Some(t) = observe_until(&mut pending, ns(start), &mut est) {
            last_rate_obs = t;
        }
        if adaptive && start - last_rate_obs > cfg.probe_interval_s {
            let s = start.max(uplink_free);
            let e = trace.transfer_end(s, cfg.probe_bytes as f64);
            uplink_free = e;
            out.bytes += cfg.probe_bytes;
            out.probe_bytes += cfg.probe_bytes;
            last_rate_obs = start; // in flight: do not probe again before it lands
            pending.push(Reverse(Pending {
                at_ns: ns(e),
                kind: TRANSFER,
                bytes: cfg.probe_bytes,
                value_ns: ns(e - s),
            }));
        }
        let truth = |o: &OptionCost| -> f64 {
            let ready = start + o.device_s;
            let s = ready.max(uplink_free);
            let e = trace.transfer_end(s, o.bytes as f64);
            let arr = e + half;
            let srv = (arr + cfg.load.delay_at(arr))
                .max(workers.iter().copied().fold(f64::INFINITY, f64::min));
            srv - ready + half
        };
        let ctx = Context {
            estimates: est.estimates(),
            truth: Some(&truth),
        };
        let d = policy.decide(&ctx);
        let o = &table.options[d.index];
        // This sample's exit, and whether its answer is right (when known).
        let (first, right) = exits.sample(r, o.exits_enabled, &mut exit_rng);
        match right {
            Some(right) => correct += usize::from(right),
            None => known = false,
        }
        let done = if let Some(j) = first {
            exited += 1;
            let dev_end = start + prefix[table.exits.after_block[j] + 1];
            device_free = dev_end;
            dev_end
        } else {
            let dev_end = start + o.device_s;
            device_free = dev_end;
            if o.choice.cut == Cut::Device {
                dev_end
            } else {
                let s = dev_end.max(uplink_free);
                let e = trace.transfer_end(s, o.bytes as f64);
                uplink_free = e;
                out.bytes += o.bytes;
                let arr = e + half;
                let ready = arr + cfg.load.delay_at(arr);
                let w = (0..workers.len())
                    .min_by(|&a, &b| workers[a].total_cmp(&workers[b]))
                    .unwrap_or(0);
                let srv = ready.max(workers[w]);
                let srv_end = srv + o.server_s;
                workers[w] = srv_end;
                let done = srv_end + half;
                pending.push(Reverse(Pending {
                    at_ns: ns(e),
                    kind: TRANSFER,
                    bytes: o.bytes,
                    value_ns: ns(e - s),
                }));
                pending.push(Reverse(Pending {
                    at_ns: ns(done),
                    kind: RTT,
                    bytes: 0,
                    value_ns: ns(2.0 * half),
                }));
                pending.push(Reverse(Pending {
                    at_ns: ns(done),
                    kind: QUEUE,
                    bytes: 0,
                    value_ns: ns(srv - arr),
                }));
                done
            }
        };
        out.latencies.push(done - t_arr);
        out.arrivals.push(t_arr);
        out.options.push(d.index);
    }
    let n = cfg.requests.max(1) as f64;
    out.exit_rate = exited as f64 / n;
    out.accuracy = (known && cfg.requests > 0).then(|| correct as f64 / n);
    out
}
