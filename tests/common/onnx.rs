//! Building small ONNX models in Rust with the crate's prost types (no Python), for the import
//! tests. Included by `#[path]` from the ONNX test files only.
#![allow(dead_code)] // each test binary uses a different subset

use edgecut::onnx::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension,
    tensor_shape_proto::Dimension, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use prost::Message;

/// A graph under construction: one float input `x` of the given dims (`-1` = symbolic batch).
pub struct Graph {
    pub graph: GraphProto,
    pub opset: i64,
}

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            denotation: None,
            value: Some(if d < 0 {
                dimension::Value::DimParam("N".into())
            } else {
                dimension::Value::DimValue(d)
            }),
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            denotation: None,
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
        ..Default::default()
    }
}

/// A float tensor.
pub fn tensor(name: &str, dims: &[i64], data: Vec<f32>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        float_data: data,
        ..Default::default()
    }
}

/// An int64 tensor.
pub fn tensor_i64(name: &str, dims: &[i64], data: Vec<i64>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Int64 as i32),
        int64_data: data,
        ..Default::default()
    }
}

pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

pub fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

pub fn tensor_attr(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }
}

impl Graph {
    /// A graph reading `x` of `dims`, at opset 13.
    pub fn new(dims: &[i64]) -> Self {
        Self {
            graph: GraphProto {
                name: Some("test_graph".into()),
                input: vec![value_info("x", dims)],
                ..Default::default()
            },
            opset: 13,
        }
    }

    /// Adds a float initialiser and returns its name.
    pub fn init(&mut self, name: &str, dims: &[i64], data: Vec<f32>) -> String {
        self.graph.initializer.push(tensor(name, dims, data));
        name.into()
    }

    /// Adds an int64 initialiser and returns its name.
    pub fn init_i64(&mut self, name: &str, dims: &[i64], data: Vec<i64>) -> String {
        self.graph.initializer.push(tensor_i64(name, dims, data));
        name.into()
    }

    /// Adds a node named after its first output.
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) {
        self.graph.node.push(NodeProto {
            name: Some(format!("{op}_{}", outputs.first().copied().unwrap_or(""))),
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        });
    }

    /// The model proto with graph output `output` (dims unchecked by the importer).
    pub fn model(&self, output: &str) -> ModelProto {
        let mut graph = self.graph.clone();
        graph.output = vec![value_info(output, &[])];
        ModelProto {
            ir_version: Some(8),
            producer_name: Some("edgecut-tests".into()),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(self.opset),
            }],
            graph: Some(graph),
            ..Default::default()
        }
    }

    /// Encoded model bytes.
    pub fn bytes(&self, output: &str) -> Vec<u8> {
        self.model(output).encode_to_vec()
    }
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
