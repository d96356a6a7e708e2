//! Fuzzing on the stable toolchain: seeded mutations of real inputs (the shipped models'
//! `model.json` and `weights.safetensors`, KServe requests as the device client builds them,
//! and ONNX files) through the parsers that read untrusted bytes. Each target runs a bounded
//! number of cases in `cargo test` (seconds); a panic or a case slower than [`SLOW_CASE`] fails
//! the test and saves the input under `target/fuzz-crashers/<target>/`; fixed crashers are kept
//! in `tests/fuzz/crashers/<target>/` and replayed first on every run.
//!
//! Longer runs: `EDGECUT_FUZZ_ITERS=200000 EDGECUT_FUZZ_SEED=7 cargo test --release --lib fuzz
//! -- --nocapture` (iterations per target; each target prints its count).

use crate::encoding::{decode_cpu, encode_cpu, Encoding};
use crate::model::{Manifest, Model};
use crate::split::kserve::{self, RawTensor};
use crate::split::server::request;
use crate::tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A case slower than this counts as a hang.
const SLOW_CASE: Duration = Duration::from_secs(3);

/// Cases per target in a plain `cargo test` run.
const DEFAULT_ITERS: usize = 1500;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn iterations() -> usize {
    std::env::var("EDGECUT_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERS)
}

fn seed() -> u64 {
    std::env::var("EDGECUT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Values that break size arithmetic, as decimal text.
const INTERESTING: [&str; 14] = [
    "0",
    "-1",
    "1",
    "2",
    "255",
    "65536",
    "2147483648",
    "4294967296",
    "18446744073709551615",
    "9223372036854775807",
    "1e308",
    "-0.0",
    "1000000000000",
    "3.5",
];

/// One to four random mutations of `input`, sometimes spliced with `other`.
fn mutate(rng: &mut ChaCha8Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = b.len();
        match rng.random_range(0..9) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] = rng.random();
            }
            2 => {
                let i = rng.random_range(0..=len);
                let n = rng.random_range(1..16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                b.splice(i..i, bytes);
            }
            3 if len > 1 => {
                let i = rng.random_range(0..len);
                let j = (i + rng.random_range(1..64)).min(len);
                b.drain(i..j);
            }
            4 if len > 1 => b.truncate(rng.random_range(0..len)),
            5 if len > 1 => {
                let i = rng.random_range(0..len);
                let j = (i + rng.random_range(1..32)).min(len);
                let chunk = b[i..j].to_vec();
                let at = rng.random_range(0..=len);
                b.splice(at..at, chunk);
            }
            6 | 7 => {
                // Replace a run of digits with an interesting number (sizes, counts, offsets).
                let digits: Vec<usize> = (0..len).filter(|&i| b[i].is_ascii_digit()).collect();
                if let Some(&start) = digits.get(rng.random_range(0..digits.len().max(1))) {
                    let mut end = start;
                    while end < len && b[end].is_ascii_digit() {
                        end += 1;
                    }
                    let v = INTERESTING[rng.random_range(0..INTERESTING.len())];
                    b.splice(start..end, v.bytes());
                }
            }
            _ if !other.is_empty() => {
                let cut = rng.random_range(0..=b.len());
                let from = rng.random_range(0..other.len());
                b.truncate(cut);
                b.extend_from_slice(&other[from..]);
            }
            _ => {}
        }
    }
    b
}

/// Runs `target` on the kept crashers, then on `iterations()` mutations of `corpus`; fails
/// listing every input that panicked or ran longer than [`SLOW_CASE`] (each saved to disk).
fn fuzz(name: &str, corpus: &[Vec<u8>], target: impl Fn(&[u8])) {
    assert!(!corpus.is_empty(), "{name}: empty corpus");
    let kept = root().join("tests/fuzz/crashers").join(name);
    let mut cases: Vec<(String, Vec<u8>)> = std::fs::read_dir(&kept)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            Some((
                e.path().display().to_string(),
                std::fs::read(e.path()).ok()?,
            ))
        })
        .collect();
    cases.sort();
    let mut rng = ChaCha8Rng::seed_from_u64(seed() ^ name.len() as u64);
    let n = iterations();
    let prev = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let mut failures: Vec<String> = Vec::new();
    let mut run = |label: &str, bytes: &[u8]| {
        let start = Instant::now();
        let result = panic::catch_unwind(AssertUnwindSafe(|| target(bytes)));
        let took = start.elapsed();
        let why = match result {
            Err(p) => Some(format!(
                "panicked: {}",
                p.downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| p.downcast_ref::<&str>().copied())
                    .unwrap_or("?")
            )),
            Ok(()) if took > SLOW_CASE => Some(format!("took {took:?}")),
            Ok(()) => None,
        };
        if let Some(why) = why {
            let dir: PathBuf = root().join("target/fuzz-crashers").join(name);
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{label}.bin"));
            let _ = std::fs::write(&file, bytes);
            failures.push(format!("{why} (input saved to {})", file.display()));
        }
    };
    for (path, bytes) in &cases {
        let label = Path::new(path)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("kept")
            .to_string();
        run(&label, bytes);
    }
    for i in 0..n {
        let a = &corpus[rng.random_range(0..corpus.len())];
        let b = &corpus[rng.random_range(0..corpus.len())];
        let input = mutate(&mut rng, a, b);
        run(&format!("case-{}-{i}", seed()), &input);
    }
    panic::set_hook(prev);
    println!(
        "fuzz {name}: {} kept + {n} mutated cases, seed {}",
        cases.len(),
        seed()
    );
    assert!(failures.is_empty(), "fuzz {name}:\n{}", failures.join("\n"));
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The shipped models that carry weights (small enough to parse thousands of times).
const TRAINED: [&str; 3] = ["mnist-fixture", "mnist-lenet-ee", "mnist-mlp-sparse-4x"];

