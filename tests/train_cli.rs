//! `edgecut train` and `edgecut eval` from the command line: bad input fails cleanly with nothing
//! left at `--out`, and every shipped trained model evaluates to the accuracy its README states.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use edgecut::model::Op;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn edgecut(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgecut"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the edgecut binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgecut-train-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const GOOD_BLOCKS: &str = r#"[{"name": "fc1", "ops": [{"op": "fanin", "outputs": 40, "out_degree": 2}, {"op": "relu"}]},
                            {"name": "fc2", "ops": [{"op": "dense", "outputs": 10}]}]"#;

fn spec_text(blocks: &str, exits: &str) -> String {
    format!(
        r#"{{"name": "bad", "input": [800], "classes": 10, "blocks": {blocks}, "exits": {exits},
            "optimizer": {{"type": "adam"}}, "lr": 0.01, "batch_size": 32, "epochs": 1, "seed": 1}}"#
    )
}

/// Writes `spec` into `dir` and runs `edgecut train <spec> --out <dir>/model <args>`; returns
/// the output and the model path.
fn train_in(dir: &Path, spec: &str, args: &[&str]) -> (std::process::Output, PathBuf) {
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, spec).unwrap();
    let out = dir.join("model");
    let mut all = vec![
        "train",
        spec_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    (edgecut(&all), out)
}

/// Runs `edgecut train` on `spec` and asserts a non-zero exit, `want` in stderr, no model left.
fn assert_train_fails(name: &str, spec: &str, data: Option<&Path>, want: &str) {
    let dir = scratch(name);
    let data = data
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root().join("models/data/mnist"));
    let (o, out) = train_in(
        &dir,
        spec,
        &["--data", data.to_str().unwrap(), "--max-steps", "2"],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{name}: should fail");
    assert!(
        stderr.contains(want),
        "{name}: stderr lacks {want:?}: {stderr}"
    );
    assert!(!out.exists(), "{name}: left something at --out");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{name}: temporary folder left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn train_rejects_an_unknown_layer() {
    let blocks = GOOD_BLOCKS.replace("\"dense\"", "\"densest\"");
    assert_train_fails(
        "unknown",
        &spec_text(&blocks, "[]"),
        None,
        "unknown variant `densest`",
    );
}

#[test]
fn train_rejects_shapes_that_do_not_chain() {
    let blocks = r#"[{"name": "fc1", "ops": [{"op": "maxpool", "kernel": 2}]},
                     {"name": "fc2", "ops": [{"op": "dense", "outputs": 10}]}]"#;
    assert_train_fails(
        "chain",
        &spec_text(blocks, "[]"),
        None,
        "needs a [channels, height, width] input, got [800]",
    );
}

#[test]
fn train_rejects_an_impossible_degree_listing_the_valid_ones() {
    let blocks = GOOD_BLOCKS.replace("\"outputs\": 40", "\"outputs\": 30");
    assert_train_fails(
        "degree",
        &spec_text(&blocks, "[]"),
        None,
        "out-degree 2 is impossible for 800 → 30: inputs·out_degree must be a multiple of outputs; valid out-degrees: [3, 6, 9",
    );
}

#[test]
fn train_rejects_an_impossible_group_listing_the_valid_ones() {
    let blocks = GOOD_BLOCKS.replace("\"out_degree\": 2}", "\"out_degree\": 2, \"group\": 4}");
    assert_train_fails(
        "group",
        &spec_text(&blocks, "[]"),
        None,
        "group 4 is impossible with 40 outputs and out-degree 2: the group must divide both; valid groups: [1, 2]",
    );
}

#[test]
fn a_grouped_spec_trains_a_model_whose_rows_are_shared_in_groups() {
    let dir = scratch("grouped");
    let blocks = GOOD_BLOCKS.replace("\"out_degree\": 2}", "\"out_degree\": 2, \"group\": 2}");
    let (o, out) = train_in(&dir, &spec_text(&blocks, "[]"), &["--max-steps", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = edgecut::model::Model::load(&out).unwrap();
    let Op::FanIn(f) = &model.blocks[0].steps[0].op else {
        panic!("fc1 starts with its fan-in op");
    };
    assert_eq!((f.k, f.row_group(8)), (40, 2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn train_rejects_an_exit_after_a_nonexistent_block() {
    let exits = r#"[{"after_block": "fc9", "ops": [{"op": "dense", "outputs": 10}]}]"#;
    assert_train_fails(
        "exit",
        &spec_text(GOOD_BLOCKS, exits),
        None,
        "'fc9', which does not exist",
    );
}

#[test]
fn train_rejects_missing_data() {
    let empty = scratch("nodata");
    assert_train_fails(
        "missing",
        &spec_text(GOOD_BLOCKS, "[]"),
        Some(&empty),
        "holds neither train-images-idx3-ubyte",
    );
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn train_rejects_corrupt_idx_files() {
    let src = root().join("models/data/mnist");
    for (case, mutate) in [("magic", 0usize), ("truncated", 1usize)] {
        let data = scratch(&format!("idx-{case}"));
        for f in std::fs::read_dir(&src).unwrap().filter_map(|e| e.ok()) {
            if f.file_name().to_string_lossy().ends_with(".gz") {
                std::fs::copy(f.path(), data.join(f.file_name())).unwrap();
            }
        }
        // Replace the training images with a plain (uncompressed) corrupt file.
        let gz = std::fs::read(data.join("train-images-idx3-ubyte.gz")).unwrap();
        let mut raw = Vec::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        std::fs::remove_file(data.join("train-images-idx3-ubyte.gz")).unwrap();
        if mutate == 0 {
            raw[3] = 0x09;
        } else {
            raw.truncate(raw.len() / 2);
        }
        std::fs::write(data.join("train-images-idx3-ubyte"), &raw).unwrap();
        assert_train_fails(
            &format!("corrupt-{case}"),
            &spec_text(GOOD_BLOCKS, "[]"),
            Some(&data),
            "train-images-idx3-ubyte",
        );
        let _ = std::fs::remove_dir_all(&data);
    }
}

#[test]
fn a_two_step_cli_training_run_writes_a_loadable_model_with_provenance() {
    let dir = scratch("ok");
    let (o, out) = train_in(
        &dir,
        &spec_text(GOOD_BLOCKS, "[]"),
        &["--backend", "cpu", "--max-steps", "2", "--json"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(summary["steps"], 2);
    let model = edgecut::model::Model::load(&out).unwrap();
    let prov = model.manifest.provenance.unwrap();
    assert_eq!(prov["test_accuracy"], summary["test_accuracy"]);
    assert!(prov["command"].as_str().unwrap().contains("--max-steps 2"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shipped trained models and where their README states the accuracy.
const SHIPPED: [&str; 5] = [
    "mnist-mlp-dense-small",
    "mnist-mlp-sparse",
    "mnist-mlp-dense",
    "mnist-mlp-sparse-4x",
    "mnist-lenet-ee",
];

#[test]
fn eval_on_every_shipped_model_prints_the_accuracy_its_readme_states() {
    for name in SHIPPED {
        let dir = root().join("models").join(name);
        let o = edgecut(&["eval", dir.to_str().unwrap(), "--backend", "cpu", "--json"]);
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let acc = v["accuracy"].as_f64().unwrap();
        let stated = format!("{:.2}%", acc * 100.0);
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(
            readme.contains(&format!("test accuracy: {stated}")),
            "{name}: eval says {stated}, README says otherwise"
        );
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("model.json")).unwrap()).unwrap();
        assert_eq!(
            manifest["provenance"]["test_accuracy"].as_f64(),
            Some(acc),
            "{name}"
        );
    }
}
