//! What a live run feeds back to its [`Policy`], the same
//! observations the simulator feeds ([`Feedback`]), and the set-up of a policy by name for
//! `edgecut run` and `edgecut demo` ([`prepare`]):
//!
//! - the uplink rate: bytes written / (transfer time - server queue and compute - RTT estimate);
//! - the RTT: round trips of `GET /v2/health/live` on a fresh connection, timed at start-up
//!   ([`ping_rtt`]);
//! - the server load: the mean queue time per request between two polls of the server's
//!   statistics extension ([`LoadSample`], the same for `edgecut serve`, Triton and KServe);
//! - the profiles: the device head's run time ([`Profile::observe`] on the device's blocks) and
//!   the server's compute time (the blocks after the cut): the answer's `compute_us` where the
//!   server reports it per request (`edgecut serve`), else the polled mean of the cut's model.
//!
//! Exit probabilities come from running the model's exit heads on labelled data at the same
//! threshold ([`calibrate_exits`]), so the cost model counts requests answered early on the device.

use super::client::{AnsweredBy, HedgeCheck, Outcome};
use super::statistics::LoadSample;
use crate::data::{load_mnist, DataError, Dataset, Split};
use crate::engine::Backend;
use crate::model::Model;
use crate::sched::cost::{CostTable, ExitProbabilities, SampleExits};
use crate::sched::estimate::Estimator;
use crate::sched::policy::{self, Decision, Policy};
use crate::sched::profile::Profile;
use crate::sched::SchedError;
use crate::sched::{hedge, Estimates};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Weight of one observed run when updating a profile online.
pub const OBSERVE_ALPHA: f64 = 0.2;

/// Seconds after a stalled upload before a live run tries the link again
/// ([`Feedback::estimates`]): the simulator's default probe interval.
pub const RETRY_AFTER_S: f64 = 1.0;

