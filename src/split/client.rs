//! The device side of a split: runs the head [`Plan`] on the device backend, lets the exit heads
//! answer when confident, otherwise encodes the cut tensor and sends it to the tail server over
//! one keep-alive HTTP/1.1 connection (a small blocking client on `std::net`, so the uplink can be
//! paced write by write by a [`Shaper`]).
//!
//! The server is `edgecut serve` or any KServe v2 server holding an exported model repository
//! (Triton, KServe): the client asks `GET /v2` which it is ([`ServerKind`]). `edgecut serve`
//! takes tail requests for every cut on the model's own name; a repository has one model per cut
//! and encoding, named by [`repository_model_name`], whose metadata the client checks against
//! the cut before the first request. Both are sent binary tensors, and both report their load
//! through the statistics extension, polled after answers ([`crate::split::statistics`]).
//!
//! Every call of [`DeviceClient::classify`] answers exactly once: when the server is down,
//! refuses, misses the deadline or answers malformed data, the device runs the tail itself
//! ([`AnsweredBy::Fallback`]) and the connection is dropped so a late answer can never be taken
//! for the next request's.

use super::kserve::{self, RawTensor, HEADER_LENGTH};
use super::repository::{self, repository_model_name};
use super::shaping::{Shaper, Upload, Watch};
use super::statistics::{InferenceStats, LoadSample, StatisticsResponse};
use crate::encoding::{encode_cpu, Encoded, Encoding};
use crate::engine::{Answer, Backend, EngineError, Plan, PlanIo};
use crate::export::{pixel_model_name, pixel_preprocess};
use crate::model::Model;
use crate::sched::{Choice, Cut};
use crate::sim::trace::Trace;
use crate::tensor::Tensor;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Errors of the device client that no fallback can cure (bad setup or local failures).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server URL is not `http://host:port[/]`.
    #[error("server URL '{0}' must look like http://host:port")]
    BadUrl(String),
    /// A cut after a block the model does not have.
    #[error("cut after block {after} is outside this model's blocks 0..{blocks}")]
    BadCut {
        /// The block the cut follows.
        after: usize,
        /// Blocks in the model.
        blocks: usize,
    },
    /// An input the model cannot take.
    #[error("{0}")]
    Input(String),
    /// The tensor to send holds NaN or Inf: refused on the device, since a server would
    /// refuse it too (400) or, worse, answer with normal-looking logits.
    #[error("{tensor} holds NaN or Inf at element {index}; send finite values")]
    NonFinite {
        /// What was to be sent: the input or the split tensor after a block.
        tensor: String,
        /// The first non-finite element.
        index: usize,
    },
    /// The server has no model for a split, or one that does not take the cut's tensor: a
    /// deployment that no fallback cures.
    #[error("{0}")]
    Deployment(String),
    /// The local plans failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The policy or its cost table cannot be used.
    #[error(transparent)]
    Sched(#[from] crate::sched::SchedError),
}

/// Why a remote attempt failed (the request then falls back to the device).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// Connecting, writing or reading failed (down, reset, refused).
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// No complete answer before the deadline.
    #[error("deadline passed")]
    Deadline,
    /// The outage rule gave the upload up ([`crate::sched::hedge`]): it had not progressed
    /// enough to answer before a local run.
    #[error("upload stalled: {written} bytes written in {after:?}; ran locally")]
    Stalled {
        /// Bytes written before giving up.
        written: usize,
        /// Time since the first byte.
        after: Duration,
    },
    /// The server answered with an error status.
    #[error("server answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The error message.
        message: String,
    },
    /// The answer does not parse or has the wrong shape.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The server is reachable but cannot serve this split (see [`ClientError::Deployment`]).
    #[error("{0}")]
    Deployment(String),
}

/// What kind of server the client talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerKind {
    /// `edgecut serve`: every cut goes to the model's own name with `edgecut_*` parameters.
    Edgecut,
    /// A KServe v2 server with an exported model repository (Triton, KServe): one model per cut
    /// and encoding, named by [`repository_model_name`].
    Repository {
        /// The `name` of its server metadata (`triton`, ...).
        server: String,
    },
}

impl ServerKind {
    /// `edgecut`, or the repository server's own name (`triton`, ...).
    pub fn name(&self) -> &str {
        match self {
            ServerKind::Edgecut => "edgecut",
            ServerKind::Repository { server } => server,
        }
    }
}

