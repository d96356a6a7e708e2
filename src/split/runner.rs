//! Runs a labelled test set through a [`DeviceClient`] under one [`Policy`] (the trait the
//! simulator runs too) and sums it up with the keys of `edgecut run` (DESIGN §7): samples,
//! accuracy, exit rate, bytes sent, latency, cuts and fallbacks.
//!
//! After every answer, what the client measured goes to the [`Feedback`] (estimator and
//! profiles), and the policy is handed the refreshed cost table ([`Policy::set_table`]).

use super::client::{AnsweredBy, ClientError, DeviceClient, Outcome};
use super::live::Feedback;
use crate::data::Dataset;
use crate::sched::policy::{Context, Decision, Policy};
use crate::sched::SchedError;
use crate::tensor::Tensor;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Policy name (canonical form of the parser).
    pub policy: String,
    /// Samples answered.
    pub samples: usize,
    /// Fraction answered correctly.
    pub accuracy: f64,
    /// Fraction answered by device exit heads.
    pub exit_rate: f64,
    /// Total bytes written to the server.
    pub bytes_sent: usize,
    /// Latencies in ms, in request order.
    pub latencies_ms: Vec<f64>,
    /// Requests per choice label ([`crate::sched::Choice::label`]: `device`, `server`,
    /// `<block>:<encoding>`), exits included.
    pub cuts: BTreeMap<String, usize>,
    /// Requests the device finished itself after the server failed.
    pub fallbacks: usize,
    /// Of the fallbacks, requests answered without trying the server while the circuit
    /// breaker was open.
    pub breaker_skips: usize,
    /// Times the circuit breaker opened.
    pub breaker_openings: usize,
    /// Requests the server answered.
    pub server_answers: usize,
    /// Mean transfer (send to answer) time of server answers, ms.
    pub transfer_ms_mean: f64,
    /// The predicted class of every sample, in order.
    pub predictions: Vec<u32>,
}

impl RunSummary {
    /// The DESIGN §7 JSON object.
    pub fn to_json(&self) -> Value {
        let l = crate::stats::Summary::of(&self.latencies_ms);
        json!({
            "policy": self.policy,
            "samples": self.samples,
            "accuracy": self.accuracy,
            "exit_rate": self.exit_rate,
            "bytes_sent": self.bytes_sent,
            "latency_ms": {"mean": l.mean, "p50": l.p50, "p95": l.p95},
            "cuts": self.cuts,
            "fallbacks": self.fallbacks,
            "breaker": {"openings": self.breaker_openings, "skipped_server": self.breaker_skips},
            "server_answers": self.server_answers,
            "transfer_ms_mean": self.transfer_ms_mean,
        })
    }
}

impl RunSummary {
    /// One line for `edgecut run`: policy, accuracy, exits, bytes, latency and cuts.
    pub fn text(&self, model: &str, server: &str) -> String {
        let l = crate::stats::Summary::of(&self.latencies_ms);
        format!(
            "{model} on {server} via {}: {} samples, accuracy {:.2}%, exit rate {:.1}%, {} bytes sent, latency mean {:.2} / p50 {:.2} / p95 {:.2} ms, {} fallbacks, cuts {:?}",
            self.policy,
            self.samples,
            self.accuracy * 100.0,
            self.exit_rate * 100.0,
            self.bytes_sent,
            l.mean,
            l.p50,
            l.p95,
            self.fallbacks,
            self.cuts
        )
    }
}

/// Accumulates answers into a [`RunSummary`].
struct Tally {
    s: RunSummary,
    correct: usize,
    exits: usize,
    transfer_ms: f64,
}

impl Tally {
    fn new(policy: String, capacity: usize) -> Self {
        Self {
            s: RunSummary {
                policy,
                samples: 0,
                accuracy: 0.0,
                exit_rate: 0.0,
                bytes_sent: 0,
                latencies_ms: Vec::with_capacity(capacity),
                cuts: BTreeMap::new(),
                fallbacks: 0,
                breaker_skips: 0,
                breaker_openings: 0,
                server_answers: 0,
                transfer_ms_mean: 0.0,
                predictions: Vec::with_capacity(capacity),
            },
            correct: 0,
            exits: 0,
            transfer_ms: 0.0,
        }
    }

