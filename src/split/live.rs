//! The dynamic scheduler of [`crate::sched`] driving the device client live: per request the
//! [`Dynamic`] policy picks a cut and an encoding from the [`CostTable`] under the
//! [`Estimator`]'s current estimates; after the request, what the client measured feeds back:
//!
//! - the uplink rate: bytes written / (transfer time - server queue and compute - RTT estimate);
//! - the RTT: round trips of `GET /v2/health/live` on a fresh connection, timed at start-up
//!   ([`ping_rtt`]);
//! - the server load: the `queue_us` every answer reports;
//! - the profiles: the device head's run time ([`Profile::observe`] on blocks `0..cut`) and the
//!   server's reported `compute_us` (blocks `cut..n`).
//!
//! Exit probabilities come from running the model's exit heads on labelled data at the same
//! threshold ([`calibrate_exits`]), so the cost model counts requests answered early on the device.

use super::client::{AnsweredBy, ClientError, DeviceClient, Outcome, Route};
use super::runner::{RunSummary, Tally};
use super::wire;
use crate::data::Dataset;
use crate::engine::{Backend, Plan};
use crate::model::Model;
use crate::sched::cost::{CostTable, ExitProbabilities, SampleExits};
use crate::sched::estimate::Estimator;
use crate::sched::policy::{Decision, Dynamic};
use crate::sched::profile::Profile;
use crate::sched::{Cut, Encoding, SchedError};

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Weight of one observed run when updating a profile online.
pub const OBSERVE_ALPHA: f64 = 0.2;

/// The live scheduler: profiles, exit probabilities, the policy and the estimator.
#[derive(Debug, Clone)]
pub struct LiveScheduler {
    model: Arc<Model>,
    device: Profile,
    server: Profile,
    exits: ExitProbabilities,
    encodings: Vec<Encoding>,
    dynamic: Dynamic,
    /// The estimator fed by every answer.
    pub estimator: Estimator,
}

impl LiveScheduler {
    /// A scheduler over `encodings` (split tensors only in those; device-only and server-only
    /// always allowed) from two profiles checked against the model.
    pub fn new(
        model: Arc<Model>,
        device: Profile,
        server: Profile,
        exits: ExitProbabilities,
        encodings: &[Encoding],
        estimator: Estimator,
    ) -> Result<Self, SchedError> {
        let table = CostTable::new(&model, &device, &server, &exits)?;
        let dynamic = Dynamic::with(&table, encodings, None)?;
        Ok(Self {
            model,
            device,
            server,
            exits,
            encodings: encodings.to_vec(),
            dynamic,
            estimator,
        })
    }

    /// The cost table the policy decides over now.
    pub fn table(&self) -> &CostTable {
        self.dynamic.table()
    }

    /// The device profile as updated so far.
    pub fn device_profile(&self) -> &Profile {
        &self.device
    }

    /// The server profile as updated so far.
    pub fn server_profile(&self) -> &Profile {
        &self.server
    }

    /// The policy's choice under the current estimates, with the client route and wire encoding
    /// that carry it out (server-only sends the image as INT8, one byte per pixel).
    pub fn decide(&self) -> (Decision, Route, wire::Encoding) {
        let d = self.dynamic.choose(&self.estimator.estimates());
        (d, route_of(d.option.cut), wire_encoding(d.option.encoding))
    }

    /// Every route the table can choose (to compile their plans up front).
    pub fn routes(&self) -> Vec<Route> {
        let mut v: Vec<Route> = self
            .table()
            .options
            .iter()
            .map(|o| route_of(o.choice.cut))
            .collect();
        v.dedup();
        v
    }

    /// Feeds one answered request back: rate, queue, and the two profiles; rebuilds the table.
    pub fn observe(&mut self, o: &Outcome) -> Result<(), SchedError> {
        let n = self.model.blocks.len();
        if o.cut > 0 && !o.head.is_zero() {
            // The head plan of 0..cut ran (also when an exit answered).
            self.device
                .observe(0..o.cut, o.head.as_secs_f64(), OBSERVE_ALPHA)?;
        }
        if let (AnsweredBy::Server, Some(transfer), Some((queue_us, compute_us))) =
            (&o.by, o.transfer, o.server_us)
        {
            self.estimator.observe_queue_us(queue_us);
            if o.cut < n && compute_us > 0 {
                self.server
                    .observe(o.cut..n, compute_us as f64 * 1e-6, OBSERVE_ALPHA)?;
            }
            let rtt = self.estimator.estimates().rtt_s;
            let upload = transfer.as_secs_f64() - (queue_us + compute_us) as f64 * 1e-6 - rtt;
            self.estimator
                .observe_transfer(o.bytes_sent as u64, upload.max(1e-5));
        }
        let table = CostTable::new(&self.model, &self.device, &self.server, &self.exits)?;
        self.dynamic = Dynamic::with(&table, &self.encodings, None)?;
        Ok(())
    }
}

