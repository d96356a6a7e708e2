//! Trace-driven discrete-event simulation of split inference: a request stream (periodic or
//! Poisson) through device compute (one request at a time), an uplink that follows a bandwidth
//! [`trace::Trace`] (bytes cross in order at the time-varying rate, plus half the RTT each way), a
//! server with `K` workers behind a background queueing delay, and early exits on the device
//! (per-sample confidences measured on real data, or calibrated probabilities).
//!
//! Requests are decided when they arrive. Policies see only what a real device would: estimates
//! built from transfers and server reports that have completed before the decision, and the
//! device's own backlog (heads queued, bytes queued on the uplink, its requests the server has
//! not answered). Adaptive policies whose rate estimate is stale probe the uplink first and
//! decide when the probe lands (its bytes count and it occupies the link). [`Oracle`] decisions
//! get the true completion time of each option from the same simulated queues, link and server.
//!
//! [`Oracle`]: crate::sched::policy::Oracle

pub mod experiment;
pub mod study;
pub mod trace;

use crate::sched::cost::{CostTable, OptionCost, SampleExits};
use crate::sched::estimate::{Estimator, RateMethod};
use crate::sched::hedge;
use crate::sched::policy::{Context, Policy};
use crate::sched::profile::Profile;
use crate::sched::Estimates;
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
    /// The stale-rate rule: an adaptive policy whose last rate measurement is older than this
    /// (seconds) probes the uplink before deciding, when the uplink is idle
    /// ([`crate::sched::estimate::Estimator::rate_is_stale`]).
    pub probe_interval_s: f64,
    /// Probe size, bytes (0: never probe; decide on the stale estimate).
    pub probe_bytes: u64,
    /// Longest a decision waits for its probe, seconds (an outage must not hold requests).
    pub probe_wait_s: f64,
    /// Time offset into the trace where the stream starts (seconds).
    pub start_s: f64,
    /// Whether adaptive policies apply the outage rule ([`crate::sched::hedge`]): a remote
    /// request later than a local run, whose transfer stalled, runs on the device.
    pub hedge: bool,
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
            probe_bytes: 4_000,
            probe_wait_s: 0.25,
            start_s: 0.0,
            hedge: true,
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
    /// Requests the outage rule ran on the device after sending them ([`crate::sched::hedge`]).
    pub fallbacks: usize,
    /// Of those, requests whose upload was cancelled (the rest were hedged).
    pub cancelled: usize,
    /// How busy the device, the uplink and the server were.
    pub utilisation: Utilisation,
}

