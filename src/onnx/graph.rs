//! The graph walk: checks names and order (no dangling names, no cycles), reads initialisers,
//! then visits every node in topological order, folding constants ([`super::fold`]) or mapping
//! the node onto native ops ([`super::lower`]). Every node that cannot be mapped is collected,
//! so the one error lists them all.

use super::proto::{tensor_proto, type_proto, AttributeProto, GraphProto, NodeProto};
use super::reader::{self, Const};
use super::{fold, lower, OnnxError, Unsupported};
use crate::model::{checked_elems, MAX_MODEL_PARAMS, MAX_TENSOR_ELEMS};
use serde_json::{Map, Value};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::Path;

/// One ONNX node with its resolved name and the model's opset.
pub(super) struct Node<'a> {
    pub proto: &'a NodeProto,
    /// The node name, or `<op type>_<index>` when the file leaves it empty.
    pub name: String,
    pub op: &'a str,
    pub opset: i64,
}

impl Node<'_> {
    pub fn attr(&self, key: &str) -> Option<&AttributeProto> {
        self.proto
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(key))
    }

    pub fn int(&self, key: &str, default: i64) -> i64 {
        self.attr(key).and_then(|a| a.i).unwrap_or(default)
    }

    pub fn float(&self, key: &str, default: f32) -> f32 {
        self.attr(key).and_then(|a| a.f).unwrap_or(default)
    }

    pub fn ints(&self, key: &str) -> Option<Vec<i64>> {
        self.attr(key).map(|a| a.ints.clone())
    }

    pub fn string(&self, key: &str) -> Option<String> {
        self.attr(key)
            .and_then(|a| a.s.as_ref())
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }

    /// Name of input `i`, `None` when absent or empty (an omitted optional input).
    pub fn input(&self, i: usize) -> Option<&str> {
        self.proto
            .input
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    pub fn output(&self, i: usize) -> Option<&str> {
        self.proto
            .output
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// What a tensor name holds during the walk.
#[derive(Debug, Clone)]
pub(super) enum Val {
    /// Known at import.
    Const(Const),
    /// An activation: the id of the native op output holding it and its per-sample shape.
    Dyn { id: String, shape: Vec<usize> },
    /// Produced by a node that could not be mapped (already reported).
    Unknown,
}

/// A native op (one `model.json` op object without its placement fields) with the ids of the
/// activations it reads and writes.
#[derive(Debug, Clone)]
pub(super) struct NativeOp {
    /// The ONNX node it comes from (for names).
    pub node: String,
    /// The op object: `op` and its parameters.
    pub op: Map<String, Value>,
    /// Main input.
    pub input: String,
    /// Further inputs (`with` of binary ops, pieces of `concat`).
    pub with: Vec<String>,
    /// Whether `with` is written as a list (`concat`).
    pub with_list: bool,
    /// Output id.
    pub output: String,
    /// Per-sample output shape.
    pub shape: Vec<usize>,
    /// Tensors of the op: parameter name, shape, values.
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// The graph as native ops.
#[derive(Debug)]
pub(super) struct Lowered {
    pub input: String,
    pub input_shape: Vec<usize>,
    pub output: String,
    pub output_shape: Vec<usize>,
    pub ops: Vec<NativeOp>,
}

/// The state of the walk.
pub(super) struct Ctx {
    pub opset: i64,
    pub vals: HashMap<String, Val>,
    /// How many node inputs and graph outputs read each tensor name.
    pub uses: HashMap<String, usize>,
    pub ops: Vec<NativeOp>,
    /// Native op index producing each id.
    pub producer: HashMap<String, usize>,
    /// The batch size the file declares for its input, when it is a number.
    pub declared_batch: Option<i64>,
}

impl Ctx {
    /// Appends a native op and records its output.
    pub fn emit(&mut self, op: NativeOp) {
        self.producer.insert(op.output.clone(), self.ops.len());
        self.vals.insert(
            op.output.clone(),
            Val::Dyn {
                id: op.output.clone(),
                shape: op.shape.clone(),
            },
        );
        self.ops.push(op);
    }

    /// The native op producing `id` when nothing else reads it (so it may be changed).
    pub fn sole_producer(&self, id: &str) -> Option<usize> {
        self.producer
            .get(id)
            .copied()
            .filter(|_| self.uses.get(id).copied() == Some(1))
    }

    /// Makes op `index` produce `out` instead (after folding a follower into it).
    pub fn retarget(&mut self, index: usize, out: &str) {
        let old = std::mem::replace(&mut self.ops[index].output, out.to_string());
        self.producer.remove(&old);
        self.producer.insert(out.to_string(), index);
        let shape = self.ops[index].shape.clone();
        self.vals.insert(
            out.to_string(),
            Val::Dyn {
                id: out.to_string(),
                shape,
            },
        );
    }
}

/// Walks `graph` (opset `opset`) into native ops. `dir` is the folder for external data.
pub(super) fn lower(
    graph: &GraphProto,
    opset: i64,
    dir: Option<&Path>,
) -> Result<Lowered, OnnxError> {
    let mut vals: HashMap<String, Val> = HashMap::new();
    let mut params = 0usize;
    for t in &graph.initializer {
        let name = t.name.clone().unwrap_or_default();
        let c = reader::tensor(t, dir)?;
        params = params
            .checked_add(c.data.len())
            .filter(|&p| p <= MAX_MODEL_PARAMS)
            .ok_or_else(|| OnnxError::Tensor {
                name: name.clone(),
                reason: format!(
                    "the initialisers up to this one hold more than {MAX_MODEL_PARAMS} values"
                ),
            })?;
        vals.insert(name, Val::Const(c));
    }
    if !graph.sparse_initializer.is_empty() {
        return Err(OnnxError::Graph(
            "sparse initialisers are not supported".into(),
        ));
    }
    let (input, input_shape, declared_batch) = graph_input(graph, &vals)?;
    vals.insert(
        input.clone(),
        Val::Dyn {
            id: input.clone(),
            shape: input_shape.clone(),
        },
    );
    let order = topological_order(graph, &vals)?;
    let mut uses: HashMap<String, usize> = HashMap::new();
    for n in &graph.node {
        for i in n.input.iter().filter(|s| !s.is_empty()) {
            *uses.entry(i.clone()).or_default() += 1;
        }
    }
    for o in &graph.output {
        *uses.entry(o.name.clone().unwrap_or_default()).or_default() += 1;
    }
    let mut ctx = Ctx {
        opset,
        vals,
        uses,
        ops: Vec::new(),
        producer: HashMap::new(),
        declared_batch,
    };
    let mut unsupported = Vec::new();
    for &i in &order {
        let proto = &graph.node[i];
        let op = proto.op_type.as_deref().unwrap_or("");
        let node = Node {
            proto,
            name: proto
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| format!("{op}_{i}")),
            op,
            opset,
        };
        if let Err(reason) = visit(&mut ctx, &node) {
            unsupported.push(Unsupported {
                node: node.name.clone(),
                op_type: op.to_string(),
                opset,
                reason,
            });
            for o in proto.output.iter().filter(|o| !o.is_empty()) {
                ctx.vals.insert(o.clone(), Val::Unknown);
            }
        }
    }
    if !unsupported.is_empty() {
        return Err(OnnxError::Unsupported(unsupported));
    }
    let [output] = graph.output.as_slice() else {
        return Err(OnnxError::Graph(format!(
            "the graph has {} outputs; edgecut models have exactly one",
            graph.output.len()
        )));
    };
    let out_name = output.name.clone().unwrap_or_default();
    let (output, output_shape) = match ctx.vals.get(&out_name) {
        Some(Val::Dyn { id, shape }) => (id.clone(), shape.clone()),
        Some(_) => {
            return Err(OnnxError::Graph(format!(
                "the graph output '{out_name}' does not depend on the input"
            )))
        }
        None => {
            return Err(OnnxError::Graph(format!(
                "the graph output '{out_name}' is produced by no node"
            )))
        }
    };
    if output == input {
        return Err(OnnxError::Graph(
            "the graph output is its input: there is nothing to compute".into(),
        ));
    }
    Ok(Lowered {
        input,
        input_shape,
        output,
        output_shape,
        ops: ctx.ops,
    })
}

/// The one non-initialiser graph input: its name, per-sample shape and declared batch size.
fn graph_input(
    graph: &GraphProto,
    vals: &HashMap<String, Val>,
) -> Result<(String, Vec<usize>, Option<i64>), OnnxError> {
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !vals.contains_key(i.name.as_deref().unwrap_or("")))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(OnnxError::Graph(format!(
            "the graph has {} inputs that are not initialisers; edgecut models have exactly one",
            inputs.len()
        )));
    };
    let name = input.name.clone().unwrap_or_default();
    let err = |reason: String| OnnxError::Tensor {
        name: name.clone(),
        reason,
    };
    let Some(type_proto::Value::TensorType(t)) =
        input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(err("the graph input must be a tensor".into()));
    };
    if t.elem_type != Some(tensor_proto::DataType::Float as i32) {
        return Err(err(format!(
            "the graph input has element type {}, edgecut takes float32 inputs",
            t.elem_type.unwrap_or(0)
        )));
    }
    let dims = t.shape.as_ref().map(|s| s.dim.as_slice()).ok_or_else(|| {
        err("the graph input has no shape; export with a fixed input size".into())
    })?;
    use super::proto::tensor_shape_proto::dimension::Value as D;
    let declared_batch = match dims.first().and_then(|d| d.value.as_ref()) {
        Some(D::DimValue(v)) => Some(*v),
        _ => None,
    };
    if dims.len() < 2 {
        return Err(err(format!(
            "the graph input has rank {}; edgecut needs [batch, ...] with at least one per-sample dimension",
            dims.len()
        )));
    }
    if declared_batch.is_some_and(|b| b < 1) {
        return Err(err(format!(
            "the graph input declares batch size {}",
            declared_batch.unwrap_or(0)
        )));
    }
    let mut shape = Vec::with_capacity(dims.len() - 1);
    for (i, d) in dims.iter().enumerate().skip(1) {
        match d.value.as_ref() {
            Some(D::DimValue(v)) if *v > 0 => shape.push(*v as usize),
            Some(D::DimValue(v)) => {
                return Err(err(format!(
                    "dimension {i} of the graph input is {v}; sizes must be positive"
                )))
            }
            Some(D::DimParam(p)) => {
                return Err(err(format!(
                    "dimension {i} of the graph input is symbolic ('{p}'); export with a fixed input size (only the batch may vary)"
                )))
            }
            None => {
                return Err(err(format!(
                    "dimension {i} of the graph input has no size; export with a fixed input size"
                )))
            }
        }
    }
    if checked_elems(&shape).is_none_or(|n| n > MAX_TENSOR_ELEMS) {
        return Err(err(format!(
            "the per-sample input shape {shape:?} has more than {MAX_TENSOR_ELEMS} elements"
        )));
    }
    Ok((name, shape, declared_batch))
}

