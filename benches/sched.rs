//! Decision time of the scheduler: `Dynamic::choose` over a table of 20 cut candidates (x 3 split
#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! encodings, plus device-only and server-only), and the efficientnet-b0 table.
//!
//! Run: `cargo bench --bench sched` (target: <= 5 us per decision for 20 candidates).

use criterion::{criterion_group, criterion_main, Criterion};
use edgecut::model::manifest::Manifest;
use edgecut::model::Model;
use edgecut::sched::cost::{CostTable, ExitProbabilities};
use edgecut::sched::policy::Dynamic;
use edgecut::sched::Estimates;
use std::hint::black_box;

/// A chain of 21 dense blocks whose widths shrink, so that 20 are cut candidates.
fn twenty_candidate_model() -> Model {
    let mut blocks = Vec::new();
    for i in 0..21 {
        let width = 1000 - 40 * i;
        blocks.push(format!(
            r#"{{"name": "b{i}", "ops": [{{"op": "dense", "name": "fc", "outputs": {width}}}, {{"op": "relu"}}]}}"#
        ));
    }
    let json = format!(
        r#"{{"format": 1, "name": "chain", "input": [1024], "classes": 200, "init": {{"seed": 1}},
        "blocks": [{}]}}"#,
        blocks.join(",")
    );
    let manifest: Manifest = serde_json::from_str(&json).expect("manifest parses");
    Model::from_parts(manifest, json.as_bytes(), None).expect("seeded chain model builds")
}

fn bench(c: &mut Criterion) {
    let m = twenty_candidate_model();
    let n = m.blocks.len();
    assert_eq!(m.cut_candidates().len(), 20);
    let t = CostTable::from_times(
        &m,
        (0..n).map(|i| 1e-3 * (1.0 + i as f64)).collect(),
        (0..n).map(|i| 1e-4 * (1.0 + i as f64)).collect(),
        &ExitProbabilities::none(&m),
    )
    .expect("table");
    assert_eq!(t.options.len(), 62);
    let d = Dynamic::new(&t);
    let rates: Vec<Estimates> = (1..=64)
        .map(|r| Estimates::from_mb_ms(r as f64 * 0.5, 20.0, 1.0))
        .collect();
    let mut i = 0;
    c.bench_function("cpu_dynamic_choose_20_candidates", |b| {
        b.iter(|| {
            i = (i + 1) % rates.len();
            black_box(d.choose(black_box(&rates[i])))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
