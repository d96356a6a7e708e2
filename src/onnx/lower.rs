//! Mapping ONNX operators on activations onto the native ops of `model.json` (see the README's
//! operator table). Axes are ONNX axes of `[batch, ...]` tensors; native ops take per-sample
//! axes, so an operator acting on the batch axis is refused. Batch normalisation and a bias
//! `Add` fold into the conv/dense before them, `x * sigmoid(x)` becomes `silu`.

use super::fold::{self, axis, broadcast, reshape_dims, squeeze_dims};
use super::graph::{Ctx, NativeOp, Node, Val};
use super::reader::Const;
use serde_json::{json, Map, Value};

/// Attributes each supported operator understands; any other attribute is refused.
const OPERATORS: &[(&str, &[&str])] = &[
    (
        "Conv",
        &[
            "auto_pad",
            "dilations",
            "group",
            "kernel_shape",
            "pads",
            "strides",
        ],
    ),
    ("Gemm", &["alpha", "beta", "transA", "transB"]),
    ("MatMul", &[]),
    ("Add", &[]),
    ("Sub", &[]),
    ("Mul", &[]),
    ("Div", &[]),
    ("Sum", &[]),
    (
        "BatchNormalization",
        &["epsilon", "momentum", "spatial", "training_mode"],
    ),
    ("Relu", &[]),
    ("LeakyRelu", &["alpha"]),
    ("Clip", &["min", "max"]),
    ("Sigmoid", &[]),
    ("HardSigmoid", &["alpha", "beta"]),
    ("HardSwish", &[]),
    ("Tanh", &[]),
    ("Softmax", &["axis"]),
    ("GlobalAveragePool", &[]),
    ("ReduceMean", &["axes", "keepdims", "noop_with_empty_axes"]),
    (
        "AveragePool",
        &[
            "auto_pad",
            "ceil_mode",
            "count_include_pad",
            "kernel_shape",
            "pads",
            "strides",
            "dilations",
        ],
    ),
    (
        "MaxPool",
        &[
            "auto_pad",
            "ceil_mode",
            "dilations",
            "kernel_shape",
            "pads",
            "storage_order",
            "strides",
        ],
    ),
    ("Flatten", &["axis"]),
    ("Reshape", &["allowzero"]),
    ("Squeeze", &["axes"]),
    ("Unsqueeze", &["axes"]),
    ("Transpose", &["perm"]),
    ("Concat", &["axis"]),
    ("Pad", &["mode", "pads", "value"]),
    ("LRN", &["alpha", "beta", "bias", "size"]),
    ("Dropout", &["ratio", "seed"]),
    ("Identity", &[]),
    ("Cast", &["to", "saturate"]),
    (
        "Constant",
        &[
            "value",
            "value_float",
            "value_floats",
            "value_int",
            "value_ints",
        ],
    ),
    ("ConstantOfShape", &["value"]),
    ("Shape", &["start", "end"]),
    ("Gather", &["axis"]),
    ("Slice", &["starts", "ends", "axes"]),
    ("Neg", &[]),
    ("Sqrt", &[]),
    ("Reciprocal", &[]),
];

/// Refuses an operator edgecut does not know.
pub(super) fn check_known(node: &Node<'_>) -> Result<(), String> {
    if OPERATORS.iter().any(|(op, _)| *op == node.op) {
        Ok(())
    } else {
        Err(format!("operator {} is not supported", node.op))
    }
}

/// Refuses unknown operators and attributes an operator does not understand.
pub(super) fn check_attributes(node: &Node<'_>) -> Result<(), String> {
    let (_, allowed) = OPERATORS
        .iter()
        .find(|(op, _)| *op == node.op)
        .ok_or_else(|| format!("operator {} is not supported", node.op))?;
    let bad: Vec<String> = node
        .proto
        .attribute
        .iter()
        .map(|a| a.name.clone().unwrap_or_default())
        .filter(|a| !allowed.contains(&a.as_str()))
        .map(|a| format!("'{a}'"))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("attribute {} is not supported", bad.join(", ")))
    }
}

/// An activation input: its id and per-sample shape.
fn dyn_input(ctx: &Ctx, node: &Node<'_>, i: usize) -> Result<(String, Vec<usize>), String> {
    match node.input(i).and_then(|n| ctx.vals.get(n)) {
        Some(Val::Dyn { id, shape }) => Ok((id.clone(), shape.clone())),
        Some(_) => Err(format!(
            "input {i} must be computed from the graph input, not a constant"
        )),
        None => Err(format!("input {i} is missing")),
    }
}

/// A constant input (`None` when omitted).
fn const_input<'c>(ctx: &'c Ctx, node: &Node<'_>, i: usize) -> Result<Option<&'c Const>, String> {
    match node.input(i).and_then(|n| ctx.vals.get(n)) {
        Some(Val::Const(c)) => Ok(Some(c)),
        Some(_) => Err(format!(
            "input {i} ('{}') must be a constant (an initialiser or folded value)",
            node.input(i).unwrap_or("")
        )),
        None => Ok(None),
    }
}

fn out(node: &Node<'_>) -> Result<String, String> {
    node.output(0)
        .map(str::to_string)
        .ok_or_else(|| "output 0 is missing".into())
}

