//! Execution: a [`Plan`] is a block range `a..b` of a model compiled once for a [`Backend`] and
//! run many times on batches. The split point is just the range: the device runs `0..k`, the
//! server `k..n`, with the same machinery.

use crate::cpu::{self, ExitStat};
use crate::gpu::{self, kernels, GpuContext, GpuError};
use crate::model::{Model, Op, Operand, Step};
use crate::tensor::{Tensor, TensorError};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use thiserror::Error;

pub mod evaluate;
pub use evaluate::{evaluate, Evaluation, SampleResult};

/// Errors compiling or running a plan.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The block range is empty or outside the model.
    #[error("block range {start}..{end} is invalid for a model of {blocks} blocks (need start < end <= {blocks})")]
    BadRange {
        /// Range start.
        start: usize,
        /// Range end.
        end: usize,
        /// Blocks in the model.
        blocks: usize,
    },
    /// A batch larger than the plan was compiled for, or empty.
    #[error("batch of {got} samples does not fit this plan (compiled for 1..={capacity}); compile a plan with a larger batch")]
    BatchTooLarge {
        /// Samples given.
        got: usize,
        /// Plan capacity.
        capacity: usize,
    },
    /// Input of the wrong shape.
    #[error("wrong input for blocks {range:?}: {source}")]
    Shape {
        /// The plan's range.
        range: Range<usize>,
        /// The shape error.
        source: TensorError,
    },
    /// A plan or dataset that cannot be evaluated together.
    #[error("cannot evaluate: {0}")]
    Evaluate(String),
    /// A GPU failure.
    #[error(transparent)]
    Gpu(#[from] GpuError),
}

/// Where a plan runs.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The plain-Rust reference ops on the host CPU.
    Cpu,
    /// WGSL kernels on a wgpu adapter.
    Gpu(Arc<GpuContext>),
}

impl Backend {
    /// The GPU when an adapter exists, else the CPU (with a warning on the log).
    pub fn gpu_or_cpu() -> Self {
        match GpuContext::new() {
            Ok(ctx) => Backend::Gpu(Arc::new(ctx)),
            Err(e) => {
                log::warn!("no GPU adapter, running on the CPU backend: {e}");
                Backend::Cpu
            }
        }
    }

    /// `"cpu"` or `"gpu"`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Gpu(_) => "gpu",
        }
    }

    /// The adapter description, or `"cpu reference"`.
    pub fn adapter(&self) -> String {
        match self {
            Backend::Cpu => "cpu reference (plain Rust)".into(),
            Backend::Gpu(ctx) => ctx.summary().to_string(),
        }
    }
}

/// What an exit head said about a batch.
#[derive(Debug, Clone)]
pub struct ExitOutput {
    /// Index into `model.exits`.
    pub exit: usize,
    /// `[batch, classes]` logits.
    pub logits: Tensor,
    /// Per-sample confidence, entropy and argmax.
    pub stats: Vec<ExitStat>,
}

/// The result of running a plan on a batch.
#[derive(Debug, Clone)]
pub struct PlanOutput {
    /// The output of the last block of the range (`[batch, ...]`; logits if the range ends the model).
    pub output: Tensor,
    /// Exit heads attached inside the range, in block order.
    pub exits: Vec<ExitOutput>,
    /// Statistics of the final logits when the range ends the model.
    pub final_stats: Option<Vec<ExitStat>>,
    /// Device time of the plan's dispatches in seconds, from GPU timestamps around its compute
    /// pass (no upload, submit or readback); `None` on the CPU backend and on adapters without
    /// `TIMESTAMP_QUERY`.
    pub device_seconds: Option<f64>,
}

/// Who answered a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An exit head (index into `model.exits`) was confident enough.
    Exit {
        /// Exit index.
        exit: usize,
        /// Predicted class.
        class: u32,
    },
    /// The final classifier (the range ends the model).
    Final {
        /// Predicted class.
        class: u32,
    },
    /// No exit was confident and the range stops before the end: the rest must run elsewhere.
    Continue,
}

impl Answer {
    /// The predicted class, if the sample was answered.
    pub fn class(self) -> Option<u32> {
        match self {
            Answer::Exit { class, .. } | Answer::Final { class } => Some(class),
            Answer::Continue => None,
        }
    }
}

