//! ONNX import: small graphs built in Rust import into the expected blocks and cuts and run on
//! the CPU engine with the outputs of a plain-Rust reference of the ONNX operators.

#[path = "common/onnx.rs"]
mod onnx_builder;

use edgecut::engine::{infer, Backend};
use edgecut::model::Model;
use edgecut::onnx::{import_bytes, OnnxError};
use edgecut::tensor::Tensor;
use onnx_builder::{float, int, ints, values, Graph};
use serde_json::Value;
use std::sync::Arc;

/// Largest absolute difference allowed between the engine and the reference (f32 sums in a
/// different order, batchnorm folded into weights).
const CLOSE: f32 = 1e-4;

fn load(g: &Graph, output: &str) -> Model {
    import_bytes(&g.bytes(output), None, "test")
        .expect("imports")
        .to_model()
        .expect("loads")
}

fn ops(m: &edgecut::onnx::Imported, block: usize) -> Vec<Value> {
    m.manifest.blocks[block].ops.clone()
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= CLOSE, "element {i}: {g} vs {w}");
    }
}

/// NCHW convolution, one sample: `x [c, h, w]`, `w [m, c, k, k]`, symmetric padding.
fn conv_ref(
    x: &[f32],
    (c, h, wd): (usize, usize, usize),
    w: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    pad: usize,
) -> Vec<f32> {
    let (oh, ow) = (h + 2 * pad - k + 1, wd + 2 * pad - k + 1);
    let mut y = vec![0.0; m * oh * ow];
    for o in 0..m {
        for i in 0..oh {
            for j in 0..ow {
                let mut s = b[o];
                for ci in 0..c {
                    for ki in 0..k {
                        for kj in 0..k {
                            let (yi, xj) = (
                                (i + ki) as isize - pad as isize,
                                (j + kj) as isize - pad as isize,
                            );
                            if yi >= 0 && xj >= 0 && (yi as usize) < h && (xj as usize) < wd {
                                s += w[((o * c + ci) * k + ki) * k + kj]
                                    * x[(ci * h + yi as usize) * wd + xj as usize];
                            }
                        }
                    }
                }
                y[(o * oh + i) * ow + j] = s;
            }
        }
    }
    y
}

fn relu(v: Vec<f32>) -> Vec<f32> {
    v.into_iter().map(|x| x.max(0.0)).collect()
}

#[test]
fn conv_relu_pool_gemm_chain_imports_into_blocks_and_matches_the_reference() {
    let mut g = Graph::new(&[-1, 2, 6, 6]);
    let w = values(3 * 2 * 9, 1);
    let b = values(3, 2);
    let w2 = values(4 * 27, 3);
    let c2 = values(4, 4);
    g.init("w", &[3, 2, 3, 3], w.clone());
    g.init("b", &[3], b.clone());
    g.init("w2", &[4, 27], w2.clone());
    g.init("c2", &[4], c2.clone());
    g.node(
        "Conv",
        &["x", "w", "b"],
        &["c"],
        vec![ints("pads", &[1, 1, 1, 1]), ints("kernel_shape", &[3, 3])],
    );
    g.node("Relu", &["c"], &["r"], vec![]);
    g.node(
        "MaxPool",
        &["r"],
        &["p"],
        vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
    );
    g.node("Flatten", &["p"], &["f"], vec![int("axis", 1)]);
    g.node(
        "Gemm",
        &["f", "w2", "c2"],
        &["y"],
        vec![int("transB", 1), float("alpha", 0.5), float("beta", 2.0)],
    );
    let imported = import_bytes(&g.bytes("y"), None, "chain").expect("imports");
    let names: Vec<&str> = imported
        .manifest
        .blocks
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(names, ["Relu_r", "MaxPool_p", "Flatten_f", "Gemm_y"]);
    assert_eq!(imported.manifest.input, [2, 6, 6]);
    assert_eq!(imported.manifest.classes, 4);
    let model = Arc::new(imported.to_model().expect("loads"));
    assert_eq!(model.blocks[0].steps.len(), 1, "relu fuses into the conv");

    let x = values(3 * 72, 5);
    let out = infer(
        &model,
        &Backend::Cpu,
        &Tensor::new(vec![3, 2, 6, 6], x.clone()).expect("x"),
        None,
    )
    .expect("runs");
    let mut want = Vec::new();
    for s in x.chunks(72) {
        let r = relu(conv_ref(s, (2, 6, 6), &w, &b, 3, 3, 1));
        let mut p = Vec::new();
        for ch in 0..3 {
            for i in 0..3 {
                for j in 0..3 {
                    let at = |di: usize, dj: usize| r[(ch * 6 + 2 * i + di) * 6 + 2 * j + dj];
                    p.push(at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1)));
                }
            }
        }
        for o in 0..4 {
            want.push(0.5 * (0..27).map(|i| w2[o * 27 + i] * p[i]).sum::<f32>() + 2.0 * c2[o]);
        }
    }
    assert_eq!(out.shape(), [3, 4]);
    assert_close(out.data(), &want);
    // Split after the pool: head then tail gives the same output.
    let split = infer(
        &model,
        &Backend::Cpu,
        &Tensor::new(vec![3, 2, 6, 6], x).expect("x"),
        Some(1),
    )
    .expect("runs");
    assert_close(split.data(), out.data());
}

