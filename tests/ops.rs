//! The ops of imported models (broadcasting binary ops, concat, transpose, pad, reshape, LRN,
//! softmax along an axis, parametrised activations, `from`): every kernel against its CPU
//! reference on random data, odd shapes, batch 1 and 8 and every broadcast pattern; and a
//! small model using them that runs equal on both backends and splits at every block boundary.

mod common;

use common::{assert_close, gpu, random, Tolerance};
use edgecut::cpu::reference as cpu;
use edgecut::engine::{Backend, Plan, PlanOutput};
use edgecut::gpu::{kernels, GpuContext};
use edgecut::model::{
    broadcast_shape, weights, Activation, Binary, BinaryOp, BinaryOperand, Concat, Lrn, Manifest,
    Model, Op, Operand, Step,
};
use edgecut::tensor::Tensor;
use std::sync::Arc;

/// Batches every kernel problem runs with: one sample, a full tile and a tail.
const BATCHES: [usize; 3] = [1, 8, 3];

/// Every activation, the parametrised ones with kinks inside the data's range.
const ACTIVATIONS: [Activation; 10] = [
    Activation::None,
    Activation::Relu,
    Activation::Relu6,
    Activation::Silu,
    Activation::Sigmoid,
    Activation::LeakyRelu(0.1),
    Activation::Clip(-0.25, 0.5),
    Activation::HardSigmoid(0.4, 0.3),
    Activation::HardSwish,
    Activation::Tanh,
];

fn step(op: Op, input_shape: &[usize], output_shape: Vec<usize>) -> Step {
    Step {
        label: format!("test.{}", op.kind_name()),
        op,
        input_shape: input_shape.to_vec(),
        output_shape,
        save_as: None,
        from: None,
    }
}

fn elems(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Transcendental activations are approximate on GPUs; the rest is one rounding away.
fn tolerance_for(act: Activation) -> Tolerance {
    match act {
        Activation::Silu | Activation::Sigmoid | Activation::Tanh => Tolerance::Approximate,
        _ => Tolerance::Close,
    }
}

/// Random values kept at least 0.5 away from zero (divisors).
fn away_from_zero(n: usize, seed: u64) -> Vec<f32> {
    random(n, seed)
        .into_iter()
        .map(|v| v.signum() * (0.5 + v.abs()))
        .collect()
}

struct BinaryProblem {
    batch: usize,
    binary: Binary,
    x_shape: Vec<usize>,
    x: Vec<f32>,
    /// `batch` samples of a tensor operand, or the constant.
    operand: Vec<f32>,
}

impl BinaryProblem {
    fn new(
        batch: usize,
        op: BinaryOp,
        (x_shape, operand_shape): (&[usize], &[usize]),
        constant: bool,
        reverse: bool,
        activation: Activation,
        seed: u64,
    ) -> Self {
        let operand_len = if constant { 1 } else { batch } * elems(operand_shape);
        let operand = away_from_zero(operand_len, seed);
        Self {
            batch,
            binary: Binary {
                op,
                operand: if constant {
                    BinaryOperand::Const(operand.clone())
                } else {
                    BinaryOperand::Tensor(Operand::Saved("y".into()))
                },
                operand_shape: operand_shape.to_vec(),
                reverse,
                activation,
            },
            x_shape: x_shape.to_vec(),
            x: away_from_zero(batch * elems(x_shape), seed + 1),
            operand,
        }
    }

    fn reference(&self) -> Vec<f32> {
        cpu::binary(
            &self.binary,
            &self.x,
            &self.x_shape,
            &self.operand,
            self.batch,
        )
    }

    fn run(&self, ctx: &GpuContext) -> Vec<f32> {
        let out = broadcast_shape(&self.x_shape, &self.binary.operand_shape).expect("broadcasts");
        let s = step(Op::Binary(self.binary.clone()), &self.x_shape, out);
        let others: Vec<&[f32]> = match self.binary.operand {
            BinaryOperand::Tensor(_) => vec![&self.operand],
            BinaryOperand::Const(_) => Vec::new(),
        };
        kernels::run_step(ctx, &s, self.batch, &self.x, &others).expect("binary kernel runs")
    }

    fn check(&self, ctx: &GpuContext) {
        let b = &self.binary;
        let what = format!(
            "{:?} batch={} {:?} with {:?} const={} reverse={} {:?}",
            b.op,
            self.batch,
            self.x_shape,
            b.operand_shape,
            matches!(b.operand, BinaryOperand::Const(_)),
            b.reverse,
            b.activation
        );
        assert_close(
            &what,
            &self.run(ctx),
            &self.reference(),
            tolerance_for(b.activation),
        );
    }
}

#[test]
fn binary_kernels_match_cpu_reference_on_every_broadcast_pattern() {
    let Some(ctx) = gpu("binary_kernels_match_cpu_reference_on_every_broadcast_pattern") else {
        return;
    };
    // (input, operand): scalar, per-channel, row, full, a gate on either side, a lower-rank
    // input stretched by the operand, both sides stretched, rank 4 and rank 1.
    let patterns: [(&[usize], &[usize]); 10] = [
        (&[5, 7, 3], &[1]),
        (&[5, 7, 3], &[5, 1, 1]),
        (&[5, 7, 3], &[3]),
        (&[5, 7, 3], &[5, 7, 3]),
        (&[5, 1, 1], &[5, 7, 3]),
        (&[5, 7, 3], &[5, 1, 1]),
        (&[3], &[5, 7, 3]),
        (&[5, 1, 3], &[1, 7, 1]),
        (&[2, 3, 4, 5], &[3, 1, 5]),
        (&[13], &[13]),
    ];
    let ops = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div];
    let mut case = 0u64;
    for (p, &shapes) in patterns.iter().enumerate() {
        for op in ops {
            for constant in [false, true] {
                let reverse = case % 2 == 1;
                let act = ACTIVATIONS[case as usize % ACTIVATIONS.len()];
                let batch = BATCHES[(p + case as usize) % BATCHES.len()];
                BinaryProblem::new(batch, op, shapes, constant, reverse, act, case * 3).check(&ctx);
                case += 1;
            }
        }
    }
    // The fast paths (same-shape add, channel gates) with every activation, batch 1 and 8.
    for (i, act) in ACTIVATIONS.into_iter().enumerate() {
        for batch in [1, 8] {
            let seed = 500 + i as u64;
            let same: (&[usize], &[usize]) = (&[4, 5, 3], &[4, 5, 3]);
            let gate: (&[usize], &[usize]) = (&[4, 1, 1], &[4, 5, 3]);
            BinaryProblem::new(batch, BinaryOp::Add, same, false, false, act, seed).check(&ctx);
            BinaryProblem::new(batch, BinaryOp::Mul, gate, false, i % 2 == 0, act, seed)
                .check(&ctx);
        }
    }
}