impl PlanOutput {
    /// Per-sample answers: the first exit whose confidence is strictly above `threshold`
    /// answers; otherwise the final classifier if present. `threshold >= 1.0` never exits;
    /// `threshold < 1/classes` always exits at the first head.
    pub fn answers(&self, threshold: f32) -> Vec<Answer> {
        (0..self.output.batch())
            .map(|i| {
                for e in &self.exits {
                    let s = e.stats[i];
                    if s.confidence > threshold {
                        return Answer::Exit {
                            exit: e.exit,
                            class: s.argmax,
                        };
                    }
                }
                match &self.final_stats {
                    Some(f) => Answer::Final { class: f[i].argmax },
                    None => Answer::Continue,
                }
            })
            .collect()
    }
}

/// A block range of a model compiled once for a backend, run many times.
pub struct Plan {
    model: Arc<Model>,
    range: Range<usize>,
    capacity: usize,
    exits: Vec<usize>,
    exec: Exec,
}

enum Exec {
    Cpu,
    Gpu(Box<GpuPlan>),
}

impl Plan {
    /// Compiles blocks `range` of `model` for `backend`, for batches of up to `batch` samples.
    /// On the GPU: uploads weights, allocates activation buffers and builds every dispatch.
    pub fn compile(
        model: &Arc<Model>,
        range: Range<usize>,
        backend: &Backend,
        batch: usize,
    ) -> Result<Self, EngineError> {
        let blocks = model.blocks.len();
        if range.start >= range.end || range.end > blocks {
            return Err(EngineError::BadRange {
                start: range.start,
                end: range.end,
                blocks,
            });
        }
        if batch == 0 {
            return Err(EngineError::BatchTooLarge {
                got: 0,
                capacity: 0,
            });
        }
        let exits: Vec<usize> = model
            .exits
            .iter()
            .enumerate()
            .filter(|(_, e)| range.contains(&e.after_block))
            .map(|(i, _)| i)
            .collect();
        let exec = match backend {
            Backend::Cpu => Exec::Cpu,
            Backend::Gpu(ctx) => Exec::Gpu(Box::new(GpuPlan::compile(
                ctx.clone(),
                model,
                range.clone(),
                &exits,
                batch,
            )?)),
        };
        Ok(Self {
            model: model.clone(),
            range,
            capacity: batch,
            exits,
            exec,
        })
    }

    /// The block range.
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }

    /// Largest batch this plan accepts.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The model.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Activation buffers the plan allocated (0 on the CPU backend): two for a plain chain,
    /// more while residual inputs, saved tensors or exit inputs must stay live.
    pub fn activation_buffers(&self) -> usize {
        match &self.exec {
            Exec::Cpu => 0,
            Exec::Gpu(g) => g.slots.len(),
        }
    }

    /// Labels of the GPU dispatches in encoding order (`fc1.fanin.fanin_vec4`, …), naming the
    /// kernel each step uses; empty on the CPU backend.
    pub fn kernel_labels(&self) -> Vec<String> {
        match &self.exec {
            Exec::Cpu => Vec::new(),
            Exec::Gpu(g) => g.kernels.iter().map(|k| k.label.clone()).collect(),
        }
    }

    /// Per-sample input shape of the range.
    pub fn input_shape(&self) -> &[usize] {
        self.model.shape_at(self.range.start)
    }

    /// Runs the range on a batch of `[n, input_shape...]` with `1 <= n <= capacity`.
    pub fn run(&self, input: &Tensor) -> Result<PlanOutput, EngineError> {
        input
            .check_sample_shape(self.input_shape())
            .map_err(|source| EngineError::Shape {
                range: self.range.clone(),
                source,
            })?;
        let n = input.batch();
        if n == 0 || n > self.capacity {
            return Err(EngineError::BatchTooLarge {
                got: n,
                capacity: self.capacity,
            });
        }
        match &self.exec {
            Exec::Cpu => Ok(self.run_cpu(input)),
            Exec::Gpu(g) => g.run(input),
        }
    }

    fn run_cpu(&self, input: &Tensor) -> PlanOutput {
        let n = input.batch();
        let mut x = input.data().to_vec();
        let mut exits = Vec::new();
        for b in self.range.clone() {
            x = run_steps_cpu(&self.model.blocks[b].steps, x, n);
            for &e in &self.exits {
                let exit = &self.model.exits[e];
                if exit.after_block == b {
                    let logits = run_steps_cpu(&exit.steps, x.clone(), n);
                    let classes = self.model.classes();
                    exits.push(ExitOutput {
                        exit: e,
                        stats: cpu::exit_stats(&logits, classes),
                        logits: Tensor::new(vec![n, classes], logits)
                            .expect("exit heads output [classes] per sample"),
                    });
                }
            }
        }
        let ends = self.range.end == self.model.blocks.len();
        let mut shape = vec![n];
        shape.extend_from_slice(self.model.shape_at(self.range.end));
        let final_stats = ends.then(|| cpu::exit_stats(&x, self.model.classes()));
        PlanOutput {
            output: Tensor::new(shape, x).expect("block output matches its shape"),
            exits,
            final_stats,
            device_seconds: None,
        }
    }
}

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
            Op::Conv2d(c) => cpu::conv2d(c, &x, n, s[1], s[2]),
            Op::Dense(d) => cpu::dense(d, &x, n),
            Op::FanIn(f) => cpu::fanin(f, &x, n),
            Op::Pool(p) => cpu::pool(p, &x, n * s[0], s[1], s[2]),
            Op::GlobalAvgPool => cpu::global_avgpool(&x, n * s[0], s[1] * s[2]),
            Op::Flatten => x,
            Op::Activation(a) => cpu::activation(*a, &x),
            Op::Add { with, activation } => cpu::add(&x, other(with), *activation),
            Op::Mul { with } => {
                let big = other(with);
                let inner = big.len() / x.len().max(1);
                cpu::mul(&x, big, inner)
            }
            Op::Softmax => cpu::softmax(&x, step.output_shape.iter().product()),
        };
        if let Some(label) = &step.save_as {
            saved.insert(label.as_str(), x.clone());
        }
    }
    x
}

