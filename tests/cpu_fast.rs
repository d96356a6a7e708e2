//! The CPU backend's fast kernels against the plain reference loops on random data and edge
//! shapes (tails off the SIMD width, k = 1, batch 1 and 8, stride 2, asymmetric padding,
//! dilation, groups, depthwise 3x3 and 5x5, large planes), and whole shipped models run by
//! the CPU engine against the reference chain.

mod common;

use common::{assert_close, random, Tolerance};
use edgecut::cpu::fast::layout;
use edgecut::cpu::{fast, reference};
use edgecut::engine::{run_steps_reference, Backend, Plan};
use edgecut::model::{
    Activation, Binary, BinaryOp, BinaryOperand, Conv2d, Dense, FanIn, Model, Operand, Pool,
    PoolKind,
};
use edgecut::tensor::Tensor;
use std::path::PathBuf;
use std::sync::Arc;

const ACTIVATIONS: [Activation; 5] = [
    Activation::None,
    Activation::Relu,
    Activation::Relu6,
    Activation::Silu,
    Activation::Sigmoid,
];

/// Sums of many terms in another order, and the polynomial `exp` of silu/sigmoid, differ from
/// the reference by more than a few ulp; short plain sums do not.
fn tolerance_for(act: Activation, terms: usize) -> Tolerance {
    if matches!(act, Activation::Silu | Activation::Sigmoid) || terms > 256 {
        Tolerance::Approximate
    } else {
        Tolerance::Close
    }
}

/// Whole models: dozens of layers of reordered sums; the same bound the GPU plans meet.
const WHOLE_MODEL: Tolerance = Tolerance::Approximate;

/// Pooling reorders no arithmetic for max, and only the 8-lane sums for averages.
const POOL_MAX: Tolerance = Tolerance::Exact;
const POOL_AVG: Tolerance = Tolerance::Close;

#[derive(Debug, Clone, Copy)]
struct Geometry {
    stride: (usize, usize),
    dilation: (usize, usize),
    pads: [usize; 4],
}

fn plain(stride: usize, pad: usize) -> Geometry {
    Geometry {
        stride: (stride, stride),
        dilation: (1, 1),
        pads: [pad; 4],
    }
}

/// One convolution problem: the reference and the fast kernel on the same random data.
struct ConvProblem {
    batch: usize,
    h: usize,
    w: usize,
    conv: Conv2d,
    x: Vec<f32>,
}

impl ConvProblem {
    #[allow(clippy::too_many_arguments)] // one value per axis of the shape space under test
    fn new(
        batch: usize,
        (cin, h, w): (usize, usize, usize),
        cout: usize,
        (kh, kw): (usize, usize),
        geometry: Geometry,
        groups: usize,
        act: Activation,
        seed: u64,
    ) -> Self {
        Self {
            batch,
            h,
            w,
            conv: Conv2d {
                in_channels: cin,
                out_channels: cout,
                kernel_h: kh,
                kernel_w: kw,
                stride: geometry.stride,
                dilation: geometry.dilation,
                pads: geometry.pads,
                groups,
                weight: random(cout * cin / groups * kh * kw, seed),
                bias: random(cout, seed + 1),
                activation: act,
            },
            x: random(batch * cin * h * w, seed + 2),
        }
    }

    fn check(&self) {
        let c = &self.conv;
        let want = reference::conv2d(c, &self.x, self.batch, self.h, self.w);
        let got = fast::conv2d(c, &self.x, self.batch, self.h, self.w);
        let what = format!(
            "conv batch={} {}x{}x{} -> {} k={}x{} stride={:?} dilation={:?} pads={:?} g={} {:?}",
            self.batch,
            c.in_channels,
            self.h,
            self.w,
            c.out_channels,
            c.kernel_h,
            c.kernel_w,
            c.stride,
            c.dilation,
            c.pads,
            c.groups,
            c.activation
        );
        let terms = c.in_channels / c.groups * c.kernel_h * c.kernel_w;
        let tolerance = tolerance_for(c.activation, terms);
        assert_close(&what, &got, &want, tolerance);
        if fast::runs_batch_inner(c) {
            // The same batch laid out `[c, n, h, w]`, one GEMM over every sample.
            let n = self.batch;
            let x = layout::to_batch_inner(&self.x, n, c.in_channels);
            let y = fast::conv2d_batch_inner(c, &x, n, self.h, self.w);
            let got = layout::to_batch_outer(&y, n, c.out_channels);
            assert_close(&format!("batch-inner {what}"), &got, &want, tolerance);
        }
    }
}

