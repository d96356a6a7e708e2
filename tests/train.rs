//! Training: gradients of every trainable op against finite differences, whole-network
//! gradients with an exit head, a short training run, and spec errors.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::random;
use edgecut::data::{load_mnist, Split};
use edgecut::engine::Backend;
use edgecut::model::{Activation, Conv2d, Dense, FanIn, Pool, PoolKind};
use edgecut::sparsity::FanInPattern;
use edgecut::train::backward::{self as bw, FanInBackward};
use edgecut::train::net::{params_mut, step_at_mut, CpuNet};
use edgecut::train::{train, TrainError, TrainOptions, TrainSpec};
use std::path::PathBuf;

/// Finite-difference step and the agreement asked of analytic and numeric gradients (f32
/// forward passes, central differences).
const FD_STEP: f32 = 1e-2;
const FD_ABS: f32 = 2e-3;
const FD_REL: f32 = 2e-2;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 * *y as f64) as f32)
        .sum()
}

/// Checks `grad` against central differences of `loss` in every coordinate of `x`.
fn check_fd(what: &str, x: &mut [f32], grad: &[f32], loss: &mut dyn FnMut(&[f32]) -> f32) {
    assert_eq!(x.len(), grad.len(), "{what}: gradient length");
    for i in 0..x.len() {
        let keep = x[i];
        x[i] = keep + FD_STEP;
        let up = loss(x);
        x[i] = keep - FD_STEP;
        let down = loss(x);
        x[i] = keep;
        let numeric = (up - down) / (2.0 * FD_STEP);
        let ok = (numeric - grad[i]).abs() <= FD_ABS + FD_REL * numeric.abs();
        assert!(ok, "{what}[{i}]: analytic {} vs numeric {numeric}", grad[i]);
    }
}

#[test]
fn dense_gradients_match_finite_differences() {
    for act in [Activation::None, Activation::Sigmoid, Activation::Silu] {
        let (n, ni, no) = (3, 7, 5);
        let mut d = Dense {
            inputs: ni,
            outputs: no,
            weight: random(ni * no, 1),
            bias: random(no, 2),
            activation: act,
        };
        let mut x = random(n * ni, 3);
        let dy = random(n * no, 4);
        let z = {
            let mut lin = d.clone();
            lin.activation = Activation::None;
            edgecut::cpu::reference::dense(&lin, &x, n)
        };
        let dz = bw::activation_backward(act, &z, &dy);
        let (mut dw, mut db) = (vec![0.0; ni * no], vec![0.0; no]);
        let dx = bw::dense_backward(&d, &x, &dz, n, &mut dw, &mut db, true).unwrap();
        let d0 = d.clone();
        check_fd("dense dx", &mut x.clone(), &dx, &mut |x| {
            dot(&edgecut::cpu::reference::dense(&d0, x, n), &dy)
        });
        let mut w = d.weight.clone();
        check_fd("dense dw", &mut w, &dw, &mut |w| {
            d.weight = w.to_vec();
            dot(&edgecut::cpu::reference::dense(&d, &x, n), &dy)
        });
        d.weight = d0.weight.clone();
        let mut b = d.bias.clone();
        check_fd("dense db", &mut b, &db, &mut |b| {
            d.bias = b.to_vec();
            dot(&edgecut::cpu::reference::dense(&d, &x, n), &dy)
        });
        x[0] += 0.0;
    }
}

