//! Compiled ops: what the CPU reference and the GPU kernels execute, after batchnorm
//! folding and activation fusion; and each manifest op's shape rule ([`OpKind::output_shape`]),
//! the one definition that model loading and the training spec both apply.

use super::manifest::{BinaryOp, OpKind, OperandSpec};

/// An activation fused into the op that produces its input (or standalone). [`Self::code`] is
/// what the WGSL `activate(v, act, a, b)` switches on, [`Self::params`] its `a` and `b`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Activation {
    /// Identity.
    #[default]
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x · sigmoid(x)`.
    Silu,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `x` if `x >= 0`, else `alpha · x`.
    LeakyRelu(f32),
    /// `min(max(x, lo), hi)`; infinite bounds are unbounded.
    Clip(f32, f32),
    /// `max(0, min(1, alpha · x + beta))`.
    HardSigmoid(f32, f32),
    /// `x · max(0, min(1, x / 6 + 0.5))`.
    HardSwish,
    /// Hyperbolic tangent.
    Tanh,
}

impl Activation {
    /// Applies the activation to one value (the CPU reference of every fused activation).
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Relu => x.max(0.0),
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::LeakyRelu(alpha) => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            // max-then-min, not clamp: never panics, whatever the bounds.
            Activation::Clip(lo, hi) => x.max(lo).min(hi),
            Activation::HardSigmoid(alpha, beta) => (alpha * x + beta).clamp(0.0, 1.0),
            Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Activation::Tanh => x.tanh(),
        }
    }

    /// The code the WGSL `activate` switches on (0..=4 as before the parametrised ones).
    pub fn code(self) -> u32 {
        match self {
            Activation::None => 0,
            Activation::Relu => 1,
            Activation::Relu6 => 2,
            Activation::Silu => 3,
            Activation::Sigmoid => 4,
            Activation::LeakyRelu(_) => 5,
            Activation::Clip(..) => 6,
            Activation::HardSigmoid(..) => 7,
            Activation::HardSwish => 8,
            Activation::Tanh => 9,
        }
    }

    /// The parameters `(a, b)` the WGSL `activate` receives (zeros when unused).
    pub fn params(self) -> (f32, f32) {
        match self {
            Activation::LeakyRelu(alpha) => (alpha, 0.0),
            Activation::Clip(lo, hi) => (lo, hi),
            Activation::HardSigmoid(alpha, beta) => (alpha, beta),
            _ => (0.0, 0.0),
        }
    }

    /// True for the activations training can differentiate (the ones before the
    /// parametrised activations of imported models).
    pub fn is_trainable(self) -> bool {
        matches!(
            self,
            Activation::None
                | Activation::Relu
                | Activation::Relu6
                | Activation::Silu
                | Activation::Sigmoid
        )
    }
}

/// 2-D convolution over NCHW activations.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2d {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Stride `(height, width)`.
    pub stride: (usize, usize),
    /// Dilation `(height, width)`.
    pub dilation: (usize, usize),
    /// Zero padding `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// Channel groups.
    pub groups: usize,
    /// `[out, in/groups, kh, kw]`.
    pub weight: Vec<f32>,
    /// `[out]` (zeros when the manifest has no bias and no batchnorm).
    pub bias: Vec<f32>,
    /// Fused activation.
    pub activation: Activation,
}

/// Output length of a sliding window along one axis of `len` cells: kernel `k` (positive),
/// `stride` (positive), `dilation` (positive), padding `(begin, end)`; with `ceil`, a last
/// partial window counts when it starts inside the input or its leading padding (ONNX
/// `ceil_mode`). `None` when the window is larger than the padded input or a size overflows.
pub(crate) fn window_len(
    len: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    (begin, end): (usize, usize),
    ceil: bool,
) -> Option<usize> {
    // Checked: the sizes come straight from model.json or an ONNX file, which may be hostile.
    let extent = dilation.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
    let span = len
        .checked_add(begin)?
        .checked_add(end)?
        .checked_sub(extent)?;
    let mut out = if ceil {
        span.div_ceil(stride)
    } else {
        span / stride
    } + 1;
    if ceil && (out - 1) * stride >= len + begin {
        out -= 1;
    }
    Some(out)
}

