//! The tail server: KServe v2 REST routes on tokio + axum (served connection by connection with
//! hyper's HTTP/1.1 so header sizes and header timeouts are bounded), GPU work on worker threads
//! fed by a bounded queue, and dynamic batching of requests for the same cut.
//!
//! Routes: `GET /v2/health/live`, `GET /v2/health/ready`, `GET /v2`, `GET /v2/models/{name}`,
//! `GET /v2/models/{name}/ready`, `POST /v2/models/{name}/infer`, `GET /v2/models/{name}/stats`
//! and `GET /v2/models/stats` (the statistics extension, [`crate::split::statistics`]).
//! Every error is a 4xx/5xx with a `{"error": "..."}` body.
//!
//! An infer request is either a full-model request (one input, the image tensor as `FP32` or
//! `UINT8` scaled by 1/255) or a tail request with parameters `edgecut_cut_after` (the block the cut follows),
//! `edgecut_model_hash`, and optionally `edgecut_encoding` (`FP32`, `FP16`, `INT8`; by default
//! the input's datatype), `edgecut_scale` and `edgecut_zero_point` (for `INT8`). The response holds
//! one `FP32` output `logits` `[batch, classes]` and parameters `queue_us`, `compute_us` and
//! `batch_requests` (how many requests shared the GPU dispatch).
//!
//! Rooms: `http` (router, limits, auth, responses), `request` (parsing and validating an
//! infer request), `batcher` (the bounded queue, deadlines, batching by cut) and `worker`
//! (running batches on compiled plans).

mod batcher;
pub(crate) mod http;
pub(crate) mod request;
mod worker;

use crate::encoding::Encoding;
use crate::engine::Backend;
use crate::model::Model;
use crate::split::statistics::{BatchStats, InferenceStats};
use batcher::{Queue, QueueState};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use thiserror::Error;

/// Errors starting the server.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServerError {
    /// No models to serve.
    #[error("no models to serve")]
    NoModels,
    /// Two models with one name.
    #[error("two models are named '{0}'; serve each name once")]
    DuplicateModel(String),
    /// A setting out of range.
    #[error("invalid server setting: {0}")]
    Config(String),
    /// Binding the address or starting the runtime failed.
    #[error("cannot listen on {addr}: {source}")]
    Io {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Server settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free port).
    pub addr: SocketAddr,
    /// Bearer token required on every route but `/v2/health/*` when set.
    pub token: Option<String>,
    /// GPU worker threads per model: every model has its own queue and workers, so a slow
    /// model cannot hold a fast one's requests behind its own.
    pub workers: usize,
    /// Most samples in one GPU dispatch (and in one request).
    pub max_batch: usize,
    /// How long the first request of a batch waits for others of the same cut.
    pub max_delay: Duration,
    /// Requests waiting for a worker (per model) before new ones are refused with 503.
    pub queue_capacity: usize,
    /// Limit on the request's HTTP header bytes (request line and headers) and on the
    /// KServe JSON header (`Inference-Header-Content-Length`).
    pub max_header_bytes: usize,
    /// Limit on the request body.
    pub max_body_bytes: usize,
    /// Longest wait for a GPU result before answering 504.
    pub request_timeout: Duration,
    /// Longest time a request body may take to arrive once its headers have; a slower one is
    /// answered 408 and its connection closed, so stalled uploads cannot hold connections.
    pub body_timeout: Duration,
    /// Connections served at once. Beyond it a connection is answered at once and closed:
    /// health checks 200, everything else 503 (keep it below the process's descriptor limit).
    pub max_connections: usize,
    /// Limit on a body without binary tensors: JSON tensors parse into many times their size.
    pub max_json_bytes: usize,
    /// Test seam: a worker panics on a batch of exactly this many samples (after its plan is
    /// compiled), so tests can check that a panicking batch is answered 500 and the worker lives.
    #[doc(hidden)]
    pub inject_panic_at_samples: Option<usize>,
    /// Test seam: every batch of the model with this name takes this much longer (a slow
    /// model on any machine), so tests can check that it delays no other model.
    #[doc(hidden)]
    pub inject_slow_model: Option<(String, Duration)>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            token: None,
            workers: 1,
            max_batch: 32,
            max_delay: Duration::from_micros(500),
            queue_capacity: 256,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
            max_connections: 512,
            max_json_bytes: 2 * 1024 * 1024,
            inject_panic_at_samples: None,
            inject_slow_model: None,
        }
    }
}

