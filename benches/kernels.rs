//! Kernel benchmarks: dense vs fixed-fan-in at densities 100/25/10/5 % (800→512 and
//! 4096→4096, batch 1 and 64), dense 512³ (for the sgemm comparison), conv2d 3x3 on
//! 32x32x32 and depthwise 3x3 on 112x112x32. Every kernel is checked against the CPU
//! reference before it is timed. Throughput is reported in FLOP (2 per multiply-add).
//!
//! Run: `WGPU_BACKEND=vulkan cargo bench --bench kernels` (lavapipe on a machine without a GPU).

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use edgecut::cpu;
use edgecut::gpu::kernels::PreparedStep;
use edgecut::gpu::GpuContext;
use edgecut::model::{Activation, Conv2d, Dense, FanIn, Op, Step};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// Rows of `k` distinct random inputs (sorted, as stored patterns are).
fn random_rows(inputs: usize, outputs: usize, k: usize, seed: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(outputs * k);
    for _ in 0..outputs {
        let mut row = rand::seq::index::sample(&mut rng, inputs, k)
            .into_iter()
            .map(|i| i as u32)
            .collect::<Vec<_>>();
        row.sort_unstable();
        out.extend(row);
    }
    out
}

fn step(op: Op, input: Vec<usize>, output: Vec<usize>) -> Step {
    Step {
        label: format!("bench.{}", op.kind_name()),
        op,
        input_shape: input,
        output_shape: output,
        save_as: None,
    }
}

fn check(name: &str, got: &[f32], want: &[f32]) {
    let bad = got
        .iter()
        .zip(want)
        .position(|(g, w)| (g - w).abs() > 1e-3 + 1e-3 * w.abs());
    assert!(
        bad.is_none(),
        "{name}: GPU result differs from the CPU reference at {bad:?}"
    );
}

/// Prepares a step, checks it against `reference`, and benchmarks it (8 dispatches per
/// submission, one wait per iteration).
#[allow(clippy::too_many_arguments)] // one benchmark case, spelled out at each call
fn bench_step(
    c: &mut Criterion,
    ctx: &GpuContext,
    group: &str,
    id: String,
    s: Step,
    batch: usize,
    x: &[f32],
    reference: Vec<f32>,
    flops: u64,
) {
    const DISPATCHES: usize = 8;
    let prepared = PreparedStep::new(ctx, &s, batch, x, None)
        .expect("kernel prepares")
        .expect("op has a kernel");
    check(&id, &prepared.run(ctx).expect("kernel runs"), &reference);
    let mut g = c.benchmark_group(group);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(flops * DISPATCHES as u64));
    g.bench_function(BenchmarkId::from_parameter(id), |b| {
        b.iter(|| prepared.dispatch(ctx, DISPATCHES).expect("dispatch"))
    });
    g.finish();
}

fn dense_vs_fanin(c: &mut Criterion, ctx: &GpuContext) {
    for &(inputs, outputs) in &[(800usize, 512usize), (4096, 4096)] {
        for &batch in &[1usize, 64] {
            let x = random(batch * inputs, 1);
            let dense = Dense {
                inputs,
                outputs,
                weight: random(inputs * outputs, 2),
                bias: random(outputs, 3),
                activation: Activation::Relu,
            };
            let reference = cpu::dense(&dense, &x, batch);
            bench_step(
                c,
                ctx,
                "gpu_dense",
                format!("{inputs}x{outputs}_b{batch}"),
                step(Op::Dense(dense), vec![inputs], vec![outputs]),
                batch,
                &x,
                reference,
                2 * (batch * inputs * outputs) as u64,
            );
            for &density in &[1.0f64, 0.25, 0.10, 0.05] {
                // k rounded to a multiple of 4 so the vec4 path runs, as in shipped models.
                let k = (((inputs as f64 * density) / 4.0).round() as usize * 4).max(4);
                let f = FanIn {
                    inputs,
                    outputs,
                    k,
                    indices: random_rows(inputs, outputs, k, 4),
                    weights: random(outputs * k, 5),
                    bias: random(outputs, 6),
                    activation: Activation::Relu,
                };
                let reference = cpu::fanin(&f, &x, batch);
                bench_step(
                    c,
                    ctx,
                    "gpu_fanin",
                    format!(
                        "{inputs}x{outputs}_d{:03}_b{batch}",
                        (density * 100.0).round() as u32
                    ),
                    step(Op::FanIn(f), vec![inputs], vec![outputs]),
                    batch,
                    &x,
                    reference,
                    2 * (batch * outputs * k) as u64,
                );
            }
        }
    }
    // 512³ for the comparison with OpenBLAS sgemm (benches/sgemm.py).
    let x = random(512 * 512, 7);
    let dense = Dense {
        inputs: 512,
        outputs: 512,
        weight: random(512 * 512, 8),
        bias: vec![0.0; 512],
        activation: Activation::None,
    };
    let reference = cpu::dense(&dense, &x, 512);
    bench_step(
        c,
        ctx,
        "gpu_dense",
        "512x512_b512".into(),
        step(Op::Dense(dense), vec![512], vec![512]),
        512,
        &x,
        reference,
        2 * 512 * 512 * 512,
    );
}

fn convolutions(c: &mut Criterion, ctx: &GpuContext) {
    let cases = [
        ("conv2d", "3x3_32x32x32", 32usize, 32usize, 32usize, 1usize),
        ("depthwise", "3x3_112x112x32", 32, 112, 32, 32),
    ];
    for (name, id, ch, hw, out, groups) in cases {
        let batch = 1;
        let conv = Conv2d {
            in_channels: ch,
            out_channels: out,
            kernel_h: 3,
            kernel_w: 3,
            stride: 1,
            padding: 1,
            groups,
            weight: random(out * ch / groups * 9, 9),
            bias: random(out, 10),
            activation: Activation::Relu6,
        };
        let x = random(batch * ch * hw * hw, 11);
        let reference = cpu::conv2d(&conv, &x, batch, hw, hw);
        let macs = out * hw * hw * ch / groups * 9;
        bench_step(
            c,
            ctx,
            &format!("gpu_{name}"),
            id.into(),
            step(Op::Conv2d(conv), vec![ch, hw, hw], vec![out, hw, hw]),
            batch,
            &x,
            reference,
            2 * macs as u64,
        );
    }
}

fn kernels(c: &mut Criterion) {
    let ctx = match GpuContext::new() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("SKIPPED kernel benchmarks: no GPU adapter ({e})");
            return;
        }
    };
    eprintln!("adapter: {}", ctx.summary());
    dense_vs_fanin(c, &ctx);
    convolutions(c, &ctx);
}

mod group {
    #![allow(missing_docs)] // criterion_group! generates an undocumented function
    criterion::criterion_group!(benches, super::kernels);
}
use group::benches;
criterion_main!(benches);