/// Refuses nodes whose extra outputs (mask, indices, running statistics) are read.
fn only_first_output(ctx: &Ctx, node: &Node<'_>) -> Result<(), String> {
    for i in 1..node.proto.output.len() {
        if let Some(o) = node.output(i) {
            if ctx.uses.get(o).copied().unwrap_or(0) > 0 {
                return Err(format!(
                    "output {i} ('{o}') is used; only the first output is supported"
                ));
            }
        }
    }
    Ok(())
}

/// A native op reading `input` and writing `output`.
fn op(node: &Node<'_>, value: Value, input: &str, output: &str, shape: Vec<usize>) -> NativeOp {
    NativeOp {
        node: node.name.clone(),
        op: match value {
            Value::Object(m) => m,
            _ => Map::new(),
        },
        input: input.to_string(),
        with: Vec::new(),
        with_list: false,
        output: output.to_string(),
        shape,
        tensors: Vec::new(),
    }
}

/// `name` now holds the same activation as `val`.
fn alias(ctx: &mut Ctx, name: String, id: String, shape: Vec<usize>) {
    ctx.vals.insert(name, Val::Dyn { id, shape });
}

/// A pair `[h, w]` as an int when both agree (the compact form older builds read).
fn pair(h: usize, w: usize) -> Value {
    if h == w {
        json!(h)
    } else {
        json!([h, w])
    }
}

/// Padding `[top, left, bottom, right]` as an int when all agree.
fn pads4(p: [usize; 4]) -> Value {
    if p.iter().all(|&x| x == p[0]) {
        json!(p[0])
    } else {
        json!(p)
    }
}

fn non_negative(v: &[i64], what: &str) -> Result<Vec<usize>, String> {
    v.iter()
        .map(|&x| usize::try_from(x).map_err(|_| format!("{what} {v:?} holds a negative entry")))
        .collect()
}

/// Spatial parameters of Conv and the pools: kernel, strides, dilations, pads (t, l, b, r) and
/// output size, with `auto_pad` resolved.
struct Window {
    stride: (usize, usize),
    dilation: (usize, usize),
    pads: [usize; 4],
    out: (usize, usize),
}

fn window(
    node: &Node<'_>,
    hw: (usize, usize),
    kernel: (usize, usize),
    ceil: bool,
) -> Result<Window, String> {
    let two = |key: &str| -> Result<(usize, usize), String> {
        match node.ints(key) {
            None => Ok((1, 1)),
            Some(v) if v.len() == 2 && v.iter().all(|&x| x > 0) => {
                Ok((v[0] as usize, v[1] as usize))
            }
            Some(v) => Err(format!(
                "\"{key}\" = {v:?}: needs two positive entries (2-D only)"
            )),
        }
    };
    let stride = two("strides")?;
    let dilation = two("dilations")?;
    let (kh, kw) = kernel;
    if kh == 0 || kw == 0 {
        return Err(format!("kernel {kh}x{kw} has a zero size"));
    }
    let ek = ((kh - 1) * dilation.0 + 1, (kw - 1) * dilation.1 + 1);
    let auto = node.string("auto_pad").unwrap_or_else(|| "NOTSET".into());
    let pads = match auto.as_str() {
        "NOTSET" => match node.ints("pads") {
            None => [0; 4],
            Some(p) if p.len() == 4 => {
                let p = non_negative(&p, "pads")?;
                [p[0], p[1], p[2], p[3]]
            }
            Some(p) => return Err(format!("\"pads\" = {p:?}: needs four entries (2-D only)")),
        },
        "VALID" => [0; 4],
        "SAME_UPPER" | "SAME_LOWER" => {
            let same = |h: usize, s: usize, k: usize| {
                let o = h.div_ceil(s);
                let total = ((o - 1) * s + k).saturating_sub(h);
                if auto == "SAME_UPPER" {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                }
            };
            let (t, b) = same(hw.0, stride.0, ek.0);
            let (l, r) = same(hw.1, stride.1, ek.1);
            [t, l, b, r]
        }
        other => return Err(format!("auto_pad '{other}' is not supported")),
    };
    let size = |h: usize, pb: usize, pe: usize, s: usize, k: usize| -> Option<usize> {
        let span = h.checked_add(pb)?.checked_add(pe)?;
        let room = span.checked_sub(k)?;
        if !ceil {
            return Some(room / s + 1);
        }
        let mut o = room.div_ceil(s) + 1;
        // ONNX: a window starting in the end padding only does not count.
        if (o - 1) * s >= h + pb {
            o -= 1;
        }
        Some(o)
    };
    let oh = size(hw.0, pads[0], pads[2], stride.0, ek.0);
    let ow = size(hw.1, pads[1], pads[3], stride.1, ek.1);
    let (Some(oh), Some(ow)) = (oh, ow) else {
        return Err(format!(
            "window {kh}x{kw} (dilated {}x{}) is larger than the padded input {}x{}",
            ek.0, ek.1, hw.0, hw.1
        ));
    };
    Ok(Window {
        stride,
        dilation,
        pads,
        out: (oh, ow),
    })
}

