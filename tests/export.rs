//! ONNX export: the head and tail `edgecut export` writes at every cut, read back by edgecut's
//! own importer (`Model::load` of the `.onnx` files), compute what the native model computes on
//! the CPU backend, for the shipped MNIST models, EfficientNet-Lite0 and a fixture holding every
//! native op; the FP16 and INT8 tails are the FP32 tail behind the documented decode; the Triton
//! repository follows the naming convention. (onnxruntime runs the same files in
//! `tests/python/export_reference.py`.)

use edgecut::encoding::{decode_cpu, encode_cpu, Encoding};
use edgecut::engine::{infer, Backend, Plan};
use edgecut::export::{self, ExportError};
use edgecut::model::{BinaryOperand, Model, Op};
use edgecut::onnx::proto::{tensor_proto::DataType, type_proto, ModelProto, ValueInfoProto};
use edgecut::tensor::Tensor;
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest difference, relative to the largest magnitude of the native output, between an
/// exported range read back by the importer and the native range on the CPU backend. The
/// weights are the same, but fan-in layers come back as dense layers and the importer may fuse
/// differently, so sums run in another order.
const EXPORT_TOLERANCE: f32 = 1e-4;
/// The same for a tail fed the FP16-rounded split tensor, against the unsplit native model:
/// binary16 keeps 11 significant bits (relative error 2^-12 per element), carried through the tail.
const FP16_TOLERANCE: f32 = 1e-2;
/// The same for INT8 (255 steps over the tensor's range, half a step of error per element).
const INT8_TOLERANCE: f32 = 1e-1;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("export-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn random(shape: Vec<usize>, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    Tensor::new(shape, (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()).expect("shape")
}

/// Asserts `max |got - want| <= tolerance * max |want|`, per sample in the same order (an
/// imported model's output is flat: edgecut models end in `[classes]`).
fn assert_rel(what: &str, got: &Tensor, want: &Tensor, tolerance: f32) {
    assert_eq!(
        (got.batch(), got.len()),
        (want.batch(), want.len()),
        "{what}: shape {:?} vs {:?}",
        got.shape(),
        want.shape()
    );
    let scale = want.data().iter().fold(1e-30f32, |m, v| m.max(v.abs()));
    let diff = got
        .data()
        .iter()
        .zip(want.data())
        .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
    assert!(
        diff <= tolerance * scale,
        "{what}: max difference {diff:e} exceeds {tolerance:e} of the largest magnitude {scale:e}"
    );
}

fn run(model: &Arc<Model>, x: &Tensor) -> Tensor {
    infer(model, &Backend::Cpu, x, None).expect("runs on the CPU backend")
}

