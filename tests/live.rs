//! `edgecut run` end to end against an in-process tail server on loopback: every request
//! answered with its cut recorded, the dynamic choice following the shaped uplink, one vocabulary
//! with `edgecut simulate` (`static:<block>` names the same cut in both), every trace format
//! `simulate` reads, and clear errors for unknown, old and live-impossible policy names.

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

/// `(blocks run on the device, requests)` per choice label of `cuts` (`server`, `device`,
/// `<block>:<encoding>`).
fn cuts(j: &Value) -> Vec<(usize, u64)> {
    let m = model();
    j["cuts"]
        .as_object()
        .expect("cuts object")
        .iter()
        .map(|(label, v)| {
            let blocks = match label.as_str() {
                "server" => 0,
                "device" => m.blocks.len(),
                l => {
                    let block = l.split(':').next().expect("block:encoding");
                    1 + m
                        .blocks
                        .iter()
                        .position(|b| b.name == block)
                        .expect("a block name")
                }
            };
            (blocks, v.as_u64().expect("count"))
        })
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
    for (name, what) in [
        ("dynamo", "unknown policy"),
        ("dynamic-fp64", "unknown policy"),
        ("static:x", "not a candidate"),
    ] {
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
        let given = name.trim_start_matches("static:");
        assert!(err.contains(what) && err.contains(given), "{name}: {err}");
    }
}

/// `edgecut run ... --backend cpu --json` with `args`: exit code, JSON (when it succeeded), stderr.
fn run_cpu(url: &str, args: &[&str]) -> (i32, Option<Value>, String) {
    let mut all = vec![
        "run",
        "models/mnist-lenet-ee",
        "--server",
        url,
        "--backend",
        "cpu",
        "--json",
    ];
    all.extend_from_slice(args);
    let (code, out, err) = cli(&all);
    (code, serde_json::from_str(out.trim()).ok(), err)
}

fn cpu_server() -> Server {
    Server::start(
        vec![model()],
        Backend::Cpu,
        ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))),
    )
    .expect("server starts")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgecut-live-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn static_block_names_the_same_cut_in_run_against_a_server_and_in_simulate() {
    let server = cpu_server();
    let block = &model().blocks[0].name;
    let policy = format!("static:{block}");
    let (code, run, err) = run_cpu(
        &server.url(),
        &[
            "--policy",
            &policy,
            "--limit",
            "4",
            "--exit-threshold",
            "1.0",
        ],
    );
    server.shutdown();
    assert_eq!(code, 0, "{err}");
    let run = run.expect("one JSON object");
    let label = format!("{block}:fp32");
    assert_eq!(run["policy"], format!("static:{block}:fp32"), "{run}");
    assert_eq!(run["cuts"][&label], 4, "{run}");

    // The same policy in the simulator, on profiles measured here.
    let dir = scratch("vocabulary");
    let profile = dir.join("profile.json");
    let p = profile.to_str().expect("utf-8 temp path");
    let (code, _, err) = cli(&[
        "profile",
        "models/mnist-lenet-ee",
        "--backend",
        "cpu",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--out",
        p,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(&[
        "simulate",
        "models/mnist-lenet-ee",
        "--trace",
        "const:1",
        "--device-profile",
        p,
        "--server-profile",
        p,
        "--requests",
        "5",
        "--policies",
        &policy,
        "--json",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 0, "{err}");
    let sim: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    let ran = &sim["policies"][format!("static:{block}:fp32")];
    assert_eq!(ran["cuts"][&label], 1.0, "{sim}");
    let run_cuts: Vec<&String> = run["cuts"].as_object().expect("cuts").keys().collect();
    let sim_cuts: Vec<&String> = ran["cuts"].as_object().expect("cuts").keys().collect();
    assert_eq!(run_cuts, sim_cuts, "run {run}\nsimulate {sim}");
}

#[test]
fn run_trace_accepts_every_format_simulate_reads() {
    let dir = scratch("traces");
    let pensieve = dir.join("pensieve");
    std::fs::write(&pensieve, "0.0 80\n1.0 40\n2.0 80\n").expect("writes");
    let mahimahi = dir.join("mahimahi.up");
    let stamps: String = (1..=200).map(|t| format!("{}\n{}\n", t, t)).collect();
    std::fs::write(&mahimahi, stamps).expect("writes");
    let csv = dir.join("5g.csv");
    std::fs::write(
        &csv,
        "time_s,A_throughput_mbps,B_throughput_mbps\n0,50,60\n1,70,80\n",
    )
    .expect("writes");
    let server = cpu_server();
    let url = server.url();
    let path = |p: &Path| p.to_str().expect("utf-8 temp path").to_string();
    let cases: Vec<Vec<String>> = vec![
        vec![path(&pensieve)],
        vec![path(&mahimahi)],
        vec![path(&csv), "--column".into(), "B_throughput_mbps".into()],
        vec![path(&csv)],
        vec!["const:5".into()],
        vec!["steps:2,8@0.5".into()],
        vec!["markov:10,1@2:3".into()],
    ];
    for case in &cases {
        let mut args = vec!["--policy", "server", "--limit", "2", "--trace"];
        args.extend(case.iter().map(String::as_str));
        let (code, j, err) = run_cpu(&url, &args);
        assert_eq!(code, 0, "--trace {case:?}: {err}");
        let j = j.expect("one JSON object");
        assert_eq!(j["samples"], 2, "{j}");
        assert_eq!(j["fallbacks"], 0, "--trace {case:?}: {j}");
        assert!(j["trace"].is_string(), "{j}");
    }
    server.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn old_policy_spellings_and_the_live_oracle_are_refused_with_the_new_form() {
    let url = "http://127.0.0.1:9";
    let cases: [(&[&str], &[&str]); 5] = [
        (&["--encoding", "int8"], &["--policy static:<block>:int8"]),
        (
            &["--policy", "static:1"],
            &["static:conv2", "static:conv1", "static:1:fp32", "AFTER"],
        ),
        (&["--policy", "device-only"], &["`device`"]),
        (&["--policy", "static:conv1/int8"], &["static:conv1:int8"]),
        (&["--policy", "oracle"], &["edgecut simulate", "dynamic"]),
    ];
    for (args, wants) in cases {
        let (code, _, err) = run_cpu(url, args);
        assert_eq!(code, 1, "{args:?}: {err}");
        for w in wants {
            assert!(err.contains(w), "{args:?}: '{w}' not in: {err}");
        }
    }
}
