//! Hardening findings 1 (slow bodies exhaust connections) and 5 (large JSON-only bodies) of
//! issue 14, on loopback with the CPU backend.

mod common;

use common::raw_http;
use edgecut::engine::Backend;
use edgecut::model::Model;
use edgecut::split::server::{Server, ServerConfig};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a health check or small inference may take while the server is under attack
/// (the issue's goal figure).
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

fn fixture() -> Arc<Model> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Arc::new(Model::load(root.join("models/mnist-fixture")).expect("fixture loads"))
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A binary full-model request for `samples` zero images.
fn full_request(model: &Model, samples: usize) -> Vec<u8> {
    let bytes = samples * 28 * 28 * 4;
    let json = format!(
        r#"{{"inputs":[{{"name":"x","datatype":"FP32","shape":[{samples},1,28,28],"parameters":{{"binary_data_size":{bytes}}}}}]}}"#
    );
    let mut r = format!(
        "POST /v2/models/{}/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nInference-Header-Content-Length: {}\r\nContent-Length: {}\r\n\r\n{json}",
        model.name(),
        json.len(),
        json.len() + bytes
    )
    .into_bytes();
    r.extend(std::iter::repeat_n(0u8, bytes));
    r
}

/// Opens a connection that sends an inference's headers and one body byte, then stalls.
fn stalled(addr: SocketAddr, model: &Model) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST /v2/models/{}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{{",
        model.name()
    );
    s.write_all(head.as_bytes()).expect("send");
    s
}

fn timed(what: &str, addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let t = Instant::now();
    let (status, body) = raw_http(addr, request);
    assert!(
        t.elapsed() < ANSWER_WITHIN,
        "{what} took {:?} (status {status}: {body})",
        t.elapsed()
    );
    (status, body)
}

#[test]
fn finding_1_stalled_bodies_are_cut_off_and_health_stays_answered() {
    let model = fixture();
    let mut config = ServerConfig::new(loopback());
    config.max_connections = 8;
    config.body_timeout = Duration::from_millis(1500);
    let server = Server::start(vec![model.clone()], Backend::Cpu, config).expect("server starts");
    let addr = server.addr();
    // Twice the connection limit of stalled uploads.
    let mut attackers: Vec<TcpStream> = (0..16).map(|_| stalled(addr, &model)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let health = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (status, body) = timed("health over the connection limit", addr, health);
    assert_eq!(status, 200, "{body}");
    // Every slot is held: an inference is refused at once, saying why.
    let (status, body) = timed("inference over the limit", addr, &full_request(&model, 1));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("limit of 8 connections"), "{body}");
    // The stalled uploads are answered 408 and closed once the body timeout passes.
    for (i, s) in attackers.iter_mut().take(8).enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.1 503"),
            "attacker {i}: {text}"
        );
    }
    // With the slots free again, inference is served.
    let (status, body) = timed(
        "inference after the timeout",
        addr,
        &full_request(&model, 1),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn finding_5_json_only_bodies_have_their_own_small_limit() {
    let model = fixture();
    let mut config = ServerConfig::new(loopback());
    config.max_json_bytes = 8 * 1024;
    let server = Server::start(vec![model.clone()], Backend::Cpu, config).expect("server starts");
    // 784 JSON numbers of "0.00000001" and commas: about 8.6 KB, over the JSON limit.
    let data = vec!["0.00000001"; 784].join(",");
    let json = format!(
        r#"{{"inputs":[{{"name":"x","datatype":"FP32","shape":[1,1,28,28],"data":[{data}]}}]}}"#
    );
    let request = format!(
        "POST /v2/models/{}/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{json}",
        model.name(),
        json.len()
    );
    let (status, body) = raw_http(server.addr(), request.as_bytes());
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("may hold 8192 bytes") && body.contains("binary data"),
        "{body}"
    );
    // Without Content-Length (chunked), the limit applies while reading.
    let chunked = format!(
        "POST /v2/models/{}/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{json}\r\n0\r\n\r\n",
        model.name(),
        json.len()
    );
    let (status, body) = raw_http(server.addr(), chunked.as_bytes());
    assert_eq!(status, 413, "{body}");
    // A binary request of the same tensor, larger than the JSON limit in total, is served.
    let (status, body) = raw_http(server.addr(), &full_request(&model, 4));
    assert_eq!(status, 200, "{body}");
}

/// A binary full-model request for one zero sample of `model`.
fn one_sample(model: &Model) -> Vec<u8> {
    let elems = model.input_elems();
    let shape = model
        .input_shape()
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let json = format!(
        r#"{{"inputs":[{{"name":"x","datatype":"FP32","shape":[1,{shape}],"parameters":{{"binary_data_size":{}}}}}]}}"#,
        elems * 4
    );
    let mut r = format!(
        "POST /v2/models/{}/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nInference-Header-Content-Length: {}\r\nContent-Length: {}\r\n\r\n{json}",
        model.name(),
        json.len(),
        json.len() + elems * 4
    )
    .into_bytes();
    r.extend(std::iter::repeat_n(0u8, elems * 4));
    r
}

