//! Whole-model plans: GPU == CPU, split equivalence at every cut on both backends, exit
//! thresholds, buffer reuse, the reference architectures' cut candidates, and concurrent use
//! of one `GpuContext`.

mod common;

use common::{assert_close, gpu, random, Tolerance};
use edgecut::encoding::{decode_cpu, encode_cpu, Encoded, Encoding};
use edgecut::engine::{Answer, Backend, Plan, PlanIo, PlanOutput};
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
    // Every shipped model (the CPU engine is checked against the reference on each in
    // `cpu_fast`), the image models at batch 2 so that the CPU runs them in sample chunks.
    let mut models = vec![(fixture(), 9)];
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(models_dir())
        .expect("models folder")
        .map(|e| e.expect("entry").path())
        .filter(|d| d.join("model.json").exists() && !d.ends_with("mnist-fixture"))
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 8, "shipped models found: {dirs:?}");
    for dir in dirs {
        let m = Arc::new(Model::load(&dir).expect("shipped model loads"));
        let batch = if m.input_elems() > 10_000 { 2 } else { 9 };
        models.push((m, batch));
    }
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
/// EfficientNet-B0's squeeze-excite multiplies fuse into the 1x1 projection after them where
/// the tiling has a gated kernel (subgroup tiles): no multiply dispatch is left, one gated
/// convolution per squeeze-excite block, and the result still equals the CPU's. Elsewhere
/// nothing fuses; the whole model also matches with register tiles and with the shared tiles
/// of hardware GPUs (forced).
#[test]
fn squeeze_excite_gates_fuse_into_the_projection_where_the_tiling_allows() {
    let Some(ctx) = gpu("squeeze_excite_gates_fuse_into_the_projection_where_the_tiling_allows")
    else {
        return;
    };
    let m = Arc::new(Model::load(models_dir().join("efficientnet-b0")).expect("loads"));
    let gates = m
        .blocks
        .iter()
        .flat_map(|b| &b.steps)
        .filter(|s| matches!(&s.op, edgecut::model::Op::Binary(b) if b.op == edgecut::model::BinaryOp::Mul))
        .count();
    assert_eq!(gates, 16, "EfficientNet-B0 has 16 squeeze-excite blocks");
    let x = input(&m, 3, 8);
    let n = m.blocks.len();
    let cpu = run(&m, 0..n, &Backend::Cpu, &x);
    let forced = |tiling| {
        let forced = edgecut::gpu::GpuContext::new()
            .expect("another context on the same adapter")
            .with_tiling(tiling);
        Arc::new(forced)
    };
    let registers = forced(edgecut::gpu::Tiling::Registers);
    let shared = forced(edgecut::gpu::Tiling::Shared);
    for ctx in [ctx, registers, shared] {
        let fuses = ctx.tiling == edgecut::gpu::Tiling::Subgroup;
        let plan = Plan::compile(&m, 0..n, &Backend::Gpu(ctx.clone()), 3).expect("compiles");
        let labels = plan.kernel_labels();
        let count = |s: &str| labels.iter().filter(|l| l.contains(s)).count();
        let what = format!("{:?} tiles: {labels:?}", ctx.tiling);
        assert_eq!(count("_gated"), if fuses { gates } else { 0 }, "{what}");
        assert_eq!(count(".mul"), if fuses { 0 } else { gates }, "{what}");
        if ctx.tiling == edgecut::gpu::Tiling::Shared {
            assert!(count("conv_shared_k3x3") == 1, "the stem: {what}");
            assert!(count("depthwise_shared") == 16, "{what}");
        }
        let gpu = plan.run(&x).expect("plan runs");
        assert_close(
            &what,
            gpu.output.data(),
            cpu.output.data(),
            Tolerance::Approximate,
        );
    }
}

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

/// A two-block dense model whose cut tensor has `cut_elems` values per sample, so the 4-byte
/// packing of FP16 / INT8 words ends in every kind of tail (seeded weights, made in memory).
fn narrow_cut(cut_elems: usize) -> Arc<Model> {
    let manifest: edgecut::model::Manifest = serde_json::from_value(serde_json::json!({
        "format": 1,
        "name": format!("narrow-cut-{cut_elems}"),
        "input": [9],
        "classes": 4,
        "init": {"seed": cut_elems},
        "blocks": [
            {"name": "a", "ops": [{"op": "dense", "name": "fc", "outputs": cut_elems, "bias": true}]},
            {"name": "b", "ops": [{"op": "dense", "name": "fc", "outputs": 4, "bias": true}]}
        ]
    }))
    .expect("the manifest matches the schema");
    let json = serde_json::to_vec(&manifest).expect("serialises");
    Arc::new(Model::from_parts(manifest, &json, None).expect("the model builds"))
}