/// `[C, H, W]` or why not.
fn chw(shape: &[usize], what: &str) -> Result<(usize, usize, usize), String> {
    match *shape {
        [c, h, w] => Ok((c, h, w)),
        _ => Err(format!(
            "{what} needs a [batch, channels, height, width] input, got per-sample {shape:?}"
        )),
    }
}

/// Maps one node on activations.
pub(super) fn lower_node(ctx: &mut Ctx, node: &Node<'_>) -> Result<(), String> {
    only_first_output(ctx, node)?;
    let opset = ctx.opset;
    match node.op {
        "Conv" => conv(ctx, node),
        "Gemm" | "MatMul" => dense(ctx, node),
        "Add" | "Sub" | "Mul" | "Div" => {
            let a = node
                .input(0)
                .and_then(|n| ctx.vals.get(n))
                .cloned()
                .ok_or("input 0 is missing")?;
            let b = node
                .input(1)
                .and_then(|n| ctx.vals.get(n))
                .cloned()
                .ok_or("input 1 is missing")?;
            binary(ctx, node, &node.op.to_lowercase(), a, b, &out(node)?)
        }
        "Sum" => {
            let vals: Vec<Val> = (0..node.proto.input.len())
                .filter_map(|i| node.input(i).and_then(|n| ctx.vals.get(n)).cloned())
                .collect();
            let output = out(node)?;
            let mut acc = vals.first().cloned().ok_or("no inputs")?;
            if vals.len() == 1 {
                let Val::Dyn { id, shape } = acc else {
                    return Err("the input is constant".into());
                };
                alias(ctx, output, id, shape);
                return Ok(());
            }
            for (k, v) in vals.iter().enumerate().skip(1) {
                let id = if k + 1 == vals.len() {
                    output.clone()
                } else {
                    format!("{output}#sum{k}")
                };
                binary(ctx, node, "add", acc, v.clone(), &id)?;
                acc = ctx.vals.get(&id).cloned().ok_or("sum step missing")?;
            }
            Ok(())
        }
        "BatchNormalization" => batchnorm(ctx, node),
        "Relu" | "Sigmoid" | "Tanh" | "HardSwish" => {
            let name = match node.op {
                "Relu" => "relu",
                "Sigmoid" => "sigmoid",
                "Tanh" => "tanh",
                _ => "hard_swish",
            };
            activation(ctx, node, json!({ "op": name }))
        }
        "LeakyRelu" => activation(
            ctx,
            node,
            json!({"op": "leaky_relu", "alpha": node.float("alpha", 0.01)}),
        ),
        "HardSigmoid" => activation(
            ctx,
            node,
            json!({"op": "hard_sigmoid", "alpha": node.float("alpha", 0.2), "beta": node.float("beta", 0.5)}),
        ),
        "Clip" => {
            let (min, max) = if opset < 11 {
                (
                    node.attr("min").and_then(|a| a.f),
                    node.attr("max").and_then(|a| a.f),
                )
            } else {
                let bound = |i| -> Result<Option<f32>, String> {
                    const_input(ctx, node, i)?
                        .map(|c| {
                            c.scalar()
                                .ok_or_else(|| format!("input {i} must be a scalar"))
                        })
                        .transpose()
                };
                (bound(1)?, bound(2)?)
            };
            let value = match (min, max) {
                (Some(lo), Some(hi)) if lo == 0.0 && hi == 6.0 => json!({"op": "relu6"}),
                (Some(0.0), None) => json!({"op": "relu"}),
                _ => json!({"op": "clip", "min": min, "max": max}),
            };
            activation(ctx, node, value)
        }
        "Softmax" => {
            let (id, shape) = dyn_input(ctx, node, 0)?;
            let rank = shape.len() + 1;
            let a = axis(node.int("axis", if opset < 13 { 1 } else { -1 }), rank)?;
            let value = if shape.len() == 1 && a == 1 {
                json!({"op": "softmax"})
            } else if a == 0 {
                return Err("softmax over the batch axis is not supported".into());
            } else if opset >= 13 || a + 1 == rank {
                json!({"op": "softmax", "axis": a - 1})
            } else {
                return Err(format!(
                    "softmax before opset 13 with axis {a} flattens the trailing dimensions of a rank-{rank} input; not supported"
                ));
            };
            let output = out(node)?;
            ctx.emit(op(node, value, &id, &output, shape));
            Ok(())
        }
        "GlobalAveragePool" => {
            let (id, shape) = dyn_input(ctx, node, 0)?;
            let (c, _, _) = chw(&shape, "GlobalAveragePool")?;
            let output = out(node)?;
            ctx.emit(op(
                node,
                json!({"op": "global_avgpool"}),
                &id,
                &output,
                vec![c, 1, 1],
            ));
            Ok(())
        }
        "ReduceMean" => {
            let (id, shape) = dyn_input(ctx, node, 0)?;
            let axes = if opset >= 18 {
                const_input(ctx, node, 1)?.map(|c| c.ints()).transpose()?
            } else {
                node.ints("axes")
            };
            let mut axes: Vec<usize> = axes
                .ok_or("ReduceMean over all axes (no \"axes\") is not supported")?
                .iter()
                .map(|&a| axis(a, shape.len() + 1))
                .collect::<Result<_, _>>()?;
            axes.sort_unstable();
            if shape.len() != 3 || axes != [2, 3] {
                return Err(format!(
                    "ReduceMean over axes {axes:?} of a rank-{} input is not supported (only over height and width, axes [2, 3] of [batch, C, H, W])",
                    shape.len() + 1
                ));
            }
            let output = out(node)?;
            let c = shape[0];
            if node.int("keepdims", 1) != 0 {
                ctx.emit(op(
                    node,
                    json!({"op": "global_avgpool"}),
                    &id,
                    &output,
                    vec![c, 1, 1],
                ));
            } else {
                let mid = format!("{output}#mean");
                ctx.emit(op(
                    node,
                    json!({"op": "global_avgpool"}),
                    &id,
                    &mid,
                    vec![c, 1, 1],
                ));
                ctx.emit(op(node, json!({"op": "flatten"}), &mid, &output, vec![c]));
            }
            Ok(())
        }
        "MaxPool" | "AveragePool" => pool(ctx, node),
        "Flatten" => {
            let (id, shape) = dyn_input(ctx, node, 0)?;
            let a = axis(node.int("axis", 1), shape.len() + 2)?;
            if a == 0 {
                return Err(
                    "Flatten with axis 0 folds the batch into the features; not supported".into(),
                );
            }
            let target = if a == 1 {
                vec![shape.iter().product()]
            } else {
                vec![
                    shape[..a - 1].iter().product(),
                    shape[a - 1..].iter().product(),
                ]
            };
            reshape(ctx, node, id, &shape, target)
        }
        "Reshape" => {
            let (id, shape) = dyn_input(ctx, node, 0)?;
            let target = const_input(ctx, node, 1)?
                .ok_or("the target shape (input 1) is missing")?
                .clone();
            let target = per_sample_reshape(ctx, &shape, &target, node.int("allowzero", 0) != 0)?;
            reshape(ctx, node, id, &shape, target)
        }
        "Squeeze" | "Unsqueeze" => {
            let (id, shape) = dyn_input(ctx, node, 0)?;
            let axes = if opset < 13 {
                node.ints("axes")
            } else {
                const_input(ctx, node, 1)?.map(|c| c.ints()).transpose()?
            };
            let mut full = vec![1usize];
            full.extend_from_slice(&shape);
            let unsqueeze = node.op == "Unsqueeze";
            let target = match axes.as_deref() {
                // Without axes, Squeeze drops every size-1 dimension but the batch.
                None if !unsqueeze => shape.iter().copied().filter(|&d| d != 1).collect(),
                axes => {
                    let rank = full.len()
                        + if unsqueeze {
                            axes.map_or(0, <[i64]>::len)
                        } else {
                            0
                        };
                    if axes.unwrap_or(&[]).iter().any(|&a| axis(a, rank) == Ok(0)) {
                        return Err(format!("{} on the batch axis is not supported", node.op));
                    }
                    let dims = squeeze_dims(&full, axes, unsqueeze)?;
                    dims[1..].to_vec()
                }
            };
            if target.is_empty() {
                return Err("the result has no per-sample dimension".into());
            }
            reshape(ctx, node, id, &shape, target)
        }
        "Transpose" => {
            let (id, shape) = dyn_input(ctx, node, 0)?;
            let rank = shape.len() + 1;
            let perm: Vec<usize> = node
                .ints("perm")
                .ok_or("Transpose without \"perm\" reverses the batch axis; not supported")?
                .iter()
                .map(|&p| axis(p, rank))
                .collect::<Result<_, _>>()?;
            let mut seen = vec![false; rank];
            if perm.len() != rank || perm.iter().any(|&p| std::mem::replace(&mut seen[p], true)) {
                return Err(format!("perm {perm:?} is not a permutation of 0..{rank}"));
            }
            if perm[0] != 0 {
                return Err(format!("perm {perm:?} moves the batch axis; not supported"));
            }
            let output = out(node)?;
            if perm.iter().enumerate().all(|(i, &p)| i == p) {
                alias(ctx, output, id, shape);
                return Ok(());
            }
            let ps: Vec<usize> = perm[1..].iter().map(|&p| p - 1).collect();
            let new_shape = ps.iter().map(|&p| shape[p]).collect();
            ctx.emit(op(
                node,
                json!({"op": "transpose", "perm": ps}),
                &id,
                &output,
                new_shape,
            ));
            Ok(())
        }
        "Concat" => {
            let mut pieces = Vec::new();
            for i in 0..node.proto.input.len() {
                if node.input(i).is_some() {
                    pieces.push(dyn_input(ctx, node, i).map_err(|e| {
                        format!("{e} (constant pieces of Concat on activations are not supported)")
                    })?);
                }
            }
            let (first, shape) = pieces.first().cloned().ok_or("no inputs")?;
            let a = axis(node.int("axis", 0), shape.len() + 1)?;
            if a == 0 {
                return Err("Concat on the batch axis is not supported".into());
            }
            let mut out_shape = shape.clone();
            out_shape[a - 1] = 0;
            for (_, s) in &pieces {
                if s.len() != shape.len()
                    || s.iter()
                        .enumerate()
                        .any(|(i, &d)| i != a - 1 && d != shape[i])
                {
                    return Err(format!(
                        "pieces {shape:?} and {s:?} do not concatenate on axis {a}"
                    ));
                }
                out_shape[a - 1] += s[a - 1];
            }
            let output = out(node)?;
            if pieces.len() == 1 {
                alias(ctx, output, first, shape);
                return Ok(());
            }
            let mut o = op(
                node,
                json!({"op": "concat", "axis": a - 1}),
                &first,
                &output,
                out_shape,
            );
            o.with = pieces[1..].iter().map(|(id, _)| id.clone()).collect();
            o.with_list = true;
            ctx.emit(o);
            Ok(())
        }
        "Pad" => pad(ctx, node),
        "LRN" => {
            let (id, shape) = dyn_input(ctx, node, 0)?;
            let size = node.int("size", 0);
            if size < 1 {
                return Err("\"size\" must be a positive integer".into());
            }
            let output = out(node)?;
            let value = json!({
                "op": "lrn", "size": size, "alpha": node.float("alpha", 1e-4),
                "beta": node.float("beta", 0.75), "bias": node.float("bias", 1.0),
            });
            ctx.emit(op(node, value, &id, &output, shape));
            Ok(())
        }
        "Dropout" | "Identity" => {
            if node.op == "Dropout" && opset >= 12 {
                if let Some(t) = const_input(ctx, node, 2)? {
                    if t.ints()?.iter().any(|&x| x != 0) {
                        return Err("training_mode = true is not supported".into());
                    }
                }
            }
            let (id, shape) = dyn_input(ctx, node, 0)?;
            alias(ctx, out(node)?, id, shape);
            Ok(())
        }
        "Cast" => {
            let (id, shape) = dyn_input(ctx, node, 0)?;
            match node.int("to", 0) {
                1 | 11 => {
                    alias(ctx, out(node)?, id, shape);
                    Ok(())
                }
                to => Err(format!(
                    "Cast of an activation to type {to} is not supported (only to float)"
                )),
            }
        }
        other => Err(format!("{other} on activations is not supported")),
    }
}

