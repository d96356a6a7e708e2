//! Compiling a manifest op list (a block or an exit head) into executable steps: each op's shape
//! rule ([`OpKind::output_shape`]) checks it against its input, its tensors are fetched and
//! counted, batchnorm folds into the preceding op and activations fuse into it.

use super::manifest::{OperandSpec, Pads, Size2};
use super::op::{
    Activation, Binary, BinaryOperand, Concat, Conv2d, Dense, FanIn, Lrn, Op, Operand, Pool,
    PoolKind, Step,
};
use super::weights::{Role, WeightSource};
use super::{checked_elems, BinaryOp, BlockStats, ModelError, OpKind, OpSpec};
use super::{MAX_MODEL_PARAMS, MAX_TENSOR_ELEMS};
use crate::sparsity::FanInPattern;
use std::collections::HashMap;

/// Parses, shape-checks and compiles one op list: fetches weights, folds batchnorm into the
/// preceding conv/dense/fan-in and fuses activations. `declared` counts the model's parameters
/// so far; every op's sizes are bounded against it before any tensor is allocated.
pub(super) fn compile_ops(
    block: &str,
    ops: &[serde_json::Value],
    input_shape: &[usize],
    source: &WeightSource<'_>,
    declared: &mut usize,
) -> Result<(Vec<Step>, BlockStats), ModelError> {
    let mut steps: Vec<Step> = Vec::new();
    let mut stats = BlockStats::default();
    let mut shape = input_shape.to_vec();
    let mut saved: HashMap<String, Vec<usize>> = HashMap::new();
    for (index, value) in ops.iter().enumerate() {
        let op_label = value
            .get("op")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string();
        let err = |reason: String| ModelError::Op {
            block: block.to_string(),
            index,
            op: op_label.clone(),
            reason,
        };
        let spec = OpSpec::parse(value, index).map_err(&err)?;
        let from = spec
            .from
            .as_deref()
            .map(|f| operand("from", f, input_shape, &saved))
            .transpose()
            .map_err(&err)?;
        let in_shape = from.as_ref().map_or(&shape, |(_, s)| s).clone();
        let operands = block_operands(&spec.kind, input_shape, &saved).map_err(&err)?;
        let operand_shapes: Vec<&[usize]> = operands.iter().map(|(_, s)| s.as_slice()).collect();
        let out_shape = spec
            .kind
            .output_shape(&in_shape, &operand_shapes)
            .map_err(&err)?;
        check_sizes(&spec.kind, &in_shape, &out_shape, declared).map_err(&err)?;
        let tensors = Tensors {
            prefix: format!("{block}.{}", spec.name),
            source,
        };
        let op = compile_op(
            &spec.kind,
            (&in_shape, &out_shape),
            operands,
            &tensors,
            // An op reading anything but the previous output cannot fold or fuse into it.
            if from.is_some() {
                &mut []
            } else {
                &mut steps[..]
            },
            &mut stats,
            &err,
        )?;
        let Some(op) = op else {
            // Fused into the previous step, which now also produces what this op saves.
            if let Some(label) = &spec.save_as {
                if let Some(prev) = steps.last_mut() {
                    prev.save_as = Some(label.clone());
                }
                saved.insert(label.clone(), shape.clone());
            }
            continue;
        };
        if let Some(label) = &spec.save_as {
            saved.insert(label.clone(), out_shape.clone());
        }
        steps.push(Step {
            label: tensors.prefix,
            op,
            input_shape: in_shape,
            output_shape: out_shape.clone(),
            save_as: spec.save_as.clone(),
            from: from.map(|(o, _)| o),
        });
        shape = out_shape;
    }
    Ok((steps, stats))
}

/// The block tensors an op reads besides its input (`with` of a binary op or a concat), with
/// their shapes.
fn block_operands(
    kind: &OpKind,
    block_input: &[usize],
    saved: &HashMap<String, Vec<usize>>,
) -> Result<Vec<(Operand, Vec<usize>)>, String> {
    if let Some(binary) = kind.binary() {
        return match binary?.1 {
            OperandSpec::With(w) => Ok(vec![operand("with", w, block_input, saved)?]),
            OperandSpec::Const(_) => Ok(Vec::new()),
        };
    }
    match kind {
        OpKind::Concat { with, .. } => with
            .iter()
            .map(|w| operand("with", w, block_input, saved))
            .collect(),
        _ => Ok(Vec::new()),
    }
}