impl Conv2d {
    /// Output `(height, width)` for an input of `(h, w)`.
    pub fn output_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let [t, l, b, r] = self.pads;
        Some((
            window_len(
                h,
                self.kernel_h,
                self.stride.0,
                self.dilation.0,
                (t, b),
                false,
            )?,
            window_len(
                w,
                self.kernel_w,
                self.stride.1,
                self.dilation.1,
                (l, r),
                false,
            )?,
        ))
    }

    /// True for depthwise convolution (one input channel per group, one output per group).
    pub fn is_depthwise(&self) -> bool {
        self.groups == self.in_channels && self.groups == self.out_channels
    }

    /// True for a 1x1 convolution with stride 1 and no padding: per sample and group a plain
    /// matrix product of the weights and the input planes.
    pub fn is_pointwise(&self) -> bool {
        self.kernel_h == 1 && self.kernel_w == 1 && self.stride == (1, 1) && self.pads == [0; 4]
    }

    /// `(stride, padding)` when both are the same in every direction and there is no
    /// dilation: the geometry training supports.
    pub fn uniform(&self) -> Option<(usize, usize)> {
        let [t, l, b, r] = self.pads;
        (self.stride.0 == self.stride.1
            && self.dilation == (1, 1)
            && [l, b, r].iter().all(|&p| p == t))
        .then_some((self.stride.0, t))
    }
}

/// Fully connected layer: `y = act(W x + b)`, `W` is `[outputs, inputs]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// Input features.
    pub inputs: usize,
    /// Output features.
    pub outputs: usize,
    /// `[outputs, inputs]`.
    pub weight: Vec<f32>,
    /// `[outputs]`.
    pub bias: Vec<f32>,
    /// Fused activation.
    pub activation: Activation,
}

/// Fixed-fan-in sparse layer in ELL layout: `y[o] = act(Σ_j w[o,j]·x[idx[o,j]] + b[o])`.
#[derive(Debug, Clone, PartialEq)]
pub struct FanIn {
    /// Input features.
    pub inputs: usize,
    /// Output features.
    pub outputs: usize,
    /// Inputs per output.
    pub k: usize,
    /// `[outputs, k]` input indices.
    pub indices: Vec<u32>,
    /// `[outputs, k]` weights.
    pub weights: Vec<f32>,
    /// `[outputs]`.
    pub bias: Vec<f32>,
    /// Fused activation.
    pub activation: Activation,
}

impl FanIn {
    /// True when every output reads every input once: the layer is dense in a permuted order.
    pub fn is_full(&self) -> bool {
        self.k == self.inputs
    }

    /// The largest `g <= max` dividing `outputs` such that every run of `g` consecutive outputs
    /// shares one index row (a grouped pattern); 1 when rows are independent or the op carries
    /// no indices (a shape-only copy).
    pub fn row_group(&self, max: usize) -> usize {
        let k = self.k;
        if k == 0 || self.indices.len() != self.outputs * k {
            return 1;
        }
        (2..=max.min(self.outputs))
            .rev()
            .find(|&g| {
                self.outputs.is_multiple_of(g)
                    && self
                        .indices
                        .chunks(g * k)
                        .all(|group| group.chunks(k).all(|row| row == &group[..k]))
            })
            .unwrap_or(1)
    }

    /// The same layer as a dense `[outputs, inputs]` matrix (taps of one input add up).
    pub fn to_dense(&self) -> Dense {
        let mut weight = vec![0.0; self.outputs * self.inputs];
        for o in 0..self.outputs {
            for j in 0..self.k {
                weight[o * self.inputs + self.indices[o * self.k + j] as usize] +=
                    self.weights[o * self.k + j];
            }
        }
        Dense {
            inputs: self.inputs,
            outputs: self.outputs,
            weight,
            bias: self.bias.clone(),
            activation: self.activation,
        }
    }

    /// The same layer with `k` rounded up to a multiple of `m`: extra taps repeat each row's
    /// first index with weight 0, so they add nothing.
    pub fn padded(&self, m: usize) -> FanIn {
        let k = self.k.div_ceil(m) * m;
        let mut indices = Vec::with_capacity(self.outputs * k);
        let mut weights = Vec::with_capacity(self.outputs * k);
        for o in 0..self.outputs {
            let row = o * self.k..(o + 1) * self.k;
            indices.extend_from_slice(&self.indices[row.clone()]);
            weights.extend_from_slice(&self.weights[row]);
            let first = self.indices.get(o * self.k).copied().unwrap_or(0);
            indices.resize((o + 1) * k, first);
            weights.resize((o + 1) * k, 0.0);
        }
        FanIn {
            k,
            indices,
            weights,
            ..self.clone()
        }
    }
}