#[test]
fn activations_match_cpu_reference_on_negative_and_large_values() {
    let Some(ctx) = gpu("activations_match_cpu_reference_on_negative_and_large_values") else {
        return;
    };
    // Values in [-12, 12): both sides of every kink and the saturated tails.
    let x: Vec<f32> = random(8 * 37, 9).into_iter().map(|v| v * 12.0).collect();
    for act in ACTIVATIONS {
        let s = step(Op::Activation(act), &[37], vec![37]);
        let got = kernels::run_step(&ctx, &s, 8, &x, &[]).expect("activation runs");
        assert_close(
            &format!("activation {act:?}"),
            &got,
            &cpu::activation(act, &x),
            tolerance_for(act),
        );
    }
}

#[test]
fn concat_transpose_and_pad_kernels_match_cpu_reference() {
    let Some(ctx) = gpu("concat_transpose_and_pad_kernels_match_cpu_reference") else {
        return;
    };
    // Concat: (input, further pieces, axis) over ranks 1 to 4.
    type ConcatCase<'a> = (&'a [usize], &'a [&'a [usize]], usize);
    let concats: [ConcatCase; 5] = [
        (&[7], &[&[3], &[1]], 0),
        (&[3, 5, 4], &[&[2, 5, 4]], 0),
        (&[3, 5, 4], &[&[3, 1, 4], &[3, 6, 4]], 1),
        (&[3, 5, 4], &[&[3, 5, 9]], 2),
        (&[2, 3, 4, 5], &[&[2, 3, 1, 5]], 2),
    ];
    for (i, &(shape, with, axis)) in concats.iter().enumerate() {
        for batch in BATCHES {
            let seed = 100 + i as u64 * 10;
            let x = random(batch * elems(shape), seed);
            let pieces: Vec<Vec<f32>> = with
                .iter()
                .enumerate()
                .map(|(j, s)| random(batch * elems(s), seed + 1 + j as u64))
                .collect();
            let mut out = shape.to_vec();
            out[axis] += with.iter().map(|s| s[axis]).sum::<usize>();
            let op = Op::Concat(Concat {
                axis,
                with: (0..with.len())
                    .map(|j| Operand::Saved(format!("p{j}")))
                    .collect(),
                with_shapes: with.iter().map(|s| s.to_vec()).collect(),
            });
            let others: Vec<&[f32]> = pieces.iter().map(Vec::as_slice).collect();
            let got = kernels::run_step(&ctx, &step(op, shape, out), batch, &x, &others)
                .expect("concat runs");
            let mut refs: Vec<(&[f32], &[usize])> = vec![(&x, shape)];
            refs.extend(pieces.iter().map(Vec::as_slice).zip(with.iter().copied()));
            let what = format!("concat batch={batch} {shape:?} + {with:?} axis {axis}");
            assert_close(
                &what,
                &got,
                &cpu::concat(&refs, axis, batch),
                Tolerance::Exact,
            );
        }
    }
    let transposes: [(&[usize], &[usize]); 5] = [
        (&[6], &[0]),
        (&[5, 7], &[1, 0]),
        (&[3, 5, 4], &[0, 2, 1]),
        (&[3, 5, 4], &[2, 0, 1]),
        (&[2, 3, 4, 5], &[3, 1, 0, 2]),
    ];
    for (i, &(shape, perm)) in transposes.iter().enumerate() {
        for batch in BATCHES {
            let x = random(batch * elems(shape), 200 + i as u64);
            let out = perm.iter().map(|&p| shape[p]).collect();
            let op = Op::Transpose {
                perm: perm.to_vec(),
            };
            let got = kernels::run_step(&ctx, &step(op, shape, out), batch, &x, &[])
                .expect("transpose runs");
            let what = format!("transpose batch={batch} {shape:?} perm {perm:?}");
            let want = cpu::transpose(&x, shape, perm, batch);
            assert_close(&what, &got, &want, Tolerance::Exact);
        }
    }
    let pads: [(&[usize], &[usize], f32); 4] = [
        (&[5], &[2, 3], 0.0),
        (&[3, 4], &[0, 1, 2, 0], -1.5),
        (&[3, 5, 4], &[0, 1, 1, 0, 2, 1], 0.25),
        (&[2, 3, 4, 5], &[1, 0, 0, 2, 0, 1, 3, 0], 0.0),
    ];
    for (i, &(shape, pad, value)) in pads.iter().enumerate() {
        for batch in BATCHES {
            let x = random(batch * elems(shape), 300 + i as u64);
            let r = shape.len();
            let out = (0..r).map(|d| shape[d] + pad[d] + pad[r + d]).collect();
            let op = Op::Pad {
                pads: pad.to_vec(),
                value,
            };
            let got =
                kernels::run_step(&ctx, &step(op, shape, out), batch, &x, &[]).expect("pad runs");
            let what = format!("pad batch={batch} {shape:?} pads {pad:?}");
            let want = cpu::pad(&x, shape, pad, value, batch);
            assert_close(&what, &got, &want, Tolerance::Exact);
        }
    }
}