fn activation(ctx: &mut Ctx, node: &Node<'_>, value: Value) -> Result<(), String> {
    let (id, shape) = dyn_input(ctx, node, 0)?;
    let output = out(node)?;
    ctx.emit(op(node, value, &id, &output, shape));
    Ok(())
}

/// `reshape` (or `flatten` for a 1-D target, or nothing when the shape stays).
fn reshape(
    ctx: &mut Ctx,
    node: &Node<'_>,
    id: String,
    shape: &[usize],
    target: Vec<usize>,
) -> Result<(), String> {
    let output = out(node)?;
    if target.iter().product::<usize>() != shape.iter().product::<usize>() || target.contains(&0) {
        return Err(format!("cannot reshape per-sample {shape:?} to {target:?}"));
    }
    if target == shape {
        alias(ctx, output, id, target);
    } else if target.len() == 1 {
        ctx.emit(op(node, json!({"op": "flatten"}), &id, &output, target));
    } else {
        ctx.emit(op(
            node,
            json!({"op": "reshape", "shape": target}),
            &id,
            &output,
            target.clone(),
        ));
    }
    Ok(())
}

/// The per-sample target of a `Reshape` of an activation, when the reshape provably keeps the
/// batch as its leading dimension (see the module docs of `onnx`).
fn per_sample_reshape(
    ctx: &Ctx,
    shape: &[usize],
    target: &Const,
    allowzero: bool,
) -> Result<Vec<usize>, String> {
    let values: Vec<Option<i64>> = match &target.data {
        super::reader::Data::I(v) => v.clone(),
        super::reader::Data::F(_) => return Err("the target shape must be integers".into()),
    };
    let elems: usize = shape.iter().product();
    let mixes = || {
        format!(
            "target shape {} does not keep the batch as its leading dimension (it fixes or mixes the batch); edgecut keeps the batch dynamic, re-export with a dynamic batch or a 0/-1 leading entry",
            show(&values)
        )
    };
    let Some((&lead, rest)) = values.split_first() else {
        return Err("the target shape is empty".into());
    };
    if rest.iter().any(Option::is_none) {
        return Err(mixes());
    }
    let rest: Vec<i64> = rest.iter().map(|v| v.unwrap_or(0)).collect();
    let keeps = match lead {
        None => true,
        Some(0) => !allowzero,
        Some(-1) => rest.iter().all(|&d| d > 0) && rest.iter().product::<i64>() == elems as i64,
        Some(b) => {
            ctx.declared_batch == Some(b) && {
                let resolved = reshape_dims(shape, &rest, allowzero);
                resolved.is_ok_and(|r| r.iter().product::<usize>() == elems)
            }
        }
    };
    if !keeps {
        return Err(mixes());
    }
    // Dimension i of the target copies dimension i of the input: per-sample index i - 1.
    let copied: Vec<i64> = rest
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if d == 0 && !allowzero {
                shape.get(i).map_or(-2, |&s| s as i64)
            } else {
                d
            }
        })
        .collect();
    if copied.contains(&-2) {
        return Err(format!(
            "target shape {} copies a dimension the input lacks",
            show(&values)
        ));
    }
    reshape_dims(shape, &copied, allowzero)
}