#[test]
fn fast_convolutions_match_the_reference_on_edge_shapes() {
    let same3 = Geometry {
        pads: [0, 0, 1, 1],
        ..plain(2, 0)
    };
    let same5 = Geometry {
        pads: [1, 1, 2, 2],
        ..plain(2, 0)
    };
    let dilated = Geometry {
        dilation: (2, 2),
        ..plain(1, 2)
    };
    let dilated_s2 = Geometry {
        dilation: (2, 2),
        ..plain(2, 2)
    };
    let wide = Geometry {
        stride: (1, 2),
        dilation: (2, 1),
        pads: [2, 0, 1, 3],
    };
    let cases = [
        // batch, input, out, kernel, geometry, groups
        (1, (1, 28, 28), 6, (5, 5), plain(1, 2), 1),
        (8, (3, 17, 13), 8, (3, 3), plain(2, 1), 1), // stride 2 with padding, odd sizes
        (1, (3, 9, 9), 5, (3, 3), plain(1, 0), 1),
        (3, (8, 7, 5), 8, (1, 1), plain(1, 0), 1), // pointwise, 35-value planes
        (8, (13, 1, 1), 5, (1, 1), plain(1, 0), 1), // squeeze-excite 1x1 on 1x1, batch 8
        (1, (40, 1, 1), 10, (1, 1), plain(1, 0), 1), // squeeze-excite 1x1 on 1x1, batch 1
        (2, (6, 9, 11), 4, (1, 1), plain(2, 0), 1), // 1x1 stride 2
        (1, (6, 5, 7), 4, (1, 1), plain(1, 1), 1), // 1x1 padded
        (2, (8, 11, 11), 8, (3, 3), plain(1, 1), 8), // depthwise 3x3
        (8, (16, 15, 15), 16, (5, 5), plain(2, 2), 16), // depthwise 5x5 stride 2
        (1, (4, 3, 2), 4, (5, 5), plain(1, 2), 4), // depthwise, kernel wider than the plane
        (1, (8, 6, 6), 16, (3, 3), plain(1, 1), 2), // grouped
        (1, (6, 5, 5), 12, (3, 3), plain(2, 1), 3), // grouped, 4 outputs per group
        (2, (4, 7, 7), 8, (3, 3), plain(1, 1), 4), // channel multiplier 2
        (2, (3, 16, 15), 8, (3, 3), same3, 1),     // asymmetric padding
        (1, (8, 13, 14), 8, (5, 5), same5, 8),     // depthwise, asymmetric padding
        (2, (4, 9, 10), 4, (3, 3), dilated, 1),    // dilation
        (1, (5, 9, 9), 5, (3, 3), dilated, 5),     // depthwise, dilation
        (1, (5, 11, 12), 7, (3, 3), wide, 1),      // per-axis stride and dilation
        (1, (6, 11, 12), 6, (3, 3), wide, 6),      // depthwise, per-axis stride and dilation
        (1, (3, 8, 9), 4, (1, 3), plain(1, 1), 1), // non-square kernel
        (1, (7, 5, 5), 7, (3, 3), plain(3, 1), 7), // depthwise stride 3: nine phase planes
        (2, (5, 13, 12), 5, (3, 3), dilated_s2, 5), // depthwise, dilation with stride 2
        (1, (3, 1, 9), 3, (1, 3), plain(1, 1), 3), // depthwise on one-row planes
        // Unpadded stride 1 at batch > 1: the full-width batch-inner path (LeNet's 5x5s).
        (8, (1, 28, 28), 6, (5, 5), plain(1, 0), 1),
        (3, (6, 12, 11), 16, (5, 5), plain(1, 0), 1),
        (2, (3, 5, 7), 4, (3, 2), plain(1, 0), 1),
        (9, (2, 3, 3), 3, (3, 3), plain(1, 0), 1), // 1x1 output planes
    ];
    for (i, &(b, input, cout, kernel, geometry, g)) in cases.iter().enumerate() {
        for act in ACTIVATIONS {
            ConvProblem::new(b, input, cout, kernel, geometry, g, act, i as u64 * 13).check();
        }
    }
}