/// Max or average pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// Maximum of the window.
    Max,
    /// Mean of the window cells inside the input (padding excluded).
    Avg,
}

/// A pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// Max or average.
    pub kind: PoolKind,
    /// Window height.
    pub kernel_h: usize,
    /// Window width.
    pub kernel_w: usize,
    /// Stride `(height, width)`.
    pub stride: (usize, usize),
    /// Padding `[top, left, bottom, right]` (cells outside the input never count as values).
    pub pads: [usize; 4],
    /// Output size rounded up (ONNX `ceil_mode`).
    pub ceil_mode: bool,
    /// Average pooling divides by the window cells inside the padded input, not only those
    /// inside the input (ONNX `count_include_pad`).
    pub count_include_pad: bool,
}

impl Pool {
    /// Output `(height, width)` for an input of `(h, w)`.
    pub fn output_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let [t, l, b, r] = self.pads;
        Some((
            window_len(h, self.kernel_h, self.stride.0, 1, (t, b), self.ceil_mode)?,
            window_len(w, self.kernel_w, self.stride.1, 1, (l, r), self.ceil_mode)?,
        ))
    }

    /// `(stride, padding)` when both are the same in every direction and the output is not
    /// rounded up: the geometry training supports.
    pub fn uniform(&self) -> Option<(usize, usize)> {
        let [t, l, b, r] = self.pads;
        (self.stride.0 == self.stride.1
            && !self.ceil_mode
            && !self.count_include_pad
            && [l, b, r].iter().all(|&p| p == t))
        .then_some((self.stride.0, t))
    }
}

/// A tensor computed earlier in the block: its input or a saved output.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Operand {
    /// The input of the enclosing block.
    BlockInput,
    /// A tensor saved earlier in the block with `save_as`.
    Saved(String),
}

/// The second operand of a binary op.
#[derive(Debug, Clone, PartialEq)]
pub enum BinaryOperand {
    /// A tensor of the block (one per sample).
    Tensor(Operand),
    /// A constant shared by every sample (row-major, [`Binary::operand_shape`]).
    Const(Vec<f32>),
}

/// `act(x ∘ operand)` (or `act(operand ∘ x)` when `reverse`) with NumPy broadcasting of the
/// per-sample shapes; the output has the broadcast shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Binary {
    /// The elementwise op.
    pub op: BinaryOp,
    /// Second operand.
    pub operand: BinaryOperand,
    /// Per-sample shape of the second operand.
    pub operand_shape: Vec<usize>,
    /// Operand first: `operand ∘ x`.
    pub reverse: bool,
    /// Fused activation.
    pub activation: Activation,
}

/// Joins the step's input and further tensors along a per-sample axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Concat {
    /// Per-sample axis.
    pub axis: usize,
    /// The pieces after the step's input, in order.
    pub with: Vec<Operand>,
    /// Per-sample shapes of `with`.
    pub with_shapes: Vec<Vec<usize>>,
}

/// ONNX local response normalisation across channels (axis 0 of each sample):
/// `y = x / (bias + alpha / size · Σ x²)^beta` over the channel window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lrn {
    /// Channels in the window.
    pub size: usize,
    /// Scale of the sum of squares.
    pub alpha: f32,
    /// Exponent.
    pub beta: f32,
    /// Additive constant.
    pub bias: f32,
}

impl Lrn {
    /// The channel window `[c - floor((size-1)/2), c + ceil((size-1)/2)]` clipped to `channels`.
    pub fn window(&self, c: usize, channels: usize) -> std::ops::Range<usize> {
        let before = (self.size - 1) / 2;
        let after = (self.size - 1 - before).min(channels);
        c.saturating_sub(before)..(c + after + 1).min(channels)
    }
}