fn show(values: &[Option<i64>]) -> String {
    let v: Vec<String> = values
        .iter()
        .map(|x| x.map_or("batch".to_string(), |x| x.to_string()))
        .collect();
    format!("[{}]", v.join(", "))
}

fn conv(ctx: &mut Ctx, node: &Node<'_>) -> Result<(), String> {
    let (id, shape) = dyn_input(ctx, node, 0)?;
    let (c, h, w) = chw(&shape, "Conv (2-D only)")?;
    let weight = const_input(ctx, node, 1)?.ok_or("the weight (input 1) is missing")?;
    let [m, cg, kh, kw] = weight.dims[..] else {
        return Err(format!(
            "weight shape {:?} is not [out, in/groups, kh, kw] (2-D only)",
            weight.dims
        ));
    };
    let group = node.int("group", 1);
    let g = usize::try_from(group)
        .ok()
        .filter(|&g| g > 0)
        .ok_or(format!("group {group} must be positive"))?;
    if m == 0 || cg * g != c || m % g != 0 {
        return Err(format!(
            "weight {:?} with group {g} does not fit {c} input channels",
            weight.dims
        ));
    }
    if let Some(k) = node.ints("kernel_shape") {
        if k != [kh as i64, kw as i64] {
            return Err(format!(
                "kernel_shape {k:?} disagrees with the weight {:?}",
                weight.dims
            ));
        }
    }
    let win = window(node, (h, w), (kh, kw), false)?;
    let bias = match const_input(ctx, node, 2)? {
        Some(b) if b.data.len() == m => b.floats(),
        Some(b) => {
            return Err(format!(
                "bias {:?} does not match {m} output channels",
                b.dims
            ))
        }
        None => vec![0.0; m],
    };
    let mut value = json!({
        "op": "conv2d", "out_channels": m, "kernel": pair(kh, kw),
        "stride": pair(win.stride.0, win.stride.1), "padding": pads4(win.pads),
        "groups": g, "bias": true,
    });
    if win.dilation != (1, 1) {
        value["dilation"] = pair(win.dilation.0, win.dilation.1);
    }
    let output = out(node)?;
    let mut o = op(node, value, &id, &output, vec![m, win.out.0, win.out.1]);
    o.tensors = vec![
        ("weight".into(), weight.dims.clone(), weight.floats()),
        ("bias".into(), vec![m], bias),
    ];
    ctx.emit(o);
    Ok(())
}

