//! Runs a labelled test set through a [`DeviceClient`] under one policy and sums it up with the
//! keys of `edgecut run` (DESIGN §7): samples, accuracy, exit rate, bytes sent, latency, cuts
//! and fallbacks.

use super::client::{AnsweredBy, ClientError, DeviceClient, Outcome, Route};
use crate::data::Dataset;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use thiserror::Error;

/// A fixed split policy (the dynamic one is [`super::live::run_dynamic`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Everything on the device.
    Device,
    /// Everything on the server.
    Server,
    /// Always cut before block `k` (device runs `0..k`).
    Static(usize),
}

/// A policy name that cannot be run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not a known policy.
    #[error("unknown policy '{0}' (expected device, server, static:K or dynamic)")]
    Unknown(String),
    /// `dynamic` is not a fixed policy: it is run by [`super::live::run_dynamic`].
    #[error("policy 'dynamic' chooses per request: run it with split::live::run_dynamic (edgecut run --policy dynamic), not as a fixed policy")]
    DynamicUnavailable,
}

impl Policy {
    /// Parses `device`, `server` or `static:K`.
    pub fn parse(s: &str) -> Result<Self, PolicyError> {
        match s {
            "device" => Ok(Policy::Device),
            "server" => Ok(Policy::Server),
            "dynamic" => Err(PolicyError::DynamicUnavailable),
            _ => s
                .strip_prefix("static:")
                .and_then(|k| k.parse().ok())
                .map(Policy::Static)
                .ok_or_else(|| PolicyError::Unknown(s.to_string())),
        }
    }

    /// The route of every request under this policy.
    pub fn route(self) -> Route {
        match self {
            Policy::Device => Route::Device,
            Policy::Server => Route::Server,
            Policy::Static(k) => Route::Cut(k),
        }
    }

    /// `device`, `server`, `static:K`.
    pub fn name(self) -> String {
        match self {
            Policy::Device => "device".into(),
            Policy::Server => "server".into(),
            Policy::Static(k) => format!("static:{k}"),
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Policy name.
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
    /// Requests per chosen cut (`0` = server only, `blocks` = device only), exits included.
    pub cuts: BTreeMap<usize, usize>,
    /// Requests the device finished itself after the server failed.
    pub fallbacks: usize,
    /// Requests the server answered.
    pub server_answers: usize,
    /// Mean transfer (send to answer) time of server answers, ms.
    pub transfer_ms_mean: f64,
}

impl RunSummary {
    /// The DESIGN §7 JSON object.
    pub fn to_json(&self) -> Value {
        let l = crate::stats::Summary::of(&self.latencies_ms);
        let cuts: serde_json::Map<String, Value> = self
            .cuts
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        json!({
            "policy": self.policy,
            "samples": self.samples,
            "accuracy": self.accuracy,
            "exit_rate": self.exit_rate,
            "bytes_sent": self.bytes_sent,
            "latency_ms": {"mean": l.mean, "p50": l.p50, "p95": l.p95},
            "cuts": cuts,
            "fallbacks": self.fallbacks,
            "server_answers": self.server_answers,
            "transfer_ms_mean": self.transfer_ms_mean,
        })
    }
}

/// Accumulates answers into a [`RunSummary`]; shared by fixed and dynamic policies.
pub(crate) struct Tally {
    s: RunSummary,
    correct: usize,
    exits: usize,
    transfer_ms: f64,
}

impl Tally {
    /// An empty tally for `capacity` requests of `policy`.
    pub(crate) fn new(policy: String, capacity: usize) -> Self {
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
                server_answers: 0,
                transfer_ms_mean: 0.0,
            },
            correct: 0,
            exits: 0,
            transfer_ms: 0.0,
        }
    }

    /// Counts one answered request whose true class is `label`.
    pub(crate) fn record(&mut self, o: &Outcome, label: u8) {
        let s = &mut self.s;
        s.samples += 1;
        self.correct += usize::from(o.class == label as u32);
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
        *s.cuts.entry(o.cut).or_default() += 1;
    }

    /// The summary with rates and means filled in.
    pub(crate) fn finish(mut self) -> RunSummary {
        let n = self.s.samples.max(1) as f64;
        self.s.accuracy = self.correct as f64 / n;
        self.s.exit_rate = self.exits as f64 / n;
        self.s.transfer_ms_mean = self.transfer_ms / self.s.server_answers.max(1) as f64;
        self.s
    }
}

/// Runs the first `limit` samples of `data` one by one; `on_outcome` sees every answer.
pub fn run_policy(
    client: &mut DeviceClient,
    data: &Dataset,
    policy: Policy,
    threshold: f32,
    limit: usize,
    mut on_outcome: impl FnMut(usize, &Outcome),
) -> Result<RunSummary, ClientError> {
    let n = limit.min(data.len());
    let shape = client.model().input_shape().to_vec();
    let mut tally = Tally::new(policy.name(), n);
    client.prepare(policy.route())?;
    for i in 0..n {
        let x = data.batch(i..i + 1, &shape).ok_or_else(|| {
            ClientError::Input(format!(
                "samples have {} values but the model expects input {shape:?}",
                data.images.sample_len()
            ))
        })?;
        let o = client.classify(&x, policy.route(), threshold)?;
        on_outcome(i, &o);
        tally.record(&o, data.labels[i]);
    }
    Ok(tally.finish())
}
