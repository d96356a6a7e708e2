//! Forward with caches and backward over a [`Model`] on the CPU: the CPU training backend.
//! Parameters are the model's own tensors; gradients live beside them, one slot per step.

use super::backward::{self as bw, FanInBackward};
use crate::cpu;
use crate::model::{Activation, Model, Op, Step};

/// Where a step sits: in block `block` (`exit == None`) or in exit head `exit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepRef {
    /// Exit head index, or `None` for the main path.
    pub exit: Option<usize>,
    /// Block index (main path) or 0 (exit heads).
    pub block: usize,
    /// Step index within the block or head.
    pub step: usize,
}

/// The gradient of one parametrised step (weights and bias, shaped like the model's).
#[derive(Debug, Clone, Default)]
pub struct ParamGrad {
    /// Same layout as the op's weight tensor.
    pub weight: Vec<f32>,
    /// Same layout as the op's bias.
    pub bias: Vec<f32>,
}

/// Every step of the model in a fixed order (blocks, then exit heads), with its place.
pub fn step_refs(model: &Model) -> Vec<StepRef> {
    let mut out = Vec::new();
    for (b, block) in model.blocks.iter().enumerate() {
        for s in 0..block.steps.len() {
            out.push(StepRef {
                exit: None,
                block: b,
                step: s,
            });
        }
    }
    for (e, exit) in model.exits.iter().enumerate() {
        for s in 0..exit.steps.len() {
            out.push(StepRef {
                exit: Some(e),
                block: 0,
                step: s,
            });
        }
    }
    out
}

/// The step at `r`.
pub fn step_at(model: &Model, r: StepRef) -> &Step {
    match r.exit {
        None => &model.blocks[r.block].steps[r.step],
        Some(e) => &model.exits[e].steps[r.step],
    }
}

/// The step at `r`, mutably.
pub fn step_at_mut(model: &mut Model, r: StepRef) -> &mut Step {
    match r.exit {
        None => &mut model.blocks[r.block].steps[r.step],
        Some(e) => &mut model.exits[e].steps[r.step],
    }
}

/// The weight and bias of a parametrised op.
pub fn params_mut(op: &mut Op) -> Option<(&mut Vec<f32>, &mut Vec<f32>)> {
    match op {
        Op::Conv2d(c) => Some((&mut c.weight, &mut c.bias)),
        Op::Dense(d) => Some((&mut d.weight, &mut d.bias)),
        Op::FanIn(f) => Some((&mut f.weights, &mut f.bias)),
        _ => None,
    }
}

/// The weight and bias of a parametrised op.
pub fn params(op: &Op) -> Option<(&[f32], &[f32])> {
    match op {
        Op::Conv2d(c) => Some((&c.weight, &c.bias)),
        Op::Dense(d) => Some((&d.weight, &d.bias)),
        Op::FanIn(f) => Some((&f.weights, &f.bias)),
        _ => None,
    }
}

/// What the forward pass keeps of one step for the backward pass.
struct Cache {
    input: Vec<f32>,
    /// Pre-activation output of conv/dense/fan-in ops with a fused activation.
    pre: Option<Vec<f32>>,
    output: Vec<f32>,
}

/// Per-head results of one forward pass.
#[derive(Debug, Clone)]
pub struct Forward {
    /// `(loss, correct)` per exit head (model order), then the final classifier.
    pub heads: Vec<(f32, usize)>,
    /// Weighted sum of the head losses.
    pub loss: f32,
    /// The first step (label) whose output is not finite, if any.
    pub non_finite_at: Option<String>,
}

/// The CPU trainer state: backward layouts of fan-in layers and gradient slots.
pub struct CpuNet {
    refs: Vec<StepRef>,
    fanin_back: Vec<Option<FanInBackward>>,
    /// Gradients aligned with [`step_refs`]; `None` for steps without parameters.
    pub grads: Vec<Option<ParamGrad>>,
}

fn run_step(step: &Step, x: Vec<f32>, n: usize) -> Cache {
    let s = &step.input_shape;
    let strip = |act: Activation, z: Vec<f32>, x: Vec<f32>| -> Cache {
        if act == Activation::None {
            Cache {
                input: x,
                pre: None,
                output: z,
            }
        } else {
            let output = cpu::reference::activation(act, &z);
            Cache {
                input: x,
                pre: Some(z),
                output,
            }
        }
    };
    match &step.op {
        Op::Conv2d(c) => {
            let mut lin = c.clone();
            lin.activation = Activation::None;
            let z = cpu::reference::conv2d(&lin, &x, n, s[1], s[2]);
            strip(c.activation, z, x)
        }
        Op::Dense(d) => {
            let z = dense_linear(d, &x, n);
            strip(d.activation, z, x)
        }
        Op::FanIn(f) => {
            let z = fanin_linear(f, &x, n);
            strip(f.activation, z, x)
        }
        Op::Pool(p) => Cache {
            output: cpu::reference::pool(p, &x, n * s[0], s[1], s[2]),
            input: x,
            pre: None,
        },
        Op::GlobalAvgPool => Cache {
            output: cpu::reference::global_avgpool(&x, n * s[0], s[1] * s[2]),
            input: x,
            pre: None,
        },
        Op::Flatten => Cache {
            output: x,
            input: Vec::new(),
            pre: None,
        },
        Op::Activation(a) => Cache {
            output: cpu::reference::activation(*a, &x),
            input: x,
            pre: None,
        },
        Op::Binary(_)
        | Op::Concat(_)
        | Op::Transpose { .. }
        | Op::Pad { .. }
        | Op::Lrn(_)
        | Op::Softmax { .. } => {
            unreachable!("training specs accept only trainable ops")
        }
    }
}