#[test]
fn residual_block_with_batchnorm_stays_in_one_block_and_matches_the_reference() {
    let mut g = Graph::new(&[-1, 4, 5, 5]);
    let (wa, wb) = (values(4 * 4 * 9, 11), values(4 * 4 * 9, 12));
    let (gamma, beta, mean) = (values(4, 13), values(4, 14), values(4, 15));
    let var: Vec<f32> = values(4, 16).iter().map(|v| v.abs() + 0.5).collect();
    let wd = values(3 * 4, 17);
    g.init("wa", &[4, 4, 3, 3], wa.clone());
    g.init("wb", &[4, 4, 3, 3], wb.clone());
    for (n, v) in [
        ("gamma", &gamma),
        ("beta", &beta),
        ("mean", &mean),
        ("var", &var),
    ] {
        g.init(n, &[4], v.clone());
    }
    g.init("wd", &[4, 3], wd.clone());
    let pads = || vec![ints("pads", &[1, 1, 1, 1])];
    g.node("Conv", &["x", "wa"], &["a"], pads());
    g.node(
        "BatchNormalization",
        &["a", "gamma", "beta", "mean", "var"],
        &["n"],
        vec![float("epsilon", 1e-3)],
    );
    g.node("Relu", &["n"], &["r"], vec![]);
    g.node("Conv", &["r", "wb"], &["cb"], pads());
    g.node("Add", &["cb", "x"], &["s"], vec![]);
    g.node("Relu", &["s"], &["z"], vec![]);
    g.node("GlobalAveragePool", &["z"], &["gap"], vec![]);
    g.node("Flatten", &["gap"], &["f"], vec![]);
    g.node("MatMul", &["f", "wd"], &["y"], vec![]);
    let imported = import_bytes(&g.bytes("y"), None, "res").expect("imports");
    let names: Vec<&str> = imported
        .manifest
        .blocks
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["Relu_z", "GlobalAveragePool_gap", "Flatten_f", "MatMul_y"]
    );
    let first = ops(&imported, 0);
    let kinds: Vec<&str> = first
        .iter()
        .map(|o| o["op"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        kinds,
        ["conv2d", "relu", "conv2d", "add", "relu"],
        "batchnorm folds into the conv"
    );
    assert_eq!(first[3]["with"], "input");
    let model = Arc::new(imported.to_model().expect("loads"));

    let x = values(2 * 100, 18);
    let out = infer(
        &model,
        &Backend::Cpu,
        &Tensor::new(vec![2, 4, 5, 5], x.clone()).expect("x"),
        None,
    )
    .expect("runs");
    let mut want = Vec::new();
    for s in x.chunks(100) {
        let mut a = conv_ref(s, (4, 5, 5), &wa, &[0.0; 4], 4, 3, 1);
        for ch in 0..4 {
            let sc = gamma[ch] / (var[ch] + 1e-3).sqrt();
            for v in &mut a[ch * 25..(ch + 1) * 25] {
                *v = (*v - mean[ch]) * sc + beta[ch];
            }
        }
        let cb = conv_ref(&relu(a), (4, 5, 5), &wb, &[0.0; 4], 4, 3, 1);
        let z = relu(cb.iter().zip(s).map(|(p, q)| p + q).collect());
        let gap: Vec<f32> = z.chunks(25).map(|c| c.iter().sum::<f32>() / 25.0).collect();
        for o in 0..3 {
            want.push((0..4).map(|i| gap[i] * wd[i * 3 + o]).sum());
        }
    }
    assert_close(out.data(), &want);
}

