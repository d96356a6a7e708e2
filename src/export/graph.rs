//! Writing compiled steps as ONNX nodes: a small graph builder over the prost types of
//! [`crate::onnx::proto`] and the lowering of every native [`Op`] (with its fused activation).
//!
//! Tensors are `[batch, ...per-sample]`, so per-sample axes shift by one. Each op maps to the
//! ONNX operator computing the same thing in the same order where one exists; the exceptions,
//! each exact up to float summation order:
//! - `fanin` becomes a dense `Gemm` over the full `[outputs, inputs]` matrix with the missing
//!   connections as zeros (`FanIn::to_dense`): standard runtimes have no fixed-fan-in
//!   operator, and a Gather + Mul + ReduceSum form would be slower on every one of them;
//! - `silu` is `x * Sigmoid(x)` and `relu6` is `Clip(x, 0, 6)`;
//! - a binary op whose operands have fewer per-sample dimensions than its output reshapes them
//!   first (`[N, 1.., dims]`), so ONNX's right-aligned broadcasting never meets the batch axis;
//! - `flatten`/`reshape` are `Flatten(axis 1)` for a 1-D result, else `Reshape` to `[0, dims]`.

use super::ExportError;
use crate::model::{Activation, BinaryOp, BinaryOperand, Op, Operand, PoolKind, Step};
use crate::onnx::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension,
    tensor_shape_proto::Dimension, type_proto, AttributeProto, NodeProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use std::collections::{HashMap, HashSet};

/// A tensor of the graph: its name and per-sample shape.
type Named = (String, Vec<usize>);

/// Name of the symbolic batch dimension of every exported input and output.
pub const BATCH_DIM: &str = "N";

/// Nodes and initialisers under construction, with unique tensor and node names.
#[derive(Default)]
pub(super) struct Builder {
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    /// Bytes of initialiser data so far (checked against the protobuf limit by the caller).
    pub initializer_bytes: usize,
    /// True once an operator newer than opset 13 was written (HardSwish: 14).
    pub needs_opset_14: bool,
    names: HashSet<String>,
}

impl Builder {
    /// A name not used yet, `base` itself when free.
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 1;
        while !self.names.insert(name.clone()) {
            name = format!("{base}_{i}");
            i += 1;
        }
        name
    }

    /// Reserves `name` exactly (graph inputs).
    pub fn reserve(&mut self, name: &str) {
        self.names.insert(name.to_string());
    }

    /// Appends a node named after its first output; returns that output.
    pub fn node(
        &mut self,
        op: &str,
        inputs: Vec<String>,
        output: &str,
        attributes: Vec<AttributeProto>,
    ) -> String {
        let output = self.fresh(output);
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![output.clone()],
            name: Some(output.clone()),
            op_type: Some(op.to_string()),
            attribute: attributes,
            ..Default::default()
        });
        output
    }

    /// A float initialiser (raw little-endian data).
    pub fn floats(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        let name = self.fresh(name);
        self.initializer_bytes += data.len() * 4;
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(DataType::Float as i32),
            raw_data: Some(bytemuck::cast_slice(data).to_vec()),
            ..Default::default()
        });
        name
    }

    /// An int64 initialiser (shapes, pads).
    pub fn int64s(&mut self, name: &str, data: &[i64]) -> String {
        let name = self.fresh(name);
        self.initializer_bytes += data.len() * 8;
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: vec![data.len() as i64],
            data_type: Some(DataType::Int64 as i32),
            int64_data: data.to_vec(),
            ..Default::default()
        });
        name
    }
}