#[test]
fn lrn_and_softmax_along_an_axis_match_cpu_reference() {
    let Some(ctx) = gpu("lrn_and_softmax_along_an_axis_match_cpu_reference") else {
        return;
    };
    // Sizes 1, even, odd, wider than the channels and near u32::MAX (the window is clipped).
    let lrns: [(&[usize], usize); 6] = [
        (&[7, 5, 3], 1),
        (&[7, 5, 3], 2),
        (&[7, 5, 3], 5),
        (&[16, 2, 2], 15),
        (&[9], 3),
        (&[7, 5, 3], 4_000_000_000),
    ];
    for (i, &(shape, size)) in lrns.iter().enumerate() {
        for batch in BATCHES {
            let x: Vec<f32> = random(batch * elems(shape), 400 + i as u64)
                .into_iter()
                .map(|v| v * 4.0)
                .collect();
            let l = Lrn {
                size,
                alpha: 0.2,
                beta: 0.75,
                bias: 1.5,
            };
            let got = kernels::run_step(
                &ctx,
                &step(Op::Lrn(l), shape, shape.to_vec()),
                batch,
                &x,
                &[],
            )
            .expect("lrn runs");
            let what = format!("lrn batch={batch} {shape:?} size {size}");
            let want = cpu::lrn(&l, &x, shape, batch);
            assert_close(&what, &got, &want, Tolerance::Approximate);
        }
    }
    let softmaxes: [(&[usize], usize); 5] = [
        (&[10], 0),
        (&[4, 5, 6], 0),
        (&[4, 5, 6], 1),
        (&[4, 5, 6], 2),
        (&[2, 3, 4, 5], 1),
    ];
    for (i, &(shape, axis)) in softmaxes.iter().enumerate() {
        for batch in BATCHES {
            let x: Vec<f32> = random(batch * elems(shape), 500 + i as u64)
                .into_iter()
                .map(|v| v * 8.0)
                .collect();
            let op = Op::Softmax { axis };
            let got = kernels::run_step(&ctx, &step(op, shape, shape.to_vec()), batch, &x, &[])
                .expect("softmax runs");
            let what = format!("softmax batch={batch} {shape:?} axis {axis}");
            let want = cpu::softmax_axis(&x, shape, axis, batch);
            assert_close(&what, &got, &want, Tolerance::Approximate);
        }
    }
}