#[test]
fn fast_convolutions_match_the_reference_at_efficientnet_sizes() {
    // Pointwise expansion, depthwise 3x3 and 5x5 and a stem on large planes, batch 1 and 2.
    let cases = [
        (1, (24, 56, 56), 144, (1, 1), plain(1, 0), 1),
        (2, (40, 28, 28), 240, (1, 1), plain(1, 0), 1),
        (1, (96, 56, 56), 96, (3, 3), plain(2, 1), 96),
        (1, (144, 28, 28), 144, (5, 5), plain(1, 2), 144),
        (1, (3, 64, 64), 32, (3, 3), plain(2, 1), 1),
        // Pointwise on 7x7 planes: blocks of output channels carry the parallelism.
        (1, (192, 7, 7), 1152, (1, 1), plain(1, 0), 1),
        (8, (1152, 7, 7), 197, (1, 1), plain(1, 0), 1),
        // Pointwise on a large plane: blocks of positions with a tail, batch 8.
        (8, (16, 37, 41), 96, (1, 1), plain(1, 0), 1),
        (1, (96, 112, 112), 24, (1, 1), plain(1, 0), 1),
    ];
    for (i, &(b, input, cout, kernel, geometry, g)) in cases.iter().enumerate() {
        let act = Activation::Silu;
        ConvProblem::new(b, input, cout, kernel, geometry, g, act, 500 + i as u64).check();
    }
}

#[test]
fn fast_dense_matches_the_reference_with_tails_and_batches() {
    for (i, &(batch, inputs, outputs)) in [
        (1, 1, 1),
        (1, 800, 100),
        (8, 7, 3),
        (8, 33, 129),
        (64, 800, 100),
        (3, 100, 10),
    ]
    .iter()
    .enumerate()
    {
        for act in ACTIVATIONS {
            let d = Dense {
                inputs,
                outputs,
                weight: random(inputs * outputs, i as u64),
                bias: random(outputs, i as u64 + 1),
                activation: act,
            };
            let x = random(batch * inputs, i as u64 + 2);
            let what = format!("dense batch={batch} {inputs}->{outputs} {act:?}");
            assert_close(
                &what,
                &fast::dense(&d, &x, batch),
                &reference::dense(&d, &x, batch),
                tolerance_for(act, inputs),
            );
        }
    }
}

fn random_fanin(inputs: usize, outputs: usize, k: usize, act: Activation, seed: u64) -> FanIn {
    let mut indices = Vec::with_capacity(outputs * k);
    for o in 0..outputs {
        let mut row: Vec<u32> = (0..inputs as u32).collect();
        let keys = random(inputs, seed + 100 + o as u64);
        row.sort_by(|a, b| keys[*a as usize].total_cmp(&keys[*b as usize]));
        indices.extend_from_slice(&row[..k]);
    }
    FanIn {
        inputs,
        outputs,
        k,
        indices,
        weights: random(outputs * k, seed),
        bias: random(outputs, seed + 1),
        activation: act,
    }
}

#[test]
fn fast_fanin_matches_the_reference_on_its_sparse_and_dense_paths() {
    // batch, inputs, outputs, k: sparse and dense, k = 1, k = inputs, batch 1, 3, 8, 64.
    let cases = [
        (1, 800, 40, 40),
        (1, 84, 10, 84),
        (3, 17, 5, 1),
        (8, 800, 100, 160),
        (8, 120, 84, 20),
        (64, 800, 40, 40),
        (64, 100, 10, 100),
        (64, 256, 120, 64),
        (9, 13, 7, 13),
    ];
    let mut paths = [false; 2];
    for (i, &(batch, inputs, outputs, k)) in cases.iter().enumerate() {
        for act in [Activation::None, Activation::Relu, Activation::Silu] {
            let f = random_fanin(inputs, outputs, k, act, i as u64 * 7);
            let x = random(batch * inputs, i as u64 + 3);
            paths[fast::fanin_runs_dense(&f, batch) as usize] = true;
            let what = format!("fanin batch={batch} {inputs}->{outputs} k={k} {act:?}");
            assert_close(
                &what,
                &fast::fanin(&f, &x, batch),
                &reference::fanin(&f, &x, batch),
                tolerance_for(act, k),
            );
        }
    }
    assert_eq!(
        paths,
        [true, true],
        "both the sparse and the dense path ran"
    );
}

