//! Bad input gets a clear error naming what and where, never a panic: model files, weights,
//! shapes, data files, adapters and GPU limits, through the library and the CLI.

mod common;

use edgecut::engine::{Backend, Plan};
use edgecut::model::weights::{serialize, TensorData};
use edgecut::model::Model;
use edgecut::tensor::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgecut-bad-input-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A one-block MLP manifest: flatten → fanin(16 → 4, k) → dense(4 → 2).
fn mlp_json(k: usize, extra_op: Option<&str>) -> String {
    let extra = extra_op.map(|o| format!("{o},")).unwrap_or_default();
    format!(
        r#"{{"format": 1, "name": "tiny", "input": [16], "classes": 2,
        "blocks": [{{"name": "b0", "ops": [{extra}
            {{"op": "fanin", "name": "fc", "outputs": 4, "k": {k}, "bias": true}},
            {{"op": "relu"}}]}},
          {{"name": "b1", "ops": [{{"op": "dense", "name": "out", "outputs": 2}}]}}]}}"#
    )
}

fn tiny_weights(indices: Vec<u32>, k: usize, dense_shape: Vec<usize>) -> Vec<u8> {
    let mut t = BTreeMap::new();
    t.insert(
        "b0.fc.indices".into(),
        TensorData::Indices(vec![4, k], indices),
    );
    t.insert(
        "b0.fc.weights".into(),
        TensorData::F32(vec![4, k], vec![0.5; 4 * k]),
    );
    t.insert("b0.fc.bias".into(), TensorData::F32(vec![4], vec![0.0; 4]));
    let n = dense_shape.iter().product();
    t.insert(
        "b1.out.weight".into(),
        TensorData::F32(dense_shape, vec![0.1; n]),
    );
    serialize(&t).expect("serialises")
}

fn write_model(dir: &Path, json: &str, weights: Option<Vec<u8>>) {
    std::fs::write(dir.join("model.json"), json).expect("write model.json");
    if let Some(w) = weights {
        std::fs::write(dir.join("weights.safetensors"), w).expect("write weights");
    }
}

fn load_err(json: &str, weights: Option<Vec<u8>>, name: &str) -> String {
    let dir = scratch(name);
    write_model(&dir, json, weights);
    Model::load(&dir).expect_err("must be rejected").to_string()
}

fn good_indices() -> Vec<u32> {
    vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
}

#[test]
fn a_valid_tiny_model_loads() {
    let dir = scratch("valid");
    write_model(
        &dir,
        &mlp_json(4, None),
        Some(tiny_weights(good_indices(), 4, vec![2, 4])),
    );
    Model::load(&dir).expect("valid model loads");
}

#[test]
fn missing_model_directory_says_what_a_model_is() {
    let err = Model::load("/nonexistent/edgecut-model")
        .expect_err("missing")
        .to_string();
    assert!(err.contains("model.json"), "{err}");
}

#[test]
fn malformed_json_is_reported_with_its_position() {
    let err = load_err("{\"format\": 1, \"name\": ", None, "malformed");
    assert!(
        err.contains("malformed model.json") && err.contains("line"),
        "{err}"
    );
}