/// Who answered a request.
#[derive(Debug, Clone, PartialEq)]
pub enum AnsweredBy {
    /// A confident exit head on the device (index into `model.exits`).
    Exit(usize),
    /// The device ran the whole model.
    Device,
    /// The server ran the tail.
    Server,
    /// The server failed; the device ran the tail.
    Fallback(String),
}

/// One answered request with its measurements.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Predicted class.
    pub class: u32,
    /// Who answered.
    pub by: AnsweredBy,
    /// The split used: where the model was cut and how the tensor sent was encoded.
    pub choice: Choice,
    /// Bytes written to the socket (HTTP head + body), 0 when nothing was sent.
    pub bytes_sent: usize,
    /// From the first byte written to the last byte of the answer read, when the server answered.
    pub transfer: Option<Duration>,
    /// Server-reported queue and compute time of this request (µs), when it answered and
    /// reports them per response (`edgecut serve` does, Triton does not).
    pub server_us: Option<(u64, u64)>,
    /// The server's load from a statistics poll right after this answer, when one was due
    /// ([`ClientConfig::stats_interval`]) and the previous poll of the same model is known.
    pub load: Option<LoadSample>,
    /// Head compute time on the device.
    pub head: Duration,
    /// True when the circuit breaker was open: the server had failed repeatedly, so the device
    /// answered without trying it.
    pub breaker_open: bool,
    /// End-to-end latency of the request.
    pub latency: Duration,
    /// When the outage rule gave the upload up: bytes written and seconds since the first
    /// byte (an upper bound on the rate, [`crate::sched::estimate::Estimator::observe_stall`]).
    pub stalled: Option<(u64, f64)>,
}

/// The outage rule's parameters for one request ([`DeviceClient::classify_hedged`]), from the
/// scheduler's estimates ([`crate::sched::hedge::deadline_s`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgeCheck {
    /// When to check first, from the start of the request: the local run's time plus the
    /// margin.
    pub after: Duration,
    /// Seconds the device needs for the rest of the model (the fallback's work).
    pub local_s: f64,
    /// Seconds the answer is expected to need once the upload is done.
    pub after_upload_s: f64,
}

/// Client settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// `http://host:port`.
    pub server: String,
    /// Per-request deadline for the remote part (connect + send + answer).
    pub deadline: Duration,
    /// Bearer token.
    pub token: Option<String>,
    /// Uplink trace to shape writes with.
    pub trace: Option<Trace>,
    /// Emulates a device this many times slower than the backend it runs on: after each local
    /// plan run the client waits `(slowdown - 1)` times its measured duration (1 = as measured).
    pub device_slowdown: f64,
    /// Emulates a device with these per-block seconds (e.g. a published profile): after each
    /// local plan run the client waits until the blocks it ran have taken their profiled time
    /// (no wait when the local run was slower). Applied after `device_slowdown`.
    pub device_block_s: Option<Vec<f64>>,
    /// The circuit breaker: after this many consecutive server failures (0: never) the device
    /// answers alone for a back-off period, then one request probes the server.
    pub breaker_failures: u32,
    /// The first back-off period; it doubles (up to [`MAX_BACKOFF`]) while probes fail.
    pub breaker_backoff: Duration,
    /// Least time between two statistics polls of one model (zero: after every answer). A poll
    /// is one `GET` on the request connection after an answer, outside its measured latency.
    pub stats_interval: Duration,
}

/// Server-only, as the repository's full models are checked for (their input datatype comes
/// from the model name: FP32 for the full model, UINT8 for its pixel twin).
const SERVER_ONLY: Choice = Choice {
    cut: Cut::Server,
    encoding: Encoding::Fp32,
};

/// Longest back-off of the circuit breaker.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The circuit breaker's state: consecutive failures and, while open, when the next probe may go.
#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    backoff: Duration,
    opened: usize,
}