#[test]
fn fanin_gradients_match_finite_differences_and_use_the_transposed_pattern() {
    let (n, ni, no, degree) = (2, 12, 8, 2);
    let p = FanInPattern::random(ni, no, degree, 7).unwrap();
    let mut f = FanIn {
        inputs: ni,
        outputs: no,
        k: p.k,
        indices: p.indices.clone(),
        weights: random(no * p.k, 1),
        bias: random(no, 2),
        activation: Activation::Silu,
    };
    let back = FanInBackward::new(&f).unwrap();
    assert_eq!(
        back.transposed.k, degree,
        "the transpose has fan-in = out-degree"
    );
    let x = random(n * ni, 3);
    let dy = random(n * no, 4);
    let mut lin = f.clone();
    lin.activation = Activation::None;
    let z = edgecut::cpu::reference::fanin(&lin, &x, n);
    let dz = bw::activation_backward(f.activation, &z, &dy);
    let (mut dw, mut db) = (vec![0.0; no * p.k], vec![0.0; no]);
    let dx = bw::fanin_backward(&f, Some(&back), &x, &dz, n, &mut dw, &mut db).unwrap();
    let f0 = f.clone();
    check_fd("fanin dx", &mut x.clone(), &dx, &mut |x| {
        dot(&edgecut::cpu::reference::fanin(&f0, x, n), &dy)
    });
    let mut w = f.weights.clone();
    check_fd("fanin dw", &mut w, &dw, &mut |w| {
        f.weights = w.to_vec();
        dot(&edgecut::cpu::reference::fanin(&f, &x, n), &dy)
    });
    f.weights = f0.weights.clone();
    let mut b = f.bias.clone();
    check_fd("fanin db", &mut b, &db, &mut |b| {
        f.bias = b.to_vec();
        dot(&edgecut::cpu::reference::fanin(&f, &x, n), &dy)
    });
}

#[test]
fn conv2d_gradients_match_finite_differences_with_stride_padding_and_groups() {
    for (cin, cout, k, stride, pad, groups, h, w) in [
        (2, 3, 3, 1, 1, 1, 5, 4),
        (4, 4, 2, 2, 0, 2, 5, 5),
        (3, 3, 3, 1, 1, 3, 4, 4),
    ] {
        let n = 2;
        let mut c = Conv2d {
            in_channels: cin,
            out_channels: cout,
            kernel_h: k,
            kernel_w: k,
            stride: (stride, stride),
            dilation: (1, 1),
            pads: [pad; 4],
            groups,
            weight: random(cout * cin / groups * k * k, 1),
            bias: random(cout, 2),
            activation: Activation::None,
        };
        let (oh, ow) = c.output_hw(h, w).unwrap();
        let x = random(n * cin * h * w, 3);
        let dy = random(n * cout * oh * ow, 4);
        let (mut dw, mut db) = (vec![0.0; c.weight.len()], vec![0.0; cout]);
        let dx = bw::conv2d_backward(&c, &x, &dy, n, h, w, &mut dw, &mut db, true).unwrap();
        let c0 = c.clone();
        check_fd("conv dx", &mut x.clone(), &dx, &mut |x| {
            dot(&edgecut::cpu::reference::conv2d(&c0, x, n, h, w), &dy)
        });
        let mut wv = c.weight.clone();
        check_fd("conv dw", &mut wv, &dw, &mut |wv| {
            c.weight = wv.to_vec();
            dot(&edgecut::cpu::reference::conv2d(&c, &x, n, h, w), &dy)
        });
        c.weight = c0.weight.clone();
        let mut b = c.bias.clone();
        check_fd("conv db", &mut b, &db, &mut |b| {
            c.bias = b.to_vec();
            dot(&edgecut::cpu::reference::conv2d(&c, &x, n, h, w), &dy)
        });
    }
}

#[test]
fn pooling_gradients_match_finite_differences() {
    for (kind, k, s, p) in [
        (PoolKind::Max, 2, 2, 0),
        (PoolKind::Max, 3, 2, 1),
        (PoolKind::Avg, 2, 2, 0),
        (PoolKind::Avg, 3, 1, 1),
    ] {
        let pool = Pool {
            kind,
            kernel_h: k,
            kernel_w: k,
            stride: (s, s),
            pads: [p; 4],
            ceil_mode: false,
            count_include_pad: false,
        };
        let (nc, h, w) = (3, 5, 6);
        let (oh, ow) = pool.output_hw(h, w).unwrap();
        let x = random(nc * h * w, 5);
        let dy = random(nc * oh * ow, 6);
        let dx = bw::pool_backward(&pool, &x, &dy, nc, h, w);
        check_fd(
            &format!("{kind:?} pool dx"),
            &mut x.clone(),
            &dx,
            &mut |x| dot(&edgecut::cpu::reference::pool(&pool, x, nc, h, w), &dy),
        );
    }
    let (nc, hw) = (4, 9);
    let x = random(nc * hw, 7);
    let dy = random(nc, 8);
    let dx = bw::global_avgpool_backward(&dy, hw);
    check_fd("global avgpool dx", &mut x.clone(), &dx, &mut |x| {
        dot(&edgecut::cpu::reference::global_avgpool(x, nc, hw), &dy)
    });
}

