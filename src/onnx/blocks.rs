//! Valid cuts and blocks. A valid cut is an activation every path from the input to the output
//! passes through: walking the native ops in topological order (dead branches removed), the set
//! of live activations after an op is exactly that op's output. Blocks are the spans between
//! consecutive valid cuts; residual branches and concat modules stay inside one block, written
//! with `from`/`save_as`/`with` labels. A cut right before an activation is not used, so the
//! activation stays with (and fuses into) the op it follows.

use super::graph::{Lowered, NativeOp};
use super::OnnxError;
use crate::model::manifest::BlockSpec;
use crate::model::weights::TensorData;
use crate::model::Manifest;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A name usable in tensor keys: ASCII letters, digits and `_`, no leading or trailing `_`.
pub(super) fn sanitise(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for ch in name.chars() {
        let c = if ch.is_ascii_alphanumeric() { ch } else { '_' };
        if !(c == '_' && (out.is_empty() || out.ends_with('_'))) {
            out.push(c);
        }
    }
    out.trim_end_matches('_').to_string()
}

/// A name not in `taken` (suffixing `_2`, `_3`, …), then taken.
fn unique(base: String, taken: &mut HashSet<String>) -> String {
    let mut name = base.clone();
    let mut k = 2;
    while !taken.insert(name.clone()) {
        name = format!("{base}_{k}");
        k += 1;
    }
    name
}

/// Indices of ops after which the cut is valid (the last op always).
pub(super) fn valid_cuts(input: &str, ops: &[NativeOp]) -> Vec<usize> {
    let mut last_use: HashMap<&str, usize> = HashMap::new();
    for (i, o) in ops.iter().enumerate() {
        for id in std::iter::once(&o.input).chain(&o.with) {
            last_use.insert(id, i);
        }
    }
    let mut live: HashSet<&str> = HashSet::from([input]);
    let mut cuts = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        live.insert(&o.output);
        live.retain(|id| last_use.get(id).is_some_and(|&u| u > i) || *id == o.output);
        if live.len() == 1 && (i + 1 == ops.len() || last_use.contains_key(o.output.as_str())) {
            cuts.push(i);
        }
    }
    if cuts.last() != Some(&(ops.len() - 1)) {
        cuts.push(ops.len() - 1);
    }
    // An activation stays with the op it follows (where it fuses): no cut between them.
    cuts.retain(|&i| {
        ops.get(i + 1).is_none_or(|next| {
            !(next.input == ops[i].output
                && ACTIVATIONS.contains(&next.op.get("op").and_then(Value::as_str).unwrap_or("")))
        })
    });
    cuts
}

/// Native activation ops: a valid cut right before one is not used.
const ACTIVATIONS: &[&str] = &[
    "relu",
    "relu6",
    "leaky_relu",
    "clip",
    "sigmoid",
    "hard_sigmoid",
    "hard_swish",
    "tanh",
    "silu",
];

/// Removes ops whose output never reaches `output`.
fn prune(ops: Vec<NativeOp>, output: &str) -> Vec<NativeOp> {
    let mut needed: HashSet<String> = HashSet::from([output.to_string()]);
    let mut keep = vec![false; ops.len()];
    for (i, o) in ops.iter().enumerate().rev() {
        if needed.contains(&o.output) {
            keep[i] = true;
            needed.insert(o.input.clone());
            needed.extend(o.with.iter().cloned());
        }
    }
    ops.into_iter()
        .zip(keep)
        .filter_map(|(o, k)| k.then_some(o))
        .collect()
}

