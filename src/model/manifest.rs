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

fn leaky_alpha() -> f32 {
    0.01
}

fn hard_sigmoid_alpha() -> f32 {
    0.2
}

fn half() -> f32 {
    0.5
}

fn lrn_alpha() -> f32 {
    1e-4
}

fn lrn_beta() -> f32 {
    0.75
}

fn one_f32() -> f32 {
    1.0
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
    /// Softmax along one per-sample axis (default: the last).
    Softmax {
        /// Per-sample axis (0 = channels of `[C, H, W]`); the last when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        axis: Option<usize>,
    },
    /// `x + operand` (residual add with `with`, or a broadcast constant with `const`).
    Add {
        /// `"input"` or a `save_as` label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        with: Option<String>,
        /// Per-sample shape of a constant operand stored under `<block>.<op>.value`.
        #[serde(rename = "const", default, skip_serializing_if = "Option::is_none")]
        constant: Option<Vec<usize>>,
        /// Computes `operand + x` (same as `x + operand`; kept for symmetry).
        #[serde(default, skip_serializing_if = "is_false")]
        reverse: bool,
    },
    /// `x - operand` (or `operand - x` with `reverse`).
    Sub {
        /// `"input"` or a `save_as` label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        with: Option<String>,
        /// Per-sample shape of a constant operand stored under `<block>.<op>.value`.
        #[serde(rename = "const", default, skip_serializing_if = "Option::is_none")]
        constant: Option<Vec<usize>>,
        /// Computes `operand - x`.
        #[serde(default, skip_serializing_if = "is_false")]
        reverse: bool,
    },
    /// `x · operand`; the old channel gate (`[C,1,1]` times a saved `[C,H,W]`) is a broadcast.
    Mul {
        /// `"input"` or a `save_as` label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        with: Option<String>,
        /// Per-sample shape of a constant operand stored under `<block>.<op>.value`.
        #[serde(rename = "const", default, skip_serializing_if = "Option::is_none")]
        constant: Option<Vec<usize>>,
        /// Computes `operand · x` (same as `x · operand`; kept for symmetry).
        #[serde(default, skip_serializing_if = "is_false")]
        reverse: bool,
    },
    /// `x / operand` (or `operand / x` with `reverse`).
    Div {
        /// `"input"` or a `save_as` label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        with: Option<String>,
        /// Per-sample shape of a constant operand stored under `<block>.<op>.value`.
        #[serde(rename = "const", default, skip_serializing_if = "Option::is_none")]
        constant: Option<Vec<usize>>,
        /// Computes `operand / x`.
        #[serde(default, skip_serializing_if = "is_false")]
        reverse: bool,
    },
    /// `x` if `x >= 0`, else `alpha · x`.
    LeakyRelu {
        /// Slope of the negative part.
        #[serde(default = "leaky_alpha")]
        alpha: f32,
    },
    /// `min(max(x, min), max)`; a `null` or absent bound is unbounded.
    Clip {
        /// Lower bound.
        #[serde(default)]
        min: Option<f32>,
        /// Upper bound.
        #[serde(default)]
        max: Option<f32>,
    },
    /// `max(0, min(1, alpha · x + beta))`.
    HardSigmoid {
        /// Slope.
        #[serde(default = "hard_sigmoid_alpha")]
        alpha: f32,
        /// Offset.
        #[serde(default = "half")]
        beta: f32,
    },
    /// `x · max(0, min(1, x / 6 + 0.5))`.
    HardSwish,
    /// Hyperbolic tangent.
    Tanh,
    /// Joins the op's input and the `with` tensors (in that order) along a per-sample axis.
    Concat {
        /// `save_as` labels (or `"input"`) of the further pieces.
        with: Vec<String>,
        /// Per-sample axis (0 = channels of `[C, H, W]`).
        axis: usize,
    },
    /// Per-sample permutation of the axes.
    Transpose {
        /// `perm[i]` is the input axis that becomes output axis `i`.
        perm: Vec<usize>,
    },
    /// Constant padding: `[begin_0, .., begin_r, end_0, .., end_r]` per-sample.
    Pad {
        /// Padding before and after each per-sample axis (ONNX order without the batch).
        pads: Vec<usize>,
        /// Value of the padded cells.
        #[serde(default)]
        value: f32,
    },
    /// A new per-sample shape with the same element count (no data movement).
    Reshape {
        /// Target shape, every entry positive.
        shape: Vec<usize>,
    },
    /// Local response normalisation across channels (ONNX `LRN`).
    Lrn {
        /// Channels in the window.
        size: usize,
        /// Scale of the sum of squares.
        #[serde(default = "lrn_alpha")]
        alpha: f32,
        /// Exponent.
        #[serde(default = "lrn_beta")]
        beta: f32,
        /// Additive constant.
        #[serde(default = "one_f32")]
        bias: f32,
    },
}