#[test]
fn activation_gradients_match_finite_differences() {
    // Values kept away from the kinks of relu and relu6.
    let x: Vec<f32> = random(64, 9)
        .into_iter()
        .map(|v| v * 8.0)
        .filter(|v| v.abs() > 0.05 && (v - 6.0).abs() > 0.05)
        .collect();
    let dy = random(x.len(), 10);
    for act in [
        Activation::Relu,
        Activation::Relu6,
        Activation::Silu,
        Activation::Sigmoid,
    ] {
        let dx = bw::activation_backward(act, &x, &dy);
        check_fd(&format!("{act:?} dx"), &mut x.clone(), &dx, &mut |x| {
            dot(&edgecut::cpu::reference::activation(act, x), &dy)
        });
    }
}

#[test]
fn softmax_cross_entropy_gradient_matches_finite_differences() {
    let classes = 5;
    let labels = [1u8, 4, 0];
    let logits = random(labels.len() * classes, 11);
    let (_, grad) = bw::softmax_cross_entropy(&logits, &labels, classes);
    check_fd(
        "cross-entropy dlogits",
        &mut logits.clone(),
        &grad,
        &mut |l| bw::softmax_cross_entropy(l, &labels, classes).0,
    );
}

fn spec(text: &str) -> TrainSpec {
    let spec: TrainSpec = serde_json::from_str(text).unwrap();
    spec.check().unwrap();
    spec
}

const SMALL_CNN_WITH_EXIT: &str = r#"{
  "name": "tiny", "input": [1, 8, 8], "classes": 4,
  "blocks": [
    {"name": "c1", "ops": [{"op": "conv2d", "out_channels": 3, "kernel": 3, "padding": 1}, {"op": "silu"},
                           {"op": "avgpool", "kernel": 2}]},
    {"name": "c2", "ops": [{"op": "conv2d", "out_channels": 4, "kernel": 3}, {"op": "sigmoid"},
                           {"op": "maxpool", "kernel": 2}, {"op": "flatten"}]},
    {"name": "f1", "ops": [{"op": "fanin", "outputs": 8, "out_degree": 4}, {"op": "silu"},
                           {"op": "dense", "outputs": 4}]}
  ],
  "exits": [{"after_block": "c1", "loss_weight": 0.5,
             "ops": [{"op": "global_avgpool"}, {"op": "flatten"}, {"op": "dense", "outputs": 4}]}],
  "optimizer": {"type": "sgd", "momentum": 0.9}, "lr": 0.1, "batch_size": 4, "epochs": 1, "seed": 3
}"#;

#[test]
fn multi_exit_network_gradients_match_finite_differences() {
    let mut model = spec(SMALL_CNN_WITH_EXIT).build(3).unwrap();
    let n = 3;
    let x = random(n * 64, 12);
    let labels = [0u8, 3, 2];
    let weights = [0.5f32, 1.0];
    let mut net = CpuNet::new(&model);
    net.zero_grads();
    net.forward_backward(&model, &x, &labels, &weights, true);
    let refs = net.refs().to_vec();
    let grads = net.grads.clone();
    let mut checked = 0;
    for (r, g) in refs.iter().zip(&grads) {
        let Some(g) = g else { continue };
        let label = step_at_mut(&mut model, *r).label.clone();
        let mut w = params_mut(&mut step_at_mut(&mut model, *r).op)
            .unwrap()
            .0
            .clone();
        check_fd(&format!("{label} weight"), &mut w, &g.weight, &mut |w| {
            let (wt, _) = params_mut(&mut step_at_mut(&mut model, *r).op).unwrap();
            wt.copy_from_slice(w);
            let mut probe = CpuNet::new(&model);
            probe
                .forward_backward(&model, &x, &labels, &weights, false)
                .loss
        });
        checked += 1;
    }
    assert_eq!(checked, 5, "two convs, one fan-in, two dense layers");
}

fn mnist() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/data/mnist")
}

