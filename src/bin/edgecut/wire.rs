//! `edgecut wire`: the accuracy effect of each wire encoding at every cut of a model, with the
//! real codec (quant.wgsl on a GPU backend) between the head and tail plans.

use crate::{backend, load, BackendChoice};
use anyhow::{Context, Result};
use edgecut::data::{load_mnist, Split};
use edgecut::engine::Plan;
use edgecut::split::wire::{Codec, Encoding};
use serde_json::json;
use std::path::Path;

pub fn wire(
    path: &Path,
    data: &Path,
    choice: BackendChoice,
    limit: Option<usize>,
    as_json: bool,
) -> Result<()> {
    let model = load(path)?;
    let test = load_mnist(data, Split::Test)?;
    let n = limit.unwrap_or(test.len()).min(test.len());
    let backend = backend(choice)?;
    let codec = Codec::for_backend(&backend);
    let blocks = model.blocks.len();
    let batch = 250.min(n.max(1));
    let mut rows = Vec::new();
    for cut in 1..blocks {
        let head = Plan::compile(&model, 0..cut, &backend, batch)?;
        let tail = Plan::compile(&model, cut..blocks, &backend, batch)?;
        let mut correct = [0usize; 3];
        let mut agree = [0usize; 3];
        let mut max_err = [0f32; 3];
        for lo in (0..n).step_by(batch) {
            let hi = (lo + batch).min(n);
            let x = test
                .batch(lo..hi, model.input_shape())
                .context("MNIST samples do not fit the model input")?;
            let mid = head.run(&x)?.output;
            let mut reference = Vec::new();
            for (e, enc) in Encoding::ALL.iter().enumerate() {
                // One sample per encode, as the device client sends them.
                let mut decoded = Vec::with_capacity(mid.len());
                for i in 0..mid.batch() {
                    let mut shape = mid.shape().to_vec();
                    shape[0] = 1;
                    let one = edgecut::tensor::Tensor::new(shape, mid.sample(i).to_vec())?;
                    let back = codec.decode(&codec.encode(&one, *enc)?)?;
                    decoded.extend_from_slice(back.data());
                }
                for (a, b) in decoded.iter().zip(mid.data()) {
                    max_err[e] = max_err[e].max((a - b).abs());
                }
                let t = edgecut::tensor::Tensor::new(mid.shape().to_vec(), decoded)?;
                let classes: Vec<u32> = tail
                    .run(&t)?
                    .answers(1.0)
                    .iter()
                    .map(|a| a.class().unwrap_or(u32::MAX))
                    .collect();
                if e == 0 {
                    reference = classes.clone();
                }
                for (i, c) in classes.iter().enumerate() {
                    correct[e] += (*c == test.labels[lo + i] as u32) as usize;
                    agree[e] += (*c == reference[i]) as usize;
                }
            }
        }
        let elems: usize = model.shape_at(cut).iter().product();
        for (e, enc) in Encoding::ALL.iter().enumerate() {
            rows.push(json!({
                "cut": cut,
                "after_block": model.blocks[cut - 1].name,
                "encoding": enc.datatype(),
                "bytes_per_sample": elems * enc.bytes_per_value(),
                "accuracy": correct[e] as f64 / n.max(1) as f64,
                "accuracy_change": (correct[e] as f64 - correct[0] as f64) / n.max(1) as f64,
                "agreement_with_fp32": agree[e] as f64 / n.max(1) as f64,
                "max_abs_error": max_err[e],
            }));
        }
    }
    if as_json {
        println!(
            "{}",
            json!({
                "model": model.name(),
                "hash": model.hash,
                "samples": n,
                "backend": backend.name(),
                "adapter": backend.adapter(),
                "rows": rows,
            })
        );
    } else {
        if model.seeded {
            println!("note: '{}' has untrained seeded weights", model.name());
        }
        println!(
            "{}: wire encodings at every cut, {n} test samples, codec on {}",
            model.name(),
            backend.adapter()
        );
        println!(
            "{:>4} {:<10} {:<5} {:>10} {:>9} {:>9} {:>10} {:>10}",
            "cut", "after", "enc", "bytes/smp", "accuracy", "change", "agree fp32", "max |err|"
        );
        for r in &rows {
            println!(
                "{:>4} {:<10} {:<5} {:>10} {:>8.2}% {:>+8.2}% {:>9.2}% {:>10.3e}",
                r["cut"].as_u64().unwrap_or(0),
                r["after_block"].as_str().unwrap_or(""),
                r["encoding"].as_str().unwrap_or(""),
                r["bytes_per_sample"].as_u64().unwrap_or(0),
                r["accuracy"].as_f64().unwrap_or(0.0) * 100.0,
                r["accuracy_change"].as_f64().unwrap_or(0.0) * 100.0,
                r["agreement_with_fp32"].as_f64().unwrap_or(0.0) * 100.0,
                r["max_abs_error"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}