/// An executable op.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Convolution (+ folded batchnorm, + fused activation).
    Conv2d(Conv2d),
    /// Dense layer.
    Dense(Dense),
    /// Fixed-fan-in sparse layer.
    FanIn(FanIn),
    /// Max/avg pooling.
    Pool(Pool),
    /// Mean over H and W.
    GlobalAvgPool,
    /// Shape change only (`flatten` and `reshape`): the output aliases the input.
    Flatten,
    /// A standalone activation (one that could not be fused).
    Activation(Activation),
    /// Broadcasting `add`/`sub`/`mul`/`div`, then an optional activation.
    Binary(Binary),
    /// Concatenation along a per-sample axis.
    Concat(Concat),
    /// Per-sample axis permutation: output axis `i` is input axis `perm[i]`.
    Transpose {
        /// The permutation.
        perm: Vec<usize>,
    },
    /// Constant padding, `[begin.., end..]` per per-sample axis.
    Pad {
        /// `2 · rank` entries.
        pads: Vec<usize>,
        /// Value of the padded cells.
        value: f32,
    },
    /// Local response normalisation.
    Lrn(Lrn),
    /// Softmax along a per-sample axis.
    Softmax {
        /// The axis.
        axis: usize,
    },
}

impl Op {
    /// The fused activation slot, if the op has one.
    pub fn activation_mut(&mut self) -> Option<&mut Activation> {
        match self {
            Op::Conv2d(c) => Some(&mut c.activation),
            Op::Dense(d) => Some(&mut d.activation),
            Op::FanIn(f) => Some(&mut f.activation),
            Op::Binary(b) if b.op == BinaryOp::Add => Some(&mut b.activation),
            _ => None,
        }
    }

    /// The tensors of the block the op reads besides its input, in order.
    pub fn operands(&self) -> Vec<&Operand> {
        match self {
            Op::Binary(Binary {
                operand: BinaryOperand::Tensor(o),
                ..
            }) => vec![o],
            Op::Concat(c) => c.with.iter().collect(),
            _ => Vec::new(),
        }
    }

    /// A short kind name for labels and errors.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Op::Conv2d(c) if c.is_depthwise() => "depthwise",
            Op::Conv2d(_) => "conv2d",
            Op::Dense(_) => "dense",
            Op::FanIn(_) => "fanin",
            Op::Pool(p) if p.kind == PoolKind::Max => "maxpool",
            Op::Pool(_) => "avgpool",
            Op::GlobalAvgPool => "global_avgpool",
            Op::Flatten => "flatten",
            Op::Activation(_) => "activation",
            Op::Binary(b) => match b.op {
                BinaryOp::Add => "add",
                BinaryOp::Sub => "sub",
                BinaryOp::Mul => "mul",
                BinaryOp::Div => "div",
            },
            Op::Concat(_) => "concat",
            Op::Transpose { .. } => "transpose",
            Op::Pad { .. } => "pad",
            Op::Lrn(_) => "lrn",
            Op::Softmax { .. } => "softmax",
        }
    }
}

/// One op in a block with its shapes (per sample, without batch).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// `<block>.<op name>`, used in labels and errors.
    pub label: String,
    /// The op.
    pub op: Op,
    /// Per-sample input shape.
    pub input_shape: Vec<usize>,
    /// Per-sample output shape.
    pub output_shape: Vec<usize>,
    /// Label under which the output is kept for a later op.
    pub save_as: Option<String>,
    /// Where the input comes from: `None` for the previous step's output (the block input for
    /// the first step), else the block input or a saved tensor.
    pub from: Option<Operand>,
}

/// `[channels, height, width]` or why the op needs it.
fn chw(shape: &[usize]) -> Result<(usize, usize, usize), String> {
    match *shape {
        [c, h, w] => Ok((c, h, w)),
        _ => Err(format!(
            "needs a [channels, height, width] input, got {shape:?}"
        )),
    }
}

/// `[features]` or why the op needs it.
fn features(shape: &[usize]) -> Result<usize, String> {
    match *shape {
        [n] => Ok(n),
        _ => Err(format!(
            "needs a 1-D input (add a flatten op first), got {shape:?}"
        )),
    }
}

/// Most per-sample dimensions a tensor may have (batch excluded): what the general
/// broadcast, permute and pad kernels index.
pub const MAX_RANK: usize = 4;

/// Checks a per-sample rank against [`MAX_RANK`].
fn check_rank(what: &str, shape: &[usize]) -> Result<(), String> {
    if shape.is_empty() || shape.len() > MAX_RANK {
        return Err(format!(
            "{what} {shape:?} must have 1..={MAX_RANK} per-sample dimensions"
        ));
    }
    Ok(())
}

