//! Estimators of the uplink data rate, the round-trip time and the server's queueing delay, from
//! what the device observes: each transfer's bytes and active seconds, response timing, and the
//! server's mean queue time per request (which the live client reads from the server's statistics
//! extension).
//!
//! Idle gaps do not bias the rate: a sample is the rate while bytes were actually in flight
//! (bytes / active seconds), so time without traffic adds no sample. Outliers: the harmonic mean
//! is dominated by the slow samples and ignores rare fast spikes; the EWMA clips each sample to
//! `[mean / clip, mean * clip]` before blending. Which predicts the next transfer better on the
//! real traces is measured by [`evaluate`] (reported by `edgecut study`).

use super::Estimates;
use std::collections::VecDeque;

/// How to estimate the data rate from transfer samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateMethod {
    /// Exponentially weighted moving average with weight `alpha` on the newest sample, each
    /// sample clipped to within a factor `clip` of the current estimate.
    Ewma {
        /// Weight of the newest sample (0..=1).
        alpha: f64,
        /// Outlier clip factor (>= 1; infinity disables).
        clip: f64,
    },
    /// Harmonic mean of the last `window` samples (Pensieve / MPC's throughput predictor).
    Harmonic {
        /// Samples kept.
        window: usize,
    },
    /// The last sample alone.
    Last,
}

impl RateMethod {
    /// The default: harmonic mean of the last 5 samples (few large underestimates; `docs/scheduling.md`
    /// compares the methods on the real traces, where EWMA 0.3 has the lowest mean error on most).
    pub const DEFAULT: RateMethod = RateMethod::Harmonic { window: 5 };

    /// Parses `harmonic<N>`, `ewma<ALPHA>` (clipped at 4x) or `last`, the names of `--estimator`.
    pub fn parse(s: &str) -> Result<Self, super::SchedError> {
        let bad = |reason: &str| super::SchedError::Invalid {
            what: format!("estimator '{s}'"),
            reason: reason.into(),
        };
        if let Some(w) = s.strip_prefix("harmonic") {
            return match w.parse::<usize>() {
                Ok(window) if window >= 1 => Ok(RateMethod::Harmonic { window }),
                _ => Err(bad("the window must be an integer >= 1")),
            };
        }
        if let Some(a) = s.strip_prefix("ewma") {
            return match a.parse::<f64>() {
                Ok(alpha) if alpha > 0.0 && alpha <= 1.0 => {
                    Ok(RateMethod::Ewma { alpha, clip: 4.0 })
                }
                _ => Err(bad("alpha must be a number in (0, 1]")),
            };
        }
        if s == "last" {
            return Ok(RateMethod::Last);
        }
        Err(bad("use harmonic<N>, ewma<ALPHA> or last"))
    }

    /// A short name (`ewma0.3`, `harmonic5`, `last`).
    pub fn name(&self) -> String {
        match self {
            RateMethod::Ewma { alpha, clip } if clip.is_finite() => {
                format!("ewma{alpha}-clip{clip}")
            }
            RateMethod::Ewma { alpha, .. } => format!("ewma{alpha}"),
            RateMethod::Harmonic { window } => format!("harmonic{window}"),
            RateMethod::Last => "last".into(),
        }
    }
}

/// The least rate a stall sets (bytes per second): a positive rate keeps every cost finite.
pub const STALL_RATE_FLOOR: f64 = 1.0;

/// A data-rate estimator (bytes per second).
#[derive(Debug, Clone)]
pub struct RateEstimator {
    method: RateMethod,
    ewma: Option<f64>,
    recent: VecDeque<f64>,
}

impl RateEstimator {
    /// An estimator with no samples yet.
    pub fn new(method: RateMethod) -> Self {
        Self {
            method,
            ewma: None,
            recent: VecDeque::new(),
        }
    }

    /// The method.
    pub fn method(&self) -> RateMethod {
        self.method
    }

    /// Adds a transfer of `bytes` that was in flight for `seconds`. Ignores empty or
    /// non-positive samples (nothing was measured).
    pub fn observe(&mut self, bytes: u64, seconds: f64) {
        if bytes == 0 || !(seconds.is_finite() && seconds > 0.0) {
            return;
        }
        self.observe_sample(bytes as f64 / seconds);
    }