/// Two `u64` GPU timestamps.
const TIMESTAMP_BYTES: u64 = 16;

struct GpuPlan {
    ctx: Arc<GpuContext>,
    model: Arc<Model>,
    range: Range<usize>,
    capacity: usize,
    kernels: Vec<kernels::Kernel>,
    _weights: Vec<kernels::OpWeights>,
    slots: Vec<wgpu::Buffer>,
    input_slot: usize,
    output_slot: usize,
    output_elems: usize,
    exit_bufs: Vec<(usize, wgpu::Buffer, wgpu::Buffer)>,
    final_stats: Option<wgpu::Buffer>,
    staging: wgpu::Buffer,
    /// Timestamp queries around the compute pass and their resolve buffer (adapters with
    /// `TIMESTAMP_QUERY`).
    timestamps: Option<(wgpu::QuerySet, wgpu::Buffer)>,
    /// Runs of one plan share its buffers, so they take turns.
    lock: Mutex<()>,
}

/// One step in execution order, reading and writing numbered values.
struct Recorded<'m> {
    step: &'m Step,
    input: usize,
    other: Option<usize>,
    output: usize,
}

/// The values of a range in execution order: value 0 is the plan input; `flatten` aliases
/// its input instead of producing a value.
struct Schedule<'m> {
    ops: Vec<Recorded<'m>>,
    values: usize,
    exit_outputs: Vec<(usize, usize)>,
    output: usize,
    max_elems: usize,
}

fn schedule<'m>(model: &'m Model, range: Range<usize>, exits: &[usize]) -> Schedule<'m> {
    let mut s = Schedule {
        ops: Vec::new(),
        values: 1,
        exit_outputs: Vec::new(),
        output: 0,
        max_elems: model.shape_at(range.start).iter().product(),
    };
    let chain = |s: &mut Schedule<'m>, steps: &'m [Step], start: usize| -> usize {
        let mut saved: HashMap<&str, usize> = HashMap::new();
        let mut x = start;
        for step in steps {
            s.max_elems = s.max_elems.max(step.output_shape.iter().product());
            if !matches!(step.op, Op::Flatten) {
                let other = match &step.op {
                    Op::Add { with, .. } | Op::Mul { with } => Some(match with {
                        Operand::BlockInput => start,
                        Operand::Saved(l) => saved[l.as_str()],
                    }),
                    _ => None,
                };
                s.ops.push(Recorded {
                    step,
                    input: x,
                    other,
                    output: s.values,
                });
                x = s.values;
                s.values += 1;
            }
            if let Some(label) = &step.save_as {
                saved.insert(label, x);
            }
        }
        x
    };
    let mut current = 0;
    for b in range {
        current = chain(&mut s, &model.blocks[b].steps, current);
        for &e in exits {
            if model.exits[e].after_block == b {
                let logits = chain(&mut s, &model.exits[e].steps, current);
                s.exit_outputs.push((e, logits));
            }
        }
    }
    s.output = current;
    s
}

