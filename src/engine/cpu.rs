//! The CPU executor: runs a plan's steps with the fast kernels of [`crate::cpu::fast`] (the ops
//! without one on their plain-Rust reference) on the pool of [`crate::cpu::threads`]; the split
//! tensor's decode is its first step and its encode its last, with the reference codec of
//! [`crate::encoding`].

use super::{EngineError, ExitOutput, PlanOutput};
use crate::cpu::fast::{self, layout, layout::Layout};
use crate::cpu::{self, ExitStat, Kernels};
use crate::encoding::{decode_cpu, encode_cpu, Encoded, Encoding};
use crate::model::{Binary, BinaryOperand, Dense, Model, Op, Operand, Step};
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::rc::Rc;
use std::time::Instant;

/// Runs a chain of steps on the CPU backend's fast kernels (`n` samples).
pub fn run_steps_cpu(steps: &[Step], input: Vec<f32>, n: usize) -> Vec<f32> {
    cpu::threads::install(|| {
        run_steps_with(&Kernels::FAST, steps, &[], Act::outer(input), n, None).into_outer(n)
    })
}

/// Runs a chain of steps on the plain reference loops (`n` samples): the oracle of the CPU
/// backend and of the GPU kernels.
pub fn run_steps_reference(steps: &[Step], input: Vec<f32>, n: usize) -> Vec<f32> {
    run_steps_with(&Kernels::REFERENCE, steps, &[], Act::outer(input), n, None).into_outer(n)
}

/// One tensor of a run: its values (shared, not copied, between the step that made it and the
/// later steps that read it) and their layout. The fast kernels keep batches batch-inner
/// between convolutions ([`fast::layout`]); the reference always runs batch-outer.
#[derive(Clone)]
struct Act {
    data: Rc<Vec<f32>>,
    layout: Layout,
}

impl Act {
    fn outer(data: Vec<f32>) -> Self {
        Self::new(data, Layout::BatchOuter)
    }

    fn new(data: Vec<f32>, layout: Layout) -> Self {
        Self {
            data: Rc::new(data),
            layout,
        }
    }

    /// The values laid out as `to` (shared when they already are).
    fn as_layout(&self, n: usize, to: Layout) -> Rc<Vec<f32>> {
        if self.layout == to || n <= 1 {
            self.data.clone()
        } else {
            Rc::new(layout::convert(&self.data, n, self.layout, to))
        }
    }

    /// The values batch-outer: the layout of every op without a batch-inner kernel.
    fn as_outer(&self, n: usize) -> Rc<Vec<f32>> {
        self.as_layout(n, Layout::BatchOuter)
    }

    /// Hands the values to the kernels' buffer pool when nothing else holds them.
    fn recycle(self) {
        if let Ok(v) = Rc::try_unwrap(self.data) {
            fast::recycle(v);
        }
    }

    fn into_outer(self, n: usize) -> Vec<f32> {
        let data = self.as_outer(n);
        drop(self);
        Rc::try_unwrap(data).unwrap_or_else(|shared| shared.to_vec())
    }
}

/// Shapes under which a batch-inner binary op runs as one sample: `(x, operand)` of `n`
/// samples of `x_shape` and the op's operand become one sample of `[c, n, ...]` and the
/// operand's own batch-inner form (or, for an operand of lower rank, its batch-outer form,
/// which is the same memory once padded with a leading 1). `None` when the output has a
/// higher rank than `x` (the op then runs batch-outer). The bool says whether a tensor
/// operand is read batch-inner.
fn batch_inner_binary_shapes(
    b: &Binary,
    x_shape: &[usize],
    n: usize,
) -> Option<(Vec<usize>, Vec<usize>, bool)> {
    let o = &b.operand_shape;
    let rank = x_shape.len();
    if rank == 0 || o.len() > rank {
        return None;
    }
    let insert = |shape: &[usize], at: usize| -> Vec<usize> {
        let mut v = vec![shape[0], at];
        v.extend_from_slice(&shape[1..]);
        v
    };
    let mut padded = vec![1; rank - o.len()];
    padded.extend_from_slice(o);
    let (operand, inner) = match b.operand {
        BinaryOperand::Const(_) => (insert(&padded, 1), false),
        BinaryOperand::Tensor(_) => (insert(&padded, n), o.len() == rank),
    };
    Some((insert(x_shape, n), operand, inner))
}

/// Time and calls of one kind of op (see [`OpTimes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct OpTime {
    /// Steps of this kind run.
    pub calls: usize,
    /// Seconds they took together.
    pub seconds: f64,
}

