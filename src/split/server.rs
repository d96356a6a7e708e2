//! The tail server: KServe v2 REST routes on tokio + axum (served connection by connection with
//! hyper's HTTP/1.1 so header sizes and header timeouts are bounded), GPU work on worker threads
//! fed by a bounded queue, and dynamic batching of requests for the same cut.
//!
//! Routes: `GET /v2/health/live`, `GET /v2/health/ready`, `GET /v2`, `GET /v2/models/{name}`,
//! `GET /v2/models/{name}/ready`, `POST /v2/models/{name}/infer`, `GET /v2/models/{name}/stats`.
//! Every error is a 4xx/5xx with a `{"error": "..."}` body.
//!
//! An infer request is either a full-model request (one input, the image tensor as `FP32` or
//! `UINT8` scaled by 1/255) or a tail request with parameters `edgecut_from_block` (the cut),
//! `edgecut_model_hash`, and optionally `edgecut_encoding` (`FP32`, `FP16`, `INT8`; by default
//! the input's datatype), `edgecut_scale` and `edgecut_zero_point` (for `INT8`). The response holds
//! one `FP32` output `logits` `[batch, classes]` and parameters `queue_us`, `compute_us` and
//! `batch_requests` (how many requests shared the GPU dispatch).

use super::kserve::{self, RawTensor, HEADER_LENGTH};
use super::wire::{Codec, Encoded, Encoding, Int8Params};
use crate::engine::{Backend, EngineError, Plan};
use crate::model::Model;
use crate::tensor::Tensor;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
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
    /// GPU worker threads.
    pub workers: usize,
    /// Most samples in one GPU dispatch (and in one request).
    pub max_batch: usize,
    /// How long the first request of a batch waits for others of the same cut.
    pub max_delay: Duration,
    /// Requests waiting for a worker before new ones are refused with 503.
    pub queue_capacity: usize,
    /// Limit on the request's HTTP header bytes (request line and headers) and on the
    /// KServe JSON header (`Inference-Header-Content-Length`).
    pub max_header_bytes: usize,
    /// Limit on the request body.
    pub max_body_bytes: usize,
    /// Longest wait for a GPU result before answering 504.
    pub request_timeout: Duration,
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
    queue: Arc<Queue>,
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
        if config.workers == 0 || config.max_batch == 0 || config.queue_capacity == 0 {
            return Err(ServerError::Config(
                "workers, max batch and queue capacity must be at least 1".into(),
            ));
        }
        let mut names = HashMap::new();
        for (i, m) in models.iter().enumerate() {
            if names.insert(m.name().to_string(), i).is_some() {
                return Err(ServerError::DuplicateModel(m.name().to_string()));
            }
        }
        let queue = Arc::new(Queue {
            jobs: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity: config.queue_capacity,
        });
        let shared = Arc::new(Shared {
            stats: models
                .iter()
                .map(|_| Mutex::new(ModelStats::default()))
                .collect(),
            models,
            names,
            plans: Mutex::new(HashMap::new()),
            backend,
            config: config.clone(),
            queue: queue.clone(),
            started: Instant::now(),
            next_id: AtomicU64::new(0),
        });
        // Compile the plans of the likely cuts now rather than on the first requests.
        for (i, m) in shared.models.iter().enumerate() {
            for from in std::iter::once(0).chain(m.cut_candidates().into_iter().map(|c| c + 1)) {
                if let Err(e) = plan(&shared, i, from, 1) {
                    log::warn!("compiling blocks {from}.. of {} failed: {e}", m.name());
                }
            }
        }
        let workers = (0..config.workers)
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("edgecut-gpu-{i}"))
                    .spawn(move || worker(shared))
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
        let app = router(shared);
        runtime.spawn(accept_loop(listener, app, config));
        Ok(Self {
            addr,
            runtime: Some(runtime),
            queue,
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
        self.queue.close();
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

async fn accept_loop(listener: tokio::net::TcpListener, app: Router, config: ServerConfig) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                log::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        // hyper rejects request heads beyond its read buffer with a bare 431; the router
        // answers smaller oversized heads with a JSON error first.
        let buffer = (config.max_header_bytes * 2).max(8192);
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(buffer)
                .keep_alive(true)
                .serve_connection(io, service)
                .await;
        });
    }
}

struct Shared {
    models: Vec<Arc<Model>>,
    names: HashMap<String, usize>,
    stats: Vec<Mutex<ModelStats>>,
    plans: Mutex<HashMap<(usize, usize, usize), Arc<Plan>>>,
    backend: Backend,
    config: ServerConfig,
    queue: Arc<Queue>,
    started: Instant,
    next_id: AtomicU64,
}