/// Bounds an op's output and its declared tensors by [`MAX_TENSOR_ELEMS`] and the model's
/// running parameter count by [`MAX_MODEL_PARAMS`], with overflow-checked products, before
/// [`compile_op`] allocates (or draws) anything.
fn check_sizes(
    kind: &OpKind,
    input: &[usize],
    output: &[usize],
    declared: &mut usize,
) -> Result<(), String> {
    let too_big = |what: &str, shape: &[usize]| {
        format!(
            "{what} {shape:?} has more than {MAX_TENSOR_ELEMS} elements (or overflows); reduce the sizes in model.json"
        )
    };
    if checked_elems(output).is_none_or(|n| n > MAX_TENSOR_ELEMS) {
        return Err(too_big("output shape", output));
    }
    let c = input.first().copied().unwrap_or(0);
    let tensors: Vec<Vec<usize>> = match kind {
        OpKind::Conv2d {
            out_channels,
            kernel,
            groups,
            ..
        } => {
            let (kh, kw) = kernel.hw();
            vec![
                vec![*out_channels, c / (*groups).max(1), kh, kw],
                vec![*out_channels],
            ]
        }
        OpKind::Dense { outputs, .. } => vec![vec![*outputs, c], vec![*outputs]],
        OpKind::Fanin { outputs, k, .. } => {
            vec![vec![*outputs, *k], vec![*outputs, *k], vec![*outputs]]
        }
        OpKind::Batchnorm { .. } => vec![vec![c]; 4],
        _ => match kind.binary() {
            Some(Ok((_, OperandSpec::Const(shape), _))) => vec![shape.to_vec()],
            _ => Vec::new(),
        },
    };
    for shape in &tensors {
        let n = checked_elems(shape)
            .filter(|&n| n <= MAX_TENSOR_ELEMS)
            .ok_or_else(|| too_big("weight shape", shape))?;
        *declared = declared
            .checked_add(n)
            .filter(|&t| t <= MAX_MODEL_PARAMS)
            .ok_or_else(|| {
                format!(
                    "the model declares more than {MAX_MODEL_PARAMS} parameters up to this op; reduce the sizes in model.json"
                )
            })?;
    }
    Ok(())
}

/// A tensor of the block named in field `field`: the block input or a tensor saved earlier.
fn operand(
    field: &str,
    name: &str,
    block_input: &[usize],
    saved: &HashMap<String, Vec<usize>>,
) -> Result<(Operand, Vec<usize>), String> {
    if name == "input" {
        return Ok((Operand::BlockInput, block_input.to_vec()));
    }
    let shape = saved.get(name).ok_or_else(|| {
        format!(
            "\"{field}\": '{name}' is neither \"input\" nor an earlier save_as label in this block"
        )
    })?;
    Ok((Operand::Saved(name.to_string()), shape.clone()))
}

/// A pooling op; the stride defaults to the window.
fn pool_op(
    kind: PoolKind,
    kernel: Size2,
    stride: Option<Size2>,
    padding: Pads,
    ceil_mode: bool,
    count_include_pad: bool,
) -> Op {
    let (kernel_h, kernel_w) = kernel.hw();
    Op::Pool(Pool {
        kind,
        kernel_h,
        kernel_w,
        stride: stride.unwrap_or(kernel).hw(),
        pads: padding.sides(),
        ceil_mode,
        count_include_pad,
    })
}

/// An op's tensors: `<block>.<op>.<param>` keys in the weight source.
struct Tensors<'a, 's> {
    prefix: String,
    source: &'a WeightSource<'s>,
}

impl Tensors<'_, '_> {
    fn key(&self, param: &str) -> String {
        format!("{}.{param}", self.prefix)
    }

    fn f32(&self, param: &str, shape: &[usize], role: Role) -> Result<Vec<f32>, ModelError> {
        self.source.f32(&self.key(param), shape, role)
    }

    /// The stored bias, or zeros when the op has none.
    fn bias(&self, present: bool, n: usize) -> Result<Vec<f32>, ModelError> {
        if present {
            self.f32("bias", &[n], Role::Zero)
        } else {
            Ok(vec![0.0; n])
        }
    }
}

