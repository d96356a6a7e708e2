//! Issue 14, finding 3: a mutated `model.json` that declares huge or overflowing sizes gets a
//! clear error naming the block and op, before anything is allocated, never an abort or panic.

use edgecut::model::Model;
use std::path::PathBuf;
use std::process::Command;

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
