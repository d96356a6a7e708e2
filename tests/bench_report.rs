//! `edgecut bench`: every suite kernel agrees with its CPU reference on the GPU, the CLI
//! writes a report with the documented JSON keys, unknown backends list the available ones,
//! and models that fail to load are reported and skipped.

mod common;

use edgecut::bench::{kernel_suite, targets};
use edgecut::engine::{Backend, Plan};
use edgecut::sched::profile::{time_plans, Clock, Profile};
use std::process::Command;
use std::sync::Arc;

#[test]
fn every_suite_kernel_matches_its_cpu_reference_on_the_gpu() {
    let Some(ctx) = common::gpu("every_suite_kernel_matches_its_cpu_reference_on_the_gpu") else {
        return;
    };
    for case in kernel_suite(true) {
        let got = case
            .prepare(&ctx)
            .expect("prepares")
            .run(&ctx)
            .expect("runs");
        common::assert_close(
            &format!("{} {} b{}", case.name, case.shape, case.batch),
            &got,
            &case.reference(),
            common::Tolerance::Approximate,
        );
    }
}

#[test]
fn unknown_backend_lists_the_available_ones() {
    let err = targets(&["quantum".into()])
        .expect_err("unknown")
        .to_string();
    assert!(
        err.contains("unknown backend 'quantum'") && err.contains("cpu"),
        "{err}"
    );
}

#[test]
fn cli_bench_writes_a_report_with_the_documented_keys() {
    let out = std::env::temp_dir().join(format!("edgecut-bench-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_edgecut"))
        .args(["bench", "--quick", "--backends", "cpu", "--json", "--out"])
        .arg(&out)
        .args(["--models", "models/mnist-fixture,models/does-not-exist"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert!(v["machine"]["cores"].as_u64().expect("cores") >= 1);
    let b = &v["backends"][0];
    assert_eq!(b["kind"], "cpu");
    for key in ["name", "driver", "ceilings", "kernels", "models"] {
        assert!(!b[key].is_null(), "missing {key}");
    }
    assert!(b["ceilings"]["bandwidth_gbs"].as_f64().expect("bandwidth") > 0.0);
    let k = &b["kernels"][0];
    for key in [
        "name",
        "shape",
        "batch",
        "density",
        "median_ms",
        "gflops",
        "pct_of_ceiling",
        "checked",
    ] {
        assert!(!k[key].is_null(), "kernel missing {key}");
    }
    let m = &b["models"][0];
    assert_eq!(m["name"], "mnist-fixture");
    assert_eq!(m["blocks"].as_array().expect("blocks").len(), 5);
    assert_eq!(m["clock"], "wall", "the CPU backend has no GPU timestamps");
    assert!(b["notes"][0]
        .as_str()
        .expect("note")
        .contains("does-not-exist"));
    for f in [
        "report.md",
        "report.json",
        "kernels_gflops.svg",
        "model_blocks.svg",
        "sparse_speedup.svg",
    ] {
        assert!(out.join(f).exists(), "{f} not written");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn cli_bench_rejects_an_unknown_backend() {
    let output = Command::new(env!("CARGO_BIN_EXE_edgecut"))
        .args(["bench", "--backends", "quantum"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("available:"));
}

#[test]
fn the_profiler_reads_gpu_timestamps_exactly_when_the_adapter_has_them() {
    let Some(ctx) =
        common::gpu("the_profiler_reads_gpu_timestamps_exactly_when_the_adapter_has_them")
    else {
        return;
    };
    let want = if ctx.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
        Clock::GpuTimestamps
    } else {
        Clock::Wall
    };
    let model = Arc::new(edgecut::fixture::lenet(1).expect("fixture builds"));
    let gpu = Backend::Gpu(ctx);
    let plan = Plan::compile(&model, 0..model.blocks.len(), &gpu, 2).expect("compiles");
    let mut shape = vec![2];
    shape.extend_from_slice(model.input_shape());
    let x = edgecut::tensor::Tensor::new(shape, vec![0.5; 2 * model.input_elems()]).expect("x");
    let t = time_plans(&[&plan], &x, 1, 3).expect("times");
    assert_eq!(t[0].clock(), want, "{:?}", t[0]);
    if let Some(device) = t[0].device_seconds {
        assert!(device > 0.0 && device <= t[0].wall_seconds, "{:?}", t[0]);
    }
    let p = Profile::measure(&model, &gpu, &[1], 1, 2).expect("measures");
    assert_eq!(p.clock, want);
}