/// Builds one op whose `(input, output)` shapes its shape rule has checked, counting its
/// parameters and work in `stats`; `None` when it folded or fused into the last of `steps`.
fn compile_op(
    kind: &OpKind,
    (input, output): (&[usize], &[usize]),
    operands: Vec<(Operand, Vec<usize>)>,
    tensors: &Tensors<'_, '_>,
    steps: &mut [Step],
    stats: &mut BlockStats,
    err: &dyn Fn(String) -> ModelError,
) -> Result<Option<Op>, ModelError> {
    let bias_params = |present: bool, n: usize| if present { n } else { 0 };
    Ok(Some(match kind {
        OpKind::Conv2d {
            out_channels,
            kernel,
            stride,
            padding,
            dilation,
            groups,
            bias,
        } => {
            let c = input[0];
            let (kh, kw) = kernel.hw();
            let fan_in = c / groups * kh * kw;
            let weight = tensors.f32(
                "weight",
                &[*out_channels, c / groups, kh, kw],
                Role::Weight { fan_in },
            )?;
            let n = out_channels * fan_in;
            stats.params += n + bias_params(*bias, *out_channels);
            stats.nonzero_weights += n;
            stats.macs += n * output[1] * output[2];
            Op::Conv2d(Conv2d {
                in_channels: c,
                out_channels: *out_channels,
                kernel_h: kh,
                kernel_w: kw,
                stride: stride.hw(),
                dilation: dilation.hw(),
                pads: padding.sides(),
                groups: *groups,
                weight,
                bias: tensors.bias(*bias, *out_channels)?,
                activation: Activation::None,
            })
        }
        OpKind::Dense { outputs, bias } => {
            let inputs = input[0];
            let weight = tensors.f32(
                "weight",
                &[*outputs, inputs],
                Role::Weight { fan_in: inputs },
            )?;
            stats.params += inputs * outputs + bias_params(*bias, *outputs);
            stats.nonzero_weights += inputs * outputs;
            stats.macs += inputs * outputs;
            Op::Dense(Dense {
                inputs,
                outputs: *outputs,
                weight,
                bias: tensors.bias(*bias, *outputs)?,
                activation: Activation::None,
            })
        }
        OpKind::Fanin {
            outputs,
            k,
            group,
            bias,
            ..
        } => {
            let indices = fanin_indices(tensors, input[0], *outputs, *k, *group)?;
            let weights = tensors.f32("weights", &[*outputs, *k], Role::Weight { fan_in: *k })?;
            stats.params += outputs * k + bias_params(*bias, *outputs);
            stats.nonzero_weights += outputs * k;
            stats.macs += outputs * k;
            Op::FanIn(FanIn {
                inputs: input[0],
                outputs: *outputs,
                k: *k,
                indices,
                weights,
                bias: tensors.bias(*bias, *outputs)?,
                activation: Activation::None,
            })
        }
        OpKind::Maxpool {
            kernel,
            stride,
            padding,
            ceil_mode,
        } => pool_op(PoolKind::Max, *kernel, *stride, *padding, *ceil_mode, false),
        OpKind::Avgpool {
            kernel,
            stride,
            padding,
            ceil_mode,
            count_include_pad,
        } => pool_op(
            PoolKind::Avg,
            *kernel,
            *stride,
            *padding,
            *ceil_mode,
            *count_include_pad,
        ),
        OpKind::GlobalAvgpool => Op::GlobalAvgPool,
        OpKind::Flatten | OpKind::Reshape { .. } => Op::Flatten,
        OpKind::Softmax { axis } => Op::Softmax {
            axis: axis.unwrap_or(input.len() - 1),
        },
        OpKind::Add { .. } | OpKind::Sub { .. } | OpKind::Mul { .. } | OpKind::Div { .. } => {
            let Some(Ok((op, spec, reverse))) = kind.binary() else {
                return Err(err("the shape rule checked the binary operand".into()));
            };
            let (operand, operand_shape) = match spec {
                OperandSpec::With(_) => {
                    let (o, shape) = operands
                        .into_iter()
                        .next()
                        .ok_or_else(|| err("a binary op needs a second operand".into()))?;
                    (BinaryOperand::Tensor(o), shape)
                }
                OperandSpec::Const(shape) => {
                    // Seeded (untrained) models get the identity operand of the op.
                    let role = match op {
                        BinaryOp::Add | BinaryOp::Sub => Role::Zero,
                        BinaryOp::Mul | BinaryOp::Div => Role::One,
                    };
                    let value = tensors.f32("value", shape, role)?;
                    stats.params += value.len();
                    (BinaryOperand::Const(value), shape.to_vec())
                }
            };
            Op::Binary(Binary {
                op,
                operand,
                operand_shape,
                reverse,
                activation: Activation::None,
            })
        }
        OpKind::Concat { axis, .. } => {
            let (with, with_shapes) = operands.into_iter().unzip();
            Op::Concat(Concat {
                axis: *axis,
                with,
                with_shapes,
            })
        }
        OpKind::Transpose { perm } => Op::Transpose { perm: perm.clone() },
        OpKind::Pad { pads, value } => Op::Pad {
            pads: pads.clone(),
            value: *value,
        },
        OpKind::Lrn {
            size,
            alpha,
            beta,
            bias,
        } => Op::Lrn(Lrn {
            size: *size,
            alpha: *alpha,
            beta: *beta,
            bias: *bias,
        }),
        OpKind::Batchnorm { eps } => {
            fold_batchnorm(steps, tensors, input[0], *eps, stats, err)?;
            return Ok(None);
        }
        OpKind::Relu
        | OpKind::Relu6
        | OpKind::Silu
        | OpKind::Sigmoid
        | OpKind::LeakyRelu { .. }
        | OpKind::Clip { .. }
        | OpKind::HardSigmoid { .. }
        | OpKind::HardSwish
        | OpKind::Tanh => {
            let act = activation(kind);
            if fuse_activation(steps, act) {
                return Ok(None);
            }
            Op::Activation(act)
        }
    }))
}