/// The client route of a scheduler cut (`After(k)` runs blocks `0..=k` on the device).
pub fn route_of(cut: Cut) -> Route {
    match cut {
        Cut::Server => Route::Server,
        Cut::Device => Route::Device,
        Cut::After(k) => Route::Cut(k + 1),
    }
}

/// The wire encoding of a scheduler encoding (uint8 pixels travel as INT8; nothing sent = FP32).
pub fn wire_encoding(e: Encoding) -> wire::Encoding {
    match e {
        Encoding::Fp16 => wire::Encoding::Fp16,
        Encoding::Int8 | Encoding::Uint8Image => wire::Encoding::Int8,
        Encoding::Fp32 | Encoding::None => wire::Encoding::Fp32,
    }
}

/// Per-sample exit confidences and correctness of `model` on the first `samples` of `data`.
pub fn measure_exits(
    model: &Arc<Model>,
    backend: &Backend,
    data: &Dataset,
    samples: usize,
) -> Result<Vec<SampleExits>, ClientError> {
    let n = samples.min(data.len());
    if n == 0 {
        return Err(ClientError::Input(
            "no samples to calibrate the exits on".into(),
        ));
    }
    let plan = Plan::compile(model, 0..model.blocks.len(), backend, 256.min(n))?;
    let mut order: Vec<usize> = (0..model.exits.len()).collect();
    order.sort_by_key(|&i| model.exits[i].after_block);
    let mut out = Vec::with_capacity(n);
    for lo in (0..n).step_by(plan.capacity()) {
        let hi = (lo + plan.capacity()).min(n);
        let x = data.batch(lo..hi, model.input_shape()).ok_or_else(|| {
            ClientError::Input(format!(
                "samples do not fit the input {:?} of the model",
                model.input_shape()
            ))
        })?;
        let o = plan.run(&x)?;
        let fin = o
            .final_stats
            .ok_or_else(|| ClientError::Input("the full-model plan has no final output".into()))?;
        for (i, f) in fin.iter().enumerate().take(hi - lo) {
            let label = data.labels[lo + i] as u32;
            let mut confidence = Vec::with_capacity(order.len());
            let mut exit_correct = Vec::with_capacity(order.len());
            for &e in &order {
                let s = o
                    .exits
                    .iter()
                    .find(|x| x.exit == e)
                    .map(|x| x.stats[i])
                    .ok_or_else(|| ClientError::Input(format!("exit {e} did not run")))?;
                confidence.push(s.confidence);
                exit_correct.push(s.argmax == label);
            }
            out.push(SampleExits {
                confidence,
                exit_correct,
                final_correct: f.argmax == label,
            });
        }
    }
    Ok(out)
}

/// Exit probabilities of `model` at `threshold`, measured on the first `samples` of `data`
/// (use data the run does not answer, e.g. the training split).
pub fn calibrate_exits(
    model: &Arc<Model>,
    backend: &Backend,
    data: &Dataset,
    samples: usize,
    threshold: f32,
) -> Result<ExitProbabilities, ClientError> {
    if model.exits.is_empty() {
        return Ok(ExitProbabilities::none(model));
    }
    let s = measure_exits(model, backend, data, samples)?;
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

/// Runs the first `limit` samples of `data` one by one, each routed and encoded as the live
/// scheduler decides, feeding every answer back; `on_outcome` sees every answer with the
/// decision. The summary's `policy` is `name`; `cuts` counts the routes chosen.
pub fn run_dynamic(
    client: &mut DeviceClient,
    data: &Dataset,
    sched: &mut LiveScheduler,
    name: &str,
    threshold: f32,
    limit: usize,
    mut on_outcome: impl FnMut(usize, &Decision, &Outcome),
) -> Result<RunSummary, ClientError> {
    let n = limit.min(data.len());
    let shape = client.model().input_shape().to_vec();
    let mut tally = Tally::new(name.to_string(), n);
    for r in sched.routes() {
        client.prepare(r)?;
    }
    for i in 0..n {
        let x = data.batch(i..i + 1, &shape).ok_or_else(|| {
            ClientError::Input(format!(
                "samples have {} values but the model expects input {shape:?}",
                data.images.sample_len()
            ))
        })?;
        let (decision, route, encoding) = sched.decide();
        client.set_encoding(encoding);
        let o = client.classify(&x, route, threshold)?;
        sched
            .observe(&o)
            .map_err(|e| ClientError::Input(format!("updating the scheduler: {e}")))?;
        on_outcome(i, &decision, &o);
        tally.record(&o, data.labels[i]);
    }
    Ok(tally.finish())
}
