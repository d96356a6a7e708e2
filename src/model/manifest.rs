//! The serde schema of `model.json` (format 1). See DESIGN §3 and the README.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The top level of `model.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version; only 1 exists.
    pub format: u32,
    /// Model name, used as the served model name.
    pub name: String,
    /// Free text: what the model is and how it was made.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Per-sample input shape without batch (`[C, H, W]` or `[features]`).
    pub input: Vec<usize>,
    /// Number of classes of the final output and of every exit.
    pub classes: usize,
    /// When present and `weights.safetensors` is absent, weights are drawn from this seed
    /// (architecture-only, untrained models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitSpec>,
    /// Ordered blocks; cut points are block boundaries.
    pub blocks: Vec<BlockSpec>,
    /// Early-exit heads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exits: Vec<ExitSpec>,
    /// How raw images become inputs, for image models (`edgecut classify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<crate::preprocess::Preprocess>,
    /// Free-form provenance (training command, accuracy); kept, never interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Value>,
}

/// Seeded initialisation for models shipped without weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitSpec {
    /// Seed of the weight generator.
    pub seed: u64,
}

/// One block: a short chain of ops.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockSpec {
    /// Block name, unique in the model.
    pub name: String,
    /// Ops as raw JSON; parsed one by one so errors can name the block and op.
    pub ops: Vec<Value>,
}

/// An exit head attached after a block.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitSpec {
    /// Name of the block whose output feeds the head.
    pub after_block: String,
    /// Name of the head (tensor key prefix); defaults to `exit_<after_block>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Weight of this exit's loss in multi-exit training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_weight: Option<f32>,
    /// Ops of the head, ending in class logits.
    pub ops: Vec<Value>,
}

/// A kernel size: `3` or `[3, 3]` (height, width).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Size2 {
    /// The same size in both dimensions.
    Square(usize),
    /// `[height, width]`.
    Pair([usize; 2]),
}

impl Size2 {
    /// `(height, width)`.
    pub fn hw(self) -> (usize, usize) {
        match self {
            Size2::Square(s) => (s, s),
            Size2::Pair([h, w]) => (h, w),
        }
    }
}

/// Zero padding: `1` on every side, or `[top, left, bottom, right]`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Pads {
    /// The same padding on every side.
    Same(usize),
    /// `[top, left, bottom, right]` (ONNX `pads` for 2-D: begins then ends).
    Sides([usize; 4]),
}

impl Default for Pads {
    fn default() -> Self {
        Pads::Same(0)
    }
}

impl Pads {
    /// `[top, left, bottom, right]`.
    pub fn sides(self) -> [usize; 4] {
        match self {
            Pads::Same(p) => [p; 4],
            Pads::Sides(s) => s,
        }
    }