/// The fan-in index table: stored (or drawn) indices, checked to be a valid pattern whose
/// rows repeat in the declared groups.
fn fanin_indices(
    tensors: &Tensors<'_, '_>,
    inputs: usize,
    outputs: usize,
    k: usize,
    group: usize,
) -> Result<Vec<u32>, ModelError> {
    let key = tensors.key("indices");
    let indices = tensors.source.indices(&key, inputs, outputs, k, group)?;
    let pattern = FanInPattern::from_indices(inputs, outputs, k, indices).map_err(|e| {
        ModelError::Weights {
            key: key.clone(),
            reason: e.to_string(),
        }
    })?;
    if let Some(row) = pattern
        .indices
        .chunks(k)
        .enumerate()
        .find(|(o, row)| *row != &pattern.indices[(o - o % group) * k..][..k])
        .map(|(o, _)| o)
    {
        return Err(ModelError::Weights {
            key,
            reason: format!(
                "the op declares groups of {group} outputs sharing one index row, but output {row} differs from the first output of its group"
            ),
        });
    }
    Ok(pattern.indices)
}

/// The activation an activation op applies (identity for any other op).
fn activation(kind: &OpKind) -> Activation {
    match kind {
        OpKind::Relu => Activation::Relu,
        OpKind::Relu6 => Activation::Relu6,
        OpKind::Silu => Activation::Silu,
        OpKind::Sigmoid => Activation::Sigmoid,
        OpKind::LeakyRelu { alpha } => Activation::LeakyRelu(*alpha),
        OpKind::Clip { min, max } => Activation::Clip(
            min.unwrap_or(f32::NEG_INFINITY),
            max.unwrap_or(f32::INFINITY),
        ),
        OpKind::HardSigmoid { alpha, beta } => Activation::HardSigmoid(*alpha, *beta),
        OpKind::HardSwish => Activation::HardSwish,
        OpKind::Tanh => Activation::Tanh,
        _ => Activation::None,
    }
}

/// Fuses `act` into the last step when it has a free activation slot and its output is not
/// saved; false when it needs a standalone op.
fn fuse_activation(steps: &mut [Step], act: Activation) -> bool {
    let slot = steps
        .last_mut()
        .filter(|s| s.save_as.is_none())
        .and_then(|s| s.op.activation_mut())
        .filter(|a| **a == Activation::None);
    match slot {
        Some(a) => {
            *a = act;
            true
        }
        None => false,
    }
}

/// Folds an inference batchnorm over `channels` into the previous conv/dense/fan-in step:
/// `w' = w·γ/√(σ²+ε)`, `b' = (b − μ)·γ/√(σ²+ε) + β`.
fn fold_batchnorm(
    steps: &mut [Step],
    tensors: &Tensors<'_, '_>,
    channels: usize,
    eps: f32,
    stats: &mut BlockStats,
    err: &dyn Fn(String) -> ModelError,
) -> Result<(), ModelError> {
    let gamma = tensors.f32("gamma", &[channels], Role::One)?;
    let beta = tensors.f32("beta", &[channels], Role::Zero)?;
    let mean = tensors.f32("mean", &[channels], Role::Zero)?;
    let var = tensors.f32("var", &[channels], Role::One)?;
    stats.params += 4 * channels;
    let Some(prev) = steps.last_mut().filter(|s| s.save_as.is_none()) else {
        return Err(err(
            "batchnorm must directly follow a conv2d, dense or fanin op (whose output is not saved)"
                .into(),
        ));
    };
    let (weight, bias, per_out, act) = match &mut prev.op {
        Op::Conv2d(c) => {
            let per = c.weight.len() / c.out_channels;
            (&mut c.weight, &mut c.bias, per, c.activation)
        }
        Op::Dense(d) => (&mut d.weight, &mut d.bias, d.inputs, d.activation),
        Op::FanIn(f) => (&mut f.weights, &mut f.bias, f.k, f.activation),
        _ => {
            return Err(err(
                "batchnorm must directly follow a conv2d, dense or fanin op".into(),
            ))
        }
    };
    if act != Activation::None {
        return Err(err(
            "batchnorm after an activation cannot be folded; put it before the activation".into(),
        ));
    }
    for ch in 0..channels {
        let scale = gamma[ch] / (var[ch] + eps).sqrt();
        for wv in &mut weight[ch * per_out..(ch + 1) * per_out] {
            *wv *= scale;
        }
        bias[ch] = (bias[ch] - mean[ch]) * scale + beta[ch];
    }
    Ok(())
}
