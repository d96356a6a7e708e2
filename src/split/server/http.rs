//! HTTP: the router, header and body limits, bearer-token auth, and the JSON/binary responses.

use super::batcher::{Job, JobDone};
use super::request::{self, InferRequest};
use super::{ServerConfig, Shared};
use crate::model::Model;
use crate::split::kserve::{self, RawTensor, HEADER_LENGTH};
use crate::split::statistics::{EdgecutExtras, ModelStatistics, StatisticsResponse};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections over [`ServerConfig::max_connections`] that are still answered (health 200,
/// the rest 503) before further ones are closed unanswered.
const OVERFLOW_CONNECTIONS: usize = 64;

/// Accept errors (such as running out of descriptors) are logged at most this often.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(1);

pub(super) async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    config: ServerConfig,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let overflow_slots = Arc::new(tokio::sync::Semaphore::new(OVERFLOW_CONNECTIONS));
    let overflow = overflow_router(config.max_connections);
    let mut last_log: Option<Instant> = None;
    let mut suppressed = 0usize;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                if last_log.is_none_or(|t| t.elapsed() >= ACCEPT_LOG_INTERVAL) {
                    log::warn!("accept failed: {e} ({suppressed} more since the last message)");
                    last_log = Some(Instant::now());
                    suppressed = 0;
                } else {
                    suppressed += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // hyper rejects request heads beyond its read buffer with a bare 431; the router
        // answers smaller oversized heads with a JSON error first.
        let buffer = (config.max_header_bytes * 2).max(8192);
        let (service, permit, keep_alive, header_timeout) = match slots.clone().try_acquire_owned()
        {
            Ok(p) => (app.clone(), p, true, Duration::from_secs(10)),
            Err(_) => match overflow_slots.clone().try_acquire_owned() {
                Ok(p) => (overflow.clone(), p, false, Duration::from_secs(2)),
                // Far over the limit: close at once rather than hold a descriptor.
                Err(_) => continue,
            },
        };
        let service = hyper_util::service::TowerToHyperService::new(service);
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(buffer)
                .keep_alive(keep_alive)
                .serve_connection(io, service)
                .await;
            drop(permit);
        });
    }
}

/// What a connection over the limit gets: health answered, everything else 503 at once.
fn overflow_router(max_connections: usize) -> Router {
    Router::new()
        .route(
            "/v2/health/live",
            get(|| async { axum::Json(json!({"live": true})) }),
        )
        .route(
            "/v2/health/ready",
            get(|| async { axum::Json(json!({"ready": true})) }),
        )
        .fallback(move || async move {
            err(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the server is at its limit of {max_connections} connections; retry shortly"
                ),
            )
        })
}

/// A 4xx/5xx answer with `{"error": message}`.
pub(crate) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, axum::Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::REQUEST_TIMEOUT {
            // The rest of a late body may still be on its way: never read it as a request.
            r.headers_mut()
                .insert("connection", HeaderValue::from_static("close"));
        }
        r
    }
}

pub(super) fn err(status: StatusCode, msg: impl Into<String>) -> ApiError {
    ApiError(status, msg.into())
}

/// 413 for a body without binary tensors over the JSON limit.
fn json_too_large(n: usize, cfg: &ServerConfig) -> ApiError {
    err(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "a body without binary tensors may hold {} bytes, this one holds {n}{}; send tensors as binary data (Inference-Header-Content-Length), allowed up to {} bytes",
            cfg.max_json_bytes,
            if n == cfg.max_json_bytes { " or more" } else { "" },
            cfg.max_body_bytes
        ),
    )
}