    fn observe_sample(&mut self, r: f64) {
        match self.method {
            RateMethod::Ewma { alpha, clip } => {
                self.ewma = Some(match self.ewma {
                    None => r,
                    Some(m) => {
                        let r = if clip.is_finite() {
                            r.clamp(m / clip, m * clip)
                        } else {
                            r
                        };
                        m + alpha * (r - m)
                    }
                });
            }
            RateMethod::Harmonic { window } => {
                self.recent.push_back(r);
                while self.recent.len() > window.max(1) {
                    self.recent.pop_front();
                }
            }
            RateMethod::Last => self.ewma = Some(r),
        }
    }

    /// Adds a rate sample directly (bytes per second; ignored unless positive and finite).
    pub fn observe_rate(&mut self, rate: f64) {
        if rate.is_finite() && rate > 0.0 {
            self.observe_sample(rate);
        }
    }

    /// Drops every sample: the next one starts the estimate afresh (the stale-rate rule: samples
    /// from before a long gap describe a link that may have changed completely).
    pub fn forget(&mut self) {
        self.ewma = None;
        self.recent.clear();
    }

    /// The estimate, bytes per second, if any sample was seen.
    pub fn estimate(&self) -> Option<f64> {
        match self.method {
            RateMethod::Harmonic { .. } => {
                if self.recent.is_empty() {
                    None
                } else {
                    let inv: f64 = self.recent.iter().map(|r| 1.0 / r).sum();
                    Some(self.recent.len() as f64 / inv)
                }
            }
            _ => self.ewma,
        }
    }
}

/// An EWMA of a non-negative quantity (RTT, queue time), in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ewma {
    /// Weight of the newest sample.
    pub alpha: f64,
    /// Current value, if any sample was seen.
    pub value: Option<f64>,
}

impl Ewma {
    /// An empty average with weight `alpha` on new samples.
    pub fn new(alpha: f64) -> Self {
        Self { alpha, value: None }
    }

    /// Adds a sample (ignored if negative or not finite).
    pub fn observe(&mut self, x: f64) {
        if !(x.is_finite() && x >= 0.0) {
            return;
        }
        self.value = Some(match self.value {
            None => x,
            Some(m) => m + self.alpha * (x - m),
        });
    }
}

/// Everything a policy needs, estimated from observations, with priors until samples arrive.
#[derive(Debug, Clone)]
pub struct Estimator {
    /// Data rate.
    pub rate: RateEstimator,
    /// Round-trip time.
    pub rtt: Ewma,
    /// Server queueing delay.
    pub queue: Ewma,
    /// Used before any sample: rate, RTT and queue priors.
    pub prior: Estimates,
    /// When the last transfer was measured ([`Estimator::mark_rate_sample`]).
    last_rate_sample_s: Option<f64>,
    /// The rate estimate before the last stall ([`Estimator::observe_stall`]), until a transfer
    /// completes normally: what the link may come back to.
    before_stall: Option<f64>,
}

impl Default for Estimator {
    /// Harmonic mean of 5 rate samples; RTT and queue EWMA 0.3; prior 1 MB/s, 20 ms, no queue.
    fn default() -> Self {
        Self::new(RateMethod::DEFAULT, Estimates::from_mb_ms(1.0, 20.0, 0.0))
    }
}

impl Estimator {
    /// An estimator with a rate method and priors.
    pub fn new(method: RateMethod, prior: Estimates) -> Self {
        Self {
            rate: RateEstimator::new(method),
            rtt: Ewma::new(0.3),
            queue: Ewma::new(0.3),
            prior,
            last_rate_sample_s: None,
            before_stall: None,
        }
    }

    /// A transfer of `bytes` was in flight for `seconds` (from first to last byte). It ends an
    /// outage ([`Estimator::in_outage`]): its sample replaces the stall's bound.
    pub fn observe_transfer(&mut self, bytes: u64, seconds: f64) {
        if bytes > 0 && seconds > 0.0 && self.before_stall.take().is_some() {
            // The stall's bound described the outage, not the link now.
            self.rate.forget();
        }
        self.rate.observe(bytes, seconds);
    }

    /// A transfer that stalled: after `seconds` in flight only `acked` bytes were acknowledged
    /// (the hedge rule cancelled it or a probe did not land in time, [`super::hedge`]). Then
    /// `acked / seconds` is an upper bound on the rate, so the estimate drops to it (at least
    /// [`STALL_RATE_FLOOR`]), replacing the samples from before: the next requests stay on the
    /// device until a transfer completes.
    pub fn observe_stall(&mut self, acked: u64, seconds: f64) {
        if !(seconds.is_finite() && seconds > 0.0) {
            return;
        }
        let bound = (acked as f64 / seconds).max(STALL_RATE_FLOOR);
        let current = self.estimates().rate_bytes_per_s;
        if bound >= current {
            return;
        }
        self.before_stall = Some(self.before_stall.unwrap_or(current).max(current));
        self.rate.forget();
        self.rate.observe_rate(bound);
    }