#[derive(Default)]
struct ModelStats {
    requests: u64,
    errors: u64,
    batches: u64,
    samples: u64,
    recent: VecDeque<(u64, u64)>,
}

const RECENT: usize = 256;

/// A 4xx/5xx answer with `{"error": message}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

fn err(status: StatusCode, msg: impl Into<String>) -> ApiError {
    ApiError(status, msg.into())
}

fn router(shared: Arc<Shared>) -> Router {
    let guarded = Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/stats", get(model_stats))
        .route("/v2/models/{name}/infer", post(infer))
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            authorize,
        ));
    Router::new()
        .route(
            "/v2/health/live",
            get(|| async { axum::Json(json!({"live": true})) }),
        )
        .route(
            "/v2/health/ready",
            get(|| async { axum::Json(json!({"ready": true})) }),
        )
        .merge(guarded)
        .fallback(|req: Request| async move {
            err(
                StatusCode::NOT_FOUND,
                format!("no route {} {}", req.method(), req.uri().path()),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            limit_headers,
        ))
        .with_state(shared)
}

async fn limit_headers(
    State(s): State<Arc<Shared>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let head: usize = req.uri().to_string().len()
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head > s.config.max_header_bytes {
        return err(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request headers are {head} bytes, over the server's limit of {}",
                s.config.max_header_bytes
            ),
        )
        .into_response();
    }
    next.run(req).await
}

async fn authorize(
    State(s): State<Arc<Shared>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = &s.config.token {
        let given = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            None => {
                return err(
                    StatusCode::UNAUTHORIZED,
                    "this server needs 'Authorization: Bearer <token>'",
                )
                .into_response()
            }
            Some(g) if !constant_time_eq(g.as_bytes(), token.as_bytes()) => {
                return err(StatusCode::UNAUTHORIZED, "wrong bearer token").into_response()
            }
            Some(_) => {}
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn server_metadata() -> axum::Json<Value> {
    axum::Json(json!({
        "name": "edgecut",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "edgecut_split", "statistics"],
    }))
}

fn find(s: &Shared, name: &str) -> Result<usize, ApiError> {
    s.names.get(name).copied().ok_or_else(|| {
        let mut known: Vec<&str> = s.names.keys().map(|k| k.as_str()).collect();
        known.sort();
        err(
            StatusCode::NOT_FOUND,
            format!(
                "unknown model '{name}'; this server has: {}",
                known.join(", ")
            ),
        )
    })
}

fn dims(batch: i64, shape: &[usize]) -> Vec<i64> {
    std::iter::once(batch)
        .chain(shape.iter().map(|&d| d as i64))
        .collect()
}

async fn model_metadata(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let m = &s.models[find(&s, &name)?];
    let cuts: Vec<Value> = (0..m.blocks.len())
        .map(|k| {
            json!({
                "from_block": k,
                "block": m.blocks[k].name,
                "input_shape": m.shape_at(k),
                "natural_bottleneck": k > 0 && m.is_natural_bottleneck(k - 1),
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "name": m.name(),
        "versions": ["1"],
        "platform": "edgecut",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": dims(-1, m.input_shape())}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, m.classes()]}],
        "parameters": {
            "edgecut_model_hash": m.hash,
            "edgecut_max_batch": s.config.max_batch,
            "edgecut_cuts": cuts,
        },
    })))
}

async fn model_ready(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    find(&s, &name)?;
    Ok(axum::Json(json!({"name": name, "ready": true})))
}

async fn model_stats(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let i = find(&s, &name)?;
    let st = s.stats[i].lock().unwrap_or_else(|p| p.into_inner());
    let mean = |f: fn(&(u64, u64)) -> u64| {
        if st.recent.is_empty() {
            0.0
        } else {
            st.recent.iter().map(f).sum::<u64>() as f64 / st.recent.len() as f64
        }
    };
    let queued = s.queue.len();
    Ok(axum::Json(json!({
        "name": name,
        "requests": st.requests,
        "errors": st.errors,
        "batches": st.batches,
        "samples": st.samples,
        "recent": st.recent.len(),
        "queue_us_mean": mean(|r| r.0),
        "compute_us_mean": mean(|r| r.1),
        "queue_depth": queued,
        "uptime_s": s.started.elapsed().as_secs_f64(),
    })))
}

/// What a validated request asks the GPU to do.
struct Job {
    model: usize,
    from: usize,
    input: Encoded,
    samples: usize,
    enqueued: Instant,
    reply: tokio::sync::oneshot::Sender<Result<JobDone, ApiError>>,
}

struct JobDone {
    logits: Vec<f32>,
    queue_us: u64,
    compute_us: u64,
    batch_requests: usize,
}

async fn infer(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let model = match find(&s, &name) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let result = infer_inner(&s, model, &headers, body).await;
    {
        let mut st = s.stats[model].lock().unwrap_or_else(|p| p.into_inner());
        st.requests += 1;
        if result.is_err() {
            st.errors += 1;
        }
    }
    match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn header_usize(headers: &HeaderMap, name: &str) -> Result<Option<usize>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    err(
                        StatusCode::BAD_REQUEST,
                        format!("{name} must be a byte count"),
                    )
                })
        })
        .transpose()
}

