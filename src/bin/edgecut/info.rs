//! `edgecut info`: blocks, shapes, complexity, natural bottlenecks and cut candidates.

use crate::load;
use anyhow::Result;
use serde_json::json;
use std::path::Path;

pub fn info(path: &Path, as_json: bool) -> Result<()> {
    let model = load(path)?;
    let totals = model.totals();
    let candidates = model.cut_candidates();
    let input = model.input_elems();
    let blocks: Vec<_> = model
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            json!({
                "name": b.name,
                "output_shape": b.output_shape,
                "output_elems": b.output_elems(),
                "output_ratio": b.output_elems() as f64 / input as f64,
                "bytes": b.output_elems() * 4,
                "macs": b.stats.macs,
                "params": b.stats.params,
                "nonzero_weights": b.stats.nonzero_weights,
                "natural_bottleneck": model.is_natural_bottleneck(i),
                "cut_candidate": candidates.contains(&i),
            })
        })
        .collect();
    let exits: Vec<_> = model
        .exits
        .iter()
        .map(|e| json!({"name": e.name, "after_block": model.blocks[e.after_block].name, "macs": e.stats.macs, "params": e.stats.params}))
        .collect();
    if as_json {
        let out = json!({
            "name": model.name(),
            "hash": model.hash,
            "seeded": model.seeded,
            "input": model.input_shape(),
            "classes": model.classes(),
            "params": totals.params,
            "nonzero_weights": totals.nonzero_weights,
            "macs": totals.macs,
            "blocks": blocks,
            "exits": exits,
            "cut_candidates": candidates.iter().map(|&i| &model.blocks[i].name).collect::<Vec<_>>(),
        });
        println!("{out}");
        return Ok(());
    }
    println!("{}  (hash {})", model.name(), &model.hash[..16]);
    if model.seeded {
        println!("weights: drawn from the manifest's seed (untrained)");
    }
    println!(
        "input {:?} ({} elements), {} classes; {} params, {} nonzero weights, {:.3} G MACs",
        model.input_shape(),
        input,
        model.classes(),
        totals.params,
        totals.nonzero_weights,
        totals.macs as f64 / 1e9
    );
    println!(
        "{:<12} {:>16} {:>10} {:>7} {:>12} {:>10} {:>10}  cut",
        "block", "output", "elements", "ratio", "MACs", "params", "nonzero"
    );
    for (i, b) in model.blocks.iter().enumerate() {
        let mark = if candidates.contains(&i) {
            "candidate"
        } else if model.is_natural_bottleneck(i) {
            "bottleneck"
        } else {
            ""
        };
        println!(
            "{:<12} {:>16} {:>10} {:>7.4} {:>12} {:>10} {:>10}  {mark}",
            b.name,
            format!("{:?}", b.output_shape),
            b.output_elems(),
            b.output_elems() as f64 / input as f64,
            b.stats.macs,
            b.stats.params,
            b.stats.nonzero_weights
        );
    }
    for e in &model.exits {
        println!(
            "exit '{}' after {} ({} MACs)",
            e.name, model.blocks[e.after_block].name, e.stats.macs
        );
    }
    Ok(())
}
