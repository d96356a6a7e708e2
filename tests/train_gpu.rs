//! GPU backward and optimizer kernels (`shaders/train/*.wgsl`) against their CPU references on
//! random inputs and odd shapes.

mod common;

use common::{assert_close, gpu, random, Tolerance};
use edgecut::data::{load_mnist, Split};
use edgecut::engine::Backend;
use edgecut::model::{Activation, Conv2d, Dense, FanIn, Pool, PoolKind};
use edgecut::sparsity::FanInPattern;
use edgecut::train::backward::{self as bw, FanInBackward};
use edgecut::train::optim::{self, OptimState};
use edgecut::train::{gpu as tg, train, OptimizerSpec, Progress, TrainOptions, TrainSpec};
use std::path::PathBuf;

#[test]
fn gpu_activation_gradients_match_the_cpu_reference() {
    let Some(ctx) = gpu("gpu_activation_gradients_match_the_cpu_reference") else {
        return;
    };
    let z: Vec<f32> = random(1037, 1).into_iter().map(|v| v * 8.0).collect();
    let dy = random(1037, 2);
    for act in [
        Activation::None,
        Activation::Relu,
        Activation::Relu6,
        Activation::Silu,
        Activation::Sigmoid,
    ] {
        let got = tg::activation_grad(&ctx, act, &z, &dy).expect("gpu runs");
        assert_close(
            &format!("{act:?}"),
            &got,
            &bw::activation_backward(act, &z, &dy),
            Tolerance::Approximate,
        );
    }
}

#[test]
fn gpu_dense_gradients_match_the_cpu_reference_on_odd_shapes() {
    let Some(ctx) = gpu("gpu_dense_gradients_match_the_cpu_reference_on_odd_shapes") else {
        return;
    };
    for (n, ni, no) in [(1, 1, 1), (3, 7, 5), (17, 33, 10), (32, 800, 3)] {
        let d = Dense {
            inputs: ni,
            outputs: no,
            weight: random(ni * no, 1),
            bias: random(no, 2),
            activation: Activation::None,
        };
        let x = random(n * ni, 3);
        let dz = random(n * no, 4);
        let (mut dw, mut db) = (vec![0.0; ni * no], vec![0.0; no]);
        let dx = bw::dense_backward(&d, &x, &dz, n, &mut dw, &mut db, true).expect("dx requested");
        let (gw, gb) = tg::dense_grad_weight(&ctx, &x, &dz, n, ni, no).expect("gpu runs");
        assert_close("dense dw", &gw, &dw, Tolerance::Approximate);
        assert_close("dense db", &gb, &db, Tolerance::Approximate);
        let gx = tg::dense_grad_input(&ctx, &dz, &d.weight, n, ni, no).expect("gpu runs");
        assert_close("dense dx", &gx, &dx, Tolerance::Approximate);
    }
}

#[test]
fn gpu_fanin_gradients_match_the_cpu_reference_using_the_transposed_pattern() {
    let Some(ctx) = gpu("gpu_fanin_gradients_match_the_cpu_reference_using_the_transposed_pattern")
    else {
        return;
    };
    // (batch, inputs, outputs, out-degree): scalar and vec4 paths of the forward kernel.
    for (n, ni, no, d) in [
        (1, 12, 8, 2),
        (5, 40, 40, 9),
        (33, 800, 40, 2),
        (7, 100, 10, 10),
    ] {
        let p = FanInPattern::random(ni, no, d, 5).expect("valid degree");
        let f = FanIn {
            inputs: ni,
            outputs: no,
            k: p.k,
            indices: p.indices,
            weights: random(no * p.k, 1),
            bias: random(no, 2),
            activation: Activation::None,
        };
        let back = FanInBackward::new(&f).expect("uniform out-degree");
        let x = random(n * ni, 3);
        let dz = random(n * no, 4);
        let (mut dw, mut db) = (vec![0.0; no * f.k], vec![0.0; no]);
        let dx = bw::fanin_backward(&f, Some(&back), &x, &dz, n, &mut dw, &mut db)
            .expect("dx requested");
        let (gw, gb) = tg::fanin_grad_weight(&ctx, &f, &x, &dz, n).expect("gpu runs");
        assert_close("fanin dw", &gw, &dw, Tolerance::Approximate);
        assert_close("fanin db", &gb, &db, Tolerance::Approximate);
        let gx = tg::fanin_grad_input(&ctx, &f, &back, &dz, n).expect("gpu runs");
        assert_close("fanin dx", &gx, &dx, Tolerance::Approximate);
    }
}

