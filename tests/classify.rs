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
