//! The CPU executor: runs a plan's steps with the fast kernels of [`crate::cpu::fast`] (the ops
//! without one on their plain-Rust reference) on the pool of [`crate::cpu::threads`]; the split
//! tensor's decode is its first step and its encode its last, with the reference codec of
//! [`crate::encoding`].

use super::{EngineError, ExitOutput, PlanOutput};
use crate::cpu::fast;
use crate::cpu::{self, ExitStat, Kernels};
use crate::encoding::{decode_cpu, encode_cpu, Encoded, Encoding};
use crate::model::{BinaryOperand, Dense, Model, Op, Operand, Step};
use crate::tensor::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::rc::Rc;
use std::time::Instant;

/// Runs a chain of steps on the CPU backend's fast kernels (`n` samples).
pub fn run_steps_cpu(steps: &[Step], input: Vec<f32>, n: usize) -> Vec<f32> {
    cpu::threads::install(|| run_steps_with(&Kernels::FAST, steps, &[], input, n, None))
}

/// Runs a chain of steps on the plain reference loops (`n` samples): the oracle of the CPU
/// backend and of the GPU kernels.
pub fn run_steps_reference(steps: &[Step], input: Vec<f32>, n: usize) -> Vec<f32> {
    run_steps_with(&Kernels::REFERENCE, steps, &[], input, n, None)
}

/// Time and calls of one kind of op (see [`OpTimes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct OpTime {
    /// Steps of this kind run.
    pub calls: usize,
    /// Seconds they took together.
    pub seconds: f64,
}

/// Where a CPU run's time goes, per kind of op (`conv2d 1x1`, `depthwise 3x3 s2`,
/// `mul broadcast`, `copy` for the tensors a block keeps for later steps, ...): the cheap
/// profile that says which kernel to speed up next. Filled by [`super::Plan::run_profiled`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct OpTimes(pub BTreeMap<String, OpTime>);

impl OpTimes {
    fn add(&mut self, kind: String, seconds: f64) {
        let t = self.0.entry(kind).or_default();
        t.calls += 1;
        t.seconds += seconds;
    }

    /// Seconds of every kind together.
    pub fn total_seconds(&self) -> f64 {
        self.0.values().map(|t| t.seconds).sum()
    }
}

/// The profile key of a step: its kind, with the kernel size and stride of convolutions and
/// whether a binary op broadcasts its operand.
fn op_kind(op: &Op, input_shape: &[usize]) -> String {
    match op {
        Op::Conv2d(c) => {
            let stride = if c.stride == (1, 1) {
                String::new()
            } else {
                format!(" s{}", c.stride.0.max(c.stride.1))
            };
            format!("{} {}x{}{stride}", op.kind_name(), c.kernel_h, c.kernel_w)
        }
        Op::Binary(b) => {
            let (x, o): (usize, usize) = (
                input_shape.iter().product(),
                b.operand_shape.iter().product(),
            );
            let shape = if x == o { "" } else { " broadcast" };
            format!("{}{shape}", op.kind_name())
        }
        Op::Activation(a) => format!("activation {a:?}"),
        other => other.kind_name().to_string(),
    }
}

/// Runs `steps` with kernels `k`; `dense_forms[i]`, where present, is step `i`'s fan-in layer
/// in dense form, used whenever the batch makes the dense GEMM the faster path.
fn run_steps_with(
    k: &Kernels,
    steps: &[Step],
    dense_forms: &[Option<Dense>],
    input: Vec<f32>,
    n: usize,
    mut times: Option<&mut OpTimes>,
) -> Vec<f32> {
    // Tensors are shared, not copied: a saved tensor or the block input read by a later step
    // is the same buffer the step that made it returned.
    let block_input = Rc::new(input);
    let mut saved: HashMap<&str, Rc<Vec<f32>>> = HashMap::new();
    let mut x = block_input.clone();
    for (i, step) in steps.iter().enumerate() {
        let s = &step.input_shape;
        let tensor = |o: &Operand| -> Rc<Vec<f32>> {
            match o {
                Operand::BlockInput => block_input.clone(),
                Operand::Saved(l) => saved[l.as_str()].clone(),
            }
        };
        if let Some(from) = &step.from {
            x = tensor(from);
        }
        let start = times.is_some().then(Instant::now);
        let y = match &step.op {
            // A shape change only: the output is the input.
            Op::Flatten => x.clone(),
            Op::Conv2d(c) => Rc::new((k.conv2d)(c, &x, n, s[1], s[2])),
            Op::Dense(d) => Rc::new((k.dense)(d, &x, n)),
            Op::FanIn(f) => match dense_forms.get(i) {
                Some(Some(d)) if fast::fanin_runs_dense(f, n) => Rc::new((k.dense)(d, &x, n)),
                _ => Rc::new((k.fanin)(f, &x, n)),
            },
            Op::Pool(p) => Rc::new((k.pool)(p, &x, n * s[0], s[1], s[2])),
            Op::GlobalAvgPool => Rc::new((k.global_avgpool)(&x, n * s[0], s[1] * s[2])),
            Op::Activation(a) => Rc::new((k.activation)(*a, &x)),
            Op::Binary(b) => {
                let held;
                let operand: &[f32] = match &b.operand {
                    BinaryOperand::Tensor(o) => {
                        held = tensor(o);
                        &held
                    }
                    BinaryOperand::Const(c) => c,
                };
                Rc::new((k.binary)(b, &x, s, operand, n))
            }
            Op::Concat(c) => {
                let with: Vec<Rc<Vec<f32>>> = c.with.iter().map(&tensor).collect();
                let mut pieces: Vec<(&[f32], &[usize])> = vec![(&x, s)];
                for (t, shape) in with.iter().zip(&c.with_shapes) {
                    pieces.push((t, shape));
                }
                Rc::new(cpu::reference::concat(&pieces, c.axis, n))
            }
            Op::Transpose { perm } => Rc::new(cpu::reference::transpose(&x, s, perm, n)),
            Op::Pad { pads, value } => Rc::new(cpu::reference::pad(&x, s, pads, *value, n)),
            Op::Lrn(l) => Rc::new(cpu::reference::lrn(l, &x, s, n)),
            Op::Softmax { axis } => Rc::new(cpu::reference::softmax_axis(&x, s, *axis, n)),
        };
        if let (Some(t), Some(start)) = (times.as_deref_mut(), start) {
            t.add(op_kind(&step.op, s), start.elapsed().as_secs_f64());
        }
        x = y;
        if let Some(label) = &step.save_as {
            saved.insert(label.as_str(), x.clone());
        }
    }
    drop(saved);
    drop(block_input);
    Rc::try_unwrap(x).unwrap_or_else(|shared| shared.to_vec())
}