/// Gemm, or MatMul by a constant, as `dense` with alpha, beta and transB folded in.
fn dense(ctx: &mut Ctx, node: &Node<'_>) -> Result<(), String> {
    let (id, shape) = dyn_input(ctx, node, 0)?;
    let [k] = shape[..] else {
        return Err(format!(
            "{} on a per-sample {shape:?} input is not supported (only [batch, features] times a constant)",
            node.op
        ));
    };
    let b = const_input(ctx, node, 1)?.ok_or("input 1 is missing")?;
    let gemm = node.op == "Gemm";
    if gemm && node.int("transA", 0) != 0 {
        return Err("transA = 1 transposes the batch into the features; not supported".into());
    }
    let trans_b = gemm && node.int("transB", 0) != 0;
    let alpha = if gemm { node.float("alpha", 1.0) } else { 1.0 };
    let beta = if gemm { node.float("beta", 1.0) } else { 1.0 };
    let [r, s] = b.dims[..] else {
        return Err(format!(
            "input 1 has shape {:?}; a 2-D constant is needed",
            b.dims
        ));
    };
    let (kin, m) = if trans_b { (s, r) } else { (r, s) };
    if kin != k || m == 0 {
        return Err(format!("weight {:?} does not take {k} features", b.dims));
    }
    let bv = b.floats();
    let mut weight = vec![0.0f32; m * k];
    for o in 0..m {
        for i in 0..k {
            weight[o * k + i] = alpha
                * if trans_b {
                    bv[o * k + i]
                } else {
                    bv[i * m + o]
                };
        }
    }
    let bias = match if gemm {
        const_input(ctx, node, 2)?
    } else {
        None
    } {
        None => vec![0.0; m],
        Some(c) => {
            let ok = matches!(c.dims[..], [] | [1] | [1, 1]) || c.dims == [m] || c.dims == [1, m];
            if !ok {
                return Err(format!(
                    "C of shape {:?} does not broadcast to [{m}] per sample",
                    c.dims
                ));
            }
            let v = c.floats();
            (0..m)
                .map(|o| beta * v[if v.len() == 1 { 0 } else { o }])
                .collect()
        }
    };
    let output = out(node)?;
    let mut o = op(
        node,
        json!({"op": "dense", "outputs": m, "bias": true}),
        &id,
        &output,
        vec![m],
    );
    o.tensors = vec![
        ("weight".into(), vec![m, k], weight),
        ("bias".into(), vec![m], bias),
    ];
    ctx.emit(o);
    Ok(())
}