#[test]
fn reference_ops_compute_hand_checked_results() {
    let sub = Binary {
        op: BinaryOp::Sub,
        operand: BinaryOperand::Const(vec![10.0, 20.0]),
        operand_shape: vec![2, 1],
        reverse: true,
        activation: Activation::None,
    };
    // operand [2,1] - x [3] broadcast to [2,3].
    assert_eq!(
        cpu::binary(&sub, &[1.0, 2.0, 3.0], &[3], &[10.0, 20.0], 1),
        [9.0, 8.0, 7.0, 19.0, 18.0, 17.0]
    );
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    assert_eq!(
        cpu::transpose(&x, &[2, 3], &[1, 0], 1),
        [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
    );
    assert_eq!(
        cpu::pad(&[1.0, 2.0], &[1, 2], &[0, 1, 1, 0], 9.0, 1),
        [9.0, 1.0, 2.0, 9.0, 9.0, 9.0]
    );
    let a = [1.0, 2.0, 3.0, 4.0];
    let b = [5.0, 6.0];
    assert_eq!(
        cpu::concat(&[(&a, &[2, 2]), (&b, &[2, 1])], 1, 1),
        [1.0, 2.0, 5.0, 3.0, 4.0, 6.0]
    );
    // LRN size 2 (window [c, c+1]) over 2 channels, alpha 2, beta 1, bias 1: y = x / (1 + Σx²).
    let l = Lrn {
        size: 2,
        alpha: 2.0,
        beta: 1.0,
        bias: 1.0,
    };
    assert_eq!(cpu::lrn(&l, &[1.0, 2.0], &[2], 1), [1.0 / 6.0, 2.0 / 5.0]);
    assert_eq!(Activation::HardSwish.apply(-3.0), 0.0);
    assert_eq!(Activation::HardSwish.apply(3.0), 3.0);
    assert_eq!(Activation::LeakyRelu(0.5).apply(-2.0), -1.0);
    assert_eq!(Activation::Clip(f32::NEG_INFINITY, 1.0).apply(-7.0), -7.0);
    assert_eq!(Activation::HardSigmoid(0.2, 0.5).apply(10.0), 1.0);
}

/// A model using every new op: `from`, binary ops with saved and constant operands (scalar,
/// per-channel and row broadcasts, reversed), concat with the block input, LRN, pad,
/// transpose, reshape, softmax along an axis and the parametrised activations (fused and
/// standalone), with an exit after the first block.
const DAG_MODEL: &str = r#"{
  "format": 1, "name": "import-ops", "input": [3, 8, 8], "classes": 10, "init": {"seed": 5},
  "blocks": [
    {"name": "stem", "ops": [
      {"op": "conv2d", "name": "conv", "out_channels": 8, "kernel": 3, "padding": 1, "bias": true},
      {"op": "leaky_relu", "alpha": 0.1, "save_as": "a"},
      {"op": "mul", "name": "scale", "const": [8, 1, 1]},
      {"op": "add", "name": "shift", "const": [1], "reverse": true},
      {"op": "hard_swish", "save_as": "b"},
      {"op": "sub", "with": "a", "reverse": true},
      {"op": "concat", "with": ["b", "input"], "axis": 0},
      {"op": "lrn", "size": 3}
    ]},
    {"name": "mix", "ops": [
      {"op": "pad", "pads": [0, 1, 1, 0, 1, 1], "value": 0.5},
      {"op": "maxpool", "kernel": 2},
      {"op": "transpose", "perm": [0, 2, 1], "save_as": "t"},
      {"op": "div", "name": "norm", "const": [5]},
      {"op": "clip", "min": -1.0, "max": null},
      {"op": "add", "with": "t"},
      {"op": "tanh"},
      {"op": "reshape", "shape": [19, 25]},
      {"op": "softmax", "axis": 0}
    ]},
    {"name": "head", "ops": [
      {"op": "flatten"},
      {"op": "dense", "name": "fc", "outputs": 10, "bias": true, "save_as": "z"},
      {"op": "tanh", "save_as": "th"},
      {"op": "hard_sigmoid", "from": "z"},
      {"op": "mul", "with": "th"}
    ]}
  ],
  "exits": [
    {"after_block": "stem", "name": "exit_stem", "ops": [
      {"op": "global_avgpool"},
      {"op": "flatten"},
      {"op": "dense", "name": "fc", "outputs": 10, "bias": true}
    ]}
  ]
}"#;