/// Node indices in an order where every node follows the producers of its inputs; refuses
/// dangling input names, tensors produced twice and cycles, naming them.
fn topological_order(
    graph: &GraphProto,
    known: &HashMap<String, Val>,
) -> Result<Vec<usize>, OnnxError> {
    let name = |i: usize| {
        let n = &graph.node[i];
        format!(
            "'{}' ({})",
            n.name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| format!("node {i}")),
            n.op_type.as_deref().unwrap_or("?")
        )
    };
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if known.contains_key(o.as_str()) || producer.insert(o, i).is_some() {
                return Err(OnnxError::Graph(format!(
                    "tensor '{o}' is produced twice (node {} writes a name already taken)",
                    name(i)
                )));
            }
        }
    }
    let mut pending = vec![0usize; graph.node.len()];
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); graph.node.len()];
    for (i, n) in graph.node.iter().enumerate() {
        for inp in n.input.iter().filter(|s| !s.is_empty()) {
            if let Some(&p) = producer.get(inp.as_str()) {
                pending[i] += 1;
                consumers[p].push(i);
            } else if !known.contains_key(inp.as_str()) {
                return Err(OnnxError::Graph(format!(
                    "node {} reads tensor '{inp}', which no node, initialiser or graph input provides",
                    name(i)
                )));
            }
        }
    }
    for o in &graph.output {
        let o = o.name.as_deref().unwrap_or("");
        if !producer.contains_key(o) && !known.contains_key(o) {
            return Err(OnnxError::Graph(format!(
                "graph output '{o}' is produced by no node"
            )));
        }
    }
    // Lowest index first: a file already in topological order (as ONNX requires) keeps it.
    let mut ready: BinaryHeap<Reverse<usize>> = (0..graph.node.len())
        .filter(|&i| pending[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(graph.node.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &c in &consumers[i] {
            pending[c] -= 1;
            if pending[c] == 0 {
                ready.push(Reverse(c));
            }
        }
    }
    if order.len() < graph.node.len() {
        let done: HashSet<usize> = order.iter().copied().collect();
        let stuck: Vec<String> = (0..graph.node.len())
            .filter(|i| !done.contains(i))
            .take(5)
            .map(name)
            .collect();
        return Err(OnnxError::Graph(format!(
            "the graph has a cycle through node(s) {}",
            stuck.join(", ")
        )));
    }
    Ok(order)
}

/// Operators folded when all their inputs are constants.
const FOLDABLE: &[&str] = &[
    "Constant",
    "ConstantOfShape",
    "Shape",
    "Gather",
    "Slice",
    "Concat",
    "Unsqueeze",
    "Squeeze",
    "Cast",
    "Reshape",
    "Flatten",
    "Transpose",
    "Identity",
    "Dropout",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Neg",
    "Sqrt",
    "Reciprocal",
];

/// Folds or maps one node; `Err` says why it cannot be imported.
fn visit(ctx: &mut Ctx, node: &Node<'_>) -> Result<(), String> {
    if !matches!(
        node.proto.domain.as_deref(),
        None | Some("") | Some("ai.onnx")
    ) {
        return Err(format!(
            "operators of domain '{}' are not supported (only the default ONNX domain is)",
            node.proto.domain.as_deref().unwrap_or("")
        ));
    }
    lower::check_attributes(node)?;
    let inputs: Vec<Option<&Val>> = (0..node.proto.input.len())
        .map(|i| node.input(i).and_then(|n| ctx.vals.get(n)))
        .collect();
    if inputs.iter().flatten().any(|v| matches!(v, Val::Unknown)) {
        // Downstream of a node already reported: still say when the operator itself is unknown.
        return lower::check_known(node).map(|()| mark_unknown(ctx, node));
    }
    let all_const = inputs.iter().flatten().all(|v| matches!(v, Val::Const(_)));
    if node.op == "Shape" {
        if let Some(Val::Dyn { shape, .. }) = inputs.first().copied().flatten() {
            let mut values = vec![None];
            values.extend(shape.iter().map(|&d| Some(d as i64)));
            let values = fold::shape_range(node, values);
            let out = node.output(0).ok_or("no output")?.to_string();
            ctx.vals.insert(
                out,
                Val::Const(Const {
                    dims: vec![values.len()],
                    data: reader::Data::I(values),
                }),
            );
            return Ok(());
        }
    }
    if all_const && FOLDABLE.contains(&node.op) {
        let consts: Vec<Option<&Const>> = inputs
            .iter()
            .map(|v| match v {
                Some(Val::Const(c)) => Some(c),
                _ => None,
            })
            .collect();
        let outs = fold::fold(node, &consts)?;
        let out = node.output(0).ok_or("no output")?.to_string();
        for c in outs {
            ctx.vals.insert(out.clone(), Val::Const(c));
        }
        return Ok(());
    }
    if all_const {
        return Err(format!(
            "all inputs are constant and folding {} is not supported",
            node.op
        ));
    }
    lower::lower_node(ctx, node)
}

fn mark_unknown(ctx: &mut Ctx, node: &Node<'_>) {
    for o in node.proto.output.iter().filter(|o| !o.is_empty()) {
        ctx.vals.insert(o.clone(), Val::Unknown);
    }
}
