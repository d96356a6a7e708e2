//! Bad ONNX input: every malformed, hostile or unsupported file gets a clear error naming the
//! node or tensor (exit code 1 from the CLI), never a panic, and nothing is allocated from a
//! declared size before it is checked.

#[path = "common/onnx.rs"]
mod onnx_builder;

use edgecut::onnx::proto::{tensor_proto::DataLocation, StringStringEntryProto, TensorProto};
use edgecut::onnx::{import, import_bytes, OnnxError};
use onnx_builder::{ints, values, Graph};
use std::path::PathBuf;

fn err(bytes: &[u8]) -> String {
    match import_bytes(bytes, None, "bad") {
        Ok(_) => panic!("imported"),
        Err(e) => e.to_string(),
    }
}

/// A valid model: Conv, Relu, GlobalAveragePool, Flatten.
fn valid() -> Graph {
    let mut g = Graph::new(&[-1, 2, 4, 4]);
    g.init("w", &[3, 2, 3, 3], values(54, 1));
    g.node(
        "Conv",
        &["x", "w"],
        &["c"],
        vec![ints("pads", &[1, 1, 1, 1])],
    );
    g.node("Relu", &["c"], &["r"], vec![]);
    g.node("GlobalAveragePool", &["r"], &["p"], vec![]);
    g.node("Flatten", &["p"], &["y"], vec![]);
    g
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgecut-onnx-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn truncated_and_non_onnx_files_are_refused() {
    assert!(import_bytes(&valid().bytes("y"), None, "ok").is_ok());
    let bytes = valid().bytes("y");
    for cut in [1, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        let e = err(&bytes[..cut]);
        assert!(
            e.contains("not an ONNX model") || e.contains("malformed") || e.contains("opset"),
            "{cut}: {e}"
        );
    }
    assert!(err(b"").contains("empty"));
    assert!(err(b"PK\x03\x04 this is a zip, not onnx").contains("not an ONNX model"));
    assert!(err(b"{\"format\": 1}").contains("not an ONNX model"));
}

#[test]
fn wrong_protobuf_wire_types_are_refused() {
    // Field 7 (graph) must be length-delimited; here it is a varint.
    assert!(err(&[0x38, 0x01]).contains("not an ONNX model"));
    // Field 1 (ir_version) as a length-delimited field claiming more bytes than exist.
    assert!(err(&[0x0a, 0xff, 0xff, 0xff, 0x0f, 0x00]).contains("not an ONNX model"));
}

#[test]
fn cycles_and_dangling_names_are_refused_naming_the_node() {
    let mut g = Graph::new(&[-1, 2]);
    g.node("Relu", &["x", "b"], &["a"], vec![]);
    g.node("Relu", &["a"], &["b"], vec![]);
    let e = err(&g.bytes("b"));
    assert!(e.contains("cycle") && e.contains("Relu_a"), "{e}");

    let mut g = Graph::new(&[-1, 2]);
    g.node("Relu", &["nowhere"], &["y"], vec![]);
    let e = err(&g.bytes("y"));
    assert!(e.contains("'Relu_y'") && e.contains("'nowhere'"), "{e}");

    let e = err(&valid().bytes("missing_output"));
    assert!(e.contains("missing_output"), "{e}");
}

#[test]
fn initialisers_whose_dims_disagree_with_their_data_are_refused_naming_the_tensor() {
    let mut g = valid();
    g.graph.initializer[0].float_data.pop();
    let e = err(&g.bytes("y"));
    assert!(
        e.contains("tensor 'w'") && e.contains("need 54 values"),
        "{e}"
    );

    let mut g = valid();
    let t = &mut g.graph.initializer[0];
    t.raw_data = Some(vec![0u8; 7]);
    t.float_data.clear();
    let e = err(&g.bytes("y"));
    assert!(e.contains("tensor 'w'"), "{e}");

    // Huge declared dims with no data: refused before any allocation.
    let mut g = valid();
    g.graph.initializer[0].dims = vec![1 << 31, 1 << 31, 3, 3];
    let e = err(&g.bytes("y"));
    assert!(e.contains("tensor 'w'") && e.contains("more than"), "{e}");
    let mut g = valid();
    g.graph.initializer[0].dims = vec![-3, 2, 3, 3];
    assert!(err(&g.bytes("y")).contains("negative"));
}

#[test]
fn zero_huge_and_symbolic_input_dims_are_refused_naming_the_input() {
    for (dims, want) in [
        (vec![-1, 0, 4, 4], "positive"),
        (vec![-1, 1 << 20, 1 << 20, 4], "more than"),
        (vec![-1, i64::MAX, i64::MAX, 4], "more than"),
    ] {
        let mut g = valid();
        g.graph.input = Graph::new(&dims).graph.input;
        let e = err(&g.bytes("y"));
        assert!(
            e.contains("tensor 'x'") && e.contains(want),
            "{dims:?}: {e}"
        );
    }
    // A weight with a zero dimension is named with its node.
    let mut g = valid();
    g.graph.initializer[0].dims = vec![0, 2, 3, 3];
    g.graph.initializer[0].float_data.clear();
    let e = err(&g.bytes("y"));
    assert!(e.contains("Conv_c"), "{e}");
}

#[test]
fn opsets_outside_7_to_21_are_refused() {
    for v in [6, 22] {
        let mut g = valid();
        g.opset = v;
        let e = err(&g.bytes("y"));
        assert!(
            e.contains(&format!("opset {v}")) && e.contains("7..=21"),
            "{e}"
        );
    }
    let mut m = valid().model("y");
    m.opset_import.clear();
    use prost::Message;
    assert!(err(&m.encode_to_vec()).contains("imports no default-domain"));
}

#[test]
fn every_unsupported_node_is_listed_in_one_error() {
    let mut g = valid();
    g.node("Erf", &["y"], &["e"], vec![]);
    g.node("Relu", &["e"], &["z"], vec![]);
    g.graph.node[0].attribute.push(ints("bogus", &[1]));
    g.node("NonMaxSuppression", &["z"], &["q"], vec![]);
    let e = import_bytes(&g.bytes("q"), None, "bad").unwrap_err();
    let OnnxError::Unsupported(list) = &e else {
        panic!("{e}")
    };
    let names: Vec<&str> = list.iter().map(|u| u.node.as_str()).collect();
    assert_eq!(names, ["Conv_c", "Erf_e", "NonMaxSuppression_q"], "{e}");
    let text = e.to_string();
    assert!(
        text.contains("'bogus'") && text.contains("opset 13") && text.contains("Erf"),
        "{text}"
    );
}

fn external(location: &str) -> Graph {
    let mut g = valid();
    let t: &mut TensorProto = &mut g.graph.initializer[0];
    t.float_data.clear();
    t.data_location = Some(DataLocation::External as i32);
    t.external_data = vec![StringStringEntryProto {
        key: Some("location".into()),
        value: Some(location.into()),
    }];
    g
}

#[test]
fn external_data_is_read_beside_the_model_and_never_outside_its_folder() {
    let dir = temp_dir("external");
    let data: Vec<u8> = values(54, 1).iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("w.bin"), &data).expect("write");
    let model = dir.join("model.onnx");
    std::fs::write(&model, external("w.bin").bytes("y")).expect("write");
    import(&model).expect("external data beside the model is read");

    let outside = temp_dir("external-outside");
    std::fs::write(outside.join("w.bin"), &data).expect("write");
    let abs = outside.join("w.bin").to_string_lossy().into_owned();
    for location in ["../w.bin", "sub/../../w.bin", abs.as_str()] {
        std::fs::write(&model, external(location).bytes("y")).expect("write");
        let e = import(&model).unwrap_err().to_string();
        assert!(
            e.contains("tensor 'w'") && e.contains("inside the model's folder"),
            "{location}: {e}"
        );
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(outside.join("w.bin"), dir.join("link.bin")).expect("symlink");
        std::fs::write(&model, external("link.bin").bytes("y")).expect("write");
        let e = import(&model).unwrap_err().to_string();
        assert!(e.contains("outside the model's folder"), "{e}");
    }
    // Declared data longer than the file.
    std::fs::write(dir.join("short.bin"), &data[..100]).expect("write");
    std::fs::write(&model, external("short.bin").bytes("y")).expect("write");
    let e = import(&model).unwrap_err().to_string();
    assert!(e.contains("too few"), "{e}");
    // From bytes there is no folder to read from.
    let e = err(&external("w.bin").bytes("y"));
    assert!(e.contains("external file"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&outside);
}

#[test]
fn the_cli_exits_with_code_1_and_a_message_on_bad_onnx_files() {
    let dir = temp_dir("cli");
    let bad = dir.join("bad.onnx");
    std::fs::write(&bad, &valid().bytes("y")[..40]).expect("write");
    let cycle = dir.join("cycle.onnx");
    let mut g = Graph::new(&[-1, 2]);
    g.node("Relu", &["x", "b"], &["a"], vec![]);
    g.node("Relu", &["a"], &["b"], vec![]);
    std::fs::write(&cycle, g.bytes("b")).expect("write");
    let exe = env!("CARGO_BIN_EXE_edgecut");
    for (args, want) in [
        (
            vec!["info", bad.to_str().unwrap_or("")],
            "not an ONNX model",
        ),
        (vec!["info", cycle.to_str().unwrap_or("")], "cycle"),
        (
            vec![
                "import",
                bad.to_str().unwrap_or(""),
                "--out",
                dir.join("o").to_str().unwrap_or(""),
            ],
            "not an ONNX model",
        ),
    ] {
        let out = std::process::Command::new(exe)
            .args(&args)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(want) && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