/// What one dispatch of a GPU plan does.
enum Work<'m> {
    /// A model step ([`kernels::lower`]ed), row-major in and out.
    Step(Cow<'m, Step>),
    /// A fan-in step reading a feature-major input; `out_fm` when it writes feature-major too.
    FanInFm { step: Cow<'m, Step>, out_fm: bool },
    /// A feature-major copy of a row-major value with `features` per row.
    ToFeatureMajor { label: String, features: usize },
}

/// One dispatch over numbered values.
struct Placed<'m> {
    work: Work<'m>,
    input: usize,
    other: Option<usize>,
    output: usize,
}

/// Lowers every step for inference and picks activation layouts. From
/// [`kernels::FEATURE_MAJOR_MIN_BATCH`] rows up, a fan-in step reads a feature-major input:
/// its producer writes it so when every reader is such a fan-in (and it is neither an exit nor
/// the plan output); otherwise one layout step per value makes the copy. Returns the
/// dispatches and the new number of values.
fn place<'m>(sched: &Schedule<'m>, batch: usize) -> (Vec<Placed<'m>>, usize) {
    let lowered: Vec<Cow<'m, Step>> = sched.ops.iter().map(|r| kernels::lower(r.step)).collect();
    let fm: Vec<bool> = lowered
        .iter()
        .map(|s| kernels::uses_feature_major(s, batch))
        .collect();
    let kept: HashSet<usize> = sched
        .exit_outputs
        .iter()
        .map(|&(_, v)| v)
        .chain([sched.output])
        .collect();
    // Per value: how many steps read it, and whether all of them are feature-major fan-ins
    // reading it as their input.
    let mut readers = vec![(0usize, true); sched.values];
    for (j, o) in sched.ops.iter().enumerate() {
        readers[o.input].0 += 1;
        readers[o.input].1 &= fm[j];
        if let Some(v) = o.other {
            readers[v] = (readers[v].0 + 1, false);
        }
    }
    let mut written_fm = vec![false; sched.values];
    for (i, r) in sched.ops.iter().enumerate() {
        let (count, all_fm) = readers[r.output];
        written_fm[r.output] = fm[i] && !kept.contains(&r.output) && count > 0 && all_fm;
    }
    let mut values = sched.values;
    let mut copies: HashMap<usize, usize> = HashMap::new();
    let mut placed = Vec::new();
    for (i, (r, step)) in sched.ops.iter().zip(lowered).enumerate() {
        if !fm[i] {
            placed.push(Placed {
                work: Work::Step(step),
                input: r.input,
                other: r.other,
                output: r.output,
            });
            continue;
        }
        let input = if written_fm[r.input] {
            r.input
        } else if let Some(&copy) = copies.get(&r.input) {
            copy
        } else {
            let copy = values;
            values += 1;
            copies.insert(r.input, copy);
            placed.push(Placed {
                work: Work::ToFeatureMajor {
                    label: format!("{}.input", step.label),
                    features: step.input_shape.iter().product(),
                },
                input: r.input,
                other: None,
                output: copy,
            });
            copy
        };
        placed.push(Placed {
            work: Work::FanInFm {
                step,
                out_fm: written_fm[r.output],
            },
            input,
            other: None,
            output: r.output,
        });
    }
    (placed, values)
}