pub(super) fn router(shared: Arc<Shared>) -> Router {
    let guarded = Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/stats", get(all_stats))
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
            .and_then(bearer_credentials);
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

/// The credentials of a `Bearer` authorization value; the scheme name is case-insensitive
/// (RFC 7235 section 2.1), so `bearer` and `BEARER` are accepted too.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim_start_matches(' '))
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
    // Every cut a tail request can name: after block k (`edgecut_cut_after`), the server runs
    // the blocks after it on a tensor of the block's output shape.
    let cuts: Vec<Value> = (0..m.blocks.len().saturating_sub(1))
        .map(|k| {
            json!({
                "cut_after": k,
                "block": m.blocks[k].name,
                "tensor_shape": m.blocks[k].output_shape,
                "natural_bottleneck": m.is_natural_bottleneck(k),
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

/// One model's entry of the statistics extension.
fn statistics_of(s: &Shared, i: usize) -> ModelStatistics {
    let st = s.stats[i].lock().unwrap_or_else(|p| p.into_inner());
    ModelStatistics {
        name: s.models[i].name().to_string(),
        version: "1".into(),
        last_inference: st.last_inference_ms,
        inference_count: st.inference_count,
        execution_count: st.execution_count,
        inference_stats: st.inference.clone(),
        batch_stats: st.batches.values().cloned().collect(),
        edgecut: Some(EdgecutExtras {
            queue_depth: s.queues[i].len() as u64,
        }),
    }
}

async fn model_stats(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<axum::Json<StatisticsResponse>, ApiError> {
    let i = find(&s, &name)?;
    Ok(axum::Json(StatisticsResponse {
        model_stats: vec![statistics_of(&s, i)],
    }))
}

async fn all_stats(State(s): State<Arc<Shared>>) -> axum::Json<StatisticsResponse> {
    axum::Json(StatisticsResponse {
        model_stats: (0..s.models.len()).map(|i| statistics_of(&s, i)).collect(),
    })
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
    let arrived = std::time::Instant::now();
    let result = infer_inner(&s, model, &headers, body).await;
    {
        let took = u64::try_from(arrived.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut st = s.stats[model].lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(_) => st.inference.success.add(took),
            Err(_) => st.inference.fail.add(took),
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
    let json_only = header_length.is_none();
    if let Some(n) = declared.filter(|&n| json_only && n > cfg.max_json_bytes) {
        return Err(json_too_large(n, cfg));
    }
    let limit = if json_only {
        cfg.max_json_bytes
    } else {
        cfg.max_body_bytes
    };
    let bytes = match tokio::time::timeout(cfg.body_timeout, axum::body::to_bytes(body, limit))
        .await
    {
        Err(_) => {
            return Err(err(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {:.1} s of its headers",
                    cfg.body_timeout.as_secs_f64()
                ),
            ))
        }
        Ok(Err(_)) if json_only && declared.is_none() => {
            return Err(json_too_large(limit, cfg));
        }
        Ok(Err(e)) => {
            return Err(err(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("reading the body failed or it is over the limit of {limit} bytes: {e}"),
            ))
        }
        Ok(Ok(b)) => b,
    };
    if let Some(n) = declared.filter(|&n| n != bytes.len()) {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!("Content-Length says {n} bytes but {} arrived", bytes.len()),
        ));
    }
    // Parsing (JSON tensors above all) is CPU work: keep it off the threads serving HTTP.
    let shared = s.clone();
    let max_batch = cfg.max_batch;
    let parsed = tokio::task::spawn_blocking(move || {
        request::parse(&shared.models[model], &bytes, header_length, max_batch)
    })
    .await
    .map_err(|e| {
        err(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("parsing the request failed internally: {e}"),
        )
    })?;
    let InferRequest {
        from,
        input,
        samples,
        binary_out,
        id,
    } = parsed?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    s.queues[model]
        .push(Job {
            model,
            from,
            input,
            samples,
            enqueued: Instant::now(),
            reply: tx,
        })
        .map_err(|_| {
            err(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the GPU queue of model '{}' is full ({} requests)",
                    s.models[model].name(),
                    cfg.queue_capacity
                ),
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
    let request_id = s.next_id.fetch_add(1, Ordering::Relaxed);
    Ok(logits_response(
        &s.models[model],
        id,
        request_id,
        samples,
        &done,
        binary_out,
    ))
}

/// The KServe answer: one `FP32` output `logits` and the server timing in parameters.
fn logits_response(
    m: &Model,
    id: Option<Value>,
    request_id: u64,
    samples: usize,
    done: &JobDone,
    binary_out: bool,
) -> Response {
    let mut header = Map::new();
    if let Some(id) = id {
        header.insert("id".into(), id);
    }
    header.insert("model_name".into(), json!(m.name()));
    header.insert("model_version".into(), json!("1"));
    header.insert(
        "parameters".into(),
        json!({
            "queue_us": done.queue_us,
            "compute_us": done.compute_us,
            "batch_requests": done.batch_requests,
            "request_id": request_id,
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
    resp
}