#[test]
fn gpu_optimizer_steps_match_the_cpu_reference_over_several_steps() {
    let Some(ctx) = gpu("gpu_optimizer_steps_match_the_cpu_reference_over_several_steps") else {
        return;
    };
    for opt in [
        OptimizerSpec::Sgd { momentum: 0.9 },
        OptimizerSpec::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
    ] {
        let len = 1001;
        let mut w = random(len, 1);
        let mut st = OptimState::new(len);
        let (mut gw, mut gm, mut gv) = (w.clone(), vec![0.0; len], vec![0.0; len]);
        for t in 1..=3u32 {
            let g = random(len, 10 + t as u64);
            optim::step(opt, 0.01, t, &mut w, &g, &mut st);
            (gw, gm, gv) = tg::optim_step(&ctx, opt, 0.01, t, &gw, &g, &gm, &gv).expect("gpu runs");
        }
        assert_close(&format!("{opt:?} weights"), &gw, &w, Tolerance::Approximate);
        assert_close(
            &format!("{opt:?} first moment"),
            &gm,
            &st.m,
            Tolerance::Approximate,
        );
    }
}

#[test]
fn gpu_conv2d_gradients_match_the_cpu_reference_with_stride_padding_groups_and_depthwise() {
    let Some(ctx) = gpu(
        "gpu_conv2d_gradients_match_the_cpu_reference_with_stride_padding_groups_and_depthwise",
    ) else {
        return;
    };
    // (batch, in, out, kh, kw, stride, padding, groups, h, w)
    for (n, ci, co, kh, kw, s, p, g, h, w) in [
        (1, 1, 1, 1, 1, 1, 0, 1, 1, 1),
        (3, 1, 6, 5, 5, 1, 2, 1, 13, 11),
        (2, 3, 5, 3, 3, 2, 1, 1, 9, 7),
        (2, 4, 6, 3, 2, 2, 0, 2, 8, 9),
        (3, 6, 6, 3, 3, 2, 1, 6, 7, 10),
        (2, 5, 7, 3, 3, 3, 2, 1, 10, 6),
    ] {
        let c = Conv2d {
            in_channels: ci,
            out_channels: co,
            kernel_h: kh,
            kernel_w: kw,
            stride: (s, s),
            dilation: (1, 1),
            pads: [p; 4],
            groups: g,
            weight: random(co * (ci / g) * kh * kw, 1),
            bias: random(co, 2),
            activation: Activation::None,
        };
        let (oh, ow) = c.output_hw(h, w).expect("valid shape");
        let x = random(n * ci * h * w, 3);
        let dz = random(n * co * oh * ow, 4);
        let (mut dw, mut db) = (vec![0.0; c.weight.len()], vec![0.0; co]);
        let dx = bw::conv2d_backward(&c, &x, &dz, n, h, w, &mut dw, &mut db, true)
            .expect("dx requested");
        let what = format!("conv {ci}->{co} k{kh}x{kw} s{s} p{p} g{g} on {h}x{w}");
        let (gw, gb) = tg::conv2d_grad_weight(&ctx, &c, &x, &dz, n, (h, w)).expect("gpu runs");
        assert_close(&format!("{what} dw"), &gw, &dw, Tolerance::Approximate);
        assert_close(&format!("{what} db"), &gb, &db, Tolerance::Approximate);
        let gx = tg::conv2d_grad_input(&ctx, &c, &dz, n, (h, w)).expect("gpu runs");
        assert_close(&format!("{what} dx"), &gx, &dx, Tolerance::Approximate);
    }
}