/// Builds the manifest and tensors: one block per span between valid cuts. A graph whose output
/// is not 1-D per sample ends in a `flatten` (edgecut models end in `[classes]`).
pub(super) fn assemble(
    lowered: Lowered,
    name: &str,
    provenance: Value,
) -> Result<(Manifest, BTreeMap<String, TensorData>), OnnxError> {
    let mut ops = prune(lowered.ops, &lowered.output);
    let mut output_shape = lowered.output_shape.clone();
    if output_shape.len() != 1 {
        let n = output_shape.iter().product();
        let last = ops.last().map(|o| o.node.clone()).unwrap_or_default();
        ops.push(NativeOp {
            node: format!("{last}_flatten"),
            op: json!({"op": "flatten"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            input: lowered.output.clone(),
            with: Vec::new(),
            with_list: false,
            output: format!("{}#flat", lowered.output),
            shape: vec![n],
            tensors: Vec::new(),
        });
        output_shape = vec![n];
    }
    if ops.is_empty() {
        return Err(OnnxError::Graph("the graph computes nothing".into()));
    }
    let cuts = valid_cuts(&lowered.input, &ops);
    let mut block_names = HashSet::new();
    let mut blocks = Vec::new();
    let mut tensors = BTreeMap::new();
    let mut start = 0;
    for &end in &cuts {
        let span = &ops[start..=end];
        let block_input = if start == 0 {
            lowered.input.as_str()
        } else {
            ops[start - 1].output.as_str()
        };
        let base = sanitise(&span[span.len() - 1].node);
        let block = unique(
            if base.is_empty() {
                format!("block{}", blocks.len())
            } else {
                base
            },
            &mut block_names,
        );
        let spec = block_ops(&block, block_input, span, &mut tensors)?;
        blocks.push(spec);
        start = end + 1;
    }
    let classes = output_shape[0];
    Ok((
        Manifest {
            format: 1,
            name: if name.is_empty() {
                "imported".into()
            } else {
                name.to_string()
            },
            description: "imported from ONNX".into(),
            input: lowered.input_shape,
            classes,
            init: None,
            blocks,
            exits: Vec::new(),
            preprocess: None,
            provenance: Some(provenance),
        },
        tensors,
    ))
}

/// The op objects of one block: names, `from` where an op does not read the previous op's
/// output, `save_as` labels for activations read later, tensors under `<block>.<op>.<param>`.
fn block_ops(
    block: &str,
    block_input: &str,
    span: &[NativeOp],
    tensors: &mut BTreeMap<String, TensorData>,
) -> Result<BlockSpec, OnnxError> {
    // Activations read other than as the next op's main input need a label.
    let mut labels: HashMap<&str, String> = HashMap::new();
    for (j, o) in span.iter().enumerate() {
        let prev = if j == 0 {
            Some(block_input)
        } else {
            Some(span[j - 1].output.as_str())
        };
        let mut reads: Vec<&str> = Vec::new();
        if Some(o.input.as_str()) != prev {
            reads.push(&o.input);
        }
        reads.extend(o.with.iter().map(String::as_str));
        for id in reads {
            if id != block_input && !labels.contains_key(id) {
                let n = labels.len();
                labels.insert(id, format!("t{n}"));
            }
        }
    }
    let label = |id: &str| -> Result<String, OnnxError> {
        if id == block_input {
            Ok("input".into())
        } else {
            labels.get(id).cloned().ok_or_else(|| {
                OnnxError::Graph(format!(
                    "activation '{id}' is read in block '{block}' but not computed there"
                ))
            })
        }
    };
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(span.len());
    for (j, o) in span.iter().enumerate() {
        let base = sanitise(&o.node);
        let name = unique(
            if base.is_empty() {
                format!("op{j}")
            } else {
                base
            },
            &mut names,
        );
        let mut value = o.op.clone();
        value.insert("name".into(), json!(name));
        let prev = if j == 0 {
            block_input
        } else {
            span[j - 1].output.as_str()
        };
        if o.input != prev {
            value.insert("from".into(), json!(label(&o.input)?));
        }
        if !o.with.is_empty() {
            let with: Vec<String> = o.with.iter().map(|w| label(w)).collect::<Result<_, _>>()?;
            value.insert(
                "with".into(),
                if o.with_list {
                    json!(with)
                } else {
                    json!(with[0])
                },
            );
        }
        if let Some(l) = labels.get(o.output.as_str()) {
            value.insert("save_as".into(), json!(l));
        }
        for (param, dims, data) in &o.tensors {
            tensors.insert(
                format!("{block}.{name}.{param}"),
                TensorData::F32(dims.clone(), data.clone()),
            );
        }
        out.push(Value::Object(value));
    }
    Ok(BlockSpec {
        name: block.to_string(),
        ops: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitised_names_keep_letters_digits_and_single_underscores() {
        assert_eq!(
            sanitise("/layer1/layer1.0/conv1/Conv"),
            "layer1_layer1_0_conv1_Conv"
        );
        assert_eq!(sanitise("__a--b__"), "a_b");
        assert_eq!(sanitise("..."), "");
    }
}