impl GpuPlan {
    fn compile(
        ctx: Arc<GpuContext>,
        model: &Arc<Model>,
        range: Range<usize>,
        exits: &[usize],
        batch: usize,
    ) -> Result<Self, EngineError> {
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let plan = Self::build(ctx.clone(), model, range.clone(), exits, batch);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Failed {
                context: format!("compiling blocks {range:?} of {}", model.name()),
                reason: e.to_string(),
            }
            .into());
        }
        plan
    }

    fn build(
        ctx: Arc<GpuContext>,
        model: &Arc<Model>,
        range: Range<usize>,
        exits: &[usize],
        batch: usize,
    ) -> Result<Self, EngineError> {
        let classes = model.classes();
        let sched = schedule(model, range.clone(), exits);
        let (placed, values) = place(&sched, batch);
        // Liveness: a buffer is recycled after the last step that reads its value; exit logits
        // and the output stay live until readback.
        const FOREVER: usize = usize::MAX;
        let mut last_use = vec![0usize; values];
        for (i, op) in placed.iter().enumerate() {
            last_use[op.output] = last_use[op.output].max(i);
            last_use[op.input] = i;
            if let Some(o) = op.other {
                last_use[o] = i;
            }
        }
        last_use[sched.output] = FOREVER;
        for &(_, v) in &sched.exit_outputs {
            last_use[v] = FOREVER;
        }
        let mut slot_of = vec![usize::MAX; values];
        let mut free: Vec<usize> = Vec::new();
        let mut count = 0usize;
        let mut take = |free: &mut Vec<usize>| {
            free.pop().unwrap_or_else(|| {
                count += 1;
                count - 1
            })
        };
        slot_of[0] = take(&mut free);
        for (i, op) in placed.iter().enumerate() {
            slot_of[op.output] = take(&mut free);
            let mut dead = vec![op.input];
            dead.extend(op.other);
            dead.push(op.output);
            dead.dedup();
            for v in dead {
                if last_use[v] == i && !free.contains(&slot_of[v]) {
                    free.push(slot_of[v]);
                }
            }
        }
        let input_slot = slot_of[0];
        let output_slot = slot_of[sched.output];
        let exit_outputs: Vec<(usize, usize)> = sched
            .exit_outputs
            .iter()
            .map(|&(e, v)| (e, slot_of[v]))
            .collect();
        let pool_count = count;
        let output_elems: usize = model.shape_at(range.end).iter().product();
        // Feature-major values pad the batch to quads of 4 rows.
        let slot_bytes = (sched.max_elems * batch.next_multiple_of(4) * 4) as u64;
        let slots = (0..pool_count)
            .map(|i| gpu::storage(&ctx, &format!("activations.{i}"), slot_bytes))
            .collect::<Result<Vec<_>, _>>()?;

        let mut kernels_out = Vec::new();
        let mut weights = Vec::new();
        for p in &placed {
            let (x, y) = (&slots[slot_of[p.input]], &slots[slot_of[p.output]]);
            match &p.work {
                Work::Step(step) => {
                    let w = kernels::OpWeights::upload(&ctx, &step.label, &step.op)?;
                    let other = p.other.map(|o| &slots[slot_of[o]]);
                    if let Some(k) = kernels::step(&ctx, step, batch, w.as_ref(), x, other, y)? {
                        kernels_out.push(k);
                    }
                    weights.extend(w);
                }
                Work::FanInFm { step, out_fm } => {
                    let Op::FanIn(f) = &step.op else {
                        unreachable!("only fan-in steps read feature-major inputs")
                    };
                    let w = kernels::OpWeights::upload(&ctx, &step.label, &step.op)?
                        .expect("fan-in ops carry weights");
                    kernels_out.push(kernels::fanin_fm(
                        &ctx,
                        &step.label,
                        f,
                        batch,
                        &w,
                        x,
                        y,
                        *out_fm,
                    )?);
                    weights.push(w);
                }
                Work::ToFeatureMajor { label, features } => {
                    kernels_out.push(kernels::to_feature_major(
                        &ctx, label, *features, batch, x, y,
                    )?);
                }
            }
        }
        let mut exit_bufs = Vec::new();
        for (e, slot) in exit_outputs {
            let label = &model.exits[e].name;
            let stats = gpu::storage(&ctx, &format!("{label}.stats"), (batch * 16) as u64)?;
            kernels_out.push(kernels::exit(
                &ctx,
                label,
                "exit_stats",
                batch,
                classes,
                &slots[slot],
                &stats,
            )?);
            exit_bufs.push((e, slots[slot].clone(), stats));
        }
        let final_stats = if range.end == model.blocks.len() {
            let stats = gpu::storage(&ctx, "final.stats", (batch * 16) as u64)?;
            kernels_out.push(kernels::exit(
                &ctx,
                "final",
                "exit_stats",
                batch,
                classes,
                &slots[output_slot],
                &stats,
            )?);
            Some(stats)
        } else {
            None
        };
        let staging_elems = batch
            * (output_elems
                + exit_bufs.len() * (classes + 4)
                + if final_stats.is_some() { 4 } else { 0 });
        let timestamps = ctx
            .features
            .contains(wgpu::Features::TIMESTAMP_QUERY)
            .then(|| {
                let set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("plan.timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2,
                });
                let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("plan.timestamps.resolve"),
                    size: TIMESTAMP_BYTES,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                (set, resolve)
            });
        let staging = gpu::staging(
            &ctx,
            "plan.readback",
            (staging_elems * 4) as u64 + TIMESTAMP_BYTES,
        );
        Ok(Self {
            ctx,
            model: model.clone(),
            range,
            capacity: batch,
            kernels: kernels_out,
            _weights: weights,
            slots,
            input_slot,
            output_slot,
            output_elems,
            exit_bufs,
            final_stats,
            staging,
            timestamps,
            lock: Mutex::new(()),
        })
    }

    fn run(&self, input: &Tensor) -> Result<PlanOutput, EngineError> {
        let _turn = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let n = input.batch();
        let cap = self.capacity;
        let classes = self.model.classes();
        let ctx = &self.ctx;
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        ctx.queue.write_buffer(
            &self.slots[self.input_slot],
            0,
            bytemuck::cast_slice(input.data()),
        );
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("plan.run"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("plan.steps"),
                timestamp_writes: self.timestamps.as_ref().map(|(set, _)| {
                    wgpu::ComputePassTimestampWrites {
                        query_set: set,
                        beginning_of_pass_write_index: Some(0),
                        end_of_pass_write_index: Some(1),
                    }
                }),
            });
            for k in &self.kernels {
                k.encode(&mut pass);
            }
        }
        // Readback layout: [output | per exit: logits, stats | final stats], capacity rows each.
        let mut offset = 0u64;
        let mut copy = |enc: &mut wgpu::CommandEncoder, src: &wgpu::Buffer, elems: usize| {
            let bytes = (elems * 4) as u64;
            enc.copy_buffer_to_buffer(src, 0, &self.staging, offset, bytes);
            offset += bytes;
            (offset - bytes) / 4
        };
        let out_at = copy(
            &mut enc,
            &self.slots[self.output_slot],
            cap * self.output_elems,
        );
        let mut exit_at = Vec::new();
        for (_, logits, stats) in &self.exit_bufs {
            exit_at.push((
                copy(&mut enc, logits, cap * classes),
                copy(&mut enc, stats, cap * 4),
            ));
        }
        let final_at = self
            .final_stats
            .as_ref()
            .map(|s| copy(&mut enc, s, cap * 4));
        let ticks_at = self.timestamps.as_ref().map(|(set, resolve)| {
            enc.resolve_query_set(set, 0..2, resolve, 0);
            copy(&mut enc, resolve, (TIMESTAMP_BYTES / 4) as usize)
        });
        let total = (offset / 4) as usize;
        ctx.queue.submit([enc.finish()]);
        let data = gpu::read_back(ctx, &self.staging, total)?;
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Failed {
                context: format!("plan {:?} of {}", self.range, self.model.name()),
                reason: e.to_string(),
            }
            .into());
        }
        let stats_of = |at: u64| -> Vec<ExitStat> {
            data[at as usize..at as usize + n * 4]
                .chunks(4)
                .map(|c| ExitStat {
                    confidence: c[0],
                    entropy: c[1],
                    argmax: c[2] as u32,
                })
                .collect()
        };
        let mut shape = vec![n];
        shape.extend_from_slice(self.model.shape_at(self.range.end));
        let output = Tensor::new(
            shape,
            data[out_at as usize..out_at as usize + n * self.output_elems].to_vec(),
        )
        .expect("readback matches the output shape");
        let exits = self
            .exit_bufs
            .iter()
            .zip(exit_at)
            .map(|((e, _, _), (l, s))| ExitOutput {
                exit: *e,
                logits: Tensor::new(
                    vec![n, classes],
                    data[l as usize..l as usize + n * classes].to_vec(),
                )
                .expect("readback matches the logits shape"),
                stats: stats_of(s),
            })
            .collect();
        let device_seconds = ticks_at.and_then(|at| {
            let bytes: Vec<u8> = data[at as usize..at as usize + 4]
                .iter()
                .flat_map(|v| v.to_ne_bytes())
                .collect();
            let start = u64::from_ne_bytes(bytes[0..8].try_into().ok()?);
            let end = u64::from_ne_bytes(bytes[8..16].try_into().ok()?);
            let elapsed = end.checked_sub(start).filter(|&t| t > 0)?;
            Some(elapsed as f64 * ctx.queue.get_timestamp_period() as f64 * 1e-9)
        });
        Ok(PlanOutput {
            output,
            exits,
            final_stats: final_at.map(stats_of),
            device_seconds,
        })
    }
}
