//! Whole-model plans: GPU == CPU, split equivalence at every cut on both backends, exit
//! thresholds, buffer reuse, the reference architectures' cut candidates, and concurrent use
//! of one `GpuContext`.

mod common;

use common::{assert_close, gpu, random, Tolerance};
use edgecut::engine::{Answer, Backend, Plan, PlanOutput};
use edgecut::model::Model;
use edgecut::tensor::Tensor;
use std::path::PathBuf;
use std::sync::Arc;

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn fixture() -> Arc<Model> {
    Arc::new(edgecut::fixture::lenet(7).expect("fixture builds"))
}

fn input(model: &Model, batch: usize, seed: u64) -> Tensor {
    let mut shape = vec![batch];
    shape.extend_from_slice(model.input_shape());
    let x = random(batch * model.input_elems(), seed)
        .into_iter()
        .map(|v| v.abs())
        .collect();
    Tensor::new(shape, x).expect("shape matches")
}

fn run(
    model: &Arc<Model>,
    range: std::ops::Range<usize>,
    backend: &Backend,
    x: &Tensor,
) -> PlanOutput {
    Plan::compile(model, range, backend, x.batch())
        .expect("plan compiles")
        .run(x)
        .expect("plan runs")
}

#[test]
fn efficientnet_b0_has_the_published_cut_candidates() {
    let m = Model::load(models_dir().join("efficientnet-b0")).expect("loads");
    let names: Vec<&str> = m
        .cut_candidates()
        .iter()
        .map(|&i| m.blocks[i].name.as_str())
        .collect();
    assert_eq!(names, ["blocks_1", "blocks_3", "blocks_5", "blocks_11"]);
    let ratios: Vec<f64> = m
        .cut_candidates()
        .iter()
        .map(|&i| m.blocks[i].output_elems() as f64 / m.input_elems() as f64)
        .collect();
    for (r, want) in ratios.iter().zip([0.5, 0.2083, 0.1042, 0.0625]) {
        assert!((r - want).abs() < 1e-3, "ratio {r} vs {want}");
    }
    let macs = m.totals().macs as f64;
    assert!(
        (0.38e9..0.40e9).contains(&macs),
        "EfficientNet-B0 MACs {macs}"
    );
    assert_eq!(m.blocks.len(), 18);
}

#[test]
fn mobilenet_v2_matches_its_published_complexity() {
    let m = Model::load(models_dir().join("mobilenet-v2")).expect("loads");
    let macs = m.totals().macs as f64;
    assert!((0.29e9..0.31e9).contains(&macs), "MobileNet-V2 MACs {macs}");
    assert_eq!(m.blocks.len(), 19);
}

#[test]
fn split_model_matches_unsplit_model_at_every_cut_on_the_cpu() {
    let m = fixture();
    let x = input(&m, 3, 1);
    let n = m.blocks.len();
    let full = run(&m, 0..n, &Backend::Cpu, &x);
    for k in 1..n {
        let head = run(&m, 0..k, &Backend::Cpu, &x);
        let tail = run(&m, k..n, &Backend::Cpu, &head.output);
        assert_eq!(tail.output, full.output, "cut after block {k}");
    }
}

#[test]
fn split_model_matches_unsplit_model_at_every_cut_on_the_gpu() {
    let Some(ctx) = gpu("split_model_matches_unsplit_model_at_every_cut_on_the_gpu") else {
        return;
    };
    let backend = Backend::Gpu(ctx);
    // mnist-mlp-sparse-4x at batch 9 runs its fan-in layers feature-major: a cut between two
    // of them changes where the layout changes, not the arithmetic.
    for (m, batch) in [
        (fixture(), 5),
        (
            Arc::new(Model::load(models_dir().join("efficientnet-b0")).expect("loads")),
            1,
        ),
        (
            Arc::new(Model::load(models_dir().join("mnist-mlp-sparse-4x")).expect("loads")),
            9,
        ),
    ] {
        let x = input(&m, batch, 2);
        let n = m.blocks.len();
        let full = run(&m, 0..n, &backend, &x);
        for k in 1..n {
            let head = run(&m, 0..k, &backend, &x);
            let tail = run(&m, k..n, &backend, &head.output);
            // The same kernels on the same data: bit-identical.
            assert_eq!(tail.output, full.output, "{} cut after block {k}", m.name());
        }
    }
}

