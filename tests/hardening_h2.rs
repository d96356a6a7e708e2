//! Hardening findings 6 (token sources, case-insensitive `Bearer` scheme) and 7 (a panicking
//! batch answered 500 while the worker lives on) of issue 14, on loopback with the CPU backend.

mod common;

use common::raw_http;
use edgecut::engine::Backend;
use edgecut::model::Model;
use edgecut::split::kserve::{resolve_token, TokenError};
use edgecut::split::server::{Server, ServerConfig};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture() -> Arc<Model> {
    Arc::new(Model::load(root().join("models/mnist-fixture")).expect("fixture loads"))
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A binary tail request for `samples` samples cut after block 0 of the fixture.
fn tail_request(model: &Model, samples: usize) -> Vec<u8> {
    let bytes = samples * 6 * 14 * 14 * 4;
    let json = format!(
        r#"{{"parameters":{{"edgecut_cut_after":0,"edgecut_model_hash":"{}"}},"inputs":[{{"name":"x","datatype":"FP32","shape":[{samples},6,14,14],"parameters":{{"binary_data_size":{bytes}}}}}]}}"#,
        model.hash
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

#[test]
fn finding_6_bearer_scheme_is_case_insensitive() {
    let config = ServerConfig::new(loopback()).with_token(Some("s3cret".into()));
    let server = Server::start(vec![fixture()], Backend::Cpu, config).expect("server starts");
    let get = |auth: &str| {
        raw_http(
            server.addr(),
            format!("GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n").as_bytes(),
        )
    };
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let (status, body) = get(&format!("Authorization: {scheme} s3cret\r\n"));
        assert_eq!(status, 200, "scheme {scheme}: {body}");
    }
    for (what, auth) in [
        ("no header", ""),
        ("wrong token", "Authorization: bearer guess\r\n"),
        ("other scheme", "Authorization: Basic s3cret\r\n"),
        ("no credentials", "Authorization: Bearer\r\n"),
    ] {
        let (status, body) = get(auth);
        assert_eq!(status, 401, "{what}: {body}");
    }
}

#[test]
fn finding_6_token_from_flag_file_or_env_in_that_order() {
    let dir = std::env::temp_dir().join(format!("edgecut-h2-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("token");
    std::fs::write(&file, "from-file\r\n").expect("write");
    let env = || Some("from-env".to_string());
    let got = |flag: Option<&str>, file: Option<&Path>, env: Option<String>| {
        resolve_token(flag.map(str::to_string), file, env).expect("resolves")
    };
    assert_eq!(
        got(Some("flag"), Some(&file), env()).as_deref(),
        Some("flag")
    );
    assert_eq!(got(None, Some(&file), env()).as_deref(), Some("from-file"));
    std::fs::write(&file, "from-file\n").expect("write");
    assert_eq!(got(None, Some(&file), None).as_deref(), Some("from-file"));
    assert_eq!(got(None, None, env()).as_deref(), Some("from-env"));
    assert_eq!(got(None, None, None), None);

    std::fs::write(&file, "\n").expect("write");
    let e = resolve_token(None, Some(&file), env()).expect_err("an empty file is refused");
    assert!(matches!(e, TokenError::EmptyFile { .. }), "{e}");
    assert!(e.to_string().contains("is empty"), "{e}");
    let e = resolve_token(None, None, Some(String::new())).expect_err("empty env refused");
    assert!(matches!(e, TokenError::EmptyEnv), "{e}");
    let e = resolve_token(None, Some(&dir.join("missing")), None).expect_err("missing file");
    assert!(matches!(e, TokenError::Read { .. }), "{e}");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn finding_6_serve_refuses_an_empty_token_file() {
    let dir = std::env::temp_dir().join(format!("edgecut-h2-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("token");
    std::fs::write(&file, "").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgecut"))
        .arg("serve")
        .arg(root().join("models/mnist-fixture"))
        .args(["--addr", "127.0.0.1:0", "--backend", "cpu", "--token-file"])
        .arg(&file)
        .env_remove("EDGECUT_TOKEN")
        .output()
        .expect("runs edgecut");
    std::fs::remove_dir_all(&dir).expect("clean up");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve started: {stderr}");
    assert!(
        stderr.contains("token file") && stderr.contains("is empty"),
        "{stderr}"
    );
}

#[test]
fn finding_7_a_panicking_batch_is_answered_500_and_the_worker_lives_on() {
    let model = fixture();
    let mut config = ServerConfig::new(loopback()).with_batching(1, 16, Duration::from_micros(1));
    config.inject_panic_at_samples = Some(3);
    // Without the fix the lone worker dies and later requests wait this long, then get 504.
    config.request_timeout = Duration::from_secs(5);
    let server = Server::start(vec![model.clone()], Backend::Cpu, config).expect("server starts");
    for round in 0..2 {
        let (status, body) = raw_http(server.addr(), &tail_request(&model, 3));
        assert_eq!(status, 500, "round {round}: {body}");
        assert!(body.contains("failed internally"), "round {round}: {body}");
        let (status, body) = raw_http(server.addr(), &tail_request(&model, 1));
        assert_eq!(status, 200, "round {round}: the worker died: {body}");
    }
}