    /// Counts one answered request whose true class is `label`.
    fn record(&mut self, o: &Outcome, label: u32, block_names: &[String]) {
        let s = &mut self.s;
        s.samples += 1;
        s.predictions.push(o.class);
        self.correct += usize::from(o.class == label);
        s.bytes_sent += o.bytes_sent;
        s.latencies_ms.push(o.latency.as_secs_f64() * 1e3);
        match &o.by {
            AnsweredBy::Exit(_) => self.exits += 1,
            AnsweredBy::Fallback(_) => s.fallbacks += 1,
            AnsweredBy::Server => {
                s.server_answers += 1;
                self.transfer_ms += o.transfer.map_or(0.0, |t| t.as_secs_f64() * 1e3);
            }
            AnsweredBy::Device => {}
        }
        s.breaker_skips += usize::from(o.breaker_open);
        *s.cuts.entry(o.choice.label(block_names)).or_default() += 1;
    }

    fn finish(mut self) -> RunSummary {
        let n = self.s.samples.max(1) as f64;
        self.s.accuracy = self.correct as f64 / n;
        self.s.exit_rate = self.exits as f64 / n;
        self.s.transfer_ms_mean = self.transfer_ms / self.s.server_answers.max(1) as f64;
        self.s
    }
}

/// Runs the first `limit` samples of `data` one by one, each split as `policy` decides under the
/// feedback's estimates, feeding every answer back; `on_outcome` sees every answer with its
/// decision. A policy that needs the future (the oracle) is refused.
pub fn run(
    client: &mut DeviceClient,
    data: &Dataset,
    policy: &mut dyn Policy,
    feedback: &mut Feedback,
    threshold: f32,
    limit: usize,
    on_outcome: impl FnMut(usize, &Decision, &Outcome),
) -> Result<RunSummary, ClientError> {
    let n = limit.min(data.len());
    let shape = client.model().input_shape().to_vec();
    let input = |i: usize| {
        data.batch(i..i + 1, &shape).ok_or_else(|| {
            ClientError::Input(format!(
                "samples have {} values but the model expects input {shape:?}",
                data.images.sample_len()
            ))
        })
    };
    let label = |i: usize| u32::from(data.labels[i]);
    run_inputs(
        client, n, input, label, policy, feedback, threshold, on_outcome,
    )
}

/// The one request loop behind [`run`], over any inputs: `n` requests, the `i`-th with input
/// `input(i)` (`[1, input...]`) whose true class is `label(i)`, each split as `policy` decides
/// under the feedback's estimates, every answer fed back; `on_outcome` sees every answer with
/// its decision. A policy that needs the future (the oracle) is refused.
#[allow(clippy::too_many_arguments)] // the loop's inputs; grouping them would only rename them
pub fn run_inputs(
    client: &mut DeviceClient,
    n: usize,
    mut input: impl FnMut(usize) -> Result<Tensor, ClientError>,
    label: impl Fn(usize) -> u32,
    policy: &mut dyn Policy,
    feedback: &mut Feedback,
    threshold: f32,
    mut on_outcome: impl FnMut(usize, &Decision, &Outcome),
) -> Result<RunSummary, ClientError> {
    if policy.needs_future() {
        return Err(SchedError::NeedsFuture(policy.name().to_string()).into());
    }
    let block_names = feedback.table().block_names.clone();
    let mut tally = Tally::new(policy.name().to_string(), n);
    // Compile every plan the policy may pick up front, so no request pays for compilation.
    if policy.adaptive() {
        for o in &feedback.table().options {
            client.prepare(o.choice)?;
        }
    } else {
        client.prepare(decide(policy, feedback).option)?;
    }
    for i in 0..n {
        let x = input(i)?;
        let decision = decide(policy, feedback);
        let hedge = policy
            .adaptive()
            .then(|| feedback.hedge_check(&decision))
            .flatten();
        let o = client.classify_hedged(&x, decision.option, threshold, hedge)?;
        if feedback.observe(&o)? {
            policy.set_table(feedback.table());
        }
        on_outcome(i, &decision, &o);
        tally.record(&o, label(i), &block_names);
    }
    let mut summary = tally.finish();
    summary.breaker_openings = client.breaker_openings();
    Ok(summary)
}

fn decide(policy: &mut dyn Policy, feedback: &Feedback) -> Decision {
    policy.decide(&Context {
        estimates: feedback.estimates(),
        truth: None,
    })
}
