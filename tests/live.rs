//! `edgecut run --policy dynamic` end to end against an in-process tail server on loopback: every
//! request answered with its cut recorded, the choice following the shaped uplink, and clear
//! errors for unknown policy names.

mod common;

use common::gpu;
use edgecut::engine::Backend;
use edgecut::model::Model;
use edgecut::split::server::{Server, ServerConfig};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// Test digits per run.
const SAMPLES: usize = 24;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn model() -> Arc<Model> {
    Arc::new(Model::load(root().join("models/mnist-lenet-ee")).expect("mnist-lenet-ee loads"))
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edgecut"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("runs the binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A constant-rate Pensieve trace (`time Mbit/s` lines) written to the temp dir.
fn trace(name: &str, mbps: f64) -> PathBuf {
    let p = std::env::temp_dir().join(format!("edgecut-live-{}-{name}", std::process::id()));
    std::fs::write(&p, format!("0 {mbps}\n1 {mbps}\n2 {mbps}\n")).expect("writes the trace");
    p
}

/// `edgecut run --policy dynamic --json` against `url`; the parsed JSON object.
fn run_dynamic(url: &str, extra: &[&str]) -> Value {
    let limit = SAMPLES.to_string();
    let mut args = vec![
        "run",
        "models/mnist-lenet-ee",
        "--server",
        url,
        "--policy",
        "dynamic",
        "--limit",
        &limit,
        "--calibration-samples",
        "300",
        "--backend",
        "gpu",
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = cli(&args);
    assert_eq!(code, 0, "edgecut run failed: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("one JSON object ({e}): {out}"))
}

fn cuts(j: &Value) -> Vec<(usize, u64)> {
    j["cuts"]
        .as_object()
        .expect("cuts object")
        .iter()
        .map(|(k, v)| (k.parse().expect("cut index"), v.as_u64().expect("count")))
        .collect()
}

fn start_server(test: &str) -> Option<Server> {
    let ctx = gpu(test)?;
    Some(
        Server::start(
            vec![model()],
            Backend::Gpu(ctx),
            ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))),
        )
        .expect("server starts"),
    )
}

#[test]
fn dynamic_run_against_a_loopback_server_answers_every_request_with_its_cut_recorded() {
    let Some(server) = start_server(
        "dynamic_run_against_a_loopback_server_answers_every_request_with_its_cut_recorded",
    ) else {
        return;
    };
    let j = run_dynamic(&server.url(), &[]);
    server.shutdown();
    assert_eq!(j["policy"], "dynamic");
    assert_eq!(j["samples"], SAMPLES as u64);
    let c = cuts(&j);
    assert_eq!(c.iter().map(|x| x.1).sum::<u64>(), SAMPLES as u64, "{j}");
    let blocks = model().blocks.len();
    assert!(c.iter().all(|&(k, _)| k <= blocks), "{j}");
    let choices: u64 = j["choices"]
        .as_object()
        .expect("choices")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(choices, SAMPLES as u64, "{j}");
    assert_eq!(j["fallbacks"], 0, "{j}");
    assert!(j["accuracy"].as_f64().expect("accuracy") > 0.8, "{j}");
    let first = j["scheduler"]["exit_first"][0]
        .as_f64()
        .expect("calibrated");
    assert!(first > 0.0 && first <= 1.0, "exit probability {first}");
}

#[test]
fn a_very_slow_uplink_makes_dynamic_run_more_blocks_on_the_device_than_a_fast_one() {
    let Some(server) = start_server(
        "a_very_slow_uplink_makes_dynamic_keep_work_on_the_device_more_than_a_fast_one",
    ) else {
        return;
    };
    let url = server.url();
    let (slow, fast) = (trace("slow", 0.02), trace("fast", 2000.0));
    // The device is emulated 20x slower than the server, so offloading pays on a fast link.
    let common = ["--device-slowdown", "20", "--deadline-ms", "3000"];
    let with = |t: &Path| {
        let mut a = common.to_vec();
        let t = t.to_str().expect("utf-8 temp path").to_string();
        a.extend_from_slice(&["--trace", &t]);
        run_dynamic(&url, &a)
    };
    let (js, jf) = (with(&slow), with(&fast));
    server.shutdown();
    let _ = std::fs::remove_file(&slow);
    let _ = std::fs::remove_file(&fast);
    // Blocks run on the device per request (0 = server-only, 5 = device-only), on average: a slow
    // uplink must keep work on the device (device-only or a late cut with a small tensor).
    let mean_cut = |j: &Value| -> f64 {
        cuts(j)
            .iter()
            .map(|&(k, c)| (k as u64 * c) as f64)
            .sum::<f64>()
            / SAMPLES as f64
    };
    let (ms, mf) = (mean_cut(&js), mean_cut(&jf));
    assert!(
        ms >= mf + 1.5,
        "mean device blocks: slow uplink {ms:.2}, fast {mf:.2}\nslow: {js}\nfast: {jf}"
    );
    let (bs, bf) = (
        js["bytes_sent"].as_u64().expect("bytes"),
        jf["bytes_sent"].as_u64().expect("bytes"),
    );
    assert!(2 * bs < bf, "bytes sent: slow {bs}, fast {bf}");
}

#[test]
fn unknown_policy_names_give_a_clear_error() {
    for name in ["dynamo", "dynamic-fp64", "static:x"] {
        let (code, _, err) = cli(&[
            "run",
            "models/mnist-lenet-ee",
            "--server",
            "http://127.0.0.1:9",
            "--policy",
            name,
            "--backend",
            "cpu",
        ]);
        assert_eq!(code, 1, "{name}: {err}");
        assert!(
            err.contains("unknown policy") && err.contains(name),
            "{name}: {err}"
        );
    }
}