#[test]
fn fuzz_model_json() {
    let corpus: Vec<Vec<u8>> = TRAINED
        .iter()
        .map(|m| read(&format!("models/{m}/model.json")))
        .collect();
    let weights: Vec<Vec<u8>> = TRAINED
        .iter()
        .map(|m| read(&format!("models/{m}/weights.safetensors")))
        .collect();
    fuzz("model_json", &corpus, |json| {
        if let Ok(manifest) = serde_json::from_slice::<Manifest>(json) {
            // With each model's weights: sizes in the file must be checked against the stored
            // tensors before anything is allocated from them.
            let w = &weights[json.len() % weights.len()];
            let _ = Model::from_parts(manifest, json, Some(w));
        }
    });
}

#[test]
fn fuzz_safetensors() {
    let json = read("models/mnist-lenet-ee/model.json");
    let manifest: Manifest = serde_json::from_slice(&json).expect("the shipped model parses");
    let corpus = vec![read("models/mnist-lenet-ee/weights.safetensors")];
    fuzz("safetensors", &corpus, |bytes| {
        let _ = Model::from_parts(manifest.clone(), &json, Some(bytes));
    });
}

/// Requests as the device client builds them: full-model and every cut of the fixture, in
/// each encoding, binary and JSON; the header length travels as the first 8 bytes.
fn request_corpus(model: &Model) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for cut in [None, Some(0), Some(1)] {
        let shape = match cut {
            None => model.input_shape().to_vec(),
            Some(k) => model.blocks[k].output_shape.clone(),
        };
        let mut full = vec![2];
        full.extend_from_slice(&shape);
        let n: usize = full.iter().product();
        let data: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let t = Tensor::new(full, data).expect("shape matches");
        for enc in [Encoding::Fp32, Encoding::Fp16, Encoding::Int8] {
            let e = encode_cpu(&t, enc);
            let mut params = Map::new();
            if let Some(k) = cut {
                params.insert("edgecut_cut_after".into(), json!(k));
            }
            params.insert("edgecut_model_hash".into(), json!(model.hash));
            params.insert("edgecut_encoding".into(), json!(enc.datatype()));
            if let Some(p) = e.int8 {
                params.insert("edgecut_scale".into(), json!(p.scale));
                params.insert("edgecut_zero_point".into(), json!(p.zero_point));
            }
            let mut header = Map::new();
            header.insert("parameters".into(), serde_json::Value::Object(params));
            let input = RawTensor {
                name: "input".into(),
                datatype: enc.datatype().into(),
                shape: e.shape.clone(),
                bytes: e.bytes.clone(),
                parameters: Map::new(),
            };
            for binary in [true, false] {
                let (body, json_len) = kserve::build(
                    header.clone(),
                    "inputs",
                    std::slice::from_ref(&input),
                    binary,
                );
                let mut case = (json_len.unwrap_or(usize::MAX) as u64)
                    .to_le_bytes()
                    .to_vec();
                case.extend_from_slice(&body);
                out.push(case);
            }
        }
    }
    out
}

#[test]
fn fuzz_kserve_request_and_wire_decoder() {
    let model = Model::load(root().join("models/mnist-fixture")).expect("fixture loads");
    let corpus = request_corpus(&model);
    fuzz("kserve_request", &corpus, |case| {
        if case.len() < 8 {
            return;
        }
        let (len, body) = case.split_at(8);
        let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
        let header_length = usize::try_from(len).ok().filter(|&l| l != usize::MAX);
        if let Ok(r) = request::parse(&model, body, header_length, 64) {
            // What the worker does next: decode the tensor on the wire.
            let _ = decode_cpu(&r.input);
        }
    });
}

#[test]
fn fuzz_onnx_reader() {
    let corpus: Vec<Vec<u8>> = [
        "mnist-8.onnx",
        "conv_silu_se.onnx",
        "concat_dilated_grouped.onnx",
        "pad_transpose_asymmetric.onnx",
        "pytorch_view_flatten.onnx",
        "gemm_mlp.onnx",
    ]
    .iter()
    .map(|f| read(&format!("tests/onnx/{f}")))
    .collect();
    fuzz("onnx", &corpus, |bytes| {
        if let Ok(imported) = crate::onnx::import_bytes(bytes, None, "fuzz") {
            let _ = imported.to_model();
        }
    });
}