    /// A transfer that landed after a stall was seen: its rate counts, but it does not end the
    /// outage (its time includes the stall).
    pub fn observe_stalled_transfer(&mut self, bytes: u64, seconds: f64) {
        self.rate.observe(bytes, seconds);
    }

    /// Whether the last rate evidence is a stall no completed transfer has cleared since.
    pub fn in_outage(&self) -> bool {
        self.before_stall.is_some()
    }

    /// The rate a probe decision reasons about: the estimate, or in an outage the rate before
    /// it (what the link comes back to; the stalled bound would make any probe look useless).
    pub fn probe_reference(&self) -> Estimates {
        let mut e = self.estimates();
        if let Some(r) = self.before_stall {
            e.rate_bytes_per_s = e.rate_bytes_per_s.max(r);
        }
        e
    }

    /// A round-trip time sample (seconds), e.g. response time minus transfer and server time.
    pub fn observe_rtt(&mut self, seconds: f64) {
        self.rtt.observe(seconds);
    }

    /// The server's queue time per request in microseconds (its load signal).
    pub fn observe_queue_us(&mut self, queue_us: u64) {
        self.queue.observe(queue_us as f64 * 1e-6);
    }

    /// Current estimates (priors where nothing was observed).
    pub fn estimates(&self) -> Estimates {
        Estimates {
            rate_bytes_per_s: self.rate.estimate().unwrap_or(self.prior.rate_bytes_per_s),
            rtt_s: self.rtt.value.unwrap_or(self.prior.rtt_s),
            queue_s: self.queue.value.unwrap_or(self.prior.queue_s),
            device_wait_s: 0.0,
            uplink_wait_s: 0.0,
            server_wait_s: 0.0,
        }
    }

    /// Records when (seconds, on the caller's clock) the last transfer was measured, for
    /// [`Estimator::rate_is_stale`].
    pub fn mark_rate_sample(&mut self, at_s: f64) {
        self.last_rate_sample_s = Some(at_s);
    }

    /// The stale-rate rule: the rate estimate is stale at `now_s` when no transfer was measured
    /// in the last `stale_after_s` seconds (or ever). A link can change completely in that time
    /// (the step trace alternates every 20 s), so a policy should measure it again before
    /// trusting the estimate: the simulator then sends a small probe and decides when it lands
    /// ([`crate::sim::SimConfig::probe_bytes`]) after dropping the old samples
    /// ([`RateEstimator::forget`]), so the probe alone sets the estimate.
    pub fn rate_is_stale(&self, now_s: f64, stale_after_s: f64) -> bool {
        self.last_rate_sample_s
            .is_none_or(|t| now_s - t > stale_after_s)
    }
}

/// Prediction error of a rate method on a sequence of observed transfers `(bytes, seconds)`:
/// each transfer's time is predicted from the estimate before it.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionError {
    /// The method's name.
    pub method: String,
    /// Transfers predicted.
    pub samples: usize,
    /// Mean absolute percentage error of the predicted transfer time.
    pub mape: f64,
    /// Median absolute percentage error.
    pub median_ape: f64,
    /// Fraction of transfers whose time was underestimated by more than 50% (late surprises).
    pub under_50: f64,
}

/// Replays `transfers` through an estimator of `method` and scores its predictions of each
/// transfer's duration (the first transfer only primes the estimator).
pub fn evaluate(method: RateMethod, transfers: &[(u64, f64)]) -> PredictionError {
    let mut est = RateEstimator::new(method);
    let mut apes = Vec::new();
    let mut under = 0usize;
    for &(bytes, secs) in transfers {
        if let Some(r) = est.estimate() {
            let predicted = bytes as f64 / r;
            apes.push((predicted - secs).abs() / secs);
            if predicted < 0.5 * secs {
                under += 1;
            }
        }
        est.observe(bytes, secs);
    }
    let n = apes.len();
    let mape = apes.iter().sum::<f64>() / n.max(1) as f64;
    PredictionError {
        method: method.name(),
        samples: n,
        mape,
        median_ape: crate::stats::median(&apes),
        under_50: under as f64 / n.max(1) as f64,
    }
}