#[test]
fn fast_pooling_matches_the_reference() {
    // batch·channels, h, w, kernel, stride, pads [t, l, b, r], ceil_mode, count_include_pad
    let cases = [
        (1, 28, 28, (2, 2), (2, 2), [0; 4], false, false),
        (6, 7, 9, (3, 3), (2, 2), [1; 4], false, false),
        (6, 7, 9, (3, 3), (2, 2), [1; 4], false, true),
        (3, 5, 5, (2, 2), (2, 2), [0; 4], true, false),
        (2, 6, 7, (3, 2), (1, 2), [0, 1, 2, 1], true, true),
        (5, 33, 17, (3, 3), (1, 1), [1; 4], false, false),
        // Windows inside the input: 2x2 pairs with a dropped odd column, 3x3 at stride 1 and 2.
        (4, 9, 11, (2, 2), (2, 2), [0; 4], false, false),
        (3, 10, 12, (3, 3), (1, 1), [0; 4], false, true),
        (2, 13, 13, (3, 3), (2, 2), [0; 4], false, false),
        (2, 1, 1, (1, 1), (1, 1), [0; 4], false, false),
    ];
    for &(nc, h, w, (kh, kw), stride, pads, ceil_mode, count_include_pad) in &cases {
        for kind in [PoolKind::Max, PoolKind::Avg] {
            let p = Pool {
                kind,
                kernel_h: kh,
                kernel_w: kw,
                stride,
                pads,
                ceil_mode,
                count_include_pad,
            };
            let x = random(nc * h * w, (h * w) as u64);
            let tol = if kind == PoolKind::Max {
                POOL_MAX
            } else {
                POOL_AVG
            };
            assert_close(
                &format!("{p:?} on {nc}x{h}x{w}"),
                &fast::pool(&p, &x, nc, h, w),
                &reference::pool(&p, &x, nc, h, w),
                tol,
            );
        }
    }
}

#[test]
fn fast_squeeze_excite_pieces_match_the_reference() {
    for &(nc, hw) in &[(1, 1), (3, 7), (16, 49), (96, 12544), (5, 9)] {
        let x = random(nc * hw, hw as u64);
        assert_close(
            &format!("global_avgpool {nc}x{hw}"),
            &fast::global_avgpool(&x, nc, hw),
            &reference::global_avgpool(&x, nc, hw),
            Tolerance::Approximate,
        );
        let gate = random(nc, 9);
        assert_close(
            &format!("gate mul {nc}x{hw}"),
            &fast::mul(&gate, &x, hw),
            &reference::mul(&gate, &x, hw),
            Tolerance::Exact,
        );
    }
}