/// The DAG model with random weights and constants (saved and reloaded through
/// safetensors, so the constants travel as `<block>.<op>.value` tensors).
fn dag_model() -> Arc<Model> {
    let manifest: Manifest = serde_json::from_str(DAG_MODEL).expect("the manifest parses");
    let seeded = Model::from_parts(manifest.clone(), DAG_MODEL.as_bytes(), None).expect("loads");
    let mut tensors = seeded.export_tensors().expect("exports");
    for (i, t) in tensors.values_mut().enumerate() {
        if let weights::TensorData::F32(shape, data) = t {
            *data = away_from_zero(shape.iter().product(), 900 + i as u64);
        }
    }
    for key in ["stem.scale.value", "stem.shift.value", "mix.norm.value"] {
        assert!(tensors.contains_key(key), "constant {key} is exported");
    }
    let bytes = weights::serialize(&tensors).expect("serializes");
    let mut manifest = manifest;
    manifest.init = None;
    let json = serde_json::to_vec(&manifest).expect("serializes");
    Arc::new(Model::from_parts(manifest, &json, Some(&bytes)).expect("loads with weights"))
}

fn input(model: &Model, batch: usize, seed: u64) -> Tensor {
    let mut shape = vec![batch];
    shape.extend_from_slice(model.input_shape());
    Tensor::new(shape, random(batch * model.input_elems(), seed)).expect("shape matches")
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
fn a_model_with_the_new_ops_has_the_shapes_its_manifest_implies() {
    let m = dag_model();
    let shapes: Vec<&[usize]> = m.blocks.iter().map(|b| b.output_shape.as_slice()).collect();
    assert_eq!(shapes, [&[19, 8, 8][..], &[19, 25], &[10]]);
    // leaky_relu fuses into the conv, hard_swish into the add, clip into the div, tanh into
    // the add; the tanh after a saved dense output stays standalone.
    let kinds: Vec<&str> = m.blocks[0].steps.iter().map(|s| s.op.kind_name()).collect();
    assert_eq!(kinds, ["conv2d", "mul", "add", "sub", "concat", "lrn"]);
    let head: Vec<&str> = m.blocks[2].steps.iter().map(|s| s.op.kind_name()).collect();
    assert_eq!(
        head,
        ["flatten", "dense", "activation", "activation", "mul"]
    );
    assert_eq!(m.blocks[2].steps[3].from, Some(Operand::Saved("z".into())));
}

#[test]
fn a_model_with_the_new_ops_splits_at_every_block_boundary_on_the_cpu() {
    let m = dag_model();
    let n = m.blocks.len();
    for batch in [1, 8] {
        let x = input(&m, batch, 1);
        let full = run(&m, 0..n, &Backend::Cpu, &x);
        for k in 1..n {
            let head = run(&m, 0..k, &Backend::Cpu, &x);
            let tail = run(&m, k..n, &Backend::Cpu, &head.output);
            assert_eq!(
                tail.output, full.output,
                "batch {batch}, cut after block {k}"
            );
        }
    }
}

#[test]
fn a_model_with_the_new_ops_runs_equal_on_gpu_and_cpu_and_splits_on_the_gpu() {
    let Some(ctx) = gpu("a_model_with_the_new_ops_runs_equal_on_gpu_and_cpu_and_splits_on_the_gpu")
    else {
        return;
    };
    let backend = Backend::Gpu(ctx);
    let m = dag_model();
    let n = m.blocks.len();
    for batch in [1, 8] {
        let x = input(&m, batch, 2);
        let cpu = run(&m, 0..n, &Backend::Cpu, &x);
        let gpu = run(&m, 0..n, &backend, &x);
        let what = format!("import-ops batch {batch}");
        assert_close(
            &what,
            gpu.output.data(),
            cpu.output.data(),
            Tolerance::Approximate,
        );
        for (g, c) in gpu.exits.iter().zip(&cpu.exits) {
            assert_close(
                &format!("{what} exit"),
                g.logits.data(),
                c.logits.data(),
                Tolerance::Approximate,
            );
        }
        for k in 1..n {
            let head = run(&m, 0..k, &backend, &x);
            let tail = run(&m, k..n, &backend, &head.output);
            // The same kernels on the same data: bit-identical.
            assert_eq!(
                tail.output, gpu.output,
                "batch {batch}, cut after block {k}"
            );
        }
    }
}

#[test]
fn bad_new_ops_are_refused_with_errors_naming_the_block_and_op() {
    let cases = [
        (r#"{"op": "add", "const": [5]}"#, "do not broadcast"),
        (
            r#"{"op": "sub", "with": "input", "const": [1]}"#,
            "exactly one second operand",
        ),
        (r#"{"op": "mul"}"#, "exactly one second operand"),
        (
            r#"{"op": "div", "with": "nowhere"}"#,
            "'nowhere' is neither",
        ),
        (
            r#"{"op": "relu", "from": "nowhere"}"#,
            "\"from\": 'nowhere'",
        ),
        (
            r#"{"op": "transpose", "perm": [0, 0, 1]}"#,
            "must be a permutation",
        ),
        (
            r#"{"op": "pad", "pads": [1, 1]}"#,
            "must have 2 x 3 entries",
        ),
        (
            r#"{"op": "reshape", "shape": [5, 5]}"#,
            "element counts differ",
        ),
        (
            r#"{"op": "concat", "with": ["input"], "axis": 3}"#,
            "out of range",
        ),
        (r#"{"op": "softmax", "axis": 3}"#, "out of range"),
        (r#"{"op": "clip", "min": 2.0, "max": 1.0}"#, "min <= max"),
        (r#"{"op": "lrn", "size": 0}"#, "size must be in 1..="),
        (
            r#"{"op": "reshape", "shape": [1, 1, 1, 1, 48]}"#,
            "1..=4 per-sample",
        ),
    ];
    for (op, want) in cases {
        let text = format!(
            r#"{{"format": 1, "name": "bad", "input": [3, 4, 4], "classes": 48, "init": {{"seed": 1}},
                 "blocks": [{{"name": "b0", "ops": [{op}, {{"op": "flatten"}}]}}]}}"#
        );
        let manifest: Manifest = serde_json::from_str(&text).expect("parses as a manifest");
        let err = Model::from_parts(manifest, text.as_bytes(), None)
            .expect_err(op)
            .to_string();
        assert!(err.contains(want) && err.contains("b0"), "{op}: {err}");
    }
}

#[test]
fn a_concat_of_two_saved_tensors_along_channels_matches_a_hand_built_result() {
    // Block input [2, 1, 1]: concat(input, negated input) = [x0, x1, -x0, -x1].
    let text = r#"{"format": 1, "name": "cat", "input": [2, 1, 1], "classes": 4, "init": {"seed": 1},
        "blocks": [{"name": "b0", "ops": [
            {"op": "mul", "name": "neg", "const": [1], "save_as": "n"},
            {"op": "concat", "from": "input", "with": ["n"], "axis": 0},
            {"op": "flatten"}
        ]}]}"#;
    let manifest: Manifest = serde_json::from_str(text).expect("parses");
    let seeded = Model::from_parts(manifest.clone(), text.as_bytes(), None).expect("loads");
    let mut tensors = seeded.export_tensors().expect("exports");
    tensors.insert(
        "b0.neg.value".into(),
        weights::TensorData::F32(vec![1], vec![-1.0]),
    );
    let bytes = weights::serialize(&tensors).expect("serializes");
    let m = Arc::new(Model::from_parts(manifest, text.as_bytes(), Some(&bytes)).expect("loads"));
    let x = Tensor::new(vec![1, 2, 1, 1], vec![3.0, -5.0]).expect("shape");
    let y = run(&m, 0..1, &Backend::Cpu, &x);
    assert_eq!(y.output.data(), [3.0, -5.0, -3.0, 5.0]);
}