#[test]
fn a_short_cpu_training_run_lowers_the_loss_of_a_sparse_mlp() {
    let spec = TrainSpec::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/mnist-mlp-sparse/spec.json"),
    )
    .unwrap();
    let train_set = load_mnist(&mnist(), Split::Train).unwrap();
    let test_set = load_mnist(&mnist(), Split::Test).unwrap();
    let mut opts = TrainOptions::new();
    opts.max_steps = Some(60);
    opts.epochs = Some(1);
    let mut losses = Vec::new();
    let (model, summary) = train(
        &spec,
        &train_set,
        &test_set,
        &Backend::Cpu,
        &opts,
        "test",
        &mut |p| {
            if let edgecut::train::Progress::Step { loss, .. } = p {
                losses.push(loss)
            }
        },
    )
    .unwrap();
    assert_eq!(summary.steps, 60);
    let first: f32 = losses[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = losses[50..].iter().sum::<f32>() / 10.0;
    assert!(last < 0.8 * first, "loss {first} -> {last}");
    assert!(summary.test_accuracy > 0.3, "{}", summary.test_accuracy);
    let prov = model.manifest.provenance.as_ref().unwrap();
    assert_eq!(prov["test_accuracy"], summary.test_accuracy);
}

#[test]
fn an_exploding_learning_rate_stops_training_naming_the_epoch_and_layer() {
    let mut s = spec(SMALL_CNN_WITH_EXIT);
    s.input = vec![1, 28, 28];
    s.classes = 10;
    s.blocks[2].ops[2]["outputs"] = 10.into();
    s.exits[0].ops[2]["outputs"] = 10.into();
    s.lr = 1e6;
    s.optimizer = edgecut::train::OptimizerSpec::Sgd { momentum: 0.0 };
    let train_set = load_mnist(&mnist(), Split::Test).unwrap();
    let err = train(
        &s,
        &train_set,
        &train_set,
        &Backend::Cpu,
        &TrainOptions::new(),
        "test",
        &mut |_| {},
    )
    .unwrap_err();
    let TrainError::Diverged { epoch, layer, .. } = &err else {
        panic!("expected divergence, got {err}");
    };
    assert_eq!(*epoch, 1);
    assert!(!layer.is_empty());
    let msg = err.to_string();
    assert!(
        msg.contains("epoch 1") && msg.contains(layer.as_str()),
        "{msg}"
    );
}

#[test]
fn spec_errors_name_the_block_and_op() {
    // (op of block b0, op of block b1, expected message)
    let cases = [
        (
            "flatten",
            r#"{"op": "conv3d", "outputs": 4}"#,
            "unknown variant `conv3d`",
        ),
        (
            "flatten",
            r#"{"op": "fanin", "outputs": 3, "out_degree": 2}"#,
            "valid out-degrees: [3]",
        ),
        (
            "relu",
            r#"{"op": "dense", "outputs": 4}"#,
            "needs a 1-D input",
        ),
        (
            "flatten",
            r#"{"op": "add", "with": "input"}"#,
            "not supported by training",
        ),
        ("flatten", r#"{"op": "tanh"}"#, "not supported by training"),
        (
            "flatten",
            r#"{"op": "concat", "with": ["input"], "axis": 0}"#,
            "not supported by training",
        ),
        (
            "flatten",
            r#"{"op": "relu", "from": "input"}"#,
            "\"from\" is not supported",
        ),
    ];
    for (first, op, want) in cases {
        let text = format!(
            r#"{{"name": "x", "input": [1, 8, 8], "classes": 4,
                 "blocks": [{{"name": "b0", "ops": [{{"op": "{first}"}}]}},
                            {{"name": "b1", "ops": [{op}]}}],
                 "optimizer": {{"type": "adam"}}, "lr": 0.01, "batch_size": 4, "epochs": 1, "seed": 1}}"#
        );
        let err = spec(&text).build(1).unwrap_err().to_string();
        assert!(err.contains(want) && err.contains("b1"), "{op}: {err}");
    }
    let mut s = spec(SMALL_CNN_WITH_EXIT);
    s.exits[0].after_block = "nowhere".into();
    let err = s.build(1).unwrap_err().to_string();
    assert!(err.contains("'nowhere', which does not exist"), "{err}");
}
