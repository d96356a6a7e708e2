//! Issue 14, finding 3: a mutated `model.json` that declares huge or overflowing sizes gets a
//! clear error naming the block and op, before anything is allocated, never an abort or panic.
//! Finding 4: NaN and Inf inputs are refused with a 400 naming the tensor.

mod common;

use common::{gpu, raw_http};
use edgecut::encoding::Encoding;
use edgecut::engine::Backend;
use edgecut::model::Model;
use edgecut::sched::{Choice, Cut};
use edgecut::split::client::{ClientConfig, ClientError, DeviceClient};
use edgecut::split::server::{Server, ServerConfig};
use edgecut::tensor::Tensor;
use std::net::SocketAddr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgecut-h1-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A seeded model: `input`, then `ops` (JSON op objects) in block `b0`.
fn seeded_model(name: &str, input: &str, ops: &str, classes: usize) -> PathBuf {
    let dir = scratch(name);
    let json = format!(
        r#"{{"format": 1, "name": "{name}", "input": {input}, "classes": {classes},
        "init": {{"seed": 1}}, "blocks": [{{"name": "b0", "ops": [{ops}]}}]}}"#
    );
    std::fs::write(dir.join("model.json"), json).expect("write model.json");
    dir
}

fn load_err(dir: &PathBuf) -> String {
    Model::load(dir)
        .expect_err("a model with huge sizes must not load")
        .to_string()
}

#[test]
fn loader_trusts_sizes_huge_dense_outputs_are_refused_before_allocating() {
    let dir = seeded_model(
        "huge-dense",
        "[16]",
        r#"{"op": "dense", "name": "fc", "outputs": 1000000000000}"#,
        1_000_000_000_000,
    );
    let err = load_err(&dir);
    assert!(err.contains("block 'b0', op 0 ('dense')"), "{err}");
    assert!(err.contains("elements"), "{err}");
}

#[test]
fn loader_trusts_sizes_huge_conv_is_refused_before_allocating() {
    let dir = seeded_model(
        "huge-conv",
        "[64, 8, 8]",
        r#"{"op": "conv2d", "name": "conv", "out_channels": 1000000, "kernel": 3, "padding": 1},
           {"op": "flatten"}, {"op": "dense", "name": "fc", "outputs": 10}"#,
        10,
    );
    let err = load_err(&dir);
    assert!(err.contains("block 'b0', op 0 ('conv2d')"), "{err}");
}

#[test]
fn loader_trusts_sizes_a_shape_whose_product_overflows_usize_is_refused() {
    let dir = seeded_model(
        "overflow",
        "[16]",
        r#"{"op": "dense", "name": "fc", "outputs": 18446744073709551615}"#,
        10,
    );
    let err = load_err(&dir);
    assert!(err.contains("op 0 ('dense')"), "{err}");
    let dir = seeded_model(
        "overflow-conv",
        "[3, 8, 8]",
        r#"{"op": "conv2d", "name": "conv", "out_channels": 4294967296, "kernel": 4294967296,
            "padding": 9223372036854775807}"#,
        10,
    );
    let err = load_err(&dir);
    assert!(err.contains("op 0 ('conv2d')"), "{err}");
    let dir = seeded_model(
        "overflow-input",
        "[4294967296, 4294967296, 16]",
        r#"{"op": "flatten"}"#,
        10,
    );
    let err = load_err(&dir);
    assert!(err.contains("input shape"), "{err}");
}

#[test]
fn loader_trusts_sizes_cli_info_exits_1_with_the_message() {
    let dir = seeded_model(
        "huge-dense-cli",
        "[16]",
        r#"{"op": "dense", "name": "fc", "outputs": 1000000000000}"#,
        1_000_000_000_000,
    );
    let out = Command::new(env!("CARGO_BIN_EXE_edgecut"))
        .args(["info", dir.to_str().expect("utf-8 temp path")])
        .output()
        .expect("runs the binary");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("block 'b0', op 0 ('dense')"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Posts a binary tail request (cut after block 0 of the MNIST fixture) whose FP32 data holds
/// `bad` at element 17, on a fresh loopback connection; returns (status, body).
fn post_tail(addr: SocketAddr, model: &Model, bad: f32) -> (u16, String) {
    let shape = [1usize, 6, 14, 14];
    let n: usize = shape.iter().product();
    let json = format!(
        r#"{{"parameters":{{"edgecut_cut_after":0,"edgecut_model_hash":"{}"}},"inputs":[{{"name":"input","datatype":"FP32","shape":{shape:?},"parameters":{{"binary_data_size":{}}}}}]}}"#,
        model.hash,
        n * 4
    );
    let mut body = json.clone().into_bytes();
    for i in 0..n {
        let v = if i == 17 { bad } else { 0.5 };
        body.extend_from_slice(&v.to_le_bytes());
    }
    let mut req = format!(
        "POST /v2/models/{}/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nInference-Header-Content-Length: {}\r\nContent-Length: {}\r\n\r\n",
        model.name(),
        json.len(),
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    raw_http(addr, &req)
}

#[test]
fn nan_inf_inputs_are_refused_with_400_naming_the_tensor() {
    let Some(ctx) = gpu("nan_inf_inputs_are_refused_with_400_naming_the_tensor") else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = Arc::new(Model::load(root.join("models/mnist-fixture")).expect("fixture loads"));
    let config = ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    let server =
        Server::start(vec![model.clone()], Backend::Gpu(ctx), config).expect("server starts");
    let (status, text) = post_tail(server.addr(), &model, 0.25);
    assert_eq!(status, 200, "{text}");
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let (status, text) = post_tail(server.addr(), &model, bad);
        assert_eq!(status, 400, "{bad}: {text}");
        assert!(
            text.contains("input 'input' holds NaN or Inf at element 17"),
            "{text}"
        );
    }
}

#[test]
fn nan_inf_inputs_are_refused_by_the_device_client_before_sending() {
    let Some(ctx) = gpu("nan_inf_inputs_are_refused_by_the_device_client_before_sending") else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = Arc::new(Model::load(root.join("models/mnist-fixture")).expect("fixture loads"));
    // A listener that never answers: without the check the request would only time out and
    // fall back to the device, silently answering a NaN input.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let config = ClientConfig::new(format!("http://{}", listener.local_addr().expect("addr")))
        .with_deadline(Duration::from_millis(200));
    let mut client = DeviceClient::new(model.clone(), Backend::Gpu(ctx), config).expect("client");
    let mut data = vec![0.5f32; model.input_elems()];
    data[17] = f32::NAN;
    let mut shape = vec![1];
    shape.extend_from_slice(model.input_shape());
    let image = Tensor::new(shape, data).expect("tensor");
    let choice = Choice {
        cut: Cut::Server,
        encoding: Encoding::Fp32,
    };
    client.prepare(choice).expect("plans");
    let err = client
        .classify(&image, choice, 1.0)
        .expect_err("a NaN input must not be sent");
    assert!(
        matches!(err, ClientError::NonFinite { index: 17, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("input holds NaN or Inf at element 17"),
        "{err}"
    );
}