/// Errors setting up a live run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LiveError {
    /// The policy, a profile or the cost table.
    #[error(transparent)]
    Sched(#[from] SchedError),
    /// The calibration data.
    #[error("reading the calibration data: {0}")]
    Data(#[from] DataError),
    /// A setting out of range.
    #[error("{0}")]
    Invalid(String),
}

/// The live estimator, the profiles as refined by every answer, and the cost table built from
/// them: what a policy decides over.
#[derive(Debug, Clone)]
pub struct Feedback {
    model: Arc<Model>,
    /// Device and server profiles; `None` for a fixed policy, which needs no block times.
    profiles: Option<(Profile, Profile)>,
    exits: ExitProbabilities,
    table: CostTable,
    /// The estimator fed by every answer.
    pub estimator: Estimator,
    /// The latest load read from the server's statistics, and how many were read.
    last_load: Option<LoadSample>,
    load_samples: usize,
    /// When the last upload stalled ([`Feedback::estimates`]).
    stalled_at: Option<Instant>,
}

impl Feedback {
    /// Feedback from two profiles checked against the model.
    pub fn new(
        model: Arc<Model>,
        device: Profile,
        server: Profile,
        exits: ExitProbabilities,
        estimator: Estimator,
    ) -> Result<Self, SchedError> {
        let table = CostTable::new(&model, &device, &server, &exits)?;
        Ok(Self {
            model,
            profiles: Some((device, server)),
            exits,
            table,
            estimator,
            last_load: None,
            load_samples: 0,
            stalled_at: None,
        })
    }

    /// Feedback without profiles (block times all zero): enough for a fixed policy, whose
    /// choice does not depend on them; only the estimator is updated.
    pub fn without_profiles(model: Arc<Model>) -> Result<Self, SchedError> {
        let n = model.blocks.len();
        let exits = ExitProbabilities::none(&model);
        let table = CostTable::from_times(&model, vec![0.0; n], vec![0.0; n], &exits)?;
        Ok(Self {
            model,
            profiles: None,
            exits,
            table,
            estimator: Estimator::default(),
            last_load: None,
            load_samples: 0,
            stalled_at: None,
        })
    }

    /// What the policy decides on: the estimator's estimates, except that in an outage
    /// ([`Estimator::in_outage`]) older than [`RETRY_AFTER_S`] the rate from before the stall is
    /// used once more, so the next request tries the link (a live client has no separate probe;
    /// the outage rule bounds what a try into a link still down costs).
    pub fn estimates(&self) -> Estimates {
        match self.stalled_at {
            Some(t) if self.estimator.in_outage() && t.elapsed().as_secs_f64() > RETRY_AFTER_S => {
                self.estimator.probe_reference()
            }
            _ => self.estimator.estimates(),
        }
    }

    /// The outage rule's check for a request decided as `decision` ([`crate::sched::hedge`]):
    /// the device-only time plus the margin, the rest of the model on the device, and the
    /// answer's time after the upload, from the current table and estimates. `None` for
    /// device-only.
    pub fn hedge_check(&self, decision: &Decision) -> Option<HedgeCheck> {
        let options = &self.table.options;
        let chosen = options.get(decision.index)?;
        let device_only = options.last()?;
        if !chosen.remote() {
            return None;
        }
        let est = self.estimates();
        let local_s = device_only.expected(&est);
        Some(HedgeCheck {
            after: Duration::from_secs_f64(hedge::deadline_s(local_s)),
            local_s: (device_only.device_s - chosen.device_s).max(0.0),
            after_upload_s: est.rtt_s + est.queue_s + chosen.server_s,
        })
    }

    /// The cost table as of the last answer.
    pub fn table(&self) -> &CostTable {
        &self.table
    }

    /// The device and server profiles as refined so far, when measured.
    pub fn profiles(&self) -> Option<&(Profile, Profile)> {
        self.profiles.as_ref()
    }

    /// Feeds one answered request back: rate, queue, and the two profiles. Returns whether the
    /// cost table was rebuilt (then hand it to the policy).
    pub fn observe(&mut self, o: &Outcome) -> Result<bool, SchedError> {
        let n = self.model.blocks.len();
        let cut = o.choice.cut.device_blocks(n);
        if let Some(load) = o.load {
            // The load signal: the server's mean queue time over the requests it finished
            // between two statistics polls (every client's, not only this one's).
            self.estimator
                .observe_queue_us((load.queue_s * 1e6).round() as u64);
            self.last_load = Some(load);
            self.load_samples += 1;
        }
        if let Some((written, seconds)) = o.stalled {
            self.estimator.observe_stall(written, seconds);
            self.stalled_at = Some(Instant::now());
        }
        if let (AnsweredBy::Server, Some(transfer)) = (&o.by, o.transfer) {
            // This request's own server time when the answer reports it (edgecut serve),
            // else the latest polled means (Triton: one model per cut, so its compute time is
            // this cut's).
            let server_s = o
                .server_us
                .map(|(q, c)| (q as f64 * 1e-6, c as f64 * 1e-6))
                .or(self.last_load.map(|l| (l.queue_s, l.compute_s)));
            let (queue_s, compute_s) = server_s.unwrap_or((0.0, 0.0));
            let rtt = self.estimator.estimates().rtt_s;
            let upload = transfer.as_secs_f64() - queue_s - compute_s - rtt;
            self.estimator
                .observe_transfer(o.bytes_sent as u64, upload.max(1e-5));
            let fresh = o
                .server_us
                .map(|(_, c)| c as f64 * 1e-6)
                .or(o.load.map(|l| l.compute_s));
            if let (Some((_, server)), Some(compute_s)) = (&mut self.profiles, fresh) {
                if cut < n && compute_s > 0.0 {
                    server.observe(cut..n, compute_s, OBSERVE_ALPHA)?;
                }
            }
        }
        let Some((device, server)) = &mut self.profiles else {
            return Ok(false);
        };
        if cut > 0 && !o.head.is_zero() {
            // The head plan of 0..cut ran (also when an exit answered).
            device.observe(0..cut, o.head.as_secs_f64(), OBSERVE_ALPHA)?;
        }
        self.table = CostTable::new(&self.model, device, server, &self.exits)?;
        Ok(true)
    }

    /// The load signal read from the server's statistics: how many polls gave a reading
    /// (`samples`), the queue estimate the scheduler holds (`queue_ms`) and the latest reading
    /// (mean queue and compute time per request and the requests it covers); `null` before any.
    pub fn load_json(&self) -> Value {
        match self.last_load {
            None => Value::Null,
            Some(l) => json!({
                "samples": self.load_samples,
                "queue_ms": self.estimator.estimates().queue_s * 1e3,
                "last_queue_ms": l.queue_s * 1e3,
                "last_compute_ms": l.compute_s * 1e3,
                "last_requests": l.requests,
            }),
        }
    }

    /// What the scheduler ended with: estimates, exit probabilities and per-block times (ms).
    pub fn to_json(&self) -> Value {
        let e = self.estimator.estimates();
        let t = &self.table;
        let ms = |v: &[f64]| v.iter().map(|x| x * 1e3).collect::<Vec<_>>();
        let load = self.load_json();
        json!({
            "rate_mbps": e.rate_bytes_per_s * 8e-6,
            "rtt_ms": e.rtt_s * 1e3,
            "queue_ms": e.queue_s * 1e3,
            "server_load": load,
            "exit_first": t.exits.first,
            "exit_after_block": t.exits.after_block,
            "device_block_ms": ms(&t.device_block_s),
            "server_block_ms": ms(&t.server_block_s),
        })
    }
}

/// Exit probabilities of `model` at `threshold`, measured on the first `samples` of `data`
/// (use data the run does not answer, e.g. the training split).
pub fn calibrate_exits(
    model: &Arc<Model>,
    backend: &Backend,
    data: &Dataset,
    samples: usize,
    threshold: f32,
) -> Result<ExitProbabilities, SchedError> {
    if model.exits.is_empty() {
        return Ok(ExitProbabilities::none(model));
    }
    let s = SampleExits::measure(model, backend, data, samples)?;
    Ok(ExitProbabilities::from_samples(model, &s, threshold))
}

/// Round-trip time to the server at `url` (`http://host:port`): the least of `pings` timed
/// `GET /v2/health/live` exchanges, each on a fresh connection (connect included, as a first
/// request pays it too). `None` when the server cannot be reached.
pub fn ping_rtt(url: &str, pings: usize, timeout: Duration) -> Option<Duration> {
    let host = url.trim_end_matches('/').strip_prefix("http://")?;
    let addr = host.to_socket_addrs().ok()?.next()?;
    let request =
        format!("GET /v2/health/live HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let mut best: Option<Duration> = None;
    for _ in 0..pings.max(1) {
        let t = Instant::now();
        let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
            continue;
        };
        let ok = s.set_read_timeout(Some(timeout)).is_ok()
            && s.set_nodelay(true).is_ok()
            && s.write_all(request.as_bytes()).is_ok();
        let mut buf = [0u8; 512];
        if ok && matches!(s.read(&mut buf), Ok(n) if n > 0) {
            let d = t.elapsed();
            best = Some(best.map_or(d, |b| b.min(d)));
        }
    }
    best
}

/// How an adaptive policy is set up live (fixed policies need none of it).
#[derive(Debug, Clone)]
pub struct LiveSetup {
    /// The device's per-block profile (default: measured at start-up, scaled by the slowdown).
    pub device_profile: Option<PathBuf>,
    /// The server's per-block profile (default: measured locally at start-up, corrected online
    /// by the compute times the server reports).
    pub server_profile: Option<PathBuf>,
    /// The emulated device slowdown (>= 1).
    pub device_slowdown: f64,
    /// The emulated device's per-block seconds (a published profile): the device profile's
    /// block times are at least these (the client waits to match them).
    pub device_block_s: Option<Vec<f64>>,
    /// Folder of the MNIST files whose training split calibrates the exits.
    pub data: PathBuf,
    /// Training samples the exit probabilities are calibrated on.
    pub calibration_samples: usize,
    /// The exit threshold of the run.
    pub threshold: f32,
}

impl LiveSetup {
    /// Defaults: measured profiles, no slowdown, 1000 calibration samples of `data`, threshold 0.9.
    pub fn new(data: impl Into<PathBuf>) -> Self {
        Self {
            device_profile: None,
            server_profile: None,
            device_slowdown: 1.0,
            device_block_s: None,
            data: data.into(),
            calibration_samples: 1000,
            threshold: 0.9,
        }
    }
}

/// The policy called `name` (the one parser, [`policy::parse_live`]: the oracle is refused) with
/// its feedback. Adaptive policies get profiles (read or measured at start-up), exits calibrated
/// on the training split and an estimator primed with the RTT to `server_url`; fixed policies
/// get [`Feedback::without_profiles`].
pub fn prepare(
    name: &str,
    model: &Arc<Model>,
    backend: &Backend,
    server_url: &str,
    setup: &LiveSetup,
) -> Result<(Box<dyn Policy>, Feedback), LiveError> {
    if !(setup.device_slowdown.is_finite() && setup.device_slowdown >= 1.0) {
        return Err(LiveError::Invalid(format!(
            "--device-slowdown must be >= 1, got {}",
            setup.device_slowdown
        )));
    }
    if !(0.0..=1.0).contains(&setup.threshold) {
        return Err(LiveError::Invalid(format!(
            "--exit-threshold must be in [0, 1], got {}",
            setup.threshold
        )));
    }
    let plain = Feedback::without_profiles(model.clone())?;
    let mut policy = policy::parse_live(name, plain.table())?;
    if !policy.adaptive() {
        return Ok((policy, plain));
    }
    let measured = match (&setup.device_profile, &setup.server_profile) {
        (Some(_), Some(_)) => None,
        _ => Some(Profile::measure(model, backend, &[1], 2, 5)?),
    };
    let pick = |given: &Option<PathBuf>, scale: f64| -> Result<Profile, SchedError> {
        match (given, &measured) {
            (Some(p), _) => Profile::load(p, model),
            (None, Some(m)) => m.scaled(scale),
            (None, None) => Err(SchedError::Invalid {
                what: "profiles".into(),
                reason: "neither given nor measured".into(),
            }),
        }
    };
    let mut device = pick(&setup.device_profile, setup.device_slowdown)?;
    if let Some(target) = &setup.device_block_s {
        for (b, &t) in device.blocks.iter_mut().zip(target) {
            for s in &mut b.seconds {
                *s = s.max(t);
            }
        }
    }
    let server = pick(&setup.server_profile, 1.0)?;
    let exits = if model.exits.is_empty() {
        ExitProbabilities::none(model)
    } else {
        let train = load_mnist(&setup.data, Split::Train)?;
        calibrate_exits(
            model,
            backend,
            &train,
            setup.calibration_samples,
            setup.threshold,
        )?
    };
    let mut estimator = Estimator::default();
    if let Some(rtt) = ping_rtt(server_url, 3, Duration::from_secs(1)) {
        estimator.observe_rtt(rtt.as_secs_f64());
    }
    let feedback = Feedback::new(model.clone(), device, server, exits, estimator)?;
    policy.set_table(feedback.table());
    Ok((policy, feedback))
}