/// The FP16 halves of two encodings, as u16 codes.
fn halves(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

#[test]
fn gpu_head_encode_and_tail_decode_match_the_cpu_reference_on_odd_lengths() {
    let Some(ctx) = gpu("gpu_head_encode_and_tail_decode_match_the_cpu_reference_on_odd_lengths")
    else {
        return;
    };
    let backend = Backend::Gpu(ctx);
    for (i, cut_elems) in [1usize, 3, 5, 6, 63].into_iter().enumerate() {
        let m = narrow_cut(cut_elems);
        for batch in [1usize, 8] {
            let what = format!("{cut_elems} values x {batch} samples");
            // Shifted so some cut tensors are all positive and some straddle 0.
            let shift = if i % 2 == 0 { 2.0 } else { 0.0 };
            let data = random(batch * 9, i as u64)
                .iter()
                .map(|v| v + shift)
                .collect();
            let x = Tensor::new(vec![batch, 9], data).expect("shape");
            for encoding in [Encoding::Fp16, Encoding::Int8] {
                let head =
                    Plan::compile_with(&m, 0..1, &backend, batch, PlanIo::encoding(encoding))
                        .expect("head compiles");
                let out = head.run(&x).expect("head runs");
                let got = out.encoded.expect("the head encodes its output");
                let want = encode_cpu(&out.output, encoding);
                assert_eq!(got.shape, want.shape, "{what} {encoding}");
                assert_eq!(got.bytes.len(), want.bytes.len(), "{what} {encoding}");
                match encoding {
                    Encoding::Fp16 => {
                        assert_eq!(halves(&got.bytes), halves(&want.bytes), "{what} fp16")
                    }
                    _ => {
                        let (g, w) = (got.int8.expect("params"), want.int8.expect("params"));
                        assert_eq!(g.zero_point, w.zero_point, "{what} int8 zero point");
                        assert_close("int8 scale", &[g.scale], &[w.scale], Tolerance::Close);
                        for (k, (a, b)) in got.bytes.iter().zip(&want.bytes).enumerate() {
                            let step = (*a as i8 as i32 - *b as i8 as i32).abs();
                            assert!(step <= 1, "{what} int8 value {k}: {a} vs {b}");
                        }
                    }
                }
                // The tail decodes in its first dispatch exactly as the reference decoder,
                // then runs the same kernels as a plain tail.
                let tail =
                    Plan::compile_with(&m, 1..2, &backend, batch, PlanIo::decoding(encoding))
                        .expect("tail compiles");
                let plain = Plan::compile(&m, 1..2, &backend, batch).expect("tail compiles");
                let decoded = decode_cpu(&want).expect("decodes");
                let via_plan = tail.run_encoded(&[&want]).expect("tail runs");
                let reference = plain.run(&decoded).expect("tail runs");
                assert_eq!(via_plan.output, reference.output, "{what} {encoding} tail");
            }
        }
    }
}

#[test]
fn a_tail_decodes_a_batch_of_requests_each_with_its_own_int8_scale() {
    let Some(ctx) = gpu("a_tail_decodes_a_batch_of_requests_each_with_its_own_int8_scale") else {
        return;
    };
    let m = narrow_cut(5);
    for backend in [Backend::Cpu, Backend::Gpu(ctx)] {
        let io = PlanIo::decoding(Encoding::Int8);
        let tail = Plan::compile_with(&m, 1..2, &backend, 8, io).expect("compiles");
        let plain = Plan::compile(&m, 1..2, &backend, 8).expect("compiles");
        // Three requests of 1, 2 and 3 samples with different ranges.
        let mut parts = Vec::new();
        let mut decoded = Vec::new();
        for (i, samples) in [1usize, 2, 3].into_iter().enumerate() {
            let data = random(samples * 5, 10 + i as u64)
                .iter()
                .map(|v| v * (i + 1) as f32)
                .collect();
            let t = Tensor::new(vec![samples, 5], data).expect("shape");
            let e = encode_cpu(&t, Encoding::Int8);
            decoded.extend_from_slice(decode_cpu(&e).expect("decodes").data());
            parts.push(e);
        }
        let refs: Vec<&Encoded> = parts.iter().collect();
        let got = tail.run_encoded(&refs).expect("runs");
        let want = plain
            .run(&Tensor::new(vec![6, 5], decoded).expect("shape"))
            .expect("runs");
        assert_eq!(got.output, want.output, "{}", backend.name());
    }
}

#[test]
fn split_through_fp32_encoded_plans_matches_the_unsplit_model_at_every_cut() {
    let Some(ctx) = gpu("split_through_fp32_encoded_plans_matches_the_unsplit_model_at_every_cut")
    else {
        return;
    };
    let m = fixture();
    let n = m.blocks.len();
    let x = input(&m, 2, 3);
    for backend in [Backend::Cpu, Backend::Gpu(ctx)] {
        let full = run(&m, 0..n, &backend, &x);
        for k in 1..n {
            let fp32 = Encoding::Fp32;
            let head = Plan::compile_with(&m, 0..k, &backend, 2, PlanIo::encoding(fp32))
                .expect("head compiles");
            let tail = Plan::compile_with(&m, k..n, &backend, 2, PlanIo::decoding(fp32))
                .expect("tail compiles");
            let sent = head.run(&x).expect("head runs").encoded.expect("encoded");
            let out = tail.run_encoded(&[&sent]).expect("tail runs");
            assert_eq!(
                out.output,
                full.output,
                "{} cut after block {k}",
                backend.name()
            );
        }
    }
}

#[test]
fn encoded_input_of_another_encoding_or_shape_is_refused() {
    let m = narrow_cut(3);
    let tail = Plan::compile_with(&m, 1..2, &Backend::Cpu, 4, PlanIo::decoding(Encoding::Fp16))
        .expect("compiles");
    let t = Tensor::new(vec![1, 3], vec![0.5, -1.0, 2.0]).expect("shape");
    let err = tail
        .run_encoded(&[&encode_cpu(&t, Encoding::Int8)])
        .expect_err("int8 into an fp16 tail");
    assert!(err.to_string().contains("compiled for fp16 input"), "{err}");
    let wide = Tensor::new(vec![1, 4], vec![0.0; 4]).expect("shape");
    let err = tail
        .run_encoded(&[&encode_cpu(&wide, Encoding::Fp16)])
        .expect_err("wrong shape");
    assert!(
        err.to_string().contains("expected a tensor of shape"),
        "{err}"
    );
    let many = Tensor::new(vec![5, 3], vec![0.0; 15]).expect("shape");
    let err = tail
        .run_encoded(&[&encode_cpu(&many, Encoding::Fp16)])
        .expect_err("too many samples");
    assert!(err.to_string().contains("does not fit this plan"), "{err}");
}

#[test]
fn a_compiled_plan_creates_no_buffers_or_bind_groups_while_it_runs() {
    if gpu("a_compiled_plan_creates_no_buffers_or_bind_groups_while_it_runs").is_none() {
        return;
    }
    // A context of its own, so other tests' compilations do not move the counter.
    let ctx = Arc::new(edgecut::gpu::GpuContext::new().expect("an adapter exists"));
    let backend = Backend::Gpu(ctx.clone());
    let m = narrow_cut(5);
    let x = Tensor::new(vec![2, 9], random(18, 4)).expect("shape");
    for encoding in [Encoding::Fp16, Encoding::Int8] {
        let head = Plan::compile_with(&m, 0..1, &backend, 2, PlanIo::encoding(encoding))
            .expect("compiles");
        let tail = Plan::compile_with(&m, 1..2, &backend, 2, PlanIo::decoding(encoding))
            .expect("compiles");
        let before = ctx.objects_created();
        for _ in 0..3 {
            let sent = head.run(&x).expect("runs").encoded.expect("encoded");
            tail.run_encoded(&[&sent]).expect("runs");
        }
        assert_eq!(
            ctx.objects_created(),
            before,
            "{encoding}: objects made per run"
        );
    }
}