#[test]
fn unknown_op_names_block_and_op() {
    let err = load_err(
        &mlp_json(4, Some(r#"{"op": "transformer"}"#)),
        Some(tiny_weights(good_indices(), 4, vec![2, 4])),
        "unknown-op",
    );
    assert!(
        err.contains("block 'b0', op 0 ('transformer')") && err.contains("unknown variant"),
        "{err}"
    );
}

#[test]
fn missing_weights_and_no_seed_is_an_error() {
    let err = load_err(&mlp_json(4, None), None, "no-weights");
    assert!(err.contains("no weights.safetensors"), "{err}");
}

#[test]
fn wrong_tensor_shape_names_the_tensor() {
    let err = load_err(
        &mlp_json(4, None),
        Some(tiny_weights(good_indices(), 4, vec![4, 2])),
        "shape",
    );
    assert!(
        err.contains("b1.out.weight") && err.contains("expected [2, 4]"),
        "{err}"
    );
}

#[test]
fn wrong_tensor_dtype_names_the_tensor() {
    let mut t = BTreeMap::new();
    t.insert(
        "b0.fc.indices".into(),
        TensorData::Indices(vec![4, 4], good_indices()),
    );
    t.insert(
        "b0.fc.weights".into(),
        TensorData::Indices(vec![4, 4], vec![1; 16]),
    );
    t.insert("b0.fc.bias".into(), TensorData::F32(vec![4], vec![0.0; 4]));
    t.insert(
        "b1.out.weight".into(),
        TensorData::F32(vec![2, 4], vec![0.0; 8]),
    );
    let err = load_err(
        &mlp_json(4, None),
        Some(serialize(&t).expect("serialises")),
        "dtype",
    );
    assert!(
        err.contains("b0.fc.weights") && err.contains("expected F32"),
        "{err}"
    );
}

#[test]
fn fanin_index_out_of_range_is_rejected() {
    let mut idx = good_indices();
    idx[5] = 16;
    let err = load_err(
        &mlp_json(4, None),
        Some(tiny_weights(idx, 4, vec![2, 4])),
        "range",
    );
    assert!(
        err.contains("b0.fc.indices") && err.contains("reads input 16"),
        "{err}"
    );
}

#[test]
fn fanin_declared_group_must_match_the_stored_indices() {
    // Rows 0..4 of good_indices() are all different: not groups of 2.
    let json = mlp_json(4, None).replace(r#""k": 4,"#, r#""k": 4, "group": 2,"#);
    let err = load_err(
        &json,
        Some(tiny_weights(good_indices(), 4, vec![2, 4])),
        "group",
    );
    assert!(
        err.contains("b0.fc.indices")
            && err.contains("groups of 2 outputs")
            && err.contains("output 1"),
        "{err}"
    );
    let json = mlp_json(4, None).replace(r#""k": 4,"#, r#""k": 4, "group": 3,"#);
    let err = load_err(
        &json,
        Some(tiny_weights(good_indices(), 4, vec![2, 4])),
        "group3",
    );
    assert!(
        err.contains("group 3 must be a positive divisor of outputs (4)"),
        "{err}"
    );
}

#[test]
fn fanin_duplicate_index_in_a_row_is_rejected() {
    let mut idx = good_indices();
    idx[5] = 4;
    let err = load_err(
        &mlp_json(4, None),
        Some(tiny_weights(idx, 4, vec![2, 4])),
        "dup",
    );
    assert!(
        err.contains("output 1 reads input 4 more than once"),
        "{err}"
    );
}

#[test]
fn shapes_that_do_not_chain_are_rejected() {
    let json = r#"{"format": 1, "name": "bad", "input": [1, 8, 8], "classes": 2, "init": {"seed": 1},
        "blocks": [{"name": "b0", "ops": [{"op": "dense", "outputs": 2}]}]}"#;
    let err = load_err(json, None, "chain");
    assert!(
        err.contains("block 'b0', op 0 ('dense')") && err.contains("1-D input"),
        "{err}"
    );
    let json = r#"{"format": 1, "name": "bad", "input": [4], "classes": 3, "init": {"seed": 1},
        "blocks": [{"name": "b0", "ops": [{"op": "dense", "outputs": 2}]}]}"#;
    let err = load_err(json, None, "classes");
    assert!(err.contains("declares 3 classes"), "{err}");
    let json = r#"{"format": 1, "name": "bad", "input": [4], "classes": 2, "init": {"seed": 1},
        "blocks": [{"name": "b0", "ops": [{"op": "dense", "outputs": 2}]}],
        "exits": [{"after_block": "nope", "ops": []}]}"#;
    let err = load_err(json, None, "exit");
    assert!(err.contains("'nope', which does not exist"), "{err}");
}

#[test]
fn input_of_the_wrong_size_is_rejected_by_plans() {
    let m = Arc::new(edgecut::fixture::lenet(1).expect("fixture"));
    let plan = Plan::compile(&m, 0..2, &Backend::Cpu, 4).expect("compiles");
    let err = plan
        .run(&Tensor::zeros(vec![2, 1, 28, 27]))
        .expect_err("wrong shape")
        .to_string();
    assert!(err.contains("[2, 1, 28, 28]"), "{err}");
    let err = plan
        .run(&Tensor::zeros(vec![5, 1, 28, 28]))
        .expect_err("too many")
        .to_string();
    assert!(err.contains("compiled for 1..=4"), "{err}");
    assert!(Plan::compile(&m, 3..3, &Backend::Cpu, 1).is_err());
    assert!(Plan::compile(&m, 0..9, &Backend::Cpu, 1).is_err());
}

#[test]
fn gpu_limits_are_checked_before_allocating() {
    let Some(ctx) = common::gpu("gpu_limits_are_checked_before_allocating") else {
        return;
    };
    let m = Arc::new(
        Model::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/efficientnet-b0"))
            .expect("loads"),
    );
    // 32 x 112 x 112 floats per sample: 100,000 samples need far more than any binding limit.
    let err = Plan::compile(&m, 0..1, &Backend::Gpu(ctx), 100_000)
        .err()
        .expect("over the limit")
        .to_string();
    assert!(
        err.contains("max_storage_buffer_binding_size") || err.contains("max_buffer_size"),
        "{err}"
    );
}

fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edgecut"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs the binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_reports_errors_with_a_non_zero_exit_code() {
    let (code, _, err) = cli(&["info", "/nonexistent/model"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: loading model /nonexistent/model"),
        "{err}"
    );
    let (code, _, err) = cli(
        &[
            "eval",
            "models/mnist-fixture",
            "--data",
            "/nonexistent",
            "--backend",
            "cpu",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("holds neither t10k-images-idx3-ubyte"),
        "{err}"
    );
    let (code, _, _) = cli(&["frobnicate"], &[]);
    assert_eq!(code, 2);
}

#[test]
fn cli_rejects_a_corrupt_idx_file() {
    let dir = scratch("idx");
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        [0u8, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28],
    )
    .expect("write");
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        [0u8, 0, 8, 1, 0, 0, 0, 2, 1, 2],
    )
    .expect("write");
    let (code, _, err) = cli(
        &[
            "eval",
            "models/mnist-fixture",
            "--data",
            dir.to_str().expect("utf8"),
            "--backend",
            "cpu",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn cli_lists_adapters_when_none_matches() {
    let (code, _, err) = cli(
        &[
            "eval",
            "models/mnist-fixture",
            "--backend",
            "gpu",
            "--limit",
            "1",
        ],
        &[("WGPU_ADAPTER_NAME", "no-such-adapter-anywhere")],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("no GPU adapter matches") && err.contains("adapters found:"),
        "{err}"
    );
}