#[test]
fn gpu_pooling_gradients_match_the_cpu_reference_on_odd_shapes() {
    let Some(ctx) = gpu("gpu_pooling_gradients_match_the_cpu_reference_on_odd_shapes") else {
        return;
    };
    // (planes, h, w, kernel, stride, padding)
    for (planes, h, w, k, s, p) in [
        (1, 1, 1, 1, 1, 0),
        (5, 7, 9, 2, 2, 0),
        (3, 11, 6, 3, 2, 1),
        (4, 8, 8, 3, 1, 1),
        (2, 13, 5, 3, 3, 0),
    ] {
        // Coarse values so that max pooling sees ties and must pick the first maximum.
        let x: Vec<f32> = random(planes * h * w, 7)
            .into_iter()
            .map(|v| (v * 4.0).round())
            .collect();
        for kind in [PoolKind::Max, PoolKind::Avg] {
            let pool = Pool {
                kind,
                kernel_h: k,
                kernel_w: k,
                stride: (s, s),
                pads: [p; 4],
                ceil_mode: false,
                count_include_pad: false,
            };
            let (oh, ow) = pool.output_hw(h, w).expect("valid shape");
            let dy = random(planes * oh * ow, 8);
            let want = bw::pool_backward(&pool, &x, &dy, planes, h, w);
            let got = tg::pool_grad(&ctx, &pool, &x, &dy, planes, (h, w)).expect("gpu runs");
            assert_close(
                &format!("{kind:?} pool k{k} s{s} p{p} on {h}x{w}"),
                &got,
                &want,
                Tolerance::Approximate,
            );
        }
    }
    for (planes, hw) in [(1, 1), (7, 13), (33, 49)] {
        let dy = random(planes, 9);
        let got = tg::global_avgpool_grad(&ctx, &dy, planes, hw).expect("gpu runs");
        assert_close(
            "global avgpool",
            &got,
            &bw::global_avgpool_backward(&dy, hw),
            Tolerance::Approximate,
        );
    }
}

/// GPU and CPU training runs from the same seed: per-step losses agree within this relative
/// error (different summation orders, compounded over a few optimizer steps).
const TRAINING_LOSS_REL_TOLERANCE: f32 = 2e-3;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Per-step losses and the trained model of a short run of `spec` on `backend`.
fn short_run(
    spec: &TrainSpec,
    backend: &Backend,
    steps: usize,
) -> (Vec<f32>, edgecut::model::Model) {
    let mnist = root().join("models/data/mnist");
    let train_set = load_mnist(&mnist, Split::Train).expect("shipped MNIST");
    let test_set = load_mnist(&mnist, Split::Test).expect("shipped MNIST");
    let mut opts = TrainOptions::new();
    opts.max_steps = Some(steps);
    opts.epochs = Some(1);
    let mut losses = Vec::new();
    let (model, summary) = train(
        spec,
        &train_set,
        &test_set,
        backend,
        &opts,
        "test",
        &mut |p| {
            if let Progress::Step { loss, .. } = p {
                losses.push(loss)
            }
        },
    )
    .expect("training runs");
    assert_eq!(summary.steps, steps);
    (losses, model)
}

fn assert_runs_agree(what: &str, spec: &TrainSpec, ctx: std::sync::Arc<edgecut::gpu::GpuContext>) {
    let steps = 8;
    let (cpu, cpu_model) = short_run(spec, &Backend::Cpu, steps);
    let (gpu, gpu_model) = short_run(spec, &Backend::Gpu(ctx), steps);
    eprintln!("{what}: cpu losses {cpu:?}\n{what}: gpu losses {gpu:?}");
    for (i, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
        assert!(
            (g - c).abs() <= TRAINING_LOSS_REL_TOLERANCE * c.abs(),
            "{what}: step {}: gpu loss {g} vs cpu loss {c}",
            i + 1
        );
    }
    assert!(
        cpu.last() < cpu.first(),
        "{what}: the loss went down ({cpu:?})"
    );
    // Trained weights agree too (loosely: Adam normalises tiny gradients of either sign).
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (a, b) in gpu_model.blocks.iter().zip(&cpu_model.blocks) {
        for (sa, sb) in a.steps.iter().zip(&b.steps) {
            if let (Some((wa, _)), Some((wb, _))) = (
                edgecut::train::net::params(&sa.op),
                edgecut::train::net::params(&sb.op),
            ) {
                for (x, y) in wa.iter().zip(wb) {
                    diff += ((x - y) as f64).powi(2);
                    norm += (*y as f64).powi(2);
                }
            }
        }
    }
    assert!(
        diff.sqrt() <= 1e-2 * norm.sqrt(),
        "{what}: trained weights differ: |gpu - cpu| {} vs |cpu| {}",
        diff.sqrt(),
        norm.sqrt()
    );
}

