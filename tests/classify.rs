//! `edgecut classify` on the shipped pretrained EfficientNet-Lite0 and real photos: the
//! preprocessing carried in its manifest, top-k against the labels file, both backends.

mod common;

use std::path::Path;
use std::process::Command;

fn classify(backend: &str) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let images = ["grace_hopper.jpg", "chelsea.png", "coffee.png"]
        .map(|f| root.join("models/data/images").join(f));
    let out = Command::new(env!("CARGO_BIN_EXE_edgecut"))
        .arg("classify")
        .arg(root.join("models/efficientnet-lite0"))
        .args(&images)
        .args(["--backend", backend, "--top", "5", "--json"])
        .output()
        .expect("edgecut runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn labels(v: &serde_json::Value, image: usize) -> Vec<String> {
    v["images"][image]["top"]
        .as_array()
        .expect("top list")
        .iter()
        .map(|r| r["label"].as_str().expect("label").to_string())
        .collect()
}

fn check(v: &serde_json::Value) {
    let hopper = labels(v, 0);
    assert!(
        hopper.iter().any(|l| l == "military uniform"),
        "Grace Hopper's top-5: {hopper:?}"
    );
    let cat = &labels(v, 1)[0];
    assert!(cat.contains("cat"), "chelsea's top-1: {cat}");
    assert!(
        labels(v, 2)[0].starts_with("espresso"),
        "{:?}",
        labels(v, 2)
    );
}

#[test]
fn lite0_classifies_real_photos_on_the_cpu() {
    check(&classify("cpu"));
}

#[test]
fn lite0_classifies_real_photos_on_the_gpu() {
    if common::gpu("lite0_classifies_real_photos_on_the_gpu").is_none() {
        return;
    }
    check(&classify("gpu"));
}

/// `edgecut wire --images`: the photos' crops split at every cut of Lite0; FP32 always agrees
/// with itself, every cut candidate is marked, and the lossy encodings report a real error.
#[test]
fn lite0_wire_on_photo_crops_reports_agreement_at_every_cut() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_edgecut"))
        .arg("wire")
        .arg(root.join("models/efficientnet-lite0"))
        .arg("--images")
        .arg(root.join("models/data/images"))
        .args(["--limit", "2", "--backend", "cpu", "--json"])
        .output()
        .expect("edgecut runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["samples"], 2);
    let rows = v["rows"].as_array().expect("rows");
    assert!(rows.len() >= 3 * 5, "{} rows", rows.len());
    assert!(rows.iter().any(|r| r["candidate"] == true));
    for r in rows {
        assert!(r["accuracy"].is_null(), "photos carry no labels: {r}");
        let agree = r["agreement_with_fp32"].as_f64().expect("agreement");
        let err = r["max_abs_error"].as_f64().expect("error");
        match r["encoding"].as_str().expect("encoding") {
            "FP32" => assert_eq!((agree, err), (1.0, 0.0), "{r}"),
            _ => assert!(err > 0.0 && (0.0..=1.0).contains(&agree), "{r}"),
        }
    }
}