fn batchnorm(ctx: &mut Ctx, node: &Node<'_>) -> Result<(), String> {
    if node.int("training_mode", 0) != 0 || node.int("spatial", 1) != 1 {
        return Err("training_mode = 1 or spatial = 0 is not supported".into());
    }
    let (id, shape) = dyn_input(ctx, node, 0)?;
    let c = *shape.first().ok_or("the input has no channel dimension")?;
    let mut p = Vec::new();
    for i in 1..=4 {
        let t = const_input(ctx, node, i)?.ok_or(format!("input {i} is missing"))?;
        if t.data.len() != c {
            return Err(format!(
                "input {i} has {} values for {c} channels",
                t.data.len()
            ));
        }
        p.push(t.floats());
    }
    let eps = node.float("epsilon", 1e-5);
    let scale: Vec<f32> = (0..c).map(|i| p[0][i] / (p[3][i] + eps).sqrt()).collect();
    let shift: Vec<f32> = (0..c).map(|i| p[1][i] - p[2][i] * scale[i]).collect();
    let output = out(node)?;
    if let Some(index) = foldable_into(ctx, &id, c) {
        scale_op(&mut ctx.ops[index], &scale, &shift);
        ctx.retarget(index, &output);
        return Ok(());
    }
    let mut cdims = vec![1; shape.len()];
    cdims[0] = c;
    let mid = format!("{output}#bn_scale");
    let mut mul = op(
        node,
        json!({"op": "mul", "const": cdims}),
        &id,
        &mid,
        shape.clone(),
    );
    mul.tensors = vec![("value".into(), cdims.clone(), scale)];
    ctx.emit(mul);
    let mut add = op(
        node,
        json!({"op": "add", "const": cdims}),
        &mid,
        &output,
        shape,
    );
    add.tensors = vec![("value".into(), cdims.clone(), shift)];
    ctx.emit(add);
    Ok(())
}

/// The conv/dense op producing `id` (read by nothing else), whose `c` outputs a per-channel
/// scale and shift can fold into.
fn foldable_into(ctx: &Ctx, id: &str, c: usize) -> Option<usize> {
    ctx.sole_producer(id).filter(|&i| {
        let o = &ctx.ops[i];
        matches!(
            o.op.get("op").and_then(Value::as_str),
            Some("conv2d" | "dense")
        ) && o.shape[0] == c
    })
}

/// Scales output channel `o` of a conv/dense by `scale[o]` and adds `shift[o]` to its bias.
fn scale_op(o: &mut NativeOp, scale: &[f32], shift: &[f32]) {
    let c = scale.len();
    for (name, _, values) in &mut o.tensors {
        let per = values.len() / c;
        for (ch, chunk) in values.chunks_mut(per.max(1)).enumerate().take(c) {
            for v in chunk.iter_mut() {
                *v *= scale[ch];
            }
            if name == "bias" {
                chunk[0] += shift[ch];
            }
        }
    }
}

/// Add/Sub/Mul/Div of two values (at least one an activation) writing `output`.
fn binary(
    ctx: &mut Ctx,
    node: &Node<'_>,
    kind: &str,
    a: Val,
    b: Val,
    output: &str,
) -> Result<(), String> {
    match (a, b) {
        (Val::Dyn { id: ia, shape: sa }, Val::Dyn { id: ib, shape: sb }) => {
            if kind == "mul" {
                if let Some(index) = silu_pair(ctx, (&ia, &ib)) {
                    ctx.ops[index].op.insert("op".into(), json!("silu"));
                    ctx.retarget(index, output);
                    return Ok(());
                }
            }
            if sa.len() != sb.len() {
                return Err(format!(
                    "operands of per-sample shapes {sa:?} and {sb:?} have different ranks"
                ));
            }
            let shape = broadcast(&sa, &sb)
                .ok_or_else(|| format!("shapes {sa:?} and {sb:?} do not broadcast"))?;
            // Commutative ops read the operand just computed as their main input (no `from`),
            // and a gate ([C,1,1]) as main input with the larger tensor as `with`.
            let last = ctx.ops.last().map(|o| o.output.as_str());
            let swap = matches!(kind, "add" | "mul")
                && ((last == Some(ib.as_str()) && last != Some(ia.as_str()))
                    || (sa == shape && sb != shape && kind == "mul"));
            let (main, with) = if swap { (ib, ia) } else { (ia, ib) };
            let mut o = op(
                node,
                json!({ "op": kind, "with": "" }),
                &main,
                output,
                shape,
            );
            o.with = vec![with];
            ctx.emit(o);
            Ok(())
        }
        (Val::Dyn { id, shape }, Val::Const(c)) => {
            binary_const(ctx, node, kind, (id, shape), &c, false, output)
        }
        (Val::Const(c), Val::Dyn { id, shape }) => binary_const(
            ctx,
            node,
            kind,
            (id, shape),
            &c,
            matches!(kind, "sub" | "div"),
            output,
        ),
        _ => Err("no operand is computed from the graph input".into()),
    }
}

/// The `sigmoid` op computing `sigmoid(x)` for a `x * sigmoid(x)` pair, read by nothing else.
fn silu_pair(ctx: &Ctx, (a, b): (&str, &str)) -> Option<usize> {
    [(a, b), (b, a)].into_iter().find_map(|(x, s)| {
        ctx.sole_producer(s).filter(|&i| {
            let o = &ctx.ops[i];
            o.op.get("op").and_then(Value::as_str) == Some("sigmoid") && o.input == x
        })
    })
}