/// `inference_count` of a model's statistics: how many samples its workers computed.
fn computed_samples(addr: SocketAddr, model: &str) -> u64 {
    let (status, body) = raw_http(
        addr,
        format!("GET /v2/models/{model}/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("stats are JSON");
    v["model_stats"][0]["inference_count"]
        .as_u64()
        .expect("inference_count")
}

#[test]
fn finding_2_a_slow_models_queue_neither_delays_a_fast_model_nor_computes_for_nobody() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fast = fixture();
    let slow = Arc::new(Model::load(root.join("models/mnist-mlp-dense-small")).expect("loads"));
    // Every batch of the slow model takes 2 s; a request gives up after 1 s.
    const SLOW: Duration = Duration::from_secs(2);
    let mut config = ServerConfig::new(loopback()).with_batching(1, 1, Duration::from_micros(1));
    config.request_timeout = Duration::from_secs(1);
    config.inject_slow_model = Some((slow.name().to_string(), SLOW));
    let server = Server::start(vec![fast.clone(), slow.clone()], Backend::Cpu, config)
        .expect("server starts");
    let addr = server.addr();
    let solo = (0..3)
        .map(|_| {
            let t = Instant::now();
            let (status, body) = raw_http(addr, &one_sample(&fast));
            assert_eq!(status, 200, "{body}");
            t.elapsed()
        })
        .min()
        .expect("three runs");
    // Six slow requests at once: one computes, five queue behind it and time out.
    let slow_clients: Vec<_> = (0..6)
        .map(|_| {
            let request = one_sample(&slow);
            std::thread::spawn(move || raw_http(addr, &request).0)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let (status, body) = raw_http(addr, &one_sample(&fast));
    let loaded = t.elapsed();
    assert_eq!(status, 200, "{body}");
    // Twice the solo latency, plus room for a loaded 2-core machine; behind the slow model's
    // batch it would take 2 s.
    assert!(
        loaded < solo * 2 + Duration::from_millis(250),
        "the fast model took {loaded:?} with the slow model's queue full, {solo:?} alone"
    );
    let statuses: Vec<u16> = slow_clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect();
    assert!(statuses.iter().all(|&s| s == 504), "{statuses:?}");
    // The five queued jobs were dropped, not computed after their clients had gone.
    std::thread::sleep(SLOW + Duration::from_millis(500));
    let computed = computed_samples(addr, slow.name());
    assert!(
        computed <= 2,
        "{computed} slow samples computed for 6 requests that all timed out"
    );
}

/// A server that accepts connections and reads requests but never answers.
fn silent_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind(loopback()).expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while conn.read(&mut buf).is_ok_and(|n| n > 0) {}
            });
        }
    });
    addr
}

#[test]
fn finding_6_a_server_that_never_answers_trips_the_circuit_breaker() {
    use edgecut::sched::{Choice, Encoding};
    use edgecut::split::client::{AnsweredBy, ClientConfig, DeviceClient};
    let model = fixture();
    let deadline = Duration::from_millis(200);
    let backoff = Duration::from_millis(800);
    let config = ClientConfig::new(format!("http://{}", silent_server()))
        .with_deadline(deadline)
        .with_breaker(3, backoff);
    let mut client = DeviceClient::new(model.clone(), Backend::Cpu, config).expect("client");
    let choice = Choice::after(0, Encoding::Fp32);
    client.prepare(choice).expect("plans");
    let x = edgecut::tensor::Tensor::zeros(vec![1, 1, 28, 28]);
    let mut ask = || {
        let t = Instant::now();
        let o = client.classify(&x, choice, 1.0).expect("answered");
        assert!(matches!(o.by, AnsweredBy::Fallback(_)), "{:?}", o.by);
        (t.elapsed(), o.breaker_open)
    };
    // Three failures cost the deadline each, then the breaker opens.
    for i in 0..3 {
        let (took, open) = ask();
        assert!(
            took >= deadline && !open,
            "request {i}: {took:?}, open {open}"
        );
    }
    // While open, the device answers at once without trying the server.
    let opened = Instant::now();
    for i in 0..5 {
        let (took, open) = ask();
        assert!(
            open && took < deadline / 2,
            "request {i} while open: {took:?}"
        );
    }
    // After the back-off one request probes (and pays the deadline); it fails, so the breaker
    // opens again for twice as long.
    std::thread::sleep(backoff.saturating_sub(opened.elapsed()) + Duration::from_millis(50));
    let (took, open) = ask();
    assert!(
        took >= deadline && !open,
        "the probe: {took:?}, open {open}"
    );
    let (took, open) = ask();
    assert!(
        open && took < deadline / 2,
        "after the failed probe: {took:?}"
    );
    assert_eq!(client.breaker_openings(), 1);
}