#[test]
fn gpu_plan_matches_cpu_plan_on_whole_models() {
    let Some(ctx) = gpu("gpu_plan_matches_cpu_plan_on_whole_models") else {
        return;
    };
    let backend = Backend::Gpu(ctx);
    let models = [
        (fixture(), 9),
        (
            Arc::new(Model::load(models_dir().join("efficientnet-b0")).expect("loads")),
            1,
        ),
        (
            Arc::new(Model::load(models_dir().join("mobilenet-v2")).expect("loads")),
            1,
        ),
    ];
    for (m, batch) in models {
        let x = input(&m, batch, 3);
        let n = m.blocks.len();
        let cpu = run(&m, 0..n, &Backend::Cpu, &x);
        let gpu = run(&m, 0..n, &backend, &x);
        // Deep nets accumulate rounding differences through many layers.
        assert_close(
            m.name(),
            gpu.output.data(),
            cpu.output.data(),
            Tolerance::Approximate,
        );
        for (g, c) in gpu.exits.iter().zip(&cpu.exits) {
            assert_close(
                "exit logits",
                g.logits.data(),
                c.logits.data(),
                Tolerance::Close,
            );
            for (gs, cs) in g.stats.iter().zip(&c.stats) {
                assert_eq!(gs.argmax, cs.argmax);
                assert!((gs.confidence - cs.confidence).abs() < 1e-5);
                assert!((gs.entropy - cs.entropy).abs() < 1e-4);
            }
        }
        let (gf, cf) = (
            gpu.final_stats.expect("ends the model"),
            cpu.final_stats.expect("ends the model"),
        );
        for (g, c) in gf.iter().zip(&cf) {
            assert!(
                (g.confidence - c.confidence).abs() < 1e-4,
                "{} confidence",
                m.name()
            );
        }
    }
}

#[test]
fn exit_threshold_one_never_exits_and_zero_always_exits() {
    let m = fixture();
    let x = input(&m, 16, 4);
    let mut backends = vec![Backend::Cpu];
    if let Some(ctx) = gpu("exit_threshold_one_never_exits_and_zero_always_exits") {
        backends.push(Backend::Gpu(ctx));
    }
    for b in &backends {
        let out = run(&m, 0..m.blocks.len(), b, &x);
        let final_classes: Vec<u32> = out
            .final_stats
            .as_ref()
            .expect("full range")
            .iter()
            .map(|s| s.argmax)
            .collect();
        let never = out.answers(1.0);
        assert!(never.iter().all(|a| matches!(a, Answer::Final { .. })));
        assert_eq!(
            never
                .iter()
                .map(|a| a.class().expect("answered"))
                .collect::<Vec<_>>(),
            final_classes
        );
        assert!(out
            .answers(0.0)
            .iter()
            .all(|a| matches!(a, Answer::Exit { exit: 0, .. })));
        // A head-only plan that ends before the classifier leaves unconfident samples open.
        let head = run(&m, 0..1, b, &x);
        assert!(head.answers(1.0).iter().all(|a| *a == Answer::Continue));
    }
}