fn binary_const(
    ctx: &mut Ctx,
    node: &Node<'_>,
    kind: &str,
    (id, shape): (String, Vec<usize>),
    c: &Const,
    reverse: bool,
    output: &str,
) -> Result<(), String> {
    let rank = shape.len() + 1;
    let mut dims = c.dims.clone();
    if dims.len() > rank {
        return Err(format!(
            "constant {dims:?} has a higher rank than the activation"
        ));
    }
    if dims.len() == rank {
        if dims[0] != 1 {
            return Err(format!(
                "constant {dims:?} varies along the batch axis; not supported"
            ));
        }
        dims.remove(0);
    }
    let out_shape = broadcast(&shape, &dims)
        .ok_or_else(|| format!("shapes {shape:?} and {:?} do not broadcast", c.dims))?;
    let values = c.floats();
    // A per-channel bias after a conv, or a bias after a dense, folds into it.
    if kind == "add" && out_shape == shape {
        if let Some(index) = ctx.sole_producer(&id) {
            let o = &ctx.ops[index];
            let m = o.shape[0];
            let per_channel = match o.op.get("op").and_then(Value::as_str) {
                Some("conv2d") => dims.len() == 3 && dims[0] == m && dims[1] == 1 && dims[2] == 1,
                Some("dense") => dims == [m],
                _ => false,
            };
            if per_channel {
                scale_op(&mut ctx.ops[index], &vec![1.0; m], &values);
                ctx.retarget(index, output);
                return Ok(());
            }
        }
    }
    if dims.is_empty() {
        dims.push(1);
    }
    let mut value = json!({ "op": kind, "const": dims });
    if reverse {
        value["reverse"] = json!(true);
    }
    let mut o = op(node, value, &id, output, out_shape);
    o.tensors = vec![("value".into(), dims, values)];
    ctx.emit(o);
    Ok(())
}

fn pool(ctx: &mut Ctx, node: &Node<'_>) -> Result<(), String> {
    let (id, shape) = dyn_input(ctx, node, 0)?;
    let (c, h, w) = chw(&shape, node.op)?;
    let k = node
        .ints("kernel_shape")
        .ok_or("\"kernel_shape\" is missing")?;
    let [kh, kw] = non_negative(&k, "kernel_shape")?[..] else {
        return Err(format!("kernel_shape {k:?}: 2-D pooling only"));
    };
    if node
        .ints("dilations")
        .is_some_and(|d| d.iter().any(|&x| x != 1))
    {
        return Err("dilated pooling is not supported".into());
    }
    let ceil = node.int("ceil_mode", 0) != 0;
    let win = window(node, (h, w), (kh, kw), ceil)?;
    let max = node.op == "MaxPool";
    let mut value = json!({
        "op": if max { "maxpool" } else { "avgpool" }, "kernel": pair(kh, kw),
        "stride": pair(win.stride.0, win.stride.1), "padding": pads4(win.pads),
    });
    if ceil {
        value["ceil_mode"] = json!(true);
    }
    if !max && node.int("count_include_pad", 0) != 0 {
        value["count_include_pad"] = json!(true);
    }
    let output = out(node)?;
    ctx.emit(op(node, value, &id, &output, vec![c, win.out.0, win.out.1]));
    Ok(())
}

fn pad(ctx: &mut Ctx, node: &Node<'_>) -> Result<(), String> {
    let (id, shape) = dyn_input(ctx, node, 0)?;
    let mode = node.string("mode").unwrap_or_else(|| "constant".into());
    if mode != "constant" {
        return Err(format!("mode '{mode}' is not supported (only constant)"));
    }
    let rank = shape.len() + 1;
    let (pads, value, axes) = if ctx.opset < 11 {
        (
            node.ints("pads").ok_or("\"pads\" is missing")?,
            node.float("value", 0.0),
            None,
        )
    } else {
        let pads = const_input(ctx, node, 1)?
            .ok_or("pads (input 1) is missing")?
            .ints()?;
        let value = match const_input(ctx, node, 2)? {
            Some(v) => v.scalar().ok_or("constant_value must be a scalar")?,
            None => 0.0,
        };
        let axes = const_input(ctx, node, 3)?.map(|a| a.ints()).transpose()?;
        (pads, value, axes)
    };
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&x| axis(x, rank)).collect::<Result<_, _>>()?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(format!("pads {pads:?} need {} entries", 2 * axes.len()));
    }
    let pads = non_negative(&pads, "pads (negative pads crop;)")?;
    let mut full = vec![0usize; 2 * rank];
    for (j, &a) in axes.iter().enumerate() {
        full[a] = pads[j];
        full[rank + a] = pads[axes.len() + j];
    }
    if full[0] != 0 || full[rank] != 0 {
        return Err("padding the batch axis is not supported".into());
    }
    let ps: Vec<usize> = full[1..rank]
        .iter()
        .chain(&full[rank + 1..])
        .copied()
        .collect();
    let output = out(node)?;
    if ps.iter().all(|&p| p == 0) {
        alias(ctx, output, id, shape);
        return Ok(());
    }
    let r = shape.len();
    let out_shape: Vec<usize> = (0..r).map(|i| shape[i] + ps[i] + ps[r + i]).collect();
    fold::bounded(&out_shape)?;
    ctx.emit(op(
        node,
        json!({"op": "pad", "pads": ps, "value": value}),
        &id,
        &output,
        out_shape,
    ));
    Ok(())
}
