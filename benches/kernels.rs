//! Kernel benchmarks (criterion): dense vs fixed-fan-in at densities 100/25/10/5 % and
//! grouped fixed-fan-in (rows shared by 8 outputs) at 25/10/5 % (800→512 and 4096→4096,
//! batch 1 and 64), dense 512³ (for the OpenBLAS comparison of
//! `benches/sgemm.py`), conv2d 3x3 on 32x32x32, depthwise 3x3 on 112x112x32, and EfficientNet-B0
//! convolutions (1x1 beside the dense kernel at the same GEMM shape, the 3x3 stem, depthwise
//! 3x3 and 5x5; `edgecut::bench::efficientnet_cases`). The problems
//! are the library's benchmark cases (`edgecut::bench`); every kernel is checked against the
//! CPU reference before it is timed. Throughput is in FLOP (2 per multiply-add).
//!
//! Run: `WGPU_BACKEND=vulkan cargo bench --bench kernels` (lavapipe on a machine without a GPU).

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use edgecut::bench::{conv_case, dense_case, efficientnet_cases, fanin_case, KernelCase};
use edgecut::gpu::GpuContext;
use std::time::Duration;

/// Dispatches per submission (one wait per iteration, as a plan would run): up to 8, fewer
/// for problems over 50 MFLOP so the largest cases finish in minutes on lavapipe.
fn dispatches(flops: u64) -> usize {
    (50_000_000 / flops.max(1)).clamp(1, 8) as usize
}

fn bench_case(c: &mut Criterion, ctx: &GpuContext, case: &KernelCase) {
    let n = dispatches(case.flops);
    let prepared = case.prepare(ctx).expect("kernel prepares");
    let got = prepared.run(ctx).expect("kernel runs");
    let want = case.reference();
    let bad = got
        .iter()
        .zip(&want)
        .position(|(g, w)| (g - w).abs() > 1e-3 * (1.0 + w.abs()));
    assert!(
        bad.is_none(),
        "{} {}: differs from the CPU reference at {bad:?}",
        case.name,
        case.shape
    );
    let density = if case.name.starts_with("fanin") {
        format!("_d{:03}", (case.density * 100.0).round() as u32)
    } else {
        String::new()
    };
    let id = format!(
        "{}{density}_b{}",
        case.shape.replace(' ', "_").replace('/', "_s"),
        case.batch
    );
    let mut g = c.benchmark_group(format!("gpu_{}", case.name));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(case.flops * n as u64));
    g.bench_function(BenchmarkId::from_parameter(id), |b| {
        b.iter(|| prepared.dispatch(ctx, n).expect("dispatch"))
    });
    g.finish();
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
    for (inputs, outputs) in [(800, 512), (4096, 4096)] {
        for batch in [1, 64] {
            bench_case(c, &ctx, &dense_case(inputs, outputs, batch, 1));
            for density in [1.0, 0.25, 0.10, 0.05] {
                bench_case(c, &ctx, &fanin_case(inputs, outputs, batch, density, 1, 4));
            }
            for density in [0.25, 0.10, 0.05] {
                bench_case(c, &ctx, &fanin_case(inputs, outputs, batch, density, 8, 4));
            }
        }
    }
    bench_case(c, &ctx, &dense_case(512, 512, 512, 7));
    bench_case(c, &ctx, &conv_case("conv2d", 32, 32, 1));
    bench_case(c, &ctx, &conv_case("depthwise", 32, 112, 32));
    for case in efficientnet_cases(false) {
        bench_case(c, &ctx, &case);
    }
}

mod group {
    #![allow(missing_docs)] // criterion_group! generates an undocumented function
    criterion::criterion_group!(benches, super::kernels);
}
use group::benches;
criterion_main!(benches);
