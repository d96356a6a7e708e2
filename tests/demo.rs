//! `edgecut demo` on the pretrained EfficientNet-Lite0 and the shipped photos, bounded to a few
//! policies and one pass: every policy answers every photo with the photos' expected classes
//! (those `tests/classify.rs` checks), and the published device profile is picked up.

use std::path::Path;
use std::process::Command;

#[test]
fn the_photo_demo_labels_every_photo_under_every_policy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let policies = "device,server,static:block5_project_conv:int8,dynamic";
    let out = Command::new(env!("CARGO_BIN_EXE_edgecut"))
        .args(["demo", "--repeat", "1", "--policies", policies, "--json"])
        .current_dir(root)
        .output()
        .expect("edgecut runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let photos: Vec<&str> = v["photos"]
        .as_array()
        .expect("photos")
        .iter()
        .map(|p| p.as_str().expect("name"))
        .collect();
    assert!(photos.len() >= 3, "{photos:?}");
    let runs = v["policies"].as_array().expect("policies");
    assert_eq!(runs.len(), 4, "{v}");
    for run in runs {
        let name = run["policy"].as_str().expect("policy");
        assert_eq!(run["samples"].as_u64(), Some(photos.len() as u64), "{name}");
        assert_eq!(run["fallbacks"].as_u64(), Some(0), "{name}: {run}");
        let top1 = run["top1"].as_array().expect("top1");
        for (photo, label) in photos.iter().zip(top1) {
            let label = label.as_str().expect("label");
            match *photo {
                "chelsea.png" => assert!(label.contains("cat"), "{name}: chelsea is {label}"),
                "coffee.png" => assert!(label.starts_with("espresso"), "{name}: coffee is {label}"),
                "rocket.jpg" => assert!(
                    label.contains("missile") || label.contains("projectile"),
                    "{name}: rocket is {label}"
                ),
                _ => assert!(!label.is_empty()),
            }
        }
    }
    // The emulated device comes from the published profiles when they are beside the clone.
    if root.join("../shared/data/profiles/published.csv").exists() {
        let device = &v["device"];
        assert!(
            device["profile"].as_str().unwrap_or("").contains("Pixel 4"),
            "{device}"
        );
        assert!((device["whole_ms"].as_f64().unwrap_or(0.0) - 9.0).abs() < 1e-6);
    }
}