fn load(path: &Path) -> Arc<Model> {
    Arc::new(Model::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// The element type and dims (`-1` for a symbolic one) of a graph input or output.
fn io_type(v: &ValueInfoProto) -> (i32, Vec<i64>) {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.clone())
    else {
        panic!("{:?} is not a tensor", v.name);
    };
    let dims = t
        .shape
        .expect("shape")
        .dim
        .iter()
        .map(|d| match d.value {
            Some(edgecut::onnx::proto::tensor_shape_proto::dimension::Value::DimValue(v)) => v,
            _ => -1,
        })
        .collect();
    (t.elem_type.unwrap_or(0), dims)
}

/// Checks that the `encoding` tail after block `k` is the FP32 tail behind the documented
/// decode: FP16 input and a Cast to float, or UINT8 input with per-sample `scale` and
/// `zero_point` `[N, 1]`, reshaped to `[N]`, and DequantizeLinear on axis 0.
fn check_encoded_front(model: &Model, k: usize, encoding: Encoding) {
    let n = model.blocks.len();
    let fp32 = export::to_onnx(model, k + 1..n, Encoding::Fp32).expect("exports");
    let tail = export::to_onnx(model, k + 1..n, encoding).expect("exports");
    let (g32, g) = (fp32.graph.expect("graph"), tail.graph.expect("graph"));
    let shape: Vec<i64> = std::iter::once(-1)
        .chain(model.blocks[k].output_shape.iter().map(|&d| d as i64))
        .collect();
    let front = match encoding {
        Encoding::Fp32 => 0,
        Encoding::Fp16 => {
            assert_eq!(io_type(&g.input[0]), (DataType::Float16 as i32, shape));
            let cast = &g.node[0];
            assert_eq!(cast.op_type.as_deref(), Some("Cast"));
            assert_eq!(cast.input, ["input"]);
            assert_eq!(cast.attribute[0].i, Some(DataType::Float as i64));
            1
        }
        Encoding::Int8 => {
            let names: Vec<_> = g
                .input
                .iter()
                .map(|i| i.name.clone().expect("named input"))
                .collect();
            assert_eq!(names, ["input", "scale", "zero_point"]);
            assert_eq!(io_type(&g.input[0]), (DataType::Uint8 as i32, shape));
            assert_eq!(io_type(&g.input[1]), (DataType::Float as i32, vec![-1, 1]));
            assert_eq!(io_type(&g.input[2]), (DataType::Uint8 as i32, vec![-1, 1]));
            let ops: Vec<_> = g.node[..3]
                .iter()
                .map(|n| n.op_type.clone().expect("op type"))
                .collect();
            assert_eq!(ops, ["Reshape", "Reshape", "DequantizeLinear"]);
            let dq = &g.node[2];
            assert_eq!(dq.input[0], "input");
            assert_eq!(dq.input[1], g.node[0].output[0]);
            assert_eq!(dq.input[2], g.node[1].output[0]);
            assert_eq!(dq.attribute[0].name.as_deref(), Some("axis"));
            assert_eq!(dq.attribute[0].i, Some(0));
            3
        }
    };
    // The rest is the FP32 tail with its input renamed to the decoded tensor.
    let decoded = g.node[..front].last().map(|n| n.output[0].clone());
    let mut rest = g.node[front..].to_vec();
    if let Some(decoded) = decoded {
        for node in &mut rest {
            for i in &mut node.input {
                if *i == decoded {
                    *i = "input".into();
                }
            }
        }
    }
    assert_eq!(rest, g32.node, "{encoding} tail after block {k}: nodes");
    let weights = |g: &edgecut::onnx::proto::GraphProto| {
        g.initializer
            .iter()
            .filter(|t| t.name.as_deref() != Some("per_sample.shape"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        weights(&g),
        weights(&g32),
        "{encoding} tail after block {k}: weights"
    );
    assert_eq!(g.output, g32.output);
}

/// Exports `model` whole and at every cut, reads every file back with the importer and compares
/// it with the native model on `batch` random samples.
fn check_every_cut(model: &Arc<Model>, name: &str, batch: usize) {
    let n = model.blocks.len();
    let mut shape = vec![batch];
    shape.extend_from_slice(model.input_shape());
    let x = random(shape, 5);
    let want = run(model, &x);
    let dir = scratch(name);
    let full = export::write_full(model, &dir.join("full"), false).expect("writes model.onnx");
    assert_rel(
        &format!("{name}: whole model"),
        &run(&load(&full.path), &x),
        &want,
        EXPORT_TOLERANCE,
    );
    let mut head_out = x.clone();
    for k in 0..n - 1 {
        head_out = Plan::compile(model, k..k + 1, &Backend::Cpu, batch)
            .expect("compiles")
            .run(&head_out)
            .expect("runs")
            .output;
        let out = dir.join(format!("cut{k}"));
        let files = export::write_split(model, k, Encoding::Fp32, &out, false).expect("writes");
        assert_eq!(files[0].path, out.join("head.onnx"));
        let (head, tail) = (load(&files[0].path), load(&files[1].path));
        let what = |part: &str| format!("{name}: {part} of the cut after block {k}");
        let exported_head = run(&head, &x)
            .reshape(head_out.shape().to_vec())
            .expect("the head's flat output holds the cut tensor");
        assert_rel(&what("head"), &exported_head, &head_out, EXPORT_TOLERANCE);
        assert_rel(
            &what("tail"),
            &run(&tail, &head_out),
            &want,
            EXPORT_TOLERANCE,
        );
        assert_rel(
            &what("exported head then tail"),
            &run(&tail, &exported_head),
            &want,
            EXPORT_TOLERANCE,
        );
        for (encoding, tolerance) in [
            (Encoding::Fp16, FP16_TOLERANCE),
            (Encoding::Int8, INT8_TOLERANCE),
        ] {
            check_encoded_front(model, k, encoding);
            let decoded = decode_cpu(&encode_cpu(&head_out, encoding)).expect("decodes");
            let got = run(&tail, &decoded);
            assert_rel(&what(&format!("{encoding} tail")), &got, &want, tolerance);
            // The native tail decoding in its plan computes the same.
            let native = Plan::compile_with(
                model,
                k + 1..n,
                &Backend::Cpu,
                batch,
                edgecut::engine::PlanIo::decoding(encoding),
            )
            .expect("compiles")
            .run_encoded(&[&encode_cpu(&head_out, encoding)])
            .expect("runs")
            .output;
            assert_rel(
                &what(&format!("{encoding} tail vs the native decoding tail")),
                &got,
                &native,
                EXPORT_TOLERANCE,
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exported_heads_and_tails_of_the_mnist_models_match_the_native_model_at_every_cut() {
    for name in [
        "mnist-lenet-ee",
        "mnist-mlp-dense",
        "mnist-mlp-sparse-4x",
        "mnist-mlp-dense-small",
        "mnist-mlp-sparse",
        "mnist-fixture",
    ] {
        let model = load(&repo(&format!("models/{name}")));
        check_every_cut(&model, name, 3);
    }
}

#[test]
fn exported_heads_and_tails_of_efficientnet_lite0_match_the_native_model_at_every_cut() {
    let model = load(&repo("models/efficientnet-lite0"));
    check_every_cut(&model, "efficientnet-lite0", 1);
}

/// The all-ops fixture with random biases and constants (its seed leaves them 0 and 1), so
/// every constant and bias is checked to travel.
fn all_ops() -> Arc<Model> {
    let mut model = Model::load(repo("tests/export/all-ops")).expect("loads");
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut fill = |v: &mut Vec<f32>, lo: f32, hi: f32| {
        v.iter_mut().for_each(|x| *x = rng.random_range(lo..hi));
    };
    for step in model.blocks.iter_mut().flat_map(|b| b.steps.iter_mut()) {
        match &mut step.op {
            Op::Conv2d(c) => fill(&mut c.bias, -0.5, 0.5),
            Op::Dense(d) => fill(&mut d.bias, -0.5, 0.5),
            Op::FanIn(f) => fill(&mut f.bias, -0.5, 0.5),
            // Divisors stay away from zero.
            Op::Binary(b) => {
                if let BinaryOperand::Const(v) = &mut b.operand {
                    fill(v, 0.5, 1.5);
                }
            }
            _ => {}
        }
    }
    Arc::new(model)
}

#[test]
fn every_native_op_exports_and_matches_the_native_model_at_every_cut() {
    let model = all_ops();
    let kinds: std::collections::BTreeSet<&str> = model
        .blocks
        .iter()
        .flat_map(|b| b.steps.iter().map(|s| s.op.kind_name()))
        .collect();
    for kind in [
        "conv2d",
        "depthwise",
        "dense",
        "fanin",
        "maxpool",
        "avgpool",
        "global_avgpool",
        "flatten",
        "activation",
        "add",
        "sub",
        "mul",
        "div",
        "concat",
        "transpose",
        "pad",
        "lrn",
        "softmax",
    ] {
        assert!(kinds.contains(kind), "the fixture lacks {kind}: {kinds:?}");
    }
    check_every_cut(&model, "all-ops", 2);
    // HardSwish needs opset 14; everything else is opset 13.
    let opset = |range: std::ops::Range<usize>| {
        let m = export::to_onnx(&model, range, Encoding::Fp32).expect("exports");
        m.opset_import[0].version
    };
    assert_eq!(opset(0..1), Some(13));
    assert_eq!(opset(1..2), Some(14));
}

#[test]
fn exported_files_declare_a_dynamic_batch_and_leave_exit_heads_out() {
    let model = load(&repo("models/mnist-lenet-ee"));
    let bytes = export::to_onnx_bytes(&model, 0..2, Encoding::Fp32).expect("exports");
    let m = ModelProto::decode(bytes.as_slice()).expect("decodes");
    let g = m.graph.expect("graph");
    assert_eq!(m.opset_import[0].version, Some(export::OPSET));
    let batch = |v: &ValueInfoProto| match &v.r#type.as_ref().unwrap().value {
        Some(type_proto::Value::TensorType(t)) => t.shape.as_ref().unwrap().dim[0].value.clone(),
        _ => None,
    };
    let symbolic = Some(
        edgecut::onnx::proto::tensor_shape_proto::dimension::Value::DimParam(
            export::BATCH_DIM.into(),
        ),
    );
    assert_eq!(batch(&g.input[0]), symbolic);
    assert_eq!(batch(&g.output[0]), symbolic);
    assert_eq!(g.output[0].name.as_deref(), Some("output"));
    // The exit after conv1 is not in the head (its dense layer would add a Gemm).
    assert!(!model.exits.is_empty());
    let imported = load(&{
        let dir = scratch("exits");
        export::write_split(&model, 0, Encoding::Fp32, &dir, false).expect("writes")[0]
            .path
            .clone()
    });
    assert!(imported.exits.is_empty());
}

#[test]
fn triton_repository_holds_the_full_model_and_a_tail_per_cut_candidate_and_encoding() {
    let model = load(&repo("models/mnist-lenet-ee"));
    let dir = scratch("triton");
    let written = export::write_triton_repo(&model, &dir, false).expect("writes");
    let candidates = model.cut_candidates();
    assert!(!candidates.is_empty());
    let mut names: Vec<String> = vec![model.name().into()];
    for &k in &candidates {
        for e in ["fp32", "fp16", "int8"] {
            names.push(format!("{}__cut{k}__{e}", model.name()));
        }
    }
    assert_eq!(
        written.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
        names
    );
    let mut folders: Vec<String> = std::fs::read_dir(&dir)
        .expect("lists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(folders, sorted);
    for m in &written {
        assert!(dir.join(&m.name).join("1/model.onnx").is_file());
        let config =
            std::fs::read_to_string(dir.join(&m.name).join("config.pbtxt")).expect("reads");
        for line in [
            format!("name: \"{}\"", m.name),
            "platform: \"onnxruntime_onnx\"".into(),
            format!("max_batch_size: {}", export::TRITON_MAX_BATCH_SIZE),
            "dynamic_batching { }".into(),
        ] {
            assert!(
                config.contains(&line),
                "{}: no '{line}' in\n{config}",
                m.name
            );
        }
    }
    let k = candidates[0];
    let int8 = std::fs::read_to_string(
        dir.join(export::tail_model_name(model.name(), k, Encoding::Int8))
            .join("config.pbtxt"),
    )
    .expect("reads");
    let dims: Vec<String> = model.blocks[k]
        .output_shape
        .iter()
        .map(usize::to_string)
        .collect();
    for part in [
        format!(
            "name: \"input\"\n    data_type: TYPE_UINT8\n    dims: [ {} ]",
            dims.join(", ")
        ),
        "name: \"scale\"\n    data_type: TYPE_FP32\n    dims: [ 1 ]".into(),
        "name: \"zero_point\"\n    data_type: TYPE_UINT8\n    dims: [ 1 ]".into(),
        format!(
            "name: \"output\"\n    data_type: TYPE_FP32\n    dims: [ {} ]",
            model.classes()
        ),
        format!("parameters {{ key: \"edgecut_cut_after\" value: {{ string_value: \"{k}\" }} }}"),
    ] {
        assert!(int8.contains(&part), "no '{part}' in\n{int8}");
    }
    // The full model in the repository is the model.
    let x = random(vec![2, 1, 28, 28], 9);
    assert_rel(
        "repository full model",
        &run(&load(&dir.join(model.name()).join("1/model.onnx")), &x),
        &run(&model, &x),
        EXPORT_TOLERANCE,
    );
    // A second export refuses the non-empty folder unless forced.
    let err = export::write_triton_repo(&model, &dir, false).unwrap_err();
    assert!(matches!(err, ExportError::NotEmpty { .. }), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    export::write_triton_repo(&model, &dir, true).expect("--force rewrites");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cuts_are_named_like_the_rest_of_the_cli_and_bad_ones_are_refused() {
    let model = load(&repo("models/mnist-lenet-ee"));
    let n = model.blocks.len();
    assert_eq!(export::parse_cut(&model, &model.blocks[1].name).unwrap(), 1);
    assert_eq!(export::parse_cut(&model, "0").unwrap(), 0);
    let last = export::parse_cut(&model, &model.blocks[n - 1].name).unwrap_err();
    assert!(
        last.to_string()
            .contains("the last block is the model output"),
        "{last}"
    );
    let unknown = export::parse_cut(&model, "nope").unwrap_err().to_string();
    assert!(
        unknown.contains("no block of that name or index"),
        "{unknown}"
    );
    assert!(
        unknown.contains(&format!("{} (0)", model.blocks[0].name)),
        "{unknown}"
    );
    let dir = scratch("bad-cut");
    let err = export::write_split(&model, n - 1, Encoding::Fp32, &dir, false).unwrap_err();
    assert!(matches!(err, ExportError::BadCut { .. }), "{err}");
    assert!(!dir.exists(), "nothing is written for a refused cut");
}

#[test]
fn export_command_writes_head_and_tail_and_refuses_a_non_empty_folder() {
    let dir = scratch("cli");
    let model = repo("models/mnist-lenet-ee");
    let export = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_edgecut"))
            .arg("export")
            .arg(&model)
            .args(["--cut", "conv2", "--encoding", "int8", "--out"])
            .arg(&dir)
            .args(extra)
            .output()
            .expect("runs edgecut")
    };
    let out = export(&["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["encoding"], "int8");
    assert_eq!(report["cut_block"], "conv2");
    assert_eq!(report["files"][1]["inputs"][0]["datatype"], "UINT8");
    assert!(dir.join("head.onnx").is_file() && dir.join("tail.onnx").is_file());
    let again = export(&[]);
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("is not empty") && err.contains("--force"),
        "{err}"
    );
    assert!(export(&["--force"]).status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Torchvision's preprocessing (1/255, ImageNet mean and std) in BGR order, for the all-ops
/// fixture (which has none of its own): a scale, distinct means and stds and a channel swap.
fn bgr_torchvision() -> edgecut::preprocess::Preprocess {
    serde_json::from_value(serde_json::json!({
        "scale": 1.0 / 255.0,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "channels": "bgr"
    }))
    .expect("valid preprocessing")
}

/// Checks the whole model taking 8-bit pixels: UINT8 `[N, 3, H, W]` input, `Cast`, `Mul`,
/// `Sub`, `Div` with the manifest's scale, mean and std, then the FP32 full model's nodes and
/// weights; and, read back by the importer (its input declared float, since edgecut takes
/// float inputs and the Cast then passes the values through) and fed the pixel values, the
/// native model's output on the preprocessed image.
fn check_pixel_model(model: &Arc<Model>, name: &str, batch: usize) {
    let p = model.manifest.preprocess.clone().expect("an image model");
    let shape = model.input_shape().to_vec();
    let m = export::pixels_to_onnx(model).expect("exports");
    let g = m.graph.clone().expect("graph");
    let g32 = export::to_onnx(model, 0..model.blocks.len(), Encoding::Fp32)
        .expect("exports")
        .graph
        .expect("graph");
    let dims: Vec<i64> = std::iter::once(-1)
        .chain(shape.iter().map(|&d| d as i64))
        .collect();
    assert_eq!(io_type(&g.input[0]), (DataType::Uint8 as i32, dims));
    let ops: Vec<_> = g.node[..4]
        .iter()
        .map(|n| n.op_type.clone().expect("op type"))
        .collect();
    assert_eq!(ops, ["Cast", "Mul", "Sub", "Div"], "{name}");
    let constant = |input: &str| -> Vec<f32> {
        let t = g
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some(input))
            .expect("an initialiser");
        bytemuck::pod_collect_to_vec(t.raw_data.as_deref().expect("raw data"))
    };
    assert_eq!(constant(&g.node[1].input[1]), [p.scale]);
    assert_eq!(constant(&g.node[2].input[1]), p.mean);
    assert_eq!(constant(&g.node[3].input[1]), p.std);
    let normalised = g.node[3].output[0].clone();
    let mut rest = g.node[4..].to_vec();
    for node in &mut rest {
        for i in &mut node.input {
            if *i == normalised {
                *i = "input".into();
            }
        }
    }
    assert_eq!(
        rest, g32.node,
        "{name}: the pixel model's nodes after the front"
    );

    // Read back and run on the pixels, against the native model on the preprocessed image.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let plane = shape[1] * shape[2];
    let n = batch * 3 * plane;
    let pixels: Vec<u8> = (0..n).map(|_| rng.random()).collect();
    let x: Vec<f32> = pixels
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / plane) % 3;
            (f32::from(v) * p.scale - p.mean[c]) / p.std[c]
        })
        .collect();
    let mut full_shape = vec![batch];
    full_shape.extend_from_slice(&shape);
    let x = Tensor::new(full_shape.clone(), x).expect("shape");
    let as_float =
        Tensor::new(full_shape, pixels.iter().map(|&v| f32::from(v)).collect()).expect("shape");
    let mut readable = m.clone();
    let graph = readable.graph.as_mut().expect("graph");
    if let Some(type_proto::Value::TensorType(t)) = graph.input[0]
        .r#type
        .as_mut()
        .and_then(|t| t.value.as_mut())
    {
        t.elem_type = Some(DataType::Float as i32);
    }
    let dir = scratch(&format!("{name}-pixels"));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join("model.onnx");
    std::fs::write(&path, readable.encode_to_vec()).expect("writes");
    assert_rel(
        &format!(
            "{name}: the pixel model on the pixels vs the native model on the preprocessed image"
        ),
        &run(&load(&path), &as_float),
        &run(model, &x),
        EXPORT_TOLERANCE,
    );
    // `write_full_pixels` writes the same file.
    let written = export::write_full_pixels(model, &dir.join("cli"), false).expect("writes");
    assert_eq!(written.inputs[0].datatype, "UINT8");
    assert_eq!(
        std::fs::read(&written.path).expect("reads"),
        m.encode_to_vec()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_pixel_model_of_efficientnet_lite0_on_pixels_equals_the_native_model_on_the_preprocessed_image(
) {
    let model = load(&repo("models/efficientnet-lite0"));
    check_pixel_model(&model, "efficientnet-lite0", 1);
}

#[test]
fn the_pixel_model_applies_scale_mean_std_and_channel_order_and_joins_the_triton_repository() {
    let mut model = all_ops();
    Arc::get_mut(&mut model)
        .expect("one owner")
        .manifest
        .preprocess = Some(bgr_torchvision());
    check_pixel_model(&model, "all-ops", 2);

    let dir = scratch("triton-pixels");
    let written = export::write_triton_repo(&model, &dir, false).expect("writes");
    let twin = export::pixel_model_name(model.name());
    assert_eq!(twin, "export-all-ops__full__uint8");
    assert_eq!(written[1].name, twin, "the twin follows the full model");
    assert_eq!(written[1].encoding, "uint8");
    assert_eq!(written[1].cut_after, None);
    let config = std::fs::read_to_string(dir.join(&twin).join("config.pbtxt")).expect("reads");
    for part in [
        format!("name: \"{twin}\""),
        "name: \"input\"\n    data_type: TYPE_UINT8\n    dims: [ 3, 9, 9 ]".into(),
        "parameters { key: \"edgecut_encoding\" value: { string_value: \"uint8\" } }".into(),
    ] {
        assert!(config.contains(&part), "no '{part}' in\n{config}");
    }
    assert_eq!(
        std::fs::read(dir.join(&twin).join("1/model.onnx")).expect("reads"),
        export::pixels_to_onnx(&model)
            .expect("exports")
            .encode_to_vec()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn models_without_preprocessing_have_no_pixel_model() {
    let model = load(&repo("models/mnist-lenet-ee"));
    let err = export::pixels_to_onnx(&model).unwrap_err().to_string();
    assert!(
        err.contains("needs an image model") && err.contains("absent"),
        "{err}"
    );
    let dir = scratch("no-pixels");
    assert!(export::write_full_pixels(&model, &dir, false).is_err());
    assert!(!dir.exists(), "nothing is written for a refused model");
    let written = export::write_triton_repo(&model, &dir, false).expect("writes");
    assert!(written.iter().all(|m| m.encoding != "uint8"));
    let _ = std::fs::remove_dir_all(&dir);
}