impl ClientConfig {
    /// Defaults: 1 s deadline, no token, no shaping.
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            deadline: Duration::from_secs(1),
            token: None,
            trace: None,
            device_slowdown: 1.0,
            device_block_s: None,
            breaker_failures: 3,
            breaker_backoff: Duration::from_secs(5),
            stats_interval: Duration::from_millis(200),
        }
    }

    /// With a least time between two statistics polls of one model (zero: after every answer).
    pub fn with_stats_interval(mut self, interval: Duration) -> Self {
        self.stats_interval = interval;
        self
    }

    /// With a circuit breaker opening after `failures` consecutive failures (0: never) for
    /// `backoff` at first.
    pub fn with_breaker(mut self, failures: u32, backoff: Duration) -> Self {
        self.breaker_failures = failures;
        self.breaker_backoff = backoff;
        self
    }

    /// With an emulated device slowdown factor (values below 1 or not finite count as 1).
    pub fn with_device_slowdown(mut self, factor: f64) -> Self {
        self.device_slowdown = if factor.is_finite() {
            factor.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// Emulating a device with these per-block seconds ([`ClientConfig::device_block_s`]).
    pub fn with_device_profile(mut self, block_s: Option<Vec<f64>>) -> Self {
        self.device_block_s = block_s;
        self
    }

    /// With a deadline.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// With a bearer token.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// With an uplink trace.
    pub fn with_trace(mut self, trace: Option<Trace>) -> Self {
        self.trace = trace;
        self
    }
}

/// The device: local plans (heads per cut and encoding, which encode the split tensor in their
/// last step) and one connection to the server.
pub struct DeviceClient {
    model: Arc<Model>,
    backend: Backend,
    config: ClientConfig,
    host: String,
    addr: SocketAddr,
    conn: Option<TcpStream>,
    shaper: Option<Shaper>,
    heads: HashMap<(usize, Encoding), Plan>,
    tails: HashMap<usize, Plan>,
    breaker: Breaker,
    kind: Option<ServerKind>,
    /// Repository models whose metadata matched their cut.
    checked: std::collections::HashSet<String>,
    /// Whether the repository holds the pixel twin of the full model (`None`: not asked yet).
    pixel_twin: Option<bool>,
    /// Why server-only requests to a repository went as FP32 rather than 8-bit pixels.
    fp32_server_only: Option<String>,
    /// The last statistics poll of each model: when, and its counters.
    polled: HashMap<String, (Instant, InferenceStats)>,
}

impl DeviceClient {
    /// A client for `model` running on `backend`.
    pub fn new(
        model: Arc<Model>,
        backend: Backend,
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        let url = config.server.trim_end_matches('/');
        let host = url
            .strip_prefix("http://")
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .ok_or_else(|| ClientError::BadUrl(config.server.clone()))?
            .to_string();
        let addr = host
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| ClientError::BadUrl(config.server.clone()))?;
        Ok(Self {
            shaper: config.trace.clone().map(Shaper::new),
            model,
            backend,
            config,
            host,
            addr,
            conn: None,
            heads: HashMap::new(),
            tails: HashMap::new(),
            breaker: Breaker::default(),
            kind: None,
            checked: Default::default(),
            pixel_twin: None,
            fp32_server_only: None,
            polled: HashMap::new(),
        })
    }

    /// How many times the circuit breaker has opened so far.
    pub fn breaker_openings(&self) -> usize {
        self.breaker.opened
    }

    /// Whether the breaker lets a request try the server now (closed, or open past its
    /// back-off: then this request is the probe).
    fn breaker_allows(&self) -> bool {
        self.breaker.open_until.is_none_or(|t| Instant::now() >= t)
    }

    /// Records a server success or failure in the breaker.
    fn breaker_record(&mut self, ok: bool) {
        let threshold = self.config.breaker_failures;
        let b = &mut self.breaker;
        if ok {
            *b = Breaker {
                opened: b.opened,
                ..Breaker::default()
            };
            return;
        }
        b.failures = b.failures.saturating_add(1);
        if threshold == 0 || b.failures < threshold {
            return;
        }
        // Opening, or a failed probe: back off, twice as long as last time.
        b.backoff = if b.open_until.is_some() {
            (b.backoff * 2).min(MAX_BACKOFF)
        } else {
            self.config.breaker_backoff.min(MAX_BACKOFF)
        };
        if b.open_until.is_none() {
            b.opened += 1;
        }
        b.open_until = Some(Instant::now() + b.backoff);
    }

    /// The model.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Blocks the device runs for `choice` (`0..k`), checked against the model.
    fn device_blocks(&self, choice: Choice) -> Result<usize, ClientError> {
        let blocks = self.model.blocks.len();
        match choice.cut {
            Cut::After(after) if after >= blocks => Err(ClientError::BadCut { after, blocks }),
            cut => Ok(cut.device_blocks(blocks)),
        }
    }

    /// Waits out the emulated device of a local run of `blocks` that took `took`.
    fn emulate_slowdown(&self, took: Duration, blocks: std::ops::Range<usize>) {
        let f = self.config.device_slowdown;
        let mut waited = Duration::ZERO;
        if f > 1.0 {
            waited = took.mul_f64(f - 1.0);
            std::thread::sleep(waited);
        }
        if let Some(profile) = &self.config.device_block_s {
            let target: f64 = profile.get(blocks).map_or(0.0, |b| b.iter().sum());
            let left = target - (took + waited).as_secs_f64();
            if left > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(left));
            }
        }
    }

    fn plan<'a, K: std::hash::Hash + Eq>(
        cache: &'a mut HashMap<K, Plan>,
        model: &Arc<Model>,
        backend: &Backend,
        key: K,
        range: std::ops::Range<usize>,
        io: PlanIo,
    ) -> Result<&'a Plan, EngineError> {
        Ok(match cache.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Plan::compile_with(model, range, backend, 1, io)?)
            }
        })
    }

    /// The head plan of `cut` for `encoding` (its last step encodes the output).
    fn head(&mut self, cut: usize, encoding: Encoding) -> Result<&Plan, EngineError> {
        let io = PlanIo::encoding(encoding);
        let key = (cut, encoding);
        Self::plan(&mut self.heads, &self.model, &self.backend, key, 0..cut, io)
    }

    /// Compiles the local plans a choice needs (head, and the tail for fallbacks), so the first
    /// request is not slowed by compilation, and checks the server can take the split when it
    /// can be reached ([`ClientError::Deployment`] when it cannot).
    pub fn prepare(&mut self, choice: Choice) -> Result<(), ClientError> {
        let blocks = self.model.blocks.len();
        let cut = self.device_blocks(choice)?;
        self.check_server(choice)?;
        if cut > 0 {
            self.head(cut, choice.encoding)?;
        }
        if cut < blocks {
            let io = PlanIo::default();
            Self::plan(
                &mut self.tails,
                &self.model,
                &self.backend,
                cut,
                cut..blocks,
                io,
            )?;
        }
        Ok(())
    }

    /// Classifies one sample (`[1, input...]`) split as `choice` (the tensor sent encoded as
    /// `choice.encoding`); exit heads on the device answer when their confidence is strictly
    /// above `threshold`.
    pub fn classify(
        &mut self,
        image: &Tensor,
        choice: Choice,
        threshold: f32,
    ) -> Result<Outcome, ClientError> {
        self.classify_hedged(image, choice, threshold, None)
    }

    /// [`DeviceClient::classify`] under the outage rule ([`crate::sched::hedge`]) when `hedge`
    /// is given: past the check time (from the start of the request) a shaped upload that has
    /// not progressed enough to answer before a local run is given up, the tail runs on the
    /// device, and [`Outcome::stalled`] reports the progress. The connection is dropped (the
    /// bytes not yet written are never sent). Unshaped uploads (a real socket, whose
    /// acknowledged bytes the client cannot see) and answers late from the server fall back at
    /// the client's deadline as before.
    pub fn classify_hedged(
        &mut self,
        image: &Tensor,
        choice: Choice,
        threshold: f32,
        hedge: Option<HedgeCheck>,
    ) -> Result<Outcome, ClientError> {
        let start = Instant::now();
        let blocks = self.model.blocks.len();
        let cut = self.device_blocks(choice)?;
        let mut outcome = Outcome {
            class: 0,
            by: AnsweredBy::Device,
            choice,
            bytes_sent: 0,
            transfer: None,
            server_us: None,
            load: None,
            head: Duration::ZERO,
            latency: Duration::ZERO,
            breaker_open: false,
            stalled: None,
        };
        let (x, encoded) = if cut > 0 {
            let out = self.head(cut, choice.encoding)?.run(image)?;
            self.emulate_slowdown(start.elapsed(), 0..cut);
            outcome.head = start.elapsed();
            match out.answers(threshold)[0] {
                Answer::Exit { exit, class } => {
                    outcome.class = class;
                    outcome.by = AnsweredBy::Exit(exit);
                    outcome.latency = start.elapsed();
                    return Ok(outcome);
                }
                Answer::Final { class } => {
                    outcome.class = class;
                    outcome.latency = start.elapsed();
                    return Ok(outcome);
                }
                Answer::Continue => {
                    let encoded = out.encoded.expect("head plans encode their output");
                    (out.output, encoded)
                }
            }
        } else {
            (image.clone(), encode_cpu(image, choice.encoding))
        };
        if let Some(index) = x.data().iter().position(|v| !v.is_finite()) {
            let tensor = match cut {
                0 => "input".to_string(),
                _ => format!("the split tensor after block {}", cut - 1),
            };
            return Err(ClientError::NonFinite { tensor, index });
        }
        let deadline = Instant::now() + self.config.deadline;
        let remote = if self.breaker_allows() {
            let watch = hedge.map(|h| Watch {
                at: start + h.after,
                local_s: h.local_s,
                after_upload_s: h.after_upload_s,
            });
            let r = self.remote(&x, encoded, choice, deadline, watch, &mut outcome);
            if let Err(RemoteError::Stalled { written, after }) = &r {
                outcome.stalled = Some((*written as u64, after.as_secs_f64()));
            }
            if let Err(RemoteError::Deployment(m)) = r {
                return Err(ClientError::Deployment(m));
            }
            self.breaker_record(r.is_ok());
            r.map_err(|e| e.to_string())
        } else {
            outcome.breaker_open = true;
            Err(format!(
                "circuit breaker open after {} consecutive server failures; the server is probed again after {:?}",
                self.breaker.failures, self.breaker.backoff
            ))
        };
        match remote {
            Ok(class) => {
                outcome.class = class;
                outcome.by = AnsweredBy::Server;
            }
            Err(e) => {
                // Never reuse a connection after a failure: a late answer must not be read
                // as the next request's.
                self.conn = None;
                let io = PlanIo::default();
                let tail = Self::plan(
                    &mut self.tails,
                    &self.model,
                    &self.backend,
                    cut,
                    cut..blocks,
                    io,
                )?;
                let tail_start = Instant::now();
                let out = tail.run(&x)?;
                self.emulate_slowdown(tail_start.elapsed(), cut..blocks);
                outcome.class = out.answers(1.0)[0].class().unwrap_or(0);
                outcome.by = AnsweredBy::Fallback(e);
                outcome.transfer = None;
                outcome.server_us = None;
            }
        }
        outcome.latency = start.elapsed();
        if outcome.by == AnsweredBy::Server {
            outcome.load = self.poll_load(choice);
        }
        Ok(outcome)
    }

    /// The kind of server, asked once (`GET /v2`: `edgecut serve` names itself `edgecut`).
    pub fn server_kind(&mut self) -> Result<ServerKind, RemoteError> {
        let deadline = Instant::now() + self.config.deadline;
        self.detect(deadline)
    }

    fn detect(&mut self, deadline: Instant) -> Result<ServerKind, RemoteError> {
        if let Some(k) = &self.kind {
            return Ok(k.clone());
        }
        let (status, body) = self.get("/v2", deadline)?;
        let meta: Value = match status {
            200 => serde_json::from_slice(&body)
                .map_err(|e| RemoteError::Malformed(format!("server metadata: {e}")))?,
            _ => return Err(status_error(status, &body)),
        };
        let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
        let kind = if name == "edgecut" {
            ServerKind::Edgecut
        } else {
            ServerKind::Repository {
                server: name.to_string(),
            }
        };
        self.kind = Some(kind.clone());
        Ok(kind)
    }

    /// Where requests for `choice` go: `edgecut serve` takes every split on the model's name,
    /// a repository has one model per split (server-only: the pixel twin once it is known to be
    /// there, else the FP32 full model).
    fn target(&self, kind: &ServerKind, choice: Choice) -> String {
        match kind {
            ServerKind::Edgecut => self.model.name().to_string(),
            ServerKind::Repository { .. }
                if choice.cut == Cut::Server && self.pixel_twin == Some(true) =>
            {
                pixel_model_name(self.model.name())
            }
            ServerKind::Repository { .. } => repository_model_name(self.model.name(), choice)
                .unwrap_or_else(|| self.model.name().to_string()),
        }
    }

    /// Why server-only requests to a repository have gone as FP32 rather than as the 8-bit image
    /// its pixel twin takes (none of an image model's pixel twin in the repository, or an input
    /// that is no 8-bit image); `None` while they have not.
    pub fn fp32_server_only(&self) -> Option<&str> {
        self.fp32_server_only.as_deref()
    }

    /// Notes, once, why server-only requests go as FP32.
    fn note_fp32_server_only(&mut self, why: String) {
        if self.fp32_server_only.is_none() {
            log::warn!("server-only requests go as FP32: {why}");
            self.fp32_server_only = Some(why);
        }
    }

    /// Asks once whether a repository holds the 8-bit pixel twin of the full model (for an
    /// image model): a missing twin (an older repository) leaves server-only on FP32, a twin
    /// whose metadata does not match the model is a deployment error.
    fn find_pixel_twin(&mut self, deadline: Instant) -> Result<bool, RemoteError> {
        if let Some(found) = self.pixel_twin {
            return Ok(found);
        }
        let name = pixel_model_name(self.model.name());
        let image = pixel_preprocess(&self.model).is_some();
        let found = image && self.check_repository_model(SERVER_ONLY, &name, deadline)?;
        if image && !found {
            self.note_fp32_server_only(format!(
                "the repository has no '{name}' (the full model taking 8-bit pixels); export it again with this edgecut to send a quarter of the bytes"
            ));
        }
        self.pixel_twin = Some(found);
        Ok(found)
    }

    /// Checks once that the repository model for `choice` exists and takes the cut's tensor.
    fn require_repository_model(
        &mut self,
        choice: Choice,
        name: &str,
        deadline: Instant,
    ) -> Result<(), RemoteError> {
        if self.check_repository_model(choice, name, deadline)? {
            return Ok(());
        }
        Err(RemoteError::Deployment(repository::missing(
            &self.model,
            choice,
            name,
        )))
    }

    /// Whether the repository holds the model `name` (false: 400 or 404), checking once that
    /// it takes the tensor of `choice`.
    fn check_repository_model(
        &mut self,
        choice: Choice,
        name: &str,
        deadline: Instant,
    ) -> Result<bool, RemoteError> {
        if self.checked.contains(name) {
            return Ok(true);
        }
        let (status, body) = self.get(&format!("/v2/models/{name}"), deadline)?;
        if matches!(status, 400 | 404) {
            return Ok(false);
        }
        if status != 200 {
            return Err(status_error(status, &body));
        }
        let meta: Value = serde_json::from_slice(&body)
            .map_err(|e| RemoteError::Malformed(format!("metadata of '{name}': {e}")))?;
        repository::check_metadata(&self.model, choice, name, &meta)
            .map_err(RemoteError::Deployment)?;
        self.checked.insert(name.to_string());
        Ok(true)
    }

    /// Before the first request of `choice`: finds the server's kind, checks the repository model
    /// of the split and takes the first statistics poll. A server that cannot be reached now is
    /// left to the requests (they fall back); a missing or mismatched model is an error.
    fn check_server(&mut self, choice: Choice) -> Result<(), ClientError> {
        if choice.cut == Cut::Device {
            return Ok(());
        }
        let deadline = Instant::now() + self.config.deadline;
        let r = self.detect(deadline).and_then(|kind| {
            let name = self.target(&kind, choice);
            if let ServerKind::Repository { .. } = kind {
                if choice.cut == Cut::Server && self.find_pixel_twin(deadline)? {
                    return Ok(pixel_model_name(self.model.name()));
                }
                self.require_repository_model(choice, &name, deadline)?;
            }
            Ok(name)
        });
        match r {
            Ok(name) => {
                if !self.polled.contains_key(&name) {
                    self.poll(&name, deadline);
                }
                Ok(())
            }
            Err(RemoteError::Deployment(m)) => Err(ClientError::Deployment(m)),
            Err(_) => {
                self.conn = None;
                Ok(())
            }
        }
    }

    /// The load since the last poll of the model `choice` went to, when a poll is due.
    fn poll_load(&mut self, choice: Choice) -> Option<LoadSample> {
        let name = self.target(self.kind.as_ref()?, choice);
        if let Some((at, _)) = self.polled.get(&name) {
            if at.elapsed() < self.config.stats_interval {
                return None;
            }
        }
        let deadline = Instant::now() + self.config.deadline;
        self.poll(&name, deadline)
    }

    /// Polls the statistics of `name`, keeping them as the next baseline; returns the load
    /// since the previous poll. A failed poll only drops the connection.
    fn poll(&mut self, name: &str, deadline: Instant) -> Option<LoadSample> {
        let stats = match self.get(&format!("/v2/models/{name}/stats"), deadline) {
            Ok((200, body)) => StatisticsResponse::parse(&body).ok()?.model(name)?,
            Ok(_) => return None,
            Err(_) => {
                self.conn = None;
                return None;
            }
        };
        let previous = self
            .polled
            .insert(name.to_string(), (Instant::now(), stats.clone()));
        LoadSample::between(&previous?.1, &stats)
    }

    /// The keep-alive connection, opened when there is none.
    fn connection(&mut self, deadline: Instant) -> Result<&mut TcpStream, RemoteError> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, time_left(deadline)?)?;
            s.set_nodelay(true)?;
            self.conn = Some(s);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// One `GET` on the keep-alive connection: status and body. The caller drops the
    /// connection when it fails.
    fn get(&mut self, path: &str, deadline: Instant) -> Result<(u16, Vec<u8>), RemoteError> {
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if let Some(t) = &self.config.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        head.push_str("\r\n");
        let conn = self.connection(deadline)?;
        conn.set_write_timeout(Some(time_left(deadline)?))?;
        conn.write_all(head.as_bytes())?;
        let (status, _, body) = read_response(conn, deadline)?;
        Ok((status, body))
    }

    /// The HTTP request for `e` split as `choice`, to `target` on a server of `kind`; `pixels`:
    /// the 8-bit image a repository's pixel twin takes instead of `e`.
    fn request_bytes(
        &self,
        kind: &ServerKind,
        target: &str,
        e: Encoded,
        choice: Choice,
        pixels: Option<Vec<u8>>,
    ) -> Vec<u8> {
        let mut header = Map::new();
        let batch = e.shape.first().copied().unwrap_or(1);
        let inputs = match kind {
            ServerKind::Edgecut => {
                let mut params = Map::new();
                // The cut in the one vocabulary: the server runs the blocks after
                // `edgecut_cut_after`; a request without it is a full-model request.
                if let Cut::After(k) = choice.cut {
                    params.insert("edgecut_cut_after".into(), json!(k));
                }
                params.insert("edgecut_model_hash".into(), json!(self.model.hash));
                params.insert("edgecut_encoding".into(), json!(e.encoding.datatype()));
                if let Some(p) = e.int8 {
                    params.insert("edgecut_scale".into(), json!(p.scale));
                    params.insert("edgecut_zero_point".into(), json!(p.zero_point));
                }
                params.insert("binary_data_output".into(), json!(true));
                header.insert("parameters".into(), Value::Object(params));
                vec![RawTensor {
                    name: "input".into(),
                    datatype: e.encoding.datatype().into(),
                    shape: e.shape,
                    bytes: e.bytes,
                    parameters: Map::new(),
                }]
            }
            ServerKind::Repository { .. } => {
                header.insert(
                    "outputs".into(),
                    json!([{"name": "output", "parameters": {"binary_data": true}}]),
                );
                match pixels {
                    Some(p) => vec![repository::pixel_input(e.shape, p)],
                    None => repository::wire_inputs(e, batch),
                }
            }
        };
        let (body, json_len) = kserve::build(header, "inputs", &inputs, true);
        let mut head = format!(
            "POST /v2/models/{target}/infer HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n{HEADER_LENGTH}: {}\r\n",
            self.host,
            body.len(),
            json_len.unwrap_or(body.len())
        );
        if let Some(t) = &self.config.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&body);
        bytes
    }

    fn remote(
        &mut self,
        x: &Tensor,
        mut encoded: Encoded,
        choice: Choice,
        deadline: Instant,
        watch: Option<Watch>,
        outcome: &mut Outcome,
    ) -> Result<u32, RemoteError> {
        let kind = self.detect(deadline)?;
        let mut target = self.target(&kind, choice);
        let mut pixels = None;
        let output = match kind {
            ServerKind::Edgecut => "logits",
            ServerKind::Repository { .. } => {
                if choice.cut == Cut::Server && self.find_pixel_twin(deadline)? {
                    // The pixel twin takes the 8-bit image, when the input is one.
                    let preprocess = pixel_preprocess(&self.model);
                    pixels = preprocess.and_then(|p| repository::pixels_of(p, x));
                    if pixels.is_some() {
                        target = pixel_model_name(self.model.name());
                    } else {
                        self.note_fp32_server_only(format!(
                            "an input is not an 8-bit image under the model's preprocessing (a value maps back further than {} from a whole pixel value, or outside 0..=255)",
                            repository::PIXEL_TOLERANCE
                        ));
                        target = self.model.name().to_string();
                    }
                }
                self.require_repository_model(choice, &target, deadline)?;
                if choice.cut == Cut::Server
                    && encoded.encoding != Encoding::Fp32
                    && pixels.is_none()
                {
                    // A repository's full model takes the FP32 input.
                    encoded = encode_cpu(x, Encoding::Fp32);
                }
                "output"
            }
        };
        let request = self.request_bytes(&kind, &target, encoded, choice, pixels);
        self.connection(deadline)?;
        let conn = self.conn.as_mut().expect("connected above");
        let sent_at = Instant::now();
        conn.set_write_timeout(Some(time_left(deadline)?))?;
        outcome.bytes_sent = request.len();
        match &mut self.shaper {
            Some(s) => s
                .write_watched(conn, &request, deadline, watch)
                .map_err(|e| match e {
                    Upload::Io(e) => RemoteError::Io(e),
                    Upload::Stalled { written, after } => RemoteError::Stalled { written, after },
                })?,
            None => conn.write_all(&request)?,
        }
        let (status, headers, body) = read_response(conn, deadline)?;
        outcome.transfer = Some(sent_at.elapsed());
        if status != 200 {
            return Err(status_error(status, &body));
        }
        let header_len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(HEADER_LENGTH))
            .map(|(_, v)| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| RemoteError::Malformed(format!("{HEADER_LENGTH}: {v}")))
            })
            .transpose()?;
        let msg = kserve::parse(&body, header_len, "outputs")
            .map_err(|e| RemoteError::Malformed(e.to_string()))?;
        let classes = self.model.classes();
        let logits = msg
            .tensors
            .iter()
            .find(|t| t.name == output)
            .filter(|t| t.datatype == "FP32" && t.shape == [x.batch(), classes])
            .ok_or_else(|| {
                RemoteError::Malformed(format!(
                    "no FP32 '{output}' of shape [{}, {classes}]",
                    x.batch()
                ))
            })?;
        let values = kserve::f32_values(&logits.bytes);
        let us = |k: &str| msg.parameter(k).and_then(Value::as_u64);
        outcome.server_us = us("queue_us").zip(us("compute_us"));
        if values.iter().any(|v| !v.is_finite()) {
            return Err(RemoteError::Malformed("non-finite logits".into()));
        }
        Ok(crate::cpu::exit_stats(&values, classes)[0].argmax)
    }
}