fn dense_linear(d: &crate::model::Dense, x: &[f32], n: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; n * d.outputs];
    for b in 0..n {
        let row = &x[b * d.inputs..(b + 1) * d.inputs];
        for o in 0..d.outputs {
            let w = &d.weight[o * d.inputs..(o + 1) * d.inputs];
            y[b * d.outputs + o] = row.iter().zip(w).map(|(a, b)| a * b).sum::<f32>() + d.bias[o];
        }
    }
    y
}

fn fanin_linear(f: &crate::model::FanIn, x: &[f32], n: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; n * f.outputs];
    for b in 0..n {
        let row = &x[b * f.inputs..(b + 1) * f.inputs];
        for o in 0..f.outputs {
            let mut acc = f.bias[o];
            for j in 0..f.k {
                acc += f.weights[o * f.k + j] * row[f.indices[o * f.k + j] as usize];
            }
            y[b * f.outputs + o] = acc;
        }
    }
    y
}

impl CpuNet {
    /// Prepares gradient slots and the transposed fan-in patterns of `model`.
    pub fn new(model: &Model) -> Self {
        let refs = step_refs(model);
        let mut fanin_back = Vec::new();
        let mut grads = Vec::new();
        for &r in &refs {
            let op = &step_at(model, r).op;
            fanin_back.push(match op {
                Op::FanIn(f) => FanInBackward::new(f),
                _ => None,
            });
            grads.push(params(op).map(|(w, b)| ParamGrad {
                weight: vec![0.0; w.len()],
                bias: vec![0.0; b.len()],
            }));
        }
        Self {
            refs,
            fanin_back,
            grads,
        }
    }

    /// The step order of [`CpuNet::grads`].
    pub fn refs(&self) -> &[StepRef] {
        &self.refs
    }

    fn slot(&self, r: StepRef) -> usize {
        self.refs
            .iter()
            .position(|&x| x == r)
            .expect("every step has a slot")
    }

    /// Zeroes the gradients.
    pub fn zero_grads(&mut self) {
        for g in self.grads.iter_mut().flatten() {
            g.weight.iter_mut().for_each(|v| *v = 0.0);
            g.bias.iter_mut().for_each(|v| *v = 0.0);
        }
    }