/// Busy time of each resource over the run (from the first arrival to the last answer), as a
/// fraction: near 1 is the bottleneck.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Utilisation {
    /// Device compute (heads and exits).
    pub device: f64,
    /// Uplink (transfers and probes, outages included).
    pub uplink: f64,
    /// Server compute, averaged over the workers.
    pub server: f64,
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
    /// `bytes`, `probe_bytes`, `accuracy`, `exit_rate`, `fallbacks`, `cancelled`, `cuts`,
    /// `utilisation` with `device`,
    /// `uplink`, `server`).
    pub fn to_json(&self, table: &CostTable) -> serde_json::Value {
        serde_json::json!({
            "mean_ms": self.mean() * 1e3,
            "p50_ms": self.percentile(50.0) * 1e3,
            "p95_ms": self.percentile(95.0) * 1e3,
            "bytes": self.bytes,
            "probe_bytes": self.probe_bytes,
            "accuracy": self.accuracy,
            "exit_rate": self.exit_rate,
            "fallbacks": self.fallbacks,
            "cancelled": self.cancelled,
            "cuts": self.cuts(table),
            "utilisation": {
                "device": self.utilisation.device,
                "uplink": self.utilisation.uplink,
                "server": self.utilisation.server,
            },
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
    /// The transfer's id in the simulation's flags: request `r` is `r`, its probe `n + r`.
    id: usize,
}

/// A transfer the hedge rule cancelled: its observations never arrive.
const CANCELLED: u8 = 1;
/// A transfer that stalled (a probe that did not land in time): its sample does not end the
/// outage it revealed.
const STALLED: u8 = 2;

const TRANSFER: u8 = 0;
const RTT: u8 = 1;
const QUEUE: u8 = 2;

fn ns(s: f64) -> u64 {
    (s.max(0.0) * 1e9).round() as u64
}

/// Feeds the estimator every observation visible at `now_ns`, in order, and marks when the
/// last transfer among them landed ([`Estimator::mark_rate_sample`]).
fn observe_until(
    pending: &mut BinaryHeap<Reverse<Pending>>,
    now_ns: u64,
    est: &mut Estimator,
    flags: &[u8],
) {
    while pending.peek().is_some_and(|Reverse(p)| p.at_ns <= now_ns) {
        let Some(Reverse(p)) = pending.pop() else {
            break;
        };
        let flag = flags.get(p.id).copied().unwrap_or(0);
        if flag & CANCELLED != 0 {
            continue;
        }
        match p.kind {
            TRANSFER => {
                let secs = p.value_ns as f64 * 1e-9;
                if flag & STALLED != 0 {
                    est.observe_stalled_transfer(p.bytes, secs);
                } else {
                    est.observe_transfer(p.bytes, secs);
                }
                est.mark_rate_sample(p.at_ns as f64 * 1e-9);
            }
            RTT => est.observe_rtt(p.value_ns as f64 * 1e-9),
            _ => est.observe_queue_us(p.value_ns / 1000),
        }
    }
}

/// A remote request between its head and its answer.
#[derive(Debug, Clone, Copy)]
struct Job {
    /// Request index.
    r: usize,
    bytes: u64,
    server_s: f64,
}

/// What happens next in the simulation.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// Request `r` is decided (at its arrival, or when its probe landed).
    Decide { r: usize, probed: bool },
    /// The hedge rule's check of request `r` ([`crate::sched::hedge`]).
    Check { r: usize },
    /// A probe `(id, start, end, bytes)` has not landed within the probe wait: a stall.
    ProbeStalled { id: usize, start: f64, bytes: u64 },
    /// A job's split tensor (or input) is ready to send.
    Uplink(Job),
    /// A job reaches the server (`arrived`: when its last byte got there).
    Server { job: Job, arrived: f64 },
}

/// The simulated queues: the device (FIFO of heads), the uplink (FIFO by readiness, at the
/// trace's rate) and the server's workers (FIFO by readiness after the background delay).
struct Queues {
    device_free: f64,
    uplink_free: f64,
    /// Transfers started: `(start, end, bytes)`, pruned once done.
    sending: Vec<(f64, f64, u64)>,
    /// Jobs whose head is running or done but whose transfer has not started: `(ready, job)`.
    to_send: Vec<(f64, Job)>,
    /// Jobs on their way to a worker or waiting for one: `(ready at the server, job)`.
    to_serve: Vec<(f64, Job)>,
    workers: Vec<f64>,
    /// Requests the server has taken: `(answered at, server seconds)`, pruned once answered.
    serving: Vec<(f64, f64)>,
}

impl Queues {
    /// The device's view of its backlog at `now`: head seconds queued, uplink bytes queued at
    /// `rate`, and its own server work not yet answered (per worker).
    fn backlog(&self, now: f64, rate: f64, trace: &Trace) -> (f64, f64, f64) {
        let in_flight: f64 = self
            .sending
            .iter()
            .filter(|&&(_, e, _)| e > now)
            .map(|&(s, _, b)| (b as f64 - trace.bytes_between(s, now)).max(0.0))
            .sum();
        let queued: f64 = self.to_send.iter().map(|(_, j)| j.bytes as f64).sum();
        // Every request sent or to be sent and not yet answered will occupy the server.
        let unanswered: f64 = self
            .to_send
            .iter()
            .chain(&self.to_serve)
            .map(|(_, j)| j.server_s)
            .chain(
                self.serving
                    .iter()
                    .filter(|&&(done, _)| done > now)
                    .map(|&(_, s)| s),
            )
            .sum();
        (
            (self.device_free - now).max(0.0),
            (in_flight + queued) / rate,
            unanswered / self.workers.len() as f64,
        )
    }

    /// Seconds from `now` until a request decided at `now` for `o` would be answered if no exit answers and no
    /// later request came: its head after the device's queue, its transfer after every transfer
    /// ready before it, its server work after every job that reaches the server before it, at
    /// the true rate and load (the oracle's knowledge).
    fn finish(&self, o: &OptionCost, now: f64, trace: &Trace, cfg: &SimConfig) -> f64 {
        let head_end = if o.device_s > 0.0 {
            self.device_free.max(now) + o.device_s
        } else {
            now
        };
        if !o.remote() {
            return head_end - now;
        }
        let half = cfg.rtt_s / 2.0;
        let mut ahead: Vec<(f64, u64, f64)> = self
            .to_send
            .iter()
            .filter(|(ready, _)| *ready <= head_end)
            .map(|&(ready, j)| (ready, j.bytes, j.server_s))
            .collect();
        ahead.sort_by(|a, b| a.0.total_cmp(&b.0));
        ahead.push((head_end, o.bytes, o.server_s));
        let mut serve: Vec<(f64, f64, bool)> = self
            .to_serve
            .iter()
            .map(|&(ready, j)| (ready, j.server_s, false))
            .collect();
        let mut link = self.uplink_free;
        let last = ahead.len() - 1;
        for (i, &(ready, bytes, server_s)) in ahead.iter().enumerate() {
            link = trace.transfer_end(link.max(ready), bytes as f64);
            let arrived = link + half;
            serve.push((arrived + cfg.load.delay_at(arrived), server_s, i == last));
        }
        serve.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut workers = self.workers.clone();
        for (ready, server_s, ours) in serve {
            let w = earliest(&workers);
            let end = ready.max(workers[w]) + server_s;
            if ours {
                return end + half - now;
            }
            workers[w] = end;
        }
        f64::INFINITY
    }
}

/// Events in time order (ties in the order they were added).
#[derive(Default)]
struct Agenda {
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    events: Vec<(f64, Event)>,
}

impl Agenda {
    fn push(&mut self, at: f64, e: Event) {
        self.heap.push(Reverse((ns(at), self.events.len())));
        self.events.push((at, e));
    }

    fn pop(&mut self) -> Option<(f64, Event)> {
        self.heap.pop().map(|Reverse((_, i))| self.events[i])
    }
}

/// Index of the worker free first.
fn earliest(workers: &[f64]) -> usize {
    (0..workers.len())
        .min_by(|&a, &b| workers[a].total_cmp(&workers[b]))
        .unwrap_or(0)
}

/// How far the true rate may plausibly be from a stale estimate, as a factor either way.
const PROBE_RATE_SPREAD: f64 = 100.0;

/// The value-of-information side of the stale-rate rule: a probe holds the request for about
/// `probe_bytes / rate`, so it is sent only when a rate [`PROBE_RATE_SPREAD`] times higher or
/// lower could make the choice made on the stale estimate lose more than that wait
/// ([`CostTable::rate_regret`]); the request then waits for it. A device that never offloads,
/// at any rate, never probes.
///
/// In an outage ([`Estimator::in_outage`]) the probe looks for the link coming back: it pays
/// when the choice made on the stall's bound would lose against the rate from before the stall
/// ([`Estimator::probe_reference`]), and the request waits for it only when that loss exceeds
/// the longest wait ([`SimConfig::probe_wait_s`], what a probe into a link still down costs);
/// otherwise the request stays on the device and the probe informs the next ones.
fn probe_rule(
    table: &CostTable,
    q: &Queues,
    est: &Estimator,
    now: f64,
    trace: &Trace,
    cfg: &SimConfig,
) -> Probe {
    let reference = est.probe_reference();
    let (dw, uw, sw) = q.backlog(now, reference.rate_bytes_per_s, trace);
    let back = reference.with_backlog(dw, uw, sw);
    if est.in_outage() {
        let now_est = est.estimates().with_backlog(dw, uw, sw);
        let loss = table.regret(&now_est, &back);
        return if loss > cfg.probe_wait_s {
            Probe::AndWait
        } else if loss > 0.0 {
            Probe::InBackground
        } else {
            Probe::No
        };
    }
    let wait = (cfg.probe_bytes as f64 / back.rate_bytes_per_s).min(cfg.probe_wait_s);
    if table.rate_regret(&back, PROBE_RATE_SPREAD) > wait {
        Probe::AndWait
    } else {
        Probe::No
    }
}

/// The stale-rate rule's verdict for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Probe {
    /// No probe: decide on the estimate.
    No,
    /// Probe, and decide when it lands (at most [`SimConfig::probe_wait_s`] later).
    AndWait,
    /// Probe, but decide now.
    InBackground,
}