#[test]
fn gpu_and_cpu_training_of_a_sparse_mlp_agree_over_several_steps() {
    let Some(ctx) = gpu("gpu_and_cpu_training_of_a_sparse_mlp_agree_over_several_steps") else {
        return;
    };
    let spec = TrainSpec::load(&root().join("models/mnist-mlp-sparse/spec.json")).expect("spec");
    assert_runs_agree("mnist-mlp-sparse", &spec, ctx);
}

/// A small CNN with an early exit: conv with padding, avg/max pools, global average pooling,
/// flatten, a fan-in and dense layers, and fused and separate activations.
const SMALL_CNN_WITH_EXIT: &str = r#"{
  "name": "tiny-cnn", "input": [1, 28, 28], "classes": 10,
  "blocks": [
    {"name": "c1", "ops": [{"op": "conv2d", "out_channels": 3, "kernel": 5, "padding": 2}, {"op": "silu"},
                           {"op": "avgpool", "kernel": 2}]},
    {"name": "c2", "ops": [{"op": "conv2d", "out_channels": 4, "kernel": 3, "stride": 2}, {"op": "relu"},
                           {"op": "maxpool", "kernel": 2}, {"op": "flatten"}]},
    {"name": "f1", "ops": [{"op": "fanin", "outputs": 12, "out_degree": 6}, {"op": "sigmoid"},
                           {"op": "dense", "outputs": 10}]}
  ],
  "exits": [{"after_block": "c1", "loss_weight": 0.5,
             "ops": [{"op": "global_avgpool"}, {"op": "flatten"}, {"op": "dense", "outputs": 10}]}],
  "optimizer": {"type": "sgd", "momentum": 0.9}, "lr": 0.05, "batch_size": 17, "epochs": 1, "seed": 3
}"#;

#[test]
fn gpu_and_cpu_training_of_a_small_cnn_with_an_exit_agree_over_several_steps() {
    let Some(ctx) =
        gpu("gpu_and_cpu_training_of_a_small_cnn_with_an_exit_agree_over_several_steps")
    else {
        return;
    };
    let spec: TrainSpec = serde_json::from_str(SMALL_CNN_WITH_EXIT).expect("valid spec");
    spec.check().expect("valid spec");
    assert_runs_agree("small cnn with an exit", &spec, ctx);
}

#[test]
fn a_short_gpu_cli_training_run_writes_a_loadable_model() {
    if gpu("a_short_gpu_cli_training_run_writes_a_loadable_model").is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("edgecut-train-gpu-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spec = root().join("models/mnist-mlp-sparse/spec.json");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_edgecut"))
        .args(["train", spec.to_str().expect("utf-8 path"), "--out"])
        .arg(&dir)
        .args(["--backend", "gpu", "--max-steps", "5", "--json"])
        .current_dir(root())
        .output()
        .expect("the edgecut binary runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(summary["steps"], 5);
    assert_eq!(summary["backend"], "gpu");
    let model = edgecut::model::Model::load(&dir).expect("the model loads");
    let prov = model.manifest.provenance.expect("provenance");
    assert_eq!(prov["test_accuracy"], summary["test_accuracy"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// On the GPU too, a diverging run names a layer of the model (found by reading the layer
/// outputs and gradients back), not just the loss or the head.
#[test]
fn gpu_training_divergence_names_the_layer() {
    let Some(ctx) = gpu("gpu_training_divergence_names_the_layer") else {
        return;
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut s = TrainSpec::load(&root.join("models/mnist-mlp-sparse-4x/spec.json")).expect("spec");
    s.lr = 1e6;
    s.optimizer = OptimizerSpec::Sgd { momentum: 0.0 };
    let data = load_mnist(&root.join("models/data/mnist"), Split::Test).expect("data");
    let err = train(
        &s,
        &data,
        &data,
        &Backend::Gpu(ctx),
        &TrainOptions::new(),
        "test",
        &mut |_: Progress| {},
    )
    .expect_err("lr 1e6 diverges");
    let msg = err.to_string();
    assert!(
        msg.contains("epoch 1")
            && ["fc1.fanin", "fc2.fanin", "fc3.fanin"]
                .iter()
                .any(|l| msg.contains(&format!("layer '{l}'"))),
        "{msg}"
    );
}