/// `[N, dims...]` of element type `dtype`.
pub(super) fn value_info(name: &str, dtype: DataType, dims: &[usize]) -> ValueInfoProto {
    let dim = std::iter::once(Dimension {
        denotation: None,
        value: Some(dimension::Value::DimParam(BATCH_DIM.into())),
    })
    .chain(dims.iter().map(|&d| Dimension {
        denotation: None,
        value: Some(dimension::Value::DimValue(d as i64)),
    }))
    .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            denotation: None,
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dtype as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

/// An `INT` attribute (public to the module: the front of encoded tails uses it).
pub(super) fn int_attribute(name: &str, v: i64) -> AttributeProto {
    int(name, v)
}

/// Writes the steps of one block reading `input`; returns the name of the block output.
pub(super) fn block(
    b: &mut Builder,
    steps: &[Step],
    input: &str,
    input_shape: &[usize],
) -> Result<String, ExportError> {
    let mut saved: HashMap<&str, Named> = HashMap::new();
    let mut x = input.to_string();
    for step in steps {
        let tensor = |o: &Operand| -> Result<Named, ExportError> {
            match o {
                Operand::BlockInput => Ok((input.to_string(), input_shape.to_vec())),
                Operand::Saved(l) => {
                    saved
                        .get(l.as_str())
                        .cloned()
                        .ok_or_else(|| ExportError::Invalid {
                            step: step.label.clone(),
                            reason: format!(
                                "reads '{l}', which no earlier step of the block saved"
                            ),
                        })
                }
            }
        };
        if let Some(from) = &step.from {
            x = tensor(from)?.0;
        }
        x = op(b, step, x, &tensor)?;
        if let Some(label) = &step.save_as {
            saved.insert(label.as_str(), (x.clone(), step.output_shape.clone()));
        }
    }
    Ok(x)
}

/// Writes one step reading `x`; returns its output.
fn op(
    b: &mut Builder,
    step: &Step,
    x: String,
    tensor: &dyn Fn(&Operand) -> Result<Named, ExportError>,
) -> Result<String, ExportError> {
    let label = step.label.as_str();
    let out = match &step.op {
        Op::Conv2d(c) => {
            let w = b.floats(
                &format!("{label}.weight"),
                &[
                    c.out_channels,
                    c.in_channels / c.groups,
                    c.kernel_h,
                    c.kernel_w,
                ],
                &c.weight,
            );
            let bias = b.floats(&format!("{label}.bias"), &[c.out_channels], &c.bias);
            let y = b.node(
                "Conv",
                vec![x, w, bias],
                label,
                vec![
                    ints("kernel_shape", &[c.kernel_h, c.kernel_w]),
                    ints("strides", &[c.stride.0, c.stride.1]),
                    ints("dilations", &[c.dilation.0, c.dilation.1]),
                    ints("pads", &c.pads),
                    int("group", c.groups as i64),
                ],
            );
            activation(b, c.activation, y, label)
        }
        Op::Dense(d) => {
            let y = gemm(b, label, x, d.outputs, d.inputs, &d.weight, &d.bias);
            activation(b, d.activation, y, label)
        }
        Op::FanIn(f) => {
            let d = f.to_dense();
            let y = gemm(b, label, x, d.outputs, d.inputs, &d.weight, &d.bias);
            activation(b, d.activation, y, label)
        }
        Op::Pool(p) => {
            let mut attributes = vec![
                ints("kernel_shape", &[p.kernel_h, p.kernel_w]),
                ints("strides", &[p.stride.0, p.stride.1]),
                ints("pads", &p.pads),
                int("ceil_mode", i64::from(p.ceil_mode)),
            ];
            let kind = match p.kind {
                PoolKind::Max => "MaxPool",
                PoolKind::Avg => {
                    attributes.push(int("count_include_pad", i64::from(p.count_include_pad)));
                    "AveragePool"
                }
            };
            b.node(kind, vec![x], label, attributes)
        }
        Op::GlobalAvgPool => b.node("GlobalAveragePool", vec![x], label, vec![]),
        Op::Flatten => reshape(b, x, &step.output_shape, label),
        Op::Activation(a) => activation(b, *a, x, label),
        Op::Binary(bin) => {
            let rank = step.output_shape.len();
            let x = align(b, x, &step.input_shape, rank, label);
            let operand = match &bin.operand {
                BinaryOperand::Tensor(o) => {
                    let (name, shape) = tensor(o)?;
                    align(b, name, &shape, rank, label)
                }
                // Rank at most the output's: right-aligned broadcasting never reaches the batch.
                BinaryOperand::Const(v) => {
                    b.floats(&format!("{label}.value"), &bin.operand_shape, v)
                }
            };
            let kind = match bin.op {
                BinaryOp::Add => "Add",
                BinaryOp::Sub => "Sub",
                BinaryOp::Mul => "Mul",
                BinaryOp::Div => "Div",
            };
            let inputs = if bin.reverse {
                vec![operand, x]
            } else {
                vec![x, operand]
            };
            let y = b.node(kind, inputs, label, vec![]);
            activation(b, bin.activation, y, label)
        }
        Op::Concat(c) => {
            let mut inputs = vec![x];
            for o in &c.with {
                inputs.push(tensor(o)?.0);
            }
            b.node(
                "Concat",
                inputs,
                label,
                vec![int("axis", c.axis as i64 + 1)],
            )
        }
        Op::Transpose { perm } => {
            let full: Vec<usize> = std::iter::once(0)
                .chain(perm.iter().map(|&p| p + 1))
                .collect();
            b.node("Transpose", vec![x], label, vec![ints("perm", &full)])
        }
        Op::Pad { pads, value } => {
            let r = pads.len() / 2;
            let full: Vec<i64> = std::iter::once(0)
                .chain(pads[..r].iter().map(|&p| p as i64))
                .chain(std::iter::once(0))
                .chain(pads[r..].iter().map(|&p| p as i64))
                .collect();
            let pads = b.int64s(&format!("{label}.pads"), &full);
            let value = b.floats(&format!("{label}.value"), &[], &[*value]);
            b.node("Pad", vec![x, pads, value], label, vec![])
        }
        Op::Lrn(l) => b.node(
            "LRN",
            vec![x],
            label,
            vec![
                int("size", l.size as i64),
                float("alpha", l.alpha),
                float("beta", l.beta),
                float("bias", l.bias),
            ],
        ),
        Op::Softmax { axis } => b.node(
            "Softmax",
            vec![x],
            label,
            vec![int("axis", *axis as i64 + 1)],
        ),
    };
    Ok(out)
}

/// `Gemm(x, W [outputs, inputs], bias, transB = 1)`.
fn gemm(
    b: &mut Builder,
    label: &str,
    x: String,
    outputs: usize,
    inputs: usize,
    weight: &[f32],
    bias: &[f32],
) -> String {
    let w = b.floats(&format!("{label}.weight"), &[outputs, inputs], weight);
    let bias = b.floats(&format!("{label}.bias"), &[outputs], bias);
    b.node("Gemm", vec![x, w, bias], label, vec![int("transB", 1)])
}

/// `x` reshaped to the per-sample `shape` (`Flatten` for a 1-D result).
fn reshape(b: &mut Builder, x: String, shape: &[usize], label: &str) -> String {
    if shape.len() == 1 {
        return b.node("Flatten", vec![x], label, vec![int("axis", 1)]);
    }
    let target: Vec<i64> = std::iter::once(0)
        .chain(shape.iter().map(|&d| d as i64))
        .collect();
    let target = b.int64s(&format!("{label}.shape"), &target);
    b.node("Reshape", vec![x, target], label, vec![])
}

/// `x` of per-sample `shape` with leading 1s up to `rank` per-sample dimensions.
fn align(b: &mut Builder, x: String, shape: &[usize], rank: usize, label: &str) -> String {
    if shape.len() >= rank {
        return x;
    }
    let mut padded = vec![1; rank - shape.len()];
    padded.extend_from_slice(shape);
    reshape(b, x, &padded, &format!("{label}.broadcast"))
}

/// Appends the nodes of an activation to `x` (none for the identity).
fn activation(b: &mut Builder, a: Activation, x: String, label: &str) -> String {
    let name = |kind: &str| format!("{label}/{kind}");
    match a {
        Activation::None => x,
        Activation::Relu => b.node("Relu", vec![x], &name("relu"), vec![]),
        Activation::Relu6 => clip(b, x, Some(0.0), Some(6.0), &name("relu6")),
        Activation::Silu => {
            let s = b.node("Sigmoid", vec![x.clone()], &name("sigmoid"), vec![]);
            b.node("Mul", vec![x, s], &name("silu"), vec![])
        }
        Activation::Sigmoid => b.node("Sigmoid", vec![x], &name("sigmoid"), vec![]),
        Activation::LeakyRelu(alpha) => b.node(
            "LeakyRelu",
            vec![x],
            &name("leaky_relu"),
            vec![float("alpha", alpha)],
        ),
        Activation::Clip(lo, hi) => clip(
            b,
            x,
            lo.is_finite().then_some(lo),
            hi.is_finite().then_some(hi),
            &name("clip"),
        ),
        Activation::HardSigmoid(alpha, beta) => b.node(
            "HardSigmoid",
            vec![x],
            &name("hard_sigmoid"),
            vec![float("alpha", alpha), float("beta", beta)],
        ),
        Activation::HardSwish => {
            b.needs_opset_14 = true;
            b.node("HardSwish", vec![x], &name("hard_swish"), vec![])
        }
        Activation::Tanh => b.node("Tanh", vec![x], &name("tanh"), vec![]),
    }
}

/// `Clip` with scalar bounds as inputs (opset 11 and later); an absent bound is unbounded.
fn clip(b: &mut Builder, x: String, lo: Option<f32>, hi: Option<f32>, name: &str) -> String {
    let mut inputs = vec![x];
    inputs.push(lo.map_or_else(String::new, |v| b.floats(&format!("{name}.min"), &[], &[v])));
    if let Some(v) = hi {
        inputs.push(b.floats(&format!("{name}.max"), &[], &[v]));
    }
    b.node("Clip", inputs, name, vec![])
}