/// What a CPU plan builds once at compile time instead of on every run: the dense form of each
/// fixed-fan-in layer that runs as a dense GEMM at the plan's batch sizes
/// ([`fast::fanin_runs_dense`]), per block (and per exit head) and step.
pub(crate) struct CpuPrepared {
    blocks: Vec<Vec<Option<Dense>>>,
    exits: Vec<Vec<Option<Dense>>>,
}

impl CpuPrepared {
    /// Prepares blocks `range` and `exits` of `model` for batches of up to `capacity`.
    pub fn new(model: &Model, range: Range<usize>, exits: &[usize], capacity: usize) -> Self {
        let prepare = |steps: &[Step]| -> Vec<Option<Dense>> {
            steps
                .iter()
                .map(|s| match &s.op {
                    Op::FanIn(f) if fast::fanin_runs_dense(f, capacity) => Some(f.to_dense()),
                    _ => None,
                })
                .collect()
        };
        Self {
            blocks: range.map(|b| prepare(&model.blocks[b].steps)).collect(),
            exits: exits
                .iter()
                .map(|&e| prepare(&model.exits[e].steps))
                .collect(),
        }
    }
}

/// A block range compiled for the CPU: what to run and how its split tensor travels.
pub(crate) struct CpuPlan<'p> {
    pub model: &'p Model,
    pub prepared: &'p CpuPrepared,
    pub range: Range<usize>,
    pub exits: &'p [usize],
    pub output: Option<Encoding>,
}

impl CpuPlan<'_> {
    /// Decodes received parts (the plan's first step) and runs them as one batch.
    pub fn run_encoded(&self, parts: &[&Encoded]) -> Result<PlanOutput, EngineError> {
        let mut data = Vec::new();
        let mut n = 0;
        for p in parts {
            let t = decode_cpu(p)?;
            n += t.batch();
            data.extend_from_slice(t.data());
        }
        Ok(self.run(data, n))
    }

    /// Runs `n` samples of row-major `x`; encodes the output when the plan has an output
    /// encoding (its last step).
    pub fn run(&self, x: Vec<f32>, n: usize) -> PlanOutput {
        cpu::threads::install(|| self.run_on_pool(x, n, None))
    }

    /// [`Self::run`], adding each step's time to `times` under its op kind.
    pub fn run_profiled(&self, x: Vec<f32>, n: usize, times: &mut OpTimes) -> PlanOutput {
        cpu::threads::install(|| self.run_on_pool(x, n, Some(times)))
    }

    fn run_on_pool(
        &self,
        mut x: Vec<f32>,
        n: usize,
        mut times: Option<&mut OpTimes>,
    ) -> PlanOutput {
        let model = self.model;
        let classes = model.classes();
        let mut exits = Vec::new();
        for b in self.range.clone() {
            x = run_steps_with(
                &Kernels::FAST,
                &model.blocks[b].steps,
                &self.prepared.blocks[b - self.range.start],
                x,
                n,
                times.as_deref_mut(),
            );
            for (j, &e) in self.exits.iter().enumerate() {
                let exit = &model.exits[e];
                if exit.after_block == b {
                    let logits = run_steps_with(
                        &Kernels::FAST,
                        &exit.steps,
                        &self.prepared.exits[j],
                        x.clone(),
                        n,
                        times.as_deref_mut(),
                    );
                    exits.push(ExitOutput {
                        exit: e,
                        stats: cpu::exit_stats(&logits, classes),
                        logits: Tensor::new(vec![n, classes], logits)
                            .expect("exit heads output [classes] per sample"),
                    });
                }
            }
        }
        let ends = self.range.end == model.blocks.len();
        let mut shape = vec![n];
        shape.extend_from_slice(model.shape_at(self.range.end));
        let final_stats: Option<Vec<ExitStat>> = ends.then(|| cpu::exit_stats(&x, classes));
        let output = Tensor::new(shape, x).expect("block output matches its shape");
        PlanOutput {
            encoded: self.output.map(|e| encode_cpu(&output, e)),
            output,
            exits,
            final_stats,
            device_seconds: None,
        }
    }
}
