//! The CPU executor: runs a plan's steps with the fast kernels of [`crate::cpu::fast`] (the ops
//! without one on their plain-Rust reference) on the pool of [`crate::cpu::threads`]; the split
//! tensor's decode is its first step and its encode its last, with the reference codec of
//! [`crate::encoding`].

use super::{EngineError, ExitOutput, PlanOutput};
use crate::cpu::{self, ExitStat, Kernels};
use crate::encoding::{decode_cpu, encode_cpu, Encoded, Encoding};
use crate::model::{BinaryOperand, Model, Op, Operand, Step};
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::ops::Range;

/// Runs a chain of steps on the CPU backend's fast kernels (`n` samples).
pub fn run_steps_cpu(steps: &[Step], input: Vec<f32>, n: usize) -> Vec<f32> {
    cpu::threads::install(|| run_steps_with(&Kernels::FAST, steps, input, n))
}

/// Runs a chain of steps on the plain reference loops (`n` samples): the oracle of the CPU
/// backend and of the GPU kernels.
pub fn run_steps_reference(steps: &[Step], input: Vec<f32>, n: usize) -> Vec<f32> {
    run_steps_with(&Kernels::REFERENCE, steps, input, n)
}

fn run_steps_with(k: &Kernels, steps: &[Step], input: Vec<f32>, n: usize) -> Vec<f32> {
    let block_input = input.clone();
    let mut saved: HashMap<&str, Vec<f32>> = HashMap::new();
    let mut x = input;
    for step in steps {
        let s = &step.input_shape;
        let tensor = |o: &Operand| -> &Vec<f32> {
            match o {
                Operand::BlockInput => &block_input,
                Operand::Saved(l) => &saved[l.as_str()],
            }
        };
        if let Some(from) = &step.from {
            x = tensor(from).clone();
        }
        x = match &step.op {
            Op::Conv2d(c) => (k.conv2d)(c, &x, n, s[1], s[2]),
            Op::Dense(d) => (k.dense)(d, &x, n),
            Op::FanIn(f) => (k.fanin)(f, &x, n),
            Op::Pool(p) => (k.pool)(p, &x, n * s[0], s[1], s[2]),
            Op::GlobalAvgPool => (k.global_avgpool)(&x, n * s[0], s[1] * s[2]),
            Op::Flatten => x,
            Op::Activation(a) => cpu::reference::activation(*a, &x),
            Op::Binary(b) => {
                let operand = match &b.operand {
                    BinaryOperand::Tensor(o) => tensor(o),
                    BinaryOperand::Const(c) => c,
                };
                cpu::reference::binary(b, &x, s, operand, n)
            }
            Op::Concat(c) => {
                let mut pieces: Vec<(&[f32], &[usize])> = vec![(&x, s)];
                for (o, shape) in c.with.iter().zip(&c.with_shapes) {
                    pieces.push((tensor(o), shape));
                }
                cpu::reference::concat(&pieces, c.axis, n)
            }
            Op::Transpose { perm } => cpu::reference::transpose(&x, s, perm, n),
            Op::Pad { pads, value } => cpu::reference::pad(&x, s, pads, *value, n),
            Op::Lrn(l) => cpu::reference::lrn(l, &x, s, n),
            Op::Softmax { axis } => cpu::reference::softmax_axis(&x, s, *axis, n),
        };
        if let Some(label) = &step.save_as {
            saved.insert(label.as_str(), x.clone());
        }
    }
    x
}

/// A block range compiled for the CPU: what to run and how its split tensor travels.
pub(crate) struct CpuPlan<'p> {
    pub model: &'p Model,
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
        cpu::threads::install(|| self.run_on_pool(x, n))
    }

    fn run_on_pool(&self, mut x: Vec<f32>, n: usize) -> PlanOutput {
        let model = self.model;
        let classes = model.classes();
        let mut exits = Vec::new();
        for b in self.range.clone() {
            x = run_steps_cpu(&model.blocks[b].steps, x, n);
            for &e in self.exits {
                let exit = &model.exits[e];
                if exit.after_block == b {
                    let logits = run_steps_cpu(&exit.steps, x.clone(), n);
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