/// Time left before `deadline`, or [`RemoteError::Deadline`].
fn time_left(deadline: Instant) -> Result<Duration, RemoteError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|l| !l.is_zero())
        .ok_or(RemoteError::Deadline)
}

/// The error of a non-200 answer, with the server's message.
fn status_error(status: u16, body: &[u8]) -> RemoteError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    RemoteError::Status { status, message }
}

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest response body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;

type Head = (u16, Vec<(String, String)>, Vec<u8>);

/// Reads one HTTP/1.1 response with a `Content-Length` body before `deadline`.
fn read_response(conn: &mut TcpStream, deadline: Instant) -> Result<Head, RemoteError> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    let read = |conn: &mut TcpStream, chunk: &mut [u8]| -> Result<usize, RemoteError> {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|l| !l.is_zero())
            .ok_or(RemoteError::Deadline)?;
        conn.set_read_timeout(Some(left))?;
        match conn.read(chunk) {
            Ok(0) => Err(RemoteError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ))),
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(RemoteError::Deadline)
            }
            Err(e) => Err(e.into()),
        }
    };
    loop {
        let n = read(conn, &mut chunk)?;
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(at)) => {
                let status = resp.code.unwrap_or(0);
                let headers: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let len = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| {
                        RemoteError::Malformed("response without a Content-Length".into())
                    })?;
                if len > MAX_BODY {
                    return Err(RemoteError::Malformed(format!(
                        "response body of {len} bytes is over {MAX_BODY}"
                    )));
                }
                let mut body = buf[at..].to_vec();
                while body.len() < len {
                    let n = read(conn, &mut chunk)?;
                    body.extend_from_slice(&chunk[..n]);
                }
                if body.len() > len {
                    return Err(RemoteError::Malformed(
                        "bytes after the response body".into(),
                    ));
                }
                return Ok((status, headers, body));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err(RemoteError::Malformed("response head too large".into()))
            }
            Err(e) => return Err(RemoteError::Malformed(format!("bad response head: {e}"))),
        }
    }
}