async fn infer_inner(
    s: &Arc<Shared>,
    model: usize,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let cfg = &s.config;
    let declared = header_usize(headers, "content-length")?;
    if let Some(n) = declared.filter(|&n| n > cfg.max_body_bytes) {
        return Err(err(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "body of {n} bytes is over the server's limit of {}",
                cfg.max_body_bytes
            ),
        ));
    }
    let header_length = header_usize(headers, HEADER_LENGTH)?;
    if let Some(n) = header_length.filter(|&n| n > cfg.max_header_bytes) {
        return Err(err(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Inference-Header-Content-Length {n} is over the server's limit of {}",
                cfg.max_header_bytes
            ),
        ));
    }
    let bytes = axum::body::to_bytes(body, cfg.max_body_bytes)
        .await
        .map_err(|e| {
            err(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "reading the body failed or it is over the limit of {} bytes: {e}",
                    cfg.max_body_bytes
                ),
            )
        })?;
    if let Some(n) = declared.filter(|&n| n != bytes.len()) {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!("Content-Length says {n} bytes but {} arrived", bytes.len()),
        ));
    }
    if header_length.is_none() && bytes.len() > cfg.max_header_bytes.max(1 << 20) * 16 {
        return Err(err(
            StatusCode::PAYLOAD_TOO_LARGE,
            "JSON-only body too large",
        ));
    }
    let msg = kserve::parse(&bytes, header_length, "inputs")
        .map_err(|e| err(StatusCode::BAD_REQUEST, e.to_string()))?;
    let m = &s.models[model];
    let [input] = &msg.tensors[..] else {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!("expected exactly one input, got {}", msg.tensors.len()),
        ));
    };
    let (from, encoded) = request_tensor(m, &msg, input)?;
    let samples = encoded.shape.first().copied().unwrap_or(0);
    if samples == 0 || samples > cfg.max_batch {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!(
                "batch of {samples} samples; this server takes 1..={} per request (--max-batch)",
                cfg.max_batch
            ),
        ));
    }
    let binary_out = wants_binary(&msg.header);
    let (tx, rx) = tokio::sync::oneshot::channel();
    s.queue
        .push(Job {
            model,
            from,
            input: encoded,
            samples,
            enqueued: Instant::now(),
            reply: tx,
        })
        .map_err(|_| {
            err(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the GPU queue is full ({} requests)", cfg.queue_capacity),
            )
        })?;
    let done = match tokio::time::timeout(cfg.request_timeout, rx).await {
        Ok(Ok(r)) => r?,
        Ok(Err(_)) => {
            return Err(err(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is stopping",
            ))
        }
        Err(_) => {
            return Err(err(
                StatusCode::GATEWAY_TIMEOUT,
                format!("no GPU result within {:?}", cfg.request_timeout),
            ))
        }
    };
    let mut header = Map::new();
    if let Some(id) = msg.header.get("id") {
        header.insert("id".into(), id.clone());
    }
    header.insert("model_name".into(), json!(m.name()));
    header.insert("model_version".into(), json!("1"));
    header.insert(
        "parameters".into(),
        json!({
            "queue_us": done.queue_us,
            "compute_us": done.compute_us,
            "batch_requests": done.batch_requests,
            "request_id": s.next_id.fetch_add(1, Ordering::Relaxed),
        }),
    );
    let logits = RawTensor {
        name: "logits".into(),
        datatype: "FP32".into(),
        shape: vec![samples, m.classes()],
        bytes: bytemuck::cast_slice(&done.logits).to_vec(),
        parameters: Map::new(),
    };
    let (body, json_len) = kserve::build(header, "outputs", &[logits], binary_out);
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    if let Some(n) = json_len {
        h.insert(HEADER_LENGTH, HeaderValue::from(n));
        h.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    } else {
        h.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    Ok(resp)
}