/// Where a run's time goes, per kind of op: on the CPU backend per op (`conv2d 1x1`,
/// `depthwise 3x3 s2`, `mul broadcast`, `copy` for the tensors a block keeps for later steps,
/// ...), on a GPU per kernel and tile (`conv1x1_vec4_c8`, `depthwise_tiled_4x8_k3x3s1x1`,
/// ...): the cheap profile that says which kernel to speed up next. Filled by
/// [`super::Plan::run_profiled`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct OpTimes(pub BTreeMap<String, OpTime>);

impl OpTimes {
    pub(crate) fn add(&mut self, kind: String, seconds: f64) {
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
/// in dense form, used whenever the batch makes the dense GEMM the faster path. With the fast
/// kernels a batch goes batch-inner at its first convolution and back at the first op without
/// a batch-inner kernel; the result is in whichever layout its last step left it.
fn run_steps_with(
    k: &Kernels,
    steps: &[Step],
    dense_forms: &[Option<Dense>],
    input: Act,
    n: usize,
    mut times: Option<&mut OpTimes>,
) -> Act {
    let batch_inner = std::ptr::eq(k, &Kernels::FAST) && n > 1;
    let block_input = input;
    let mut saved: HashMap<&str, Act> = HashMap::new();
    let mut x = block_input.clone();
    for (i, step) in steps.iter().enumerate() {
        let s = &step.input_shape;
        let tensor = |o: &Operand| -> Act {
            match o {
                Operand::BlockInput => block_input.clone(),
                Operand::Saved(l) => saved[l.as_str()].clone(),
            }
        };
        if let Some(from) = &step.from {
            x = tensor(from);
        }
        let start = times.is_some().then(Instant::now);
        // Ops that read planes only keep the input's layout.
        let same = |data: Vec<f32>| Act::new(data, x.layout);
        let y = match &step.op {
            Op::Conv2d(c) if batch_inner && fast::runs_batch_inner(c) => {
                let xi = x.as_layout(n, Layout::BatchInner { c: s[0] });
                Act::new(
                    fast::conv2d_batch_inner(c, &xi, n, s[1], s[2]),
                    Layout::BatchInner { c: c.out_channels },
                )
            }
            Op::Pool(p) => same((k.pool)(p, &x.data, n * s[0], s[1], s[2])),
            Op::GlobalAvgPool => same((k.global_avgpool)(&x.data, n * s[0], s[1] * s[2])),
            Op::Activation(a) => same((k.activation)(*a, &x.data)),
            Op::Binary(b) => {
                let inner = match x.layout {
                    Layout::BatchInner { .. } if batch_inner => batch_inner_binary_shapes(b, s, n),
                    _ => None,
                };
                let operand_layout = match inner {
                    Some((_, _, true)) => Layout::BatchInner {
                        c: b.operand_shape[0],
                    },
                    _ => Layout::BatchOuter,
                };
                let held;
                let operand: &[f32] = match &b.operand {
                    BinaryOperand::Tensor(o) => {
                        held = tensor(o).as_layout(n, operand_layout);
                        &held
                    }
                    BinaryOperand::Const(c) => c,
                };
                match inner {
                    Some((x_shape, o_shape, _)) => Act::new(
                        fast::binary_shaped(b, &o_shape, &x.data, &x_shape, operand, 1),
                        Layout::BatchInner {
                            c: step.output_shape[0],
                        },
                    ),
                    None => Act::outer((k.binary)(b, &x.as_outer(n), s, operand, n)),
                }
            }
            other => {
                let x = x.as_outer(n);
                Act::outer(match other {
                    // A shape change only: the output is the input.
                    Op::Flatten => Rc::try_unwrap(x).unwrap_or_else(|shared| shared.to_vec()),
                    Op::Conv2d(c) => (k.conv2d)(c, &x, n, s[1], s[2]),
                    Op::Dense(d) => (k.dense)(d, &x, n),
                    Op::FanIn(f) => match dense_forms.get(i) {
                        Some(Some(d)) if fast::fanin_runs_dense(f, n) => (k.dense)(d, &x, n),
                        _ => (k.fanin)(f, &x, n),
                    },
                    Op::Concat(c) => {
                        let with: Vec<Rc<Vec<f32>>> =
                            c.with.iter().map(|o| tensor(o).as_outer(n)).collect();
                        let mut pieces: Vec<(&[f32], &[usize])> = vec![(&x, s)];
                        for (t, shape) in with.iter().zip(&c.with_shapes) {
                            pieces.push((t, shape));
                        }
                        cpu::reference::concat(&pieces, c.axis, n)
                    }
                    Op::Transpose { perm } => cpu::reference::transpose(&x, s, perm, n),
                    Op::Pad { pads, value } => cpu::reference::pad(&x, s, pads, *value, n),
                    Op::Lrn(l) => cpu::reference::lrn(l, &x, s, n),
                    Op::Softmax { axis } => cpu::reference::softmax_axis(&x, s, *axis, n),
                    Op::Pool(_) | Op::GlobalAvgPool | Op::Activation(_) | Op::Binary(_) => {
                        unreachable!("handled above")
                    }
                })
            }
        };
        if let (Some(t), Some(start)) = (times.as_deref_mut(), start) {
            t.add(op_kind(&step.op, s), start.elapsed().as_secs_f64());
        }
        std::mem::replace(&mut x, y).recycle();
        if let Some(label) = &step.save_as {
            saved.insert(label.as_str(), x.clone());
        }
    }
    block_input.recycle();
    saved.into_values().for_each(Act::recycle);
    x
}

/// Values the largest tensor of one batch chunk may hold: a batch whose largest activation is
/// bigger runs in chunks of fewer samples, so that each op's input and output stay in the
/// caches instead of streaming through memory (EfficientNet-Lite0 holds 1.2M values per
/// sample at 112x112, so a batch of 8 runs sample by sample).
const CHUNK_VALUES: usize = 1 << 20;

/// What a CPU plan builds once at compile time instead of on every run: the dense form of each
/// fixed-fan-in layer that runs as a dense GEMM at the plan's batch sizes
/// ([`fast::fanin_runs_dense`]), per block (and per exit head) and step, and how many samples
/// run together.
pub(crate) struct CpuPrepared {
    blocks: Vec<Vec<Option<Dense>>>,
    exits: Vec<Vec<Option<Dense>>>,
    /// Samples per chunk ([`CHUNK_VALUES`]).
    chunk: usize,
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
        let steps = range
            .clone()
            .flat_map(|b| &model.blocks[b].steps)
            .chain(exits.iter().flat_map(|&e| &model.exits[e].steps));
        let largest = steps
            .map(|s| s.output_shape.iter().product::<usize>())
            .max()
            .unwrap_or(1);
        Self {
            blocks: range.map(|b| prepare(&model.blocks[b].steps)).collect(),
            exits: exits
                .iter()
                .map(|&e| prepare(&model.exits[e].steps))
                .collect(),
            chunk: (CHUNK_VALUES / largest.max(1)).max(1),
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
        Ok(cpu::threads::install(|| self.run_on_pool(data, n, None)))
    }

    /// Runs `n` samples of row-major `x`; encodes the output when the plan has an output
    /// encoding (its last step). The input is copied into the kernels' buffer pool, on the
    /// thread that runs the plan.
    pub fn run(&self, x: &[f32], n: usize) -> PlanOutput {
        cpu::threads::install(|| self.run_on_pool(fast::copied(x), n, None))
    }

    /// [`Self::run`], adding each step's time to `times` under its op kind.
    pub fn run_profiled(&self, x: &[f32], n: usize, times: &mut OpTimes) -> PlanOutput {
        cpu::threads::install(|| self.run_on_pool(fast::copied(x), n, Some(times)))
    }

    fn run_on_pool(&self, x: Vec<f32>, n: usize, mut times: Option<&mut OpTimes>) -> PlanOutput {
        let model = self.model;
        let classes = model.classes();
        let chunk = self.prepared.chunk;
        let per_sample = x.len().checked_div(n).unwrap_or(0).max(1);
        // Chunks run one per thread when there are several threads and nothing is being
        // timed per op; each one's kernels still split their work when a thread is free.
        let (output, exit_logits) = if n <= chunk {
            let run = self.run_chunk(x, n, times);
            (run.output, run.exits)
        } else {
            let runs: Vec<ChunkOutput> = if times.is_some() || rayon::current_num_threads() == 1 {
                x.chunks(chunk * per_sample)
                    .map(|c| {
                        let m = c.len() / per_sample;
                        self.run_chunk(fast::copied(c), m, times.as_deref_mut())
                    })
                    .collect()
            } else {
                x.par_chunks(chunk * per_sample)
                    .map(|c| self.run_chunk(fast::copied(c), c.len() / per_sample, None))
                    .collect()
            };
            fast::recycle(x);
            concat_chunks(runs)
        };
        let exits = exit_logits
            .into_iter()
            .map(|(e, logits)| ExitOutput {
                exit: e,
                stats: cpu::exit_stats(&logits, classes),
                logits: Tensor::new(vec![n, classes], logits)
                    .expect("exit heads output [classes] per sample"),
            })
            .collect();
        let ends = self.range.end == model.blocks.len();
        let mut shape = vec![n];
        shape.extend_from_slice(model.shape_at(self.range.end));
        let final_stats: Option<Vec<ExitStat>> = ends.then(|| cpu::exit_stats(&output, classes));
        let output = Tensor::new(shape, output).expect("block output matches its shape");
        PlanOutput {
            encoded: self.output.map(|e| encode_cpu(&output, e)),
            output,
            exits,
            final_stats,
            device_seconds: None,
        }
    }

    /// Runs the blocks (and exit heads) on `n` samples at once: the plan's output and each
    /// exit's logits, batch-outer.
    fn run_chunk(&self, x: Vec<f32>, n: usize, mut times: Option<&mut OpTimes>) -> ChunkOutput {
        let model = self.model;
        let mut exits = Vec::with_capacity(self.exits.len());
        // Blocks hand each other their output in whatever layout it is in; only the exit
        // heads' logits and the plan's output are converted back to batch-outer.
        let mut x = Act::outer(x);
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
                if model.exits[e].after_block == b {
                    exits.push((
                        e,
                        run_steps_with(
                            &Kernels::FAST,
                            &model.exits[e].steps,
                            &self.prepared.exits[j],
                            x.clone(),
                            n,
                            times.as_deref_mut(),
                        )
                        .into_outer(n),
                    ));
                }
            }
        }
        ChunkOutput {
            output: x.into_outer(n),
            exits,
        }
    }
}