impl ServerConfig {
    /// Defaults listening on `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            ..Self::default()
        }
    }

    /// With a bearer token.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// With worker threads, batch size and batching delay.
    pub fn with_batching(mut self, workers: usize, max_batch: usize, max_delay: Duration) -> Self {
        self.workers = workers;
        self.max_batch = max_batch;
        self.max_delay = max_delay;
        self
    }

    /// With header and body limits.
    pub fn with_limits(mut self, max_header_bytes: usize, max_body_bytes: usize) -> Self {
        self.max_header_bytes = max_header_bytes;
        self.max_body_bytes = max_body_bytes;
        self
    }
}

/// A running server. Dropping it (or [`Server::shutdown`]) stops it at once: open connections
/// are cut, like a killed process.
pub struct Server {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    queues: Vec<Arc<Queue>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Loads nothing: takes loaded models, starts the workers, binds and starts serving.
    pub fn start(
        models: Vec<Arc<Model>>,
        backend: Backend,
        config: ServerConfig,
    ) -> Result<Self, ServerError> {
        if models.is_empty() {
            return Err(ServerError::NoModels);
        }
        if config.workers == 0
            || config.max_batch == 0
            || config.queue_capacity == 0
            || config.max_connections == 0
        {
            return Err(ServerError::Config(
                "workers, max batch, queue capacity and max connections must be at least 1".into(),
            ));
        }
        let mut names = HashMap::new();
        for (i, m) in models.iter().enumerate() {
            if names.insert(m.name().to_string(), i).is_some() {
                return Err(ServerError::DuplicateModel(m.name().to_string()));
            }
        }
        let queues: Vec<Arc<Queue>> = models
            .iter()
            .map(|_| {
                Arc::new(Queue {
                    jobs: Mutex::new(QueueState {
                        jobs: VecDeque::new(),
                        closed: false,
                    }),
                    ready: Condvar::new(),
                    capacity: config.queue_capacity,
                })
            })
            .collect();
        let shared = Arc::new(Shared {
            stats: models
                .iter()
                .map(|_| Mutex::new(ModelStats::default()))
                .collect(),
            models,
            names,
            plans: worker::PlanCache::new(),
            backend,
            config: config.clone(),
            queues: queues.clone(),
            next_id: AtomicU64::new(0),
        });
        // Compile the plans of the likely cuts now rather than on the first requests.
        for (i, m) in shared.models.iter().enumerate() {
            for from in std::iter::once(0).chain(m.cut_candidates().into_iter().map(|c| c + 1)) {
                if let Err(e) = worker::plan(&shared, i, from, 1, Encoding::Fp32) {
                    log::warn!("compiling blocks {from}.. of {} failed: {e}", m.name());
                }
            }
        }
        let workers = (0..shared.models.len())
            .flat_map(|m| (0..config.workers).map(move |i| (m, i)))
            .map(|(m, i)| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("edgecut-gpu-{m}-{i}"))
                    .spawn(move || worker::worker(shared, m))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ServerError::Io {
                addr: config.addr.to_string(),
                source,
            })?;
        let io = |source| ServerError::Io {
            addr: config.addr.to_string(),
            source,
        };
        let listener = std::net::TcpListener::bind(config.addr).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let addr = listener.local_addr().map_err(io)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("edgecut-http")
            .enable_all()
            .build()
            .map_err(io)?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(io)?
        };
        let app = http::router(shared);
        runtime.spawn(http::accept_loop(listener, app, config));
        Ok(Self {
            addr,
            runtime: Some(runtime),
            queues,
            workers,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Blocks the calling thread for as long as the server runs (for `edgecut serve`).
    pub fn wait(&self) {
        for w in &self.workers {
            while !w.is_finished() {
                std::thread::park_timeout(Duration::from_secs(3600));
            }
        }
    }

    /// Stops at once: the listener and every connection close, queued jobs are dropped.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        self.queues.iter().for_each(|q| q.close());
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Shared {
    models: Vec<Arc<Model>>,
    names: HashMap<String, usize>,
    stats: Vec<Mutex<ModelStats>>,
    plans: worker::PlanCache,
    backend: Backend,
    config: ServerConfig,
    /// One queue per model.
    queues: Vec<Arc<Queue>>,
    next_id: AtomicU64,
}

/// A model's cumulative counters in the statistics extension's terms
/// ([`crate::split::statistics`]).
#[derive(Default)]
struct ModelStats {
    /// Samples computed.
    inference_count: u64,
    /// Batches computed.
    execution_count: u64,
    /// Milliseconds since the Unix epoch of the last batch (0: none yet).
    last_inference_ms: u64,
    /// Per-request counters.
    inference: InferenceStats,
    /// Per-batch counters by batch size.
    batches: BTreeMap<u64, BatchStats>,
}