/// Binary output when the request says so for the whole request or for `logits`.
fn wants_binary(header: &Map<String, Value>) -> bool {
    let top = header
        .get("parameters")
        .and_then(|p| p.get("binary_data_output"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let per_output = header
        .get("outputs")
        .and_then(Value::as_array)
        .map(|outs| {
            outs.iter().any(|o| {
                o.get("parameters")
                    .and_then(|p| p.get("binary_data"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false);
    top || per_output
}

/// Validates the input against the model and the cut it names.
fn request_tensor(
    m: &Model,
    msg: &kserve::Message,
    input: &RawTensor,
) -> Result<(usize, Encoded), ApiError> {
    let bad = |msg: String| err(StatusCode::BAD_REQUEST, msg);
    let int_param = |name: &str| -> Result<Option<i64>, ApiError> {
        msg.parameter(name)
            .map(|v| {
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| bad(format!("parameter {name} must be an integer")))
            })
            .transpose()
    };
    let from = int_param("edgecut_from_block")?;
    let blocks = m.blocks.len();
    let from = match from {
        None => 0,
        Some(k) if k >= 0 && (k as usize) < blocks => k as usize,
        Some(k) => {
            return Err(bad(format!(
                "edgecut_from_block {k} is not a cut of '{}' (0..{blocks})",
                m.name()
            )))
        }
    };
    let tail = msg.parameter("edgecut_from_block").is_some();
    match msg.parameter("edgecut_model_hash") {
        Some(Value::String(h)) if *h != m.hash => {
            return Err(err(
                StatusCode::CONFLICT,
                format!(
                    "model hash mismatch: the request was made for {h} but '{}' here is {}",
                    m.name(),
                    m.hash
                ),
            ))
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err(bad("parameter edgecut_model_hash must be a string".into())),
        None if tail => {
            return Err(bad(
                "tail requests (edgecut_from_block) must carry edgecut_model_hash".into(),
            ))
        }
        None => {}
    }
    let want = m.shape_at(from);
    if input.shape.len() != want.len() + 1 || input.shape[1..] != *want {
        return Err(bad(format!(
            "input '{}' has shape {:?} but {} expects [batch, {}]",
            input.name,
            input.shape,
            if from == 0 {
                "the model input".to_string()
            } else {
                format!("the cut before block {from} ('{}')", m.blocks[from].name)
            },
            want.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if !tail && input.datatype == "UINT8" {
        let data: Vec<u8> = input
            .bytes
            .iter()
            .flat_map(|&b| (b as f32 / 255.0).to_le_bytes())
            .collect();
        let e = Encoded::new(Encoding::Fp32, input.shape.clone(), data, None)
            .map_err(|e| bad(e.to_string()))?;
        return Ok((0, e));
    }
    let encoding = match msg.parameter("edgecut_encoding") {
        Some(Value::String(e)) => Encoding::parse(e).map_err(|e| bad(e.to_string()))?,
        Some(_) => return Err(bad("parameter edgecut_encoding must be a string".into())),
        None => Encoding::parse(&input.datatype).map_err(|_| {
            bad(format!(
                "input datatype {} is not supported (FP32, FP16, INT8, or UINT8 images)",
                input.datatype
            ))
        })?,
    };
    if encoding.datatype() != input.datatype {
        return Err(bad(format!(
            "edgecut_encoding {encoding} does not match the input datatype {}",
            input.datatype
        )));
    }
    let int8 = if encoding == Encoding::Int8 {
        let scale = msg
            .parameter("edgecut_scale")
            .and_then(Value::as_f64)
            .ok_or_else(|| bad("INT8 input needs a numeric edgecut_scale".into()))?;
        let zp = int_param("edgecut_zero_point")?
            .ok_or_else(|| bad("INT8 input needs an integer edgecut_zero_point".into()))?;
        Some(Int8Params::checked(scale, zp).map_err(|e| bad(e.to_string()))?)
    } else {
        None
    };
    let e = Encoded::new(encoding, input.shape.clone(), input.bytes.clone(), int8)
        .map_err(|e| bad(e.to_string()))?;
    Ok((from, e))
}

struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// The bounded GPU queue.
struct Queue {
    jobs: Mutex<QueueState>,
    ready: Condvar,
    capacity: usize,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().jobs.len()
    }

    fn push(&self, job: Job) -> Result<(), Job> {
        let mut q = self.lock();
        if q.closed || q.jobs.len() >= self.capacity {
            return Err(job);
        }
        q.jobs.push_back(job);
        drop(q);
        self.ready.notify_all();
        Ok(())
    }

    fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.jobs.clear();
        drop(q);
        self.ready.notify_all();
    }

    /// The next batch: the oldest job plus every queued job for the same cut, waiting up to
    /// `max_delay` after the oldest arrived for more while fewer than `max_batch` samples.
    fn take_batch(&self, max_batch: usize, max_delay: Duration) -> Option<Vec<Job>> {
        let mut q = self.lock();
        loop {
            if q.closed {
                return None;
            }
            if !q.jobs.is_empty() {
                break;
            }
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        let first = q.jobs.pop_front().expect("queue is not empty");
        let key = (first.model, first.from);
        let deadline = first.enqueued + max_delay;
        let mut samples = first.samples;
        let mut batch = vec![first];
        loop {
            let mut i = 0;
            while i < q.jobs.len() && samples < max_batch {
                let j = &q.jobs[i];
                if (j.model, j.from) == key && samples + j.samples <= max_batch {
                    let j = q.jobs.remove(i).expect("index is in range");
                    samples += j.samples;
                    batch.push(j);
                } else {
                    i += 1;
                }
            }
            let now = Instant::now();
            if samples >= max_batch || now >= deadline || q.closed {
                return Some(batch);
            }
            q = self
                .ready
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

fn worker(s: Arc<Shared>) {
    let codec = Codec::for_backend(&s.backend);
    while let Some(batch) = s.queue.take_batch(s.config.max_batch, s.config.max_delay) {
        let started = Instant::now();
        let (model, from) = (batch[0].model, batch[0].from);
        let result = run_batch(&s, &codec, model, from, &batch);
        let compute_us = started.elapsed().as_micros() as u64;
        let n = batch.len();
        match result {
            Ok(logits) => {
                let classes = s.models[model].classes();
                let mut at = 0;
                let mut st = s.stats[model].lock().unwrap_or_else(|p| p.into_inner());
                st.batches += 1;
                for job in batch {
                    let queue_us = started.duration_since(job.enqueued).as_micros() as u64;
                    st.samples += job.samples as u64;
                    st.recent.push_back((queue_us, compute_us));
                    if st.recent.len() > RECENT {
                        st.recent.pop_front();
                    }
                    let part = logits[at..at + job.samples * classes].to_vec();
                    at += job.samples * classes;
                    let _ = job.reply.send(Ok(JobDone {
                        logits: part,
                        queue_us,
                        compute_us,
                        batch_requests: n,
                    }));
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("running blocks {from}.. failed: {e}"),
                    )));
                }
            }
        }
    }
}

/// Batch capacities plans are compiled for: a plan's dispatches are sized for its capacity, so
/// a lone request runs on a capacity-1 plan rather than paying for a full batch.
fn capacity_for(samples: usize, max_batch: usize) -> usize {
    [1, 4, 16]
        .into_iter()
        .find(|&c| c >= samples && c < max_batch)
        .unwrap_or(max_batch)
}

fn plan(s: &Shared, model: usize, from: usize, samples: usize) -> Result<Arc<Plan>, EngineError> {
    let capacity = capacity_for(samples, s.config.max_batch);
    let mut plans = s.plans.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = plans.get(&(model, from, capacity)) {
        return Ok(p.clone());
    }
    let m = &s.models[model];
    let p = Arc::new(Plan::compile(
        m,
        from..m.blocks.len(),
        &s.backend,
        capacity,
    )?);
    plans.insert((model, from, capacity), p.clone());
    Ok(p)
}

fn run_batch(
    s: &Shared,
    codec: &Codec,
    model: usize,
    from: usize,
    batch: &[Job],
) -> Result<Vec<f32>, String> {
    let mut data = Vec::new();
    let mut samples = 0;
    for job in batch {
        let t = codec.decode(&job.input).map_err(|e| e.to_string())?;
        samples += t.batch();
        data.extend_from_slice(t.data());
    }
    let plan = plan(s, model, from, samples).map_err(|e| e.to_string())?;
    let mut shape = vec![samples];
    shape.extend_from_slice(plan.input_shape());
    let x = Tensor::new(shape, data).map_err(|e| e.to_string())?;
    let out = plan.run(&x).map_err(|e| e.to_string())?;
    Ok(out.output.into_data())
}