/// The chunks' outputs and exit logits joined in batch order (every chunk ran the same exits
/// in the same order); the chunks' own buffers go back to the pool.
fn concat_chunks(runs: Vec<ChunkOutput>) -> (Vec<f32>, Vec<(usize, Vec<f32>)>) {
    let mut output = Vec::with_capacity(runs.iter().map(|r| r.output.len()).sum());
    let mut exit_logits: Vec<(usize, Vec<f32>)> = Vec::new();
    for run in runs {
        output.extend_from_slice(&run.output);
        fast::recycle(run.output);
        if exit_logits.is_empty() {
            exit_logits = run.exits;
            continue;
        }
        for ((_, all), (_, logits)) in exit_logits.iter_mut().zip(run.exits) {
            all.extend_from_slice(&logits);
        }
    }
    (output, exit_logits)
}

/// What one chunk of a batch produced: the plan's output and each exit head's logits, in the
/// order the heads ran.
struct ChunkOutput {
    output: Vec<f32>,
    exits: Vec<(usize, Vec<f32>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch run in chunks (several threads, one thread, profiled) gives the same output and
    /// exit logits as the same batch run whole.
    #[test]
    fn chunked_batches_match_whole_ones_with_exits() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mnist-lenet-ee");
        let model = Model::load(dir).expect("shipped model loads");
        let (range, n) = (0..model.blocks.len(), 7);
        let exits: Vec<usize> = (0..model.exits.len()).collect();
        assert!(!exits.is_empty(), "the model has exit heads");
        let x: Vec<f32> = (0..n * model.input_elems())
            .map(|i| (i as f32 * 0.013).sin())
            .collect();
        let run = |chunk: usize, threads: usize, profiled: bool| {
            let mut prepared = CpuPrepared::new(&model, range.clone(), &exits, n);
            prepared.chunk = chunk;
            let plan = CpuPlan {
                model: &model,
                prepared: &prepared,
                range: range.clone(),
                exits: &exits,
                output: None,
            };
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("thread pool");
            let mut times = OpTimes::default();
            pool.install(|| plan.run_on_pool(fast::copied(&x), n, profiled.then_some(&mut times)))
        };
        let whole = run(n, 1, false);
        for (chunk, threads, profiled) in [(3, 2, false), (2, 1, false), (1, 2, true)] {
            let got = run(chunk, threads, profiled);
            assert_eq!(got.output.shape(), whole.output.shape());
            let close = |a: &[f32], b: &[f32]| {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs()))
            };
            assert!(
                close(got.output.data(), whole.output.data()),
                "chunk {chunk}: output"
            );
            assert_eq!(got.exits.len(), whole.exits.len());
            for (g, w) in got.exits.iter().zip(&whole.exits) {
                assert_eq!(g.exit, w.exit);
                assert!(
                    close(g.logits.data(), w.logits.data()),
                    "chunk {chunk}: exit {}",
                    g.exit
                );
                assert_eq!(g.stats.len(), n);
            }
            assert_eq!(got.final_stats.map(|s| s.len()), Some(n));
        }
    }
}