/// The four broadcasting binary ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a · b`.
    Mul,
    /// `a / b`.
    Div,
}

impl BinaryOp {
    /// Applies the op (the CPU reference of every binary kernel).
    #[inline]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
        }
    }

    /// The code the WGSL binary kernel switches on.
    pub fn code(self) -> u32 {
        match self {
            BinaryOp::Add => 0,
            BinaryOp::Sub => 1,
            BinaryOp::Mul => 2,
            BinaryOp::Div => 3,
        }
    }
}

/// The second operand of a binary op as written: a tensor (`with`) or a constant (`const`).
#[derive(Debug, Clone, PartialEq)]
pub enum OperandSpec<'a> {
    /// `"input"` or a `save_as` label.
    With(&'a str),
    /// A constant of this per-sample shape.
    Const(&'a [usize]),
}

impl OpKind {
    /// For `add`/`sub`/`mul`/`div`: the op, its second operand and `reverse`; `None` for other
    /// ops. Errors when the operand is not exactly one of `with` and `const`.
    pub fn binary(&self) -> Option<Result<(BinaryOp, OperandSpec<'_>, bool), String>> {
        let (op, with, constant, reverse) = match self {
            OpKind::Add {
                with,
                constant,
                reverse,
            } => (BinaryOp::Add, with, constant, reverse),
            OpKind::Sub {
                with,
                constant,
                reverse,
            } => (BinaryOp::Sub, with, constant, reverse),
            OpKind::Mul {
                with,
                constant,
                reverse,
            } => (BinaryOp::Mul, with, constant, reverse),
            OpKind::Div {
                with,
                constant,
                reverse,
            } => (BinaryOp::Div, with, constant, reverse),
            _ => return None,
        };
        Some(match (with, constant) {
            (Some(w), None) => Ok((op, OperandSpec::With(w), *reverse)),
            (None, Some(c)) => Ok((op, OperandSpec::Const(c), *reverse)),
            _ => Err(
                "a binary op takes exactly one second operand: \"with\": \"<label>\" or \"const\": [shape]"
                    .into(),
            ),
        })
    }
}

/// One op of a block as written in the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct OpSpec {
    /// Name used in tensor keys (`<block>.<name>.<param>`).
    pub name: String,
    /// Label under which the op's output is kept for a later op.
    pub save_as: Option<String>,
    /// `"input"` or a `save_as` label the op reads instead of the previous op's output.
    pub from: Option<String>,
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
        let from = match map.remove("from") {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => return Err(format!("\"from\" must be a string, got {other}")),
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
            from,
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
            if let Some(s) = &self.from {
                map.insert("from".into(), Value::String(s.clone()));
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
            OpKind::Softmax { .. } => "softmax",
            OpKind::Add { .. } => "add",
            OpKind::Sub { .. } => "sub",
            OpKind::Mul { .. } => "mul",
            OpKind::Div { .. } => "div",
            OpKind::LeakyRelu { .. } => "leaky_relu",
            OpKind::Clip { .. } => "clip",
            OpKind::HardSigmoid { .. } => "hard_sigmoid",
            OpKind::HardSwish => "hard_swish",
            OpKind::Tanh => "tanh",
            OpKind::Concat { .. } => "concat",
            OpKind::Transpose { .. } => "transpose",
            OpKind::Pad { .. } => "pad",
            OpKind::Reshape { .. } => "reshape",
            OpKind::Lrn { .. } => "lrn",
        }
    }
}