#[test]
fn fire_module_concat_stays_in_one_block_with_labels() {
    let mut g = Graph::new(&[-1, 4, 6, 6]);
    g.init("ws", &[2, 4, 1, 1], values(8, 21));
    g.init("w1", &[3, 2, 1, 1], values(6, 22));
    g.init("w3", &[3, 2, 3, 3], values(54, 23));
    g.node("Conv", &["x", "ws"], &["s"], vec![]);
    g.node("Relu", &["s"], &["sr"], vec![]);
    g.node("Conv", &["sr", "w1"], &["e1"], vec![]);
    g.node("Relu", &["e1"], &["e1r"], vec![]);
    g.node(
        "Conv",
        &["sr", "w3"],
        &["e3"],
        vec![ints("pads", &[1, 1, 1, 1])],
    );
    g.node("Relu", &["e3"], &["e3r"], vec![]);
    g.node("Concat", &["e1r", "e3r"], &["cat"], vec![int("axis", 1)]);
    g.node("GlobalAveragePool", &["cat"], &["gap"], vec![]);
    g.node("Flatten", &["gap"], &["y"], vec![]);
    let imported = import_bytes(&g.bytes("y"), None, "fire").expect("imports");
    let names: Vec<&str> = imported
        .manifest
        .blocks
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "Relu_sr",
            "Concat_cat",
            "GlobalAveragePool_gap",
            "Flatten_y"
        ]
    );
    let fire = ops(&imported, 1);
    let kinds: Vec<&str> = fire
        .iter()
        .map(|o| o["op"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(kinds, ["conv2d", "relu", "conv2d", "relu", "concat"]);
    assert_eq!(
        fire[1]["save_as"], "t0",
        "the 1x1 branch is kept for the concat"
    );
    assert_eq!(
        fire[2]["from"], "input",
        "the 3x3 branch reads the block input"
    );
    assert_eq!(fire[4]["from"], "t0");
    assert_eq!(fire[4]["with"], serde_json::json!(["t1"]));
    assert_eq!(fire[3]["save_as"], "t1");
    assert_eq!(fire[4]["axis"], 0);
    let model = Arc::new(imported.to_model().expect("loads"));
    let x = Tensor::new(vec![2, 4, 6, 6], values(2 * 144, 24)).expect("x");
    let whole = infer(&model, &Backend::Cpu, &x, None).expect("runs");
    assert_eq!(whole.shape(), [2, 6]);
    for cut in 0..model.blocks.len() - 1 {
        let split = infer(&model, &Backend::Cpu, &x, Some(cut)).expect("runs split");
        assert_close(split.data(), whole.data());
    }
}

#[test]
fn pytorch_shape_chain_flatten_runs_at_any_batch() {
    let mut g = Graph::new(&[-1, 2, 3, 3]);
    g.init_i64("zero", &[], vec![0]);
    g.init_i64("minus1", &[1], vec![-1]);
    g.init_i64("ax0", &[1], vec![0]);
    g.node("Shape", &["x"], &["shape"], vec![]);
    g.node("Gather", &["shape", "zero"], &["n"], vec![int("axis", 0)]);
    g.node("Unsqueeze", &["n", "ax0"], &["n1"], vec![]);
    g.node(
        "Concat",
        &["n1", "minus1"],
        &["target"],
        vec![int("axis", 0)],
    );
    g.node("Sigmoid", &["x"], &["sg"], vec![]);
    g.node("Mul", &["x", "sg"], &["silu"], vec![]);
    g.node("Reshape", &["silu", "target"], &["y"], vec![]);
    let imported = import_bytes(&g.bytes("y"), None, "flat").expect("imports");
    let all: Vec<Value> = imported
        .manifest
        .blocks
        .iter()
        .flat_map(|b| b.ops.clone())
        .collect();
    let kinds: Vec<&str> = all
        .iter()
        .map(|o| o["op"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        kinds,
        ["silu", "flatten"],
        "x * sigmoid(x) is silu; the shape chain folds"
    );
    let model = Arc::new(imported.to_model().expect("loads"));
    let x = values(4 * 18, 31);
    let out = infer(
        &model,
        &Backend::Cpu,
        &Tensor::new(vec![4, 2, 3, 3], x.clone()).expect("x"),
        None,
    )
    .expect("runs");
    let want: Vec<f32> = x.iter().map(|v| v / (1.0 + (-v).exp())).collect();
    assert_eq!(out.shape(), [4, 18]);
    assert_close(out.data(), &want);
}

#[test]
fn reshape_to_the_declared_batch_of_one_is_generalised_and_a_fixed_batch_is_refused() {
    let build = |batch: i64| {
        let mut g = Graph::new(&[batch, 2, 2, 2]);
        g.init_i64("target", &[2], vec![1, -1]);
        g.node("Reshape", &["x", "target"], &["y"], vec![]);
        g
    };
    let model = Arc::new(load(&build(1), "y"));
    let x = values(3 * 8, 41);
    let out = infer(
        &model,
        &Backend::Cpu,
        &Tensor::new(vec![3, 2, 2, 2], x.clone()).expect("x"),
        None,
    )
    .expect("runs at batch 3");
    assert_eq!(out.shape(), [3, 8]);
    assert_eq!(out.data(), &x[..]);
    let err = import_bytes(&build(-1).bytes("y"), None, "fixed").unwrap_err();
    let OnnxError::Unsupported(list) = &err else {
        panic!("{err}")
    };
    assert_eq!(list[0].node, "Reshape_y");
    assert!(err.to_string().contains("batch"), "{err}");
}

#[test]
fn imported_file_loads_through_model_load_with_the_file_hash() {
    let mut g = Graph::new(&[-1, 3]);
    g.init("w", &[3, 2], values(6, 51));
    g.node("MatMul", &["x", "w"], &["h"], vec![]);
    g.node("Relu", &["h"], &["y"], vec![]);
    let dir = std::env::temp_dir().join(format!("edgecut-onnx-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("tiny.onnx");
    let bytes = g.bytes("y");
    std::fs::write(&path, &bytes).expect("write");
    let model = Model::load(&path).expect("loads an .onnx file");
    use sha2::Digest;
    assert_eq!(model.hash, format!("{:x}", sha2::Sha256::digest(&bytes)));
    assert_eq!(model.blocks.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn same_upper_stride_2_conv_pads_asymmetrically_like_tensorflow() {
    let mut g = Graph::new(&[-1, 1, 6, 6]);
    let w = values(9, 61);
    g.init("w", &[1, 1, 3, 3], w.clone());
    g.node(
        "Conv",
        &["x", "w"],
        &["c"],
        vec![
            ints("strides", &[2, 2]),
            onnx_builder::string("auto_pad", "SAME_UPPER"),
        ],
    );
    g.node("Flatten", &["c"], &["y"], vec![]);
    let imported = import_bytes(&g.bytes("y"), None, "same").expect("imports");
    let conv = &ops(&imported, 0)[0];
    assert_eq!(conv["padding"], serde_json::json!([0, 0, 1, 1]), "{conv}");
    let model = Arc::new(imported.to_model().expect("loads"));
    let x = values(2 * 36, 62);
    let out = infer(
        &model,
        &Backend::Cpu,
        &Tensor::new(vec![2, 1, 6, 6], x.clone()).expect("x"),
        None,
    )
    .expect("runs");
    let mut want = Vec::new();
    for s in x.chunks(36) {
        for i in 0..3 {
            for j in 0..3 {
                let mut acc = 0.0;
                for ki in 0..3 {
                    for kj in 0..3 {
                        let (r, c) = (2 * i + ki, 2 * j + kj);
                        if r < 6 && c < 6 {
                            acc += w[ki * 3 + kj] * s[r * 6 + c];
                        }
                    }
                }
                want.push(acc);
            }
        }
    }
    assert_close(out.data(), &want);
}

#[test]
fn cli_imports_infers_and_splits_an_onnx_file() {
    let mut g = Graph::new(&[-1, 2, 4, 4]);
    g.init("w", &[3, 2, 3, 3], values(54, 71));
    g.init("wd", &[3, 5], values(15, 72));
    g.node(
        "Conv",
        &["x", "w"],
        &["c"],
        vec![ints("pads", &[1, 1, 1, 1])],
    );
    g.node("Relu", &["c"], &["r"], vec![]);
    g.node("GlobalAveragePool", &["r"], &["p"], vec![]);
    g.node("Flatten", &["p"], &["f"], vec![]);
    g.node("MatMul", &["f", "wd"], &["y"], vec![]);
    let dir = std::env::temp_dir().join(format!("edgecut-onnx-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let onnx = dir.join("net.onnx");
    std::fs::write(&onnx, g.bytes("y")).expect("write");
    let x = Tensor::new(vec![2, 2, 4, 4], values(64, 73)).expect("x");
    edgecut::npy::write(&dir.join("x.npy"), &x).expect("npy");
    let exe = env!("CARGO_BIN_EXE_edgecut");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(exe)
            .args(args)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let path = |p: &str| dir.join(p).to_string_lossy().into_owned();
    let info: Value =
        serde_json::from_str(&run(&["info", &path("net.onnx"), "--json"])).expect("json");
    assert_eq!(info["blocks"].as_array().map(Vec::len), Some(4));
    run(&["import", &path("net.onnx"), "--out", &path("native")]);
    assert!(Model::load(dir.join("native")).is_ok());
    run(&[
        "infer",
        &path("net.onnx"),
        "--input",
        &path("x.npy"),
        "--backend",
        "cpu",
        "--out",
        &path("y.npy"),
    ]);
    run(&[
        "infer",
        &path("net.onnx"),
        "--input",
        &path("x.npy"),
        "--backend",
        "cpu",
        "--cut",
        "Relu_r",
        "--out",
        &path("ys.npy"),
    ]);
    run(&[
        "infer",
        &path("native"),
        "--input",
        &path("x.npy"),
        "--backend",
        "cpu",
        "--out",
        &path("yn.npy"),
    ]);
    // Timed runs: one compiled plan gives the output and the times, with and without a cut.
    for (cut, out) in [(None, "yr.npy"), (Some("Relu_r"), "yrs.npy")] {
        let mut args = vec![
            "infer",
            "--backend",
            "cpu",
            "--repeat",
            "3",
            "--op-times",
            "--json",
        ];
        let (model, input, out) = (path("net.onnx"), path("x.npy"), path(out));
        args.extend(["--input", &input, "--out", &out, &model]);
        if let Some(c) = cut {
            args.extend(["--cut", c]);
        }
        let report: Value = serde_json::from_str(&run(&args)).expect("json");
        assert_eq!(report["run_seconds"].as_array().map(Vec::len), Some(3));
        assert!(report["median_ms"].as_f64().is_some_and(|m| m > 0.0));
        assert!(report["op_seconds"]
            .as_object()
            .is_some_and(|o| !o.is_empty()));
    }
    let y = edgecut::npy::read(&dir.join("y.npy")).expect("y");
    assert_eq!(y.shape(), [2, 5]);
    for other in ["ys.npy", "yn.npy", "yr.npy", "yrs.npy"] {
        assert_eq!(
            edgecut::npy::read(&dir.join(other)).expect(other),
            y,
            "{other}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