/// Simulates `cfg.requests` requests under `policy` over `trace`.
///
/// Each request is decided when it arrives, seeing the queues it would join: the device's own
/// head computations ahead of it (server-only requests run no head and skip that queue), the
/// bytes queued on the uplink, and its own requests the server has not answered
/// ([`Estimates::with_backlog`]). An adaptive policy whose rate estimate is stale (no transfer
/// measured for [`SimConfig::probe_interval_s`]) and whose uplink is idle first sends a probe of
/// [`SimConfig::probe_bytes`], when the probe can pay (`probe_pays`), and decides when it lands
/// (at most [`SimConfig::probe_wait_s`] later); the wait counts in that request's latency. The server's queue time is reported as
/// the background delay alone: the wait behind the device's own earlier requests is what the
/// device already counts in `server_wait_s`.
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
        Estimates::from_mb_ms(trace.mean_rate() * 1e-6, cfg.rtt_s * 1e3, 0.0),
    );
    let mut pending: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut q = Queues {
        device_free: cfg.start_s,
        uplink_free: cfg.start_s,
        sending: Vec::new(),
        to_send: Vec::new(),
        to_serve: Vec::new(),
        workers: vec![cfg.start_s; cfg.workers.max(1)],
        serving: Vec::new(),
    };
    let mut out = SimResult {
        policy: policy.name().to_string(),
        latencies: vec![0.0; cfg.requests],
        arrivals: Vec::with_capacity(cfg.requests),
        options: vec![0; cfg.requests],
        bytes: 0,
        probe_bytes: 0,
        accuracy: None,
        exit_rate: 0.0,
        fallbacks: 0,
        cancelled: 0,
        utilisation: Utilisation::default(),
    };
    let mut agenda = Agenda::default();
    let mut t_arr = cfg.start_s;
    for r in 0..cfg.requests {
        if r > 0 {
            t_arr += match cfg.arrivals {
                Arrivals::Periodic { rate } => 1.0 / rate,
                Arrivals::Poisson { rate, .. } => Exp::new(rate)
                    .map(|e| e.sample(&mut arrival_rng))
                    .unwrap_or(1.0),
            };
        }
        out.arrivals.push(t_arr);
        agenda.push(t_arr, Event::Decide { r, probed: false });
    }
    let n = cfg.requests;
    let hedge = adaptive && cfg.hedge;
    // Per transfer id (request r, its probe n + r): CANCELLED / STALLED.
    let mut flags = vec![0u8; 2 * n];
    // Per request: its transfer on the link `(start, end)`, when the server's answer arrives,
    // when a local fallback finishes, and the device seconds of its tail (the fallback's work).
    let mut sent: Vec<Option<(f64, f64)>> = vec![None; n];
    let mut remote_done = vec![f64::INFINITY; n];
    let mut local_done = vec![f64::INFINITY; n];
    let mut tail_s = vec![0.0; n];
    let full_device_s = prefix[n_blocks];
    let (mut correct, mut known, mut exited) = (0usize, true, 0usize);
    let (mut device_busy, mut uplink_busy, mut server_busy) = (0.0, 0.0, 0.0);
    let mut last_done = cfg.start_s;
    let half = cfg.rtt_s / 2.0;
    while let Some((now, event)) = agenda.pop() {
        match event {
            Event::Decide { r, probed } => {
                observe_until(&mut pending, ns(now), &mut est, &flags);
                let link_idle = q.uplink_free <= now && q.to_send.iter().all(|(t, _)| *t > now);
                let probe = if adaptive
                    && !probed
                    && cfg.probe_bytes > 0
                    && link_idle
                    && est.rate_is_stale(now, cfg.probe_interval_s)
                {
                    probe_rule(table, &q, &est, now, trace, cfg)
                } else {
                    Probe::No
                };
                if probe != Probe::No {
                    let e = trace.transfer_end(now, cfg.probe_bytes as f64);
                    let outage = est.in_outage();
                    if !outage {
                        est.rate.forget();
                    }
                    q.uplink_free = e;
                    q.sending.push((now, e, cfg.probe_bytes));
                    uplink_busy += e - now;
                    out.bytes += cfg.probe_bytes;
                    out.probe_bytes += cfg.probe_bytes;
                    pending.push(Reverse(Pending {
                        at_ns: ns(e),
                        kind: TRANSFER,
                        bytes: cfg.probe_bytes,
                        value_ns: ns(e - now),
                        id: n + r,
                    }));
                    if e > now + cfg.probe_wait_s {
                        agenda.push(
                            now + cfg.probe_wait_s,
                            Event::ProbeStalled {
                                id: n + r,
                                start: now,
                                bytes: cfg.probe_bytes,
                            },
                        );
                    }
                    if probe == Probe::AndWait {
                        let decide_at = e.min(now + cfg.probe_wait_s);
                        agenda.push(decide_at, Event::Decide { r, probed: true });
                        continue;
                    }
                }
                let e0 = est.estimates();
                let (dw, uw, sw) = q.backlog(now, e0.rate_bytes_per_s, trace);
                let truth = |o: &OptionCost| q.finish(o, now, trace, cfg);
                let ctx = Context {
                    estimates: e0.with_backlog(dw, uw, sw),
                    truth: Some(&truth),
                };
                let d = policy.decide(&ctx);
                let o = &table.options[d.index];
                out.options[r] = d.index;
                let (first, right) = exits.sample(r, o.exits_enabled, &mut exit_rng);
                match right {
                    Some(right) => correct += usize::from(right),
                    None => known = false,
                }
                let arrival = out.arrivals[r];
                let head_start = q.device_free.max(now);
                if let Some(j) = first {
                    exited += 1;
                    let head = prefix[table.exits.after_block[j] + 1];
                    q.device_free = head_start + head;
                    device_busy += head;
                    out.latencies[r] = q.device_free - arrival;
                    last_done = last_done.max(q.device_free);
                } else if !o.remote() {
                    q.device_free = head_start + o.device_s;
                    device_busy += o.device_s;
                    out.latencies[r] = q.device_free - arrival;
                    last_done = last_done.max(q.device_free);
                } else {
                    let ready = if o.device_s > 0.0 {
                        q.device_free = head_start + o.device_s;
                        device_busy += o.device_s;
                        q.device_free
                    } else {
                        now
                    };
                    let job = Job {
                        r,
                        bytes: o.bytes,
                        server_s: o.server_s,
                    };
                    q.to_send.push((ready, job));
                    agenda.push(ready, Event::Uplink(job));
                    if hedge {
                        tail_s[r] = full_device_s - o.device_s;
                        let local_s = (head_start - now) + full_device_s;
                        agenda.push(now + hedge::deadline_s(local_s), Event::Check { r });
                    }
                }
            }
            Event::Check { r } => {
                if flags[r] & CANCELLED != 0 || remote_done[r] <= now {
                    continue;
                }
                let Some((start, end)) = sent[r] else {
                    continue;
                };
                let local_s = (q.device_free - now).max(0.0) + tail_s[r];
                if start > now {
                    // Still queued behind the device's earlier transfers: not a stall; the
                    // clock starts when its first byte goes.
                    agenda.push(start + hedge::deadline_s(local_s), Event::Check { r });
                    continue;
                }
                let job_bytes = table.options[out.options[r]].bytes;
                let server_s = table.options[out.options[r]].server_s;
                let acked = if end <= now {
                    job_bytes
                } else {
                    (trace.bytes_between(start, now.max(start)) as u64).min(job_bytes)
                };
                let e0 = est.estimates();
                // What the device expects after its upload (it cannot see the server).
                let since_upload = (now - end).max(0.0);
                let after_upload = (e0.rtt_s + e0.queue_s + server_s - since_upload).max(0.0);
                let progress = hedge::Progress {
                    bytes: job_bytes,
                    acked,
                    in_flight_s: (now - start).max(0.0),
                    after_upload_s: after_upload,
                };
                match progress.verdict(local_s) {
                    hedge::Verdict::Wait { recheck_s } => {
                        agenda.push(now + recheck_s, Event::Check { r });
                    }
                    hedge::Verdict::FallBack { cancel } => {
                        out.fallbacks += 1;
                        if cancel {
                            out.cancelled += 1;
                            flags[r] |= CANCELLED;
                            let from = now.max(start);
                            if let Some(i) = q
                                .sending
                                .iter()
                                .position(|&(s, e, _)| s == start && e == end)
                            {
                                q.sending.swap_remove(i);
                            }
                            if let Some(i) = q.to_serve.iter().position(|(_, j)| j.r == r) {
                                q.to_serve.swap_remove(i);
                            }
                            if q.uplink_free == end {
                                q.uplink_free = from;
                            }
                            uplink_busy -= end - from;
                            out.bytes -= job_bytes - acked;
                            if now > start {
                                est.observe_stall(acked, now - start);
                                est.mark_rate_sample(now);
                            }
                        }
                        let s = q.device_free.max(now);
                        q.device_free = s + tail_s[r];
                        device_busy += tail_s[r];
                        local_done[r] = q.device_free;
                        let done = local_done[r].min(remote_done[r]);
                        out.latencies[r] = done - out.arrivals[r];
                        last_done = last_done.max(done);
                    }
                }
            }
            Event::ProbeStalled { id, start, bytes } => {
                flags[id] |= STALLED;
                let acked = (trace.bytes_between(start, now) as u64).min(bytes);
                est.observe_stall(acked, now - start);
                est.mark_rate_sample(now);
            }
            Event::Uplink(job) => {
                if let Some(i) = q.to_send.iter().position(|(_, j)| j.r == job.r) {
                    q.to_send.swap_remove(i);
                }
                let s = now.max(q.uplink_free);
                let e = trace.transfer_end(s, job.bytes as f64);
                sent[job.r] = Some((s, e));
                q.uplink_free = e;
                q.sending.retain(|&(_, end, _)| end > now);
                q.sending.push((s, e, job.bytes));
                uplink_busy += e - s;
                out.bytes += job.bytes;
                pending.push(Reverse(Pending {
                    at_ns: ns(e),
                    kind: TRANSFER,
                    bytes: job.bytes,
                    value_ns: ns(e - s),
                    id: job.r,
                }));
                let arrived = e + half;
                let ready = arrived + cfg.load.delay_at(arrived);
                q.to_serve.push((ready, job));
                agenda.push(ready, Event::Server { job, arrived });
            }
            Event::Server { job, arrived } => {
                if flags[job.r] & CANCELLED != 0 {
                    continue;
                }
                if let Some(i) = q.to_serve.iter().position(|(_, j)| j.r == job.r) {
                    q.to_serve.swap_remove(i);
                }
                let w = earliest(&q.workers);
                let start = now.max(q.workers[w]);
                let end = start + job.server_s;
                q.workers[w] = end;
                server_busy += job.server_s;
                let done = end + half;
                remote_done[job.r] = done;
                let first = done.min(local_done[job.r]);
                last_done = last_done.max(first);
                out.latencies[job.r] = first - out.arrivals[job.r];
                q.serving.retain(|&(d, _)| d > now);
                q.serving.push((done, job.server_s));
                pending.push(Reverse(Pending {
                    at_ns: ns(done),
                    kind: RTT,
                    bytes: 0,
                    value_ns: ns(2.0 * half),
                    id: job.r,
                }));
                // The background delay: the server's queue time less the wait behind this
                // device's own requests (which the device counts itself).
                pending.push(Reverse(Pending {
                    at_ns: ns(done),
                    kind: QUEUE,
                    bytes: 0,
                    value_ns: ns(now - arrived),
                    id: job.r,
                }));
            }
        }
    }
    let nf = n.max(1) as f64;
    out.exit_rate = exited as f64 / nf;
    out.accuracy = (known && n > 0).then(|| correct as f64 / nf);
    let span = (last_done - cfg.start_s).max(f64::MIN_POSITIVE);
    out.utilisation = Utilisation {
        device: device_busy / span,
        uplink: uplink_busy / span,
        server: server_busy / (span * q.workers.len() as f64),
    };
    out
}
