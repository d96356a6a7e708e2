//! The CPU executor: runs a plan's steps with the plain-Rust ops of [`crate::cpu`]; the split
//! tensor's decode is its first step and its encode its last, with the reference codec of
//! [`crate::encoding`].

use super::{EngineError, ExitOutput, PlanOutput};
use crate::cpu::{self, ExitStat};
use crate::encoding::{decode_cpu, encode_cpu, Encoded, Encoding};
use crate::model::{Model, Op, Operand, Step};
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::ops::Range;

/// Runs a chain of steps on the CPU reference (`n` samples).
pub fn run_steps_cpu(steps: &[Step], input: Vec<f32>, n: usize) -> Vec<f32> {
    let block_input = input.clone();
    let mut saved: HashMap<&str, Vec<f32>> = HashMap::new();
    let mut x = input;
    for step in steps {
        let s = &step.input_shape;
        let other = |with: &Operand| -> &Vec<f32> {
            match with {
                Operand::BlockInput => &block_input,
                Operand::Saved(l) => &saved[l.as_str()],
            }
        };
        x = match &step.op {
            Op::Conv2d(c) => cpu::reference::conv2d(c, &x, n, s[1], s[2]),
            Op::Dense(d) => cpu::reference::dense(d, &x, n),
            Op::FanIn(f) => cpu::reference::fanin(f, &x, n),
            Op::Pool(p) => cpu::reference::pool(p, &x, n * s[0], s[1], s[2]),
            Op::GlobalAvgPool => cpu::reference::global_avgpool(&x, n * s[0], s[1] * s[2]),
            Op::Flatten => x,
            Op::Activation(a) => cpu::reference::activation(*a, &x),
            Op::Add { with, activation } => cpu::reference::add(&x, other(with), *activation),
            Op::Mul { with } => {
                let big = other(with);
                let inner = big.len() / x.len().max(1);
                cpu::reference::mul(&x, big, inner)
            }
            Op::Softmax => cpu::reference::softmax(&x, step.output_shape.iter().product()),
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
    pub fn run(&self, mut x: Vec<f32>, n: usize) -> PlanOutput {
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