    fn is_zero(&self) -> bool {
        self.sides() == [0; 4]
    }
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

fn unit() -> Size2 {
    Size2::Square(1)
}

fn is_unit(v: &Size2) -> bool {
    v.hw() == (1, 1)
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn one() -> usize {
    1
}

fn bn_eps() -> f32 {
    1e-5
}

/// What an op computes, as written in `model.json` (without the common `name`/`save_as`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum OpKind {
    /// 2-D convolution, NCHW, weight `[out, in/groups, kh, kw]`.
    Conv2d {
        /// Output channels.
        out_channels: usize,
        /// Kernel size.
        kernel: Size2,
        /// Stride: `2` or `[height, width]`.
        #[serde(default = "unit")]
        stride: Size2,
        /// Zero padding: `1` or `[top, left, bottom, right]`.
        #[serde(default)]
        padding: Pads,
        /// Dilation: `2` or `[height, width]`.
        #[serde(default = "unit", skip_serializing_if = "is_unit")]
        dilation: Size2,
        /// Channel groups (input channels for depthwise).
        #[serde(default = "one")]
        groups: usize,
        /// Whether a `bias` tensor exists.
        #[serde(default)]
        bias: bool,
    },
    /// Fully connected layer, weight `[outputs, inputs]`.
    Dense {
        /// Output features.
        outputs: usize,
        /// Whether a `bias` tensor exists.
        #[serde(default)]
        bias: bool,
    },
    /// Fixed-fan-in sparse layer: `indices [outputs, k]`, `weights [outputs, k]`.
    Fanin {
        /// Input features (checked against the incoming shape when given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        inputs: Option<usize>,
        /// Output features.
        outputs: usize,
        /// Inputs per output.
        k: usize,
        /// Consecutive outputs sharing one index row (1: every row independent). A seeded
        /// pattern is drawn grouped; stored indices are checked to be grouped.
        #[serde(default = "one", skip_serializing_if = "is_one")]
        group: usize,
        /// Whether a `bias` tensor exists.
        #[serde(default)]
        bias: bool,
    },
    /// Batch normalisation (inference), folded into the preceding conv/dense at load.
    Batchnorm {
        /// Variance epsilon.
        #[serde(default = "bn_eps")]
        eps: f32,
    },
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x · sigmoid(x)`.
    Silu,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// Max pooling.
    Maxpool {
        /// Window size.
        kernel: Size2,
        /// Stride (defaults to the window).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<Size2>,
        /// Padding (ignored cells): `1` or `[top, left, bottom, right]`.
        #[serde(default, skip_serializing_if = "Pads::is_zero")]
        padding: Pads,
        /// Round the output size up (ONNX `ceil_mode`): a last, partial window counts when
        /// it starts inside the input or its leading padding.
        #[serde(default, skip_serializing_if = "is_false")]
        ceil_mode: bool,
    },
    /// Average pooling.
    Avgpool {
        /// Window size.
        kernel: Size2,
        /// Stride (defaults to the window).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<Size2>,
        /// Padding: `1` or `[top, left, bottom, right]`.
        #[serde(default, skip_serializing_if = "Pads::is_zero")]
        padding: Pads,
        /// Round the output size up (see `maxpool`).
        #[serde(default, skip_serializing_if = "is_false")]
        ceil_mode: bool,
        /// Divide by the window cells inside the padded input (ONNX `count_include_pad`)
        /// instead of the cells inside the input.
        #[serde(default, skip_serializing_if = "is_false")]
        count_include_pad: bool,
    },
    /// `[C, H, W] → [C, 1, 1]` mean.
    GlobalAvgpool,
    /// `[C, H, W] → [C·H·W]`.
    Flatten,
    /// Softmax over the features of each sample.
    Softmax,
    /// Residual add with the block input (`"input"`) or a saved tensor.
    Add {
        /// `"input"` or a `save_as` label.
        with: String,
    },
    /// Channel gate: current `[C,1,1]` times a saved `[C,H,W]` (or same-shape product).
    Mul {
        /// A `save_as` label or `"input"`.
        with: String,
    },
}

/// One op of a block as written in the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct OpSpec {
    /// Name used in tensor keys (`<block>.<name>.<param>`).
    pub name: String,
    /// Label under which the op's output is kept for a later `add`/`mul`.
    pub save_as: Option<String>,
    /// What the op computes.
    pub kind: OpKind,
}

impl OpSpec {
    /// Parses one op object; `index` gives the default name `<op><index>`.
    pub fn parse(value: &Value, index: usize) -> Result<Self, String> {
        let Value::Object(map) = value else {
            return Err("an op must be a JSON object with an \"op\" field".into());
        };
        let mut map = map.clone();
        let name = match map.remove("name") {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => return Err(format!("\"name\" must be a string, got {other}")),
        };
        let save_as = match map.remove("save_as") {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => return Err(format!("\"save_as\" must be a string, got {other}")),
        };
        let op_name = map
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        let kind: OpKind = serde_json::from_value(Value::Object(map)).map_err(|e| e.to_string())?;
        Ok(Self {
            name: name.unwrap_or_else(|| format!("{op_name}{index}")),
            save_as,
            kind,
        })
    }

    /// Serialises back to the manifest's JSON form.
    pub fn to_value(&self) -> Value {
        let mut v = serde_json::to_value(&self.kind).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            map.insert("name".into(), Value::String(self.name.clone()));
            if let Some(s) = &self.save_as {
                map.insert("save_as".into(), Value::String(s.clone()));
            }
        }
        v
    }

    /// The op's tag as written in JSON (`"conv2d"`, `"relu"`, …).
    pub fn op_name(&self) -> &'static str {
        match self.kind {
            OpKind::Conv2d { .. } => "conv2d",
            OpKind::Dense { .. } => "dense",
            OpKind::Fanin { .. } => "fanin",
            OpKind::Batchnorm { .. } => "batchnorm",
            OpKind::Relu => "relu",
            OpKind::Relu6 => "relu6",
            OpKind::Silu => "silu",
            OpKind::Sigmoid => "sigmoid",
            OpKind::Maxpool { .. } => "maxpool",
            OpKind::Avgpool { .. } => "avgpool",
            OpKind::GlobalAvgpool => "global_avgpool",
            OpKind::Flatten => "flatten",
            OpKind::Softmax => "softmax",
            OpKind::Add { .. } => "add",
            OpKind::Mul { .. } => "mul",
        }
    }
}