#[test]
fn plans_reuse_activation_buffers() {
    let Some(ctx) = gpu("plans_reuse_activation_buffers") else {
        return;
    };
    let backend = Backend::Gpu(ctx);
    let m = fixture();
    // conv2..fc3 is a plain chain: two ping-pong buffers.
    let chain = Plan::compile(&m, 1..m.blocks.len(), &backend, 4).expect("compiles");
    assert_eq!(chain.activation_buffers(), 2);
    // With the exit head, conv1's output stays live while the head runs: one more, plus the
    // logits kept for readback.
    let with_exit = Plan::compile(&m, 0..m.blocks.len(), &backend, 4).expect("compiles");
    assert!(
        with_exit.activation_buffers() <= 4,
        "{}",
        with_exit.activation_buffers()
    );
    let effnet = Arc::new(Model::load(models_dir().join("efficientnet-b0")).expect("loads"));
    let plan = Plan::compile(&effnet, 0..effnet.blocks.len(), &backend, 1).expect("compiles");
    // Residual input + squeeze-excite saved tensor + ping-pong.
    assert!(
        plan.activation_buffers() <= 4,
        "{}",
        plan.activation_buffers()
    );
}

#[test]
fn one_gpu_context_serves_many_threads() {
    let Some(ctx) = gpu("one_gpu_context_serves_many_threads") else {
        return;
    };
    let m = fixture();
    let backend = Backend::Gpu(ctx);
    let shared = Arc::new(Plan::compile(&m, 0..m.blocks.len(), &backend, 8).expect("compiles"));
    let want: Vec<Tensor> = (0..4)
        .map(|t| run(&m, 0..m.blocks.len(), &Backend::Cpu, &input(&m, 8, 100 + t)).output)
        .collect();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (shared, backend, m, want) = (shared.clone(), backend.clone(), m.clone(), &want);
            s.spawn(move || {
                let x = input(&m, 8, 100 + t);
                // Each thread compiles its own plan and also shares one.
                let own = Plan::compile(&m, 0..m.blocks.len(), &backend, 8).expect("compiles");
                for _ in 0..5 {
                    let a = own.run(&x).expect("runs");
                    let b = shared.run(&x).expect("runs");
                    assert_close(
                        "own plan",
                        a.output.data(),
                        want[t as usize].data(),
                        Tolerance::Close,
                    );
                    assert_eq!(a.output, b.output);
                }
            });
        }
    });
}

#[test]
fn smaller_batches_run_on_a_larger_plan() {
    let m = fixture();
    let mut backends = vec![Backend::Cpu];
    if let Some(ctx) = gpu("smaller_batches_run_on_a_larger_plan") {
        backends.push(Backend::Gpu(ctx));
    }
    for b in &backends {
        let plan = Plan::compile(&m, 0..m.blocks.len(), b, 16).expect("compiles");
        let x = input(&m, 3, 9);
        let small = plan.run(&x).expect("runs");
        assert_eq!(small.output.shape(), &[3, 10]);
        let exact = run(&m, 0..m.blocks.len(), b, &x);
        assert_close(
            "batch 3 on capacity 16",
            small.output.data(),
            exact.output.data(),
            Tolerance::Close,
        );
    }
}

/// Regression: with several threads polling one device, another thread's poll could run this
/// thread's map callback just after its own poll returned, and the readback failed with "the map
/// callback never fired" (seen in CI through the split server and client sharing a context).
#[test]
fn readback_waits_for_a_map_callback_run_by_another_threads_poll() {
    let Some(ctx) = gpu("readback_waits_for_a_map_callback_run_by_another_threads_poll") else {
        return;
    };
    let m = fixture();
    let backend = Backend::Gpu(ctx);
    std::thread::scope(|s| {
        for t in 0..6u64 {
            let (backend, m) = (backend.clone(), m.clone());
            s.spawn(move || {
                let plan = Plan::compile(&m, 0..m.blocks.len(), &backend, 1).expect("compiles");
                let x = input(&m, 1, 200 + t);
                for _ in 0..40 {
                    plan.run(&x).expect("every readback completes");
                }
            });
        }
    });
}

