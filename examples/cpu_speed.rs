//! Wall time of whole models on the CPU backend and the throughput of their 1x1 convolutions
//! (the bulk of an EfficientNet's or MobileNet's work), at the CPU backend's thread count.
//!
//! Run: `cargo run --release --example cpu_speed -- [--threads N] <model-dir>:<batch>[,<batch>...] ...`
//! e.g. `cargo run --release --example cpu_speed -- models/efficientnet-b0:1,8 models/mnist-mlp-dense:64`
//! Prints per model and batch the median wall time of a whole-model run, and for image models
//! the median time and GMAC/s of all their 1x1 convolutions at that batch.

use edgecut::cpu::{self, fast};
use edgecut::engine::{Backend, Plan};
use edgecut::model::{Model, Op};
use edgecut::stats::median;
use edgecut::tensor::Tensor;
use std::sync::Arc;
use std::time::Instant;

/// Timed runs per measurement (the median is printed), after one untimed run.
const RUNS: usize = 7;

fn time(mut f: impl FnMut()) -> f64 {
    f();
    let times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    median(&times)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--threads") {
        let n: usize = args.get(i + 1).ok_or("--threads needs a count")?.parse()?;
        cpu::set_threads(n)?;
        args.drain(i..i + 2);
    }
    println!("cpu backend, {} threads", cpu::threads());
    for spec in &args {
        let (dir, batches) = spec
            .split_once(':')
            .ok_or("expected <model-dir>:<batches>")?;
        let model = Arc::new(Model::load(dir)?);
        for batch in batches.split(',') {
            let batch: usize = batch.parse()?;
            let mut shape = vec![batch];
            shape.extend_from_slice(model.input_shape());
            let x = Tensor::new(shape, vec![0.5; batch * model.input_elems()])?;
            let plan = Plan::compile(&model, 0..model.blocks.len(), &Backend::Cpu, batch)?;
            let whole = time(|| {
                std::hint::black_box(plan.run(&x).expect("plan runs"));
            });
            print!("{} batch {batch}: {:.2} ms", model.name(), whole * 1e3);
            let pointwise: Vec<_> = model
                .blocks
                .iter()
                .flat_map(|b| &b.steps)
                .filter_map(|s| match &s.op {
                    Op::Conv2d(c) if c.kernel_h == 1 && c.kernel_w == 1 && c.groups == 1 => {
                        Some((c, s.input_shape.clone(), s.output_shape.clone()))
                    }
                    _ => None,
                })
                .filter(|(_, i, _)| i[1] * i[2] > 1)
                .collect();
            if !pointwise.is_empty() {
                let inputs: Vec<Vec<f32>> = pointwise
                    .iter()
                    .map(|(_, i, _)| vec![0.5; batch * i.iter().product::<usize>()])
                    .collect();
                let macs: usize = pointwise
                    .iter()
                    .map(|(c, _, o)| batch * c.in_channels * o.iter().product::<usize>())
                    .sum();
                let t = time(|| {
                    cpu::threads::install(|| {
                        for ((c, i, _), x) in pointwise.iter().zip(&inputs) {
                            std::hint::black_box(fast::conv2d(c, x, batch, i[1], i[2]));
                        }
                    })
                });
                print!(
                    "; {} 1x1 convs: {:.2} ms, {:.1} GMAC/s",
                    pointwise.len(),
                    t * 1e3,
                    macs as f64 / t / 1e9
                );
            }
            println!();
        }
    }
    Ok(())
}