    /// Forward on `x` (`n` samples), losses of every head weighted by `weights` (exits in model
    /// order, then the final classifier), and — when `backward` — the gradients of the weighted
    /// loss, accumulated into [`CpuNet::grads`].
    pub fn forward_backward(
        &mut self,
        model: &Model,
        x: &[f32],
        labels: &[u8],
        weights: &[f32],
        backward: bool,
    ) -> Forward {
        let n = labels.len();
        let classes = model.classes();
        let mut non_finite_at = None;
        let mut check = |step: &Step, out: &[f32]| {
            if non_finite_at.is_none() && out.iter().any(|v| !v.is_finite()) {
                non_finite_at = Some(step.label.clone());
            }
        };
        let mut main: Vec<Vec<Cache>> = Vec::new();
        let mut exit_caches: Vec<Vec<Cache>> = Vec::new();
        exit_caches.resize_with(model.exits.len(), Vec::new);
        let mut exit_logits: Vec<Vec<f32>> = vec![Vec::new(); model.exits.len()];
        let mut cur = x.to_vec();
        for (b, block) in model.blocks.iter().enumerate() {
            let mut caches = Vec::with_capacity(block.steps.len());
            for step in &block.steps {
                let c = run_step(step, cur, n);
                check(step, &c.output);
                cur = c.output.clone();
                caches.push(c);
            }
            main.push(caches);
            for (e, exit) in model.exits.iter().enumerate() {
                if exit.after_block == b {
                    let mut h = cur.clone();
                    for step in &exit.steps {
                        let c = run_step(step, h, n);
                        check(step, &c.output);
                        h = c.output.clone();
                        exit_caches[e].push(c);
                    }
                    exit_logits[e] = h;
                }
            }
        }
        let correct = |logits: &[f32]| {
            cpu::exit_stats(logits, classes)
                .iter()
                .zip(labels)
                .filter(|(s, &l)| s.argmax == l as u32)
                .count()
        };
        let mut heads = Vec::new();
        let mut total = 0.0f32;
        let mut exit_grads = Vec::new();
        for (e, logits) in exit_logits.iter().enumerate() {
            let (loss, g) = bw::softmax_cross_entropy(logits, labels, classes);
            heads.push((loss, correct(logits)));
            total += weights[e] * loss;
            exit_grads.push(g.into_iter().map(|v| v * weights[e]).collect::<Vec<_>>());
        }
        let wf = weights[model.exits.len()];
        let (loss, g) = bw::softmax_cross_entropy(&cur, labels, classes);
        heads.push((loss, correct(&cur)));
        total += wf * loss;
        if backward {
            // Exit heads first: their input gradients join the main path at their block.
            let mut joins: Vec<Option<Vec<f32>>> = vec![None; model.blocks.len()];
            for (e, exit) in model.exits.iter().enumerate() {
                let mut grad = std::mem::take(&mut exit_grads[e]);
                for (s, step) in exit.steps.iter().enumerate().rev() {
                    let r = StepRef {
                        exit: Some(e),
                        block: 0,
                        step: s,
                    };
                    grad = self
                        .step_backward(step, r, &exit_caches[e][s], grad, n, true)
                        .expect("exit heads always pass gradients on");
                }
                match &mut joins[exit.after_block] {
                    Some(j) => j.iter_mut().zip(&grad).for_each(|(a, b)| *a += b),
                    slot => *slot = Some(grad),
                }
            }
            let mut grad: Vec<f32> = g.into_iter().map(|v| v * wf).collect();
            'blocks: for (b, block) in model.blocks.iter().enumerate().rev() {
                if let Some(j) = &joins[b] {
                    grad.iter_mut().zip(j).for_each(|(a, b)| *a += b);
                }
                for (s, step) in block.steps.iter().enumerate().rev() {
                    let first = b == 0 && s == 0;
                    let r = StepRef {
                        exit: None,
                        block: b,
                        step: s,
                    };
                    match self.step_backward(step, r, &main[b][s], grad, n, !first) {
                        Some(g) => grad = g,
                        None => break 'blocks,
                    }
                }
            }
        }
        Forward {
            heads,
            loss: total,
            non_finite_at,
        }
    }

    fn step_backward(
        &mut self,
        step: &Step,
        r: StepRef,
        cache: &Cache,
        dy: Vec<f32>,
        n: usize,
        want_dx: bool,
    ) -> Option<Vec<f32>> {
        let s = &step.input_shape;
        let slot = self.slot(r);
        let dz = |act: Activation| match &cache.pre {
            Some(z) => bw::activation_backward(act, z, &dy),
            None => dy.clone(),
        };
        match &step.op {
            Op::Conv2d(c) => {
                let dz = dz(c.activation);
                let g = self.grads[slot].as_mut().expect("conv has parameters");
                bw::conv2d_backward(
                    c,
                    &cache.input,
                    &dz,
                    n,
                    s[1],
                    s[2],
                    &mut g.weight,
                    &mut g.bias,
                    want_dx,
                )
            }
            Op::Dense(d) => {
                let dz = dz(d.activation);
                let g = self.grads[slot].as_mut().expect("dense has parameters");
                bw::dense_backward(d, &cache.input, &dz, n, &mut g.weight, &mut g.bias, want_dx)
            }
            Op::FanIn(f) => {
                let dz = dz(f.activation);
                let back = self.fanin_back[slot].as_ref().filter(|_| want_dx);
                let g = self.grads[slot].as_mut().expect("fanin has parameters");
                let dx =
                    bw::fanin_backward(f, back, &cache.input, &dz, n, &mut g.weight, &mut g.bias);
                match (dx, want_dx) {
                    (Some(dx), _) => Some(dx),
                    (None, false) => None,
                    // A non-uniform out-degree has no fixed-fan-in transpose: scatter instead.
                    (None, true) => {
                        let mut dx = vec![0.0f32; n * f.inputs];
                        for b in 0..n {
                            for o in 0..f.outputs {
                                let gv = dz[b * f.outputs + o];
                                for j in 0..f.k {
                                    let i = f.indices[o * f.k + j] as usize;
                                    dx[b * f.inputs + i] += gv * f.weights[o * f.k + j];
                                }
                            }
                        }
                        Some(dx)
                    }
                }
            }
            Op::Pool(p) => {
                want_dx.then(|| bw::pool_backward(p, &cache.input, &dy, n * s[0], s[1], s[2]))
            }
            Op::GlobalAvgPool => want_dx.then(|| bw::global_avgpool_backward(&dy, s[1] * s[2])),
            Op::Flatten => want_dx.then_some(dy),
            Op::Activation(a) => want_dx.then(|| bw::activation_backward(*a, &cache.input, &dy)),
            Op::Binary(_)
            | Op::Concat(_)
            | Op::Transpose { .. }
            | Op::Pad { .. }
            | Op::Lrn(_)
            | Op::Softmax { .. } => {
                unreachable!("training specs accept only trainable ops")
            }
        }
    }
}
