//! `edgecut bench`: every suite kernel agrees with its CPU reference on the GPU, the CLI
//! writes a report with the documented JSON keys, unknown backends list the available ones,
//! and models that fail to load are reported and skipped.

mod common;

use edgecut::bench::{kernel_suite, targets};
use std::process::Command;

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