/// NumPy broadcasting of two per-sample shapes (right-aligned, size-1 dimensions stretch).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| (i + s.len()).checked_sub(rank).map_or(1, |j| s[j]);
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            (x, y) => Err(format!(
                "shapes {a:?} and {b:?} do not broadcast: dimension {i} of the result is {x} in one and {y} in the other (sizes must match or be 1)"
            )),
        })
        .collect()
}

/// Strides of `shape` inside the broadcast `out` shape (right-aligned; 0 where a dimension is
/// missing or stretched from size 1).
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; out.len()];
    let mut stride = 1;
    for (d, &size) in shape.iter().enumerate().rev() {
        let o = out.len() - shape.len() + d;
        if size != 1 {
            strides[o] = stride;
        }
        stride *= size;
    }
    strides
}

impl OpKind {
    /// The shape rule: the per-sample output shape for a per-sample `input`, after checking
    /// the op's parameters against it. `operands` are the shapes of the block tensors the op
    /// reads besides its input (the `with` of a binary op or a concat), in order. Errors say
    /// what is wrong with the op; callers add the block and op names.
    pub fn output_shape(
        &self,
        input: &[usize],
        operands: &[&[usize]],
    ) -> Result<Vec<usize>, String> {
        if let Some(binary) = self.binary() {
            let (_, operand, _) = binary?;
            let other: &[usize] = match operand {
                OperandSpec::Const(shape) => {
                    if shape.contains(&0) {
                        return Err(format!(
                            "\"const\" shape {shape:?} must have positive sizes"
                        ));
                    }
                    shape
                }
                OperandSpec::With(_) => operands
                    .first()
                    .copied()
                    .ok_or("a binary op reading \"with\" needs that tensor's shape")?,
            };
            check_rank("the input", input)?;
            if !other.is_empty() {
                check_rank("the second operand", other)?;
            }
            return broadcast_shape(input, other);
        }
        match self {
            OpKind::Conv2d {
                out_channels,
                kernel,
                stride,
                padding,
                dilation,
                groups,
                ..
            } => {
                let (c, h, w) = chw(input)?;
                let (kh, kw) = kernel.hw();
                let (sh, sw) = stride.hw();
                let (dh, dw) = dilation.hw();
                if [*out_channels, kh, kw, sh, sw, dh, dw, *groups].contains(&0) {
                    return Err(
                        "out_channels, kernel, stride, dilation and groups must be positive".into(),
                    );
                }
                if c % groups != 0 || out_channels % groups != 0 {
                    return Err(format!(
                        "groups {groups} must divide input channels {c} and out_channels {out_channels}"
                    ));
                }
                let [t, l, b, r] = padding.sides();
                let oh = window_len(h, kh, sh, dh, (t, b), false);
                let ow = window_len(w, kw, sw, dw, (l, r), false);
                let (Some(oh), Some(ow)) = (oh, ow) else {
                    return Err(format!(
                        "kernel {kh}x{kw} (dilation {dh}x{dw}) is larger than the padded input {h}x{w} (padding {:?})",
                        padding.sides()
                    ));
                };
                Ok(vec![*out_channels, oh, ow])
            }
            OpKind::Dense { outputs, .. } => {
                features(input)?;
                if *outputs == 0 {
                    return Err("outputs must be positive".into());
                }
                Ok(vec![*outputs])
            }
            OpKind::Fanin {
                inputs: declared,
                outputs,
                k,
                group,
                ..
            } => {
                let inputs = features(input)?;
                if let Some(d) = declared.filter(|&d| d != inputs) {
                    return Err(format!(
                        "declares {d} inputs but receives {inputs} features"
                    ));
                }
                if *outputs == 0 || *k == 0 || *k > inputs {
                    return Err(format!(
                        "k must be in 1..={inputs} and outputs positive (k = {k}, outputs = {outputs})"
                    ));
                }
                if *group == 0 || !outputs.is_multiple_of(*group) {
                    return Err(format!(
                        "group {group} must be a positive divisor of outputs ({outputs})"
                    ));
                }
                Ok(vec![*outputs])
            }
            OpKind::Maxpool {
                kernel,
                stride,
                padding,
                ceil_mode,
            }
            | OpKind::Avgpool {
                kernel,
                stride,
                padding,
                ceil_mode,
                ..
            } => {
                let (c, h, w) = chw(input)?;
                let (kh, kw) = kernel.hw();
                let (sh, sw) = stride.unwrap_or(*kernel).hw();
                let [t, l, b, r] = padding.sides();
                if [kh, kw, sh, sw].contains(&0) || t.max(b) >= kh || l.max(r) >= kw {
                    return Err(
                        "kernel and stride must be positive and padding smaller than the kernel"
                            .into(),
                    );
                }
                let oh = window_len(h, kh, sh, 1, (t, b), *ceil_mode);
                let ow = window_len(w, kw, sw, 1, (l, r), *ceil_mode);
                let (Some(oh), Some(ow)) = (oh, ow) else {
                    return Err(format!("window {kh}x{kw} is larger than the input {h}x{w}"));
                };
                Ok(vec![c, oh, ow])
            }
            OpKind::GlobalAvgpool => {
                let (c, _, _) = chw(input)?;
                Ok(vec![c, 1, 1])
            }
            OpKind::Flatten => Ok(vec![super::checked_elems(input)
                .ok_or_else(|| format!("flattening {input:?} overflows the element count"))?]),
            OpKind::Batchnorm { .. }
            | OpKind::Relu
            | OpKind::Relu6
            | OpKind::Silu
            | OpKind::Sigmoid
            | OpKind::LeakyRelu { .. }
            | OpKind::HardSigmoid { .. }
            | OpKind::HardSwish
            | OpKind::Tanh => Ok(input.to_vec()),
            OpKind::Clip { min, max } => {
                let (lo, hi) = (
                    min.unwrap_or(f32::NEG_INFINITY),
                    max.unwrap_or(f32::INFINITY),
                );
                if lo.is_nan() || hi.is_nan() || lo > hi {
                    return Err(format!(
                        "clip bounds min {min:?} and max {max:?} must be numbers with min <= max (null for unbounded)"
                    ));
                }
                Ok(input.to_vec())
            }
            OpKind::Softmax { axis } => {
                check_rank("the input", input)?;
                if axis.is_some_and(|a| a >= input.len()) {
                    return Err(format!(
                        "axis {} is out of range for the per-sample shape {input:?} (axes count from 0 = channels)",
                        axis.unwrap_or(0)
                    ));
                }
                Ok(input.to_vec())
            }
            OpKind::Concat { with, axis } => {
                check_rank("the input", input)?;
                if operands.len() != with.len() {
                    return Err(format!(
                        "concat needs the shapes of its {} \"with\" tensors",
                        with.len()
                    ));
                }
                if *axis >= input.len() {
                    return Err(format!(
                        "axis {axis} is out of range for the per-sample shape {input:?} (axes count from 0 = channels)"
                    ));
                }
                let mut out = input.to_vec();
                for (label, shape) in with.iter().zip(operands) {
                    let same_elsewhere = shape.len() == input.len()
                        && (0..input.len()).all(|d| d == *axis || shape[d] == input[d]);
                    if !same_elsewhere {
                        return Err(format!(
                            "cannot concatenate '{label}' {shape:?} to {input:?} along axis {axis}: every other dimension must match"
                        ));
                    }
                    out[*axis] = out[*axis].checked_add(shape[*axis]).ok_or_else(|| {
                        format!("concatenating along axis {axis} overflows the size")
                    })?;
                }
                Ok(out)
            }
            OpKind::Transpose { perm } => {
                check_rank("the input", input)?;
                let mut seen = vec![false; input.len()];
                let valid = perm.len() == input.len()
                    && perm
                        .iter()
                        .all(|&p| p < input.len() && !std::mem::replace(&mut seen[p], true));
                if !valid {
                    return Err(format!(
                        "perm {perm:?} must be a permutation of 0..{} (one entry per per-sample axis of {input:?})",
                        input.len()
                    ));
                }
                Ok(perm.iter().map(|&p| input[p]).collect())
            }
            OpKind::Pad { pads, value } => {
                check_rank("the input", input)?;
                let r = input.len();
                if pads.len() != 2 * r {
                    return Err(format!(
                        "pads {pads:?} must have 2 x {r} entries ([begin_0.., end_0..]) for the per-sample shape {input:?}"
                    ));
                }
                if !value.is_finite() {
                    return Err(format!("pad value {value} must be finite"));
                }
                (0..r)
                    .map(|d| {
                        input[d]
                            .checked_add(pads[d])
                            .and_then(|v| v.checked_add(pads[r + d]))
                            .ok_or_else(|| format!("padding axis {d} overflows the size"))
                    })
                    .collect()
            }
            OpKind::Reshape { shape } => {
                check_rank("the target shape", shape)?;
                if shape.contains(&0) {
                    return Err(format!("target shape {shape:?} must have positive entries"));
                }
                let (from, to) = (super::checked_elems(input), super::checked_elems(shape));
                if from.is_none() || from != to {
                    return Err(format!(
                        "cannot reshape {input:?} to {shape:?}: the element counts differ"
                    ));
                }
                Ok(shape.clone())
            }
            OpKind::Lrn {
                size,
                alpha,
                beta,
                bias,
            } => {
                check_rank("the input", input)?;
                if *size == 0 || u32::try_from(*size).is_err() {
                    return Err(format!("size must be in 1..={}", u32::MAX));
                }
                if !(alpha.is_finite() && beta.is_finite() && bias.is_finite()) {
                    return Err("alpha, beta and bias must be finite".into());
                }
                Ok(input.to_vec())
            }
            OpKind::Add { .. } | OpKind::Sub { .. } | OpKind::Mul { .. } | OpKind::Div { .. } => {
                unreachable!("binary ops are handled above")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::manifest::{Pads, Size2};

    fn conv(out_channels: usize, kernel: usize, stride: usize, padding: usize) -> OpKind {
        OpKind::Conv2d {
            out_channels,
            kernel: Size2::Square(kernel),
            stride: Size2::Square(stride),
            padding: Pads::Same(padding),
            dilation: Size2::Square(1),
            groups: 1,
            bias: false,
        }
    }

    #[test]
    fn shape_rules_give_the_output_shape_of_each_op() {
        assert_eq!(
            conv(8, 3, 2, 1).output_shape(&[3, 32, 32], &[]),
            Ok(vec![8, 16, 16])
        );
        let pool = OpKind::Maxpool {
            kernel: Size2::Square(2),
            stride: None,
            padding: Pads::Same(0),
            ceil_mode: false,
        };
        assert_eq!(pool.output_shape(&[4, 7, 7], &[]), Ok(vec![4, 3, 3]));
        let ceil = OpKind::Maxpool {
            kernel: Size2::Square(2),
            stride: None,
            padding: Pads::Same(0),
            ceil_mode: true,
        };
        assert_eq!(ceil.output_shape(&[4, 7, 7], &[]), Ok(vec![4, 4, 4]));
        // TF "SAME" on a stride-2 3x3 conv: 0 before, 1 after.
        let geometry = |stride, padding, dilation| OpKind::Conv2d {
            out_channels: 8,
            kernel: Size2::Square(3),
            stride: Size2::Square(stride),
            padding,
            dilation: Size2::Square(dilation),
            groups: 1,
            bias: false,
        };
        let same = geometry(2, Pads::Sides([0, 0, 1, 1]), 1);
        assert_eq!(
            same.output_shape(&[3, 224, 224], &[]),
            Ok(vec![8, 112, 112])
        );
        let dilated = geometry(1, Pads::Same(2), 2);
        assert_eq!(dilated.output_shape(&[3, 9, 9], &[]), Ok(vec![8, 9, 9]));
        assert_eq!(
            OpKind::GlobalAvgpool.output_shape(&[4, 7, 7], &[]),
            Ok(vec![4, 1, 1])
        );
        assert_eq!(OpKind::Flatten.output_shape(&[4, 2, 2], &[]), Ok(vec![16]));
        let gate = OpKind::Mul {
            with: Some("x".into()),
            constant: None,
            reverse: false,
        };
        assert_eq!(
            gate.output_shape(&[4, 1, 1], &[&[4, 5, 5]]),
            Ok(vec![4, 5, 5])
        );
    }

    #[test]
    fn shape_rules_say_what_is_wrong() {
        let err = |kind: OpKind, input: &[usize]| kind.output_shape(input, &[]).unwrap_err();
        assert!(err(conv(8, 5, 1, 0), &[3, 4, 4]).contains("larger than the padded input 4x4"));
        assert!(err(conv(8, 3, 0, 0), &[3, 4, 4]).contains("must be positive"));
        let dense = OpKind::Dense {
            outputs: 4,
            bias: false,
        };
        assert!(err(dense, &[1, 4, 4]).contains("needs a 1-D input"));
        let add = OpKind::Add {
            with: Some("x".into()),
            constant: None,
            reverse: false,
        };
        assert!(add
            .output_shape(&[4], &[&[5]])
            .unwrap_err()
            .contains("do not broadcast"));
    }
}