/// The residual add, the squeeze-excite gate (either operand first), constants and general
/// broadcasts, each with every op, batch 1 and 3, and tails off the SIMD width.
#[test]
fn fast_binary_ops_match_the_reference_on_every_broadcast() {
    // (per-sample x shape, operand shape, constant operand)
    let cases: [(&[usize], &[usize], bool); 10] = [
        (&[5, 7, 9], &[5, 7, 9], false),  // residual add
        (&[5, 1, 1], &[5, 7, 9], false),  // gate first, planes second (EfficientNet's export)
        (&[6, 11, 3], &[6, 1, 1], false), // planes first
        (&[5, 7, 9], &[1], true),         // constant scalar
        (&[3, 4, 5], &[4, 1], true),      // constant broadcast along a middle axis
        (&[4, 1, 6], &[1, 5, 1], false),  // both operands stretched
        (&[7], &[3, 1], false),           // operand of higher rank
        (&[2, 3, 4, 5], &[3, 1, 1], true),
        (&[3, 1, 1], &[3, 1, 1], false), // 1x1 planes
        (&[33], &[33], false),
    ];
    let ops = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div];
    for (i, &(x_shape, o_shape, constant)) in cases.iter().enumerate() {
        for n in [1, 3] {
            for (j, &op) in ops.iter().enumerate() {
                for reverse in [false, true] {
                    let act = ACTIVATIONS[(i + j) % ACTIVATIONS.len()];
                    let seed = (i * 100 + j * 10 + n) as u64;
                    let o_elems: usize = o_shape.iter().product();
                    // Divisors kept away from zero.
                    let mut operand = random(if constant { o_elems } else { n * o_elems }, seed);
                    operand.iter_mut().for_each(|v| *v = v.abs() + 0.5);
                    let mut x = random(n * x_shape.iter().product::<usize>(), seed + 1);
                    x.iter_mut().for_each(|v| *v = v.abs() + 0.5);
                    let b = Binary {
                        op,
                        operand: if constant {
                            BinaryOperand::Const(operand.clone())
                        } else {
                            BinaryOperand::Tensor(Operand::BlockInput)
                        },
                        operand_shape: o_shape.to_vec(),
                        reverse,
                        activation: act,
                    };
                    assert_close(
                        &format!(
                            "{op:?} {x_shape:?} with {o_shape:?} n={n} reverse={reverse} {act:?}"
                        ),
                        &fast::binary(&b, &x, x_shape, &operand, n),
                        &reference::binary(&b, &x, x_shape, &operand, n),
                        tolerance_for(act, 1),
                    );
                }
            }
        }
    }
    let x = random(3 * 40_000 + 5, 3);
    for act in ACTIVATIONS {
        assert_close(
            &format!("activation {act:?}"),
            &fast::activation(act, &x),
            &reference::activation(act, &x),
            tolerance_for(act, 1),
        );
    }
}

fn shipped_models() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("models directory exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.json").is_file())
        .collect();
    found.sort();
    found
}

#[test]
fn cpu_engine_matches_the_reference_on_every_shipped_model() {
    let mut models = shipped_models();
    assert!(models.len() >= 7, "shipped models found: {models:?}");
    // Every op kind on 9x9 planes: each layout boundary of the batch-inner engine.
    models.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/export/all-ops"));
    for dir in models {
        let m = Arc::new(Model::load(&dir).expect("shipped model loads"));
        // Image models at 224x224 run once; the small models at a batch with SIMD tails.
        let batch = if m.input_elems() > 10_000 { 1 } else { 9 };
        let mut shape = vec![batch];
        shape.extend_from_slice(m.input_shape());
        let x = Tensor::new(shape, random(batch * m.input_elems(), 5)).expect("input shape");
        let n = m.blocks.len();
        let got = Plan::compile(&m, 0..n, &Backend::Cpu, batch)
            .expect("plan compiles")
            .run(&x)
            .expect("plan runs");
        let mut want = x.data().to_vec();
        for (b, block) in m.blocks.iter().enumerate() {
            want = run_steps_reference(&block.steps, want, batch);
            for (e, exit) in m
                .exits
                .iter()
                .enumerate()
                .filter(|(_, e)| e.after_block == b)
            {
                let logits = run_steps_reference(&exit.steps, want.clone(), batch);
                let out = got
                    .exits
                    .iter()
                    .find(|o| o.exit == e)
                    .expect("every exit inside the range runs");
                assert_close(
                    &format!("{} exit {e}", m.name()),
                    out.logits.data(),
                    &logits,
                    WHOLE_MODEL,
                );
            }
        }
        assert_close(m.name(), got.output.data(), &want, WHOLE_MODEL);
    }
}

#[test]
fn thread_count_changes_speed_not_results() {
    let p = ConvProblem::new(
        2,
        (16, 20, 20),
        24,
        (3, 3),
        plain(1, 1),
        1,
        Activation::Relu,
        77,
    );
    let run = |threads| {
        edgecut::cpu::set_threads(threads).expect("pool starts");
        assert_eq!(edgecut::cpu::threads(), threads);
        edgecut::cpu::threads::install(|| fast::conv2d(&p.conv, &p.x, p.batch, p.h, p.w))
    };
    let one = run(1);
    let three = run(3);
    assert_close("1 vs 3 threads", &three, &one, Tolerance::Close);
    p.check();
}