/// From `FEATURE_MAJOR_MIN_BATCH` rows up, fan-in layers read feature-major activations: a
/// chain of them transposes once, a full fan-in runs as dense, and results match the CPU.
#[test]
fn feature_major_fanin_chains_match_the_cpu_and_transpose_once() {
    let Some(ctx) = gpu("feature_major_fanin_chains_match_the_cpu_and_transpose_once") else {
        return;
    };
    let backend = Backend::Gpu(ctx);
    let sparse = Arc::new(Model::load(models_dir().join("mnist-mlp-sparse-4x")).expect("loads"));
    let lenet = Arc::new(Model::load(models_dir().join("mnist-lenet-ee")).expect("loads"));
    let min = edgecut::gpu::kernels::FEATURE_MAJOR_MIN_BATCH;
    for (m, batch) in [
        (&sparse, min - 1),
        (&sparse, min),
        (&sparse, 9),
        (&sparse, 64),
        (&lenet, 13),
    ] {
        let x = input(m, batch, 5);
        let n = m.blocks.len();
        let plan = Plan::compile(m, 0..n, &backend, batch).expect("plan compiles");
        let labels = plan.kernel_labels();
        let count = |s: &str| labels.iter().filter(|l| l.contains(s)).count();
        let fanins = m
            .blocks
            .iter()
            .flat_map(|b| &b.steps)
            .filter(|s| matches!(&s.op, edgecut::model::Op::FanIn(f) if !f.is_full()))
            .count();
        let what = format!("{} batch {batch}: {labels:?}", m.name());
        if batch >= min {
            assert_eq!(count("fanin_fm"), fanins, "{what}");
            assert_eq!(count("to_feature_major"), 1, "{what}");
        } else {
            assert_eq!(count("fanin_fm") + count("to_feature_major"), 0, "{what}");
        }
        if m.name() == "mnist-mlp-sparse-4x" {
            // fc3 reads all 100 inputs: it runs as a dense layer.
            let fc3 = labels.iter().find(|l| l.starts_with("fc3."));
            assert!(fc3.is_some_and(|l| l.contains("dense")), "{what}");
        }
        let gpu = plan.run(&x).expect("plan runs");
        let cpu = run(m, 0..n, &Backend::Cpu, &x);
        assert_close(
            &what,
            gpu.output.data(),
            cpu.output.data(),
            Tolerance::Close,
        );
        for (g, c) in gpu.exits.iter().zip(&cpu.exits) {
            assert_close(&what, g.logits.data(), c.logits.data(), Tolerance::Close);
        }
        // A smaller batch on the same plan (padding rows of the last quad) agrees too.
        let y = input(m, batch.div_ceil(2), 6);
        let gpu = plan.run(&y).expect("plan runs a smaller batch");
        let cpu = run(m, 0..n, &Backend::Cpu, &y);
        assert_close(
            &what,
            gpu.output.data(),
            cpu.output.data(),
            Tolerance::Close,
        );
    }
}

/// GPU plans report the device time of their dispatches when the adapter has timestamps.
#[test]
fn gpu_plans_report_device_time_within_wall_time() {
    let Some(ctx) = gpu("gpu_plans_report_device_time_within_wall_time") else {
        return;
    };
    let has_timestamps = ctx.features.contains(wgpu::Features::TIMESTAMP_QUERY);
    let m = fixture();
    let x = input(&m, 4, 9);
    let plan = Plan::compile(&m, 0..m.blocks.len(), &Backend::Gpu(ctx), 4).expect("compiles");
    plan.run(&x).expect("warm-up run");
    let start = std::time::Instant::now();
    let out = plan.run(&x).expect("plan runs");
    let wall = start.elapsed().as_secs_f64();
    match out.device_seconds {
        Some(t) => assert!(t > 0.0 && t <= wall, "device {t} s vs wall {wall} s"),
        None => assert!(
            !has_timestamps,
            "the adapter has TIMESTAMP_QUERY but no time came back"
        ),
    }
    let cpu = run(&m, 0..m.blocks.len(), &Backend::Cpu, &x);
    assert_eq!(cpu.device_seconds, None);
}
